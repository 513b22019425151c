//! The pingora `ProxyHttp` implementation. Each hook is a few lines calling the stages in the
//! order a request takes them: [`identify`] → [`admit`] → [`forward`] → [`meter`] → [`record`],
//! with [`uploads`], [`claims`] (ownership) and [`listing`] beside them and the per-request state
//! in [`ctx`]. Nothing here does I/O besides the upstream and the event's journal record (no
//! database, no lock held across an await).

mod admit;
mod claims;
mod ctx;
mod forward;
mod identify;
mod listing;
mod meter;
mod record;
mod uploads;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use dashmap::DashMap;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};

pub use ctx::{new_request_id, Ctx, InFlight};
pub use uploads::{UploadSession, Uploads, UPLOAD_SESSION_TTL};

use crate::access_log::AccessLog;
use crate::admission::Enforcement;
use crate::ledger::Ledger;
use crate::limits::alerts::Alerts;
use crate::limits::counters::Counters;
use crate::listing::Lister;
use crate::metering::pricing::PriceTable;
use crate::metrics::Metrics;
use crate::resources::{Access, Owners};
use crate::route::Provider;
use crate::snapshot::LiveConfig;
use crate::upstream::Upstream;

/// The request id header, kept if the client sent one.
pub const REQUEST_ID: &str = "x-request-id";

/// Shared state of the proxy.
pub struct Proxy {
    /// Keys, orgs, flags.
    pub live: Arc<LiveConfig>,
    /// The Developer API upstream.
    pub gemini: Arc<Upstream>,
    /// The Vertex upstream.
    pub vertex: Arc<Upstream>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Resumable uploads in progress (the SDKs send the chunks without an API key).
    pub uploads: Arc<Uploads>,
    /// Public base URL for rewritten upload URLs.
    pub public_url: Option<url::Url>,
    /// Where usage events go.
    pub ledger: Ledger,
    /// Prices (swapped on reload).
    pub prices: Arc<ArcSwap<PriceTable>>,
    /// Models already warned about having no price (warn once each).
    pub unpriced_warned: Arc<DashMap<String, ()>>,
    /// Usage counters per org and period.
    pub counters: Arc<Counters>,
    /// Limit alerts.
    pub alerts: Arc<Alerts>,
    /// Whether limits are enforced now.
    pub enforcement: Arc<Enforcement>,
    /// Output tokens reserved when a request sets no `maxOutputTokens`.
    pub default_output_tokens: i64,
    /// One line per request.
    pub access_log: Arc<AccessLog>,
    /// Which org owns each file, cached content, batch and operation.
    pub owners: Arc<Owners>,
    /// Answers listings with the org's own entries.
    pub lister: Arc<Lister>,
    /// Requests between their headers and their end (a graceful stop waits for none).
    pub in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// Bounds on what a client may send.
    pub clients: crate::settings::ClientLimits,
}

impl Proxy {
    fn upstream(&self, p: Provider) -> &Upstream {
        match p {
            Provider::Gemini => &self.gemini,
            Provider::Vertex => &self.vertex,
        }
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    /// Boxed: pingora keeps the context inline in each connection's future, where it is
    /// copied into more than one slot (1.4 KB each); a box keeps one copy, on the heap.
    type CTX = Box<Ctx>;

    fn new_ctx(&self) -> Box<Ctx> {
        Box::new(Ctx::new(&self.in_flight))
    }

    async fn early_request_filter(&self, session: &mut Session, _ctx: &mut Box<Ctx>) -> Result<()> {
        self.prepare_client(session);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Box<Ctx>) -> Result<bool> {
        ctx.begin(session.req_header());
        let e = match self.admit_all(session, ctx).await {
            Ok(()) if ctx.access == Access::List => match self.serve_listing(session, ctx).await {
                Ok(()) => return Ok(true),
                Err(e) => e,
            },
            Ok(()) => return Ok(false),
            Err(e) => e,
        };
        let headers = e.headers(self.counters.now());
        self.refuse(session, ctx, e, &headers).await?;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Box<Ctx>,
    ) -> Result<Box<HttpPeer>> {
        self.peer(ctx)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end: bool,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        self.forward_body(body, ctx)
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        self.rewrite_request(req, ctx)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Box<Ctx>,
    ) -> Result<()> {
        self.upstream_answered(ctx);
        if let Some(r) = &ctx.reservation {
            if let Some(w) = Alerts::warning(&ctx.limits, r.usage()) {
                resp.insert_header("x-tollgate-limit-warning", w)?;
            }
        }
        resp.insert_header(REQUEST_ID, ctx.reply_id())?;
        ctx.status = resp.status.as_u16();
        forward::close_if_stopping(session);
        self.upload_answered(resp, ctx);
        self.claims_answered(resp, ctx);
        self.rewrite_upload_url(session, resp, ctx)
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end: bool,
        ctx: &mut Box<Ctx>,
    ) -> Result<Option<Duration>> {
        if let Some(b) = body {
            ctx.response_meter.feed(b);
            self.hold_claims(ctx, b);
        }
        if end {
            self.answer_ended(ctx);
        }
        Ok(None)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Box<Ctx>,
        client_reused: bool,
    ) -> Box<Error> {
        self.retry_decision(peer, session, e, ctx, client_reused)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Box<Ctx>,
    ) -> FailToProxy {
        self.fail(session, e, ctx).await
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Box<Ctx>) {
        self.finish(session, ctx).await
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Box<Ctx>, error: &Error) -> bool {
        // A client that hangs up is not an error of ours (the access line still records it).
        error.esource() == &ErrorSource::Downstream
            && matches!(
                error.etype(),
                ErrorType::ConnectionClosed | ErrorType::WriteError | ErrorType::ReadError
            )
    }

    fn request_summary(&self, session: &Session, _ctx: &Box<Ctx>) -> String {
        // pingora's default prints the whole URI, `?key=` included; the path is enough.
        let req = session.req_header();
        format!("{} {}", req.method, req.uri.path())
    }
}
