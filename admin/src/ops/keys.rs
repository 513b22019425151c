//! Gateway keys of an organization: create (the secret is returned once), list with last use,
//! revoke. Members see only their own keys.

use chrono::{DateTime, Utc};
use serde::Serialize;
use store::{ActsFor, ApiKey, KeyKind, Store};
use utoipa::ToSchema;

use super::authz::{check, see_key, Action};
use super::{visible_org, Actor, OpsError};

/// A gateway key as listed: never the key itself.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyView {
    /// Stable numeric id.
    pub id: i64,
    /// The organization.
    pub org_id: i64,
    /// `app`, or `service` (may name the org per request with `x-tollgate-org`).
    #[schema(value_type = String)]
    pub kind: KeyKind,
    /// A label.
    pub name: String,
    /// The first characters of the key, safe to display.
    pub prefix: String,
    /// The user the key's usage is attributed to.
    pub user_id: Option<i64>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When a request last used it (as recorded by the ledger).
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked; a revoked key is refused by the gateway.
    pub revoked_at: Option<DateTime<Utc>>,
    /// A service key that may name any organization with `x-tollgate-org`.
    pub any_org: bool,
    /// Other organizations (ids) a service key may name; its own always.
    pub acts_for: Vec<i64>,
}

fn view(k: &ApiKey, last_used_at: Option<DateTime<Utc>>) -> KeyView {
    let scope = ActsFor::from_db(&k.acts_for);
    KeyView {
        any_org: scope == ActsFor::Any,
        acts_for: match scope {
            ActsFor::Orgs(ids) => ids,
            _ => Vec::new(),
        },
        id: k.id,
        org_id: k.org_id,
        kind: k.kind,
        name: k.name.clone(),
        prefix: k.prefix.clone(),
        user_id: k.user_id,
        created_at: k.created_at,
        last_used_at,
        revoked_at: k.revoked_at,
    }
}

/// A key just created, with its secret (shown this once).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedKey {
    /// The key's row.
    #[serde(flatten)]
    pub key: KeyView,
    /// The whole key (`tg_…`): store it now, it cannot be shown again.
    pub secret: String,
}

/// What to create.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    /// Service rather than app.
    pub service: bool,
    /// A label.
    pub name: String,
    /// Attribute usage to this user (id or email; a member of the org).
    pub user: Option<String>,
    /// Other organizations (ids or names) a service key may name; the actor must manage keys
    /// in each.
    pub acts_for: Vec<String>,
    /// A service key that may name any organization (superusers only).
    pub any_org: bool,
}

/// The org's keys the actor may see, oldest first.
pub async fn list(store: &Store, actor: &Actor, org: &str) -> Result<Vec<KeyView>, OpsError> {
    let org = visible_org(store, actor, org).await?;
    check(actor, Some(org.id), Action::Read)?;
    let used: std::collections::HashMap<i64, DateTime<Utc>> =
        store.keys_last_used(org.id).await?.into_iter().collect();
    Ok(store
        .list_keys(org.id)
        .await?
        .iter()
        .filter(|k| see_key(actor, org.id, k.user_id))
        .map(|k| view(k, used.get(&k.id).copied()))
        .collect())
}

/// Creates a key.
pub async fn create(
    store: &Store,
    actor: &Actor,
    org: &str,
    new: &NewKey,
) -> Result<CreatedKey, OpsError> {
    let org = visible_org(store, actor, org).await?;
    check(actor, Some(org.id), Action::ManageKeys)?;
    let user_id = match new.user.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(u) => {
            // A key is attributed to a member of its org (a superuser may name anyone), so an
            // org's admins cannot probe other orgs' accounts through it.
            let not_member =
                || OpsError::invalid("user", format!("{u:?} is not a member of {}", org.name));
            let user = store.resolve_user(u).await.map_err(|e| match e {
                store::StoreError::NotFound(_) => not_member(),
                e => e.into(),
            })?;
            if !actor.superuser && store.get_membership(org.id, user.id).await.is_err() {
                return Err(not_member());
            }
            Some(user.id)
        }
    };
    let kind = if new.service {
        KeyKind::Service
    } else {
        KeyKind::App
    };
    let acts_for = acts_for(store, actor, new).await?;
    let audit = actor.audit("key.create").detail(serde_json::json!({
        "kind": kind, "name": new.name.trim(), "acts_for": acts_for.to_db(),
    }));
    let (row, secret) = store
        .create_key_audited(org.id, kind, &new.name, user_id, &acts_for, &audit)
        .await
        .map_err(|e| match e {
            store::StoreError::Validation(m) => OpsError::invalid("name", m),
            e => e.into(),
        })?;
    Ok(CreatedKey {
        key: view(&row, None),
        secret,
    })
}

/// The organizations a new service key may name: any (superusers only), or each named one the
/// actor manages keys of (one it cannot see is not found, as everywhere).
async fn acts_for(store: &Store, actor: &Actor, new: &NewKey) -> Result<ActsFor, OpsError> {
    if !new.service && (new.any_org || !new.acts_for.is_empty()) {
        return Err(OpsError::invalid(
            "acts_for",
            "only a service key may act for other organizations",
        ));
    }
    if new.any_org {
        if !actor.superuser {
            return Err(OpsError::Forbidden(
                "only a superuser may create a key that acts for any organization".into(),
            ));
        }
        return Ok(ActsFor::Any);
    }
    let mut ids = Vec::new();
    for name in &new.acts_for {
        let other = visible_org(store, actor, name).await?;
        check(actor, Some(other.id), Action::ManageKeys)?;
        if !ids.contains(&other.id) {
            ids.push(other.id);
        }
    }
    Ok(if ids.is_empty() {
        ActsFor::Own
    } else {
        ActsFor::Orgs(ids)
    })
}

/// Revokes a key of the org; running gateways refuse it within seconds.
pub async fn revoke(store: &Store, actor: &Actor, org: &str, id: i64) -> Result<KeyView, OpsError> {
    let org = visible_org(store, actor, org).await?;
    check(actor, Some(org.id), Action::ManageKeys)?;
    revoke_in(store, actor, org.id, id).await
}

/// Revokes a key named by id alone (the CLI): its org is checked as for [`revoke`].
pub async fn revoke_by_id(store: &Store, actor: &Actor, id: i64) -> Result<KeyView, OpsError> {
    let key = store.get_key(id).await?;
    check(actor, Some(key.org_id), Action::ManageKeys)
        .map_err(|_| OpsError::NotFound(format!("key {id}")))?;
    revoke_in(store, actor, key.org_id, id).await
}

async fn revoke_in(
    store: &Store,
    actor: &Actor,
    org_id: i64,
    id: i64,
) -> Result<KeyView, OpsError> {
    let not_found = || OpsError::NotFound(format!("key {id}"));
    let key = match store.get_key(id).await {
        Ok(k) if k.org_id == org_id => k,
        Ok(_) | Err(store::StoreError::NotFound(_)) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    let audit = actor
        .audit("key.revoke")
        .org(org_id)
        .target(id.to_string())
        .detail(serde_json::json!({ "prefix": key.prefix }));
    let row = store.revoke_key_audited(id, &audit).await?;
    Ok(view(&row, None))
}
