//! End-to-end tests of the `tollgate` binary and library: a real pingora gateway on a loopback
//! port, a real admin service, a real database, and a fake Google upstream.

mod cli;
mod fake_google;
mod proxy;
mod harness;
mod sdk;
