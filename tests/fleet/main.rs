//! The `nats` delivery backend on real NATS JetStream servers: one node,
//! two gateways sharing a stream, a gateway killed mid-load, a
//! three-node cluster losing a node, NATS stopped and restarted.

#[path = "../support/mod.rs"]
mod support;

mod cluster;
mod gateways;
mod node;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;

const CMD: &str = "Group.CallbackAfterNewMemberJoin";

/// A catalog-valid notification, unique per `n`.
fn member_join(n: usize) -> String {
    MEMBER_JOIN.replace("\"bob\"", &format!("\"bob-{n}\""))
}

/// The nats backend on `servers` (`max_attempts` each), the upstreams
/// `ups`, and one catch-all route to all of them.
fn on_nats(
    servers: &[String],
    max_attempts: u32,
    replicas: usize,
    ups: &[(&str, &Upstream)],
) -> Config {
    let names: Vec<&str> = ups.iter().map(|(name, _)| *name).collect();
    let mut config = Config::new()
        .nats(servers, replicas)
        .delivery("max_attempts", max_attempts)
        .route(Route::all(&names));
    for (name, up) in ups {
        config = config.upstream(name, *up);
    }
    config
}

/// The three-node cluster tests run one at a time: each starts three NATS
/// servers and a load, and with both at once on a 2-core machine the
/// elections after a node is lost can take longer than their bounds allow
/// (seen once in CI: no acknowledgement for 45 s after the kill).
static CLUSTERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `callgate outbox ARGS -c CONFIG`; returns (exit code, stdout+stderr).
async fn outbox_cli(config: &Path, args: &[&str]) -> (i32, String) {
    let out = exec(&[&["outbox"], args, &["-c", arg(config)]].concat()).await;
    let text = format!("{}{}", out.stdout, out.stderr);
    (out.code().unwrap_or(-1), text)
}

/// Counts of each body an upstream received.
fn tally(up: &Upstream) -> HashMap<Vec<u8>, usize> {
    let mut seen = HashMap::new();
    for r in up.received() {
        *seen.entry(r.body.to_vec()).or_insert(0) += 1;
    }
    seen
}

/// Bodies acknowledged with 200, shared by a load and the test.
type Acked = Arc<Mutex<Vec<String>>>;

fn acked() -> Acked {
    Arc::new(Mutex::new(Vec::new()))
}

/// The gateways a load sends to, in turn; a test may change them while
/// the load runs.
type Targets = Arc<Mutex<Vec<SocketAddr>>>;

fn targets(addrs: &[SocketAddr]) -> Targets {
    Arc::new(Mutex::new(addrs.to_vec()))
}

/// Sends the distinct notifications `n`, `conc` at a time, the ith to the
/// ith of `targets` in turn, and pushes the bodies acknowledged with 200 to
/// `acked`. Every other answer (503, a dropped connection) is allowed: it
/// tells IM nothing was taken.
async fn load(targets: Targets, n: impl Into<std::ops::Range<usize>>, conc: usize, acked: Acked) {
    use futures_util::StreamExt;
    let http = test_client();
    futures_util::stream::iter(n.into())
        .for_each_concurrent(conc, |i| {
            let (http, acked) = (http.clone(), acked.clone());
            let url = {
                let t = targets.lock().unwrap();
                callback_url(t[i % t.len()])
            };
            async move {
                let body = member_join(i);
                let sent = http
                    .post(url)
                    .timeout(Duration::from_secs(5))
                    .body(body.clone())
                    .send()
                    .await;
                if let Ok(r) = sent
                    && r.status() == 200
                    && r.text().await.is_ok_and(|t| t == OK)
                {
                    acked.lock().unwrap().push(body);
                }
            }
        })
        .await;
}

/// Waits (bounded) until `acked` holds at least `n` bodies.
async fn wait_acked(acked: &Acked, n: usize, limit: Duration) {
    let count = || acked.lock().unwrap().len();
    assert_eventually!(
        count() >= n,
        limit,
        "stuck at {} acknowledged, waiting for {n}",
        count()
    );
}

/// Waits (bounded) until `up` has received every body of `acked`.
async fn assert_all_delivered(up: &Upstream, acked: &[String], limit: Duration) {
    let missing = || {
        let seen = tally(up);
        let missing: Vec<&String> = acked
            .iter()
            .filter(|b| !seen.contains_key(b.as_bytes()))
            .collect();
        missing
    };
    assert_eventually!(
        missing().is_empty(),
        limit,
        every Duration::from_millis(200),
        "{} of {} acknowledged notifications never delivered, e.g. {}",
        missing().len(),
        acked.len(),
        missing()[0]
    );
}

fn callback_url(addr: SocketAddr) -> String {
    format!("http://{addr}/im?SdkAppid={APP}&CallbackCommand={CMD}")
}

async fn jetstream(url: &str) -> async_nats::jetstream::Context {
    async_nats::jetstream::new(async_nats::connect(url).await.unwrap())
}
