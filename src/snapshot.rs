//! What one config generation serves with: the config, its routing table
//! and its upstream clients, immutable. The gateway keeps the one in force
//! behind an `ArcSwap` (see `state`); a request loads it once and keeps it
//! to its end, so a reload never changes a request halfway.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Config;
use crate::route::RouteTable;
use crate::upstream::{UpstreamClient, UpstreamError};

pub struct Snapshot {
    pub generation: u64,
    pub config: Arc<Config>,
    pub routes: RouteTable,
    pub upstreams: HashMap<Arc<str>, Arc<UpstreamClient>>,
    /// Each route's upstreams with their clients, by route index: resolved
    /// once per generation so a decision does no map lookup.
    route_upstreams: Vec<Vec<RouteUpstream>>,
}

/// One upstream of a route. `client` is `None` only if the config named an
/// upstream it lacks, which validation rules out.
#[derive(Debug, Clone)]
pub struct RouteUpstream {
    pub name: Arc<str>,
    pub client: Option<Arc<UpstreamClient>>,
}

impl Snapshot {
    /// Builds the snapshot for `config`. Upstream clients whose settings did
    /// not change are taken over from `previous`, keeping their pooled
    /// connections.
    pub fn build(
        config: Config,
        generation: u64,
        previous: Option<&Snapshot>,
    ) -> Result<Self, UpstreamError> {
        let mut upstreams = HashMap::with_capacity(config.upstreams.len());
        for (name, up) in &config.upstreams {
            let reused = previous
                .and_then(|p| p.upstreams.get(name.as_str()))
                .filter(|c| c.config == *up)
                .cloned();
            let client = match reused {
                Some(c) => c,
                None => Arc::new(UpstreamClient::new(up)?),
            };
            upstreams.insert(Arc::from(name.as_str()), client);
        }
        let routes = RouteTable::new(&config);
        let route_upstreams = routes
            .entries()
            .iter()
            .map(|r| {
                r.upstreams
                    .iter()
                    .map(|name| RouteUpstream {
                        name: name.clone(),
                        client: upstreams.get(name).cloned(),
                    })
                    .collect()
            })
            .collect();
        Ok(Self {
            generation,
            routes,
            config: Arc::new(config),
            upstreams,
            route_upstreams,
        })
    }

    /// The upstreams of the route with index `route`, in config order.
    pub fn route_upstreams(&self, route: usize) -> &[RouteUpstream] {
        self.route_upstreams.get(route).map_or(&[], Vec::as_slice)
    }

    pub fn upstream(&self, name: &str) -> Option<&Arc<UpstreamClient>> {
        self.upstreams.get(name)
    }
}
