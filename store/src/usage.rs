//! Usage events (one per request, idempotent on the request id), their daily rollups, the
//! queries the CLI and the dashboard read, and limit alerts.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use chrono::{DateTime, NaiveDate, Utc};

use crate::{with_pool, LimitAlert, LimitType, Result, Store, StoreError, UsageEvent};

pub(crate) const EVENT_COLUMNS: &str =
    "request_id, client_request_id, occurred_at, org_id, key_id, user_ref, tool, provider, \
    model, operation, status, streamed, metered, input_tokens, output_tokens, thinking_tokens, \
    cached_tokens, tool_prompt_tokens, total_tokens, input_audio_tokens, output_image_tokens, \
    images, videos, video_seconds, cost_micros, estimated, priced, upstream_latency_ms, \
    total_latency_ms";

/// Rows per multi-row statement: a batch is cut into chunks of these sizes (largest first), so a
/// connection prepares at most five variants of each statement once and reuses them, instead of
/// parsing a new statement text per batch (that parse was a quarter of the gateway's
/// instructions per request on SQLite). 256 rows x 29 binds stays under SQLite's 32,766.
const CHUNK_SIZES: [usize; 5] = [256, 64, 16, 4, 1];
/// The index of the one-row size in [`CHUNK_SIZES`]: the SQLite event writer's statements.
pub(crate) const ONE_ROW: usize = 4;
const EVENT_BINDS: usize = 29;
const ROLLUP_BINDS: usize = 16;

/// Cuts `items` into chunks of [`CHUNK_SIZES`], largest first.
fn sized_chunks<T>(mut items: &[T]) -> impl Iterator<Item = (usize, &[T])> {
    std::iter::from_fn(move || {
        let i = CHUNK_SIZES.iter().position(|&n| n <= items.len())?;
        let (chunk, rest) = items.split_at(CHUNK_SIZES[i]);
        items = rest;
        Some((i, chunk))
    })
}

/// `head VALUES ($1, …), (…) tail` for `rows` rows of `binds` parameters; with `anonymous`,
/// `?` placeholders (SQLite binds those by position; a named `$N` is looked up in a list scanned
/// per bind, quadratic in the statement's size).
fn values_sql(head: &str, tail: &str, binds: usize, rows: usize, anonymous: bool) -> String {
    let mut sql = String::with_capacity(head.len() + tail.len() + rows * binds * 6);
    sql.push_str(head);
    sql.push_str("VALUES ");
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for b in 0..binds {
            if b > 0 {
                sql.push_str(", ");
            }
            if anonymous {
                sql.push('?');
            } else {
                sql.push('$');
                sql.push_str(&(r * binds + b + 1).to_string());
            }
        }
        sql.push(')');
    }
    sql.push_str(tail);
    sql
}

/// The insert statement for chunk size number `i`, built once per process, dialect and
/// variant: `returning` lists the request ids actually stored (one row each, which SQLite's
/// driver hands over one by one); without it, only the count.
pub(crate) fn insert_sql(sqlite: bool, returning: bool, i: usize) -> &'static str {
    static SQL: [[[OnceLock<String>; 5]; 2]; 2] =
        [const { [const { [const { OnceLock::new() }; 5] }; 2] }; 2];
    SQL[usize::from(sqlite)][usize::from(returning)][i].get_or_init(|| {
        values_sql(
            INSERT_EVENTS_HEAD,
            if returning {
                " ON CONFLICT (request_id) DO NOTHING RETURNING request_id"
            } else {
                " ON CONFLICT (request_id) DO NOTHING"
            },
            EVENT_BINDS,
            CHUNK_SIZES[i],
            sqlite,
        )
    })
}

/// Binds one chunk of events to an insert statement, in [`INSERT_EVENTS_HEAD`]'s order.
macro_rules! bind_events {
    ($q:expr, $chunk:expr) => {{
        let mut q = $q;
        for e in $chunk {
            q = q
                .bind(&e.request_id)
                .bind(e.occurred_at)
                .bind(e.org_id)
                .bind(e.key_id)
                .bind(&e.user_ref)
                .bind(&e.tool)
                .bind(&e.provider)
                .bind(&e.model)
                .bind(&e.operation)
                .bind(e.status)
                .bind(e.streamed)
                .bind(e.input_tokens)
                .bind(e.output_tokens)
                .bind(e.thinking_tokens)
                .bind(e.cached_tokens)
                .bind(e.tool_prompt_tokens)
                .bind(e.total_tokens)
                .bind(e.input_audio_tokens)
                .bind(e.output_image_tokens)
                .bind(e.images)
                .bind(e.videos)
                .bind(e.video_seconds)
                .bind(e.cost_micros)
                .bind(e.estimated)
                .bind(e.priced)
                .bind(e.upstream_latency_ms)
                .bind(e.total_latency_ms)
                .bind(e.metered)
                .bind(&e.client_request_id);
        }
        q
    }};
}

/// The rollup upsert for chunk size number `i`, built once per process and dialect.
pub(crate) fn rollup_sql(sqlite: bool, i: usize) -> &'static str {
    static SQL: [[OnceLock<String>; 5]; 2] = [const { [const { OnceLock::new() }; 5] }; 2];
    SQL[usize::from(sqlite)][i].get_or_init(|| {
        values_sql(
            UPSERT_ROLLUPS_HEAD,
            UPSERT_ROLLUPS_TAIL,
            ROLLUP_BINDS,
            CHUNK_SIZES[i],
            sqlite,
        )
    })
}

const INSERT_EVENTS_HEAD: &str =
    "INSERT INTO usage_events (request_id, occurred_at, org_id, key_id, \
    user_ref, tool, provider, model, operation, status, streamed, input_tokens, output_tokens, \
    thinking_tokens, cached_tokens, tool_prompt_tokens, total_tokens, input_audio_tokens, \
    output_image_tokens, images, videos, video_seconds, cost_micros, estimated, priced, \
    upstream_latency_ms, total_latency_ms, metered, client_request_id) ";

const UPSERT_ROLLUPS_HEAD: &str = "INSERT INTO usage_rollups_daily (day, org_id, provider, model, \
    tool, user_ref, requests, input_tokens, output_tokens, thinking_tokens, cached_tokens, total_tokens, \
    images, videos, video_seconds, cost_micros) ";

const UPSERT_ROLLUPS_TAIL: &str =
    " ON CONFLICT (day, org_id, provider, model, tool, user_ref) DO UPDATE SET \
    requests = usage_rollups_daily.requests + excluded.requests, \
    input_tokens = usage_rollups_daily.input_tokens + excluded.input_tokens, \
    output_tokens = usage_rollups_daily.output_tokens + excluded.output_tokens, \
    thinking_tokens = usage_rollups_daily.thinking_tokens + excluded.thinking_tokens, \
    cached_tokens = usage_rollups_daily.cached_tokens + excluded.cached_tokens, \
    total_tokens = usage_rollups_daily.total_tokens + excluded.total_tokens, \
    images = usage_rollups_daily.images + excluded.images, \
    videos = usage_rollups_daily.videos + excluded.videos, \
    video_seconds = usage_rollups_daily.video_seconds + excluded.video_seconds, \
    cost_micros = usage_rollups_daily.cost_micros + excluded.cost_micros";

/// The distinct org and key ids a batch names.
pub(crate) fn referenced_ids(events: &[UsageEvent]) -> (Vec<i64>, Vec<i64>) {
    let mut orgs: Vec<i64> = events.iter().filter_map(|e| e.org_id).collect();
    let mut keys: Vec<i64> = events.iter().filter_map(|e| e.key_id).collect();
    for ids in [&mut orgs, &mut keys] {
        ids.sort_unstable();
        ids.dedup();
    }
    (orgs, keys)
}

/// The batch without its references to orgs or keys that no longer exist (deleted while their
/// events were on their way): those events are stored without the reference, on both databases.
/// Borrowed as it is when every reference exists, the usual case.
pub(crate) fn without_missing<'a>(
    events: &'a [UsageEvent],
    orgs: &HashSet<i64>,
    keys: &HashSet<i64>,
) -> Cow<'a, [UsageEvent]> {
    let org_gone = |e: &UsageEvent| e.org_id.is_some_and(|o| !orgs.contains(&o));
    let key_gone = |e: &UsageEvent| e.key_id.is_some_and(|k| !keys.contains(&k));
    if !events.iter().any(|e| org_gone(e) || key_gone(e)) {
        return Cow::Borrowed(events);
    }
    Cow::Owned(
        events
            .iter()
            .map(|e| {
                let mut e = e.clone();
                if org_gone(&e) {
                    e.org_id = None;
                }
                if key_gone(&e) {
                    e.key_id = None;
                }
                e
            })
            .collect(),
    )
}

/// A rollup's key: (day, org, provider, model, tool, user).
type RollupKey<'a> = (NaiveDate, i64, &'a str, &'a str, &'a str, &'a str);

/// Sums the newly inserted, metered events of a batch per rollup key: requests, input, output,
/// thinking, cached and total tokens, images, videos, video seconds, cost.
pub(crate) fn rollup_groups<'a>(
    events: &'a [UsageEvent],
    is_new: impl Fn(&str) -> bool,
) -> HashMap<RollupKey<'a>, [i64; 10]> {
    let mut groups: HashMap<RollupKey<'a>, [i64; 10]> = HashMap::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for e in events {
        let Some(org) = e.org_id.filter(|_| e.metered) else {
            continue;
        };
        // Only events this batch really stored, each once (a batch may repeat a request id).
        if !is_new(&e.request_id) || !seen.insert(&e.request_id) {
            continue;
        }
        let key = (
            e.occurred_at.date_naive(),
            org,
            e.provider.as_str(),
            e.model.as_str(),
            e.tool.as_deref().unwrap_or(""),
            e.user_ref.as_deref().unwrap_or(""),
        );
        let g = groups.entry(key).or_insert([0; 10]);
        let add = [
            1,
            e.input_tokens,
            e.output_tokens,
            e.thinking_tokens,
            e.cached_tokens,
            e.total_tokens,
            e.images,
            e.videos,
            e.video_seconds,
            e.cost_micros,
        ];
        for (a, b) in g.iter_mut().zip(add) {
            *a += b;
        }
    }
    groups
}

/// Upserts when each key of a batch was last seen: newer times win, so replays of older events
/// leave it alone. One statement text for both dialects.
pub(crate) const KEY_LAST_USED_SQL: &str =
    "INSERT INTO key_last_used (key_id, last_used_at) VALUES ($1, $2) \
    ON CONFLICT (key_id) DO UPDATE SET last_used_at = excluded.last_used_at \
    WHERE excluded.last_used_at > key_last_used.last_used_at";

/// The latest event time per key named in a batch.
pub(crate) fn key_last_seen(events: &[UsageEvent]) -> HashMap<i64, DateTime<Utc>> {
    let mut seen: HashMap<i64, DateTime<Utc>> = HashMap::new();
    for e in events {
        if let Some(k) = e.key_id {
            let t = seen.entry(k).or_insert(e.occurred_at);
            if e.occurred_at > *t {
                *t = e.occurred_at;
            }
        }
    }
    seen
}

/// Runs [`KEY_LAST_USED_SQL`] for each key of a batch inside transaction `tx`.
macro_rules! upsert_key_last_used {
    ($tx:ident, $events:expr) => {{
        for (key, at) in key_last_seen($events) {
            sqlx::query(KEY_LAST_USED_SQL)
                .bind(key)
                .bind(at)
                .execute(&mut *$tx)
                .await?;
        }
    }};
}

/// A batch through SQLite's event connection, on tokio's blocking pool. The batch comes back
/// even if the write panics (the ledger spools it).
async fn write_blocking(
    db: std::sync::Arc<crate::sqlite_events::EventDb>,
    events: Vec<UsageEvent>,
) -> (Vec<UsageEvent>, Result<u64>) {
    let handle = tokio::task::spawn_blocking(move || {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| db.insert(&events)))
            .unwrap_or_else(|_| {
                Err(StoreError::Sqlite {
                    message: "the event writer panicked".into(),
                    unavailable: true,
                })
            });
        (events, result)
    });
    match handle.await {
        Ok(done) => done,
        Err(e) => (Vec::new(), Err(writer_gone(e))),
    }
}

fn writer_gone(e: tokio::task::JoinError) -> StoreError {
    StoreError::Sqlite {
        message: format!("event writer task failed: {e}"),
        unavailable: true,
    }
}

/// An org's usage in the current periods, summed from the rollups.
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct PeriodUsage {
    /// The organization.
    pub org_id: i64,
    /// Requests today.
    pub day_requests: i64,
    /// Images and videos today.
    pub day_ads: i64,
    /// Tokens this month.
    pub month_tokens: i64,
    /// Micro-dollars this month.
    pub month_cost_micros: i64,
}

/// Upserts the rollup groups of a batch inside transaction `tx`, in fixed-size chunks.
macro_rules! upsert_rollups {
    ($tx:ident, $sqlite:expr, $groups:expr) => {{
        let groups: Vec<_> = $groups.into_iter().collect();
        for (size, chunk) in sized_chunks(&groups) {
            let mut q = sqlx::query(rollup_sql($sqlite, size));
            for ((day, org, provider, model, tool, user), t) in chunk {
                q = q
                    .bind(*day)
                    .bind(*org)
                    .bind(*provider)
                    .bind(*model)
                    .bind(*tool)
                    .bind(*user);
                for v in t {
                    q = q.bind(*v);
                }
            }
            q.execute(&mut *$tx).await?;
        }
    }};
}

/// Inside transaction `tx` of an in-memory SQLite database: the batch without references to
/// orgs or keys that no longer exist ([`without_missing`]), each distinct id looked up once.
async fn without_missing_in<'a>(
    tx: &mut sqlx::SqliteConnection,
    events: &'a [UsageEvent],
) -> Result<Cow<'a, [UsageEvent]>> {
    let (orgs, keys) = referenced_ids(events);
    let mut found = [HashSet::new(), HashSet::new()];
    for (i, (ids, sql)) in [
        (orgs, "SELECT id FROM organizations WHERE id = $1"),
        (keys, "SELECT id FROM api_keys WHERE id = $1"),
    ]
    .into_iter()
    .enumerate()
    {
        for id in ids {
            if let Some(id) = sqlx::query_scalar::<_, i64>(sql)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
            {
                found[i].insert(id);
            }
        }
    }
    Ok(without_missing(events, &found[0], &found[1]))
}

/// [`Store::insert_events`] for an in-memory SQLite database (which the event writer's own
/// connection could not see), on the pool in multi-row INSERTs. Events from the live queue are
/// all new: the inserts only report how many rows they stored. If one is short (a replay, a
/// repeated id), that transaction is rolled back and the batch written again with the ids of the
/// stored rows returned.
async fn insert_events_in_memory(pool: &sqlx::SqlitePool, events: &[UsageEvent]) -> Result<u64> {
    let mut tx = pool.begin().await?;
    let checked = without_missing_in(&mut tx, events).await?;
    let mut all_new = true;
    for (size, chunk) in sized_chunks(&checked) {
        let q = bind_events!(sqlx::query(insert_sql(true, false, size)), chunk);
        if q.execute(&mut *tx).await?.rows_affected() < chunk.len() as u64 {
            all_new = false;
            break;
        }
    }
    if all_new {
        upsert_rollups!(tx, true, rollup_groups(&checked, |_| true));
        upsert_key_last_used!(tx, &checked);
        tx.commit().await?;
        return Ok(checked.len() as u64);
    }
    tx.rollback().await?;
    let mut tx = pool.begin().await?;
    let checked = without_missing_in(&mut tx, events).await?;
    let mut new_ids: HashSet<String> = HashSet::with_capacity(checked.len());
    for (size, chunk) in sized_chunks(&checked) {
        let q = bind_events!(
            sqlx::query_scalar::<_, String>(insert_sql(true, true, size)),
            chunk
        );
        new_ids.extend(q.fetch_all(&mut *tx).await?);
    }
    upsert_rollups!(tx, true, rollup_groups(&checked, |id| new_ids.contains(id)));
    upsert_key_last_used!(tx, &checked);
    tx.commit().await?;
    Ok(new_ids.len() as u64)
}

/// PostgreSQL's insert of a batch: one statement of 29 array parameters (a column each) unnested
/// into rows, whatever the batch size; a multi-row VALUES list bound up to 7,424 parameters per
/// statement.
const INSERT_EVENTS_PG: &str =
    "INSERT INTO usage_events (request_id, occurred_at, org_id, key_id, \
    user_ref, tool, provider, model, operation, status, streamed, input_tokens, output_tokens, \
    thinking_tokens, cached_tokens, tool_prompt_tokens, total_tokens, input_audio_tokens, \
    output_image_tokens, images, videos, video_seconds, cost_micros, estimated, priced, \
    upstream_latency_ms, total_latency_ms, metered, client_request_id) \
    SELECT * \
    FROM UNNEST($1::text[], $2::timestamptz[], $3::bigint[], $4::bigint[], $5::text[], \
    $6::text[], $7::text[], $8::text[], $9::text[], $10::int4[], $11::bool[], $12::bigint[], \
    $13::bigint[], $14::bigint[], $15::bigint[], $16::bigint[], $17::bigint[], $18::bigint[], \
    $19::bigint[], $20::bigint[], $21::bigint[], $22::bigint[], $23::bigint[], $24::bool[], \
    $25::bool[], $26::bigint[], $27::bigint[], $28::bool[], $29::text[]) \
    AS u(request_id, occurred_at, org_id, key_id, user_ref, tool, provider, model, operation, \
    status, streamed, input_tokens, output_tokens, thinking_tokens, cached_tokens, \
    tool_prompt_tokens, total_tokens, input_audio_tokens, output_image_tokens, images, videos, \
    video_seconds, cost_micros, estimated, priced, upstream_latency_ms, total_latency_ms, \
    metered, client_request_id) \
    ON CONFLICT (request_id) DO NOTHING";

/// The batch's columns bound to [`INSERT_EVENTS_PG`] (with `RETURNING request_id` or not).
fn bind_events_pg<'q>(
    sql: &'q str,
    events: &'q [UsageEvent],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    fn col<'a, T>(events: &'a [UsageEvent], f: impl Fn(&'a UsageEvent) -> T) -> Vec<T> {
        events.iter().map(f).collect()
    }
    sqlx::query(sql)
        .bind(col(events, |e| e.request_id.as_str()))
        .bind(col(events, |e| e.occurred_at))
        .bind(col(events, |e| e.org_id))
        .bind(col(events, |e| e.key_id))
        .bind(col(events, |e| e.user_ref.as_deref()))
        .bind(col(events, |e| e.tool.as_deref()))
        .bind(col(events, |e| e.provider.as_str()))
        .bind(col(events, |e| e.model.as_str()))
        .bind(col(events, |e| e.operation.as_str()))
        .bind(col(events, |e| e.status))
        .bind(col(events, |e| e.streamed))
        .bind(col(events, |e| e.input_tokens))
        .bind(col(events, |e| e.output_tokens))
        .bind(col(events, |e| e.thinking_tokens))
        .bind(col(events, |e| e.cached_tokens))
        .bind(col(events, |e| e.tool_prompt_tokens))
        .bind(col(events, |e| e.total_tokens))
        .bind(col(events, |e| e.input_audio_tokens))
        .bind(col(events, |e| e.output_image_tokens))
        .bind(col(events, |e| e.images))
        .bind(col(events, |e| e.videos))
        .bind(col(events, |e| e.video_seconds))
        .bind(col(events, |e| e.cost_micros))
        .bind(col(events, |e| e.estimated))
        .bind(col(events, |e| e.priced))
        .bind(col(events, |e| e.upstream_latency_ms))
        .bind(col(events, |e| e.total_latency_ms))
        .bind(col(events, |e| e.metered))
        .bind(col(events, |e| e.client_request_id.as_deref()))
}

/// Which of `ids` the query (`SELECT id … WHERE id = ANY($1) …`) finds.
async fn existing_pg(
    tx: &mut sqlx::PgConnection,
    sql: &str,
    ids: Vec<i64>,
) -> Result<HashSet<i64>> {
    let found = sqlx::query_scalar::<_, i64>(sql)
        .bind(ids)
        .fetch_all(tx)
        .await?;
    Ok(found.into_iter().collect())
}

/// [`Store::insert_events`] on PostgreSQL: the batch in one transaction, skipping events already
/// stored; how many were new. The common case (all new) only counts the rows; a short count
/// (a replay, a repeated id) writes the batch again with the new ids returned, so that only
/// those enter the rollups.
async fn insert_events_pg(pool: &sqlx::PgPool, events: &[UsageEvent]) -> Result<u64> {
    static RETURNING: OnceLock<String> = OnceLock::new();
    let mut tx = pool.begin().await?;
    let (orgs, keys) = referenced_ids(events);
    let orgs = existing_pg(
        &mut tx,
        "SELECT id FROM organizations WHERE id = ANY($1)",
        orgs,
    )
    .await?;
    let keys = existing_pg(&mut tx, "SELECT id FROM api_keys WHERE id = ANY($1)", keys).await?;
    let events = &*without_missing(events, &orgs, &keys);
    sqlx::query("SAVEPOINT batch").execute(&mut *tx).await?;
    let n = bind_events_pg(INSERT_EVENTS_PG, events)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if n == events.len() as u64 {
        upsert_rollups!(tx, false, rollup_groups(events, |_| true));
        upsert_key_last_used!(tx, events);
        tx.commit().await?;
        return Ok(n);
    }
    // Replayed or repeated ids: again, with the ids actually stored returned (the rows locked
    // above stay locked: the savepoint came after them).
    sqlx::query("ROLLBACK TO SAVEPOINT batch")
        .execute(&mut *tx)
        .await?;
    let sql = RETURNING.get_or_init(|| format!("{INSERT_EVENTS_PG} RETURNING request_id"));
    let new_ids: HashSet<String> = bind_events_pg(sql, events)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| sqlx::Row::try_get::<String, _>(row, 0))
        .collect::<Result<_, sqlx::Error>>()?;
    upsert_rollups!(tx, false, rollup_groups(events, |id| new_ids.contains(id)));
    upsert_key_last_used!(tx, events);
    tx.commit().await?;
    Ok(new_ids.len() as u64)
}

impl Store {
    /// Writes a batch of events in one transaction and updates the daily rollups. An event whose
    /// request id is already stored is skipped (so replays are harmless). Returns how many were new.
    /// An event naming an org or key that no longer exists is stored without the reference and
    /// stays out of the rollups. The rollups get one upsert per (day, org, provider, model, tool)
    /// group of the batch, not one per event. The events go in through SQLite's own event
    /// connection (`sqlite_events`), PostgreSQL's one UNNEST statement, or, for an in-memory
    /// SQLite database, multi-row INSERTs on the pool.
    pub async fn insert_events(&self, events: &[UsageEvent]) -> Result<u64> {
        match self {
            Store::Postgres(pool) => insert_events_pg(pool, events).await,
            Store::Sqlite(_, Some(db)) => write_blocking(db.clone(), events.to_vec()).await.1,
            Store::Sqlite(pool, None) => insert_events_in_memory(pool, events).await,
        }
    }

    /// [`Store::insert_events`] for a batch the caller gives up until the write is done (the
    /// ledger's): on SQLite it is written on the blocking pool without being copied. The batch
    /// comes back with the result.
    pub async fn write_events(&self, events: Vec<UsageEvent>) -> (Vec<UsageEvent>, Result<u64>) {
        if let Store::Sqlite(_, Some(db)) = self {
            return write_blocking(db.clone(), events).await;
        }
        let result = self.insert_events(&events).await;
        (events, result)
    }

    /// The most recent events of an org, newest first.
    pub async fn recent_events(&self, org_id: i64, limit: i64) -> Result<Vec<UsageEvent>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM usage_events WHERE org_id = $1 \
             ORDER BY occurred_at DESC, id DESC LIMIT $2"
        );
        with_pool!(self, pool => sqlx::query_as::<_, UsageEvent>(&sql)
            .bind(org_id).bind(limit).fetch_all(pool).await)
        .map_err(StoreError::from)
    }

    /// One event by the gateway's request id, or else the oldest with that client request id.
    pub async fn get_event(&self, request_id: &str) -> Result<UsageEvent> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM usage_events WHERE request_id = $1 OR client_request_id = $1 \
             ORDER BY CASE WHEN request_id = $1 THEN 0 ELSE 1 END, id LIMIT 1"
        );
        with_pool!(self, pool => sqlx::query_as::<_, UsageEvent>(&sql)
            .bind(request_id).fetch_one(pool).await)
        .map_err(StoreError::from)
        .map_err(crate::error::not_found(format!("event {request_id:?}")))
    }

    /// Counts the events stored for an org (all time).
    pub async fn count_events(&self, org_id: i64) -> Result<i64> {
        let (n,): (i64,) = with_pool!(self, pool => sqlx::query_as(
            "SELECT COUNT(*) FROM usage_events WHERE org_id = $1")
            .bind(org_id).fetch_one(pool).await)?;
        Ok(n)
    }

    /// The daily rollups of an org in `[from, to]`, in key order (by day, provider, model,
    /// tool, user): one range of the rollups' primary key, read without a sort.
    pub async fn daily_rollups(
        &self,
        org_id: i64,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<crate::DailyRollup>> {
        with_pool!(self, pool => sqlx::query_as::<_, crate::DailyRollup>(
            "SELECT day, org_id, provider, model, tool, user_ref, requests, input_tokens, output_tokens, \
             thinking_tokens, cached_tokens, total_tokens, images, videos, video_seconds, cost_micros \
             FROM usage_rollups_daily WHERE org_id = $1 AND day >= $2 AND day <= $3 \
             ORDER BY org_id, day, provider, model, tool, user_ref")
            .bind(org_id).bind(from).bind(to).fetch_all(pool).await)
        .map_err(StoreError::from)
    }

    /// Every org's usage in the day `today` and the month starting `month_start`, from the
    /// rollups (for seeding and syncing the gateway's counters).
    pub async fn period_usage(
        &self,
        today: NaiveDate,
        month_start: NaiveDate,
    ) -> Result<Vec<PeriodUsage>> {
        with_pool!(self, pool => sqlx::query_as::<_, PeriodUsage>(
            "SELECT org_id, \
             CAST(COALESCE(SUM(CASE WHEN day = $1 THEN requests ELSE 0 END), 0) AS BIGINT) AS day_requests, \
             CAST(COALESCE(SUM(CASE WHEN day = $1 THEN images + videos ELSE 0 END), 0) AS BIGINT) AS day_ads, \
             CAST(COALESCE(SUM(total_tokens), 0) AS BIGINT) AS month_tokens, \
             CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) AS month_cost_micros \
             FROM usage_rollups_daily WHERE day >= $2 GROUP BY org_id ORDER BY org_id")
            .bind(today).bind(month_start).fetch_all(pool).await)
        .map_err(StoreError::from)
    }

    /// Records that usage crossed a threshold in a period. Returns `None` when this alert was
    /// already recorded (so each alert fires once per period, even across gateway instances).
    #[allow(clippy::too_many_arguments)]
    pub async fn record_alert(
        &self,
        org_id: i64,
        limit_type: LimitType,
        period: &str,
        threshold_pct: i32,
        limit_value: i64,
        usage_value: i64,
    ) -> Result<Option<LimitAlert>> {
        let now = Utc::now();
        with_pool!(self, pool => sqlx::query_as::<_, LimitAlert>(
            "INSERT INTO limit_alerts (org_id, limit_type, period, threshold_pct, limit_value, \
             usage_value, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (org_id, limit_type, period, threshold_pct) DO NOTHING \
             RETURNING id, org_id, limit_type, period, threshold_pct, limit_value, usage_value, created_at")
            .bind(org_id).bind(limit_type.as_str()).bind(period).bind(threshold_pct)
            .bind(limit_value).bind(usage_value).bind(now).fetch_optional(pool).await)
        .map_err(StoreError::from)
    }

    /// Models that had events priced with a fallback (no row in the price file) since `since`,
    /// with how many events each, most first and at most `limit`: what the console shows as a
    /// pricing alert. `org`: that org's only (every org's otherwise).
    pub async fn unpriced_models(
        &self,
        since: DateTime<Utc>,
        org: Option<i64>,
        limit: i64,
    ) -> Result<Vec<(String, i64)>> {
        with_pool!(self, pool => sqlx::query_as::<_, (String, i64)>(
            // `priced = FALSE` as written in the partial index usage_events_unpriced, which
            // serves it (a bound parameter would not).
            "SELECT model, COUNT(*) FROM usage_events WHERE priced = FALSE AND occurred_at >= $1 \
             AND ($2 IS NULL OR org_id = $2) GROUP BY model ORDER BY COUNT(*) DESC, model LIMIT $3")
            .bind(since).bind(org).bind(limit).fetch_all(pool).await)
        .map_err(StoreError::from)
    }

    /// An org's alerts, newest first.
    pub async fn list_alerts(&self, org_id: i64) -> Result<Vec<LimitAlert>> {
        with_pool!(self, pool => sqlx::query_as::<_, LimitAlert>(
            "SELECT id, org_id, limit_type, period, threshold_pct, limit_value, usage_value, created_at \
             FROM limit_alerts WHERE org_id = $1 ORDER BY id DESC")
            .bind(org_id).fetch_all(pool).await)
        .map_err(StoreError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_cut_into_the_fixed_statement_sizes_without_losing_a_row() {
        for n in [0usize, 1, 3, 4, 5, 255, 256, 257, 600, 1000] {
            let items: Vec<usize> = (0..n).collect();
            let chunks: Vec<_> = sized_chunks(&items).collect();
            let joined: Vec<usize> = chunks.iter().flat_map(|(_, c)| c.iter().copied()).collect();
            assert_eq!(joined, items, "every row once, in order, for {n}");
            for (i, c) in &chunks {
                assert_eq!(c.len(), CHUNK_SIZES[*i]);
            }
        }
        // 255 rows = 3 x 64 + 3 x 16 + 3 x 4 + 3 x 1.
        assert_eq!(sized_chunks(&[0u8; 255]).count(), 12);
    }

    #[test]
    fn statement_text_numbers_every_parameter() {
        let sql = values_sql("INSERT INTO t (a, b) ", " RETURNING a", 2, 2, false);
        assert_eq!(
            sql,
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4) RETURNING a"
        );
        let sql = values_sql("INSERT INTO t (a, b) ", "", 2, 2, true);
        assert_eq!(sql, "INSERT INTO t (a, b) VALUES (?, ?), (?, ?)");
        assert_eq!(insert_sql(false, true, 4).matches('$').count(), EVENT_BINDS);
        assert_eq!(
            rollup_sql(false, 0).matches('$').count(),
            ROLLUP_BINDS * 256
        );
        assert_eq!(
            insert_sql(true, false, 1).matches('?').count(),
            EVENT_BINDS * 64
        );
    }
}
