//! Shared by the store's test binaries.

/// A test's prerequisite is missing. In CI (`CI=true`) the test fails with the reason (a skip
/// that libtest reports as a pass would be a pass nobody earned); elsewhere the caller returns
/// early, and the skip is printed and appended to `TOLLGATE_SKIP_LOG` for `make test`'s summary.
pub fn missing(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0") {
        panic!("prerequisite missing, and CI requires every test to run: {reason}");
    }
    eprintln!("skipped: {reason}");
    if let Ok(log) = std::env::var("TOLLGATE_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(f, "{reason}");
        }
    }
}
