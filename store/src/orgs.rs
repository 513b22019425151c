//! Organizations: create, find (by id or by name), list, rename, delete.

use chrono::Utc;

use crate::error::not_found;
use crate::{with_pool, Feature, Org, Result, Store, StoreError};

impl Store {
    /// Creates an organization with the given feature flags switched on (the rest off).
    pub async fn create_org(&self, name: &str, features_on: &[Feature]) -> Result<Org> {
        let name = name.trim();
        if name.is_empty() {
            return Err(StoreError::Validation(
                "organization name must not be empty".into(),
            ));
        }
        if name.parse::<i64>().is_ok() {
            // Orgs are named by id or by name on the command line and in headers.
            return Err(StoreError::Validation(format!(
                "organization name {name:?} is a number, which would be mistaken for an id"
            )));
        }
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
        with_pool!(self, pool => sqlx::query_as::<_, Org>(
            "UPDATE organizations SET name = $2 WHERE id = $1 RETURNING id, name, created_at")
            .bind(id).bind(name.trim()).fetch_one(pool).await)
        .map_err(StoreError::from)
        .map_err(not_found(format!("organization {id}")))
    }

    /// Deletes an organization and everything that belongs to it, its usage events included;
    /// its keys are cleared from other orgs' events (a service key may name another org). On
    /// PostgreSQL the events have no foreign keys that would do this (migration 5). The org and
    /// its keys go first: the ledger locks what its batch names (FOR KEY SHARE), so a batch
    /// being written either commits before the delete, and its events are deleted or cleared
    /// below, or waits for it and finds the org and keys gone.
    pub async fn delete_org(&self, id: i64) -> Result<()> {
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
            tx.commit().await?;
            n
        });
        if n == 0 {
            return Err(StoreError::NotFound(format!("organization {id}")));
        }
        Ok(())
    }
}
