//! Test helpers: real upstream servers and real gateways on ephemeral
//! 127.0.0.1 ports, a PKI generated per test, and a client acting as IM.
#![allow(dead_code)]

pub mod nats;
mod process;
#[allow(unused_imports)]
pub use process::{Binary, free_addr};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub const APP: u64 = 1400000001;
pub const OK: &str = r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#;
pub const DENY: &str = r#"{"ActionStatus":"OK","ErrorInfo":"rejected by gateway","ErrorCode":1}"#;

/// A catalog-valid decision body.
pub const GROUP_SEND: &str = r#"{"CallbackCommand":"Group.CallbackBeforeSendMsg","GroupId":"@TGS#2J4SZEAEL","Type":"Public","From_Account":"alice","Operator_Account":"alice","Random":123456,"OnlineOnlyFlag":0,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}],"EventTime":1670574414123}"#;
/// A catalog-valid notification body.
pub const MEMBER_JOIN: &str = r#"{"CallbackCommand":"Group.CallbackAfterNewMemberJoin","GroupId":"@TGS#2J4SZEAEL","Type":"Public","JoinType":"Apply","Operator_Account":"alice","NewMemberList":[{"Member_Account":"bob"}],"EventTime":"1670574414123"}"#;

pub fn fixture(command: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/callbacks/{command}.json"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// How a test upstream answers.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Status and body, after a delay.
    Answer {
        status: u16,
        body: String,
        delay: Duration,
    },
    /// Accept the request and never answer.
    Hang,
    /// Close the connection without an answer.
    Drop,
}

impl Reply {
    pub fn ok() -> Self {
        Self::json(OK)
    }
    pub fn json(body: &str) -> Self {
        Reply::Answer {
            status: 200,
            body: body.to_owned(),
            delay: Duration::ZERO,
        }
    }
    pub fn code(code: i64) -> Self {
        Self::json(&format!(
            r#"{{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":{code}}}"#
        ))
    }
    pub fn status(status: u16) -> Self {
        Reply::Answer {
            status,
            body: OK.to_owned(),
            delay: Duration::ZERO,
        }
    }
    pub fn after(self, delay: Duration) -> Self {
        match self {
            Reply::Answer { status, body, .. } => Reply::Answer {
                status,
                body,
                delay,
            },
            other => other,
        }
    }
}

/// What an upstream received.
#[derive(Clone, Debug)]
pub struct Received {
    /// The gateway's end of the connection: the same for pooled requests.
    pub peer: SocketAddr,
    pub uri: http::Uri,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

type Script = Arc<dyn Fn(usize) -> Reply + Send + Sync>;

/// A real HTTP upstream on an ephemeral port that records every request.
/// With `answer_with`, the nth request (0-based) gets `script(n)`.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    arrived: Arc<Notify>,
}

impl Upstream {
    pub async fn start(reply: Reply) -> Self {
        Self::scripted(move |_| reply.clone()).await
    }

    pub async fn scripted(script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, Arc::new(script))
    }

    /// Serves on an existing listener (e.g. to restart on a known port).
    pub fn serve(listener: TcpListener, script: Script) -> Self {
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let (rec, arr) = (received.clone(), arrived.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    return;
                };
                let (rec, arr, script) = (rec.clone(), arr.clone(), script.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (rec, arr, script) = (rec.clone(), arr.clone(), script.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            let n = {
                                let mut list = rec.lock().unwrap();
                                list.push(Received {
                                    peer,
                                    uri: parts.uri,
                                    headers: parts.headers,
                                    body,
                                });
                                list.len() - 1
                            };
                            arr.notify_waiters();
                            match script(n) {
                                Reply::Answer {
                                    status,
                                    body,
                                    delay,
                                } => {
                                    tokio::time::sleep(delay).await;
                                    let mut r = Response::new(Full::new(Bytes::from(body)));
                                    *r.status_mut() = StatusCode::from_u16(status).unwrap();
                                    Ok::<_, std::io::Error>(r)
                                }
                                Reply::Hang => {
                                    std::future::pending::<()>().await;
                                    unreachable!()
                                }
                                Reply::Drop => Err(std::io::Error::other("drop")),
                            }
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            received,
            arrived,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/im/callback", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// Waits until at least `n` requests arrived; panics after `limit`.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.arrived.notified();
            if self.count() >= n {
                return self.received();
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "upstream {} got {} requests, expected {n}",
                    self.addr,
                    self.count()
                );
            }
        }
    }
}

/// A gateway running in this process on ephemeral ports, with its config
/// file in a temporary folder.
pub struct Gateway {
    pub gw: Option<callgate::Gateway>,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

impl Gateway {
    /// Starts a gateway on `yaml`. `listeners` and `admin` default to one
    /// plain listener and an admin address on ephemeral ports.
    pub async fn start(yaml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, yaml).await
    }

    pub async fn start_in(dir: tempfile::TempDir, yaml: &str) -> Self {
        let mut text = String::new();
        if !yaml.contains("listeners:") {
            text.push_str("listeners:\n  - addr: \"127.0.0.1:0\"\n");
        }
        if !yaml.contains("admin:") {
            text.push_str("admin:\n  addr: \"127.0.0.1:0\"\n");
        }
        if !yaml.contains("apps:") {
            text.push_str(&format!("apps:\n  - sdkappid: {APP}\n"));
        }
        text.push_str(yaml);
        let path = dir.path().join("routes.yaml");
        std::fs::write(&path, text).unwrap();
        let config =
            callgate::Config::load(&path).unwrap_or_else(|e| panic!("test config invalid: {e}"));
        let gw = callgate::Gateway::start(config).await.unwrap();
        Gateway {
            gw: Some(gw),
            dir,
            http: test_client(),
        }
    }

    pub fn gw(&self) -> &callgate::Gateway {
        self.gw.as_ref().unwrap()
    }

    pub fn addr(&self) -> SocketAddr {
        self.gw().listener_addrs()[0]
    }

    pub fn base(&self) -> String {
        format!("http://{}/im", self.addr())
    }

    pub fn admin(&self) -> String {
        format!("http://{}", self.gw().admin_addr())
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("routes.yaml")
    }

    /// POSTs a callback for `command` with `body` as IM would.
    pub async fn callback(&self, command: &str, body: &str) -> Answer {
        self.post(&format!("SdkAppid={APP}&CallbackCommand={command}&contenttype=json&ClientIP=1.2.3.4&OptPlatform=RESTAPI"), body)
            .await
    }

    pub async fn post(&self, query: &str, body: &str) -> Answer {
        let r = self
            .http
            .post(format!("{}?{query}", self.base()))
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        Answer::read(r).await
    }

    /// Waits (bounded by `limit`) until `/readyz` answers 200.
    pub async fn wait_ready(&self, limit: Duration) {
        let started = std::time::Instant::now();
        loop {
            let status = self
                .http
                .get(format!("{}/readyz", self.admin()))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            if status == 200 {
                return;
            }
            assert!(started.elapsed() < limit, "the gateway never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.admin()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn shutdown(mut self) {
        if let Some(gw) = self.gw.take() {
            gw.shutdown(Duration::from_secs(5)).await;
        }
    }
}

/// A client acting as IM. No pooling: the gateway closes a connection
/// after refusing an unread body (413, 401...), and a pooled client could
/// race that close on its next request.
pub fn test_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// An answer of the gateway.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub outcome: String,
    pub request_id: String,
    pub body: Bytes,
}

impl Answer {
    pub async fn read(r: reqwest::Response) -> Self {
        let header = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let outcome = header("x-callgate-outcome");
        let request_id = header("x-request-id");
        let status = r.status().as_u16();
        let body = r.bytes().await.unwrap();
        Answer {
            status,
            outcome,
            request_id,
            body,
        }
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {}", self.text()))
    }

    /// Asserts a failure answer of the checks: status, JSON shape, and a
    /// reason containing `info`.
    pub fn assert_rejected(&self, status: u16, info: &str) {
        assert_eq!(self.status, status, "{}", self.text());
        assert_eq!(self.outcome, "rejected");
        let v = self.json();
        assert_eq!(v["ActionStatus"], "FAIL");
        assert_ne!(v["ErrorCode"], 0);
        assert!(v["ErrorCode"].is_i64());
        let reason = v["ErrorInfo"].as_str().unwrap();
        assert!(
            reason.contains(info),
            "ErrorInfo {reason:?} should mention {info:?}"
        );
    }
}

/// A development PKI written to a temporary folder.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub pki: callgate::certs::DevPki,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = callgate::certs::generate().unwrap();
        pki.write(dir.path()).unwrap();
        Pki { dir, pki }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// A reqwest client trusting only this CA, optionally presenting the
    /// IM-side client certificate.
    pub fn client(&self, with_cert: bool, http2: bool) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.pki.ca_cert_pem.as_bytes()).unwrap();
        let mut b = reqwest::Client::builder().tls_certs_only([ca]);
        if with_cert {
            let pem = format!("{}{}", self.pki.client_cert_pem, self.pki.client_key_pem);
            b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        if http2 {
            b = b.http2_prior_knowledge();
        }
        b.build().unwrap()
    }
}

pub fn upstreams_yaml(ups: &[(&str, &Upstream)]) -> String {
    let mut s = String::from("upstreams:\n");
    for (name, u) in ups {
        s.push_str(&format!("  {name}:\n    url: \"{}\"\n", u.url()));
    }
    s
}

/// The value of one series (`name` or `name{labels}`) in a metrics text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}
