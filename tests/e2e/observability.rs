//! Observability: /metrics after known traffic (parsed with a real Prometheus text-format
//! parser), the cardinality guard, `promtool check metrics`, and the access log's fields with no
//! key or prompt in it.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use store::{Feature, LimitSpec, LimitType};
use tokio::io::AsyncBufReadExt;

use crate::fake_google::{FakeGoogle, PROVIDER_KEY};
use crate::harness::{bin, client, eventually, free_port, get_text, Opts, TestEnv};

pub async fn scrape(url: &str) -> (String, prometheus_parse::Scrape) {
    let text = get_text(&format!("{url}/metrics")).await;
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).unwrap();
    (text, parsed)
}

/// The value of one sample with exactly these labels (among possibly more).
fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

fn promtool(text: &str) {
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        crate::harness::missing("promtool is not installed (Debian's prometheus package; `make test` installs it when it can)");
        return;
    };
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn post(url: &str, key: &str, model: &str, headers: &[(&str, &str)]) -> u16 {
    let mut r = client()
        .post(format!("{url}/v1beta/models/{model}:generateContent"))
        .header("x-goog-api-key", key)
        .json(&json!({"contents": [{"parts": [{"text": "why is the sky blue"}]}]}));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().await.unwrap();
    let s = r.status().as_u16();
    r.bytes().await.unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_known_traffic() {
    let saved = tempfile::tempdir().unwrap();
    let live = saved.path().join("live.json");
    let env = TestEnv::start_with(Opts {
        saved_config: Some(live.clone()),
        work_stealing: true, // a second gateway follows in this process
        ..Opts::default()
    })
    .await;
    let (org, key) = env.org_with_key("acme").await;
    env.store
        .set_limit(
            org,
            &LimitSpec {
                limit_type: LimitType::DailyRequests,
                value: 3,
                alert_threshold: 80,
                enabled: true,
            },
        )
        .await
        .unwrap();
    env.refresh().await;
    assert_eq!(
        post(&env.gateway_url, &key, "gemini-2.5-flash", &[]).await,
        200
    );
    assert_eq!(
        post(&env.gateway_url, &key, "gemini-2.5-flash", &[]).await,
        200
    );
    assert_eq!(
        post(&env.gateway_url, &key, "error-500", &[]).await,
        500,
        "an upstream error"
    );
    assert_eq!(
        post(&env.gateway_url, &key, "gemini-2.5-flash", &[]).await,
        429,
        "a refusal"
    );
    assert_eq!(
        post(
            &env.gateway_url,
            "tg_nopenopenopenopenopenopenopenopenope",
            "gemini-2.5-flash",
            &[]
        )
        .await,
        401
    );
    // A request's metrics are counted after its response, and its event queued after them: all
    // five events written means all five requests counted.
    eventually(
        Duration::from_secs(10),
        "the five requests' events were not all written",
        || async {
            let (_, s) = scrape(&env.metrics_url).await;
            value(&s, "tollgate_events_written_total", &[]) >= 5.0
        },
    )
    .await;

    let (text, s) = scrape(&env.metrics_url).await;
    let req = |model: &str, class: &str| {
        value(
            &s,
            "tollgate_requests_total",
            &[
                ("provider", "gemini"),
                ("model", model),
                ("operation", "generateContent"),
                ("status_class", class),
            ],
        )
    };
    assert_eq!(req("gemini-2.5-flash", "2xx"), 2.0);
    assert_eq!(
        req("gemini-2.5-flash", "4xx"),
        2.0,
        "the refusal and the bad key"
    );
    assert_eq!(
        req("unknown", "5xx"),
        1.0,
        "the upstream error (an unpriced model name)"
    );
    assert_eq!(
        value(
            &s,
            "tollgate_limit_refusals_total",
            &[("limit", "daily_requests")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "tollgate_auth_failures_total",
            &[("reason", "unknown_key")]
        ),
        1.0
    );
    // Two served calls of 5 input / 5 output / 7 thinking tokens, 32 micro-dollars each.
    assert_eq!(
        value(
            &s,
            "tollgate_org_tokens_total",
            &[("org", "acme"), ("kind", "input")]
        ),
        10.0
    );
    assert_eq!(
        value(
            &s,
            "tollgate_org_tokens_total",
            &[("org", "acme"), ("kind", "thinking")]
        ),
        14.0
    );
    assert_eq!(
        value(
            &s,
            "tollgate_model_tokens_total",
            &[("model", "gemini-2.5-flash"), ("kind", "output")]
        ),
        10.0
    );
    assert!(
        (value(&s, "tollgate_org_cost_dollars_total", &[("org", "acme")]) - 0.000064).abs() < 1e-9
    );
    assert_eq!(value(&s, "tollgate_events_dropped_total", &[]), 0.0);
    assert_eq!(value(&s, "tollgate_enforcement_degraded", &[]), 0.0);
    assert!(
        s.samples
            .iter()
            .any(|x| x.metric == "process_resident_memory_bytes"),
        "process metrics are exported"
    );
    assert!(s
        .samples
        .iter()
        .any(|x| x.metric == "tollgate_gateway_overhead_seconds_count"));
    promtool(&text);
    env.stop().await;

    // The same keys with the database gone: fail-open, and events go to the spool.
    let closed = free_port();
    let env = TestEnv::start_with(Opts {
        database: Some((format!("postgres://postgres@127.0.0.1:{closed}/none"), None)),
        saved_config: Some(live),
        work_stealing: true,
        ..Opts::default()
    })
    .await;
    assert_eq!(
        post(&env.gateway_url, &key, "gemini-2.5-flash", &[]).await,
        200
    );
    let g = env.running.as_ref().unwrap().gateway.as_ref().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while g.metrics.events_spooled.get() == 0 {
        assert!(Instant::now() < deadline, "the event was not spooled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (text, s) = scrape(&env.metrics_url).await;
    assert_eq!(
        value(
            &s,
            "tollgate_fail_open_total",
            &[("reason", "counters_unavailable")]
        ),
        1.0
    );
    assert_eq!(value(&s, "tollgate_enforcement_degraded", &[]), 1.0);
    assert_eq!(value(&s, "tollgate_events_spooled_total", &[]), 1.0);
    assert!(value(&s, "tollgate_spool_bytes", &[]) >= 0.0);
    promtool(&text);
    let ready = get_text(&format!("{}/readyz", env.metrics_url)).await;
    assert!(ready.contains("fail-open engaged"), "{ready}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_models_and_5000_orgs_stay_under_the_series_bound() {
    let env = TestEnv::start().await;
    let acme = env.store.create_org("acme", Feature::ALL).await.unwrap();
    let (_, service) = env
        .store
        .create_service_key(acme.id, "svc", &store::ActsFor::Any)
        .await
        .unwrap();
    for i in 0..5_000 {
        env.store
            .create_org(&format!("org-{i}"), Feature::ALL)
            .await
            .unwrap();
    }
    env.refresh().await;
    let mut tasks = Vec::new();
    for w in 0..16 {
        let (url, key) = (env.gateway_url.clone(), service.clone());
        tasks.push(tokio::spawn(async move {
            for i in (w..10_000).step_by(16) {
                let org = format!("org-{}", i % 5_000);
                let model = format!("gemini-made-up-{i}");
                assert_eq!(
                    post(&url, &key, &model, &[("x-tollgate-org", &org)]).await,
                    200
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (_, s) = scrape(&env.metrics_url).await;
    let series = s.samples.len();
    // README: at most 16,000 series with metrics.max_org_labels = 1000, whatever the traffic.
    assert!(series <= 16_000, "{series} series");
    let orgs: std::collections::HashSet<&str> = s
        .samples
        .iter()
        .filter_map(|x| x.labels.get("org"))
        .collect();
    assert!(
        orgs.len() <= 1_001 && orgs.contains("other"),
        "{} org labels",
        orgs.len()
    );
    let models: std::collections::HashSet<&str> = s
        .samples
        .iter()
        .filter_map(|x| x.labels.get("model"))
        .collect();
    assert!(
        models.len() <= 3,
        "made-up models share one label: {models:?}"
    );
    eprintln!("series after 10,000 requests over 5,000 orgs and 10,000 model names: {series}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_has_the_fields_and_no_secret() {
    let fake = FakeGoogle::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/t.db", dir.path().display());
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(bin())
            .args(args)
            .current_dir(dir.path())
            .env("TOLLGATE_DATABASE__URL", &db)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    cli(&["org", "create", "acme"]);
    let created: Value =
        serde_json::from_str(&cli(&["key", "create", "--org", "acme", "--json"])).unwrap();
    let key = created["secret"].as_str().unwrap().to_owned();
    let port = free_port();
    let mut child = tokio::process::Command::new(bin())
        .arg("gateway")
        .current_dir(dir.path())
        .env("TOLLGATE_DATABASE__URL", &db)
        .env("TOLLGATE_GATEWAY__LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "TOLLGATE_METRICS__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("TOLLGATE_PROVIDERS__GEMINI__BASE_URL", fake.base_url())
        .env("TOLLGATE_LOG__FORMAT", "json")
        .env("GEMINI_API_KEY", PROVIDER_KEY)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the gateway did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secret_prompt = "purple elephants whisper the launch codes";
    let r = client()
        .post(format!(
            "http://127.0.0.1:{port}/v1beta/models/gemini-2.5-flash:generateContent?key={key}"
        ))
        .header("x-request-id", "log-test-1")
        .json(&json!({"contents": [{"parts": [{"text": secret_prompt}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    // Read stderr until the access line shows up.
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut all = Vec::new();
    let access = loop {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        all.push(line.clone());
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        if v["target"] == "access" {
            break v;
        }
    };
    let f = &access["fields"];
    assert_eq!(f["client_request_id"], "log-test-1");
    assert_eq!(
        f["request_id"].as_str().unwrap().len(),
        32,
        "the gateway's own id"
    );
    assert_eq!(f["org"], "acme");
    assert_eq!(f["key.prefix"], &key[..10]);
    assert_eq!(
        (
            f["provider"].as_str(),
            f["model"].as_str(),
            f["operation"].as_str()
        ),
        (
            Some("gemini"),
            Some("gemini-2.5-flash"),
            Some("generateContent")
        )
    );
    assert_eq!(f["status"], 200);
    assert_eq!(
        (f["tokens.input"].as_i64(), f["tokens.output"].as_i64()),
        (Some(6), Some(5)),
        "6 prompt words, 5 output tokens from the fake"
    );
    assert!(f["cost_micros"].as_i64().unwrap() > 0);
    assert!(f["upstream_ms"].is_u64() && f["total_ms"].is_u64(), "{f}");
    let log = all.join("\n");
    assert!(!log.contains(&key), "the key never reaches a log");
    assert!(
        !log.contains("purple elephants"),
        "the prompt never reaches a log"
    );
    assert!(!log.contains(PROVIDER_KEY), "nor does the provider key");
    child.kill().await.ok();
    let _: HashMap<(), ()> = HashMap::new();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_service_has_its_own_metrics() {
    let env = TestEnv::start().await;
    for _ in 0..3 {
        client()
            .get(format!("{}/healthz", env.admin_url))
            .send()
            .await
            .unwrap();
    }
    client()
        .get(format!("{}/no-such-page", env.admin_url))
        .send()
        .await
        .unwrap();
    let (text, s) = scrape(&env.admin_url).await;
    assert_eq!(
        value(
            &s,
            "tollgate_admin_http_requests_total",
            &[("route", "/healthz"), ("status", "200")]
        ),
        3.0
    );
    assert_eq!(
        value(
            &s,
            "tollgate_admin_http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ),
        1.0,
        "unknown paths share one label"
    );
    assert!(s
        .samples
        .iter()
        .any(|x| x.metric == "tollgate_admin_http_request_duration_seconds_count"));
    assert_eq!(
        value(&s, "tollgate_admin_logins_total", &[("result", "failed")]),
        0.0
    );
    promtool(&text);
    env.stop().await;
}

#[test]
fn the_grafana_dashboard_uses_only_metrics_we_export() {
    let dash: Value =
        serde_json::from_str(include_str!("../../config/grafana-dashboard.json")).unwrap();
    let declared = [
        include_str!("../../gateway/src/metrics.rs"),
        include_str!("../../admin/src/metrics.rs"),
    ]
    .concat();
    let mut checked = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if !word.starts_with("tollgate_") {
                    continue;
                }
                let base = word
                    .trim_end_matches("_bucket")
                    .trim_end_matches("_count")
                    .trim_end_matches("_sum");
                assert!(
                    declared.contains(&format!("\"{base}\"")),
                    "panel {:?} uses {word}, which no metrics.rs declares",
                    panel["title"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 20);
}
