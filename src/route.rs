//! The routing table: which upstreams get a command, and how its answer is
//! decided. Built once per config generation; lookups never allocate.

use std::sync::Arc;
use std::time::Duration;

use crate::answer;
use crate::catalog::{self, Kind};
use crate::config::{Config, OnTimeout, Policy};

/// A `match:` pattern: an exact command name, or a glob where `*` matches
/// any run of characters (dots included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Exact(String),
    Glob(Vec<String>),
}

impl Pattern {
    pub fn new(text: &str) -> Self {
        if text.contains('*') {
            Pattern::Glob(text.split('*').map(str::to_owned).collect())
        } else {
            Pattern::Exact(text.to_owned())
        }
    }

    pub fn matches(&self, command: &str) -> bool {
        match self {
            Pattern::Exact(name) => name == command,
            Pattern::Glob(parts) => glob_matches(parts, command),
        }
    }
}

/// `parts` are the pieces between `*`s: the first must be a prefix, the last
/// a suffix, and the middle ones must appear in order (leftmost match is
/// enough for `*`-only globs).
fn glob_matches(parts: &[String], text: &str) -> bool {
    let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
        return true;
    };
    if parts.len() == 1 {
        return first == text;
    }
    let Some(mut rest) = text.strip_prefix(first.as_str()) else {
        return false;
    };
    if rest.len() < last.len() {
        return false;
    }
    let tail_start = rest.len() - last.len();
    if !rest.is_char_boundary(tail_start) || &rest[tail_start..] != last {
        return false;
    }
    rest = &rest[..tail_start];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle.as_str()) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

/// One route, resolved against the defaults of its config.
#[derive(Debug)]
pub struct RouteEntry {
    pub index: usize,
    pub pattern: Pattern,
    pub sdkappid: Option<u64>,
    pub upstreams: Vec<Arc<str>>,
    pub policy: Policy,
    pub deadline: Duration,
    /// The route's own `on_timeout`, if it sets one.
    pub on_timeout: Option<OnTimeout>,
    pub kind: Option<Kind>,
}

/// Where routing sends one callback, and under which terms.
#[derive(Debug, Clone, Copy)]
pub struct Routed<'a> {
    pub kind: Kind,
    pub route: Option<&'a RouteEntry>,
    pub deadline: Duration,
    pub on_timeout: OnTimeout,
}

#[derive(Debug)]
pub struct RouteTable {
    routes: Vec<RouteEntry>,
    default_deadline: Duration,
    default_on_timeout: OnTimeout,
}

impl RouteTable {
    pub fn new(config: &Config) -> Self {
        let routes = config
            .routes
            .iter()
            .enumerate()
            .map(|(index, r)| RouteEntry {
                index,
                pattern: Pattern::new(&r.pattern),
                sdkappid: r.sdkappid,
                upstreams: r.upstreams.iter().map(|u| Arc::from(u.as_str())).collect(),
                policy: r.policy,
                deadline: r.deadline.unwrap_or(config.defaults.deadline),
                on_timeout: r.on_timeout,
                kind: r.kind,
            })
            .collect();
        Self {
            routes,
            default_deadline: config.defaults.deadline,
            default_on_timeout: config.defaults.on_timeout,
        }
    }

    /// Every route, in config order (index = `RouteEntry::index`).
    pub fn entries(&self) -> &[RouteEntry] {
        &self.routes
    }

    /// First route whose pattern (and app filter) fits wins.
    pub fn find(&self, command: &str, sdkappid: u64) -> Option<&RouteEntry> {
        self.routes
            .iter()
            .find(|r| r.sdkappid.is_none_or(|id| id == sdkappid) && r.pattern.matches(command))
    }

    /// Routes a command: the route (if any) and its kind, deadline and
    /// fallback. A route's `kind:` overrides the catalog; the fallback is
    /// the route's, else the catalog's for commands IM fails closed on,
    /// else the default (SPEC 4.5).
    pub fn route(&self, command: &str, sdkappid: u64) -> Routed<'_> {
        let route = self.find(command, sdkappid);
        let spec = catalog::lookup(command);
        let kind = route
            .and_then(|r| r.kind)
            .or_else(|| spec.map(|c| c.kind))
            .unwrap_or_else(|| catalog::kind_by_name(command));
        Routed {
            kind,
            route,
            deadline: route.map_or(self.default_deadline, |r| r.deadline),
            on_timeout: answer::fallback_for(
                route.and_then(|r| r.on_timeout),
                spec,
                self.default_on_timeout,
            ),
        }
    }
}

#[cfg(test)]
mod tests;
