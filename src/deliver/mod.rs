//! Notification delivery: IM is acknowledged once the notification is
//! stored, then it is delivered to every upstream of its route, with
//! retries, from one of two backends (`delivery.backend`):
//! - `embedded`: the outbox folder of this gateway (redb), see `embedded`;
//! - `nats`: a NATS JetStream stream shared by a fleet, see `fleet`.
//!
//! Both follow the same rules: an event is taken whole or refused (503),
//! each (event, upstream) pair is retried with [`backoff`] and
//! dead-lettered after `max_attempts` or `max_age`.

//!
//! The pieces: `record` (the stored event, the same bytes on both
//! backends), `embedded` (scheduler, group-commit writer, redb store) and
//! `fleet` (supervisor, workers, streams, the operator commands on NATS).

pub mod embedded;
pub mod fleet;
pub mod record;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::common::{DeliveryResult, Forward};
use crate::config::{Backend, Delivery};
use crate::metrics::Metrics;
use crate::respond::Rejection;
use crate::runtime::Cores;
use crate::snapshot::Snapshot;
use crate::upstream::UpstreamClient;

pub use embedded::{Embedded, OutboxError};
pub use fleet::Fleet;

/// Cap on one delivery attempt when the upstream sets no `timeout`.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a delivery backend sees of the running gateway: the generation
/// in force (retry settings, upstream clients), the metrics and the
/// serving threads that run attempts. Narrow on purpose: delivery knows
/// nothing of listeners, readiness or reloads.
#[derive(Clone)]
pub struct Context {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub metrics: Arc<Metrics>,
    pub cores: Arc<Cores>,
}

impl Context {
    pub fn load(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }
}

/// A notification to store: the callback, its command, and the upstreams
/// its route names.
#[derive(Debug, Clone, Copy)]
pub struct Notification<'a> {
    pub fwd: &'a Forward,
    pub command: &'a str,
    pub upstreams: &'a [Arc<str>],
}

/// Why a notification was not taken; IM gets 503 for each.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("the outbox is full")]
    Full,
    #[error("the outbox cannot store the notification: {0}")]
    Store(String),
    #[error("the notification store is unavailable: {0}")]
    Unavailable(String),
    #[error("shutting down")]
    ShuttingDown,
}

impl From<EnqueueError> for Rejection {
    fn from(e: EnqueueError) -> Self {
        Rejection::Unavailable(e.to_string())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error(transparent)]
    JetStream(#[from] fleet::streams::JetStreamError),
}

/// The outcome of one delivery attempt.
enum Attempt {
    Delivered,
    Failed(String),
    /// No point retrying (the upstream left the config, the event is gone).
    Hopeless(String),
}

/// The backend chosen by `delivery.backend`.
pub enum Deliverer {
    Embedded(Embedded),
    Fleet(Fleet),
}

impl Deliverer {
    /// Opens the backend: reads what earlier runs left in the outbox, or
    /// starts connecting to NATS (without waiting for it).
    pub async fn open(settings: &Delivery) -> Result<Self, OpenError> {
        Ok(match settings.backend {
            Backend::Embedded => Self::Embedded(Embedded::open(settings)?),
            Backend::Nats => Self::Fleet(Fleet::open(settings).await?),
        })
    }

    /// Starts delivering (and, for NATS, setting up streams and consumers).
    pub fn start(&self, ctx: &Context) {
        match self {
            Self::Embedded(e) => e.start(ctx),
            Self::Fleet(f) => f.start(ctx),
        }
    }

    /// Stores the notification for each upstream, or refuses it whole
    /// (a 503 for IM).
    pub async fn enqueue(
        &self,
        metrics: &Metrics,
        notification: Notification<'_>,
    ) -> Result<(), Rejection> {
        let result = match self {
            Self::Embedded(e) => e.enqueue(metrics, notification).await,
            Self::Fleet(f) => f.enqueue(notification).await,
        };
        if result.is_err() {
            for name in notification.upstreams {
                metrics.delivery(name, DeliveryResult::Dropped);
            }
        }
        result.map_err(Rejection::from)
    }

    /// Whether notifications can be stored now (`/readyz`, the
    /// `callgate_outbox_writable` gauge): false while the disk or the
    /// stream refuses them, or NATS is away.
    pub fn is_available(&self) -> bool {
        match self {
            Self::Embedded(e) => e.is_available(),
            Self::Fleet(f) => f.is_available(),
        }
    }

    /// Refuses new notifications and lets attempts in flight finish, up to
    /// `grace`. Returns how many deliveries this gateway leaves pending.
    pub async fn shutdown(&self, grace: Duration) -> usize {
        match self {
            Self::Embedded(e) => e.shutdown(grace).await,
            Self::Fleet(f) => f.shutdown(grace).await,
        }
    }
}

/// One attempt: POST the notification; any 2xx is delivered, whatever
/// its body (which is not needed, so never a reason to fail).
async fn post(client: &UpstreamClient, fwd: &Forward) -> Attempt {
    match client.status_of(fwd, Some(DEFAULT_ATTEMPT_TIMEOUT)).await {
        Ok(status) if status.is_success() => Attempt::Delivered,
        Ok(status) => Attempt::Failed(format!("status {}", status.as_u16())),
        Err(e) => Attempt::Failed(e.to_string()),
    }
}

/// Exponential backoff from `backoff`, doubling per attempt up to
/// `max_backoff`, with "equal jitter": a random point in the upper half,
/// so retries of many events spread out but never come sooner than half
/// the nominal delay.
pub fn backoff(settings: &Delivery, attempt: u32) -> Duration {
    let doubling = 2u32.saturating_pow(attempt.saturating_sub(1).min(31));
    let nominal = settings
        .backoff
        .saturating_mul(doubling)
        .min(settings.max_backoff);
    let half = nominal / 2;
    half + half.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Delivery {
        Delivery {
            outbox: "x".into(),
            max_attempts: 8,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            max_age: Duration::from_secs(3600),
            max_pending: 10,
            backend: Backend::Embedded,
            nats: None,
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let s = settings();
        for _ in 0..100 {
            let d1 = backoff(&s, 1);
            assert!(
                d1 >= Duration::from_millis(100) && d1 <= Duration::from_millis(200),
                "{d1:?}"
            );
            let d3 = backoff(&s, 3);
            assert!(
                d3 >= Duration::from_millis(400) && d3 <= Duration::from_millis(800),
                "{d3:?}"
            );
            let d40 = backoff(&s, 40);
            assert!(
                d40 >= Duration::from_secs(15) && d40 <= Duration::from_secs(30),
                "{d40:?}"
            );
        }
    }
}
