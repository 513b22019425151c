//! Login and logout, the caller's own account and API tokens, users (superuser) and the
//! gateways' status.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{Authed, ClientAddr, Via, SESSION_COOKIE};
use super::{ApiError, ApiResult, JsonBody};
use crate::ops::{self, OpsError};
use crate::AppState;

/// An email and password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Login email.
    pub email: String,
    /// Password.
    pub password: String,
}

/// A new session: the cookie is set; writes made with it carry `csrf_token` as `x-csrf-token`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// The account.
    pub user: ops::users::UserView,
    /// Send as `x-csrf-token` with every write made with this session's cookie.
    pub csrf_token: String,
    /// When the session ends at the latest (it ends earlier when idle).
    pub expires_at: DateTime<Utc>,
}

/// Logs in: sets the session cookie.
#[utoipa::path(post, path = "/api/v1/session", tag = "session", request_body = LoginRequest,
    security(()),
    responses(
        (status = 200, description = "Logged in; the session cookie is set", body = LoginResponse),
        (status = "default", description = "An error", body = super::ErrorBody)))]
pub async fn login(
    State(state): State<Arc<AppState>>,
    ClientAddr(addr): ClientAddr,
    JsonBody(req): JsonBody<LoginRequest>,
) -> ApiResult<Response> {
    let (cookie, (user, session)) = start_session(&state, addr, &req.email, &req.password).await?;
    let body = LoginResponse {
        user: user.into(),
        csrf_token: session.csrf_token,
        expires_at: session.expires_at,
    };
    let mut resp = Json(body).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

/// Checks a login (throttled per account and address, counted in
/// `tollgate_admin_logins_total`) and starts a session: the `Set-Cookie` value, the user and the
/// session. Shared by the API and the console's login form.
pub async fn start_session(
    state: &AppState,
    addr: std::net::IpAddr,
    email: &str,
    password: &str,
) -> Result<(String, (store::User, store::Session)), OpsError> {
    let metrics = &state.metrics.logins;
    if let Err(secs) = state.throttle.check(email, addr) {
        metrics.with_label_values(&["throttled"]).inc();
        return Err(OpsError::TooManyAttempts(secs));
    }
    let Some(user) = ops::users::verify_login(&state.store, email, password).await? else {
        state.throttle.failed(email, addr);
        metrics.with_label_values(&["failed"]).inc();
        return Err(OpsError::Unauthenticated("wrong email or password".into()));
    };
    state.throttle.succeeded(email, addr);
    metrics.with_label_values(&["succeeded"]).inc();
    let lifetime = state.settings.session_lifetime;
    let (secret, session) = state.store.create_session(user.id, lifetime).await?;
    let cookie = format!(
        "{SESSION_COOKIE}={secret}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
        lifetime.num_seconds(),
        if state.settings.secure_cookies {
            "; Secure"
        } else {
            ""
        }
    );
    Ok((cookie, (user, session)))
}

/// Logs out: ends the session and clears the cookie (with a token: nothing to end).
#[utoipa::path(delete, path = "/api/v1/session", tag = "session",
    responses(
        (status = 204, description = "Logged out"),
        (status = "default", description = "An error", body = super::ErrorBody)))]
pub async fn logout(State(state): State<Arc<AppState>>, auth: Authed) -> ApiResult<Response> {
    if let Via::Session { id_hash, .. } = &auth.via {
        state.store.delete_session(id_hash).await?;
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let clear = format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&clear) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

/// The caller, with memberships and (for a session) its CSRF token.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeResponse {
    /// The account.
    pub user: ops::users::UserView,
    /// Every org the user is a member of.
    pub memberships: Vec<ops::users::MyOrg>,
    /// The session's CSRF token (absent with an API token).
    pub csrf_token: Option<String>,
}

/// Who is calling.
#[utoipa::path(get, path = "/api/v1/me", tag = "session",
    responses(
        (status = 200, description = "The caller", body = MeResponse),
        (status = "default", description = "An error", body = super::ErrorBody)))]
pub async fn me(State(state): State<Arc<AppState>>, auth: Authed) -> ApiResult<Json<MeResponse>> {
    let me = ops::users::me(&state.store, &auth.actor).await?;
    Ok(Json(MeResponse {
        user: me.user,
        memberships: me.memberships,
        csrf_token: match auth.via {
            Via::Session { csrf_token, .. } => Some(csrf_token),
            Via::Token => None,
        },
    }))
}

/// A password change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    /// The current password.
    pub current_password: String,
    /// The new one (8 characters or more).
    pub new_password: String,
}

/// Changes the caller's password; every other session of theirs ends.
#[utoipa::path(put, path = "/api/v1/me/password", tag = "session", request_body = PasswordChange,
    responses(
        (status = 204, description = "Changed"),
        (status = "default", description = "An error", body = super::ErrorBody)))]
pub async fn change_password(
    State(state): State<Arc<AppState>>,
    auth: Authed,
    JsonBody(req): JsonBody<PasswordChange>,
) -> ApiResult<StatusCode> {
    let keep = match &auth.via {
        Via::Session { id_hash, .. } => Some(id_hash.as_str()),
        Via::Token => None,
    };
    let id = auth.actor.user_id.unwrap_or_default().to_string();
    ops::users::set_password(
        &state.store,
        &auth.actor,
        &id,
        Some(&req.current_password),
        &req.new_password,
        keep,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A token to create.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct NewToken {
    /// A label.
    pub name: String,
    /// Days until it expires (1–3650); absent: never.
    pub expires_days: Option<i64>,
}

/// The caller's API tokens, newest first.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens",
    responses(
        (status = 200, description = "Tokens", body = Vec<ops::tokens::TokenView>),
        (status = "default", description = "An error", body = super::ErrorBody)))]
pub async fn list_tokens(
    State(state): State<Arc<AppState>>,
    auth: Authed,
) -> ApiResult<Json<Vec<ops::tokens::TokenView>>> {
    Ok(Json(ops::tokens::list(&state.store, &auth.actor).await?))
}

/// Creates an API token for the caller: the token is in this answer only.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = NewToken,
    responses(
        (status = 201, description = "Created", body = ops::tokens::CreatedToken),
        (status = "default", description = "An error", body = super::ErrorBody)))]
pub async fn create_token(
    State(state): State<Arc<AppState>>,
    auth: Authed,
    JsonBody(req): JsonBody<NewToken>,
) -> ApiResult<(StatusCode, Json<ops::tokens::CreatedToken>)> {
    let t =
        ops::tokens::create(&state.store, &auth.actor, None, &req.name, req.expires_days).await?;
    Ok((StatusCode::CREATED, Json(t)))
}

/// A numeric id from a path.
pub fn path_id(what: &str, raw: &str) -> Result<i64, ApiError> {
    raw.trim()
        .parse::<i64>()
        .ok()
        .filter(|i| *i > 0)
        .ok_or_else(|| {
            ApiError(OpsError::invalid(
                what,
                format!("must be a positive integer id, got {raw:?}"),
            ))
        })
}

/// Revokes one of the caller's API tokens.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "The token's id")),
    responses(
        (status = 200, description = "Revoked", body = ops::tokens::TokenView),
        (status = "default", description = "An error", body = super::ErrorBody)))]
pub async fn revoke_token(
    State(state): State<Arc<AppState>>,
    auth: Authed,
    Path(id): Path<String>,
) -> ApiResult<Json<ops::tokens::TokenView>> {
    let id = path_id("id", &id)?;
    Ok(Json(
        ops::tokens::revoke(&state.store, &auth.actor, id).await?,
    ))
}

/// Every user (superuser).
#[utoipa::path(get, path = "/api/v1/users", tag = "users",
    responses(
        (status = 200, description = "Users", body = Vec<ops::users::UserView>),
        (status = "default", description = "An error", body = super::ErrorBody)))]
pub async fn list_users(
    State(state): State<Arc<AppState>>,
    auth: Authed,
) -> ApiResult<Json<Vec<ops::users::UserView>>> {
    Ok(Json(ops::users::list(&state.store, &auth.actor).await?))
}

/// A user to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Login email.
    pub email: String,
    /// Password (8 characters or more).
    pub password: String,
    /// Sees and manages every organization.
    #[serde(default)]
    pub superuser: bool,
}

/// Creates a user (superuser).
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = NewUser,
    responses(
        (status = 201, description = "Created", body = ops::users::UserView),
        (status = "default", description = "An error", body = super::ErrorBody)))]
pub async fn create_user(
    State(state): State<Arc<AppState>>,
    auth: Authed,
    JsonBody(req): JsonBody<NewUser>,
) -> ApiResult<(StatusCode, Json<ops::users::UserView>)> {
    let u = ops::users::create(
        &state.store,
        &auth.actor,
        &req.email,
        &req.password,
        req.superuser,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(u)))
}

/// Gateways that reported in the last 10 minutes; one degraded (fail-open) or silent for 30 s
/// sets `degraded`. Unpriced models seen in the last 30 days.
#[utoipa::path(get, path = "/api/v1/status", tag = "status",
    responses(
        (status = 200, description = "Status", body = ops::usage::Status),
        (status = "default", description = "An error", body = super::ErrorBody)))]
pub async fn status(
    State(state): State<Arc<AppState>>,
    auth: Authed,
) -> ApiResult<Json<ops::usage::Status>> {
    Ok(Json(
        ops::usage::fleet_status(&state.store, &auth.actor).await?,
    ))
}
