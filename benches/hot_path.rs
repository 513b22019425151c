//! Criterion benches of the per-request pieces: classify, identify, the admission check with
//! 10,000 orgs, the request meter and estimate, the response meter on each body shape (JSON,
//! SSE, Imagen, a Veo operation, embeddings), settlement and pricing, the usage event's
//! encodings (spool line, access-log line), what a gzip copy would cost the meter, and the two
//! local tokenizers. Run: `cargo bench --bench hot_path`; `make bench-compare` compares with the
//! committed baseline (benches/results/criterion-baseline).

// A bench may unwrap: a failure is a broken fixture.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::io::Write;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gateway::metering::{tokens, ResponseMeter};

fn json_answer() -> Vec<u8> {
    let text = "The sky appears blue because of Rayleigh scattering of sunlight by the molecules of the atmosphere. ".repeat(36);
    format!(
        "{{\"candidates\": [{{\"content\": {{\"parts\": [{{\"text\": \"{text}\"}}], \"role\": \"model\"}}, \"finishReason\": \"STOP\", \"index\": 0}}], \"usageMetadata\": {{\"promptTokenCount\": 7, \"candidatesTokenCount\": 800, \"totalTokenCount\": 852, \"promptTokensDetails\": [{{\"modality\": \"TEXT\", \"tokenCount\": 7}}], \"thoughtsTokenCount\": 45}}, \"modelVersion\": \"gemini-2.5-flash\", \"responseId\": \"qS77aMCqBu6mvr0PsJiykAw\"}}"
    )
    .into_bytes()
}

fn sse_stream(events: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..events {
        write!(out, "data: {{\"candidates\": [{{\"content\": {{\"parts\": [{{\"text\": \"chunk {i} of a long streamed answer about the sky and why it is blue.\"}}],\"role\": \"model\"}},\"index\": 0}}],\"usageMetadata\": {{\"promptTokenCount\": 4,\"candidatesTokenCount\": {},\"totalTokenCount\": {},\"promptTokensDetails\": [{{\"modality\": \"TEXT\",\"tokenCount\": 4}}],\"thoughtsTokenCount\": 42}},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"IZI2acSKMoWl0-kPmYj2yQc\"}}\r\n\r\n", 12 * (i + 1), 46 + 12 * (i + 1)).unwrap();
    }
    out
}

fn imagen_body(bytes: usize) -> Vec<u8> {
    let per_image = bytes / 4;
    let b64: String = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJ".repeat(per_image / 44 + 1)
        [..per_image]
        .to_owned();
    let preds: Vec<String> = (0..4)
        .map(|_| format!("{{\"bytesBase64Encoded\": \"{b64}\", \"mimeType\": \"image/png\"}}"))
        .collect();
    format!("{{\"predictions\": [{}]}}", preds.join(", ")).into_bytes()
}

const VEO_DONE: &str = r#"{"name": "models/veo-3.0-generate-001/operations/abc123", "done": true, "response": {"@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse", "generateVideoResponse": {"generatedSamples": [{"video": {"uri": "https://generativelanguage.googleapis.com/v1beta/files/abc:download?alt=media"}}, {"video": {"uri": "https://generativelanguage.googleapis.com/v1beta/files/def:download?alt=media"}}]}}}"#;

fn embeddings(n: usize) -> Vec<u8> {
    let values: Vec<String> = (0..768)
        .map(|i| format!("{:.6}", (i as f64 * 0.37).sin()))
        .collect();
    let one = format!("{{\"values\": [{}]}}", values.join(", "));
    format!("{{\"embeddings\": [{}]}}", vec![one; n].join(", ")).into_bytes()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Feeds a body in 16 KiB chunks, as it arrives from the network.
fn meter(body: &[u8]) -> ResponseMeter {
    let mut m = ResponseMeter::default();
    for c in body.chunks(16 * 1024) {
        m.feed(c);
    }
    m
}

fn scanners(c: &mut Criterion) {
    let bodies = [
        ("json_4k", json_answer()),
        ("sse_200_events", sse_stream(200)),
        ("imagen_2mb", imagen_body(2 * 1024 * 1024)),
        ("imagen_10mb", imagen_body(10 * 1024 * 1024)),
        ("veo_operation_done", VEO_DONE.as_bytes().to_vec()),
        ("embeddings_batch_100", embeddings(100)),
    ];
    let mut g = c.benchmark_group("meter");
    for (name, body) in &bodies {
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(BenchmarkId::new("scan", name), body, |b, body| {
            b.iter(|| black_box(meter(black_box(body))))
        });
    }
    g.finish();

    // The alternative to asking Google for `identity`: decompress a gzip copy for the meter.
    let mut g = c.benchmark_group("gzip_copy");
    for (name, body) in &bodies[..3] {
        let gz = gzip(body);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(BenchmarkId::new("inflate_and_scan", name), &gz, |b, gz| {
            b.iter(|| {
                let mut d = flate2::write::GzDecoder::new(Vec::with_capacity(64 * 1024));
                let mut m = ResponseMeter::default();
                for c in gz.chunks(16 * 1024) {
                    d.write_all(c).unwrap();
                    m.feed(d.get_ref());
                    d.get_mut().clear();
                }
                black_box(m)
            })
        });
        eprintln!(
            "gzip {name}: {} -> {} bytes ({:.1}x)",
            body.len(),
            gz.len(),
            body.len() as f64 / gz.len() as f64
        );
    }
    g.finish();
}

fn tokenizers(c: &mut Criterion) {
    tokens::warm_up();
    let _ = tokens::exact("load the exact tokenizer before measuring");
    let prose = "The sky appears blue because of Rayleigh scattering of sunlight by the molecules of the atmosphere. ".repeat(40);
    let mut g = c.benchmark_group("tokenize_4k_prose");
    g.throughput(Throughput::Bytes(prose.len() as u64));
    g.bench_function("gemini_exact", |b| {
        b.iter(|| tokens::exact(black_box(&prose)))
    });
    g.bench_function("tiktoken_o200k_estimate", |b| {
        b.iter(|| tokens::estimate(black_box(&prose)))
    });
    g.finish();
}

/// The admission check of one request with 10,000 orgs (and keys, and all four limits each)
/// loaded: classify the path, identify the key, check the limits and reserve (then give the
/// reservation back so the counters stay put).
fn admission(c: &mut Criterion) {
    use gateway::limits::counters::{Counters, SystemClock};
    use gateway::limits::Amounts;
    use gateway::snapshot::{Snapshot, SnapshotRows};
    use store::{KeyKind, LimitType};

    let mut rows = SnapshotRows::default();
    let key_of = |i: i64| format!("tg_bench{i:0>36}");
    for i in 1..=10_000i64 {
        rows.add_org(i, &format!("org-{i}"));
        for t in LimitType::ALL {
            rows.add_limit(i, *t, i64::MAX / 4, 80);
        }
    }
    // 100,000 keys, ten per org.
    for k in 1..=100_000i64 {
        rows.add_key(k, (k - 1) % 10_000 + 1, KeyKind::App, &key_of(k));
    }
    let before = rss_kib();
    let snap = Snapshot::from_rows(&rows);
    drop(rows);
    eprintln!(
        "live snapshot of 10,000 orgs, 100,000 keys and 40,000 limits: {} MiB resident",
        (rss_kib().saturating_sub(before)) / 1024
    );
    let counters = Counters::new(std::sync::Arc::new(SystemClock));
    let mut headers = http::HeaderMap::new();
    headers.insert("x-goog-api-key", key_of(50_000).parse().unwrap());
    c.bench_function("admission/classify_identify_check_reserve_10k_orgs", |b| {
        b.iter(|| {
            let route = gateway::route::classify(
                "POST",
                black_box("/v1beta/models/gemini-2.5-flash:generateContent"),
            )
            .unwrap();
            let id = gateway::identity::identify(&snap, black_box(&headers), None).unwrap();
            let limits = snap.limits(id.org_id);
            let r = counters
                .try_reserve(id.org_id, &limits, Amounts::new(1, 0, 1_000, 500))
                .unwrap();
            counters.settle(r, Amounts::default());
            black_box(route)
        })
    });
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The request side and the end of a request: classify, identify, meter the prompt, estimate
/// the reservation, settle and price the answer, and encode the event (spool line, access line).
fn request_pieces(c: &mut Criterion) {
    use gateway::access_log::{AccessFormat, AccessLine, AccessLog, AccessLogSettings, LogSink};
    use gateway::metering::pricing::PriceTable;
    use gateway::metering::RequestMeter;
    use gateway::snapshot::{Snapshot, SnapshotRows};
    use store::KeyKind;

    let path = "/v1beta/models/gemini-2.5-flash:generateContent";
    c.bench_function("request/classify", |b| {
        b.iter(|| gateway::route::classify("POST", black_box(path)).unwrap())
    });

    let mut rows = SnapshotRows::default();
    let key_of = |i: i64| format!("tg_bench{i:0>36}");
    for i in 1..=10_000i64 {
        rows.add_org(i, &format!("org-{i}"));
        rows.add_key(i, i, KeyKind::App, &key_of(i));
    }
    let snap = Snapshot::from_rows(&rows);
    let mut headers = http::HeaderMap::new();
    headers.insert("x-goog-api-key", key_of(5_000).parse().unwrap());
    c.bench_function("request/identify_10k_keys", |b| {
        b.iter(|| gateway::identity::identify(&snap, black_box(&headers), None).unwrap())
    });

    let prompt = br#"{"contents": [{"role": "user", "parts": [{"text": "Why is the sky blue? Answer in three sentences, for a ten-year-old, and mention Rayleigh scattering by name."}]}], "generationConfig": {"maxOutputTokens": 512, "temperature": 0.2}}"#;
    let prices = PriceTable::load(std::path::Path::new("config/pricing.toml")).unwrap();
    let route = gateway::route::classify("POST", path).unwrap();
    c.bench_function("request/meter_and_estimate_prompt", |b| {
        b.iter(|| {
            let mut m = RequestMeter::default();
            m.feed(black_box(prompt));
            gateway::admission::estimate(&route, &m, true, prompt.len(), 1024, &prices)
        })
    });

    let answer = json_answer();
    let mut req = RequestMeter::default();
    req.feed(prompt);
    let resp = meter(&answer);
    c.bench_function("request/settle_and_price", |b| {
        b.iter(|| {
            gateway::metering::settle(&route, true, black_box(&req), black_box(&resp), &prices)
        })
    });

    let event = store::UsageEvent {
        request_id: "0123456789abcdef0123456789abcdef".into(),
        client_request_id: None,
        occurred_at: chrono::Utc::now(),
        org_id: Some(42),
        key_id: Some(7),
        user_ref: None,
        tool: None,
        provider: "gemini".into(),
        model: "gemini-2.5-flash".into(),
        operation: "generateContent".into(),
        status: 200,
        metered: true,
        streamed: false,
        input_tokens: 7,
        output_tokens: 800,
        thinking_tokens: 45,
        cached_tokens: 0,
        tool_prompt_tokens: 0,
        total_tokens: 852,
        input_audio_tokens: 0,
        output_image_tokens: 0,
        images: 0,
        videos: 0,
        video_seconds: 0,
        cost_micros: 2_021,
        estimated: false,
        priced: true,
        upstream_latency_ms: Some(812),
        total_latency_ms: 815,
    };
    // What the journal writes per request (and the spool per event): the event as a JSON line.
    c.bench_function("event/journal_line", |b| {
        let mut line = Vec::with_capacity(1024);
        b.iter(|| {
            line.clear();
            gateway::event_line::write(&mut line, black_box(&event));
            black_box(&line);
        })
    });
    {
        // The per-request cost of crash safety: the event serialised and written (pwrite) to
        // the journal, in the page cache; finished segments are deleted as the ledger would.
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("events.jsonl");
        let (journal, _) =
            gateway::journal::Journal::open(&spool, |t| dir.path().join(format!("r-{t}"))).unwrap();
        let mut sealed = gateway::journal::Sealed::default();
        let mut n = 0u32;
        c.bench_function("event/journal_append", |b| {
            b.iter(|| {
                let (seg, written) = journal.append(black_box(&event));
                written.unwrap();
                seg.done();
                n += 1;
                if n % 4096 == 0 {
                    if let Some(old) = journal.rotate_if_full().unwrap() {
                        sealed.push(old);
                    }
                    sealed.delete_finished();
                    sealed.delete_finished();
                }
            })
        });
    }
    for (name, format) in [
        ("access_line_text", AccessFormat::Text),
        ("access_line_json", AccessFormat::Json),
    ] {
        let log = AccessLog::new(AccessLogSettings {
            format: Some(format),
            sink: LogSink::new(|b| {
                black_box(b);
            }),
        });
        let mut n = 0u32;
        c.bench_function(&format!("event/{name}"), |b| {
            b.iter(|| {
                log.record(black_box(&AccessLine {
                    request_id: &event.request_id,
                    client_request_id: "",
                    org: "acme",
                    key_prefix: "tg_abcdefg",
                    provider: "gemini",
                    model: "gemini-2.5-flash",
                    operation: "generateContent",
                    status: 200,
                    refused: "",
                    upstream_ms: Some(812),
                    total_ms: 815,
                    input_tokens: 7,
                    output_tokens: 800,
                    thinking_tokens: 45,
                    cost_micros: 2_021,
                }));
                n += 1;
                if n % 1024 == 0 {
                    log.flush();
                }
            })
        });
    }
}

criterion_group!(benches, scanners, tokenizers, admission, request_pieces);
criterion_main!(benches);
