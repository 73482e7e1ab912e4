//! The embedded backend: notifications kept in the outbox folder (redb)
//! of this gateway. Each (event, upstream) pair is tried independently,
//! retried with backoff, and dead-lettered after `max_attempts` or
//! `max_age`. Progress is kept in the outbox, so a restart resumes where
//! the last run stopped.
//!
//! `store` is the redb file, `writer` the group-commit thread in front of
//! it (and what keeps the outbox going through a full disk), `scheduler`
//! the task that decides which delivery is tried when, `files` the
//! folder's permissions and the disk probe. This file is the backend's
//! face: open, take a notification, shut down.

mod files;
mod scheduler;
pub mod store;
mod writer;

pub use store::{FILE_NAME, Op, OutboxError, Row, Store};

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::common::now_ms;
use crate::config::Delivery;
use crate::deliver::record::{DeliveryRecord, EventRecord};
use crate::deliver::{Context, EnqueueError, Notification};
use crate::metrics::Metrics;
use scheduler::{Msg, Scheduler};
use writer::Outbox;

pub struct Embedded {
    outbox: Arc<Outbox>,
    /// Deliveries taken and not yet finished: the bound of `max_pending`.
    pending: Arc<AtomicUsize>,
    max_pending: usize,
    accepting: AtomicBool,
    tx: mpsc::UnboundedSender<Msg>,
    /// Taken by `start`: the scheduler's inbox and what the outbox held.
    startup: Mutex<Option<(mpsc::UnboundedReceiver<Msg>, Vec<Row>)>>,
    scheduler: Mutex<Option<JoinHandle<()>>>,
    stop: CancellationToken,
}

impl Embedded {
    /// Opens the outbox and reads what earlier runs left in it.
    pub fn open(settings: &Delivery) -> Result<Self, OutboxError> {
        let outbox = Arc::new(Outbox::open(&settings.outbox)?);
        let rows = outbox.store()?.rows(false)?;
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(Self {
            pending: Arc::new(AtomicUsize::new(rows.len())),
            outbox,
            max_pending: settings.max_pending,
            accepting: AtomicBool::new(true),
            tx,
            startup: Mutex::new(Some((rx, rows))),
            scheduler: Mutex::new(None),
            stop: CancellationToken::new(),
        })
    }

    /// Starts delivering, beginning with what earlier runs left pending.
    pub fn start(&self, ctx: &Context) {
        let Some((rx, rows)) = self.startup.lock().ok().and_then(|mut s| s.take()) else {
            return;
        };
        if !rows.is_empty() {
            tracing::info!(
                pending = rows.len(),
                "resuming notification deliveries from the outbox"
            );
        }
        let dead = self
            .outbox
            .store()
            .and_then(|s| s.counts())
            .map(|(_, _, d)| d)
            .unwrap_or(0);
        ctx.metrics
            .outbox_dead
            .set(i64::try_from(dead).unwrap_or(i64::MAX));
        let scheduler = Scheduler::new(
            ctx.clone(),
            self.outbox.clone(),
            self.pending.clone(),
            self.tx.clone(),
        );
        let handle = tokio::spawn(scheduler.run(rx, rows, self.stop.clone()));
        if let Ok(mut s) = self.scheduler.lock() {
            *s = Some(handle);
        }
    }

    /// Stores the notification durably for each upstream, or refuses it
    /// whole: either every upstream will get it, or IM is told it was not
    /// taken (the caller counts the refusal).
    pub async fn enqueue(
        &self,
        metrics: &Metrics,
        notification: Notification<'_>,
    ) -> Result<(), EnqueueError> {
        let Notification {
            fwd,
            command,
            upstreams,
        } = notification;
        if !self.accepting.load(Ordering::SeqCst) {
            return Err(EnqueueError::ShuttingDown);
        }
        // Refused at once while the disk cannot take it (the writer keeps
        // trying and flips this back).
        if !self.outbox.is_writable() {
            return Err(EnqueueError::Store(
                "the outbox cannot write (disk full or I/O error)".into(),
            ));
        }
        let n = upstreams.len();
        let reserved = self
            .pending
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |p| {
                (p + n <= self.max_pending).then_some(p + n)
            });
        if reserved.is_err() {
            return Err(EnqueueError::Full);
        }
        let id = self.outbox.new_id();
        let created_ms = now_ms();
        let record = DeliveryRecord {
            created_ms,
            attempts: 0,
            next_at_ms: created_ms,
            last_error: String::new(),
        };
        let op = Op::Append {
            id,
            event: EventRecord::from_forward(fwd, command, created_ms).encode(),
            deliveries: upstreams
                .iter()
                .map(|u| (u.to_string(), record.clone()))
                .collect(),
        };
        if let Err(e) = self.outbox.write_durable(op).await {
            self.pending.fetch_sub(n, Ordering::SeqCst);
            return Err(EnqueueError::Store(e));
        }
        metrics
            .outbox_pending
            .set(gauge(self.pending.load(Ordering::SeqCst)));
        let _ = self.tx.send(Msg::Add {
            id,
            created_ms,
            upstreams: upstreams.to_vec(),
            fwd: fwd.clone(),
        });
        Ok(())
    }

    /// Whether notifications can be stored now (`/readyz`): false from a
    /// failed commit until the outbox took a write again.
    pub fn is_available(&self) -> bool {
        self.outbox.is_writable()
    }

    /// Refuses new notifications, lets attempts in flight finish (up to
    /// `grace`), commits all progress durably and closes the outbox.
    /// Whatever is still pending stays on disk for the next start. Returns
    /// how many deliveries were pending.
    pub async fn shutdown(&self, grace: Duration) -> usize {
        self.accepting.store(false, Ordering::SeqCst);
        self.stop.cancel();
        let scheduler = self.scheduler.lock().ok().and_then(|mut s| s.take());
        if let Some(mut handle) = scheduler
            && tokio::time::timeout(grace, &mut handle).await.is_err()
        {
            // Dropping the scheduler aborts its attempts; they stay pending
            // on disk and are repeated after the next start.
            handle.abort();
            let _ = handle.await;
            tracing::warn!(
                "delivery attempts still running at the end of the drain window; they will be repeated"
            );
        }
        self.outbox.close().await;
        self.pending.load(Ordering::SeqCst)
    }
}

pub(super) fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
