//! Reload on file changes: the config file and the listeners' certificate,
//! key and CA files.
//!
//! The *folders* holding them are watched, not the files: a watch on a file
//! dies when an editor renames a new version over it or a Kubernetes
//! ConfigMap swaps its `..data` symlink. Events are not trusted for what
//! changed (implementations report a swap as create, write or rename): on
//! any event, and on a slow poll as a backstop, the files are re-read and
//! hashed, and a reload happens only when the content changed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::new_debouncer;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::reload::{Reloader, fingerprint};

/// Events of one editor save or one ConfigMap swap arrive within this.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// Backstop for missed events (network file systems, odd mounts).
pub const POLL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[error("cannot watch the config files: {0}")]
pub struct WatchError(#[from] notify::Error);

type Debouncer = notify_debouncer_full::Debouncer<
    notify::RecommendedWatcher,
    notify_debouncer_full::RecommendedCache,
>;

/// The file watcher of one gateway. Created synchronously at start, so a
/// change made right after the gateway came up is not missed.
pub struct Watcher {
    reloader: Arc<Reloader>,
    debouncer: Debouncer,
    events: mpsc::UnboundedReceiver<()>,
    dirs: BTreeSet<PathBuf>,
    files: Vec<PathBuf>,
    /// Content last refused, so a bad file is reported once, not per poll.
    refused: Option<u64>,
}

impl Watcher {
    /// Errors only if no watcher can be created at all; folders that cannot
    /// be watched are logged and left to the poll.
    pub fn new(reloader: Arc<Reloader>) -> Result<Self, WatchError> {
        let (tx, events) = mpsc::unbounded_channel();
        let debouncer = new_debouncer(DEBOUNCE, None, move |_events| {
            // What changed does not matter: the files are hashed anyway.
            let _ = tx.send(());
        })?;
        let files = reloader.watched_files();
        reloader.set_loaded_fingerprint(fingerprint(&files));
        let mut watcher = Self {
            refused: None,
            reloader,
            debouncer,
            events,
            dirs: BTreeSet::new(),
            files,
        };
        watcher.rewatch();
        Ok(watcher)
    }

    /// Reloads on every change of content until `stop` fires.
    pub async fn run(mut self, stop: CancellationToken, poll: Duration) {
        let mut ticker = tokio::time::interval(poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                event = self.events.recv() => if event.is_none() { return },
                _ = ticker.tick() => {}
            }
            let now = fingerprint(&self.files);
            if now == self.reloader.loaded_fingerprint() || Some(now) == self.refused {
                continue;
            }
            match self.reloader.reload_unless("file change", Some(now)).await {
                None => {}
                Some(Ok(_)) => {
                    self.refused = None;
                    self.files = self.reloader.watched_files();
                    self.rewatch();
                }
                Some(Err(_)) => self.refused = Some(now),
            }
        }
    }

    fn rewatch(&mut self) {
        let wanted: BTreeSet<PathBuf> = self.files.iter().map(|f| folder(f)).collect();
        for gone in self.dirs.difference(&wanted) {
            let _ = self.debouncer.unwatch(gone);
        }
        for new in wanted.difference(&self.dirs) {
            if let Err(e) = self.debouncer.watch(new, RecursiveMode::NonRecursive) {
                tracing::warn!(folder = %new.display(), error = %e, "cannot watch folder; changes there are found by polling");
            }
        }
        self.dirs = wanted;
    }
}

fn folder(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
