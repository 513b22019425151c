//! The gateway as a drop-in Google base URL, over raw HTTP: identity and its errors, feature
//! flags, byte-for-byte pass-through, streaming without buffering, upstream failures, live config.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use store::{Feature, KeyKind};

use crate::harness::{client, eventually, refusing_port, Opts, TestEnv};

const GEN: &str = "/v1beta/models/gemini-2.5-flash:generateContent";

fn prompt() -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": "why is the sky blue"}]}]})
}

async fn post(url: &str, key: Option<&str>, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = client().post(url).json(&prompt());
    if let Some(k) = key {
        req = req.header("x-goog-api-key", k);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

async fn google_error(resp: reqwest::Response) -> (u16, String, String) {
    let code = resp.status().as_u16();
    assert!(
        resp.headers().get("x-request-id").is_some(),
        "gateway errors carry a request id"
    );
    let v: Value = resp.json().await.unwrap();
    let e = &v["error"];
    assert_eq!(e["code"], code, "the body's code matches the status: {v}");
    (
        code,
        e["status"].as_str().unwrap().to_owned(),
        e["message"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_forwarded_with_the_provider_key_only() {
    let env = TestEnv::start().await;
    let (_, key) = env.org_with_key("acme").await;
    // Every place the SDKs put a key, plus attribution headers that must not leak.
    let by_header = post(
        &format!("{}{GEN}", env.gateway_url),
        Some(&key),
        &[("x-tollgate-user", "u1"), ("x-tollgate-tool", "t")],
    )
    .await;
    assert_eq!(by_header.status(), 200);
    let by_query = post(&format!("{}{GEN}?key={key}", env.gateway_url), None, &[]).await;
    assert_eq!(by_query.status(), 200);
    let bearer = format!("Bearer {key}");
    let by_bearer = post(
        &format!("{}{GEN}", env.gateway_url),
        None,
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(by_bearer.status(), 200);
    let direct: Value = client()
        .post(format!("{}{GEN}", env.fake.base_url()))
        .header("x-goog-api-key", crate::fake_google::PROVIDER_KEY)
        .json(&prompt())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let via: Value = by_bearer.json().await.unwrap();
    assert_eq!(via, direct, "the answer is the upstream's, unchanged");
    assert_eq!(env.fake.calls().len(), 4);
    let upstream_host = env.fake.calls()[0]
        .headers
        .get("host")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        upstream_host,
        env.fake.addr.to_string(),
        "Host names the upstream, not the gateway"
    );
    env.assert_clean_upstream();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_errors_are_googles_401_403_and_400() {
    let env = TestEnv::start().await;
    let (org, key) = env.org_with_key("acme").await;
    let globex = env.store.create_org("globex", Feature::ALL).await.unwrap();
    env.store
        .create_org("umbrella", Feature::ALL)
        .await
        .unwrap();
    // A service key that may name globex (besides its own org), and no other.
    let (svc_row, svc) = env
        .store
        .create_service_key(org, "backend", &store::ActsFor::Orgs(vec![globex.id]))
        .await
        .unwrap();
    let (old_row, old) = env
        .store
        .create_key(org, KeyKind::App, "old", None)
        .await
        .unwrap();
    env.store.revoke_key(old_row.id).await.unwrap();
    env.refresh().await;
    let url = format!("{}{GEN}", env.gateway_url);

    let (code, status, msg) = google_error(post(&url, None, &[]).await).await;
    assert_eq!((code, status.as_str()), (401, "UNAUTHENTICATED"));
    assert!(msg.contains("missing"), "{msg}");
    let (code, status, _) =
        google_error(post(&url, Some("tg_unknownunknownunknownunknownunknown"), &[]).await).await;
    assert_eq!((code, status.as_str()), (401, "UNAUTHENTICATED"));
    let (code, _, msg) = google_error(post(&url, Some(&old), &[]).await).await;
    assert_eq!(code, 401);
    assert!(msg.contains("revoked"), "{msg}");
    assert!(
        !msg.contains(&old),
        "the key never appears in an error body"
    );
    let (code, status, _) =
        google_error(post(&url, Some(&key), &[("x-tollgate-org", "globex")]).await).await;
    assert_eq!(
        (code, status.as_str()),
        (403, "PERMISSION_DENIED"),
        "only service keys may name the org"
    );
    for other in ["initech", "umbrella"] {
        let (code, status, msg) =
            google_error(post(&url, Some(&svc), &[("x-tollgate-org", other)]).await).await;
        assert_eq!(
            (code, status.as_str()),
            (403, "PERMISSION_DENIED"),
            "a service key names only the orgs it was allowed (whether {other} exists or not)"
        );
        assert!(msg.contains("may not act for"), "{msg}");
    }
    let ok = post(&url, Some(&svc), &[("x-tollgate-org", "globex")]).await;
    assert_eq!(
        ok.status(),
        200,
        "a service key may bill an org it was allowed"
    );
    let _ = svc_row;
    assert_eq!(
        env.fake.calls().len(),
        1,
        "refused requests never reach the upstream"
    );
    env.assert_clean_upstream();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feature_flags_refuse_with_403() {
    let env = TestEnv::start().await;
    let (acme, key) = env
        .org_with_key_without(
            "acme",
            &[Feature::VideoGeneration, Feature::ImageGeneration],
        )
        .await;
    let veo = format!(
        "{}/v1beta/models/veo-3.0-generate-001:predictLongRunning",
        env.gateway_url
    );
    let (code, status, msg) = google_error(post(&veo, Some(&key), &[]).await).await;
    assert_eq!((code, status.as_str()), (403, "PERMISSION_DENIED"));
    assert!(msg.contains("video_generation"), "{msg}");
    let imagen = format!(
        "{}/v1beta1/publishers/google/models/imagen-4.0-generate-001:predict",
        env.gateway_url
    );
    assert_eq!(post(&imagen, Some(&key), &[]).await.status(), 403);
    let image_model = format!(
        "{}/v1beta/models/gemini-2.5-flash-image:generateContent",
        env.gateway_url
    );
    assert_eq!(post(&image_model, Some(&key), &[]).await.status(), 403);
    // Polling an operation (made before the flag went off) stays allowed, and text still works.
    env.own(acme, &["operations/v1"]).await;
    let poll = client()
        .get(format!(
            "{}/v1beta/models/veo-3.0-generate-001/operations/v1",
            env.gateway_url
        ))
        .header("x-goog-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(poll.status(), 200);
    assert_eq!(
        post(&format!("{}{GEN}", env.gateway_url), Some(&key), &[])
            .await
            .status(),
        200
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_pass_through_byte_for_byte() {
    let env = TestEnv::start().await;
    let (_, key) = env.org_with_key("acme").await;
    for (model, code) in [("error-429", 429), ("error-500", 500), ("error-400", 400)] {
        let path = format!("/v1beta/models/{model}:generateContent");
        let direct = client()
            .post(format!("{}{path}", env.fake.base_url()))
            .header("x-goog-api-key", crate::fake_google::PROVIDER_KEY)
            .json(&prompt())
            .send()
            .await
            .unwrap();
        let direct_ct = direct.headers().get("content-type").cloned();
        let direct_body = direct.bytes().await.unwrap();
        let via = post(&format!("{}{path}", env.gateway_url), Some(&key), &[]).await;
        assert_eq!(via.status().as_u16(), code);
        assert_eq!(via.headers().get("content-type").cloned(), direct_ct);
        assert_eq!(
            via.bytes().await.unwrap(),
            direct_body,
            "{model}: the upstream's error body, untouched"
        );
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_get_a_google_404() {
    let env = TestEnv::start().await;
    let (_, key) = env.org_with_key("acme").await;
    let (code, status, _) =
        google_error(post(&format!("{}/v2/whatever", env.gateway_url), Some(&key), &[]).await)
            .await;
    assert_eq!((code, status.as_str()), (404, "NOT_FOUND"));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_arrive_while_the_upstream_is_still_sending() {
    let env = TestEnv::start().await;
    let (_, key) = env.org_with_key("acme").await;
    // The fake sends 3 events 700 ms apart.
    let url = format!(
        "{}/v1beta/models/gemini-slow:streamGenerateContent?alt=sse",
        env.gateway_url
    );
    let started = Instant::now();
    let resp = post(&url, Some(&key), &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    let first_at = started.elapsed();
    assert!(first.starts_with(b"data: {"), "{first:?}");
    let mut rest = Vec::new();
    while let Some(chunk) = body.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    let total = started.elapsed();
    // The upstream needs ≥ 1.4 s for the whole stream; the first event must come well before.
    assert!(
        total >= Duration::from_millis(1400),
        "the fake's stream takes 1.4 s, took {total:?}"
    );
    assert!(
        first_at + Duration::from_millis(1000) < total,
        "first event at {first_at:?}, end at {total:?}: it was buffered"
    );
    let all = [first.to_vec(), rest].concat();
    assert_eq!(
        String::from_utf8(all).unwrap().matches("\r\n\r\n").count(),
        3,
        "every event and its final delimiter arrive"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_array_stream_passes_unchanged() {
    let env = TestEnv::start().await;
    let (_, key) = env.org_with_key("acme").await;
    let path = "/v1beta/models/gemini-2.5-flash:streamGenerateContent";
    let direct = client()
        .post(format!("{}{path}", env.fake.base_url()))
        .header("x-goog-api-key", crate::fake_google::PROVIDER_KEY)
        .json(&prompt())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let via = post(&format!("{}{path}", env.gateway_url), Some(&key), &[])
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(via, direct);
    let parsed: Vec<Value> = serde_json::from_slice(&via).unwrap();
    assert_eq!(parsed.len(), 4);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_stream_reaches_the_client_as_a_cut() {
    let env = TestEnv::start().await;
    let (_, key) = env.org_with_key("acme").await;
    let url = format!(
        "{}/v1beta/models/gemini-cut:streamGenerateContent?alt=sse",
        env.gateway_url
    );
    let resp = post(&url, Some(&key), &[]).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut got = Vec::new();
    let mut errored = false;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => got.extend_from_slice(&c),
            Err(_) => errored = true,
        }
    }
    assert!(
        errored,
        "a cut upstream must not look like a complete response"
    );
    assert_eq!(
        String::from_utf8_lossy(&got).matches("data: ").count(),
        2,
        "the events sent before the cut arrive"
    );
    // The gateway keeps serving.
    assert_eq!(
        post(&format!("{}{GEN}", env.gateway_url), Some(&key), &[])
            .await
            .status(),
        200
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_a_502() {
    let (_held, closed) = refusing_port();
    let env = TestEnv::start_with(Opts {
        gemini_url: Some(format!("http://127.0.0.1:{closed}")),
        ..Opts::default()
    })
    .await;
    let (_, key) = env.org_with_key("acme").await;
    let (code, status, msg) =
        google_error(post(&format!("{}{GEN}", env.gateway_url), Some(&key), &[]).await).await;
    assert_eq!((code, status.as_str()), (502, "UNAVAILABLE"));
    assert!(
        !msg.contains("127.0.0.1"),
        "no internal detail in the body: {msg}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_is_a_504() {
    let env = TestEnv::start_with(Opts {
        read_timeout_ms: 500,
        ..Opts::default()
    })
    .await;
    let (_, key) = env.org_with_key("acme").await;
    let url = format!(
        "{}/v1beta/models/gemini-slow-json:generateContent",
        env.gateway_url
    );
    let (code, status, _) = google_error(post(&url, Some(&key), &[]).await).await;
    assert_eq!((code, status.as_str()), (504, "DEADLINE_EXCEEDED"));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_kept_or_made() {
    let env = TestEnv::start().await;
    let (_, key) = env.org_with_key("acme").await;
    let url = format!("{}{GEN}", env.gateway_url);
    let given = post(&url, Some(&key), &[("x-request-id", "client-chosen-id-1")]).await;
    assert_eq!(
        given.headers().get("x-request-id").unwrap(),
        "client-chosen-id-1"
    );
    let made = post(&url, Some(&key), &[]).await;
    let id = made
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 32);
    let refused = post(&url, None, &[("x-request-id", "refused-1")]).await;
    assert_eq!(refused.headers().get("x-request-id").unwrap(), "refused-1");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_with_the_cli_is_refused_within_5_seconds() {
    let env = TestEnv::start().await;
    let org = env.store.create_org("acme", Feature::ALL).await.unwrap();
    let (row, key) = env
        .store
        .create_key(org.id, KeyKind::App, "k", None)
        .await
        .unwrap();
    // No manual refresh: the gateway's own background refresh must pick the key up.
    let url = format!("{}{GEN}", env.gateway_url);
    let deadline = Instant::now() + Duration::from_secs(5);
    while post(&url, Some(&key), &[]).await.status() != 200 {
        assert!(
            Instant::now() < deadline,
            "a new key was not accepted within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.cli(&["key", "revoke", &row.id.to_string()]).await;
    eventually(
        Duration::from_secs(5),
        "a revoked key still worked after 5 s",
        || async { post(&url, Some(&key), &[]).await.status() == 401 },
    )
    .await;
    env.stop().await;
}

/// An upstream that answers the first request on each connection (without usageMetadata) and
/// resets the connection when a second request arrives on it: the idle-close race every
/// keep-alive pool meets (the server drops a pooled connection just as the gateway reuses it).
/// Returns its base URL and the counts of requests answered and connections reset.
async fn idle_closing_upstream() -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (answered, reset) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a, r) = (answered.clone(), reset.clone());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let (a, r) = (a.clone(), r.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // The first request: headers, then Content-Length bytes of body.
                let body_len = loop {
                    let n = conn.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                        break end + 4 + len;
                    }
                };
                while buf.len() < body_len {
                    let n = conn.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let answer = r#"{"candidates":[{"content":{"parts":[{"text":"blue"}],"role":"model"},"finishReason":"STOP"}],"modelVersion":"gemini-2.5-flash"}"#;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    answer.len()
                );
                conn.write_all(head.as_bytes()).await.unwrap();
                conn.write_all(answer.as_bytes()).await.unwrap();
                a.fetch_add(1, Ordering::SeqCst);
                // A second request on this connection: reset without answering.
                if conn.read(&mut chunk).await.unwrap_or(0) > 0 {
                    conn.set_zero_linger().unwrap();
                    r.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    (url, answered, reset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_that_meets_an_upstream_idle_close_is_retried_once_and_billed_once() {
    let (upstream, answered, reset) = idle_closing_upstream().await;
    let env = TestEnv::start_with(Opts {
        gemini_url: Some(upstream),
        ..Opts::default()
    })
    .await;
    let (org, key) = env.org_with_key("acme").await;
    let url = format!("{}{GEN}", env.gateway_url);
    for i in 0..3 {
        let resp = post(&url, Some(&key), &[]).await;
        assert_eq!(
            resp.status(),
            200,
            "request {i}: {}",
            resp.text().await.unwrap()
        );
    }
    assert_eq!(
        reset.load(Ordering::SeqCst),
        2,
        "requests 2 and 3 went out on the pooled connection first (the race this test is about)"
    );
    assert_eq!(answered.load(Ordering::SeqCst), 3);
    eventually(Duration::from_secs(5), "three events stored", || async {
        env.store.count_events(org).await.unwrap() == 3
    })
    .await;
    // A later request's event stored: whatever the three queued before it is stored too.
    let marker = post(&url, None, &[("x-request-id", "marker")]).await;
    assert_eq!(marker.status(), 401);
    crate::metering::event(&env, "marker").await;
    let events = env.store.recent_events(org, 10).await.unwrap();
    assert_eq!(events.len(), 3, "a retried request is one event");
    // No usageMetadata in these answers: the prompt is counted from the request body, which
    // a retry sends twice; it must be counted once.
    assert!(events.iter().all(|e| e.estimated && e.status == 200));
    assert!(events[0].input_tokens > 0);
    assert!(
        events
            .iter()
            .all(|e| e.input_tokens == events[0].input_tokens),
        "retried requests count their prompt once: {:?}",
        events.iter().map(|e| e.input_tokens).collect::<Vec<_>>()
    );
    env.stop().await;
}

/// Keys are re-read only when the store's config version moved (not every 2 s: 100,000 keys
/// would be rebuilt each time), and a change made with plain SQL moves it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_config_is_rebuilt_only_when_the_store_changed_even_by_plain_sql() {
    let env = TestEnv::start().await;
    let (org, key) = env.org_with_key("acme").await;
    let live = &env.running.as_ref().unwrap().gateway.as_ref().unwrap().live;
    let before = std::sync::Arc::clone(&live.load());
    env.refresh().await;
    assert!(
        std::sync::Arc::ptr_eq(&before, &live.load()),
        "an unchanged store must not rebuild the snapshot"
    );

    let secret = "tg_plainsqlplainsqlplainsqlplainsql0";
    let pool = sqlx::SqlitePool::connect(&env.db_url).await.unwrap();
    sqlx::query(
        "INSERT INTO api_keys (org_id, kind, name, prefix, key_hash, created_at) \
         VALUES (?, 'app', 'sql', ?, ?, '2026-11-28T00:00:00Z')",
    )
    .bind(org)
    .bind(store::key_prefix(secret))
    .bind(store::hash_key(secret))
    .execute(&pool)
    .await
    .unwrap();
    let url = format!("{}{GEN}", env.gateway_url);
    eventually(
        Duration::from_secs(5),
        "a key inserted with plain SQL was not accepted within 5 s",
        || async { post(&url, Some(secret), &[]).await.status() == 200 },
    )
    .await;
    assert!(!std::sync::Arc::ptr_eq(&before, &live.load()));
    assert_eq!(post(&url, Some(&key), &[]).await.status(), 200);
    pool.close().await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn developer_api_imagen_and_veo_as_older_sdks_call_them() {
    let env = TestEnv::start().await;
    let (_, key) = env.org_with_key("acme").await;
    let calls: [(&str, &str, Value); 3] = [
        (
            "POST",
            "/v1beta/models/imagen-4.0-generate-001:predict",
            json!({"instances": [{"prompt": "a cat"}], "parameters": {"sampleCount": 3}}),
        ),
        (
            "POST",
            "/v1beta/models/veo-3.0-generate-001:predictLongRunning",
            json!({"instances": [{"prompt": "a cat"}], "parameters": {"sampleCount": 2, "durationSeconds": 8}}),
        ),
        (
            "GET",
            "/v1beta/models/veo-3.0-generate-001/operations/v2",
            Value::Null,
        ),
    ];
    for (method, path, body) in calls {
        let send = |base: String, key: &str| {
            let req = if method == "GET" {
                client().get(format!("{base}{path}"))
            } else {
                client().post(format!("{base}{path}")).json(&body)
            };
            req.header("x-goog-api-key", key).send()
        };
        let via = send(env.gateway_url.clone(), &key).await.unwrap();
        assert_eq!(via.status(), 200, "{path}");
        let via = via.bytes().await.unwrap();
        let direct = send(env.fake.base_url(), crate::fake_google::PROVIDER_KEY)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(via, direct, "{path}");
    }
    env.assert_clean_upstream();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_listeners_answer() {
    let env = TestEnv::start().await;
    let (_, key) = env.org_with_key("acme").await;
    post(&format!("{}{GEN}", env.gateway_url), Some(&key), &[]).await;
    for base in [&env.metrics_url, &env.admin_url] {
        let r = client()
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{base}/healthz");
        let r = client().get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{base}/readyz: {:?}", r.text().await);
    }
    let text = client()
        .get(format!("{}/metrics", env.metrics_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("tollgate_requests_total{")
                && l.contains("operation=\"generateContent\"")
                && l.contains("2xx")
        })
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.ends_with(" 1"), "{line}");
    // The proxy port is not the metrics port.
    let on_proxy = client()
        .get(format!("{}/metrics", env.gateway_url))
        .send()
        .await
        .unwrap();
    assert_eq!(on_proxy.status(), 404);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_stay_on_their_hop() {
    let env = TestEnv::start().await;
    let (_, key) = env.org_with_key("acme").await;
    let r = client()
        .post(format!("{}{GEN}", env.gateway_url))
        .header("x-goog-api-key", &key)
        .header("connection", "keep-alive, x-hop-secret")
        .header("x-hop-secret", "for-the-gateway-only")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("te", "trailers")
        .header("x-end-to-end", "kept")
        .json(&prompt())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let call = env.fake.calls().pop().unwrap();
    for h in ["x-hop-secret", "keep-alive", "proxy-authorization"] {
        assert!(
            call.headers.get(h).is_none(),
            "hop-by-hop header {h} was forwarded (RFC 9110 §7.6.1)"
        );
    }
    assert_eq!(
        call.headers.get("x-end-to-end").unwrap(),
        "kept",
        "end-to-end headers pass"
    );
    env.stop().await;
}

/// `context_caching` off: a request body that names a cached content is refused, small (read
/// before forwarding) or large (cut while it streams, so the upstream never gets a whole
/// request); the same requests without one, or from an org with the flag on, go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_caching_off_refuses_bodies_that_name_a_cached_content() {
    let env = TestEnv::start().await;
    let (_, key) = env
        .org_with_key_without("acme", &[Feature::ContextCaching])
        .await;
    let (globex, other_key) = env.org_with_key("globex").await;
    env.own(globex, &["cachedContents/abc123"]).await;
    let send = |path: &str, key: &str, body: Value| {
        client()
            .post(format!("{}{path}", env.gateway_url))
            .header("x-goog-api-key", key.to_owned())
            .json(&body)
            .send()
    };
    let cached = "cachedContents/abc123";
    let count = "/v1beta/models/gemini-2.5-flash:countTokens";
    let big_text = "sky ".repeat(30_000); // 120 KB: past the 60 KiB read before forwarding
    let small = json!({"contents": [{"parts": [{"text": "why is the sky blue"}]}], "cachedContent": cached});
    let big = json!({"contents": [{"parts": [{"text": big_text}]}], "cachedContent": cached});
    let nested = json!({"generateContentRequest": {"model": "models/gemini-2.5-flash",
        "contents": [{"parts": [{"text": "hi"}]}], "cachedContent": cached}});

    for (what, path, body) in [
        ("small generateContent", GEN, &small),
        ("large generateContent", GEN, &big),
        ("countTokens", count, &nested),
    ] {
        let before = env.fake.calls().len();
        let (code, status, msg) = google_error(send(path, &key, body.clone()).await.unwrap()).await;
        assert_eq!(
            (code, status.as_str()),
            (403, "PERMISSION_DENIED"),
            "{what}"
        );
        assert!(msg.contains("context_caching"), "{what}: {msg}");
        assert_eq!(
            env.fake.calls().len(),
            before,
            "{what}: the upstream never received a whole request"
        );
    }
    // A compressed body cannot be checked as it passes: refused for this org.
    let before = env.fake.calls().len();
    let gz = client()
        .post(format!("{}{GEN}", env.gateway_url))
        .header("x-goog-api-key", key.clone())
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(vec![
            0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0x03, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(gz.status(), 403);
    assert_eq!(env.fake.calls().len(), before);
    // Without a cached content, and for an org with the flag on, the same requests go through.
    let mut plain = big.clone();
    plain.as_object_mut().unwrap().remove("cachedContent");
    assert_eq!(send(GEN, &key, plain).await.unwrap().status(), 200);
    for (path, body) in [(GEN, &small), (GEN, &big), (count, &nested)] {
        assert_eq!(
            send(path, &other_key, body.clone()).await.unwrap().status(),
            200
        );
    }
    // The refusals are counted by flag.
    let metrics = crate::harness::get_text(&format!("{}/metrics", env.metrics_url)).await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("tollgate_feature_refusals_total{feature=\"context_caching\"} 4")
        ),
        "{metrics}"
    );
    env.assert_clean_upstream();
    env.stop().await;
}

/// A client that sends `Expect: 100-continue` and waits for it before its body (curl does for
/// larger bodies) gets its 100 Continue when the gateway reads the body before forwarding (here
/// for the cached-content check; limits on tokens or cost do the same), then its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_waiting_for_100_continue_is_not_left_waiting() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = TestEnv::start().await;
    let (_, key) = env
        .org_with_key_without("acme", &[Feature::ContextCaching])
        .await;
    let body = prompt().to_string();
    let addr = env.gateway_url.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {GEN} HTTP/1.1\r\nHost: {addr}\r\nx-goog-api-key: {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    // A bound so a regression fails instead of hanging (no speed is asserted).
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(20), conn.read(&mut buf))
            .await
            .expect("no 100 Continue: the client would wait for its own timeout")
            .unwrap();
        assert!(n > 0, "connection closed before 100 Continue");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 100"), "{text}");
    conn.write_all(body.as_bytes()).await.unwrap();
    let mut rest = Vec::new();
    while !String::from_utf8_lossy(&rest).contains("\"usageMetadata\"") {
        let n = tokio::time::timeout(Duration::from_secs(20), conn.read(&mut buf))
            .await
            .expect("no answer after the body")
            .unwrap();
        assert!(
            n > 0,
            "connection closed before the answer: {}",
            String::from_utf8_lossy(&rest)
        );
        rest.extend_from_slice(&buf[..n]);
    }
    let rest = String::from_utf8_lossy(&rest);
    let status_line = rest
        .split("\r\n")
        .find(|l| l.starts_with("HTTP/1.1 2"))
        .unwrap_or_else(|| panic!("{rest}"));
    assert!(status_line.starts_with("HTTP/1.1 200"), "{rest}");
    let call = env.fake.calls().pop().unwrap();
    assert!(
        call.headers.get("expect").is_none(),
        "the upstream is not asked for a 100 Continue the client already had"
    );
    env.stop().await;
}
