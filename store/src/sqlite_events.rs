//! The SQLite event writer: usage event batches go in through a connection of their own, with
//! two statements prepared once (one event, one rollup) and run row by row inside one
//! transaction, on tokio's blocking pool. Through sqlx each batch cost the gateway ~7 µs of CPU per
//! event: every value was copied into an argument list, sent to sqlx's worker thread and bound
//! there, and a 500-event batch was cut into multi-row statements. Here values are bound where
//! they lie, and a row's "changes" count says at once whether its request id was new (replays
//! are harmless, as before).
//!
//! The sqlx pool stays the only way everything else reaches the file; in WAL mode this
//! connection and the pool's write in turn, each waiting up to the same busy timeout.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::SecondsFormat;
use rusqlite::{params, Connection, ErrorCode, TransactionBehavior};

use crate::usage::{
    insert_sql, key_last_seen, referenced_ids, rollup_groups, rollup_sql, without_missing,
    KEY_LAST_USED_SQL, ONE_ROW,
};
use crate::{Result, StoreError, UsageEvent};

/// The file's own connection for event batches, opened on first use.
pub struct EventDb {
    path: PathBuf,
    busy_timeout: Duration,
    conn: Mutex<Option<Connection>>,
}

impl std::fmt::Debug for EventDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventDb").field("path", &self.path).finish()
    }
}

impl EventDb {
    /// A writer for the database file at `path` (not opened yet).
    pub(crate) fn new(path: PathBuf, busy_timeout: Duration) -> Arc<EventDb> {
        Arc::new(EventDb {
            path,
            busy_timeout,
            conn: Mutex::new(None),
        })
    }

    /// Writes a batch in one transaction, skipping request ids already stored; how many were
    /// new. Blocking: call it from the blocking pool.
    pub(crate) fn insert(&self, events: &[UsageEvent]) -> Result<u64> {
        // A panic in an earlier write poisoned the lock: its connection is dropped and a new
        // one opened (the transaction it held was rolled back when it was dropped).
        let mut guard = self.conn.lock().unwrap_or_else(|poisoned| {
            let mut guard = poisoned.into_inner();
            *guard = None;
            guard
        });
        if guard.is_none() {
            *guard = Some(self.open()?);
        }
        let Some(conn) = guard.as_mut() else {
            return Err(StoreError::Sqlite {
                message: "event writer not open".into(),
                unavailable: true,
            });
        };
        let result = write(conn, events);
        if let Err(e) = &result {
            if e.is_unavailable() {
                // Reopen next time: the file may have been replaced or the handle broken.
                *guard = None;
            }
        }
        result
    }

    fn open(&self) -> Result<Connection> {
        let conn = Connection::open(&self.path).map_err(from_sqlite)?;
        conn.busy_timeout(self.busy_timeout).map_err(from_sqlite)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(from_sqlite)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(from_sqlite)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(from_sqlite)?;
        Ok(conn)
    }
}

fn write(conn: &mut Connection, events: &[UsageEvent]) -> Result<u64> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(from_sqlite)?;
    let (orgs, keys) = referenced_ids(events);
    let orgs = existing(&tx, "SELECT 1 FROM organizations WHERE id = ?1", &orgs)?;
    let keys = existing(&tx, "SELECT 1 FROM api_keys WHERE id = ?1", &keys)?;
    let events = &*without_missing(events, &orgs, &keys);
    let mut new = Vec::with_capacity(events.len());
    {
        let mut ins = tx
            .prepare_cached(insert_sql(true, false, ONE_ROW))
            .map_err(from_sqlite)?;
        for e in events {
            // In INSERT_EVENTS_HEAD's order, encoded as sqlx encodes them for the pool's reads.
            let stored = ins
                .execute(params![
                    e.request_id,
                    e.occurred_at.to_rfc3339_opts(SecondsFormat::AutoSi, false),
                    e.org_id,
                    e.key_id,
                    e.user_ref,
                    e.tool,
                    e.provider,
                    e.model,
                    e.operation,
                    e.status,
                    e.streamed,
                    e.input_tokens,
                    e.output_tokens,
                    e.thinking_tokens,
                    e.cached_tokens,
                    e.tool_prompt_tokens,
                    e.total_tokens,
                    e.input_audio_tokens,
                    e.output_image_tokens,
                    e.images,
                    e.videos,
                    e.video_seconds,
                    e.cost_micros,
                    e.estimated,
                    e.priced,
                    e.upstream_latency_ms,
                    e.total_latency_ms,
                    e.metered,
                    e.client_request_id,
                ])
                .map_err(from_sqlite)?;
            new.push(stored == 1);
        }
    }
    let inserted = new.iter().filter(|n| **n).count();
    let groups = if inserted == events.len() {
        rollup_groups(events, |_| true)
    } else {
        let ids: HashSet<&str> = events
            .iter()
            .zip(&new)
            .filter(|(_, n)| **n)
            .map(|(e, _)| e.request_id.as_str())
            .collect();
        rollup_groups(events, |id| ids.contains(id))
    };
    {
        let mut up = tx
            .prepare_cached(rollup_sql(true, ONE_ROW))
            .map_err(from_sqlite)?;
        for ((day, org, provider, model, tool, user), t) in &groups {
            up.execute(params![
                day.format("%F").to_string(),
                org,
                provider,
                model,
                tool,
                user,
                t[0],
                t[1],
                t[2],
                t[3],
                t[4],
                t[5],
                t[6],
                t[7],
                t[8],
                t[9],
            ])
            .map_err(from_sqlite)?;
        }
        let mut last = tx.prepare_cached(KEY_LAST_USED_SQL).map_err(from_sqlite)?;
        for (key, at) in key_last_seen(events) {
            last.execute(params![
                key,
                at.to_rfc3339_opts(SecondsFormat::AutoSi, false)
            ])
            .map_err(from_sqlite)?;
        }
    }
    tx.commit().map_err(from_sqlite)?;
    Ok(inserted as u64)
}

/// Which of `ids` the query (`SELECT 1 … WHERE id = ?1`) finds.
fn existing(tx: &rusqlite::Transaction<'_>, sql: &str, ids: &[i64]) -> Result<HashSet<i64>> {
    let mut st = tx.prepare_cached(sql).map_err(from_sqlite)?;
    let mut found = HashSet::with_capacity(ids.len());
    for &id in ids {
        if st.exists([id]).map_err(from_sqlite)? {
            found.insert(id);
        }
    }
    Ok(found)
}

/// rusqlite's errors in the store's terms, as [`StoreError`]'s `From<sqlx::Error>` does for
/// the pool: constraint violations by kind, a busy or unreadable file as unavailable.
fn from_sqlite(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, msg) => {
            let message = msg.clone().unwrap_or_else(|| e.to_string());
            match f.code {
                ErrorCode::ConstraintViolation => match f.extended_code {
                    rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY => StoreError::Conflict {
                        constraint: message,
                    },
                    _ => StoreError::Invalid(message),
                },
                // Busy, locked, unreadable, full: a later try may work (and the connection is
                // reopened for it). A corrupt file or a schema error will not.
                ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::SystemIoFailure
                | ErrorCode::CannotOpen
                | ErrorCode::DiskFull => StoreError::Sqlite {
                    message,
                    unavailable: true,
                },
                _ => StoreError::Sqlite {
                    message,
                    unavailable: false,
                },
            }
        }
        _ => StoreError::Sqlite {
            message: e.to_string(),
            unavailable: false,
        },
    }
}
