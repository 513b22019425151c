//! Upgrades from databases that earlier builds created: `Store::migrate` must bring them forward
//! with their data, on SQLite and (when `TOLLGATE_TEST_POSTGRES` names a server) PostgreSQL.
//!
//! `fixtures/initial-as-shipped/` holds the initial migration exactly as the first build shipped
//! it, before `usage_events.client_request_id` was added to that file in place.

// Tests may unwrap and panic: a failure is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use chrono::{TimeZone, Utc};
use sqlx::migrate::Migrator;
use store::*;

mod common;

fn shipped(dialect: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/initial-as-shipped")
        .join(dialect)
}

async fn sqlite() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/t.db", dir.path().display());
    (
        Store::connect(&url, &ConnectOptions::default())
            .await
            .unwrap(),
        dir,
    )
}

async fn postgres(tag: &str) -> Option<Store> {
    let Ok(url) = std::env::var("TOLLGATE_TEST_POSTGRES") else {
        common::missing("TOLLGATE_TEST_POSTGRES is not set (PostgreSQL upgrade test)");
        return None;
    };
    let opts = ConnectOptions {
        pg_schema: Some(format!(
            "tg_upgrade_{tag}_{}_{}",
            std::process::id(),
            Utc::now().timestamp_micros()
        )),
        max_connections: 2,
        ..Default::default()
    };
    Some(Store::connect(&url, &opts).await.unwrap_or_else(|e| {
        panic!("TOLLGATE_TEST_POSTGRES is set but PostgreSQL is unreachable: {e}")
    }))
}

/// Applies the migrations in `dir` the way an earlier build did, then writes one org and one
/// event with that build's columns. Returns the org's id.
async fn as_earlier_build(store: &Store, dir: PathBuf) -> i64 {
    let old = Migrator::new(dir).await.unwrap();
    let at = Utc.with_ymd_and_hms(2026, 11, 28, 7, 0, 0).unwrap();
    macro_rules! fill {
        ($pool:expr) => {{
            old.run($pool).await.unwrap();
            let org: i64 = sqlx::query_scalar(
                "INSERT INTO organizations (name, created_at) VALUES ($1, $2) RETURNING id",
            )
            .bind("acme")
            .bind(at)
            .fetch_one($pool)
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO usage_events (request_id, occurred_at, org_id, provider, model, \
                 operation, status, metered, input_tokens, output_tokens, total_tokens, \
                 cost_micros, total_latency_ms) \
                 VALUES ('old-1', $1, $2, 'gemini', 'gemini-2.5-flash', 'generateContent', 200, \
                 TRUE, 7, 3, 10, 42, 5)",
            )
            .bind(at)
            .bind(org)
            .execute($pool)
            .await
            .unwrap();
            org
        }};
    }
    match store {
        Store::Sqlite(pool, _) => fill!(pool),
        Store::Postgres(pool) => fill!(pool),
    }
}

fn new_event(org: i64) -> UsageEvent {
    UsageEvent {
        request_id: "new-1".into(),
        client_request_id: Some("client-abc".into()),
        occurred_at: Utc::now(),
        org_id: Some(org),
        key_id: None,
        user_ref: None,
        tool: None,
        provider: "gemini".into(),
        model: "gemini-2.5-flash".into(),
        operation: "generateContent".into(),
        status: 200,
        streamed: false,
        metered: true,
        input_tokens: 1,
        output_tokens: 2,
        thinking_tokens: 0,
        cached_tokens: 0,
        tool_prompt_tokens: 0,
        total_tokens: 3,
        input_audio_tokens: 0,
        output_image_tokens: 0,
        images: 0,
        videos: 0,
        video_seconds: 0,
        cost_micros: 9,
        estimated: false,
        priced: true,
        upstream_latency_ms: Some(1),
        total_latency_ms: 2,
    }
}

async fn database_of_the_first_build_is_brought_forward(store: Store, dialect: &str) {
    let org = as_earlier_build(&store, shipped(dialect)).await;

    // sqlx alone refuses this database: "previously applied but has been modified".
    store.migrate().await.unwrap();

    let old = store.get_event("old-1").await.unwrap();
    assert_eq!(old.org_id, Some(org));
    assert_eq!(
        (old.input_tokens, old.output_tokens, old.cost_micros),
        (7, 3, 42)
    );
    assert_eq!(old.client_request_id, None);
    assert_eq!(store.get_org(org).await.unwrap().name, "acme");

    // The column the repair added works, and the later migrations ran (config_version is new).
    assert_eq!(store.insert_events(&[new_event(org)]).await.unwrap(), 1);
    assert_eq!(
        store.get_event("client-abc").await.unwrap().request_id,
        "new-1"
    );
    store.config_version().await.unwrap();
    assert_eq!(store.count_events(org).await.unwrap(), 2);

    // Once repaired there is nothing left to repair, and migrating again is harmless.
    assert!(!store.repair_edited_initial().await.unwrap());
    store.migrate().await.unwrap();
}

/// Only that one known earlier file is repaired: any other edit is still refused, clearly.
async fn other_edits_are_still_refused(store: Store, dialect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = "20261128000001_initial.sql";
    let mut sql = std::fs::read_to_string(shipped(dialect).join(file)).unwrap();
    sql.push_str("\n-- an edit nobody knows about\n");
    std::fs::write(dir.path().join(file), sql).unwrap();
    as_earlier_build(&store, dir.path().to_path_buf()).await;

    let err = store.migrate().await.unwrap_err().to_string();
    assert!(
        err.contains("20261128000001") && err.contains("modified"),
        "{err}"
    );
    assert!(!store.repair_edited_initial().await.unwrap());
}

#[tokio::test]
async fn sqlite_database_of_the_first_build_is_brought_forward() {
    let (s, _dir) = sqlite().await;
    database_of_the_first_build_is_brought_forward(s, "sqlite").await;
}

#[tokio::test]
async fn sqlite_other_edits_are_still_refused() {
    let (s, _dir) = sqlite().await;
    other_edits_are_still_refused(s, "sqlite").await;
}

#[tokio::test]
async fn postgres_database_of_the_first_build_is_brought_forward() {
    let Some(s) = postgres("fwd").await else {
        return;
    };
    database_of_the_first_build_is_brought_forward(s, "postgres").await;
}

#[tokio::test]
async fn postgres_other_edits_are_still_refused() {
    let Some(s) = postgres("edit").await else {
        return;
    };
    other_edits_are_still_refused(s, "postgres").await;
}
