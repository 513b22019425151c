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

criterion_group!(benches, scanners, tokenizers);
criterion_main!(benches);
