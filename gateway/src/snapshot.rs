//! Live configuration: an immutable snapshot of keys, organizations and disabled feature flags,
//! swapped atomically by a background refresh loop. The request path only loads the current
//! snapshot (one atomic increment) and reads hash maps; it never touches the store.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use store::{Feature, KeyKind, Store};

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
}

/// What the gateway knows about an org.
#[derive(Debug, Clone)]
pub struct OrgEntry {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: Arc<str>,
}

/// One consistent view of keys, orgs and flags.
#[derive(Debug, Default)]
pub struct Snapshot {
    keys: HashMap<KeyHash, KeyEntry>,
    orgs: HashMap<i64, OrgEntry>,
    orgs_by_name: HashMap<Arc<str>, i64>,
    disabled: HashSet<(i64, Feature)>,
}

impl Snapshot {
    /// Reads everything the gateway needs from the store.
    pub async fn load(store: &Store) -> Result<Snapshot, store::StoreError> {
        let mut snap = Snapshot::default();
        for org in store.list_orgs().await? {
            let name: Arc<str> = org.name.into();
            snap.orgs_by_name.insert(name.clone(), org.id);
            snap.orgs.insert(org.id, OrgEntry { id: org.id, name });
        }
        for k in store.all_keys().await? {
            let mut hash = [0u8; 32];
            if hex::decode_to_slice(&k.key_hash, &mut hash).is_err() {
                continue; // not a key this version wrote; it can never match
            }
            let entry = KeyEntry {
                key_id: k.id,
                org_id: k.org_id,
                kind: k.kind,
                user_id: k.user_id,
                prefix: k.prefix.into(),
                revoked: k.revoked_at.is_some(),
            };
            snap.keys.insert(hash, entry);
        }
        for f in store.disabled_features().await? {
            snap.disabled.insert((f.org_id, f.feature));
        }
        Ok(snap)
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
}

impl LiveConfig {
    /// Starts with an empty snapshot (every key unknown) until the first load succeeds.
    pub fn new() -> Self {
        Self {
            current: ArcSwap::from_pointee(Snapshot::default()),
            refreshed_at: ArcSwap::from_pointee(None),
        }
    }

    /// The current snapshot.
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// Replaces the snapshot.
    pub fn store(&self, snap: Snapshot) {
        self.current.store(Arc::new(snap));
        self.refreshed_at.store(Arc::new(Some(Instant::now())));
    }

    /// Time since the last successful refresh, if any.
    pub fn age(&self) -> Option<Duration> {
        (**self.refreshed_at.load()).map(|t| t.elapsed())
    }

    /// Reloads from the store once; logs and keeps the old snapshot on failure.
    pub async fn refresh(&self, store: &Store) -> bool {
        match Snapshot::load(store).await {
            Ok(snap) => {
                self.store(snap);
                true
            }
            Err(e) => {
                tracing::warn!(error.kind = e.kind(), error = %e, "live config refresh failed; keeping the previous snapshot");
                false
            }
        }
    }

    /// Refreshes forever at `every` (run as a background task).
    pub async fn refresh_loop(self: Arc<Self>, store: Store, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.refresh(&store).await;
        }
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
        let mut snap = Snapshot::default();
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
            };
            snap.keys.insert(crate::identity::hash(plain), entry);
        }
        snap
    }

    /// Switches a feature off in a test snapshot.
    pub fn disable(&mut self, org: i64, feature: Feature) {
        self.disabled.insert((org, feature));
    }
}
