//! The `tollgate` binary killed with SIGKILL under load, and stopped with SIGTERM: no answered
//! request loses its event, no org loses what it created, an idle gateway stops at once.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use store::{ConnectOptions, Feature, KeyKind, Store};

use crate::fake_google::{FakeGoogle, PROVIDER_KEY};
use crate::harness::{bin, client, eventually, free_port};

/// A `tollgate serve` process on its own ports, with its data in `dir`.
struct Serve {
    child: Child,
    gateway: String,
}

fn config(dir: &Path, fake: &FakeGoogle, grace_secs: u64) -> (std::path::PathBuf, u16) {
    let port = free_port();
    let text = format!(
        "[database]\nurl = \"sqlite://{d}/tollgate.db\"\n\
         [gateway]\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace_secs = {grace_secs}\nrefresh_secs = 1\n\
         [admin]\nlisten = \"127.0.0.1:{a}\"\n[metrics]\nlisten = \"127.0.0.1:{m}\"\n\
         [providers.gemini]\nbase_url = \"{g}\"\n[providers.vertex]\nbase_url = \"{g}\"\n\
         [ledger]\nspool_path = \"{d}/spool/events.jsonl\"\nflush_ms = 200\n\
         [limits]\nsync_secs = 1\nsaved_config_path = \"{d}/live.json\"\n",
        d = dir.display(),
        a = free_port(),
        m = free_port(),
        g = fake.base_url(),
    );
    let path = dir.join("tollgate.toml");
    std::fs::write(&path, text).unwrap();
    (path, port)
}

impl Serve {
    async fn start(config: &Path, port: u16) -> Serve {
        let child = Command::new(bin())
            .args(["--config", config.to_str().unwrap(), "serve"])
            .env("GEMINI_API_KEY", PROVIDER_KEY)
            .env("VERTEX_API_KEY", PROVIDER_KEY)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let gateway = format!("http://127.0.0.1:{port}");
        eventually(
            Duration::from_secs(30),
            "the gateway never listened",
            || {
                let addr = format!("127.0.0.1:{port}");
                async move { tokio::net::TcpStream::connect(addr).await.is_ok() }
            },
        )
        .await;
        Serve { child, gateway }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// Waits for the process to exit; how long it took.
    async fn exited_within(&mut self, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if self.child.try_wait().unwrap().is_some() {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "tollgate did not exit within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The client request ids of the org's stored events (one entry per event).
async fn stored_client_ids(store: &Store, org: i64) -> Vec<String> {
    store
        .recent_events(org, 1_000_000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| e.client_request_id)
        .collect()
}

async fn org_and_key(dir: &Path) -> (Store, i64, String) {
    let store = Store::connect(
        &format!("sqlite://{}/tollgate.db", dir.display()),
        &ConnectOptions::default(),
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let org = store.create_org("acme", Feature::ALL).await.unwrap();
    let (_, key) = store
        .create_key(org.id, KeyKind::App, "test", None)
        .await
        .unwrap();
    (store, org.id, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_load_loses_no_answered_event_and_no_ownership() {
    let fake = FakeGoogle::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (store, org, key) = org_and_key(dir.path()).await;
    let (cfg, port) = config(dir.path(), &fake, 0);
    let mut serve = Serve::start(&cfg, port).await;

    // A cached content created just before the kill is still the org's after the restart.
    let http = client();
    let created = http
        .post(format!("{}/v1beta/cachedContents", serve.gateway))
        .header("x-goog-api-key", &key)
        .json(
            &json!({"model": "models/gemini-2.5-flash", "displayName": "kept",
            "contents": [{"parts": [{"text": "a long document"}]}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let cache: serde_json::Value = created.json().await.unwrap();
    let cache = cache["name"].as_str().unwrap().to_owned();

    // Eight clients send requests back to back; each answered id is remembered.
    let answered = Arc::new(Mutex::new(HashSet::new()));
    let mut clients = Vec::new();
    for c in 0..8 {
        let (http, url, key, answered) = (
            client(),
            format!(
                "{}/v1beta/models/gemini-2.5-flash:generateContent",
                serve.gateway
            ),
            key.clone(),
            answered.clone(),
        );
        clients.push(tokio::spawn(async move {
            for n in 0.. {
                let id = format!("kill-{c}-{n}");
                let sent = http
                    .post(&url)
                    .header("x-goog-api-key", &key)
                    .header("x-request-id", &id)
                    .json(&json!({"contents": [{"parts": [{"text": "hello"}]}]}))
                    .send()
                    .await;
                let Ok(resp) = sent else { return };
                let ok = resp.status() == 200;
                // Answered: the whole body arrived.
                if resp.bytes().await.is_ok() && ok {
                    answered.lock().unwrap().insert(id);
                }
            }
        }));
    }
    // Kill once a good number of requests were answered, with the cache just created.
    eventually(
        Duration::from_secs(30),
        "requests were not answered",
        || {
            let n = answered.lock().unwrap().len();
            async move { n >= 300 }
        },
    )
    .await;
    serve.signal("-KILL");
    serve.exited_within(Duration::from_secs(5)).await;
    for c in clients {
        c.await.unwrap();
    }
    let answered: HashSet<String> = answered.lock().unwrap().clone();

    let mut serve = Serve::start(&cfg, port).await;
    let stored = || async {
        stored_client_ids(&store, org)
            .await
            .into_iter()
            .filter(|id| answered.contains(id))
            .collect::<HashSet<String>>()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut found = stored().await;
    while found.len() < answered.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        found = stored().await;
    }
    let lost: Vec<&String> = answered.difference(&found).collect();
    println!(
        "sigkill: {} answered, {} stored after the restart, {} lost",
        answered.len(),
        found.len(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "{} of {} answered requests have no event after SIGKILL and restart: {lost:?}",
        lost.len(),
        answered.len()
    );
    let all = stored_client_ids(&store, org).await;
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), distinct.len(), "no request has two events");

    let got = client()
        .get(format!("{}/v1beta/{cache}", serve.gateway))
        .header("x-goog-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.status(),
        200,
        "the org still owns the cache it created just before the kill"
    );
    serve.signal("-TERM");
    serve.exited_within(Duration::from_secs(10)).await;
    let left: Vec<String> = std::fs::read_dir(dir.path().join("spool"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.is_empty(),
        "a clean stop leaves no journal or spool: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_requests_in_flight_finish_and_an_idle_gateway_stops_at_once() {
    let fake = FakeGoogle::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (store, org, key) = org_and_key(dir.path()).await;
    let (cfg, port) = config(dir.path(), &fake, 30);
    let gen = |model: &str| format!("/v1beta/models/{model}:generateContent");

    // Busy: a request the upstream answers after 3 s is in flight when SIGTERM comes.
    let mut serve = Serve::start(&cfg, port).await;
    let http = client();
    let slow = {
        let (http, url, key) = (
            http.clone(),
            format!("{}{}", serve.gateway, gen("gemini-2.5-slow-json")),
            key.clone(),
        );
        tokio::spawn(async move {
            http.post(url)
                .header("x-goog-api-key", key)
                .header("x-request-id", "in-flight")
                .json(&json!({"contents": [{"parts": [{"text": "hello"}]}]}))
                .send()
                .await
        })
    };
    eventually(
        Duration::from_secs(10),
        "the slow request never reached the upstream",
        || {
            let n = fake.calls().len();
            async move { n >= 1 }
        },
    )
    .await;
    serve.signal("-TERM");
    eventually(
        Duration::from_secs(5),
        "the gateway still accepts connections after SIGTERM",
        || {
            let addr = format!("127.0.0.1:{port}");
            async move { tokio::net::TcpStream::connect(addr).await.is_err() }
        },
    )
    .await;
    let resp = slow.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200, "the request in flight is answered");
    assert_eq!(
        resp.headers()
            .get("connection")
            .map(|v| v.to_str().unwrap()),
        Some("close"),
        "its answer tells the client the connection ends"
    );
    resp.bytes().await.unwrap();
    let busy_exit = serve.exited_within(Duration::from_secs(10)).await;
    assert_eq!(
        stored_client_ids(&store, org).await,
        ["in-flight"],
        "its event is stored before the process exits"
    );

    // Idle, with a kept-alive connection: stops at once, not after the 30 s grace period.
    let mut serve = Serve::start(&cfg, port).await;
    let r = http
        .post(format!("{}{}", serve.gateway, gen("gemini-2.5-flash")))
        .header("x-goog-api-key", &key)
        .json(&json!({"contents": [{"parts": [{"text": "hello"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    serve.signal("-TERM");
    let idle_exit = serve.exited_within(Duration::from_secs(10)).await;
    println!("sigterm: idle gateway exited {idle_exit:?} after the signal; busy one {busy_exit:?} after its last answer");
    assert!(
        idle_exit < Duration::from_secs(5),
        "an idle gateway exits well within its 30 s grace period, took {idle_exit:?}"
    );
}
