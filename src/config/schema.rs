//! The YAML schema of `routes.yaml`, exactly as written by operators.
//!
//! Every struct denies unknown keys so that a typo is a config error rather
//! than a silently ignored setting. Values stay as written (strings with
//! `${VAR}` unexpanded, relative paths); `check.rs` turns this into the
//! resolved [`super::Config`].

use serde::Deserialize;
use std::collections::BTreeMap;

use crate::catalog::Kind;
use crate::config::{Backend, OnTimeout, Policy};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listeners: Vec<RawListener>,
    #[serde(default)]
    pub admin: Option<RawAdmin>,
    pub apps: Vec<RawApp>,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub defaults: RawDefaults,
    #[serde(default)]
    pub delivery: RawDelivery,
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: Option<String>,
    pub addr: String,
    pub tls: Option<RawListenerTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    pub cert: String,
    pub key: String,
    pub client_ca: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub addr: Option<String>,
    pub token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApp {
    pub sdkappid: u64,
    pub token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_body: Option<String>,
    pub header_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_connections: Option<usize>,
    pub sign_window: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    pub deadline: Option<String>,
    pub on_timeout: Option<OnTimeout>,
    pub strict_commands: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDelivery {
    pub outbox: Option<String>,
    pub max_attempts: Option<u32>,
    pub backoff: Option<String>,
    pub max_backoff: Option<String>,
    pub max_age: Option<String>,
    /// Extension: bound on notifications held for delivery (see README).
    pub max_pending: Option<usize>,
    /// Extension: where notifications are kept (`embedded` or `nats`).
    pub backend: Option<Backend>,
    pub nats: Option<RawNats>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNats {
    pub servers: Vec<String>,
    pub credentials: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub tls: Option<RawNatsTls>,
    pub stream: Option<String>,
    pub dead_stream: Option<String>,
    pub subject: Option<String>,
    pub consumer_prefix: Option<String>,
    pub replicas: Option<usize>,
    pub max_bytes: Option<String>,
    pub publish_timeout: Option<String>,
    pub ack_wait: Option<String>,
    pub duplicate_window: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNatsTls {
    pub ca: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub url: String,
    pub timeout: Option<String>,
    pub ca: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    #[serde(rename = "match")]
    pub pattern: String,
    pub sdkappid: Option<u64>,
    pub upstreams: Vec<String>,
    pub policy: Option<Policy>,
    pub deadline: Option<String>,
    pub on_timeout: Option<OnTimeout>,
    pub kind: Option<Kind>,
}
