//! The journal: every usage event is written to a file before it enters the ledger's queue, so
//! the event of an answered request survives a killed process (what `write(2)` returned is in
//! the page cache, which outlives the process), and the next start replays what the old process
//! had not stored. One positioned write per event and no lock: writers reserve their byte range
//! with an atomic add. The ledger's writer rotates segments and deletes one once every event in
//! it is stored or spooled. On power loss, what was written since the last `sync_data` (every
//! `ledger.fsync_ms`) can be lost.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use store::UsageEvent;

thread_local! {
    /// Per worker: the record being written, reused so a record costs no allocation.
    static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A segment is sealed and a new one started once it holds this many bytes.
const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
/// Set in a segment's `pending` once it is sealed: an append that finds it goes to the next.
const SEALED: u64 = 1 << 63;

/// One journal file.
pub struct Segment {
    path: PathBuf,
    file: File,
    /// Bytes reserved so far (the next record's offset).
    end: AtomicU64,
    /// Events written here that are not yet stored or spooled, and [`SEALED`].
    pending: AtomicU64,
}

impl Segment {
    fn create(path: PathBuf) -> std::io::Result<Segment> {
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)?;
        Ok(Segment {
            path,
            file,
            end: AtomicU64::new(0),
            pending: AtomicU64::new(0),
        })
    }

    /// The ledger has stored (or spooled) one of this segment's events.
    pub fn done(&self) {
        self.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The journal's files in one directory, named `<stem>.journal-<start>-<seq>`.
pub struct Journal {
    dir: PathBuf,
    prefix: String,
    current: ArcSwap<Segment>,
    next_seq: AtomicU64,
}

impl Journal {
    /// Opens a journal next to `spool_path`. Segments an earlier process left are renamed into
    /// spool replay files (`replay_name` gives the name), so the ledger replays them like a spool.
    pub fn open(
        spool_path: &Path,
        replay_name: impl Fn(&str) -> PathBuf,
    ) -> std::io::Result<(Journal, usize)> {
        let dir = spool_path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let stem = spool_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "events.jsonl".into());
        let mut left: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .is_some_and(|f| f.to_string_lossy().starts_with(&format!("{stem}.journal-")))
            })
            .collect();
        left.sort();
        let mut recovered = 0;
        for old in &left {
            let len = std::fs::metadata(old).map(|m| m.len()).unwrap_or(0);
            if len == 0 {
                let _ = std::fs::remove_file(old);
                continue;
            }
            let tail = old
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            std::fs::rename(old, replay_name(&tail))?;
            recovered += 1;
        }
        let start = chrono::Utc::now().format("%Y%m%dT%H%M%S%.6f").to_string();
        let prefix = format!("{stem}.journal-{start}-");
        let first = Segment::create(dir.join(format!("{prefix}{:06}", 0)))?;
        Ok((
            Journal {
                dir,
                prefix,
                current: ArcSwap::from_pointee(first),
                next_seq: AtomicU64::new(1),
            },
            recovered,
        ))
    }

    /// Writes one event; returns the segment that holds it (told by the ledger when the event
    /// is stored). The event is in the segment's count even when the write failed, so the count
    /// always matches what the ledger will report done.
    pub fn append(&self, event: &UsageEvent) -> (Arc<Segment>, std::io::Result<()>) {
        let seg = loop {
            let seg = self.current.load_full();
            if seg.pending.fetch_add(1, Ordering::AcqRel) & SEALED == 0 {
                break seg;
            }
            // Sealed between the load and the count: the next segment is current already.
            seg.pending.fetch_sub(1, Ordering::AcqRel);
        };
        let result = LINE.with_borrow_mut(|line| {
            line.clear();
            crate::event_line::write(line, event);
            line.push(b'\n');
            let at = seg.end.fetch_add(line.len() as u64, Ordering::Relaxed);
            seg.file.write_all_at(line, at)
        });
        (seg, result)
    }

    /// Starts a new segment when the current one is full; returns the sealed one.
    pub fn rotate_if_full(&self) -> std::io::Result<Option<Arc<Segment>>> {
        if self.current.load().end.load(Ordering::Relaxed) < SEGMENT_BYTES {
            return Ok(None);
        }
        self.rotate().map(Some)
    }

    fn rotate(&self) -> std::io::Result<Arc<Segment>> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let next = Segment::create(self.dir.join(format!("{}{seq:06}", self.prefix)))?;
        let old = self.current.swap(Arc::new(next));
        old.pending.fetch_or(SEALED, Ordering::AcqRel);
        Ok(old)
    }

    /// The segment being written now.
    pub fn current(&self) -> Arc<Segment> {
        self.current.load_full()
    }
}

/// Sealed segments waiting for their last event to be stored; owned by the ledger's writer.
#[derive(Default)]
pub struct Sealed(Vec<Arc<Segment>>);

impl Sealed {
    /// A segment the journal no longer writes to (see [`Journal::rotate_if_full`]).
    pub fn push(&mut self, seg: Arc<Segment>) {
        self.0.push(seg);
    }

    /// Deletes the sealed segments with nothing pending: no append can join them any more.
    pub fn delete_finished(&mut self) {
        self.0.retain(|seg| {
            if seg.pending.load(Ordering::Acquire) != SEALED {
                return true;
            }
            remove(&seg.path);
            false
        });
    }

    /// At shutdown, with the proxy stopped and the queue drained: every segment with nothing
    /// pending goes, the current one too.
    pub fn close(&mut self, journal: &Journal) {
        self.0.push(journal.current());
        for seg in self.0.drain(..) {
            if seg.pending.load(Ordering::Acquire) & !SEALED == 0 {
                remove(&seg.path);
            } else {
                tracing::warn!(file = %seg.path.display(), "journal kept: some of its events were not stored; the next start replays them");
            }
        }
    }
}

fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(file = %path.display(), error = %e, "cannot remove a finished journal segment");
    }
}

/// Flushes a segment's written bytes to the disk (the power-loss bound).
pub fn sync(seg: &Segment) -> std::io::Result<()> {
    seg.file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> UsageEvent {
        UsageEvent {
            request_id: id.to_owned(),
            ..UsageEvent::default()
        }
    }

    #[test]
    fn appended_events_are_readable_lines_and_finished_segments_go() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("events.jsonl");
        let replay = |tail: &str| dir.path().join(format!("events.jsonl.replay-{tail}"));
        let (j, recovered) = Journal::open(&spool, replay).unwrap();
        assert_eq!(recovered, 0);
        let (seg, r) = j.append(&event("a"));
        r.unwrap();
        let (_, r) = j.append(&event("b"));
        r.unwrap();
        let text = std::fs::read_to_string(&seg.path).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<UsageEvent>(l).unwrap().request_id)
            .collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(seg.pending.load(Ordering::Acquire), 2);

        let sealed_seg = j.rotate().unwrap();
        let mut sealed = Sealed::default();
        sealed.push(sealed_seg.clone());
        sealed.delete_finished();
        assert!(sealed_seg.path.exists(), "events still pending");
        // An append after the seal lands in the next segment.
        let (next, r) = j.append(&event("late"));
        r.unwrap();
        assert!(
            !Arc::ptr_eq(&next, &sealed_seg),
            "a sealed segment takes no more events"
        );
        next.done();
        sealed_seg.done();
        sealed_seg.done();
        sealed.delete_finished();
        assert!(
            !sealed_seg.path.exists(),
            "deleted once all its events are stored"
        );

        // A process that stops without storing leaves its segment for the next start.
        let (_, r) = j.append(&event("c"));
        r.unwrap();
        drop(j);
        let (j2, recovered) = Journal::open(&spool, |tail: &str| {
            dir.path().join(format!("events.jsonl.replay-{tail}"))
        })
        .unwrap();
        assert_eq!(recovered, 1);
        let replays: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains(".replay-"))
            .collect();
        assert_eq!(replays.len(), 1);
        assert!(std::fs::read_to_string(&replays[0])
            .unwrap()
            .contains("\"c\""));
        let mut sealed = Sealed::default();
        sealed.close(&j2);
        assert!(
            !std::fs::read_dir(dir.path()).unwrap().any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("events.jsonl.journal-")),
            "an empty journal is removed at a clean stop"
        );
    }
}
