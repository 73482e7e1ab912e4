//! The accept loop of one listener: takes a connection slot, accepts, and
//! hands the connection to the next serving thread.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::callback::Peer;
use super::conn::{Builders, ConnLimits, Connection};
use crate::state::Shared;

/// One bound listener and what its connections share. Built by the
/// gateway, consumed by [`Listener::run`].
pub struct Listener {
    pub socket: TcpListener,
    /// For logs and `x-forwarded-proto`'s sake, the listener's config name.
    pub name: Arc<str>,
    /// The TLS settings in force; each new connection reads them once, so
    /// a reload changes new handshakes only.
    pub tls: Option<Arc<ArcSwap<rustls::ServerConfig>>>,
    pub shared: Arc<Shared>,
    pub limits: ConnLimits,
    /// Bounds open connections across all listeners.
    pub slots: Arc<Semaphore>,
    /// Tracks every connection, for the drain at shutdown.
    pub tasks: TaskTracker,
    pub stop: CancellationToken,
}

impl Listener {
    /// Accepts connections until `stop` fires. At the connection limit
    /// the loop stops accepting, so new clients wait in the kernel's
    /// backlog rather than being refused.
    pub async fn run(self) {
        let builders = Arc::new(builders(self.limits));
        loop {
            let slot = tokio::select! {
                _ = self.stop.cancelled() => break,
                slot = self.slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
            };
            let accepted = tokio::select! {
                _ = self.stop.cancelled() => break,
                accepted = self.socket.accept() => accepted,
            };
            let (stream, addr) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly
                    // instead of spinning.
                    tracing::warn!(listener = %self.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            // Moved to a serving thread's reactor: out of this one first.
            let stream = match stream.into_std() {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(listener = %self.name, error = %e, "accepted connection unusable");
                    continue;
                }
            };
            let connection = Connection {
                peer: Arc::new(Peer {
                    addr,
                    proto: if self.tls.is_some() { "https" } else { "http" },
                    listener: self.name.clone(),
                }),
                shared: self.shared.clone(),
                builders: builders.clone(),
                limits: self.limits,
                stop: self.stop.clone(),
            };
            let tls = self.tls.as_ref().map(|t| t.load_full());
            let shared = self.shared.clone();
            shared.cores.clone().spawn(&self.tasks, async move {
                let Ok(stream) = TcpStream::from_std(stream) else {
                    return;
                };
                shared.metrics.connections.inc();
                connection.run(stream, tls).await;
                shared.metrics.connections.dec();
                drop(slot);
            });
        }
    }
}

/// The HTTP settings every connection of a listener is served with.
fn builders(limits: ConnLimits) -> Builders {
    let mut auto = auto::Builder::new(TokioExecutor::new());
    auto.http1()
        .timer(TokioTimer::new())
        // hyper's timer also runs while a keep-alive connection waits for
        // its next request, so it gets the idle timeout; the first request's
        // headers are held to `header_timeout` by the connection itself.
        .header_read_timeout(limits.idle_timeout)
        .keep_alive(true);
    auto.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256);
    // The same HTTP/1.1 settings, for TLS connections whose ALPN rules
    // HTTP/2 out: no protocol sniffing, no rewind wrapper around the stream.
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .keep_alive(true);
    Builders { auto, http1 }
}
