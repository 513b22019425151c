//! The admin API's reads over an org with many events: usage for a window (totals and the five
//! breakdowns), the cross-org comparison, the newest page of events, the limits with usage and
//! the console's dashboard page, each a real HTTP request to a real admin server over SQLite and (with
//! `TOLLGATE_BENCH_POSTGRES` or `TOLLGATE_TEST_POSTGRES`) PostgreSQL.
//!
//! Run: `cargo bench --bench admin_reads` (TOLLGATE_BENCH_EVENTS sets the event count, default
//! 1,000,000, spread over 90 days, 12 models, 200 users and 4 tools). Seeding goes through the
//! store's ledger path, as the gateway's events do.

// A bench may unwrap: a failure is a broken fixture.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use chrono::{Duration, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use store::{ConnectOptions, Feature, Store, UsageEvent};

struct Seeded {
    url: String,
    token: String,
    cookie: String,
    _admin: admin::RunningAdmin,
    _dir: Option<tempfile::TempDir>,
}

fn event(i: usize, org: i64, now: chrono::DateTime<Utc>) -> UsageEvent {
    UsageEvent {
        request_id: format!("bench-{i}"),
        client_request_id: None,
        occurred_at: now - Duration::seconds((i as i64 * 7_777) % (90 * 86_400)),
        org_id: Some(org),
        key_id: None,
        user_ref: Some(format!("user-{}", i % 200)),
        tool: Some(format!("tool-{}", i % 4)),
        provider: if i % 5 == 0 { "vertex" } else { "gemini" }.into(),
        model: format!("gemini-2.{}-flash", i % 12),
        operation: "generateContent".into(),
        status: 200,
        streamed: i % 3 == 0,
        metered: true,
        input_tokens: 120,
        output_tokens: 300,
        thinking_tokens: 40,
        cached_tokens: 0,
        tool_prompt_tokens: 0,
        total_tokens: 460,
        input_audio_tokens: 0,
        output_image_tokens: 0,
        images: 0,
        videos: 0,
        video_seconds: 0,
        cost_micros: 900,
        estimated: false,
        priced: true,
        upstream_latency_ms: Some(300),
        total_latency_ms: 302,
    }
}

async fn seed(store: Store, dir: Option<tempfile::TempDir>, events: usize) -> Seeded {
    store.migrate().await.unwrap();
    let org = store.create_org("big", Feature::ALL).await.unwrap().id;
    for other in ["small-1", "small-2"] {
        store.create_org(other, Feature::ALL).await.unwrap();
    }
    let now = Utc::now();
    let started = Instant::now();
    let mut batch = Vec::with_capacity(5_000);
    for i in 0..events {
        batch.push(event(i, org, now));
        if batch.len() == 5_000 {
            store
                .write_events(std::mem::take(&mut batch))
                .await
                .1
                .unwrap();
        }
    }
    store.write_events(batch).await.1.unwrap();
    eprintln!(
        "seeded {events} events into {:?} in {:.1} s",
        store.backend(),
        started.elapsed().as_secs_f64()
    );
    let limit = store::LimitSpec {
        limit_type: store::LimitType::MonthlyTokens,
        value: 10_000_000_000,
        alert_threshold: 80,
        enabled: true,
    };
    store.set_limit(org, &limit).await.unwrap();
    let u = store
        .create_user("bench@example.com", "bench password", true)
        .await
        .unwrap();
    let (_, token) = store
        .create_token_audited(
            u.id,
            "bench",
            None,
            &store::Audit::new("bench", "token.create"),
        )
        .await
        .unwrap();
    let (secret, _) = store
        .create_session(u.id, Duration::hours(12))
        .await
        .unwrap();
    let admin = admin::start(
        admin::AdminSettings::new("127.0.0.1:0".parse().unwrap()),
        store,
    )
    .await
    .unwrap();
    Seeded {
        url: format!("http://{}", admin.addr),
        token,
        cookie: format!("tg_session={secret}"),
        _admin: admin,
        _dir: dir,
    }
}

fn reads(c: &mut Criterion) {
    let events: usize = std::env::var("TOLLGATE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut backends = vec![("sqlite", None)];
    if let Ok(pg) = std::env::var("TOLLGATE_BENCH_POSTGRES")
        .or_else(|_| std::env::var("TOLLGATE_TEST_POSTGRES"))
    {
        backends.push(("postgres", Some(pg)));
    }
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for (name, pg) in backends {
        let seeded = rt.block_on(async {
            match pg {
                None => {
                    let dir = tempfile::tempdir().unwrap();
                    let url = format!("sqlite://{}/bench.db", dir.path().display());
                    let s = Store::connect(&url, &ConnectOptions::default())
                        .await
                        .unwrap();
                    seed(s, Some(dir), events).await
                }
                Some(url) => {
                    let opts = ConnectOptions {
                        pg_schema: Some(format!("tg_bench_{}", std::process::id())),
                        ..Default::default()
                    };
                    let s = Store::connect(&url, &opts).await.unwrap();
                    seed(s, None, events).await
                }
            }
        });
        let mut group = c.benchmark_group(format!("admin_reads/{name}/{events}_events"));
        group.sample_size(20);
        for (label, path) in [
            (
                "usage_this_month",
                "/api/v1/orgs/big/usage?range=this_month",
            ),
            (
                "usage_last_30_days",
                "/api/v1/orgs/big/usage?range=last_30_days",
            ),
            ("usage_last_90_days", ""),
            ("cross_org_30_days", "/api/v1/usage/orgs?range=last_30_days"),
            ("events_newest_100", "/api/v1/orgs/big/events"),
            ("limits_with_usage", "/api/v1/orgs/big/limits"),
            (
                "console_dashboard_this_month",
                "/orgs/big/dashboard?range=this_month",
            ),
            (
                "console_dashboard_30_days",
                "/orgs/big/dashboard?range=last_30_days",
            ),
        ] {
            // The 90-day line names a window explicitly (range and from together are refused).
            let path = if label == "usage_last_90_days" {
                let from = (Utc::now() - Duration::days(89)).date_naive();
                format!("/api/v1/orgs/big/usage?from={from}")
            } else {
                path.to_owned()
            };
            let url = format!("{}{path}", seeded.url);
            // The API takes the token, the console's pages the session cookie.
            let get = || {
                http.get(&url)
                    .bearer_auth(&seeded.token)
                    .header("cookie", &seeded.cookie)
            };
            let status = rt.block_on(async { get().send().await.unwrap().status() });
            assert_eq!(status, 200, "{url}");
            group.bench_function(label, |b| {
                b.iter(|| rt.block_on(async { get().send().await.unwrap().bytes().await.unwrap() }))
            });
        }
        group.finish();
        browser_figure(name, &seeded);
        drop(seeded);
    }
    // The PostgreSQL schema holds a million events: dropped, not left in the test database.
    if let Ok(pg) = std::env::var("TOLLGATE_BENCH_POSTGRES")
        .or_else(|_| std::env::var("TOLLGATE_TEST_POSTGRES"))
    {
        rt.block_on(async {
            let pool = sqlx::PgPool::connect(&pg).await.unwrap();
            let ddl = format!(
                "DROP SCHEMA IF EXISTS tg_bench_{} CASCADE",
                std::process::id()
            );
            sqlx::query(&ddl).execute(&pool).await.unwrap();
        });
    }
}

/// The dashboard in Debian's chromium (tests/console/measure_dashboard.py), when the test
/// Python has Playwright: navigation start to the load event, median of five, printed.
fn browser_figure(backend: &str, seeded: &Seeded) {
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
    if !std::path::Path::new(python).exists() || !std::path::Path::new("/usr/bin/chromium").exists()
    {
        eprintln!("browser figure skipped: no .venv with Playwright or no /usr/bin/chromium");
        return;
    }
    let secret = seeded.cookie.trim_start_matches("tg_session=");
    let url = format!("{}/orgs/big/dashboard?range=last_30_days", seeded.url);
    let out = std::process::Command::new(python)
        .args([
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/console/measure_dashboard.py"
            ),
            &url,
            secret,
        ])
        .output();
    match out {
        Ok(o) => eprintln!(
            "browser {backend} dashboard_30_days: {}{}",
            String::from_utf8_lossy(&o.stdout).trim(),
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => eprintln!("browser figure failed: {e}"),
    }
}

criterion_group!(benches, reads);
criterion_main!(benches);
