//! Parsing of what people type, in one place for the API, the console and the CLI: dollars ↔
//! micro-dollars, limit values in their unit, feature states, and UTC date windows.

use chrono::{Datelike, Duration, NaiveDate};
use serde::{Deserialize, Serialize};
use store::LimitType;
use utoipa::ToSchema;

use super::OpsError;

/// Parses US dollars with up to 6 decimals (`25`, `12.50`, `$0.000001`) into micro-dollars.
pub fn dollars_to_micros(field: &str, raw: &str) -> Result<i64, OpsError> {
    let raw = raw.trim();
    let s = raw.strip_prefix('$').unwrap_or(raw);
    if s.starts_with('-') {
        return Err(OpsError::invalid(
            field,
            format!("must be 0 or more, got {raw}"),
        ));
    }
    let bad = || {
        OpsError::invalid(
            field,
            format!("must be US dollars with up to 6 decimals (e.g. 25 or 12.50), got {raw:?}"),
        )
    };
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if (whole.is_empty() && frac.is_empty())
        || frac.len() > 6
        || !whole.chars().all(|c| c.is_ascii_digit())
        || !frac.chars().all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac_micros: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse().map_err(|_| bad())?
    };
    whole
        .checked_mul(1_000_000)
        .and_then(|w| w.checked_add(frac_micros))
        .ok_or_else(bad)
}

/// Micro-dollars as dollars with six decimals (`$12.500000`), exact.
pub fn micros_to_dollars(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    format!("{sign}${}.{:06}", m / 1_000_000, m % 1_000_000)
}

/// Micro-dollars as a JSON number of dollars (for display; exact below 2^53 micro-dollars).
pub fn micros_to_usd(micros: i64) -> f64 {
    micros as f64 / 1e6
}

/// A limit value in its unit: dollars for `monthly_cost`, a whole number otherwise. Returns the
/// stored integer (micro-dollars for cost).
pub fn limit_value(limit_type: LimitType, raw: &str) -> Result<i64, OpsError> {
    if limit_type == LimitType::MonthlyCost {
        return dollars_to_micros("value", raw);
    }
    let raw = raw.trim();
    let v: i64 = raw
        .parse()
        .map_err(|_| OpsError::invalid("value", format!("must be a whole number, got {raw:?}")))?;
    if v < 0 {
        return Err(OpsError::invalid(
            "value",
            format!("must be 0 or more, got {raw}"),
        ));
    }
    Ok(v)
}

/// A limit value as typed in its unit (`12.5` dollars for cost, `1000` otherwise).
pub fn format_limit_value(limit_type: LimitType, value: i64) -> String {
    match limit_type {
        LimitType::MonthlyCost => micros_to_dollars(value),
        _ => value.to_string(),
    }
}

/// The limit's unit, as the API names it.
pub fn limit_unit(limit_type: LimitType) -> &'static str {
    match limit_type {
        LimitType::MonthlyTokens => "tokens",
        LimitType::MonthlyCost => "usd",
        LimitType::DailyAds => "images_and_videos",
        LimitType::DailyRequests => "requests",
    }
}

/// An alert threshold in percent (1–100).
pub fn alert_threshold(raw: i64) -> Result<i32, OpsError> {
    i32::try_from(raw)
        .ok()
        .filter(|a| (1..=100).contains(a))
        .ok_or_else(|| {
            OpsError::invalid(
                "alert_threshold",
                format!("must be a percent between 1 and 100, got {raw}"),
            )
        })
}

/// `on`/`off` (and `true`/`false`, `enable[d]`/`disable[d]`).
pub fn feature_state(raw: &str) -> Result<bool, OpsError> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "enable" | "enabled" => Ok(true),
        "off" | "false" | "disable" | "disabled" => Ok(false),
        other => Err(OpsError::invalid(
            "state",
            format!("must be on or off, got {other:?}"),
        )),
    }
}

/// A named window of UTC days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RangeName {
    /// From the first of this month to today.
    ThisMonth,
    /// Today and the 6 days before.
    #[serde(rename = "last_7_days")]
    Last7Days,
    /// Today and the 29 days before.
    #[serde(rename = "last_30_days")]
    Last30Days,
}

/// An inclusive window of UTC days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Window {
    /// First day included (UTC).
    pub from: NaiveDate,
    /// Last day included (UTC).
    pub to: NaiveDate,
}

/// Longest custom window, in days (a decade of rollups is still cheap; a typo of 20260 is not).
const MAX_WINDOW_DAYS: i64 = 3700;

/// A date typed as `YYYY-MM-DD`.
pub fn day(field: &str, raw: &str) -> Result<NaiveDate, OpsError> {
    NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d").map_err(|_| {
        OpsError::invalid(
            field,
            format!("must be a date like 2026-11-28 (UTC), got {raw:?}"),
        )
    })
}

/// The window a request names: `range`, or `from`/`to` (each defaulting to this month's first
/// day and today), never both.
pub fn window(
    today: NaiveDate,
    range: Option<RangeName>,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<Window, OpsError> {
    if let Some(range) = range {
        if from.is_some() || to.is_some() {
            return Err(OpsError::invalid(
                "range",
                "give either range or from/to, not both",
            ));
        }
        let from = match range {
            RangeName::ThisMonth => today.with_day(1).unwrap_or(today),
            RangeName::Last7Days => today - Duration::days(6),
            RangeName::Last30Days => today - Duration::days(29),
        };
        return Ok(Window { from, to: today });
    }
    let from = match from {
        Some(v) => day("from", v)?,
        None => today.with_day(1).unwrap_or(today),
    };
    let to = match to {
        Some(v) => day("to", v)?,
        None => today,
    };
    if to < from {
        return Err(OpsError::invalid(
            "from",
            format!("from ({from}) is after to ({to})"),
        ));
    }
    if (to - from).num_days() > MAX_WINDOW_DAYS {
        return Err(OpsError::invalid(
            "from",
            format!("a window may span at most {MAX_WINDOW_DAYS} days"),
        ));
    }
    Ok(Window { from, to })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_are_exact_micro_dollars() {
        assert_eq!(dollars_to_micros("v", "25").unwrap(), 25_000_000);
        assert_eq!(dollars_to_micros("v", "$12.5").unwrap(), 12_500_000);
        assert_eq!(dollars_to_micros("v", "0.000001").unwrap(), 1);
        assert_eq!(dollars_to_micros("v", ".5").unwrap(), 500_000);
        for bad in ["-1", "1.0000001", "abc", "", ".", "1e3", "+1", "1.-5"] {
            assert!(dollars_to_micros("v", bad).is_err(), "{bad:?}");
        }
        assert!(
            dollars_to_micros("v", "99999999999999").is_err(),
            "overflow"
        );
        assert_eq!(micros_to_dollars(12_500_000), "$12.500000");
        assert_eq!(micros_to_dollars(-1), "-$0.000001");
    }

    #[test]
    fn limit_values_in_their_unit() {
        assert_eq!(
            limit_value(LimitType::MonthlyCost, "12.5").unwrap(),
            12_500_000
        );
        assert_eq!(limit_value(LimitType::DailyRequests, "50").unwrap(), 50);
        let e = limit_value(LimitType::DailyRequests, "-5").unwrap_err();
        assert!(e.to_string().contains("0 or more"), "{e}");
        assert!(limit_value(LimitType::MonthlyTokens, "1.5").is_err());
        assert!(alert_threshold(0).is_err() && alert_threshold(101).is_err());
        assert_eq!(alert_threshold(80).unwrap(), 80);
    }

    #[test]
    fn windows_are_utc_days() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 2).unwrap();
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(
            window(today, Some(RangeName::ThisMonth), None, None).unwrap(),
            Window {
                from: d("2026-12-01"),
                to: today
            }
        );
        assert_eq!(
            window(today, Some(RangeName::Last7Days), None, None)
                .unwrap()
                .from,
            d("2026-11-26")
        );
        assert_eq!(
            window(today, None, Some("2026-11-01"), Some("2026-11-30")).unwrap(),
            Window {
                from: d("2026-11-01"),
                to: d("2026-11-30")
            }
        );
        assert!(window(today, None, Some("2026-12-02"), Some("2026-12-01")).is_err());
        assert!(window(today, None, Some("yesterday"), None).is_err());
        assert!(window(today, Some(RangeName::ThisMonth), Some("2026-11-01"), None).is_err());
    }
}
