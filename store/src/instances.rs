//! Gateway heartbeats: each running gateway reports its version, whether it enforces limits in
//! degraded (fail-open) mode, and when it last synced, so the console can show a banner.

use chrono::{DateTime, Utc};

use crate::{with_pool, GatewayInstance, Result, Store, StoreError};

impl Store {
    /// Inserts or refreshes one instance's heartbeat.
    pub async fn heartbeat(
        &self,
        instance_id: &str,
        version: &str,
        degraded: bool,
        last_sync: Option<DateTime<Utc>>,
    ) -> Result<()> {
        let now = Utc::now();
        with_pool!(self, pool => sqlx::query(
            "INSERT INTO gateway_instances (instance_id, version, degraded, last_sync, updated_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (instance_id) DO UPDATE SET \
             version = excluded.version, degraded = excluded.degraded, \
             last_sync = excluded.last_sync, updated_at = excluded.updated_at")
            .bind(instance_id).bind(version).bind(degraded).bind(last_sync).bind(now)
            .execute(pool).await.map(drop))?;
        Ok(())
    }

    /// Instances that reported at or after `since`.
    pub async fn live_instances(&self, since: DateTime<Utc>) -> Result<Vec<GatewayInstance>> {
        with_pool!(self, pool => sqlx::query_as::<_, GatewayInstance>(
            "SELECT instance_id, version, degraded, last_sync, updated_at FROM gateway_instances \
             WHERE updated_at >= $1 ORDER BY instance_id")
            .bind(since).fetch_all(pool).await)
        .map_err(StoreError::from)
    }
}
