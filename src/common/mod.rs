//! The vocabulary every layer shares, on the lowest floor: the callback
//! envelope that is forwarded and stored ([`Forward`]), the fixed words of
//! metrics and logs ([`labels`]), and two small helpers.

mod forward;
pub mod labels;

use std::time::{SystemTime, UNIX_EPOCH};

pub use forward::Forward;
pub use labels::{CallResult, DeliveryResult, FallbackReason, MirrorResult, Outcome};

/// An error with its sources, `a: b: c`, for logs and dead letters.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Wall-clock milliseconds since the Unix epoch (0 before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
