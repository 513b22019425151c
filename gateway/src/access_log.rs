//! The access log: one line per request, formatted by hand into a shared buffer that a
//! background task hands to the log writer every [`FLUSH_INTERVAL`]. Going through `tracing`'s
//! formatter cost ~22,000 instructions per request and woke the log thread once per line; this
//! costs ~2,000 and one wake-up per interval. The lines look like `tracing`'s own (same JSON
//! shape with `log.format = "json"`, same text layout otherwise), so log pipelines see no seam.

use std::fmt;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often buffered lines are handed to the writer.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// How lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessFormat {
    /// `2026-11-28T08:34:49.123456Z  INFO access: request request_id="…" …`
    Text,
    /// `{"timestamp":"…","level":"INFO","fields":{"message":"request",…},"target":"access"}`
    Json,
}

/// Where flushed lines go (the binary passes its non-blocking log writer, so access lines and
/// other log lines share one ordered stream).
#[derive(Clone)]
pub struct LogSink(Arc<SinkFn>);

/// What a sink does with a flushed batch.
type SinkFn = dyn Fn(&[u8]) + Send + Sync;

impl LogSink {
    /// A sink calling `f` with each flushed batch of whole lines.
    pub fn new(f: impl Fn(&[u8]) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// Standard error.
    pub fn stderr() -> Self {
        Self::new(|b| {
            let _ = std::io::stderr().lock().write_all(b);
        })
    }

    fn write(&self, b: &[u8]) {
        (self.0)(b)
    }
}

impl fmt::Debug for LogSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LogSink")
    }
}

/// Access-log settings.
#[derive(Debug, Clone)]
pub struct AccessLogSettings {
    /// `None`: no access log (the log level is above `info` for target `access`).
    pub format: Option<AccessFormat>,
    /// Where lines go.
    pub sink: LogSink,
}

impl Default for AccessLogSettings {
    fn default() -> Self {
        Self {
            format: None,
            sink: LogSink::stderr(),
        }
    }
}

/// One request's line.
#[derive(Debug, Default)]
pub struct AccessLine<'a> {
    /// The gateway's request id.
    pub request_id: &'a str,
    /// The client's `x-request-id`, or empty.
    pub client_request_id: &'a str,
    /// Organization name, or empty.
    pub org: &'a str,
    /// The gateway key's prefix, or empty.
    pub key_prefix: &'a str,
    /// `gemini`, `vertex` or `none`.
    pub provider: &'a str,
    /// The model from the path, or empty.
    pub model: &'a str,
    /// The operation, or `none`.
    pub operation: &'a str,
    /// HTTP status sent (0: none).
    pub status: u16,
    /// Why the gateway refused or failed the request, or empty.
    pub refused: &'a str,
    /// Time to the upstream's response header.
    pub upstream_ms: Option<u64>,
    /// Time to the end of the response.
    pub total_ms: i64,
    /// Input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Thinking tokens.
    pub thinking_tokens: i64,
    /// Cost in micro-dollars.
    pub cost_micros: i64,
}

/// The access log of one gateway.
pub struct AccessLog {
    format: Option<AccessFormat>,
    buf: Mutex<Vec<u8>>,
    sink: LogSink,
}

thread_local! {
    /// Per worker: the line being formatted and the last formatted second of the timestamp.
    static SCRATCH: std::cell::RefCell<(Vec<u8>, u64, [u8; 19])> =
        const { std::cell::RefCell::new((Vec::new(), u64::MAX, [0; 19])) };
}

impl AccessLog {
    /// An access log; with `format: None` recording does nothing.
    pub fn new(settings: AccessLogSettings) -> Self {
        Self {
            format: settings.format,
            buf: Mutex::new(Vec::with_capacity(64 * 1024)),
            sink: settings.sink,
        }
    }

    /// Whether lines are written at all.
    pub fn enabled(&self) -> bool {
        self.format.is_some()
    }

    /// Formats the line and appends it to the buffer (no I/O).
    pub fn record(&self, line: &AccessLine<'_>) {
        let Some(format) = self.format else {
            return;
        };
        SCRATCH.with_borrow_mut(|(out, last_sec, stamp)| {
            out.clear();
            format_line(out, format, line, SystemTime::now(), last_sec, stamp);
            if let Ok(mut buf) = self.buf.lock() {
                buf.extend_from_slice(out);
            }
        });
    }

    /// Hands everything buffered to the sink.
    pub fn flush(&self) {
        let batch = match self.buf.lock() {
            Ok(mut buf) if !buf.is_empty() => {
                let cap = buf.capacity();
                std::mem::replace(&mut *buf, Vec::with_capacity(cap))
            }
            _ => return,
        };
        self.sink.write(&batch);
    }
}

fn format_line(
    out: &mut Vec<u8>,
    format: AccessFormat,
    l: &AccessLine<'_>,
    now: SystemTime,
    last_sec: &mut u64,
    stamp: &mut [u8; 19],
) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    if since.as_secs() != *last_sec {
        *last_sec = since.as_secs();
        let t = chrono::DateTime::<chrono::Utc>::from(now);
        let s = t.format("%Y-%m-%dT%H:%M:%S").to_string();
        if s.len() == stamp.len() {
            stamp.copy_from_slice(s.as_bytes());
        }
    }
    // `YYYY-MM-DDTHH:MM:SS.ffffffZ`
    let mut ts = [0u8; 27];
    ts[..19].copy_from_slice(stamp);
    ts[19] = b'.';
    let mut micros = since.subsec_micros();
    for digit in ts[20..26].iter_mut().rev() {
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    ts[26] = b'Z';
    let ts = &ts[..];
    let json = format == AccessFormat::Json;
    if json {
        out.extend_from_slice(b"{\"timestamp\":\"");
        out.extend_from_slice(ts);
        out.extend_from_slice(b"\",\"level\":\"INFO\",\"fields\":{\"message\":\"request\"");
    } else {
        out.extend_from_slice(ts);
        out.extend_from_slice(b"  INFO access: request");
    }
    let mut n = itoa::Buffer::new();
    for (k, v) in [
        ("request_id", l.request_id),
        ("client_request_id", l.client_request_id),
        ("org", l.org),
        ("key.prefix", l.key_prefix),
        ("provider", l.provider),
        ("model", l.model),
        ("operation", l.operation),
    ] {
        key(out, json, k);
        crate::event_line::str_literal(out, v);
    }
    key(out, json, "status");
    out.extend_from_slice(n.format(l.status).as_bytes());
    key(out, json, "refused");
    crate::event_line::str_literal(out, l.refused);
    if let Some(v) = l.upstream_ms {
        key(out, json, "upstream_ms");
        out.extend_from_slice(n.format(v).as_bytes());
    }
    for (k, v) in [
        ("total_ms", l.total_ms),
        ("tokens.input", l.input_tokens),
        ("tokens.output", l.output_tokens),
        ("tokens.thinking", l.thinking_tokens),
        ("cost_micros", l.cost_micros),
    ] {
        key(out, json, k);
        out.extend_from_slice(n.format(v).as_bytes());
    }
    let end: &[u8] = if json {
        b"},\"target\":\"access\"}\n"
    } else {
        b"\n"
    };
    out.extend_from_slice(end);
}

/// Starts a field: `,"k":` (JSON) or ` k=` (text).
fn key(out: &mut Vec<u8>, json: bool, k: &str) {
    if json {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b"\":");
    } else {
        out.push(b' ');
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
    }
}

#[cfg(test)]
mod tests;
