//! The admin address's own connection limits (SPEC 6), apart from the
//! callback listeners': the first request's headers within 5 s of the
//! accept, no traffic for 30 s closes a connection, at most 128 open at once.
//!
//! At the limit, the connection idle the longest (silent since its accept,
//! or kept alive between requests) is closed to make room, as nginx reuses
//! idle connections when it runs out; only when all 128 have a request in
//! flight does the loop stop accepting, and new clients wait in the
//! kernel's backlog. A flood of silent connections so never keeps a probe
//! or a scrape out, and never holds more than 129 file descriptors.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub const MAX_CONNECTIONS: usize = 128;
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The open admin connections and which of them may be closed for room.
pub struct Registry {
    max: usize,
    next_id: AtomicU64,
    open: Mutex<Vec<Entry>>,
    /// A connection closed or went idle: room may have appeared.
    changed: Notify,
}

struct Entry {
    id: u64,
    /// `None` while a request is in flight.
    idle_since: Option<Instant>,
    evict: CancellationToken,
}

impl Registry {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            next_id: AtomicU64::new(0),
            open: Mutex::new(Vec::new()),
            changed: Notify::new(),
        })
    }

    fn open(&self) -> MutexGuard<'_, Vec<Entry>> {
        // Nothing panics under this lock; if it ever did, the list is
        // still consistent (every change is one push, remove or store).
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn count(&self) -> usize {
        self.open().len()
    }

    fn has_room(open: &[Entry], max: usize) -> bool {
        open.len() < max || open.iter().any(|e| e.idle_since.is_some())
    }

    /// Waits until one more connection can be admitted (a free slot, or
    /// an idle connection to close); `false` once `stop` fires.
    pub async fn room(&self, stop: &CancellationToken) -> bool {
        loop {
            if Self::has_room(&self.open(), self.max) {
                return true;
            }
            tokio::select! {
                _ = self.changed.notified() => {}
                _ = stop.cancelled() => return false,
            }
        }
    }

    /// Registers a just-accepted connection, closing the connection idle
    /// the longest if that is the only way to stay within the limit.
    /// Waits while every connection has a request in flight; `None` once
    /// `stop` fires.
    pub async fn admit(self: &Arc<Self>, stop: &CancellationToken) -> Option<Slot> {
        loop {
            if let Some(slot) = self.try_admit() {
                return Some(slot);
            }
            tokio::select! {
                _ = self.changed.notified() => {}
                _ = stop.cancelled() => return None,
            }
        }
    }

    fn try_admit(self: &Arc<Self>) -> Option<Slot> {
        let mut open = self.open();
        if open.len() >= self.max {
            let victim = open
                .iter()
                .enumerate()
                .filter_map(|(i, e)| e.idle_since.map(|since| (since, i)))
                .min()
                .map(|(_, i)| i)?;
            let evicted = open.swap_remove(victim);
            evicted.evict.cancel();
            tracing::debug!(
                open = open.len(),
                "admin connection limit reached: closed the connection idle the longest"
            );
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let evict = CancellationToken::new();
        open.push(Entry {
            id,
            idle_since: Some(Instant::now()),
            evict: evict.clone(),
        });
        Some(Slot {
            registry: self.clone(),
            id,
            evict,
            requested: Arc::new(AtomicBool::new(false)),
        })
    }

    fn set_idle(&self, id: u64, idle: bool) {
        let mut open = self.open();
        if let Some(e) = open.iter_mut().find(|e| e.id == id) {
            e.idle_since = idle.then(Instant::now);
        }
        drop(open);
        if idle {
            self.changed.notify_one();
        }
    }

    fn remove(&self, id: u64) {
        self.open().retain(|e| e.id != id);
        self.changed.notify_one();
    }
}

/// One admitted connection's place in the registry; dropping it frees it.
pub struct Slot {
    registry: Arc<Registry>,
    id: u64,
    evict: CancellationToken,
    /// Set once a request's headers are in.
    requested: Arc<AtomicBool>,
}

impl Slot {
    /// A handle for the connection's service, which marks requests.
    pub fn requests(&self) -> Requests {
        Requests {
            registry: self.registry.clone(),
            id: self.id,
            requested: self.requested.clone(),
        }
    }

    /// Resolves when the registry closed this connection to make room.
    pub fn evicted(&self) -> impl Future<Output = ()> + '_ {
        self.evict.cancelled()
    }

    fn requested(&self) -> bool {
        self.requested.load(Ordering::Relaxed)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

/// Marks a connection busy for as long as a request is handled.
#[derive(Clone)]
pub struct Requests {
    registry: Arc<Registry>,
    id: u64,
    requested: Arc<AtomicBool>,
}

impl Requests {
    pub fn start(&self) -> InFlight {
        self.requested.store(true, Ordering::Relaxed);
        self.registry.set_idle(self.id, false);
        InFlight(self.clone())
    }
}

/// A request in flight; dropped (answered or cancelled), the connection
/// is idle again.
pub struct InFlight(Requests);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.registry.set_idle(self.0.id, true);
    }
}

/// Why a served admin connection ended early, for the debug log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    NoRequestInTime,
    Idle,
    Evicted,
}

/// Runs a served connection to its end under the admin limits: cut at
/// `HEADER_TIMEOUT` without a first request, after `IDLE_TIMEOUT` without
/// a byte moving, or when evicted; shut down gracefully on `stop`.
pub async fn drive<C, E>(
    mut conn: std::pin::Pin<&mut C>,
    shutdown: impl Fn(std::pin::Pin<&mut C>),
    slot: &Slot,
    activity: &crate::server::activity::Activity,
    stop: &CancellationToken,
) -> Option<Cut>
where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let first_request_by = tokio::time::sleep(HEADER_TIMEOUT);
    tokio::pin!(first_request_by);
    let mut first_checked = false;
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "admin connection ended with an error");
                }
                return None;
            }
            _ = &mut first_request_by, if !first_checked => {
                first_checked = true;
                if !slot.requested() {
                    // Dropping the connection closes it, half-read or not.
                    return Some(Cut::NoRequestInTime);
                }
            }
            // Also bounds a graceful shutdown: a client that stopped
            // reading cannot hold the connection past it.
            _ = activity.idle_for(IDLE_TIMEOUT) => return Some(Cut::Idle),
            _ = slot.evicted() => return Some(Cut::Evicted),
            _ = stop.cancelled(), if !closing => {
                shutdown(conn.as_mut());
                closing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests;
