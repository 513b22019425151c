//! Live configuration: an immutable snapshot of keys, organizations and disabled feature flags,
//! swapped atomically by a background refresh loop. The request path only loads the current
//! snapshot (one atomic increment) and reads hash maps; it never touches the store.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use store::{Feature, KeyKind, Store};

use crate::limits::{Kind, OrgLimits, Rule};

/// A SHA-256 digest of a gateway key.
pub type KeyHash = [u8; 32];

/// What the gateway knows about a key.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    /// The key's id.
    pub key_id: i64,
    /// The org it belongs to.
    pub org_id: i64,
    /// App or service.
    pub kind: KeyKind,
    /// The user it is attributed to.
    pub user_id: Option<i64>,
    /// Display prefix (safe to log).
    pub prefix: Arc<str>,
    /// Revoked keys are kept to answer "revoked" rather than "unknown".
    pub revoked: bool,
    /// The organizations a service key may name besides its own.
    pub acts_for: store::ActsFor,
}

/// What the gateway knows about an org.
#[derive(Debug, Clone)]
pub struct OrgEntry {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: Arc<str>,
}

/// A key as the snapshot keeps it: hash (hex), never the key.
#[derive(Debug, Serialize, Deserialize)]
struct KeyRow {
    id: i64,
    org_id: i64,
    kind: KeyKind,
    user_id: Option<i64>,
    prefix: String,
    hash: String,
    revoked: bool,
    /// `api_keys.acts_for` (absent from copies saved before it existed: own org only).
    #[serde(default)]
    acts_for: String,
}

/// The store rows a snapshot is built from; also what is saved to the last-known-good file, so
/// a gateway can start (and identify requests) while the store is down. Hashes only, no keys.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SnapshotRows {
    orgs: Vec<(i64, String)>,
    keys: Vec<KeyRow>,
    disabled: Vec<(i64, Feature)>,
    /// `(org, limit type, value, alert threshold)`, enabled limits only
    limits: Vec<(i64, store::LimitType, i64, i32)>,
}

impl SnapshotRows {
    /// Adds an org (for benches and tools that build a snapshot without a store).
    pub fn add_org(&mut self, id: i64, name: &str) {
        self.orgs.push((id, name.to_owned()));
    }

    /// Adds an active key given in plaintext (hashed here).
    pub fn add_key(&mut self, id: i64, org_id: i64, kind: KeyKind, key: &str) {
        let hash = hex::encode(crate::identity::hash(key));
        self.keys.push(KeyRow {
            id,
            org_id,
            kind,
            user_id: None,
            prefix: store::key_prefix(key),
            hash,
            revoked: false,
            acts_for: String::new(),
        });
    }

    /// Adds an enabled limit.
    pub fn add_limit(
        &mut self,
        org_id: i64,
        limit_type: store::LimitType,
        value: i64,
        alert_threshold: i32,
    ) {
        self.limits
            .push((org_id, limit_type, value, alert_threshold));
    }

    /// Reads everything the gateway needs from the store.
    pub async fn load(store: &Store) -> Result<SnapshotRows, store::StoreError> {
        let orgs = store
            .list_orgs()
            .await?
            .into_iter()
            .map(|o| (o.id, o.name))
            .collect();
        let keys = store
            .all_keys()
            .await?
            .into_iter()
            .map(|k| KeyRow {
                revoked: k.revoked_at.is_some(),
                id: k.id,
                org_id: k.org_id,
                kind: k.kind,
                user_id: k.user_id,
                prefix: k.prefix,
                hash: k.key_hash,
                acts_for: k.acts_for,
            })
            .collect();
        let disabled = store
            .disabled_features()
            .await?
            .into_iter()
            .map(|f| (f.org_id, f.feature))
            .collect();
        let limits = store
            .all_limits()
            .await?
            .into_iter()
            .filter(|l| l.enabled)
            .map(|l| (l.org_id, l.limit_type, l.value, l.alert_threshold))
            .collect();
        Ok(SnapshotRows {
            orgs,
            keys,
            disabled,
            limits,
        })
    }
}

/// One consistent view of keys, orgs, flags and limits.
#[derive(Debug, Default)]
pub struct Snapshot {
    keys: HashMap<KeyHash, KeyEntry>,
    orgs: HashMap<i64, OrgEntry>,
    orgs_by_name: HashMap<Arc<str>, i64>,
    disabled: HashSet<(i64, Feature)>,
    limits: HashMap<i64, OrgLimits>,
    /// False for the empty snapshot a gateway starts with.
    loaded: bool,
}

impl Snapshot {
    /// Reads everything the gateway needs from the store.
    pub async fn load(store: &Store) -> Result<Snapshot, store::StoreError> {
        Ok(Snapshot::from_rows(&SnapshotRows::load(store).await?))
    }

    /// Builds the lookup tables.
    pub fn from_rows(rows: &SnapshotRows) -> Snapshot {
        let mut snap = Snapshot {
            loaded: true,
            ..Snapshot::default()
        };
        for (id, name) in &rows.orgs {
            let name: Arc<str> = name.as_str().into();
            snap.orgs_by_name.insert(name.clone(), *id);
            snap.orgs.insert(*id, OrgEntry { id: *id, name });
        }
        for k in &rows.keys {
            let mut hash = [0u8; 32];
            if hex::decode_to_slice(&k.hash, &mut hash).is_err() {
                continue; // not a key this version wrote; it can never match
            }
            let entry = KeyEntry {
                key_id: k.id,
                org_id: k.org_id,
                kind: k.kind,
                user_id: k.user_id,
                prefix: k.prefix.as_str().into(),
                revoked: k.revoked,
                acts_for: store::ActsFor::from_db(&k.acts_for),
            };
            snap.keys.insert(hash, entry);
        }
        snap.disabled.extend(rows.disabled.iter().copied());
        for (org, lt, value, alert_threshold) in &rows.limits {
            let k = Kind::from_limit_type(*lt);
            snap.limits.entry(*org).or_default().0[k as usize] = Some(Rule {
                value: *value,
                alert_threshold: *alert_threshold,
            });
        }
        snap
    }

    /// An org's enabled limits.
    pub fn limits(&self, org: i64) -> OrgLimits {
        self.limits.get(&org).copied().unwrap_or_default()
    }

    /// Whether this snapshot came from the store (or its saved copy).
    pub fn is_loaded(&self) -> bool {
        self.loaded
    }

    /// A key by its hash.
    pub fn key(&self, hash: &KeyHash) -> Option<&KeyEntry> {
        self.keys.get(hash)
    }

    /// An org by id.
    pub fn org(&self, id: i64) -> Option<&OrgEntry> {
        self.orgs.get(&id)
    }

    /// An org by id (all digits) or name.
    pub fn org_by_ref(&self, id_or_name: &str) -> Option<&OrgEntry> {
        if let Ok(id) = id_or_name.parse::<i64>() {
            return self.orgs.get(&id);
        }
        self.orgs_by_name
            .get(id_or_name)
            .and_then(|id| self.orgs.get(id))
    }

    /// Whether a feature is on for an org (on unless switched off).
    pub fn feature_enabled(&self, org_id: i64, feature: Feature) -> bool {
        !self.disabled.contains(&(org_id, feature))
    }

    /// Number of keys known (for metrics).
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }
}

/// The shared, swappable snapshot and when it was last refreshed.
pub struct LiveConfig {
    current: ArcSwap<Snapshot>,
    refreshed_at: ArcSwap<Option<Instant>>,
    /// Where the last-known-good rows are saved (none in tests that do not ask for it).
    saved_path: Option<std::path::PathBuf>,
    saved_digest: std::sync::Mutex<u64>,
    /// The store's config version the current snapshot was loaded at ([`NO_VERSION`] when it
    /// came from elsewhere: empty, the saved copy, or a test).
    version: AtomicI64,
    /// Held while a loaded snapshot is checked against `version` and put in place: refreshes
    /// can overlap (the beat and an explicit one), and an older load must not replace a newer.
    swapping: std::sync::Mutex<()>,
}

/// "The current snapshot was not loaded from the store at a known version."
const NO_VERSION: i64 = i64::MIN;

impl LiveConfig {
    /// Starts with an empty snapshot (every key unknown) until the first load succeeds.
    pub fn new() -> Self {
        Self::with_saved_copy(None)
    }

    /// Like [`LiveConfig::new`], saving each loaded snapshot's rows to `path`.
    pub fn with_saved_copy(path: Option<std::path::PathBuf>) -> Self {
        Self {
            current: ArcSwap::from_pointee(Snapshot::default()),
            refreshed_at: ArcSwap::from_pointee(None),
            saved_path: path,
            saved_digest: std::sync::Mutex::new(0),
            version: AtomicI64::new(NO_VERSION),
            swapping: std::sync::Mutex::new(()),
        }
    }

    /// Loads the saved copy (when the store is unreachable at start-up). True when one was found.
    pub fn load_saved_copy(&self) -> bool {
        let Some(path) = &self.saved_path else {
            return false;
        };
        let rows: SnapshotRows = match std::fs::read(path).map(|b| serde_json::from_slice(&b)) {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => {
                tracing::warn!(file = %path.display(), error = %e, "the saved copy of the live config is unreadable");
                return false;
            }
            Err(_) => return false,
        };
        self.current.store(Arc::new(Snapshot::from_rows(&rows)));
        self.version.store(NO_VERSION, Ordering::Relaxed);
        tracing::warn!(file = %path.display(), "store unreachable: using the saved copy of keys, flags and limits");
        true
    }

    fn save(&self, rows: &SnapshotRows) {
        let Some(path) = &self.saved_path else { return };
        let Ok(json) = serde_json::to_vec(rows) else {
            return;
        };
        let digest = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            json.hash(&mut h);
            h.finish()
        };
        let Ok(mut last) = self.saved_digest.lock() else {
            return;
        };
        if *last == digest {
            return;
        }
        let tmp = path.with_extension("tmp");
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| std::fs::write(&tmp, &json))
            .and_then(|_| std::fs::rename(&tmp, path));
        match written {
            Ok(()) => *last = digest,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot save the live config copy")
            }
        }
    }

    /// The current snapshot.
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// Replaces the snapshot.
    pub fn store(&self, snap: Snapshot) {
        self.current.store(Arc::new(snap));
        self.version.store(NO_VERSION, Ordering::Relaxed);
        self.refreshed_at.store(Arc::new(Some(Instant::now())));
    }

    /// Time since the last successful refresh, if any.
    pub fn age(&self) -> Option<Duration> {
        (**self.refreshed_at.load()).map(|t| t.elapsed())
    }

    /// Syncs with the store once: reads its config version and reloads keys, orgs, flags and
    /// limits only when the version moved since the current snapshot was loaded (one small
    /// query otherwise, however many keys there are). Logs and keeps the old snapshot on failure.
    pub async fn refresh(&self, store: &Store) -> bool {
        // The version is read before the rows: a change committed in between is loaded now and
        // loaded again at the next refresh (its version differs), never missed.
        let version = match store.config_version().await {
            Ok(version) if version == self.version.load(Ordering::Relaxed) => {
                self.refreshed_at.store(Arc::new(Some(Instant::now())));
                return true;
            }
            Ok(version) => version,
            Err(e) => {
                tracing::warn!(error.kind = e.kind(), error = %e, "live config refresh failed; keeping the previous snapshot");
                return false;
            }
        };
        match SnapshotRows::load(store).await {
            Ok(rows) => {
                if self.install(version, &rows) {
                    self.save(&rows);
                }
                true
            }
            Err(e) => {
                tracing::warn!(error.kind = e.kind(), error = %e, "live config refresh failed; keeping the previous snapshot");
                false
            }
        }
    }

    /// Makes `rows`, read at config `version`, the current snapshot, unless a refresh that read
    /// a newer version installed its rows first (two refreshes can overlap: the periodic one and
    /// one asked for); whether they were installed.
    fn install(&self, version: i64, rows: &SnapshotRows) -> bool {
        let _swapping = self.swapping.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.version.load(Ordering::Relaxed);
        if current != NO_VERSION && version < current {
            return false;
        }
        self.store(Snapshot::from_rows(rows));
        self.version.store(version, Ordering::Relaxed);
        true
    }
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
impl Snapshot {
    /// A snapshot from literal orgs `(id, name)` and keys `(id, org, kind, plaintext, revoked)`.
    pub fn for_tests(orgs: &[(i64, &str)], keys: &[(i64, i64, KeyKind, &str, bool)]) -> Snapshot {
        let mut snap = Snapshot {
            loaded: true,
            ..Snapshot::default()
        };
        for (id, name) in orgs {
            let name: Arc<str> = (*name).into();
            snap.orgs_by_name.insert(name.clone(), *id);
            snap.orgs.insert(*id, OrgEntry { id: *id, name });
        }
        for (id, org, kind, plain, revoked) in keys {
            let entry = KeyEntry {
                key_id: *id,
                org_id: *org,
                kind: *kind,
                user_id: None,
                prefix: store::key_prefix(plain).into(),
                revoked: *revoked,
                acts_for: store::ActsFor::Own,
            };
            snap.keys.insert(crate::identity::hash(plain), entry);
        }
        snap
    }

    /// Sets which orgs a key of a test snapshot may name.
    pub fn set_acts_for(&mut self, plain: &str, acts_for: store::ActsFor) {
        if let Some(k) = self.keys.get_mut(&crate::identity::hash(plain)) {
            k.acts_for = acts_for;
        }
    }

    /// Switches a feature off in a test snapshot.
    pub fn disable(&mut self, org: i64, feature: Feature) {
        self.disabled.insert((org, feature));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows_with_orgs(orgs: &[(i64, &str)]) -> SnapshotRows {
        let mut rows = SnapshotRows::default();
        for (id, name) in orgs {
            rows.add_org(*id, name);
        }
        rows
    }

    /// Two refreshes overlap and the one that read the older version finishes last: the newer
    /// snapshot stays (an org created and refreshed for must not vanish until the next beat).
    #[test]
    fn an_older_load_finishing_last_does_not_replace_a_newer_snapshot() {
        let live = LiveConfig::new();
        let older = rows_with_orgs(&[(1, "acme")]);
        let newer = rows_with_orgs(&[(1, "acme"), (2, "globex")]);
        assert!(live.install(8, &newer));
        assert!(!live.install(7, &older), "read before the newer one");
        assert!(live.load().org(2).is_some(), "globex is still known");
        assert_eq!(live.version.load(Ordering::Relaxed), 8);
        // A load at the same or a later version is installed.
        assert!(live.install(8, &newer));
        assert!(live.install(9, &older));
        assert!(
            live.load().org(2).is_none(),
            "the org was deleted at version 9"
        );
    }

    /// A snapshot stored without a version (tests, a saved copy at start) is replaced by any load.
    #[test]
    fn any_load_replaces_a_snapshot_of_no_known_version() {
        let live = LiveConfig::new();
        live.store(Snapshot::for_tests(&[(5, "initech")], &[]));
        assert!(live.install(1, &rows_with_orgs(&[(1, "acme")])));
        assert!(live.load().org(1).is_some() && live.load().org(5).is_none());
    }
}
