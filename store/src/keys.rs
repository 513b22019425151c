//! Gateway keys: generation, hashing, and their rows. A key is shown once when created; the
//! store keeps only its SHA-256 (hex) and a short prefix for display.

use chrono::Utc;
use rand::distributions::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::audit::audit_in;
use crate::error::not_found;
use crate::{with_pool, ActsFor, ApiKey, Audit, KeyKind, Result, Store, StoreError};

/// Every gateway key starts with this.
pub const KEY_PREFIX: &str = "tg_";
/// Random characters after the prefix (62^40 ≈ 2^238 possibilities).
const KEY_RANDOM_CHARS: usize = 40;
/// Characters of a key shown in listings and logs.
const DISPLAY_CHARS: usize = 10;

/// A new random gateway key: `tg_` and 40 alphanumeric characters from the OS's CSPRNG.
pub fn generate_key() -> String {
    let random: String = rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(KEY_RANDOM_CHARS)
        .map(char::from)
        .collect();
    format!("{KEY_PREFIX}{random}")
}

/// The hex SHA-256 of a key: what is stored and what the gateway looks keys up by.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The part of a key that is safe to display.
pub fn key_prefix(key: &str) -> String {
    key.chars().take(DISPLAY_CHARS).collect()
}

const KEY_COLUMNS: &str =
    "id, org_id, user_id, kind, name, prefix, acts_for, key_hash, created_at, revoked_at";

/// What a new key row says, besides its secret's prefix and digest.
struct NewKeyRow<'a> {
    org_id: i64,
    kind: KeyKind,
    name: &'a str,
    user_id: Option<i64>,
    acts_for: &'a ActsFor,
}

impl Store {
    /// Creates a key for an org and returns its row and the plaintext key (shown once).
    pub async fn create_key(
        &self,
        org_id: i64,
        kind: KeyKind,
        name: &str,
        user_id: Option<i64>,
    ) -> Result<(ApiKey, String)> {
        let key = generate_key();
        let row = self
            .insert_key_in(
                NewKeyRow {
                    org_id,
                    kind,
                    name,
                    user_id,
                    acts_for: &ActsFor::Own,
                },
                (&key_prefix(&key), &hash_key(&key)),
                None,
            )
            .await?;
        Ok((row, key))
    }

    /// A service key that may also name other organizations.
    pub async fn create_service_key(
        &self,
        org_id: i64,
        name: &str,
        acts_for: &ActsFor,
    ) -> Result<(ApiKey, String)> {
        let key = generate_key();
        let row = self
            .insert_key_in(
                NewKeyRow {
                    org_id,
                    kind: KeyKind::Service,
                    name,
                    user_id: None,
                    acts_for,
                },
                (&key_prefix(&key), &hash_key(&key)),
                None,
            )
            .await?;
        Ok((row, key))
    }

    /// [`Store::create_key`] with the organizations a service key may name, and its audit row
    /// in the same transaction.
    pub async fn create_key_audited(
        &self,
        org_id: i64,
        kind: KeyKind,
        name: &str,
        user_id: Option<i64>,
        acts_for: &ActsFor,
        audit: &Audit,
    ) -> Result<(ApiKey, String)> {
        let key = generate_key();
        let row = self
            .insert_key_in(
                NewKeyRow {
                    org_id,
                    kind,
                    name,
                    user_id,
                    acts_for,
                },
                (&key_prefix(&key), &hash_key(&key)),
                Some(audit),
            )
            .await?;
        Ok((row, key))
    }

    /// Stores a key whose plaintext the caller already has (imports, tests).
    pub async fn insert_key_hash(
        &self,
        org_id: i64,
        kind: KeyKind,
        name: &str,
        user_id: Option<i64>,
        prefix: &str,
        key_hash: &str,
    ) -> Result<ApiKey> {
        let row = NewKeyRow {
            org_id,
            kind,
            name,
            user_id,
            acts_for: &ActsFor::Own,
        };
        self.insert_key_in(row, (prefix, key_hash), None).await
    }

    async fn insert_key_in(
        &self,
        NewKeyRow {
            org_id,
            kind,
            name,
            user_id,
            acts_for,
        }: NewKeyRow<'_>,
        (prefix, key_hash): (&str, &str),
        audit: Option<&Audit>,
    ) -> Result<ApiKey> {
        if kind != KeyKind::Service && *acts_for != ActsFor::Own {
            return Err(StoreError::Validation(
                "only a service key may act for other organizations".into(),
            ));
        }
        if name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(StoreError::Validation(
                "key name must be at most 100 characters, without control characters".into(),
            ));
        }
        let sql = format!(
            "INSERT INTO api_keys (org_id, user_id, kind, name, prefix, key_hash, created_at, acts_for) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {KEY_COLUMNS}"
        );
        let now = Utc::now();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let row = sqlx::query_as::<_, ApiKey>(&sql)
                .bind(org_id).bind(user_id).bind(kind.as_str()).bind(name.trim())
                .bind(prefix).bind(key_hash).bind(now).bind(acts_for.to_db())
                .fetch_one(&mut *tx).await?;
            audit_in!(tx, audit, Some(org_id), row.id);
            tx.commit().await?;
            Ok(row)
        })
    }

    /// One key by id.
    pub async fn get_key(&self, id: i64) -> Result<ApiKey> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1");
        with_pool!(self, pool => sqlx::query_as::<_, ApiKey>(&sql).bind(id).fetch_one(pool).await)
            .map_err(StoreError::from)
            .map_err(not_found(format!("key {id}")))
    }

    /// An org's keys, revoked ones included, oldest first.
    pub async fn list_keys(&self, org_id: i64) -> Result<Vec<ApiKey>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE org_id = $1 ORDER BY id");
        with_pool!(self, pool => sqlx::query_as::<_, ApiKey>(&sql).bind(org_id).fetch_all(pool).await)
            .map_err(StoreError::from)
    }

    /// Every key that is not revoked, for the gateway's in-memory table.
    pub async fn active_keys(&self) -> Result<Vec<ApiKey>> {
        let sql =
            format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE revoked_at IS NULL ORDER BY id");
        with_pool!(self, pool => sqlx::query_as::<_, ApiKey>(&sql).fetch_all(pool).await)
            .map_err(StoreError::from)
    }

    /// Every key, revoked ones included (the gateway answers "revoked" rather than "unknown").
    pub async fn all_keys(&self) -> Result<Vec<ApiKey>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY id");
        with_pool!(self, pool => sqlx::query_as::<_, ApiKey>(&sql).fetch_all(pool).await)
            .map_err(StoreError::from)
    }

    /// Revokes a key. Revoking a revoked key keeps its first revocation time.
    pub async fn revoke_key(&self, id: i64) -> Result<ApiKey> {
        self.revoke_key_in(id, None).await
    }

    /// [`Store::revoke_key`] with its audit row in the same transaction.
    pub async fn revoke_key_audited(&self, id: i64, audit: &Audit) -> Result<ApiKey> {
        self.revoke_key_in(id, Some(audit)).await
    }

    async fn revoke_key_in(&self, id: i64, audit: Option<&Audit>) -> Result<ApiKey> {
        let sql = format!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 \
             RETURNING {KEY_COLUMNS}"
        );
        let now = Utc::now();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let row = sqlx::query_as::<_, ApiKey>(&sql).bind(id).bind(now)
                .fetch_optional(&mut *tx).await?;
            let Some(row) = row else {
                return Err(StoreError::NotFound(format!("key {id}")));
            };
            audit_in!(tx, audit, Some(row.org_id), id);
            tx.commit().await?;
            Ok(row)
        })
    }

    /// Deletes a key row for good (revoking is usually what you want). Its usage events stay,
    /// without the key (on PostgreSQL no foreign key clears it; the key goes first, as in
    /// [`Store::delete_org`]).
    pub async fn delete_key(&self, id: i64) -> Result<()> {
        let done = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query("DELETE FROM api_keys WHERE id = $1")
                .bind(id).execute(&mut *tx).await?.rows_affected();
            sqlx::query("UPDATE usage_events SET key_id = NULL WHERE key_id = $1")
                .bind(id).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM key_last_used WHERE key_id = $1")
                .bind(id).execute(&mut *tx).await?;
            tx.commit().await?;
            n
        });
        if done == 0 {
            return Err(StoreError::NotFound(format!("key {id}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_documented_shape() {
        let k = generate_key();
        assert!(k.starts_with("tg_"));
        assert_eq!(k.len(), 3 + KEY_RANDOM_CHARS);
        assert!(k[3..].chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(k, generate_key(), "two keys must differ");
    }

    #[test]
    fn hash_is_hex_sha256() {
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(key_prefix("tg_abcdefghijkl"), "tg_abcdefg");
    }
}
