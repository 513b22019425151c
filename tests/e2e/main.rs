//! End-to-end tests of the `tollgate` binary and library: a real pingora gateway on a loopback
//! port, a real admin service, a real database, and a fake Google upstream.

// Tests may unwrap and panic: a failure is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin_api;
mod admin_gateway;
mod cli;
mod console;
mod crash;
mod fake_google;
mod faults;
mod harness;
mod hostile;
mod isolation;
mod limits;
mod metering;
mod observability;
mod outage;
mod proxy;
mod retention;
mod sdk;
mod tls;
