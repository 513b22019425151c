//! Accounts: who the actor is (`me`), logins checked in constant time, passwords, and users
//! (superuser).

use chrono::{DateTime, Utc};
use serde::Serialize;
use store::{Store, User};
use utoipa::ToSchema;

use super::authz::{check, Action};
use super::{Actor, OpsError};

/// A user as listed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserView {
    /// Stable numeric id.
    pub id: i64,
    /// Login email.
    pub email: String,
    /// Sees and manages every organization.
    pub superuser: bool,
    /// When the account was created.
    pub created_at: DateTime<Utc>,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        UserView {
            id: u.id,
            email: u.email,
            superuser: u.is_superuser,
            created_at: u.created_at,
        }
    }
}

/// A membership as the user sees it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MyOrg {
    /// The org's id.
    pub org_id: i64,
    /// The org's name.
    pub name: String,
    /// The user's role there.
    pub role: String,
}

/// The logged-in user with their memberships.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Me {
    /// The account.
    pub user: UserView,
    /// Every org the user is a member of, by name.
    pub memberships: Vec<MyOrg>,
}

/// Who the actor is.
pub async fn me(store: &Store, actor: &Actor) -> Result<Me, OpsError> {
    let Some(id) = actor.user_id else {
        return Err(OpsError::Unauthenticated("not a user".into()));
    };
    let user = store.get_user(id).await?;
    let names: std::collections::HashMap<i64, String> = store
        .list_orgs()
        .await?
        .into_iter()
        .map(|o| (o.id, o.name))
        .collect();
    let mut memberships: Vec<MyOrg> = actor
        .memberships()
        .filter_map(|(org_id, role)| {
            names.get(&org_id).map(|name| MyOrg {
                org_id,
                name: name.clone(),
                role: role.to_string(),
            })
        })
        .collect();
    memberships.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Me {
        user: user.into(),
        memberships,
    })
}

/// Checks an email and password; the user when both match. argon2 runs on a blocking thread,
/// and an unknown email is checked against a dummy hash so it takes as long as a wrong password.
pub async fn verify_login(
    store: &Store,
    email: &str,
    password: &str,
) -> Result<Option<User>, OpsError> {
    let record = store.login_record(email).await?;
    let hash = record.as_ref().map_or_else(
        || store::dummy_password_hash().to_owned(),
        |(_, h)| h.clone(),
    );
    let password = password.to_owned();
    let matches = tokio::task::spawn_blocking(move || store::verify_password(&password, &hash))
        .await
        .map_err(|e| OpsError::Internal(format!("password check: {e}")))?;
    Ok(record.filter(|_| matches).map(|(u, _)| u))
}

/// Every user (superuser).
pub async fn list(store: &Store, actor: &Actor) -> Result<Vec<UserView>, OpsError> {
    check(actor, None, Action::Platform)?;
    Ok(store
        .list_users()
        .await?
        .into_iter()
        .map(UserView::from)
        .collect())
}

/// Creates a user (superuser).
pub async fn create(
    store: &Store,
    actor: &Actor,
    email: &str,
    password: &str,
    superuser: bool,
) -> Result<UserView, OpsError> {
    check(actor, None, Action::Platform)?;
    let audit = actor
        .audit("user.create")
        .detail(serde_json::json!({ "superuser": superuser }));
    let user = store
        .create_user_audited(email, password, superuser, &audit)
        .await
        .map_err(|e| match e {
            store::StoreError::Conflict { .. } => OpsError::Conflict(format!(
                "a user with email {:?} already exists",
                email.trim()
            )),
            store::StoreError::Validation(m) if m.contains("password") => {
                OpsError::invalid("password", m)
            }
            store::StoreError::Validation(m) => OpsError::invalid("email", m),
            e => e.into(),
        })?;
    Ok(user.into())
}

/// Changes a password: the user's own (with their current password), or anyone's for a
/// superuser acting without one (the CLI's reset). Every other session of the user ends.
pub async fn set_password(
    store: &Store,
    actor: &Actor,
    user: &str,
    current: Option<&str>,
    new: &str,
    keep_session: Option<&str>,
) -> Result<(), OpsError> {
    let target = store.resolve_user(user.trim()).await?;
    let own = actor.user_id == Some(target.id);
    match (own, current) {
        (true, Some(current)) => {
            if verify_login(store, &target.email, current).await?.is_none() {
                return Err(OpsError::invalid(
                    "current_password",
                    "the current password is wrong",
                ));
            }
        }
        (true, None) if !actor.superuser => {
            return Err(OpsError::invalid(
                "current_password",
                "give the current password",
            ))
        }
        _ => check(actor, None, Action::Platform)?,
    }
    let audit = actor.audit("user.password").target(target.email.clone());
    store
        .set_password_audited(target.id, new, keep_session, &audit)
        .await
        .map_err(|e| match e {
            store::StoreError::Validation(m) => OpsError::invalid("new_password", m),
            e => e.into(),
        })
}
