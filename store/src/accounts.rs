//! Admin sessions and personal API tokens. Both are random secrets handed to the user once and
//! stored only as their SHA-256: a copy of the database logs nobody in.

use chrono::{DateTime, Duration, Utc};
use rand::distributions::Alphanumeric;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::audit::audit_in;
use crate::keys::hash_key;
use crate::{with_pool, Audit, Result, Store, StoreError, User};

/// Every personal API token starts with this.
pub const TOKEN_PREFIX: &str = "tgp_";
/// Characters of a token shown in listings.
const TOKEN_DISPLAY_CHARS: usize = 12;
/// Last-seen times are written at most this often per session or token (a read per request,
/// not a write).
const TOUCH_EVERY_SECS: i64 = 60;

fn random_secret(chars: usize) -> String {
    rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(chars)
        .map(char::from)
        .collect()
}

/// A logged-in session as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Session {
    /// SHA-256 (hex) of the cookie's value.
    pub id_hash: String,
    /// Whose.
    pub user_id: i64,
    /// The token a cookie-authenticated write must carry.
    pub csrf_token: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last used (to within a minute).
    pub last_seen_at: DateTime<Utc>,
    /// When it ends however active it is.
    pub expires_at: DateTime<Utc>,
}

/// A personal API token as listed (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct PersonalToken {
    /// Stable numeric id.
    pub id: i64,
    /// Whose.
    pub user_id: i64,
    /// A label.
    pub name: String,
    /// The first characters, safe to display (`tgp_AbCdEfGh`).
    pub prefix: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was last used (to within a minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

const TOKEN_COLUMNS: &str =
    "id, user_id, name, prefix, created_at, expires_at, last_used_at, revoked_at";

impl Store {
    /// Starts a session for a user; returns the cookie value (shown once) and the session.
    pub async fn create_session(
        &self,
        user_id: i64,
        lifetime: Duration,
    ) -> Result<(String, Session)> {
        let secret = random_secret(43);
        let now = Utc::now();
        let session = Session {
            id_hash: hash_key(&secret),
            user_id,
            csrf_token: random_secret(32),
            created_at: now,
            last_seen_at: now,
            expires_at: now + lifetime,
        };
        with_pool!(self, pool => sqlx::query(
            "INSERT INTO sessions (id_hash, user_id, csrf_token, created_at, last_seen_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&session.id_hash).bind(user_id).bind(&session.csrf_token)
            .bind(now).bind(now).bind(session.expires_at)
            .execute(pool).await.map(drop))?;
        Ok((secret, session))
    }

    /// The session and its user for a cookie value, unless it expired or was idle longer than
    /// `idle`; refreshes its last-seen time (at most once a minute).
    pub async fn session_user(
        &self,
        secret: &str,
        idle: Duration,
    ) -> Result<Option<(Session, User)>> {
        let id_hash = hash_key(secret);
        let now = Utc::now();
        let session: Option<Session> = with_pool!(self, pool => sqlx::query_as::<_, Session>(
            "SELECT id_hash, user_id, csrf_token, created_at, last_seen_at, expires_at \
             FROM sessions WHERE id_hash = $1")
            .bind(&id_hash).fetch_optional(pool).await)?;
        let Some(session) = session else {
            return Ok(None);
        };
        if session.expires_at <= now || session.last_seen_at + idle <= now {
            self.delete_session(&id_hash).await?;
            return Ok(None);
        }
        if now - session.last_seen_at >= Duration::seconds(TOUCH_EVERY_SECS) {
            with_pool!(self, pool => sqlx::query(
                "UPDATE sessions SET last_seen_at = $2 WHERE id_hash = $1")
                .bind(&id_hash).bind(now).execute(pool).await.map(drop))?;
        }
        let user = self.get_user(session.user_id).await?;
        Ok(Some((session, user)))
    }

    /// Ends one session (logout).
    pub async fn delete_session(&self, id_hash: &str) -> Result<()> {
        with_pool!(self, pool => sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(id_hash).execute(pool).await.map(drop))?;
        Ok(())
    }

    /// Creates a personal API token for a user, with its audit row; returns the row and the
    /// token (shown once).
    pub async fn create_token_audited(
        &self,
        user_id: i64,
        name: &str,
        expires_at: Option<DateTime<Utc>>,
        audit: &Audit,
    ) -> Result<(PersonalToken, String)> {
        if name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(StoreError::Validation(
                "token name must be at most 100 characters, without control characters".into(),
            ));
        }
        let token = format!("{TOKEN_PREFIX}{}", random_secret(40));
        let prefix: String = token.chars().take(TOKEN_DISPLAY_CHARS).collect();
        let sql = format!(
            "INSERT INTO personal_tokens (user_id, name, prefix, token_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING {TOKEN_COLUMNS}"
        );
        let now = Utc::now();
        let row = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let row = sqlx::query_as::<_, PersonalToken>(&sql)
                .bind(user_id).bind(name.trim()).bind(&prefix).bind(hash_key(&token))
                .bind(now).bind(expires_at).fetch_one(&mut *tx).await?;
            audit_in!(tx, Some(audit), None::<i64>, row.id);
            tx.commit().await?;
            row
        });
        Ok((row, token))
    }

    /// A user's tokens, newest first, revoked ones included.
    pub async fn list_tokens(&self, user_id: i64) -> Result<Vec<PersonalToken>> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS} FROM personal_tokens WHERE user_id = $1 ORDER BY id DESC"
        );
        with_pool!(self, pool => sqlx::query_as::<_, PersonalToken>(&sql)
            .bind(user_id).fetch_all(pool).await)
        .map_err(StoreError::from)
    }

    /// Revokes one of a user's tokens (another user's token is not found), with its audit row.
    pub async fn revoke_token_audited(
        &self,
        user_id: i64,
        id: i64,
        audit: &Audit,
    ) -> Result<PersonalToken> {
        let sql = format!(
            "UPDATE personal_tokens SET revoked_at = COALESCE(revoked_at, $3) \
             WHERE id = $1 AND user_id = $2 RETURNING {TOKEN_COLUMNS}"
        );
        let now = Utc::now();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let row = sqlx::query_as::<_, PersonalToken>(&sql)
                .bind(id).bind(user_id).bind(now).fetch_optional(&mut *tx).await?;
            let Some(row) = row else {
                return Err(StoreError::NotFound(format!("token {id}")));
            };
            audit_in!(tx, Some(audit), None::<i64>, id);
            tx.commit().await?;
            Ok(row)
        })
    }

    /// Why a presented token is refused, or its user (refreshing its last-use time at most
    /// once a minute).
    pub async fn token_user(&self, token: &str) -> Result<TokenCheck> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM personal_tokens WHERE token_hash = $1");
        let row: Option<PersonalToken> = with_pool!(self, pool => sqlx::query_as::<_, PersonalToken>(&sql)
            .bind(hash_key(token)).fetch_optional(pool).await)?;
        let now = Utc::now();
        let Some(row) = row else {
            return Ok(TokenCheck::Unknown);
        };
        if row.revoked_at.is_some() {
            return Ok(TokenCheck::Revoked);
        }
        if row.expires_at.is_some_and(|t| t <= now) {
            return Ok(TokenCheck::Expired);
        }
        if row
            .last_used_at
            .is_none_or(|t| now - t >= Duration::seconds(TOUCH_EVERY_SECS))
        {
            with_pool!(self, pool => sqlx::query(
                "UPDATE personal_tokens SET last_used_at = $2 WHERE id = $1")
                .bind(row.id).bind(now).execute(pool).await.map(drop))?;
        }
        Ok(TokenCheck::Valid(self.get_user(row.user_id).await?))
    }
}

/// What a presented personal API token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCheck {
    /// Good: it acts as this user.
    Valid(User),
    /// No such token.
    Unknown,
    /// Revoked by its user.
    Revoked,
    /// Past its expiry.
    Expired,
}
