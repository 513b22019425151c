//! Every gateway metric, declared once with its help text, in a registry owned by one gateway
//! (so tests running several gateways in one process do not mix their numbers). Label handles
//! for bounded label sets are resolved once here, not per request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use dashmap::DashMap;

use crate::route::Provider;
use prometheus::{
    CounterVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry,
};

/// Latency buckets from 100 µs to 5 minutes: sub-millisecond overheads and minute-long
/// generations in one histogram.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
/// The gateway's own time, 10 µs to 250 ms.
const OVERHEAD_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25,
];

/// The gateway's metrics.
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// `tollgate_requests_total{provider,model,operation,status_class}`
    pub requests: IntCounterVec,
    /// `tollgate_gateway_overhead_seconds`: total minus upstream time, the gateway's own share.
    pub overhead_seconds: Histogram,
    /// `tollgate_org_tokens_total{org,kind}`
    pub org_tokens: IntCounterVec,
    /// `tollgate_org_images_total{org}`
    pub org_images: IntCounterVec,
    /// `tollgate_org_video_seconds_total{org}`
    pub org_video_seconds: IntCounterVec,
    /// `tollgate_org_cost_dollars_total{org}`
    pub org_cost: CounterVec,
    /// `tollgate_model_tokens_total{model,kind}`
    pub model_tokens: IntCounterVec,
    /// `tollgate_model_images_total{model}`
    pub model_images: IntCounterVec,
    /// `tollgate_model_video_seconds_total{model}`
    pub model_video_seconds: IntCounterVec,
    /// `tollgate_model_cost_dollars_total{model}`
    pub model_cost: CounterVec,
    /// Which orgs have a label of their own (the rest share `other`), with their series.
    pub org_labels: OrgLabels,
    /// Resolved series per model label.
    model_series: DashMap<Arc<str>, Arc<Series>>,
    /// `tollgate_request_duration_seconds{provider}` (request start to the end of the response)
    /// and `tollgate_upstream_duration_seconds{provider}` (upstream contacted until its response
    /// ended) of gemini, vertex and none (no route), resolved once: see [`Metrics::durations`].
    provider_seconds: [(Histogram, Histogram); 3],
    /// `tollgate_auth_failures_total{reason}`
    pub auth_failures: IntCounterVec,
    /// `tollgate_feature_refusals_total{feature}`
    pub feature_refusals: IntCounterVec,
    /// `tollgate_resource_refusals_total{where}`
    pub resource_refusals: IntCounterVec,
    /// `tollgate_owned_resources`
    pub owned_resources: IntGauge,
    /// `tollgate_resource_claims_pending`
    pub resource_claims_pending: IntGauge,
    /// `tollgate_upstream_errors_total{provider,kind}`
    pub upstream_errors: IntCounterVec,
    /// `tollgate_live_config_keys`
    pub keys_loaded: IntGauge,
    /// `tollgate_unpriced_events_total`
    pub unpriced_events: IntCounter,
    /// `tollgate_ledger_queue_depth`
    pub ledger_queue_depth: IntGauge,
    /// `tollgate_ledger_batch_seconds`
    pub ledger_batch_seconds: Histogram,
    /// `tollgate_events_written_total`
    pub events_written: IntCounter,
    /// `tollgate_events_spooled_total`
    pub events_spooled: IntCounter,
    /// `tollgate_events_replayed_total`
    pub events_replayed: IntCounter,
    /// `tollgate_events_dropped_total` (must stay 0)
    pub events_dropped: IntCounter,
    /// `tollgate_client_connections_refused_total{reason}`
    pub connections_refused: IntCounterVec,
    /// `tollgate_malformed_requests_total{status}`
    pub malformed_requests: IntCounterVec,
    /// `tollgate_journal_failures_total` (must stay 0)
    pub journal_failures: IntCounter,
    /// `tollgate_spool_bytes`
    pub spool_bytes: IntGauge,
    /// `tollgate_limit_refusals_total{limit}`
    pub limit_refusals: IntCounterVec,
    /// `tollgate_alerts_fired_total{limit}`
    pub alerts_fired: IntCounterVec,
    /// `tollgate_alerts_dropped_total`
    pub alerts_dropped: IntCounter,
    /// `tollgate_webhook_deliveries_total{result}`
    pub webhook_deliveries: IntCounterVec,
    /// `tollgate_fail_open_total{reason}`
    pub fail_open: IntCounterVec,
    /// `tollgate_enforcement_degraded`
    pub degraded: IntGauge,
    /// `tollgate_live_config_age_seconds`
    pub live_config_age: prometheus::Gauge,
    /// `tollgate_fleet_sync_age_seconds`
    pub fleet_sync_age: prometheus::Gauge,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    c: T,
) -> prometheus::Result<T> {
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    reg(registry, IntCounterVec::new(Opts::new(name, help), labels)?)
}

fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> prometheus::Result<HistogramVec> {
    reg(
        registry,
        HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            labels,
        )?,
    )
}

fn counter(registry: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    reg(registry, IntCounter::new(name, help)?)
}

fn gauge(registry: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    reg(registry, IntGauge::new(name, help)?)
}

impl Metrics {
    /// Declares every metric in a fresh registry.
    pub fn new(max_org_labels: usize) -> prometheus::Result<Metrics> {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let request_seconds = histogram_vec(
            &r,
            "tollgate_request_duration_seconds",
            "Time from a request's arrival to the end of its response (streams included).",
            &["provider"],
            LATENCY_BUCKETS,
        )?;
        let upstream_seconds = histogram_vec(
            &r,
            "tollgate_upstream_duration_seconds",
            "Time from contacting the upstream until its response ended.",
            &["provider"],
            LATENCY_BUCKETS,
        )?;
        Ok(Metrics {
            requests: counter_vec(&r, "tollgate_requests_total", "Requests answered by the gateway, by provider, model (a priced model name, or unknown), operation and status class.", &["provider", "model", "operation", "status_class"])?,
            overhead_seconds: reg(&r, Histogram::with_opts(HistogramOpts::new("tollgate_gateway_overhead_seconds", "The gateway's own added time: total time minus upstream time (identity, flags, limits, metering, forwarding).").buckets(OVERHEAD_BUCKETS.to_vec()))?)?,
            org_tokens: counter_vec(&r, "tollgate_org_tokens_total", "Tokens metered, by org (capped; the rest are org=\"other\") and kind (input, output, thinking, cached).", &["org", "kind"])?,
            org_images: counter_vec(&r, "tollgate_org_images_total", "Images generated, by org.", &["org"])?,
            org_video_seconds: counter_vec(&r, "tollgate_org_video_seconds_total", "Seconds of video generated, by org.", &["org"])?,
            org_cost: reg(&r, CounterVec::new(Opts::new("tollgate_org_cost_dollars_total", "Cost in US dollars (metered in integer micro-dollars), by org."), &["org"])?)?,
            model_tokens: counter_vec(&r, "tollgate_model_tokens_total", "Tokens metered, by model (a priced model name, or unknown) and kind.", &["model", "kind"])?,
            model_images: counter_vec(&r, "tollgate_model_images_total", "Images generated, by model.", &["model"])?,
            model_video_seconds: counter_vec(&r, "tollgate_model_video_seconds_total", "Seconds of video generated, by model.", &["model"])?,
            model_cost: reg(&r, CounterVec::new(Opts::new("tollgate_model_cost_dollars_total", "Cost in US dollars, by model."), &["model"])?)?,
            org_labels: OrgLabels::new(max_org_labels),
            model_series: DashMap::new(),
            provider_seconds: [Provider::Gemini.as_str(), Provider::Vertex.as_str(), "none"].map(|p| {
                (
                    request_seconds.with_label_values(&[p]),
                    upstream_seconds.with_label_values(&[p]),
                )
            }),
            auth_failures: counter_vec(&r, "tollgate_auth_failures_total", "Requests refused because the gateway key was missing, unknown or revoked, or the org header was not allowed.", &["reason"])?,
            feature_refusals: counter_vec(&r, "tollgate_feature_refusals_total", "Requests refused with 403 because a feature flag of the org is off.", &["feature"])?,
            resource_refusals: counter_vec(&r, "tollgate_resource_refusals_total", "Requests refused with 403 because they name a resource (file, cached content, batch, operation) the org does not own: in the path, in the body, or (listing) entries filtered out.", &["where"])?,
            owned_resources: gauge(&r, "tollgate_owned_resources", "Resources (files, cached contents, batches, operations) whose owning org the gateway knows.")?,
            resource_claims_pending: gauge(&r, "tollgate_resource_claims_pending", "Resource ownerships recorded in memory and not yet written to the store.")?,
            upstream_errors: counter_vec(&r, "tollgate_upstream_errors_total", "Requests the upstream could not serve (unreachable, timeout), answered by the gateway.", &["provider", "kind"])?,
            keys_loaded: gauge(&r, "tollgate_live_config_keys", "Gateway keys in the live snapshot (revoked included).")?,
            unpriced_events: counter(&r, "tollgate_unpriced_events_total", "Usage events of models without a price, priced with the fallback.")?,
            ledger_queue_depth: gauge(&r, "tollgate_ledger_queue_depth", "Usage events waiting in memory for the ledger writer.")?,
            // Batches are one transaction: sub-millisecond on SQLite, up to seconds on a busy database.
            ledger_batch_seconds: reg(&r, Histogram::with_opts(HistogramOpts::new("tollgate_ledger_batch_seconds", "Time to write one batch of usage events to the store.").buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]))?)?,
            events_written: counter(&r, "tollgate_events_written_total", "Usage events written to the store (replays included).")?,
            events_spooled: counter(&r, "tollgate_events_spooled_total", "Usage events appended to the spool file (queue full or store unwritable).")?,
            events_replayed: counter(&r, "tollgate_events_replayed_total", "Spooled usage events written to the store after it came back.")?,
            events_dropped: counter(&r, "tollgate_events_dropped_total", "Usage events lost because neither the store nor the spool could take them. Must stay 0.")?,
            connections_refused: counter_vec(&r, "tollgate_client_connections_refused_total", "Client connections closed by the gateway before a request was answered: per_address_cap (the address holds gateway.max_connections_per_address), header_timeout (headers not complete within gateway.header_timeout_ms).", &["reason"])?,
            malformed_requests: counter_vec(&r, "tollgate_malformed_requests_total", "Requests refused before routing because they are not valid HTTP/1.1 (request line, headers, framing, CONNECT, an HTTP/2 preface), by status class.", &["status"])?,
            journal_failures: counter(&r, "tollgate_journal_failures_total", "Usage events that could not be written to the journal (they are still stored, but would not survive a crash). Must stay 0.")?,
            spool_bytes: gauge(&r, "tollgate_spool_bytes", "Bytes of usage events waiting in spool files.")?,
            limit_refusals: counter_vec(&r, "tollgate_limit_refusals_total", "Requests refused with 429 because an org reached a usage limit, by limit type.", &["limit"])?,
            alerts_fired: counter_vec(&r, "tollgate_alerts_fired_total", "Limit alerts fired (threshold or 100 % crossed, once per limit and period), by limit type.", &["limit"])?,
            alerts_dropped: counter(&r, "tollgate_alerts_dropped_total", "Limit alerts not queued because the alert queue was full.")?,
            webhook_deliveries: counter_vec(&r, "tollgate_webhook_deliveries_total", "Alert webhook deliveries, by result (ok, failed after retries).", &["result"])?,
            fail_open: counter_vec(&r, "tollgate_fail_open_total", "Requests forwarded without limit enforcement because limits or counters were unavailable, by reason.", &["reason"])?,
            degraded: gauge(&r, "tollgate_enforcement_degraded", "1 while limits are not enforced (fail-open), else 0.")?,
            live_config_age: reg(&r, prometheus::Gauge::new("tollgate_live_config_age_seconds", "Seconds since keys, orgs, flags and limits were last loaded from the store.")?)?,
            fleet_sync_age: reg(&r, prometheus::Gauge::new("tollgate_fleet_sync_age_seconds", "Seconds since the usage counters were last synced with the store.")?)?,
            registry: r,
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

/// The token kinds of `tollgate_{org,model}_tokens_total`, in [`Series::tokens`] order.
pub const TOKEN_KINDS: [&str; 4] = ["input", "output", "thinking", "cached"];

/// The usage series of one org or one model, resolved once instead of per request (a label
/// lookup hashes the label values and takes the vector's lock).
pub struct Series {
    /// Tokens by [`TOKEN_KINDS`].
    pub tokens: [IntCounter; 4],
    /// Images generated.
    pub images: IntCounter,
    /// Seconds of video generated.
    pub video_seconds: IntCounter,
    /// Cost in dollars.
    pub cost: prometheus::Counter,
}

impl Series {
    fn resolve(
        label: &str,
        tokens: &IntCounterVec,
        images: &IntCounterVec,
        video_seconds: &IntCounterVec,
        cost: &CounterVec,
    ) -> Series {
        Series {
            tokens: TOKEN_KINDS.map(|kind| tokens.with_label_values(&[label, kind])),
            images: images.with_label_values(&[label]),
            video_seconds: video_seconds.with_label_values(&[label]),
            cost: cost.with_label_values(&[label]),
        }
    }
}

impl Metrics {
    /// The request and upstream duration histograms of a provider (`None`: a request without a
    /// route).
    pub fn durations(&self, provider: Option<Provider>) -> &(Histogram, Histogram) {
        &self.provider_seconds[match provider {
            Some(Provider::Gemini) => 0,
            Some(Provider::Vertex) => 1,
            None => 2,
        }]
    }

    /// The usage series of an org: under its own name for the first `max_org_labels` orgs
    /// seen, under `other` for the rest.
    pub fn org_series(&self, org: i64, name: &str) -> Arc<Series> {
        let resolve = |label: &str| {
            Arc::new(Series::resolve(
                label,
                &self.org_tokens,
                &self.org_images,
                &self.org_video_seconds,
                &self.org_cost,
            ))
        };
        let labels = &self.org_labels;
        if let Some(s) = labels.series.get(&org) {
            return s.clone();
        }
        let other = || labels.other.get_or_init(|| resolve(OTHER_ORG)).clone();
        if labels.taken.load(Ordering::Relaxed) >= labels.cap {
            return other();
        }
        match labels.series.entry(org) {
            dashmap::Entry::Occupied(e) => e.get().clone(),
            dashmap::Entry::Vacant(v) => {
                // A slot is claimed before the label is made: two workers that both saw the last
                // free slot must not both take it.
                let claimed = labels
                    .taken
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                        (n < labels.cap).then_some(n + 1)
                    })
                    .is_ok();
                if claimed {
                    v.insert(resolve(name)).clone()
                } else {
                    drop(v);
                    other()
                }
            }
        }
    }

    /// The usage series of a model label (a priced model's name, `unknown` or `none`: a set
    /// bounded by the price table).
    pub fn model_series(&self, model: &str) -> Arc<Series> {
        if let Some(s) = self.model_series.get(model) {
            return s.clone();
        }
        self.model_series
            .entry(model.into())
            .or_insert_with(|| {
                Arc::new(Series::resolve(
                    model,
                    &self.model_tokens,
                    &self.model_images,
                    &self.model_video_seconds,
                    &self.model_cost,
                ))
            })
            .clone()
    }
}

/// The cardinality guard for per-org labels: the first `cap` orgs seen get a label of their own
/// (their name); every later one is counted as `other`, so a fleet with many orgs cannot blow up
/// the series count.
pub struct OrgLabels {
    cap: usize,
    /// Orgs with a label of their own (an org renamed later keeps the name it was first seen with).
    series: DashMap<i64, Arc<Series>>,
    /// `series.len()` without visiting every shard on each request past the cap.
    taken: AtomicUsize,
    other: OnceLock<Arc<Series>>,
}

/// The label of orgs past the cap.
pub const OTHER_ORG: &str = "other";

impl OrgLabels {
    fn new(cap: usize) -> OrgLabels {
        OrgLabels {
            cap,
            series: DashMap::new(),
            taken: AtomicUsize::new(0),
            other: OnceLock::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Workers racing for the last free labels take no more than there are: every org past
    /// the cap is `other`, whichever worker saw it first.
    #[test]
    fn racing_workers_never_label_more_orgs_than_the_cap() {
        for _ in 0..20 {
            let m = Arc::new(Metrics::new(10).unwrap());
            let barrier = Arc::new(std::sync::Barrier::new(8));
            let workers: Vec<_> = (0..8)
                .map(|w| {
                    let (m, barrier) = (m.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        for org in 0..40 {
                            m.org_series(w * 1_000 + org, &format!("org-{w}-{org}"));
                        }
                    })
                })
                .collect();
            for w in workers {
                w.join().unwrap();
            }
            assert_eq!(m.org_labels.series.len(), 10);
            assert_eq!(m.org_labels.taken.load(Ordering::Relaxed), 10);
        }
    }
}
