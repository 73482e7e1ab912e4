//! The query-string parser and the Sign check on arbitrary input.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use callgate::validate::{parse_query, verify_sign};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(q) = parse_query(text) {
        let _ = verify_sign(
            "token",
            q.request_time.as_deref(),
            q.sign.as_deref(),
            Duration::from_secs(60),
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        );
    }
});
