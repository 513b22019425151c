//! Criterion benches of the per-request pieces: the metering scanners on realistic bodies (a
//! 4 KB JSON answer, a 200-event SSE stream, a 10 MB Imagen body), what a gzip copy would cost
//! the meter, and the two local tokenizers. Run: `cargo bench --bench hot_path`.

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

criterion_group!(benches, scanners, tokenizers, admission);
criterion_main!(benches);
