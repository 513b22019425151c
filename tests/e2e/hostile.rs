//! Hostile and broken clients: slow or oversized heads, too many connections, pipelined and
//! oversized requests, keys hidden in encodings or in two places, unknown methods. Each is
//! answered in Google's error format (or cut, when nothing can be answered), nothing it should
//! not see reaches the upstream, and other clients keep being served.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{client, eventually, Opts, TestEnv};

const GEN: &str = "/v1beta/models/gemini-2.5-flash:generateContent";

fn addr(env: &TestEnv) -> String {
    env.gateway_url.trim_start_matches("http://").to_owned()
}

/// Writes raw bytes and reads until the server closes (or `within` passes); what came back.
fn raw_exchange(env: &TestEnv, bytes: &[u8], within: Duration) -> String {
    let mut s = TcpStream::connect(addr(env)).unwrap();
    s.set_read_timeout(Some(within)).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn request(key: &str, path: &str, extra: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\nx-goog-api-key: {key}\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn prompt() -> String {
    json!({"contents": [{"parts": [{"text": "hello"}]}]}).to_string()
}

/// The Google-format error of a raw answer: (status line code, error.status).
fn google_error_of(answer: &str) -> (u16, String) {
    let code: u16 = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    (code, v["error"]["status"].as_str().unwrap_or("").to_owned())
}

async fn ok_request(env: &TestEnv, key: &str) -> Duration {
    let t = Instant::now();
    let r = client()
        .post(format!("{}{GEN}", env.gateway_url))
        .header("x-goog-api-key", key)
        .body(prompt())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    t.elapsed()
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_heads_are_cut_and_other_clients_keep_their_latency() {
    let env = TestEnv::start_with(Opts {
        gateway_toml: "header_timeout_ms = 1000\nmax_connections_per_address = 0\n".into(),
        ..Opts::default()
    })
    .await;
    let (_, key) = env.org_with_key("acme").await;
    let mut before = Vec::new();
    for _ in 0..50 {
        before.push(ok_request(&env, &key).await);
    }
    // 300 slowloris connections send one header byte every 200 ms, for ever.
    let a = addr(&env);
    let started = Instant::now();
    let slow: Vec<_> = (0..300)
        .map(|_| {
            let a = a.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(a).unwrap();
                let head = b"POST /v1beta/models/m:generateContent HTTP/1.1\r\nhost: x\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
                for b in head.iter().cycle() {
                    if s.write_all(&[*b]).is_err() {
                        return Some(Instant::now());
                    }
                    std::thread::sleep(Duration::from_millis(200));
                    if Instant::now().duration_since(started) > Duration::from_secs(15) {
                        return None;
                    }
                }
                None
            })
        })
        .collect();
    let mut during = Vec::new();
    while started.elapsed() < Duration::from_millis(1500) {
        during.push(ok_request(&env, &key).await);
    }
    let cut: Vec<Option<Instant>> = slow.into_iter().map(|t| t.join().unwrap()).collect();
    let cut_in_time = cut
        .iter()
        .filter(|c| c.is_some_and(|at| at.duration_since(started) < Duration::from_secs(5)))
        .count();
    println!(
        "slowloris: {cut_in_time} of 300 cut within 5 s; other clients' p99 {:?} before, {:?} during ({} requests)",
        p99(before.clone()),
        p99(during.clone()),
        during.len()
    );
    assert_eq!(
        cut_in_time, 300,
        "every connection that dribbles its head is cut (header_timeout_ms = 1000)"
    );
    let (text, _) = crate::observability::scrape(&env.metrics_url).await;
    assert!(
        text.contains("tollgate_client_connections_refused_total{reason=\"header_timeout\"} 3"),
        "the cuts are counted: {}",
        text.lines()
            .filter(|l| l.contains("connections_refused"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Still healthy.
    ok_request(&env, &key).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_address_may_hold_only_so_many_connections_and_idle_ones_go() {
    let env = TestEnv::start_with(Opts {
        gateway_toml: "header_timeout_ms = 2000\nmax_connections_per_address = 1020\n".into(),
        ..Opts::default()
    })
    .await;
    let (_, key) = env.org_with_key("acme").await;
    let rss_before = crate::metering::rss_kib();
    // 1,000 idle connections: held until the head deadline, the gateway serving others meanwhile.
    let idle: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(addr(&env)).unwrap())
        .collect();
    let mut during = Vec::new();
    for _ in 0..50 {
        during.push(ok_request(&env, &key).await);
    }
    let rss_during = crate::metering::rss_kib();
    // Past the cap (1,000 idle + at most 20 more), a connection is closed at once: its read
    // ends (EOF or reset) within 300 ms, while one under the cap would wait for the deadline.
    let extra: Vec<TcpStream> = (0..150)
        .map(|_| TcpStream::connect(addr(&env)).unwrap())
        .collect();
    let mut closed_at_once = 0;
    for mut s in extra {
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut b = [0u8; 1];
        let closed = match s.read(&mut b) {
            Ok(0) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        };
        closed_at_once += usize::from(closed);
    }
    // The idle ones are cut by the head deadline.
    let mut cut = 0;
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 1];
        if matches!(s.read(&mut b), Ok(0)) {
            cut += 1;
        }
    }
    println!(
        "1000 idle connections: {closed_at_once} of 150 past the cap refused, {cut} idle cut by the head deadline; p99 of others {:?}; RSS {rss_before} -> {rss_during} KiB",
        p99(during)
    );
    assert!(
        closed_at_once >= 130,
        "connections past the cap are refused at once: {closed_at_once} of 150"
    );
    assert_eq!(
        cut, 1000,
        "idle connections never sending a request are closed"
    );
    let (text, _) = crate::observability::scrape(&env.metrics_url).await;
    let counted: usize = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("tollgate_client_connections_refused_total{reason=\"per_address_cap\"} ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    // Connections under the cap may meet their head deadline while this loop reads: closed,
    // but not refused by the cap.
    assert!(
        (130..=closed_at_once).contains(&counted),
        "the cap's refusals are counted: {counted} of {closed_at_once} closed"
    );
    ok_request(&env, &key).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_and_bodies_are_refused_in_googles_format_before_forwarding() {
    let env = TestEnv::start_with(Opts {
        gateway_toml: "max_body_bytes = 100000\n".into(),
        ..Opts::default()
    })
    .await;
    let (_, key) = env.org_with_key("acme").await;
    let calls = || env.fake.calls().len();
    let before = calls();

    let big = "a".repeat(40_000);
    let answer = raw_exchange(
        &env,
        request(&key, GEN, &format!("x-big: {big}\r\n"), &prompt()).as_bytes(),
        Duration::from_secs(5),
    );
    assert_eq!(
        google_error_of(&answer),
        (431, "INVALID_ARGUMENT".into()),
        "{answer:.300}"
    );
    let many: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let answer = raw_exchange(
        &env,
        request(&key, GEN, &many, &prompt()).as_bytes(),
        Duration::from_secs(5),
    );
    assert_eq!(google_error_of(&answer).0, 431, "{answer:.300}");

    // A declared body too large: refused before it is read.
    let head = format!(
        "POST {GEN} HTTP/1.1\r\nhost: x\r\nx-goog-api-key: {key}\r\ncontent-length: 5000000\r\n\r\n"
    );
    let answer = raw_exchange(&env, head.as_bytes(), Duration::from_secs(5));
    assert_eq!(
        google_error_of(&answer),
        (413, "INVALID_ARGUMENT".into()),
        "{answer:.300}"
    );
    // A chunked one that grows past the bound is cut and answered 413.
    let mut chunked = format!(
        "POST {GEN} HTTP/1.1\r\nhost: x\r\nx-goog-api-key: {key}\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..30 {
        chunked.extend_from_slice(format!("{:x}\r\n{}\r\n", 8000, "b".repeat(8000)).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let answer = raw_exchange(&env, &chunked, Duration::from_secs(5));
    assert_eq!(google_error_of(&answer).0, 413, "{answer:.300}");
    assert_eq!(
        env.fake
            .calls()
            .iter()
            .skip(before)
            .filter(|c| c.method == "POST"
                && c.path.contains("generateContent")
                && c.headers.get("transfer-encoding").is_none())
            .count(),
        0,
        "no oversized request with a declared length reached the upstream"
    );
    ok_request(&env, &key).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_all_answered_in_order() {
    let env = TestEnv::start().await;
    let (org, key) = env.org_with_key("acme").await;
    let body = prompt();
    let three: String = (1..=3)
        .map(|i| request(&key, GEN, &format!("x-request-id: pipe-{i}\r\n"), &body))
        .collect();
    let mut s = TcpStream::connect(addr(&env)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(three.as_bytes()).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 65536];
    while String::from_utf8_lossy(&out)
        .matches("HTTP/1.1 200")
        .count()
        < 3
        && Instant::now() < deadline
    {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&out);
    let ids: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("x-request-id: "))
        .collect();
    assert_eq!(
        ids,
        ["pipe-1", "pipe-2", "pipe-3"],
        "three answers, in order: {text:.2000}"
    );
    eventually(Duration::from_secs(5), "three events", || async {
        env.store.count_events(org).await.unwrap() == 3
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_in_encodings_or_in_two_places_never_reach_google_nor_get_guessed() {
    let env = TestEnv::start().await;
    let (org, key) = env.org_with_key("acme").await;
    let (_, other) = env.org_with_key("globex").await;
    let http = client();
    for name in ["%6Bey", "k%65y", "%4B%45%59", "KEY"] {
        let r = http
            .post(format!("{}{GEN}?{name}={key}", env.gateway_url))
            .body(prompt())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{name}");
    }
    env.assert_clean_upstream();
    let conflicts: Vec<reqwest::RequestBuilder> = vec![
        http.post(format!("{}{GEN}?key={other}", env.gateway_url))
            .header("x-goog-api-key", &key),
        http.post(format!("{}{GEN}", env.gateway_url))
            .header("x-goog-api-key", &key)
            .header("authorization", format!("Bearer {other}")),
        http.post(format!("{}{GEN}?key={key}&%6Bey={other}", env.gateway_url)),
    ];
    for c in conflicts {
        let r = c.body(prompt()).send().await.unwrap();
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["status"], "INVALID_ARGUMENT");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("more than one API key"));
    }
    let two = raw_exchange(
        &env,
        request(
            &key,
            GEN,
            &format!("x-goog-api-key: {other}\r\n"),
            &prompt(),
        )
        .as_bytes(),
        Duration::from_secs(5),
    );
    assert_eq!(
        google_error_of(&two).0,
        400,
        "two x-goog-api-key headers: {two:.300}"
    );

    // Unknown methods on a model are refused, not forwarded unmetered.
    for path in [
        "/v1beta/models/gemini-2.5-flash:generateContent:generateContent",
        "/v1beta/models/gemini-2.5-flash:somethingNew",
    ] {
        let r = http
            .post(format!("{}{path}", env.gateway_url))
            .header("x-goog-api-key", &key)
            .body(prompt())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path}");
    }
    // An invalid x-request-id is not forwarded: the upstream sees the id the client gets.
    let r = http
        .post(format!("{}{GEN}", env.gateway_url))
        .header("x-goog-api-key", &key)
        .header("x-request-id", "bad id with spaces")
        .body(prompt())
        .send()
        .await
        .unwrap();
    let reply_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(reply_id, "bad id with spaces");
    let last = env.fake.calls().pop().unwrap();
    assert_eq!(last.headers["x-request-id"].to_str().unwrap(), reply_id);
    env.assert_clean_upstream();
    let _ = org;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_method_allowed_by_the_operator_is_metered_by_its_usage() {
    let env = TestEnv::start_with(Opts {
        gateway_toml: "allow_unknown_operations = true\n".into(),
        ..Opts::default()
    })
    .await;
    let (org, key) = env.org_with_key("acme").await;
    // The fake answers an unknown method with 404; a doubled generateContent with its usage.
    let r = client()
        .post(format!(
            "{}/v1beta/models/gemini-2.5-flash:generateContent:generateContent",
            env.gateway_url
        ))
        .header("x-goog-api-key", &key)
        .body(prompt())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "forwarded by the operator's choice");
    let body: Value = r.json().await.unwrap();
    assert!(body.get("usageMetadata").is_some());
    eventually(Duration::from_secs(5), "the event", || async {
        env.store.count_events(org).await.unwrap() == 1
    })
    .await;
    let e = &env.store.recent_events(org, 1).await.unwrap()[0];
    assert_eq!(e.operation, "other");
    assert!(
        e.metered && e.total_tokens > 0 && e.cost_micros > 0,
        "metered by the usage it reported: {e:?}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reference_sends_nothing_upstream() {
    let env = TestEnv::start().await;
    let (a, _) = env.org_with_key("acme").await;
    let (_, key_b) = env.org_with_key("globex").await;
    env.own(a, &["cachedContents/theirs"]).await;
    let before = env.fake.calls().len();
    let r = client()
        .post(format!("{}{GEN}", env.gateway_url))
        .header("x-goog-api-key", &key_b)
        .json(&json!({"cachedContent": "cachedContents/theirs",
            "contents": [{"parts": [{"text": "hello"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        env.fake.calls().len(),
        before,
        "not even the request line went upstream"
    );
    env.stop().await;
}

/// Requests pingora refuses before any hook runs are answered in Google's format, counted and
/// recorded, and never forwarded; a body with broken chunk framing is refused as a bad body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_http_is_answered_in_googles_format_and_never_forwarded() {
    let env = TestEnv::start().await;
    let (_, key) = env.org_with_key("acme").await;
    let before = env.fake.calls().len();
    let many: String = (0..300).map(|i| format!("x-h{i}: v\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("300 headers", request(&key, GEN, &many, &prompt()).into_bytes(), 400),
        ("a control byte in a header name", request(&key, GEN, "x-b\x01d: v\r\n", &prompt()).into_bytes(), 400),
        (
            "two different content-lengths",
            format!("POST {GEN} HTTP/1.1\r\nhost: x\r\nx-goog-api-key: {key}\r\ncontent-length: 5\r\ncontent-length: 7\r\n\r\nhello").into_bytes(),
            400,
        ),
        ("CONNECT", b"CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n".to_vec(), 405),
        ("an HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), 400),
        ("a bare CR in a header value", request(&key, GEN, "x-h: a\rb\r\n", &prompt()).into_bytes(), 400),
        ("a garbage request line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 hello\r\n\r\n".to_vec(), 400),
    ];
    for (what, bytes, status) in &cases {
        let answer = raw_exchange(&env, bytes, Duration::from_secs(5));
        let (code, google) = google_error_of(&answer);
        assert_eq!(
            (code, google.as_str()),
            (*status, "INVALID_ARGUMENT"),
            "{what}: {answer:.400}"
        );
        assert!(
            !answer.to_lowercase().contains("server: pingora"),
            "{what}: {answer:.400}"
        );
    }
    assert_eq!(
        env.fake.calls().len(),
        before,
        "nothing malformed reached the upstream"
    );
    let (text, scrape) = crate::observability::scrape(&env.metrics_url).await;
    let counted: f64 = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "tollgate_malformed_requests_total")
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) => v,
            _ => 0.0,
        })
        .sum();
    assert_eq!(
        counted as usize,
        cases.len(),
        "{}",
        text.lines()
            .filter(|l| l.contains("malformed"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // A chunked body with a broken chunk size: refused 400 in Google's format.
    let chunked = format!(
        "POST {GEN} HTTP/1.1\r\nhost: x\r\nx-goog-api-key: {key}\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
    );
    let answer = raw_exchange(&env, chunked.as_bytes(), Duration::from_secs(5));
    assert_eq!(
        google_error_of(&answer),
        (400, "INVALID_ARGUMENT".into()),
        "{answer:.400}"
    );
    assert_eq!(
        env.fake.calls().len(),
        before,
        "a chunked body is judged before anything is forwarded"
    );
    // A well-framed chunked body is read first, then forwarded whole.
    let good = prompt();
    let chunked = format!(
        "POST {GEN} HTTP/1.1\r\nhost: x\r\nx-goog-api-key: {key}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{good}\r\n0\r\n\r\n",
        good.len()
    );
    let answer = raw_exchange(&env, chunked.as_bytes(), Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.400}");
    env.stop().await;
}

/// The gateway key and the provider key never leave except to where they belong: not in an
/// answer (served, refused or failed), not in the metrics, not in the journal, spool, claims or
/// database files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_appear_in_no_answer_metric_or_file() {
    let env = TestEnv::start().await;
    let (_, key) = env.org_with_key("acme").await;
    let (_, other) = env.org_with_key("globex").await;
    let http = client();
    let mut seen = String::new();
    let gen = format!("{}{GEN}", env.gateway_url);
    let requests = vec![
        http.post(&gen).header("x-goog-api-key", &key),
        http.post(format!("{gen}?key={key}&alt=json")),
        http.post(&gen)
            .header("authorization", format!("Bearer {key}")),
        http.post(format!("{gen}?%6Bey={key}")),
        http.post(&gen)
            .header("x-goog-api-key", &key)
            .header("authorization", format!("Bearer {other}")),
        http.post(&gen).header("x-goog-api-key", format!("{key}x")),
        http.post(format!(
            "{}/v1beta/models/error-500:generateContent",
            env.gateway_url
        ))
        .header("x-goog-api-key", &key),
        http.post(format!(
            "{}/v1beta/models/gemini-2.5-flash:somethingNew?key={key}",
            env.gateway_url
        )),
    ];
    for r in requests {
        let r = r.body(prompt()).send().await.unwrap();
        seen.push_str(&format!("{:?}", r.headers()));
        seen.push_str(&r.text().await.unwrap());
    }
    let (metrics, _) = crate::observability::scrape(&env.metrics_url).await;
    seen.push_str(&metrics);
    seen.push_str(&crate::harness::get_text(&format!("{}/metrics", env.admin_url)).await);
    // Everything the gateway wrote to disk: journal segments, spool, claims, the database.
    let mut files = 0;
    let mut stack = vec![env.dir.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                files += 1;
                seen.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }
    assert!(files >= 2, "the journal and the database were scanned");
    for (what, secret) in [
        ("gateway key", key.as_str()),
        ("other key", other.as_str()),
        ("provider key", crate::fake_google::PROVIDER_KEY),
    ] {
        assert!(
            !seen.contains(secret),
            "the {what} leaked into an answer, a metric or a file"
        );
    }
    env.assert_clean_upstream();
    env.stop().await;
}

/// A kept-alive client whose requests are answered without the gateway reading more of it
/// (refusals) is not cut by the head deadline of an earlier request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_client_is_timed_per_request_not_per_connection() {
    let env = TestEnv::start_with(Opts {
        gateway_toml: "header_timeout_ms = 1000\n".into(),
        ..Opts::default()
    })
    .await;
    let mut s = TcpStream::connect(addr(&env)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut answered = 0;
    // Refused (no key) every 300 ms for 2.5 s, on one connection: past two head deadlines.
    while started.elapsed() < Duration::from_millis(2500) {
        let req = format!(
            "GET /v1beta/models HTTP/1.1\r\nhost: x\r\nx-request-id: ka-{answered}\r\n\r\n"
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("\"UNAUTHENTICATED\"") {
            let n = s.read(&mut buf).unwrap();
            assert!(
                n > 0,
                "the connection was closed after {answered} answers, {:?} in",
                started.elapsed()
            );
            got.extend_from_slice(&buf[..n]);
        }
        answered += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(answered >= 8, "{answered}");
    env.stop().await;
}
