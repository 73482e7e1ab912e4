//! Small value grammars of the config file: durations (`250ms`, `2s`),
//! sizes (`256KiB`, `1MiB`) and `${VAR}` expansion.

use std::ops::Range;
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

/// A string value with `${NAME}` expanded, and where the expanded values
/// are in it: values from the environment of a secret field must never be
/// shown (SPEC 4.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expanded {
    pub text: String,
    /// Byte ranges of `text` that came from variables.
    pub from_env: Vec<Range<usize>>,
}

impl Expanded {
    /// Whether any byte of `range` came from a variable.
    pub fn touches(&self, range: &Range<usize>) -> bool {
        self.from_env
            .iter()
            .any(|r| r.start < range.end && range.start < r.end)
    }
}

/// Replaces every `${NAME}` with `lookup(NAME)`. Every unset variable is
/// reported, not only the first; an unterminated `${` or an empty name is
/// an error too (taken literally, it would hide a typo).
pub fn expand_env(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Expanded, Vec<String>> {
    let mut out = String::with_capacity(text.len());
    let mut from_env = Vec::new();
    let mut problems = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            problems.push("unterminated ${ (write ${NAME})".to_string());
            rest = "";
            break;
        };
        let name = &after[..end];
        if name.is_empty() {
            problems.push("empty variable name in ${}".to_string());
        } else {
            match lookup(name) {
                Some(value) => {
                    from_env.push(out.len()..out.len() + value.len());
                    out.push_str(&value);
                }
                None => problems.push(format!("environment variable {name} is not set")),
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    if problems.is_empty() {
        Ok(Expanded {
            text: out,
            from_env,
        })
    } else {
        Err(problems)
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
        let text = |t: &str| expand_env(t, &lookup).map(|e| e.text);
        assert_eq!(text("a${A}b${A}"), Ok("axbx".into()));
        assert_eq!(text("no vars"), Ok("no vars".into()));
        assert_eq!(text("$A {A} $"), Ok("$A {A} $".into()));
        let err = expand_env("${B}-${C}", &lookup).unwrap_err();
        assert_eq!(err.len(), 2);
        assert!(err[0].contains('B') && err[1].contains('C'));
    }

    #[test]
    fn env_expansion_records_where_values_came_from() {
        let lookup = |n: &str| Some(format!("<{n}>"));
        let e = expand_env("a${X}b${YY}", &lookup).unwrap();
        assert_eq!(e.text, "a<X>b<YY>");
        assert_eq!(e.from_env, vec![1..4, 5..9]);
        assert!(e.touches(&(0..2)) && !e.touches(&(4..5)) && e.touches(&(8..20)));
    }

    #[test]
    fn an_unterminated_or_empty_variable_is_an_error() {
        let lookup = |_: &str| Some("v".to_string());
        for (text, needle) in [
            ("${NAME", "unterminated"),
            ("a${A}${B", "unterminated"),
            ("x${}y", "empty variable name"),
        ] {
            let err = expand_env(text, &lookup).unwrap_err();
            assert!(err.iter().any(|e| e.contains(needle)), "{text}: {err:?}");
        }
    }
}
