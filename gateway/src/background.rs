//! The gateway's background work, on the caller's tokio runtime and never on the request path:
//! the live-config refresh (and upload-session pruning), the fleet sync of usage counters,
//! ownerships and the heartbeat, the price file's reload, the access log's flush, and the
//! metrics listener's routes (`/metrics`, `/healthz`, `/readyz`).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use store::Store;

use crate::access_log::AccessLog;
use crate::admission::Enforcement;
use crate::limits::counters::{Counters, StoreTotals};
use crate::limits::Amounts;
use crate::metering::pricing::PriceTable;
use crate::metrics::Metrics;
use crate::proxy::Uploads;
use crate::resources::Owners;
use crate::snapshot::LiveConfig;
use crate::upstream::Upstream;

/// The metrics listener's routes: `/metrics`, `/healthz`, `/readyz`.
pub(crate) fn health_app(
    metrics: Arc<Metrics>,
    live: Arc<LiveConfig>,
    upstreams: [Arc<Upstream>; 2],
) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .with_state(HealthState {
            metrics,
            live,
            upstreams,
        })
}

/// Keys, orgs, flags and limits reloaded from the store every `every`; upload sessions idle
/// too long are forgotten on the same beat.
pub(crate) async fn refresh_config(
    live: Arc<LiveConfig>,
    store: Store,
    metrics: Arc<Metrics>,
    uploads: Arc<Uploads>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        live.refresh(&store).await;
        metrics.keys_loaded.set(live.load().key_count() as i64);
        uploads.prune();
    }
}

/// The access log's buffered lines written out on a beat.
pub(crate) async fn flush_access_log(log: Arc<AccessLog>) {
    let mut tick = tokio::time::interval(crate::access_log::FLUSH_INTERVAL);
    loop {
        tick.tick().await;
        log.flush();
    }
}

#[derive(Clone)]
struct HealthState {
    metrics: Arc<Metrics>,
    live: Arc<LiveConfig>,
    upstreams: [Arc<Upstream>; 2],
}

async fn metrics_handler(State(s): State<HealthState>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

async fn ready_handler(State(s): State<HealthState>) -> impl IntoResponse {
    // Ready: the live config is loaded, each upstream answered its last request (or, after a
    // failure, accepts a connection now), and the store is reachable or fail-open is engaged.
    // The body says which.
    let mut lines = Vec::new();
    let mut ready = true;
    match (s.live.load().is_loaded(), s.live.age()) {
        (true, Some(age)) => lines.push(format!(
            "config: loaded from the store {} s ago",
            age.as_secs()
        )),
        (true, None) => {
            lines.push("config: loaded from the saved copy (store not reached yet)".to_owned())
        }
        (false, _) => {
            ready = false;
            lines.push("config: not loaded (store unreachable, no saved copy)".to_owned());
        }
    }
    for up in &s.upstreams {
        let name = up.provider.as_str();
        if up.last_answered() {
            lines.push(format!(
                "upstream {name}: answered its last request (or none sent yet)"
            ));
        } else if up.probe(Duration::from_secs(1)).await {
            lines.push(format!(
                "upstream {name}: its last request failed, but it accepts connections now"
            ));
        } else {
            ready = false;
            lines.push(format!(
                "upstream {name}: unreachable (its last request failed and a connection does not open now)"
            ));
        }
    }
    if s.metrics.degraded.get() == 1 {
        lines.push("store: unreachable, fail-open engaged (limits not enforced)".to_owned());
    } else {
        lines.push(format!(
            "store: reachable (usage synced {:.0} s ago)",
            s.metrics.fleet_sync_age.get()
        ));
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let head = if ready { "ready" } else { "not ready" };
    (status, format!("{head}\n{}\n", lines.join("\n")))
}

/// Reloads the price file when its modification time changes; a bad edit keeps the old prices.
pub(crate) async fn reload_prices(
    prices: Arc<ArcSwap<PriceTable>>,
    path: std::path::PathBuf,
    every: Duration,
) {
    let mtime = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen = mtime(&path);
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let now = mtime(&path);
        if now == seen {
            continue;
        }
        seen = now;
        match PriceTable::load(&path) {
            Ok(t) => {
                tracing::info!(file = %path.display(), models = t.len(), "prices reloaded");
                prices.store(Arc::new(t));
            }
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "price file not reloaded; keeping the previous prices")
            }
        }
    }
}

/// Keeps the usage counters in step with the store (the fleet's shared totals) and reports this
/// instance's state in the heartbeat table.
pub(crate) struct FleetSync {
    pub(crate) owners: Arc<Owners>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) enforcement: Arc<Enforcement>,
    pub(crate) live: Arc<LiveConfig>,
    pub(crate) store: Store,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) instance_id: String,
    pub(crate) last_sync:
        std::sync::Mutex<Option<(std::time::Instant, chrono::DateTime<chrono::Utc>)>>,
}

impl FleetSync {
    /// Syncs every `every`, for ever (the first sync is `run_once` at start-up).
    pub(crate) async fn run(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            self.run_once().await;
        }
    }

    /// One sync: counters with the store's totals, ownerships, the heartbeat.
    pub(crate) async fn run_once(&self) {
        use chrono::Datelike;
        let now = self.counters.now();
        let today = now.date_naive();
        let month_start = today.with_day(1).unwrap_or(today);
        let flushed = self.counters.take_flushed();
        match self.store.period_usage(today, month_start).await {
            Ok(rows) => {
                let totals = rows
                    .into_iter()
                    .map(|r| {
                        (
                            r.org_id,
                            StoreTotals(Amounts::new(
                                r.day_requests,
                                r.day_ads,
                                r.month_tokens,
                                r.month_cost_micros,
                            )),
                        )
                    })
                    .collect();
                self.counters.sync(&totals, &flushed);
                self.enforcement.set_seeded();
                if let Ok(mut l) = self.last_sync.lock() {
                    *l = Some((std::time::Instant::now(), chrono::Utc::now()));
                }
            }
            Err(e) => {
                self.counters.untake_flushed(flushed);
                tracing::warn!(error.kind = e.kind(), error = %e, "usage sync with the store failed");
            }
        }
        let last = self.last_sync.lock().ok().and_then(|l| *l);
        if let Some((at, _)) = last {
            self.metrics.fleet_sync_age.set(at.elapsed().as_secs_f64());
        }
        if let Some(age) = self.live.age() {
            self.metrics.live_config_age.set(age.as_secs_f64());
        }
        match self.owners.sync(&self.store).await {
            Ok(()) => self.metrics.owned_resources.set(self.owners.len() as i64),
            Err(e) => {
                tracing::warn!(error.kind = e.kind(), error = %e, claims = self.owners.pending(), "resource ownerships not synced with the store; retrying")
            }
        }
        self.metrics
            .resource_claims_pending
            .set(self.owners.pending() as i64);
        let degraded = self.enforcement.degraded(self.live.load().is_loaded());
        let version = env!("CARGO_PKG_VERSION");
        if let Err(e) = self
            .store
            .heartbeat(&self.instance_id, version, degraded, last.map(|(_, t)| t))
            .await
        {
            tracing::debug!(error.kind = e.kind(), "heartbeat not written");
        }
    }
}
