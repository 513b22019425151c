//! A bare pingora passthrough (same pingora version as Tollgate, no logic): the limit of our
//! framework on this machine. Usage:
//! `bare-pingora LISTEN UPSTREAM [THREADS] [WORK_STEALING=true] [KEEPALIVE_POOL=128]
//! [WRITE_BUFFER=1460]` (the last four are the tuning knobs the benchmark's `--tune` run compares).

fn main() {
    tollgate_bench::run();
}
