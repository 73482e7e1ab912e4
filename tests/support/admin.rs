//! A client of the admin address: health, readiness, `/metrics`,
//! `/config` and `POST /reload`.

use std::net::SocketAddr;
use std::time::Duration;

use super::Metrics;

/// What an admin endpoint answered.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub text: String,
}

impl Page {
    /// The header's value, or "" when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {}", self.text))
    }
}

/// A client of one admin address.
#[derive(Clone, Debug)]
pub struct Admin {
    pub addr: SocketAddr,
    http: reqwest::Client,
}

impl Admin {
    pub fn new(addr: SocketAddr) -> Self {
        // Not pooled, like IM's client: a fresh connection per request.
        let http = super::test_client();
        Admin { addr, http }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Any method on any path; panics when no answer comes.
    pub async fn request(&self, method: reqwest::Method, path: &str) -> Page {
        let r = self
            .http
            .request(method.clone(), self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        Page {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            text: r.text().await.unwrap(),
        }
    }

    pub async fn get(&self, path: &str) -> Page {
        self.request(reqwest::Method::GET, path).await
    }

    /// `POST /reload`.
    pub async fn reload(&self) -> Page {
        self.request(reqwest::Method::POST, "/reload").await
    }

    pub async fn metrics(&self) -> Metrics {
        Metrics::parse(self.get("/metrics").await.text)
    }

    /// `/config`, as JSON.
    pub async fn config(&self) -> serde_json::Value {
        self.get("/config").await.json()
    }

    /// The generation `/config` reports.
    pub async fn generation(&self) -> u64 {
        self.config().await["generation"].as_u64().unwrap()
    }

    /// The status of `/readyz`; 0 when nothing answers (yet).
    pub async fn readyz(&self) -> u16 {
        match self.http.get(self.url("/readyz")).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// Waits (bounded by `within`) until `/readyz` answers 200.
    pub async fn wait_ready(&self, within: Duration) {
        super::assert_eventually!(
            self.readyz().await == 200,
            within,
            "the gateway never became ready"
        );
    }
}
