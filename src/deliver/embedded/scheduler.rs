//! The scheduler of the embedded backend: one task owns the in-memory view
//! of pending deliveries (a `BTreeMap` keyed by event id, so the oldest is
//! first, plus a min-heap of due times) and hands due ones to attempt
//! tasks on the serving threads, at most `MAX_IN_FLIGHT` at once.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::writer::Outbox;
use super::{Op, OutboxError, Row, gauge};
use crate::common::{DeliveryResult, Forward, now_ms};
use crate::deliver::record::DeliveryRecord;
use crate::deliver::{Attempt, Context, backoff};

/// Delivery attempts running at once, across all upstreams.
const MAX_IN_FLIGHT: usize = 256;
/// How often gauges are refreshed and removed upstreams are looked for.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// When a delivery whose event could not be read (the outbox is being
/// re-opened) is tried again; that try did not count as an attempt.
const UNREAD_DELAY: Duration = Duration::from_secs(1);

pub(super) enum Msg {
    Add {
        id: u64,
        created_ms: u64,
        upstreams: Vec<Arc<str>>,
        fwd: Forward,
    },
    Done {
        id: u64,
        upstream: Arc<str>,
        outcome: Attempt,
    },
    /// Nothing was sent: the event could not be read from the outbox.
    NotSent {
        id: u64,
        upstream: Arc<str>,
        reason: String,
    },
}

struct Entry {
    created_ms: u64,
    attempts: u32,
    next_at_ms: u64,
    in_flight: bool,
    /// The notification, kept for the first attempt only; retries read it
    /// from the outbox so a backlog does not live in memory.
    fwd: Option<Forward>,
}

type Key = (u64, Arc<str>);

pub(super) struct Scheduler {
    ctx: Context,
    outbox: Arc<Outbox>,
    pending_count: Arc<AtomicUsize>,
    tx: mpsc::UnboundedSender<Msg>,
    pending: BTreeMap<Key, Entry>,
    due: BinaryHeap<Reverse<(u64, Key)>>,
    in_flight: usize,
    /// The attempts running; dropped (so aborted) with the scheduler.
    attempts: tokio::task::JoinSet<()>,
    /// Set once shutdown begins: no new attempt starts.
    stopping: bool,
    generation: u64,
}

impl Scheduler {
    pub(super) fn new(
        ctx: Context,
        outbox: Arc<Outbox>,
        pending_count: Arc<AtomicUsize>,
        tx: mpsc::UnboundedSender<Msg>,
    ) -> Self {
        Self {
            ctx,
            outbox,
            pending_count,
            tx,
            pending: BTreeMap::new(),
            due: BinaryHeap::new(),
            in_flight: 0,
            attempts: tokio::task::JoinSet::new(),
            stopping: false,
            generation: 0,
        }
    }

    pub(super) async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Msg>,
        rows: Vec<Row>,
        stop: CancellationToken,
    ) {
        for row in rows {
            let key = (row.id, Arc::from(row.upstream.as_str()));
            self.due.push(Reverse((row.record.next_at_ms, key.clone())));
            self.pending.insert(
                key,
                Entry {
                    created_ms: row.record.created_ms,
                    attempts: row.record.attempts,
                    next_at_ms: row.record.next_at_ms,
                    in_flight: false,
                    fwd: None,
                },
            );
        }
        self.housekeeping();
        let mut tick = tokio::time::interval(HOUSEKEEPING);
        loop {
            let stopping = stop.is_cancelled();
            self.stopping = stopping;
            if stopping && self.in_flight == 0 {
                break;
            }
            let wake = self.next_wake();
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => self.handle(msg),
                    None => break,
                },
                _ = tokio::time::sleep_until(wake), if !stopping => self.dispatch(),
                _ = tick.tick() => self.housekeeping(),
                _ = stop.cancelled(), if !stopping => {}
                // Reap finished attempt tasks (their results came by message).
                Some(_) = self.attempts.join_next(), if !self.attempts.is_empty() => {}
            }
        }
        self.housekeeping();
    }

    /// When the earliest delivery is due (far away when none is, or when
    /// the in-flight limit is reached; a finishing attempt wakes us).
    fn next_wake(&self) -> tokio::time::Instant {
        let far = tokio::time::Instant::now() + Duration::from_secs(3600);
        if self.in_flight >= MAX_IN_FLIGHT {
            return far;
        }
        match self.due.peek() {
            Some(Reverse((at, _))) => {
                tokio::time::Instant::now() + Duration::from_millis(at.saturating_sub(now_ms()))
            }
            None => far,
        }
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Add {
                id,
                created_ms,
                upstreams,
                fwd,
            } => {
                for upstream in upstreams {
                    let key = (id, upstream);
                    self.due.push(Reverse((created_ms, key.clone())));
                    self.pending.insert(
                        key,
                        Entry {
                            created_ms,
                            attempts: 0,
                            next_at_ms: created_ms,
                            in_flight: false,
                            fwd: Some(fwd.clone()),
                        },
                    );
                }
                self.dispatch();
            }
            Msg::Done {
                id,
                upstream,
                outcome,
            } => {
                self.in_flight = self.in_flight.saturating_sub(1);
                self.finish((id, upstream), outcome);
                self.dispatch();
            }
            Msg::NotSent {
                id,
                upstream,
                reason,
            } => {
                self.in_flight = self.in_flight.saturating_sub(1);
                self.later((id, upstream), &reason);
                self.dispatch();
            }
        }
    }

    /// Tries a delivery again later without counting an attempt: nothing
    /// reached the upstream, and the outbox holds it as it was.
    fn later(&mut self, key: Key, reason: &str) {
        let Some(entry) = self.pending.get_mut(&key) else {
            return;
        };
        entry.in_flight = false;
        entry.next_at_ms =
            now_ms().saturating_add(u64::try_from(UNREAD_DELAY.as_millis()).unwrap_or(u64::MAX));
        tracing::debug!(id = key.0, upstream = %key.1, reason, "delivery postponed: its event cannot be read now");
        self.due.push(Reverse((entry.next_at_ms, key)));
    }

    fn dispatch(&mut self) {
        if self.stopping {
            return;
        }
        let now = now_ms();
        while self.in_flight < MAX_IN_FLIGHT {
            let Some(Reverse((at, key))) = self.due.peek().cloned() else {
                return;
            };
            if at > now {
                return;
            }
            self.due.pop();
            let Some(entry) = self.pending.get_mut(&key) else {
                continue;
            };
            // A stale heap item (the entry was rescheduled since).
            if entry.in_flight || entry.next_at_ms != at {
                continue;
            }
            entry.in_flight = true;
            self.in_flight += 1;
            let fwd = entry.fwd.take();
            let task = attempt(
                self.ctx.clone(),
                self.outbox.clone(),
                key,
                fwd,
                self.tx.clone(),
            );
            self.attempts.spawn_on(task, self.ctx.cores.handle());
        }
    }

    fn finish(&mut self, key: Key, outcome: Attempt) {
        let settings = self.ctx.load().config.delivery.clone();
        let now = now_ms();
        let Some(entry) = self.pending.get_mut(&key) else {
            return;
        };
        entry.in_flight = false;
        // A hopeless delivery sent nothing: no attempt to count.
        if !matches!(outcome, Attempt::Hopeless(_)) {
            entry.attempts += 1;
        }
        let created = entry.created_ms;
        let too_old = Duration::from_millis(now.saturating_sub(created)) >= settings.max_age;
        let error = match outcome {
            Attempt::Delivered => {
                self.pending.remove(&key);
                self.release_one();
                let metrics = &self.ctx.metrics;
                metrics.delivery(&key.1, DeliveryResult::Delivered);
                metrics
                    .delivery_latency
                    .observe(Duration::from_millis(now.saturating_sub(created)).as_secs_f64());
                self.outbox.write(Op::Delivered {
                    id: key.0,
                    upstream: key.1.to_string(),
                });
                return;
            }
            Attempt::Hopeless(e) => e,
            Attempt::Failed(e) if entry.attempts >= settings.max_attempts => e,
            Attempt::Failed(e) if too_old => format!("{e} (older than max_age)"),
            Attempt::Failed(e) => {
                let delay = backoff(&settings, entry.attempts);
                entry.next_at_ms =
                    now.saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
                self.ctx.metrics.delivery(&key.1, DeliveryResult::Retried);
                tracing::debug!(id = key.0, upstream = %key.1, attempt = entry.attempts, error = %e, ?delay, "notification will be retried");
                let record = record(entry, e);
                self.due.push(Reverse((entry.next_at_ms, key.clone())));
                self.outbox.write(Op::Retry {
                    id: key.0,
                    upstream: key.1.to_string(),
                    record,
                });
                return;
            }
        };
        self.dead_letter(key, error);
    }

    fn dead_letter(&mut self, key: Key, error: String) {
        let Some(entry) = self.pending.remove(&key) else {
            return;
        };
        let (id, upstream) = (key.0, key.1.to_string());
        self.ctx.metrics.delivery(&upstream, DeliveryResult::Dead);
        self.ctx.metrics.outbox_dead.inc();
        tracing::warn!(id, upstream = %upstream, attempts = entry.attempts, error = %error, "notification dead-lettered");
        self.outbox.write(Op::Dead {
            id,
            upstream,
            record: record(&entry, error),
        });
        self.release_one();
    }

    fn release_one(&self) {
        let left = self
            .pending_count
            .fetch_sub(1, Ordering::SeqCst)
            .saturating_sub(1);
        self.ctx.metrics.outbox_pending.set(gauge(left));
    }

    /// Refreshes the gauges, and dead-letters deliveries to upstreams that
    /// a reload removed (rather than retrying them until they expire).
    fn housekeeping(&mut self) {
        let snapshot = self.ctx.load();
        if snapshot.generation != self.generation {
            self.generation = snapshot.generation;
            let gone: Vec<Key> = self
                .pending
                .iter()
                .filter(|(k, e)| !e.in_flight && snapshot.upstream(&k.1).is_none())
                .map(|(k, _)| k.clone())
                .collect();
            for key in gone {
                self.dead_letter(key, "upstream removed from the config".into());
            }
        }
        let metrics = &self.ctx.metrics;
        metrics
            .outbox_writable
            .set(i64::from(self.outbox.is_writable()));
        metrics
            .outbox_pending
            .set(gauge(self.pending_count.load(Ordering::SeqCst)));
        let oldest = self
            .pending
            .first_key_value()
            .map_or(0, |(_, e)| now_ms().saturating_sub(e.created_ms) / 1000);
        metrics
            .outbox_oldest
            .set(i64::try_from(oldest).unwrap_or(i64::MAX));
    }
}

fn record(entry: &Entry, last_error: String) -> DeliveryRecord {
    DeliveryRecord {
        created_ms: entry.created_ms,
        attempts: entry.attempts,
        next_at_ms: entry.next_at_ms,
        last_error,
    }
}

async fn attempt(
    ctx: Context,
    outbox: Arc<Outbox>,
    key: Key,
    fwd: Option<Forward>,
    tx: mpsc::UnboundedSender<Msg>,
) {
    let (id, upstream) = key;
    let msg = match try_once(&ctx, &outbox, id, &upstream, fwd).await {
        Ok(outcome) => Msg::Done {
            id,
            upstream,
            outcome,
        },
        Err(reason) => Msg::NotSent {
            id,
            upstream,
            reason,
        },
    };
    let _ = tx.send(msg);
}

/// One attempt; `Err` when nothing could be sent because the event could
/// not be read (the outbox is closed to be re-opened after a failure).
async fn try_once(
    ctx: &Context,
    outbox: &Arc<Outbox>,
    id: u64,
    upstream: &str,
    fwd: Option<Forward>,
) -> Result<Attempt, String> {
    let Some(client) = ctx.load().upstream(upstream).cloned() else {
        return Ok(Attempt::Hopeless("upstream removed from the config".into()));
    };
    let fwd = match fwd {
        Some(f) => f,
        None => {
            let store = outbox.store().map_err(|e| e.to_string())?;
            match tokio::task::spawn_blocking(move || store.event(id)).await {
                Ok(Ok(Some(event))) => event.to_forward(),
                Ok(Ok(None)) => {
                    return Ok(Attempt::Hopeless("event missing from the outbox".into()));
                }
                Ok(Err(OutboxError::Corrupt(e))) => return Ok(Attempt::Hopeless(e.to_string())),
                Ok(Err(e)) => return Err(format!("cannot read the outbox: {e}")),
                Err(e) => return Err(format!("cannot read the outbox: {e}")),
            }
        }
    };
    Ok(crate::deliver::post(&client, &fwd).await)
}
