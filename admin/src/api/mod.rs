//! The JSON API under `/api/v1`: thin handlers that extract the actor and the input, call
//! [`crate::ops`], and map the result to JSON. The OpenAPI 3.1 document is built from the same
//! annotations as the routes and served at `/api/v1/openapi.json`.

pub mod account;
pub mod auth;
mod extract;
mod orgs;
mod usage;

use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::ops::OpsError;
use crate::AppState;

pub use extract::{JsonBody, QueryParams};

/// The error body: `{"error": {"code", "message", "field"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable code: invalid_field, unauthenticated, forbidden, not_found, conflict,
    /// too_many_attempts, unavailable, internal.
    pub code: String,
    /// A sentence for a person.
    pub message: String,
    /// The input field at fault, for invalid_field.
    pub field: Option<String>,
}

/// An [`OpsError`] as an HTTP response.
#[derive(Debug)]
pub struct ApiError(pub OpsError);

impl From<OpsError> for ApiError {
    fn from(e: OpsError) -> Self {
        ApiError(e)
    }
}

impl From<store::StoreError> for ApiError {
    fn from(e: store::StoreError) -> Self {
        ApiError(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = match &e {
            OpsError::Internal(detail) => {
                // Logged once, here; the body says nothing more.
                tracing::error!(error = %detail, "admin request failed");
                "internal error".to_owned()
            }
            OpsError::Unavailable => {
                tracing::warn!("admin request failed: the database is unavailable");
                e.to_string()
            }
            _ => e.to_string(),
        };
        let field = match &e {
            OpsError::Invalid { field, .. } if !field.is_empty() => Some(field.clone()),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: e.code().into(),
                message,
                field,
            },
        };
        let mut resp = (status, Json(body)).into_response();
        if let OpsError::TooManyAttempts(secs) = e {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

/// Handler results.
pub type ApiResult<T> = Result<T, ApiError>;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("tgp_…")
                    .description(Some("A personal API token (tollgate token create)"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                auth::SESSION_COOKIE,
                "The console's session (POST /api/v1/session); writes also need x-csrf-token",
            ))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tollgate admin API",
        description = "Organizations, members, keys, feature flags, limits and usage of a \
        Tollgate gateway. Authenticate with a personal API token (`Authorization: Bearer tgp_…`) \
        or a console session cookie (writes then need `x-csrf-token`).",
    ),
    modifiers(&Security),
    security(("token" = []), ("session" = [])),
    components(schemas(ErrorBody, ErrorDetail, orgs::LimitTypeName))
)]
struct ApiDoc;

/// The API's routes and its OpenAPI document.
pub fn router(state: Arc<AppState>) -> axum::Router {
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(account::login, account::logout))
        .routes(routes!(account::me))
        .routes(routes!(account::change_password))
        .routes(routes!(account::list_tokens, account::create_token))
        .routes(routes!(account::revoke_token))
        .routes(routes!(account::list_users, account::create_user))
        .routes(routes!(account::status))
        .routes(routes!(orgs::list_orgs, orgs::create_org))
        .routes(routes!(orgs::get_org, orgs::rename_org, orgs::delete_org))
        .routes(routes!(orgs::list_members, orgs::add_member))
        .routes(routes!(orgs::set_member_role, orgs::remove_member))
        .routes(routes!(orgs::list_keys, orgs::create_key))
        .routes(routes!(orgs::revoke_key))
        .routes(routes!(orgs::list_features, orgs::set_features))
        .routes(routes!(orgs::list_limits))
        .routes(routes!(orgs::set_limit, orgs::remove_limit))
        .routes(routes!(usage::org_usage))
        .routes(routes!(usage::org_events))
        .routes(routes!(usage::org_events_export))
        .routes(routes!(usage::org_alerts))
        .routes(routes!(usage::org_audit))
        .routes(routes!(usage::cross_org))
        .routes(routes!(usage::all_audit))
        .route("/api/v1/openapi.json", axum::routing::get(openapi_json))
        .with_state(state.clone())
        .split_for_parts();
    let _ = state.openapi.set(doc);
    router
}

/// The OpenAPI document (for authenticated callers, like everything under `/api/v1`).
async fn openapi_json(
    _auth: auth::Authed,
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
) -> Response {
    match state.openapi.get() {
        Some(doc) => Json(doc).into_response(),
        None => ApiError(OpsError::Internal(
            "the OpenAPI document is not built".into(),
        ))
        .into_response(),
    }
}
