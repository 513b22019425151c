//! The audit log: who changed what. A change made by the CLI or the admin service writes its
//! audit row in the same transaction as the change itself ([`Audit`], passed to the store's
//! `*_audited` methods), so a change is never without its record nor a record without its change.

use chrono::Utc;

use crate::{with_pool, AuditEntry, Result, Store, StoreError};

/// The audit row of a change, written with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    /// Who (`cli`, a user's email).
    pub actor: String,
    /// What (`org.create`, `key.revoke`, …).
    pub action: &'static str,
    /// The organization concerned; a change that creates one records the new id.
    pub org_id: Option<i64>,
    /// The object changed; empty: the created row's id or name.
    pub target: String,
    /// Further detail (JSON text), never a secret.
    pub detail: String,
}

impl Audit {
    /// An entry by `actor` for `action`, with no org, target or detail yet.
    pub fn new(actor: impl Into<String>, action: &'static str) -> Audit {
        Audit {
            actor: actor.into(),
            action,
            org_id: None,
            target: String::new(),
            detail: String::new(),
        }
    }

    /// The organization concerned.
    pub fn org(mut self, org_id: i64) -> Audit {
        self.org_id = Some(org_id);
        self
    }

    /// The object changed.
    pub fn target(mut self, target: impl Into<String>) -> Audit {
        self.target = target.into();
        self
    }

    /// Detail as JSON.
    pub fn detail(mut self, detail: serde_json::Value) -> Audit {
        self.detail = detail.to_string();
        self
    }
}

/// Writes `$audit` (an `Option<&Audit>`) inside transaction `$tx`; `$org` and `$target` fill
/// what the entry left empty (a created row's id).
macro_rules! audit_in {
    ($tx:ident, $audit:expr, $org:expr, $target:expr) => {
        if let Some(a) = $audit {
            let target: String = if a.target.is_empty() {
                $target.to_string()
            } else {
                a.target.clone()
            };
            sqlx::query(
                "INSERT INTO audit_log (occurred_at, actor, action, org_id, target, detail) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(chrono::Utc::now())
            .bind(&a.actor)
            .bind(a.action)
            .bind(a.org_id.or($org))
            .bind(target)
            .bind(&a.detail)
            .execute(&mut *$tx)
            .await?;
        }
    };
}
pub(crate) use audit_in;

impl Store {
    /// Appends one entry on its own, outside any change (the admin's changes use the `*_audited`
    /// store calls, which write theirs in the change's transaction).
    /// `detail` is free text (JSON by convention) and must never hold a secret.
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
