//! Usage limits: at most one per org and limit type, validated before they reach the database.

use chrono::Utc;

use crate::error::not_found;
use crate::{with_pool, LimitSpec, LimitType, Result, Store, StoreError, UsageLimit};

const LIMIT_COLUMNS: &str = "id, org_id, limit_type, value, alert_threshold, enabled, updated_at";

impl Store {
    /// Creates or replaces the org's limit of this type.
    pub async fn set_limit(&self, org_id: i64, spec: &LimitSpec) -> Result<UsageLimit> {
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
        with_pool!(self, pool => sqlx::query_as::<_, UsageLimit>(&sql)
            .bind(org_id).bind(spec.limit_type.as_str()).bind(spec.value)
            .bind(spec.alert_threshold).bind(spec.enabled).bind(now)
            .fetch_one(pool).await)
        .map_err(StoreError::from)
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
        let n = with_pool!(self, pool => sqlx::query(
            "DELETE FROM usage_limits WHERE org_id = $1 AND limit_type = $2")
            .bind(org_id).bind(limit_type.as_str()).execute(pool).await.map(|r| r.rows_affected()))?;
        if n == 0 {
            return Err(StoreError::NotFound(format!(
                "{limit_type} limit of organization {org_id}"
            )));
        }
        Ok(())
    }
}
