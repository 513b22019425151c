//! Upstream choice and request rewriting: which Google host a request goes to, the peer to
//! connect to (DNS resolved off the request path, since `HttpPeer::new` would block), and the
//! header and path changes that swap the gateway key for the provider credential.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;

use crate::route::Provider;
use crate::settings::{Credential, GatewaySettings, UpstreamSettings};

/// One upstream: its address (re-resolved in the background) and what to send it.
pub struct Upstream {
    /// Which surface.
    pub provider: Provider,
    host: String,
    port: u16,
    tls: bool,
    /// `Host` header value (`host` or `host:port`).
    pub authority: String,
    /// A path prefix from the base URL, without the trailing slash ("" for none).
    pub base_path: String,
    /// The credential, if configured.
    pub credential: Option<Credential>,
    /// Where the credential should come from (for the 503 message).
    pub credential_env: String,
    peer: ArcSwapOption<HttpPeer>,
    /// Unix seconds of the last answer from this upstream (0: never).
    pub last_ok: std::sync::atomic::AtomicI64,
    /// Unix seconds of the last failure to reach it (0: never).
    pub last_err: std::sync::atomic::AtomicI64,
    connect_timeout: Duration,
    read_timeout: Duration,
    idle_timeout: Duration,
    /// The header values sent on every request, built once (`Host`, the credential).
    host_value: Option<http::HeaderValue>,
    /// The name as a static str: pingora keeps a `&'static str` name as it is, where a
    /// `HeaderName` is copied into a title-cased form on every request.
    credential_header: Option<(&'static str, http::HeaderValue)>,
}

/// A credential as the header that carries it (marked sensitive, so `Debug` hides it).
fn credential_header(c: &Credential) -> Option<(&'static str, http::HeaderValue)> {
    let (name, value) = match c {
        Credential::ApiKey(k) => ("x-goog-api-key", http::HeaderValue::from_str(k)),
        Credential::Bearer(t) => (
            "Authorization",
            http::HeaderValue::from_str(&format!("Bearer {t}")),
        ),
    };
    let mut value = value.ok()?;
    value.set_sensitive(true);
    Some((name, value))
}

impl Upstream {
    /// Builds an upstream from settings; call [`Upstream::resolve`] before serving.
    pub fn new(provider: Provider, s: &UpstreamSettings, g: &GatewaySettings) -> Upstream {
        let url = &s.base_url;
        let tls = url.scheme() == "https";
        let host = url
            .host_str()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_owned();
        let port = url
            .port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 });
        let authority = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        Upstream {
            provider,
            host,
            port,
            tls,
            base_path: url.path().trim_end_matches('/').to_owned(),
            credential: s.credential.clone(),
            credential_env: s.credential_env.clone(),
            peer: ArcSwapOption::empty(),
            last_ok: Default::default(),
            last_err: Default::default(),
            connect_timeout: g.connect_timeout,
            read_timeout: g.read_timeout,
            idle_timeout: g.idle_timeout,
            host_value: http::HeaderValue::from_str(&authority).ok(),
            credential_header: s.credential.as_ref().and_then(credential_header),
            authority,
        }
    }

    /// Resolves the host and installs a fresh peer template. Returns false when resolution failed
    /// (the previous peer, if any, stays in use).
    pub async fn resolve(&self) -> bool {
        let addr = match tokio::net::lookup_host((self.host.as_str(), self.port)).await {
            Ok(mut addrs) => addrs.next(),
            Err(e) => {
                tracing::warn!(provider = self.provider.as_str(), host = %self.host, error = %e, "cannot resolve upstream host");
                None
            }
        };
        let Some(addr) = addr else { return false };
        self.peer.store(Some(Arc::new(self.make_peer(addr))));
        true
    }

    fn make_peer(&self, addr: SocketAddr) -> HttpPeer {
        let sni = if self.tls {
            self.host.clone()
        } else {
            String::new()
        };
        let mut peer = HttpPeer::new(addr, self.tls, sni);
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.total_connection_timeout = Some(self.connect_timeout + Duration::from_secs(5));
        peer.options.read_timeout = Some(self.read_timeout);
        peer.options.idle_timeout = Some(self.idle_timeout);
        peer
    }

    /// A peer for one request (a clone of the template), or `None` before the first resolution.
    /// `https://host[:port]`, as the proxy reaches it.
    pub fn origin(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.authority)
    }

    /// The header carrying the provider credential, if one is configured.
    pub fn credential_header(&self) -> Option<&(&'static str, http::HeaderValue)> {
        self.credential_header.as_ref()
    }

    pub fn peer(&self) -> Option<Box<HttpPeer>> {
        self.peer.load().as_deref().map(|p| Box::new(p.clone()))
    }

    /// Re-resolves every `every` (DNS answers change; Google rotates addresses).
    pub async fn resolve_loop(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            self.resolve().await;
        }
    }

    /// Rewrites the request about to go upstream: path (base prefix, `key` parameter removed),
    /// `Host`, credentials, and no `x-tollgate-*` headers.
    pub fn rewrite_request(&self, req: &mut RequestHeader) -> pingora::Result<()> {
        let uri = &req.uri;
        let has_key_param = uri
            .query()
            .is_some_and(|q| q.split('&').any(crate::identity::is_key_param));
        // The usual case (no base path, origin-form, no key parameter) keeps the URI as it is.
        if !self.base_path.is_empty() || uri.scheme().is_some() || has_key_param {
            let path = uri.path();
            let query = uri.query().map(strip_key_param).filter(|q| !q.is_empty());
            let mut target = String::with_capacity(self.base_path.len() + path.len() + 64);
            target.push_str(&self.base_path);
            target.push_str(path);
            if let Some(q) = query {
                target.push('?');
                target.push_str(&q);
            }
            let new_uri = target.parse::<http::Uri>().map_err(|e| {
                pingora::Error::because(
                    pingora::ErrorType::InternalError,
                    "rewriting the upstream path",
                    e,
                )
            })?;
            req.set_uri(new_uri);
        }
        req.remove_header("x-goog-api-key");
        req.remove_header(&http::header::AUTHORIZATION);
        let tollgate: Vec<http::HeaderName> = req
            .headers
            .keys()
            .filter(|k| k.as_str().starts_with("x-tollgate-"))
            .cloned()
            .collect();
        for name in tollgate {
            req.remove_header(&name);
        }
        if let Some((name, value)) = &self.credential_header {
            req.insert_header(*name, value.clone())?;
        }
        if let Some(host) = &self.host_value {
            req.insert_header("Host", host.clone())?;
        }
        // A compressed body would hide usageMetadata from the meter (see README: metering).
        req.insert_header("Accept-Encoding", "identity")?;
        Ok(())
    }
}

impl Upstream {
    /// Whether the last request to it got an answer (or none was sent yet).
    pub fn last_answered(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let (ok, err) = (self.last_ok.load(Relaxed), self.last_err.load(Relaxed));
        err == 0 || ok >= err
    }

    /// Whether a TCP connection to it opens now (within `within`): the readiness probe after a
    /// failed request, so one blip does not drain the gateway for long.
    pub async fn probe(&self, within: Duration) -> bool {
        use pingora::upstreams::peer::Peer;
        let Some(addr) = self.peer().and_then(|p| p.address().as_inet().copied()) else {
            return false;
        };
        matches!(
            tokio::time::timeout(within, tokio::net::TcpStream::connect(addr)).await,
            Ok(Ok(_))
        )
    }
}

/// Loads a CA file as pingora's TLS connector will (only certificates, each one a valid trust
/// anchor) and says why not, or that it holds none.
pub fn check_ca_file(path: &str) -> Result<(), String> {
    let mut roots = pingora::tls::RootCertStore::empty();
    pingora::tls::load_ca_file_into_store(path, &mut roots).map_err(|e| e.to_string())?;
    if roots.is_empty() {
        return Err("it holds no certificate".into());
    }
    Ok(())
}

/// A query string without its `key` parameters (however their names are encoded).
pub fn strip_key_param(query: &str) -> String {
    query
        .split('&')
        .filter(|p| !p.is_empty() && !crate::identity::is_key_param(p))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_parameters_are_stripped_and_others_kept() {
        assert_eq!(strip_key_param("key=tg_x&alt=sse"), "alt=sse");
        assert_eq!(strip_key_param("alt=sse&key=tg_x"), "alt=sse");
        assert_eq!(strip_key_param("key=tg_x"), "");
        assert_eq!(
            strip_key_param("pageSize=5&monkey=1"),
            "pageSize=5&monkey=1"
        );
    }

    fn gs(base: &str) -> (UpstreamSettings, GatewaySettings) {
        let u = UpstreamSettings {
            base_url: url::Url::parse(base).unwrap(),
            credential: Some(Credential::ApiKey("AIzaProvider".into())),
            credential_env: "GEMINI_API_KEY".into(),
        };
        let g = GatewaySettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            metrics_listen: "127.0.0.1:0".parse().unwrap(),
            threads: 1,
            work_stealing: None,
            gemini: u.clone(),
            vertex: u.clone(),
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            upstream_ca_file: None,
            refresh_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(1),
            public_url: None,
            ledger: crate::ledger::LedgerSettings {
                spool_path: "spool.jsonl".into(),
                queue_capacity: 1,
                batch_size: 1,
                flush_interval: Duration::from_secs(1),
                fsync_interval: None,
            },
            clients: crate::settings::ClientLimits::default(),
            pricing_path: "pricing.toml".into(),
            pricing_reload: Duration::from_secs(1),
            limits: crate::settings::LimitSettings {
                sync_interval: Duration::from_secs(1),
                default_output_tokens: 1024,
                webhook: None,
                saved_config_path: None,
                instance_id: "test".into(),
            },
            max_org_labels: 10,
            access_log: Default::default(),
        };
        (u, g)
    }

    #[test]
    fn the_gateway_key_is_swapped_for_the_provider_key() {
        let (u, g) = gs("https://generativelanguage.googleapis.com");
        let up = Upstream::new(Provider::Gemini, &u, &g);
        let mut req = RequestHeader::build(
            "POST",
            b"/v1beta/models/m:streamGenerateContent?key=tg_secret&alt=sse",
            None,
        )
        .unwrap();
        req.insert_header("x-goog-api-key", "tg_secret").unwrap();
        req.insert_header("authorization", "Bearer tg_secret")
            .unwrap();
        req.insert_header("x-tollgate-org", "acme").unwrap();
        req.insert_header("x-tollgate-user", "u1").unwrap();
        req.insert_header("host", "127.0.0.1:8080").unwrap();
        up.rewrite_request(&mut req).unwrap();
        assert_eq!(
            req.uri.to_string(),
            "/v1beta/models/m:streamGenerateContent?alt=sse"
        );
        assert_eq!(req.headers.get("x-goog-api-key").unwrap(), "AIzaProvider");
        assert!(req.headers.get("authorization").is_none());
        assert!(req
            .headers
            .keys()
            .all(|k| !k.as_str().starts_with("x-tollgate-")));
        assert_eq!(
            req.headers.get("host").unwrap(),
            "generativelanguage.googleapis.com"
        );
    }

    #[test]
    fn base_paths_and_ports_are_kept() {
        let (u, g) = gs("http://127.0.0.1:9000/google/");
        let up = Upstream::new(Provider::Vertex, &u, &g);
        assert_eq!(
            (
                up.authority.as_str(),
                up.base_path.as_str(),
                up.port,
                up.tls
            ),
            ("127.0.0.1:9000", "/google", 9000, false)
        );
        let mut req = RequestHeader::build("GET", b"/v1beta/models", None).unwrap();
        up.rewrite_request(&mut req).unwrap();
        assert_eq!(req.uri.to_string(), "/google/v1beta/models");
    }

    #[test]
    fn a_uri_without_key_or_base_path_goes_upstream_as_it_came() {
        let (u, g) = gs("https://generativelanguage.googleapis.com");
        let up = Upstream::new(Provider::Gemini, &u, &g);
        for uri in [
            "/v1beta/models/m:streamGenerateContent?alt=sse",
            "/v1beta/models?pageSize=5&monkey=1",
            "/v1beta/files/abc",
        ] {
            let mut req = RequestHeader::build("GET", uri.as_bytes(), None).unwrap();
            up.rewrite_request(&mut req).unwrap();
            assert_eq!(req.uri.to_string(), uri);
        }
        // A key parameter anywhere (even empty) takes the rewriting path.
        for (uri, want) in [
            (
                "/v1beta/models?pageSize=5&key=tg_x",
                "/v1beta/models?pageSize=5",
            ),
            ("/v1beta/models?key=&alt=sse", "/v1beta/models?alt=sse"),
            ("/v1beta/models?key", "/v1beta/models"),
        ] {
            let mut req = RequestHeader::build("GET", uri.as_bytes(), None).unwrap();
            up.rewrite_request(&mut req).unwrap();
            assert_eq!(req.uri.to_string(), want, "{uri}");
        }
    }
}
