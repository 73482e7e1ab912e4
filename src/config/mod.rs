//! Configuration: the `routes.yaml` schema, its validation, and the
//! resolved form the gateway runs on.
//!
//! Loading never stops at the first problem it can recover from: `callgate
//! check` and every reload list all of them at once, so an operator fixes a
//! config in one round trip.

mod check;
mod schema;
mod units;
mod url;

pub use url::{UpstreamUrl, UrlError};

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

use crate::catalog::Kind;

/// IM stops waiting for a decision after 2 s; a deadline past that is useless.
pub const MAX_DEADLINE: Duration = Duration::from_secs(2);

/// Why a config could not be loaded: every problem found, one per entry.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.join("; "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl ConfigError {
    fn one(problem: impl Into<String>) -> Self {
        Self {
            problems: vec![problem.into()],
        }
    }
}

/// The validated configuration in force: addresses parsed, durations and
/// sizes converted, `${VAR}` expanded, paths made absolute.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The file this came from (paths in it are relative to its folder).
    pub source: PathBuf,
    pub listeners: Vec<Listener>,
    pub admin: Admin,
    pub apps: BTreeMap<u64, App>,
    pub limits: Limits,
    pub defaults: Defaults,
    pub delivery: Delivery,
    pub upstreams: BTreeMap<String, Upstream>,
    pub routes: Vec<Route>,
    /// Problems that do not stop the gateway but an operator should see.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Listener {
    pub name: String,
    pub addr: SocketAddr,
    pub tls: Option<ListenerTls>,
}

impl Listener {
    /// The security level, as `check` and the logs print it.
    pub fn mode(&self) -> &'static str {
        match &self.tls {
            None => "http",
            Some(t) if t.client_ca.is_some() => "mtls",
            Some(_) => "https",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ListenerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Admin {
    pub addr: SocketAddr,
    /// When set, the methods that change state need `Authorization:
    /// Bearer <token>` (SPEC 6).
    pub token: Option<Secret>,
}

#[derive(Debug, Clone, Serialize)]
pub struct App {
    pub sdkappid: u64,
    pub token: Option<Secret>,
}

/// A value that must never reach a log line, an error message or `/config`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    pub max_body: u64,
    #[serde(with = "units::duration_str")]
    pub header_timeout: Duration,
    #[serde(with = "units::duration_str")]
    pub idle_timeout: Duration,
    pub max_connections: usize,
    #[serde(with = "units::duration_str")]
    pub sign_window: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    #[default]
    Strictest,
    First,
}

#[derive(Debug, Clone, Serialize)]
pub struct Defaults {
    #[serde(with = "units::duration_str")]
    pub deadline: Duration,
    pub on_timeout: OnTimeout,
    pub strict_commands: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub outbox: PathBuf,
    pub max_attempts: u32,
    #[serde(with = "units::duration_str")]
    pub backoff: Duration,
    #[serde(with = "units::duration_str")]
    pub max_backoff: Duration,
    #[serde(with = "units::duration_str")]
    pub max_age: Duration,
    pub max_pending: usize,
    pub backend: Backend,
    /// Set exactly when `backend` is `nats`.
    pub nats: Option<Nats>,
}

/// Where notifications wait for delivery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The outbox folder on this machine (redb): one gateway.
    #[default]
    Embedded,
    /// A NATS JetStream stream shared by a fleet of gateways.
    Nats,
}

/// The JetStream backend: connection, stream and consumer names.
#[derive(Debug, Clone, Serialize)]
pub struct Nats {
    pub servers: Vec<String>,
    pub credentials: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub token: Option<Secret>,
    pub tls: Option<NatsTls>,
    pub stream: String,
    pub dead_stream: String,
    /// Subject prefix: events on `<subject>.events.<command>`, dead
    /// letters on `<subject>.dead.<upstream>`.
    pub subject: String,
    pub consumer_prefix: String,
    pub replicas: usize,
    pub max_bytes: u64,
    #[serde(with = "units::duration_str")]
    pub publish_timeout: Duration,
    #[serde(with = "units::duration_str")]
    pub ack_wait: Duration,
    #[serde(with = "units::duration_str")]
    pub duplicate_window: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct NatsTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Upstream {
    pub name: String,
    /// Without the credentials; shown with expanded query values redacted.
    pub url: UpstreamUrl,
    /// `Basic base64(user:password)` from the URL's userinfo, sent as the
    /// `Authorization` of every request to it.
    pub credentials: Option<Secret>,
    #[serde(with = "units::opt_duration_str")]
    pub timeout: Option<Duration>,
    pub ca: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Route {
    #[serde(rename = "match")]
    pub pattern: String,
    pub sdkappid: Option<u64>,
    pub upstreams: Vec<String>,
    pub policy: Policy,
    #[serde(with = "units::opt_duration_str")]
    pub deadline: Option<Duration>,
    pub on_timeout: Option<OnTimeout>,
    pub kind: Option<Kind>,
}

impl Config {
    /// Reads, parses and validates the file; relative paths in it resolve
    /// against its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::one(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text, path)
    }

    /// Parses and validates YAML text as if it had been read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: schema::RawConfig =
            serde_saphyr::from_str(text).map_err(|e| ConfigError::one(yaml_problem(&e, path)))?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        check::resolve(raw, path, &base, &|name| std::env::var(name).ok())
    }
}

/// A YAML error as `path:line:column: message`. Never the parser's
/// rendering with the source lines around the error: those may hold a
/// token, and the problem goes to logs and to `/reload`'s answer.
fn yaml_problem(e: &serde_saphyr::Error, path: &Path) -> String {
    use serde_saphyr::MessageFormatter as _;
    // The formatter expects the error the wrappers carry (alias sites,
    // snippets), as the parser's own rendering unwraps them.
    let mut inner = e;
    while let serde_saphyr::Error::AliasError { error, .. }
    | serde_saphyr::Error::WithSnippet { error, .. } = inner
    {
        inner = error;
    }
    let message = serde_saphyr::UserMessageFormatter.format_message(inner);
    // Called directly, the formatter leaves control characters to us.
    let message: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match e.location() {
        Some(at) => format!(
            "{}:{}:{}: {message}",
            path.display(),
            at.line(),
            at.column()
        ),
        None => format!("{}: {message}", path.display()),
    }
}

#[cfg(test)]
mod tests;
