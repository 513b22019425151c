//! Who owns the Google resources made through the gateway: files, cached contents, batches,
//! long-running operations, file search stores. All orgs share one provider key, so Google
//! cannot tell them apart; the gateways keep this table in memory and refuse an org another's
//! resources. The first org to claim a resource keeps it.

use chrono::{DateTime, Utc};

use crate::{with_pool, Result, Store, StoreError};

/// One owned resource.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ResourceOwner {
    /// Row order, for incremental loads.
    pub id: i64,
    /// Collection and id: `files/abc123`, `operations/op1`.
    pub resource: String,
    /// The organization that created it.
    pub org_id: i64,
    /// When it was recorded (retention counts from here).
    pub created_at: DateTime<Utc>,
}

/// A change to who owns what, as a gateway saw it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ResourceChange {
    /// A name read from a resource the org owns: recorded unless someone owns it already.
    Claim(String, i64),
    /// A resource Google just created for the org: it owns the name, whoever did before.
    TakeOver(String, i64),
    /// The org's resource was deleted: the name is free again.
    Release(String, i64),
}

impl Store {
    /// Records owners in one transaction; a resource already owned keeps its owner.
    pub async fn claim_resources(&self, claims: &[(String, i64)]) -> Result<()> {
        let changes: Vec<ResourceChange> = claims
            .iter()
            .map(|(r, o)| ResourceChange::Claim(r.clone(), *o))
            .collect();
        self.record_resource_changes(&changes).await
    }

    /// Applies changes in order, in one transaction. A take-over gets a new row (a new id), so
    /// gateways loading rows after the last id they saw learn of it.
    pub async fn record_resource_changes(&self, changes: &[ResourceChange]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        const INSERT: &str = "INSERT INTO resource_owners (resource, org_id, created_at) \
                              VALUES ($1, $2, $3) ON CONFLICT (resource) DO NOTHING";
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for change in changes {
                match change {
                    ResourceChange::Claim(resource, org_id) => {
                        sqlx::query(INSERT).bind(resource).bind(org_id).bind(now)
                            .execute(&mut *tx).await?;
                    }
                    ResourceChange::TakeOver(resource, org_id) => {
                        sqlx::query("DELETE FROM resource_owners WHERE resource = $1")
                            .bind(resource).execute(&mut *tx).await?;
                        sqlx::query(INSERT).bind(resource).bind(org_id).bind(now)
                            .execute(&mut *tx).await?;
                    }
                    ResourceChange::Release(resource, org_id) => {
                        sqlx::query("DELETE FROM resource_owners WHERE resource = $1 AND org_id = $2")
                            .bind(resource).bind(org_id).execute(&mut *tx).await?;
                    }
                }
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Owners recorded after row `after_id`, oldest first, at most `limit`.
    pub async fn resource_owners_after(
        &self,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<ResourceOwner>> {
        with_pool!(self, pool => sqlx::query_as::<_, ResourceOwner>(
            "SELECT id, resource, org_id, created_at FROM resource_owners WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(after_id).bind(limit).fetch_all(pool).await)
        .map_err(StoreError::from)
    }

    /// Forgets the owners of `collection`'s resources recorded before `before` (Google has
    /// deleted them by then: files after 48 hours). Returns how many.
    pub async fn prune_resource_owners(
        &self,
        collection: &str,
        before: DateTime<Utc>,
    ) -> Result<u64> {
        let pattern = format!("{collection}/%");
        let n = with_pool!(self, pool => sqlx::query(
            "DELETE FROM resource_owners WHERE resource LIKE $1 AND created_at < $2")
            .bind(pattern).bind(before).execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(n)
    }

    /// The owner of one resource, if any.
    pub async fn resource_owner(&self, resource: &str) -> Result<Option<i64>> {
        with_pool!(self, pool => sqlx::query_scalar::<_, i64>(
            "SELECT org_id FROM resource_owners WHERE resource = $1")
            .bind(resource).fetch_optional(pool).await)
        .map_err(StoreError::from)
    }
}
