//! A running gateway: binds the listeners and the admin address, serves,
//! reloads, and drains on shutdown. Used by `callgate run` and, in
//! process, by the integration tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::deliver::Deliverer;
use crate::metrics::Metrics;
use crate::server::cores::{self, Cores};
use crate::server::{ConnLimits, serve_listener};
use crate::state::{Shared, Snapshot};

/// Requests in flight get this long to finish at shutdown (SPEC 5).
pub const DRAIN: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("{0}")]
    Upstream(#[from] crate::upstream::UpstreamError),
    #[error(transparent)]
    Delivery(#[from] crate::deliver::OpenError),
    #[error("cannot start the serving threads: {0}")]
    Threads(std::io::Error),
}

struct ListenerSlot {
    addr: SocketAddr,
    tls: Option<Arc<ArcSwap<rustls::ServerConfig>>>,
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
    loaded: std::sync::atomic::AtomicU64,
}

impl Reloader {
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
        self.loaded
            .store(fingerprint, std::sync::atomic::Ordering::SeqCst);
    }

    /// Fingerprint of the files behind the config in force.
    pub fn loaded_fingerprint(&self) -> u64 {
        self.loaded.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn try_reload(&self) -> Result<u64, Vec<String>> {
        // Taken before reading: a change racing the read makes the watcher
        // reload once more rather than miss it.
        let before = self.watched_files();
        let fingerprint = crate::watch::fingerprint(&before);
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
        let fingerprint = if after == before {
            fingerprint
        } else {
            crate::watch::fingerprint(&after)
        };
        self.loaded
            .store(fingerprint, std::sync::atomic::Ordering::SeqCst);
        Ok(generation)
    }
}

pub struct Gateway {
    reloader: Arc<Reloader>,
    listener_addrs: Vec<SocketAddr>,
    admin_addr: SocketAddr,
    stop: CancellationToken,
    tasks: TaskTracker,
    /// The admin address outlives the listeners, so `/readyz` can say 503
    /// while requests drain.
    admin_stop: CancellationToken,
    admin_tasks: TaskTracker,
}

impl Gateway {
    /// Binds every address (all or nothing), then starts serving.
    pub async fn start(config: Config) -> Result<Gateway, StartError> {
        for w in &config.warnings {
            tracing::warn!("{w}");
        }
        let limits = ConnLimits {
            header_timeout: config.limits.header_timeout,
            idle_timeout: config.limits.idle_timeout,
        };
        let mut bound = Vec::new();
        for l in &config.listeners {
            let socket = TcpListener::bind(l.addr)
                .await
                .map_err(|source| StartError::Bind {
                    addr: l.addr,
                    what: format!("listener {}", l.name),
                    source,
                })?;
            let tls = match &l.tls {
                Some(t) => Some(Arc::new(ArcSwap::new(crate::tls::server_config(
                    &t.cert,
                    &t.key,
                    t.client_ca.as_deref(),
                )?))),
                None => None,
            };
            bound.push((l.clone(), socket, tls));
        }
        let admin = TcpListener::bind(config.admin.addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.admin.addr,
                what: "admin".into(),
                source,
            })?;
        let admin_addr = admin.local_addr().map_err(|source| StartError::Bind {
            addr: config.admin.addr,
            what: "admin".into(),
            source,
        })?;

        let slots = Arc::new(Semaphore::new(
            config.limits.max_connections.min(Semaphore::MAX_PERMITS),
        ));
        let source = config.source.clone();
        let deliverer = Deliverer::open(&config.delivery).await?;
        let snapshot = Snapshot::build(config, 1, None)?;
        let cores = Arc::new(Cores::start().map_err(StartError::Threads)?);
        tracing::info!(threads = cores::count(), "serving threads started");
        let shared = Shared::new(snapshot, Arc::new(Metrics::new()), deliverer, cores);
        shared.deliverer.start(&shared);
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();

        let mut listener_addrs = Vec::new();
        let mut slots_by_addr = Vec::new();
        for (l, socket, tls) in bound {
            let addr = socket.local_addr().map_err(|source| StartError::Bind {
                addr: l.addr,
                what: format!("listener {}", l.name),
                source,
            })?;
            tracing::info!(listener = %l.name, %addr, mode = l.mode(), "listening");
            listener_addrs.push(addr);
            slots_by_addr.push(ListenerSlot {
                addr: l.addr,
                tls: tls.clone(),
            });
            tasks.spawn(serve_listener(
                socket,
                Arc::from(l.name.as_str()),
                tls,
                shared.clone(),
                limits,
                slots.clone(),
                tasks.clone(),
                stop.clone(),
            ));
        }
        let reloader = Arc::new(Reloader {
            shared: shared.clone(),
            source,
            listeners: slots_by_addr,
            admin: admin_addr,
            lock: Mutex::new(()),
            loaded: std::sync::atomic::AtomicU64::new(0),
        });
        tracing::info!(addr = %admin_addr, "admin listening");
        let admin_stop = CancellationToken::new();
        let admin_tasks = TaskTracker::new();
        admin_tasks.spawn(crate::admin::serve(
            admin,
            reloader.clone(),
            admin_tasks.clone(),
            admin_stop.clone(),
        ));
        match crate::watch::Watcher::new(reloader.clone()) {
            Ok(watcher) => {
                admin_tasks.spawn(watcher.run(admin_stop.clone(), crate::watch::POLL));
            }
            Err(e) => {
                tracing::warn!(error = %e, "config files are not watched; reload with SIGHUP or POST /reload")
            }
        }
        shared.set_ready();
        Ok(Gateway {
            reloader,
            listener_addrs,
            admin_addr,
            stop,
            tasks,
            admin_stop,
            admin_tasks,
        })
    }

    /// Bound addresses, in config order (useful with port 0).
    pub fn listener_addrs(&self) -> &[SocketAddr] {
        &self.listener_addrs
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn shared(&self) -> &Arc<Shared> {
        self.reloader.shared()
    }

    pub async fn reload(&self, trigger: &'static str) -> Result<u64, Vec<String>> {
        self.reloader.reload(trigger).await
    }

    /// Stops accepting, lets requests in flight finish (up to `grace`),
    /// then gives notification deliveries what is left of it.
    pub async fn shutdown(self, grace: Duration) {
        let shared = self.reloader.shared().clone();
        shared.start_draining();
        self.stop.cancel();
        self.tasks.close();
        let started = tokio::time::Instant::now();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = self.tasks.len(),
                "drain window over: closing connections still open"
            );
        }
        let left = grace
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(100));
        let pending = shared.deliverer.shutdown(left).await;
        if pending > 0 {
            tracing::info!(
                pending,
                "undelivered notifications stay in the outbox for the next start"
            );
        }
        // Delivery attempts run on the serving threads: they go last.
        shared.cores.stop().await;
        self.admin_stop.cancel();
        self.admin_tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(1), self.admin_tasks.wait()).await;
    }
}

/// A gateway dropped without `shutdown` (a test that panicked) stops
/// serving at once.
impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop.cancel();
        self.admin_stop.cancel();
        self.reloader.shared().cores.abort();
    }
}

/// Whether the settings fixed when the notification store was opened
/// differ (the retry settings are read live and may change).
fn store_changed(running: &crate::config::Delivery, next: &crate::config::Delivery) -> bool {
    let nats = |d: &crate::config::Delivery| serde_json::to_value(&d.nats).ok();
    running.backend != next.backend || running.outbox != next.outbox || nats(running) != nats(next)
}
