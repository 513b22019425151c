//! The configuration contract: `config/tollgate.toml`, overridden key by key by environment
//! variables `TOLLGATE_<SECTION>__<KEY>`, validated into the settings each service takes.
//!
//! Two phases: deserialize (errors carry the key path), then [`Config::validate`] into resolved
//! types (parsed addresses and URLs, provider credentials read from the named variables).
//! Environment reads go through [`Env`] so tests pass a map instead of mutating the process.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where the environment comes from (the process, or a map in tests).
pub trait Env {
    /// One variable, if set and valid Unicode.
    fn var(&self, name: &str) -> Option<String>;
    /// Every variable whose name starts with `prefix`.
    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        std::env::vars()
            .filter(|(k, _)| k.starts_with(prefix))
            .collect()
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        self.iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// The default configuration file, used when it exists and no `--config` is given.
pub const DEFAULT_CONFIG_PATH: &str = "config/tollgate.toml";
const ENV_PREFIX: &str = "TOLLGATE_";

/// Why a configuration could not be loaded. Each message is one line naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named by `--config` could not be read.
    #[error("cannot read config file {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file is not valid TOML, or a key has the wrong type or is unknown.
    #[error("invalid config{origin}: {message}")]
    Parse {
        /// Where it came from (` in FILE`), or empty.
        origin: String,
        /// The key path and what is wrong.
        message: String,
    },
    /// A setting has a value of the right type but not a usable one.
    #[error("invalid setting {key} = {value:?}: expected {expected}")]
    Invalid {
        /// Dotted key path, e.g. `gateway.listen`.
        key: String,
        /// The rejected value.
        value: String,
        /// What would be accepted.
        expected: String,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where Tollgate keeps its data.
    pub database: DatabaseConfig,
    /// The proxy.
    pub gateway: GatewayConfig,
    /// The admin service (JSON API and console).
    pub admin: AdminConfig,
    /// The gateway's Prometheus and health listener.
    pub metrics: MetricsConfig,
    /// The Google upstreams.
    pub providers: ProvidersConfig,
    /// Feature flags given to new organizations.
    pub features: FeaturesConfig,
    /// The usage ledger (queue and spool).
    pub ledger: LedgerConfig,
    /// Model prices.
    pub pricing: PricingConfig,
    /// Usage-limit enforcement.
    pub limits: LimitsConfig,
    /// Logging.
    pub log: LogConfig,
}

/// `[database]`
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (created on first start) or `postgres://USER@HOST/DB`.
    pub url: String,
    /// Largest number of pooled connections.
    pub max_connections: u32,
    /// How long to wait for a connection before an operation fails, in milliseconds.
    pub acquire_timeout_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://data/tollgate.db".into(),
            max_connections: 8,
            acquire_timeout_ms: 5_000,
        }
    }
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout_ms", &self.acquire_timeout_ms)
            .finish()
    }
}

/// A database URL with any password replaced, for logs and `Debug`.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// `[gateway]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address the proxy listens on.
    pub listen: String,
    /// Worker threads of the proxy; 0 (the default) = one per core the process may run on.
    pub threads: usize,
    /// Whether the workers share one work-stealing task pool. Unset (the default): off with one
    /// worker (4 % more requests per second on a core), on with more (pingora's independent
    /// per-worker runtimes can spin forever at a fast stop: see `gateway::server::work_stealing`).
    pub work_stealing: Option<bool>,
    /// Connecting to an upstream gives up after this many milliseconds (→ 502).
    pub upstream_connect_timeout_ms: u64,
    /// Waiting for upstream bytes gives up after this many milliseconds of silence (→ 504).
    pub upstream_read_timeout_ms: u64,
    /// Pooled upstream connections idle longer than this are closed, in milliseconds.
    pub upstream_idle_timeout_ms: u64,
    /// A PEM file of CA certificates that upstream TLS certificates are checked against instead
    /// of the system's roots; empty = the system's roots (`SSL_CERT_FILE` and `SSL_CERT_DIR`
    /// are honoured).
    pub upstream_ca_file: String,
    /// The store's config version is checked this often, in seconds; keys, orgs, flags and
    /// limits are reloaded when it moved.
    pub refresh_secs: u64,
    /// On SIGTERM, in-flight requests get this many seconds to finish.
    pub shutdown_grace_secs: u64,
    /// The gateway's public base URL (e.g. `https://ai.example.com`), used to rewrite
    /// `X-Goog-Upload-URL`; empty = derived from each request's `Host` header.
    pub public_url: String,
    /// A client must send a request's headers within this many milliseconds of starting it
    /// (slowloris); the connection is closed otherwise.
    pub header_timeout_ms: u64,
    /// A kept-alive client connection idle for this many seconds is closed.
    pub client_idle_timeout_secs: u64,
    /// Connections one client address may hold open at once (0 = no cap). Behind a load
    /// balancer every client shares its address: raise it, or set 0.
    pub max_connections_per_address: usize,
    /// Largest request head (request line and headers) accepted, in bytes (→ 431).
    pub max_header_bytes: usize,
    /// Most request headers accepted (→ 431).
    pub max_headers: usize,
    /// Largest request body accepted, in bytes (→ 413).
    pub max_body_bytes: u64,
    /// Forward `models/{m}:{method}` for methods the gateway does not know (unmetered unless
    /// the answer carries usageMetadata); off, they are refused with 400.
    pub allow_unknown_operations: bool,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            threads: 0,
            work_stealing: None,
            upstream_connect_timeout_ms: 5_000,
            upstream_read_timeout_ms: 300_000,
            upstream_idle_timeout_ms: 55_000,
            upstream_ca_file: String::new(),
            refresh_secs: 2,
            shutdown_grace_secs: 5,
            public_url: String::new(),
            header_timeout_ms: 10_000,
            client_idle_timeout_secs: 60,
            max_connections_per_address: 1024,
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            max_body_bytes: 32 * 1024 * 1024,
            allow_unknown_operations: false,
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Address the admin service listens on.
    pub listen: String,
    /// The admin service's public base URL (e.g. https://tollgate.example.com); when https, the
    /// session cookie is marked Secure. Empty: http on `listen`.
    pub public_url: String,
    /// A console session ends after this many minutes without a request.
    pub session_idle_mins: u64,
    /// A console session ends this many hours after login, however active.
    pub session_lifetime_hours: u64,
    /// Failed logins allowed per account and per client address within `login_window_secs`;
    /// the next attempt gets 429 with Retry-After.
    pub login_max_failures: usize,
    /// The window failed logins are counted in.
    pub login_window_secs: u64,
    /// Audit rows older than this many days are deleted (0 keeps them all).
    pub audit_retention_days: u64,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8081".into(),
            public_url: String::new(),
            session_idle_mins: 30,
            session_lifetime_hours: 12,
            login_max_failures: 10,
            login_window_secs: 900,
            audit_retention_days: 400,
        }
    }
}

/// `[metrics]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the gateway's `/metrics`, `/healthz` and `/readyz`.
    pub listen: String,
    /// Orgs that get a metrics label of their own (by name); later ones share `org="other"`.
    pub max_org_labels: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
            max_org_labels: 1000,
        }
    }
}

/// `[providers]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProvidersConfig {
    /// The Gemini Developer API.
    pub gemini: ProviderConfig,
    /// Vertex AI.
    pub vertex: ProviderConfig,
}

impl Default for ProvidersConfig {
    fn default() -> Self {
        Self {
            gemini: ProviderConfig {
                base_url: "https://generativelanguage.googleapis.com".into(),
                api_key_env: "GEMINI_API_KEY".into(),
                bearer_token_env: String::new(),
            },
            vertex: ProviderConfig {
                base_url: "https://aiplatform.googleapis.com".into(),
                api_key_env: "VERTEX_API_KEY".into(),
                bearer_token_env: String::new(),
            },
        }
    }
}

/// `[providers.gemini]`, `[providers.vertex]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderConfig {
    /// `https://host[:port]` (TLS with SNI) or `http://host:port` (tests).
    pub base_url: String,
    /// The name of the environment variable holding the API key (never the key itself).
    pub api_key_env: String,
    /// The name of a variable holding an OAuth bearer token; when set and non-empty it is sent
    /// as `Authorization: Bearer` instead of the API key (Vertex with a service account).
    pub bearer_token_env: String,
}

/// `[features]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeaturesConfig {
    /// Features that new organizations get switched off (all others are on).
    pub default_off: Vec<String>,
}

/// `[ledger]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LedgerConfig {
    /// Append-only file for usage events the database could not take yet (replayed later).
    pub spool_path: String,
    /// Usage events held in memory before overflowing to the spool.
    pub queue_capacity: usize,
    /// Most events written in one database transaction. Larger batches cost less per event when
    /// many orgs' events interleave (docs/performance.md#the-stored-event-what-each-index-costs).
    pub batch_size: usize,
    /// How often queued events are written, in milliseconds.
    pub flush_ms: u64,
    /// How often the event journal is flushed to the disk, in milliseconds: on power loss (not
    /// on a crash, which loses nothing) at most this much of the last answered requests' events
    /// can be lost. 0 leaves it to the operating system.
    pub fsync_ms: u64,
    /// Usage events older than this many days are deleted in the background, in small batches
    /// (0 keeps them all). The daily rollups keep every total: limits, charts and invoices read
    /// them, not the events.
    pub retention_days: u64,
    /// How often the background pass deletes what is past its retention (events, alerts, audit
    /// rows, ended sessions), in seconds; the first pass runs at most five minutes after start.
    pub prune_interval_secs: u64,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            spool_path: "data/spool/events.jsonl".into(),
            queue_capacity: 10_000,
            batch_size: 2_000,
            flush_ms: 200,
            fsync_ms: 1000,
            retention_days: 90,
            prune_interval_secs: 3600,
        }
    }
}

/// `[pricing]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PricingConfig {
    /// The price file; when it does not exist the table built into the binary is used.
    pub path: String,
    /// How often the file is checked for changes (edits apply without a restart), in seconds.
    pub reload_secs: u64,
}

impl Default for PricingConfig {
    fn default() -> Self {
        Self {
            path: "config/pricing.toml".into(),
            reload_secs: 5,
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// How often each gateway pulls the orgs' usage totals from the database and folds in its
    /// own, so a fleet enforces one shared limit (see the README for the overshoot bound), in seconds.
    pub sync_secs: u64,
    /// Output tokens reserved at admission for a request that sets no `maxOutputTokens`.
    pub default_output_tokens: i64,
    /// Where alerts are POSTed as JSON (empty: no webhook).
    pub webhook_url: String,
    /// Per-attempt timeout of a webhook delivery, in milliseconds.
    pub webhook_timeout_ms: u64,
    /// Further attempts after a failed webhook delivery (exponential backoff from 0.5 s).
    pub webhook_retries: u32,
    /// Last-known-good copy of keys, flags and limits (hashes only), used when the database is
    /// unreachable at start-up. Empty: none.
    pub saved_config_path: String,
    /// Limit alerts older than this many days are deleted (0 keeps them all).
    pub alert_retention_days: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            sync_secs: 2,
            default_output_tokens: 1024,
            webhook_url: String::new(),
            webhook_timeout_ms: 2_000,
            webhook_retries: 3,
            saved_config_path: "data/live-config.json".into(),
            alert_retention_days: 400,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Default level filter (`error`, `warn`, `info`, `debug`, `trace`); `RUST_LOG` wins.
    pub level: String,
    /// `text` (human-readable) or `json`.
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

/// A validated provider: its upstream and the credential read from the environment.
#[derive(Clone)]
pub struct ProviderSettings {
    /// The parsed base URL.
    pub base_url: url::Url,
    /// The credential, when its variable is set.
    pub credential: Option<Credential>,
    /// The variable that should hold it (for the start-up warning).
    pub credential_env: String,
}

impl std::fmt::Debug for ProviderSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSettings")
            .field("base_url", &self.base_url.as_str())
            .field(
                "credential",
                &self.credential.as_ref().map(|_| "<redacted>"),
            )
            .field("credential_env", &self.credential_env)
            .finish()
    }
}

/// How Tollgate authenticates to a provider.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// Sent as `x-goog-api-key`.
    ApiKey(String),
    /// Sent as `Authorization: Bearer`.
    Bearer(String),
}

/// The configuration after validation.
#[derive(Clone)]
pub struct Settings {
    /// The raw values (for printing and for the parts not resolved here).
    pub raw: Config,
    /// Database connection.
    pub database_url: String,
    /// Connection pool options.
    pub connect: store::ConnectOptions,
    /// Gateway listener.
    pub gateway_listen: SocketAddr,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// The admin service's session cookie is marked Secure (its public URL is https).
    pub admin_secure_cookies: bool,
    /// Metrics listener.
    pub metrics_listen: SocketAddr,
    /// Gemini Developer API.
    pub gemini: ProviderSettings,
    /// Vertex AI.
    pub vertex: ProviderSettings,
    /// Features new orgs get switched on.
    pub features_on: Vec<store::Feature>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("database_url", &redact_url(&self.database_url))
            .field("gateway_listen", &self.gateway_listen)
            .field("admin_listen", &self.admin_listen)
            .field("metrics_listen", &self.metrics_listen)
            .field("gemini", &self.gemini)
            .field("vertex", &self.vertex)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Loads the file (`path`, else `config/tollgate.toml` when it exists, else the defaults),
    /// then applies `TOLLGATE_<SECTION>__<KEY>` overrides from `env`.
    pub fn load(path: Option<&Path>, env: &dyn Env) -> Result<Config, ConfigError> {
        let (table, origin) = match path {
            Some(p) => (read_table(p)?, format!(" in {}", p.display())),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                let p = Path::new(DEFAULT_CONFIG_PATH);
                (read_table(p)?, format!(" in {}", p.display()))
            }
            None => (toml::Table::new(), String::new()),
        };
        Self::from_table(table, &origin, env)
    }

    /// Parses a TOML document and applies the environment overrides.
    pub fn from_toml_str(text: &str, env: &dyn Env) -> Result<Config, ConfigError> {
        let table = text
            .parse::<toml::Table>()
            .map_err(|e| ConfigError::Parse {
                origin: String::new(),
                message: one_line(&e.to_string()),
            })?;
        Self::from_table(table, "", env)
    }

    fn from_table(table: toml::Table, origin: &str, env: &dyn Env) -> Result<Config, ConfigError> {
        // Start from the defaults so a partial section (`[providers.vertex]` with only
        // `base_url`) keeps the defaults of the keys it does not name.
        let mut merged = match toml::Value::try_from(Config::default()) {
            Ok(toml::Value::Table(t)) => t,
            _ => toml::Table::new(),
        };
        merge(&mut merged, table);
        apply_env_overrides(&mut merged, env)?;
        let de = toml::Value::Table(merged);
        serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: format!("{}: {}", e.path(), one_line(&e.inner().to_string())),
        })
    }

    /// Checks every value and resolves addresses, URLs and credentials.
    pub fn validate(&self, env: &dyn Env) -> Result<Settings, ConfigError> {
        if store::Backend::from_url(&self.database.url).is_none() {
            return Err(invalid(
                "database.url",
                &redact_url(&self.database.url),
                "sqlite://PATH or postgres://USER@HOST/DB",
            ));
        }
        if self.database.max_connections == 0 {
            return Err(invalid(
                "database.max_connections",
                "0",
                "a number of connections of 1 or more",
            ));
        }
        let g = &self.gateway;
        for (key, v) in [
            (
                "gateway.upstream_connect_timeout_ms",
                g.upstream_connect_timeout_ms,
            ),
            (
                "gateway.upstream_read_timeout_ms",
                g.upstream_read_timeout_ms,
            ),
            ("gateway.refresh_secs", g.refresh_secs),
            ("gateway.header_timeout_ms", g.header_timeout_ms),
            (
                "gateway.client_idle_timeout_secs",
                g.client_idle_timeout_secs,
            ),
            ("gateway.max_header_bytes", g.max_header_bytes as u64),
            ("gateway.max_headers", g.max_headers as u64),
            ("gateway.max_body_bytes", g.max_body_bytes),
            ("ledger.flush_ms", self.ledger.flush_ms),
            ("ledger.queue_capacity", self.ledger.queue_capacity as u64),
            ("ledger.batch_size", self.ledger.batch_size as u64),
            ("pricing.reload_secs", self.pricing.reload_secs),
            ("limits.sync_secs", self.limits.sync_secs),
        ] {
            if v == 0 {
                return Err(invalid(key, "0", "a number of 1 or more"));
            }
        }
        if self.ledger.spool_path.trim().is_empty() {
            return Err(invalid("ledger.spool_path", "", "a file path"));
        }
        if !g.public_url.is_empty() {
            parse_http_url("gateway.public_url", &g.public_url)?;
        }
        if !g.upstream_ca_file.is_empty() {
            check_ca_file("gateway.upstream_ca_file", &g.upstream_ca_file)?;
        }
        if !self.limits.webhook_url.is_empty() {
            parse_http_url("limits.webhook_url", &self.limits.webhook_url)?;
        }
        if self.limits.default_output_tokens < 0 {
            return Err(invalid(
                "limits.default_output_tokens",
                &self.limits.default_output_tokens.to_string(),
                "0 or more tokens",
            ));
        }
        if !["text", "json"].contains(&self.log.format.as_str()) {
            return Err(invalid("log.format", &self.log.format, "text or json"));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid(
                "log.level",
                &self.log.level,
                "error, warn, info, debug or trace",
            ));
        }
        let mut features_on = store::Feature::ALL.to_vec();
        for name in &self.features.default_off {
            let f: store::Feature = name.parse().map_err(|_| {
                let all: Vec<_> = store::Feature::ALL.iter().map(|f| f.as_str()).collect();
                invalid(
                    "features.default_off",
                    name,
                    &format!("feature names among {}", all.join(", ")),
                )
            })?;
            features_on.retain(|x| *x != f);
        }
        Ok(Settings {
            raw: self.clone(),
            database_url: self.database.url.clone(),
            connect: store::ConnectOptions {
                max_connections: self.database.max_connections,
                acquire_timeout: Duration::from_millis(self.database.acquire_timeout_ms),
                pg_schema: None,
                role: None,
            },
            gateway_listen: parse_addr("gateway.listen", &g.listen)?,
            admin_listen: parse_addr("admin.listen", &self.admin.listen)?,
            admin_secure_cookies: self.admin.validate()?,
            metrics_listen: parse_addr("metrics.listen", &self.metrics.listen)?,
            gemini: provider("providers.gemini", &self.providers.gemini, env)?,
            vertex: provider("providers.vertex", &self.providers.vertex, env)?,
            features_on,
        })
    }
}

impl AdminConfig {
    /// Checks the ranges; whether the session cookie is Secure.
    fn validate(&self) -> Result<bool, ConfigError> {
        let secure = match self.public_url.trim() {
            "" => false,
            u => parse_http_url("admin.public_url", u)?.scheme() == "https",
        };
        for (key, v) in [
            ("admin.session_idle_mins", self.session_idle_mins),
            ("admin.session_lifetime_hours", self.session_lifetime_hours),
            ("admin.login_window_secs", self.login_window_secs),
            ("admin.login_max_failures", self.login_max_failures as u64),
        ] {
            if v == 0 {
                return Err(invalid(key, "0", "a whole number of 1 or more"));
            }
        }
        Ok(secure)
    }
}

fn provider(key: &str, p: &ProviderConfig, env: &dyn Env) -> Result<ProviderSettings, ConfigError> {
    let base_url = parse_http_url(&format!("{key}.base_url"), &p.base_url)?;
    let read = |name: &str| {
        env.var(name)
            .filter(|v| !name.is_empty() && !v.trim().is_empty())
    };
    let credential = match read(&p.bearer_token_env) {
        Some(token) => Some(Credential::Bearer(token.trim().to_owned())),
        None => read(&p.api_key_env).map(|k| Credential::ApiKey(k.trim().to_owned())),
    };
    Ok(ProviderSettings {
        base_url,
        credential,
        credential_env: p.api_key_env.clone(),
    })
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    text.parse::<toml::Table>().map_err(|e| ConfigError::Parse {
        origin: format!(" in {}", path.display()),
        message: one_line(&e.to_string()),
    })
}

/// Sets `a.b.c` from `TOLLGATE_A__B__C`. The value is typed like the default at that path
/// (so `"8080"` stays a string where a string is expected), else read as a TOML literal.
fn apply_env_overrides(table: &mut toml::Table, env: &dyn Env) -> Result<(), ConfigError> {
    let defaults = toml::Value::try_from(Config::default()).map_err(|e| ConfigError::Parse {
        origin: String::new(),
        message: e.to_string(),
    })?;
    let mut vars = env.vars_with_prefix(ENV_PREFIX);
    vars.sort();
    for (name, raw) in vars {
        let rest = &name[ENV_PREFIX.len()..];
        if !rest.contains("__") {
            continue; // TOLLGATE_TEST_POSTGRES and friends are not settings
        }
        let path: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
        let key = path.join(".");
        let default = path.iter().try_fold(&defaults, |v, k| v.get(k));
        let value = typed_value(&key, &name, &raw, default)?;
        set_path(table, &path, value, &key)?;
    }
    Ok(())
}

fn typed_value(
    key: &str,
    var: &str,
    raw: &str,
    default: Option<&toml::Value>,
) -> Result<toml::Value, ConfigError> {
    use toml::Value;
    let bad = |expected: &str| ConfigError::Invalid {
        key: format!("{key} (from {var})"),
        value: raw.to_owned(),
        expected: expected.to_owned(),
    };
    Ok(match default {
        Some(Value::String(_)) => Value::String(raw.to_owned()),
        Some(Value::Integer(_)) => {
            Value::Integer(raw.trim().parse().map_err(|_| bad("an integer"))?)
        }
        Some(Value::Boolean(_)) => {
            Value::Boolean(raw.trim().parse().map_err(|_| bad("true or false"))?)
        }
        Some(Value::Float(_)) => Value::Float(raw.trim().parse().map_err(|_| bad("a number"))?),
        Some(Value::Array(_)) => {
            // `a,b,c` or a TOML array literal.
            match format!("v = {raw}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
            {
                Some(v @ Value::Array(_)) => v,
                _ => Value::Array(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| Value::String(s.to_owned()))
                        .collect(),
                ),
            }
        }
        _ => format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| Value::String(raw.to_owned())),
    })
}

/// Deep-merges `over` into `base`: tables merge key by key, other values replace.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn set_path(
    table: &mut toml::Table,
    path: &[String],
    value: toml::Value,
    key: &str,
) -> Result<(), ConfigError> {
    let Some((last, parents)) = path.split_last() else {
        return Ok(());
    };
    let mut cur = table;
    for p in parents {
        let entry = cur
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match entry {
            toml::Value::Table(t) => t,
            _ => {
                return Err(ConfigError::Parse {
                    origin: String::new(),
                    message: format!("{key}: {p} is a value, not a section"),
                })
            }
        };
    }
    cur.insert(last.clone(), value);
    Ok(())
}

fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .parse()
        .map_err(|_| invalid(key, value, "an IP address and port like 127.0.0.1:8080"))
}

fn parse_http_url(key: &str, value: &str) -> Result<url::Url, ConfigError> {
    let u =
        url::Url::parse(value).map_err(|_| invalid(key, value, "an http:// or https:// URL"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(invalid(
            key,
            value,
            "an http:// or https:// URL with a host",
        ));
    }
    Ok(u)
}

/// A PEM file that pingora's own loader accepts, with at least one certificate (pingora would
/// otherwise panic when it builds its TLS connector, after the gateway started).
fn check_ca_file(key: &str, path: &str) -> Result<(), ConfigError> {
    gateway::upstream::check_ca_file(path).map_err(|why| {
        invalid(
            key,
            path,
            &format!(
                "a readable PEM file of CA certificates only ({})",
                one_line(&why)
            ),
        )
    })
}

fn invalid(key: &str, value: &str, expected: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: value.into(),
        expected: expected.into(),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests;
