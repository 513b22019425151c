//! Usage limits: the four limit types, the rules loaded from the store, the admission check that
//! reserves an estimate before forwarding, and the refusal it produces (Google's 429).
//!
//! Everything here runs on the request path and uses only in-memory state: atomics in
//! [`counters`], the limits in the live snapshot. No I/O, no lock held across an await.

pub mod alerts;
pub mod counters;

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use store::LimitType;

/// The four kinds of usage a limit can cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Forwarded metered requests per UTC day (`daily_requests`).
    Requests = 0,
    /// Images and videos generated per UTC day (`daily_ads`).
    Ads = 1,
    /// All tokens per calendar month (`monthly_tokens`).
    Tokens = 2,
    /// Micro-dollars per calendar month (`monthly_cost`).
    Cost = 3,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 4] = [Kind::Requests, Kind::Ads, Kind::Tokens, Kind::Cost];

    /// The store's name for it.
    pub fn limit_type(self) -> LimitType {
        match self {
            Kind::Requests => LimitType::DailyRequests,
            Kind::Ads => LimitType::DailyAds,
            Kind::Tokens => LimitType::MonthlyTokens,
            Kind::Cost => LimitType::MonthlyCost,
        }
    }

    /// From the store's name.
    pub fn from_limit_type(t: LimitType) -> Kind {
        match t {
            LimitType::DailyRequests => Kind::Requests,
            LimitType::DailyAds => Kind::Ads,
            LimitType::MonthlyTokens => Kind::Tokens,
            LimitType::MonthlyCost => Kind::Cost,
        }
    }

    /// Daily (requests, ads) or monthly (tokens, cost).
    pub fn is_daily(self) -> bool {
        matches!(self, Kind::Requests | Kind::Ads)
    }

    /// Whether the amount a request will use is known exactly before it runs (then a request
    /// that would pass the limit is refused); token and cost amounts are estimates (then a
    /// request is refused once usage has reached the limit, and its estimate is reserved).
    pub fn exact_amount(self) -> bool {
        self.is_daily()
    }

    /// The label used in metrics and headers.
    pub fn as_str(self) -> &'static str {
        self.limit_type().as_str()
    }
}

/// One enabled limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The cap per period.
    pub value: i64,
    /// Percent at which an alert fires.
    pub alert_threshold: i32,
}

/// An org's enabled limits, by kind (disabled limits are left out: they refuse nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrgLimits(pub [Option<Rule>; 4]);

impl OrgLimits {
    /// The rule of a kind, if enabled.
    pub fn get(&self, k: Kind) -> Option<Rule> {
        self.0[k as usize]
    }

    /// True when no limit is enabled.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }
}

/// What a request is expected to use (at admission) or used (when settled).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Amounts(pub [i64; 4]);

impl Amounts {
    /// The amount of one kind.
    pub fn get(&self, k: Kind) -> i64 {
        self.0[k as usize]
    }

    /// Builds amounts from requests, ads, tokens and micro-dollars.
    pub fn new(requests: i64, ads: i64, tokens: i64, cost_micros: i64) -> Amounts {
        Amounts([requests, ads, tokens, cost_micros])
    }
}

/// The period a kind is counted in, as a number, and when it ends.
pub fn period_of(kind: Kind, at: DateTime<Utc>) -> (i32, DateTime<Utc>) {
    if kind.is_daily() {
        let day = at.date_naive();
        let id = day.num_days_from_ce();
        let next = (day + Duration::days(1))
            .and_hms_opt(0, 0, 0)
            .unwrap_or_default()
            .and_utc();
        (id, next)
    } else {
        let id = at.year() * 12 + at.month0() as i32;
        let (y, m) = if at.month() == 12 {
            (at.year() + 1, 1)
        } else {
            (at.year(), at.month() + 1)
        };
        let next = Utc
            .with_ymd_and_hms(y, m, 1, 0, 0, 0)
            .single()
            .unwrap_or(at);
        (id, next)
    }
}

/// The period's name as alerts record it: `2026-11-28` or `2026-11`.
pub fn period_name(kind: Kind, at: DateTime<Utc>) -> String {
    if kind.is_daily() {
        at.format("%Y-%m-%d").to_string()
    } else {
        at.format("%Y-%m").to_string()
    }
}

/// Why a request was refused: which limit, its value, the usage and when it resets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The limit that refused.
    pub kind: Kind,
    /// Its value.
    pub value: i64,
    /// Usage (settled and reserved) at the time.
    pub used: i64,
    /// When the period ends.
    pub resets_at: DateTime<Utc>,
}

impl Refusal {
    fn show(&self, v: i64) -> String {
        match self.kind {
            Kind::Cost => format!("${}.{:06}", v / 1_000_000, (v % 1_000_000).abs()),
            _ => v.to_string(),
        }
    }

    /// The message of the 429 body.
    pub fn message(&self) -> String {
        format!(
            "Tollgate usage limit reached: {} limit of {} (used {}); resets_at {}",
            self.kind.as_str(),
            self.show(self.value),
            self.show(self.used),
            self.resets_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }

    /// Seconds from `now` until the limit resets (at least 1).
    pub fn retry_after(&self, now: DateTime<Utc>) -> i64 {
        (self.resets_at - now).num_seconds().max(1)
    }

    /// The headers of the 429: `Retry-After` and the `x-ratelimit-*` family (reset in seconds).
    pub fn headers(&self, now: DateTime<Utc>) -> Vec<(&'static str, String)> {
        let after = self.retry_after(now).to_string();
        vec![
            ("retry-after", after.clone()),
            ("x-ratelimit-limit", self.value.to_string()),
            (
                "x-ratelimit-remaining",
                (self.value - self.used).max(0).to_string(),
            ),
            ("x-ratelimit-reset", after),
            ("x-tollgate-limit", self.kind.as_str().to_owned()),
        ]
    }

    /// Google's error body.
    pub fn body(&self) -> bytes::Bytes {
        crate::error::google_error_body(429, &self.message(), "RESOURCE_EXHAUSTED")
    }
}

#[cfg(test)]
mod tests;
