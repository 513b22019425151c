//! Usage limits end to end: Google's SDK raising its 429 at the limit, exact bursts, a fleet of
//! two gateways on one PostgreSQL, fail-open with the database down at start-up, alerts and
//! their webhook, live changes through the CLI.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use store::{Feature, KeyKind, LimitSpec, LimitType};
use tokio::sync::Notify;

use crate::harness::{client, eventually, postgres_url, stdout_of, unique_schema, Opts, TestEnv};
use crate::metering::event;
use crate::outage::CuttableProxy;
use crate::sdk::python;

const GEN: &str = "/v1beta/models/gemini-2.5-flash:generateContent";

async fn set_limit(env: &TestEnv, org: i64, t: LimitType, value: i64, enabled: bool) {
    env.store
        .set_limit(
            org,
            &LimitSpec {
                limit_type: t,
                value,
                alert_threshold: 80,
                enabled,
            },
        )
        .await
        .unwrap();
    env.refresh().await;
}

async fn gen(url: &str, key: &str, body: Value) -> reqwest::Response {
    client()
        .post(format!("{url}{GEN}"))
        .header("x-goog-api-key", key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn prompt() -> Value {
    json!({"contents": [{"parts": [{"text": "why is the sky blue"}]}], "generationConfig": {"maxOutputTokens": 20}})
}

async fn sdk(env: &TestEnv, key: &str, mode: &str, n: usize) -> Option<Value> {
    let py = python()?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/limit_calls.py");
    let mut cmd = tokio::process::Command::new(py);
    cmd.args([script, &env.gateway_url, key, mode, &n.to_string()]);
    Some(serde_json::from_slice(&stdout_of(&mut cmd, "").await).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_raises_its_429_at_each_limit() {
    let env = TestEnv::start().await;
    // daily_requests = 5: five calls, the sixth raises RESOURCE_EXHAUSTED; countTokens never.
    let (org, key) = env.org_with_key("acme").await;
    set_limit(&env, org, LimitType::DailyRequests, 5, true).await;
    let Some(r) = sdk(&env, &key, "generate", 6).await else {
        return;
    };
    assert_eq!(r["ok"], 5, "{r}");
    assert_eq!(
        (r["error"]["code"].as_i64(), r["error"]["status"].as_str()),
        (Some(429), Some("RESOURCE_EXHAUSTED"))
    );
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("daily_requests"),
        "{r}"
    );
    let r = sdk(&env, &key, "count", 10).await.unwrap();
    assert_eq!(r["ok"], 10, "countTokens is never refused by a limit: {r}");

    // monthly_tokens = 50: each call uses 5 + 5 + 7 = 17 tokens → 0, 17, 34 pass; 51 refuses.
    let (org, key) = env.org_with_key("tokens").await;
    set_limit(&env, org, LimitType::MonthlyTokens, 50, true).await;
    let r = sdk(&env, &key, "generate", 10).await.unwrap();
    assert_eq!(
        (r["ok"].as_i64(), r["error"]["code"].as_i64()),
        (Some(3), Some(429)),
        "{r}"
    );

    // monthly_cost = 100 micro-dollars: each call costs 32 → 0, 32, 64, 96 pass; 128 refuses.
    let (org, key) = env.org_with_key("cost").await;
    set_limit(&env, org, LimitType::MonthlyCost, 100, true).await;
    let r = sdk(&env, &key, "generate", 10).await.unwrap();
    assert_eq!(
        (r["ok"].as_i64(), r["error"]["code"].as_i64()),
        (Some(4), Some(429)),
        "{r}"
    );

    // daily_ads = 5 with Imagen (2 images a call) and Veo (1 video): 2 + 2, then 2 would pass 5;
    // one video fits (5), the next does not.
    let (org, key) = env.org_with_key("ads").await;
    set_limit(&env, org, LimitType::DailyAds, 5, true).await;
    let r = sdk(&env, &key, "imagen2", 5).await.unwrap();
    assert_eq!(
        (r["ok"].as_i64(), r["error"]["code"].as_i64()),
        (Some(2), Some(429)),
        "{r}"
    );
    let r = sdk(&env, &key, "veo1", 5).await.unwrap();
    assert_eq!(
        (r["ok"].as_i64(), r["error"]["code"].as_i64()),
        (Some(1), Some(429)),
        "{r}"
    );

    // A disabled limit refuses nothing.
    let (org, key) = env.org_with_key("disabled").await;
    set_limit(&env, org, LimitType::DailyRequests, 1, false).await;
    let r = sdk(&env, &key, "generate", 3).await.unwrap();
    assert_eq!(r["ok"], 3, "{r}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_names_the_limit_and_when_it_resets() {
    let env = TestEnv::start().await;
    let (org, key) = env.org_with_key("acme").await;
    set_limit(&env, org, LimitType::DailyRequests, 2, true).await;
    assert_eq!(gen(&env.gateway_url, &key, prompt()).await.status(), 200);
    let second = gen(&env.gateway_url, &key, prompt()).await;
    assert_eq!(
        second.headers().get("x-tollgate-limit-warning").unwrap(),
        "daily_requests=100%",
        "at or above the threshold"
    );
    let r = gen(&env.gateway_url, &key, prompt()).await;
    assert_eq!(r.status(), 429);
    let h = r.headers().clone();
    assert_eq!(h.get("x-ratelimit-limit").unwrap(), "2");
    assert_eq!(h.get("x-ratelimit-remaining").unwrap(), "0");
    let retry: i64 = h
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        retry > 0 && retry <= 86_400,
        "seconds until UTC midnight: {retry}"
    );
    assert_eq!(
        h.get("x-ratelimit-reset").unwrap().to_str().unwrap(),
        retry.to_string()
    );
    let v: Value = r.json().await.unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("daily_requests")
            && msg.contains("limit of 2")
            && msg.contains("used 2")
            && msg.contains("resets_at"),
        "{msg}"
    );
    assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(
        env.fake.calls().len(),
        2,
        "the refused request never reached Google"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_200_against_50_admits_exactly_50() {
    let env = TestEnv::start().await;
    let (org, key) = env.org_with_key("acme").await;
    set_limit(&env, org, LimitType::DailyRequests, 50, true).await;
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (url, key) = (env.gateway_url.clone(), key.clone());
            tokio::spawn(async move { gen(&url, &key, prompt()).await.status().as_u16() })
        })
        .collect();
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            429 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((ok, refused), (50, 150), "exactly the limit is admitted");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cost_burst_overshoots_by_at_most_one_request() {
    let env = TestEnv::start().await;
    let (org, key) = env.org_with_key("acme").await;
    // Each call costs 32 micro-dollars (5 in, 5 out, 7 thinking on gemini-2.5-flash) and reserves
    // its estimate (short prompt at 3 bytes per token + maxOutputTokens 20) while in flight.
    let limit = 3_000;
    set_limit(&env, org, LimitType::MonthlyCost, limit, true).await;
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let (url, key) = (env.gateway_url.clone(), key.clone());
            tokio::spawn(async move {
                let r = client()
                    .post(format!("{url}{GEN}"))
                    .header("x-goog-api-key", &key)
                    .header("x-request-id", format!("burst-{i}"))
                    .json(&prompt())
                    .send()
                    .await
                    .unwrap();
                r.status().as_u16()
            })
        })
        .collect();
    let mut ok = 0i64;
    for t in tasks {
        if t.await.unwrap() == 200 {
            ok += 1;
        }
    }
    let mut total = 0;
    for i in 0..200 {
        let e = event(&env, &format!("burst-{i}")).await;
        total += e.cost_micros;
    }
    // The documented bound: an admitted request started below the limit, so the overshoot is at
    // most one request's cost plus what in-flight requests used beyond their estimates (here
    // estimates exceed the truth, so nothing).
    assert!(
        total <= limit + 32,
        "metered {total} µ$ against a limit of {limit} µ$ ({ok} admitted)"
    );
    assert!(ok > 0);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_fire_once_and_a_slow_webhook_blocks_nothing() {
    // A webhook receiver that records calls and holds each one until released.
    let calls: Arc<Mutex<Vec<Value>>> = Arc::default();
    let release = Arc::new(Notify::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    {
        let (calls, release) = (calls.clone(), release.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
                let (calls, release) = (calls.clone(), release.clone());
                async move {
                    calls.lock().unwrap().push(v);
                    release.notified().await;
                    "ok"
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    }
    let env = TestEnv::start_with(Opts {
        limits_toml: format!("webhook_url = \"{hook}\"\nwebhook_timeout_ms = 30000\n"),
        ..Opts::default()
    })
    .await;
    let (org, key) = env.org_with_key("acme").await;
    set_limit(&env, org, LimitType::DailyRequests, 10, true).await;
    // 12 requests: the 8th crosses 80 %, the 10th reaches 100 %, two are refused. All of them
    // complete while the webhook receiver is still holding its first call.
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(
            gen(&env.gateway_url, &key, prompt())
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 10);
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 2);
    let deadline = Instant::now() + Duration::from_secs(10);
    while calls.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no webhook call");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the receiver answer, then wait for the 100 % alert too.
    let releaser = tokio::spawn({
        let release = release.clone();
        async move {
            loop {
                release.notify_waiters();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    while calls.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "no second webhook call");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Both deliveries answered, so neither is retried: a third call now would be a third alert.
    let g = env.running.as_ref().unwrap().gateway.as_ref().unwrap();
    eventually(
        Duration::from_secs(10),
        "the two webhook calls were not both answered",
        || async {
            g.metrics
                .webhook_deliveries
                .with_label_values(&["ok"])
                .get()
                == 2
        },
    )
    .await;
    releaser.abort();
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "one call per threshold: {calls:?}");
    assert_eq!(
        (
            calls[0]["limit"].as_str(),
            calls[0]["threshold"].as_i64(),
            calls[0]["value"].as_i64()
        ),
        (Some("daily_requests"), Some(80), Some(10))
    );
    assert_eq!(calls[1]["threshold"], 100);
    assert_eq!(calls[0]["org"], "acme");
    let alerts = env.store.list_alerts(org).await.unwrap();
    assert_eq!(
        alerts.len(),
        2,
        "exactly one alert per threshold and period: {alerts:?}"
    );
    assert_eq!(
        g.metrics
            .alerts_fired
            .with_label_values(&["daily_requests"])
            .get(),
        2
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_set_and_removed_with_the_cli_apply_within_5_seconds() {
    let env = TestEnv::start().await;
    let (_, key) = env.org_with_key("acme").await;
    for _ in 0..3 {
        assert_eq!(gen(&env.gateway_url, &key, prompt()).await.status(), 200);
    }
    env.cli(&[
        "limit",
        "set",
        "--org",
        "acme",
        "--type",
        "daily_requests",
        "--value",
        "2",
    ])
    .await;
    eventually(
        Duration::from_secs(5),
        "a new limit was not enforced within 5 s",
        || async { gen(&env.gateway_url, &key, prompt()).await.status() == 429 },
    )
    .await;
    env.cli(&[
        "limit",
        "remove",
        "--org",
        "acme",
        "--type",
        "daily_requests",
    ])
    .await;
    eventually(
        Duration::from_secs(5),
        "a removed limit still refused after 5 s",
        || async { gen(&env.gateway_url, &key, prompt()).await.status() == 200 },
    )
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_postgres_share_the_limit() {
    let Some(pg) = postgres_url() else { return };
    let schema = unique_schema("fleet");
    let opts = || Opts {
        database: Some((pg.clone(), Some(schema.clone()))),
        ..Opts::default()
    };
    let a = TestEnv::start_with(opts()).await;
    let b = TestEnv::start_with(opts()).await;
    let org = a.store.create_org("acme", Feature::ALL).await.unwrap().id;
    let (_, key) = a
        .store
        .create_key(org, KeyKind::App, "k", None)
        .await
        .unwrap();
    let limit = 40;
    a.store
        .set_limit(
            org,
            &LimitSpec {
                limit_type: LimitType::DailyRequests,
                value: limit,
                alert_threshold: 80,
                enabled: true,
            },
        )
        .await
        .unwrap();
    a.refresh().await;
    b.refresh().await;

    let started = Instant::now();
    let mut ok = 0i64;
    let mut to_b = 0;
    for i in 0..120 {
        let env = if i % 2 == 0 { &a } else { &b };
        to_b += i % 2;
        if gen(&env.gateway_url, &key, prompt()).await.status() == 200 {
            ok += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rate = to_b as f64 / started.elapsed().as_secs_f64();
    // README: overshoot ≤ (instances − 1) × requests per second per instance × (sync + flush interval).
    let bound = ((2 - 1) as f64 * rate * (1.0 + 0.05)).ceil() as i64 + 1;
    assert!(ok >= limit, "the fleet admits at least the limit ({ok})");
    assert!(ok <= limit + bound, "{ok} admitted against {limit}: overshoot beyond the bound {bound} ({rate:.0} req/s per instance)");
    eprintln!(
        "fleet: {ok} admitted against {limit}, bound {bound} at {rate:.0} req/s per instance"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_down_at_start_up_requests_flow_and_limits_return() {
    let Some(pg) = postgres_url() else { return };
    let proxy = CuttableProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let via_proxy = pg.replacen("127.0.0.1:5432", &proxy.addr.to_string(), 1);
    let schema = unique_schema("failopen");
    let saved = tempfile::tempdir().unwrap();
    let opts = || Opts {
        database: Some((via_proxy.clone(), Some(schema.clone()))),
        saved_config: Some(saved.path().join("live.json")),
        work_stealing: true, // two gateways, one after the other, in this process
        ..Opts::default()
    };
    // A first run sets things up (and saves the live config), then stops.
    let first = TestEnv::start_with(opts()).await;
    let (org, key) = first.org_with_key("acme").await;
    set_limit(&first, org, LimitType::DailyRequests, 3, true).await;
    first.stop().await;

    proxy.cut();
    let env = TestEnv::start_with(opts()).await;
    let g = env.running.as_ref().unwrap().gateway.as_ref().unwrap();
    for i in 0..5 {
        let s = gen(&env.gateway_url, &key, prompt()).await.status();
        assert_eq!(
            s, 200,
            "request {i}: fail-open forwards while limits cannot be enforced"
        );
    }
    assert_eq!(g.metrics.degraded.get(), 1);
    assert!(
        g.metrics
            .fail_open
            .with_label_values(&["counters_unavailable"])
            .get()
            >= 5
    );

    proxy.restore();
    eventually(
        Duration::from_secs(15),
        "still degraded 15 s after the database came back",
        || async { g.metrics.degraded.get() == 0 },
    )
    .await;
    assert_eq!(
        gen(&env.gateway_url, &key, prompt()).await.status(),
        429,
        "the limit (3) applies again: 5 were served"
    );
    // The heartbeat the admin service shows for its banner: this gateway, no longer degraded.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = env.admin_json("/api/v1/status").await;
        let gws = status["gateways"].as_array().cloned().unwrap_or_default();
        if gws
            .iter()
            .any(|g| g["degraded"] == false && g["stale"] == false)
        {
            break;
        }
        assert!(Instant::now() < deadline, "no fresh heartbeat: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.stop().await;
}
