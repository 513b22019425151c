//! Organizations: list (all for a superuser, the actor's otherwise), get, create, rename and
//! delete (superuser).

use chrono::{DateTime, Datelike, Utc};
use serde::Serialize;
use store::{Feature, Org, RollupGroup, Store};
use utoipa::ToSchema;

use super::authz::{check, Action};
use super::{visible_org, Actor, OpsError};

/// An organization as listed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrgView {
    /// Stable numeric id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// How many members it has.
    pub members: i64,
    /// The actor's role in it, if a member.
    #[schema(value_type = Option<String>)]
    pub role: Option<store::Role>,
    /// Cost this UTC month so far, in micro-dollars.
    pub month_cost_micros: i64,
}

fn view(org: &Org, actor: &Actor, members: i64, month_cost_micros: i64) -> OrgView {
    OrgView {
        id: org.id,
        name: org.name.clone(),
        created_at: org.created_at,
        members,
        role: actor.role_in(org.id),
        month_cost_micros,
    }
}

/// Whether the actor may see an org at all (the rule `visible_org` applies to one org).
fn visible(actor: &Actor, org: &Org) -> bool {
    actor.superuser || actor.role_in(org.id).is_some()
}

/// The names of the orgs the actor may see, by id: what a navigation needs, without the
/// member counts and costs of [`list`].
pub async fn names(store: &Store, actor: &Actor) -> Result<Vec<String>, OpsError> {
    Ok(store
        .list_orgs()
        .await?
        .into_iter()
        .filter(|o| visible(actor, o))
        .map(|o| o.name)
        .collect())
}

/// The orgs the actor may see, with member counts and month-to-date cost.
pub async fn list(store: &Store, actor: &Actor) -> Result<Vec<OrgView>, OpsError> {
    let counts: std::collections::HashMap<i64, i64> =
        store.member_counts().await?.into_iter().collect();
    let today = Utc::now().date_naive();
    let month_start = today.with_day(1).unwrap_or(today);
    let costs: std::collections::HashMap<i64, i64> = store
        .period_usage(today, month_start)
        .await?
        .into_iter()
        .map(|p| (p.org_id, p.month_cost_micros))
        .collect();
    Ok(store
        .list_orgs()
        .await?
        .iter()
        .filter(|o| visible(actor, o))
        .map(|o| {
            view(
                o,
                actor,
                counts.get(&o.id).copied().unwrap_or(0),
                costs.get(&o.id).copied().unwrap_or(0),
            )
        })
        .collect())
}

/// One org the actor may see.
pub async fn get(store: &Store, actor: &Actor, org: &str) -> Result<OrgView, OpsError> {
    let org = visible_org(store, actor, org).await?;
    check(actor, Some(org.id), Action::Read)?;
    let members = store.list_members(org.id).await?.len() as i64;
    let today = Utc::now().date_naive();
    let month_start = today.with_day(1).unwrap_or(today);
    let cost = store
        .rollup_usage(Some(org.id), month_start, today, RollupGroup::Nothing)
        .await?
        .first()
        .map_or(0, |t| t.cost_micros);
    Ok(view(&org, actor, members, cost))
}

/// Creates an org (superuser) with `features_on` switched on and the rest off.
pub async fn create(
    store: &Store,
    actor: &Actor,
    name: &str,
    features_on: &[Feature],
) -> Result<OrgView, OpsError> {
    check(actor, None, Action::Platform)?;
    let audit = actor.audit("org.create");
    let org = store
        .create_org_audited(name, features_on, &audit)
        .await
        .map_err(|e| match e {
            store::StoreError::Conflict { .. } => OpsError::Conflict(format!(
                "an organization named {:?} already exists",
                name.trim()
            )),
            store::StoreError::Validation(m) => OpsError::invalid("name", m),
            e => e.into(),
        })?;
    Ok(view(&org, actor, 0, 0))
}

/// Renames an org (superuser).
pub async fn rename(
    store: &Store,
    actor: &Actor,
    org: &str,
    name: &str,
) -> Result<OrgView, OpsError> {
    let found = visible_org(store, actor, org).await?;
    check(actor, Some(found.id), Action::Platform)?;
    let audit = actor
        .audit("org.rename")
        .detail(serde_json::json!({ "from": found.name, "to": name.trim() }));
    let renamed = store
        .rename_org_audited(found.id, name, &audit)
        .await
        .map_err(|e| match e {
            store::StoreError::Conflict { .. } => OpsError::Conflict(format!(
                "an organization named {:?} already exists",
                name.trim()
            )),
            store::StoreError::Validation(m) => OpsError::invalid("name", m),
            e => e.into(),
        })?;
    get(store, actor, &renamed.id.to_string()).await
}

/// Deletes an org with its keys, members, limits and usage (superuser).
pub async fn delete(store: &Store, actor: &Actor, org: &str) -> Result<Org, OpsError> {
    let found = visible_org(store, actor, org).await?;
    check(actor, Some(found.id), Action::Platform)?;
    let audit = actor.audit("org.delete").target(found.name.clone());
    store.delete_org_audited(found.id, &audit).await?;
    Ok(found)
}
