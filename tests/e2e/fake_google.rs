//! A fake Google upstream on 127.0.0.1:0 speaking both surfaces' wire format: JSON answers with
//! `usageMetadata`, SSE and JSON-array streams (optionally slow, or cut off), Imagen predictions,
//! Veo long-running operations and their polling, resumable uploads, model listing, and errors.
//! It logs every request and records any that carried something only the gateway should see.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use serde_json::{json, Value};

/// The provider key the gateway must present.
pub const PROVIDER_KEY: &str = "AIzaFakeProviderKey0123456789";
/// A 1×1 PNG, base64.
pub const PNG_B64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
}

#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    violations: Vec<String>,
    /// TLS only: the server name (SNI) of each completed handshake, `None` when none was sent.
    handshakes: Vec<Option<String>>,
    /// TLS only: handshakes that failed (e.g. the client did not trust our certificate).
    failed_handshakes: usize,
    /// Files and cached contents created, as their JSON, for listings (one Google project).
    created: Vec<Value>,
    /// Resumable uploads started: upload id → the file's display name.
    uploads: Vec<(String, String)>,
    /// Uploads named `flaky…` whose first chunk already failed once.
    flaked: Vec<String>,
}

/// A fake served over TLS: its certificate is for `localhost`, signed by a throwaway CA.
pub struct TlsFake {
    pub fake: FakeGoogle,
    /// The CA certificate (PEM) that signed the fake's certificate.
    pub ca_pem: String,
}

/// A running fake.
#[derive(Clone)]
pub struct FakeGoogle {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    /// When set, requests must carry this key (the gateway's provider key).
    expect_provider_key: bool,
    /// Served over TLS (`start_tls`).
    tls: bool,
}

impl FakeGoogle {
    /// Starts a fake that asserts every request carries the provider key and nothing of ours.
    pub async fn start() -> FakeGoogle {
        Self::start_with(true).await
    }

    pub async fn start_with(expect_provider_key: bool) -> FakeGoogle {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = FakeGoogle {
            addr,
            inner: Arc::default(),
            expect_provider_key,
            tls: false,
        };
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(fake.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        fake
    }

    /// Starts a fake speaking HTTPS, with a certificate for `localhost` (base URL
    /// `https://localhost:PORT`) issued by a CA made for this fake alone.
    pub async fn start_tls() -> TlsFake {
        use tokio_rustls::rustls;
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Tollgate test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        // Where `localhost` leads the gateway (it connects to the first address resolved;
        // 127.0.0.1 or ::1 depending on the machine's hosts file).
        let local = tokio::net::lookup_host("localhost:0")
            .await
            .unwrap()
            .next()
            .unwrap();
        let listener = tokio::net::TcpListener::bind(local).await.unwrap();
        let fake = FakeGoogle {
            addr: listener.local_addr().unwrap(),
            inner: Arc::default(),
            expect_provider_key: true,
            tls: true,
        };
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(fake.clone());
        let f = fake.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, app, f) = (acceptor.clone(), app.clone(), f.clone());
                tokio::spawn(async move {
                    let tls = match acceptor.accept(tcp).await {
                        Ok(tls) => tls,
                        Err(_) => {
                            f.inner.lock().unwrap().failed_handshakes += 1;
                            return;
                        }
                    };
                    let sni = tls.get_ref().1.server_name().map(str::to_owned);
                    f.inner.lock().unwrap().handshakes.push(sni);
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await
                        .ok();
                });
            }
        });
        TlsFake {
            fake,
            ca_pem: ca.pem(),
        }
    }

    pub fn base_url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }

    /// TLS only: the server name each completed handshake asked for.
    pub fn handshakes(&self) -> Vec<Option<String>> {
        self.inner.lock().unwrap().handshakes.clone()
    }

    /// TLS only: handshakes that failed.
    pub fn failed_handshakes(&self) -> usize {
        self.inner.lock().unwrap().failed_handshakes
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner.lock().unwrap().calls.clone()
    }

    /// Requests that carried a gateway key, an `x-tollgate-*` header, a `key=` parameter, or
    /// lacked the provider key.
    pub fn violations(&self) -> Vec<String> {
        self.inner.lock().unwrap().violations.clone()
    }

    fn remember(&self, v: Value) {
        self.inner.lock().unwrap().created.push(v);
    }

    fn record(&self, method: &Method, uri: &Uri, headers: &HeaderMap) {
        let call = Call {
            method: method.to_string(),
            path: uri.path().to_owned(),
            query: uri.query().unwrap_or("").to_owned(),
            headers: headers.clone(),
        };
        let mut v = Vec::new();
        let what = format!("{} {}", call.method, call.path);
        for (name, value) in headers {
            let value = value.to_str().unwrap_or("");
            if name.as_str().starts_with("x-tollgate-") {
                v.push(format!("{what}: header {name} reached the upstream"));
            }
            if contains_gateway_key(value) {
                v.push(format!(
                    "{what}: a gateway key reached the upstream in {name}"
                ));
            }
        }
        // Google decodes query names and values: so does this check.
        for (name, value) in url::form_urlencoded::parse(call.query.as_bytes()) {
            if name.eq_ignore_ascii_case("key") || contains_gateway_key(&value) {
                v.push(format!(
                    "{what}: a key query parameter ({name}) reached the upstream"
                ));
            }
        }
        if self.expect_provider_key {
            let provider = headers.get("x-goog-api-key").and_then(|v| v.to_str().ok());
            if provider != Some(PROVIDER_KEY) {
                v.push(format!(
                    "{what}: the provider key was missing (x-goog-api-key = {provider:?})"
                ));
            }
        }
        let mut inner = self.inner.lock().unwrap();
        inner.calls.push(call);
        inner.violations.extend(v);
    }
}

fn google_error(code: u16, status: &str, message: &str) -> Response {
    let body = json!({"error": {"code": code, "message": message, "status": status,
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "FAKE"}]}});
    Response::builder()
        .status(code)
        .header("content-type", "application/json; charset=UTF-8")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn json_response(v: Value) -> Response {
    Response::builder()
        .header("content-type", "application/json; charset=UTF-8")
        .body(Body::from(v.to_string()))
        .unwrap()
}

fn first_text(body: &Value) -> String {
    body.pointer("/contents/0/parts/0/text")
        .or_else(|| body.pointer("/contents/0/parts/0/text"))
        .and_then(Value::as_str)
        .or_else(|| body.pointer("/contents").and_then(Value::as_str))
        .unwrap_or("")
        .to_owned()
}

fn words(s: &str) -> i64 {
    s.split_whitespace().count().max(1) as i64
}

/// A generateContent answer; `chunk` i of `n` for streams (cumulative usage on every chunk).
fn gen_response(model: &str, prompt: &str, chunk: usize, n: usize) -> Value {
    gen_response_cached(model, prompt, chunk, n, false)
}

/// Usage numbers are a pure function of the prompt, so tests can compute them: prompt = words
/// (+100 cached when the request names a cachedContent), candidates = 5 per chunk (cumulative),
/// thoughts = 7.
fn gen_response_cached(model: &str, prompt: &str, chunk: usize, n: usize, cached: bool) -> Value {
    let prompt_tokens = words(prompt) + if cached { 100 } else { 0 };
    let image_tokens = if model.contains("-image") { 1290 } else { 0 };
    let candidates = 5 * (chunk as i64 + 1) + image_tokens;
    let mut candidate = json!({
        "content": {"parts": [{"text": format!("chunk {chunk} of the answer to: {prompt}")}], "role": "model"},
        "index": 0
    });
    if model.contains("-image") {
        candidate["content"]["parts"] = json!([{"text": "here is your image"}, {"inlineData": {"mimeType": "image/png", "data": PNG_B64}}]);
    }
    if chunk + 1 == n {
        candidate["finishReason"] = json!("STOP");
    }
    let mut usage = json!({
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt_tokens + candidates + 7,
        "thoughtsTokenCount": 7,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}]
    });
    if model.contains("-image") {
        usage["candidatesTokensDetails"] = json!([{"modality": "IMAGE", "tokenCount": 1290}]);
    }
    if cached {
        usage["cachedContentTokenCount"] = json!(100);
    }
    if model.contains("nousage") {
        usage = json!({"trafficType": "ON_DEMAND"}); // Vertex: counts only in the last chunk
    }
    json!({"candidates": [candidate], "usageMetadata": usage, "modelVersion": model, "responseId": "fake-response-1"})
}

fn sse_events(model: &str, prompt: &str, n: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| {
            Bytes::from(format!(
                "data: {}\r\n\r\n",
                gen_response(model, prompt, i, n)
            ))
        })
        .collect()
}

/// A streamed body: the chunks, `gap` apart, optionally cut (connection reset) before the end.
fn stream_body(chunks: Vec<Bytes>, gap: Duration, cut_after: Option<usize>) -> Body {
    let stream = async_stream(chunks, gap, cut_after);
    Body::from_stream(stream)
}

fn async_stream(
    chunks: Vec<Bytes>,
    gap: Duration,
    cut_after: Option<usize>,
) -> impl futures_core::Stream<Item = Result<Bytes, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    tokio::spawn(async move {
        for (i, c) in chunks.into_iter().enumerate() {
            if i > 0 && !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            if cut_after == Some(i) {
                let _ = tx.send(Err(std::io::Error::other("cut"))).await;
                return;
            }
            if tx.send(Ok(c)).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

async fn handle(
    State(fake): State<FakeGoogle>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Infallible> {
    fake.record(&method, &uri, &headers);
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or("").to_owned();
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Ok(route(&fake, &method, &path, &query, &headers, &req, body.len()).await)
}

async fn route(
    fake: &FakeGoogle,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    req: &Value,
    body_len: usize,
) -> Response {
    if path.starts_with("/upload/") {
        return upload(fake, query, headers, req, body_len);
    }
    let vertex = path.starts_with("/v1beta1/") || path.contains("/publishers/");
    // Operation polling (Developer API): GET /{v}/models/{m}/operations/{id}
    if method == Method::GET && path.contains("/operations/") {
        let name = path.splitn(3, '/').nth(2).unwrap_or("");
        return json_response(veo_done(name, false));
    }
    if method == Method::GET && path.ends_with("/files") {
        return listing(fake, "files", query);
    }
    if path.ends_with("/files") || path.contains("/files/") {
        let id = path.rsplit('/').next().unwrap_or("f");
        let id = id.split(':').next().unwrap_or(id);
        return json_response(file_json(id));
    }
    if let Some((_, rest)) = path.split_once("/fileSearchStores") {
        // Create (named after its display name), get, and a document inside one.
        if rest.is_empty() && method == Method::POST {
            let display = req
                .get("displayName")
                .and_then(Value::as_str)
                .unwrap_or("s1");
            let store = json!({"name": format!("fileSearchStores/{}", slug(display)), "displayName": display});
            fake.remember(store.clone());
            return json_response(store);
        }
        if method == Method::DELETE {
            return json_response(json!({}));
        }
        return json_response(json!({"name": format!("fileSearchStores{rest}")}));
    }
    if path.ends_with("/cachedContents") {
        if method == Method::GET {
            return listing(fake, "cachedContents", query);
        }
        // Named after its display name (see `upload`).
        let display = req
            .get("displayName")
            .and_then(Value::as_str)
            .unwrap_or("c1");
        let cache = json!({"name": format!("cachedContents/{}", slug(display)),
            "model": req.get("model").cloned().unwrap_or(Value::Null), "displayName": display,
            "createTime": "2026-11-28T00:00:00.000000Z", "updateTime": "2026-11-28T00:00:00.000000Z",
            "expireTime": "2026-11-28T01:00:00.000000Z", "usageMetadata": {"totalTokenCount": 4096}});
        fake.remember(cache.clone());
        return json_response(cache);
    }
    if let Some((_, id)) = path.split_once("/cachedContents/") {
        if method == Method::DELETE {
            return json_response(json!({}));
        }
        return json_response(json!({"name": format!("cachedContents/{id}"), "displayName": id}));
    }
    if method == Method::GET && (path.ends_with("/models") || !path.contains(':')) {
        return models(path);
    }
    let Some((model_path, op)) = path.rsplit_once(':') else {
        return google_error(404, "NOT_FOUND", "no such method");
    };
    let model = model_path.rsplit('/').next().unwrap_or("");
    if let Some(code) = model.strip_prefix("error-") {
        return match code {
            "429" => google_error(
                429,
                "RESOURCE_EXHAUSTED",
                "Resource has been exhausted (e.g. check quota).",
            ),
            "400" => google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received."),
            _ => google_error(500, "INTERNAL", "An internal error has occurred."),
        };
    }
    if model.contains("slow-json") {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let prompt = first_text(req);
    let cached = req.get("cachedContent").is_some();
    match op {
        "generateContent" => json_response(gen_response_cached(model, &prompt, 0, 1, cached)),
        "streamGenerateContent" => stream(model, &prompt, query),
        "countTokens" => json_response(json!({"totalTokens": words(&prompt) + 1,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": words(&prompt) + 1}]})),
        "embedContent" => json_response(json!({"embedding": {"values": [0.25, -0.5, 0.125]}})),
        "batchEmbedContents" => {
            let n = req
                .get("requests")
                .and_then(Value::as_array)
                .map_or(1, Vec::len);
            json_response(json!({"embeddings": vec![json!({"values": [0.25, -0.5, 0.125]}); n]}))
        }
        "predict" => imagen(model, req),
        "predictLongRunning" => {
            let count = req
                .pointer("/parameters/sampleCount")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            // `v{count}`, and `-{seed}` when the request sets one: distinct videos, distinct names.
            let id = match req.pointer("/parameters/seed").and_then(Value::as_i64) {
                Some(seed) => format!("v{count}-{seed}"),
                None => format!("v{count}"),
            };
            let name = if vertex {
                format!("projects/test-project/locations/us-central1/publishers/google/models/{model}/operations/{id}")
            } else {
                format!("models/{model}/operations/{id}")
            };
            json_response(json!({"name": name}))
        }
        "fetchPredictOperation" => {
            let name = req
                .get("operationName")
                .and_then(Value::as_str)
                .unwrap_or("");
            json_response(veo_done(name, true))
        }
        _ => google_error(404, "NOT_FOUND", "unknown method"),
    }
}

fn stream(model: &str, prompt: &str, query: &str) -> Response {
    let sse = query.split('&').any(|p| p == "alt=sse");
    let gap = if model.contains("slow") {
        Duration::from_millis(700)
    } else {
        Duration::from_millis(5)
    };
    let cut = model.contains("cut").then_some(2);
    let n = if model.contains("slow") { 3 } else { 4 };
    if sse {
        return Response::builder()
            .header("content-type", "text/event-stream")
            .header("content-disposition", "attachment")
            .body(stream_body(sse_events(model, prompt, n), gap, cut))
            .unwrap();
    }
    // The JSON-array form: "[{…}\r\n,\r\n{…}\r\n]"
    let mut chunks: Vec<Bytes> = (0..n)
        .map(|i| {
            let lead = if i == 0 { "[" } else { ",\r\n" };
            Bytes::from(format!(
                "{lead}{}\r\n",
                serde_json::to_string_pretty(&gen_response(model, prompt, i, n)).unwrap()
            ))
        })
        .collect();
    chunks.push(Bytes::from_static(b"]"));
    Response::builder()
        .header("content-type", "application/json; charset=UTF-8")
        .body(stream_body(chunks, gap, cut))
        .unwrap()
}

/// Bytes of the huge Imagen body (`imagen-huge`): 16 images of 4 MiB base64 each.
pub const HUGE_IMAGES: usize = 16;
const HUGE_IMAGE_B64: usize = 4 * 1024 * 1024;

fn huge_imagen() -> Response {
    let block = Bytes::from(vec![b'A'; 64 * 1024]);
    let mut chunks = vec![Bytes::from_static(b"{\"predictions\": [")];
    for i in 0..HUGE_IMAGES {
        let lead = if i == 0 { "" } else { ", " };
        chunks.push(Bytes::from(format!(
            "{lead}{{\"mimeType\": \"image/png\", \"bytesBase64Encoded\": \""
        )));
        chunks.extend(std::iter::repeat_n(
            block.clone(),
            HUGE_IMAGE_B64 / block.len(),
        ));
        chunks.push(Bytes::from_static(b"\"}"));
    }
    chunks.push(Bytes::from_static(b"]}"));
    Response::builder()
        .header("content-type", "application/json; charset=UTF-8")
        .body(stream_body(chunks, Duration::ZERO, None))
        .unwrap()
}

fn imagen(model: &str, req: &Value) -> Response {
    if model == "imagen-huge" {
        return huge_imagen();
    }
    if model.contains("embedding") {
        return json_response(json!({"metadata": {"billableCharacterCount": 10},
            "predictions": [{"embeddings": {"statistics": {"token_count": 2, "truncated": false}, "values": [0.5, 0.25]}}]}));
    }
    let n = req
        .pointer("/parameters/sampleCount")
        .and_then(Value::as_u64)
        .unwrap_or(4);
    let predictions: Vec<Value> = (0..n)
        .map(|_| json!({"bytesBase64Encoded": PNG_B64, "mimeType": "image/png"}))
        .collect();
    json_response(json!({"predictions": predictions}))
}

fn veo_done(name: &str, vertex: bool) -> Value {
    let id = name.rsplit('/').next().unwrap_or("v1");
    let count: usize = id
        .trim_start_matches('v')
        .split('-')
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap_or(1);
    if vertex {
        let videos: Vec<Value> = (0..count)
            .map(|_| json!({"bytesBase64Encoded": "AAAAIGZ0eXBpc29t", "mimeType": "video/mp4"}))
            .collect();
        return json!({"name": name, "done": true, "response": {
            "@type": "type.googleapis.com/cloud.ai.large_models.vision.GenerateVideoResponse",
            "raiMediaFilteredCount": 0, "videos": videos}});
    }
    let samples: Vec<Value> = (0..count)
        .map(|i| json!({"video": {"uri": format!("https://generativelanguage.googleapis.com/v1beta/files/{id}-vid{i}:download?alt=media")}}))
        .collect();
    json!({"name": name, "done": true, "response": {
        "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse",
        "generateVideoResponse": {"generatedSamples": samples}}})
}

fn file_json(id: &str) -> Value {
    json!({"name": format!("files/{id}"), "displayName": "hello.txt", "mimeType": "text/plain", "sizeBytes": "11",
        "createTime": "2026-11-28T00:00:00.000000Z", "updateTime": "2026-11-28T00:00:00.000000Z",
        "expirationTime": "2026-11-30T00:00:00.000000Z", "sha256Hash": "ZmFrZQ==",
        "uri": format!("https://generativelanguage.googleapis.com/v1beta/files/{id}"), "state": "ACTIVE", "source": "UPLOADED"})
}

/// A resource id from a name the client chose (Google's ids: letters, digits, dashes).
fn slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

fn upload(
    fake: &FakeGoogle,
    query: &str,
    headers: &HeaderMap,
    req: &Value,
    body_len: usize,
) -> Response {
    let command = headers
        .get("x-goog-upload-command")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if command.contains("start") {
        // Named after the display name, so the same upload made directly and through the
        // gateway gets the same name, and different uploads different ones.
        let display = req
            .pointer("/file/display_name")
            .or_else(|| req.pointer("/file/displayName"))
            .and_then(Value::as_str)
            .unwrap_or("uploaded1");
        let id = format!("UPLOAD-{}", slug(display));
        fake.inner
            .lock()
            .unwrap()
            .uploads
            .push((id.clone(), display.to_owned()));
        let url = format!(
            "http://{}/upload/v1beta/files?upload_id={id}&upload_protocol=resumable",
            fake.addr
        );
        return Response::builder()
            .header("x-goog-upload-url", url)
            .header("x-goog-upload-status", "active")
            .header("content-type", "application/json; charset=UTF-8")
            .body(Body::from("{}"))
            .unwrap();
    }
    let display = {
        let inner = fake.inner.lock().unwrap();
        inner
            .uploads
            .iter()
            .find(|(id, _)| query.split('&').any(|kv| kv == format!("upload_id={id}")))
            .map(|(_, d)| d.clone())
    };
    let Some(display) = display else {
        return google_error(404, "NOT_FOUND", "unknown upload");
    };
    if display.starts_with("flaky") {
        // The first chunk of a `flaky…` upload fails once, as Google sometimes does.
        let mut inner = fake.inner.lock().unwrap();
        if !inner.flaked.contains(&display) {
            inner.flaked.push(display.clone());
            return google_error(503, "UNAVAILABLE", "The service is currently unavailable.");
        }
    }
    if !command.contains("finalize") {
        // A chunk before the last: Google acknowledges it, with no body.
        return Response::builder()
            .header("x-goog-upload-status", "active")
            .body(Body::empty())
            .unwrap();
    }
    let mut file = file_json(&slug(&display));
    file["displayName"] = json!(display);
    file["sizeBytes"] = json!(body_len.to_string());
    fake.remember(file.clone());
    Response::builder()
        .header("x-goog-upload-status", "final")
        .header("content-type", "application/json; charset=UTF-8")
        .body(Body::from(json!({"file": file}).to_string()))
        .unwrap()
}

/// `GET files`, `GET cachedContents`: everything created in the project, whoever created it.
/// `GET files`, `GET cachedContents`: everything created in the project, whoever created it,
/// oldest first, in pages of `pageSize` (default 50) with `nextPageToken`s, as Google pages.
fn listing(fake: &FakeGoogle, collection: &str, query: &str) -> Response {
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|p| p.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .map(str::to_owned)
    };
    let size: usize = param("pageSize")
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
        .max(1);
    let from: usize = match param("pageToken") {
        None => 0,
        Some(t) => match t.strip_prefix("offset-").and_then(|n| n.parse().ok()) {
            Some(n) => n,
            None => return google_error(400, "INVALID_ARGUMENT", "bad page token"),
        },
    };
    let all: Vec<Value> = {
        let inner = fake.inner.lock().unwrap();
        let prefix = format!("{collection}/");
        let mut seen = std::collections::HashSet::new();
        inner
            .created
            .iter()
            .filter(|v| v["name"].as_str().is_some_and(|n| n.starts_with(&prefix)))
            .filter(|v| seen.insert(v["name"].to_string()))
            .cloned()
            .collect()
    };
    // Pages after an entry named `fail-after-this` fail, as Google sometimes does.
    if all
        .iter()
        .position(|v| v["displayName"] == "fail-after-this")
        .is_some_and(|i| from > i)
    {
        return google_error(500, "INTERNAL", "An internal error has occurred.");
    }
    // Pages after an entry named `quota-after-this` are refused for quota, with a Retry-After.
    if all
        .iter()
        .position(|v| v["displayName"] == "quota-after-this")
        .is_some_and(|i| from > i)
    {
        let mut r = google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded.");
        r.headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("7"));
        return r;
    }
    let page: Vec<Value> = all.iter().skip(from).take(size).cloned().collect();
    let mut body = json!({ collection: page });
    if from + size < all.len() {
        body["nextPageToken"] = json!(format!("offset-{}", from + size));
    }
    json_response(body)
}

fn models(path: &str) -> Response {
    let entry = |name: &str| {
        json!({"name": format!("models/{name}"), "displayName": name, "inputTokenLimit": 1048576,
        "outputTokenLimit": 65536, "supportedGenerationMethods": ["generateContent", "countTokens"]})
    };
    if path.ends_with("/models") {
        return json_response(
            json!({"models": [entry("gemini-2.5-flash"), entry("gemini-2.5-pro")]}),
        );
    }
    json_response(entry(path.rsplit('/').next().unwrap_or("")))
}

/// Whether a header value holds something shaped like a gateway key (`tg_` and 40 letters or
/// digits). A bare `tg_` is not one: the SDK's upload names a random temporary file
/// (`tmpk3tg_9x.txt`), which made this check fail now and then.
fn contains_gateway_key(value: &str) -> bool {
    value.match_indices("tg_").any(|(i, _)| {
        let rest = &value.as_bytes()[i + 3..];
        rest.len() >= 40 && rest[..40].iter().all(u8::is_ascii_alphanumeric)
    })
}

#[test]
fn gateway_keys_are_recognised_by_their_shape() {
    let key = store::generate_key();
    assert!(contains_gateway_key(&key));
    assert!(contains_gateway_key(&format!("Bearer {key}")));
    assert!(!contains_gateway_key("tmpk3tg_9x.txt"));
    assert!(!contains_gateway_key("tg_short"));
}
