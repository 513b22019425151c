//! Starting and stopping a gateway: the pingora proxy on its own thread (pingora builds its own
//! runtimes and must not run inside ours), and on the caller's tokio runtime the work of
//! [`crate::background`] (live-config refresh, fleet sync, price reload), the DNS refresh and the
//! metrics listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use dashmap::DashMap;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use store::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::access_log::AccessLog;
use crate::admission::Enforcement;
use crate::background;
use crate::ledger::{self, LedgerWriter};
use crate::limits::counters::{Counters, SystemClock};
use crate::metering::pricing::PriceTable;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::resources::Owners;
use crate::route::Provider;
use crate::settings::GatewaySettings;
use crate::snapshot::LiveConfig;
use crate::upstream::Upstream;

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The price file is invalid.
    #[error("{0}")]
    Pricing(#[from] crate::metering::pricing::PricingError),
    /// A listener address is taken or not ours.
    #[error("cannot listen on {addr} ({what}): {reason}")]
    Listen {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error (in the message, so not also a `source` to print twice).
        reason: std::io::Error,
    },
    /// The metrics registry rejected a declaration (a bug).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The listing client could not be built.
    #[error("{0}")]
    Lister(#[from] crate::listing::ListerError),
    /// The ledger's journal cannot be opened.
    #[error("cannot open the journal next to the spool: {0}")]
    Journal(std::io::Error),
    /// The settings do not go together.
    #[error("{0}")]
    Config(String),
    /// The proxy thread could not be started or did not come up.
    #[error("the proxy did not start: {0}")]
    Proxy(String),
}

/// How to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Stop accepting, let in-flight requests finish (up to the grace period).
    Graceful,
    /// Stop now.
    Fast,
}

struct ChannelSignal(watch::Receiver<Option<Stop>>);

#[async_trait]
impl ShutdownSignalWatch for ChannelSignal {
    async fn recv(&self) -> ShutdownSignal {
        let mut rx = self.0.clone();
        let stop = match rx.wait_for(Option::is_some).await {
            Ok(v) => *v,
            Err(_) => Some(Stop::Fast), // the handle was dropped
        };
        match stop {
            Some(Stop::Graceful) => ShutdownSignal::GracefulTerminate,
            _ => ShutdownSignal::FastShutdown,
        }
    }
}

/// A running gateway.
pub struct RunningGateway {
    /// The proxy's address.
    pub addr: SocketAddr,
    /// The metrics listener's address.
    pub metrics_addr: SocketAddr,
    /// Its metrics (tests read them directly).
    pub metrics: Arc<Metrics>,
    /// Its live configuration.
    pub live: Arc<LiveConfig>,
    stop_tx: watch::Sender<Option<Stop>>,
    proxy_thread: Option<std::thread::JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
    ledger: Option<LedgerWriter>,
    access_log: Arc<AccessLog>,
    /// Who owns which resource (tests record owners as an earlier request would have).
    pub owners: Arc<Owners>,
    store: Store,
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    grace: Duration,
}

impl RunningGateway {
    /// Stops the proxy and the background tasks. Fast: now. Graceful: no new connections, and
    /// the requests in flight may finish, up to the grace period; an idle gateway stops at once.
    pub async fn stop(mut self, how: Stop) {
        let _ = self.stop_tx.send(Some(how));
        match how {
            Stop::Fast => {
                if let Some(t) = self.proxy_thread.take() {
                    let _ = tokio::task::spawn_blocking(move || t.join()).await;
                }
            }
            Stop::Graceful => {
                // pingora closes its listener at once, but its grace period is a fixed sleep:
                // the requests in flight are counted here instead, and its thread (asleep) ends
                // with the process.
                let deadline = std::time::Instant::now() + self.grace;
                while tokio::net::TcpStream::connect(self.addr).await.is_ok()
                    && std::time::Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                while self.in_flight.load(std::sync::atomic::Ordering::Acquire) > 0
                    && std::time::Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let left = self.in_flight.load(std::sync::atomic::Ordering::Acquire);
                if left > 0 {
                    tracing::warn!(
                        requests = left,
                        "grace period over: requests still in flight are cut"
                    );
                }
                drop(self.proxy_thread.take());
            }
        }
        for t in &self.tasks {
            t.abort();
        }
        // Wait for the aborts to land: a sync caught mid-flush hands its changes back first.
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        self.access_log.flush();
        if let Err(e) = self.owners.flush(&self.store).await {
            tracing::error!(error = %e, claims = self.owners.pending(), "resource ownerships not written at shutdown");
        }
        // Every request has finished: write what the ledger still holds.
        if let Some(l) = self.ledger.take() {
            l.drain().await;
        }
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        let _ = self.stop_tx.send(Some(Stop::Fast));
        for t in &self.tasks {
            t.abort();
        }
        self.access_log.flush();
    }
}

/// Starts a gateway: loads the live configuration, resolves the upstreams, opens the metrics
/// listener, and starts the proxy. Returns once the proxy accepts connections. Must be called on
/// a multi-thread tokio runtime that outlives the gateway (the background tasks run on it).
pub async fn start(settings: GatewaySettings, store: Store) -> Result<RunningGateway, StartError> {
    let stealing = work_stealing(settings.threads, settings.work_stealing)?;
    // Fail with a clear message rather than a pingora panic when the port is taken.
    std::net::TcpListener::bind(settings.listen).map_err(|reason| StartError::Listen {
        what: "gateway",
        addr: settings.listen,
        reason,
    })?;
    let metrics_listener = tokio::net::TcpListener::bind(settings.metrics_listen)
        .await
        .map_err(|reason| StartError::Listen {
            what: "metrics",
            addr: settings.metrics_listen,
            reason,
        })?;
    let metrics_addr = metrics_listener
        .local_addr()
        .unwrap_or(settings.metrics_listen);

    let metrics = Arc::new(Metrics::new(settings.max_org_labels)?);
    let live = Arc::new(LiveConfig::with_saved_copy(
        settings.limits.saved_config_path.clone(),
    ));
    if !live.refresh(&store).await && !live.load_saved_copy() {
        tracing::error!("cannot load keys from the store and no saved copy exists; requests get 503 until the store answers (retrying in the background)");
    }
    metrics.keys_loaded.set(live.load().key_count() as i64);
    let gemini = Arc::new(Upstream::new(Provider::Gemini, &settings.gemini, &settings));
    let vertex = Arc::new(Upstream::new(Provider::Vertex, &settings.vertex, &settings));
    for up in [&gemini, &vertex] {
        up.resolve().await;
        if up.credential.is_none() {
            tracing::warn!(provider = up.provider.as_str(), env = %up.credential_env, "no provider credential: requests to this provider get 503 until it is set");
        }
    }
    let prices = Arc::new(ArcSwap::from_pointee(PriceTable::load(
        &settings.pricing_path,
    )?));
    let counters = Arc::new(Counters::new(Arc::new(SystemClock)));
    let enforcement = Arc::new(Enforcement::new(metrics.clone()));
    // Ownership changes are journaled beside the ledger's spool, for the same reason.
    let claims_path = settings
        .ledger
        .spool_path
        .parent()
        .unwrap_or_else(|| std::path::Path::new("."))
        .join("claims.jsonl");
    let owners = Arc::new(Owners::with_journal(claims_path).map_err(StartError::Journal)?);
    let sync = background::FleetSync {
        owners: owners.clone(),
        counters: counters.clone(),
        enforcement: enforcement.clone(),
        live: live.clone(),
        store: store.clone(),
        metrics: metrics.clone(),
        instance_id: settings.limits.instance_id.clone(),
        last_sync: std::sync::Mutex::new(None),
    };
    sync.run_once().await; // seed the counters before the first request
    let (alerts, alert_task) = crate::limits::alerts::start(
        store.clone(),
        settings.limits.webhook.clone(),
        metrics.clone(),
    );
    let (ledger, ledger_writer) = ledger::start(
        settings.ledger.clone(),
        store.clone(),
        metrics.clone(),
        Some(counters.clone()),
    )
    .map_err(StartError::Journal)?;
    let access_log = Arc::new(AccessLog::new(settings.access_log.clone()));
    let refused_ledger = ledger.clone();
    let proxy = Proxy {
        live: live.clone(),
        gemini: gemini.clone(),
        vertex: vertex.clone(),
        metrics: metrics.clone(),
        uploads: Arc::new(crate::proxy::Uploads::default()),
        public_url: settings.public_url.clone(),
        ledger,
        prices: prices.clone(),
        unpriced_warned: Arc::new(DashMap::new()),
        counters,
        alerts,
        enforcement,
        default_output_tokens: settings.limits.default_output_tokens,
        access_log: access_log.clone(),
        owners: owners.clone(),
        lister: Arc::new(crate::listing::Lister::new(
            settings.connect_timeout,
            settings.read_timeout,
            settings.upstream_ca_file.as_deref(),
        )?),
        in_flight: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        clients: settings.clients.clone(),
    };
    let in_flight = proxy.in_flight.clone();
    let uploads = proxy.uploads.clone();

    let mut tasks = vec![alert_task];
    if access_log.enabled() {
        tasks.push(tokio::spawn(background::flush_access_log(
            access_log.clone(),
        )));
    }
    tasks.push(tokio::spawn(
        Arc::new(sync).run(settings.limits.sync_interval),
    ));
    tasks.push(tokio::spawn(background::reload_prices(
        prices,
        settings.pricing_path.clone(),
        settings.pricing_reload,
    )));
    tasks.push(tokio::spawn(background::refresh_config(
        live.clone(),
        store.clone(),
        metrics.clone(),
        uploads,
        settings.refresh_interval,
    )));
    tasks.push(tokio::spawn(
        gemini.clone().resolve_loop(Duration::from_secs(60)),
    ));
    tasks.push(tokio::spawn(
        vertex.clone().resolve_loop(Duration::from_secs(60)),
    ));
    let app = background::health_app(
        metrics.clone(),
        live.clone(),
        [gemini.clone(), vertex.clone()],
    );
    tasks.push(tokio::spawn(async move {
        if let Err(e) = axum::serve(metrics_listener, app).await {
            tracing::error!(error = %e, "metrics listener failed");
        }
    }));

    let (stop_tx, stop_rx) = watch::channel(None);
    let server = build_server(&settings, proxy, metrics.clone(), refused_ledger, stealing);
    let proxy_thread = std::thread::Builder::new()
        .name("tollgate-proxy".into())
        .spawn(move || {
            server.run(RunArgs {
                shutdown_signal: Box::new(ChannelSignal(stop_rx)),
            })
        })
        .map_err(|e| StartError::Proxy(e.to_string()))?;
    let running = RunningGateway {
        addr: settings.listen,
        metrics_addr,
        metrics,
        live,
        stop_tx,
        proxy_thread: Some(proxy_thread),
        tasks,
        ledger: Some(ledger_writer),
        access_log,
        owners,
        store,
        in_flight,
        grace: settings.shutdown_grace,
    };
    wait_listening(settings.listen)
        .await
        .map_err(StartError::Proxy)?;
    tracing::info!(listen = %settings.listen, metrics = %metrics_addr, workers = worker_threads(settings.threads), "gateway listening");
    Ok(running)
}

/// The proxy's workers: `configured`, or for 0 one per core the process may run on (Rust's
/// `available_parallelism` counts the CPU affinity mask and a cgroup's CPU quota, so a gateway
/// pinned to one core or limited to one CPU gets one worker, not one per core of the host).
pub fn worker_threads(configured: usize) -> usize {
    match configured {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// Whether the workers share a work-stealing pool: as configured, else only with more than one
/// worker. Independent per-worker runtimes with more than one worker are refused: pingora 0.9
/// does not tell its accept loops to stop on a fast stop, so a loop left on one worker, whose
/// listener belonged to a worker already shut down, retries a failing accept without yielding
/// and the stop never ends (seen in the test suite with two workers).
pub fn work_stealing(threads: usize, configured: Option<bool>) -> Result<bool, StartError> {
    let workers = worker_threads(threads);
    match configured {
        Some(false) if workers > 1 => Err(StartError::Config(format!(
            "gateway.work_stealing = false needs one worker, and {workers} are configured \
             (gateway.threads = {}): unset it, or set gateway.threads = 1",
            threads
        ))),
        Some(on) => Ok(on),
        None => Ok(workers > 1),
    }
}

fn build_server(
    settings: &GatewaySettings,
    proxy: Proxy,
    metrics: Arc<Metrics>,
    ledger: crate::ledger::Ledger,
    stealing: bool,
) -> Server {
    let conf = ServerConf {
        threads: worker_threads(settings.threads),
        // Off with one worker: one independent current-thread runtime, +4 % requests/s for bare
        // pingora on one core (benches/results/tuning.md); the hooks never need a task to
        // migrate (slow work goes to spawn_blocking or a channel). Caveat: pingora 0.9 keeps
        // each no-steal worker's runtime handles in a `thread_local::ThreadLocal`, whose slots
        // pass to new threads that reuse an exited thread's id, so once such a server stopped,
        // another one started in the same process may spawn onto dead runtimes. One gateway
        // per process (the binary) is unaffected; tests that restart in-process turn it on
        // (cloudflare/pingora#981, fix proposed in #982).
        work_stealing: stealing,
        // Idle upstream connections kept per worker (pingora's default is 128): a gateway in
        // front of a handful of Google endpoints can have far more requests in flight than that
        // (streams), and each connection not kept is a new TCP and TLS handshake later. A pool
        // too small costs: 16 connections lose 42 % at c=64 (tuning.md).
        upstream_keepalive_pool_size: 1024,
        // `RunningGateway::stop` waits for the requests in flight, up to the grace period; this
        // outlasts it, so that pingora never cuts one first.
        grace_period_seconds: Some(settings.shutdown_grace.as_secs() + 1),
        graceful_shutdown_timeout_seconds: Some(1),
        // Upstream TLS trusts these roots instead of the system's (checked at config time).
        ca_file: settings.upstream_ca_file.clone(),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let app = pingora::proxy::http_proxy(&server.configuration, proxy);
    let gate = crate::clients::Gate::new(app, settings.clients.clone(), metrics, ledger);
    let mut service = pingora::services::listening::Service::new("tollgate proxy".into(), gate);
    service.add_tcp(&settings.listen.to_string());
    server.add_service(service);
    server
}

async fn wait_listening(addr: SocketAddr) -> Result<(), String> {
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(format!("nothing listens on {addr} after 5 s"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_workers_means_one_per_core_this_process_may_use() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(worker_threads(0), cores);
        assert_eq!(worker_threads(3), 3);
    }

    #[test]
    fn work_stealing_follows_the_workers_unless_set() {
        assert!(!work_stealing(1, None).unwrap());
        assert!(work_stealing(2, None).unwrap());
        assert!(work_stealing(1, Some(true)).unwrap());
        assert!(!work_stealing(1, Some(false)).unwrap());
        let err = work_stealing(2, Some(false)).unwrap_err().to_string();
        assert!(
            err.contains("gateway.work_stealing = false needs one worker"),
            "{err}"
        );
        assert!(err.contains("gateway.threads = 2"), "{err}");
    }
}
