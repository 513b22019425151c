//! The ledger: usage events leave the request path through a bounded queue and are written to
//! the store in batches by a background task. Nothing is lost: each event is first written to
//! the [`journal`](crate::journal) (replayed on the next start if the process dies); when the
//! queue is full, or the store cannot be written, events are appended to a spool file (JSON
//! lines) and replayed when the store is back; replays are harmless because the store ignores
//! request ids it already has. Shutdown drains the queue.
//!
//! The request path only calls [`Ledger::record`]: one positioned write to the journal and a
//! `try_send`, or on overflow one small synchronous append to the spool file (no lock held
//! across an await).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use store::{Store, StoreError, UsageEvent};
use tokio::sync::{mpsc, watch};

use crate::journal::{self, Journal, Sealed, Segment};
use crate::limits::counters::Counters;
use crate::limits::Amounts;
use crate::metrics::Metrics;

/// Ledger settings.
#[derive(Debug, Clone)]
pub struct LedgerSettings {
    /// The active spool file; replays use sibling files next to it.
    pub spool_path: PathBuf,
    /// Events held in memory before overflowing to the spool.
    pub queue_capacity: usize,
    /// Most events written in one transaction.
    pub batch_size: usize,
    /// How often the writer wakes to write what has queued.
    pub flush_interval: Duration,
    /// How often the journal is flushed to the disk (`None`: left to the OS).
    pub fsync_interval: Option<Duration>,
}

/// The append-only spool.
pub struct Spool {
    path: PathBuf,
    file: Mutex<Option<std::fs::File>>,
    metrics: Arc<Metrics>,
}

impl Spool {
    fn new(path: PathBuf, metrics: Arc<Metrics>) -> Spool {
        Spool {
            path,
            file: Mutex::new(None),
            metrics,
        }
    }

    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or_else(|| Path::new("."))
    }

    /// Appends events, one JSON line each, and flushes them to the OS.
    pub fn append(&self, events: &[UsageEvent]) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(events.len() * 512);
        for e in events {
            crate::event_line::write(&mut buf, e);
            buf.push(b'\n');
        }
        let mut guard = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("spool lock poisoned"))?;
        if guard.is_none() {
            std::fs::create_dir_all(self.dir())?;
            *guard = Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            );
        }
        let file = guard
            .as_mut()
            .ok_or_else(|| std::io::Error::other("spool not open"))?;
        file.write_all(&buf)?;
        file.flush()?;
        self.metrics.events_spooled.inc_by(events.len() as u64);
        Ok(())
    }

    /// Flushes the active spool file to the disk (power loss; a crash loses nothing anyway).
    fn sync(&self) -> std::io::Result<()> {
        let file = {
            let guard = self
                .file
                .lock()
                .map_err(|_| std::io::Error::other("spool lock poisoned"))?;
            match guard.as_ref() {
                Some(f) => f.try_clone()?,
                None => return Ok(()),
            }
        };
        // Outside the lock: appends on the proxy's workers do not wait for the disk.
        file.sync_data()
    }

    /// Moves the active spool aside (so new appends start a fresh file) and lists every file
    /// waiting for replay, oldest first.
    fn take_for_replay(&self) -> std::io::Result<Vec<PathBuf>> {
        {
            let mut guard = self
                .file
                .lock()
                .map_err(|_| std::io::Error::other("spool lock poisoned"))?;
            let active_len = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
            if active_len > 0 {
                *guard = None; // closes the file
                let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.9f");
                std::fs::rename(&self.path, self.replay_path(&stamp.to_string()))?;
            }
        }
        let mut files: Vec<PathBuf> = match std::fs::read_dir(self.dir()) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| self.is_replay_file(p))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        files.sort();
        Ok(files)
    }

    /// The name of a file waiting for replay.
    pub fn replay_path(&self, stamp: &str) -> PathBuf {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "events.jsonl".into());
        self.dir().join(format!("{name}.replay-{stamp}"))
    }

    fn is_replay_file(&self, p: &Path) -> bool {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        p.file_name()
            .is_some_and(|f| f.to_string_lossy().starts_with(&format!("{name}.replay-")))
    }

    /// Bytes waiting in spool files.
    pub fn bytes(&self) -> u64 {
        let Ok(rd) = std::fs::read_dir(self.dir()) else {
            return 0;
        };
        rd.filter_map(|e| e.ok())
            .filter(|e| e.path() == self.path || self.is_replay_file(&e.path()))
            .filter_map(|e| e.metadata().ok().map(|m| m.len()))
            .sum()
    }
}

/// The handle the proxy records events with.
#[derive(Clone)]
pub struct Ledger {
    tx: mpsc::Sender<Queued>,
    journal: Arc<Journal>,
    spool: Arc<Spool>,
    metrics: Arc<Metrics>,
}

/// An event on its way to the store, with the journal segment that holds it.
type Queued = (Arc<Segment>, UsageEvent);

/// Where an event was journaled (its place in the journal until it is stored).
pub struct Journaled(Arc<Segment>);

impl Ledger {
    /// Journals an event and hands it to the writer; never waits.
    pub fn record(&self, event: UsageEvent) {
        let seg = self.journal(&event);
        self.queue(seg, event);
    }

    /// Writes an event to the journal; the segment goes with it to [`Ledger::queue`]. For an
    /// event made before the answer's last byte (so a crash right after cannot lose it).
    pub fn journal(&self, event: &UsageEvent) -> Journaled {
        let (seg, written) = self.journal.append(event);
        if let Err(err) = written {
            self.metrics.journal_failures.inc();
            tracing::error!(request_id = %event.request_id, error = %err, "usage event not journaled: it would not survive a crash");
        }
        Journaled(seg)
    }

    /// Hands a journaled event to the writer; never waits. When the queue is full the event
    /// goes to the spool; only if that fails too is it counted as dropped (and logged).
    pub fn queue(&self, journaled: Journaled, event: UsageEvent) {
        let (seg, event) = match self.tx.try_send((journaled.0, event)) {
            Ok(()) => {
                self.metrics.ledger_queue_depth.inc();
                return;
            }
            Err(mpsc::error::TrySendError::Full(q) | mpsc::error::TrySendError::Closed(q)) => q,
        };
        match self.spool.append(std::slice::from_ref(&event)) {
            Ok(()) => seg.done(),
            // Still in the journal, which keeps its segment: the next start replays it.
            Err(err) => {
                self.metrics.events_dropped.inc();
                tracing::error!(request_id = %event.request_id, error = %err, "usage event not stored: queue full and spool unwritable; kept in the journal for the next start");
            }
        }
    }
}

/// The background writer's handle: stop it to drain the queue.
pub struct LedgerWriter {
    stop_tx: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl LedgerWriter {
    /// Stops taking new work, writes (or spools) everything queued, and returns.
    pub async fn drain(self) {
        let _ = self.stop_tx.send(true);
        let _ = self.task.await;
    }
}

/// Starts the ledger: the handle for the proxy and the writer task (on the current runtime).
/// Journal segments an earlier process left become spool files, replayed first.
pub fn start(
    settings: LedgerSettings,
    store: Store,
    metrics: Arc<Metrics>,
    counters: Option<Arc<Counters>>,
) -> std::io::Result<(Ledger, LedgerWriter)> {
    let (tx, rx) = mpsc::channel(settings.queue_capacity.max(1));
    let spool = Arc::new(Spool::new(settings.spool_path.clone(), metrics.clone()));
    let (journal, recovered) = Journal::open(&settings.spool_path, |tail| spool.replay_path(tail))?;
    if recovered > 0 {
        tracing::warn!(
            segments = recovered,
            "the last run stopped without storing every usage event; replaying its journal"
        );
    }
    let journal = Arc::new(journal);
    metrics.spool_bytes.set(spool.bytes() as i64);
    let ledger = Ledger {
        tx,
        journal: journal.clone(),
        spool: spool.clone(),
        metrics: metrics.clone(),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let writer = Writer {
        rx,
        store,
        spool,
        metrics,
        settings,
        store_ok: true,
        counters,
        started: chrono::Utc::now(),
        journal,
        sealed: Sealed::default(),
        syncing: Arc::default(),
    };
    let task = tokio::spawn(writer.run(stop_rx));
    Ok((ledger, LedgerWriter { stop_tx, task }))
}

struct Writer {
    rx: mpsc::Receiver<Queued>,
    store: Store,
    spool: Arc<Spool>,
    metrics: Arc<Metrics>,
    settings: LedgerSettings,
    store_ok: bool,
    /// Told what reached the store, so the next sync does not count it twice.
    counters: Option<Arc<Counters>>,
    /// Events older than this process were never in its counters.
    started: chrono::DateTime<chrono::Utc>,
    journal: Arc<Journal>,
    /// Journal segments no longer written, kept until their events are stored.
    sealed: Sealed,
    /// A flush to the disk is under way.
    syncing: Arc<std::sync::atomic::AtomicBool>,
}

impl Writer {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.settings.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_replay_try = Instant::now() - Duration::from_secs(3600);
        let mut last_sync = Instant::now();
        loop {
            let stopping = tokio::select! {
                _ = tick.tick() => false,
                _ = stop.changed() => true,
            };
            if stopping {
                self.rx.close();
            }
            self.write_queued().await;
            // Replay when the store looks healthy, or every few seconds to find out.
            if self.store_ok || last_replay_try.elapsed() > Duration::from_secs(2) {
                last_replay_try = Instant::now();
                self.replay().await;
            }
            self.metrics.spool_bytes.set(self.spool.bytes() as i64);
            if stopping {
                self.sealed.close(&self.journal);
                return;
            }
            let mut to_sync = Vec::new();
            match self.journal.rotate_if_full() {
                Ok(Some(old)) => {
                    // Its tail, written since the last flush, goes to the disk too.
                    to_sync.push(old.clone());
                    self.sealed.push(old);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a new journal segment; the current one grows")
                }
            }
            self.sealed.delete_finished();
            let due = self
                .settings
                .fsync_interval
                .is_some_and(|every| last_sync.elapsed() >= every);
            // Flushed on a blocking thread and not awaited (a slow disk must not stop the
            // writer from draining the queue); one flush at a time.
            if due && !self.syncing.swap(true, std::sync::atomic::Ordering::AcqRel) {
                last_sync = Instant::now();
                to_sync.push(self.journal.current());
                let (syncing, spool) = (self.syncing.clone(), self.spool.clone());
                tokio::task::spawn_blocking(move || {
                    for seg in &to_sync {
                        if let Err(e) = journal::sync(seg) {
                            tracing::warn!(error = %e, "cannot flush the journal to the disk");
                        }
                    }
                    if let Err(e) = spool.sync() {
                        tracing::warn!(error = %e, "cannot flush the spool to the disk");
                    }
                    syncing.store(false, std::sync::atomic::Ordering::Release);
                });
            }
        }
    }

    /// Writes everything queued now, in batches.
    async fn write_queued(&mut self) {
        let mut batch = Vec::with_capacity(self.settings.batch_size);
        let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(self.settings.batch_size);
        loop {
            batch.clear();
            // The journal segments of the last batch: its events are stored or spooled now
            // (when neither took them, `segments` was cleared without: the journal keeps them).
            segments.drain(..).for_each(|s| s.done());
            while batch.len() < self.settings.batch_size {
                match self.rx.try_recv() {
                    Ok((seg, e)) => {
                        segments.push(seg);
                        batch.push(e);
                    }
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                return;
            }
            self.metrics.ledger_queue_depth.sub(batch.len() as i64);
            let result;
            (batch, result) = self.write(batch).await;
            if let Err(e) = result {
                self.store_ok = false;
                tracing::warn!(error.kind = e.kind(), error = %e, events = batch.len(), "store write failed; spooling events");
                if let Err(err) = self.spool.append(&batch) {
                    self.metrics.events_dropped.inc_by(batch.len() as u64);
                    tracing::error!(error = %err, events = batch.len(), "usage events not stored: store and spool both failed; kept in the journal for the next start");
                    segments.clear();
                }
            }
        }
    }

    /// Writes a batch (the store keeps events whose org or key no longer exists, without the
    /// reference). The batch comes back with the result (the store writes it without copying).
    async fn write(&mut self, batch: Vec<UsageEvent>) -> (Vec<UsageEvent>, Result<(), StoreError>) {
        let started = Instant::now();
        let (mut batch, result) = self.store.write_events(batch).await;
        let result = match result {
            Err(StoreError::Invalid(_)) => self.write_one_by_one(&mut batch).await,
            other => other.map(|_| ()),
        };
        self.metrics
            .ledger_batch_seconds
            .observe(started.elapsed().as_secs_f64());
        if result.is_ok() {
            self.metrics.events_written.inc_by(batch.len() as u64);
            if let Some(c) = &self.counters {
                c.flushed_batch(
                    batch
                        .iter()
                        .filter(|e| e.metered && e.occurred_at >= self.started)
                        .filter_map(|e| {
                            let org = e.org_id?;
                            let amounts =
                                Amounts::new(1, e.images + e.videos, e.total_tokens, e.cost_micros);
                            Some((org, e.occurred_at, amounts))
                        }),
                );
            }
            if !self.store_ok {
                tracing::info!("store writable again");
            }
            self.store_ok = true;
        }
        (batch, result)
    }

    /// A batch the store refused for a missing org or key (on PostgreSQL, the rollups' foreign
    /// key, when an org is deleted while its batch is written), event by event: an event it
    /// refuses is stored without the references. Any other failure is returned, and the whole
    /// batch is spooled (events already stored are skipped when it is replayed).
    async fn write_one_by_one(&self, batch: &mut [UsageEvent]) -> Result<(), StoreError> {
        for e in batch.iter_mut() {
            match self.store.insert_events(std::slice::from_ref(e)).await {
                Ok(_) => {}
                Err(StoreError::Invalid(_)) => {
                    e.org_id = None;
                    e.key_id = None;
                    self.store.insert_events(std::slice::from_ref(e)).await?;
                }
                Err(other) => return Err(other),
            }
        }
        Ok(())
    }

    /// Replays spooled events into the store, file by file; a file is deleted once all of its
    /// events are stored.
    async fn replay(&mut self) {
        let files = match self.spool.take_for_replay() {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the spool");
                return;
            }
        };
        for path in files {
            let events = match read_events(&path) {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "cannot read a spool file; leaving it for an operator");
                    continue;
                }
            };
            for chunk in events.chunks(self.settings.batch_size.max(1)) {
                let (chunk, result) = self.write(chunk.to_vec()).await;
                if result.is_err() {
                    self.store_ok = false;
                    return; // the store is still down: keep the file, retry later
                }
                self.metrics.events_replayed.inc_by(chunk.len() as u64);
            }
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(file = %path.display(), error = %e, "cannot remove a replayed spool file");
            }
            tracing::info!(file = %path.display(), events = events.len(), "replayed spooled usage events");
        }
    }
}

fn read_events(path: &Path) -> std::io::Result<Vec<UsageEvent>> {
    let file = std::fs::File::open(path)?;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        // A journal range reserved by a writer that was killed before writing it reads as NULs.
        let line = line.trim_matches(|c: char| c == '\0' || c.is_whitespace());
        if line.is_empty() {
            continue;
        }
        match serde_json::from_str::<UsageEvent>(line) {
            Ok(e) => out.push(e),
            // A torn last line (crash mid-append) is skipped; everything before it is kept.
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "skipping an unreadable spool line")
            }
        }
    }
    Ok(out)
}
