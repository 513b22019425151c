//! The admin area (organizations, members, features, limits, keys, audit log) and the account
//! page. Each form posts to a handler that checks the session's CSRF token and calls the same
//! operation as the API; on success it redirects back (so a reload does not repeat it), on
//! failure the tab is shown again with the error beside the field. What a viewer may not do is
//! not offered: the offers come from `ops::authz`, and the operations refuse it anyway.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use store::{LimitType, Role};

use super::{csrf_field, fmt, path_part, Nav, Page, Posted, Viewer};
use crate::ops::authz::{member_change, Action};
use crate::ops::{self, OpsError};
use crate::AppState;

/// An organization row.
pub struct OrgRow {
    id: i64,
    name: String,
    members: String,
    cost: String,
    created: String,
}

/// A member row with what the viewer may do to them.
pub struct MemberRow {
    user_id: i64,
    email: String,
    role: String,
    joined: String,
    /// Roles offered, the current one selected.
    roles: Vec<(String, bool)>,
    removable: bool,
}

/// One feature flag.
pub struct FeatureRow {
    feature: String,
    enabled: bool,
    gates: &'static str,
}

/// One limit type's form.
pub struct LimitRow {
    limit_type: &'static str,
    title: String,
    unit: &'static str,
    set: bool,
    value: String,
    alert: i32,
    enabled: bool,
    usage: String,
    percent: String,
    resets: String,
    error: Option<String>,
    error_on: String,
}

/// A key row.
pub struct KeyRow {
    id: i64,
    name: String,
    prefix: String,
    kind: String,
    created: String,
    last_used: String,
    revoked: bool,
}

/// A key just created.
pub struct NewKeyShown {
    name: String,
    secret: String,
}

/// An audit row.
pub struct AuditRow {
    time: String,
    iso: String,
    actor: String,
    action: String,
    target: String,
    detail: String,
}

/// A form error shown beside its field.
pub struct FormError {
    message: String,
}

#[derive(Template, Default)]
#[template(path = "admin.html")]
struct AdminPage {
    title: String,
    nav: Option<Nav>,
    org: String,
    tab: String,
    tabs: Vec<(&'static str, &'static str)>,
    superuser: bool,
    manager: bool,
    csrf: String,
    notice: Option<String>,
    error: Option<FormError>,
    error_field: String,
    orgs: Vec<OrgRow>,
    members: Vec<MemberRow>,
    add_roles: Vec<String>,
    features: Vec<FeatureRow>,
    limits: Vec<LimitRow>,
    keys: Vec<KeyRow>,
    created: Option<NewKeyShown>,
    gateway_url: String,
    audit: Vec<AuditRow>,
    audit_before: Option<i64>,
}

/// `?notice=` after a redirect, `?before=` for the audit log.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TabQuery {
    notice: Option<String>,
    before: Option<i64>,
}

/// What the page shows beyond the tab's own data.
#[derive(Default)]
struct Extra {
    notice: Option<String>,
    error: Option<(String, String)>,
    limit_error: Option<(String, String, String)>,
    created: Option<NewKeyShown>,
    before: Option<i64>,
}

const ROLES: [Role; 3] = [Role::Owner, Role::Admin, Role::Member];

fn notice_text(code: &str) -> Option<String> {
    Some(
        match code {
            "saved" => "Saved.",
            "removed" => "Removed.",
            "revoked" => "Revoked: gateways refuse it within seconds.",
            "created" => "Created.",
            "added" => "Added.",
            _ => return None,
        }
        .to_owned(),
    )
}

/// `GET /orgs/{org}/admin/{tab}`
pub async fn tab(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Path((org, tab)): Path<(String, String)>,
    Query(q): Query<TabQuery>,
) -> Response {
    let extra = Extra {
        notice: q.notice.as_deref().and_then(notice_text),
        before: q.before,
        ..Extra::default()
    };
    render(&state, &viewer, &org, &tab, extra)
        .await
        .into_response()
}

async fn render(state: &AppState, viewer: &Viewer, org: &str, tab: &str, extra: Extra) -> Page {
    match build(state, viewer, org, tab, extra).await {
        Ok(p) => p,
        Err(e) => Page::from(e),
    }
}

async fn build(
    state: &AppState,
    viewer: &Viewer,
    org: &str,
    tab: &str,
    extra: Extra,
) -> Result<Page, OpsError> {
    let (s, a) = (&state.store, &viewer.actor);
    let found = ops::visible_org(s, a, org).await?;
    let manager = viewer.manages(found.id);
    let mut tabs = vec![("orgs", "Organizations")];
    if ops::authz::check(a, Some(found.id), Action::ReadMembers).is_ok() {
        tabs.push(("users", "Users"));
    }
    tabs.extend([
        ("features", "Features"),
        ("limits", "Usage limits"),
        ("keys", "Keys"),
    ]);
    if ops::authz::check(a, Some(found.id), Action::ReadAudit).is_ok() {
        tabs.push(("audit", "Audit log"));
    }
    if !tabs.iter().any(|(t, _)| *t == tab) {
        // A tab the viewer may not see answers as the operation would.
        return Err(match tab {
            "users" | "audit" => OpsError::Forbidden(
                "only an owner or admin of the organization may see this".into(),
            ),
            _ => OpsError::NotFound(format!("admin tab {tab:?}")),
        });
    }
    let (error, error_field) = match extra.error {
        Some((field, message)) => (Some(FormError { message }), field),
        None => (None, String::new()),
    };
    let mut page = AdminPage {
        title: format!("{} admin", found.name),
        nav: Some(viewer.nav(state, Some(&found), "admin").await),
        org: found.name.clone(),
        tab: tab.to_owned(),
        tabs,
        superuser: a.superuser,
        manager,
        csrf: viewer.csrf.clone(),
        notice: extra.notice,
        error,
        error_field,
        created: extra.created,
        gateway_url: state.settings.gateway_url.clone(),
        ..AdminPage::default()
    };
    let name = found.name.as_str();
    match tab {
        "orgs" => {
            page.orgs = ops::orgs::list(s, a)
                .await?
                .into_iter()
                .map(|o| OrgRow {
                    id: o.id,
                    members: fmt::thousands(o.members),
                    cost: fmt::dollars(o.month_cost_micros),
                    created: fmt::utc(o.created_at),
                    name: o.name,
                })
                .collect();
        }
        "users" => {
            page.members = ops::members::list(s, a, name)
                .await?
                .into_iter()
                .map(|m| {
                    let offered: Vec<(String, bool)> = ROLES
                        .iter()
                        .filter(|r| {
                            **r == m.role
                                || member_change(a, found.id, m.user_id, Some(m.role), Some(**r))
                                    .is_ok()
                        })
                        .map(|r| (r.to_string(), *r == m.role))
                        .collect();
                    let changeable = offered.len() > 1;
                    MemberRow {
                        removable: member_change(a, found.id, m.user_id, Some(m.role), None)
                            .is_ok(),
                        roles: if changeable { offered } else { Vec::new() },
                        user_id: m.user_id,
                        email: m.email,
                        role: m.role.to_string(),
                        joined: fmt::utc(m.joined_at),
                    }
                })
                .collect();
            page.add_roles = ROLES
                .iter()
                .rev()
                .filter(|r| member_change(a, found.id, -1, None, Some(**r)).is_ok())
                .map(|r| r.to_string())
                .collect();
        }
        "features" => {
            page.features = ops::features::list(s, a, name)
                .await?
                .into_iter()
                .map(|f| FeatureRow {
                    feature: f.feature,
                    enabled: f.enabled,
                    gates: f.gates,
                })
                .collect();
        }
        "limits" => {
            let current = ops::limits::list(s, a, name).await?;
            page.limits = LimitType::ALL
                .iter()
                .map(|t| {
                    let l = current.iter().find(|l| l.limit_type == t.as_str());
                    let show = |raw: i64| match t {
                        LimitType::MonthlyCost => fmt::dollars(raw),
                        _ => fmt::thousands(raw),
                    };
                    let (error, error_on) = match &extra.limit_error {
                        Some((lt, field, m)) if lt == t.as_str() => {
                            (Some(m.clone()), field.clone())
                        }
                        _ => (None, String::new()),
                    };
                    LimitRow {
                        limit_type: t.as_str(),
                        title: super::dashboard::limit_name(t.as_str()),
                        unit: match t {
                            LimitType::MonthlyCost => "US dollars",
                            LimitType::MonthlyTokens => "tokens per UTC month",
                            LimitType::DailyAds => "images and videos per UTC day",
                            LimitType::DailyRequests => "requests per UTC day",
                        },
                        set: l.is_some(),
                        value: l.map_or(String::new(), |l| match t {
                            LimitType::MonthlyCost => fmt::dollars_plain(l.raw_value),
                            _ => l.raw_value.to_string(),
                        }),
                        alert: l.map_or(80, |l| l.alert_threshold),
                        enabled: l.is_none_or(|l| l.enabled),
                        usage: l.map_or_else(|| "no limit set".into(), |l| show(l.raw_usage)),
                        percent: l.map_or(String::new(), |l| fmt::percent(l.percent)),
                        resets: l.map_or(String::new(), |l| fmt::utc(l.resets_at)),
                        error,
                        error_on,
                    }
                })
                .collect();
        }
        "keys" => {
            page.keys = ops::keys::list(s, a, name)
                .await?
                .into_iter()
                .map(|k| KeyRow {
                    id: k.id,
                    name: if k.name.is_empty() {
                        "(unnamed)".into()
                    } else {
                        k.name
                    },
                    prefix: k.prefix,
                    kind: k.kind.to_string(),
                    created: fmt::utc(k.created_at),
                    last_used: k.last_used_at.map_or_else(|| "never".into(), fmt::utc),
                    revoked: k.revoked_at.is_some(),
                })
                .collect();
        }
        "audit" => {
            let f = ops::usage::AuditFilter {
                org: Some(name.to_owned()),
                before: extra.before,
                limit: Some(50),
                ..Default::default()
            };
            let entries = ops::usage::audit(s, a, &f).await?;
            page.audit_before = (entries.len() == 50)
                .then(|| entries.last().map(|e| e.id))
                .flatten();
            page.audit = entries
                .into_iter()
                .map(|e| AuditRow {
                    time: fmt::utc(e.occurred_at),
                    iso: e.occurred_at.to_rfc3339(),
                    actor: e.actor,
                    action: e.action,
                    target: e.target,
                    detail: e.detail,
                })
                .collect();
        }
        _ => {}
    }
    Ok(Page::render(&page))
}

/// After a change: back to the tab, with a notice.
fn back(org: &str, tab: &str, notice: &str) -> Page {
    Page::Redirect(format!(
        "/orgs/{}/admin/{tab}?notice={notice}",
        path_part(org)
    ))
}

/// A failed form: a 400 or 409 shows the tab again with the error beside the field; a refusal
/// (403, 404) or anything else is an error page.
async fn failed(state: &AppState, viewer: &Viewer, org: &str, tab: &str, e: OpsError) -> Page {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let (field, message) = match &e {
        OpsError::Invalid { field, message } => (field.clone(), message.clone()),
        OpsError::Conflict(m) => (String::new(), m.clone()),
        _ => return Page::from(e),
    };
    let extra = Extra {
        error: Some((field, message)),
        ..Extra::default()
    };
    render(state, viewer, org, tab, extra)
        .await
        .with_status(status)
}

/// The form fields every post carries.
#[derive(Deserialize)]
pub struct NameForm {
    csrf_token: String,
    #[serde(default)]
    name: String,
}

/// `POST /orgs/{org}/admin/orgs/create`
pub async fn create_org(
    State(state): State<Arc<AppState>>,
    Path(org): Path<String>,
    Posted { viewer, form: f }: Posted<NameForm>,
) -> Page {
    match ops::orgs::create(
        &state.store,
        &viewer.actor,
        &f.name,
        &state.settings.features_on,
    )
    .await
    {
        Ok(o) => back(&o.name, "orgs", "created"),
        Err(e) => failed(&state, &viewer, &org, "orgs", e).await,
    }
}

/// `POST /orgs/{org}/admin/orgs/rename`
pub async fn rename_org(
    State(state): State<Arc<AppState>>,
    Path(org): Path<String>,
    Posted { viewer, form: f }: Posted<NameForm>,
) -> Page {
    match ops::orgs::rename(&state.store, &viewer.actor, &org, &f.name).await {
        Ok(o) => back(&o.name, "orgs", "saved"),
        Err(e) => failed(&state, &viewer, &org, "orgs", e).await,
    }
}

/// A member form.
#[derive(Deserialize)]
pub struct MemberForm {
    csrf_token: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    role: String,
}

/// `POST /orgs/{org}/admin/users/add`
pub async fn add_member(
    State(state): State<Arc<AppState>>,
    Path(org): Path<String>,
    Posted { viewer, form: f }: Posted<MemberForm>,
) -> Page {
    let result = async {
        let role = ops::members::role(&f.role)?;
        ops::members::add(&state.store, &viewer.actor, &org, &f.email, role).await
    }
    .await;
    match result {
        Ok(_) => back(&org, "users", "added"),
        Err(OpsError::NotFound(m)) if m.starts_with("user") => {
            failed(
                &state,
                &viewer,
                &org,
                "users",
                OpsError::invalid("email", format!("No account {m}.")),
            )
            .await
        }
        Err(e) => failed(&state, &viewer, &org, "users", e).await,
    }
}

/// `POST /orgs/{org}/admin/users/role`
pub async fn set_role(
    State(state): State<Arc<AppState>>,
    Path(org): Path<String>,
    Posted { viewer, form: f }: Posted<MemberForm>,
) -> Page {
    let result = async {
        let role = ops::members::role(&f.role)?;
        ops::members::set_role(&state.store, &viewer.actor, &org, &f.user, role).await
    }
    .await;
    match result {
        Ok(_) => back(&org, "users", "saved"),
        Err(e) => failed(&state, &viewer, &org, "users", e).await,
    }
}

/// `POST /orgs/{org}/admin/users/remove`
pub async fn remove_member(
    State(state): State<Arc<AppState>>,
    Path(org): Path<String>,
    Posted { viewer, form: f }: Posted<MemberForm>,
) -> Page {
    match ops::members::remove(&state.store, &viewer.actor, &org, &f.user).await {
        Ok(_) => back(&org, "users", "removed"),
        Err(e) => failed(&state, &viewer, &org, "users", e).await,
    }
}

/// `POST /orgs/{org}/admin/features/save`: the checked boxes are on, the rest off; or all at once.
pub async fn set_features(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Path(org): Path<String>,
    body: axum::body::Bytes,
) -> Page {
    // Repeated `on` fields: parsed by hand (serde's form decoding keeps one value per name).
    let pairs: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if let Err(p) = viewer.check_csrf(field("csrf_token").unwrap_or("")) {
        return p;
    }
    let result = async {
        let on: Vec<store::Feature> = pairs
            .iter()
            .filter(|(k, _)| k == "on")
            .map(|(_, v)| ops::features::feature(v))
            .collect::<Result<_, _>>()?;
        let changes: Vec<(store::Feature, bool)> = store::Feature::ALL
            .iter()
            .map(|f| {
                let enabled = match field("all") {
                    Some("on") => true,
                    Some("off") => false,
                    _ => on.contains(f),
                };
                (*f, enabled)
            })
            .collect();
        ops::features::set(&state.store, &viewer.actor, &org, &changes).await
    }
    .await;
    match result {
        Ok(_) => back(&org, "features", "saved"),
        Err(e) => failed(&state, &viewer, &org, "features", e).await,
    }
}

/// A limit form.
#[derive(Deserialize)]
pub struct LimitForm {
    csrf_token: String,
    limit_type: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    alert_threshold: String,
    #[serde(default)]
    enabled: Option<String>,
    #[serde(default)]
    action: String,
}

/// `POST /orgs/{org}/admin/limits/save`: save or remove one limit type.
pub async fn set_limit(
    State(state): State<Arc<AppState>>,
    Path(org): Path<String>,
    Posted { viewer, form: f }: Posted<LimitForm>,
) -> Page {
    let (s, a) = (&state.store, &viewer.actor);
    let result = async {
        let t = ops::limits::limit_type(&f.limit_type)?;
        if f.action == "remove" {
            return ops::limits::remove(s, a, &org, t).await.map(|_| "removed");
        }
        let alert: i64 = match f.alert_threshold.trim() {
            "" => 80,
            v => v.parse().map_err(|_| {
                OpsError::invalid(
                    "alert_threshold",
                    format!("must be a percent between 1 and 100, got {v:?}"),
                )
            })?,
        };
        if f.value.trim().is_empty() {
            return Err(OpsError::invalid(
                "value",
                "give a limit (0 refuses everything)",
            ));
        }
        ops::limits::set(s, a, &org, t, &f.value, alert, f.enabled.is_some())
            .await
            .map(|_| "saved")
    }
    .await;
    match result {
        Ok(notice) => back(&org, "limits", notice),
        Err(OpsError::Invalid { field, message }) => {
            let extra = Extra {
                limit_error: Some((
                    f.limit_type.clone(),
                    field,
                    format!("Not saved: {message}."),
                )),
                ..Extra::default()
            };
            render(&state, &viewer, &org, "limits", extra)
                .await
                .with_status(StatusCode::BAD_REQUEST)
        }
        Err(e) => failed(&state, &viewer, &org, "limits", e).await,
    }
}

/// A key form.
#[derive(Deserialize)]
pub struct KeyForm {
    csrf_token: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    id: String,
}

/// `POST /orgs/{org}/admin/keys/create`: the new key is shown on this answer only (not a redirect).
pub async fn create_key(
    State(state): State<Arc<AppState>>,
    Path(org): Path<String>,
    Posted { viewer, form: f }: Posted<KeyForm>,
) -> Page {
    let new = ops::keys::NewKey {
        service: f.kind == "service",
        name: f.name.clone(),
        user: None,
        // The console makes service keys for this org only; wider ones with the API or CLI.
        ..ops::keys::NewKey::default()
    };
    match ops::keys::create(&state.store, &viewer.actor, &org, &new).await {
        Ok(k) => {
            let extra = Extra {
                created: Some(NewKeyShown {
                    name: if f.name.trim().is_empty() {
                        "(unnamed)".into()
                    } else {
                        f.name.trim().to_owned()
                    },
                    secret: k.secret,
                }),
                notice: Some("Created.".into()),
                ..Extra::default()
            };
            render(&state, &viewer, &org, "keys", extra).await
        }
        Err(e) => failed(&state, &viewer, &org, "keys", e).await,
    }
}

/// `POST /orgs/{org}/admin/keys/revoke`
pub async fn revoke_key(
    State(state): State<Arc<AppState>>,
    Path(org): Path<String>,
    Posted { viewer, form: f }: Posted<KeyForm>,
) -> Page {
    let result = async {
        let id: i64 =
            f.id.trim()
                .parse()
                .map_err(|_| OpsError::invalid("id", "not a key id"))?;
        ops::keys::revoke(&state.store, &viewer.actor, &org, id).await
    }
    .await;
    match result {
        Ok(_) => back(&org, "keys", "revoked"),
        Err(e) => failed(&state, &viewer, &org, "keys", e).await,
    }
}

csrf_field!(
    NameForm,
    MemberForm,
    LimitForm,
    KeyForm,
    PasswordForm,
    TokenForm
);

/// A token row.
pub struct TokenRow {
    id: i64,
    name: String,
    prefix: String,
    created: String,
    expires: String,
    last_used: String,
    revoked: bool,
}

#[derive(Template, Default)]
#[template(path = "account.html")]
struct AccountPage {
    title: String,
    nav: Option<Nav>,
    csrf: String,
    notice: Option<String>,
    error_field: String,
    pw_error: Option<String>,
    tok_error: Option<String>,
    created: Option<String>,
    tokens: Vec<TokenRow>,
}

async fn account_page(state: &AppState, viewer: &Viewer, mut page: AccountPage) -> Page {
    let tokens = match ops::tokens::list(&state.store, &viewer.actor).await {
        Ok(t) => t,
        Err(e) => return Page::from(e),
    };
    page.title = "Account".into();
    page.nav = Some(viewer.nav(state, None, "account").await);
    page.csrf = viewer.csrf.clone();
    page.tokens = tokens
        .into_iter()
        .map(|t| TokenRow {
            id: t.id,
            name: if t.name.is_empty() {
                "(unnamed)".into()
            } else {
                t.name
            },
            prefix: t.prefix,
            created: fmt::utc(t.created_at),
            expires: t.expires_at.map_or_else(|| "never".into(), fmt::utc),
            last_used: t.last_used_at.map_or_else(|| "never".into(), fmt::utc),
            revoked: t.revoked_at.is_some(),
        })
        .collect();
    Page::render(&page)
}

/// `GET /account`
pub async fn account(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Query(q): Query<TabQuery>,
) -> Page {
    let page = AccountPage {
        notice: q.notice.as_deref().and_then(notice_text),
        ..AccountPage::default()
    };
    account_page(&state, &viewer, page).await
}

/// A password form.
#[derive(Deserialize)]
pub struct PasswordForm {
    csrf_token: String,
    current_password: String,
    new_password: String,
}

/// `POST /account/password`: other sessions end; this one stays.
pub async fn change_password(
    State(state): State<Arc<AppState>>,
    Posted { viewer, form: f }: Posted<PasswordForm>,
) -> Page {
    let me = viewer.actor.user_id.unwrap_or_default().to_string();
    match ops::users::set_password(
        &state.store,
        &viewer.actor,
        &me,
        Some(&f.current_password),
        &f.new_password,
        Some(&viewer.id_hash),
    )
    .await
    {
        Ok(()) => Page::Redirect("/account?notice=saved".into()),
        Err(OpsError::Invalid { field, message }) => {
            let page = AccountPage {
                error_field: field,
                pw_error: Some(format!("Not changed: {message}.")),
                ..AccountPage::default()
            };
            account_page(&state, &viewer, page)
                .await
                .with_status(StatusCode::BAD_REQUEST)
        }
        Err(e) => Page::from(e),
    }
}

/// A token form.
#[derive(Deserialize)]
pub struct TokenForm {
    csrf_token: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    expires_days: String,
    #[serde(default)]
    id: String,
}

/// `POST /account/tokens`: the token is shown on this answer only.
pub async fn create_token(
    State(state): State<Arc<AppState>>,
    Posted { viewer, form: f }: Posted<TokenForm>,
) -> Page {
    let result = async {
        let days = match f.expires_days.trim() {
            "" => None,
            d => Some(d.parse::<i64>().map_err(|_| {
                OpsError::invalid(
                    "expires_days",
                    format!("must be a whole number of days, got {d:?}"),
                )
            })?),
        };
        ops::tokens::create(&state.store, &viewer.actor, None, &f.name, days).await
    }
    .await;
    match result {
        Ok(t) => {
            let page = AccountPage {
                created: Some(t.token),
                ..AccountPage::default()
            };
            account_page(&state, &viewer, page).await
        }
        Err(OpsError::Invalid { field, message }) => {
            let page = AccountPage {
                error_field: field,
                tok_error: Some(format!("Not created: {message}.")),
                ..AccountPage::default()
            };
            account_page(&state, &viewer, page)
                .await
                .with_status(StatusCode::BAD_REQUEST)
        }
        Err(e) => Page::from(e),
    }
}

/// `POST /account/tokens/revoke`
pub async fn revoke_token(
    State(state): State<Arc<AppState>>,
    Posted { viewer, form: f }: Posted<TokenForm>,
) -> Page {
    let result = async {
        let id: i64 =
            f.id.trim()
                .parse()
                .map_err(|_| OpsError::invalid("id", "not a token id"))?;
        ops::tokens::revoke(&state.store, &viewer.actor, id).await
    }
    .await;
    match result {
        Ok(_) => Page::Redirect("/account?notice=revoked".into()),
        Err(e) => Page::from(e),
    }
}
