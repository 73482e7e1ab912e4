//! One connection's life: TLS handshake and request headers within
//! `header_timeout`, closed after `idle_timeout` without traffic, drained
//! gracefully on shutdown.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::activity::{Activity, Tracked};
use super::callback::{self, Peer};
use crate::state::Shared;

/// How connections are served: `http1` for TLS connections that did not
/// negotiate `h2`, `auto` (HTTP/1.1 or HTTP/2, by the first bytes) for the
/// others and for plain-HTTP listeners (h2c with prior knowledge).
pub struct Builders {
    pub auto: auto::Builder<TokioExecutor>,
    pub http1: http1::Builder,
}

#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

/// One accepted connection and what it shares with its listener.
pub struct Connection {
    pub peer: Arc<Peer>,
    pub shared: Arc<Shared>,
    pub builders: Arc<Builders>,
    pub limits: ConnLimits,
    pub stop: CancellationToken,
}

impl Connection {
    /// Serves the connection to its end; `tls` is the listener's TLS
    /// settings as they were at the accept.
    pub async fn run(self, stream: TcpStream, tls: Option<Arc<rustls::ServerConfig>>) {
        let accepted = Instant::now();
        let activity = Activity::new();
        let tracked = Tracked::new(stream, activity.clone());
        let Some(config) = tls else {
            return self.serve(tracked, false, accepted, &activity).await;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        // Boxed, and the stream taken out in a statement of its own: the
        // handshake state (a TLS connection's worth of bytes) then does
        // not stay part of the connection's task after the handshake.
        let handshake = Box::pin(acceptor.accept(tracked));
        let tls_stream = match tokio::time::timeout(self.limits.header_timeout, handshake).await {
            Ok(Ok(tls_stream)) => tls_stream,
            Ok(Err(e)) => {
                tracing::debug!(peer = %self.peer.addr, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %self.peer.addr, "TLS handshake timed out");
                return;
            }
        };
        // HTTP/2 over TLS is negotiated by ALPN (RFC 9113 3.3): without
        // `h2` the client speaks HTTP/1.1.
        let http1_only = tls_stream.get_ref().1.alpn_protocol() != Some(b"h2");
        self.serve(tls_stream, http1_only, accepted, &activity)
            .await
    }

    /// Serves HTTP on an accepted (and, for TLS, handshaken) stream. Not
    /// an `async fn`: the stream goes straight into a boxed hyper
    /// connection, so the connection's task does not also keep a by-value
    /// copy of it (the arguments of an async fn stay in its state for its
    /// whole life).
    fn serve<'a, S>(
        &'a self,
        io: S,
        http1_only: bool,
        accepted: Instant,
        activity: &'a Activity,
    ) -> impl Future<Output = ()> + 'a
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let requested = Arc::new(AtomicBool::new(false));
        let seen = requested.clone();
        let (shared, peer) = (self.shared.clone(), self.peer.clone());
        let service = service_fn(move |req| {
            seen.store(true, Ordering::Relaxed);
            // Boxed: hyper keeps a slot of the service future's size for the
            // whole life of an HTTP/1 connection, idle or not; a box puts the
            // couple of KiB of a request in flight on the heap only while it is.
            Box::pin(callback::handle(shared.clone(), peer.clone(), req))
        });
        let io = TokioIo::new(io);
        let first_request_by = accepted + self.limits.header_timeout;
        // Boxed either way: the task then holds a pointer, not the larger of the
        // two connection types (HTTP/2 state is large).
        let (h1, auto) = if http1_only {
            (
                Some(Box::pin(self.builders.http1.serve_connection(io, service))),
                None,
            )
        } else {
            (
                None,
                Some(Box::pin(self.builders.auto.serve_connection(io, service))),
            )
        };
        async move {
            let watch = Watch {
                requested: &requested,
                first_request_by,
                idle_timeout: self.limits.idle_timeout,
                activity,
                stop: &self.stop,
            };
            if let Some(conn) = h1 {
                let shutdown = |c: Pin<&mut _>| http1::Connection::graceful_shutdown(c);
                watch.drive(conn, shutdown).await
            } else if let Some(conn) = auto {
                let shutdown = |c: Pin<&mut _>| auto::Connection::graceful_shutdown(c);
                watch.drive(conn, shutdown).await
            }
        }
    }
}

/// What a served connection is watched for: its first request in time,
/// idleness, and shutdown.
struct Watch<'a> {
    /// Set by the service when a request's headers are in.
    requested: &'a AtomicBool,
    /// `header_timeout` after the accept, TLS handshake included.
    first_request_by: Instant,
    idle_timeout: Duration,
    activity: &'a Activity,
    stop: &'a CancellationToken,
}

impl Watch<'_> {
    /// Runs a served connection to its end. Silent and trickling clients
    /// are cut off at `first_request_by`.
    async fn drive<C, E>(self, mut conn: Pin<Box<C>>, shutdown: impl Fn(Pin<&mut C>))
    where
        C: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let first_request_by = tokio::time::sleep_until(self.first_request_by);
        tokio::pin!(first_request_by);
        let mut first_checked = false;
        let mut closing = false;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = self.stop.cancelled(), if !closing => {
                    shutdown(conn.as_mut());
                    closing = true;
                }
                _ = &mut first_request_by, if !closing && !first_checked => {
                    first_checked = true;
                    if !self.requested.load(Ordering::Relaxed) {
                        // Silent or trickling: dropping the connection closes it,
                        // whatever state its half-read request is in.
                        return;
                    }
                }
                _ = self.activity.idle_for(self.idle_timeout), if !closing => {
                    shutdown(conn.as_mut());
                    closing = true;
                }
            }
        }
    }
}
