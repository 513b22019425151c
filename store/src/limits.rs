//! Usage limits: at most one per org and limit type, validated before they reach the database.

use chrono::Utc;

use crate::audit::audit_in;
use crate::error::not_found;
use crate::{with_pool, Audit, LimitSpec, LimitType, Result, Store, StoreError, UsageLimit};

const LIMIT_COLUMNS: &str = "id, org_id, limit_type, value, alert_threshold, enabled, updated_at";

impl Store {
    /// Creates or replaces the org's limit of this type.
    pub async fn set_limit(&self, org_id: i64, spec: &LimitSpec) -> Result<UsageLimit> {
        self.set_limit_in(org_id, spec, None).await
    }

    /// [`Store::set_limit`] with its audit row in the same transaction.
    pub async fn set_limit_audited(
        &self,
        org_id: i64,
        spec: &LimitSpec,
        audit: &Audit,
    ) -> Result<UsageLimit> {
        self.set_limit_in(org_id, spec, Some(audit)).await
    }

    async fn set_limit_in(
        &self,
        org_id: i64,
        spec: &LimitSpec,
        audit: Option<&Audit>,
    ) -> Result<UsageLimit> {
        spec.validate()?;
        self.get_org(org_id).await?;
        let sql = format!(
            "INSERT INTO usage_limits (org_id, limit_type, value, alert_threshold, enabled, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (org_id, limit_type) DO UPDATE SET value = excluded.value, \
             alert_threshold = excluded.alert_threshold, enabled = excluded.enabled, \
             updated_at = excluded.updated_at RETURNING {LIMIT_COLUMNS}"
        );
        let now = Utc::now();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let row = sqlx::query_as::<_, UsageLimit>(&sql)
                .bind(org_id).bind(spec.limit_type.as_str()).bind(spec.value)
                .bind(spec.alert_threshold).bind(spec.enabled).bind(now)
                .fetch_one(&mut *tx).await?;
            audit_in!(tx, audit, Some(org_id), spec.limit_type);
            tx.commit().await?;
            Ok(row)
        })
    }

    /// One limit of an org.
    pub async fn get_limit(&self, org_id: i64, limit_type: LimitType) -> Result<UsageLimit> {
        let sql = format!(
            "SELECT {LIMIT_COLUMNS} FROM usage_limits WHERE org_id = $1 AND limit_type = $2"
        );
        with_pool!(self, pool => sqlx::query_as::<_, UsageLimit>(&sql)
            .bind(org_id).bind(limit_type.as_str()).fetch_one(pool).await)
        .map_err(StoreError::from)
        .map_err(not_found(format!(
            "{limit_type} limit of organization {org_id}"
        )))
    }

    /// An org's limits.
    pub async fn list_limits(&self, org_id: i64) -> Result<Vec<UsageLimit>> {
        let sql = format!("SELECT {LIMIT_COLUMNS} FROM usage_limits WHERE org_id = $1 ORDER BY id");
        with_pool!(self, pool => sqlx::query_as::<_, UsageLimit>(&sql).bind(org_id).fetch_all(pool).await)
            .map_err(StoreError::from)
    }

    /// Every limit of every org, for the gateway's snapshot.
    pub async fn all_limits(&self) -> Result<Vec<UsageLimit>> {
        let sql = format!("SELECT {LIMIT_COLUMNS} FROM usage_limits ORDER BY id");
        with_pool!(self, pool => sqlx::query_as::<_, UsageLimit>(&sql).fetch_all(pool).await)
            .map_err(StoreError::from)
    }

    /// Removes an org's limit of this type.
    pub async fn remove_limit(&self, org_id: i64, limit_type: LimitType) -> Result<()> {
        self.remove_limit_in(org_id, limit_type, None).await
    }

    /// [`Store::remove_limit`] with its audit row in the same transaction.
    pub async fn remove_limit_audited(
        &self,
        org_id: i64,
        limit_type: LimitType,
        audit: &Audit,
    ) -> Result<()> {
        self.remove_limit_in(org_id, limit_type, Some(audit)).await
    }

    async fn remove_limit_in(
        &self,
        org_id: i64,
        limit_type: LimitType,
        audit: Option<&Audit>,
    ) -> Result<()> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query("DELETE FROM usage_limits WHERE org_id = $1 AND limit_type = $2")
                .bind(org_id).bind(limit_type.as_str()).execute(&mut *tx).await?.rows_affected();
            if n == 0 {
                return Err(StoreError::NotFound(format!(
                    "{limit_type} limit of organization {org_id}"
                )));
            }
            audit_in!(tx, audit, Some(org_id), limit_type);
            tx.commit().await?;
            Ok(())
        })
    }
}
