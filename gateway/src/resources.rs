//! Tenant isolation for the resources Google keeps between requests: files, cached contents,
//! batches, long-running operations (Veo), file search stores, tuned models. Every org shares
//! the provider key, so Google sees one project and would show any org everything. The gateway
//! records which org created each resource (from the names in Google's answers), and refuses an
//! org any resource it does not own: by path (get, delete, cancel, download, poll), in a request
//! body (`fileUri`, `cachedContent`, a batch's input file, a Vertex operation name), and in
//! listings, which `listing` answers with the org's own entries.
//!
//! A resource is identified by its collection and id (`files/abc123`, `operations/op1`), whatever
//! prefix its full name carries (`models/veo-3.1/operations/op1`,
//! `projects/p/locations/l/cachedContents/c1`). The first collection in a name governs: the
//! operations and documents of a file search store belong to whoever owns the store.
//!
//! [`Owners`] is the in-memory registry the proxy reads (no I/O on the request path); claims
//! are written to the store in the background and other gateways' claims loaded from it.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Mutex;

use dashmap::DashMap;
use store::{ResourceChange, Store};

use crate::metering::scan::decode_json_string;
use crate::route::{Operation, Route};

/// Collections whose members belong to the org that created them.
pub const COLLECTIONS: &[&str] = &[
    "files",
    "cachedContents",
    "batches",
    "operations",
    "batchPredictionJobs",
    "fileSearchStores",
    "tunedModels",
    "corpora",
    "generatedFiles",
];

/// How long a resource's owner is kept, per collection: past Google's own retention (files
/// and generated files are deleted after 48 hours, operations' results after two days), with
/// a margin. Other collections (cached contents, stores, tuned models) last until deleted.
pub const RETENTION: &[(&str, std::time::Duration)] = &[
    ("files", DAY.saturating_mul(7)),
    ("generatedFiles", DAY.saturating_mul(7)),
    ("operations", DAY.saturating_mul(30)),
    ("batches", DAY.saturating_mul(90)),
    ("batchPredictionJobs", DAY.saturating_mul(90)),
];
const DAY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// How often owners past their retention are forgotten.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Rows loaded from the store per query.
const LOAD_PAGE: i64 = 10_000;

/// What a request does with owned resources.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Access {
    /// Nothing: generation, models, counting tokens.
    #[default]
    Free,
    /// Names one resource in its path (get, delete, patch, cancel, download, poll, upload into).
    One(String),
    /// Lists a collection: answered with the org's own entries (`listing`).
    List,
    /// Creates resources: the names in a successful response become the org's.
    Create,
    /// Reads a resource its body names (Vertex's `:fetchPredictOperation`, checked as a
    /// reference): what the response names becomes the org's unless someone owns it.
    Poll,
}

fn collection(seg: &str) -> Option<&str> {
    COLLECTIONS.iter().copied().find(|c| *c == seg)
}

/// The id part of a path segment: up to a `:method`, only the characters Google's ids use.
fn id_of(seg: &str) -> Option<&str> {
    let id = seg.split(':').next().unwrap_or("");
    (!id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
    .then_some(id)
}

/// The resource a relative name or path names: the first known collection followed by an id.
/// `Ok(None)` when it names none; `Err` when a collection is followed by something that is not
/// an id Google issues (`files/abc%20`, `files/abc#x`), which Google might still resolve.
pub fn key_of_name(path: &str) -> Result<Option<String>, Unreadable> {
    let mut segs = path.split('/').filter(|s| !s.is_empty());
    while let Some(seg) = segs.next() {
        if let Some(c) = collection(seg) {
            return match segs.next() {
                None => Ok(None),
                Some(next) => id_of(next)
                    .map(|id| Some(format!("{c}/{id}")))
                    .ok_or(Unreadable),
            };
        }
    }
    Ok(None)
}

/// [`key_of_name`], for names that come from Google (a listing's entries).
pub fn key_of_path(path: &str) -> Option<String> {
    key_of_name(path).ok().flatten()
}

/// The resource a reference in a request body names: a relative name
/// (`files/abc`, `projects/p/locations/l/cachedContents/c`) or a URL of the Developer API or
/// Vertex AI ([`is_google_api_host`], `http` too). Other URLs (Cloud Storage, YouTube, the web)
/// are not Google-held resources of this project and name none. Percent-encoding in a name
/// Google would read is unreadable: Google may decode it (`%66iles`) where this reading would
/// not.
pub fn key_of_reference(s: &str) -> Result<Option<String>, Unreadable> {
    let s = s.trim();
    let name = match s.split_once("://") {
        None => s,
        Some((scheme, rest)) => {
            if !scheme.eq_ignore_ascii_case("https") && !scheme.eq_ignore_ascii_case("http") {
                return Ok(None);
            }
            let (authority, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
            let host = authority.rsplit('@').next().unwrap_or(authority);
            let host = host.split(':').next().unwrap_or(host);
            if !is_google_api_host(&host.trim_end_matches('.').to_ascii_lowercase()) {
                return Ok(None);
            }
            // A URL's query and fragment are not part of the name.
            path.split(['?', '#']).next().unwrap_or("")
        }
    };
    if s.contains('%') {
        return Err(Unreadable);
    }
    key_of_name(name)
}

/// The hosts that serve this project's resources: the Developer API and Vertex AI (global and
/// regional). Cloud Storage (`storage.googleapis.com`) holds the customer's own objects.
fn is_google_api_host(host: &str) -> bool {
    host == "generativelanguage.googleapis.com"
        || host == "aiplatform.googleapis.com"
        || host.ends_with("-aiplatform.googleapis.com")
}

/// How a request touches owned resources, from its method, path and route.
pub fn access(method: &str, path: &str, route: &Route) -> Access {
    let mut segs = path.split('/').filter(|s| !s.is_empty());
    while let Some(seg) = segs.next() {
        // `files`, or a method on the collection (`files:register`).
        let Some(c) = COLLECTIONS.iter().copied().find(|c| {
            seg.starts_with(c) && matches!(seg.as_bytes().get(c.len()), None | Some(b':'))
        }) else {
            continue;
        };
        if seg.len() > c.len() {
            // `files:register` and the like: a method on the collection creates.
            return Access::Create;
        }
        return match segs.next() {
            // A method on an owned resource (a tuned model's `:predictLongRunning` too) is
            // checked against the resource first.
            Some(next) => match id_of(next) {
                Some(id) => Access::One(format!("{c}/{id}")),
                // Not an id Google issues: no org owns it.
                None => Access::One(format!("{c}/{next}")),
            },
            None if method == "GET" => Access::List,
            None => Access::Create,
        };
    }
    match route.operation {
        // Submitting a video or a batch on a model creates an operation or a batch.
        Operation::PredictLongRunning => Access::Create,
        Operation::Batch if route.model.is_some() => Access::Create,
        // Vertex's poll names the operation in its body (checked as a reference).
        Operation::FetchPredictOperation => Access::Poll,
        _ => Access::Free,
    }
}

/// Why a path is refused before anything else: a form whose meaning Google might resolve
/// differently from the checks (percent-encoding, empty or dot segments, parameters), or an
/// API the gateway cannot meter or isolate.
pub fn unsupported_path(path: &str) -> Option<&'static str> {
    // One pass over the bytes: this runs for every request.
    let b = path.as_bytes();
    let mut start = 0;
    for i in 0..=b.len() {
        match b.get(i).copied() {
            Some(b'%' | b';') => return Some(ENCODED_PATH),
            Some(b'/') | None => {
                let seg = &b[start..i];
                if seg.is_empty() && start > 0 && i < b.len() {
                    return Some(ENCODED_PATH); // `//`
                }
                if seg == b"." || seg == b".." {
                    return Some("paths with '.' or '..' segments are not accepted");
                }
                if seg.starts_with(b"interactions") && matches!(seg.get(12), None | Some(b':')) {
                    return Some("the Interactions API is not served through Tollgate yet: its usage would not be metered nor its resources kept per organization");
                }
                start = i + 1;
            }
            Some(_) => {}
        }
    }
    None
}

const ENCODED_PATH: &str = "paths with percent-encoding, ';' or empty segments are not accepted: send the path as Google's SDKs do";

/// Headers that make Google treat a request as another method (a POST answered as a GET
/// listing would pass unfiltered): refused.
pub const METHOD_OVERRIDES: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Whether the request carries a [`METHOD_OVERRIDES`] header (one pass over the names, no
/// lookups: this runs for every request).
pub fn overrides_method(headers: &http::HeaderMap) -> bool {
    headers
        .keys()
        .any(|k| k.as_str().starts_with("x-") && METHOD_OVERRIDES.contains(&k.as_str()))
}

/// A reference value that cannot be checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a resource reference that cannot be read")]
pub struct Unreadable;

/// The resources a watched request value references: a string, or an array of strings
/// (`fileSearchStoreNames`). An object names none (a response schema's property that happens
/// to be called `fileUri`). `Err` when the value cannot be read (cut at the capture bound, or
/// not valid JSON): such a body is refused rather than let through unchecked.
pub fn references(raw: &[u8], truncated: bool, out: &mut Vec<String>) -> Result<(), Unreadable> {
    match raw.first() {
        Some(b'{') => Ok(()),
        _ if truncated => Err(Unreadable),
        Some(b'[') => {
            let items: Vec<serde_json::Value> =
                serde_json::from_slice(raw).map_err(|_| Unreadable)?;
            for item in items.iter().filter_map(|v| v.as_str()) {
                out.extend(key_of_reference(item)?);
            }
            Ok(())
        }
        // A string's raw contents (the scanner strips the quotes), or a scalar (no reference).
        _ => {
            let s: Cow<'_, str> = match std::str::from_utf8(raw) {
                Ok(s) if !raw.contains(&b'\\') => Cow::Borrowed(s),
                _ => Cow::Owned(decode_json_string(raw).ok_or(Unreadable)?),
            };
            out.extend(key_of_reference(&s)?);
            Ok(())
        }
    }
}

/// The resources a successful response to a request that creates or reads owned resources
/// names, at the places Google puts them (not anywhere: a model's function call in a batch's
/// output may carry a `name` too): the resource itself (`name`), an upload's `file.name`,
/// `files:register`'s `files[].name`, a finished Veo operation's videos, a batch's
/// `responsesFile`.
pub fn claimed_names(body: &[u8]) -> Vec<String> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    let mut add = |s: Option<&serde_json::Value>| {
        if let Some(k) = s
            .and_then(|s| s.as_str())
            .and_then(|s| key_of_reference(s).ok().flatten())
        {
            if !out.contains(&k) {
                out.push(k);
            }
        }
    };
    add(v.get("name"));
    add(v.pointer("/file/name"));
    let list = |p: &str| {
        v.pointer(p)
            .and_then(|a| a.as_array())
            .map(|a| a.as_slice())
            .unwrap_or_default()
    };
    for f in list("/files") {
        add(f.get("name"));
    }
    for sample in list("/response/generateVideoResponse/generatedSamples") {
        add(sample.pointer("/video/uri"));
    }
    add(v.pointer("/response/responsesFile"));
    add(v.pointer("/metadata/output/responsesFile"));
    out
}

/// Which org owns each resource, in memory; changes not yet stored wait in `pending`, and in
/// the claims journal when there is one (so a killed process does not forget them).
#[derive(Debug, Default)]
pub struct Owners {
    journal: Option<ClaimsJournal>,
    /// Resource → (org, when recorded, Unix seconds).
    map: DashMap<Box<str>, (i64, i64)>,
    /// When owners past their retention were last forgotten.
    pruned: Mutex<Option<std::time::Instant>>,
    pending: Mutex<Vec<ResourceChange>>,
    /// The last store row loaded.
    loaded_up_to: Mutex<i64>,
}

/// Rows re-read below the last one loaded at each sync: PostgreSQL hands out ids when rows
/// are inserted, not when they commit, so a row may appear after one with a higher id.
const RELOAD_OVERLAP: i64 = 1_000;

impl Owners {
    /// The org that owns `resource`, if any.
    pub fn owner(&self, resource: &str) -> Option<i64> {
        self.map.get(resource).map(|e| e.0)
    }

    /// Whether `org` owns `resource`.
    pub fn owns(&self, org: i64, resource: &str) -> bool {
        self.owner(resource) == Some(org)
    }

    /// Records `org` as the owner of `resource` unless someone owns it already; true if `org`
    /// owns it afterwards. For names read from a resource the org already owns (a finished
    /// operation's videos).
    pub fn claim(&self, resource: &str, org: i64) -> bool {
        match self.map.entry(resource.into()) {
            dashmap::Entry::Occupied(e) => e.get().0 == org,
            dashmap::Entry::Vacant(e) => {
                e.insert((org, now_secs()));
                self.push(ResourceChange::Claim(resource.to_owned(), org));
                true
            }
        }
    }

    /// Records `org` as the owner of a resource Google just created for it, replacing any
    /// earlier owner of the name (a deleted resource whose name was chosen again).
    pub fn take_over(&self, resource: &str, org: i64) {
        self.map.insert(resource.into(), (org, now_secs()));
        // Stored even when memory already says so: another gateway may have released it.
        self.push(ResourceChange::TakeOver(resource.to_owned(), org));
    }

    /// Forgets `org`'s resource after Google deleted it (its name may be chosen again).
    pub fn release(&self, resource: &str, org: i64) {
        if self.map.remove_if(resource, |_, o| o.0 == org).is_some() {
            self.push(ResourceChange::Release(resource.to_owned(), org));
        }
    }

    fn push(&self, change: ResourceChange) {
        if let Ok(mut p) = self.pending.lock() {
            if let Some(j) = &self.journal {
                j.append(&change);
            }
            p.push(change);
        }
    }

    /// Owners with a journal of their unstored changes at `path`; changes an earlier process
    /// journaled but did not store are applied and wait to be stored again.
    pub fn with_journal(path: PathBuf) -> std::io::Result<Owners> {
        let (journal, left) = ClaimsJournal::open(path)?;
        let owners = Owners {
            journal: Some(journal),
            ..Owners::default()
        };
        let now = now_secs();
        for change in &left {
            match change {
                ResourceChange::Claim(r, org) => {
                    owners.map.entry(r.as_str().into()).or_insert((*org, now));
                }
                ResourceChange::TakeOver(r, org) => {
                    owners.map.insert(r.as_str().into(), (*org, now));
                }
                ResourceChange::Release(r, org) => {
                    owners.map.remove_if(r.as_str(), |_, o| o.0 == *org);
                }
            }
        }
        if !left.is_empty() {
            tracing::warn!(
                changes = left.len(),
                "the last run stopped before storing some resource ownerships; storing them now"
            );
        }
        if let Ok(mut p) = owners.pending.lock() {
            *p = left;
        }
        Ok(owners)
    }

    /// Changes waiting to be written to the store.
    pub fn pending(&self) -> usize {
        self.pending.lock().map_or(0, |p| p.len())
    }

    /// Resources known.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none are known.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Writes pending changes to the store, in order (kept for the next try if it fails).
    pub async fn flush(&self, store: &Store) -> Result<(), store::StoreError> {
        let (batch, journaled) = match self.pending.lock() {
            Ok(mut p) => (
                std::mem::take(&mut *p),
                self.journal.as_ref().and_then(ClaimsJournal::seal),
            ),
            Err(_) => return Ok(()),
        };
        if batch.is_empty() {
            return Ok(());
        }
        // Handed back unless stored: on an error, and when this future is dropped mid-write
        // (a stop aborts the sync task), so the next flush, and its journal files, cover it.
        let mut held = HandBack {
            owners: self,
            batch: Some(batch),
        };
        let written = store
            .record_resource_changes(held.batch.as_deref().unwrap_or_default())
            .await;
        written?;
        held.batch = None;
        if let (Some(j), Some(upto)) = (&self.journal, journaled) {
            j.stored(upto);
        }
        Ok(())
    }

    /// Writes pending changes, then loads the owners stored since the last load (other
    /// gateways' claims, and the store's verdict where two claimed the same name at once).
    pub async fn sync(&self, store: &Store) -> Result<(), store::StoreError> {
        self.flush(store).await?;
        let last = self.loaded_up_to.lock().map(|g| *g).unwrap_or(0);
        let mut after = (last - RELOAD_OVERLAP).max(0);
        let mut max = last;
        loop {
            let rows = store.resource_owners_after(after, LOAD_PAGE).await?;
            let n = rows.len();
            for r in rows {
                after = r.id;
                max = max.max(r.id);
                let since = r.created_at.timestamp();
                match self.map.entry(r.resource.into_boxed_str()) {
                    // A take-over recorded here after that row (re-read in the overlap): the
                    // newer owner stays.
                    dashmap::Entry::Occupied(e) if e.get().1 > since => {}
                    dashmap::Entry::Occupied(mut e) => {
                        e.insert((r.org_id, since));
                    }
                    dashmap::Entry::Vacant(e) => {
                        e.insert((r.org_id, since));
                    }
                }
            }
            if (n as i64) < LOAD_PAGE {
                break;
            }
        }
        if let Ok(mut g) = self.loaded_up_to.lock() {
            *g = max;
        }
        let due = self
            .pruned
            .lock()
            .map(|p| p.is_none_or(|at| at.elapsed() >= PRUNE_EVERY))
            .unwrap_or(false);
        if due {
            let now = chrono::Utc::now();
            for (collection, keep) in RETENTION {
                let keep = chrono::Duration::from_std(*keep).unwrap_or(chrono::Duration::MAX);
                store.prune_resource_owners(collection, now - keep).await?;
            }
            self.prune(now.timestamp());
            if let Ok(mut p) = self.pruned.lock() {
                *p = Some(std::time::Instant::now());
            }
        }
        Ok(())
    }

    /// Forgets, in memory, owners recorded longer ago than their collection's [`RETENTION`].
    pub fn prune(&self, now_secs: i64) {
        self.map.retain(|resource, (_, since)| {
            let collection = resource.split('/').next().unwrap_or("");
            RETENTION
                .iter()
                .find(|(c, _)| *c == collection)
                .is_none_or(|(_, keep)| now_secs - *since < keep.as_secs() as i64)
        });
    }
}

/// Changes taken for a flush, put back in front of newer ones unless the flush stored them.
struct HandBack<'a> {
    owners: &'a Owners,
    batch: Option<Vec<ResourceChange>>,
}

impl Drop for HandBack<'_> {
    fn drop(&mut self) {
        if let (Some(batch), Ok(mut p)) = (self.batch.take(), self.owners.pending.lock()) {
            let newer = std::mem::replace(&mut *p, batch);
            p.extend(newer);
        }
    }
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The journal of ownership changes not yet stored: one JSON line each, appended to `path`
/// (under the pending list's lock; changes are rare, a create or a delete). A flush seals the
/// file (renamed `<path>.<seq>`); once the store has the changes, every sealed file up to it is
/// deleted. A start reads what is left, oldest first.
#[derive(Debug)]
struct ClaimsJournal {
    path: PathBuf,
    file: Mutex<Option<std::fs::File>>,
    next_seq: std::sync::atomic::AtomicU64,
}

impl ClaimsJournal {
    fn open(path: PathBuf) -> std::io::Result<(ClaimsJournal, Vec<ResourceChange>)> {
        let dir = path.parent().unwrap_or_else(|| std::path::Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut sealed = Self::sealed_files(&path)?;
        sealed.sort();
        let next_seq = sealed.last().map_or(0, |(seq, _)| seq + 1);
        let mut left = Vec::new();
        for file in sealed.iter().map(|(_, p)| p).chain([&path]) {
            let text = match std::fs::read_to_string(file) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            // A torn last line (a crash mid-append) is skipped.
            left.extend(
                text.lines()
                    .filter_map(|l| serde_json::from_str::<ResourceChange>(l).ok()),
            );
        }
        let journal = ClaimsJournal {
            path,
            file: Mutex::new(None),
            next_seq: next_seq.into(),
        };
        // What was left becomes the current file, in order, before the older files go.
        if left.is_empty() {
            match std::fs::remove_file(&journal.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        } else {
            let mut text = Vec::new();
            for change in &left {
                serde_json::to_writer(&mut text, change).map_err(std::io::Error::other)?;
                text.push(b'\n');
            }
            let tmp = journal.path.with_extension("rewrite");
            std::fs::write(&tmp, &text)?;
            std::fs::rename(&tmp, &journal.path)?;
        }
        for (_, p) in &sealed {
            std::fs::remove_file(p)?;
        }
        Ok((journal, left))
    }

    fn sealed_files(path: &std::path::Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
        let dir = path.parent().unwrap_or_else(|| std::path::Path::new("."));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|p| {
                let f = p.file_name()?.to_string_lossy().into_owned();
                let seq = f.strip_prefix(&format!("{name}."))?.parse::<u64>().ok()?;
                Some((seq, p))
            })
            .collect())
    }

    fn append(&self, change: &ResourceChange) {
        let written = (|| -> std::io::Result<()> {
            let mut line = serde_json::to_vec(change).map_err(std::io::Error::other)?;
            line.push(b'\n');
            let mut guard = self
                .file
                .lock()
                .map_err(|_| std::io::Error::other("claims journal lock poisoned"))?;
            if guard.is_none() {
                *guard = Some(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&self.path)?,
                );
            }
            let file = guard
                .as_mut()
                .ok_or_else(|| std::io::Error::other("claims journal not open"))?;
            std::io::Write::write_all(file, &line)
        })();
        if let Err(e) = written {
            tracing::error!(error = %e, file = %self.path.display(), "resource ownership not journaled: it would not survive a crash");
        }
    }

    /// Closes the current file under a sealed name; returns its number (none if it is empty).
    fn seal(&self) -> Option<u64> {
        let mut guard = self.file.lock().ok()?;
        if guard.take().is_none() && !self.path.exists() {
            return None;
        }
        let seq = self
            .next_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sealed = self.path.with_file_name(format!(
            "{}.{seq}",
            self.path.file_name()?.to_string_lossy()
        ));
        match std::fs::rename(&self.path, &sealed) {
            Ok(()) => Some(seq),
            Err(e) => {
                tracing::warn!(error = %e, "cannot seal the claims journal");
                None
            }
        }
    }

    /// The store has every change up to sealed file `upto`: those files go.
    fn stored(&self, upto: u64) {
        let Ok(files) = Self::sealed_files(&self.path) else {
            return;
        };
        for (_, p) in files.into_iter().filter(|(seq, _)| *seq <= upto) {
            if let Err(e) = std::fs::remove_file(&p) {
                tracing::warn!(error = %e, file = %p.display(), "cannot remove a stored claims journal file");
            }
        }
    }
}

#[cfg(test)]
mod tests;
