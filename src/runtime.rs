//! Serving threads: one single-threaded tokio runtime per core. The accept
//! loops hand each new connection to the next thread in turn; from then
//! on the connection, its TLS, its requests and the upstream calls they
//! make (each thread has its own upstream pools, see `current`) stay on
//! that thread: no work stealing and no cross-thread wake-ups per request,
//! which on a small machine cost more than they balance.
//!
//! Delivery attempts of the embedded outbox run on them too, beside the
//! requests that fill it: on their own runtime they fell behind under load
//! and the backlog (memory) grew. The process's multi-threaded runtime
//! keeps the rest: accepting, admin, reloads, the delivery scheduler.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

thread_local! {
    /// 1..=count() on a serving thread, 0 elsewhere.
    static CORE: Cell<usize> = const { Cell::new(0) };
}

/// How many serving threads a gateway runs: `CALLGATE_THREADS`, else the
/// CPUs this process may use (cgroup quotas included).
pub fn count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        std::env::var("CALLGATE_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    })
}

/// Which serving thread runs the caller (1..=count()), 0 if none: picks
/// the upstream pool, so that a pooled connection is driven by the thread
/// that uses it.
pub fn current() -> usize {
    CORE.with(Cell::get)
}

/// The running serving threads.
pub struct Cores {
    handles: Box<[Handle]>,
    next: AtomicUsize,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Ends the threads, dropping the connections still on them.
    abort: CancellationToken,
}

impl Cores {
    pub fn start() -> io::Result<Cores> {
        let abort = CancellationToken::new();
        let mut handles = Vec::new();
        let mut threads = Vec::new();
        for core in 1..=count() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let abort = abort.clone();
            let thread = std::thread::Builder::new()
                .name(format!("callgate-core-{core}"))
                .spawn(move || {
                    CORE.with(|c| c.set(core));
                    // A current-thread runtime runs its tasks only inside
                    // `block_on`: this is the thread's whole life.
                    runtime.block_on(abort.cancelled());
                })?;
            threads.push(thread);
        }
        Ok(Cores {
            handles: handles.into(),
            next: AtomicUsize::new(0),
            threads: Mutex::new(threads),
            abort,
        })
    }

    /// The next serving thread's runtime, in turn.
    pub fn handle(&self) -> &Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[i]
    }

    /// Runs `task` (tracked by `tasks`) on the next serving thread.
    pub fn spawn<F>(&self, tasks: &TaskTracker, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        tasks.spawn_on(task, self.handle());
    }

    /// Ends the threads without waiting (tasks on them hold the gateway's
    /// shared state, so dropping the last handle may never happen).
    pub fn abort(&self) {
        self.abort.cancel();
    }

    /// Ends the threads (connections still open are dropped) and waits
    /// for them, briefly.
    pub async fn stop(&self) {
        self.abort.cancel();
        let threads = self
            .threads
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        let joined = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        });
        let _ = tokio::time::timeout(Duration::from_secs(2), joined).await;
    }
}

impl Drop for Cores {
    fn drop(&mut self) {
        self.abort.cancel();
    }
}
