//! The command line end to end: the built binary against a fresh SQLite file, run from an empty
//! directory (so no configuration file is involved).

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::harness::bin;

struct Cli {
    dir: tempfile::TempDir,
    db: String,
}

impl Cli {
    fn new() -> Cli {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}/cli.db", dir.path().display());
        Cli { dir, db }
    }

    fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(bin())
            .args(args)
            .current_dir(self.dir.path())
            .env("TOLLGATE_DATABASE__URL", &self.db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with_stdin(args, "")
    }

    /// Runs a command that must succeed and returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "tollgate {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    /// Runs a command that must fail with one clear line on stderr; returns that line.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "tollgate {args:?} should fail");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
        assert!(err.starts_with("error: "), "{err:?}");
        err.trim_end().to_owned()
    }
}

#[test]
fn help_documents_every_command() {
    let out = Command::new(bin()).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for cmd in [
        "serve", "gateway", "admin", "migrate", "org", "key", "user", "member", "feature", "limit",
    ] {
        assert!(help.contains(cmd), "--help should mention {cmd}:\n{help}");
    }
}

#[test]
fn orgs_keys_limits_and_features_round_trip() {
    let cli = Cli::new();
    let table = cli.ok(&["org", "create", "acme"]);
    assert!(table.contains("acme") && table.contains("NAME"), "{table}");
    let orgs = cli.json(&["org", "list"]);
    assert_eq!(orgs[0]["name"], "acme");
    let org_id = orgs[0]["id"].as_i64().unwrap().to_string();

    let app = cli.ok(&["key", "create", "--org", "acme", "--name", "web"]);
    let key_line = app
        .lines()
        .find(|l| l.starts_with("key: "))
        .expect("the key is printed once");
    assert!(key_line["key: ".len()..].starts_with("tg_"));
    let svc = cli.json(&[
        "key",
        "create",
        "--org",
        &org_id,
        "--service",
        "--name",
        "backend",
    ]);
    assert_eq!(svc["kind"], "service");
    let secret = svc["secret"].as_str().unwrap();
    assert!(secret.starts_with("tg_") && secret.len() >= 35);

    let keys = cli.json(&["key", "list", "--org", "acme"]);
    assert_eq!(keys.as_array().unwrap().len(), 2);
    let listed = serde_json::to_string(&keys).unwrap();
    assert!(
        !listed.contains(secret) && !listed.contains("key_hash"),
        "listings never show keys or hashes"
    );
    let svc_id = svc["id"].as_i64().unwrap().to_string();
    cli.ok(&["key", "revoke", &svc_id]);
    let keys = cli.json(&["key", "list", "--org", "acme"]);
    let revoked = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == svc["id"])
        .unwrap();
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    assert!(cli
        .ok(&["key", "list", "--org", "acme"])
        .contains("revoked"));

    cli.ok(&[
        "limit",
        "set",
        "--org",
        "acme",
        "--type",
        "daily_requests",
        "--value",
        "50",
        "--alert",
        "90",
    ]);
    cli.ok(&[
        "limit",
        "set",
        "--org",
        "acme",
        "--type",
        "monthly_cost",
        "--value",
        "12.50",
        "--disabled",
    ]);
    let limits = cli.json(&["limit", "list", "--org", "acme"]);
    let by_type = |t: &str| {
        limits
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["limit_type"] == t)
            .unwrap()
            .clone()
    };
    assert_eq!(
        (
            by_type("daily_requests")["raw_value"].as_i64(),
            by_type("daily_requests")["alert_threshold"].as_i64()
        ),
        (Some(50), Some(90))
    );
    assert_eq!(
        (
            by_type("monthly_cost")["raw_value"].clone(),
            by_type("monthly_cost")["value"].clone()
        ),
        (serde_json::json!(12_500_000), serde_json::json!(12.5)),
        "dollars are stored as micro-dollars and shown as dollars"
    );
    assert_eq!(by_type("monthly_cost")["enabled"], false);
    let table = cli.ok(&["limit", "list", "--org", "acme"]);
    assert!(
        table.contains("$12.500000") && table.contains("disabled"),
        "{table}"
    );
    cli.ok(&["limit", "remove", "--org", "acme", "--type", "monthly_cost"]);
    assert_eq!(
        cli.json(&["limit", "list", "--org", "acme"])
            .as_array()
            .unwrap()
            .len(),
        1
    );

    cli.ok(&["feature", "set", "--org", "acme", "video_generation", "off"]);
    let flags = cli.json(&["feature", "list", "--org", "acme"]);
    assert_eq!(flags.as_array().unwrap().len(), 11);
    for f in flags.as_array().unwrap() {
        assert_eq!(f["enabled"], f["feature"] != "video_generation", "{f}");
    }
}

#[test]
fn bad_input_is_one_clear_line_and_changes_nothing() {
    let cli = Cli::new();
    cli.ok(&["org", "create", "acme"]);
    cli.ok(&[
        "limit",
        "set",
        "--org",
        "acme",
        "--type",
        "daily_requests",
        "--value",
        "5",
    ]);
    let before = cli.json(&["limit", "list", "--org", "acme"]);

    let e = cli.fails(&[
        "limit",
        "set",
        "--org",
        "nope",
        "--type",
        "daily_requests",
        "--value",
        "1",
    ]);
    assert!(
        e.contains("organization") && e.contains("nope") && e.contains("not found"),
        "{e}"
    );
    let e = cli.fails(&[
        "limit",
        "set",
        "--org",
        "acme",
        "--type",
        "weekly_fun",
        "--value",
        "1",
    ]);
    assert!(
        e.contains("weekly_fun") && e.contains("monthly_tokens"),
        "names the valid types: {e}"
    );
    let e = cli.fails(&[
        "limit",
        "set",
        "--org",
        "acme",
        "--type",
        "daily_requests",
        "--value",
        "-5",
    ]);
    assert!(e.contains("0 or more"), "{e}");
    let e = cli.fails(&[
        "limit",
        "set",
        "--org",
        "acme",
        "--type",
        "daily_requests",
        "--value",
        "10",
        "--alert",
        "101",
    ]);
    assert!(e.contains("between 1 and 100"), "{e}");
    let e = cli.fails(&["org", "create", "acme"]);
    assert!(e.contains("already exists"), "{e}");
    let e = cli.fails(&["key", "create", "--org", "nope"]);
    assert!(e.contains("nope"), "{e}");
    let e = cli.fails(&["key", "revoke", "9999"]);
    assert!(e.contains("key 9999 not found"), "{e}");
    let e = cli.fails(&["feature", "set", "--org", "acme", "teleport", "on"]);
    assert!(e.contains("teleport"), "{e}");

    assert_eq!(
        cli.json(&["limit", "list", "--org", "acme"]),
        before,
        "failed commands changed nothing"
    );
    assert_eq!(cli.json(&["org", "list"]).as_array().unwrap().len(), 1);
}

#[test]
fn users_and_members() {
    let cli = Cli::new();
    cli.ok(&["org", "create", "acme"]);
    let out = cli.run_with_stdin(
        &[
            "user",
            "create",
            "--email",
            "ada@example.com",
            "--superuser",
            "--json",
        ],
        "correct horse\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let user: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (user[0]["email"].as_str(), user[0]["superuser"].as_bool()),
        (Some("ada@example.com"), Some(true))
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("correct horse"));
    let short = cli.run_with_stdin(&["user", "create", "--email", "b@example.com"], "short\n");
    assert!(!short.status.success());

    cli.ok(&[
        "member",
        "add",
        "--org",
        "acme",
        "--user",
        "ada@example.com",
        "--role",
        "admin",
    ]);
    let m = cli.json(&[
        "member",
        "role",
        "--org",
        "acme",
        "--user",
        "ada@example.com",
        "--role",
        "owner",
    ]);
    assert_eq!(m[0]["role"], "owner");
    let e = cli.fails(&[
        "member",
        "add",
        "--org",
        "acme",
        "--user",
        "ada@example.com",
    ]);
    assert!(e.contains("already a member"), "{e}");
    let e = cli.fails(&[
        "member",
        "role",
        "--org",
        "acme",
        "--user",
        "ada@example.com",
        "--role",
        "boss",
    ]);
    assert!(e.contains("boss"), "{e}");
    let remove_ada = [
        "member",
        "remove",
        "--org",
        "acme",
        "--user",
        "ada@example.com",
    ];
    let e = cli.fails(&remove_ada);
    assert!(
        e.contains("at least one owner"),
        "the last owner stays: {e}"
    );
    let out = cli.run_with_stdin(
        &["user", "create", "--email", "bob@example.com"],
        "another horse
",
    );
    assert!(out.status.success());
    cli.ok(&[
        "member",
        "add",
        "--org",
        "acme",
        "--user",
        "bob@example.com",
        "--role",
        "owner",
    ]);
    cli.ok(&remove_ada);
    let members = cli.json(&["member", "list", "--org", "acme"]);
    assert_eq!(members.as_array().unwrap().len(), 1);
    assert_eq!(members[0]["email"], "bob@example.com");
}

#[test]
fn tokens_and_password_resets() {
    let cli = Cli::new();
    let out = cli.run_with_stdin(
        &["user", "create", "--email", "ada@example.com"],
        "correct horse
",
    );
    assert!(out.status.success());
    let t = cli.json(&[
        "token",
        "create",
        "--user",
        "ada@example.com",
        "--name",
        "ci",
        "--expires-days",
        "30",
    ]);
    let token = t["token"].as_str().unwrap();
    assert!(token.starts_with("tgp_") && token.len() > 30, "{token}");
    assert_eq!(t["name"], "ci");
    assert!(t["expires_at"].is_string(), "{t}");
    let e = cli.fails(&[
        "token",
        "create",
        "--user",
        "ada@example.com",
        "--expires-days",
        "0",
    ]);
    assert!(e.contains("--expires-days"), "{e}");
    let e = cli.fails(&["token", "create", "--user", "nobody@example.com"]);
    assert!(e.contains("not found"), "{e}");
    let out = cli.run_with_stdin(
        &["user", "password", "--email", "ada@example.com"],
        "battery staple
",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli.run_with_stdin(
        &["user", "password", "--email", "ada@example.com"],
        "short
",
    );
    assert!(!out.status.success(), "a short password is refused");
}

#[test]
fn an_invalid_setting_stops_start_up_with_one_line() {
    let cli = Cli::new();
    let out = Command::new(bin())
        .args(["serve"])
        .current_dir(cli.dir.path())
        .env("TOLLGATE_GATEWAY__LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("gateway.listen")
            && err.contains("not-an-address")
            && err.contains("127.0.0.1:8080"),
        "{err}"
    );
    let missing = Command::new(bin())
        .args(["--config", "/nonexistent.toml", "org", "list"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent.toml"));
}

#[test]
fn serve_starts_with_no_config_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (g, a, m) = (
        crate::harness::free_port(),
        crate::harness::free_port(),
        crate::harness::free_port(),
    );
    let mut child = Command::new(bin())
        .arg("serve")
        .current_dir(dir.path())
        .env("TOLLGATE_GATEWAY__LISTEN", format!("127.0.0.1:{g}"))
        .env("TOLLGATE_ADMIN__LISTEN", format!("127.0.0.1:{a}"))
        .env("TOLLGATE_METRICS__LISTEN", format!("127.0.0.1:{m}"))
        .env("TOLLGATE_GATEWAY__SHUTDOWN_GRACE_SECS", "0")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    for port in [g, a, m] {
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "port {port} never opened"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    assert!(
        dir.path().join("data/tollgate.db").exists(),
        "the default SQLite file is created on first start"
    );
    #[cfg(target_os = "linux")]
    {
        // Background threads (ledger, database connections, logs) yield to the proxy's.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let threads = thread_nice_values(child.id());
            let of = |prefix: &str| -> Vec<i32> {
                threads
                    .iter()
                    .filter(|(name, _)| name.starts_with(prefix))
                    .map(|(_, nice)| *nice)
                    .collect()
            };
            let (bg, proxy) = (of("tollgate-bg"), of("tollgate proxy"));
            if !bg.is_empty() && bg.iter().all(|&n| n == 10) {
                assert!(
                    !proxy.is_empty() && proxy.iter().all(|&n| n == 0),
                    "the proxy's workers keep the normal priority: {threads:?}"
                );
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "background threads not lowered to nice 10: {threads:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "a clean stop exits 0, got {status}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "SIGTERM did not stop tollgate within 10 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `(thread name, nice value)` of each thread of a process.
#[cfg(target_os = "linux")]
fn thread_nice_values(pid: u32) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        // After "pid (comm) ": state is field 3 of stat(5), nice field 19.
        let nice = stat[close + 2..]
            .split(' ')
            .nth(16)
            .unwrap()
            .parse()
            .unwrap();
        out.push((stat[open + 1..close].to_owned(), nice));
    }
    out
}

#[test]
fn db_stats_shows_each_table_the_oldest_event_and_the_retention() {
    let cli = Cli::new();
    cli.ok(&["org", "create", "acme"]);
    let empty = cli.ok(&["db", "stats"]);
    assert!(empty.contains("no usage events"), "{empty}");
    assert!(
        empty.contains("kept: usage events 90 days, limit alerts 400 days, audit rows 400 days"),
        "{empty}"
    );
    // An event of ten days ago, through the store.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = store::Store::connect(&cli.db, &store::ConnectOptions::default())
            .await
            .unwrap();
        let at = chrono::Utc::now() - chrono::Duration::days(10);
        let (_, r) = store
            .write_events(vec![store::UsageEvent {
                request_id: "stats-1".into(),
                occurred_at: at,
                provider: "gemini".into(),
                model: "m".into(),
                operation: "generateContent".into(),
                status: 200,
                priced: true,
                ..store::UsageEvent::default()
            }])
            .await;
        r.unwrap();
    });
    let text = cli.ok(&["db", "stats"]);
    for table in [
        "usage_events",
        "usage_rollups_daily",
        "organizations",
        "audit_log",
    ] {
        assert!(text.contains(table), "{table} listed: {text}");
    }
    assert!(text.contains("(10 days ago)"), "{text}");
    let v = cli.json(&["db", "stats"]);
    let events = v["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "usage_events")
        .unwrap();
    assert_eq!(events["rows"], 1);
    assert!(events["bytes"].as_i64().unwrap() > 0, "{v}");
    assert_eq!(v["retention_days"]["events"], 90);
}

#[test]
fn events_export_writes_csv_or_jsonl_and_refuses_bad_options() {
    let cli = Cli::new();
    cli.ok(&["org", "create", "acme"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let org = rt.block_on(async {
        let store = store::Store::connect(&cli.db, &store::ConnectOptions::default())
            .await
            .unwrap();
        let org = store.get_org_by_name("acme").await.unwrap().id;
        let events = (0..3)
            .map(|i| store::UsageEvent {
                request_id: format!("exp-{i}"),
                occurred_at: chrono::Utc::now(),
                org_id: Some(org),
                provider: "gemini".into(),
                model: "m".into(),
                operation: "generateContent".into(),
                status: 200,
                priced: true,
                ..store::UsageEvent::default()
            })
            .collect();
        let (_, r) = store.write_events(events).await;
        r.unwrap();
        org
    });
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let args = |format: &str| {
        vec![
            "events", "export", "--org", "acme", "--from", &today, "--to", &today, "--format",
            format,
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<String>>()
    };
    let jsonl = cli.ok(&args("jsonl").iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(jsonl.lines().count(), 3, "{jsonl}");
    assert!(jsonl
        .lines()
        .all(|l| serde_json::from_str::<Value>(l).unwrap()["org_id"] == org));
    let csv = cli.ok(&args("csv").iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(csv.lines().next().unwrap().contains("request_id"));
    let bad = cli.fails(&args("xml").iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        bad.contains("--format") && bad.contains("csv or jsonl"),
        "{bad}"
    );
    // The listing still works as before.
    let listed = cli.ok(&["events", "--org", "acme"]);
    assert!(listed.contains("exp-"), "{listed}");
    assert!(listed.contains("events are kept 90 days"), "{listed}");
}
