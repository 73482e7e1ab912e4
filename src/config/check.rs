//! Turns the raw schema into a [`Config`], collecting every problem.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::schema::{RawConfig, RawDelivery, RawLimits, RawNats};
use super::units::{Expanded, expand_env, parse_duration, parse_size};
use super::*;

mod upstreams;
use upstreams::upstreams;

/// Collects problems while resolving, so one pass reports all of them.
struct Problems<'a> {
    list: Vec<String>,
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Problems<'_> {
    fn add(&mut self, p: impl Into<String>) {
        self.list.push(p.into());
    }

    /// Expands `${VAR}` in a string value; unset variables become problems.
    fn text(&mut self, what: &str, value: &str) -> String {
        self.expanded(what, value)
            .map(|e| e.text)
            .unwrap_or_default()
    }

    /// As `text`, keeping where the expanded values are.
    fn expanded(&mut self, what: &str, value: &str) -> Option<Expanded> {
        match expand_env(value, self.lookup) {
            Ok(v) => Some(v),
            Err(problems) => {
                for m in problems {
                    self.add(format!("{what}: {m}"));
                }
                None
            }
        }
    }

    fn duration(&mut self, what: &str, value: Option<&str>, default: Duration) -> Duration {
        match value {
            None => default,
            Some(v) => {
                let v = self.text(what, v);
                parse_duration(&v).unwrap_or_else(|e| {
                    self.add(format!("{what}: {e}"));
                    default
                })
            }
        }
    }

    fn addr(&mut self, what: &str, value: &str) -> Option<SocketAddr> {
        let v = self.text(what, value);
        match v.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.add(format!(
                    "{what}: {v:?} is not an address such as 127.0.0.1:8080"
                ));
                None
            }
        }
    }

    fn path(&mut self, what: &str, base: &Path, value: &str) -> PathBuf {
        let v = self.text(what, value);
        base.join(v)
    }

    fn deadline(&mut self, what: &str, d: Duration) {
        if d.is_zero() || d > MAX_DEADLINE {
            self.add(format!(
                "{what}: {} must be above 0 and at most 2s (IM stops waiting at 2s)",
                humantime::format_duration(d)
            ));
        }
    }
}

pub(super) fn resolve(
    raw: RawConfig,
    source: &Path,
    base: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut p = Problems {
        list: Vec::new(),
        lookup,
    };
    let mut warnings = Vec::new();

    let listeners = listeners(&raw, base, &mut p, &mut warnings);
    let admin = admin(&raw, &mut p);
    if admin.addr.port() != 0 && listeners.iter().any(|l| l.addr == admin.addr) {
        p.add(format!(
            "admin.addr {} is also a listener address",
            admin.addr
        ));
    }
    if !admin.addr.ip().is_loopback() {
        let unless = if admin.token.is_some() {
            ""
        } else {
            " (set admin.token so that POST and DELETE need it)"
        };
        warnings.push(format!(
            "admin.addr {} is not a loopback address: /config and /reload become reachable from the network{unless}",
            admin.addr
        ));
    }

    let apps = apps(&raw, &mut p);
    let limits = limits(&raw.limits, &mut p);
    let defaults = Defaults {
        deadline: p.duration(
            "defaults.deadline",
            raw.defaults.deadline.as_deref(),
            Duration::from_millis(1500),
        ),
        on_timeout: raw.defaults.on_timeout.unwrap_or(OnTimeout::Allow),
        strict_commands: raw.defaults.strict_commands.unwrap_or(false),
    };
    p.deadline("defaults.deadline", defaults.deadline);
    let delivery = delivery(&raw.delivery, base, &mut p);
    let upstreams = upstreams(&raw, base, &mut p, &mut warnings);
    let routes = routes(&raw, &upstreams, &mut p);

    if !p.list.is_empty() {
        return Err(ConfigError { problems: p.list });
    }
    Ok(Config {
        source: source.to_path_buf(),
        listeners,
        admin,
        apps,
        limits,
        defaults,
        delivery,
        upstreams,
        routes,
        warnings,
    })
}

fn listeners(
    raw: &RawConfig,
    base: &Path,
    p: &mut Problems<'_>,
    warnings: &mut Vec<String>,
) -> Vec<Listener> {
    if raw.listeners.is_empty() {
        p.add("listeners: at least one listener is required");
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, l) in raw.listeners.iter().enumerate() {
        let what = format!("listeners[{i}]");
        let Some(addr) = p.addr(&format!("{what}.addr"), &l.addr) else {
            continue;
        };
        // Port 0 asks the OS for a free port: never a duplicate.
        if addr.port() != 0 && !seen.insert(addr) {
            p.add(format!("{what}.addr: duplicate listener address {addr}"));
        }
        let tls = l.tls.as_ref().map(|t| ListenerTls {
            cert: p.path(&format!("{what}.tls.cert"), base, &t.cert),
            key: p.path(&format!("{what}.tls.key"), base, &t.key),
            client_ca: t
                .client_ca
                .as_ref()
                .map(|c| p.path(&format!("{what}.tls.client_ca"), base, c)),
        });
        if let Some(t) = &tls {
            if let Err(e) = crate::tls::server_config(&t.cert, &t.key, t.client_ca.as_deref()) {
                p.add(format!("{what}.tls: {e}"));
            }
            if let Some(w) = crate::tls::loose_key_permissions(&t.key) {
                warnings.push(format!("{what}.tls.key: {w}"));
            }
        }
        let name = match &l.name {
            Some(n) => p.text(&format!("{what}.name"), n),
            None => addr.to_string(),
        };
        out.push(Listener { name, addr, tls });
    }
    out
}

fn admin(raw: &RawConfig, p: &mut Problems<'_>) -> Admin {
    let raw = raw.admin.as_ref();
    let addr = raw
        .and_then(|a| a.addr.as_deref())
        .and_then(|a| p.addr("admin.addr", a))
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9901)));
    let token = raw
        .and_then(|a| a.token.as_deref())
        .map(|t| p.text("admin.token", t));
    if matches!(&token, Some(t) if t.is_empty()) {
        p.add("admin.token: empty token (remove the key to leave the admin address open)");
    }
    Admin {
        addr,
        token: token.map(Secret::new),
    }
}

fn apps(raw: &RawConfig, p: &mut Problems<'_>) -> BTreeMap<u64, App> {
    if raw.apps.is_empty() {
        p.add("apps: at least one app is required");
    }
    let mut apps = BTreeMap::new();
    for (i, a) in raw.apps.iter().enumerate() {
        let token = a
            .token
            .as_ref()
            .map(|t| p.text(&format!("apps[{i}].token"), t));
        if matches!(&token, Some(t) if t.is_empty()) {
            p.add(format!(
                "apps[{i}].token: empty token (remove the key to disable Sign checks)"
            ));
        }
        let app = App {
            sdkappid: a.sdkappid,
            token: token.map(Secret::new),
        };
        if apps.insert(a.sdkappid, app).is_some() {
            p.add(format!("apps[{i}]: duplicate sdkappid {}", a.sdkappid));
        }
    }
    apps
}

fn limits(raw: &RawLimits, p: &mut Problems<'_>) -> Limits {
    let max_body = match &raw.max_body {
        None => 1024 * 1024,
        Some(v) => {
            let v = p.text("limits.max_body", v);
            parse_size(&v).unwrap_or_else(|e| {
                p.add(format!("limits.max_body: {e}"));
                0
            })
        }
    };
    let limits = Limits {
        max_body,
        header_timeout: p.duration(
            "limits.header_timeout",
            raw.header_timeout.as_deref(),
            Duration::from_secs(5),
        ),
        idle_timeout: p.duration(
            "limits.idle_timeout",
            raw.idle_timeout.as_deref(),
            Duration::from_secs(60),
        ),
        max_connections: raw.max_connections.unwrap_or(10_000),
        sign_window: p.duration(
            "limits.sign_window",
            raw.sign_window.as_deref(),
            Duration::from_secs(60),
        ),
    };
    if limits.max_body == 0 {
        p.add("limits.max_body: must be above 0");
    }
    if limits.max_connections == 0 {
        p.add("limits.max_connections: must be above 0");
    }
    for (what, d) in [
        ("limits.header_timeout", limits.header_timeout),
        ("limits.idle_timeout", limits.idle_timeout),
    ] {
        if d.is_zero() {
            p.add(format!("{what}: must be above 0"));
        }
    }
    limits
}

/// A JetStream stream or consumer name: no whitespace, dots, wildcards or
/// path separators (the server refuses those).
fn nats_name(what: &str, value: String, p: &mut Problems<'_>) -> String {
    let bad = value.is_empty()
        || value.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\')
        });
    if bad {
        p.add(format!(
            "{what}: {value:?} must be a non-empty name without spaces, '.', '*', '>', '/' or '\\'"
        ));
    }
    value
}

fn nats(raw: &RawNats, base: &Path, p: &mut Problems<'_>) -> Nats {
    let text = |p: &mut Problems<'_>, what: &str, v: &Option<String>| {
        v.as_deref()
            .map(|v| p.text(&format!("delivery.nats.{what}"), v))
    };
    let servers: Vec<String> = raw
        .servers
        .iter()
        .enumerate()
        .map(|(i, s)| p.text(&format!("delivery.nats.servers[{i}]"), s))
        .collect();
    if servers.is_empty() {
        p.add("delivery.nats.servers: at least one server URL is needed");
    }
    for (i, s) in servers.iter().enumerate() {
        if s.parse::<async_nats::ServerAddr>().is_err() {
            p.add(format!(
                "delivery.nats.servers[{i}]: {s:?} is not a NATS URL such as nats://127.0.0.1:4222"
            ));
        }
    }
    let credentials = raw
        .credentials
        .as_deref()
        .map(|c| p.path("delivery.nats.credentials", base, c));
    if let Some(c) = &credentials
        && let Err(e) = std::fs::metadata(c)
    {
        p.add(format!("delivery.nats.credentials: {}: {e}", c.display()));
    }
    let tls = raw.tls.as_ref().map(|t| NatsTls {
        ca: t
            .ca
            .as_deref()
            .map(|c| p.path("delivery.nats.tls.ca", base, c)),
        cert: t
            .cert
            .as_deref()
            .map(|c| p.path("delivery.nats.tls.cert", base, c)),
        key: t
            .key
            .as_deref()
            .map(|c| p.path("delivery.nats.tls.key", base, c)),
    });
    if let Some(t) = &tls {
        let identity = match (&t.cert, &t.key) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            (None, None) => None,
            _ => {
                p.add("delivery.nats.tls: cert and key go together");
                None
            }
        };
        if let Err(e) = crate::tls::client_config(t.ca.as_deref(), identity) {
            p.add(format!("delivery.nats.tls: {e}"));
        }
    }
    let user = text(p, "user", &raw.user);
    let password = text(p, "password", &raw.password).map(Secret::new);
    if user.is_some() != password.is_some() {
        p.add("delivery.nats: user and password go together");
    }
    let token = text(p, "token", &raw.token).map(Secret::new);
    let subject = text(p, "subject", &raw.subject).unwrap_or_else(|| "callgate".into());
    if subject.is_empty()
        || subject
            .split('.')
            .any(|t| t.is_empty() || t.contains(['*', '>']) || t.contains(char::is_whitespace))
    {
        p.add(format!(
            "delivery.nats.subject: {subject:?} must be dot-separated tokens without wildcards or spaces"
        ));
    }
    let stream = text(p, "stream", &raw.stream).unwrap_or_else(|| "CALLGATE".into());
    let dead_stream =
        text(p, "dead_stream", &raw.dead_stream).unwrap_or_else(|| "CALLGATE_DEAD".into());
    let consumer_prefix =
        text(p, "consumer_prefix", &raw.consumer_prefix).unwrap_or_else(|| "callgate".into());
    let n = Nats {
        servers,
        credentials,
        user,
        password,
        token,
        tls,
        stream: nats_name("delivery.nats.stream", stream, p),
        dead_stream: nats_name("delivery.nats.dead_stream", dead_stream, p),
        subject,
        consumer_prefix: nats_name("delivery.nats.consumer_prefix", consumer_prefix, p),
        replicas: raw.replicas.unwrap_or(1),
        max_bytes: match &raw.max_bytes {
            None => 1024 * 1024 * 1024,
            Some(v) => {
                let v = p.text("delivery.nats.max_bytes", v);
                parse_size(&v).unwrap_or_else(|e| {
                    p.add(format!("delivery.nats.max_bytes: {e}"));
                    0
                })
            }
        },
        publish_timeout: p.duration(
            "delivery.nats.publish_timeout",
            raw.publish_timeout.as_deref(),
            Duration::from_secs(1),
        ),
        ack_wait: p.duration(
            "delivery.nats.ack_wait",
            raw.ack_wait.as_deref(),
            Duration::from_secs(30),
        ),
        duplicate_window: p.duration(
            "delivery.nats.duplicate_window",
            raw.duplicate_window.as_deref(),
            Duration::from_secs(120),
        ),
    };
    if n.stream == n.dead_stream {
        p.add("delivery.nats: stream and dead_stream must differ");
    }
    if !(1..=5).contains(&n.replicas) {
        p.add("delivery.nats.replicas: must be 1 to 5");
    }
    if n.max_bytes == 0 {
        p.add("delivery.nats.max_bytes: must be above 0");
    }
    // IM waits 2 s for any answer; a publish that may take longer cannot
    // be acknowledged in time.
    if n.publish_timeout.is_zero() || n.publish_timeout > MAX_DEADLINE {
        p.add("delivery.nats.publish_timeout: must be above 0 and at most 2s");
    }
    if n.ack_wait < Duration::from_secs(1) {
        p.add("delivery.nats.ack_wait: must be at least 1s");
    }
    if n.duplicate_window.is_zero() {
        p.add("delivery.nats.duplicate_window: must be above 0");
    }
    n
}

fn delivery(raw: &RawDelivery, base: &Path, p: &mut Problems<'_>) -> Delivery {
    let mut d = Delivery {
        outbox: p.path(
            "delivery.outbox",
            base,
            raw.outbox.as_deref().unwrap_or("data/outbox"),
        ),
        max_attempts: raw.max_attempts.unwrap_or(8),
        backoff: p.duration(
            "delivery.backoff",
            raw.backoff.as_deref(),
            Duration::from_millis(200),
        ),
        max_backoff: p.duration(
            "delivery.max_backoff",
            raw.max_backoff.as_deref(),
            Duration::from_secs(30),
        ),
        max_age: p.duration(
            "delivery.max_age",
            raw.max_age.as_deref(),
            Duration::from_secs(3600),
        ),
        max_pending: raw.max_pending.unwrap_or(100_000),
        backend: raw.backend.unwrap_or_default(),
        nats: None,
    };

    match (d.backend, &raw.nats) {
        (Backend::Nats, Some(n)) => d.nats = Some(nats(n, base, p)),
        (Backend::Nats, None) => p.add("delivery.nats: required with delivery.backend nats"),
        (Backend::Embedded, Some(_)) => {
            p.add("delivery.nats: only used with delivery.backend nats (set the backend, or remove the section)")
        }
        (Backend::Embedded, None) => {}
    }
    if d.max_attempts == 0 {
        p.add("delivery.max_attempts: must be at least 1");
    }
    if d.backoff.is_zero() {
        p.add("delivery.backoff: must be above 0");
    }
    if d.max_backoff < d.backoff {
        p.add("delivery.max_backoff: must not be below delivery.backoff");
    }
    if d.max_pending == 0 {
        p.add("delivery.max_pending: must be above 0");
    }
    d
}

fn routes(
    raw: &RawConfig,
    upstreams: &BTreeMap<String, Upstream>,
    p: &mut Problems<'_>,
) -> Vec<Route> {
    let mut out = Vec::new();
    for (i, r) in raw.routes.iter().enumerate() {
        let what = format!("routes[{i}]");
        let pattern = p.text(&format!("{what}.match"), &r.pattern);
        if pattern.is_empty() {
            p.add(format!("{what}.match: must not be empty"));
        }
        if r.upstreams.is_empty() {
            p.add(format!(
                "{what}.upstreams: at least one upstream is required"
            ));
        }
        for u in &r.upstreams {
            if !upstreams.contains_key(u) && !raw.upstreams.contains_key(u) {
                p.add(format!("{what}.upstreams: unknown upstream {u:?}"));
            }
        }
        let deadline = r
            .deadline
            .as_deref()
            .map(|d| p.duration(&format!("{what}.deadline"), Some(d), Duration::ZERO));
        if let Some(d) = deadline {
            p.deadline(&format!("{what}.deadline"), d);
        }
        out.push(Route {
            pattern,
            sdkappid: r.sdkappid,
            upstreams: r.upstreams.clone(),
            policy: r.policy.unwrap_or_default(),
            deadline,
            on_timeout: r.on_timeout,
            kind: r.kind,
        });
    }
    out
}
