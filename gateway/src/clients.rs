//! What one client may hold: a cap on open connections per address, and a deadline for each
//! request's head (a client that sends its headers a byte at a time is cut, not kept for ever).
//! pingora has neither: its only bound on a request head is 1 MiB, and a kept-alive connection
//! reads with no timeout. The gate wraps pingora's HTTP application and each client stream.
//!
//! The stream wrapper also answers requests pingora refuses before any hook runs (a malformed
//! request line, headers or framing, too many headers, CONNECT, an HTTP/2 preface): pingora
//! writes a bare `Server: Pingora` error; the client gets the same status in Google's error
//! format instead, and each is counted and recorded as an event.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use dashmap::DashMap;
use pingora::apps::ServerApp;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType,
};
use pingora::proxy::{HttpProxy, Session};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::settings::ClientLimits;

/// What is told of a request pingora refused before any hook ran (its status).
pub type OnRefused = Arc<dyn Fn(u16) + Send + Sync>;

/// pingora's HTTP application behind the per-address cap, with each stream under a deadline.
pub struct Gate {
    proxy: Arc<HttpProxy<Proxy>>,
    open: DashMap<IpAddr, usize>,
    limits: ClientLimits,
    metrics: Arc<Metrics>,
    on_refused: OnRefused,
    /// Counts connections cut by the head deadline (resolved once).
    cut: prometheus::IntCounter,
}

impl Gate {
    /// The gate in front of `proxy`; requests pingora refuses itself are counted and recorded
    /// in `ledger`.
    pub fn new(
        proxy: HttpProxy<Proxy>,
        limits: ClientLimits,
        metrics: Arc<Metrics>,
        ledger: Ledger,
    ) -> Gate {
        let m = metrics.clone();
        let on_refused: OnRefused = Arc::new(move |status| {
            m.malformed_requests
                .with_label_values(&[crate::metrics::status_class(status)])
                .inc();
            let now = chrono::Utc::now();
            ledger.record(store::UsageEvent {
                request_id: crate::proxy::new_request_id(now),
                occurred_at: now,
                provider: "none".into(),
                operation: "none".into(),
                status: i32::from(status),
                priced: true,
                ..store::UsageEvent::default()
            });
        });
        Gate {
            proxy: Arc::new(proxy),
            open: DashMap::new(),
            limits,
            cut: metrics
                .connections_refused
                .with_label_values(&["header_timeout"]),
            metrics,
            on_refused,
        }
    }

    /// Counts a connection of `ip`, or refuses it when the address holds as many as it may.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Opened> {
        let cap = self.limits.max_connections_per_address;
        let mut n = self.open.entry(ip).or_default();
        if cap > 0 && *n >= cap {
            return None;
        }
        *n += 1;
        Some(Opened {
            gate: self.clone(),
            ip,
        })
    }

    /// Client addresses with connections open (the map is bounded by the connections).
    pub fn addresses(&self) -> usize {
        self.open.len()
    }
}

/// One open connection of an address; forgotten when dropped.
struct Opened {
    gate: Arc<Gate>,
    ip: IpAddr,
}

impl Drop for Opened {
    fn drop(&mut self) {
        if let Some(mut n) = self.gate.open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
        }
        self.gate.open.remove_if(&self.ip, |_, n| *n == 0);
    }
}

#[async_trait]
impl ServerApp for Gate {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let ip = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let _opened = match ip {
            Some(ip) => match self.admit(ip) {
                Some(o) => Some(o),
                None => {
                    self.metrics
                        .connections_refused
                        .with_label_values(&["per_address_cap"])
                        .inc();
                    return None; // closed at once
                }
            },
            None => None,
        };
        let stream: Stream = Box::new(Deadlined::new(
            stream,
            self.limits.header_timeout,
            self.cut.clone(),
            self.on_refused.clone(),
        ));
        ServerApp::process_new(&self.proxy, stream, shutdown).await;
        None
    }

    async fn cleanup(&self) {
        // Wakes kept-alive connections so that a stop closes them.
        ServerApp::cleanup(&*self.proxy).await;
    }
}

/// A client stream whose request heads must arrive within a deadline: armed when a head is
/// awaited and its first byte comes (or at once on a new connection), cleared once the head is
/// read (`head_read`), armed again after each answer (`awaiting_head`).
pub struct Deadlined {
    inner: Stream,
    timeout: Duration,
    /// Set by the proxy's hooks: true while a request head is awaited.
    awaiting: AtomicBool,
    /// Set when a new head is awaited: a timer of the last head (an answer that read nothing
    /// more of the client, a refusal say) is dropped, not carried into the next.
    rearm: AtomicBool,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Counts the connections cut by the deadline.
    cut: prometheus::IntCounter,
    on_refused: OnRefused,
    /// Google's error answer written in place of pingora's own, and how much of it is out.
    answer: Option<(Vec<u8>, usize)>,
}

impl std::fmt::Debug for Deadlined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deadlined")
            .field("inner", &self.inner)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Deadlined {
    fn new(
        inner: Stream,
        timeout: Duration,
        cut: prometheus::IntCounter,
        on_refused: OnRefused,
    ) -> Deadlined {
        Deadlined {
            inner,
            timeout,
            awaiting: AtomicBool::new(true),
            rearm: AtomicBool::new(false),
            timer: Some(Box::pin(tokio::time::sleep(timeout))),
            cut,
            on_refused,
            answer: None,
        }
    }

    /// Writes what is left of the replacement answer; ready once it is all out.
    fn drain_answer(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while let Some((bytes, at)) = self.answer.as_mut() {
            if *at >= bytes.len() {
                return Poll::Ready(Ok(()));
            }
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*at..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
                }
                Poll::Ready(Ok(n)) => *at += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    fn of(session: &Session) -> Option<&Deadlined> {
        session
            .as_downstream()
            .as_http1()?
            .stream()
            .as_any()
            .downcast_ref::<Deadlined>()
    }

    /// The request's head is read: no deadline while it is served.
    pub fn head_read(session: &Session) {
        if let Some(d) = Self::of(session) {
            d.awaiting.store(false, Ordering::Release);
        }
    }

    /// The answer is done: the next head is awaited (the kept-alive idle timeout applies until
    /// its first byte).
    pub fn awaiting_head(session: &Session) {
        if let Some(d) = Self::of(session) {
            d.rearm.store(true, Ordering::Release);
            d.awaiting.store(true, Ordering::Release);
        }
    }
}

impl AsyncRead for Deadlined {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.rearm.swap(false, Ordering::AcqRel) || !this.awaiting.load(Ordering::Acquire) {
            this.timer = None;
        } else if let Some(t) = this.timer.as_mut() {
            if t.as_mut().poll(cx).is_ready() {
                this.cut.inc();
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "request headers not complete in time",
                )));
            }
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.timer.is_none()
            && this.awaiting.load(Ordering::Acquire)
            && buf.filled().len() > before
        {
            // The first bytes of a new head on a kept-alive connection.
            this.timer = Some(Box::pin(tokio::time::sleep(this.timeout)));
        }
        read
    }
}

use std::future::Future;

/// Google's error answer for a status pingora gave a request it refused itself.
fn google_answer(status: u16) -> Vec<u8> {
    let (reason, message) = match status {
        405 => ("Method Not Allowed", "this method is not supported (Tollgate proxies Google's API paths, not CONNECT)"),
        431 => ("Request Header Fields Too Large", "request headers too large"),
        400..=499 => ("Bad Request", "the request is not valid HTTP/1.1: its request line, headers or body framing could not be read"),
        _ => ("Internal Server Error", "the request could not be handled"),
    };
    let google_status = if status >= 500 {
        "INTERNAL"
    } else {
        "INVALID_ARGUMENT"
    };
    let body = crate::error::google_error_body(status, message, google_status);
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json; charset=UTF-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

impl AsyncWrite for Deadlined {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        if this.answer.is_some() {
            // pingora's own answer (and anything after it, on a connection it closes) is
            // replaced by ours.
            return match this.drain_answer(cx) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(buf.len())),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            };
        }
        // An answer written while no request head was accepted is pingora's own refusal.
        if this.awaiting.load(Ordering::Acquire) && buf.starts_with(b"HTTP/1.") {
            let status = buf
                .get(9..12)
                .and_then(|s| std::str::from_utf8(s).ok())
                .and_then(|s| s.parse::<u16>().ok())
                .unwrap_or(400);
            (this.on_refused)(status);
            this.answer = Some((google_answer(status), 0));
            return match this.drain_answer(cx) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(buf.len())),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                // Our bytes go out as pingora flushes; its own count as taken.
                Poll::Pending => Poll::Ready(Ok(buf.len())),
            };
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.drain_answer(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {}
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.drain_answer(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {}
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.answer.is_some() || self.awaiting.load(Ordering::Acquire) {
            // The path above, one slice at a time.
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &**b);
            return self.poll_write(cx, first);
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for Deadlined {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for Deadlined {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Deadlined {}

impl GetTimingDigest for Deadlined {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Deadlined {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for Deadlined {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, d: SocketDigest) {
        self.inner.set_socket_digest(d)
    }
}

#[async_trait]
impl Peek for Deadlined {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}
