//! The live state every request reads: one immutable [`Snapshot`] per
//! config generation behind an `ArcSwap`. A request loads the snapshot once
//! and keeps it to its end, so a reload never changes a request halfway.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::deliver::Deliverer;
use crate::metrics::Metrics;
use crate::route::RouteTable;
use crate::server::cores::Cores;
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

/// Everything shared by the listeners, the admin server and the delivery
/// workers of one running gateway.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub metrics: Arc<Metrics>,
    pub deliverer: Deliverer,
    /// The serving threads: connections and delivery attempts run there.
    pub cores: Arc<Cores>,
    ready: AtomicBool,
    draining: AtomicBool,
    next_generation: AtomicU64,
}

impl Shared {
    pub fn new(
        first: Snapshot,
        metrics: Arc<Metrics>,
        deliverer: Deliverer,
        cores: Arc<Cores>,
    ) -> Arc<Self> {
        metrics.config_generation.set(first.generation as i64);
        let next = first.generation + 1;
        Arc::new(Self {
            snapshot: ArcSwap::from_pointee(first),
            metrics,
            deliverer,
            cores,
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            next_generation: AtomicU64::new(next),
        })
    }

    pub fn load(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Validates nothing (the caller already has a valid `Config`): builds
    /// the next snapshot and swaps it in atomically.
    pub fn install(&self, config: Config) -> Result<u64, UpstreamError> {
        let generation = self.next_generation.fetch_add(1, Ordering::SeqCst);
        let current = self.snapshot.load();
        let next = Snapshot::build(config, generation, Some(&current))?;
        self.snapshot.store(Arc::new(next));
        self.metrics.config_generation.set(generation as i64);
        Ok(generation)
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Ready: listening, not draining, and the notification store can
    /// take notifications (always true for the embedded outbox).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
            && !self.draining.load(Ordering::SeqCst)
            && self.deliverer.is_available()
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }
}
