//! Tollgate's admin service (axum): health endpoints now; the JSON API under `/api/v1` and the
//! console grow here. It reads and writes through the `store` crate only and never depends on
//! the gateway crate.

use std::net::SocketAddr;

mod metrics;

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

pub use metrics::AdminMetrics;
use store::Store;
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
pub fn router(store: Store, metrics: Arc<AdminMetrics>) -> Router {
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
        .route("/api/v1/status", get(status))
        .with_state(store)
        .route("/metrics", get(scrape))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::track,
        ))
}

/// Starts the admin service on `listen`.
pub async fn start(listen: SocketAddr, store: Store) -> Result<RunningAdmin, StartError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|reason| StartError::Listen {
            addr: listen,
            reason,
        })?;
    let addr = listener.local_addr().unwrap_or(listen);
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let metrics = Arc::new(AdminMetrics::new().map_err(|e| StartError::Metrics(e.to_string()))?);
    let app = router(store, metrics);
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app)
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

/// Gateways that reported in the last 10 minutes. One that is degraded (fail-open), or silent
/// for 30 s (it cannot reach the database, or it stopped), sets `degraded` for the banner.
async fn status(State(store): State<Store>) -> impl IntoResponse {
    let now = chrono::Utc::now();
    match store
        .live_instances(now - chrono::Duration::minutes(10))
        .await
    {
        Ok(gateways) => {
            let list: Vec<serde_json::Value> = gateways
                .iter()
                .map(|g| {
                    let stale = g.updated_at < now - chrono::Duration::seconds(30);
                    serde_json::json!({ "instance_id": g.instance_id, "version": g.version, "degraded": g.degraded,
                        "stale": stale, "last_sync": g.last_sync, "updated_at": g.updated_at })
                })
                .collect();
            let degraded = list
                .iter()
                .any(|g| g["degraded"] == true || g["stale"] == true);
            // Models billed with a fallback price in the last 30 days: the pricing alert.
            let unpriced: Vec<serde_json::Value> = store
                .unpriced_models(now - chrono::Duration::days(30))
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|(model, events)| serde_json::json!({ "model": model, "events": events }))
                .collect();
            let body = serde_json::json!({ "degraded": degraded, "gateways": list, "unpriced_models": unpriced });
            (StatusCode::OK, Json(body)).into_response()
        }
        Err(e) => {
            tracing::warn!(error.kind = e.kind(), "status query failed");
            let body = serde_json::json!({"error": {"code": "store_unavailable", "message": "the store is unreachable"}});
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}
