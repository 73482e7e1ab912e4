//! A gateway running inside the test process, and a client acting as IM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;

use super::{APP, Admin, Config, Metrics};

/// A client acting as IM against one gateway listener. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Im {
    pub http: reqwest::Client,
    base: String,
}

impl Im {
    /// Plain HTTP to `addr`, with [`test_client`].
    pub fn to(addr: SocketAddr) -> Self {
        Self::with(test_client(), &format!("http://{addr}"))
    }

    /// Any client (e.g. a TLS one) to `root`, such as `https://localhost:PORT`.
    pub fn with(http: reqwest::Client, root: &str) -> Self {
        Im {
            http,
            base: format!("{root}/im"),
        }
    }

    /// The callback URL without a query: `http://ADDR/im`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// POSTs a callback of the app [`APP`] for `command`, as IM does.
    pub async fn callback(&self, command: &str, body: &str) -> Answer {
        self.post(&callback_query(command), body).await
    }

    /// POSTs the standard decision: [`GROUP_SEND`](super::GROUP_SEND) for
    /// `Group.CallbackBeforeSendMsg`.
    pub async fn decision(&self) -> Answer {
        self.callback("Group.CallbackBeforeSendMsg", super::GROUP_SEND)
            .await
    }

    /// The same, or the transport error.
    pub async fn try_callback(
        &self,
        command: &str,
        body: impl Into<reqwest::Body>,
    ) -> Result<Answer, reqwest::Error> {
        let query = callback_query(command);
        self.try_send(reqwest::Method::POST, &query, body.into())
            .await
    }

    /// POSTs `body` with this query string.
    pub async fn post(&self, query: &str, body: &str) -> Answer {
        self.send(reqwest::Method::POST, query, body.to_owned().into())
            .await
    }

    /// Any method and body (e.g. a stream); panics on a transport error.
    pub async fn send(&self, method: reqwest::Method, query: &str, body: reqwest::Body) -> Answer {
        self.try_send(method, query, body)
            .await
            .unwrap_or_else(|e| panic!("{query}: {e:?}"))
    }

    pub async fn try_send(
        &self,
        method: reqwest::Method,
        query: &str,
        body: reqwest::Body,
    ) -> Result<Answer, reqwest::Error> {
        let url = format!("{}?{query}", self.base);
        let r = self.http.request(method, url).body(body).send().await?;
        Ok(Answer::read(r).await)
    }
}

/// The query string IM sends with a callback of the app [`APP`].
pub fn callback_query(command: &str) -> String {
    format!(
        "SdkAppid={APP}&CallbackCommand={command}&contenttype=json&ClientIP=1.2.3.4&OptPlatform=RESTAPI"
    )
}

/// A client acting as IM. No pooling: the gateway closes a connection
/// after refusing an unread body (413, 401...), and a pooled client could
/// race that close on its next request.
pub fn test_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A client that keeps connections open between requests.
pub fn pooled_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// An answer of the gateway.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub version: http::Version,
    pub headers: http::HeaderMap,
    /// `x-callgate-outcome`.
    pub outcome: String,
    /// `x-request-id`.
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
        let (status, version, headers) = (r.status().as_u16(), r.version(), r.headers().clone());
        Answer {
            status,
            version,
            headers,
            outcome,
            request_id,
            body: r.bytes().await.unwrap(),
        }
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {}", self.text()))
    }

    /// Asserts the status, the outcome and the body, byte for byte.
    #[track_caller]
    pub fn assert_is(&self, status: u16, outcome: &str, body: &str) {
        assert_eq!(
            (self.status, self.outcome.as_str(), self.text()),
            (status, outcome, body)
        );
    }

    /// Asserts a failure answer of the checks: status, JSON shape, and a
    /// reason containing `info`.
    #[track_caller]
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

/// A gateway running in this process on ephemeral ports, its config file
/// (`routes.yaml`) in a temporary folder.
pub struct Gateway {
    pub gw: Option<callgate::Gateway>,
    pub dir: tempfile::TempDir,
    im: Im,
    admin: Admin,
}

impl Gateway {
    pub async fn start(config: &Config) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), config).await
    }

    /// Starts in `dir`, e.g. the folder of a stopped gateway, to find its
    /// outbox again.
    pub async fn start_in(dir: tempfile::TempDir, config: &Config) -> Self {
        let path = dir.path().join("routes.yaml");
        config.write(&path);
        Self::start_at(dir, path).await
    }

    /// Starts on a config file already written at `path` (inside `dir`).
    pub async fn start_at(dir: tempfile::TempDir, path: PathBuf) -> Self {
        let config =
            callgate::Config::load(&path).unwrap_or_else(|e| panic!("test config invalid: {e}"));
        let gw = callgate::Gateway::start(config).await.unwrap();
        let (im, admin) = (Im::to(gw.listener_addrs()[0]), Admin::new(gw.admin_addr()));
        Gateway {
            gw: Some(gw),
            dir,
            im,
            admin,
        }
    }

    pub fn gw(&self) -> &callgate::Gateway {
        self.gw.as_ref().unwrap()
    }

    /// The first listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.gw().listener_addrs()[0]
    }

    /// IM's side of the first listener.
    pub fn im(&self) -> &Im {
        &self.im
    }

    pub fn admin(&self) -> &Admin {
        &self.admin
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("routes.yaml")
    }

    /// Replaces the config file (no reload by itself: the file watcher or
    /// a reload call picks it up).
    pub fn rewrite(&self, config: &Config) {
        config.write(&self.config_path());
    }

    /// See [`Im::callback`].
    pub async fn callback(&self, command: &str, body: &str) -> Answer {
        self.im.callback(command, body).await
    }

    /// See [`Im::decision`].
    pub async fn decision(&self) -> Answer {
        self.im.decision().await
    }

    /// See [`Im::post`].
    pub async fn post(&self, query: &str, body: &str) -> Answer {
        self.im.post(query, body).await
    }

    pub async fn metrics(&self) -> Metrics {
        self.admin.metrics().await
    }

    pub async fn shutdown(mut self) {
        if let Some(gw) = self.gw.take() {
            gw.shutdown(Duration::from_secs(5)).await;
        }
    }
}
