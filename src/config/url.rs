//! Upstream URLs (SPEC 4.4): the credentials in `https://user:pass@host/`
//! become an `Authorization: Basic` value and leave the URL; what is shown
//! of a URL (`/config`, `check`, logs, errors) never carries them, nor a
//! query value that came from a `${NAME}` expansion.

use std::fmt;

use serde::{Serialize, Serializer};

use super::Secret;
use super::units::Expanded;

/// An upstream URL without credentials: what requests go to, and what is
/// shown of it (the query values that came from variables redacted).
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    uri: http::Uri,
    shown: String,
}

impl UpstreamUrl {
    /// Parses a URL as written, without `${NAME}` in it: the URL and the
    /// `Authorization` value of its credentials, if any.
    pub fn parse(text: &str) -> Result<(Self, Option<Secret>), UrlError> {
        parse(&Expanded {
            text: text.to_owned(),
            from_env: Vec::new(),
        })
    }

    /// Where requests go: scheme, host, port, path and query as expanded.
    pub fn uri(&self) -> &http::Uri {
        &self.uri
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.shown, f)
    }
}

impl Serialize for UpstreamUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.shown)
    }
}

/// Why an upstream URL was refused. The texts never quote the URL: the
/// caller quotes what [`safe_template`] leaves of what was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("is not a URL ({0})")]
    Invalid(String),
    #[error("must be an http:// or https:// URL with a host")]
    Scheme,
    #[error("has a port that is not a number from 0 to 65535")]
    Port,
    #[error("the credentials before the @ are not valid percent-encoding")]
    Credentials,
}

/// Where the authority of `text` starts and ends (after `scheme://`, up
/// to the path, query or fragment), if it has one.
fn authority(text: &str) -> Option<(usize, usize)> {
    let start = text.find("://")? + 3;
    let end = text[start..]
        .find(['/', '?', '#'])
        .map_or(text.len(), |i| start + i);
    Some((start, end))
}

/// Parses an expanded upstream URL: the URL without its credentials, and
/// `Basic base64(user:password)` when it had any (each part percent-decoded
/// first, RFC 3986 3.2.1 and RFC 7617).
pub fn parse(value: &Expanded) -> Result<(UpstreamUrl, Option<Secret>), UrlError> {
    let text = value.text.as_str();
    let (mut without, mut credentials, mut removed) = (text.to_owned(), None, 0);
    if let Some((start, end)) = authority(text)
        && let Some(at) = text[start..end].rfind('@')
    {
        let userinfo = &text[start..start + at];
        if !userinfo.is_empty() {
            credentials = Some(basic(userinfo)?);
        }
        without = format!("{}{}", &text[..start], &text[start + at + 1..]);
        removed = at + 1;
    }
    let uri: http::Uri = without
        .parse()
        .map_err(|e: http::uri::InvalidUri| UrlError::Invalid(e.to_string()))?;
    let Some(authority) = uri.authority().filter(|a| !a.host().is_empty()) else {
        return Err(UrlError::Scheme);
    };
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(UrlError::Scheme);
    }
    // `http::Uri` takes `host:abc` and then reports no port: refused here
    // rather than silently sent to the scheme's default port.
    if authority.as_str().len() > authority.host().len() && authority.port_u16().is_none() {
        return Err(UrlError::Port);
    }
    let mut shown = format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or_default(),
        authority,
        uri.path()
    );
    if let Some(query) = uri.query() {
        // The query's offset in the expanded text, credentials included.
        let offset = without.find('?').map_or(0, |q| q + 1 + removed);
        shown.push('?');
        shown.push_str(&shown_query(query, offset, value));
    }
    Ok((UpstreamUrl { uri, shown }, credentials))
}

/// The query with every parameter whose value came (even in part) from a
/// variable redacted; a name from a variable takes its pair with it.
fn shown_query(query: &str, offset: usize, value: &Expanded) -> String {
    let mut out = Vec::new();
    let mut at = offset;
    for pair in query.split('&') {
        let range = at..at + pair.len();
        at = range.end + 1;
        if !value.touches(&range) {
            out.push(pair.to_owned());
            continue;
        }
        match pair.split_once('=') {
            Some((name, _)) if !value.touches(&(range.start..range.start + name.len())) => {
                out.push(format!("{name}=<redacted>"));
            }
            _ => out.push("<redacted>".to_owned()),
        }
    }
    out.join("&")
}

/// `Basic base64(user:password)` from a URL's userinfo.
fn basic(userinfo: &str) -> Result<Secret, UrlError> {
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let mut plain = decode(user)?;
    plain.push(b':');
    plain.extend(decode(password)?);
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(plain);
    Ok(Secret::new(format!("Basic {encoded}")))
}

/// Percent-decodes one part of the userinfo; a `%` must start `%XX`.
fn decode(part: &str) -> Result<Vec<u8>, UrlError> {
    let bytes = part.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        let valid = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
        if *b == b'%' && !(valid(i + 1) && valid(i + 2)) {
            return Err(UrlError::Credentials);
        }
    }
    Ok(percent_encoding::percent_decode(bytes).collect())
}

/// What may be quoted of a URL as written (before expansion) in an error:
/// everything up to the last `@` of what could be its authority is
/// dropped, so credentials are never quoted, even in a URL too broken to
/// tell where its authority ends.
pub fn safe_template(written: &str) -> String {
    let Some(start) = written.find("://").map(|i| i + 3) else {
        return written.to_owned();
    };
    let end = written[start..]
        .find(['?', '#'])
        .map_or(written.len(), |i| start + i);
    match written[start..end].rfind('@') {
        Some(at) => format!("{}{}", &written[..start], &written[start + at + 1..]),
        None => written.to_owned(),
    }
}
