//! Property-based fuzzing (proptest, on stable) of what reads untrusted bytes on the request
//! path: request classification, the key's places and encodings, the request body scanner and
//! the response usage parser. Each runs a bounded number of cases (`TOLLGATE_FUZZ_CASES`,
//! default 1500) in the test command; a failing case is saved under
//! `tests/proptest-regressions/` and replayed first on every later run.

// Tests may unwrap and panic: a failure is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gateway::identity::{is_key_param, presented_key};
use gateway::metering::{RequestMeter, ResponseMeter};
use gateway::route::classify;
use gateway::upstream::strip_key_param;
use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

fn config() -> ProptestConfig {
    let cases = std::env::var("TOLLGATE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

/// Path-ish strings built from the segments Google's paths are made of, and noise.
fn paths() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("v1beta".to_owned()),
            Just("v1".to_owned()),
            Just("v1beta1".to_owned()),
            Just("upload".to_owned()),
            Just("projects".to_owned()),
            Just("locations".to_owned()),
            Just("publishers".to_owned()),
            Just("google".to_owned()),
            Just("models".to_owned()),
            Just("files".to_owned()),
            Just("cachedContents".to_owned()),
            Just("operations".to_owned()),
            Just("gemini-2.5-flash:generateContent".to_owned()),
            Just("m:streamGenerateContent:generateContent".to_owned()),
            Just("%2F..".to_owned()),
            Just("".to_owned()),
            "[a-zA-Z0-9:%._-]{0,12}",
            "\\PC{0,6}",
        ],
        0..30,
    )
    .prop_map(|segs| format!("/{}", segs.join("/")))
}

/// Query strings mixing key parameters (in many encodings) with others.
fn queries() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("key=tg_aaaa".to_owned()),
            Just("%6Bey=tg_bbbb".to_owned()),
            Just("k%65y=tg_cccc".to_owned()),
            Just("KEY=tg_dddd".to_owned()),
            Just("key".to_owned()),
            Just("alt=sse".to_owned()),
            Just("%".to_owned()),
            Just("%%6B".to_owned()),
            Just("ke%79=".to_owned()),
            "[a-zA-Z%0-9=+_.-]{0,10}",
        ],
        0..8,
    )
    .prop_map(|ps| ps.join("&"))
}

/// JSON-ish request and response bodies built from the keys the meters watch, and noise.
fn json_noise() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            Just("{".to_owned()),
            Just("}".to_owned()),
            Just("[".to_owned()),
            Just("]".to_owned()),
            Just(",".to_owned()),
            Just(":".to_owned()),
            Just("\"".to_owned()),
            Just("\\".to_owned()),
            Just("\\u0022".to_owned()),
            Just("\"usageMetadata\":".to_owned()),
            Just("\"totalTokenCount\":".to_owned()),
            Just("\"promptTokenCount\":".to_owned()),
            Just("\"candidatesTokenCount\":".to_owned()),
            Just("\"cachedContent\":".to_owned()),
            Just("\"fileUri\":".to_owned()),
            Just("\"cachedContents/abc\"".to_owned()),
            Just("\"files/xyz\"".to_owned()),
            Just("\"text\":".to_owned()),
            Just("\"inlineData\":".to_owned()),
            Just("\"bytesBase64Encoded\":".to_owned()),
            Just("\"sampleCount\":".to_owned()),
            Just("data: ".to_owned()),
            Just("\r\n\r\n".to_owned()),
            Just("99999999999999999999999".to_owned()),
            Just("-1".to_owned()),
            "[0-9]{1,4}",
            "[a-z ]{0,6}",
        ],
        0..80,
    )
    .prop_map(|parts| parts.concat().into_bytes())
}

fn request_meter(chunks: &[&[u8]]) -> RequestMeter {
    let mut m = RequestMeter::default();
    for c in chunks {
        m.feed(c);
    }
    m
}

fn response_meter(chunks: &[&[u8]]) -> ResponseMeter {
    let mut m = ResponseMeter::default();
    for c in chunks {
        m.feed(c);
    }
    m
}

proptest! {
    #![proptest_config(config())]

    /// Classification takes any method and path without panicking, and a model it reports is
    /// part of the path.
    #[test]
    fn classification_never_panics(method in "GET|POST|DELETE|PATCH|[A-Z]{0,7}", path in paths()) {
        if let Ok(route) = classify(&method, &path) {
            if let Some(m) = &route.model {
                prop_assert!(path.contains(m.as_str()));
            }
        }
    }

    /// Whatever the query, nothing Google would read as `key` survives the strip, and a query
    /// that carries one is identified by it (or refused for carrying two different ones).
    #[test]
    fn no_key_parameter_survives_and_none_is_missed(q in queries()) {
        let stripped = strip_key_param(&q);
        for (name, _) in url::form_urlencoded::parse(stripped.as_bytes()) {
            prop_assert!(!name.eq_ignore_ascii_case("key"), "{name} left in {stripped} (from {q})");
        }
        prop_assert!(stripped.split('&').all(|p| !is_key_param(p)));
        let has_key = url::form_urlencoded::parse(q.as_bytes()).any(|(n, _)| n.eq_ignore_ascii_case("key"));
        match presented_key(&HeaderMap::new(), Some(&q)) {
            Ok(found) => prop_assert_eq!(found.is_some(), has_key, "{}", q),
            Err(_) => prop_assert!(has_key),
        }
    }

    /// Arbitrary header values where keys go never panic the key reader.
    #[test]
    fn key_headers_never_panic(values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..4), q in queries()) {
        let mut h = HeaderMap::new();
        for (i, v) in values.iter().enumerate() {
            if let Ok(v) = HeaderValue::from_bytes(v) {
                let name = if i % 2 == 0 { "x-goog-api-key" } else { "authorization" };
                h.append(name, v);
            }
        }
        let _ = presented_key(&h, Some(&q));
    }

    /// The request scanner sees the same references and cached-content names whatever the
    /// chunking, and never grows without bound.
    #[test]
    fn request_scanning_is_split_invariant(body in json_noise(), cut in any::<prop::sample::Index>()) {
        let whole = request_meter(&[&body]);
        let at = cut.index(body.len() + 1);
        let (a, b) = body.split_at(at);
        let split = request_meter(&[a, b]);
        prop_assert_eq!(&whole.references, &split.references);
        prop_assert_eq!(whole.names_cached_content, split.names_cached_content);
        prop_assert_eq!(whole.unreadable_reference, split.unreadable_reference);
        prop_assert!(whole.references.len() <= body.len());
    }

    /// Arbitrary bytes, in arbitrary chunks, never panic either meter.
    #[test]
    fn arbitrary_bytes_never_panic_the_meters(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..512), 0..8)) {
        let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let _ = request_meter(&refs).references.len();
        let r = response_meter(&refs);
        let _ = r.usage();
        let _ = r.text();
    }

    /// The usage parser reads the same usage whatever the chunking.
    #[test]
    fn usage_parsing_is_split_invariant(body in json_noise(), cut in any::<prop::sample::Index>()) {
        let whole = response_meter(&[&body]);
        let at = cut.index(body.len() + 1);
        let (a, b) = body.split_at(at);
        let split = response_meter(&[a, b]);
        prop_assert_eq!(whole.usage(), split.usage());
        prop_assert_eq!(whole.imagen_images, split.imagen_images);
        prop_assert_eq!(whole.inline_parts, split.inline_parts);
    }
}
