//! The config loader (YAML parsing and validation) on arbitrary text.
#![no_main]

use callgate::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(text, std::path::Path::new("/nonexistent/routes.yaml"));
    }
});
