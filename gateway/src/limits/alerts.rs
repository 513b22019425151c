//! Limit alerts: the first time in a period that an org's usage crosses a limit's alert
//! threshold, and again at 100 %, an alert is recorded in the store (once per period across the
//! whole fleet: the store's unique key decides), logged, counted, and POSTed to a webhook with
//! retries. The request path only checks atomics and does a `try_send`; recording and delivery
//! happen on a background task, so a slow or failing receiver never slows a request.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use serde::Serialize;
use store::Store;
use tokio::sync::mpsc;

use super::Amounts;

use super::counters::{Counters, PeriodUsage};
use super::{period_name, period_of, Kind, OrgLimits};
use crate::metrics::Metrics;

/// Where alerts are delivered.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// The receiver.
    pub url: url::Url,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Attempts after the first.
    pub retries: u32,
}

/// An alert, as recorded and as POSTed to the webhook.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Alert {
    /// The org's id.
    pub org_id: i64,
    /// The org's name.
    pub org: String,
    /// The limit type.
    pub limit: &'static str,
    /// The limit's value.
    pub value: i64,
    /// Usage when it fired.
    pub usage: i64,
    /// The percent crossed (the alert threshold, or 100).
    pub threshold: i32,
    /// The period (`2026-11-28` or `2026-11`).
    pub period: String,
    /// When the period ends.
    pub resets_at: DateTime<Utc>,
}

/// The request-path side of alerting.
pub struct Alerts {
    tx: mpsc::Sender<Alert>,
    fired: DashMap<(i64, Kind, i32, i32), ()>,
    metrics: Arc<Metrics>,
}

impl Alerts {
    /// Alerts that go to `tx` (tests read them there).
    #[cfg(test)]
    pub(crate) fn for_tests(tx: mpsc::Sender<Alert>, metrics: Arc<Metrics>) -> Alerts {
        Alerts {
            tx,
            fired: DashMap::new(),
            metrics,
        }
    }

    /// Checks an org's enabled limits after its usage changed (what [`Counters::settle`]
    /// returns); queues alerts not yet fired.
    pub fn check(
        &self,
        org: i64,
        org_name: &str,
        limits: &OrgLimits,
        settled: PeriodUsage,
        counters: &Counters,
    ) {
        if limits.is_empty() {
            return;
        }
        let usage = settled.usage;
        for k in Kind::ALL {
            let Some(rule) = limits.get(k) else { continue };
            if rule.value <= 0 {
                continue;
            }
            let used = usage.get(k);
            for pct in [rule.alert_threshold, 100] {
                if i128::from(used) * 100 < i128::from(pct) * i128::from(rule.value) {
                    continue;
                }
                let now = counters.now();
                let (period_id, resets_at) = period_of(k, now);
                if period_id != settled.period(k) {
                    // The request was reserved in a period that has ended (it spanned
                    // midnight): that usage says nothing about the new period.
                    continue;
                }
                if self.fired.insert((org, k, period_id, pct), ()).is_some() {
                    continue;
                }
                let alert = Alert {
                    org_id: org,
                    org: org_name.to_owned(),
                    limit: k.as_str(),
                    value: rule.value,
                    usage: used,
                    threshold: pct,
                    period: period_name(k, now),
                    resets_at,
                };
                if self.tx.try_send(alert).is_err() {
                    self.metrics.alerts_dropped.inc();
                }
            }
        }
    }

    /// Forgets the alerts of periods that have ended (they cannot fire again).
    pub fn prune(&self, now: DateTime<Utc>) {
        self.fired
            .retain(|(_, k, period_id, _), _| *period_id >= period_of(*k, now).0);
    }

    /// Alerts remembered as fired.
    pub fn remembered(&self) -> usize {
        self.fired.len()
    }

    /// `x-tollgate-limit-warning` for an org at or above an alert threshold, e.g.
    /// `monthly_cost=85%, daily_requests=100%`.
    /// `usage` is the org's, as its reservation sees it ([`Reservation::usage`]).
    pub fn warning(limits: &OrgLimits, usage: Amounts) -> Option<String> {
        if limits.is_empty() {
            return None;
        }
        let mut parts = Vec::new();
        for k in Kind::ALL {
            let Some(rule) = limits.get(k) else { continue };
            if rule.value <= 0 {
                continue;
            }
            let pct = i128::from(usage.get(k)) * 100 / i128::from(rule.value);
            if pct >= i128::from(rule.alert_threshold) {
                parts.push(format!("{}={pct}%", k.as_str()));
            }
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

/// Starts the alert task: records, logs, counts and delivers alerts.
pub fn start(
    store: Store,
    webhook: Option<WebhookSettings>,
    metrics: Arc<Metrics>,
) -> (Arc<Alerts>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Alert>(1024);
    let alerts = Arc::new(Alerts {
        tx,
        fired: DashMap::new(),
        metrics: metrics.clone(),
    });
    let client = reqwest::Client::builder().no_proxy().build().ok();
    let held = alerts.clone();
    let task = tokio::spawn(async move {
        let mut prune = tokio::time::interval(Duration::from_secs(60));
        loop {
            let a = tokio::select! {
                a = rx.recv() => a,
                _ = prune.tick() => {
                    held.prune(Utc::now());
                    continue;
                }
            };
            let Some(a) = a else { break };
            let lt = Kind::ALL
                .iter()
                .find(|k| k.as_str() == a.limit)
                .map(|k| k.limit_type());
            let Some(lt) = lt else { continue };
            match store
                .record_alert(a.org_id, lt, &a.period, a.threshold, a.value, a.usage)
                .await
            {
                Ok(Some(_)) => {}
                Ok(None) => continue, // another gateway recorded this one first
                Err(e) => {
                    tracing::warn!(error.kind = e.kind(), org = %a.org, limit = a.limit, "cannot record a limit alert; delivering it anyway");
                }
            }
            tracing::warn!(org = %a.org, limit = a.limit, value = a.value, usage = a.usage, threshold = a.threshold, period = %a.period, "usage limit alert");
            metrics.alerts_fired.with_label_values(&[a.limit]).inc();
            if let (Some(hook), Some(client)) = (&webhook, &client) {
                tokio::spawn(deliver(client.clone(), hook.clone(), a, metrics.clone()));
            }
        }
    });
    (alerts, task)
}

async fn deliver(
    client: reqwest::Client,
    hook: WebhookSettings,
    alert: Alert,
    metrics: Arc<Metrics>,
) {
    let mut backoff = Duration::from_millis(500);
    for attempt in 0..=hook.retries {
        let sent = client
            .post(hook.url.clone())
            .timeout(hook.timeout)
            .json(&alert)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                metrics.webhook_deliveries.with_label_values(&["ok"]).inc();
                return;
            }
            Ok(r) => tracing::warn!(
                status = r.status().as_u16(),
                attempt,
                "alert webhook refused the alert"
            ),
            Err(e) => tracing::warn!(error = %e, attempt, "alert webhook unreachable"),
        }
        if attempt < hook.retries {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    metrics
        .webhook_deliveries
        .with_label_values(&["failed"])
        .inc();
}
