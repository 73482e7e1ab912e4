//! The live state of one running gateway, shared by the listeners, the
//! admin server and the delivery backend: the [`Snapshot`] in force behind
//! an `ArcSwap`, the metrics, the serving threads, the delivery backend and
//! readiness.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::deliver::{self, Deliverer};
use crate::metrics::Metrics;
use crate::runtime::Cores;
use crate::snapshot::Snapshot;
use crate::upstream::UpstreamError;

/// Everything shared by the listeners, the admin server and the delivery
/// workers of one running gateway.
pub struct Shared {
    /// Shared with the delivery backend, which reads retry settings and
    /// upstream clients from the generation in force.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
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
            snapshot: Arc::new(ArcSwap::from_pointee(first)),
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

    /// What the delivery backend may see of the gateway.
    pub fn delivery_context(&self) -> deliver::Context {
        deliver::Context {
            snapshot: self.snapshot.clone(),
            metrics: self.metrics.clone(),
            cores: self.cores.clone(),
        }
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
    /// take notifications (the embedded outbox's disk takes writes; NATS
    /// is there and its stream has room).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
            && !self.draining.load(Ordering::SeqCst)
            && self.deliverer.is_available()
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }
}
