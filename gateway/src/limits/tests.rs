//! Unit tests of the limit counters (with an injected clock).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, TimeZone, Utc};

use super::counters::{Clock, Counters, StoreTotals};
use super::*;

struct ManualClock(Mutex<DateTime<Utc>>);

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

impl ManualClock {
    fn at(t: DateTime<Utc>) -> Arc<ManualClock> {
        Arc::new(ManualClock(Mutex::new(t)))
    }
    fn set(&self, t: DateTime<Utc>) {
        *self.0.lock().unwrap() = t;
    }
}

fn limits(kind: Kind, value: i64) -> OrgLimits {
    let mut l = OrgLimits::default();
    l.0[kind as usize] = Some(Rule {
        value,
        alert_threshold: 80,
    });
    l
}

fn one_request(tokens: i64) -> Amounts {
    Amounts::new(1, 0, tokens, 0)
}

#[test]
fn daily_requests_admit_exactly_the_limit() {
    let c = Counters::new(ManualClock::at(
        Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap(),
    ));
    let l = limits(Kind::Requests, 5);
    for _ in 0..5 {
        let r = c.try_reserve(1, &l, one_request(10)).unwrap();
        c.settle(r, one_request(10));
    }
    let refusal = c.try_reserve(1, &l, one_request(10)).unwrap_err();
    assert_eq!(
        (refusal.kind, refusal.value, refusal.used),
        (Kind::Requests, 5, 5)
    );
    assert_eq!(
        refusal.resets_at,
        Utc.with_ymd_and_hms(2026, 11, 29, 0, 0, 0).unwrap()
    );
    assert!(
        c.try_reserve(2, &l, one_request(10)).is_ok(),
        "other orgs are not affected"
    );
}

#[test]
fn a_concurrent_burst_cannot_pass_the_limit() {
    let c = Arc::new(Counters::new(ManualClock::at(
        Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap(),
    )));
    let l = limits(Kind::Requests, 50);
    let admitted: usize = (0..8)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || {
                (0..25)
                    .filter(|_| c.try_reserve(7, &l, one_request(1)).is_ok())
                    .count()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .sum();
    assert_eq!(
        admitted, 50,
        "200 concurrent requests against 50: exactly 50 admitted"
    );
}

#[test]
fn token_limits_refuse_once_reached_and_reservations_count() {
    let c = Counters::new(ManualClock::at(
        Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap(),
    ));
    let l = limits(Kind::Tokens, 100);
    let held = c.try_reserve(1, &l, one_request(60)).unwrap();
    let second = c.try_reserve(1, &l, one_request(60)).unwrap();
    assert!(
        c.try_reserve(1, &l, one_request(1)).is_err(),
        "two reservations of 60 reach the limit of 100"
    );
    c.settle(held, one_request(10));
    c.settle(second, one_request(10));
    assert_eq!(
        c.used(1, Kind::Tokens),
        20,
        "settlement gives back what was not used"
    );
    assert!(c.try_reserve(1, &l, one_request(60)).is_ok());
}

#[test]
fn a_refusal_takes_nothing() {
    let c = Counters::new(ManualClock::at(
        Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap(),
    ));
    let mut l = limits(Kind::Requests, 10);
    l.0[Kind::Ads as usize] = Some(Rule {
        value: 3,
        alert_threshold: 80,
    });
    assert!(
        c.try_reserve(1, &l, Amounts::new(1, 4, 100, 5)).is_err(),
        "4 images would pass 3"
    );
    for k in Kind::ALL {
        assert_eq!(c.used(1, k), 0, "{k:?} untouched by a refused request");
    }
}

#[test]
fn periods_roll_over_at_utc_midnight_and_month_start() {
    let clock = ManualClock::at(Utc.with_ymd_and_hms(2026, 11, 30, 23, 59, 0).unwrap());
    let c = Counters::new(clock.clone());
    let l = limits(Kind::Requests, 2);
    let r = c.try_reserve(1, &l, Amounts::new(1, 1, 500, 700)).unwrap();
    c.settle(r, Amounts::new(1, 1, 500, 700));
    let r = c.try_reserve(1, &l, Amounts::new(1, 0, 0, 0)).unwrap();
    c.settle(r, Amounts::new(1, 0, 0, 0));
    assert!(c.try_reserve(1, &l, one_request(0)).is_err());

    clock.set(Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 1).unwrap());
    for k in Kind::ALL {
        assert_eq!(
            c.used(1, k),
            0,
            "{k:?}: yesterday and last month do not count"
        );
    }
    assert!(c.try_reserve(1, &l, one_request(0)).is_ok());

    // Within a month, only the day rolls over.
    let clock = ManualClock::at(Utc.with_ymd_and_hms(2026, 11, 10, 23, 0, 0).unwrap());
    let c = Counters::new(clock.clone());
    let r = c
        .try_reserve(1, &OrgLimits::default(), Amounts::new(1, 2, 300, 400))
        .unwrap();
    c.settle(r, Amounts::new(1, 2, 300, 400));
    clock.set(clock.now() + Duration::hours(2));
    assert_eq!((c.used(1, Kind::Requests), c.used(1, Kind::Ads)), (0, 0));
    assert_eq!((c.used(1, Kind::Tokens), c.used(1, Kind::Cost)), (300, 400));
}

#[test]
fn sync_folds_in_the_fleet_without_double_counting_our_own() {
    let c = Counters::new(ManualClock::at(
        Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap(),
    ));
    let now = c.now();
    // At start-up the store already holds 10 requests of today (another gateway, an earlier run).
    let totals = |n: i64| HashMap::from([(1, StoreTotals(Amounts::new(n, 0, n * 10, 0)))]);
    c.sync(&totals(10), &HashMap::new());
    assert_eq!(c.used(1, Kind::Requests), 10);
    // We serve 3; our ledger writes them.
    for _ in 0..3 {
        let r = c
            .try_reserve(1, &OrgLimits::default(), one_request(10))
            .unwrap();
        c.settle(r, one_request(10));
    }
    c.flushed(1, now, Amounts::new(3, 0, 30, 0));
    assert_eq!(c.used(1, Kind::Requests), 13);
    // Meanwhile another gateway served 5. The store now holds 10 + 3 + 5.
    let ours = c.take_flushed();
    c.sync(&totals(18), &ours);
    assert_eq!(
        c.used(1, Kind::Requests),
        18,
        "ours counted once, theirs added"
    );
    assert_eq!(c.used(1, Kind::Tokens), 180);
}

#[test]
fn a_flushed_batch_counts_only_its_events_of_the_current_periods() {
    let now = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap();
    let batch = [
        (1, now, Amounts::new(1, 0, 10, 5)),
        (2, now, Amounts::new(1, 2, 20, 7)),
        (
            1,
            now - chrono::Duration::hours(1),
            Amounts::new(1, 1, 30, 9),
        ),
        // Yesterday: this month's tokens and cost, not today's requests or ads.
        (
            1,
            now - chrono::Duration::days(1),
            Amounts::new(1, 4, 40, 11),
        ),
        // Last month: nothing current.
        (
            1,
            now - chrono::Duration::days(40),
            Amounts::new(1, 8, 50, 13),
        ),
    ];
    let one_by_one = Counters::new(ManualClock::at(now));
    for (org, at, a) in batch {
        one_by_one.flushed(org, at, a);
    }
    let batched = Counters::new(ManualClock::at(now));
    batched.flushed_batch(batch);
    let (a, b) = (one_by_one.take_flushed(), batched.take_flushed());
    assert_eq!(a, b);
    assert_eq!(b[&1], Amounts::new(2, 1, 80, 25));
    assert_eq!(b[&2], Amounts::new(1, 2, 20, 7));
}

#[test]
fn refusals_speak_googles_language() {
    let r = Refusal {
        kind: Kind::Cost,
        value: 5_000_000,
        used: 5_100_000,
        resets_at: Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap(),
    };
    let m = r.message();
    assert!(
        m.contains("monthly_cost")
            && m.contains("$5.000000")
            && m.contains("$5.100000")
            && m.contains("2026-12-01T00:00:00Z"),
        "{m}"
    );
    let v: serde_json::Value = serde_json::from_slice(&r.body()).unwrap();
    assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED");
    let h = r.headers(Utc.with_ymd_and_hms(2026, 11, 30, 23, 0, 0).unwrap());
    assert!(h.contains(&("retry-after", "3600".to_owned())));
    assert!(h.contains(&("x-ratelimit-remaining", "0".to_owned())));
}

#[test]
fn the_cached_period_ids_match_the_calendar_across_day_month_and_year_ends() {
    let clock = ManualClock::at(Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).unwrap());
    let c = Counters::new(clock.clone());
    let mut l = limits(Kind::Requests, 1_000_000);
    l.0[Kind::Tokens as usize] = Some(Rule {
        value: 1_000_000,
        alert_threshold: 80,
    });
    let mut t = Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).unwrap();
    let (mut last_day, mut last_month) = (0, 0);
    let (mut days, mut months) = (0, 0);
    // Every 7 hours for ~14 months, and the seconds around each midnight.
    for step in 0..1_500 {
        for dt in [Duration::zero(), Duration::seconds(1)] {
            let at = t + dt;
            clock.set(at);
            c.try_reserve(1, &l, one_request(1)).unwrap();
            let day = period_of(Kind::Requests, at).0;
            let month = period_of(Kind::Tokens, at).0;
            if day != last_day {
                days += 1;
                assert_eq!(c.used(1, Kind::Requests), 1, "a new day starts at 1 ({at})");
            }
            if month != last_month {
                months += 1;
                assert_eq!(c.used(1, Kind::Tokens), 1, "a new month starts at 1 ({at})");
            }
            (last_day, last_month) = (day, month);
        }
        t += if step % 2 == 0 {
            Duration::hours(7)
        } else {
            Duration::seconds(7 * 3600 - 1)
        };
    }
    assert!(days > 400 && months >= 14, "{days} days, {months} months");
}

#[test]
fn a_reservation_sees_its_periods_usage_and_settling_returns_it() {
    let c = Counters::new(ManualClock::at(
        Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap(),
    ));
    let l = limits(Kind::Requests, 10);
    let first = c.try_reserve(7, &l, Amounts::new(1, 0, 100, 50)).unwrap();
    let second = c.try_reserve(7, &l, Amounts::new(1, 2, 300, 70)).unwrap();
    // Both reservations held: each sees the org's whole usage, as a fresh lookup would.
    assert_eq!(first.usage(), Amounts::new(2, 2, 400, 120));
    assert_eq!(second.usage(), c.usage(7));
    // Settled with less than reserved: the usage returned is the org's after settling.
    assert_eq!(
        c.settle(first, Amounts::new(1, 0, 40, 20)).usage,
        Amounts::new(2, 2, 340, 90)
    );
    let settled = c.settle(second, Amounts::new(1, 1, 300, 70));
    assert_eq!(settled.usage, Amounts::new(2, 1, 340, 90));
    assert_eq!(c.usage(7), Amounts::new(2, 1, 340, 90));
    assert_eq!(
        settled.period(Kind::Requests),
        period_of(Kind::Requests, c.now()).0
    );
}

/// A request reserved before midnight and settled after: its usage belongs to the day that
/// ended, so it fires no alert for the new day (nor takes that day's alert slot).
#[tokio::test]
async fn a_request_spanning_midnight_fires_no_alert_for_the_new_day() {
    let clock = ManualClock::at(Utc.with_ymd_and_hms(2026, 11, 28, 23, 59, 59).unwrap());
    let c = Counters::new(clock.clone());
    let metrics = Arc::new(crate::metrics::Metrics::new(10).unwrap());
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let alerts = super::alerts::Alerts::for_tests(tx, metrics);
    let l = limits(Kind::Requests, 10);
    for _ in 0..8 {
        let r = c.try_reserve(1, &l, one_request(0)).unwrap();
        c.settle(r, one_request(0));
    }
    let late = c.try_reserve(1, &l, one_request(0)).unwrap();
    clock.set(Utc.with_ymd_and_hms(2026, 11, 29, 0, 0, 1).unwrap());
    let settled = c.settle(late, one_request(0));
    alerts.check(1, "acme", &l, settled, &c);
    assert!(
        rx.try_recv().is_err(),
        "no alert for the new day from yesterday's 90 %"
    );
    // The same usage checked within its own day does fire (the alert slot was not taken).
    clock.set(Utc.with_ymd_and_hms(2026, 11, 28, 23, 59, 59).unwrap());
    alerts.check(1, "acme", &l, settled, &c);
    let a = rx
        .try_recv()
        .expect("the 80 % alert of the day it belongs to");
    assert_eq!((a.threshold, a.usage), (80, 9));
}

/// Alerts remembered as fired are forgotten once their period ends: the map does not grow
/// with every org, limit and day for the life of the process.
#[tokio::test]
async fn fired_alerts_of_past_periods_are_forgotten() {
    let clock = ManualClock::at(Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap());
    let c = Counters::new(clock.clone());
    let metrics = Arc::new(crate::metrics::Metrics::new(10).unwrap());
    let (tx, _rx) = tokio::sync::mpsc::channel(1024);
    let alerts = super::alerts::Alerts::for_tests(tx, metrics);
    let mut both = limits(Kind::Requests, 1);
    both.0[Kind::Cost as usize] = Some(Rule {
        value: 1,
        alert_threshold: 80,
    });
    for org in 1..=100 {
        let r = c.try_reserve(org, &both, Amounts::new(1, 0, 0, 5)).unwrap();
        let settled = c.settle(r, Amounts::new(1, 0, 0, 5));
        alerts.check(org, "org", &both, settled, &c);
    }
    // Two thresholds each of a daily and a monthly limit, per org.
    assert_eq!(alerts.remembered(), 400);
    alerts.prune(Utc.with_ymd_and_hms(2026, 11, 28, 23, 0, 0).unwrap());
    assert_eq!(alerts.remembered(), 400, "the periods have not ended");
    alerts.prune(Utc.with_ymd_and_hms(2026, 11, 29, 0, 0, 1).unwrap());
    assert_eq!(
        alerts.remembered(),
        200,
        "the day's are gone, the month's stay"
    );
    alerts.prune(Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 1).unwrap());
    assert_eq!(alerts.remembered(), 0);
}
