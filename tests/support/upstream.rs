//! Fake upstreams: real servers on 127.0.0.1 that record every request and
//! answer as a test says.
//!
//! ```ignore
//! let up = Upstream::start(Reply::ok()).await;                  // answers OK
//! let up = Upstream::scripted(|n| if n < 2 { Reply::status(500) } else { Reply::ok() }).await;
//! let up = Upstream::builder().tls(&pki).reply(Reply::json(a)).start().await;
//! let up = Upstream::builder().closing().start().await;         // one answer per connection
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::{Pki, Reply};

/// What an upstream received.
#[derive(Clone, Debug)]
pub struct Received {
    /// The gateway's end of the connection: the same for pooled requests.
    pub peer: SocketAddr,
    pub at: Instant,
    pub uri: http::Uri,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    /// DER of the first certificate the gateway presented (TLS only).
    pub client_cert: Option<Vec<u8>>,
}

impl Received {
    /// The header's value, or "" when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

type Script = Arc<dyn Fn(usize) -> Reply + Send + Sync>;

#[derive(Default)]
struct State {
    received: Mutex<Vec<Received>>,
    closed: Mutex<Vec<(SocketAddr, Instant)>>,
    connections: AtomicUsize,
    failed_handshakes: AtomicUsize,
    changed: Notify,
}

impl State {
    fn changed(&self) {
        self.changed.notify_waiters();
    }
}

/// How an [`Upstream`] is set up before it starts.
pub struct Builder {
    script: Script,
    bind: Option<SocketAddr>,
    tls: Option<TlsAcceptor>,
    closing: bool,
}

impl Builder {
    /// The same answer to every request.
    pub fn reply(self, reply: Reply) -> Self {
        self.script(move |_| reply.clone())
    }

    /// The nth request (0-based) gets `script(n)`.
    pub fn script(mut self, script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Self {
        self.script = Arc::new(script);
        self
    }

    /// Listens on `addr` (e.g. to come back on the port of a stopped one).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = Some(addr);
        self
    }

    /// HTTPS with `pki`'s server certificate, wanting a client certificate
    /// from `pki`'s CA; a failed handshake is counted, not served.
    pub fn tls(mut self, pki: &Pki) -> Self {
        self.tls = Some(pki.acceptor());
        self
    }

    /// Bare HTTP/1.1 that closes each connection right after its first
    /// answer, without a `connection: close` header: the gateway learns it
    /// from the socket.
    pub fn closing(mut self) -> Self {
        self.closing = true;
        self
    }

    pub async fn start(self) -> Upstream {
        let listener = TcpListener::bind(self.bind.unwrap_or(([127, 0, 0, 1], 0).into()))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let server = tokio::spawn(accept(listener, self, state.clone()));
        Upstream {
            addr,
            scheme,
            state,
            server: Arc::new(Mutex::new(Some(server))),
        }
    }
}

/// A running fake upstream. Clones share it; it runs until the test ends
/// or [`stop`](Upstream::stop).
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    scheme: &'static str,
    state: Arc<State>,
    server: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Upstream {
    pub fn builder() -> Builder {
        Builder {
            script: Arc::new(|_| Reply::ok()),
            bind: None,
            tls: None,
            closing: false,
        }
    }

    pub async fn start(reply: Reply) -> Self {
        Self::builder().reply(reply).start().await
    }

    pub async fn scripted(script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Self {
        Self::builder().script(script).start().await
    }

    /// Answers `status` to the first `times` requests, then OK.
    pub async fn failing_first(times: usize, status: u16) -> Self {
        Self::scripted(move |n| {
            if n < times {
                Reply::status(status)
            } else {
                Reply::ok()
            }
        })
        .await
    }

    /// Answers `status` until `healthy` is set, then OK.
    pub async fn failing_until(healthy: &Arc<AtomicBool>, status: u16) -> Self {
        let healthy = healthy.clone();
        Self::scripted(move |_| {
            if healthy.load(Ordering::SeqCst) {
                Reply::ok()
            } else {
                Reply::status(status)
            }
        })
        .await
    }

    /// `http://ADDR/im/callback` (or `https://`).
    pub fn url(&self) -> String {
        self.url_with("/im/callback")
    }

    /// The upstream's address with another path (and query).
    pub fn url_with(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.received.lock().unwrap().len()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// TLS handshakes that failed (wrong or missing certificates).
    pub fn failed_handshakes(&self) -> usize {
        self.state.failed_handshakes.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests arrived; panics after `limit`.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        self.until(limit, || (self.count() >= n).then(|| self.received()))
            .await
            .unwrap_or_else(|| {
                panic!(
                    "upstream {} got {} requests, expected {n}",
                    self.addr,
                    self.count()
                )
            })
    }

    /// Waits until the connection from `peer` is closed; returns when that
    /// was seen. Panics after `limit`.
    pub async fn wait_closed(&self, peer: SocketAddr, limit: Duration) -> Instant {
        let closed = || {
            let closed = self.state.closed.lock().unwrap();
            closed.iter().find(|(p, _)| *p == peer).map(|(_, at)| *at)
        };
        self.until(limit, closed)
            .await
            .unwrap_or_else(|| panic!("the connection from {peer} never closed"))
    }

    /// Stops listening and drops every open connection at once; returns
    /// once the port is free.
    pub async fn stop(&self) {
        let server = self.server.lock().unwrap().take();
        if let Some(server) = server {
            server.abort();
            let _ = server.await;
        }
    }

    async fn until<T>(&self, limit: Duration, mut done: impl FnMut() -> Option<T>) -> Option<T> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.state.changed.notified();
            if let Some(value) = done() {
                return Some(value);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return None;
            }
        }
    }
}

/// The accept loop. Its connections live in a set it owns, so aborting it
/// closes them all.
async fn accept(listener: TcpListener, setup: Builder, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            return;
        };
        while connections.try_join_next().is_some() {}
        state.connections.fetch_add(1, Ordering::SeqCst);
        let (state, script, tls) = (state.clone(), setup.script.clone(), setup.tls.clone());
        let closing = setup.closing;
        connections.spawn(async move {
            if closing {
                answer_once(stream, peer, &state, &script).await;
            } else if let Some(acceptor) = tls {
                match acceptor.accept(stream).await {
                    Ok(tls) => {
                        let cert = tls.get_ref().1.peer_certificates();
                        let cert = cert.and_then(|c| c.first()).map(|c| c.to_vec());
                        serve(tls, peer, cert, state.clone(), script).await;
                    }
                    Err(_) => {
                        state.failed_handshakes.fetch_add(1, Ordering::SeqCst);
                    }
                }
            } else {
                serve(stream, peer, None, state.clone(), script).await;
            }
            state.closed.lock().unwrap().push((peer, Instant::now()));
            state.changed();
        });
    }
}

/// Records a request; returns how to answer it.
fn record(state: &State, script: &Script, received: Received) -> Reply {
    let n = {
        let mut list = state.received.lock().unwrap();
        list.push(received);
        list.len() - 1
    };
    state.changed();
    script(n)
}

/// HTTP/1.1 or HTTP/2 (by ALPN or prior knowledge) with hyper.
async fn serve<S>(io: S, peer: SocketAddr, cert: Option<Vec<u8>>, state: Arc<State>, script: Script)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| {
        let (state, script, cert) = (state.clone(), script.clone(), cert.clone());
        async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let received = Received {
                peer,
                at: Instant::now(),
                uri: parts.uri,
                headers: parts.headers,
                body,
                client_cert: cert,
            };
            match record(&state, &script, received) {
                Reply::Answer {
                    status,
                    headers,
                    body,
                    delay,
                } => {
                    tokio::time::sleep(delay).await;
                    let mut r = Response::new(Full::new(Bytes::from(body)));
                    *r.status_mut() = StatusCode::from_u16(status).unwrap();
                    for (name, value) in headers {
                        let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
                        r.headers_mut().insert(name, value.parse().unwrap());
                    }
                    Ok::<_, std::io::Error>(r)
                }
                Reply::Hang => std::future::pending().await,
                Reply::Drop => Err(std::io::Error::other("drop")),
            }
        }
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), service)
        .await;
}

/// Bare HTTP/1.1: reads one request (its head, then `content-length`
/// bytes), answers, and closes the connection.
async fn answer_once(mut conn: TcpStream, peer: SocketAddr, state: &State, script: &Script) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head, length) = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_lowercase()
                        .strip_prefix("content-length:")?
                        .trim()
                        .parse()
                        .ok()
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                buf.drain(..end + 4);
                break (head, length);
            }
        }
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let mut lines = head.lines();
    let target = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("/");
    let mut headers = http::HeaderMap::new();
    for (name, value) in lines.filter_map(|l| l.split_once(':')) {
        let name = http::HeaderName::from_bytes(name.trim().as_bytes()).unwrap();
        headers.append(name, value.trim().parse().unwrap());
    }
    let received = Received {
        peer,
        at: Instant::now(),
        uri: target.parse().unwrap(),
        headers,
        body: Bytes::copy_from_slice(&buf[..length]),
        client_cert: None,
    };
    let (status, headers, body, delay) = match record(state, script, received) {
        Reply::Answer {
            status,
            headers,
            body,
            delay,
        } => (status, headers, body, delay),
        Reply::Hang => std::future::pending().await,
        Reply::Drop => return,
    };
    tokio::time::sleep(delay).await;
    let reason = StatusCode::from_u16(status).unwrap();
    let mut answer = format!("HTTP/1.1 {reason}\r\ncontent-length: {}\r\n", body.len());
    for (name, value) in headers {
        answer.push_str(&format!("{name}: {value}\r\n"));
    }
    answer.push_str("\r\n");
    answer.push_str(&body);
    let _ = conn.write_all(answer.as_bytes()).await;
    let _ = conn.shutdown().await;
}
