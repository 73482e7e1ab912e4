//! The outbox's group-commit writer (the store itself is `store`).
//!
//! A notification is acknowledged to IM only once it is committed with an
//! fsync. Commits are grouped: one writer thread takes every change queued
//! while the previous commit ran and commits them together, so many
//! concurrent notifications share one fsync. Delivery progress (retries,
//! successes, dead letters) is written without waiting for the disk; it
//! becomes durable with the next grouped commit, and a crash before that only
//! repeats a delivery (at-least-once; upstreams get the same `x-request-id`
//! again and can de-duplicate on it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::store::{Op, OutboxError, Store};

enum Msg {
    Op(Op),
    /// Committed durably before the answer.
    Durable(Op, oneshot::Sender<Result<(), String>>),
    Sync(oneshot::Sender<Result<(), String>>),
}

/// Most changes one commit takes (bounds a transaction's size).
const MAX_BATCH: usize = 4096;

/// The gateway's handle on its outbox: the group-commit writer thread and
/// read access for retries.
pub struct Outbox {
    store: Arc<Store>,
    tx: std::sync::Mutex<Option<mpsc::Sender<Msg>>>,
    writer: std::sync::Mutex<Option<JoinHandle<()>>>,
    next_id: AtomicU64,
}

impl Outbox {
    pub fn open(dir: &std::path::Path) -> Result<Self, OutboxError> {
        let store = Arc::new(Store::open(dir)?);
        let next_id = AtomicU64::new(store.next_id()?);
        let (tx, rx) = mpsc::channel();
        let writer_store = store.clone();
        let writer = std::thread::Builder::new()
            .name("callgate-outbox".into())
            .spawn(move || write_loop(&writer_store, &rx))
            .map_err(|e| OutboxError::Io(dir.to_path_buf(), e))?;
        Ok(Self {
            store,
            tx: std::sync::Mutex::new(Some(tx)),
            writer: std::sync::Mutex::new(Some(writer)),
            next_id,
        })
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn new_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn send(&self, msg: Msg) -> Result<(), OutboxError> {
        let guard = self.tx.lock().map_err(|_| OutboxError::Closed)?;
        guard
            .as_ref()
            .ok_or(OutboxError::Closed)?
            .send(msg)
            .map_err(|_| OutboxError::Closed)
    }

    /// Stores `op` and returns once it is on disk (fsync).
    pub async fn write_durable(&self, op: Op) -> Result<(), String> {
        let (reply, done) = oneshot::channel();
        self.send(Msg::Durable(op, reply))
            .map_err(|e| e.to_string())?;
        done.await.map_err(|_| OutboxError::Closed.to_string())?
    }

    /// Queues `op`; it reaches disk with the next durable commit.
    pub fn write(&self, op: Op) {
        if let Err(e) = self.send(Msg::Op(op)) {
            tracing::warn!(error = %e, "outbox update lost (a delivery may be repeated)");
        }
    }

    /// Commits everything queued so far durably, then stops the writer.
    pub async fn close(&self) {
        let (reply, done) = oneshot::channel();
        if self.send(Msg::Sync(reply)).is_ok() {
            let _ = done.await;
        }
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(writer) = writer {
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        }
    }
}

/// Delivery progress waits at most this long for a durable commit to ride
/// on before it is committed on its own.
const DEFER: Duration = Duration::from_millis(50);

/// The writer thread: waits for a change, takes every change queued
/// behind it, commits them together, then answers the waiting ones.
/// Progress updates alone do not cost a commit each: they are held (up to
/// `DEFER`) and go out with the next acknowledged notification's commit.
fn write_loop(store: &Store, rx: &mpsc::Receiver<Msg>) {
    let mut ops: Vec<Op> = Vec::new();
    let mut waiting = Vec::new();
    let mut held_since: Option<Instant> = None;
    loop {
        let first = match held_since {
            None => match rx.recv() {
                Ok(msg) => Some(msg),
                Err(_) => break,
            },
            Some(since) => match rx.recv_timeout(DEFER.saturating_sub(since.elapsed())) {
                Ok(msg) => Some(msg),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
        };
        let mut next = first;
        while let Some(msg) = next {
            match msg {
                Msg::Op(op) => ops.push(op),
                Msg::Durable(op, reply) => {
                    ops.push(op);
                    waiting.push(reply);
                }
                Msg::Sync(reply) => waiting.push(reply),
            }
            next = if ops.len() < MAX_BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        let durable = !waiting.is_empty();
        let due = held_since.is_some_and(|since| since.elapsed() >= DEFER);
        if !durable && !due && ops.len() < MAX_BATCH {
            held_since.get_or_insert_with(Instant::now);
            continue;
        }
        commit(store, &mut ops, &mut waiting, durable);
        held_since = None;
    }
    // The senders are gone: whatever is held is committed durably.
    if !ops.is_empty() || !waiting.is_empty() {
        commit(store, &mut ops, &mut waiting, true);
    }
}

fn commit(
    store: &Store,
    ops: &mut Vec<Op>,
    waiting: &mut Vec<oneshot::Sender<Result<(), String>>>,
    durable: bool,
) {
    let result = store.apply(ops, durable).map_err(|e| e.to_string());
    if let Err(e) = &result {
        tracing::error!(error = %e, changes = ops.len(), "outbox commit failed");
    }
    for reply in waiting.drain(..) {
        let _ = reply.send(result.clone());
    }
    ops.clear();
}
