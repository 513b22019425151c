//! The background pruner: every `ledger.prune_interval_secs` (the first pass at most five minutes
//! after start), usage events, limit alerts and audit rows past their retention, and ended admin
//! sessions, are deleted in batches of [`BATCH`] rows paced by [`Pace`], on a thread of the
//! lowest priority with a connection of its own ([`on_low_thread`]), so the ledger's writes, the
//! admin's reads and the traffic never wait long behind it. Several instances pruning at once is
//! harmless.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use store::{ConnectOptions, Store, StoreError};

/// Rows deleted per statement.
pub const BATCH: i64 = 1_000;
/// The shortest pause between two batches.
const PAUSE: Duration = Duration::from_millis(20);
/// A gentle pass pauses this many times as long as its last batch took, so it uses at most a
/// fortieth of a core (or of the database server) however large the backlog: traffic first.
/// Pruning is never urgent.
const GENTLE: u32 = 39;
/// A pass whose work runs on a thread of the lowest priority here (SQLite, see
/// [`on_low_thread`]) pauses this many times its last batch: the traffic takes the core first
/// anyway, so the pause only bounds the pass's share of what is left and of the disk.
const LOW: u32 = 3;
/// The first pass waits for start-up to be over.
const FIRST: Duration = Duration::from_secs(300);

/// How hard a pass works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// The background's pace where the work runs at the traffic's priority (PostgreSQL's
    /// server): a batch, then 39 times its duration of rest.
    Gentle,
    /// The background's pace where the work runs at the lowest priority (SQLite on the pass's
    /// own thread): a batch, then 3 times its duration of rest.
    Low,
    /// For a maintenance window: the shortest pause only.
    Fast,
}

impl Pace {
    fn pause(self, batch: Duration) -> Duration {
        match self {
            Pace::Gentle => PAUSE.max(batch * GENTLE),
            Pace::Low => PAUSE.max(batch * LOW),
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

/// The nice value of a pass's threads, the lowest priority:
/// the proxy's workers (and the ledger's threads, at nice 10) take the core whenever they have
/// work and the pass gets what is left, so a pass costs the traffic its I/O, not its CPU.
pub const NICE: i32 = 19;

/// The database a pass opens for itself.
#[derive(Debug, Clone)]
pub struct Db {
    /// The database URL.
    pub url: String,
    /// Its connection settings (the pass uses one connection).
    pub connect: ConnectOptions,
    /// The services' store: used instead when the database is in memory (it cannot be opened twice).
    pub shared: Store,
}

impl Db {
    /// The configured database, with the services' (or the CLI's) store beside it.
    pub fn new(settings: &crate::config::Settings, shared: Store) -> Db {
        Db {
            url: settings.database_url.clone(),
            connect: settings.connect.clone(),
            shared,
        }
    }
}

/// Runs `work` on a new thread at [`NICE`], in a runtime of its own, with a store of its own
/// opened there: sqlx runs each SQLite connection on a thread spawned by the one that opens it,
/// and a new thread inherits its parent's nice value, so SQLite's deletes run at that priority
/// too, and `work` is given [`Pace::Low`]. On PostgreSQL the server does the work at its own
/// priority (and an in-memory database is the services' own connection): [`Pace::Gentle`] then.
pub fn on_low_thread<F, Fut, T>(
    db: Db,
    work: F,
) -> std::io::Result<std::thread::JoinHandle<Result<T, StoreError>>>
where
    F: FnOnce(Store, Pace) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, StoreError>>,
    T: Send + 'static,
{
    std::thread::Builder::new()
        .name("tollgate-prune".into())
        .spawn(move || {
            lower_own_priority();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| StoreError::Io(e.to_string()))?;
            rt.block_on(async move {
                if db.shared.is_in_memory() {
                    return work(db.shared, Pace::Gentle).await;
                }
                let connect = ConnectOptions {
                    max_connections: 1,
                    role: Some("prune"),
                    ..db.connect
                };
                let store = match Store::connect_lazy(&db.url, &connect).await {
                    Ok(store) => store,
                    Err(e) => {
                        tracing::warn!(error.kind = e.kind(), error = %e, "pruning cannot open the database");
                        return Err(e);
                    }
                };
                let pace = match store.backend() {
                    store::Backend::Sqlite => Pace::Low,
                    store::Backend::Postgres => Pace::Gentle,
                };
                let out = work(store.clone(), pace).await;
                store.close().await;
                out
            })
        })
}

/// Sets the calling thread's nice value to [`NICE`] and its scheduler slice to the shortest
/// (see the `lowprio` crate: its turn on a contended core ends after 0.1 ms instead of a whole
/// slice, so a request's thread waking there waits less). A nice value is per thread on Linux,
/// and both are inherited by the threads it starts. Not `SCHED_IDLE`: a pass starved while it
/// holds SQLite's write lock stalls the ledger behind it; at nice 19 it still gets a sliver of a
/// busy core.
fn lower_own_priority() {
    if let Err(e) = lowprio::lower_current_thread(NICE, lowprio::SHORTEST_SLICE) {
        tracing::warn!(error = %e, "cannot shorten the pruning thread's scheduler slice");
    }
}

/// One background pass as of `now` on a thread of the lowest priority (see [`on_low_thread`]).
pub async fn prune_low(
    db: Db,
    retention: Retention,
    now: DateTime<Utc>,
) -> Result<Pruned, StoreError> {
    let thread = on_low_thread(db, move |store, pace| async move {
        prune_once(&store, retention, now, pace).await
    })
    .map_err(|e| StoreError::Io(e.to_string()))?;
    join(thread).await
}

async fn join<T: Send + 'static>(
    thread: std::thread::JoinHandle<Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(move || thread.join()).await {
        Ok(Ok(out)) => out,
        _ => Err(StoreError::Io("the pruning thread panicked".into())),
    }
}

/// The background pruner (see [`start`]).
pub struct Pruner {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), StoreError>>>,
}

impl Pruner {
    /// Stops the pass at its next step and waits for its thread to end.
    pub async fn stop(mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            if let Err(e) = join(thread).await {
                tracing::warn!(error.kind = e.kind(), error = %e, "the pruner ended with an error");
            }
        }
    }
}

/// Starts [`run`] on a thread of the lowest priority (see [`on_low_thread`]).
pub fn start(db: Db, retention: Retention, every: Duration) -> std::io::Result<Pruner> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = on_low_thread(db, move |store, pace| async move {
        tokio::select! {
            _ = stopped => {}
            () = run(store, retention, every, pace) => {}
        }
        Ok(())
    })?;
    Ok(Pruner {
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// Prunes gently every `every` (the first pass at most five minutes after start), for ever.
pub async fn run(store: Store, retention: Retention, every: Duration, pace: Pace) {
    let every = every.max(Duration::from_secs(1));
    let first = tokio::time::Instant::now() + FIRST.min(every);
    let mut tick = tokio::time::interval_at(first, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match prune_once(&store, retention, Utc::now(), pace).await {
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

    /// The nice values and scheduler slices (ns, where the kernel shows them) of this
    /// process's threads whose name starts with `prefix`.
    #[cfg(target_os = "linux")]
    fn threads(prefix: &str) -> (Vec<i32>, Vec<u64>) {
        let (mut nice, mut slice) = (Vec::new(), Vec::new());
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if !name.starts_with(prefix) {
                continue;
            }
            let tid = task.file_name().to_str().unwrap().parse::<i32>().unwrap();
            // A thread that ended meanwhile has no priority left to read.
            if let Ok(n) = rustix::process::getpriority_process(rustix::process::Pid::from_raw(tid))
            {
                nice.push(n);
            }
            slice.extend(lowprio::slice_ns(tid));
        }
        (nice, slice)
    }

    /// A migrated SQLite file, open as the services' store (its connection stays open).
    async fn sqlite_db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/t.db", dir.path().display());
        let shared = Store::connect(&url, &ConnectOptions::default())
            .await
            .unwrap();
        shared.migrate().await.unwrap();
        let connect = ConnectOptions::default();
        (
            dir,
            Db {
                url,
                connect,
                shared,
            },
        )
    }

    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pass_and_its_sqlite_connection_run_at_the_lowest_priority() {
        let base = rustix::process::getpriority_process(None).unwrap();
        let (_dir, db) = sqlite_db().await;
        let thread = on_low_thread(db, |store, pace| async move {
            store.ping().await?;
            Ok((threads("tollgate-prune"), threads("sqlx-sqlite"), pace))
        })
        .unwrap();
        let ((pass, pass_slice), (sqlite, sqlite_slice), pace) = join(thread).await.unwrap();
        assert_eq!(pass, [NICE], "the pass's own thread");
        // And its turn on a contended core lasts 0.1 ms (Linux 6.12+ with the scheduler's debug
        // view, as on every CI machine; elsewhere the slice may not show).
        if !pass_slice.is_empty() || std::env::var_os("CI").is_some() {
            assert_eq!(pass_slice, [100_000], "the pass's slice");
            assert!(
                sqlite_slice.contains(&100_000),
                "its connection's: {sqlite_slice:?}"
            );
        }
        assert_eq!(pace, Pace::Low, "low priority: the shorter rests");
        // The services' connection stays where it was; the pass's (where SQLite deletes) is as
        // low as the pass.
        assert!(sqlite.contains(&base), "{sqlite:?}");
        assert!(sqlite.contains(&NICE), "{sqlite:?}");
    }

    #[tokio::test]
    async fn the_pruner_stops_when_asked() {
        let (_dir, db) = sqlite_db().await;
        // The first pass would come in five minutes: stop returns long before.
        let pruner = start(
            db,
            Retention::from_days(90, 0, 0),
            Duration::from_secs(3600),
        )
        .unwrap();
        tokio::time::timeout(Duration::from_secs(30), pruner.stop())
            .await
            .expect("the pruner's thread ended");
    }

    #[test]
    fn a_gentle_pass_rests_39_times_its_step_a_low_one_3_times_and_a_fast_one_20_ms() {
        let ms = Duration::from_millis;
        assert_eq!(Pace::Gentle.pause(ms(10)), ms(390));
        assert_eq!(Pace::Low.pause(ms(10)), ms(30));
        assert_eq!(Pace::Low.pause(ms(1)), ms(20));
        assert_eq!(Pace::Gentle.pause(Duration::ZERO), ms(20));
        assert_eq!(Pace::Fast.pause(ms(10)), ms(20));
        assert_eq!(Pace::Fast.pause(ms(500)), ms(20));
    }
}
