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
