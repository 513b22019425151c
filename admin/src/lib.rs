//! Tollgate's admin service (axum): health endpoints, metrics, the JSON API under `/api/v1`
//! with logins, sessions and personal API tokens, and the web console over the same API. Every decision about who may do
//! what lives in [`ops`], which the CLI calls too. It reads and writes through the `store`
//! crate only and never depends on the gateway crate.

pub mod api;
pub mod console;
mod metrics;
pub mod ops;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

pub use metrics::AdminMetrics;
use store::{Feature, Store};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why the admin service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The metrics registry rejected a declaration (a bug).
    #[error("admin metrics: {0}")]
    Metrics(String),
    /// The listen address is taken or not ours.
    #[error("cannot listen on {addr} (admin): {reason}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error (in the message, so not also a `source` to print twice).
        reason: std::io::Error,
    },
}

/// What the admin service needs from the configuration.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Where it listens.
    pub listen: SocketAddr,
    /// A session ends after this long without a request.
    pub session_idle: chrono::Duration,
    /// A session ends this long after login, however active.
    pub session_lifetime: chrono::Duration,
    /// Mark the session cookie `Secure` (the console is served over https).
    pub secure_cookies: bool,
    /// Features a new organization gets switched on.
    pub features_on: Vec<Feature>,
    /// Failed logins allowed per account and per client address within `login_window`.
    pub login_max_failures: usize,
    /// The window failed logins are counted in.
    pub login_window: std::time::Duration,
    /// The gateway's base URL, for the console's SDK snippet.
    pub gateway_url: String,
    /// Usage events are kept this many days (`ledger.retention_days`; 0: for ever), which
    /// event listings say.
    pub event_retention_days: u64,
}

impl AdminSettings {
    /// Defaults for tests: 30 minutes idle, 12 hours at most, 10 failures in 15 minutes.
    pub fn new(listen: SocketAddr) -> AdminSettings {
        AdminSettings {
            listen,
            session_idle: chrono::Duration::minutes(30),
            session_lifetime: chrono::Duration::hours(12),
            secure_cookies: false,
            features_on: Feature::ALL.to_vec(),
            login_max_failures: 10,
            login_window: std::time::Duration::from_secs(15 * 60),
            gateway_url: "http://127.0.0.1:8080".into(),
            event_retention_days: 0,
        }
    }
}

/// What every handler shares.
pub struct AppState {
    /// The database.
    pub store: Store,
    /// The service's metrics.
    pub metrics: Arc<AdminMetrics>,
    /// Configuration.
    pub settings: AdminSettings,
    /// Failed-login counts.
    pub throttle: api::auth::LoginThrottle,
    /// The OpenAPI document, built with the router.
    pub openapi: OnceLock<utoipa::openapi::OpenApi>,
}

/// A running admin service.
pub struct RunningAdmin {
    /// Where it listens.
    pub addr: SocketAddr,
    stop_tx: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningAdmin {
    /// Stops accepting, finishes in-flight requests, and returns.
    pub async fn stop(self) {
        let _ = self.stop_tx.send(true);
        let _ = self.task.await;
    }
}

/// Builds the router (tests can drive it without a socket).
pub fn router(store: Store, metrics: Arc<AdminMetrics>, settings: AdminSettings) -> Router {
    let state = Arc::new(AppState {
        store: store.clone(),
        metrics: metrics.clone(),
        throttle: api::auth::LoginThrottle::new(settings.login_max_failures, settings.login_window),
        settings,
        openapi: OnceLock::new(),
    });
    let scrape = {
        let metrics = metrics.clone();
        move || async move {
            (
                [("content-type", "text/plain; version=0.0.4")],
                metrics.render(),
            )
        }
    };
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(store)
        .route("/metrics", get(scrape))
        .merge(api::router(state.clone()))
        .merge(console::router(state))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(security_headers))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::track,
        ))
}

/// Headers every answer carries: no sniffing, no framing, no referrer to other sites, and for
/// anything but the console's pages (which set their own policy) a policy allowing nothing.
async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use axum::http::{header, HeaderValue};
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::REFERRER_POLICY)
        .or_insert(HeaderValue::from_static("same-origin"));
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(
            "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
        ));
    r
}

/// Unknown paths: the API's JSON error under `/api/`, plain text elsewhere.
async fn not_found(uri: Uri) -> Response {
    if uri.path().starts_with("/api/") {
        return api::ApiError(ops::OpsError::NotFound("no such API endpoint".into()))
            .into_response();
    }
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// Starts the admin service.
pub async fn start(settings: AdminSettings, store: Store) -> Result<RunningAdmin, StartError> {
    let listen = settings.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|reason| StartError::Listen {
            addr: listen,
            reason,
        })?;
    let addr = listener.local_addr().unwrap_or(listen);
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let metrics = Arc::new(AdminMetrics::new().map_err(|e| StartError::Metrics(e.to_string()))?);
    let app = router(store, metrics, settings);
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
        {
            tracing::error!(error = %e, "admin listener failed");
        }
    });
    tracing::info!(listen = %addr, "admin service listening");
    Ok(RunningAdmin {
        addr,
        stop_tx,
        task,
    })
}

async fn ready(State(store): State<Store>) -> impl IntoResponse {
    match store.ping().await {
        Ok(()) => (StatusCode::OK, "ready: store reachable\n"),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: store unreachable\n",
        ),
    }
}
