//! The `tollgate` binary: parse the command line and run it. Errors become one line on stderr
//! and a non-zero exit status.

/// mimalloc (feature `mimalloc`): ~10 % fewer instructions per request than glibc's malloc, but
/// more memory per in-flight stream after mixed traffic (78 against 65 KiB: see Cargo.toml); off
/// by default.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    match tollgate::cli::run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes.
            let mut msg = format!("error: {e}");
            for cause in e.chain().skip(1) {
                // Many errors already quote their source; print each reason once.
                let cause = cause.to_string();
                if !msg.contains(&cause) {
                    msg.push_str(&format!(": {cause}"));
                }
            }
            eprintln!("{msg}");
            std::process::ExitCode::FAILURE
        }
    }
}
