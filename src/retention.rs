//! The background pruner: once an hour (the first pass five minutes after start), usage events, limit alerts and audit
//! rows past their retention, and ended admin sessions, are deleted in batches of
//! [`BATCH`] rows with a pause between batches, so the ledger's writes and the admin's reads
//! never wait long behind it. Several instances pruning at once is harmless.

use std::time::Duration;

use chrono::{DateTime, Utc};
use store::{Store, StoreError};

/// Rows deleted per statement.
pub const BATCH: i64 = 1_000;
/// Pause between two batches.
const PAUSE: Duration = Duration::from_millis(20);
/// How often a pass runs.
const EVERY: Duration = Duration::from_secs(3600);
/// The first pass waits for start-up to be over.
const FIRST: Duration = Duration::from_secs(300);

/// How long each kind of row is kept (`None`: for ever).
#[derive(Debug, Clone, Copy, Default)]
pub struct Retention {
    /// Usage events (`ledger.retention_days`).
    pub events: Option<chrono::Duration>,
    /// Limit alerts (`limits.alert_retention_days`).
    pub alerts: Option<chrono::Duration>,
    /// Audit rows (`admin.audit_retention_days`).
    pub audit: Option<chrono::Duration>,
}

impl Retention {
    /// From days, 0 meaning for ever.
    pub fn from_days(events: u64, alerts: u64, audit: u64) -> Retention {
        let days = |d: u64| (d > 0).then(|| chrono::Duration::days(d.min(100_000) as i64));
        Retention {
            events: days(events),
            alerts: days(alerts),
            audit: days(audit),
        }
    }
}

/// What one pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Usage events.
    pub events: u64,
    /// Limit alerts.
    pub alerts: u64,
    /// Audit rows.
    pub audit: u64,
    /// Ended admin sessions.
    pub sessions: u64,
}

/// One pass as of `now`: every kind pruned to its retention, batch by batch.
pub async fn prune_once(
    store: &Store,
    retention: Retention,
    now: DateTime<Utc>,
) -> Result<Pruned, StoreError> {
    let mut p = Pruned::default();
    if let Some(keep) = retention.events {
        p.events = batches(|| store.prune_events_batch(now - keep, BATCH)).await?;
    }
    if let Some(keep) = retention.alerts {
        p.alerts = batches(|| store.prune_alerts_batch(now - keep, BATCH)).await?;
    }
    if let Some(keep) = retention.audit {
        p.audit = batches(|| store.prune_audit_batch(now - keep, BATCH)).await?;
    }
    p.sessions = batches(|| store.prune_sessions_batch(now, BATCH)).await?;
    Ok(p)
}

async fn batches<F, Fut>(mut one: F) -> Result<u64, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, StoreError>>,
{
    let mut total = 0;
    loop {
        let n = one().await?;
        total += n;
        if n == 0 {
            return Ok(total);
        }
        tokio::time::sleep(PAUSE).await;
    }
}

/// Prunes five minutes after start and then every hour, for ever (aborted with the process).
pub async fn run(store: Store, retention: Retention) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + FIRST, EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match prune_once(&store, retention, Utc::now()).await {
            Ok(p) if p != Pruned::default() => {
                tracing::info!(
                    events = p.events,
                    alerts = p.alerts,
                    audit = p.audit,
                    sessions = p.sessions,
                    "pruned rows past their retention"
                )
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error.kind = e.kind(), error = %e, "pruning failed; retrying in an hour")
            }
        }
    }
}
