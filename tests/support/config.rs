//! `routes.yaml` built by a small typed builder instead of `format!`.
//!
//! ```ignore
//! let config = Config::new()
//!     .upstream("a", &up)
//!     .route(Route::new("Group.CallbackBefore*", &["a"]).deadline("400ms"));
//! let gw = Gateway::start(&config).await;
//! ```
//!
//! What a test leaves out gets a default: one plain listener and the admin
//! address on ephemeral 127.0.0.1 ports, and the app [`APP`](super::APP)
//! without a token. Flat sections (`limits`, `defaults`, `delivery`) take
//! keys by name, so the file reads like the YAML it writes.

use std::fmt::Write as _;
use std::path::Path;

use super::{APP, Pki, Upstream};

/// A whole config file.
#[derive(Clone, Debug, Default)]
pub struct Config {
    listeners: Vec<Listener>,
    admin: Option<String>,
    apps: Option<Vec<(u64, Option<String>)>>,
    /// `limits`, `defaults` and `delivery`, each in the order set.
    sections: Vec<(&'static str, Vec<(String, String)>)>,
    nats: Vec<(String, String)>,
    upstreams: Vec<(String, Endpoint)>,
    routes: Vec<Route>,
}

impl Config {
    pub fn new() -> Self {
        Self::default()
    }

    /// The shape most tests want: one upstream `a` and one route `*` to it.
    pub fn catch_all(up: impl Into<Endpoint>) -> Self {
        Self::new().upstream("a", up).route(Route::all(&["a"]))
    }

    pub fn listener(mut self, listener: Listener) -> Self {
        self.listeners.push(listener);
        self
    }

    pub fn has_listeners(&self) -> bool {
        !self.listeners.is_empty()
    }

    pub fn admin(mut self, addr: impl ToString) -> Self {
        self.admin = Some(addr.to_string());
        self
    }

    /// An app without a token (once any app is set, [`APP`] is no longer
    /// added by default).
    pub fn app(mut self, sdkappid: u64) -> Self {
        self.apps.get_or_insert_default().push((sdkappid, None));
        self
    }

    /// An app whose callbacks must be signed with `token`.
    pub fn signed_app(mut self, sdkappid: u64, token: &str) -> Self {
        self.apps
            .get_or_insert_default()
            .push((sdkappid, Some(token.to_owned())));
        self
    }

    /// `apps: []`, which is invalid: for tests of config errors.
    pub fn no_apps(mut self) -> Self {
        self.apps = Some(Vec::new());
        self
    }

    /// A key of `limits:`.
    pub fn limits(self, key: &str, value: impl Scalar) -> Self {
        self.set("limits", key, value)
    }

    /// A key of `defaults:`.
    pub fn defaults(self, key: &str, value: impl Scalar) -> Self {
        self.set("defaults", key, value)
    }

    /// A key of `delivery:`.
    pub fn delivery(self, key: &str, value: impl Scalar) -> Self {
        self.set("delivery", key, value)
    }

    /// A key of `delivery: nats:`.
    pub fn nats_setting(mut self, key: &str, value: impl Scalar) -> Self {
        self.nats.push((key.to_owned(), value.render()));
        self
    }

    /// The three retry settings of `delivery:` at once.
    pub fn retries(self, max_attempts: u32, backoff: &str, max_backoff: &str) -> Self {
        self.delivery("max_attempts", max_attempts)
            .delivery("backoff", backoff)
            .delivery("max_backoff", max_backoff)
    }

    pub fn upstream(mut self, name: &str, endpoint: impl Into<Endpoint>) -> Self {
        self.upstreams.push((name.to_owned(), endpoint.into()));
        self
    }

    pub fn route(mut self, route: Route) -> Self {
        self.routes.push(route);
        self
    }

    fn set(mut self, section: &'static str, key: &str, value: impl Scalar) -> Self {
        let entry = (key.to_owned(), value.render());
        match self.sections.iter_mut().find(|(name, _)| *name == section) {
            Some((_, keys)) => keys.push(entry),
            None => self.sections.push((section, vec![entry])),
        }
        self
    }

    /// The file's text.
    pub fn yaml(&self) -> String {
        let mut y = String::from("listeners:\n");
        let plain = [Listener::new()];
        let listeners = if self.listeners.is_empty() {
            &plain[..]
        } else {
            &self.listeners
        };
        for l in listeners {
            l.render(&mut y);
        }
        let admin = self.admin.as_deref().unwrap_or("127.0.0.1:0");
        let _ = writeln!(y, "admin:\n  addr: {}", admin.render());
        let default_apps = [(APP, None)];
        match self.apps.as_deref().unwrap_or(&default_apps) {
            [] => y.push_str("apps: []\n"),
            apps => {
                y.push_str("apps:\n");
                for (id, token) in apps {
                    let _ = writeln!(y, "  - sdkappid: {id}");
                    if let Some(token) = token {
                        let _ = writeln!(y, "    token: {}", token.render());
                    }
                }
            }
        }
        for (section, keys) in &self.sections {
            let _ = writeln!(y, "{section}:");
            map(&mut y, "  ", keys);
            if *section == "delivery" && !self.nats.is_empty() {
                y.push_str("  nats:\n");
                map(&mut y, "    ", &self.nats);
            }
        }
        if !self.upstreams.is_empty() {
            y.push_str("upstreams:\n");
            for (name, endpoint) in &self.upstreams {
                let _ = writeln!(y, "  {name}:");
                map(&mut y, "    ", &endpoint.0);
            }
        }
        if !self.routes.is_empty() {
            y.push_str("routes:\n");
            for route in &self.routes {
                let (first, rest) = route.0.split_first().expect("a route has a match");
                let _ = writeln!(y, "  - {}: {}", first.0, first.1);
                map(&mut y, "    ", rest);
            }
        }
        y
    }

    /// Writes the file at `path`.
    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.yaml()).unwrap();
    }

    /// The config as the gateway reads it (for tests of library functions
    /// that take a parsed config).
    pub fn parse(&self) -> callgate::Config {
        callgate::Config::parse(&self.yaml(), Path::new("routes.yaml"))
            .unwrap_or_else(|e| panic!("test config invalid: {e}\n{}", self.yaml()))
    }
}

fn map(y: &mut String, indent: &str, keys: &[(String, String)]) {
    for (k, v) in keys {
        let _ = writeln!(y, "{indent}{k}: {v}");
    }
}

/// One entry of `listeners:`.
#[derive(Clone, Debug)]
pub struct Listener {
    addr: String,
    name: Option<String>,
    tls: Option<(String, String, Option<String>)>,
}

impl Listener {
    /// Plain HTTP on an ephemeral 127.0.0.1 port.
    pub fn new() -> Self {
        Self::at("127.0.0.1:0")
    }

    pub fn at(addr: impl ToString) -> Self {
        Listener {
            addr: addr.to_string(),
            name: None,
            tls: None,
        }
    }

    /// HTTPS with `pki`'s server certificate.
    pub fn https(pki: &Pki) -> Self {
        Self::new().tls(&pki.path("server.pem"), &pki.path("server-key.pem"))
    }

    /// Mutual TLS: HTTPS, and a client certificate from `pki`'s CA.
    pub fn mtls(pki: &Pki) -> Self {
        Self::https(pki).client_ca(&pki.path("ca.pem"))
    }

    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    pub fn tls(mut self, cert: &str, key: &str) -> Self {
        self.tls = Some((cert.to_owned(), key.to_owned(), None));
        self
    }

    pub fn client_ca(mut self, ca: &str) -> Self {
        self.tls.as_mut().expect("client_ca goes with tls").2 = Some(ca.to_owned());
        self
    }

    fn render(&self, y: &mut String) {
        let _ = writeln!(y, "  - addr: {}", self.addr.render());
        if let Some(name) = &self.name {
            let _ = writeln!(y, "    name: {}", name.render());
        }
        if let Some((cert, key, ca)) = &self.tls {
            let _ = writeln!(y, "    tls:\n      cert: {}", cert.render());
            let _ = writeln!(y, "      key: {}", key.render());
            if let Some(ca) = ca {
                let _ = writeln!(y, "      client_ca: {}", ca.render());
            }
        }
    }
}

impl Default for Listener {
    fn default() -> Self {
        Self::new()
    }
}

/// One entry of `upstreams:`: a URL and its settings.
#[derive(Clone, Debug)]
pub struct Endpoint(Vec<(String, String)>);

impl Endpoint {
    pub fn new(url: impl ToString) -> Self {
        Endpoint(vec![("url".into(), url.to_string().render())])
    }

    pub fn timeout(self, timeout: &str) -> Self {
        self.set("timeout", timeout)
    }

    /// The CA the upstream's certificate must chain to.
    pub fn ca(self, ca: &str) -> Self {
        self.set("ca", ca)
    }

    /// The client certificate the gateway presents.
    pub fn identity(self, cert: &str, key: &str) -> Self {
        self.set("client_cert", cert).set("client_key", key)
    }

    fn set(mut self, key: &str, value: impl Scalar) -> Self {
        self.0.push((key.to_owned(), value.render()));
        self
    }
}

impl From<&Upstream> for Endpoint {
    fn from(up: &Upstream) -> Self {
        Endpoint::new(up.url())
    }
}

impl From<String> for Endpoint {
    fn from(url: String) -> Self {
        Endpoint::new(url)
    }
}

impl From<&str> for Endpoint {
    fn from(url: &str) -> Self {
        Endpoint::new(url)
    }
}

/// One entry of `routes:`.
#[derive(Clone, Debug)]
pub struct Route(Vec<(String, String)>);

impl Route {
    /// Commands matching `pattern` go to `upstreams`.
    pub fn new(pattern: &str, upstreams: &[&str]) -> Self {
        let list: Vec<String> = upstreams.iter().map(|u| u.render()).collect();
        Route(vec![
            ("match".into(), pattern.render()),
            ("upstreams".into(), format!("[{}]", list.join(", "))),
        ])
    }

    /// `match: "*"`.
    pub fn all(upstreams: &[&str]) -> Self {
        Self::new("*", upstreams)
    }

    pub fn deadline(self, deadline: &str) -> Self {
        self.set("deadline", deadline)
    }

    pub fn on_timeout(self, answer: &str) -> Self {
        self.set("on_timeout", answer)
    }

    pub fn policy(self, policy: &str) -> Self {
        self.set("policy", policy)
    }

    pub fn kind(self, kind: &str) -> Self {
        self.set("kind", kind)
    }

    pub fn sdkappid(self, sdkappid: u64) -> Self {
        self.set("sdkappid", sdkappid)
    }

    /// Any other key, e.g. a misspelt one for a test of config errors.
    pub fn set(mut self, key: &str, value: impl Scalar) -> Self {
        self.0.push((key.to_owned(), value.render()));
        self
    }
}

/// A value as YAML writes it: text quoted, numbers and booleans bare.
pub trait Scalar {
    fn render(&self) -> String;
}

impl Scalar for &str {
    fn render(&self) -> String {
        format!("\"{}\"", self.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

impl Scalar for String {
    fn render(&self) -> String {
        self.as_str().render()
    }
}

macro_rules! bare {
    ($($t:ty),*) => {$(
        impl Scalar for $t {
            fn render(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
bare!(u32, u64, usize, bool);
