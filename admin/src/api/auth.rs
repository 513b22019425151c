//! Who is calling: a console session (cookie) or a personal API token (bearer). Writes made
//! with a session cookie must carry the session's CSRF token (`x-csrf-token`); bearer requests
//! need none (a browser never adds one by itself). Failed logins are throttled per account and
//! per client address.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, Method};

use super::ApiError;
use crate::ops::{Actor, OpsError};
use crate::AppState;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "tg_session";
/// The header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How the caller authenticated.
#[derive(Debug, Clone)]
pub enum Via {
    /// A session cookie: the session's hash and CSRF token.
    Session {
        /// SHA-256 of the cookie's value.
        id_hash: String,
        /// What writes must carry.
        csrf_token: String,
    },
    /// A personal API token.
    Token,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Authed {
    /// Who, with their memberships.
    pub actor: Actor,
    /// How.
    pub via: Via,
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn unauthenticated(msg: &str) -> ApiError {
    ApiError(OpsError::Unauthenticated(msg.into()))
}

impl FromRequestParts<Arc<AppState>> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let store = &state.store;
        if let Some(token) = bearer(parts) {
            let user = match store.token_user(token).await? {
                store::TokenCheck::Valid(u) => u,
                store::TokenCheck::Unknown => return Err(unauthenticated("unknown API token")),
                store::TokenCheck::Revoked => {
                    return Err(unauthenticated("this API token was revoked"))
                }
                store::TokenCheck::Expired => {
                    return Err(unauthenticated("this API token has expired"))
                }
            };
            let actor = Actor::of_user(store, &user).await?;
            return Ok(Authed {
                actor,
                via: Via::Token,
            });
        }
        let Some(secret) = cookie(parts, SESSION_COOKIE) else {
            return Err(unauthenticated(
                "log in (POST /api/v1/session) or send Authorization: Bearer tgp_…",
            ));
        };
        let Some((session, user)) = store
            .session_user(secret, state.settings.session_idle)
            .await?
        else {
            return Err(unauthenticated(
                "the session has expired or ended; log in again",
            ));
        };
        let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if !safe {
            let sent = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
            if !sent.is_some_and(|s| constant_time_eq(s.as_bytes(), session.csrf_token.as_bytes()))
            {
                return Err(ApiError(OpsError::Forbidden(
                    "missing or wrong CSRF token (send the x-csrf-token header of your session)"
                        .into(),
                )));
            }
        }
        let actor = Actor::of_user(store, &user).await?;
        Ok(Authed {
            actor,
            via: Via::Session {
                id_hash: session.id_hash,
                csrf_token: session.csrf_token,
            },
        })
    }
}

/// Compares two secrets in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The client's address (unspecified when the server runs without connection info, in tests).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip()),
        ))
    }
}

/// Failed logins per account and per client address, in a sliding window. An address may fail
/// [`ADDRESS_FACTOR`] times as often as an account (many people may share one address behind a
/// NAT). In memory: a restart forgets them, and each admin instance counts its own.
pub struct LoginThrottle {
    max_failures: usize,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

/// How many more failures an address may have than an account.
pub const ADDRESS_FACTOR: usize = 10;

/// Most keys (accounts and addresses) remembered; past it, entries whose failures all left the
/// window are dropped first.
const MAX_TRACKED: usize = 100_000;

impl LoginThrottle {
    /// Allows `max_failures` failures per key within `window`.
    pub fn new(max_failures: usize, window: Duration) -> LoginThrottle {
        LoginThrottle {
            max_failures,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn keys(email: &str, addr: IpAddr) -> [(String, usize); 2] {
        [
            (format!("account:{}", email.trim().to_lowercase()), 1),
            (format!("addr:{addr}"), ADDRESS_FACTOR),
        ]
    }

    /// `Err(seconds to wait)` when the account or the address has used up its failures.
    pub fn check(&self, email: &str, addr: IpAddr) -> Result<(), u64> {
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let mut wait = Duration::ZERO;
        for (key, factor) in Self::keys(email, addr) {
            if let Some(q) = map.get_mut(&key) {
                while q
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= self.window)
                {
                    q.pop_front();
                }
                if q.len() >= self.max_failures * factor {
                    if let Some(oldest) = q.front() {
                        wait = wait.max(self.window.saturating_sub(now.duration_since(*oldest)));
                    }
                }
            }
        }
        if wait.is_zero() {
            Ok(())
        } else {
            Err(wait.as_secs().max(1))
        }
    }

    /// Records a failed login.
    pub fn failed(&self, email: &str, addr: IpAddr) {
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED {
            let window = self.window;
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        for (key, factor) in Self::keys(email, addr) {
            let q = map.entry(key).or_default();
            q.push_back(now);
            if q.len() > self.max_failures * factor {
                q.pop_front();
            }
        }
    }

    /// A successful login clears the account's failures (not the address's).
    pub fn succeeded(&self, email: &str, addr: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let [(account, _), _] = Self::keys(email, addr);
        map.remove(&account);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_counts_per_account_and_per_address() {
        let t = LoginThrottle::new(3, Duration::from_secs(900));
        let a = IpAddr::from([10, 0, 0, 1]);
        let b = IpAddr::from([10, 0, 0, 2]);
        for _ in 0..3 {
            assert!(t.check("x@y.z", a).is_ok());
            t.failed("x@y.z", a);
        }
        let wait = t.check("x@y.z", b).unwrap_err();
        assert!(
            (1..=900).contains(&wait),
            "the account is throttled from anywhere: {wait}"
        );
        assert!(
            t.check("other@y.z", a).is_ok(),
            "another account from the same address"
        );
        for i in 0..3 * ADDRESS_FACTOR - 3 {
            t.failed(&format!("user{i}@y.z"), a);
        }
        assert!(
            t.check("other@y.z", a).is_err(),
            "the address is throttled for any account"
        );
        assert!(t.check("other@y.z", b).is_ok());
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
