//! Notifications ("after" callbacks): acknowledged once queued, then
//! delivered to every upstream of the route independently, with retries.
//!
//! This queue lives in memory: bounded by `delivery.max_pending`, one task
//! per (event, upstream). It is the seam where the durable outbox will go;
//! until then a crash or restart loses what is still queued (README).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Delivery;
use crate::state::Shared;
use crate::upstream::Forward;

/// The most an upstream's answer to a notification is read (it is ignored).
const MAX_ANSWER: usize = 64 * 1024;
/// Cap on one delivery attempt when the upstream sets no `timeout`.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[error("the notification queue is full")]
pub struct QueueFull;

pub struct Deliverer {
    permits: Arc<Semaphore>,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Deliverer {
    pub fn new(max_pending: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_pending.min(Semaphore::MAX_PERMITS))),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
        }
    }

    /// Queues one notification for each upstream, or none of them: either
    /// every upstream will get it, or the sender is told it was not taken.
    pub fn enqueue(
        &self,
        shared: &Arc<Shared>,
        fwd: &Forward,
        upstreams: &[Arc<str>],
    ) -> Result<(), QueueFull> {
        let n = u32::try_from(upstreams.len()).map_err(|_| QueueFull)?;
        let Ok(mut permits) = self.permits.clone().try_acquire_many_owned(n) else {
            for name in upstreams {
                shared.metrics.delivery(name, "dropped");
            }
            return Err(QueueFull);
        };
        let received = Instant::now();
        for name in upstreams {
            let permit = permits.split(1).ok_or(QueueFull)?;
            shared.metrics.outbox_pending.inc();
            self.tasks.spawn(deliver(
                shared.clone(),
                name.clone(),
                fwd.clone(),
                received,
                permit,
                self.stop.clone(),
            ));
        }
        Ok(())
    }

    /// Stops scheduling retries and waits (up to `grace`) for attempts in
    /// flight. Returns how many deliveries were still unfinished.
    pub async fn shutdown(&self, grace: Duration) -> usize {
        self.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(grace, self.tasks.wait()).await;
        self.tasks.len()
    }
}

async fn deliver(
    shared: Arc<Shared>,
    name: Arc<str>,
    fwd: Forward,
    received: Instant,
    _permit: OwnedSemaphorePermit,
    stop: CancellationToken,
) {
    let metrics = &shared.metrics;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let (client, settings) = {
            let snap = shared.load();
            (snap.upstream(&name).cloned(), snap.config.delivery.clone())
        };
        let Some(client) = client else {
            metrics.delivery(&name, "dead");
            tracing::warn!(request_id = %fwd.request_id, upstream = %name, "notification dead-lettered: upstream removed from config");
            break;
        };
        let error = match client
            .call(&fwd, MAX_ANSWER, Some(DEFAULT_ATTEMPT_TIMEOUT))
            .await
        {
            Ok(answer) if answer.status.is_success() => {
                metrics.delivery(&name, "delivered");
                tracing::debug!(request_id = %fwd.request_id, upstream = %name, attempt, "notification delivered");
                break;
            }
            Ok(answer) => format!("status {}", answer.status.as_u16()),
            Err(e) => e.to_string(),
        };
        if attempt >= settings.max_attempts || received.elapsed() >= settings.max_age {
            metrics.delivery(&name, "dead");
            tracing::warn!(request_id = %fwd.request_id, upstream = %name, attempt, %error, "notification dead-lettered");
            break;
        }
        metrics.delivery(&name, "retried");
        let delay = backoff(&settings, attempt);
        tracing::debug!(request_id = %fwd.request_id, upstream = %name, attempt, %error, ?delay, "notification will be retried");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => {
                tracing::warn!(request_id = %fwd.request_id, upstream = %name, attempt, "notification abandoned at shutdown (in-memory queue)");
                break;
            }
        }
    }
    metrics.outbox_pending.dec();
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
