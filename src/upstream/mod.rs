//! Upstream backends: one pooled keep-alive client per upstream (its TLS
//! settings are its own), and the request callgate sends them (SPEC 4.4).

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as _, Incoming};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::common::{CallResult, Forward, chain};
use crate::config::Upstream;

mod pool;
use pool::Pool;

/// Idle pooled connections are closed before a typical backend's own
/// keep-alive timeout would close them under us (hyper#2136).
const POOL_IDLE: Duration = Duration::from_secs(20);
const POOL_MAX_IDLE_PER_HOST: usize = 64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream {name}: {source}")]
    Tls {
        name: String,
        source: crate::tls::TlsError,
    },
    #[error("upstream {name}: cannot build request URL: {reason}")]
    Url { name: String, reason: String },
}

/// Why one call to an upstream produced no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("transport: {}", chain(.0))]
    Transport(#[from] hyper_util::client::legacy::Error),
    #[error("transport: {}", chain(.0))]
    Connection(#[from] pool::PoolError),
    #[error("timed out")]
    Timeout,
    #[error("answer body: {0}")]
    Body(String),
    #[error("bad request: {0}")]
    Request(#[from] http::Error),
}

impl CallError {
    /// What this failure counts as in metrics and logs.
    pub fn result(&self) -> CallResult {
        match self {
            CallError::Timeout => CallResult::Timeout,
            CallError::Body(_) => CallResult::BadAnswer,
            CallError::Transport(_) | CallError::Connection(_) | CallError::Request(_) => {
                CallResult::Error
            }
        }
    }
}

/// An upstream's HTTP answer (any status), body capped in size.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// How an upstream is reached. Either way there is one pool per serving
/// thread (index `cores::current()`; 0 for the rest of the process): a
/// pooled connection's task runs on the runtime that opened it, so sharing
/// one pool across threads would put a cross-thread wake-up into every call.
enum Transport {
    /// `http://`: HTTP/1.1 keep-alive on hyper's connection directly.
    Plain(Pool),
    /// `https://`: hyper-util's client with rustls (ALPN, HTTP/2).
    Tls(Box<[HttpsClient]>),
}

pub struct UpstreamClient {
    pub config: Upstream,
    transport: Transport,
    /// The upstream URL, split once so that a call only joins the path and
    /// the callback's query (the scheme and authority are shared buffers).
    scheme: Scheme,
    authority: Authority,
    path: String,
    own_query: Option<String>,
    /// `Host` for plain-HTTP upstreams (always HTTP/1.1), built once instead
    /// of by the client on every request; HTTPS ones may speak HTTP/2, where
    /// the client sends `:authority` instead.
    host: Option<HeaderValue>,
    /// `Basic ...` from the URL's credentials, built once.
    authorization: Option<HeaderValue>,
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("name", &self.config.name)
            .finish()
    }
}

impl UpstreamClient {
    pub fn new(config: &Upstream) -> Result<Self, UpstreamError> {
        let identity = match (&config.client_cert, &config.client_key) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            _ => None,
        };
        let url = config.url.uri();
        let threads = crate::runtime::count() + 1;
        let transport = if url.scheme() == Some(&Scheme::HTTP) {
            let port = url.port_u16().unwrap_or(80);
            let host = url.host().unwrap_or_default();
            Transport::Plain(Pool::new(
                host,
                port,
                threads,
                POOL_MAX_IDLE_PER_HOST,
                POOL_IDLE,
                CONNECT_TIMEOUT,
            ))
        } else {
            Transport::Tls(Self::tls_clients(config, identity, threads)?)
        };
        let (Some(scheme), Some(authority)) = (url.scheme(), url.authority()) else {
            return Err(UpstreamError::Url {
                name: config.name.clone(),
                reason: "URL needs a scheme and a host".into(),
            });
        };
        // What hyper-util would send: the host, and the port unless default.
        let host = (scheme == &Scheme::HTTP)
            .then(|| match url.port_u16() {
                Some(port) if port != 80 => format!("{}:{port}", authority.host()),
                _ => authority.host().to_owned(),
            })
            .map(|h| {
                HeaderValue::from_str(&h).map_err(|e| UpstreamError::Url {
                    name: config.name.clone(),
                    reason: e.to_string(),
                })
            })
            .transpose()?;
        let authorization = config
            .credentials
            .as_ref()
            .map(|c| {
                let mut v = HeaderValue::from_str(c.expose()).map_err(|_| UpstreamError::Url {
                    name: config.name.clone(),
                    reason: "credentials do not make a header value".into(),
                })?;
                // Kept out of HTTP/2 header compression tables.
                v.set_sensitive(true);
                Ok(v)
            })
            .transpose()?;
        Ok(Self {
            config: config.clone(),
            transport,
            scheme: scheme.clone(),
            authority: authority.clone(),
            path: url.path().to_owned(),
            own_query: url.query().map(str::to_owned),
            host,
            authorization,
        })
    }

    /// hyper-util clients with the upstream's TLS settings, one per thread.
    fn tls_clients(
        config: &Upstream,
        identity: Option<(&std::path::Path, &std::path::Path)>,
        threads: usize,
    ) -> Result<Box<[HttpsClient]>, UpstreamError> {
        let tls = crate::tls::client_config(config.ca.as_deref(), identity).map_err(|source| {
            UpstreamError::Tls {
                name: config.name.clone(),
                source,
            }
        })?;
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let https = crate::tls::https_connector(tls, tcp);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST);
        Ok((0..threads).map(|_| builder.build(https.clone())).collect())
    }

    /// The URL a callback is sent to: the upstream's own query string is
    /// kept and the callback's is appended.
    pub fn target(&self, callback_query: &str) -> String {
        format!(
            "{}://{}{}",
            self.scheme,
            self.authority,
            self.path_and_query(callback_query)
        )
    }

    /// The path, the upstream's own query and the callback's, joined.
    fn path_and_query(&self, callback_query: &str) -> String {
        let own = self.own_query.as_deref().unwrap_or("");
        let mut out = String::with_capacity(self.path.len() + own.len() + callback_query.len() + 2);
        out.push_str(&self.path);
        let mut sep = '?';
        for part in [own, callback_query].into_iter().filter(|p| !p.is_empty()) {
            out.push(sep);
            out.push_str(part);
            sep = '&';
        }
        out
    }

    /// One attempt: POST the callback, read the answer (at most
    /// `max_answer` bytes). Bounded by the upstream's `timeout` when set,
    /// else by `default_timeout` if any; callers add their own deadline.
    pub async fn call(
        &self,
        fwd: &Forward,
        max_answer: usize,
        default_timeout: Option<Duration>,
    ) -> Result<Answer, CallError> {
        match self.config.timeout.or(default_timeout) {
            None => self.call_inner(fwd, max_answer).await,
            Some(limit) => {
                match tokio::time::timeout(limit, self.call_inner(fwd, max_answer)).await {
                    Ok(result) => result,
                    Err(_) => Err(CallError::Timeout),
                }
            }
        }
    }

    async fn call_inner(&self, fwd: &Forward, max_answer: usize) -> Result<Answer, CallError> {
        let (response, lease) = self.send(fwd).await?;
        let status = response.status();
        let body = Limited::new(response.into_body(), max_answer)
            .collect()
            .await
            .map_err(|e| CallError::Body(e.to_string()))?
            .to_bytes();
        // Read to the end: the connection can take the next request.
        if let Some((pool, lease)) = lease {
            pool.checkin(lease);
        }
        Ok(Answer { status, body })
    }

    /// One attempt whose answer's body does not matter (a notification:
    /// any 2xx is a delivery, SPEC 4.2): only the status is returned. A
    /// small body is read to the end so the connection can be reused; one
    /// larger than `DRAIN_MAX`, or slower than `DRAIN_TIME`, is dropped
    /// with its connection rather than read. The timeouts are `call`'s,
    /// up to the answer's head.
    pub async fn status_of(
        &self,
        fwd: &Forward,
        default_timeout: Option<Duration>,
    ) -> Result<StatusCode, CallError> {
        let sent = self.send(fwd);
        let (response, lease) = match self.config.timeout.or(default_timeout) {
            None => sent.await?,
            Some(limit) => match tokio::time::timeout(limit, sent).await {
                Ok(result) => result?,
                Err(_) => return Err(CallError::Timeout),
            },
        };
        let status = response.status();
        let drained = tokio::time::timeout(DRAIN_TIME, drain(response.into_body(), DRAIN_MAX));
        if matches!(drained.await, Ok(true))
            && let Some((pool, lease)) = lease
        {
            pool.checkin(lease);
        }
        Ok(status)
    }

    /// Sends the callback; returns the answer's head (its body unread) and,
    /// on a plain-HTTP upstream, the pooled connection it came on.
    async fn send(
        &self,
        fwd: &Forward,
    ) -> Result<(http::Response<Incoming>, Option<(&Pool, pool::Lease)>), CallError> {
        let path = PathAndQuery::from_maybe_shared(Bytes::from(self.path_and_query(&fwd.query)))
            .map_err(|e| CallError::Request(e.into()))?;
        let uri = match &self.transport {
            // HTTP/1.1 to the origin: the request line carries the path only.
            Transport::Plain(_) => Uri::from(path),
            Transport::Tls(_) => {
                let mut uri = http::uri::Parts::default();
                uri.scheme = Some(self.scheme.clone());
                uri.authority = Some(self.authority.clone());
                uri.path_and_query = Some(path);
                Uri::from_parts(uri).map_err(|e| CallError::Request(e.into()))?
            }
        };
        let mut request = Request::new(Full::new(fwd.body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        headers.reserve(7);
        if let Some(host) = &self.host {
            headers.insert(HOST, host.clone());
        }
        if let Some(authorization) = &self.authorization {
            headers.insert(AUTHORIZATION, authorization.clone());
        }
        headers.insert(CONTENT_TYPE, APPLICATION_JSON);
        headers.insert(X_REQUEST_ID, fwd.request_id.clone());
        headers.insert(X_FORWARDED_FOR, forwarded_for(fwd.peer));
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(fwd.proto));
        Ok(match &self.transport {
            Transport::Plain(pool) => {
                let (response, lease) = pool.send(request).await?;
                (response, Some((pool, lease)))
            }
            Transport::Tls(clients) => {
                let client = &clients[crate::runtime::current() % clients.len()];
                (client.request(request).await?, None)
            }
        })
    }
}

/// The most of an unneeded answer body read so its connection can be
/// reused; past it the connection is dropped instead.
const DRAIN_MAX: usize = 64 * 1024;
/// How long an unneeded answer body may take to arrive.
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// Reads `body` to its end if that end comes within `max` bytes; false
/// (the body abandoned) if it is longer or fails.
async fn drain(mut body: Incoming, max: usize) -> bool {
    let mut read = 0usize;
    while !body.is_end_stream() {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    read = read.saturating_add(data.len());
                    if read > max {
                        return false;
                    }
                }
            }
            Some(Err(_)) => return false,
        }
    }
    true
}

/// The client's address as a header value; IPv4 (the common case) is
/// written without the formatting machinery.
fn forwarded_for(peer: IpAddr) -> HeaderValue {
    let mut buf = [0u8; 15];
    let text: &[u8] = match peer {
        IpAddr::V4(v4) => {
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                if octet >= 100 {
                    buf[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    buf[len] = b'0' + octet / 10 % 10;
                    len += 1;
                }
                buf[len] = b'0' + octet % 10;
                len += 1;
            }
            &buf[..len]
        }
        IpAddr::V6(_) => {
            return HeaderValue::from_maybe_shared(Bytes::from(peer.to_string()))
                .unwrap_or(HeaderValue::from_static("unknown"));
        }
    };
    HeaderValue::from_bytes(text).unwrap_or(HeaderValue::from_static("unknown"))
}

/// The `ErrorCode` of an upstream's answer, when the answer counts (SPEC
/// 4.2): HTTP 200 and a JSON object whose `ErrorCode` is an integer.
pub fn error_code(answer: &Answer) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Code {
        #[serde(rename = "ErrorCode")]
        code: i64,
    }
    if answer.status != StatusCode::OK {
        return None;
    }
    // serde would also read a struct from a JSON array; only objects count.
    let first = answer.body.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    serde_json::from_slice::<Code>(&answer.body)
        .ok()
        .map(|v| v.code)
}

#[cfg(test)]
mod tests;
