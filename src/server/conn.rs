//! The accept loop and one connection's life: TLS handshake and request
//! headers within `header_timeout`, closed after `idle_timeout` without
//! traffic, drained gracefully on shutdown.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
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
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper's timer also runs while a keep-alive connection waits for
        // its next request, so it gets the idle timeout; the first request's
        // headers are held to `header_timeout` in `drive`.
        .header_read_timeout(limits.idle_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256);
    let builder = Arc::new(builder);
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
        tasks.spawn(async move {
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
    builder: Arc<auto::Builder<TokioExecutor>>,
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
            drive(
                tracked, peer, shared, &builder, limits, accepted, &activity, stop,
            )
            .await
        }
        Some(config) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            match tokio::time::timeout(limits.header_timeout, acceptor.accept(tracked)).await {
                Ok(Ok(tls_stream)) => {
                    drive(
                        tls_stream, peer, shared, &builder, limits, accepted, &activity, stop,
                    )
                    .await
                }
                Ok(Err(e)) => {
                    tracing::debug!(peer = %peer.addr, error = %e, "TLS handshake failed")
                }
                Err(_) => tracing::debug!(peer = %peer.addr, "TLS handshake timed out"),
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn drive<S>(
    io: S,
    peer: Arc<Peer>,
    shared: Arc<Shared>,
    builder: &auto::Builder<TokioExecutor>,
    limits: ConnLimits,
    accepted: Instant,
    activity: &Activity,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The first request's headers must be complete within `header_timeout`
    // of the accept (TLS handshake included): silent and trickling clients
    // are cut off here.
    let requested = Arc::new(AtomicBool::new(false));
    let seen = requested.clone();
    let service = service_fn(move |req| {
        seen.store(true, Ordering::Relaxed);
        callback::handle(shared.clone(), peer.clone(), req)
    });
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let first_request_by = tokio::time::sleep_until(accepted + limits.header_timeout);
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
                conn.as_mut().graceful_shutdown();
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
                conn.as_mut().graceful_shutdown();
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
