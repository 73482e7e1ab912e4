//! Keep-alive HTTP/1.1 connections to one plain-HTTP upstream, on hyper's
//! client connection directly: a stack of idle connections per serving
//! thread. hyper-util's general client costs about 10k instructions per
//! call more than this (its pool key hashed twice, a task spawned per
//! response to put the connection back); a sidecar's plain-HTTP upstream is
//! one host and needs none of its generality. HTTPS upstreams keep it (TLS,
//! ALPN, HTTP/2).

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Why no answer came from the upstream's connection.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("connect to {addr}: timed out")]
    ConnectTimeout { addr: String },
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

struct Idle {
    sender: SendRequest<Full<Bytes>>,
    since: Instant,
}

/// A connection out of the pool, for one request.
pub struct Lease {
    sender: SendRequest<Full<Bytes>>,
    /// Taken from the idle stack (it may have been closed under us).
    reused: bool,
}

pub struct Pool {
    host: String,
    port: u16,
    /// Idle connections per serving thread (index `cores::current()`): a
    /// connection's task runs on the runtime that opened it.
    idle: Box<[Mutex<Vec<Idle>>]>,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
}

impl Pool {
    pub fn new(
        host: &str,
        port: u16,
        threads: usize,
        max_idle: usize,
        idle_timeout: Duration,
        connect_timeout: Duration,
    ) -> Self {
        // `[::1]` in a URL, `::1` to connect.
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Self {
            host,
            port,
            idle: (0..threads).map(|_| Mutex::new(Vec::new())).collect(),
            max_idle,
            idle_timeout,
            connect_timeout,
        }
    }

    fn slot(&self) -> Option<&Mutex<Vec<Idle>>> {
        self.idle
            .get(crate::runtime::current() % self.idle.len().max(1))
    }

    /// Sends `request` on an idle connection, else a new one. A request
    /// that a reused connection refused before writing a byte of it (closed
    /// by the upstream while idle) is sent once more on a new connection:
    /// the upstream never saw it.
    pub async fn send(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Lease), PoolError> {
        let mut lease = self.checkout().await?;
        match lease.sender.try_send_request(request).await {
            Ok(response) => Ok((response, lease)),
            Err(mut e) => match e.take_message() {
                Some(request) if lease.reused => {
                    let mut fresh = self.connect().await?;
                    let response = fresh.sender.send_request(request).await?;
                    Ok((response, fresh))
                }
                _ => Err(e.into_error().into()),
            },
        }
    }

    /// Puts a connection back once its answer was read to the end.
    pub fn checkin(&self, lease: Lease) {
        if lease.sender.is_closed() {
            return;
        }
        if let Some(Ok(mut idle)) = self.slot().map(Mutex::lock) {
            // The oldest are at the bottom: close those past the idle time.
            let expired = idle
                .iter()
                .take_while(|i| i.since.elapsed() >= self.idle_timeout)
                .count();
            idle.drain(..expired);
            if idle.len() >= self.max_idle {
                return;
            }
            idle.push(Idle {
                sender: lease.sender,
                since: Instant::now(),
            });
        }
    }

    async fn checkout(&self) -> Result<Lease, PoolError> {
        loop {
            // Newest first: the oldest idle ones expire at the bottom.
            let popped = self
                .slot()
                .and_then(|s| s.lock().ok())
                .and_then(|mut idle| idle.pop());
            let Some(idle) = popped else {
                return self.connect().await;
            };
            if idle.since.elapsed() >= self.idle_timeout || idle.sender.is_closed() {
                continue;
            }
            let mut sender = idle.sender;
            // Ready at once unless its task has not yet seen the end of the
            // last answer; an error means the connection is gone.
            if sender.ready().await.is_ok() {
                return Ok(Lease {
                    sender,
                    reused: true,
                });
            }
        }
    }

    async fn connect(&self) -> Result<Lease, PoolError> {
        let addr = || format!("{}:{}", self.host, self.port);
        let connecting = TcpStream::connect((self.host.as_str(), self.port));
        let stream = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => {
                return Err(PoolError::Connect {
                    addr: addr(),
                    source,
                });
            }
            Err(_) => return Err(PoolError::ConnectTimeout { addr: addr() }),
        };
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(Lease {
            sender,
            reused: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An HTTP/1.1 server on 127.0.0.1 that answers every request (no body
    /// expected) with an empty 200 and keeps the connection; counts accepts.
    async fn server() -> (u16, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while let Ok(n) = conn.read(&mut chunk).await {
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                            if conn.write_all(ok).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (port, accepted)
    }

    async fn get(pool: &Pool) {
        let request = Request::builder()
            .uri("/")
            .header("host", "127.0.0.1")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (response, lease) = pool.send(request).await.unwrap();
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.unwrap();
        pool.checkin(lease);
    }

    #[tokio::test]
    async fn idle_connections_are_reused_until_their_idle_time_is_up() {
        let (port, accepted) = server().await;
        let idle = Duration::from_millis(200);
        let pool = Pool::new("127.0.0.1", port, 1, 4, idle, Duration::from_secs(2));
        for _ in 0..5 {
            get(&pool).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "reused");
        tokio::time::sleep(idle * 2).await;
        get(&pool).await;
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "an expired one is not used"
        );
        // Checking the new one in closed the expired one.
        let idle_now = pool.idle[0].lock().unwrap().len();
        assert_eq!(idle_now, 1);
    }

    #[tokio::test]
    async fn at_most_max_idle_connections_are_kept() {
        let (port, accepted) = server().await;
        let pool = Pool::new(
            "127.0.0.1",
            port,
            1,
            2,
            Duration::from_secs(20),
            Duration::from_secs(2),
        );
        // Five at once need five connections; two of them stay.
        let calls: Vec<_> = (0..5).map(|_| get(&pool)).collect();
        futures_util::future::join_all(calls).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 5);
        assert_eq!(pool.idle[0].lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_bracketed_ipv6_host_is_connected_to() {
        // Skipped where the machine has no IPv6 loopback.
        let Ok(listener) = tokio::net::TcpListener::bind("[::1]:0").await else {
            return;
        };
        let port = listener.local_addr().unwrap().port();
        let accepting = tokio::spawn(async move { listener.accept().await.is_ok() });
        let pool = Pool::new(
            "[::1]",
            port,
            1,
            2,
            Duration::from_secs(20),
            Duration::from_secs(2),
        );
        assert!(pool.connect().await.is_ok());
        assert!(accepting.await.unwrap());
    }

    #[tokio::test]
    async fn a_refused_connect_is_an_error_naming_the_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let pool = Pool::new(
            "127.0.0.1",
            port,
            1,
            2,
            Duration::from_secs(20),
            Duration::from_secs(2),
        );
        let request = Request::new(Full::new(Bytes::new()));
        let error = pool.send(request).await.err().unwrap();
        assert!(
            error.to_string().contains(&format!("127.0.0.1:{port}")),
            "{error}"
        );
    }
}
