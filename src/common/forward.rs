//! The callback envelope: what callgate forwards to upstreams and keeps in
//! the outbox.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;

/// What callgate forwards: shared by every upstream of a callback, cheap
/// to clone (the body is reference-counted, never copied).
#[derive(Debug, Clone)]
pub struct Forward {
    /// The callback's query string, as received.
    pub query: Arc<str>,
    pub body: Bytes,
    /// Ready to send as `x-request-id` (cloning it shares the bytes).
    pub request_id: HeaderValue,
    pub peer: IpAddr,
    pub proto: &'static str,
}

impl Forward {
    /// The request id as text, for logs and records.
    pub fn request_id(&self) -> &str {
        // Made of hex digits (or read back from a record callgate wrote).
        self.request_id.to_str().unwrap_or("-")
    }
}
