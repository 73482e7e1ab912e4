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
//!
//! A failed commit (disk full, I/O error) leaves redb refusing everything
//! until the file is closed and opened again. The writer then closes it,
//! refuses notifications (IM gets 503, `is_writable` is false), keeps the
//! progress updates that the re-opened file may lack, and every `RETRY`
//! checks whether the disk takes writes; once it does, it re-opens the
//! file, writes the kept progress durably, and takes notifications again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::files;
use super::store::{Op, OutboxError, Store};

type Reply = oneshot::Sender<Result<(), String>>;

enum Msg {
    Op(Op),
    /// Committed durably before the answer.
    Durable(Op, Reply),
    Sync(Reply),
}

/// Most changes one commit takes (bounds a transaction's size).
const MAX_BATCH: usize = 4096;
/// Progress updates kept for a re-open before a commit is made durable
/// anyway (bounds that memory, and what a crash repeats).
const MAX_UNSYNCED: usize = 4096;
/// Delivery progress waits at most this long for a durable commit to ride
/// on before it is committed on its own.
const DEFER: Duration = Duration::from_millis(50);
/// How often an outbox that cannot write checks whether the disk takes
/// writes again (SPEC 4.2: back within 5 s of the disk recovering).
const RETRY: Duration = Duration::from_millis(500);
/// Longest pause after a re-open that failed although the disk took the
/// probe (each re-open after a failure makes redb check the whole file).
const MAX_REOPEN_DELAY: Duration = Duration::from_secs(2);
/// How often a lasting failure is logged again.
const REMIND: Duration = Duration::from_secs(60);

/// The store in force, `None` while it is closed to be opened again.
type Current = Arc<RwLock<Option<Arc<Store>>>>;

/// The gateway's handle on its outbox: the group-commit writer thread and
/// read access for retries.
pub struct Outbox {
    current: Current,
    writable: Arc<AtomicBool>,
    tx: std::sync::Mutex<Option<mpsc::Sender<Msg>>>,
    writer: std::sync::Mutex<Option<JoinHandle<()>>>,
    next_id: AtomicU64,
}

impl Outbox {
    pub fn open(dir: &Path) -> Result<Self, OutboxError> {
        let store = Arc::new(Store::open(dir)?);
        let next_id = AtomicU64::new(store.next_id()?);
        let current: Current = Arc::new(RwLock::new(Some(store)));
        let writable = Arc::new(AtomicBool::new(true));
        let (tx, rx) = mpsc::channel();
        let mut writer = Writer {
            dir: dir.to_path_buf(),
            current: current.clone(),
            writable: writable.clone(),
            unsynced: BTreeMap::new(),
            refused: Vec::new(),
            broken: None,
        };
        let handle = std::thread::Builder::new()
            .name("callgate-outbox".into())
            .spawn(move || writer.run(&rx))
            .map_err(|e| OutboxError::Io(dir.to_path_buf(), e))?;
        Ok(Self {
            current,
            writable,
            tx: std::sync::Mutex::new(Some(tx)),
            writer: std::sync::Mutex::new(Some(handle)),
            next_id,
        })
    }

    /// The store, to read from; an error while it is closed to be opened
    /// again.
    pub fn store(&self) -> Result<Arc<Store>, OutboxError> {
        current(&self.current)
            .ok_or_else(|| OutboxError::Unwritable("the outbox file is being re-opened".into()))
    }

    /// Whether notifications can be stored now (false from a failed
    /// commit until the re-opened file took a write).
    pub fn is_writable(&self) -> bool {
        self.writable.load(Ordering::SeqCst)
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

    /// Stores `op` and returns once it is on disk (fsync). Refused at once
    /// while the outbox cannot write.
    pub async fn write_durable(&self, op: Op) -> Result<(), String> {
        if !self.is_writable() {
            return Err(OutboxError::Unwritable("disk full or I/O error".into()).to_string());
        }
        let (reply, done) = oneshot::channel();
        self.send(Msg::Durable(op, reply))
            .map_err(|e| e.to_string())?;
        done.await.map_err(|_| OutboxError::Closed.to_string())?
    }

    /// Queues `op`; it reaches disk with the next durable commit (after a
    /// re-open, if the outbox cannot write now).
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

fn current(current: &Current) -> Option<Arc<Store>> {
    current.read().ok().and_then(|s| s.clone())
}

/// Since when the outbox cannot write, and when to try again.
struct Broken {
    since: Instant,
    error: String,
    next_try: Instant,
    /// The pause after a failed re-open (doubling up to `MAX_REOPEN_DELAY`).
    delay: Duration,
    reminded: Instant,
}

/// The writer thread's state.
struct Writer {
    dir: PathBuf,
    current: Current,
    writable: Arc<AtomicBool>,
    /// The latest progress update per delivery that is not yet durable:
    /// committed without an fsync, or not committed at all because the
    /// store failed. A re-opened file may lack them, so they are written
    /// again then; cleared by every durable commit.
    unsynced: BTreeMap<(u64, String), Op>,
    /// Events whose commit was reported failed (IM got 503): taken out of
    /// the re-opened file in case the commit reached it after all, so
    /// that the file holds what the scheduler knows, no more.
    refused: Vec<u64>,
    broken: Option<Broken>,
}

impl Writer {
    /// Waits for a change, takes every change queued behind it, commits
    /// them together, then answers the waiting ones. Progress updates alone
    /// do not cost a commit each: they are held (up to `DEFER`) and go out
    /// with the next acknowledged notification's commit.
    fn run(&mut self, rx: &mpsc::Receiver<Msg>) {
        let mut ops: Vec<Op> = Vec::new();
        let mut waiting: Vec<Reply> = Vec::new();
        let mut held_since: Option<Instant> = None;
        loop {
            let wake = match (&self.broken, held_since) {
                (Some(b), _) => Some(b.next_try),
                (None, Some(since)) => Some(since + DEFER),
                (None, None) => None,
            };
            let first = match wake {
                None => match rx.recv() {
                    Ok(msg) => Some(msg),
                    Err(_) => break,
                },
                Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                    Ok(msg) => Some(msg),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                },
            };
            let mut next = first;
            while let Some(msg) = next {
                self.take(msg, &mut ops, &mut waiting);
                next = if ops.len() < MAX_BATCH {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            if self.broken.is_some() {
                self.keep(ops.drain(..));
                let due = self
                    .broken
                    .as_ref()
                    .is_some_and(|b| Instant::now() >= b.next_try);
                // A sync (shutdown) tries at once rather than wait its turn.
                if due || !waiting.is_empty() {
                    self.recover();
                }
                let result = self.refusal().map_or(Ok(()), Err);
                for reply in waiting.drain(..) {
                    let _ = reply.send(result.clone());
                }
                continue;
            }
            let durable = !waiting.is_empty() || self.unsynced.len() >= MAX_UNSYNCED;
            let due = held_since.is_some_and(|since| since.elapsed() >= DEFER);
            if !durable && !due && ops.len() < MAX_BATCH {
                held_since.get_or_insert_with(Instant::now);
                continue;
            }
            self.commit(&mut ops, &mut waiting, durable);
            held_since = None;
        }
        // The senders are gone: whatever is held is committed durably.
        if self.broken.is_some() {
            self.keep(ops.drain(..));
            self.recover();
            if self.broken.is_some() && !self.unsynced.is_empty() {
                tracing::warn!(
                    updates = self.unsynced.len(),
                    "the outbox still cannot write at shutdown: these deliveries will be repeated after the restart"
                );
            }
        } else if !ops.is_empty() || !waiting.is_empty() {
            self.commit(&mut ops, &mut waiting, true);
        }
    }

    /// Queues a change for the next commit. While the outbox cannot write,
    /// a notification is refused at once; progress is kept for later.
    fn take(&mut self, msg: Msg, ops: &mut Vec<Op>, waiting: &mut Vec<Reply>) {
        match msg {
            Msg::Op(op) => ops.push(op),
            Msg::Durable(_, reply) if self.broken.is_some() => {
                let _ = reply.send(Err(self.refusal().unwrap_or_default()));
            }
            Msg::Durable(op, reply) => {
                ops.push(op);
                waiting.push(reply);
            }
            Msg::Sync(reply) => waiting.push(reply),
        }
    }

    fn commit(&mut self, ops: &mut Vec<Op>, waiting: &mut Vec<Reply>, durable: bool) {
        let result = match current(&self.current) {
            Some(store) => store.apply(ops.iter(), durable).map_err(|e| e.to_string()),
            None => Err(OutboxError::Unwritable("the outbox file is closed".into()).to_string()),
        };
        match &result {
            Ok(()) if durable => {
                // An fsync'd commit carries every earlier one with it.
                self.unsynced.clear();
                ops.clear();
            }
            Ok(()) => self.keep(ops.drain(..)),
            Err(e) => {
                tracing::error!(error = %e, changes = ops.len(), "outbox commit failed");
                for op in ops.iter() {
                    if let Op::Append { id, .. } = op {
                        self.refused.push(*id);
                    }
                }
                self.keep(ops.drain(..));
                self.fail(e);
            }
        }
        for reply in waiting.drain(..) {
            let _ = reply.send(result.clone());
        }
    }

    /// Keeps progress updates (the latest per delivery wins) for the next
    /// durable commit; other changes are not kept.
    fn keep(&mut self, ops: impl Iterator<Item = Op>) {
        for op in ops {
            if let Some((id, upstream)) = op.delivery() {
                let key = (id, upstream.to_owned());
                self.unsynced.insert(key, op);
            }
        }
    }

    /// The outbox cannot write: notifications are refused and the file is
    /// closed (redb answers nothing but errors after a failed write, and
    /// must be closed before it can be opened again).
    fn fail(&mut self, error: &str) {
        self.writable.store(false, Ordering::SeqCst);
        if let Ok(mut c) = self.current.write() {
            c.take();
        }
        let now = Instant::now();
        match &mut self.broken {
            Some(b) => {
                b.error = error.to_owned();
                b.delay = (b.delay * 2).min(MAX_REOPEN_DELAY);
                b.next_try = now + b.delay;
            }
            None => {
                tracing::error!(
                    error,
                    "the outbox cannot write: notifications get 503 and the gateway is not ready until it can; it is re-opened as soon as the disk takes writes"
                );
                self.broken = Some(Broken {
                    since: now,
                    error: error.to_owned(),
                    next_try: now + RETRY,
                    delay: RETRY,
                    reminded: now,
                });
            }
        }
    }

    /// Why notifications are refused now (None: they are not).
    fn refusal(&self) -> Option<String> {
        self.broken
            .as_ref()
            .map(|b| OutboxError::Unwritable(b.error.clone()).to_string())
    }

    /// One try to write again: a cheap probe of the disk first, then the
    /// file re-opened and the kept progress written durably.
    fn recover(&mut self) {
        let Some(broken) = &mut self.broken else {
            return;
        };
        let now = Instant::now();
        if let Err(e) = files::disk_takes_writes(&self.dir) {
            broken.next_try = now + RETRY;
            if now.duration_since(broken.reminded) >= REMIND {
                broken.reminded = now;
                tracing::warn!(error = %e, down_for = ?broken.since.elapsed(), "the outbox still cannot write");
            }
            return;
        }
        let since = broken.since;
        match self.reopen_and_catch_up() {
            Ok(()) => {
                let down_for = since.elapsed();
                tracing::info!(
                    ?down_for,
                    updates = self.unsynced.len(),
                    "the outbox takes writes again; notifications are stored again"
                );
                self.broken = None;
                self.unsynced.clear();
                self.refused.clear();
                self.writable.store(true, Ordering::SeqCst);
            }
            Err(e) => {
                tracing::debug!(error = %e, "the outbox cannot be re-opened yet");
                self.fail(&e.to_string());
            }
        }
    }

    fn reopen_and_catch_up(&mut self) -> Result<(), OutboxError> {
        let store = match current(&self.current) {
            Some(store) => store,
            None => {
                // Refused (in use) while a reader still holds the old
                // file: the next try gets it.
                let store = Arc::new(Store::open(&self.dir)?);
                if let Ok(mut c) = self.current.write() {
                    *c = Some(store.clone());
                }
                store
            }
        };
        let discards: Vec<Op> = self.refused.iter().map(|&id| Op::Discard { id }).collect();
        store.apply(self.unsynced.values().chain(&discards), true)
    }
}
