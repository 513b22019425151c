//! Personal API tokens (`tgp_…`): created by a user for themselves (or by the CLI for a named
//! user), shown once, listed by prefix, revocable. They carry their user's rights, never more.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use store::{PersonalToken, Store};
use utoipa::ToSchema;

use super::authz::{check, Action};
use super::{Actor, OpsError};

/// A token as listed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenView {
    /// Stable numeric id.
    pub id: i64,
    /// A label.
    pub name: String,
    /// The first characters, safe to display.
    pub prefix: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was last used (to within a minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<PersonalToken> for TokenView {
    fn from(t: PersonalToken) -> Self {
        TokenView {
            id: t.id,
            name: t.name,
            prefix: t.prefix,
            created_at: t.created_at,
            expires_at: t.expires_at,
            last_used_at: t.last_used_at,
            revoked_at: t.revoked_at,
        }
    }
}

/// A token just created, with the token itself (shown this once).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreatedToken {
    /// The token's row.
    #[serde(flatten)]
    pub info: TokenView,
    /// The whole token (`tgp_…`): store it now, it cannot be shown again.
    pub token: String,
}

/// Longest expiry, in days.
pub const MAX_EXPIRY_DAYS: i64 = 3650;

/// Creates a token for `user` (`None`: the actor). Only a superuser creates one for another user.
pub async fn create(
    store: &Store,
    actor: &Actor,
    user: Option<&str>,
    name: &str,
    expires_days: Option<i64>,
) -> Result<CreatedToken, OpsError> {
    let user_id = match user {
        Some(u) => {
            let target = store.resolve_user(u.trim()).await?;
            if actor.user_id != Some(target.id) {
                check(actor, None, Action::Platform)?;
            }
            target.id
        }
        None => actor
            .user_id
            .ok_or_else(|| OpsError::invalid("user", "name the user the token acts as"))?,
    };
    let expires_at = match expires_days {
        None => None,
        Some(d) if (1..=MAX_EXPIRY_DAYS).contains(&d) => Some(Utc::now() + Duration::days(d)),
        Some(d) => {
            return Err(OpsError::invalid(
                "expires_days",
                format!("must be between 1 and {MAX_EXPIRY_DAYS}, got {d}"),
            ))
        }
    };
    let audit = actor
        .audit("token.create")
        .detail(serde_json::json!({ "user_id": user_id, "name": name.trim() }));
    let (row, token) = store
        .create_token_audited(user_id, name, expires_at, &audit)
        .await
        .map_err(|e| match e {
            store::StoreError::Validation(m) => OpsError::invalid("name", m),
            e => e.into(),
        })?;
    Ok(CreatedToken {
        info: row.into(),
        token,
    })
}

/// The actor's own tokens, newest first.
pub async fn list(store: &Store, actor: &Actor) -> Result<Vec<TokenView>, OpsError> {
    let Some(user_id) = actor.user_id else {
        return Ok(Vec::new());
    };
    Ok(store
        .list_tokens(user_id)
        .await?
        .into_iter()
        .map(TokenView::from)
        .collect())
}

/// Revokes one of the actor's own tokens (another user's answers 404).
pub async fn revoke(store: &Store, actor: &Actor, id: i64) -> Result<TokenView, OpsError> {
    let Some(user_id) = actor.user_id else {
        return Err(OpsError::NotFound(format!("token {id}")));
    };
    let audit = actor.audit("token.revoke");
    Ok(store
        .revoke_token_audited(user_id, id, &audit)
        .await?
        .into())
}
