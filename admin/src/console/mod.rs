//! The web console: server-rendered pages (askama templates compiled into the binary) over the
//! same operations layer, sessions, CSRF tokens and rules as the JSON API. Every form posts and
//! redirects without JavaScript; htmx (vendored) only makes navigation smoother. Every asset is
//! embedded and served from this origin.

mod admin;
pub mod chart;
mod dashboard;
pub mod fmt;

use std::sync::Arc;

use askama::Template;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use crate::api::auth::{constant_time_eq, cookie, ClientAddr, SESSION_COOKIE};
use crate::ops::{self, Actor, OpsError};
use crate::AppState;

/// The navigation every logged-in page shows.
pub struct Nav {
    /// The user's email.
    pub email: String,
    /// A superuser.
    pub superuser: bool,
    /// Orgs to pick from (names).
    pub orgs: Vec<String>,
    /// The org on screen.
    pub org: Option<String>,
    /// dashboard, admin or account.
    pub section: &'static str,
    /// The session's CSRF token, for forms.
    pub csrf: String,
    /// The admin tabs open with members for owners and admins.
    pub manager: bool,
}

/// A logged-in viewer (session cookie only: the console has no tokens).
pub struct Viewer {
    /// Who, with memberships.
    pub actor: Actor,
    /// The session's CSRF token.
    pub csrf: String,
    /// The session's id digest (kept across a password change).
    pub id_hash: String,
}

impl Viewer {
    /// Refuses a form whose CSRF token is not the session's.
    pub fn check_csrf(&self, sent: &str) -> Result<(), Page> {
        if constant_time_eq(sent.as_bytes(), self.csrf.as_bytes()) {
            return Ok(());
        }
        Err(Page::error(
            StatusCode::FORBIDDEN,
            "The form was too old or not ours (missing or wrong CSRF token). Reload the page and try again.",
        ))
    }

    /// The navigation for `org` (when one is on screen) in `section`.
    pub async fn nav(
        &self,
        state: &AppState,
        org: Option<&store::Org>,
        section: &'static str,
    ) -> Nav {
        let orgs = ops::orgs::names(&state.store, &self.actor)
            .await
            .unwrap_or_default();
        Nav {
            email: self.actor.name.clone(),
            superuser: self.actor.superuser,
            orgs,
            org: org.map(|o| o.name.clone()),
            section,
            csrf: self.csrf.clone(),
            manager: org.is_some_and(|o| self.manages(o.id)),
        }
    }

    /// Whether the viewer may manage `org` (what the pages offer; the operations decide).
    pub fn manages(&self, org: i64) -> bool {
        ops::authz::check(&self.actor, Some(org), ops::authz::Action::ManageKeys).is_ok()
    }
}

impl FromRequestParts<Arc<AppState>> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Response> {
        let login = || {
            let next = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let target = if parts.method == axum::http::Method::GET && next != "/" {
                format!(
                    "/login?next={}",
                    form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
                )
            } else {
                "/login".to_owned()
            };
            Redirect::to(&target).into_response()
        };
        let Some(secret) = cookie(parts, SESSION_COOKIE).map(str::to_owned) else {
            return Err(login());
        };
        let found = state
            .store
            .session_user(&secret, state.settings.session_idle)
            .await
            .map_err(|e| Page::from(OpsError::from(e)).into_response())?;
        let Some((session, user)) = found else {
            return Err(login());
        };
        let actor = Actor::of_user(&state.store, &user)
            .await
            .map_err(|e| Page::from(e).into_response())?;
        Ok(Viewer {
            actor,
            csrf: session.csrf_token,
            id_hash: session.id_hash,
        })
    }
}

/// A form that carries the session's CSRF token.
pub trait CsrfField {
    /// The token the form sent.
    fn csrf(&self) -> &str;
}

/// A form posted by a logged-in viewer whose CSRF token is the session's: what every console
/// form handler takes, so none of them can forget the check.
pub struct Posted<T> {
    /// Who posted it.
    pub viewer: Viewer,
    /// The form.
    pub form: T,
}

impl<T> axum::extract::FromRequest<Arc<AppState>> for Posted<T>
where
    T: serde::de::DeserializeOwned + CsrfField + Send,
{
    type Rejection = Response;

    async fn from_request(
        req: axum::extract::Request,
        state: &Arc<AppState>,
    ) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let viewer = Viewer::from_request_parts(&mut parts, state).await?;
        let req = axum::extract::Request::from_parts(parts, body);
        let Form(form) = Form::<T>::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        viewer
            .check_csrf(form.csrf())
            .map_err(IntoResponse::into_response)?;
        Ok(Posted { viewer, form })
    }
}

/// Implements [`CsrfField`] for forms with a `csrf_token` field.
macro_rules! csrf_field {
    ($($t:ty),+) => {$(
        impl $crate::console::CsrfField for $t {
            fn csrf(&self) -> &str {
                &self.csrf_token
            }
        }
    )+};
}
pub(crate) use csrf_field;

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    title: String,
    message: String,
    nav: Option<Nav>,
}

/// A rendered page, or an error page with its status.
pub enum Page {
    /// HTML with a status.
    Html(StatusCode, String),
    /// A redirect (after a successful form post).
    Redirect(String),
}

impl Page {
    /// An error page.
    pub fn error(status: StatusCode, message: &str) -> Page {
        let title = match status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::BAD_REQUEST => "Cannot do that",
            StatusCode::CONFLICT => "Cannot do that",
            StatusCode::TOO_MANY_REQUESTS => "Too many attempts",
            _ => "Something went wrong",
        };
        let page = MessagePage {
            title: title.into(),
            message: message.into(),
            nav: None,
        };
        Page::Html(status, page.render().unwrap_or_else(|_| message.to_owned()))
    }

    /// Renders a template.
    pub fn render(t: &impl Template) -> Page {
        match t.render() {
            Ok(html) => Page::Html(StatusCode::OK, html),
            Err(e) => Page::from(OpsError::Internal(format!("template: {e}"))),
        }
    }

    /// The same page with another status.
    pub fn with_status(self, status: StatusCode) -> Page {
        match self {
            Page::Html(_, html) => Page::Html(status, html),
            other => other,
        }
    }
}

impl From<OpsError> for Page {
    fn from(e: OpsError) -> Page {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = match &e {
            OpsError::Internal(detail) => {
                tracing::error!(error = %detail, "console request failed");
                "Something went wrong on our side.".to_owned()
            }
            e => e.to_string(),
        };
        Page::error(status, &message)
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        match self {
            Page::Html(status, html) => {
                let mut r = (status, html).into_response();
                let h = r.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                h.insert(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(
                        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                         frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
                    ),
                );
                h.insert(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                );
                h.insert(
                    header::REFERRER_POLICY,
                    HeaderValue::from_static("same-origin"),
                );
                r
            }
            Page::Redirect(to) => Redirect::to(&to).into_response(),
        }
    }
}

/// The console's routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/pick", get(pick))
        .route("/static/{file}", get(asset))
        .route("/orgs/{org}/dashboard", get(dashboard::page))
        .route("/orgs/{org}/export/{file}", get(dashboard::export))
        .route("/orgs/{org}/admin/{tab}", get(admin::tab))
        .route("/orgs/{org}/admin/orgs/create", post(admin::create_org))
        .route("/orgs/{org}/admin/orgs/rename", post(admin::rename_org))
        .route("/orgs/{org}/admin/users/add", post(admin::add_member))
        .route("/orgs/{org}/admin/users/role", post(admin::set_role))
        .route("/orgs/{org}/admin/users/remove", post(admin::remove_member))
        .route("/orgs/{org}/admin/features/save", post(admin::set_features))
        .route("/orgs/{org}/admin/limits/save", post(admin::set_limit))
        .route("/orgs/{org}/admin/keys/create", post(admin::create_key))
        .route("/orgs/{org}/admin/keys/revoke", post(admin::revoke_key))
        .route("/account", get(admin::account))
        .route("/account/password", post(admin::change_password))
        .route("/account/tokens", post(admin::create_token))
        .route("/account/tokens/revoke", post(admin::revoke_token))
        .with_state(state)
}

/// Embedded assets, cached for a day (their names change with their content only on upgrade).
async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, kind): (&'static [u8], &'static str) = match file.as_str() {
        "htmx.min.js" => (
            include_bytes!("../../static/htmx.min.js"),
            "text/javascript",
        ),
        "console.js" => (include_bytes!("../../static/console.js"), "text/javascript"),
        "console.css" => (include_bytes!("../../static/console.css"), "text/css"),
        _ => return (StatusCode::NOT_FOUND, "not found\n").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response()
}

/// `/`: the first org's dashboard, or the login page.
async fn home(State(state): State<Arc<AppState>>, viewer: Result<Viewer, Response>) -> Response {
    let Ok(viewer) = viewer else {
        return Redirect::to("/login").into_response();
    };
    match ops::orgs::names(&state.store, &viewer.actor).await {
        Ok(orgs) => match orgs.first() {
            Some(name) => {
                Redirect::to(&format!("/orgs/{}/dashboard", path_part(name))).into_response()
            }
            None => Redirect::to("/account").into_response(),
        },
        Err(e) => Page::from(e).into_response(),
    }
}

/// An org name as a path segment.
pub fn path_part(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[derive(Deserialize)]
struct PickQuery {
    org: String,
}

async fn pick(Query(q): Query<PickQuery>) -> Redirect {
    Redirect::to(&format!("/orgs/{}/dashboard", path_part(&q.org)))
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    title: String,
    nav: Option<Nav>,
    email: String,
    next: String,
    error: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct NextQuery {
    next: String,
}

async fn login_page(Query(q): Query<NextQuery>) -> Page {
    Page::render(&LoginPage {
        title: "Log in".into(),
        nav: None,
        email: String::new(),
        next: q.next,
        error: None,
    })
}

#[derive(Deserialize)]
struct LoginForm {
    email: String,
    password: String,
    #[serde(default)]
    next: String,
}

/// Only paths on this origin are followed after login: one leading `/`, then neither `/` nor
/// `\`, and no whitespace or control character anywhere (browsers drop tabs and newlines from
/// URLs, so `/\t/evil.example` would become `//evil.example`).
fn safe_next(next: &str) -> &str {
    let mut chars = next.chars();
    let local = chars.next() == Some('/')
        && !matches!(chars.next(), Some('/' | '\\'))
        && !next.contains('\\')
        && !next.chars().any(|c| c.is_control() || c.is_whitespace());
    if local {
        next
    } else {
        "/"
    }
}

async fn login(
    State(state): State<Arc<AppState>>,
    ClientAddr(addr): ClientAddr,
    Form(f): Form<LoginForm>,
) -> Response {
    match crate::api::account::start_session(&state, addr, &f.email, &f.password).await {
        Ok((cookie, _)) => {
            let mut r = Redirect::to(safe_next(&f.next)).into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(e) => {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
            let retry = match e {
                OpsError::TooManyAttempts(secs) => Some(secs),
                _ => None,
            };
            let page = Page::render(&LoginPage {
                title: "Log in".into(),
                nav: None,
                email: f.email,
                next: f.next,
                error: Some(match e {
                    OpsError::Unauthenticated(m) => m,
                    e => e.to_string(),
                }),
            })
            .with_status(status);
            let mut r = page.into_response();
            if let Some(v) = retry.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn only_local_paths_are_followed_after_login() {
        for ok in [
            "/",
            "/orgs/acme/dashboard",
            "/orgs/acme/dashboard?range=last_7_days",
        ] {
            assert_eq!(safe_next(ok), ok);
        }
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "https://evil.example",
            "evil.example",
            "/ok\\..",
            "",
        ] {
            assert_eq!(safe_next(bad), "/", "{bad:?}");
        }
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf_token: String,
}

async fn logout(
    State(state): State<Arc<AppState>>,
    viewer: Viewer,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(p) = viewer.check_csrf(&f.csrf_token) {
        return p.into_response();
    }
    if let Err(e) = state.store.delete_session(&viewer.id_hash).await {
        return Page::from(OpsError::from(e)).into_response();
    }
    let mut r = Redirect::to("/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}
