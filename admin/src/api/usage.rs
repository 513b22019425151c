//! Usage over a window of UTC days (from the rollups), recent events, alerts, the cross-org
//! comparison and the audit log.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::Authed;
use super::{ApiResult, QueryParams};
use crate::ops::parse::{self, RangeName};
use crate::ops::{self, usage};
use crate::AppState;

/// A window of UTC days: `range`, or `from`/`to` (default: this month up to today).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, default)]
#[into_params(parameter_in = Query)]
pub struct WindowQuery {
    /// this_month, last_7_days or last_30_days.
    #[param(inline)]
    pub range: Option<RangeName>,
    /// First day included, YYYY-MM-DD (UTC).
    #[param(format = Date)]
    pub from: Option<String>,
    /// Last day included, YYYY-MM-DD (UTC).
    #[param(format = Date)]
    pub to: Option<String>,
}

impl WindowQuery {
    fn window(&self) -> Result<parse::Window, ops::OpsError> {
        parse::window(
            Utc::now().date_naive(),
            self.range,
            self.from.as_deref(),
            self.to.as_deref(),
        )
    }
}

/// The organization's usage over a window: totals and breakdowns by provider, model, tool,
/// user and day. "requests" counts metered requests, as the daily_requests limit does.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/usage", tag = "usage",
    params(("org" = String, Path, description = "The organization's id or name"), WindowQuery),
    responses((status = 200, description = "Usage", body = usage::UsageReport),
        (status = "default", description = "An error", body = super::ErrorBody)))]
pub async fn org_usage(
    State(s): State<Arc<AppState>>,
    auth: Authed,
    Path(org): Path<String>,
    QueryParams(q): QueryParams<WindowQuery>,
) -> ApiResult<Json<usage::UsageReport>> {
    let w = q.window()?;
    Ok(Json(usage::report(&s.store, &auth.actor, &org, w).await?))
}

/// A page of events.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, default)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// From the previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Events per page (1–100, default 100).
    pub limit: Option<i64>,
}

/// The organization's most recent events, newest first (every request, metered or not).
#[utoipa::path(get, path = "/api/v1/orgs/{org}/events", tag = "usage",
    params(("org" = String, Path, description = "The organization's id or name"), EventsQuery),
    responses((status = 200, description = "Events", body = usage::EventsPage),
        (status = "default", description = "An error", body = super::ErrorBody)))]
pub async fn org_events(
    State(s): State<Arc<AppState>>,
    auth: Authed,
    Path(org): Path<String>,
    QueryParams(q): QueryParams<EventsQuery>,
) -> ApiResult<Json<usage::EventsPage>> {
    let mut page = usage::events(&s.store, &auth.actor, &org, q.cursor.as_deref(), q.limit).await?;
    let kept = s.settings.event_retention_days;
    page.kept_days = (kept > 0).then_some(kept);
    Ok(Json(page))
}

/// The organization's limit alerts, newest first.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/alerts", tag = "usage",
    params(("org" = String, Path, description = "The organization's id or name")),
    responses((status = 200, description = "Alerts", body = Vec<usage::AlertView>),
        (status = "default", description = "An error", body = super::ErrorBody)))]
pub async fn org_alerts(
    State(s): State<Arc<AppState>>,
    auth: Authed,
    Path(org): Path<String>,
) -> ApiResult<Json<Vec<usage::AlertView>>> {
    Ok(Json(usage::alerts(&s.store, &auth.actor, &org).await?))
}

/// A page of the audit log.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, default)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// First day included, YYYY-MM-DD (UTC).
    pub from: Option<String>,
    /// Last day included, YYYY-MM-DD (UTC).
    pub to: Option<String>,
    /// Entries older than this id (the last id of the previous page).
    pub before: Option<i64>,
    /// Entries per page (1–200, default 50).
    pub limit: Option<i64>,
}

impl AuditQuery {
    fn filter(&self, org: Option<String>) -> Result<usage::AuditFilter, ops::OpsError> {
        Ok(usage::AuditFilter {
            org,
            from: self
                .from
                .as_deref()
                .map(|d| parse::day("from", d))
                .transpose()?,
            to: self
                .to
                .as_deref()
                .map(|d| parse::day("to", d))
                .transpose()?,
            before: self.before,
            limit: self.limit,
        })
    }
}

/// The organization's audit log, newest first (owners and admins).
#[utoipa::path(get, path = "/api/v1/orgs/{org}/audit", tag = "audit",
    params(("org" = String, Path, description = "The organization's id or name"), AuditQuery),
    responses((status = 200, description = "Entries", body = Vec<usage::AuditView>),
        (status = "default", description = "An error", body = super::ErrorBody)))]
pub async fn org_audit(
    State(s): State<Arc<AppState>>,
    auth: Authed,
    Path(org): Path<String>,
    QueryParams(q): QueryParams<AuditQuery>,
) -> ApiResult<Json<Vec<usage::AuditView>>> {
    let f = q.filter(Some(org))?;
    Ok(Json(usage::audit(&s.store, &auth.actor, &f).await?))
}

/// The whole audit log, newest first (superuser).
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit",
    params(AuditQuery),
    responses((status = 200, description = "Entries", body = Vec<usage::AuditView>),
        (status = "default", description = "An error", body = super::ErrorBody)))]
pub async fn all_audit(
    State(s): State<Arc<AppState>>,
    auth: Authed,
    QueryParams(q): QueryParams<AuditQuery>,
) -> ApiResult<Json<Vec<usage::AuditView>>> {
    let f = q.filter(None)?;
    Ok(Json(usage::audit(&s.store, &auth.actor, &f).await?))
}

/// Every organization's usage over a window, costliest first (superuser).
#[utoipa::path(get, path = "/api/v1/usage/orgs", tag = "usage",
    params(WindowQuery),
    responses((status = 200, description = "One row per organization, keyed by name", body = Vec<usage::Totals>),
        (status = "default", description = "An error", body = super::ErrorBody)))]
pub async fn cross_org(
    State(s): State<Arc<AppState>>,
    auth: Authed,
    QueryParams(q): QueryParams<WindowQuery>,
) -> ApiResult<Json<Vec<usage::Totals>>> {
    let w = q.window()?;
    Ok(Json(usage::cross_org(&s.store, &auth.actor, w).await?))
}

/// What to export.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, default)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// First UTC day included (YYYY-MM-DD).
    pub from: String,
    /// Last UTC day included (YYYY-MM-DD).
    pub to: String,
    /// `jsonl` (default) or `csv`.
    pub format: Option<String>,
}

/// The organization's usage events of a range of UTC days as a download, oldest first, streamed
/// a page at a time (any size): owners and superusers, to keep them before retention deletes
/// them.
#[utoipa::path(get, path = "/api/v1/orgs/{org}/events/export", tag = "usage",
    params(("org" = String, Path, description = "The organization's id or name"), ExportQuery),
    responses((status = 200, description = "The events: JSON lines, or CSV with a header line",
            content(("application/x-ndjson"), ("text/csv"))),
        (status = "default", description = "An error", body = super::ErrorBody)))]
pub async fn org_events_export(
    State(s): State<Arc<AppState>>,
    auth: Authed,
    Path(org): Path<String>,
    QueryParams(q): QueryParams<ExportQuery>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let format: crate::ops::export::Format = q.format.as_deref().unwrap_or("jsonl").parse()?;
    let export =
        crate::ops::export::prepare(&s.store, &auth.actor, &org, (&q.from, &q.to), format).await?;
    let (content_type, ext) = match format {
        crate::ops::export::Format::Csv => ("text/csv; charset=utf-8", "csv"),
        crate::ops::export::Format::Jsonl => ("application/x-ndjson", "jsonl"),
    };
    let file = format!(
        "{}-events-{}-{}.{ext}",
        export.org,
        q.from.trim(),
        q.to.trim()
    );
    let header = export.header();
    let store = s.store.clone();
    let pages = futures_util::stream::unfold(Some(export), move |state| {
        let store = store.clone();
        async move {
            let mut export = state?;
            match export.next_page(&store).await {
                Ok(Some((bytes, _))) => Some((Ok(axum::body::Bytes::from(bytes)), Some(export))),
                Ok(None) => None,
                Err(e) => {
                    // The status is sent: the client sees the download cut short.
                    tracing::error!(error = %e, "export failed part-way");
                    Some((Err(std::io::Error::other("export failed")), None))
                }
            }
        }
    });
    let head = futures_util::stream::iter(header.map(|h| Ok(axum::body::Bytes::from(h))));
    let body = axum::body::Body::from_stream(futures_util::StreamExt::chain(head, pages));
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, content_type.to_owned()),
            (
                axum::http::header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"{}\"",
                    file.replace(['"', '\\'], "_")
                ),
            ),
            (axum::http::header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        body,
    )
        .into_response())
}
