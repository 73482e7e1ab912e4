//! Client-facing listeners: plain HTTP, HTTPS or mutual TLS, HTTP/1.1 and
//! HTTP/2 on one socket (hyper-util's auto builder), with the connection
//! limits of `limits:`.
//!
//! `listener` accepts, `conn` serves one connection (`activity` tells when
//! it went idle), `callback` handles one request.

pub(crate) mod activity;
pub mod callback;
mod conn;
mod listener;

pub use callback::Peer;
pub use conn::ConnLimits;
pub use listener::Listener;
