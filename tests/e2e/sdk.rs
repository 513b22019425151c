//! Google's own Python SDK (`google-genai`, installed by `make test`) pointed at the gateway: each
//! call's result must equal the same call made straight to the fake upstream.
//!
//! The SDK comes from `TOLLGATE_TEST_PYTHON` or `.venv/bin/python`. Without it the tests are
//! skipped with a printed reason, unless `TOLLGATE_TEST_REQUIRE_SDK=1` (set by `make test` and
//! `.ci/run`) makes that a failure.

use std::path::PathBuf;

use serde_json::Value;

use crate::fake_google::PROVIDER_KEY;
use crate::harness::{stdout_of, TestEnv};

pub fn python() -> Option<PathBuf> {
    let candidate = std::env::var_os("TOLLGATE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python")));
    let works = std::process::Command::new(&candidate)
        .args(["-c", "import google.genai"])
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        return Some(candidate);
    }
    let reason = format!(
        "no Python with google-genai at {} (run `make test`, or set TOLLGATE_TEST_PYTHON)",
        candidate.display()
    );
    if std::env::var("TOLLGATE_TEST_REQUIRE_SDK").is_ok_and(|v| v == "1") {
        panic!("{reason}");
    }
    crate::harness::missing(&reason);
    None
}

async fn run_sdk(python: &PathBuf, base_url: &str, key: &str, mode: &str) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/calls.py");
    let mut cmd = tokio::process::Command::new(python);
    cmd.args([script, base_url, key, mode]).env("NO_PROXY", "*");
    let what = format!("the SDK failed ({mode} against {base_url}):\n");
    serde_json::from_slice(&stdout_of(&mut cmd, &what).await).unwrap()
}

/// Runs the SDK through the gateway and directly, and compares.
async fn same_through_gateway(mode: &str) -> (TestEnv, Value) {
    let env = TestEnv::start().await;
    let (_, key) = env.org_with_key("acme").await;
    let Some(py) = python() else {
        return (env, Value::Null);
    };
    let via = run_sdk(&py, &env.gateway_url, &key, mode).await;
    env.assert_clean_upstream();
    let direct = run_sdk(&py, &env.fake.base_url(), PROVIDER_KEY, mode).await;
    for (call, result) in direct.as_object().unwrap() {
        assert_eq!(
            &via[call], result,
            "{mode}: {call} differs through the gateway"
        );
    }
    (env, via)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn developer_api_v1() {
    let (env, via) = same_through_gateway("gemini-v1").await;
    if via.is_null() {
        return;
    }
    let paths: Vec<String> = env.fake.calls().iter().map(|c| c.path.clone()).collect();
    assert!(
        paths
            .iter()
            .any(|p| p == "/v1/models/gemini-2.5-flash:generateContent"),
        "{paths:?}"
    );
    assert!(
        paths
            .iter()
            .any(|p| p == "/upload/v1/files" || p == "/upload/v1beta/files"),
        "the upload went through the gateway: {paths:?}"
    );
    assert_eq!(via["error_429"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(via["error_500"]["code"], 500);
    assert_eq!(via["upload"]["name"], "files/hello-txt");
    assert_eq!(via["generate_content_stream"].as_array().unwrap().len(), 4);
    // Metering of what the SDK did: one event per call, with the counts the fake sent.
    let org = env.store.resolve_org("acme").await.unwrap().id;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let events = loop {
        let events = env.store.recent_events(org, 100).await.unwrap();
        // The direct run does not pass the gateway: only the gateway run's calls are events.
        if events.len() >= 8 || std::time::Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let gen = events
        .iter()
        .find(|e| e.operation == "generateContent" && e.model == "gemini-2.5-flash")
        .unwrap();
    assert_eq!(
        (gen.input_tokens, gen.output_tokens, gen.thinking_tokens),
        (5, 5, 7),
        "the SDK's generate_content"
    );
    let stream = events
        .iter()
        .find(|e| e.operation == "streamGenerateContent")
        .unwrap();
    assert_eq!(
        (stream.output_tokens, stream.streamed),
        (20, true),
        "the SDK's stream: the last cumulative usage"
    );
    let image = events
        .iter()
        .find(|e| e.model == "gemini-2.5-flash-image")
        .unwrap();
    assert_eq!((image.images, image.output_image_tokens), (1, 1290));
    assert!(
        events.iter().any(|e| e.status == 429),
        "the upstream 429 is an event too"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn developer_api_v1beta() {
    let (env, via) = same_through_gateway("gemini-v1beta").await;
    if via.is_null() {
        return;
    }
    let paths: Vec<String> = env.fake.calls().iter().map(|c| c.path.clone()).collect();
    assert!(
        paths
            .iter()
            .any(|p| p == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"),
        "{paths:?}"
    );
    // The upload's bytes went to the rewritten URL (the gateway), which forwarded them with the provider key.
    let chunks = env
        .fake
        .calls()
        .iter()
        .filter(|c| c.query.contains("upload_id="))
        .count();
    assert!(
        chunks >= 2,
        "upload chunks must traverse the gateway, saw {chunks} (two runs)"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vertex_images_and_videos() {
    let (env, via) = same_through_gateway("vertex").await;
    if via.is_null() {
        return;
    }
    assert_eq!(
        via["generate_images"]["generated_images"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(via["generate_videos"]["done"], true);
    assert_eq!(
        via["generate_videos"]["response"]["generated_videos"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let paths: Vec<String> = env.fake.calls().iter().map(|c| c.path.clone()).collect();
    assert!(
        paths.iter().any(|p| p.ends_with(":fetchPredictOperation")),
        "{paths:?}"
    );
    env.stop().await;
}
