//! Retention on SQLite and PostgreSQL: events past `ledger.retention_days` are deleted in
//! batches while the rollup totals (what limits, charts and invoices read) stay equal; alerts,
//! audit rows and ended sessions go by their own settings.

use chrono::{Duration, Utc};
use store::{LimitType, UsageEvent};
use tollgate::retention::{prune_low, prune_once, Db, Pace, Retention, BATCH};

use crate::harness::{postgres_url, unique_schema, Opts, TestEnv};

async fn env(postgres: bool) -> Option<TestEnv> {
    Some(env_and_schema(postgres).await?.0)
}

async fn env_and_schema(postgres: bool) -> Option<(TestEnv, Option<String>)> {
    let database = match postgres {
        false => None,
        true => Some((postgres_url()?, Some(unique_schema("retention")))),
    };
    let schema = database.as_ref().and_then(|(_, s)| s.clone());
    let env = TestEnv::start_with(Opts {
        database,
        ..Opts::default()
    })
    .await;
    Some((env, schema))
}

fn event(n: usize, org: i64, days_ago: i64) -> UsageEvent {
    UsageEvent {
        request_id: format!("{days_ago:03}-{n:08}"),
        occurred_at: Utc::now() - Duration::days(days_ago) - Duration::minutes(n as i64 % 600),
        org_id: Some(org),
        provider: "gemini".into(),
        model: "gemini-2.5-flash".into(),
        operation: "generateContent".into(),
        status: 200,
        metered: true,
        input_tokens: 7,
        output_tokens: 5,
        total_tokens: 12,
        cost_micros: 30,
        priced: true,
        ..UsageEvent::default()
    }
}

async fn pruning_keeps_every_total(postgres: bool) {
    let Some((env, schema)) = env_and_schema(postgres).await else {
        return;
    };
    let (org, _) = env.org_with_key("acme").await;
    // 2,500 events: 1,500 of 100-104 days ago, 1,000 of the last 4 days.
    let mut events = Vec::new();
    for n in 0..2_500 {
        let days_ago = if n < 1_500 {
            100 + n as i64 % 5
        } else {
            n as i64 % 4
        };
        events.push(event(n, org, days_ago));
    }
    for chunk in events.chunks(500) {
        let (_, r) = env.store.write_events(chunk.to_vec()).await;
        r.unwrap();
    }
    let window = format!(
        "/api/v1/orgs/acme/usage?from={}&to={}",
        (Utc::now() - Duration::days(120)).format("%Y-%m-%d"),
        Utc::now().format("%Y-%m-%d")
    );
    let before = env.admin_json(&window).await;
    assert_eq!(before["totals"]["requests"], 2_500, "{before}");
    assert_eq!(env.store.count_events(org).await.unwrap(), 2_500);

    // Alerts, audit rows and a session, made now.
    env.store
        .record_alert(org, LimitType::DailyRequests, "2026-12-01", 80, 10, 8)
        .await
        .unwrap();
    let _token = env.superuser_token().await; // writes an audit row
    let user = env
        .store
        .create_user("s@example.com", "a long password", false)
        .await
        .unwrap();
    env.store
        .create_session(user.id, Duration::hours(1))
        .await
        .unwrap();

    // The gentle pass as the serving process runs it: on a thread of its own, with its own
    // connection.
    let now = Utc::now();
    let db = Db {
        url: env.db_url.clone(),
        connect: store::ConnectOptions {
            pg_schema: schema,
            ..Default::default()
        },
        shared: env.store.clone(),
    };
    let pruned = prune_low(db, Retention::from_days(90, 0, 0), now)
        .await
        .unwrap();
    assert_eq!(
        pruned.events, 1_500,
        "every event older than 90 days, in batches of {BATCH}"
    );
    assert_eq!((pruned.alerts, pruned.audit, pruned.sessions), (0, 0, 0));
    assert_eq!(env.store.count_events(org).await.unwrap(), 1_000);
    let oldest = env.store.oldest_event().await.unwrap().unwrap();
    assert!(oldest > now - Duration::days(90), "{oldest}");
    let after = env.admin_json(&window).await;
    assert_eq!(
        after["totals"], before["totals"],
        "pruning changes no total"
    );
    assert_eq!(after["by_day"], before["by_day"], "nor any day");
    let page = env.admin_json("/api/v1/orgs/acme/events").await;
    assert_eq!(
        page["kept_days"], 90,
        "the listing says how far back it goes"
    );

    // A month on: alerts and audit rows kept 30 days go, the session (1 h) has ended; events
    // kept for ever (0) stay.
    let later = now + Duration::days(31);
    let pruned = prune_once(
        &env.store,
        Retention::from_days(0, 30, 30),
        later,
        Pace::Fast,
    )
    .await
    .unwrap();
    assert_eq!(pruned.events, 0);
    assert_eq!(pruned.alerts, 1);
    assert!(pruned.audit >= 1, "{pruned:?}");
    assert_eq!(pruned.sessions, 1);
    assert!(env.store.list_alerts(org).await.unwrap().is_empty());
    assert_eq!(env.store.count_events(org).await.unwrap(), 1_000);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_pruning_keeps_every_total() {
    pruning_keeps_every_total(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_pruning_keeps_every_total() {
    pruning_keeps_every_total(true).await;
}

async fn the_export_equals_the_events(postgres: bool) {
    let Some(env) = env(postgres).await else {
        return;
    };
    let (org, _) = env.org_with_key("acme").await;
    // 4,800 events over 12 days; days 3 to 8 ago (~2,400, three export pages) are exported.
    let events: Vec<UsageEvent> = (0..4_800)
        .map(|n| {
            let mut e = event(n, org, n as i64 % 12);
            e.user_ref = Some(if n % 7 == 0 {
                "=cmd|' /C calc'!A0".into()
            } else {
                format!("user,{n}")
            });
            e
        })
        .collect();
    for chunk in events.chunks(500) {
        let (_, r) = env.store.write_events(chunk.to_vec()).await;
        r.unwrap();
    }
    let day = |d: i64| {
        (Utc::now() - Duration::days(d))
            .format("%Y-%m-%d")
            .to_string()
    };
    let (from, to) = (day(8), day(3));
    let mut expected: Vec<&UsageEvent> = events
        .iter()
        .filter(|e| {
            let d = e.occurred_at.format("%Y-%m-%d").to_string();
            d >= from && d <= to
        })
        .collect();
    expected.sort_by_key(|e| e.occurred_at);
    let cli = admin::ops::Actor::cli();
    let mut out = Vec::new();
    let n = admin::ops::export::export(
        &env.store,
        &cli,
        "acme",
        (&from, &to),
        admin::ops::export::Format::Jsonl,
        &mut out,
    )
    .await
    .unwrap();
    let got: Vec<UsageEvent> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(n as usize, expected.len());
    assert!(expected.len() > admin::ops::export::PAGE as usize * 2);
    // Stored timestamps are microseconds: compare what the store keeps.
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(g.request_id, e.request_id);
        assert_eq!(g.user_ref, e.user_ref);
        assert_eq!(
            (g.total_tokens, g.cost_micros, g.metered),
            (e.total_tokens, e.cost_micros, e.metered)
        );
        assert_eq!(
            g.occurred_at.timestamp_micros(),
            e.occurred_at.timestamp_micros()
        );
    }
    assert!(
        got.windows(2).all(|w| w[0].occurred_at <= w[1].occurred_at),
        "oldest first"
    );

    let mut csv = Vec::new();
    admin::ops::export::export(
        &env.store,
        &cli,
        "acme",
        (&from, &to),
        admin::ops::export::Format::Csv,
        &mut csv,
    )
    .await
    .unwrap();
    let csv = String::from_utf8(csv).unwrap();
    assert_eq!(
        csv.lines().count(),
        expected.len() + 1,
        "a header and a line per event"
    );
    assert!(csv.contains(",\"user,"), "separators are quoted");
    assert!(csv.contains("'=cmd|"), "a formula-looking cell is defused");

    // The same through the admin API, as a streamed download.
    let token = env.superuser_token().await;
    for (format, lines, kind) in [
        ("jsonl", expected.len(), "application/x-ndjson"),
        ("csv", expected.len() + 1, "text/csv; charset=utf-8"),
    ] {
        let r = crate::harness::client()
            .get(format!(
                "{}/api/v1/orgs/acme/events/export?from={from}&to={to}&format={format}",
                env.admin_url
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], kind);
        assert!(r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("acme-events-"));
        let body = r.text().await.unwrap();
        assert_eq!(body.lines().count(), lines, "{format}");
    }
    let r = crate::harness::client()
        .get(format!(
            "{}/api/v1/orgs/acme/events/export?from={to}&to={from}",
            env.admin_url
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "to before from");

    // A member (not an owner) may not export.
    let user = env
        .store
        .create_user("m@acme.test", "a long password", false)
        .await
        .unwrap();
    env.store
        .add_member(org, user.id, store::Role::Member)
        .await
        .unwrap();
    let member = admin::ops::Actor::of_user(&env.store, &user).await.unwrap();
    let refused = admin::ops::export::export(
        &env.store,
        &member,
        "acme",
        (&from, &to),
        admin::ops::export::Format::Jsonl,
        &mut Vec::new(),
    )
    .await;
    assert!(
        matches!(refused, Err(admin::ops::OpsError::Forbidden(_))),
        "{refused:?}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_export_equals_the_events() {
    the_export_equals_the_events(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_export_equals_the_events() {
    the_export_equals_the_events(true).await;
}

/// An operator looking at PostgreSQL's sessions sees which one is the pruning pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_pass_names_its_connection() {
    let Some((env, Some(schema))) = env_and_schema(true).await else {
        return;
    };
    let db = Db {
        url: env.db_url.clone(),
        connect: store::ConnectOptions {
            pg_schema: Some(schema.clone()),
            ..Default::default()
        },
        shared: env.store.clone(),
    };
    let url = env.db_url.clone();
    let mine = format!("tollgate%/{schema}");
    let thread = tollgate::retention::on_low_thread(db, move |store, pace| async move {
        store.ping().await?; // the pass's connection is open now
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE $1",
        )
        .bind(&mine)
        .fetch_all(&pool)
        .await
        .unwrap();
        pool.close().await;
        Ok((names, pace))
    })
    .unwrap();
    let (names, pace) = tokio::task::spawn_blocking(move || thread.join().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(
        names.contains(&format!("tollgate-prune/{schema}")),
        "the pass's connection is named for what it does: {names:?}"
    );
    assert_eq!(
        pace,
        Pace::Gentle,
        "PostgreSQL deletes at the server's priority"
    );
    env.stop().await;
}
