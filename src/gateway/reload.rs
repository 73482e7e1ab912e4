//! Reloading the config from its file (SPEC 5): validated in full first,
//! then swapped in atomically, listeners' certificates included; on any
//! problem the old config keeps serving. Used by the admin address
//! (`POST /reload`), the file watcher and `SIGHUP`.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use tokio::sync::Mutex;

use crate::config::{Config, Delivery};
use crate::state::Shared;

/// A bound listener as configured at start: its address, and the TLS
/// settings a reload swaps (plain listeners have none).
pub(super) struct ListenerSlot {
    pub(super) addr: SocketAddr,
    pub(super) tls: Option<Arc<ArcSwap<rustls::ServerConfig>>>,
}

/// Reloads the config from its file: validated in full first, then
/// swapped in atomically; on any problem the old config keeps serving.
pub struct Reloader {
    shared: Arc<Shared>,
    source: PathBuf,
    listeners: Vec<ListenerSlot>,
    admin: SocketAddr,
    /// One reload at a time, so generations are installed in order.
    lock: Mutex<()>,
    /// Fingerprint of the watched files behind the config in force, so the
    /// watcher does not reload again what a SIGHUP or POST already loaded.
    loaded: AtomicU64,
}

impl Reloader {
    pub(super) fn new(
        shared: Arc<Shared>,
        source: PathBuf,
        listeners: Vec<ListenerSlot>,
        admin: SocketAddr,
    ) -> Self {
        Self {
            shared,
            source,
            listeners,
            admin,
            lock: Mutex::new(()),
            loaded: AtomicU64::new(0),
        }
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The files whose change triggers a reload: the config file and the
    /// listeners' certificates, keys and client CAs.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let snap = self.shared.load();
        let mut files = vec![self.source.clone()];
        for l in &snap.config.listeners {
            if let Some(t) = &l.tls {
                files.extend([t.cert.clone(), t.key.clone()]);
                files.extend(t.client_ca.clone());
            }
        }
        files
    }

    /// Reloads; `trigger` says why, for the log.
    pub async fn reload(&self, trigger: &'static str) -> Result<u64, Vec<String>> {
        self.reload_unless(trigger, None)
            .await
            .unwrap_or_else(|| Ok(self.shared.load().generation))
    }

    /// Reloads unless the files behind the config in force already have
    /// fingerprint `seen` (checked under the reload lock, so a change that
    /// an admin reload just loaded is not loaded twice). `None`: skipped.
    pub async fn reload_unless(
        &self,
        trigger: &'static str,
        seen: Option<u64>,
    ) -> Option<Result<u64, Vec<String>>> {
        let _one_at_a_time = self.lock.lock().await;
        if seen.is_some_and(|fp| fp == self.loaded_fingerprint()) {
            return None;
        }
        let result = self.try_reload();
        self.shared.metrics.reload(result.is_ok());
        match &result {
            Ok(generation) => tracing::info!(generation, trigger, "config reloaded"),
            Err(problems) => {
                tracing::error!(trigger, problems = ?problems, "config reload refused; the previous config keeps serving")
            }
        }
        Some(result)
    }

    /// Records the fingerprint of the files the first config came from.
    pub fn set_loaded_fingerprint(&self, fingerprint: u64) {
        self.loaded.store(fingerprint, Ordering::SeqCst);
    }

    /// Fingerprint of the files behind the config in force.
    pub fn loaded_fingerprint(&self) -> u64 {
        self.loaded.load(Ordering::SeqCst)
    }

    fn try_reload(&self) -> Result<u64, Vec<String>> {
        // Taken before reading: a change racing the read makes the watcher
        // reload once more rather than miss it.
        let before = self.watched_files();
        let loaded = fingerprint(&before);
        let config = Config::load(&self.source).map_err(|e| e.problems)?;
        // Certificates are loaded before anything is swapped, so a bad file
        // leaves both the old routes and the old certificates in force.
        let mut new_tls = Vec::new();
        for (i, listener) in config.listeners.iter().enumerate() {
            // By position first: several `:0` listeners share one address.
            let slot = self
                .listeners
                .get(i)
                .filter(|s| s.addr == listener.addr)
                .or_else(|| {
                    self.listeners
                        .iter()
                        .find(|s| s.addr == listener.addr && s.addr.port() != 0)
                });
            match (slot, &listener.tls) {
                (
                    Some(ListenerSlot {
                        tls: Some(current), ..
                    }),
                    Some(t),
                ) => {
                    let cfg = crate::tls::server_config(&t.cert, &t.key, t.client_ca.as_deref())
                        .map_err(|e| vec![e.to_string()])?;
                    new_tls.push((current.clone(), cfg));
                }
                // Plain before and after: nothing to reload.
                (Some(ListenerSlot { tls: None, .. }), None) => {}
                (Some(_), _) => tracing::warn!(
                    addr = %listener.addr,
                    "listener TLS mode changed: this needs a restart; the old mode keeps serving"
                ),
                (None, _) => tracing::warn!(
                    addr = %listener.addr,
                    "new listener address: this needs a restart; it is not served until then"
                ),
            }
        }
        for slot in &self.listeners {
            if !config.listeners.iter().any(|l| l.addr == slot.addr) {
                tracing::warn!(addr = %slot.addr, "listener removed from config: it keeps serving until a restart");
            }
        }
        if config.admin.addr != self.admin {
            tracing::warn!(addr = %config.admin.addr, "admin address changed: this needs a restart");
        }
        if store_changed(&self.shared.load().config.delivery, &config.delivery) {
            tracing::warn!(
                "delivery.backend, delivery.outbox or delivery.nats changed: this needs a restart; the running store stays in use (retry settings apply now)"
            );
        }
        for w in &config.warnings {
            tracing::warn!("{w}");
        }
        let generation = self
            .shared
            .install(config)
            .map_err(|e| vec![e.to_string()])?;
        for (current, cfg) in new_tls {
            current.store(cfg);
        }
        let after = self.watched_files();
        let loaded = if after == before {
            loaded
        } else {
            fingerprint(&after)
        };
        self.loaded.store(loaded, Ordering::SeqCst);
        Ok(generation)
    }
}

/// Whether the settings fixed when the notification store was opened
/// differ (the retry settings are read live and may change).
fn store_changed(running: &Delivery, next: &Delivery) -> bool {
    let nats = |d: &Delivery| serde_json::to_value(&d.nats).ok();
    running.backend != next.backend || running.outbox != next.outbox || nats(running) != nats(next)
}

/// A hash of every file's content (following symlinks); a missing or
/// unreadable file hashes as such.
pub fn fingerprint(files: &[PathBuf]) -> u64 {
    let mut h = DefaultHasher::new();
    for f in files {
        f.hash(&mut h);
        match std::fs::read(f) {
            Ok(bytes) => bytes.hash(&mut h),
            Err(e) => e.kind().hash(&mut h),
        }
    }
    h.finish()
}
