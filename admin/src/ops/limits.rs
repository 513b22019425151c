//! Usage limits: the four types, each shown with its value in its unit (dollars for cost), the
//! current period's usage and when that period resets (UTC).

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use serde::Serialize;
use store::{LimitSpec, LimitType, RollupGroup, Store};
use utoipa::ToSchema;

use super::authz::{check, Action};
use super::parse;
use super::{visible_org, Actor, OpsError};

/// A limit with the current period's usage beside it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LimitView {
    /// monthly_tokens, monthly_cost, daily_ads or daily_requests.
    pub limit_type: String,
    /// tokens, usd, images_and_videos or requests.
    pub unit: &'static str,
    /// The limit in its unit (dollars for cost).
    pub value: f64,
    /// The stored integer (micro-dollars for cost).
    pub raw_value: i64,
    /// Alert at this percent of the value.
    pub alert_threshold: i32,
    /// A disabled limit refuses nothing.
    pub enabled: bool,
    /// Usage in the current period, in the same unit as `value`.
    pub usage: f64,
    /// Usage as stored (micro-dollars for cost).
    pub raw_usage: i64,
    /// Usage as a percent of the value (0 when the value is 0 and nothing was used).
    pub percent: f64,
    /// normal, alert (past the threshold) or exceeded (at or over the value).
    pub state: &'static str,
    /// When the current period ends and usage starts again from 0 (UTC).
    pub resets_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// Parses a limit type.
pub fn limit_type(raw: &str) -> Result<LimitType, OpsError> {
    raw.trim().parse().map_err(|_| {
        OpsError::invalid(
            "limit_type",
            format!(
                "must be monthly_tokens, monthly_cost, daily_ads or daily_requests, got {raw:?}"
            ),
        )
    })
}

fn midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
}

/// When the period of `t` that contains `today` ends.
pub fn resets_at(t: LimitType, today: NaiveDate) -> DateTime<Utc> {
    match t {
        LimitType::DailyAds | LimitType::DailyRequests => midnight(today + Duration::days(1)),
        LimitType::MonthlyTokens | LimitType::MonthlyCost => {
            let (y, m) = if today.month() == 12 {
                (today.year() + 1, 1)
            } else {
                (today.year(), today.month() + 1)
            };
            midnight(NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(today))
        }
    }
}

fn unit_value(t: LimitType, raw: i64) -> f64 {
    match t {
        LimitType::MonthlyCost => parse::micros_to_usd(raw),
        _ => raw as f64,
    }
}

/// The org's limits with usage.
pub async fn list(store: &Store, actor: &Actor, org: &str) -> Result<Vec<LimitView>, OpsError> {
    let org = visible_org(store, actor, org).await?;
    check(actor, Some(org.id), Action::Read)?;
    let limits = store.list_limits(org.id).await?;
    let today = Utc::now().date_naive();
    let month_start = today.with_day(1).unwrap_or(today);
    let month = store
        .rollup_usage(Some(org.id), month_start, today, RollupGroup::Nothing)
        .await?
        .pop()
        .unwrap_or_default();
    let day = store
        .rollup_usage(Some(org.id), today, today, RollupGroup::Nothing)
        .await?
        .pop()
        .unwrap_or_default();
    Ok(limits
        .iter()
        .map(|l| {
            let used = match l.limit_type {
                LimitType::MonthlyTokens => month.total_tokens,
                LimitType::MonthlyCost => month.cost_micros,
                LimitType::DailyAds => day.images + day.videos,
                LimitType::DailyRequests => day.requests,
            };
            let percent = if l.value > 0 {
                used as f64 * 100.0 / l.value as f64
            } else if used > 0 {
                100.0
            } else {
                0.0
            };
            let state = if used >= l.value && (l.value > 0 || used > 0) {
                "exceeded"
            } else if percent >= f64::from(l.alert_threshold) {
                "alert"
            } else {
                "normal"
            };
            LimitView {
                limit_type: l.limit_type.to_string(),
                unit: parse::limit_unit(l.limit_type),
                value: unit_value(l.limit_type, l.value),
                raw_value: l.value,
                alert_threshold: l.alert_threshold,
                enabled: l.enabled,
                usage: unit_value(l.limit_type, used),
                raw_usage: used,
                percent: (percent * 100.0).round() / 100.0,
                state,
                resets_at: resets_at(l.limit_type, today),
                updated_at: l.updated_at,
            }
        })
        .collect())
}

/// Creates or replaces the org's limit of a type; `value` is in the limit's unit.
pub async fn set(
    store: &Store,
    actor: &Actor,
    org: &str,
    limit_type: LimitType,
    value: &str,
    alert_threshold: i64,
    enabled: bool,
) -> Result<LimitView, OpsError> {
    let org = visible_org(store, actor, org).await?;
    check(actor, Some(org.id), Action::ManageLimits)?;
    let spec = LimitSpec {
        limit_type,
        value: parse::limit_value(limit_type, value)?,
        alert_threshold: parse::alert_threshold(alert_threshold)?,
        enabled,
    };
    let audit = actor
        .audit("limit.set")
        .target(limit_type.to_string())
        .detail(serde_json::json!({
            "value": parse::format_limit_value(limit_type, spec.value),
            "alert_threshold": spec.alert_threshold,
            "enabled": spec.enabled,
        }));
    store.set_limit_audited(org.id, &spec, &audit).await?;
    list(store, actor, &org.id.to_string())
        .await?
        .into_iter()
        .find(|l| l.limit_type == limit_type.as_str())
        .ok_or_else(|| OpsError::Internal("a limit just set is missing".into()))
}

/// Removes the org's limit of a type.
pub async fn remove(
    store: &Store,
    actor: &Actor,
    org: &str,
    limit_type: LimitType,
) -> Result<(), OpsError> {
    let org = visible_org(store, actor, org).await?;
    check(actor, Some(org.id), Action::ManageLimits)?;
    let audit = actor.audit("limit.remove").target(limit_type.to_string());
    store
        .remove_limit_audited(org.id, limit_type, &audit)
        .await
        .map_err(|e| match e {
            store::StoreError::NotFound(_) => {
                OpsError::NotFound(format!("the {limit_type} limit of {}", org.name))
            }
            e => e.into(),
        })
}
