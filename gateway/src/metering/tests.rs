//! Unit tests of settling metered requests.

use super::*;
use crate::route::{classify, Provider};

fn prices() -> PriceTable {
    PriceTable::parse(pricing::DEFAULT_PRICING).unwrap()
}

fn run(method: &str, path: &str, request: &str, response: &[&[u8]], success: bool) -> Settled {
    let route = classify(method, path).unwrap();
    let mut rq = RequestMeter::default();
    rq.feed(request.as_bytes());
    let mut rs = ResponseMeter::default();
    for c in response {
        rs.feed(c);
    }
    settle(&route, success, &rq, &rs, &prices())
}

#[test]
fn sse_uses_the_last_complete_usage() {
    let body = b"data: {\"usageMetadata\": {\"promptTokenCount\": 4, \"candidatesTokenCount\": 10, \"thoughtsTokenCount\": 3, \"totalTokenCount\": 17}}\r\n\r\ndata: {\"usageMetadata\": {\"promptTokenCount\": 4, \"candidatesTokenCount\": 20, \"thoughtsTokenCount\": 3, \"totalTokenCount\": 27}}\r\n\r\n";
    let s = run(
        "POST",
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        "{}",
        &[body],
        true,
    );
    assert_eq!(
        (
            s.metered.tokens.input,
            s.metered.tokens.output,
            s.metered.tokens.thinking
        ),
        (4, 20, 3)
    );
    assert!(!s.estimated && s.priced);
    assert_eq!(
        s.cost_micros,
        (4 * 300_000 + 23 * 2_500_000 + 500_000) / 1_000_000
    );
}

#[test]
fn vertex_streams_with_usage_only_at_the_end() {
    let body: &[&[u8]] = &[
        b"data: {\"usageMetadata\": {\"trafficType\": \"ON_DEMAND\"}}\r\n\r\n",
        b"data: {\"usageMetadata\": {\"promptTokenCount\": 6, \"candidatesTokenCount\": 156, \"thoughtsTokenCount\": 41, \"totalTokenCount\": 203}}\r\n\r\n",
    ];
    let s = run(
        "POST",
        "/v1beta1/publishers/google/models/gemini-2.5-flash:streamGenerateContent",
        "{}",
        body,
        true,
    );
    assert_eq!(s.metered.tokens.total, 203);
}

#[test]
fn a_stream_without_usage_is_estimated() {
    let req = r#"{"contents": [{"parts": [{"text": "Tell me about the history of the Roman empire in detail"}]}]}"#;
    let body: &[&[u8]] = &[b"data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"The Roman Empire began in 27 BC when Augustus\"}]}}], \"usageMetadata\": {\"trafficType\": \"ON_DEMAND\"}}\r\n\r\n"];
    let s = run(
        "POST",
        "/v1/projects/p/locations/l/publishers/google/models/gemini-2.5-pro:streamGenerateContent",
        req,
        body,
        true,
    );
    assert!(s.estimated);
    assert!(
        s.metered.tokens.input >= 8 && s.metered.tokens.input <= 16,
        "{:?}",
        s.metered.tokens
    );
    assert!(
        s.metered.tokens.output >= 8 && s.metered.tokens.output <= 16,
        "{:?}",
        s.metered.tokens
    );
    assert!(s.cost_micros > 0);
}

#[test]
fn imagen_counts_returned_images() {
    let img = format!(
        "{{\"predictions\": [{0}, {0}, {0}]}}",
        "{\"bytesBase64Encoded\": \"iVBORw0KGgo=\", \"mimeType\": \"image/png\"}"
    );
    let s = run(
        "POST",
        "/v1beta/models/imagen-4.0-generate-001:predict",
        r#"{"parameters": {"sampleCount": 3}}"#,
        &[img.as_bytes()],
        true,
    );
    assert_eq!((s.images, s.cost_micros), (3, 120_000));
}

#[test]
fn veo_is_charged_from_the_request_when_accepted() {
    let req = r#"{"instances": [{"prompt": "a cat"}], "parameters": {"sampleCount": 2, "durationSeconds": 8, "resolution": "1080p"}}"#;
    let s = run(
        "POST",
        "/v1beta/models/veo-3.1-fast-generate-preview:predictLongRunning",
        req,
        &[br#"{"name": "models/x/operations/1"}"#],
        true,
    );
    assert_eq!((s.videos, s.metered.video_seconds), (2, 16));
    assert_eq!(s.cost_micros, 16 * 120_000, "1080p fast price");
    let refused = run(
        "POST",
        "/v1beta/models/veo-3.1-fast-generate-preview:predictLongRunning",
        req,
        &[b"{}"],
        false,
    );
    assert_eq!(
        (refused.videos, refused.cost_micros),
        (0, 0),
        "a failed submit is not charged"
    );
}

#[test]
fn developer_api_embeddings_are_counted_exactly() {
    let req = r#"{"requests": [{"content": {"parts": [{"text": "What is your name?"}]}}, {"content": {"parts": [{"text": "What is your name?"}]}}]}"#;
    let s = run(
        "POST",
        "/v1beta/models/gemini-embedding-001:batchEmbedContents",
        req,
        &[br#"{"embeddings": [{"values": [0.1]}, {"values": [0.2]}]}"#],
        true,
    );
    assert_eq!(
        s.metered.tokens.input, 10,
        "5 tokens each, counted by the Gemini tokenizer"
    );
    assert!(!s.estimated);
}

#[test]
fn count_tokens_and_failures_are_never_billed() {
    let s = run(
        "POST",
        "/v1beta/models/gemini-2.5-flash:countTokens",
        "{}",
        &[br#"{"totalTokens": 10}"#],
        true,
    );
    assert_eq!((s.metered.tokens.total, s.cost_micros), (0, 0));
    let s = run(
        "POST",
        "/v1beta/models/gemini-2.5-flash:generateContent",
        "{}",
        &[br#"{"error": {"code": 500}}"#],
        false,
    );
    assert_eq!(s.cost_micros, 0);
}

#[test]
fn unknown_models_are_flagged() {
    let body = br#"{"usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 10, "totalTokenCount": 20}}"#;
    let s = run(
        "POST",
        "/v1beta/models/gemini-99-flash:generateContent",
        "{}",
        &[body],
        true,
    );
    assert!(!s.priced);
    assert!(s.cost_micros > 0, "never free");
    let _ = Provider::Gemini;
}

#[test]
fn a_named_cached_content_is_seen_wherever_the_body_is_cut() {
    let names = |body: &str| {
        // Every split into two chunks gives the same answer as the whole body.
        let whole = {
            let mut m = RequestMeter::default();
            m.feed(body.as_bytes());
            m.names_cached_content
        };
        for cut in 0..=body.len() {
            let mut m = RequestMeter::default();
            m.feed(&body.as_bytes()[..cut]);
            m.feed(&body.as_bytes()[cut..]);
            assert_eq!(m.names_cached_content, whole, "{body} cut at {cut}");
        }
        whole
    };
    assert!(names(
        r#"{"contents": [{"parts": [{"text": "hi"}]}], "cachedContent": "cachedContents/abc123"}"#
    ));
    assert!(names(
        r#"{"generateContentRequest": {"model": "models/m", "cachedContent": "cachedContents/x", "contents": []}}"#
    ));
    assert!(names(
        r#"{"cachedContent": "projects/p/locations/l/cachedContents/9", "contents": []}"#
    ));
    // Spelled as Google's parser also reads it: the proto field name, escaped keys and values.
    assert!(names(
        r#"{"cached_content": "cachedContents/abc", "contents": []}"#
    ));
    assert!(names(r#"{"cached\u0043ontent": "cachedContents/abc"}"#));
    assert!(names(r#"{"cachedContent": "cachedContents\/abc"}"#));
    assert!(names(r#"{"cachedContent": "cachedContents\u002fabc"}"#));
    assert!(names(
        r#"{"\u0063\u0061\u0063\u0068\u0065\u0064\u0043\u006f\u006e\u0074\u0065\u006e\u0074": "cachedContents/a"}"#
    ));
    // Not a reference: no cachedContent, one in a prompt's text, a schema property of that name.
    assert!(!names(r#"{"contents": [{"parts": [{"text": "hi"}]}]}"#));
    assert!(!names(
        r#"{"contents": [{"parts": [{"text": "\"cachedContent\": \"cachedContents/abc\""}]}]}"#
    ));
    assert!(!names(
        r#"{"generationConfig": {"responseSchema": {"type": "OBJECT", "properties": {"cachedContent": {"type": "STRING"}}}}}"#
    ));
}

#[test]
fn response_text_is_kept_only_until_usage_arrives() {
    let event = |text: &str, usage: bool| {
        let u = if usage {
            r#", "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 5, "totalTokenCount": 8}"#
        } else {
            r#", "usageMetadata": {"trafficType": "ON_DEMAND"}"#
        };
        format!("data: {{\"candidates\": [{{\"content\": {{\"parts\": [{{\"text\": \"{text}\"}}]}}}}]{u}}}\r\n\r\n")
    };
    // Vertex: counts only at the end, so the text is kept for an estimate until then.
    let mut m = ResponseMeter::default();
    m.feed(event("Once upon", false).as_bytes());
    m.feed(event(" a time", false).as_bytes());
    assert_eq!(m.text(), "Once upon a time");
    // Usage arrived: the text is let go, and later text is not kept (its length still counts).
    m.feed(event(" there", true).as_bytes());
    m.feed(event(" was a king", false).as_bytes());
    assert_eq!(m.text(), "");
    assert_eq!(m.text_len, "Once upon a time there was a king".len());
    assert_eq!(m.usage().map(|t| t.total), Some(8));
}
