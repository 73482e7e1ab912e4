//! Small value grammars of the config file: durations (`250ms`, `2s`),
//! sizes (`256KiB`, `1MiB`) and `${VAR}` expansion.

use std::time::Duration;

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration such as 250ms, 2s or 5m ({e})"))
}

pub fn parse_size(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|_| format!("{text:?} is not a size such as 256KiB or 1MiB"))
}

/// Replaces every `${NAME}` with `lookup(NAME)`. Every unset variable is
/// reported, not only the first.
pub fn expand_env(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(text.len());
    let mut missing = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                let name = &after[..end];
                match lookup(name) {
                    Some(value) => out.push_str(&value),
                    None => missing.push(format!("environment variable {name} is not set")),
                }
                rest = &after[end + 1..];
            }
            None => {
                // An unterminated `${` is kept literally.
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(missing)
    }
}

fn format_duration(d: &Duration) -> String {
    humantime::format_duration(*d).to_string()
}

pub mod duration_str {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(d))
    }
}

pub mod opt_duration_str {
    use serde::Serializer;
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&super::format_duration(d)),
            None => s.serialize_none(),
        }
    }
}

pub fn uri_str<S: serde::Serializer>(u: &http::Uri, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("fast").is_err());
        assert_eq!(parse_size("256KiB"), Ok(256 * 1024));
        assert_eq!(parse_size("1MiB"), Ok(1024 * 1024));
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn env_expansion_reports_every_missing_variable() {
        let lookup = |n: &str| (n == "A").then(|| "x".to_string());
        assert_eq!(expand_env("a${A}b${A}", &lookup), Ok("axbx".into()));
        assert_eq!(expand_env("no vars", &lookup), Ok("no vars".into()));
        let err = expand_env("${B}-${C}", &lookup).unwrap_err();
        assert_eq!(err.len(), 2);
        assert!(err[0].contains('B') && err[1].contains('C'));
    }
}
