//! The test kit: everything a test needs to drive callgate for real, on
//! 127.0.0.1 ephemeral ports, with certificates generated per test.
//!
//! - [`config`]: `routes.yaml` from a typed builder ([`Config`], [`Route`],
//!   [`Endpoint`], [`Listener`]).
//! - [`upstream`]: fake upstreams ([`Upstream`]): scripted, TLS, closing;
//!   each records what it got. [`reply`]: how they answer ([`Reply`]):
//!   fixed, slow, silent, failing, redirecting.
//! - [`gateway`]: a gateway in this process ([`Gateway`]) and a client
//!   acting as IM ([`Im`], [`Answer`]).
//! - [`process`]: the real binary, as a short command ([`exec`], [`Out`])
//!   or as `callgate run` ([`Binary`]).
//! - [`admin`]: the admin address ([`Admin`]): readiness, `/config`,
//!   `/reload`, `/metrics`.
//! - [`metrics`]: a parsed scrape ([`Metrics`]) and one series to look for
//!   ([`metric`], [`MetricMatch`]), now or eventually.
//! - [`tls`]: a development PKI per test ([`Pki`]) and TLS clients.
//! - [`nats`]: real NATS JetStream servers.
//!
//! Each test crate includes it with `mod support;` (a folder crate with
//! `#[path = "../support/mod.rs"] mod support;`) and `use support::*;`.
#![allow(dead_code, unused_imports, unused_macros)]

pub mod admin;
pub mod config;
pub mod gateway;
pub mod metrics;
pub mod nats;
pub mod process;
pub mod reply;
pub mod tls;
pub mod upstream;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use admin::{Admin, Page};
pub use config::{Config, Endpoint, Listener, Route};
pub use gateway::{Answer, Gateway, Im, callback_query, pooled_client, test_client};
pub use metrics::{
    MetricMatch, Metrics, Sample, deliveries, fallbacks, metric, requests, upstream_requests,
};
pub use process::{Binary, Out, arg, callgate, exec, exec_with, free_addr};
pub use reply::Reply;
pub use tls::{Pki, Proto};
pub use upstream::{Received, Upstream};

/// The app every default config has, without a token.
pub const APP: u64 = 1400000001;
/// The app tests configure with a token.
pub const SIGNED_APP: u64 = 1400000002;
/// IM's "allow" answer, and the gateway's default fallback.
pub const OK: &str = r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#;
/// The gateway's `on_timeout: deny` fallback.
pub const DENY: &str = r#"{"ActionStatus":"OK","ErrorInfo":"rejected by gateway","ErrorCode":1}"#;

/// A catalog-valid decision body.
pub const GROUP_SEND: &str = r#"{"CallbackCommand":"Group.CallbackBeforeSendMsg","GroupId":"@TGS#2J4SZEAEL","Type":"Public","From_Account":"alice","Operator_Account":"alice","Random":123456,"OnlineOnlyFlag":0,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}],"EventTime":1670574414123}"#;
/// A catalog-valid notification body.
pub const MEMBER_JOIN: &str = r#"{"CallbackCommand":"Group.CallbackAfterNewMemberJoin","GroupId":"@TGS#2J4SZEAEL","Type":"Public","JoinType":"Apply","Operator_Account":"alice","NewMemberList":[{"Member_Account":"bob"}],"EventTime":"1670574414123"}"#;

/// How often the eventually-asserts look again.
pub const POLL: Duration = Duration::from_millis(20);

/// The sample body of `command` from `tests/fixtures/callbacks/`.
pub fn fixture(command: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/callbacks/{command}.json"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every command of the catalog, with its kind.
pub fn catalog() -> impl Iterator<Item = (&'static str, Kind)> {
    callgate::catalog::COMMANDS.iter().map(|c| (c.name, c.kind))
}
pub use callgate::catalog::Kind;

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The `Sign` IM sends for `token` at `request_time`.
pub fn sign(token: &str, request_time: &str) -> String {
    callgate::validate::expected_sign(token, request_time)
}

/// The query of a callback of `app` for `command`, signed with `sign` at
/// `request_time`.
pub fn signed_query(app: u64, command: &str, request_time: u64, sign: &str) -> String {
    format!("SdkAppid={app}&CallbackCommand={command}&RequestTime={request_time}&Sign={sign}")
}

/// [`signed_query`] signed with `token` now; and the `Sign`.
pub fn signed_now(app: u64, command: &str, token: &str) -> (String, String) {
    let time = now();
    let sign = sign(token, &time.to_string());
    (signed_query(app, command, time, &sign), sign)
}

/// How many serving threads the gateway runs (one upstream pool each).
pub fn serving_threads() -> usize {
    callgate::runtime::count()
}

/// A closed port on 127.0.0.1: connecting to it is refused.
pub fn closed_port() -> std::net::SocketAddr {
    free_addr()
}

/// Polls `cond` (an expression; it may `.await`) every [`POLL`] (or
/// `every` that) until it holds; after `within`, fails with the message.
///
/// ```ignore
/// assert_eventually!(up.count() >= 2, secs(5), "only {} requests", up.count());
/// assert_eventually!(delivered(&up), secs(30), every ms(200), "lost some");
/// ```
macro_rules! assert_eventually {
    ($cond:expr, $within:expr, every $poll:expr, $($msg:tt)+) => {{
        let within: std::time::Duration = $within;
        let deadline = tokio::time::Instant::now() + within;
        while !$cond {
            assert!(tokio::time::Instant::now() < deadline, $($msg)+);
            tokio::time::sleep($poll).await;
        }
    }};
    ($cond:expr, $within:expr, $($msg:tt)+) => {
        $crate::support::assert_eventually!(
            $cond,
            $within,
            every $crate::support::POLL,
            $($msg)+
        )
    };
    ($cond:expr, $within:expr) => {
        $crate::support::assert_eventually!(
            $cond,
            $within,
            "not within {:?}: {}",
            $within,
            stringify!($cond)
        )
    };
}
pub(crate) use assert_eventually;

/// Awaits `f` and measures how long it took.
pub async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let started = std::time::Instant::now();
    let value = f.await;
    (value, started.elapsed())
}

/// `Duration::from_secs`, short.
pub const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// `Duration::from_millis`, short.
pub const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
