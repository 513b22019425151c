//! The console in a real browser: starts a whole Tollgate (gateway, admin with the console, a
//! fake Google upstream, SQLite), creates the accounts the browser tests log in with, and runs
//! `tests/console` (pytest + Playwright driving Debian's chromium) against it. Screenshots go to
//! `target/console-screenshots/`.

use store::{Feature, Role};

use crate::harness::{Opts, TestEnv};

const PASSWORD: &str = "correct horse battery";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    let Some(python) = crate::sdk::python() else {
        return;
    };
    let required = std::env::var("TOLLGATE_TEST_REQUIRE_SDK").is_ok_and(|v| v == "1");
    let ready = std::path::Path::new("/usr/bin/chromium").exists()
        && std::process::Command::new(&python)
            .args(["-c", "import playwright, pytest_playwright"])
            .output()
            .is_ok_and(|o| o.status.success());
    if !ready {
        let reason = "no /usr/bin/chromium or no Playwright in the test Python (run `make test`)";
        if required {
            panic!("{reason}");
        }
        crate::harness::missing(reason);
        return;
    }
    let env = TestEnv::start_with(Opts::default()).await;
    let s = &env.store;
    let (acme, key) = env.org_with_key("acme").await;
    let globex = s.create_org("globex", Feature::ALL).await.unwrap().id;
    let root = s
        .create_user("root@example.com", PASSWORD, true)
        .await
        .unwrap();
    let member = s
        .create_user("member@acme.test", PASSWORD, false)
        .await
        .unwrap();
    let other = s
        .create_user("owner@globex.test", PASSWORD, false)
        .await
        .unwrap();
    s.add_member(acme, member.id, Role::Member).await.unwrap();
    s.add_member(globex, other.id, Role::Owner).await.unwrap();
    let (_, token) = s
        .create_token_audited(
            root.id,
            "browser tests",
            None,
            &store::Audit::new("test", "token.create"),
        )
        .await
        .unwrap();
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    let out = tokio::process::Command::new(&python)
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/console",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("TG_ADMIN_URL", &env.admin_url)
        .env("TG_GATEWAY_URL", &env.gateway_url)
        .env("TG_PASSWORD", PASSWORD)
        .env("TG_ROOT_EMAIL", &root.email)
        .env("TG_MEMBER_EMAIL", &member.email)
        .env("TG_OTHER_EMAIL", &other.email)
        .env("TG_APP_KEY", &key)
        .env("TG_ROOT_TOKEN", &token)
        .env("TG_SCREENSHOTS", &shots)
        .output()
        .await
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{report}");
    assert!(out.status.success(), "the browser tests failed:\n{report}");
    assert!(shots.join("dashboard.png").exists());
    env.stop().await;
}
