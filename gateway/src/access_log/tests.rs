//! Unit tests of the access log: the JSON and text line shapes, escaping, buffering until a flush.

use super::*;

fn line() -> AccessLine<'static> {
    AccessLine {
        request_id: "0123456789abcdef0123456789abcdef",
        client_request_id: "client-1",
        org: "acme \"quoted\" \\ org\n",
        key_prefix: "tg_abcdefg",
        provider: "gemini",
        model: "gemini-2.5-flash",
        operation: "generateContent",
        status: 200,
        refused: "",
        upstream_ms: Some(12),
        total_ms: 13,
        input_tokens: 6,
        output_tokens: 5,
        thinking_tokens: 0,
        cost_micros: 21,
    }
}

fn captured(format: AccessFormat, lines: &[AccessLine<'_>]) -> String {
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let log = AccessLog::new(AccessLogSettings {
        format: Some(format),
        sink: LogSink::new(move |b| g.lock().unwrap().extend_from_slice(b)),
    });
    for l in lines {
        log.record(l);
    }
    assert!(
        got.lock().unwrap().is_empty(),
        "nothing is written before a flush"
    );
    log.flush();
    log.flush(); // an empty flush writes nothing more
    let out = String::from_utf8(got.lock().unwrap().clone()).unwrap();
    out
}

#[test]
fn json_lines_have_tracing_s_shape_and_every_field() {
    let out = captured(AccessFormat::Json, &[line(), line()]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2);
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["target"], "access");
    assert_eq!(v["level"], "INFO");
    let ts = v["timestamp"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(ts).is_ok() && ts.len() == 27,
        "{ts}"
    );
    let f = &v["fields"];
    assert_eq!(f["message"], "request");
    assert_eq!(f["org"], "acme \"quoted\" \\ org\n", "escaped and restored");
    assert_eq!(f["key.prefix"], "tg_abcdefg");
    assert_eq!(f["status"], 200);
    assert_eq!(f["upstream_ms"], 12);
    assert_eq!(f["tokens.input"], 6);
    assert_eq!(f["tokens.output"], 5);
    assert_eq!(f["cost_micros"], 21);
    assert_eq!(f["refused"], "");
}

#[test]
fn a_missing_upstream_time_is_left_out() {
    let l = AccessLine {
        upstream_ms: None,
        refused: "limit_exceeded",
        status: 429,
        ..line()
    };
    let out = captured(AccessFormat::Json, &[l]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["fields"].get("upstream_ms").is_none());
    assert_eq!(v["fields"]["refused"], "limit_exceeded");
}

#[test]
fn text_lines_are_one_line_each_with_quoted_strings() {
    let out = captured(AccessFormat::Text, &[line()]);
    assert_eq!(
        out.lines().count(),
        1,
        "the newline in the org name is escaped"
    );
    assert!(
        out.contains("  INFO access: request request_id=\"0123456789abcdef0123456789abcdef\""),
        "{out}"
    );
    assert!(
        out.contains(" org=\"acme \\\"quoted\\\" \\\\ org\\n\""),
        "{out}"
    );
    assert!(
        out.contains(" status=200 refused=\"\" upstream_ms=12 total_ms=13 tokens.input=6"),
        "{out}"
    );
    assert!(out.ends_with(" cost_micros=21\n"), "{out}");
}

#[test]
fn control_characters_become_unicode_escapes() {
    let mut out = Vec::new();
    crate::event_line::str_literal(&mut out, "a\u{1}b");
    assert_eq!(out, b"\"a\\u0001b\"");
}

#[test]
fn a_disabled_log_records_nothing() {
    let log = AccessLog::new(AccessLogSettings::default());
    assert!(!log.enabled());
    log.record(&line());
    assert!(log.buf.lock().unwrap().is_empty());
}
