//! Starting a whole Tollgate in-process against the fake upstream, and small helpers.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use store::{Feature, KeyKind, Store};
use tollgate::config::Config;
use tollgate::serve::{self, Running, Services};

use crate::fake_google::{FakeGoogle, PROVIDER_KEY};

/// A port that was free a moment ago (pingora needs a concrete port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A loopback port that refuses connections for as long as the returned socket lives: bound
/// but not listening, so no other test's server can take it meanwhile (a port found free and
/// released can be, and then "unreachable" answers).
pub fn refusing_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    (socket, port)
}

/// Options for [`TestEnv::start`].
pub struct Opts {
    pub read_timeout_ms: u64,
    pub extra_toml: String,
    /// Point the gemini upstream here instead of the fake (e.g. a closed port).
    pub gemini_url: Option<String>,
    /// Extra lines for the `[gateway]` section.
    pub gateway_toml: String,
    /// Use this database (and PostgreSQL schema) instead of a fresh SQLite file.
    pub database: Option<(String, Option<String>)>,
    /// How often the ledger writes.
    pub flush_ms: u64,
    /// Extra lines for the `[limits]` section.
    pub limits_toml: String,
    /// Where the last-known-good live config is saved (default: in the test's directory).
    pub saved_config: Option<std::path::PathBuf>,
    /// The price file (default: config/pricing.toml).
    pub pricing: Option<std::path::PathBuf>,
    /// `gateway.work_stealing`: tests that start a second gateway after stopping one in the
    /// same process need it (see gateway::server's build_server on pingora's stale handles).
    pub work_stealing: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            read_timeout_ms: 10_000,
            extra_toml: String::new(),
            gemini_url: None,
            gateway_toml: String::new(),
            database: None,
            flush_ms: 50,
            limits_toml: String::new(),
            saved_config: None,
            pricing: None,
            work_stealing: false,
        }
    }
}

/// A running Tollgate with a fake Google behind it.
pub struct TestEnv {
    pub fake: FakeGoogle,
    pub running: Option<Running>,
    pub store: Store,
    pub gateway_url: String,
    pub metrics_url: String,
    pub admin_url: String,
    pub db_url: String,
    pub dir: tempfile::TempDir,
}

impl TestEnv {
    pub async fn start() -> TestEnv {
        Self::start_with(Opts::default()).await
    }

    pub async fn start_with(opts: Opts) -> TestEnv {
        let fake = FakeGoogle::start().await;
        let dir = tempfile::tempdir().unwrap();
        let (db_url, pg_schema) = opts.database.clone().unwrap_or_else(|| {
            (
                format!("sqlite://{}/tollgate.db", dir.path().display()),
                None,
            )
        });
        let gateway_port = free_port();
        let toml_text = format!(
            "[database]\nurl = \"{db_url}\"\nacquire_timeout_ms = 1000\n\
             [gateway]\nlisten = \"127.0.0.1:{gateway_port}\"\nrefresh_secs = 1\nshutdown_grace_secs = 0\n{ws}\
             upstream_read_timeout_ms = {rt}\nupstream_connect_timeout_ms = 1000\n{gw}\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n\
             [providers.gemini]\nbase_url = \"{g}\"\n[providers.vertex]\nbase_url = \"{v}\"\n\
             [ledger]\nspool_path = \"{spool}\"\nflush_ms = {flush}\n\
             [pricing]\npath = \"{pricing}\"\nreload_secs = 1\n\
             [limits]\nsync_secs = 1\nsaved_config_path = \"{saved}\"\n{limits}\n{extra}",
            saved = opts.saved_config.clone().unwrap_or_else(|| dir.path().join("live.json")).display(),
            limits = opts.limits_toml,
            gw = opts.gateway_toml,
            // Unset: the default (a work-stealing pool when there is more than one core).
            ws = if opts.work_stealing { "work_stealing = true\n" } else { "" },
            spool = dir.path().join("spool/events.jsonl").display(),
            flush = opts.flush_ms,
            pricing = opts.pricing.clone().unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/config/pricing.toml").into()).display(),
            rt = opts.read_timeout_ms,
            g = opts.gemini_url.clone().unwrap_or_else(|| fake.base_url()),
            v = fake.base_url(),
            extra = opts.extra_toml,
        );
        let env: BTreeMap<String, String> = [
            ("GEMINI_API_KEY", PROVIDER_KEY),
            ("VERTEX_API_KEY", PROVIDER_KEY),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut settings = Config::from_toml_str(&toml_text, &env)
            .unwrap()
            .validate(&env)
            .unwrap();
        settings.connect.pg_schema = pg_schema;
        let running = serve::start(&settings, Services::ALL).await.unwrap();
        let g = running.gateway.as_ref().unwrap();
        TestEnv {
            gateway_url: format!("http://{}", g.addr),
            metrics_url: format!("http://{}", g.metrics_addr),
            admin_url: format!("http://{}", running.admin.as_ref().unwrap().addr),
            store: running.store.clone(),
            running: Some(running),
            fake,
            db_url,
            dir,
        }
    }

    /// An org with every feature on, and an app key for it.
    pub async fn org_with_key(&self, name: &str) -> (i64, String) {
        self.org_with_key_without(name, &[]).await
    }

    /// An org with every feature on except `off`, and an app key for it.
    pub async fn org_with_key_without(&self, name: &str, off: &[Feature]) -> (i64, String) {
        let on: Vec<Feature> = Feature::ALL
            .iter()
            .copied()
            .filter(|f| !off.contains(f))
            .collect();
        let org = self.store.create_org(name, &on).await.unwrap();
        let (_, key) = self
            .store
            .create_key(org.id, KeyKind::App, "test", None)
            .await
            .unwrap();
        self.refresh().await;
        (org.id, key)
    }

    /// Records `org` as the owner of `resources` (as creating them through the gateway would)
    /// and makes the gateway see it now.
    pub async fn own(&self, org: i64, resources: &[&str]) {
        let claims: Vec<(String, i64)> = resources.iter().map(|r| (r.to_string(), org)).collect();
        self.store.claim_resources(&claims).await.unwrap();
        let g = self.running.as_ref().unwrap().gateway.as_ref().unwrap();
        g.owners.sync(&self.store).await.unwrap();
    }

    /// Makes the gateway see the store's current keys and flags now (instead of within 1 s).
    pub async fn refresh(&self) {
        let g = self.running.as_ref().unwrap().gateway.as_ref().unwrap();
        assert!(g.live.refresh(&self.store).await);
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop(gateway::Stop::Fast).await;
        }
    }

    /// Runs the `tollgate` binary against this environment's database and returns its stdout;
    /// a non-zero exit fails the test with the command's stderr.
    pub async fn cli(&self, args: &[&str]) -> String {
        let mut cmd = tokio::process::Command::new(bin());
        cmd.args(args).env("TOLLGATE_DATABASE__URL", &self.db_url);
        String::from_utf8(stdout_of(&mut cmd, "").await).unwrap()
    }

    /// A personal API token of a new superuser (one per call).
    pub async fn superuser_token(&self) -> String {
        let email = format!("root{}@example.com", free_port());
        let u = self
            .store
            .create_user(&email, "root password", true)
            .await
            .unwrap();
        let audit = store::Audit::new("test", "token.create");
        self.store
            .create_token_audited(u.id, "test", None, &audit)
            .await
            .unwrap()
            .1
    }

    /// GETs an admin API path as a new superuser; the body as JSON.
    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        let token = self.superuser_token().await;
        client()
            .get(format!("{}{path}", self.admin_url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Asserts the fake saw nothing it should not have.
    pub fn assert_clean_upstream(&self) {
        let v = self.fake.violations();
        assert!(
            v.is_empty(),
            "the upstream received what only the gateway may see: {v:#?}"
        );
    }
}

/// Runs a command to its end and returns its stdout; a non-zero exit fails the test with
/// `what` followed by the command's stderr.
pub async fn stdout_of(cmd: &mut tokio::process::Command, what: &str) -> Vec<u8> {
    let out = cmd.output().await.unwrap();
    assert!(
        out.status.success(),
        "{what}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Checks `ready` every 100 ms until it holds; fails with `what` once `within` has passed.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !ready().await {
        assert!(start.elapsed() < within, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// GETs a URL; the body as text.
pub async fn get_text(url: &str) -> String {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The built `tollgate` binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tollgate"))
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A fresh PostgreSQL schema name, or `None` (with a printed reason) without a test server.
pub fn postgres_url() -> Option<String> {
    match std::env::var("TOLLGATE_TEST_POSTGRES") {
        Ok(url) => Some(url),
        Err(_) => {
            missing("TOLLGATE_TEST_POSTGRES is not set (PostgreSQL test)");
            None
        }
    }
}

/// A test's prerequisite is missing. In CI (`CI=true`) the test fails with the reason: a skip
/// that libtest reports as a pass would be a pass nobody earned. Elsewhere the caller returns
/// early; the skip is printed and appended to `TOLLGATE_SKIP_LOG`, which `make test` counts in
/// its summary.
pub fn missing(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0") {
        panic!("prerequisite missing, and CI requires every test to run: {reason}");
    }
    eprintln!("skipped: {reason}");
    if let Ok(log) = std::env::var("TOLLGATE_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(f, "{reason}");
        }
    }
}

pub fn unique_schema(tag: &str) -> String {
    format!(
        "tg_e2e_{tag}_{}_{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    )
}
