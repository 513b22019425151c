//! The `tollgate` binary's library: configuration loading, the command-line interface, and the
//! wiring that starts the gateway, admin and metrics services in one process.
//!
//! This crate owns no business logic: it reads the configuration, opens the store and hands
//! resolved settings to the `gateway` and `admin` crates. Tests start services through
//! [`serve`] on port 0 rather than spawning processes where they can.

pub mod cli;
pub mod config;
mod output;
pub mod retention;
pub mod serve;
