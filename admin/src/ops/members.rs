//! Memberships: list, add by email, change role, remove, under the rules of
//! [`authz::member_change`](super::authz::member_change); the store keeps the last owner.

use chrono::{DateTime, Utc};
use serde::Serialize;
use store::{Membership, Role, Store};
use utoipa::ToSchema;

use super::authz::{check, member_change, Action};
use super::{visible_org, Actor, OpsError};

/// A member of an organization.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MemberView {
    /// The user's id.
    pub user_id: i64,
    /// The user's email.
    pub email: String,
    /// owner, admin or member.
    #[schema(value_type = String)]
    pub role: Role,
    /// When they joined.
    pub joined_at: DateTime<Utc>,
}

impl From<Membership> for MemberView {
    fn from(m: Membership) -> Self {
        MemberView {
            user_id: m.user_id,
            email: m.email,
            role: m.role,
            joined_at: m.created_at,
        }
    }
}

/// Parses a role name.
pub fn role(raw: &str) -> Result<Role, OpsError> {
    raw.trim().parse().map_err(|_| {
        OpsError::invalid(
            "role",
            format!("must be owner, admin or member, got {raw:?}"),
        )
    })
}

/// An org's members (owners and admins).
pub async fn list(store: &Store, actor: &Actor, org: &str) -> Result<Vec<MemberView>, OpsError> {
    let org = visible_org(store, actor, org).await?;
    check(actor, Some(org.id), Action::ReadMembers)?;
    Ok(store
        .list_members(org.id)
        .await?
        .into_iter()
        .map(MemberView::from)
        .collect())
}

/// The user named by id or email, as a 404 naming the field when unknown.
async fn user_of(store: &Store, user: &str) -> Result<store::User, OpsError> {
    store.resolve_user(user.trim()).await.map_err(|e| match e {
        store::StoreError::NotFound(_) => {
            OpsError::NotFound(format!("user {:?} (create the account first)", user.trim()))
        }
        e => e.into(),
    })
}

/// Adds an existing user to an org with a role.
pub async fn add(
    store: &Store,
    actor: &Actor,
    org: &str,
    user: &str,
    role: Role,
) -> Result<MemberView, OpsError> {
    let org = visible_org(store, actor, org).await?;
    check(actor, Some(org.id), Action::ManageMembers)?;
    let user = user_of(store, user).await?;
    member_change(actor, org.id, user.id, None, Some(role))?;
    let audit = actor
        .audit("member.add")
        .target(user.email.clone())
        .detail(serde_json::json!({ "role": role }));
    let m = store
        .add_member_audited(org.id, user.id, role, &audit)
        .await
        .map_err(|e| match e {
            store::StoreError::Conflict { .. } => OpsError::Conflict(format!(
                "{} is already a member of {}",
                user.email, org.name
            )),
            e => e.into(),
        })?;
    Ok(m.into())
}

/// The membership of `user` in `org`, as a 404 when there is none.
async fn membership(
    store: &Store,
    org: &store::Org,
    user: &str,
) -> Result<(store::User, Membership), OpsError> {
    let u = user_of(store, user).await?;
    let m = store
        .get_membership(org.id, u.id)
        .await
        .map_err(|e| match e {
            store::StoreError::NotFound(_) => {
                OpsError::NotFound(format!("{} is not a member of {}", u.email, org.name))
            }
            e => e.into(),
        })?;
    Ok((u, m))
}

/// The rules were checked against the role read before the change; if it changed meanwhile,
/// the change is refused rather than judged on stale facts.
fn changed_meanwhile(e: store::StoreError) -> OpsError {
    match e {
        store::StoreError::Conflict { .. } => {
            OpsError::Conflict("the member's role changed meanwhile; reload and try again".into())
        }
        e => e.into(),
    }
}

/// Changes a member's role.
pub async fn set_role(
    store: &Store,
    actor: &Actor,
    org: &str,
    user: &str,
    role: Role,
) -> Result<MemberView, OpsError> {
    let org = visible_org(store, actor, org).await?;
    check(actor, Some(org.id), Action::ManageMembers)?;
    let (u, m) = membership(store, &org, user).await?;
    member_change(actor, org.id, u.id, Some(m.role), Some(role))?;
    let audit = actor
        .audit("member.role")
        .target(u.email.clone())
        .detail(serde_json::json!({ "from": m.role, "to": role }));
    Ok(store
        .set_role_audited(org.id, u.id, role, m.role, &audit)
        .await
        .map_err(changed_meanwhile)?
        .into())
}

/// Removes a member from an org.
pub async fn remove(
    store: &Store,
    actor: &Actor,
    org: &str,
    user: &str,
) -> Result<MemberView, OpsError> {
    let org = visible_org(store, actor, org).await?;
    check(actor, Some(org.id), Action::ManageMembers)?;
    let (u, m) = membership(store, &org, user).await?;
    member_change(actor, org.id, u.id, Some(m.role), None)?;
    let audit = actor
        .audit("member.remove")
        .target(u.email.clone())
        .detail(serde_json::json!({ "role": m.role }));
    store
        .remove_member_audited(org.id, u.id, m.role, &audit)
        .await
        .map_err(changed_meanwhile)?;
    Ok(m.into())
}
