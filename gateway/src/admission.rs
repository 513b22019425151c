//! Admission against usage limits: what a request is expected to use (estimated from its body
//! when it is small enough to read before forwarding), the reservation, and fail-open when the
//! limits or counters are not available. Called from `request_filter`; no database I/O.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use pingora::proxy::Session;

use crate::error::GatewayError;
use crate::limits::counters::Counters;
use crate::limits::{Amounts, Kind, OrgLimits};
use crate::metering::pricing::{cost, Metered, PriceTable};
use crate::metering::usage::Tokens;
use crate::metering::{tokens, RequestMeter};
use crate::metrics::Metrics;
use crate::route::{is_embedding_model, is_image_model, Operation, Route};

/// Bodies up to this size are read before forwarding, to estimate the request (pingora then
/// forwards them from its 64 KiB retry buffer).
pub const PREREAD_MAX_BYTES: usize = 60 * 1024;
/// pingora's retry buffer: the most of a chunked body that can be read first and forwarded.
const RETRY_BUFFER_BYTES: usize = 64 * 1024;
/// Prompt text up to this size is estimated with tiktoken; beyond, at 3 bytes per token.
const TIKTOKEN_MAX_BYTES: usize = 16 * 1024;
/// Texts shorter than this are estimated at 3 bytes per token without tiktoken: at most ~340
/// tokens, small beside the output budget every reservation includes, and it saves tiktoken's
/// fixed cost (~8,500 instructions) on the common short prompt. 3 bytes per token is above
/// tiktoken's count for prose, code and CJK text, so the estimate stays on the safe side.
const TIKTOKEN_MIN_BYTES: usize = 1024;

/// Whether limits are enforced, and the fail-open bookkeeping when they are not.
pub struct Enforcement {
    seeded: AtomicBool,
    last_log_secs: AtomicI64,
    metrics: Arc<Metrics>,
}

impl Enforcement {
    /// Not yet seeded: degraded until the first successful sync.
    pub fn new(metrics: Arc<Metrics>) -> Enforcement {
        metrics.degraded.set(1);
        Enforcement {
            seeded: AtomicBool::new(false),
            last_log_secs: AtomicI64::new(0),
            metrics,
        }
    }

    /// The counters were seeded from the store.
    pub fn set_seeded(&self) {
        self.seeded.store(true, Ordering::Release);
    }

    /// Whether limits cannot be enforced now (limits or counters never loaded).
    pub fn degraded(&self, limits_loaded: bool) -> bool {
        let d = !limits_loaded || !self.seeded.load(Ordering::Acquire);
        self.metrics.degraded.set(i64::from(d));
        d
    }

    /// Counts a request forwarded without enforcement; logs at most every 10 s.
    pub fn fail_open(&self, reason: &'static str) {
        self.metrics.fail_open.with_label_values(&[reason]).inc();
        let now = chrono::Utc::now().timestamp();
        let last = self.last_log_secs.load(Ordering::Relaxed);
        if now - last >= 10
            && self
                .last_log_secs
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                reason,
                "usage limits not enforced (fail-open): requests are forwarded unchecked"
            );
        }
    }
}

/// Whether the body must be read to estimate what the request will use.
pub fn needs_body(limits: &OrgLimits) -> bool {
    limits.get(Kind::Tokens).is_some()
        || limits.get(Kind::Cost).is_some()
        || limits.get(Kind::Ads).is_some()
}

/// The request's declared body length, if it has a valid one.
pub fn content_length(session: &Session) -> Option<usize> {
    session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
}

/// Reads a small request body before forwarding (into the meter); larger ones with a declared
/// length are left to stream and estimated from it. A chunked body is always read first (its
/// framing, and what it names, are judged before anything is sent): pingora's retry buffer,
/// which forwards it afterwards, holds 64 KiB, so a longer one is refused.
pub async fn preread(
    session: &mut Session,
    meter: &mut RequestMeter,
) -> Result<bool, GatewayError> {
    let chunked = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .is_none()
        && session
            .req_header()
            .headers
            .get(http::header::TRANSFER_ENCODING)
            .is_some_and(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .to_ascii_lowercase()
                    .contains("chunked")
            });
    if !chunked && !matches!(content_length(session), Some(n) if n <= PREREAD_MAX_BYTES) {
        return Ok(false);
    }
    // A client that waits for 100 Continue before sending its body (curl does, for larger
    // bodies) would otherwise wait here until its own timeout: the upstream that would answer
    // 100 is not contacted yet.
    let expects_continue = session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        session
            .write_continue_response()
            .await
            .map_err(|_| GatewayError::BadBody)?;
    }
    session.enable_retry_buffering();
    while let Some(chunk) = session
        .read_request_body()
        .await
        .map_err(|_| GatewayError::BadBody)?
    {
        if session.retry_buffer_truncated() {
            return Err(GatewayError::ChunkedTooLarge {
                max: RETRY_BUFFER_BYTES,
            });
        }
        meter.feed(&chunk);
    }
    Ok(true)
}

/// What a request is expected to use: one request, the images or videos it asks for, its prompt
/// (estimated) plus its output budget, and the price of that.
pub fn estimate(
    route: &Route,
    req: &RequestMeter,
    preread: bool,
    content_length: usize,
    default_output: i64,
    prices: &PriceTable,
) -> Amounts {
    let model = route.model.as_deref().unwrap_or("");
    let prompt = if preread {
        req.count_tokens(|t| {
            if (TIKTOKEN_MIN_BYTES..=TIKTOKEN_MAX_BYTES).contains(&t.len())
                && tokens::estimator_ready()
            {
                tokens::estimate(t)
            } else {
                (t.len() as i64 + 2) / 3
            }
        })
    } else {
        (content_length as i64 + 3) / 4
    };
    let mut m = Metered::default();
    let mut ads = 0;
    match route.operation {
        Operation::GenerateContent | Operation::StreamGenerateContent | Operation::Batch => {
            let output = req.max_output_tokens.unwrap_or(default_output).max(0);
            m.tokens = Tokens {
                input: prompt,
                output,
                total: prompt + output,
                ..Tokens::default()
            };
            if is_image_model(model) {
                ads = 1;
            }
        }
        Operation::Predict if !is_embedding_model(model) => {
            ads = req.sample_count.unwrap_or(4).max(1);
            m.images = ads;
            m.bill_images = true;
        }
        Operation::PredictLongRunning => {
            ads = req.sample_count.unwrap_or(1).max(1);
            m.video_seconds = ads * req.duration_seconds.unwrap_or(8).max(0);
            m.video_lines = req.resolution_lines.unwrap_or(720);
            m.video_audio = req.generate_audio.unwrap_or(true);
        }
        _ => {
            m.tokens = Tokens {
                input: prompt,
                total: prompt,
                ..Tokens::default()
            }
        }
    }
    let price = prices.quote(route.provider, model).price;
    Amounts::new(1, ads, m.tokens.total, cost(price, &m))
}

/// Reserves the estimate against the org's limits (or only counts it, when degraded).
pub fn reserve(
    counters: &Counters,
    org: i64,
    limits: &OrgLimits,
    amounts: Amounts,
    metrics: &Metrics,
) -> Result<crate::limits::counters::Reservation, GatewayError> {
    counters
        .try_reserve(org, limits, amounts)
        .map_err(|refusal| {
            metrics
                .limit_refusals
                .with_label_values(&[refusal.kind.as_str()])
                .inc();
            GatewayError::LimitExceeded(refusal)
        })
}

#[cfg(test)]
mod tests;
