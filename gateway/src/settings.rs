//! The gateway's resolved settings: what the binary's configuration validates into. No parsing
//! or environment reads here; the caller hands over finished values.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::access_log::{AccessFormat, AccessLogSettings, LogSink};
pub use crate::ledger::LedgerSettings;
pub use crate::limits::alerts::WebhookSettings;

/// Limit enforcement settings.
#[derive(Debug, Clone)]
pub struct LimitSettings {
    /// How often the usage counters are synced with the store (the fleet's shared view).
    pub sync_interval: Duration,
    /// Output tokens reserved for a request that sets no `maxOutputTokens`.
    pub default_output_tokens: i64,
    /// Where alerts are POSTed, if anywhere.
    pub webhook: Option<WebhookSettings>,
    /// Where the last-known-good keys, flags and limits are saved (start-up without the store).
    pub saved_config_path: Option<PathBuf>,
    /// This instance's id in the heartbeat table.
    pub instance_id: String,
}

/// How Tollgate authenticates to a provider.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// Sent as `x-goog-api-key`.
    ApiKey(String),
    /// Sent as `Authorization: Bearer`.
    Bearer(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::ApiKey(_) => "ApiKey(<redacted>)",
            Credential::Bearer(_) => "Bearer(<redacted>)",
        })
    }
}

/// One Google surface's upstream.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// `https://host[:port][/prefix]` or `http://…` (tests).
    pub base_url: url::Url,
    /// The provider credential; `None` answers 503 naming `credential_env`.
    pub credential: Option<Credential>,
    /// The environment variable the credential should come from.
    pub credential_env: String,
}

/// Everything the gateway needs to run.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Proxy listener.
    pub listen: SocketAddr,
    /// Metrics and health listener.
    pub metrics_listen: SocketAddr,
    /// Proxy worker threads (0 = one per core the process may run on).
    pub threads: usize,
    /// One work-stealing pool for all workers (else one independent runtime per worker); `None`:
    /// decided by the number of workers ([`crate::server::work_stealing`]).
    pub work_stealing: Option<bool>,
    /// The Gemini Developer API.
    pub gemini: UpstreamSettings,
    /// Vertex AI.
    pub vertex: UpstreamSettings,
    /// Connect timeout to an upstream.
    pub connect_timeout: Duration,
    /// Longest silence while reading from an upstream.
    pub read_timeout: Duration,
    /// Pooled upstream connections idle longer than this are closed.
    pub idle_timeout: Duration,
    /// CA certificates (PEM) for upstream TLS instead of the system's roots.
    pub upstream_ca_file: Option<String>,
    /// How often keys, orgs and flags are reloaded from the store.
    pub refresh_interval: Duration,
    /// On graceful shutdown, how long in-flight requests may take.
    pub shutdown_grace: Duration,
    /// Public base URL for rewritten upload URLs; `None` = from each request's `Host`.
    pub public_url: Option<url::Url>,
    /// The usage ledger.
    pub ledger: LedgerSettings,
    /// The price file (the built-in table is used when it does not exist).
    pub pricing_path: PathBuf,
    /// How often the price file is checked for changes.
    pub pricing_reload: Duration,
    /// Limit enforcement.
    pub limits: LimitSettings,
    /// Orgs with a metrics label of their own; the rest are `org="other"`.
    pub max_org_labels: usize,
    /// The per-request access log.
    pub access_log: AccessLogSettings,
    /// What a client may send and hold.
    pub clients: ClientLimits,
}

/// Bounds on what one client may send and hold (slow, oversized or hostile clients).
#[derive(Debug, Clone)]
pub struct ClientLimits {
    /// A request's headers must be complete this long after its first byte.
    pub header_timeout: Duration,
    /// A kept-alive connection idle this long is closed.
    pub idle_timeout: Duration,
    /// Connections one address may hold (0: no cap).
    pub max_connections_per_address: usize,
    /// Largest request head, bytes (431).
    pub max_header_bytes: usize,
    /// Most headers (431).
    pub max_headers: usize,
    /// Largest body, bytes (413).
    pub max_body_bytes: u64,
    /// Forward unknown `models/{m}:{method}` instead of refusing them.
    pub allow_unknown_operations: bool,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections_per_address: 1024,
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            max_body_bytes: 32 * 1024 * 1024,
            allow_unknown_operations: false,
        }
    }
}
