//! A running gateway: binds the listeners and the admin address, serves,
//! reloads, and drains on shutdown. Used by `callgate run` and, in
//! process, by the integration tests.
//!
//! `reload` swaps configs in, `watch` notices file changes, `admin` serves
//! the admin address; all three work through the one [`Reloader`].

mod admin;
mod reload;
mod watch;

use reload::{ListenerSlot, Reloader};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::deliver::Deliverer;
use crate::metrics::Metrics;
use crate::runtime::{self, Cores};
use crate::server::{ConnLimits, Listener};
use crate::snapshot::Snapshot;
use crate::state::Shared;

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
        tracing::info!(threads = runtime::count(), "serving threads started");
        let shared = Shared::new(snapshot, Arc::new(Metrics::new()), deliverer, cores);
        shared.deliverer.start(&shared.delivery_context());
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
            let listener = Listener {
                socket,
                name: Arc::from(l.name.as_str()),
                tls,
                shared: shared.clone(),
                limits,
                slots: slots.clone(),
                tasks: tasks.clone(),
                stop: stop.clone(),
            };
            tasks.spawn(listener.run());
        }
        let reloader = Arc::new(Reloader::new(
            shared.clone(),
            source,
            slots_by_addr,
            admin_addr,
        ));
        tracing::info!(addr = %admin_addr, "admin listening");
        let admin_stop = CancellationToken::new();
        let admin_tasks = TaskTracker::new();
        admin_tasks.spawn(admin::serve(
            admin,
            reloader.clone(),
            admin_tasks.clone(),
            admin_stop.clone(),
        ));
        match watch::Watcher::new(reloader.clone()) {
            Ok(watcher) => {
                admin_tasks.spawn(watcher.run(admin_stop.clone(), watch::POLL));
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
