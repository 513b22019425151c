//! The admin API and a running gateway together: what is changed through the API (a key
//! created or revoked, a limit set, a flag switched) is enforced by the gateway within 5 s, and
//! the usage the API reports equals the events the gateway recorded. On SQLite, and on
//! PostgreSQL when `TOLLGATE_TEST_POSTGRES` is set.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::admin_api::Caller;
use crate::harness::{client, eventually, postgres_url, unique_schema, Opts, TestEnv};

/// How long an API change may take to reach the gateway.
const WITHIN: Duration = Duration::from_secs(5);

async fn env(postgres: bool) -> Option<TestEnv> {
    let database = match postgres {
        false => None,
        true => Some((postgres_url()?, Some(unique_schema("admin_gw")))),
    };
    Some(
        TestEnv::start_with(Opts {
            database,
            ..Opts::default()
        })
        .await,
    )
}

async fn generate(env: &TestEnv, key: &str, path: &str) -> StatusCode {
    client()
        .post(format!("{}{path}", env.gateway_url))
        .header("x-goog-api-key", key)
        .header("x-tollgate-user", "alice")
        .json(&json!({"contents": [{"role": "user", "parts": [{"text": "why is the sky blue"}]}]}))
        .send()
        .await
        .unwrap()
        .status()
}

const FLASH: &str = "/v1beta/models/gemini-2.5-flash:generateContent";
const STREAM: &str = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse";

async fn api_changes_reach_the_gateway(postgres: bool) {
    let Some(env) = env(postgres).await else {
        return;
    };
    let root = Caller::Token(env.admin_url.clone(), env.superuser_token().await);
    let (s, _) = root
        .call(Method::POST, "/api/v1/orgs", Some(json!({"name": "acme"})))
        .await;
    assert_eq!(s, 201);
    let (s, k) = root
        .call(
            Method::POST,
            "/api/v1/orgs/acme/keys",
            Some(json!({"name": "app"})),
        )
        .await;
    assert_eq!(s, 201);
    let key = k["secret"].as_str().unwrap().to_owned();
    eventually(WITHIN, "a key created through the API works", || async {
        generate(&env, &key, FLASH).await == 200
    })
    .await;

    let (s, _) = root
        .call(
            Method::PATCH,
            "/api/v1/orgs/acme/features",
            Some(json!({"features": {"streaming": false}})),
        )
        .await;
    assert_eq!(s, 200);
    eventually(
        WITHIN,
        "a flag switched off through the API refuses",
        || async { generate(&env, &key, STREAM).await == 403 },
    )
    .await;
    assert_eq!(
        generate(&env, &key, FLASH).await,
        200,
        "other operations still pass"
    );

    let (s, _) = root
        .call(
            Method::PUT,
            "/api/v1/orgs/acme/limits/daily_requests",
            Some(json!({"value": 0})),
        )
        .await;
    assert_eq!(s, 200);
    eventually(WITHIN, "a limit set through the API refuses", || async {
        generate(&env, &key, FLASH).await == 429
    })
    .await;
    let (s, _) = root
        .call(
            Method::DELETE,
            "/api/v1/orgs/acme/limits/daily_requests",
            None,
        )
        .await;
    assert_eq!(s, 204);
    eventually(
        WITHIN,
        "a limit removed through the API lets requests through",
        || async { generate(&env, &key, FLASH).await == 200 },
    )
    .await;

    let (s, _) = root
        .call(
            Method::DELETE,
            &format!("/api/v1/orgs/acme/keys/{}", k["id"]),
            None,
        )
        .await;
    assert_eq!(s, 200);
    eventually(
        WITHIN,
        "a key revoked through the API is refused",
        || async {
            let s = generate(&env, &key, FLASH).await;
            s == 401 || s == 403
        },
    )
    .await;
    env.stop().await;
}

async fn api_usage_equals_the_recorded_events(postgres: bool) {
    let Some(env) = env(postgres).await else {
        return;
    };
    let (org, key) = env.org_with_key("acme").await;
    let root = Caller::Token(env.admin_url.clone(), env.superuser_token().await);
    let mut sent = 0;
    for path in [
        FLASH,
        FLASH,
        STREAM,
        "/v1beta/models/gemini-2.5-pro:generateContent",
    ] {
        assert_eq!(generate(&env, &key, path).await, 200, "{path}");
        sent += 1;
    }
    let imagen = client()
        .post(format!(
            "{}/v1beta/models/imagen-4.0-generate-001:predict",
            env.gateway_url
        ))
        .header("x-goog-api-key", &key)
        .header("x-tollgate-tool", "posters")
        .json(&json!({"instances": [{"prompt": "a cat"}], "parameters": {"sampleCount": 3}}))
        .send()
        .await
        .unwrap();
    assert_eq!(imagen.status(), 200);
    sent += 1;
    // Not requests: a token count, and a refusal.
    let count = client()
        .post(format!(
            "{}/v1beta/models/gemini-2.5-flash:countTokens",
            env.gateway_url
        ))
        .header("x-goog-api-key", &key)
        .json(&json!({"contents": [{"parts": [{"text": "hi"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(count.status(), 200);
    assert_eq!(generate(&env, "tg_not_a_key", FLASH).await, 401);
    eventually(
        Duration::from_secs(10),
        "every answered request is recorded",
        || async { env.store.count_events(org).await.unwrap() > sent },
    )
    .await;

    let events = env.store.recent_events(org, 1000).await.unwrap();
    let metered: Vec<&store::UsageEvent> = events.iter().filter(|e| e.metered).collect();
    assert_eq!(metered.len() as i64, sent, "{events:#?}");
    let sum = |f: fn(&store::UsageEvent) -> i64| metered.iter().map(|e| f(e)).sum::<i64>();
    let usage = root.ok("/api/v1/orgs/acme/usage?range=last_7_days").await;
    let t = &usage["totals"];
    let field = |name: &str| t[name].as_i64().unwrap();
    assert_eq!(field("requests"), sent, "requests are the metered events");
    assert_eq!(field("input_tokens"), sum(|e| e.input_tokens));
    assert_eq!(field("output_tokens"), sum(|e| e.output_tokens));
    assert_eq!(field("thinking_tokens"), sum(|e| e.thinking_tokens));
    assert_eq!(field("total_tokens"), sum(|e| e.total_tokens));
    assert_eq!(field("images"), 3);
    assert_eq!(field("cost_micros"), sum(|e| e.cost_micros));
    assert!(field("cost_micros") > 0);
    let by = |group: &str| -> Vec<(String, i64)> {
        let mut v: Vec<(String, i64)> = usage[group]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["key"].as_str().unwrap().to_owned(),
                    r["requests"].as_i64().unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(by("by_user"), vec![("".into(), 1), ("alice".into(), 4)]);
    assert_eq!(by("by_tool"), vec![("".into(), 4), ("posters".into(), 1)]);
    assert_eq!(
        by("by_model"),
        vec![
            ("gemini-2.5-flash".into(), 3),
            ("gemini-2.5-pro".into(), 1),
            ("imagen-4.0-generate-001".into(), 1)
        ]
    );
    let per_model_cost: i64 = usage["by_model"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cost_micros"].as_i64().unwrap())
        .sum();
    assert_eq!(
        per_model_cost,
        field("cost_micros"),
        "breakdowns add up to the total"
    );
    let shares: f64 = usage["by_model"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cost_share"].as_f64().unwrap())
        .sum();
    assert!(
        (shares - 100.0).abs() < 0.05,
        "shares add up to 100 %: {shares}"
    );
    // The recent events are the events, the count among them included.
    let page = root.ok("/api/v1/orgs/acme/events").await;
    assert_eq!(page["events"].as_array().unwrap().len(), events.len());
    // The key's last use is recorded.
    let keys = root.ok("/api/v1/orgs/acme/keys").await;
    assert!(keys[0]["last_used_at"].is_string(), "{keys}");
    let cross: Value = root.ok("/api/v1/usage/orgs?range=this_month").await;
    assert_eq!(cross[0]["cost_micros"], t["cost_micros"]);
    env.stop().await;
}

mod on_sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn api_changes_reach_the_gateway() {
        super::api_changes_reach_the_gateway(false).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn api_usage_equals_the_recorded_events() {
        super::api_usage_equals_the_recorded_events(false).await
    }
}

mod on_postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn api_changes_reach_the_gateway() {
        super::api_changes_reach_the_gateway(true).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn api_usage_equals_the_recorded_events() {
        super::api_usage_equals_the_recorded_events(true).await
    }
}

/// The fleet status lists models without a price, which are names tenants sent: a member sees
/// only their own orgs' (a superuser every org's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpriced_model_names_stay_with_their_org() {
    let env = TestEnv::start().await;
    let (acme, key) = env.org_with_key("acme").await;
    let (globex, _) = env.org_with_key("globex").await;
    assert_eq!(
        generate(
            &env,
            &key,
            "/v1beta/models/gemini-99-secret-project:generateContent"
        )
        .await,
        200
    );
    eventually(WITHIN, "the event", || async {
        env.store.count_events(acme).await.unwrap() == 1
    })
    .await;
    let token_of = |org: i64, email: &'static str| {
        let store = env.store.clone();
        async move {
            let u = store
                .create_user(email, "a long password", false)
                .await
                .unwrap();
            store
                .add_member(org, u.id, store::Role::Member)
                .await
                .unwrap();
            let audit = store::Audit::new("test", "token.create");
            store
                .create_token_audited(u.id, "t", None, &audit)
                .await
                .unwrap()
                .1
        }
    };
    let outsider = Caller::Token(
        env.admin_url.clone(),
        token_of(globex, "g@globex.test").await,
    );
    let insider = Caller::Token(env.admin_url.clone(), token_of(acme, "a@acme.test").await);
    let models = |v: Value| v["unpriced_models"].to_string();
    assert_eq!(models(outsider.ok("/api/v1/status").await), "[]");
    assert!(models(insider.ok("/api/v1/status").await).contains("gemini-99-secret-project"));
    assert!(models(env.admin_json("/api/v1/status").await).contains("gemini-99-secret-project"));
    env.stop().await;
}

/// A service key names only the organizations it was created for: its own by default, others
/// its creator manages, or any (superusers only); the gateway enforces what the API recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_keys_act_only_for_the_orgs_they_were_created_for() {
    let env = TestEnv::start().await;
    let root = Caller::Token(env.admin_url.clone(), env.superuser_token().await);
    for name in ["acme", "globex", "initech"] {
        let (s, _) = root
            .call(Method::POST, "/api/v1/orgs", Some(json!({ "name": name })))
            .await;
        assert_eq!(s, 201);
    }
    let s = &env.store;
    let admin = s
        .create_user("admin@acme.test", "a long password", false)
        .await
        .unwrap();
    for org in ["acme", "globex"] {
        let id = s.get_org_by_name(org).await.unwrap().id;
        s.add_member(id, admin.id, store::Role::Admin)
            .await
            .unwrap();
    }
    let audit = store::Audit::new("test", "token.create");
    let admin_token = s
        .create_token_audited(admin.id, "t", None, &audit)
        .await
        .unwrap()
        .1;
    let admin = Caller::Token(env.admin_url.clone(), admin_token);
    let create = |who: &Caller, body: Value| {
        let who = who.clone();
        async move {
            who.call(Method::POST, "/api/v1/orgs/acme/keys", Some(body))
                .await
        }
    };
    // An admin of acme and globex may make an acme key that also acts for globex...
    let (st, k) = create(
        &admin,
        json!({"kind": "service", "name": "svc", "acts_for": ["globex"]}),
    )
    .await;
    assert_eq!(st, 201, "{k}");
    let globex = s.get_org_by_name("globex").await.unwrap().id;
    assert_eq!(k["acts_for"], json!([globex]));
    assert_eq!(k["any_org"], false);
    // ...but not for initech (not theirs: not found), not for any org, not as an app key.
    let (st, _) = create(&admin, json!({"kind": "service", "acts_for": ["initech"]})).await;
    assert_eq!(st, 404);
    let (st, _) = create(&admin, json!({"kind": "service", "any_org": true})).await;
    assert_eq!(st, 403);
    let (st, v) = create(&admin, json!({"acts_for": ["globex"]})).await;
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["error"]["field"], "acts_for");
    let (st, any) = create(&root, json!({"kind": "service", "any_org": true})).await;
    assert_eq!(st, 201);
    assert_eq!(any["any_org"], true);

    env.refresh().await;
    let svc = k["secret"].as_str().unwrap();
    let any = any["secret"].as_str().unwrap();
    let as_org = |key: &str, org: &str| {
        let (url, key, org) = (
            format!("{}{FLASH}", env.gateway_url),
            key.to_owned(),
            org.to_owned(),
        );
        async move {
            client()
                .post(url)
                .header("x-goog-api-key", key)
                .header("x-tollgate-org", org)
                .json(&json!({"contents": [{"parts": [{"text": "hi"}]}]}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(as_org(svc, "acme").await, 200);
    assert_eq!(as_org(svc, "globex").await, 200);
    assert_eq!(as_org(svc, "initech").await, 403);
    assert_eq!(as_org(any, "initech").await, 200);
    env.stop().await;
}
