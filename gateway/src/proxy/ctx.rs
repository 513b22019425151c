//! Per-request state: what each stage learned about the request, carried from its head to the
//! event that records it.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use pingora::http::RequestHeader;

use super::uploads::UploadChunk;
use super::REQUEST_ID;
use crate::error::GatewayError;
use crate::identity::Identity;
use crate::limits::counters::Reservation;
use crate::limits::OrgLimits;
use crate::metering::{RequestMeter, ResponseMeter};
use crate::resources::Access;
use crate::route::Route;

/// Per-request state.
pub struct Ctx {
    /// The gateway's own id, unique per request (the event's key).
    pub(super) request_id: String,
    /// The `x-request-id` the client sent, echoed back; clients may reuse theirs.
    pub(super) client_request_id: Option<String>,
    pub(super) started: Instant,
    pub(super) occurred_at: DateTime<Utc>,
    pub(super) request_meter: RequestMeter,
    pub(super) response_meter: ResponseMeter,
    pub(super) body_preread: bool,
    /// Request body bytes the meter has seen, and bytes sent in the current upstream attempt: a
    /// retry replays the body from its start, and the meter must not count it twice.
    pub(super) body_metered: usize,
    pub(super) body_sent: usize,
    pub(super) reservation: Option<Reservation>,
    /// The org's limits as admission saw them (warnings and alerts use the same).
    pub(super) limits: OrgLimits,
    pub(super) model_label: Option<Arc<str>>,
    pub(super) route: Option<Route>,
    pub(super) identity: Option<Identity>,
    pub(super) refused: Option<GatewayError>,
    /// The org may not name a cached content (its `context_caching` flag is off): a body
    /// streamed past the pre-read that turns out to name one is cut before its end.
    pub(super) cache_gated: bool,
    /// That refusal, found while the body was being forwarded (answered by `fail_to_proxy`).
    pub(super) body_refused: Option<GatewayError>,
    pub(super) upstream_started: Option<Instant>,
    pub(super) upstream_header_ms: Option<u64>,
    pub(super) upstream_done: Option<Instant>,
    /// How the request touches owned resources.
    pub(super) access: Access,
    /// A successful response that creates or reads owned resources, held (up to 1 MiB, see
    /// `claims.rs`) to read the names it gives the org.
    pub(super) claims: Option<Vec<u8>>,
    /// A DELETE of an owned resource itself (a successful one frees its name).
    pub(super) method_delete: bool,
    /// The resumable upload this request carries a chunk of.
    pub(super) upload: Option<UploadChunk>,
    /// Google said the upload is complete (`x-goog-upload-status: final`).
    pub(super) upload_final: bool,
    /// The status of the response passed on to the client (Google's, for an upload chunk).
    pub(super) status: u16,
    /// The event, made and journaled as the response's last bytes passed (queued by `logging`).
    pub(super) journaled: Option<(crate::ledger::Journaled, store::UsageEvent)>,
    pub(super) _in_flight: InFlight,
}

impl Ctx {
    /// A request's state as its head arrives; `in_flight` counts it until it is dropped.
    pub(super) fn new(in_flight: &Arc<AtomicUsize>) -> Ctx {
        Ctx {
            request_id: String::new(),
            client_request_id: None,
            started: Instant::now(),
            occurred_at: Utc::now(),
            request_meter: RequestMeter::default(),
            response_meter: ResponseMeter::default(),
            body_preread: false,
            body_metered: 0,
            body_sent: 0,
            reservation: None,
            limits: OrgLimits::default(),
            model_label: None,
            route: None,
            identity: None,
            refused: None,
            cache_gated: false,
            body_refused: None,
            upstream_started: None,
            upstream_header_ms: None,
            upstream_done: None,
            access: Access::Free,
            claims: None,
            method_delete: false,
            upload: None,
            upload_final: false,
            status: 0,
            journaled: None,
            _in_flight: InFlight::new(in_flight),
        }
    }

    /// The request's ids: ours, made now, and the client's own when it sent a sane one.
    pub(super) fn begin(&mut self, req: &RequestHeader) {
        self.request_id = new_request_id(self.occurred_at);
        self.client_request_id = client_request_id(req);
    }

    /// The id the client sees in `x-request-id`: its own when it sent one, else ours.
    pub(super) fn reply_id(&self) -> &str {
        self.client_request_id
            .as_deref()
            .unwrap_or(&self.request_id)
    }
}

/// Counts a request in flight for as long as its context lives (to the end of its last write,
/// whether it finished, failed or was cut).
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    pub(super) fn new(n: &Arc<AtomicUsize>) -> InFlight {
        n.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        InFlight(n.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The client's `x-request-id`, when it is a sane one (printable, at most 128 bytes).
fn client_request_id(req: &RequestHeader) -> Option<String> {
    static NAME: http::HeaderName = http::HeaderName::from_static(REQUEST_ID);
    let id = req.headers.get(&NAME)?.to_str().ok()?.trim();
    (!id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| id.to_owned())
}

/// A new request id: 32 lowercase hex digits, the first 12 the Unix time in milliseconds and the
/// other 20 random (a UUIDv7-like layout). Ids that grow with time land at the right edge of the
/// ledger's unique index instead of on a random page, which keeps a stored event cheap as the
/// table grows.
pub fn new_request_id(at: chrono::DateTime<chrono::Utc>) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let millis = u128::from(u64::try_from(at.timestamp_millis()).unwrap_or(0) & 0xffff_ffff_ffff);
    let id = millis << 80 | (rand::random::<u128>() >> 48);
    let mut out = String::with_capacity(32);
    for i in 0..32 {
        out.push(char::from(HEX[((id >> (124 - 4 * i)) & 0xf) as usize]));
    }
    out
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn with_id(v: &str) -> RequestHeader {
        let mut req = RequestHeader::build("POST", b"/v1beta/models", None).unwrap();
        req.insert_header(REQUEST_ID, v).unwrap();
        req
    }

    #[test]
    fn the_client_id_is_echoed_only_when_sane() {
        assert_eq!(
            client_request_id(&with_id(" abc-1 ")).as_deref(),
            Some("abc-1")
        );
        assert_eq!(client_request_id(&with_id("has space")), None);
        assert_eq!(client_request_id(&with_id(&"a".repeat(129))), None);
        assert_eq!(
            client_request_id(&with_id(&"a".repeat(128))).map(|v| v.len()),
            Some(128)
        );
    }

    #[test]
    fn a_context_counts_in_flight_until_dropped_and_replies_with_the_client_id() {
        let n = Arc::new(AtomicUsize::new(0));
        let mut ctx = Ctx::new(&n);
        assert_eq!(n.load(std::sync::atomic::Ordering::Acquire), 1);
        ctx.begin(&with_id("mine"));
        assert_eq!(ctx.reply_id(), "mine");
        assert!(!ctx.request_id.is_empty() && ctx.request_id != "mine");
        ctx.begin(&RequestHeader::build("GET", b"/", None).unwrap());
        assert_eq!(ctx.reply_id(), ctx.request_id);
        drop(ctx);
        assert_eq!(n.load(std::sync::atomic::Ordering::Acquire), 0);
    }

    #[test]
    fn request_ids_are_32_hex_digits_ordered_by_time_and_unique() {
        let t0 = Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap();
        let a = new_request_id(t0);
        let b = new_request_id(t0 + chrono::Duration::milliseconds(1));
        let c = new_request_id(t0 + chrono::Duration::days(400));
        for id in [&a, &b, &c] {
            assert_eq!(id.len(), 32, "{id}");
            assert!(id
                .bytes()
                .all(|x| x.is_ascii_hexdigit() && !x.is_ascii_uppercase()));
        }
        assert!(a < b && b < c, "ids sort by time: {a} {b} {c}");
        assert_eq!(&a[..12], &format!("{:012x}", t0.timestamp_millis()));
        let same_ms: std::collections::HashSet<String> =
            (0..10_000).map(|_| new_request_id(t0)).collect();
        assert_eq!(
            same_ms.len(),
            10_000,
            "80 random bits keep ids of one millisecond apart"
        );
    }
}
