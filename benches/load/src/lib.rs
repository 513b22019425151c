//! The load benchmark's helpers: the bare pingora passthrough (shared by the `bare-pingora` and
//! `bare-pingora-mimalloc` binaries, which differ only in their allocator).

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

struct Pass {
    upstream: std::net::SocketAddr,
    host: String,
}

#[async_trait]
impl ProxyHttp for Pass {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }

    async fn upstream_request_filter(
        &self,
        _s: &mut Session,
        req: &mut pingora::http::RequestHeader,
        _c: &mut (),
    ) -> Result<()> {
        req.insert_header("host", self.host.as_str())
    }
}

/// Runs the passthrough with the command line's settings (never returns).
pub fn run() {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:9701".into());
    let upstream: std::net::SocketAddr = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(([127, 0, 0, 1], 9700).into());
    let threads = args.next().and_then(|t| t.parse().ok()).unwrap_or(1);
    let work_stealing = args.next().and_then(|t| t.parse().ok()).unwrap_or(true);
    let upstream_keepalive_pool_size = args.next().and_then(|t| t.parse().ok()).unwrap_or(128);
    // The client side's L4 write buffer (pingora's default: 1,460 bytes, one MSS). A response
    // header and a body that fit in it leave in one write.
    let write_buffer: Option<usize> = args.next().and_then(|t| t.parse().ok());
    let conf = ServerConf {
        threads,
        work_stealing,
        upstream_keepalive_pool_size,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut svc = pingora::proxy::http_proxy_service(
        &server.configuration,
        Pass {
            upstream,
            host: upstream.to_string(),
        },
    );
    match write_buffer {
        Some(w) => svc.add_listener(
            pingora::listeners::ListenerConfig::tcp(listen)
                .l4_buffer(pingora::listeners::L4BufferSettings::default().write(w)),
        ),
        None => svc.add_tcp(&listen),
    }
    server.add_service(svc);
    server.run_forever();
}
