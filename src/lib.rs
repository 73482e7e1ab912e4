//! callgate: a gateway for instant-messaging (Tencent Cloud IM format)
//! third-party callbacks. See README.md for what it does and why.
//!
//! The flow of one callback, module by module: `server` accepts it (TLS in
//! `tls`), `validate` checks it against `config` and the `catalog`,
//! `route` picks its upstreams, then `decide` answers a decision under its
//! deadline (what answers say and how they combine: `answer`) or
//! `deliver` stores a notification and delivers it; `upstream` talks to
//! the backends and `respond` shapes every answer of the gateway's own.
//! `gateway` starts, reloads and stops the whole; `common` holds the
//! vocabulary all of them share, `runtime` the serving threads.

pub mod answer;
pub mod catalog;
pub mod certs;
pub mod cli;
pub mod common;
pub mod config;
pub mod decide;
pub mod deliver;
pub mod gateway;
pub mod metrics;
pub mod respond;
pub mod route;
pub mod runtime;
pub mod server;
pub mod snapshot;
pub mod state;
pub mod tls;
pub mod upstream;
pub mod validate;

pub use config::Config;
pub use gateway::Gateway;
