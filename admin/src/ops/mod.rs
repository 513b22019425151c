//! The operations layer: the only place that decides who may do what. The JSON API, the
//! console and the CLI are thin callers of these functions. Each change runs in the same order:
//! authorize ([`authz`]), validate ([`parse`]), then change and audit in one store transaction.

pub mod authz;
pub mod export;
pub mod features;
pub mod keys;
pub mod limits;
pub mod members;
pub mod orgs;
pub mod parse;
pub mod tokens;
pub mod usage;
pub mod users;

use std::collections::HashMap;

use store::{Audit, Org, Role, Store, StoreError, User};

pub use authz::Denied;

/// Who is acting: a user (from a session or a token) or the local CLI.
#[derive(Debug, Clone)]
pub struct Actor {
    /// Recorded in the audit log: the user's email, or `cli`.
    pub name: String,
    /// The user, when a user acts.
    pub user_id: Option<i64>,
    /// Superusers may do everything.
    pub superuser: bool,
    roles: HashMap<i64, Role>,
}

impl Actor {
    /// The local command line: a superuser named `cli`.
    pub fn cli() -> Actor {
        Actor {
            name: "cli".into(),
            user_id: None,
            superuser: true,
            roles: HashMap::new(),
        }
    }

    /// A user with their memberships as they are now.
    pub async fn of_user(store: &Store, user: &User) -> Result<Actor, OpsError> {
        let roles = store
            .memberships_of(user.id)
            .await?
            .into_iter()
            .map(|m| (m.org_id, m.role))
            .collect();
        Ok(Actor {
            name: user.email.clone(),
            user_id: Some(user.id),
            superuser: user.is_superuser,
            roles,
        })
    }

    /// An actor with the given roles (tests of the rules).
    pub fn with_roles(user_id: i64, superuser: bool, roles: &[(i64, Role)]) -> Actor {
        Actor {
            name: format!("user{user_id}@test"),
            user_id: Some(user_id),
            superuser,
            roles: roles.iter().copied().collect(),
        }
    }

    /// The actor's role in an org, if a member.
    pub fn role_in(&self, org_id: i64) -> Option<Role> {
        self.roles.get(&org_id).copied()
    }

    /// The orgs the actor is a member of, with roles.
    pub fn memberships(&self) -> impl Iterator<Item = (i64, Role)> + '_ {
        self.roles.iter().map(|(o, r)| (*o, *r))
    }

    /// The start of an audit row by this actor.
    fn audit(&self, action: &'static str) -> Audit {
        Audit::new(self.name.clone(), action)
    }
}

/// Everything an operation can fail with; each knows its HTTP status and a stable code.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// Bad input, naming the field.
    #[error("{message}")]
    Invalid {
        /// The field (JSON name or CLI option without dashes).
        field: String,
        /// What is wrong and what is expected.
        message: String,
    },
    /// No credentials, or they are no longer valid.
    #[error("{0}")]
    Unauthenticated(String),
    /// Known actor, not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// It does not exist, or the actor may not know that it does.
    #[error("{0} not found")]
    NotFound(String),
    /// It conflicts with what exists (a taken name, the last owner).
    #[error("{0}")]
    Conflict(String),
    /// Too many attempts; retry after this many seconds.
    #[error("too many failed logins; retry in {0} s")]
    TooManyAttempts(u64),
    /// The database is unreachable.
    #[error("the database is unavailable")]
    Unavailable,
    /// Anything else (logged where it is handled; the body says nothing more).
    #[error("internal error")]
    Internal(String),
}

impl OpsError {
    /// A validation error on `field`.
    pub fn invalid(field: &str, message: impl Into<String>) -> OpsError {
        OpsError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> u16 {
        match self {
            OpsError::Invalid { .. } => 400,
            OpsError::Unauthenticated(_) => 401,
            OpsError::Forbidden(_) => 403,
            OpsError::NotFound(_) => 404,
            OpsError::Conflict(_) => 409,
            OpsError::TooManyAttempts(_) => 429,
            OpsError::Unavailable => 503,
            OpsError::Internal(_) => 500,
        }
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            OpsError::Invalid { .. } => "invalid_field",
            OpsError::Unauthenticated(_) => "unauthenticated",
            OpsError::Forbidden(_) => "forbidden",
            OpsError::NotFound(_) => "not_found",
            OpsError::Conflict(_) => "conflict",
            OpsError::TooManyAttempts(_) => "too_many_attempts",
            OpsError::Unavailable => "unavailable",
            OpsError::Internal(_) => "internal",
        }
    }
}

impl From<StoreError> for OpsError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => OpsError::NotFound(what),
            StoreError::LastOwner => OpsError::Conflict(
                "an organization must keep at least one owner: make another member owner first"
                    .into(),
            ),
            StoreError::Conflict { .. } => OpsError::Conflict("it already exists".into()),
            StoreError::Validation(m) => OpsError::invalid("", m),
            e if e.is_unavailable() => OpsError::Unavailable,
            e => OpsError::Internal(e.to_string()),
        }
    }
}

impl From<Denied> for OpsError {
    fn from(d: Denied) -> Self {
        match d {
            Denied::NotFound => OpsError::NotFound("organization".into()),
            Denied::Forbidden(why) => OpsError::Forbidden(why.into()),
        }
    }
}

/// An org named by id or name, as the actor may see it: one the actor is not a member of is
/// "not found", exactly like one that does not exist.
pub async fn visible_org(store: &Store, actor: &Actor, org: &str) -> Result<Org, OpsError> {
    let found = match store.resolve_org(org.trim()).await {
        Ok(o) => o,
        Err(StoreError::NotFound(_)) => {
            return Err(OpsError::NotFound(format!("organization {:?}", org.trim())))
        }
        Err(e) => return Err(e.into()),
    };
    if actor.superuser || actor.role_in(found.id).is_some() {
        return Ok(found);
    }
    Err(OpsError::NotFound(format!("organization {:?}", org.trim())))
}
