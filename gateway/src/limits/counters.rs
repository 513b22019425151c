//! In-memory usage counters per org and period: one atomic per kind holds settled usage plus
//! in-flight reservations plus the store's total at the last sync. Admission is a
//! compare-and-swap, so a burst of concurrent requests cannot slip past a limit; settlement and
//! sync are atomic adds. Periods roll over at UTC midnight and month start (from an injectable
//! clock). No I/O here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use dashmap::DashMap;

use super::{period_of, Amounts, Kind, OrgLimits, Refusal};

/// Where time comes from (tests inject their own).
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// One org's counters for one period (a UTC day, or a month).
#[derive(Debug)]
pub struct Period {
    /// The period number (`period_of`).
    pub id: i32,
    /// Store total at the last sync + local usage since + reservations, per kind of the period.
    used: [AtomicI64; 2],
    /// The store's total at the last sync.
    base: [AtomicI64; 2],
    /// Usage our ledger wrote to the store since the last sync.
    flushed: [AtomicI64; 2],
}

impl Period {
    fn new(id: i32) -> Period {
        Period {
            id,
            used: Default::default(),
            base: Default::default(),
            flushed: Default::default(),
        }
    }
}

/// Index of a kind within its period's arrays.
fn slot(k: Kind) -> usize {
    (k as usize) % 2
}

#[derive(Debug)]
struct OrgCounters {
    day: ArcSwap<Period>,
    month: ArcSwap<Period>,
}

/// An admitted request's hold on the counters, given back (adjusted to the truth) when it settles.
#[derive(Debug)]
pub struct Reservation {
    day: Arc<Period>,
    month: Arc<Period>,
    amounts: Amounts,
}

/// An org's usage of the periods a request was reserved in, after it settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeriodUsage {
    /// The usage, reservations of requests still in flight included.
    pub usage: Amounts,
    day: i32,
    month: i32,
}

impl PeriodUsage {
    /// The period (`period_of`'s id) a kind's usage belongs to.
    pub fn period(&self, k: Kind) -> i32 {
        if k.is_daily() {
            self.day
        } else {
            self.month
        }
    }
}

impl Reservation {
    /// The org's usage of the reservation's periods now, reservations included.
    pub fn usage(&self) -> Amounts {
        Amounts(
            Kind::ALL.map(|k| Counters::cell(&self.day, &self.month, k).load(Ordering::Acquire)),
        )
    }
}

/// Usage per org of the current periods, from the store (for [`Counters::sync`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreTotals(pub Amounts);

/// All orgs' counters.
pub struct Counters {
    orgs: DashMap<i64, Arc<OrgCounters>>,
    clock: Arc<dyn Clock>,
    /// The month id of the UTC day last asked about, packed as `day << 32 | month`: the
    /// calendar is consulted once a day, not several times per request.
    month_of_day: AtomicU64,
}

/// `num_days_from_ce` of 1970-01-01.
const UNIX_EPOCH_DAY_CE: i64 = 719_163;

impl Counters {
    /// Empty counters on a clock.
    pub fn new(clock: Arc<dyn Clock>) -> Counters {
        Counters {
            orgs: DashMap::new(),
            clock,
            month_of_day: AtomicU64::new(u64::MAX),
        }
    }

    /// The ids of the day and month periods `now` falls in (`period_of`'s ids, cheaper).
    fn period_ids(&self, now: DateTime<Utc>) -> (i32, i32) {
        let day = (now.timestamp().div_euclid(86_400) + UNIX_EPOCH_DAY_CE) as i32;
        let cached = self.month_of_day.load(Ordering::Relaxed);
        if (cached >> 32) as u32 == day as u32 {
            return (day, cached as u32 as i32);
        }
        let month = period_of(Kind::Tokens, now).0;
        self.month_of_day.store(
            (u64::from(day as u32) << 32) | u64::from(month as u32),
            Ordering::Relaxed,
        );
        (day, month)
    }

    /// Now, by the counters' clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    fn org(&self, org: i64) -> Arc<OrgCounters> {
        if let Some(o) = self.orgs.get(&org) {
            return o.clone();
        }
        let (day, month) = self.period_ids(self.clock.now());
        self.orgs
            .entry(org)
            .or_insert_with(|| {
                Arc::new(OrgCounters {
                    day: ArcSwap::from_pointee(Period::new(day)),
                    month: ArcSwap::from_pointee(Period::new(month)),
                })
            })
            .clone()
    }

    /// The org's current day and month periods, rolled over when the clock has moved on.
    fn periods(&self, org: i64, now: DateTime<Utc>) -> (Arc<Period>, Arc<Period>) {
        let o = self.org(org);
        let current = |slot: &ArcSwap<Period>, id: i32| {
            let p = slot.load_full();
            if p.id == id {
                return p;
            }
            // Roll over once, even when several requests notice at the same time.
            slot.rcu(|old| {
                if old.id == id {
                    old.clone()
                } else {
                    Arc::new(Period::new(id))
                }
            });
            slot.load_full()
        };
        let (day_id, month_id) = self.period_ids(now);
        (current(&o.day, day_id), current(&o.month, month_id))
    }

    fn cell<'a>(day: &'a Period, month: &'a Period, k: Kind) -> &'a AtomicI64 {
        let p = if k.is_daily() { day } else { month };
        &p.used[slot(k)]
    }

    /// Usage (settled, reserved and synced) of a kind in the current period.
    pub fn used(&self, org: i64, k: Kind) -> i64 {
        self.usage(org).get(k)
    }

    /// Usage (settled, reserved and synced) of every kind in the current periods.
    pub fn usage(&self, org: i64) -> Amounts {
        let (day, month) = self.periods(org, self.clock.now());
        Amounts(Kind::ALL.map(|k| Self::cell(&day, &month, k).load(Ordering::Acquire)))
    }

    /// Admits a request against the org's enabled limits and reserves its expected amounts, or
    /// says which limit refuses it (reserving nothing).
    pub fn try_reserve(
        &self,
        org: i64,
        limits: &OrgLimits,
        amounts: Amounts,
    ) -> Result<Reservation, Refusal> {
        let now = self.clock.now();
        let (day, month) = self.periods(org, now);
        // Kinds already reserved, undone if a later one refuses (no allocation per request).
        let mut taken = [Kind::ALL[0]; Kind::ALL.len()];
        let mut n_taken = 0;
        for k in Kind::ALL {
            let cell = Self::cell(&day, &month, k);
            let amount = amounts.get(k);
            let Some(rule) = limits.get(k) else {
                cell.fetch_add(amount, Ordering::AcqRel);
                taken[n_taken] = k;
                n_taken += 1;
                continue;
            };
            let mut cur = cell.load(Ordering::Acquire);
            loop {
                let over = if k.exact_amount() {
                    cur + amount > rule.value
                } else {
                    cur >= rule.value
                };
                if over {
                    for &t in &taken[..n_taken] {
                        Self::cell(&day, &month, t).fetch_sub(amounts.get(t), Ordering::AcqRel);
                    }
                    return Err(Refusal {
                        kind: k,
                        value: rule.value,
                        used: cur,
                        resets_at: period_of(k, now).1,
                    });
                }
                match cell.compare_exchange_weak(
                    cur,
                    cur + amount,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => break,
                    Err(actual) => cur = actual,
                }
            }
            taken[n_taken] = k;
            n_taken += 1;
        }
        Ok(Reservation {
            day,
            month,
            amounts,
        })
    }

    /// Replaces a reservation with what the request really used; returns the org's usage of
    /// the reservation's periods afterwards (for alerts, without a second lookup).
    pub fn settle(&self, r: Reservation, actual: Amounts) -> PeriodUsage {
        let usage = Amounts(Kind::ALL.map(|k| {
            let delta = actual.get(k) - r.amounts.get(k);
            Self::cell(&r.day, &r.month, k).fetch_add(delta, Ordering::AcqRel) + delta
        }));
        PeriodUsage {
            usage,
            day: r.day.id,
            month: r.month.id,
        }
    }

    /// Our ledger wrote events of an org to the store (usage that the next sync will see there).
    pub fn flushed(&self, org: i64, at: DateTime<Utc>, amounts: Amounts) {
        let (day, month) = self.periods(org, self.clock.now());
        for k in Kind::ALL {
            let p = if k.is_daily() { &day } else { &month };
            if p.id == period_of(k, at).0 {
                p.flushed[slot(k)].fetch_add(amounts.get(k), Ordering::AcqRel);
            }
        }
    }

    /// [`Counters::flushed`] for a written batch: amounts summed per org and period first, so
    /// each org's counters are looked up once per batch instead of once per event.
    pub fn flushed_batch(&self, events: impl IntoIterator<Item = (i64, DateTime<Utc>, Amounts)>) {
        let mut sums: HashMap<(i64, i32, i32), Amounts> = HashMap::new();
        for (org, at, amounts) in events {
            let (day_id, month_id) = self.period_ids(at);
            let sum = sums.entry((org, day_id, month_id)).or_default();
            for (s, a) in sum.0.iter_mut().zip(amounts.0) {
                *s += a;
            }
        }
        let now = self.clock.now();
        for ((org, day_id, month_id), amounts) in sums {
            let (day, month) = self.periods(org, now);
            for k in Kind::ALL {
                let (p, id) = if k.is_daily() {
                    (&day, day_id)
                } else {
                    (&month, month_id)
                };
                if p.id == id {
                    p.flushed[slot(k)].fetch_add(amounts.get(k), Ordering::AcqRel);
                }
            }
        }
    }

    /// The flushed amounts recorded so far, taken (reset to zero), per org. Call right before
    /// querying the store, then pass them to [`Counters::sync`].
    pub fn take_flushed(&self) -> HashMap<i64, Amounts> {
        let now = self.clock.now();
        let mut out = HashMap::new();
        for entry in self.orgs.iter() {
            let (day, month) = (entry.day.load_full(), entry.month.load_full());
            let mut a = Amounts::default();
            for k in Kind::ALL {
                let p = if k.is_daily() { &day } else { &month };
                if p.id == period_of(k, now).0 {
                    a.0[k as usize] = p.flushed[slot(k)].swap(0, Ordering::AcqRel);
                }
            }
            out.insert(*entry.key(), a);
        }
        out
    }

    /// Folds the store's totals of the current periods into the counters: what other gateways
    /// (and our own earlier runs) recorded appears, and what we flushed is no longer counted twice.
    pub fn sync(&self, totals: &HashMap<i64, StoreTotals>, flushed: &HashMap<i64, Amounts>) {
        let now = self.clock.now();
        let mut orgs: Vec<i64> = totals.keys().copied().collect();
        orgs.extend(self.orgs.iter().map(|e| *e.key()));
        orgs.sort_unstable();
        orgs.dedup();
        for org in orgs {
            let (day, month) = self.periods(org, now);
            let store = totals.get(&org).copied().unwrap_or_default().0;
            let ours = flushed.get(&org).copied().unwrap_or_default();
            for k in Kind::ALL {
                let p = if k.is_daily() { &day } else { &month };
                let old_base = p.base[slot(k)].swap(store.get(k), Ordering::AcqRel);
                let delta = store.get(k) - old_base - ours.get(k);
                p.used[slot(k)].fetch_add(delta, Ordering::AcqRel);
            }
        }
    }

    /// Puts back flushed amounts taken for a sync that failed.
    pub fn untake_flushed(&self, taken: HashMap<i64, Amounts>) {
        let now = self.clock.now();
        for (org, a) in taken {
            self.flushed(org, now, a);
        }
    }

    /// Number of orgs with counters (for metrics).
    pub fn len(&self) -> usize {
        self.orgs.len()
    }

    /// True when no org has counters.
    pub fn is_empty(&self) -> bool {
        self.orgs.is_empty()
    }
}
