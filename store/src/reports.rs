//! Reads for the dashboard and the admin API: usage totals and breakdowns from the daily
//! rollups (never from the events, so they stay fast at millions of events), recent events
//! paged by a cursor, key last-use times, and the audit log paged newest first.

use chrono::{DateTime, NaiveDate, Utc};

use crate::{with_pool, AuditEntry, Result, Store, StoreError, UsageEvent, UsageTotals};

/// How a rollup report groups its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollupGroup {
    /// One row: the grand total.
    Nothing,
    /// By provider (`gemini`, `vertex`).
    Provider,
    /// By model.
    Model,
    /// By tool (`x-tollgate-tool`; empty when none was named).
    Tool,
    /// By user (`x-tollgate-user` or the key's user; empty when none).
    User,
    /// By UTC day (`YYYY-MM-DD`), oldest first.
    Day,
    /// By organization name (cross-org reports).
    Org,
}

impl RollupGroup {
    fn column(self) -> &'static str {
        match self {
            RollupGroup::Nothing => "''",
            RollupGroup::Provider => "r.provider",
            RollupGroup::Model => "r.model",
            RollupGroup::Tool => "r.tool",
            RollupGroup::User => "r.user_ref",
            RollupGroup::Day => "CAST(r.day AS TEXT)",
            RollupGroup::Org => "o.name",
        }
    }
}

/// Sums of the rollup columns; "requests" is what `daily_requests` counts: metered requests.
const ROLLUP_TOTALS: &str = "CAST(COALESCE(SUM(r.requests), 0) AS BIGINT) AS requests, \
    CAST(COALESCE(SUM(r.input_tokens), 0) AS BIGINT) AS input_tokens, \
    CAST(COALESCE(SUM(r.output_tokens), 0) AS BIGINT) AS output_tokens, \
    CAST(COALESCE(SUM(r.thinking_tokens), 0) AS BIGINT) AS thinking_tokens, \
    CAST(COALESCE(SUM(r.cached_tokens), 0) AS BIGINT) AS cached_tokens, \
    CAST(COALESCE(SUM(r.total_tokens), 0) AS BIGINT) AS total_tokens, \
    CAST(COALESCE(SUM(r.images), 0) AS BIGINT) AS images, \
    CAST(COALESCE(SUM(r.videos), 0) AS BIGINT) AS videos, \
    CAST(COALESCE(SUM(r.video_seconds), 0) AS BIGINT) AS video_seconds, \
    CAST(COALESCE(SUM(r.cost_micros), 0) AS BIGINT) AS cost_micros";

/// An org's usage over a window: the total and one breakdown per dimension, each costliest
/// first (by day: oldest first).
#[derive(Debug, Clone, Default)]
pub struct Breakdowns {
    /// Everything in the window.
    pub total: UsageTotals,
    /// By provider.
    pub by_provider: Vec<UsageTotals>,
    /// By model.
    pub by_model: Vec<UsageTotals>,
    /// By tool.
    pub by_tool: Vec<UsageTotals>,
    /// By user.
    pub by_user: Vec<UsageTotals>,
    /// By UTC day.
    pub by_day: Vec<UsageTotals>,
}

/// [`Store::usage_breakdowns`] on PostgreSQL: one scan of the window's rollup rows, summed by
/// every dimension at once; `GROUPING(…)` says which dimension a row belongs to.
async fn breakdowns_pg(
    pool: &sqlx::PgPool,
    org_id: i64,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Breakdowns> {
    #[derive(sqlx::FromRow)]
    struct Row {
        dimension: i32,
        #[sqlx(flatten)]
        totals: UsageTotals,
    }
    let sql = format!(
        "SELECT CAST(GROUPING(r.provider, r.model, r.tool, r.user_ref, r.day) AS INT4) AS dimension, \
         COALESCE(r.provider, r.model, r.tool, r.user_ref, CAST(r.day AS TEXT), '') AS group_key, \
         {ROLLUP_TOTALS} FROM usage_rollups_daily r \
         WHERE r.org_id = $1 AND r.day >= $2 AND r.day <= $3 \
         GROUP BY GROUPING SETS ((r.provider), (r.model), (r.tool), (r.user_ref), (r.day), ())"
    );
    let rows: Vec<Row> = sqlx::query_as(&sql)
        .bind(org_id)
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await?;
    let mut b = Breakdowns::default();
    for row in rows {
        // GROUPING's bits, provider first: a 0 bit is the dimension the row is grouped by.
        let list = match row.dimension {
            0b01111 => &mut b.by_provider,
            0b10111 => &mut b.by_model,
            0b11011 => &mut b.by_tool,
            0b11101 => &mut b.by_user,
            0b11110 => &mut b.by_day,
            _ => {
                b.total = row.totals;
                continue;
            }
        };
        list.push(row.totals);
    }
    for list in [
        &mut b.by_provider,
        &mut b.by_model,
        &mut b.by_tool,
        &mut b.by_user,
    ] {
        list.sort_by(|x, y| {
            y.cost_micros
                .cmp(&x.cost_micros)
                .then_with(|| x.group_key.cmp(&y.group_key))
        });
    }
    b.by_day.sort_by(|x, y| x.group_key.cmp(&y.group_key));
    Ok(b)
}

/// A position in the recent-events list: the last row of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventCursor {
    /// Its time.
    pub occurred_at: DateTime<Utc>,
    /// Its row id (ties on time are broken by id).
    pub id: i64,
}

/// One page of events with the cursor of its last row.
#[derive(Debug, Clone)]
pub struct EventPage {
    /// Newest first.
    pub events: Vec<UsageEvent>,
    /// Where the next page starts, when there may be one.
    pub next: Option<EventCursor>,
}

/// Audit entries newest first, filtered.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this org's entries (else every entry).
    pub org_id: Option<i64>,
    /// Entries at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Entries before this time.
    pub until: Option<DateTime<Utc>>,
    /// Entries with an id below this (the previous page's last id).
    pub before_id: Option<i64>,
    /// Page size.
    pub limit: i64,
}

impl Store {
    /// Usage in the UTC days `[from, to]` from the daily rollups, of one org or (with `None`)
    /// of every org, grouped as asked. Grouped rows come by cost, largest first (by day: oldest
    /// first); the total is one row, zero when nothing was used.
    pub async fn rollup_usage(
        &self,
        org_id: Option<i64>,
        from: NaiveDate,
        to: NaiveDate,
        group: RollupGroup,
    ) -> Result<Vec<UsageTotals>> {
        let col = group.column();
        let tail = match group {
            RollupGroup::Nothing => String::new(),
            RollupGroup::Day => format!("GROUP BY {col} ORDER BY group_key"),
            _ => format!("GROUP BY {col} ORDER BY cost_micros DESC, group_key"),
        };
        let join = match group {
            RollupGroup::Org => "JOIN organizations o ON o.id = r.org_id",
            _ => "",
        };
        // Two statement texts rather than `($1 IS NULL OR org_id = $1)`, which no index serves.
        let which = match org_id {
            Some(_) => "r.org_id = $1",
            None => "CAST($1 AS BIGINT) = 0",
        };
        let sql = format!(
            "SELECT {col} AS group_key, {ROLLUP_TOTALS} FROM usage_rollups_daily r {join} \
             WHERE {which} AND r.day >= $2 AND r.day <= $3 {tail}"
        );
        let rows = with_pool!(self, pool => sqlx::query_as::<_, UsageTotals>(&sql)
            .bind(org_id.unwrap_or(0)).bind(from).bind(to).fetch_all(pool).await)?;
        Ok(rows)
    }

    /// An org's usage over the UTC days `[from, to]` by every dimension, from the rollups, with
    /// the plan that is fastest on each database (measured with 1,000,000 events, see
    /// docs/admin-api.md): PostgreSQL aggregates every dimension in one scan (GROUPING SETS);
    /// SQLite, which has no grouping sets, runs one grouped query per dimension, concurrently on
    /// the pool's connections (WAL lets them read at once).
    pub async fn usage_breakdowns(
        &self,
        org_id: i64,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Breakdowns> {
        if let Store::Postgres(pool) = self {
            return breakdowns_pg(pool, org_id, from, to).await;
        }
        let o = Some(org_id);
        let (total, by_provider, by_model, by_tool, by_user, by_day) = tokio::try_join!(
            self.rollup_usage(o, from, to, RollupGroup::Nothing),
            self.rollup_usage(o, from, to, RollupGroup::Provider),
            self.rollup_usage(o, from, to, RollupGroup::Model),
            self.rollup_usage(o, from, to, RollupGroup::Tool),
            self.rollup_usage(o, from, to, RollupGroup::User),
            self.rollup_usage(o, from, to, RollupGroup::Day),
        )?;
        Ok(Breakdowns {
            total: total.into_iter().next().unwrap_or_default(),
            by_provider,
            by_model,
            by_tool,
            by_user,
            by_day,
        })
    }

    /// An org's events newest first, `limit` of them, after `cursor` when given. Each event
    /// comes with its row id (for the next cursor).
    pub async fn event_page(
        &self,
        org_id: i64,
        cursor: Option<&EventCursor>,
        limit: i64,
    ) -> Result<EventPage> {
        let sql = format!(
            "SELECT id, {cols} FROM usage_events WHERE org_id = $1 \
             AND ($2 IS NULL OR occurred_at < $2 OR (occurred_at = $2 AND id < $3)) \
             ORDER BY occurred_at DESC, id DESC LIMIT $4",
            cols = crate::usage::EVENT_COLUMNS
        );
        let rows: Vec<EventRow> = with_pool!(self, pool => sqlx::query_as::<_, EventRow>(&sql)
            .bind(org_id)
            .bind(cursor.map(|c| c.occurred_at))
            .bind(cursor.map_or(i64::MAX, |c| c.id))
            .bind(limit)
            .fetch_all(pool).await)?;
        Ok(page_of(rows, limit))
    }

    /// An org's events that occurred in `[from, to)`, oldest first, `limit` of them, after
    /// `cursor` when given (for exports: a range scan of the (org, time) index per page).
    pub async fn export_page(
        &self,
        org_id: i64,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        cursor: Option<&EventCursor>,
        limit: i64,
    ) -> Result<EventPage> {
        let sql = format!(
            "SELECT id, {cols} FROM usage_events WHERE org_id = $1 \
             AND occurred_at >= $2 AND occurred_at < $3 \
             AND ($4 IS NULL OR occurred_at > $4 OR (occurred_at = $4 AND id > $5)) \
             ORDER BY occurred_at, id LIMIT $6",
            cols = crate::usage::EVENT_COLUMNS
        );
        let rows: Vec<EventRow> = with_pool!(self, pool => sqlx::query_as::<_, EventRow>(&sql)
            .bind(org_id)
            .bind(from)
            .bind(to)
            .bind(cursor.map(|c| c.occurred_at))
            .bind(cursor.map_or(0, |c| c.id))
            .bind(limit)
            .fetch_all(pool).await)?;
        Ok(page_of(rows, limit))
    }

    /// When each of an org's keys last appeared in a stored event.
    pub async fn keys_last_used(&self, org_id: i64) -> Result<Vec<(i64, DateTime<Utc>)>> {
        with_pool!(self, pool => sqlx::query_as::<_, (i64, DateTime<Utc>)>(
            "SELECT u.key_id, u.last_used_at FROM key_last_used u \
             JOIN api_keys k ON k.id = u.key_id WHERE k.org_id = $1")
            .bind(org_id).fetch_all(pool).await)
        .map_err(StoreError::from)
    }

    /// Audit entries newest first, as filtered.
    pub async fn audit_page(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>> {
        with_pool!(self, pool => sqlx::query_as::<_, AuditEntry>(
            "SELECT id, occurred_at, actor, action, org_id, target, detail FROM audit_log \
             WHERE ($1 IS NULL OR org_id = $1) AND ($2 IS NULL OR occurred_at >= $2) \
             AND ($3 IS NULL OR occurred_at < $3) AND ($4 IS NULL OR id < $4) \
             ORDER BY id DESC LIMIT $5")
            .bind(q.org_id).bind(q.since).bind(q.until).bind(q.before_id).bind(q.limit)
            .fetch_all(pool).await)
        .map_err(StoreError::from)
    }

    /// Members per org, for the org list.
    pub async fn member_counts(&self) -> Result<Vec<(i64, i64)>> {
        with_pool!(self, pool => sqlx::query_as::<_, (i64, i64)>(
            "SELECT org_id, COUNT(*) FROM memberships GROUP BY org_id")
            .fetch_all(pool).await)
        .map_err(StoreError::from)
    }
}

/// An event with its row id (for the next page's cursor).
#[derive(sqlx::FromRow)]
struct EventRow {
    id: i64,
    #[sqlx(flatten)]
    event: UsageEvent,
}

/// A page of `limit` rows at most: its events, and the cursor after the last when it is full.
fn page_of(rows: Vec<EventRow>, limit: i64) -> EventPage {
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last())
        .flatten()
        .map(|r| EventCursor {
            occurred_at: r.event.occurred_at,
            id: r.id,
        });
    EventPage {
        events: rows.into_iter().map(|r| r.event).collect(),
        next,
    }
}
