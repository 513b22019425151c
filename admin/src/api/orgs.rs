//! Organizations and what belongs to them: members, keys, feature flags and limits.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;

use super::account::path_id;
use super::auth::Authed;
use super::{ApiResult, JsonBody};
use crate::ops::{self, OpsError};
use crate::AppState;

/// An organization to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrg {
    /// Its unique name (not all digits).
    pub name: String,
}

/// Organizations the caller may see (all, for a superuser), with member counts and cost so far
/// this month.
#[utoipa::path(get, path = "/api/v1/orgs", tag = "orgs",
    responses((status = 200, description = "Organizations", body = Vec<ops::orgs::OrgView>),
        (status = "default", description = "An error", body = super::ErrorBody)))]
pub async fn list_orgs(
    State(s): State<Arc<AppState>>,
    auth: Authed,
) -> ApiResult<Json<Vec<ops::orgs::OrgView>>> {
    Ok(Json(ops::orgs::list(&s.store, &auth.actor).await?))
}

/// Creates an organization (superuser); its features follow `features.default_off`.
#[utoipa::path(post, path = "/api/v1/orgs", tag = "orgs", request_body = NewOrg,
    responses((status = 201, description = "Created", body = ops::orgs::OrgView),
        (status = "default", description = "An error", body = super::ErrorBody)))]
pub async fn create_org(
    State(s): State<Arc<AppState>>,
    auth: Authed,
    JsonBody(req): JsonBody<NewOrg>,
) -> ApiResult<(StatusCode, Json<ops::orgs::OrgView>)> {
    let org = ops::orgs::create(&s.store, &auth.actor, &req.name, &s.settings.features_on).await?;
    Ok((StatusCode::CREATED, Json(org)))
}

/// One organization, by id or name.
#[utoipa::path(get, path = "/api/v1/orgs/{org}", tag = "orgs",
    params(("org" = String, Path, description = "The organization's id or name")),
    responses((status = 200, description = "The organization", body = ops::orgs::OrgView),
        (status = "default", description = "An error", body = super::ErrorBody)))]
pub async fn get_org(
    State(s): State<Arc<AppState>>,
    auth: Authed,
    Path(org): Path<String>,
) -> ApiResult<Json<ops::orgs::OrgView>> {
    Ok(Json(ops::orgs::get(&s.store, &auth.actor, &org).await?))
}

/// Renames an organization (superuser).
#[utoipa::path(patch, path = "/api/v1/orgs/{org}", tag = "orgs", request_body = NewOrg,
    params(("org" = String, Path, description = "The organization's id or name")),
    responses((status = 200, description = "Renamed", body = ops::orgs::OrgView),
        (status = "default", description = "An error", body = super::ErrorBody)))]
pub async fn rename_org(
    State(s): State<Arc<AppState>>,
    auth: Authed,
    Path(org): Path<String>,
    JsonBody(req): JsonBody<NewOrg>,
) -> ApiResult<Json<ops::orgs::OrgView>> {
    Ok(Json(
        ops::orgs::rename(&s.store, &auth.actor, &org, &req.name).await?,
    ))
}

/// Deletes an organization with its keys, members, limits and usage (superuser).
#[utoipa::path(delete, path = "/api/v1/orgs/{org}", tag = "orgs",
    params(("org" = String, Path, description = "The organization's id or name")),
    responses((status = 204, description = "Deleted"),
        (status = "default", description = "An error", body = super::ErrorBody)))]
pub async fn delete_org(
    State(s): State<Arc<AppState>>,
    auth: Authed,
    Path(org): Path<String>,
) -> ApiResult<StatusCode> {
    ops::orgs::delete(&s.store, &auth.actor, &org).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A member to add.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    /// The user's email (the account must exist).
    pub email: String,
    /// owner, admin or member (default member).
    #[serde(default = "member")]
    pub role: String,
}

fn member() -> String {
    "member".into()
}

/// A role to give.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleChange {
    /// owner, admin or member.
    pub role: String,
}

/// The organization's members (owners and admins).
#[utoipa::path(get, path = "/api/v1/orgs/{org}/members", tag = "members",
    params(("org" = String, Path, description = "The organization's id or name")),
    responses((status = 200, description = "Members", body = Vec<ops::members::MemberView>),
        (status = "default", description = "An error", body = super::ErrorBody)))]
pub async fn list_members(
    State(s): State<Arc<AppState>>,
    auth: Authed,
    Path(org): Path<String>,
) -> ApiResult<Json<Vec<ops::members::MemberView>>> {
    Ok(Json(ops::members::list(&s.store, &auth.actor, &org).await?))
}

/// Adds an existing user by email.
#[utoipa::path(post, path = "/api/v1/orgs/{org}/members", tag = "members", request_body = NewMember,
    params(("org" = String, Path, description = "The organization's id or name")),
    responses((status = 201, description = "Added", body = ops::members::MemberView),
        (status = "default", description = "An error", body = super::ErrorBody)))]
pub async fn add_member(
    State(s): State<Arc<AppState>>,
    auth: Authed,
    Path(org): Path<String>,
    JsonBody(req): JsonBody<NewMember>,
) -> ApiResult<(StatusCode, Json<ops::members::MemberView>)> {
    let role = ops::members::role(&req.role)?;
    let m = ops::members::add(&s.store, &auth.actor, &org, &req.email, role).await?;
    Ok((StatusCode::CREATED, Json(m)))
}

/// Changes a member's role.
#[utoipa::path(patch, path = "/api/v1/orgs/{org}/members/{user}", tag = "members", request_body = RoleChange,
    params(("org" = String, Path, description = "The organization's id or name"),
        ("user" = String, Path, description = "The member's user id or email")),
    responses((status = 200, description = "Changed", body = ops::members::MemberView),
        (status = "default", description = "An error", body = super::ErrorBody)))]
pub async fn set_member_role(
    State(s): State<Arc<AppState>>,
    auth: Authed,
    Path((org, user)): Path<(String, String)>,
    JsonBody(req): JsonBody<RoleChange>,
) -> ApiResult<Json<ops::members::MemberView>> {
    let role = ops::members::role(&req.role)?;
    Ok(Json(
        ops::members::set_role(&s.store, &auth.actor, &org, &user, role).await?,
    ))
}

/// Removes a member.
#[utoipa::path(delete, path = "/api/v1/orgs/{org}/members/{user}", tag = "members",
    params(("org" = String, Path, description = "The organization's id or name"),
        ("user" = String, Path, description = "The member's user id or email")),
    responses((status = 204, description = "Removed"),
        (status = "default", description = "An error", body = super::ErrorBody)))]
pub async fn remove_member(
    State(s): State<Arc<AppState>>,
    auth: Authed,
    Path((org, user)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    ops::members::remove(&s.store, &auth.actor, &org, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A gateway key to create.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct NewKey {
    /// app (default) or service (may name the org per request with `x-tollgate-org`).
    pub kind: Option<String>,
    /// A label.
    pub name: String,
    /// Attribute the key's usage to this user (id or email).
    pub user: Option<String>,
    /// Other organizations (ids or names) a service key may name with `x-tollgate-org`; its
    /// own always. The caller must manage keys in each.
    pub acts_for: Vec<String>,
    /// A service key that may name any organization (superusers only).
    pub any_org: bool,
}

/// The organization's gateway keys (members: their own), with last use.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/keys", tag = "keys",
    params(("org" = String, Path, description = "The organization's id or name")),
    responses((status = 200, description = "Keys", body = Vec<ops::keys::KeyView>),
        (status = "default", description = "An error", body = super::ErrorBody)))]
pub async fn list_keys(
    State(s): State<Arc<AppState>>,
    auth: Authed,
    Path(org): Path<String>,
) -> ApiResult<Json<Vec<ops::keys::KeyView>>> {
    Ok(Json(ops::keys::list(&s.store, &auth.actor, &org).await?))
}

/// Creates a gateway key: the secret is in this answer only.
#[utoipa::path(post, path = "/api/v1/orgs/{org}/keys", tag = "keys", request_body = NewKey,
    params(("org" = String, Path, description = "The organization's id or name")),
    responses((status = 201, description = "Created", body = ops::keys::CreatedKey),
        (status = "default", description = "An error", body = super::ErrorBody)))]
pub async fn create_key(
    State(s): State<Arc<AppState>>,
    auth: Authed,
    Path(org): Path<String>,
    JsonBody(req): JsonBody<NewKey>,
) -> ApiResult<(StatusCode, Json<ops::keys::CreatedKey>)> {
    let service = match req.kind.as_deref().map(str::trim) {
        None | Some("app") => false,
        Some("service") => true,
        Some(other) => {
            return Err(
                OpsError::invalid("kind", format!("must be app or service, got {other:?}")).into(),
            )
        }
    };
    let new = ops::keys::NewKey {
        service,
        name: req.name,
        user: req.user,
        acts_for: req.acts_for,
        any_org: req.any_org,
    };
    let k = ops::keys::create(&s.store, &auth.actor, &org, &new).await?;
    Ok((StatusCode::CREATED, Json(k)))
}

/// Revokes a key; running gateways refuse it within seconds.
#[utoipa::path(delete, path = "/api/v1/orgs/{org}/keys/{id}", tag = "keys",
    params(("org" = String, Path, description = "The organization's id or name"),
        ("id" = String, Path, description = "The key's id")),
    responses((status = 200, description = "Revoked", body = ops::keys::KeyView),
        (status = "default", description = "An error", body = super::ErrorBody)))]
pub async fn revoke_key(
    State(s): State<Arc<AppState>>,
    auth: Authed,
    Path((org, id)): Path<(String, String)>,
) -> ApiResult<Json<ops::keys::KeyView>> {
    let id = path_id("id", &id)?;
    Ok(Json(
        ops::keys::revoke(&s.store, &auth.actor, &org, id).await?,
    ))
}

/// Flags to switch: named ones, or all at once.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct FeatureChange {
    /// Flag name → on (true) or off (false).
    pub features: BTreeMap<String, bool>,
    /// Every flag on (true) or off (false); applied before `features`.
    pub all: Option<bool>,
}

/// The organization's eleven feature flags.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/features", tag = "features",
    params(("org" = String, Path, description = "The organization's id or name")),
    responses((status = 200, description = "Flags", body = Vec<ops::features::FeatureView>),
        (status = "default", description = "An error", body = super::ErrorBody)))]
pub async fn list_features(
    State(s): State<Arc<AppState>>,
    auth: Authed,
    Path(org): Path<String>,
) -> ApiResult<Json<Vec<ops::features::FeatureView>>> {
    Ok(Json(
        ops::features::list(&s.store, &auth.actor, &org).await?,
    ))
}

/// Switches one or several flags in one change; answers all eleven.
#[utoipa::path(patch, path = "/api/v1/orgs/{org}/features", tag = "features", request_body = FeatureChange,
    params(("org" = String, Path, description = "The organization's id or name")),
    responses((status = 200, description = "Flags after the change", body = Vec<ops::features::FeatureView>),
        (status = "default", description = "An error", body = super::ErrorBody)))]
pub async fn set_features(
    State(s): State<Arc<AppState>>,
    auth: Authed,
    Path(org): Path<String>,
    JsonBody(req): JsonBody<FeatureChange>,
) -> ApiResult<Json<Vec<ops::features::FeatureView>>> {
    let mut changes: Vec<(store::Feature, bool)> = match req.all {
        Some(on) => store::Feature::ALL.iter().map(|f| (*f, on)).collect(),
        None => Vec::new(),
    };
    for (name, on) in &req.features {
        let f = ops::features::feature(name).map_err(|_| {
            OpsError::invalid(
                &format!("features.{name}"),
                format!("unknown feature {name:?}"),
            )
        })?;
        changes.retain(|(g, _)| *g != f);
        changes.push((f, *on));
    }
    Ok(Json(
        ops::features::set(&s.store, &auth.actor, &org, &changes).await?,
    ))
}

/// The organization's limits, each with the current period's usage and reset time.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/limits", tag = "limits",
    params(("org" = String, Path, description = "The organization's id or name")),
    responses((status = 200, description = "Limits", body = Vec<ops::limits::LimitView>),
        (status = "default", description = "An error", body = super::ErrorBody)))]
pub async fn list_limits(
    State(s): State<Arc<AppState>>,
    auth: Authed,
    Path(org): Path<String>,
) -> ApiResult<Json<Vec<ops::limits::LimitView>>> {
    Ok(Json(ops::limits::list(&s.store, &auth.actor, &org).await?))
}

/// The four limit types (documentation of the path parameter).
#[derive(Debug, ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum LimitTypeName {
    /// All tokens in the UTC month.
    MonthlyTokens,
    /// Cost in the UTC month, in dollars.
    MonthlyCost,
    /// Images and videos generated in the UTC day.
    DailyAds,
    /// Metered requests in the UTC day.
    DailyRequests,
}

/// A limit value: a number, or a string such as "12.50" (dollars for monthly_cost).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum LimitValue {
    /// A JSON number.
    #[schema(value_type = f64)]
    Number(serde_json::Number),
    /// A string.
    Text(String),
}

/// A limit to set.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitChange {
    /// The limit in its unit: dollars for monthly_cost (up to 6 decimals), else a whole number.
    pub value: LimitValue,
    /// Alert at this percent of the value (1–100, default 80).
    #[serde(default = "eighty")]
    pub alert_threshold: i64,
    /// Whether it refuses requests (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn eighty() -> i64 {
    80
}

fn yes() -> bool {
    true
}

/// Creates or replaces the limit of a type.
#[utoipa::path(put, path = "/api/v1/orgs/{org}/limits/{limit_type}", tag = "limits", request_body = LimitChange,
    params(("org" = String, Path, description = "The organization's id or name"),
        ("limit_type" = LimitTypeName, Path, description = "Which limit")),
    responses((status = 200, description = "The limit", body = ops::limits::LimitView),
        (status = "default", description = "An error", body = super::ErrorBody)))]
pub async fn set_limit(
    State(s): State<Arc<AppState>>,
    auth: Authed,
    Path((org, limit_type)): Path<(String, String)>,
    JsonBody(req): JsonBody<LimitChange>,
) -> ApiResult<Json<ops::limits::LimitView>> {
    let t = ops::limits::limit_type(&limit_type)?;
    let value = match req.value {
        LimitValue::Number(n) => n.to_string(),
        LimitValue::Text(s) => s,
    };
    Ok(Json(
        ops::limits::set(
            &s.store,
            &auth.actor,
            &org,
            t,
            &value,
            req.alert_threshold,
            req.enabled,
        )
        .await?,
    ))
}

/// Removes the limit of a type.
#[utoipa::path(delete, path = "/api/v1/orgs/{org}/limits/{limit_type}", tag = "limits",
    params(("org" = String, Path, description = "The organization's id or name"),
        ("limit_type" = LimitTypeName, Path, description = "Which limit")),
    responses((status = 204, description = "Removed"),
        (status = "default", description = "An error", body = super::ErrorBody)))]
pub async fn remove_limit(
    State(s): State<Arc<AppState>>,
    auth: Authed,
    Path((org, limit_type)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let t = ops::limits::limit_type(&limit_type)?;
    ops::limits::remove(&s.store, &auth.actor, &org, t).await?;
    Ok(StatusCode::NO_CONTENT)
}
