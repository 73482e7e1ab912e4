//! The durable outbox (SPEC 4.2 notifications, SPEC 3 `delivery`):
//! acknowledged notifications survive an upstream outage, a graceful
//! restart and a SIGKILL; dead letters are listed, replayed and purged with
//! `callgate outbox`, which refuses to touch the outbox of a running
//! gateway; a full outbox answers 503; a reload dead-letters deliveries to
//! removed upstreams; the outbox metrics.

#[path = "../support/mod.rs"]
mod support;

mod backlog;
mod dead_letters;
mod restarts;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::*;

const CMD: &str = "Group.CallbackAfterNewMemberJoin";
/// Grace given to in-process gateways at shutdown.
const GRACE: Duration = Duration::from_secs(5);

/// A catalog-valid notification body, told apart by its `GroupId`.
fn body(n: usize) -> String {
    MEMBER_JOIN.replace("@TGS#2J4SZEAEL", &format!("@TGS#n{n}"))
}

/// The `n` of a body made by [`body`].
fn group_of(body: &[u8]) -> Option<usize> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v["GroupId"].as_str()?.strip_prefix("@TGS#n")?.parse().ok()
}

fn request_id(r: &Received) -> String {
    r.header("x-request-id").to_owned()
}

/// An upstream URL on `addr`, where nothing may listen yet.
fn url_of(addr: std::net::SocketAddr) -> String {
    format!("http://{addr}/im/callback")
}

/// `delivery` (the delivery settings) with the upstreams `(name, url)`,
/// and one catch-all route to all of them.
fn config(delivery: Config, upstreams: &[(&str, String)]) -> Config {
    let names: Vec<&str> = upstreams.iter().map(|(n, _)| *n).collect();
    let mut config = delivery.route(Route::all(&names));
    for (name, url) in upstreams {
        config = config.upstream(name, url.as_str());
    }
    config
}

/// Retries every `backoff`, up to `max_backoff`, `max_attempts` times.
fn retries(max_attempts: u32, backoff: &str, max_backoff: &str) -> Config {
    Config::new().retries(max_attempts, backoff, max_backoff)
}

/// `callgate_outbox_pending`.
fn pending() -> MetricMatch {
    metric("callgate_outbox_pending")
}

/// `callgate_outbox_dead_letters`.
fn dead_letters() -> MetricMatch {
    metric("callgate_outbox_dead_letters")
}

/// Shuts an in-process gateway down (bounded) and keeps its folder, so a
/// later gateway can start on the same config and outbox.
async fn stop(mut g: Gateway) -> tempfile::TempDir {
    let gw = g.gw.take().expect("running");
    let started = Instant::now();
    tokio::time::timeout(GRACE + Duration::from_secs(5), gw.shutdown(GRACE))
        .await
        .expect("shutdown hung");
    let took = started.elapsed();
    assert!(took < GRACE, "shutdown used the whole grace ({took:?})");
    g.dir
}

fn outbox_dir(dir: &Path) -> PathBuf {
    dir.join("data").join("outbox")
}

/// `callgate outbox ARGS...`, bounded in time.
async fn outbox(args: &[&str]) -> Out {
    exec(&[&["outbox"], args].concat()).await
}

/// `callgate outbox -c CONFIG stats`, which must succeed.
async fn outbox_stats(config: &Path) -> Out {
    outbox(&["-c", arg(config), "stats"]).await.ok()
}

/// What `callgate outbox` prints.
trait Listing {
    /// A count printed by `outbox stats`, e.g. `pending deliveries: 3`.
    fn stat(&self, label: &str) -> u64;
    /// The rows of `outbox list`: (event, upstream, attempts, whole line).
    fn rows(&self) -> Vec<(u64, String, u32, String)>;
    /// The counts of `outbox stats`: (events, pending deliveries, dead letters).
    fn counts(&self) -> (u64, u64, u64) {
        let events = self.stat("events");
        (
            events,
            self.stat("pending deliveries"),
            self.stat("dead letters"),
        )
    }
}

impl Listing for Out {
    fn stat(&self, label: &str) -> u64 {
        self.stdout
            .lines()
            .find_map(|l| {
                l.strip_prefix(label)?
                    .strip_prefix(": ")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no {label:?} in:\n{}", self.stdout))
    }

    fn rows(&self) -> Vec<(u64, String, u32, String)> {
        self.stdout
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let id = w.next()?.parse().ok()?;
                let upstream = w.next()?.to_owned();
                let attempts = w.next()?.parse().ok()?;
                Some((id, upstream, attempts, l.to_owned()))
            })
            .collect()
    }
}
