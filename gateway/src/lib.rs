//! Tollgate's gateway: a pingora reverse proxy for Google's generative AI APIs that identifies
//! the organization behind each request, checks its feature flags, swaps the gateway key for the
//! provider credential and forwards the request unchanged to the Gemini API or Vertex AI.
//!
//! The request path does no database I/O and holds no lock across an await: keys, orgs and flags
//! come from an in-memory snapshot refreshed in the background ([`snapshot`]). Its one file
//! write is the usage event's journal record, after the answer ([`journal`]). This
//! crate writes no SQL; it talks to the store only through the `store` crate, off the hot path.

pub mod access_log;
pub mod admission;
mod background;
pub mod clients;
pub mod error;
pub mod event_line;
pub mod identity;
pub mod journal;
pub mod ledger;
pub mod limits;
pub mod listing;
pub mod metering;
pub mod metrics;
pub mod proxy;
pub mod resources;
pub mod route;
pub mod server;
pub mod settings;
pub mod snapshot;
pub mod upstream;

pub use server::{start, RunningGateway, StartError, Stop};
pub use settings::{Credential, GatewaySettings, UpstreamSettings};
