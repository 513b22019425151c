//! Every gateway metric, declared once with its help text, in a registry owned by one gateway
//! (so tests running several gateways in one process do not mix their numbers). Label handles
//! for bounded label sets are resolved once here, not per request.

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

/// The gateway's metrics.
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// `tollgate_requests_total{provider,operation,status_class}`
    pub requests: IntCounterVec,
    /// `tollgate_auth_failures_total{reason}`
    pub auth_failures: IntCounterVec,
    /// `tollgate_feature_refusals_total{feature}`
    pub feature_refusals: IntCounterVec,
    /// `tollgate_upstream_errors_total{provider,kind}`
    pub upstream_errors: IntCounterVec,
    /// `tollgate_live_config_keys`
    pub keys_loaded: IntGauge,
}

fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    /// Declares every metric in a fresh registry.
    pub fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let requests = counter(
            &registry,
            "tollgate_requests_total",
            "Requests answered by the gateway, by provider, operation and status class (2xx, 4xx, 5xx).",
            &["provider", "operation", "status_class"],
        )?;
        let auth_failures = counter(
            &registry,
            "tollgate_auth_failures_total",
            "Requests refused because the gateway key was missing, unknown or revoked, or the org header was not allowed.",
            &["reason"],
        )?;
        let feature_refusals = counter(
            &registry,
            "tollgate_feature_refusals_total",
            "Requests refused with 403 because a feature flag of the org is off.",
            &["feature"],
        )?;
        let upstream_errors = counter(
            &registry,
            "tollgate_upstream_errors_total",
            "Requests the upstream could not serve (unreachable, timeout), answered by the gateway.",
            &["provider", "kind"],
        )?;
        let keys_loaded = IntGauge::new(
            "tollgate_live_config_keys",
            "Gateway keys in the live snapshot (revoked included).",
        )?;
        registry.register(Box::new(keys_loaded.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            auth_failures,
            feature_refusals,
            upstream_errors,
            keys_loaded,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode_utf8(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}

/// `2xx`, `4xx`, `5xx`… for a status code (a bounded label).
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "none",
    }
}
