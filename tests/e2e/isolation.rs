//! Tenant isolation of the resources Google keeps between requests. Every org shares the
//! provider key, so the fake (like Google) holds one project's files, caches and operations;
//! the gateway must show and hand each org only its own.

use std::time::Duration;

use reqwest::{Method, Response};
use serde_json::{json, Value};

use crate::harness::{client, eventually, get_text, postgres_url, unique_schema, Opts, TestEnv};

const GEN: &str = "/v1beta/models/gemini-2.5-flash:generateContent";
const VEO: &str = "/v1beta/models/veo-3.0-generate-001";

async fn send(
    env: &TestEnv,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Response {
    let mut req = client()
        .request(method, format!("{}{path}", env.gateway_url))
        .header("x-goog-api-key", key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

/// The start of a resumable upload, with the key, as Google's SDKs send it.
async fn start_upload(env: &TestEnv, key: &str, display_name: &str) -> Response {
    client()
        .post(format!("{}/upload/v1beta/files", env.gateway_url))
        .header("x-goog-api-key", key)
        .header("x-goog-upload-protocol", "resumable")
        .header("x-goog-upload-command", "start")
        .json(&json!({"file": {"display_name": display_name}}))
        .send()
        .await
        .unwrap()
}

/// The upload URL a start's answer names (the gateway's, rewritten from Google's).
fn upload_url(start: &Response) -> String {
    start.headers()["x-goog-upload-url"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// A chunk (or another command) sent to an upload URL, with a key or without.
async fn send_chunk(
    url: &str,
    key: Option<&str>,
    command: &str,
    offset: usize,
    body: impl Into<reqwest::Body>,
) -> Response {
    let mut req = client()
        .post(url)
        .header("x-goog-upload-command", command)
        .header("x-goog-upload-offset", offset.to_string())
        .body(body);
    if let Some(k) = key {
        req = req.header("x-goog-api-key", k);
    }
    req.send().await.unwrap()
}

/// A resumable upload as Google's SDKs make it: start (with the key), then the bytes to the
/// upload URL the gateway rewrote to itself (without a key). Returns the file's name and URI.
async fn upload(env: &TestEnv, key: &str, display_name: &str) -> (String, String) {
    let start = start_upload(env, key, display_name).await;
    assert_eq!(start.status(), 200);
    let url = upload_url(&start);
    assert!(url.starts_with(&env.gateway_url), "{url}");
    let done = send_chunk(&url, None, "upload, finalize", 0, "hello world").await;
    assert_eq!(done.status(), 200);
    let v: Value = done.json().await.unwrap();
    (
        v["file"]["name"].as_str().unwrap().to_owned(),
        v["file"]["uri"].as_str().unwrap().to_owned(),
    )
}

async fn create_cache(env: &TestEnv, key: &str, display_name: &str) -> String {
    let r = send(
        env,
        key,
        Method::POST,
        "/v1beta/cachedContents",
        Some(
            json!({"model": "models/gemini-2.5-flash", "displayName": display_name,
            "contents": [{"parts": [{"text": "a long document"}]}]}),
        ),
    )
    .await;
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["name"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn submit_video(env: &TestEnv, key: &str, seed: i64) -> String {
    submit_video_at(env, key, &format!("{VEO}:predictLongRunning"), seed).await
}

async fn submit_video_at(env: &TestEnv, key: &str, path: &str, seed: i64) -> String {
    let r = send(
        env,
        key,
        Method::POST,
        path,
        Some(json!({"instances": [{"prompt": "a cat"}],
            "parameters": {"sampleCount": 1, "durationSeconds": 8, "seed": seed}})),
    )
    .await;
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["name"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The status and Google error status of a refusal, and that the upstream saw nothing.
async fn refused(env: &TestEnv, key: &str, method: Method, path: &str, body: Option<Value>) {
    let before = env.fake.calls().len();
    let r = send(env, key, method.clone(), path, body).await;
    let code = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(
        (code, v["error"]["status"].as_str()),
        (403, Some("PERMISSION_DENIED")),
        "{method} {path}: {v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("do not have permission"),
        "{v}"
    );
    assert_eq!(
        env.fake.calls().len(),
        before,
        "{method} {path}: the upstream received no whole request"
    );
}

async fn ok(env: &TestEnv, key: &str, method: Method, path: &str, body: Option<Value>) -> Value {
    let r = send(env, key, method.clone(), path, body).await;
    assert_eq!(r.status(), 200, "{method} {path}");
    r.json().await.unwrap_or(Value::Null)
}

fn names(listing: &Value, field: &str) -> Vec<String> {
    listing[field]
        .as_array()
        .unwrap_or_else(|| panic!("{listing}"))
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect()
}

fn with_file(uri: &str) -> Value {
    json!({"contents": [{"parts": [{"text": "summarize"}, {"fileData": {"mimeType": "text/plain", "fileUri": uri}}]}]})
}

fn with_cache(name: &str) -> Value {
    json!({"contents": [{"parts": [{"text": "summarize"}]}], "cachedContent": name})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_org_sees_and_uses_only_its_own_files_caches_and_operations() {
    let env = TestEnv::start().await;
    let (_, a) = env.org_with_key("acme").await;
    let (_, b) = env.org_with_key("globex").await;

    let (a_file, a_uri) = upload(&env, &a, "acme notes").await;
    let (b_file, _) = upload(&env, &b, "globex notes").await;
    assert_eq!(
        (a_file.as_str(), b_file.as_str()),
        ("files/acme-notes", "files/globex-notes")
    );
    let a_cache = create_cache(&env, &a, "acme-cache").await;
    let b_cache = create_cache(&env, &b, "globex-cache").await;
    let a_op = submit_video(&env, &a, 1).await;
    let b_op = submit_video(&env, &b, 2).await;
    assert_ne!(a_op, b_op);

    // By path: globex may not read, download, poll or delete acme's, and vice versa.
    let a_paths = [
        (Method::GET, format!("/v1beta/{a_file}")),
        (Method::GET, format!("/v1beta/{a_file}:download?alt=media")),
        (Method::DELETE, format!("/v1beta/{a_file}")),
        (Method::GET, format!("/v1beta/{a_cache}")),
        (Method::PATCH, format!("/v1beta/{a_cache}")),
        (Method::DELETE, format!("/v1beta/{a_cache}")),
        (Method::GET, format!("/v1beta/{a_op}")),
    ];
    for (method, path) in &a_paths {
        refused(&env, &b, method.clone(), path, None).await;
    }
    refused(&env, &a, Method::GET, &format!("/v1beta/{b_file}"), None).await;
    refused(&env, &a, Method::GET, &format!("/v1beta/{b_op}"), None).await;
    // Not made through the gateway: nobody's, so nobody's to read.
    refused(&env, &a, Method::GET, "/v1beta/files/made-elsewhere", None).await;
    // The owner may.
    for (method, path) in a_paths.iter().filter(|(m, _)| *m == Method::GET) {
        ok(&env, &a, method.clone(), path, None).await;
    }

    // The finished video's file belongs to whoever owns the operation.
    let done = ok(&env, &a, Method::GET, &format!("/v1beta/{a_op}"), None).await;
    let video_uri = done
        .pointer("/response/generateVideoResponse/generatedSamples/0/video/uri")
        .and_then(Value::as_str)
        .unwrap()
        .to_owned();
    let video = gateway::resources::key_of_reference(&video_uri)
        .unwrap()
        .unwrap();
    ok(
        &env,
        &a,
        Method::GET,
        &format!("/v1beta/{video}:download?alt=media"),
        None,
    )
    .await;
    refused(
        &env,
        &b,
        Method::GET,
        &format!("/v1beta/{video}:download?alt=media"),
        None,
    )
    .await;

    // Vertex polls name the operation in the body.
    let vertex_veo =
        "/v1/projects/p/locations/us-central1/publishers/google/models/veo-3.0-generate-001";
    let v_op = submit_video_at(&env, &a, &format!("{vertex_veo}:predictLongRunning"), 3).await;
    let fetch = format!("{vertex_veo}:fetchPredictOperation");
    refused(
        &env,
        &b,
        Method::POST,
        &fetch,
        Some(json!({"operationName": v_op})),
    )
    .await;
    let polled = ok(
        &env,
        &a,
        Method::POST,
        &fetch,
        Some(json!({"operationName": v_op})),
    )
    .await;
    assert_eq!(polled["done"], true);

    // Listings: the project holds both orgs' files and caches; each org sees its own, all of
    // them on one page by default.
    let (a_two, _) = upload(&env, &a, "acme two").await;
    let (b_two, _) = upload(&env, &b, "globex two").await;
    for (key, files, cache) in [
        (&a, [&a_file, &a_two], &a_cache),
        (&b, [&b_file, &b_two], &b_cache),
    ] {
        let listed = ok(&env, key, Method::GET, "/v1beta/files", None).await;
        assert_eq!(names(&listed, "files"), files.map(String::as_str));
        assert!(listed.get("nextPageToken").is_none(), "{listed}");
        let caches = ok(&env, key, Method::GET, "/v1beta/cachedContents", None).await;
        assert_eq!(names(&caches, "cachedContents"), [cache.as_str()]);
    }
    // One entry per page: Google's pages alternate acme, globex, acme, globex. Each org's page
    // holds one of its own, and its token leads to the next page that holds one (no empty
    // page for the SDK's pager to fail on); the last has none.
    for (key, files) in [(&a, [&a_file, &a_two]), (&b, [&b_file, &b_two])] {
        let first = ok(&env, key, Method::GET, "/v1beta/files?pageSize=1", None).await;
        assert_eq!(names(&first, "files"), [files[0].as_str()]);
        let token = first["nextPageToken"]
            .as_str()
            .unwrap_or_else(|| panic!("{first}"));
        let second = ok(
            &env,
            key,
            Method::GET,
            &format!("/v1beta/files?pageSize=1&pageToken={token}"),
            None,
        )
        .await;
        assert_eq!(names(&second, "files"), [files[1].as_str()]);
        assert!(second.get("nextPageToken").is_none(), "{second}");
    }
    let direct = client()
        .get(format!("{}/v1beta/files", env.fake.base_url()))
        .header("x-goog-api-key", crate::fake_google::PROVIDER_KEY)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(
        names(&direct, "files").len(),
        4,
        "the upstream lists both: {direct}"
    );

    // In request bodies: another org's file or cache is refused before it reaches Google,
    // by relative name or URI, in a small body or at the end of a large streamed one.
    let big_text = "sky ".repeat(30_000);
    let big_with = |reference: Value| json!({"contents": [{"parts": [{"text": big_text}, {"fileData": {"fileUri": reference}}]}]});
    for body in [
        with_file(&a_uri),
        with_file(&a_file),
        with_cache(&a_cache),
        big_with(json!(a_uri)),
        json!({"generateContentRequest": with_cache(&a_cache)}),
    ] {
        refused(&env, &b, Method::POST, GEN, Some(body)).await;
    }
    // A batch reading its requests from another org's file.
    refused(
        &env,
        &b,
        Method::POST,
        "/v1beta/models/gemini-2.5-flash:batchGenerateContent",
        Some(json!({"batch": {"displayName": "b", "inputConfig": {"fileName": a_file}}})),
    )
    .await;
    // A compressed body would hide its references: refused, whoever sends it.
    let before = env.fake.calls().len();
    let gz = client()
        .post(format!("{}{GEN}", env.gateway_url))
        .header("x-goog-api-key", &a)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(vec![
            0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0x03, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(gz.status(), 400);
    let v: Value = gz.json().await.unwrap();
    assert_eq!(v["error"]["status"], "INVALID_ARGUMENT");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("uncompressed"),
        "{v}"
    );
    assert_eq!(env.fake.calls().len(), before);
    // Its own, and other URLs (Cloud Storage, the web), go through.
    for body in [
        with_file(&a_uri),
        with_cache(&a_cache),
        big_with(json!(a_uri)),
        with_file("gs://acme-bucket/files/report.pdf"),
        with_file("https://www.youtube.com/watch?v=files"),
    ] {
        ok(&env, &a, Method::POST, GEN, Some(body)).await;
    }

    let metrics = get_text(&format!("{}/metrics", env.metrics_url)).await;
    let count = |label: &str| -> f64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "tollgate_resource_refusals_total{{where=\"{label}\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(count("path"), 11.0, "{metrics}");
    assert_eq!(count("body"), 7.0, "{metrics}");
    // Entries of the other org left out: 2 + 1 per org at one page, then 2 per org paging.
    assert_eq!(count("listing"), 10.0, "{metrics}");
    env.assert_clean_upstream();
    env.stop().await;
}

/// A resource made through one gateway is its org's on every gateway of the fleet (and after a
/// restart): ownership is kept in the store and loaded by each instance.
async fn ownership_is_shared_by_the_fleet(opts: impl Fn() -> Opts) {
    let one = TestEnv::start_with(opts()).await;
    let two = TestEnv::start_with(opts()).await;
    let (_, a) = one.org_with_key("acme").await;
    let (_, b) = one.org_with_key("globex").await;
    two.refresh().await;
    let cache = create_cache(&one, &a, "fleet-cache").await;
    // Within the sync interval (1 s here), the other gateway knows it.
    eventually(
        Duration::from_secs(10),
        "the second gateway learns the owner",
        || {
            let (url, a) = (two.gateway_url.clone(), a.clone());
            let path = format!("/v1beta/{cache}");
            async move {
                client()
                    .get(format!("{url}{path}"))
                    .header("x-goog-api-key", a)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            }
        },
    )
    .await;
    refused(&two, &b, Method::GET, &format!("/v1beta/{cache}"), None).await;
    ok(&two, &a, Method::POST, GEN, Some(with_cache(&cache))).await;
    refused(&two, &b, Method::POST, GEN, Some(with_cache(&cache))).await;
    one.stop().await;
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ownership_is_shared_by_the_fleet_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/shared.db", dir.path().display());
    ownership_is_shared_by_the_fleet(|| Opts {
        database: Some((url.clone(), None)),
        ..Opts::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ownership_is_shared_by_the_fleet_on_postgres() {
    let Some(pg) = postgres_url() else { return };
    let schema = unique_schema("owners");
    ownership_is_shared_by_the_fleet(|| Opts {
        database: Some((pg.clone(), Some(schema.clone()))),
        ..Opts::default()
    })
    .await;
}

/// Google's Python SDK as two orgs: the second cannot get, delete, list or use the first's file
/// and cache, and gets the SDK's usual 403 error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_of_another_org_gets_permission_denied() {
    let env = TestEnv::start().await;
    let (_, a) = env.org_with_key("acme").await;
    let (_, b) = env.org_with_key("globex").await;
    let Some(py) = crate::sdk::python() else {
        return;
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/isolation_calls.py");
    let mut cmd = tokio::process::Command::new(py);
    cmd.args([script, &env.gateway_url, &a, &b])
        .env("NO_PROXY", "*");
    cmd.kill_on_drop(true);
    // Bounded, so a client stuck (say, paging forever) fails the test instead of hanging it.
    let stdout = tokio::time::timeout(
        Duration::from_secs(120),
        crate::harness::stdout_of(&mut cmd, "the SDK failed:\n"),
    )
    .await
    .expect("the SDK finished within 120 s");
    let out: Value = serde_json::from_slice(&stdout).unwrap();
    let file = out["a_file"].as_str().unwrap();
    assert_eq!(out["a_get_file"]["ok"], file, "{out}");
    assert_eq!(out["a_list_files"]["ok"], json!([file]), "{out}");
    assert_eq!(out["b_list_files"]["ok"], json!([]), "{out}");
    for call in [
        "b_get_file",
        "b_delete_file",
        "b_get_cache",
        "b_generate_with_file",
        "b_generate_with_cache",
    ] {
        assert_eq!(
            (
                out[call]["error"]["code"].as_i64(),
                out[call]["error"]["status"].as_str()
            ),
            (Some(403), Some("PERMISSION_DENIED")),
            "{call}: {out}"
        );
    }
    assert!(out["a_generate_with_file"]["ok"].is_string(), "{out}");
    env.assert_clean_upstream();
    env.stop().await;
}

/// A resumable upload's chunks are its starter's: another org cannot send or finalize them, and
/// a reference to another org's file split across two chunks (a batch's input file) is seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_sessions_are_their_starters_and_are_read_across_chunks() {
    let env = TestEnv::start().await;
    let (_, a) = env.org_with_key("acme").await;
    let (_, b) = env.org_with_key("globex").await;
    let (a_file, _) = upload(&env, &a, "acme notes").await;
    let start = |key: String, name: &'static str| {
        let env = &env;
        async move {
            let r = start_upload(env, &key, name).await;
            assert_eq!(r.status(), 200);
            upload_url(&r)
        }
    };
    let chunk = |url: String,
                 key: Option<String>,
                 command: &'static str,
                 offset: usize,
                 body: String| async move {
        send_chunk(&url, key.as_deref(), command, offset, body)
            .await
            .status()
            .as_u16()
    };

    // globex, with its own key, cannot finalize acme's upload.
    let acme_url = start(a.clone(), "acme batch").await;
    let before = env.fake.calls().len();
    let finalize = "upload, finalize";
    assert_eq!(
        chunk(acme_url.clone(), Some(b.clone()), finalize, 0, "x".into()).await,
        403
    );
    assert_eq!(env.fake.calls().len(), before);
    assert_eq!(chunk(acme_url, None, finalize, 0, "{}".into()).await, 200);

    // A batch input file whose request names acme's file, split mid-name across two chunks.
    let line = format!(
        r#"{{"key": "1", "request": {{"contents": [{{"parts": [{{"fileData": {{"fileUri": "{a_file}"}}}}]}}]}}}}"#
    );
    let cut = line.find(&a_file).unwrap() + 4;
    let (head, tail) = (line[..cut].to_owned(), line[cut..].to_owned());
    let globex_url = start(b.clone(), "globex batch").await;
    assert_eq!(
        chunk(globex_url.clone(), None, "upload", 0, head).await,
        200
    );
    // A chunk must start where Google's accepted bytes end: a resent or skipping one (which
    // would put the reader out of step with what Google holds) is refused.
    for offset in [0, cut + 1] {
        let status = chunk(globex_url.clone(), None, "upload", offset, tail.clone()).await;
        assert_eq!(status, 400, "offset {offset}");
    }
    let before = env.fake.calls().len();
    assert_eq!(
        chunk(globex_url.clone(), None, finalize, cut, tail.clone()).await,
        403
    );
    assert_eq!(
        env.fake.calls().len(),
        before,
        "the completing chunk never reached Google"
    );
    // The session is over: the remainder cannot be sent again.
    assert_eq!(
        chunk(globex_url, None, finalize, cut, tail).await,
        401,
        "a keyless chunk of an ended session has no identity"
    );
    // The same split file naming globex's own upload goes through.
    let (b_file, _) = upload(&env, &b, "globex notes").await;
    let line = line.replace(&a_file, &b_file);
    let cut = line.find(&b_file).unwrap() + 4;
    let url = start(b.clone(), "globex batch two").await;
    assert_eq!(
        chunk(url.clone(), None, "upload", 0, line[..cut].to_owned()).await,
        200
    );
    assert_eq!(
        chunk(url, None, finalize, cut, line[cut..].to_owned()).await,
        200
    );
    env.assert_clean_upstream();
    env.stop().await;
}

/// A chunk Google fails leaves the session where it was, so the SDK's retry of it goes through;
/// deleting a document inside a file search store does not free the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_chunk_can_be_retried_and_a_stores_document_is_not_the_store() {
    let env = TestEnv::start().await;
    let (_, a) = env.org_with_key("acme").await;
    let (_, b) = env.org_with_key("globex").await;
    let url = upload_url(&start_upload(&env, &a, "flaky notes").await);
    let send = |command: &'static str, offset: usize, body: &'static str| {
        send_chunk(&url, None, command, offset, body)
    };
    assert_eq!(send("upload", 0, "hello ").await.status(), 503);
    assert_eq!(send("upload", 0, "hello ").await.status(), 200, "the retry");
    let done = send("upload, finalize", 6, "world").await;
    assert_eq!(done.status(), 200);
    let name = done.json::<Value>().await.unwrap()["file"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(&env, &a, Method::GET, &format!("/v1beta/{name}"), None).await;
    refused(&env, &b, Method::GET, &format!("/v1beta/{name}"), None).await;

    let made = ok(
        &env,
        &a,
        Method::POST,
        "/v1beta/fileSearchStores",
        Some(json!({"displayName": "acme store"})),
    )
    .await;
    let store = made["name"].as_str().unwrap().to_owned();
    refused(&env, &b, Method::GET, &format!("/v1beta/{store}"), None).await;
    let doc = format!("/v1beta/{store}/documents/d1");
    refused(&env, &b, Method::DELETE, &doc, None).await;
    ok(&env, &a, Method::DELETE, &doc, None).await;
    ok(&env, &a, Method::GET, &format!("/v1beta/{store}"), None).await;
    // Deleting the store itself frees its name: nobody's now, so refused even to acme.
    ok(&env, &a, Method::DELETE, &format!("/v1beta/{store}"), None).await;
    refused(&env, &a, Method::GET, &format!("/v1beta/{store}"), None).await;
    env.assert_clean_upstream();
    env.stop().await;
}

/// The org's first page of files, one entry per page, and the answer to its `nextPageToken`.
async fn first_and_next_file_page(env: &TestEnv, key: &str) -> (Value, reqwest::Response) {
    let first = ok(env, key, Method::GET, "/v1beta/files?pageSize=1", None).await;
    let token = first["nextPageToken"]
        .as_str()
        .unwrap_or_else(|| panic!("{first}"));
    let next = send(
        env,
        key,
        Method::GET,
        &format!("/v1beta/files?pageSize=1&pageToken={token}"),
        None,
    )
    .await;
    (first, next)
}

/// Google fails on a later page of a listing: the org gets the entries found before it, with a
/// token to go on from the failing page; asked again from there, Google's error is passed on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_page_google_fails_keeps_what_was_found() {
    let env = TestEnv::start().await;
    let (_, a) = env.org_with_key("acme").await;
    let (_, b) = env.org_with_key("globex").await;
    let (a_one, _) = upload(&env, &a, "acme one").await;
    upload(&env, &b, "fail-after-this").await;
    upload(&env, &a, "acme two").await;
    let (first, again) = first_and_next_file_page(&env, &a).await;
    assert_eq!(names(&first, "files"), [a_one.as_str()]);
    assert_eq!(again.status(), 500, "Google's own error, passed on");
    let v: Value = again.json().await.unwrap();
    assert_eq!(v["error"]["status"], "INTERNAL");
    env.stop().await;
}

/// Google refuses a listing page for quota: its status, body and Retry-After reach the client,
/// whose SDK waits that long before asking again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_refused_for_quota_passes_retry_after_on() {
    let env = TestEnv::start().await;
    let (_, a) = env.org_with_key("acme").await;
    upload(&env, &a, "quota-after-this").await;
    upload(&env, &a, "acme two").await;
    let (_, again) = first_and_next_file_page(&env, &a).await;
    assert_eq!(again.status(), 429);
    assert_eq!(
        again.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"7"[..]),
        "{:?}",
        again.headers()
    );
    let v: Value = again.json().await.unwrap();
    assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED");
    env.stop().await;
}

/// One org may have at most 1,000 uploads in progress: the next start gets 429 and nothing is
/// forwarded; finishing or cancelling one frees a place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_org_may_hold_a_bounded_number_of_uploads_in_progress() {
    let env = TestEnv::start().await;
    let (_, a) = env.org_with_key("acme").await;
    let (_, b) = env.org_with_key("globex").await;
    let start = |key: String, name: String| {
        let env = &env;
        async move { start_upload(env, &key, &name).await }
    };
    let mut first_url = String::new();
    for i in 0..1000 {
        let r = start(a.clone(), format!("acme {i}")).await;
        assert_eq!(r.status(), 200, "upload {i}");
        if i == 0 {
            first_url = upload_url(&r);
        }
    }
    let before = env.fake.calls().len();
    let r = start(a.clone(), "acme 1000".into()).await;
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(env.fake.calls().len(), before, "nothing forwarded");
    // Another org is not affected.
    assert_eq!(start(b.clone(), "globex".into()).await.status(), 200);
    // Cancelling one frees a place.
    let cancel = send_chunk(&first_url, None, "cancel", 0, "").await;
    assert!(cancel.status().as_u16() < 500, "{}", cancel.status());
    assert_eq!(start(a.clone(), "acme again".into()).await.status(), 200);
    env.stop().await;
}
