//! The admin JSON API end to end: a real admin server on a loopback port over a real database
//! (SQLite, and PostgreSQL when `TOLLGATE_TEST_POSTGRES` is set), driven over HTTP as a script
//! or the console would: logins, sessions, CSRF, tokens, every endpoint and every rule.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use store::{ConnectOptions, Feature, Store};

use crate::harness::{client, eventually, postgres_url, unique_schema};

/// A running admin service over its own database.
pub struct Admin {
    pub url: String,
    pub store: Store,
    running: Option<admin::RunningAdmin>,
    _dir: Option<tempfile::TempDir>,
}

/// Which database a test runs on.
#[derive(Clone, Copy, Debug)]
pub enum Db {
    Sqlite,
    Postgres,
}

impl Admin {
    /// `None` only for PostgreSQL without a test server (the skip is printed).
    pub async fn start(db: Db, tweak: impl FnOnce(&mut admin::AdminSettings)) -> Option<Admin> {
        let (store, dir) = match db {
            Db::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}/admin.db", dir.path().display());
                let s = Store::connect(&url, &ConnectOptions::default())
                    .await
                    .unwrap();
                (s, Some(dir))
            }
            Db::Postgres => {
                let url = postgres_url()?;
                let opts = ConnectOptions {
                    pg_schema: Some(unique_schema("admin")),
                    max_connections: 4,
                    ..Default::default()
                };
                (Store::connect(&url, &opts).await.unwrap(), None)
            }
        };
        store.migrate().await.unwrap();
        let mut settings = admin::AdminSettings::new("127.0.0.1:0".parse().unwrap());
        tweak(&mut settings);
        let running = admin::start(settings, store.clone()).await.unwrap();
        Some(Admin {
            url: format!("http://{}", running.addr),
            store,
            running: Some(running),
            _dir: dir,
        })
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }

    /// A user with a password, optionally a superuser.
    pub async fn user(&self, email: &str, superuser: bool) -> i64 {
        self.store
            .create_user(email, PASSWORD, superuser)
            .await
            .unwrap()
            .id
    }

    /// A user's personal API token (made as the CLI would).
    pub async fn token_for(&self, email: &str) -> Caller {
        let audit = store::Audit::new("test", "token.create");
        let u = self.store.get_user_by_email(email).await.unwrap();
        let (_, token) = self
            .store
            .create_token_audited(u.id, "t", None, &audit)
            .await
            .unwrap();
        Caller::Token(self.url.clone(), token)
    }

    /// Logs in over the API.
    pub async fn login(&self, email: &str) -> Caller {
        let r = client()
            .post(format!("{}/api/v1/session", self.url))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "login of {email}");
        let cookie = r
            .headers()
            .get("set-cookie")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(
                cookie.contains(attr),
                "the session cookie is {attr}: {cookie}"
            );
        }
        let body: Value = r.json().await.unwrap();
        let pair = cookie.split(';').next().unwrap().to_owned();
        Caller::Session {
            url: self.url.clone(),
            cookie: pair,
            csrf: body["csrf_token"].as_str().unwrap().to_owned(),
        }
    }
}

pub const PASSWORD: &str = "correct horse battery";

/// Someone calling the API.
#[derive(Clone, Debug)]
pub enum Caller {
    /// `Authorization: Bearer tgp_…`
    Token(String, String),
    /// A session cookie, with its CSRF token sent on writes.
    Session {
        url: String,
        cookie: String,
        csrf: String,
    },
}

impl Caller {
    fn base(&self) -> &str {
        match self {
            Caller::Token(u, _) | Caller::Session { url: u, .. } => u,
        }
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let rb = client().request(method.clone(), format!("{}{path}", self.base()));
        match self {
            Caller::Token(_, t) => rb.bearer_auth(t),
            Caller::Session { cookie, csrf, .. } => {
                let rb = rb.header("cookie", cookie);
                if method == Method::GET {
                    rb
                } else {
                    rb.header("x-csrf-token", csrf)
                }
            }
        }
    }

    /// Sends a request; the status and the JSON body (Null when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut rb = self.request(method, path);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"))
        };
        if !status.is_success() {
            assert!(
                v["error"]["code"].is_string() && v["error"]["message"].is_string(),
                "errors have the API's shape: {v}"
            );
        }
        (status, v)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    /// A GET that must succeed.
    pub async fn ok(&self, path: &str) -> Value {
        let (s, v) = self.get(path).await;
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
              async fn $name() { super::$name(super::Db::Sqlite).await })*
        }
        mod on_postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
              async fn $name() { super::$name(super::Db::Postgres).await })*
        }
    };
}

on_both!(
    a_superuser_manages_everything_through_the_api,
    roles_and_rules_hold_for_every_org_scoped_resource,
    login_refusals_each_have_their_answer,
    bad_input_is_a_400_naming_the_field,
    password_changes_and_logouts_end_sessions,
    usage_reads_come_from_the_rollups_by_window,
);

/// An org, and users of every kind: a superuser, its owner, admin and member, and the owner of
/// another org.
struct World {
    a: Admin,
    root: Caller,
    owner: Caller,
    admin: Caller,
    member: Caller,
    outsider: Caller,
    ids: [i64; 4],
}

const OWNER: usize = 0;
const ADMIN: usize = 1;
const MEMBER: usize = 2;
const OUTSIDER: usize = 3;

async fn world(db: Db) -> Option<World> {
    let a = Admin::start(db, |_| {}).await?;
    a.user("root@example.com", true).await;
    let acme = a.store.create_org("acme", Feature::ALL).await.unwrap().id;
    let other = a.store.create_org("globex", Feature::ALL).await.unwrap().id;
    let mut ids = [0; 4];
    for (i, (email, org, role)) in [
        ("owner@acme.test", acme, store::Role::Owner),
        ("admin@acme.test", acme, store::Role::Admin),
        ("member@acme.test", acme, store::Role::Member),
        ("owner@globex.test", other, store::Role::Owner),
    ]
    .into_iter()
    .enumerate()
    {
        ids[i] = a.user(email, false).await;
        a.store.add_member(org, ids[i], role).await.unwrap();
    }
    Some(World {
        root: a.token_for("root@example.com").await,
        owner: a.login("owner@acme.test").await,
        admin: a.token_for("admin@acme.test").await,
        member: a.login("member@acme.test").await,
        outsider: a.token_for("owner@globex.test").await,
        ids,
        a,
    })
}

async fn a_superuser_manages_everything_through_the_api(db: Db) {
    let Some(a) = Admin::start(db, |_| {}).await else {
        return;
    };
    a.user("root@example.com", true).await;
    let root = a.token_for("root@example.com").await;
    let me = root.ok("/api/v1/me").await;
    assert_eq!(me["user"]["superuser"], true);
    assert!(me["csrf_token"].is_null(), "a token has no CSRF token");

    // Organizations.
    let (s, org) = root
        .call(Method::POST, "/api/v1/orgs", Some(json!({"name": "acme"})))
        .await;
    assert_eq!(s, 201, "{org}");
    let id = org["id"].as_i64().unwrap();
    let (s, _) = root
        .call(Method::POST, "/api/v1/orgs", Some(json!({"name": "acme"})))
        .await;
    assert_eq!(s, 409, "names are unique");
    let (s, renamed) = root
        .call(
            Method::PATCH,
            &format!("/api/v1/orgs/{id}"),
            Some(json!({"name": "acme-corp"})),
        )
        .await;
    assert_eq!(
        (s, renamed["name"].as_str()),
        (StatusCode::OK, Some("acme-corp"))
    );
    assert_eq!(
        root.ok("/api/v1/orgs/acme-corp").await["id"],
        id,
        "by name or by id"
    );
    assert_eq!(root.ok("/api/v1/orgs").await.as_array().unwrap().len(), 1);

    // Users and members.
    let (s, u) = root
        .call(
            Method::POST,
            "/api/v1/users",
            Some(json!({"email": "ada@example.com", "password": PASSWORD})),
        )
        .await;
    assert_eq!(s, 201, "{u}");
    assert_eq!(root.ok("/api/v1/users").await.as_array().unwrap().len(), 2);
    let (s, m) = root
        .call(
            Method::POST,
            "/api/v1/orgs/acme-corp/members",
            Some(json!({"email": "ada@example.com", "role": "owner"})),
        )
        .await;
    assert_eq!(
        (s, m["role"].as_str()),
        (StatusCode::CREATED, Some("owner"))
    );
    let members = root.ok("/api/v1/orgs/acme-corp/members").await;
    assert_eq!(members[0]["email"], "ada@example.com");
    assert!(members[0]["joined_at"].is_string());
    assert_eq!(
        root.ok("/api/v1/orgs").await[0]["members"],
        1,
        "member counts"
    );

    // Keys: the secret once, then only the prefix.
    let (s, k) = root
        .call(
            Method::POST,
            "/api/v1/orgs/acme-corp/keys",
            Some(json!({"name": "laptop", "kind": "service", "user": "ada@example.com"})),
        )
        .await;
    assert_eq!(s, 201, "{k}");
    let secret = k["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("tg_"));
    let keys = root.ok("/api/v1/orgs/acme-corp/keys").await;
    let listed = keys.to_string();
    assert!(
        !listed.contains(&secret) && !listed.contains("key_hash"),
        "{listed}"
    );
    assert_eq!(
        (
            keys[0]["kind"].as_str(),
            keys[0]["name"].as_str(),
            keys[0]["last_used_at"].is_null()
        ),
        (Some("service"), Some("laptop"), true)
    );
    let key_id = keys[0]["id"].as_i64().unwrap();
    let (s, revoked) = root
        .call(
            Method::DELETE,
            &format!("/api/v1/orgs/acme-corp/keys/{key_id}"),
            None,
        )
        .await;
    assert!(s == 200 && revoked["revoked_at"].is_string(), "{revoked}");

    // Features: one, then all off, then all on but one, in one request each.
    let flags = root.ok("/api/v1/orgs/acme-corp/features").await;
    assert_eq!(flags.as_array().unwrap().len(), 11);
    assert!(flags
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["enabled"] == true && f["gates"].is_string()));
    let (s, flags) = root
        .call(
            Method::PATCH,
            "/api/v1/orgs/acme-corp/features",
            Some(json!({"features": {"video_generation": false}})),
        )
        .await;
    assert_eq!(s, 200);
    let off: Vec<&str> = flags
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["enabled"] == false)
        .map(|f| f["feature"].as_str().unwrap())
        .collect();
    assert_eq!(off, vec!["video_generation"]);
    let (_, flags) = root
        .call(
            Method::PATCH,
            "/api/v1/orgs/acme-corp/features",
            Some(json!({"all": false})),
        )
        .await;
    assert!(flags
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["enabled"] == false));
    let (_, flags) = root
        .call(
            Method::PATCH,
            "/api/v1/orgs/acme-corp/features",
            Some(json!({"all": true, "features": {"pro_models": false}})),
        )
        .await;
    let on = flags
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["enabled"] == true)
        .count();
    assert_eq!(on, 10);

    // Limits: dollars in, dollars and micro-dollars out, with usage and reset time.
    let (s, l) = root
        .call(
            Method::PUT,
            "/api/v1/orgs/acme-corp/limits/monthly_cost",
            Some(json!({"value": "12.50", "alert_threshold": 90})),
        )
        .await;
    assert_eq!(s, 200, "{l}");
    assert_eq!(
        (
            l["value"].as_f64(),
            l["raw_value"].as_i64(),
            l["unit"].as_str(),
            l["alert_threshold"].as_i64()
        ),
        (Some(12.5), Some(12_500_000), Some("usd"), Some(90))
    );
    assert_eq!(
        (l["usage"].as_f64(), l["state"].as_str()),
        (Some(0.0), Some("normal"))
    );
    assert!(
        l["resets_at"].as_str().unwrap().contains("T00:00:00"),
        "{l}"
    );
    let (s, l) = root
        .call(
            Method::PUT,
            "/api/v1/orgs/acme-corp/limits/daily_requests",
            Some(json!({"value": 1000, "enabled": false})),
        )
        .await;
    assert_eq!(
        (s, l["enabled"].as_bool(), l["alert_threshold"].as_i64()),
        (StatusCode::OK, Some(false), Some(80))
    );
    assert_eq!(
        root.ok("/api/v1/orgs/acme-corp/limits")
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let (s, _) = root
        .call(
            Method::DELETE,
            "/api/v1/orgs/acme-corp/limits/daily_requests",
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, _) = root
        .call(
            Method::DELETE,
            "/api/v1/orgs/acme-corp/limits/daily_requests",
            None,
        )
        .await;
    assert_eq!(s, 404, "already gone");

    // Usage reads answer for an org without traffic.
    let u = root
        .ok("/api/v1/orgs/acme-corp/usage?range=last_7_days")
        .await;
    assert_eq!(u["totals"]["requests"], 0);
    assert_eq!(
        root.ok("/api/v1/orgs/acme-corp/events").await["events"],
        json!([])
    );
    assert_eq!(root.ok("/api/v1/orgs/acme-corp/alerts").await, json!([]));
    assert_eq!(
        root.ok("/api/v1/usage/orgs?range=this_month").await,
        json!([])
    );
    assert!(root.ok("/api/v1/status").await["gateways"].is_array());

    // Tokens of one's own.
    let (s, t) = root
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": "ci", "expires_days": 7})),
        )
        .await;
    assert_eq!(s, 201, "{t}");
    assert!(t["token"].as_str().unwrap().starts_with("tgp_"));
    let tokens = root.ok("/api/v1/tokens").await;
    assert_eq!(
        tokens.as_array().unwrap().len(),
        2,
        "the test's token and this one"
    );
    assert!(!tokens.to_string().contains(t["token"].as_str().unwrap()));
    let (s, _) = root
        .call(Method::DELETE, &format!("/api/v1/tokens/{}", t["id"]), None)
        .await;
    assert_eq!(s, 200);

    // Every change above is in the audit log, with its actor.
    let audit = root.ok("/api/v1/audit?limit=200").await;
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for want in [
        "org.create",
        "org.rename",
        "user.create",
        "member.add",
        "key.create",
        "key.revoke",
        "feature.set",
        "limit.set",
        "limit.remove",
        "token.create",
        "token.revoke",
    ] {
        assert!(actions.contains(&want), "{want} audited: {actions:?}");
    }
    assert!(audit
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["actor"] == "root@example.com" || e["action"] == "token.create"));
    let page = root.ok("/api/v1/audit?limit=2").await;
    let before = page[1]["id"].as_i64().unwrap();
    let next = root
        .ok(&format!("/api/v1/audit?limit=2&before={before}"))
        .await;
    assert!(
        next[0]["id"].as_i64().unwrap() < before,
        "paged newest first"
    );
    let org_audit = root.ok("/api/v1/orgs/acme-corp/audit").await;
    assert!(org_audit
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["org_id"] == id));
    let today = chrono::Utc::now().date_naive();
    let tomorrow = today.succ_opt().unwrap();
    assert_eq!(
        root.ok(&format!("/api/v1/audit?from={tomorrow}")).await,
        json!([]),
        "filtered by date"
    );

    // The OpenAPI document names every route.
    let doc = root.ok("/api/v1/openapi.json").await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    for path in [
        "/api/v1/session",
        "/api/v1/orgs/{org}/limits/{limit_type}",
        "/api/v1/usage/orgs",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} documented");
    }

    // Deleting the org.
    let (s, _) = root
        .call(Method::DELETE, "/api/v1/orgs/acme-corp", None)
        .await;
    assert_eq!(s, 204);
    assert_eq!(root.get("/api/v1/orgs/acme-corp").await.0, 404);
    a.stop().await;
}

async fn roles_and_rules_hold_for_every_org_scoped_resource(db: Db) {
    let Some(w) = world(db).await else { return };
    let key = |c: &Caller| c.clone();
    // Reads and writes of every org-scoped resource by the owner of another org: 404.
    let reads = [
        "/api/v1/orgs/acme",
        "/api/v1/orgs/acme/members",
        "/api/v1/orgs/acme/keys",
        "/api/v1/orgs/acme/features",
        "/api/v1/orgs/acme/limits",
        "/api/v1/orgs/acme/usage",
        "/api/v1/orgs/acme/events",
        "/api/v1/orgs/acme/alerts",
        "/api/v1/orgs/acme/audit",
    ];
    let member_email = "member@acme.test";
    let writes: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::PATCH,
            "/api/v1/orgs/acme".into(),
            Some(json!({"name": "x"})),
        ),
        (Method::DELETE, "/api/v1/orgs/acme".into(), None),
        (
            Method::POST,
            "/api/v1/orgs/acme/members".into(),
            Some(json!({"email": "owner@globex.test"})),
        ),
        (
            Method::PATCH,
            format!("/api/v1/orgs/acme/members/{member_email}"),
            Some(json!({"role": "admin"})),
        ),
        (
            Method::DELETE,
            format!("/api/v1/orgs/acme/members/{member_email}"),
            None,
        ),
        (
            Method::POST,
            "/api/v1/orgs/acme/keys".into(),
            Some(json!({"name": "k"})),
        ),
        (Method::DELETE, "/api/v1/orgs/acme/keys/1".into(), None),
        (
            Method::PATCH,
            "/api/v1/orgs/acme/features".into(),
            Some(json!({"all": false})),
        ),
        (
            Method::PUT,
            "/api/v1/orgs/acme/limits/daily_requests".into(),
            Some(json!({"value": 1})),
        ),
        (
            Method::DELETE,
            "/api/v1/orgs/acme/limits/daily_requests".into(),
            None,
        ),
    ];
    for path in reads {
        let (s, v) = w.outsider.get(path).await;
        assert_eq!(s, 404, "another org's {path} is not found: {v}");
        let by_id = path.replace("/acme", "/1");
        assert_eq!(w.outsider.get(&by_id).await.0, 404, "{by_id} by id too");
    }
    for (m, p, b) in &writes {
        let (s, v) = w.outsider.call(m.clone(), p, b.clone()).await;
        assert_eq!(s, 404, "another org's {m} {p}: {v}");
    }
    assert_eq!(
        w.outsider.get("/api/v1/orgs/nonexistent").await.0,
        404,
        "same as a missing org"
    );
    let orgs = w.outsider.ok("/api/v1/orgs").await;
    assert_eq!(
        orgs.as_array().unwrap().len(),
        1,
        "only their own org: {orgs}"
    );

    // A member reads usage, features, limits and their own keys; every admin action is 403.
    for path in [
        "/api/v1/orgs/acme",
        "/api/v1/orgs/acme/usage",
        "/api/v1/orgs/acme/features",
        "/api/v1/orgs/acme/limits",
        "/api/v1/orgs/acme/events",
        "/api/v1/orgs/acme/keys",
    ] {
        assert_eq!(w.member.get(path).await.0, 200, "a member reads {path}");
    }
    for path in [
        "/api/v1/orgs/acme/members",
        "/api/v1/orgs/acme/audit",
        "/api/v1/audit",
        "/api/v1/users",
        "/api/v1/usage/orgs",
    ] {
        assert_eq!(
            w.member.get(path).await.0,
            403,
            "a member may not read {path}"
        );
    }
    for (m, p, b) in &writes {
        let (s, v) = w.member.call(m.clone(), p, b.clone()).await;
        assert_eq!(s, 403, "a member's {m} {p}: {v}");
    }
    // Members see only their own keys.
    let (s, _) = w
        .root
        .call(
            Method::POST,
            "/api/v1/orgs/acme/keys",
            Some(json!({"name": "shared"})),
        )
        .await;
    assert_eq!(s, 201);
    let (s, _) = w
        .root
        .call(
            Method::POST,
            "/api/v1/orgs/acme/keys",
            Some(json!({"name": "mine", "user": "member@acme.test"})),
        )
        .await;
    assert_eq!(s, 201);
    let keys = w.member.ok("/api/v1/orgs/acme/keys").await;
    assert_eq!(keys.as_array().unwrap().len(), 1, "{keys}");
    assert_eq!(keys[0]["name"], "mine");
    assert_eq!(
        key(&w.admin)
            .ok("/api/v1/orgs/acme/keys")
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Owners and admins manage their org, but not platform things.
    let (s, _) = w
        .admin
        .call(
            Method::PUT,
            "/api/v1/orgs/acme/limits/daily_requests",
            Some(json!({"value": 5})),
        )
        .await;
    assert_eq!(s, 200);
    for (m, p, b) in [
        (Method::POST, "/api/v1/orgs", Some(json!({"name": "new"}))),
        (
            Method::PATCH,
            "/api/v1/orgs/acme",
            Some(json!({"name": "renamed"})),
        ),
        (Method::DELETE, "/api/v1/orgs/acme", None),
        (
            Method::POST,
            "/api/v1/users",
            Some(json!({"email": "x@y.test", "password": PASSWORD})),
        ),
    ] {
        assert_eq!(
            w.owner.call(m.clone(), p, b).await.0,
            403,
            "an owner's {m} {p}"
        );
    }

    // Role rules.
    let admin_id = w.ids[ADMIN];
    let owner_id = w.ids[OWNER];
    let member_id = w.ids[MEMBER];
    let role = |c: &Caller, user: i64, r: &str| {
        let c = c.clone();
        let r = r.to_owned();
        async move {
            c.call(
                Method::PATCH,
                &format!("/api/v1/orgs/acme/members/{user}"),
                Some(json!({"role": r})),
            )
            .await
        }
    };
    let (s, v) = role(&w.admin, admin_id, "member").await;
    assert_eq!(s, 403, "an admin demoting themselves: {v}");
    let (s, v) = role(&w.admin, owner_id, "member").await;
    assert_eq!(s, 403, "a non-superuser changing an owner: {v}");
    let (s, v) = role(&w.admin, member_id, "owner").await;
    assert_eq!(s, 403, "a non-superuser making an owner: {v}");
    let (s, v) = w
        .admin
        .call(
            Method::DELETE,
            &format!("/api/v1/orgs/acme/members/{owner_id}"),
            None,
        )
        .await;
    assert_eq!(s, 403, "a non-superuser removing an owner: {v}");
    let (s, v) = role(&w.owner, owner_id, "admin").await;
    assert_eq!(s, 403, "an owner demoting themselves: {v}");
    let (s, v) = role(&w.admin, member_id, "admin").await;
    assert_eq!(
        (s, v["role"].as_str()),
        (StatusCode::OK, Some("admin")),
        "an admin promotes a member"
    );
    let (s, v) = w
        .root
        .call(
            Method::DELETE,
            &format!("/api/v1/orgs/acme/members/{owner_id}"),
            None,
        )
        .await;
    assert_eq!(s, 409, "removing the last owner: {v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("owner"),
        "{v}"
    );
    let (s, v) = role(&w.root, owner_id, "member").await;
    assert_eq!(s, 409, "demoting the last owner: {v}");
    let (s, _) = role(&w.root, member_id, "owner").await;
    assert_eq!(s, 200, "a superuser makes a second owner");
    let (s, _) = role(&w.root, owner_id, "member").await;
    assert_eq!(s, 200, "now the first may step down");
    let (_, me) = w.outsider.get("/api/v1/me").await;
    assert_eq!(me["memberships"][0]["name"], "globex");
    let _ = w.ids[OUTSIDER];

    // The audit log records who did it.
    let audit = w.root.ok("/api/v1/orgs/acme/audit").await;
    let roles: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "member.role")
        .collect();
    assert!(
        roles.iter().any(|e| e["actor"] == "admin@acme.test"),
        "{audit}"
    );
    w.a.stop().await;
}

async fn login_refusals_each_have_their_answer(db: Db) {
    let Some(a) = Admin::start(db, |s| s.login_max_failures = 3).await else {
        return;
    };
    a.user("ada@example.com", false).await;
    let login = |email: &str, password: &str| {
        let body = json!({"email": email, "password": password});
        let url = format!("{}/api/v1/session", a.url);
        async move { client().post(url).json(&body).send().await.unwrap() }
    };
    let r = login("ada@example.com", "wrong password").await;
    assert_eq!(r.status(), 401, "wrong password");
    let wrong: Value = r.json().await.unwrap();
    let r = login("nobody@example.com", PASSWORD).await;
    assert_eq!(r.status(), 401, "unknown user");
    let unknown: Value = r.json().await.unwrap();
    assert_eq!(
        wrong, unknown,
        "an unknown email reads exactly like a wrong password"
    );

    // Expired session, on a service whose sessions last 1 s.
    let Some(brief) = Admin::start(db, |s| s.session_lifetime = chrono::Duration::seconds(1)).await
    else {
        return;
    };
    brief.user("ada@example.com", false).await;
    let session = brief.login("ada@example.com").await;
    assert_eq!(session.get("/api/v1/me").await.0, 200);
    eventually(Duration::from_secs(10), "the session expires", || async {
        session.get("/api/v1/me").await.0 == 401
    })
    .await;
    let (_, v) = session.get("/api/v1/me").await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("expired"),
        "{v}"
    );
    brief.stop().await;

    // Missing CSRF token on a cookie write; a bearer write needs none.
    let s2 = a.login("ada@example.com").await;
    let Caller::Session { cookie, .. } = &s2 else {
        unreachable!()
    };
    let r = client()
        .post(format!("{}/api/v1/tokens", a.url))
        .header("cookie", cookie)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "missing CSRF token");
    let r = client()
        .post(format!("{}/api/v1/tokens", a.url))
        .header("cookie", cookie)
        .header("x-csrf-token", "not-the-token")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "wrong CSRF token");
    let (s, t) = s2
        .call(Method::POST, "/api/v1/tokens", Some(json!({"name": "x"})))
        .await;
    assert_eq!(s, 201, "with the CSRF token");

    // Revoked and unknown tokens.
    let token = Caller::Token(a.url.clone(), t["token"].as_str().unwrap().into());
    assert_eq!(token.get("/api/v1/me").await.0, 200);
    let (s, _) = token
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": "bearer write, no CSRF"})),
        )
        .await;
    assert_eq!(s, 201);
    let (s, _) = s2
        .call(Method::DELETE, &format!("/api/v1/tokens/{}", t["id"]), None)
        .await;
    assert_eq!(s, 200);
    let (s, v) = token.get("/api/v1/me").await;
    assert_eq!(s, 401);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("revoked"),
        "{v}"
    );
    let bogus = Caller::Token(a.url.clone(), "tgp_nope".into());
    assert_eq!(bogus.get("/api/v1/me").await.0, 401);
    let r = client()
        .get(format!("{}/api/v1/me", a.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "no credentials");
    for open in ["/healthz", "/readyz", "/metrics"] {
        let r = client()
            .get(format!("{}{open}", a.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{open} needs no login");
    }
    for closed in ["/api/v1/status", "/api/v1/openapi.json", "/api/v1/orgs"] {
        let r = client()
            .get(format!("{}{closed}", a.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{closed} needs a login");
    }
    // Every answer (API, console, assets, errors) carries the security headers.
    for path in [
        "/api/v1/me",
        "/login",
        "/static/console.css",
        "/nowhere",
        "/healthz",
    ] {
        let r = client()
            .get(format!("{}{path}", a.url))
            .send()
            .await
            .unwrap();
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert!(h.contains_key("referrer-policy"), "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(!csp.contains("script-src 'unsafe-inline'"), "{path}: {csp}");
    }

    // Too many attempts: 3 failures allowed here, then 429 with Retry-After, even with the
    // right password.
    a.user("bob@example.com", false).await;
    for _ in 0..2 {
        assert_eq!(login("bob@example.com", "nope nope").await.status(), 401);
    }
    let r = login("bob@example.com", PASSWORD).await;
    assert_eq!(r.status(), 200, "under the limit, the right password works");
    for _ in 0..3 {
        assert_eq!(login("bob@example.com", "nope nope").await.status(), 401);
    }
    let r = login("bob@example.com", PASSWORD).await;
    assert_eq!(r.status(), 429, "throttled");
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&wait), "Retry-After {wait}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_attempts");

    let metrics = client()
        .get(format!("{}/metrics", a.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |result: &str| -> f64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "tollgate_admin_logins_total{{result=\"{result}\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1.0)
    };
    assert_eq!(
        (count("succeeded"), count("failed"), count("throttled")),
        (2.0, 7.0, 1.0),
        "{metrics}"
    );
    a.stop().await;
}

async fn bad_input_is_a_400_naming_the_field(db: Db) {
    let Some(w) = world(db).await else { return };
    let r = &w.root;
    let cases: Vec<(Method, &str, Option<Value>, Option<&str>)> = vec![
        (
            Method::POST,
            "/api/v1/orgs",
            Some(json!({"name": "x", "color": "red"})),
            Some("color"),
        ),
        (
            Method::POST,
            "/api/v1/orgs",
            Some(json!({"name": ""})),
            Some("name"),
        ),
        (
            Method::POST,
            "/api/v1/orgs",
            Some(json!({"name": "123"})),
            Some("name"),
        ),
        (
            Method::POST,
            "/api/v1/orgs",
            Some(json!({"name": 5})),
            Some("name"),
        ),
        (
            Method::PUT,
            "/api/v1/orgs/acme/limits/daily_requests",
            Some(json!({"value": -1})),
            Some("value"),
        ),
        (
            Method::PUT,
            "/api/v1/orgs/acme/limits/monthly_cost",
            Some(json!({"value": "-2.5"})),
            Some("value"),
        ),
        (
            Method::PUT,
            "/api/v1/orgs/acme/limits/monthly_cost",
            Some(json!({"value": "1.0000001"})),
            Some("value"),
        ),
        (
            Method::PUT,
            "/api/v1/orgs/acme/limits/daily_requests",
            Some(json!({"value": 1, "alert_threshold": 0})),
            Some("alert_threshold"),
        ),
        (
            Method::PUT,
            "/api/v1/orgs/acme/limits/daily_requests",
            Some(json!({"value": 1, "alert_threshold": 101})),
            Some("alert_threshold"),
        ),
        (
            Method::PUT,
            "/api/v1/orgs/acme/limits/weekly_fun",
            Some(json!({"value": 1})),
            Some("limit_type"),
        ),
        (
            Method::PATCH,
            "/api/v1/orgs/acme/features",
            Some(json!({"features": {"teleport": true}})),
            Some("features.teleport"),
        ),
        (
            Method::PATCH,
            "/api/v1/orgs/acme/features",
            Some(json!({"features": {}})),
            Some("features"),
        ),
        (
            Method::POST,
            "/api/v1/orgs/acme/keys",
            Some(json!({"kind": "root"})),
            Some("kind"),
        ),
        (
            Method::POST,
            "/api/v1/orgs/acme/members",
            Some(json!({"email": "member@acme.test", "role": "boss"})),
            Some("role"),
        ),
        (
            Method::DELETE,
            "/api/v1/orgs/acme/keys/abc",
            None,
            Some("id"),
        ),
        (
            Method::DELETE,
            "/api/v1/orgs/acme/keys/-4",
            None,
            Some("id"),
        ),
        (Method::DELETE, "/api/v1/tokens/0", None, Some("id")),
        (
            Method::GET,
            "/api/v1/orgs/acme/usage?from=yesterday",
            None,
            Some("from"),
        ),
        (
            Method::GET,
            "/api/v1/orgs/acme/usage?from=2026-12-02&to=2026-12-01",
            None,
            Some("from"),
        ),
        (
            Method::GET,
            "/api/v1/orgs/acme/usage?range=forever",
            None,
            Some("range"),
        ),
        (
            Method::GET,
            "/api/v1/orgs/acme/usage?range=this_month&from=2026-11-01",
            None,
            Some("range"),
        ),
        (
            Method::GET,
            "/api/v1/orgs/acme/usage?colour=red",
            None,
            None,
        ),
        (
            Method::GET,
            "/api/v1/orgs/acme/events?limit=0",
            None,
            Some("limit"),
        ),
        (
            Method::GET,
            "/api/v1/orgs/acme/events?limit=101",
            None,
            Some("limit"),
        ),
        (
            Method::GET,
            "/api/v1/orgs/acme/events?cursor=zzz",
            None,
            Some("cursor"),
        ),
        (Method::GET, "/api/v1/audit?before=x", None, Some("before")),
        (
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"expires_days": 0})),
            Some("expires_days"),
        ),
        (
            Method::POST,
            "/api/v1/users",
            Some(json!({"email": "not-an-email", "password": PASSWORD})),
            Some("email"),
        ),
        (
            Method::POST,
            "/api/v1/users",
            Some(json!({"email": "x@y.test", "password": "short"})),
            Some("password"),
        ),
    ];
    for (m, p, b, field) in cases {
        let (s, v) = r.call(m.clone(), p, b.clone()).await;
        assert_eq!(s, 400, "{m} {p} {b:?}: {v}");
        assert_eq!(v["error"]["code"], "invalid_field", "{v}");
        if let Some(f) = field {
            assert_eq!(v["error"]["field"], f, "{m} {p}: {v}");
        }
    }
    // Not JSON, the wrong content type, too large.
    let raw = |ct: &'static str, body: Vec<u8>| {
        r.request(Method::POST, "/api/v1/orgs")
            .header("content-type", ct)
            .body(body)
    };
    for (what, rb) in [
        ("not JSON", raw("application/json", b"{nope".to_vec())),
        (
            "wrong content type",
            raw("text/plain", br#"{"name":"x"}"#.to_vec()),
        ),
        (
            "over 64 KiB",
            raw(
                "application/json",
                format!(r#"{{"name":"{}"}}"#, "x".repeat(70_000)).into_bytes(),
            ),
        ),
        ("no body", raw("application/json", Vec::new())),
    ] {
        let resp = rb.send().await.unwrap();
        assert_eq!(resp.status(), 400, "{what}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_field", "{what}: {v}");
    }
    assert_eq!(r.get("/api/v1/nothing-here").await.0, 404);
    // Nothing changed.
    assert_eq!(r.ok("/api/v1/orgs").await.as_array().unwrap().len(), 2);
    assert_eq!(r.ok("/api/v1/orgs/acme/limits").await, json!([]));
    w.a.stop().await;
}

async fn password_changes_and_logouts_end_sessions(db: Db) {
    let Some(a) = Admin::start(db, |_| {}).await else {
        return;
    };
    a.user("ada@example.com", false).await;
    let first = a.login("ada@example.com").await;
    let second = a.login("ada@example.com").await;
    let (s, v) = second
        .call(
            Method::PUT,
            "/api/v1/me/password",
            Some(json!({"current_password": "wrong one", "new_password": "a new password"})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("current_password"))
    );
    let (s, _) = second
        .call(
            Method::PUT,
            "/api/v1/me/password",
            Some(json!({"current_password": PASSWORD, "new_password": "a new password"})),
        )
        .await;
    assert_eq!(s, 204);
    assert_eq!(first.get("/api/v1/me").await.0, 401, "other sessions end");
    assert_eq!(
        second.get("/api/v1/me").await.0,
        200,
        "the session that changed it stays"
    );
    let (s, _) = second.call(Method::DELETE, "/api/v1/session", None).await;
    assert_eq!(s, 204);
    assert_eq!(second.get("/api/v1/me").await.0, 401, "logged out");
    let r = client()
        .post(format!("{}/api/v1/session", a.url))
        .json(&json!({"email": "ada@example.com", "password": "a new password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the new password works");
    a.stop().await;
}

async fn usage_reads_come_from_the_rollups_by_window(db: Db) {
    let Some(w) = world(db).await else { return };
    let org = w.a.store.resolve_org("acme").await.unwrap().id;
    let today = chrono::Utc::now();
    let ev = |id: &str,
              days_ago: i64,
              model: &str,
              user: Option<&str>,
              tool: Option<&str>,
              cost: i64,
              metered: bool| {
        store::UsageEvent {
            request_id: id.into(),
            client_request_id: None,
            occurred_at: today - chrono::Duration::days(days_ago),
            org_id: Some(org),
            key_id: None,
            user_ref: user.map(Into::into),
            tool: tool.map(Into::into),
            provider: "gemini".into(),
            model: model.into(),
            operation: "generateContent".into(),
            status: if metered { 200 } else { 429 },
            streamed: false,
            metered,
            input_tokens: 10,
            output_tokens: 5,
            thinking_tokens: 0,
            cached_tokens: 0,
            tool_prompt_tokens: 0,
            total_tokens: 15,
            input_audio_tokens: 0,
            output_image_tokens: 0,
            images: 0,
            videos: 0,
            video_seconds: 0,
            cost_micros: cost,
            estimated: false,
            priced: true,
            upstream_latency_ms: Some(3),
            total_latency_ms: 4,
        }
    };
    let events = vec![
        ev(
            "u1",
            0,
            "gemini-2.5-flash",
            Some("alice"),
            Some("chat"),
            100,
            true,
        ),
        ev("u2", 0, "gemini-2.5-pro", Some("bob"), None, 700, true),
        ev(
            "u3",
            3,
            "gemini-2.5-flash",
            Some("alice"),
            Some("chat"),
            200,
            true,
        ),
        ev("u4", 20, "gemini-2.5-flash", None, None, 1000, true),
        ev("u5", 0, "gemini-2.5-flash", Some("alice"), None, 0, false),
    ];
    w.a.store.insert_events(&events).await.unwrap();
    let week = w
        .member
        .ok("/api/v1/orgs/acme/usage?range=last_7_days")
        .await;
    let t = &week["totals"];
    assert_eq!(
        (
            t["requests"].as_i64(),
            t["cost_micros"].as_i64(),
            t["total_tokens"].as_i64()
        ),
        (Some(3), Some(1000), Some(45)),
        "metered requests only, in the window: {week}"
    );
    let keys = |v: &Value| -> Vec<(String, i64)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["key"].as_str().unwrap().to_owned(),
                    r["cost_micros"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(
        keys(&week["by_model"]),
        vec![
            ("gemini-2.5-pro".into(), 700),
            ("gemini-2.5-flash".into(), 300)
        ]
    );
    assert_eq!(
        keys(&week["by_user"]),
        vec![("bob".into(), 700), ("alice".into(), 300)]
    );
    assert_eq!(
        keys(&week["by_tool"]),
        vec![("".into(), 700), ("chat".into(), 300)]
    );
    assert_eq!(week["by_model"][0]["cost_share"].as_f64(), Some(70.0));
    assert_eq!(
        week["by_day"].as_array().unwrap().len(),
        2,
        "two days with usage"
    );
    let d3 = (today - chrono::Duration::days(3)).date_naive().to_string();
    assert_eq!(week["by_day"][0]["key"], d3.as_str(), "oldest first");
    let month = w
        .member
        .ok(&format!(
            "/api/v1/orgs/acme/usage?from={}&to={}",
            (today - chrono::Duration::days(29)).date_naive(),
            today.date_naive()
        ))
        .await;
    assert_eq!(month["totals"]["requests"], 4);
    // The recent events include the refusal, paged by cursor.
    let page = w.member.ok("/api/v1/orgs/acme/events?limit=2").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = w
        .member
        .ok(&format!(
            "/api/v1/orgs/acme/events?limit=100&cursor={cursor}"
        ))
        .await;
    assert_eq!(rest["events"].as_array().unwrap().len(), 3);
    assert!(rest["next_cursor"].is_null(), "the last page");
    let all: Vec<String> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["events"].as_array().unwrap())
        .map(|e| e["request_id"].as_str().unwrap().to_owned())
        .collect();
    let mut sorted = all.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 5, "every event once: {all:?}");
    assert_eq!(all.last().unwrap(), "u4", "newest first");
    // Cross-org: the superuser sees every org with usage.
    let cross = w.root.ok("/api/v1/usage/orgs?range=last_30_days").await;
    assert_eq!(keys(&cross), vec![("acme".into(), 2000)]);
    // Limits show the period's usage.
    let (s, l) = w
        .admin
        .call(
            Method::PUT,
            "/api/v1/orgs/acme/limits/daily_requests",
            Some(json!({"value": 2, "alert_threshold": 50})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        (
            l["raw_usage"].as_i64(),
            l["percent"].as_f64(),
            l["state"].as_str()
        ),
        (Some(2), Some(100.0), Some("exceeded"))
    );
    w.a.stop().await;
}

/// schemathesis (PyPI, installed into `.venv` by `make test`) generates requests from
/// `/api/v1/openapi.json` and checks every answer: no 5xx, and every body as documented. Token
/// revocation is left out: it would revoke the token the run uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_undocumented_answer() {
    let Some(python) = crate::sdk::python() else {
        return;
    };
    let schemathesis = python.with_file_name("schemathesis");
    if !schemathesis.exists() {
        let reason = format!(
            "no schemathesis at {} (run `make test`)",
            schemathesis.display()
        );
        if std::env::var("TOLLGATE_TEST_REQUIRE_SDK").is_ok_and(|v| v == "1") {
            panic!("{reason}");
        }
        crate::harness::missing(&reason);
        return;
    }
    let Some(w) = world(Db::Sqlite).await else {
        return;
    };
    let Caller::Token(_, token) = &w.root else {
        unreachable!()
    };
    // Something behind the resources: a key and a limit.
    let (s, _) = w
        .root
        .call(
            Method::POST,
            "/api/v1/orgs/acme/keys",
            Some(json!({"name": "k"})),
        )
        .await;
    assert_eq!(s, 201);
    let (s, _) = w
        .root
        .call(
            Method::PUT,
            "/api/v1/orgs/acme/limits/monthly_cost",
            Some(json!({"value": 5})),
        )
        .await;
    assert_eq!(s, 200);
    // schemathesis keeps a cache in its working directory: a scratch one, not the checkout.
    let scratch = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(&schemathesis)
        .current_dir(scratch.path())
        .args([
            "run",
            &format!("{}/api/v1/openapi.json", w.a.url),
            "--header",
            &format!("Authorization: Bearer {token}"),
            "--checks",
            "not_a_server_error,response_schema_conformance,content_type_conformance",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "15",
            "--exclude-path",
            "/api/v1/tokens/{id}",
            "--workers",
            "2",
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}"
    );
    assert!(report.contains("passed"), "{report}");
    w.a.stop().await;
}
