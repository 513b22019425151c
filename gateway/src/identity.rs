//! Identity: which organization (and key, user, tool) a request belongs to. The gateway key is
//! read from wherever Google's SDKs put an API key, hashed, and looked up in the live snapshot.
//! No I/O; called from `request_filter`.

use std::borrow::Cow;
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

/// The presented key and where it came from. Every place the SDKs put a key is read (each
/// `x-goog-api-key`, each `key` query parameter as Google decodes it, `Authorization: Bearer`):
/// when they name different keys the request is refused, never guessed at.
pub fn presented_key<'a>(
    headers: &'a HeaderMap,
    query: Option<&'a str>,
) -> Result<Option<(Cow<'a, str>, KeySource)>, GatewayError> {
    let mut found: Option<(Cow<'a, str>, KeySource)> = None;
    let mut offer = |key: Cow<'a, str>, source: KeySource| -> Result<(), GatewayError> {
        match &found {
            Some((k, _)) if *k != key => Err(GatewayError::ConflictingKeys),
            Some(_) => Ok(()),
            None => {
                found = Some((key, source));
                Ok(())
            }
        }
    };
    for v in headers.get_all(&API_KEY_NAME) {
        // A value that is not text cannot be a gateway key; it is refused as one.
        offer(
            Cow::Borrowed(v.to_str().map_or("\u{fffd}", str::trim)),
            KeySource::Header,
        )?;
    }
    for p in query.into_iter().flat_map(|q| q.split('&')) {
        if is_key_param(p) {
            let raw = p.split_once('=').map_or("", |(_, v)| v);
            offer(percent_decode(raw), KeySource::Query)?;
        }
    }
    for auth in headers.get_all(http::header::AUTHORIZATION) {
        let auth = auth.to_str().map_or("", str::trim);
        if let Some((scheme, token)) = auth.split_once(' ') {
            if scheme.eq_ignore_ascii_case("bearer") {
                offer(Cow::Borrowed(token.trim()), KeySource::Bearer)?;
            }
        }
    }
    Ok(found)
}

/// Whether a query parameter is `key` as Google reads it: its name percent-decoded (`%6Bey`
/// is `key`), in any case. The gateway strips every such parameter before forwarding.
pub fn is_key_param(param: &str) -> bool {
    let name = param.split_once('=').map_or(param, |(n, _)| n);
    // "key" is 3 bytes, at most 9 encoded.
    if !(3..=9).contains(&name.len()) {
        return false;
    }
    if !name.contains('%') {
        return name.eq_ignore_ascii_case("key");
    }
    percent_decode(name).eq_ignore_ascii_case("key")
}

/// Percent-decodes a query component (`+` is a space); invalid escapes stay as they are.
fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
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
    let (key, _) = presented_key(headers, query)?.ok_or(GatewayError::MissingKey)?;
    let key = &*key;
    if !key.starts_with(store::KEY_PREFIX) {
        return Err(GatewayError::UnknownKey);
    }
    let entry = snap.key(&hash(key)).ok_or(GatewayError::UnknownKey)?;
    if entry.revoked {
        return Err(GatewayError::RevokedKey);
    }
    let org = match attribution(headers, &ORG_NAME) {
        Some(_) if entry.kind != KeyKind::Service => return Err(GatewayError::OrgHeaderNotAllowed),
        Some(named) => match snap.org_by_ref(&named) {
            Some(org) if entry.acts_for.allows(entry.org_id, org.id) => org,
            // A key that may name any org learns which exist; a narrower one only that it may
            // not name this one.
            None if entry.acts_for == store::ActsFor::Any => {
                return Err(GatewayError::UnknownOrg(named))
            }
            _ => return Err(GatewayError::OrgNotAllowed(named)),
        },
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
