//! The background pruner: every `ledger.prune_interval_secs` (the first pass at most five minutes
//! after start), usage events, limit alerts and audit rows past their retention, and ended admin
//! sessions, are deleted in batches of [`BATCH`] rows paced by [`Pace`], so the ledger's writes,
//! the admin's reads and the traffic never wait long behind it. Several instances pruning at once
//! is harmless.

use std::time::Duration;

use chrono::{DateTime, Utc};
use store::{Store, StoreError};

/// Rows deleted per statement.
pub const BATCH: i64 = 1_000;
/// The shortest pause between two batches.
const PAUSE: Duration = Duration::from_millis(20);
/// A gentle pass pauses this many times as long as its last batch took, so it uses at most a
/// fortieth of a core (or of the database server) however large the backlog: traffic first.
/// Pruning is never urgent; a measured tenth raised the traffic's p99 noticeably more.
const GENTLE: u32 = 39;
/// The first pass waits for start-up to be over.
const FIRST: Duration = Duration::from_secs(300);

/// How hard a pass works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// The background's pace: a batch, then 39 times its duration of rest.
    Gentle,
    /// For a maintenance window: the shortest pause only.
    Fast,
}

impl Pace {
    fn pause(self, batch: Duration) -> Duration {
        match self {
            Pace::Gentle => PAUSE.max(batch * GENTLE),
            Pace::Fast => PAUSE,
        }
    }
}

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
    pace: Pace,
) -> Result<Pruned, StoreError> {
    let mut p = Pruned::default();
    if let Some(keep) = retention.events {
        p.events = events(store, now - keep, pace).await?;
    }
    if let Some(keep) = retention.alerts {
        p.alerts = batches(pace, || store.prune_alerts_batch(now - keep, BATCH)).await?;
    }
    if let Some(keep) = retention.audit {
        p.audit = batches(pace, || store.prune_audit_batch(now - keep, BATCH)).await?;
    }
    p.sessions = batches(pace, || store.prune_sessions_batch(now, BATCH)).await?;
    Ok(p)
}

/// Usage events step by step in the order they were stored, until a step deletes none (the
/// rest is within retention, or the table ended).
async fn events(store: &Store, before: DateTime<Utc>, pace: Pace) -> Result<u64, StoreError> {
    use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
    let after = &AtomicI64::new(0);
    batches(pace, move || async move {
        let step = store
            .prune_events_step(before, after.load(Relaxed), BATCH)
            .await?;
        after.store(step.last_id, Relaxed);
        Ok(step.deleted)
    })
    .await
}

/// Runs `one` (a batch; how many rows it deleted) until it deletes none, resting as `pace` says.
async fn batches<F, Fut>(pace: Pace, mut one: F) -> Result<u64, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, StoreError>>,
{
    let mut total = 0;
    loop {
        let started = tokio::time::Instant::now();
        let n = one().await?;
        total += n;
        if n == 0 {
            return Ok(total);
        }
        tokio::time::sleep(pace.pause(started.elapsed())).await;
    }
}

/// Prunes gently every `every` (the first pass at most five minutes after start), for ever
/// (aborted with the process).
pub async fn run(store: Store, retention: Retention, every: Duration) {
    let every = every.max(Duration::from_secs(1));
    let first = tokio::time::Instant::now() + FIRST.min(every);
    let mut tick = tokio::time::interval_at(first, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match prune_once(&store, retention, Utc::now(), Pace::Gentle).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gentle_pass_rests_39_times_its_step_and_a_fast_one_20_ms() {
        let ms = Duration::from_millis;
        assert_eq!(Pace::Gentle.pause(ms(10)), ms(390));
        assert_eq!(Pace::Gentle.pause(Duration::ZERO), ms(20));
        assert_eq!(Pace::Fast.pause(ms(10)), ms(20));
        assert_eq!(Pace::Fast.pause(ms(500)), ms(20));
    }
}
