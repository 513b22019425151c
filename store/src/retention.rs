//! Retention: deleting what is older than the operator keeps (usage events, limit alerts, audit
//! rows) and sessions that have ended, in small batches so that no statement holds a lock for
//! long. The daily rollups are never pruned: totals, charts and limits read them.

use chrono::{DateTime, Utc};

use crate::{with_pool, Result, Store, StoreError};

impl Store {
    /// Deletes up to `batch` usage events that occurred before `before`, in one short
    /// statement; how many. Call until it returns less than `batch`.
    pub async fn prune_events_batch(&self, before: DateTime<Utc>, batch: i64) -> Result<u64> {
        with_pool!(self, pool => sqlx::query(
            "DELETE FROM usage_events WHERE id IN \
             (SELECT id FROM usage_events WHERE occurred_at < $1 LIMIT $2)")
            .bind(before).bind(batch).execute(pool).await.map(|r| r.rows_affected()))
        .map_err(StoreError::from)
    }

    /// Deletes up to `batch` audit rows recorded before `before`; how many.
    pub async fn prune_audit_batch(&self, before: DateTime<Utc>, batch: i64) -> Result<u64> {
        with_pool!(self, pool => sqlx::query(
            "DELETE FROM audit_log WHERE id IN \
             (SELECT id FROM audit_log WHERE occurred_at < $1 LIMIT $2)")
            .bind(before).bind(batch).execute(pool).await.map(|r| r.rows_affected()))
        .map_err(StoreError::from)
    }

    /// Deletes up to `batch` limit alerts raised before `before`; how many.
    pub async fn prune_alerts_batch(&self, before: DateTime<Utc>, batch: i64) -> Result<u64> {
        with_pool!(self, pool => sqlx::query(
            "DELETE FROM limit_alerts WHERE id IN \
             (SELECT id FROM limit_alerts WHERE created_at < $1 LIMIT $2)")
            .bind(before).bind(batch).execute(pool).await.map(|r| r.rows_affected()))
        .map_err(StoreError::from)
    }

    /// Deletes up to `batch` admin sessions that expired before `now`; how many.
    pub async fn prune_sessions_batch(&self, now: DateTime<Utc>, batch: i64) -> Result<u64> {
        with_pool!(self, pool => sqlx::query(
            "DELETE FROM sessions WHERE id_hash IN \
             (SELECT id_hash FROM sessions WHERE expires_at < $1 LIMIT $2)")
            .bind(now).bind(batch).execute(pool).await.map(|r| r.rows_affected()))
        .map_err(StoreError::from)
    }

    /// When the oldest stored usage event occurred (none: no events).
    pub async fn oldest_event(&self) -> Result<Option<DateTime<Utc>>> {
        with_pool!(self, pool => sqlx::query_scalar::<_, Option<DateTime<Utc>>>(
            "SELECT MIN(occurred_at) FROM usage_events")
            .fetch_one(pool).await)
        .map_err(StoreError::from)
    }
}
