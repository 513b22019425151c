//! Identity: which organization (and key, user, tool) a request belongs to. The gateway key is
//! read from wherever Google's SDKs put an API key, hashed, and looked up in the live snapshot.
//! No I/O; called from `request_filter`.

use std::cell::RefCell;
use std::sync::Arc;

use http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};
use store::KeyKind;

use crate::error::GatewayError;
use crate::snapshot::{KeyHash, Snapshot};

/// Names the org per request; trusted only with a service key.
pub const ORG_HEADER: &str = "x-tollgate-org";
/// Attributes the request to an end user.
pub const USER_HEADER: &str = "x-tollgate-user";
/// Attributes the request to a tool or feature of the calling app.
pub const TOOL_HEADER: &str = "x-tollgate-tool";
/// The same names, parsed once: a lookup by a `&str` name parses and validates it every time.
static API_KEY_NAME: HeaderName = HeaderName::from_static("x-goog-api-key");
static ORG_NAME: HeaderName = HeaderName::from_static(ORG_HEADER);
static USER_NAME: HeaderName = HeaderName::from_static(USER_HEADER);
static TOOL_NAME: HeaderName = HeaderName::from_static(TOOL_HEADER);
/// Longest attribution value kept (longer values are cut).
const MAX_ATTRIBUTION_CHARS: usize = 128;

/// Who a request is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The organization billed.
    pub org_id: i64,
    /// Its name (for logs).
    pub org_name: Arc<str>,
    /// The key used.
    pub key_id: i64,
    /// The key's display prefix (safe to log).
    pub key_prefix: Arc<str>,
    /// The end user (header, else the key's user id).
    pub user: Option<String>,
    /// The tool (header).
    pub tool: Option<String>,
}

/// Where a key was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// `x-goog-api-key`
    Header,
    /// `?key=`
    Query,
    /// `Authorization: Bearer`
    Bearer,
}

/// The presented key and where it came from, in the SDKs' order of preference.
pub fn presented_key<'a>(
    headers: &'a HeaderMap,
    query: Option<&'a str>,
) -> Option<(&'a str, KeySource)> {
    if let Some(k) = headers.get(&API_KEY_NAME).and_then(|v| v.to_str().ok()) {
        return Some((k.trim(), KeySource::Header));
    }
    if let Some(k) = query.and_then(query_key) {
        return Some((k, KeySource::Query));
    }
    let auth = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| (token.trim(), KeySource::Bearer))
}

/// The value of the `key` query parameter (gateway keys need no percent-decoding).
pub fn query_key(query: &str) -> Option<&str> {
    query.split('&').find_map(|p| p.strip_prefix("key="))
}

/// SHA-256 of a presented key, remembered per thread for the keys seen last ([`DigestMemo`]).
pub fn hash(key: &str) -> KeyHash {
    thread_local!(static MEMO: RefCell<DigestMemo> = RefCell::new(DigestMemo::new()));
    MEMO.with_borrow_mut(|m| m.digest(key))
}

/// Remembered SHA-256 digests of presented keys: the digest costs ~3,600 instructions per
/// request, a hit here a few hundred. A slot is found and checked by a 128-bit tag of the key:
/// two SipHash-2-4 values under two independent keys drawn at random for each memo (one per
/// thread), which nobody outside can compute, so no key can be searched for that would find
/// another key's slot. A slot holds the tag and the digest, never the key. A pure function's
/// memo: nothing in it can go stale.
pub struct DigestMemo {
    keys: [(u64, u64); 2],
    slots: Vec<Option<(u128, KeyHash)>>,
}

impl DigestMemo {
    /// Keys remembered per thread (a direct-mapped table: a newer key takes its slot).
    const SLOTS: usize = 1024;

    /// An empty memo with fresh random keys.
    pub fn new() -> DigestMemo {
        DigestMemo {
            keys: [rand::random(), rand::random()],
            slots: vec![None; Self::SLOTS],
        }
    }

    /// SipHash-2-4 of `key` under one of the memo's keys. std's own keyed hasher for maps
    /// (`RandomState`) derives related keys within a thread and does not promise its algorithm;
    /// `SipHasher` is documented as SipHash-2-4 and takes keys of our own.
    #[allow(deprecated)]
    fn siphash(k: (u64, u64), key: &str) -> u64 {
        use std::hash::Hasher;
        let mut h = std::hash::SipHasher::new_with_keys(k.0, k.1);
        h.write(key.as_bytes());
        h.finish()
    }

    /// SHA-256 of `key`.
    pub fn digest(&mut self, key: &str) -> KeyHash {
        let (a, b) = (
            Self::siphash(self.keys[0], key),
            Self::siphash(self.keys[1], key),
        );
        let tag = u128::from(a) << 64 | u128::from(b);
        let slot = &mut self.slots[(a % Self::SLOTS as u64) as usize];
        match slot {
            Some((t, digest)) if *t == tag => *digest,
            _ => {
                let digest: KeyHash = Sha256::digest(key.as_bytes()).into();
                *slot = Some((tag, digest));
                digest
            }
        }
    }
}

impl Default for DigestMemo {
    fn default() -> Self {
        Self::new()
    }
}

fn attribution(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let v = headers.get(name)?.to_str().ok()?.trim();
    if v.is_empty() {
        return None;
    }
    Some(
        v.chars()
            .filter(|c| !c.is_control())
            .take(MAX_ATTRIBUTION_CHARS)
            .collect(),
    )
}

/// Identifies a request from its headers and query.
pub fn identify(
    snap: &Snapshot,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Identity, GatewayError> {
    let (key, _) = presented_key(headers, query).ok_or(GatewayError::MissingKey)?;
    if !key.starts_with(store::KEY_PREFIX) {
        return Err(GatewayError::UnknownKey);
    }
    let entry = snap.key(&hash(key)).ok_or(GatewayError::UnknownKey)?;
    if entry.revoked {
        return Err(GatewayError::RevokedKey);
    }
    let org = match attribution(headers, &ORG_NAME) {
        Some(_) if entry.kind != KeyKind::Service => return Err(GatewayError::OrgHeaderNotAllowed),
        Some(named) => snap
            .org_by_ref(&named)
            .ok_or(GatewayError::UnknownOrg(named))?,
        None => snap.org(entry.org_id).ok_or(GatewayError::UnknownKey)?,
    };
    Ok(Identity {
        org_id: org.id,
        org_name: org.name.clone(),
        key_id: entry.key_id,
        key_prefix: entry.prefix.clone(),
        user: attribution(headers, &USER_NAME).or_else(|| entry.user_id.map(|id| id.to_string())),
        tool: attribution(headers, &TOOL_NAME),
    })
}

#[cfg(test)]
mod tests;
