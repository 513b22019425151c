//! Numbers for people, in one place so the pages and the CSV agree with the API: dollars with
//! cents (sub-cent when a non-zero amount is under a cent), thousands separators, percents,
//! UTC times.

use chrono::{DateTime, Utc};

/// `1234567` → `1,234,567`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Micro-dollars as dollars: `$1,234.57`; under a cent (and not zero), every digit:
/// `$0.000420`.
pub fn dollars(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    if m > 0 && m < 10_000 {
        return format!("{sign}$0.{m:06}");
    }
    // Cents, rounded half up.
    let cents = (m + 5_000) / 10_000;
    format!(
        "{sign}${}.{:02}",
        thousands((cents / 100) as i64),
        cents % 100
    )
}

/// Micro-dollars as a plain decimal for CSV and inputs: `12.5`, `0.000042`.
pub fn dollars_plain(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    let frac = format!("{:06}", m % 1_000_000);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        format!("{sign}{}", m / 1_000_000)
    } else {
        format!("{sign}{}.{frac}", m / 1_000_000)
    }
}

/// A percent with at most one decimal: `12.5 %`.
pub fn percent(p: f64) -> String {
    let rounded = (p * 10.0).round() / 10.0;
    if rounded.fract() == 0.0 {
        format!("{rounded:.0} %")
    } else {
        format!("{rounded:.1} %")
    }
}

/// A time in UTC, to the second: `2026-12-02 20:29:35 UTC`.
pub fn utc(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_people_write_them() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(-1_234), "-1,234");
        assert_eq!(dollars(0), "$0.00");
        assert_eq!(dollars(420), "$0.000420", "under a cent, every digit");
        assert_eq!(dollars(10_000), "$0.01");
        assert_eq!(dollars(1_234_567_890), "$1,234.57");
        assert_eq!(dollars(12_500_000), "$12.50");
        assert_eq!(dollars_plain(12_500_000), "12.5");
        assert_eq!(dollars_plain(42), "0.000042");
        assert_eq!(dollars_plain(3_000_000), "3");
        assert_eq!(percent(12.0), "12 %");
        assert_eq!(percent(12.345), "12.3 %");
    }
}
