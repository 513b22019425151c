//! Organizations: create, find (by id or by name), list, rename, delete.

use chrono::Utc;

use crate::audit::audit_in;
use crate::error::not_found;
use crate::{with_pool, Audit, Feature, Org, Result, Store, StoreError};

/// Longest organization name accepted.
const MAX_NAME_CHARS: usize = 100;

/// A name as stored: trimmed, not empty, not all digits (orgs are named by id or by name on the
/// command line, in headers and in API paths), at most 100 characters, no control characters and
/// none of `/ \ ? # %`.
fn check_name(name: &str) -> Result<&str> {
    let name = name.trim();
    if name.is_empty() {
        return Err(StoreError::Validation(
            "organization name must not be empty".into(),
        ));
    }
    if name.parse::<i64>().is_ok() {
        return Err(StoreError::Validation(format!(
            "organization name {name:?} is a number, which would be mistaken for an id"
        )));
    }
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(StoreError::Validation(format!(
            "organization name must be at most {MAX_NAME_CHARS} characters, without control characters"
        )));
    }
    // Names are path segments of the API and the console (`/api/v1/orgs/{org}`).
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, '/' | '\\' | '?' | '#' | '%'))
    {
        return Err(StoreError::Validation(format!(
            "organization name {name:?} contains {c:?}; names are used in URLs and may not contain / \\ ? # or %"
        )));
    }
    Ok(name)
}

impl Store {
    /// Creates an organization with the given feature flags switched on (the rest off).
    pub async fn create_org(&self, name: &str, features_on: &[Feature]) -> Result<Org> {
        self.create_org_in(name, features_on, None).await
    }

    /// [`Store::create_org`] with its audit row in the same transaction.
    pub async fn create_org_audited(
        &self,
        name: &str,
        features_on: &[Feature],
        audit: &Audit,
    ) -> Result<Org> {
        self.create_org_in(name, features_on, Some(audit)).await
    }

    async fn create_org_in(
        &self,
        name: &str,
        features_on: &[Feature],
        audit: Option<&Audit>,
    ) -> Result<Org> {
        let name = check_name(name)?;
        let now = Utc::now();
        let org = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let org = sqlx::query_as::<_, Org>(
                "INSERT INTO organizations (name, created_at) VALUES ($1, $2) \
                 RETURNING id, name, created_at",
            )
            .bind(name).bind(now)
            .fetch_one(&mut *tx).await?;
            for f in Feature::ALL {
                sqlx::query(
                    "INSERT INTO feature_flags (org_id, feature, enabled, updated_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(org.id).bind(f.as_str()).bind(features_on.contains(f)).bind(now)
                .execute(&mut *tx).await?;
            }
            audit_in!(tx, audit, Some(org.id), &org.name);
            tx.commit().await?;
            Ok::<_, sqlx::Error>(org)
        })?;
        Ok(org)
    }

    /// One organization by id.
    pub async fn get_org(&self, id: i64) -> Result<Org> {
        with_pool!(self, pool => sqlx::query_as::<_, Org>(
            "SELECT id, name, created_at FROM organizations WHERE id = $1")
            .bind(id).fetch_one(pool).await)
        .map_err(StoreError::from)
        .map_err(not_found(format!("organization {id}")))
    }

    /// One organization by name.
    pub async fn get_org_by_name(&self, name: &str) -> Result<Org> {
        with_pool!(self, pool => sqlx::query_as::<_, Org>(
            "SELECT id, name, created_at FROM organizations WHERE name = $1")
            .bind(name).fetch_one(pool).await)
        .map_err(StoreError::from)
        .map_err(not_found(format!("organization {name:?}")))
    }

    /// An organization named by id (all digits) or by name.
    pub async fn resolve_org(&self, id_or_name: &str) -> Result<Org> {
        match id_or_name.parse::<i64>() {
            Ok(id) => self.get_org(id).await,
            Err(_) => self.get_org_by_name(id_or_name).await,
        }
    }

    /// Every organization, by id.
    pub async fn list_orgs(&self) -> Result<Vec<Org>> {
        with_pool!(self, pool => sqlx::query_as::<_, Org>(
            "SELECT id, name, created_at FROM organizations ORDER BY id")
            .fetch_all(pool).await)
        .map_err(StoreError::from)
    }

    /// Renames an organization.
    pub async fn rename_org(&self, id: i64, name: &str) -> Result<Org> {
        self.rename_org_in(id, name, None).await
    }

    /// [`Store::rename_org`] with its audit row in the same transaction.
    pub async fn rename_org_audited(&self, id: i64, name: &str, audit: &Audit) -> Result<Org> {
        self.rename_org_in(id, name, Some(audit)).await
    }

    async fn rename_org_in(&self, id: i64, name: &str, audit: Option<&Audit>) -> Result<Org> {
        let name = check_name(name)?;
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let org = sqlx::query_as::<_, Org>(
                "UPDATE organizations SET name = $2 WHERE id = $1 RETURNING id, name, created_at")
                .bind(id).bind(name).fetch_optional(&mut *tx).await?;
            let Some(org) = org else {
                return Err(StoreError::NotFound(format!("organization {id}")));
            };
            audit_in!(tx, audit, Some(id), &org.name);
            tx.commit().await?;
            Ok(org)
        })
    }

    /// Deletes an organization and everything that belongs to it, its usage events included;
    /// its keys are cleared from other orgs' events (a service key may name another org). On
    /// PostgreSQL the events have no foreign keys that would do this (migration 5). The org and
    /// its keys go first: the ledger locks what its batch names (FOR KEY SHARE), so a batch
    /// being written either commits before the delete, and its events are deleted or cleared
    /// below, or waits for it and finds the org and keys gone.
    pub async fn delete_org(&self, id: i64) -> Result<()> {
        self.delete_org_in(id, None).await
    }

    /// [`Store::delete_org`] with its audit row in the same transaction (the row keeps the id of
    /// the org that no longer exists).
    pub async fn delete_org_audited(&self, id: i64, audit: &Audit) -> Result<()> {
        self.delete_org_in(id, Some(audit)).await
    }

    async fn delete_org_in(&self, id: i64, audit: Option<&Audit>) -> Result<()> {
        let n = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let keys: Vec<i64> = sqlx::query_scalar("SELECT id FROM api_keys WHERE org_id = $1")
                .bind(id).fetch_all(&mut *tx).await?;
            let n = sqlx::query("DELETE FROM organizations WHERE id = $1")
                .bind(id).execute(&mut *tx).await?.rows_affected();
            sqlx::query("DELETE FROM usage_events WHERE org_id = $1")
                .bind(id).execute(&mut *tx).await?;
            for key in keys {
                sqlx::query("UPDATE usage_events SET key_id = NULL WHERE key_id = $1")
                    .bind(key).execute(&mut *tx).await?;
            }
            sqlx::query("DELETE FROM key_last_used WHERE key_id NOT IN (SELECT id FROM api_keys)")
                .execute(&mut *tx).await?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("organization {id}")));
            }
            audit_in!(tx, audit, Some(id), id);
            tx.commit().await?;
            n
        });
        if n == 0 {
            return Err(StoreError::NotFound(format!("organization {id}")));
        }
        Ok(())
    }
}
