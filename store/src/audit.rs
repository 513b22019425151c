//! The audit log: who changed what, appended by the CLI and the admin service.

use chrono::Utc;

use crate::{with_pool, AuditEntry, Result, Store, StoreError};

impl Store {
    /// Appends one entry. `detail` is free text (JSON by convention) and must never hold a secret.
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        org_id: Option<i64>,
        target: &str,
        detail: &str,
    ) -> Result<()> {
        let now = Utc::now();
        with_pool!(self, pool => sqlx::query(
            "INSERT INTO audit_log (occurred_at, actor, action, org_id, target, detail) \
             VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(now).bind(actor).bind(action).bind(org_id).bind(target).bind(detail)
            .execute(pool).await.map(drop))?;
        Ok(())
    }

    /// The newest entries, optionally of one org.
    pub async fn list_audit(&self, org_id: Option<i64>, limit: i64) -> Result<Vec<AuditEntry>> {
        with_pool!(self, pool => sqlx::query_as::<_, AuditEntry>(
            "SELECT id, occurred_at, actor, action, org_id, target, detail FROM audit_log \
             WHERE ($1 IS NULL OR org_id = $1) ORDER BY id DESC LIMIT $2")
            .bind(org_id).bind(limit).fetch_all(pool).await)
        .map_err(StoreError::from)
    }
}
