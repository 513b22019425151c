//! The admin service's metrics: HTTP requests by route and status, latency, and logins.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// Every admin metric.
pub struct AdminMetrics {
    registry: Registry,
    /// `tollgate_admin_http_requests_total{route,status}`
    pub requests: IntCounterVec,
    /// `tollgate_admin_http_request_duration_seconds{route}`
    pub latency: HistogramVec,
    /// `tollgate_admin_logins_total{result}` (succeeded, failed, throttled)
    pub logins: IntCounterVec,
}

impl AdminMetrics {
    /// Declares the metrics in a fresh registry.
    pub fn new() -> prometheus::Result<AdminMetrics> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "tollgate_admin_http_requests_total",
                "Admin HTTP requests, by route template and status code.",
            ),
            &["route", "status"],
        )?;
        // Admin pages answer in milliseconds; the tail covers slow database queries.
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "tollgate_admin_http_request_duration_seconds",
                "Admin HTTP request latency, by route template.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["route"],
        )?;
        let logins = IntCounterVec::new(
            Opts::new(
                "tollgate_admin_logins_total",
                "Admin logins, by result (succeeded, failed, throttled).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(logins.clone()))?;
        for r in ["succeeded", "failed", "throttled"] {
            logins.with_label_values(&[r]);
        }
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(AdminMetrics {
            registry,
            requests,
            latency,
            logins,
        })
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) =
            prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out)
        {
            tracing::warn!(error = %e, "cannot encode admin metrics");
        }
        out
    }
}

/// Middleware: counts and times each request by its route template (bounded labels).
pub async fn track(State(m): State<Arc<AdminMetrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let resp = next.run(req).await;
    m.requests
        .with_label_values(&[route.as_str(), resp.status().as_str()])
        .inc();
    m.latency
        .with_label_values(&[route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    resp
}
