//! A usage event as one JSON line, written by hand: the journal writes one per request, and
//! serde's derive spent most of the record's cost on it. The bytes are exactly serde_json's
//! (a test compares them), so the spool and the journal's replay read the lines with serde.

use std::io::Write;

use chrono::{DateTime, Datelike, Timelike, Utc};
use store::UsageEvent;

/// Appends `e` as serde_json would write it (compact, fields in declaration order).
pub fn write(out: &mut Vec<u8>, e: &UsageEvent) {
    // Destructured whole: a field added to `UsageEvent` fails to compile here until it is written.
    let UsageEvent {
        request_id,
        client_request_id,
        occurred_at,
        org_id,
        key_id,
        user_ref,
        tool,
        provider,
        model,
        operation,
        status,
        streamed,
        metered,
        input_tokens,
        output_tokens,
        thinking_tokens,
        cached_tokens,
        tool_prompt_tokens,
        total_tokens,
        input_audio_tokens,
        output_image_tokens,
        images,
        videos,
        video_seconds,
        cost_micros,
        estimated,
        priced,
        upstream_latency_ms,
        total_latency_ms,
    } = e;
    out.extend_from_slice(b"{\"request_id\":");
    str_literal(out, request_id);
    out.extend_from_slice(b",\"client_request_id\":");
    opt_str(out, client_request_id.as_deref());
    out.extend_from_slice(b",\"occurred_at\":");
    timestamp(out, occurred_at);
    out.extend_from_slice(b",\"org_id\":");
    opt_int(out, *org_id);
    out.extend_from_slice(b",\"key_id\":");
    opt_int(out, *key_id);
    out.extend_from_slice(b",\"user_ref\":");
    opt_str(out, user_ref.as_deref());
    out.extend_from_slice(b",\"tool\":");
    opt_str(out, tool.as_deref());
    out.extend_from_slice(b",\"provider\":");
    str_literal(out, provider);
    out.extend_from_slice(b",\"model\":");
    str_literal(out, model);
    out.extend_from_slice(b",\"operation\":");
    str_literal(out, operation);
    out.extend_from_slice(b",\"status\":");
    int(out, *status);
    out.extend_from_slice(b",\"streamed\":");
    boolean(out, *streamed);
    out.extend_from_slice(b",\"metered\":");
    boolean(out, *metered);
    for (name, v) in [
        (&b",\"input_tokens\":"[..], input_tokens),
        (b",\"output_tokens\":", output_tokens),
        (b",\"thinking_tokens\":", thinking_tokens),
        (b",\"cached_tokens\":", cached_tokens),
        (b",\"tool_prompt_tokens\":", tool_prompt_tokens),
        (b",\"total_tokens\":", total_tokens),
        (b",\"input_audio_tokens\":", input_audio_tokens),
        (b",\"output_image_tokens\":", output_image_tokens),
        (b",\"images\":", images),
        (b",\"videos\":", videos),
        (b",\"video_seconds\":", video_seconds),
        (b",\"cost_micros\":", cost_micros),
    ] {
        out.extend_from_slice(name);
        int(out, *v);
    }
    out.extend_from_slice(b",\"estimated\":");
    boolean(out, *estimated);
    out.extend_from_slice(b",\"priced\":");
    boolean(out, *priced);
    out.extend_from_slice(b",\"upstream_latency_ms\":");
    opt_int(out, *upstream_latency_ms);
    out.extend_from_slice(b",\"total_latency_ms\":");
    int(out, *total_latency_ms);
    out.push(b'}');
}

/// `v` as a JSON string literal, escaped as serde_json escapes (`\"`, `\\`, the short forms
/// `\b \f \n \r \t`, other control characters as `\u00XX`; nothing else).
pub fn str_literal(out: &mut Vec<u8>, v: &str) {
    out.push(b'"');
    let bytes = v.as_bytes();
    // Nearly every value needs no escape: one pass without branches (vectorized), then one copy.
    let needs = bytes
        .iter()
        .fold(false, |n, &b| n | (b < 0x20) | (b == b'"') | (b == b'\\'));
    if !needs {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..0x20 => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        start = i + 1;
        if short.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        } else {
            out.extend_from_slice(short);
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn opt_str(out: &mut Vec<u8>, v: Option<&str>) {
    match v {
        Some(s) => str_literal(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn int(out: &mut Vec<u8>, v: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

fn opt_int(out: &mut Vec<u8>, v: Option<i64>) {
    match v {
        Some(n) => int(out, n),
        None => out.extend_from_slice(b"null"),
    }
}

fn boolean(out: &mut Vec<u8>, v: bool) {
    out.extend_from_slice(if v { b"true" } else { b"false" });
}

/// RFC 3339 in UTC as chrono's serde writes it: `Z`, and the fraction in 0, 3, 6 or 9 digits,
/// as few as hold it exactly.
fn timestamp(out: &mut Vec<u8>, t: &DateTime<Utc>) {
    let year = t.year();
    if !(0..=9999).contains(&year) {
        // A signed year (ISO 8601's extended form): chrono's own formatting.
        out.push(b'"');
        out.extend_from_slice(
            t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                .as_bytes(),
        );
        out.push(b'"');
        return;
    }
    let (mut sec, mut nano) = (t.second(), t.nanosecond());
    // A leap second: chrono keeps it as nanoseconds past 1e9 and writes second 60.
    if nano >= 1_000_000_000 {
        sec += 1;
        nano -= 1_000_000_000;
    }
    let two = |out: &mut Vec<u8>, v: u32| {
        out.extend_from_slice(&[b'0' + (v / 10) as u8, b'0' + (v % 10) as u8])
    };
    out.push(b'"');
    two(out, year as u32 / 100);
    two(out, year as u32 % 100);
    out.push(b'-');
    two(out, t.month());
    out.push(b'-');
    two(out, t.day());
    out.push(b'T');
    two(out, t.hour());
    out.push(b':');
    two(out, t.minute());
    out.push(b':');
    two(out, sec);
    let _ = if nano == 0 {
        Ok(())
    } else if nano % 1_000_000 == 0 {
        write!(out, ".{:03}", nano / 1_000_000)
    } else if nano % 1_000 == 0 {
        write!(out, ".{:06}", nano / 1_000)
    } else {
        write!(out, ".{nano:09}")
    };
    out.extend_from_slice(b"Z\"");
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn line(e: &UsageEvent) -> Vec<u8> {
        let mut out = Vec::new();
        write(&mut out, e);
        out
    }

    fn full(strings: &str, at: DateTime<Utc>) -> UsageEvent {
        UsageEvent {
            request_id: format!("r{strings}"),
            client_request_id: Some(strings.into()),
            occurred_at: at,
            org_id: Some(7),
            key_id: Some(-3),
            user_ref: Some(format!("u{strings}")),
            tool: Some(strings.into()),
            provider: "gemini".into(),
            model: format!("m{strings}"),
            operation: "generateContent".into(),
            status: 429,
            streamed: true,
            metered: true,
            input_tokens: i64::MAX,
            output_tokens: i64::MIN,
            thinking_tokens: 0,
            cached_tokens: 1,
            tool_prompt_tokens: -1,
            total_tokens: 1234567890123,
            input_audio_tokens: 9,
            output_image_tokens: 10,
            images: 11,
            videos: 12,
            video_seconds: 13,
            cost_micros: 14,
            estimated: true,
            priced: false,
            upstream_latency_ms: Some(15),
            total_latency_ms: 16,
        }
    }

    #[test]
    fn the_line_is_serde_jsons_byte_for_byte() {
        let at = Utc.with_ymd_and_hms(2026, 12, 3, 16, 5, 9).unwrap();
        let mut events = vec![UsageEvent::default()];
        let every_byte: String = (0u8..0x80).map(char::from).collect();
        for s in ["", "plain", "a\"b\\c/d", "\u{7f}é漢字🦀", &every_byte] {
            events.push(full(s, at));
        }
        // Fractions of every length chrono chooses, a leap second, and years at and past the
        // four-digit range.
        for nano in [
            0,
            1,
            120,
            5_000,
            123_000,
            7_000_000,
            999_999_999,
            1_500_000_000,
        ] {
            let t = chrono::NaiveDate::from_ymd_opt(2026, 6, 30)
                .unwrap()
                .and_hms_nano_opt(23, 59, 59, nano)
                .unwrap()
                .and_utc();
            events.push(full("t", t));
        }
        for year in [0, 999, 1970, 9999, 10000, -1] {
            events.push(full(
                "y",
                Utc.with_ymd_and_hms(year, 1, 2, 3, 4, 5).unwrap(),
            ));
        }
        for e in &events {
            let want = serde_json::to_vec(e).unwrap();
            assert_eq!(
                String::from_utf8(line(e)).unwrap(),
                String::from_utf8(want).unwrap()
            );
            let back: UsageEvent = serde_json::from_slice(&line(e)).unwrap();
            assert_eq!(&back, e);
        }
    }

    #[test]
    fn random_events_match_serde_json() {
        use rand::Rng;
        let mut rng = rand::thread_rng();
        for _ in 0..2_000 {
            let s: String = (0..rng.gen_range(0..12))
                .map(|_| char::from_u32(rng.gen_range(0..0x300)).unwrap_or('x'))
                .collect();
            let at = Utc
                .timestamp_opt(
                    rng.gen_range(0..4_000_000_000),
                    rng.gen_range(0..1_000_000_000),
                )
                .unwrap();
            let mut e = full(&s, at);
            e.org_id = rng.gen_bool(0.5).then(|| rng.gen());
            e.input_tokens = rng.gen();
            e.upstream_latency_ms = rng.gen_bool(0.5).then(|| rng.gen());
            assert_eq!(line(&e), serde_json::to_vec(&e).unwrap(), "{e:?}");
        }
    }
}
