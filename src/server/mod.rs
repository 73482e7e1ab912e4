//! Client-facing listeners: plain HTTP, HTTPS or mutual TLS, HTTP/1.1 and
//! HTTP/2 on one socket (hyper-util's auto builder), with the connection
//! limits of `limits:`.

pub mod callback;
mod conn;
pub mod cores;

pub use callback::Peer;
pub use conn::{ConnLimits, serve_listener};
