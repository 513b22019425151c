//! Metering end to end: every request through the gateway becomes exactly one stored usage event
//! whose counts equal what the fake upstream sent and whose cost equals the price computed here
//! by hand from config/pricing.toml.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use store::UsageEvent;

use crate::harness::{client, eventually, TestEnv};

/// Waits until the ledger has stored the event of a request.
pub async fn event(env: &TestEnv, request_id: &str) -> UsageEvent {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(e) = env.store.get_event(request_id).await {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no usage event for {request_id} after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn call(env: &TestEnv, key: &str, id: &str, path: &str, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}{path}", env.gateway_url))
        .header("x-goog-api-key", key)
        .header("x-request-id", id)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn prompt(text: &str) -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": text}]}]})
}

/// micro-dollars for `n` tokens at `usd_per_million`, as the pricing rules round (half up, once).
fn per_m(parts: &[(i64, f64)]) -> i64 {
    let total: i128 = parts
        .iter()
        .map(|&(n, p)| n as i128 * (p * 1e6).round() as i128)
        .sum();
    ((total + 500_000) / 1_000_000) as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_shape_is_metered_and_priced() {
    let env = TestEnv::start().await;
    let (org, key) = env.org_with_key("acme").await;
    let five_words = "why is the sky blue";

    // generateContent (JSON): prompt 5, candidates 5, thoughts 7 (a thinking model).
    let r = call(
        &env,
        &key,
        "m-json",
        "/v1beta/models/gemini-2.5-flash:generateContent",
        prompt(five_words),
    )
    .await;
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    let e = event(&env, "m-json").await;
    assert_eq!(
        (
            e.input_tokens,
            e.output_tokens,
            e.thinking_tokens,
            e.total_tokens
        ),
        (5, 5, 7, 17)
    );
    assert_eq!(
        (e.org_id, e.status, e.streamed, e.estimated, e.priced),
        (Some(org), 200, false, false, true)
    );
    assert_eq!(e.cost_micros, per_m(&[(5, 0.30), (5 + 7, 2.50)]));
    assert_eq!(
        (e.provider.as_str(), e.model.as_str(), e.operation.as_str()),
        ("gemini", "gemini-2.5-flash", "generateContent")
    );
    assert!(e.upstream_latency_ms.is_some());

    // SSE: 4 cumulative events, the last one counts: candidates 20.
    let r = call(
        &env,
        &key,
        "m-sse",
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        prompt(five_words),
    )
    .await;
    r.bytes().await.unwrap();
    let e = event(&env, "m-sse").await;
    assert_eq!(
        (
            e.input_tokens,
            e.output_tokens,
            e.thinking_tokens,
            e.streamed
        ),
        (5, 20, 7, true)
    );
    assert_eq!(e.cost_micros, per_m(&[(5, 0.30), (27, 2.50)]));

    // The JSON-array stream (no alt=sse), on Vertex: Vertex rows of the price table apply.
    let path = "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.0-flash-001:streamGenerateContent";
    call(&env, &key, "m-array", path, prompt(five_words))
        .await
        .bytes()
        .await
        .unwrap();
    let e = event(&env, "m-array").await;
    assert_eq!(
        (e.provider.as_str(), e.input_tokens, e.output_tokens),
        ("vertex", 5, 20)
    );
    assert_eq!(
        e.cost_micros,
        per_m(&[(5, 0.15), (27, 0.60)]),
        "vertex/gemini-2.0-flash prices"
    );

    // Cached content: 100 of 105 prompt tokens at the cached price. The cache is made through
    // the gateway first (an org may only use its own).
    let made = call(
        &env,
        &key,
        "m-cache-create",
        "/v1beta/cachedContents",
        json!({"model": "models/gemini-2.5-flash", "displayName": "abc", "contents": []}),
    )
    .await;
    assert_eq!(made.status(), 200);
    let made: Value = made.json().await.unwrap();
    assert_eq!(made["name"], "cachedContents/abc");
    let mut body = prompt(five_words);
    body["cachedContent"] = json!("cachedContents/abc");
    call(
        &env,
        &key,
        "m-cached",
        "/v1beta/models/gemini-2.5-flash:generateContent",
        body,
    )
    .await
    .bytes()
    .await
    .unwrap();
    let e = event(&env, "m-cached").await;
    assert_eq!((e.input_tokens, e.cached_tokens), (105, 100));
    assert_eq!(e.cost_micros, per_m(&[(5, 0.30), (100, 0.03), (12, 2.50)]));

    // Image output: 1290 image tokens at $30/M, the rest of the output at $2.50/M.
    call(
        &env,
        &key,
        "m-image",
        "/v1beta/models/gemini-2.5-flash-image:generateContent",
        prompt("a cat"),
    )
    .await
    .bytes()
    .await
    .unwrap();
    let e = event(&env, "m-image").await;
    assert_eq!(
        (e.images, e.output_image_tokens, e.output_tokens),
        (1, 1290, 1295)
    );
    assert_eq!(
        e.cost_micros,
        per_m(&[(2, 0.30), (5 + 7, 2.50), (1290, 30.0)])
    );

    // Imagen with sampleCount 3.
    let body = json!({"instances": [{"prompt": "a cat"}], "parameters": {"sampleCount": 3}});
    call(
        &env,
        &key,
        "m-imagen",
        "/v1beta1/publishers/google/models/imagen-4.0-generate-001:predict",
        body,
    )
    .await
    .bytes()
    .await
    .unwrap();
    let e = event(&env, "m-imagen").await;
    assert_eq!((e.images, e.cost_micros), (3, 3 * 40_000));

    // Veo: 2 videos × 8 s, charged when accepted.
    let body = json!({"instances": [{"prompt": "a cat"}], "parameters": {"sampleCount": 2, "durationSeconds": 8}});
    call(
        &env,
        &key,
        "m-veo",
        "/v1beta/models/veo-3.0-generate-001:predictLongRunning",
        body,
    )
    .await
    .bytes()
    .await
    .unwrap();
    let e = event(&env, "m-veo").await;
    assert_eq!(
        (e.videos, e.video_seconds, e.cost_micros),
        (2, 16, 16 * 400_000)
    );

    // countTokens: recorded, never billed.
    call(
        &env,
        &key,
        "m-count",
        "/v1beta/models/gemini-2.5-flash:countTokens",
        prompt(five_words),
    )
    .await
    .bytes()
    .await
    .unwrap();
    let e = event(&env, "m-count").await;
    assert_eq!(
        (e.operation.as_str(), e.total_tokens, e.cost_micros),
        ("countTokens", 0, 0)
    );

    // Developer API embeddings report no usage: counted locally with the Gemini tokenizer.
    let body = json!({"requests": [{"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "What is your name?"}]}}]});
    call(
        &env,
        &key,
        "m-embed",
        "/v1beta/models/gemini-embedding-001:batchEmbedContents",
        body,
    )
    .await
    .bytes()
    .await
    .unwrap();
    let e = event(&env, "m-embed").await;
    assert_eq!((e.input_tokens, e.estimated), (5, false));
    assert_eq!(e.cost_micros, per_m(&[(5, 0.15)]));

    // A long embedding input is counted exactly too (on a blocking thread, off the proxy's workers).
    let long = "The quick brown fox jumps over the lazy dog. ".repeat(80);
    let body = json!({"requests": [{"content": {"parts": [{"text": long}]}}, {"content": {"parts": [{"text": "What is your name?"}]}}]});
    call(
        &env,
        &key,
        "m-embed-long",
        "/v1beta/models/gemini-embedding-001:batchEmbedContents",
        body,
    )
    .await
    .bytes()
    .await
    .unwrap();
    let e = event(&env, "m-embed-long").await;
    let expected = gateway::metering::tokens::exact(&long).unwrap() + 5;
    assert_eq!((e.input_tokens, e.estimated), (expected, false));

    // An upstream 500: recorded with its status, zero billed.
    call(
        &env,
        &key,
        "m-500",
        "/v1beta/models/error-500:generateContent",
        prompt("x"),
    )
    .await
    .bytes()
    .await
    .unwrap();
    let e = event(&env, "m-500").await;
    assert_eq!((e.status, e.cost_micros, e.total_tokens), (500, 0, 0));

    // A refusal: recorded, zero billed, never forwarded.
    let r = client()
        .post(format!(
            "{}/v1beta/models/gemini-2.5-flash:generateContent",
            env.gateway_url
        ))
        .header("x-goog-api-key", "tg_not_a_real_key_not_a_real_key_123")
        .header("x-request-id", "m-refused")
        .json(&prompt("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let e = event(&env, "m-refused").await;
    assert_eq!((e.status, e.org_id, e.cost_micros), (401, None, 0));

    // An unknown model is never free, and says so.
    call(
        &env,
        &key,
        "m-unknown",
        "/v1beta/models/gemini-99-flash:generateContent",
        prompt(five_words),
    )
    .await
    .bytes()
    .await
    .unwrap();
    let e = event(&env, "m-unknown").await;
    assert!(!e.priced && e.cost_micros > 0, "{e:?}");
    // The admin service lists it as a pricing alert.
    let status = env.admin_json("/api/v1/status").await;
    assert_eq!(
        status["unpriced_models"][0]["model"], "gemini-99-flash",
        "{status}"
    );

    assert_eq!(
        env.store.count_events(org).await.unwrap(),
        13,
        "one event per request of the org, the cache's creation too (the refused one has none)"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stream_is_still_exactly_one_event() {
    let env = TestEnv::start().await;
    let (org, key) = env.org_with_key("acme").await;
    // The fake sends 3 events 700 ms apart; the client reads two and hangs up.
    let r = call(
        &env,
        &key,
        "drop-1",
        "/v1beta/models/gemini-slow:streamGenerateContent?alt=sse",
        prompt("why is the sky blue"),
    )
    .await;
    let mut body = r.bytes_stream();
    let mut seen = String::new();
    while seen.matches("\r\n\r\n").count() < 2 {
        seen.push_str(&String::from_utf8_lossy(
            &body.next().await.unwrap().unwrap(),
        ));
    }
    drop(body);
    let e = event(&env, "drop-1").await;
    assert_eq!(
        (e.input_tokens, e.output_tokens),
        (5, 10),
        "the last usage seen (the second event) is what is recorded"
    );
    assert!(!e.estimated);
    // The same stream for another org, read to its end: it ends after drop-1's upstream would
    // have, so its event stored means anything drop-1 could still queue is stored too.
    let (_, other) = env.org_with_key("other").await;
    call(
        &env,
        &other,
        "drop-2",
        "/v1beta/models/gemini-slow:streamGenerateContent?alt=sse",
        prompt("why is the sky blue"),
    )
    .await
    .bytes()
    .await
    .unwrap();
    event(&env, "drop-2").await;
    assert_eq!(
        env.store.count_events(org).await.unwrap(),
        1,
        "an aborted stream is still exactly one event"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_stream_without_usage_is_estimated() {
    let env = TestEnv::start().await;
    let (_, key) = env.org_with_key("acme").await;
    // Vertex-style: usage would only come at the end, and the upstream cuts before it.
    let path = "/v1beta1/publishers/google/models/gemini-cut-nousage:streamGenerateContent?alt=sse";
    let r = call(
        &env,
        &key,
        "cut-1",
        path,
        prompt("tell me everything about the history of rome"),
    )
    .await;
    let _ = r.bytes().await;
    let e = event(&env, "cut-1").await;
    assert!(
        e.estimated,
        "no usage arrived: the counts are an estimate and say so"
    );
    assert!(
        e.input_tokens >= 8 && e.input_tokens <= 14,
        "an estimate over the prompt: {e:?}"
    );
    assert!(
        e.output_tokens > 0 && e.cost_micros > 0,
        "and over the text received: {e:?}"
    );
    assert_eq!(e.status, 200);
    env.stop().await;
}

pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_response_passes_in_bounded_memory() {
    let env = TestEnv::start().await;
    let (_, key) = env.org_with_key("acme").await;
    // Warm everything up (tokenizers load at start; one small request through every layer).
    call(
        &env,
        &key,
        "warm",
        "/v1beta/models/gemini-2.5-flash:countTokens",
        prompt("x"),
    )
    .await
    .bytes()
    .await
    .unwrap();
    // The warm-up's last work (storing its event) is done before the baseline.
    event(&env, "warm").await;
    let before = rss_kib();
    // Sample resident memory while the body streams (VmHWM would hide it under the start-up peak).
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    let r = call(
        &env,
        &key,
        "huge",
        "/v1beta/models/imagen-huge:predict",
        json!({"instances": [{"prompt": "x"}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut n = 0usize;
    while let Some(chunk) = body.next().await {
        n += chunk.unwrap().len();
    }
    assert!(n > 64 * 1024 * 1024, "the whole body arrived ({n} bytes)");
    let e = event(&env, "huge").await;
    assert_eq!(
        e.images,
        crate::fake_google::HUGE_IMAGES as i64,
        "metered while streaming"
    );

    // The fake, the gateway and the client share this process: the bound covers all three.
    sampler.abort();
    let grown_mib = (peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(before))
        / 1024;
    eprintln!("peak RSS grew {grown_mib} MiB while 64 MiB passed");
    assert!(
        grown_mib < 16,
        "peak memory grew {grown_mib} MiB for a 64 MiB body; the bound is 16 MiB"
    );
    env.stop().await;
}

/// The lines logged at error level in this process, from the moment [`ErrorLog::capture`] runs.
#[derive(Clone, Default)]
struct ErrorLog(Arc<std::sync::Mutex<Vec<u8>>>);

impl ErrorLog {
    /// Makes this process's log subscriber write error lines here.
    fn capture() -> ErrorLog {
        let log = ErrorLog::default();
        let sink = log.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::ERROR)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .try_init()
            .expect("the test process has no log subscriber yet");
        log
    }

    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl std::io::Write for ErrorLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_prices_apply_without_a_restart() {
    // A bad price file shows only in the log: capture it (nextest gives each test its process).
    let errors = ErrorLog::capture();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pricing.toml");
    let original = include_str!("../../config/pricing.toml");
    std::fs::write(&file, original).unwrap();
    let env = TestEnv::start_with(crate::harness::Opts {
        pricing: Some(file.clone()),
        ..Default::default()
    })
    .await;
    let (_, key) = env.org_with_key("acme").await;
    call(
        &env,
        &key,
        "price-1",
        "/v1beta/models/gemini-2.5-flash:generateContent",
        prompt("why is the sky blue"),
    )
    .await
    .bytes()
    .await
    .unwrap();
    assert_eq!(event(&env, "price-1").await.cost_micros, 32);

    // Output ten times dearer: 5 in × $0.30 + 12 out × $25.00 per million = 301.5 → 302 µ$.
    let edited = original.replacen(
        "[models.\"gemini-2.5-flash\"]\ninput_per_mtok = 0.3\noutput_per_mtok = 2.5",
        "[models.\"gemini-2.5-flash\"]\ninput_per_mtok = 0.3\noutput_per_mtok = 25.0",
        1,
    );
    assert_ne!(edited, original, "the fixture row was found");
    std::fs::write(&file, edited).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 2.. {
        let id = format!("price-{i}");
        call(
            &env,
            &key,
            &id,
            "/v1beta/models/gemini-2.5-flash:generateContent",
            prompt("why is the sky blue"),
        )
        .await
        .bytes()
        .await
        .unwrap();
        if event(&env, &id).await.cost_micros == 302 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the edited price was not used within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A broken edit keeps the last good prices.
    std::fs::write(&file, "this is not toml").unwrap();
    let file_name = file.display().to_string();
    eventually(
        Duration::from_secs(10),
        "the broken price file was not read within 10 s",
        || async {
            errors
                .lines()
                .iter()
                .any(|l| l.contains("price file not reloaded") && l.contains(file_name.as_str()))
        },
    )
    .await;
    call(
        &env,
        &key,
        "price-broken",
        "/v1beta/models/gemini-2.5-flash:generateContent",
        prompt("why is the sky blue"),
    )
    .await
    .bytes()
    .await
    .unwrap();
    assert_eq!(event(&env, "price-broken").await.cost_micros, 302);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reports_usage_and_events() {
    let env = TestEnv::start().await;
    let (_, key) = env.org_with_key("acme").await;
    for i in 0..3 {
        call(
            &env,
            &key,
            &format!("cli-{i}"),
            "/v1beta/models/gemini-2.5-flash:generateContent",
            prompt("why is the sky blue"),
        )
        .await
        .bytes()
        .await
        .unwrap();
    }
    let body = json!({"instances": [{"prompt": "a cat"}], "parameters": {"sampleCount": 2}});
    call(
        &env,
        &key,
        "cli-img",
        "/v1beta/models/imagen-4.0-generate-001:predict",
        body,
    )
    .await
    .bytes()
    .await
    .unwrap();
    event(&env, "cli-img").await;
    let usage: Value =
        serde_json::from_str(&env.cli(&["usage", "--org", "acme", "--json"]).await).unwrap();
    let t = &usage["totals"];
    assert_eq!(
        (
            t["requests"].as_i64(),
            t["input_tokens"].as_i64(),
            t["output_tokens"].as_i64(),
            t["thinking_tokens"].as_i64()
        ),
        (Some(4), Some(15), Some(15), Some(21))
    );
    assert_eq!(
        (t["images"].as_i64(), t["cost_micros"].as_i64()),
        (Some(2), Some(3 * 32 + 2 * 40_000))
    );
    let models: Vec<&str> = usage["by_model"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        models,
        vec!["imagen-4.0-generate-001", "gemini-2.5-flash"],
        "by cost, highest first"
    );
    let table = env.cli(&["usage", "--org", "acme"]).await;
    assert!(
        table.contains("$0.080096") && table.contains("model imagen-4.0-generate-001"),
        "{table}"
    );
    let events: Value = serde_json::from_str(
        &env.cli(&["events", "--org", "acme", "--limit", "2", "--json"])
            .await,
    )
    .unwrap();
    assert_eq!(events.as_array().unwrap().len(), 2);
    assert_eq!(events[0]["client_request_id"], "cli-img", "newest first");
    let bad = std::process::Command::new(crate::harness::bin())
        .args(["usage", "--org", "acme", "--from", "yesterday"])
        .env("TOLLGATE_DATABASE__URL", &env.db_url)
        .output()
        .unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("--from"));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_client_request_id_loses_no_event() {
    let env = TestEnv::start().await;
    let (org, key) = env.org_with_key("acme").await;
    // Some clients send the same x-request-id on every call (a fixed default header).
    for _ in 0..3 {
        let r = call(
            &env,
            &key,
            "same-id",
            "/v1beta/models/gemini-2.5-flash:generateContent",
            prompt("why is the sky blue"),
        )
        .await;
        assert_eq!(
            r.headers().get("x-request-id").unwrap(),
            "same-id",
            "the client's id is echoed"
        );
        r.bytes().await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.store.count_events(org).await.unwrap() < 3 {
        assert!(
            Instant::now() < deadline,
            "a request with a reused x-request-id lost its event"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events = env.store.recent_events(org, 10).await.unwrap();
    assert!(events
        .iter()
        .all(|e| e.client_request_id.as_deref() == Some("same-id")));
    let ids: std::collections::HashSet<_> = events.iter().map(|e| e.request_id.clone()).collect();
    assert_eq!(ids.len(), 3, "each request has its own event id");
    env.stop().await;
}
