//! Keep-alive HTTP/1.1 connections to one plain-HTTP upstream, on hyper's
//! client connection directly: a stack of idle connections per serving
//! thread. hyper-util's general client does more per call than this (its
//! pool key hashed twice, a task spawned per response to put the
//! connection back; BENCHMARKS.md has the cost); a sidecar's plain-HTTP
//! upstream is one host and needs none of its generality. HTTPS upstreams
//! keep it (TLS, ALPN, HTTP/2).

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
mod tests;
