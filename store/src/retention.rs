//! Retention: deleting what is older than the operator keeps (usage events, limit alerts, audit
//! rows) and sessions that have ended, in small batches so that no statement holds a lock for
//! long. The daily rollups are never pruned: totals, charts and limits read them.

use chrono::{DateTime, Utc};

use crate::{with_pool, Result, Store, StoreError};

impl Store {
    /// One step of pruning usage events: the next `window` events in the order they were stored
    /// (ids above `after`), of which those that occurred before `before` are deleted. Two short
    /// statements over the primary key, so a step costs the same at the start of a backlog of
    /// millions and at its end (on PostgreSQL, dead rows of earlier steps are not walked again).
    /// A pass starts at `after = 0` and steps on from [`PruneStep::last_id`] until a step
    /// deletes nothing: the events stored past that point are within retention, as ids follow time.
    pub async fn prune_events_step(
        &self,
        before: DateTime<Utc>,
        after: i64,
        window: i64,
    ) -> Result<PruneStep> {
        let (last, seen): (Option<i64>, i64) = with_pool!(self, pool => sqlx::query_as(
            "SELECT MAX(id), COUNT(*) FROM (SELECT id FROM usage_events WHERE id > $1 ORDER BY id LIMIT $2) w")
            .bind(after).bind(window).fetch_one(pool).await)?;
        let Some(last) = last else {
            return Ok(PruneStep {
                last_id: after,
                seen: 0,
                deleted: 0,
            });
        };
        let deleted = with_pool!(self, pool => sqlx::query(
            "DELETE FROM usage_events WHERE id > $1 AND id <= $2 AND occurred_at < $3")
            .bind(after).bind(last).bind(before).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(PruneStep {
            last_id: last,
            seen: seen as u64,
            deleted,
        })
    }

    /// Deletes up to `batch` audit rows recorded before `before`; how many.
    pub async fn prune_audit_batch(&self, before: DateTime<Utc>, batch: i64) -> Result<u64> {
        let sql = match self {
            // PostgreSQL: the ids are read once (a LIMIT subquery under IN may be re-run by the
            // plan, and yield other rows each time); SQLite runs it once anyway.
            Store::Postgres(_) => "DELETE FROM audit_log WHERE id = ANY(ARRAY(SELECT id FROM audit_log WHERE occurred_at < $1 LIMIT $2))",
            Store::Sqlite(..) => "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE occurred_at < $1 LIMIT $2)",
        };
        with_pool!(self, pool => sqlx::query(sql)
            .bind(before).bind(batch).execute(pool).await.map(|r| r.rows_affected()))
        .map_err(StoreError::from)
    }

    /// Deletes up to `batch` limit alerts raised before `before`; how many.
    pub async fn prune_alerts_batch(&self, before: DateTime<Utc>, batch: i64) -> Result<u64> {
        let sql = match self {
            // PostgreSQL: the ids are read once (a LIMIT subquery under IN may be re-run by the
            // plan, and yield other rows each time); SQLite runs it once anyway.
            Store::Postgres(_) => "DELETE FROM limit_alerts WHERE id = ANY(ARRAY(SELECT id FROM limit_alerts WHERE created_at < $1 LIMIT $2))",
            Store::Sqlite(..) => "DELETE FROM limit_alerts WHERE id IN (SELECT id FROM limit_alerts WHERE created_at < $1 LIMIT $2)",
        };
        with_pool!(self, pool => sqlx::query(sql)
            .bind(before).bind(batch).execute(pool).await.map(|r| r.rows_affected()))
        .map_err(StoreError::from)
    }

    /// Deletes up to `batch` admin sessions that expired before `now`; how many.
    pub async fn prune_sessions_batch(&self, now: DateTime<Utc>, batch: i64) -> Result<u64> {
        let sql = match self {
            // PostgreSQL: the ids are read once (a LIMIT subquery under IN may be re-run by the
            // plan, and yield other rows each time); SQLite runs it once anyway.
            Store::Postgres(_) => "DELETE FROM sessions WHERE id_hash = ANY(ARRAY(SELECT id_hash FROM sessions WHERE expires_at < $1 LIMIT $2))",
            Store::Sqlite(..) => "DELETE FROM sessions WHERE id_hash IN (SELECT id_hash FROM sessions WHERE expires_at < $1 LIMIT $2)",
        };
        with_pool!(self, pool => sqlx::query(sql)
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

/// What one step of pruning usage events did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneStep {
    /// The highest id looked at: the next step starts above it.
    pub last_id: i64,
    /// Events looked at (0: the end of the table).
    pub seen: u64,
    /// Events deleted.
    pub deleted: u64,
}

/// One table's size, for `tollgate db stats`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableStat {
    /// The table.
    pub table: String,
    /// Its rows (PostgreSQL: the planner's estimate, cheap on large tables).
    pub rows: i64,
    /// Bytes on disk, indexes included, when the database can say.
    pub bytes: Option<i64>,
}

impl Store {
    /// Every table's rows and size, largest first.
    pub async fn table_stats(&self) -> Result<Vec<TableStat>> {
        let mut stats = match self {
            Store::Sqlite(pool, _) => {
                let tables: Vec<String> = sqlx::query_scalar(
                    "SELECT name FROM sqlite_master WHERE type = 'table' \
                     AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx%' ORDER BY name",
                )
                .fetch_all(pool)
                .await?;
                let mut out = Vec::new();
                for t in tables {
                    // The name comes from sqlite_master; quoted as an identifier.
                    let quoted = format!("\"{}\"", t.replace('"', "\"\""));
                    let rows: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {quoted}"))
                        .fetch_one(pool)
                        .await?;
                    // dbstat is compiled into the bundled SQLite; pages of the table and its
                    // indexes.
                    let bytes: Option<i64> = sqlx::query_scalar(
                        "SELECT SUM(pgsize) FROM dbstat WHERE name = $1 OR name IN \
                         (SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = $1)",
                    )
                    .bind(&t)
                    .fetch_one(pool)
                    .await
                    .ok()
                    .flatten();
                    out.push(TableStat {
                        table: t,
                        rows,
                        bytes,
                    });
                }
                out
            }
            Store::Postgres(pool) => sqlx::query_as::<_, (String, i64, i64)>(
                "SELECT c.relname::TEXT, GREATEST(c.reltuples, 0)::BIGINT, \
                 pg_total_relation_size(c.oid)::BIGINT FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') \
                 AND c.relname NOT LIKE '_sqlx%'",
            )
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|(table, rows, bytes)| TableStat {
                table,
                rows,
                bytes: Some(bytes),
            })
            .collect(),
        };
        stats.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.table.cmp(&b.table)));
        Ok(stats)
    }
}
