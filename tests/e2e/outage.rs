//! Store outages: with the database unreachable (PostgreSQL behind a TCP proxy that the test
//! cuts) or unwritable (SQLite locked by another writer), requests keep flowing, their events go
//! to the spool, and once the store is back every request has exactly one event: none lost, none
//! doubled.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use store::{ConnectOptions, Store};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::harness::{client, eventually, postgres_url, unique_schema, Opts, TestEnv};

/// A TCP proxy in front of PostgreSQL that can be cut (every connection closed, new ones refused).
pub struct CuttableProxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    cut: Arc<Notify>,
}

impl CuttableProxy {
    pub async fn start(target: SocketAddr) -> CuttableProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(Notify::new());
        let (up2, cut2) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let cut = cut2.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.notified() => {}
                    }
                });
            }
        });
        CuttableProxy { addr, up, cut }
    }

    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

async fn send(env: &TestEnv, key: &str, ids: std::ops::Range<usize>, tag: &str) -> Vec<String> {
    let mut sent = Vec::new();
    for i in ids {
        let id = format!("{tag}-{i}");
        let r = client()
            .post(format!(
                "{}/v1beta/models/gemini-2.5-flash:generateContent",
                env.gateway_url
            ))
            .header("x-goog-api-key", key)
            .header("x-request-id", &id)
            .json(&json!({"contents": [{"parts": [{"text": "hello there"}]}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "requests flow whatever the store does");
        r.bytes().await.unwrap();
        sent.push(id);
    }
    sent
}

async fn wait_for_all(store: &Store, org: i64, expected: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = store.count_events(org).await.unwrap_or(-1);
        if n == expected {
            return;
        }
        assert!(
            n <= expected,
            "more events ({n}) than requests ({expected}): a replay doubled some"
        );
        assert!(
            Instant::now() < deadline,
            "only {n} of {expected} events after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn assert_each_once(store: &Store, ids: &[String]) {
    for id in ids {
        let e = store
            .get_event(id)
            .await
            .unwrap_or_else(|e| panic!("event {id} lost: {e}"));
        assert_eq!(
            e.input_tokens, 2,
            "{id}: the replayed event keeps its counts"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_loses_nothing() {
    let Some(pg) = postgres_url() else { return };
    let target: SocketAddr = "127.0.0.1:5432".parse().unwrap();
    let proxy = CuttableProxy::start(target).await;
    let schema = unique_schema("outage");
    let via_proxy = pg.replacen("127.0.0.1:5432", &proxy.addr.to_string(), 1);
    assert_ne!(
        via_proxy, pg,
        "TOLLGATE_TEST_POSTGRES must name 127.0.0.1:5432 for this test"
    );
    let env = TestEnv::start_with(Opts {
        database: Some((via_proxy, Some(schema.clone()))),
        ..Opts::default()
    })
    .await;
    let (org, key) = env.org_with_key("acme").await;
    let direct = Store::connect(
        &pg,
        &ConnectOptions {
            pg_schema: Some(schema),
            max_connections: 2,
            ..Default::default()
        },
    )
    .await
    .unwrap();

    let mut ids = send(&env, &key, 0..20, "before").await;
    proxy.cut();
    ids.extend(send(&env, &key, 0..20, "during").await);
    let g = env.running.as_ref().unwrap().gateway.as_ref().unwrap();
    // Events are spooled once a write to the cut store fails (up to the 1 s acquire timeout).
    eventually(
        Duration::from_secs(15),
        "events written while the store was down did not go to the spool",
        || async { g.metrics.events_spooled.get() > 0 },
    )
    .await;
    proxy.restore();
    ids.extend(send(&env, &key, 0..20, "after").await);

    wait_for_all(&direct, org, 60).await;
    assert_each_once(&direct, &ids).await;
    assert!(g.metrics.events_replayed.get() > 0);
    assert_eq!(g.metrics.events_dropped.get(), 0);
    env.stop().await;
}

/// Under concurrent load, PostgreSQL kills the gateway's connections again and again
/// (`pg_terminate_backend`, as a failover or an operator would): requests keep being answered,
/// and every one ends as exactly one event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_connections_killed_under_load_lose_nothing() {
    let Some(pg) = postgres_url() else { return };
    let schema = unique_schema("killed");
    let env = TestEnv::start_with(Opts {
        database: Some((pg.clone(), Some(schema.clone()))),
        ..Opts::default()
    })
    .await;
    let (org, key) = env.org_with_key("acme").await;
    let admin = sqlx::PgPool::connect(&pg).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let (stop, app) = (stop.clone(), format!("tollgate/{schema}"));
        tokio::spawn(async move {
            let mut killed = 0i64;
            while !stop.load(Ordering::SeqCst) {
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE application_name = $1) t",
                )
                .bind(&app)
                .fetch_one(&admin)
                .await
                .unwrap();
                killed += n;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            killed
        })
    };
    let mut senders = Vec::new();
    for c in 0..8 {
        let (env_url, key) = (env.gateway_url.clone(), key.clone());
        senders.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..100 {
                let id = format!("killed-{c}-{i}");
                let r = client()
                    .post(format!(
                        "{env_url}/v1beta/models/gemini-2.5-flash:generateContent"
                    ))
                    .header("x-goog-api-key", &key)
                    .header("x-request-id", &id)
                    .json(&json!({"contents": [{"parts": [{"text": "hello there"}]}]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "requests flow whatever the store does");
                r.bytes().await.unwrap();
                ids.push(id);
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for s in senders {
        ids.extend(s.await.unwrap());
    }
    stop.store(true, Ordering::SeqCst);
    let killed = killer.await.unwrap();
    assert!(killed > 0, "the test killed no connection");
    // The store is reachable again: new connections replace the killed ones.
    wait_for_all(&env.store, org, ids.len() as i64).await;
    assert_each_once(&env.store, &ids).await;
    let g = env.running.as_ref().unwrap().gateway.as_ref().unwrap();
    println!(
        "pg_terminate_backend: {killed} connections killed, {} requests, {} events stored, {} spooled, {} dropped",
        ids.len(),
        env.store.count_events(org).await.unwrap(),
        g.metrics.events_spooled.get(),
        g.metrics.events_dropped.get()
    );
    assert_eq!(g.metrics.events_dropped.get(), 0);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_locked_against_writes_loses_nothing() {
    let env = TestEnv::start().await;
    let (org, key) = env.org_with_key("acme").await;
    let mut ids = send(&env, &key, 0..10, "before").await;
    wait_for_all(&env.store, org, 10).await;

    // Another process holds the write lock (as root, file permissions would not stop us).
    let path = env.db_url.trim_start_matches("sqlite://").to_owned();
    let locker = sqlx::sqlite::SqliteConnectOptions::new().filename(&path);
    let mut conn = sqlx::ConnectOptions::connect(&locker).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut conn)
        .await
        .unwrap();
    ids.extend(send(&env, &key, 0..20, "during").await);
    let g = env.running.as_ref().unwrap().gateway.as_ref().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while g.metrics.events_spooled.get() == 0 {
        assert!(
            Instant::now() < deadline,
            "nothing was spooled while the database was locked"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
    drop(conn);
    ids.extend(send(&env, &key, 0..10, "after").await);

    wait_for_all(&env.store, org, 40).await;
    assert_each_once(&env.store, &ids).await;
    assert_eq!(g.metrics.events_dropped.get(), 0);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_the_queue() {
    // The ledger would write only once a minute: everything is still queued when we stop.
    let env = TestEnv::start_with(Opts {
        flush_ms: 60_000,
        ..Opts::default()
    })
    .await;
    let (org, key) = env.org_with_key("acme").await;
    let ids = send(&env, &key, 0..30, "drain").await;
    // Each event is queued after its response: once all 30 are in the queue, none was written.
    let g = env.running.as_ref().unwrap().gateway.as_ref().unwrap();
    eventually(
        Duration::from_secs(10),
        "the 30 events did not all reach the ledger's queue",
        || async { g.metrics.ledger_queue_depth.get() == 30 },
    )
    .await;
    assert_eq!(
        env.store.count_events(org).await.unwrap(),
        0,
        "the queue has not been written yet"
    );
    let store = env.store.clone();
    let db = env.db_url.clone();
    let TestEnv { running, dir, .. } = env;
    // Stop right away: whatever is still queued must be written before stop returns.
    let running = running.unwrap();
    if let Some(g) = running.gateway {
        g.stop(gateway::Stop::Graceful).await;
    }
    let fresh = Store::connect(&db, &ConnectOptions::default())
        .await
        .unwrap();
    assert_eq!(
        fresh.count_events(org).await.unwrap(),
        30,
        "no event left behind in the queue"
    );
    assert_each_once(&fresh, &ids).await;
    drop((store, dir));
}
