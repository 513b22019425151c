//! Tenant isolation for the resources Google keeps between requests: files, cached contents,
//! batches, long-running operations (Veo), file search stores, tuned models. Every org shares
//! the provider key, so Google sees one project and would show any org everything. The gateway
//! records which org created each resource (from the creation response), and refuses an org any
//! resource it does not own: by path (get, delete, cancel, download, poll), in a request body
//! (`fileUri`, `cachedContent`, a batch's input file, a Vertex operation name), and in listings,
//! which are filtered to the org's own.
//!
//! A resource is identified by its collection and id (`files/abc123`, `operations/op1`), whatever
//! prefix its full name carries (`models/veo-3.1/operations/op1`,
//! `projects/p/locations/l/cachedContents/c1`). The first collection in a name governs: the
//! operations and documents of a file search store belong to whoever owns the store.
//!
//! [`Owners`] is the in-memory registry the proxy reads (no I/O on the request path); claims
//! are written to the store in the background and other gateways' claims loaded from it.

use std::borrow::Cow;
use std::sync::Mutex;

use dashmap::DashMap;
use store::Store;

use crate::metering::scan::{decode_json_string, Found, Key, Scanner, Watch};
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
    /// Lists a collection: the response is filtered to the org's own.
    List,
    /// Creates resources: the names in a successful response become the org's.
    Create,
}

impl Access {
    /// Whether a successful response's resource names are claimed for the org.
    pub fn claims(&self) -> bool {
        matches!(self, Access::One(_) | Access::Create)
    }
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
/// `None` when it names none.
pub fn key_of_path(path: &str) -> Option<String> {
    let mut segs = path.split(['/', '?']).filter(|s| !s.is_empty());
    while let Some(seg) = segs.next() {
        if let Some(c) = collection(seg) {
            return segs.next().and_then(id_of).map(|id| format!("{c}/{id}"));
        }
    }
    None
}

/// The resource a reference in a request body names: a relative name
/// (`files/abc`, `projects/p/locations/l/cachedContents/c`) or a Google URL
/// (`https://generativelanguage.googleapis.com/v1beta/files/abc`). Other URLs (Cloud Storage,
/// YouTube, the web) are not Google-held resources of this project and name none.
pub fn key_of_reference(s: &str) -> Option<String> {
    let s = s.trim();
    match s.split_once("://") {
        None => key_of_path(s),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => {
            let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
            let host = host.rsplit('@').next().unwrap_or(host);
            let host = host.split(':').next().unwrap_or(host);
            host.to_ascii_lowercase()
                .ends_with(".googleapis.com")
                .then(|| key_of_path(path))
                .flatten()
        }
        Some(_) => None,
    }
}

/// How a request touches owned resources, from its method, path and route.
pub fn access(method: &str, path: &str, route: &Route) -> Access {
    match route.operation {
        // Submitting a video or a batch on a model creates an operation or a batch.
        Operation::PredictLongRunning => return Access::Create,
        Operation::Batch if route.model.is_some() => return Access::Create,
        // Vertex's poll names the operation in its body (checked as a reference).
        Operation::FetchPredictOperation => return Access::Create,
        _ => {}
    }
    let mut segs = path.split('/').filter(|s| !s.is_empty()).peekable();
    while let Some(seg) = segs.next() {
        let (name, method_suffix) = match seg.split_once(':') {
            Some((n, m)) => (n, Some(m)),
            None => (seg, None),
        };
        let Some(c) = collection(name) else {
            continue;
        };
        if method_suffix.is_some() {
            // `files:register` and the like: a method on the collection creates.
            return Access::Create;
        }
        return match segs.next() {
            Some(next) => match id_of(next) {
                Some(id) => Access::One(format!("{c}/{id}")),
                // Not an id Google issues: no org owns it.
                None => Access::One(format!("{c}/{next}")),
            },
            None if method == "GET" => Access::List,
            None => Access::Create,
        };
    }
    Access::Free
}

/// Response keys whose string values name resources: a resource's own `name`, a generated
/// video's or uploaded file's `uri`, a batch's `responsesFile`.
static RESPONSE_KEYS: &[Key] = &[
    Key {
        name: b"name",
        watch: Watch::Value,
    },
    Key {
        name: b"uri",
        watch: Watch::Value,
    },
    Key {
        name: b"responsesFile",
        watch: Watch::Value,
    },
];

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
            out.extend(
                items
                    .iter()
                    .filter_map(|v| v.as_str())
                    .filter_map(key_of_reference),
            );
            Ok(())
        }
        // A string's raw contents (the scanner strips the quotes), or a scalar (no reference).
        _ => {
            let s: Cow<'_, str> = match std::str::from_utf8(raw) {
                Ok(s) if !raw.contains(&b'\\') => Cow::Borrowed(s),
                _ => Cow::Owned(decode_json_string(raw).ok_or(Unreadable)?),
            };
            out.extend(key_of_reference(&s));
            Ok(())
        }
    }
}

/// Reads the resource names in a response to a request that creates or reads owned resources.
#[derive(Debug)]
pub struct ClaimScanner {
    scanner: Scanner,
    /// Resources named so far.
    pub found: Vec<String>,
}

impl Default for ClaimScanner {
    fn default() -> Self {
        ClaimScanner {
            scanner: Scanner::new(RESPONSE_KEYS, 0),
            found: Vec::new(),
        }
    }
}

impl ClaimScanner {
    /// Feeds a chunk of the response body.
    pub fn feed(&mut self, chunk: &[u8]) {
        let found = &mut self.found;
        self.scanner.feed(chunk, &mut |f| {
            if let Found::Value {
                bytes,
                truncated: false,
                ..
            } = f
            {
                if matches!(bytes.first(), Some(b'{' | b'[')) {
                    return;
                }
                let s = match std::str::from_utf8(bytes) {
                    Ok(s) if !bytes.contains(&b'\\') => Some(s.to_owned()),
                    _ => decode_json_string(bytes),
                };
                if let Some(key) = s.as_deref().and_then(key_of_reference) {
                    if !found.contains(&key) {
                        found.push(key);
                    }
                }
            }
        });
    }
}

/// A listing filtered to the resources `owns` accepts: every array of objects at the top of the
/// response keeps the objects whose `name` it owns. `None` if the body is not a JSON object.
pub fn filter_listing(body: &[u8], mut owns: impl FnMut(&str) -> bool) -> Option<Vec<u8>> {
    let mut v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let obj = v.as_object_mut()?;
    for (_, field) in obj.iter_mut() {
        if let Some(items) = field.as_array_mut() {
            items.retain(|item| {
                let Some(o) = item.as_object() else {
                    return true;
                };
                match o.get("name").and_then(|n| n.as_str()) {
                    Some(name) => key_of_path(name).is_some_and(|k| owns(&k)),
                    None => true,
                }
            });
        }
    }
    serde_json::to_vec(&v).ok()
}

/// Which org owns each resource, in memory; claims not yet stored wait in `pending`.
#[derive(Debug, Default)]
pub struct Owners {
    map: DashMap<Box<str>, i64>,
    pending: Mutex<Vec<(String, i64)>>,
    /// The last store row loaded.
    loaded_up_to: Mutex<i64>,
    /// Whether the store has been read once (until then, every resource is refused).
    loaded: std::sync::atomic::AtomicBool,
}

impl Owners {
    /// The org that owns `resource`, if any.
    pub fn owner(&self, resource: &str) -> Option<i64> {
        self.map.get(resource).map(|e| *e)
    }

    /// Whether `org` owns `resource`.
    pub fn owns(&self, org: i64, resource: &str) -> bool {
        self.owner(resource) == Some(org)
    }

    /// Records `org` as the owner of `resource` unless someone owns it already; true if `org`
    /// owns it afterwards.
    pub fn claim(&self, resource: &str, org: i64) -> bool {
        match self.map.entry(resource.into()) {
            dashmap::Entry::Occupied(e) => *e.get() == org,
            dashmap::Entry::Vacant(e) => {
                e.insert(org);
                if let Ok(mut p) = self.pending.lock() {
                    p.push((resource.to_owned(), org));
                }
                true
            }
        }
    }

    /// Claims waiting to be written to the store.
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

    /// Whether the store has been read at least once.
    pub fn loaded(&self) -> bool {
        self.loaded.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Writes pending claims to the store (kept for the next try if it fails).
    pub async fn flush(&self, store: &Store) -> Result<(), store::StoreError> {
        let batch = match self.pending.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => return Ok(()),
        };
        if batch.is_empty() {
            return Ok(());
        }
        if let Err(e) = store.claim_resources(&batch).await {
            if let Ok(mut p) = self.pending.lock() {
                let newer = std::mem::replace(&mut *p, batch);
                p.extend(newer);
            }
            return Err(e);
        }
        Ok(())
    }

    /// Writes pending claims, then loads the claims stored since the last load (other gateways',
    /// and the store's verdict where two claimed the same resource at once).
    pub async fn sync(&self, store: &Store) -> Result<(), store::StoreError> {
        self.flush(store).await?;
        let mut after = self.loaded_up_to.lock().map(|g| *g).unwrap_or(0);
        loop {
            let rows = store.resource_owners_after(after, LOAD_PAGE).await?;
            let n = rows.len();
            for r in rows {
                after = after.max(r.id);
                self.map.insert(r.resource.into_boxed_str(), r.org_id);
            }
            if let Ok(mut g) = self.loaded_up_to.lock() {
                *g = after;
            }
            if (n as i64) < LOAD_PAGE {
                break;
            }
        }
        self.loaded
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
