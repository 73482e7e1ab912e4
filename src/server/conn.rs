//! The accept loop and one connection's life: TLS handshake and request
//! headers within `header_timeout`, closed after `idle_timeout` without
//! traffic, drained gracefully on shutdown.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::callback::{self, Peer};
use crate::state::Shared;

/// How connections are served: `http1` for TLS connections that did not
/// negotiate `h2`, `auto` (HTTP/1.1 or HTTP/2, by the first bytes) for the
/// others and for plain-HTTP listeners (h2c with prior knowledge).
struct Builders {
    auto: auto::Builder<TokioExecutor>,
    http1: http1::Builder,
}

#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Accepts connections until `stop` fires. `slots` bounds open
/// connections across all listeners: at the limit the loop stops
/// accepting, so new clients wait in the kernel's backlog rather than
/// being refused.
#[allow(clippy::too_many_arguments)]
pub async fn serve_listener(
    listener: TcpListener,
    name: Arc<str>,
    tls: Option<Arc<ArcSwap<rustls::ServerConfig>>>,
    shared: Arc<Shared>,
    limits: ConnLimits,
    slots: Arc<Semaphore>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    let mut auto = auto::Builder::new(TokioExecutor::new());
    auto.http1()
        .timer(TokioTimer::new())
        // hyper's timer also runs while a keep-alive connection waits for
        // its next request, so it gets the idle timeout; the first request's
        // headers are held to `header_timeout` in `drive`.
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
    let builder = Arc::new(Builders { auto, http1 });
    loop {
        let slot = tokio::select! {
            _ = stop.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly
                // instead of spinning.
                tracing::warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let peer = Arc::new(Peer {
            addr,
            proto: if tls.is_some() { "https" } else { "http" },
            listener: name.clone(),
        });
        let tls = tls.as_ref().map(|t| t.load_full());
        let shared = shared.clone();
        let builder = builder.clone();
        let stop = stop.clone();
        // Moved to a serving thread's reactor: out of this one first.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(listener = %name, error = %e, "accepted connection unusable");
                continue;
            }
        };
        let cores = shared.cores.clone();
        cores.spawn(&tasks, async move {
            let Ok(stream) = TcpStream::from_std(stream) else {
                return;
            };
            shared.metrics.connections.inc();
            connection(stream, peer, tls, shared.clone(), builder, limits, stop).await;
            shared.metrics.connections.dec();
            drop(slot);
        });
    }
}

async fn connection(
    stream: TcpStream,
    peer: Arc<Peer>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shared: Arc<Shared>,
    builder: Arc<Builders>,
    limits: ConnLimits,
    stop: CancellationToken,
) {
    let accepted = Instant::now();
    let activity = Activity::new();
    let tracked = Tracked {
        inner: stream,
        activity: activity.clone(),
    };
    match tls {
        None => {
            serve(
                tracked, false, peer, shared, &builder, limits, accepted, &activity, stop,
            )
            .await
        }
        Some(config) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            // Boxed, and the stream taken out in a statement of its own: the
            // handshake state (a TLS connection's worth of bytes) then does
            // not stay part of the connection's task after the handshake.
            let handshake = Box::pin(acceptor.accept(tracked));
            let tls_stream = match tokio::time::timeout(limits.header_timeout, handshake).await {
                Ok(Ok(tls_stream)) => tls_stream,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %peer.addr, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(peer = %peer.addr, "TLS handshake timed out");
                    return;
                }
            };
            // HTTP/2 over TLS is negotiated by ALPN (RFC 9113 3.3): without
            // `h2` the client speaks HTTP/1.1.
            let http1_only = tls_stream.get_ref().1.alpn_protocol() != Some(b"h2");
            serve(
                tls_stream, http1_only, peer, shared, &builder, limits, accepted, &activity, stop,
            )
            .await
        }
    }
}

/// Serves HTTP on an accepted (and, for TLS, handshaken) stream. Not an
/// `async fn`: the stream goes straight into a boxed hyper connection, so
/// the connection's task does not also keep a by-value copy of it (the
/// arguments of an async fn stay in its state for its whole life).
#[allow(clippy::too_many_arguments)]
fn serve<'a, S>(
    io: S,
    http1_only: bool,
    peer: Arc<Peer>,
    shared: Arc<Shared>,
    builders: &'a Builders,
    limits: ConnLimits,
    accepted: Instant,
    activity: &'a Activity,
    stop: CancellationToken,
) -> impl Future<Output = ()> + 'a
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let requested = Arc::new(AtomicBool::new(false));
    let seen = requested.clone();
    let service = service_fn(move |req| {
        seen.store(true, Ordering::Relaxed);
        // Boxed: hyper keeps a slot of the service future's size for the
        // whole life of an HTTP/1 connection, idle or not; a box puts the
        // couple of KiB of a request in flight on the heap only while it is.
        Box::pin(callback::handle(shared.clone(), peer.clone(), req))
    });
    let io = TokioIo::new(io);
    let deadline = accepted + limits.header_timeout;
    // Boxed either way: the task then holds a pointer, not the larger of the
    // two connection types (HTTP/2 state is large).
    let (h1, auto) = if http1_only {
        (
            Some(Box::pin(builders.http1.serve_connection(io, service))),
            None,
        )
    } else {
        (
            None,
            Some(Box::pin(builders.auto.serve_connection(io, service))),
        )
    };
    async move {
        if let Some(conn) = h1 {
            let shutdown = |c: Pin<&mut _>| http1::Connection::graceful_shutdown(c);
            drive(conn, shutdown, &requested, deadline, limits, activity, stop).await
        } else if let Some(conn) = auto {
            let shutdown = |c: Pin<&mut _>| auto::Connection::graceful_shutdown(c);
            drive(conn, shutdown, &requested, deadline, limits, activity, stop).await
        }
    }
}

/// Runs a served connection to its end. The first request's headers must
/// be complete by `first_request_by` (`header_timeout` after the accept, TLS
/// handshake included): silent and trickling clients are cut off here.
async fn drive<C, E>(
    mut conn: Pin<Box<C>>,
    shutdown: impl Fn(Pin<&mut C>),
    requested: &AtomicBool,
    first_request_by: Instant,
    limits: ConnLimits,
    activity: &Activity,
    stop: CancellationToken,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let first_request_by = tokio::time::sleep_until(first_request_by);
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
            _ = stop.cancelled(), if !closing => {
                shutdown(conn.as_mut());
                closing = true;
            }
            _ = &mut first_request_by, if !closing && !first_checked => {
                first_checked = true;
                if !requested.load(Ordering::Relaxed) {
                    // Silent or trickling: dropping the connection closes it,
                    // whatever state its half-read request is in.
                    return;
                }
            }
            _ = activity.idle_for(limits.idle_timeout), if !closing => {
                shutdown(conn.as_mut());
                closing = true;
            }
        }
    }
}

/// Last time bytes moved on a connection, in milliseconds since `base`.
#[derive(Clone)]
struct Activity {
    base: Instant,
    last: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    /// Resolves once no byte has moved for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let last = self.base + Duration::from_millis(self.last.load(Ordering::Relaxed));
            let until = last + limit;
            if Instant::now() >= until {
                return;
            }
            tokio::time::sleep_until(until).await;
        }
    }
}

/// A stream that records when bytes move, for the idle timeout.
struct Tracked<S> {
    inner: S,
    activity: Activity,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
