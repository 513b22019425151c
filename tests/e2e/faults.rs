//! Upstream faults the fake Google cannot play: an upstream that answers broken JSON, one that
//! never stops sending, one that never answers, and one that comes back after a blip. Clients
//! get Google's answer or a Google-format error, each request is one event, and readiness
//! follows the upstream's current state.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{client, eventually, free_port, get_text, Opts, TestEnv};

const GEN: &str = "/v1beta/models/gemini-2.5-flash:generateContent";

#[derive(Clone, Copy)]
enum Misbehaviour {
    /// 200 with a body that is not JSON (cut mid-object, then garbage).
    BrokenJson,
    /// 200, chunked, chunks for ever.
    Endless,
    /// Reads the request and never answers.
    Silent,
}

/// A raw upstream on a loopback port that misbehaves as told; its base URL.
async fn misbehaving(how: Misbehaviour) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = s.read(&mut buf).await; // the request (small, one read on loopback)
                match how {
                    Misbehaviour::BrokenJson => {
                        let body = "{\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"hi\u{0}\"}]}, \"usageMetadata\": {\"promptTokenCount\": \"x\", [[[[[[[[[[";
                        let _ = s
                            .write_all(
                                format!(
                                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                                    body.len()
                                )
                                .as_bytes(),
                            )
                            .await;
                    }
                    Misbehaviour::Endless => {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
                            .await;
                        let chunk = format!("4000\r\n{}\r\n", "[".repeat(0x4000));
                        while s.write_all(chunk.as_bytes()).await.is_ok() {}
                    }
                    Misbehaviour::Silent => {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                }
            });
        }
    });
    url
}

fn prompt() -> Value {
    json!({"contents": [{"parts": [{"text": "hello"}]}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_json_passes_through_and_is_one_event() {
    let env = TestEnv::start_with(Opts {
        gemini_url: Some(misbehaving(Misbehaviour::BrokenJson).await),
        ..Opts::default()
    })
    .await;
    let (org, key) = env.org_with_key("acme").await;
    let r = client()
        .post(format!("{}{GEN}", env.gateway_url))
        .header("x-goog-api-key", &key)
        .json(&prompt())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "Google's answer is passed on as it came");
    let body = r.text().await.unwrap();
    assert!(body.ends_with("[[[[[[[[[["), "unchanged: {body}");
    eventually(Duration::from_secs(5), "one event", || async {
        env.store.count_events(org).await.unwrap() == 1
    })
    .await;
    let e = &env.store.recent_events(org, 1).await.unwrap()[0];
    assert!(
        e.metered && e.estimated,
        "metered by estimate when the usage is unreadable: {e:?}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_body_is_streamed_in_bounded_memory_and_ends_when_the_client_goes() {
    let env = TestEnv::start_with(Opts {
        gemini_url: Some(misbehaving(Misbehaviour::Endless).await),
        ..Opts::default()
    })
    .await;
    let (org, key) = env.org_with_key("acme").await;
    let rss_before = crate::metering::rss_kib();
    let mut r = client()
        .post(format!("{}{GEN}", env.gateway_url))
        .header("x-goog-api-key", &key)
        .json(&prompt())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut got = 0usize;
    while got < 64 * 1024 * 1024 {
        got += r.chunk().await.unwrap().unwrap().len();
    }
    let rss_after = crate::metering::rss_kib();
    drop(r);
    println!("endless body: 64 MiB passed, RSS {rss_before} -> {rss_after} KiB");
    assert!(
        rss_after < rss_before + 48 * 1024,
        "64 MiB passed without being held: RSS {rss_before} -> {rss_after} KiB"
    );
    eventually(
        Duration::from_secs(5),
        "one event once the client left",
        || async { env.store.count_events(org).await.unwrap() == 1 },
    )
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upstream_is_a_504_and_readiness_follows_the_upstream_now() {
    let env = TestEnv::start_with(Opts {
        gemini_url: Some(misbehaving(Misbehaviour::Silent).await),
        read_timeout_ms: 500,
        // A second gateway starts in this process (see Opts::work_stealing).
        work_stealing: true,
        ..Opts::default()
    })
    .await;
    let (org, key) = env.org_with_key("acme").await;
    let r = client()
        .post(format!("{}{GEN}", env.gateway_url))
        .header("x-goog-api-key", &key)
        .json(&prompt())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["status"], "DEADLINE_EXCEEDED");
    eventually(Duration::from_secs(5), "one event", || async {
        env.store.count_events(org).await.unwrap() == 1
    })
    .await;
    // It timed out, but it accepts connections: still ready.
    let ready = get_text(&format!("{}/readyz", env.metrics_url)).await;
    assert!(ready.starts_with("ready\n"), "{ready}");
    env.stop().await;

    // An upstream that refuses connections makes the gateway not ready; back a moment later,
    // ready again at once (not a minute later).
    let port = free_port();
    let env = TestEnv::start_with(Opts {
        gemini_url: Some(format!("http://127.0.0.1:{port}")),
        work_stealing: true,
        ..Opts::default()
    })
    .await;
    let (_, key) = env.org_with_key("acme").await;
    let r = client()
        .post(format!("{}{GEN}", env.gateway_url))
        .header("x-goog-api-key", &key)
        .json(&prompt())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let r = client()
        .get(format!("{}/readyz", env.metrics_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "{}", r.text().await.unwrap());
    let _back = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let r = client()
        .get(format!("{}/readyz", env.metrics_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    env.stop().await;
}

/// A client that stops reading a stream the upstream keeps sending: the gateway holds no more
/// than what the sockets buffer (backpressure reaches the upstream), stays healthy for others,
/// and records the request once the client goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_holds_bounded_memory() {
    let env = TestEnv::start_with(Opts {
        gemini_url: Some(misbehaving(Misbehaviour::Endless).await),
        ..Opts::default()
    })
    .await;
    let (org, key) = env.org_with_key("acme").await;
    let rss_before = crate::metering::rss_kib();
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let mut r = client()
            .post(format!("{}{GEN}", env.gateway_url))
            .header("x-goog-api-key", &key)
            .json(&prompt())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.chunk().await.unwrap(); // then reads nothing more
        stalled.push(r);
    }
    // The upstream pushes as fast as it can; wait until the gateway's memory stops growing.
    let mut last = crate::metering::rss_kib();
    let mut steady = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while steady < 5 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = crate::metering::rss_kib();
        steady = if now <= last + 256 { steady + 1 } else { 0 };
        last = now;
        assert!(
            std::time::Instant::now() < deadline,
            "memory kept growing: {rss_before} -> {now} KiB"
        );
    }
    println!("20 stalled streams: RSS {rss_before} -> {last} KiB");
    assert!(
        last < rss_before + 64 * 1024,
        "20 stalled streams hold at most what their sockets buffer: {rss_before} -> {last} KiB"
    );
    // Others are still served (a normal upstream is not needed: /readyz answers).
    let ready = get_text(&format!("{}/readyz", env.metrics_url)).await;
    assert!(ready.starts_with("ready"), "{ready}");
    drop(stalled);
    eventually(
        Duration::from_secs(10),
        "one event per stalled request",
        || async { env.store.count_events(org).await.unwrap() == 20 },
    )
    .await;
    env.stop().await;
}

/// Deeply nested and malformed JSON is Google's to judge: forwarded, its answer passed on, and
/// the meter, estimator and reference scanner neither fail nor grow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_and_malformed_json_is_forwarded_and_metered() {
    let env = TestEnv::start().await;
    let (org, key) = env.org_with_key("acme").await;
    let bodies = [
        "[".repeat(60_000),
        format!(
            "{{\"contents\": {}{}}}",
            "[".repeat(30_000),
            "]".repeat(30_000)
        ),
        "{\"contents\": [{\"parts\": [{\"text\": \"\\ud800 unpaired \\u0000".to_owned(),
        String::from_utf8_lossy(&[0xff, 0xfe, b'{', 0x80]).into_owned(),
    ];
    for body in &bodies {
        let r = client()
            .post(format!("{}{GEN}", env.gateway_url))
            .header("x-goog-api-key", &key)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert!(r.status() == 200 || r.status() == 400, "{}", r.status());
    }
    eventually(Duration::from_secs(5), "one event each", || async {
        env.store.count_events(org).await.unwrap() == bodies.len() as i64
    })
    .await;
    assert_eq!(env.fake.calls().len(), bodies.len(), "each was forwarded");
    env.stop().await;
}
