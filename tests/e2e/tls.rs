//! An `https://` upstream, as Google is in production: pingora's TLS connector with SNI and
//! certificate checks, connections kept and reused across requests, and a clear 502 when the
//! upstream's certificate is not trusted. The fake upstream serves TLS with a certificate for
//! `localhost` from a CA made for the test; `gateway.upstream_ca_file` makes the gateway trust it.

use std::time::Duration;

use serde_json::{json, Value};

use crate::fake_google::FakeGoogle;
use crate::harness::{client, eventually, Opts, TestEnv};

const GEN: &str = "/v1beta/models/gemini-2.5-flash:generateContent";

async fn generate(client: &reqwest::Client, env: &TestEnv, key: &str) -> reqwest::Response {
    client
        .post(format!("{}{GEN}", env.gateway_url))
        .header("x-goog-api-key", key)
        .json(&json!({"contents": [{"parts": [{"text": "why is the sky blue"}]}]}))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_is_reached_with_sni_a_checked_certificate_and_pooled_connections() {
    let tls = FakeGoogle::start_tls().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &tls.ca_pem).unwrap();
    let env = TestEnv::start_with(Opts {
        gemini_url: Some(tls.fake.base_url()),
        gateway_toml: format!("upstream_ca_file = \"{}\"", ca.display()),
        ..Opts::default()
    })
    .await;
    let (org, key) = env.org_with_key("acme").await;

    // One client connection: each request finishes (and gives its upstream connection back to
    // the pool) before the next starts.
    let client = client();
    let mut prompt_tokens = 0;
    for _ in 0..5 {
        let r = generate(&client, &env, &key).await;
        assert_eq!(r.status(), 200, "answered through TLS");
        let body: Value = r.json().await.unwrap();
        prompt_tokens += body["usageMetadata"]["promptTokenCount"].as_i64().unwrap();
        assert!(body["candidates"][0]["content"]["parts"][0]["text"].is_string());
    }
    let calls = tls.fake.calls();
    assert_eq!(calls.len(), 5, "every request reached the TLS upstream");
    assert!(
        tls.fake.violations().is_empty(),
        "over TLS too, only the provider key goes upstream: {:?}",
        tls.fake.violations()
    );
    assert_eq!(
        tls.fake.handshakes(),
        vec![Some("localhost".to_owned())],
        "one handshake, naming the upstream's host (SNI); later requests reuse the connection"
    );
    assert_eq!(tls.fake.failed_handshakes(), 0);

    // Metered as over plain HTTP.
    eventually(Duration::from_secs(10), "the five events", || async {
        env.store.count_events(org).await.unwrap() == 5
    })
    .await;
    let events = env.store.recent_events(org, 10).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.input_tokens).sum::<i64>(),
        prompt_tokens,
        "the events carry the usage the TLS upstream reported"
    );

    // Listings are fetched by the gateway's own client: the same CA file, the same host.
    let made = client
        .post(format!("{}/v1beta/cachedContents", env.gateway_url))
        .header("x-goog-api-key", &key)
        .json(&serde_json::json!({"model": "models/gemini-2.5-flash", "displayName": "tls-cache"}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 200);
    let listed = client
        .get(format!("{}/v1beta/cachedContents", env.gateway_url))
        .header("x-goog-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        listed.status(),
        200,
        "listed through TLS with the configured CA"
    );
    let listed: Value = listed.json().await.unwrap();
    assert_eq!(
        listed["cachedContents"][0]["name"],
        "cachedContents/tls-cache"
    );
    assert!(
        tls.fake.violations().is_empty(),
        "{:?}",
        tls.fake.violations()
    );
    assert!(
        tls.fake
            .handshakes()
            .iter()
            .all(|h| h.as_deref() == Some("localhost")),
        "{:?}",
        tls.fake.handshakes()
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_certificate_the_gateway_does_not_trust_is_refused_with_a_502() {
    let tls = FakeGoogle::start_tls().await;
    // No upstream_ca_file: the system's roots, which do not include the fake's CA.
    let env = TestEnv::start_with(Opts {
        gemini_url: Some(tls.fake.base_url()),
        ..Opts::default()
    })
    .await;
    let (org, key) = env.org_with_key("acme").await;
    let listed = client()
        .get(format!("{}/v1beta/files", env.gateway_url))
        .header("x-goog-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        listed.status(),
        502,
        "the listing client does not trust it either"
    );
    let r = generate(&client(), &env, &key).await;
    assert_eq!(r.status(), 502, "an untrusted upstream is a bad gateway");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], 502);
    assert_eq!(body["error"]["status"], "UNAVAILABLE", "{body}");
    assert!(
        tls.fake.calls().is_empty(),
        "no request is sent over a connection whose certificate failed the check"
    );
    // The upstream counts the failure when it reads the gateway's alert, maybe after the 502.
    eventually(
        Duration::from_secs(5),
        "the upstream saw a failed handshake",
        || async { tls.fake.failed_handshakes() >= 1 },
    )
    .await;
    // Each refusal is still one event (not metered, nothing billed).
    eventually(
        Duration::from_secs(10),
        "the failed request's event",
        || async { env.store.count_events(org).await.unwrap() == 2 },
    )
    .await;
    let e = &env.store.recent_events(org, 1).await.unwrap()[0];
    assert_eq!((e.status, e.cost_micros), (502, 0));
    env.stop().await;
}
