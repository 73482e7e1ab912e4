//! Faults of the notification store that must not become outages (SPEC
//! 4.2): a full disk under the embedded outbox, a full JetStream stream,
//! an upstream answering 2xx with a huge body, and the outbox's file
//! permissions.
//!
//! The disk-full test mounts a real 1 MiB tmpfs (root only); where
//! mounting is not permitted it says so on stderr and skips.

mod support;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::nats::NatsNode;
use support::{APP, MEMBER_JOIN, Reply, Upstream, test_client};

const CMD: &str = "Group.CallbackAfterNewMemberJoin";

// ------------------------------------------------------------ scaffolding

/// A gateway in this process on ephemeral ports, its config in a
/// temporary folder (the outbox too, unless the config names one).
struct Gw {
    gw: Option<callgate::Gateway>,
    /// Holds the config (and the default outbox) until the end.
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Gw {
    async fn start(rest: &str) -> Gw {
        let dir = tempfile::tempdir().expect("temporary folder");
        let yaml = format!(
            "listeners:\n  - addr: \"127.0.0.1:0\"\nadmin:\n  addr: \"127.0.0.1:0\"\napps:\n  - sdkappid: {APP}\n{rest}"
        );
        let path = dir.path().join("routes.yaml");
        std::fs::write(&path, yaml).expect("config written");
        let config = callgate::Config::load(&path).unwrap_or_else(|e| panic!("config: {e}"));
        let gw = callgate::Gateway::start(config)
            .await
            .unwrap_or_else(|e| panic!("gateway start: {e}"));
        Gw {
            gw: Some(gw),
            _dir: dir,
            http: test_client(),
        }
    }

    fn gw(&self) -> &callgate::Gateway {
        self.gw.as_ref().expect("running")
    }

    /// Posts a notification; returns the status (0: no answer at all).
    async fn notify(&self, body: &str) -> u16 {
        let url = format!(
            "http://{}/im?SdkAppid={APP}&CallbackCommand={CMD}&contenttype=json&ClientIP=1.2.3.4&OptPlatform=RESTAPI",
            self.gw().listener_addrs()[0]
        );
        match self.http.post(url).body(body.to_owned()).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    async fn admin_get(&self, path: &str) -> (u16, String) {
        let url = format!("http://{}{path}", self.gw().admin_addr());
        match self.http.get(url).send().await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(e) => panic!("admin {path}: {e}"),
        }
    }

    async fn readyz(&self) -> u16 {
        self.admin_get("/readyz").await.0
    }

    /// One series of `/metrics` (`name` or `name{labels}`).
    async fn metric(&self, series: &str) -> Option<f64> {
        let text = self.admin_get("/metrics").await.1;
        text.lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
    }

    /// Polls `/readyz` until it answers `status`; how long it took.
    async fn wait_readyz(&self, status: u16, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if self.readyz().await == status {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "/readyz did not answer {status} within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_metric(&self, series: &str, want: f64, limit: Duration) {
        let started = Instant::now();
        loop {
            let got = self.metric(series).await;
            if got == Some(want) {
                return;
            }
            assert!(
                started.elapsed() < limit,
                "{series} is {got:?}, not {want}, after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(mut self) {
        if let Some(gw) = self.gw.take() {
            let done =
                tokio::time::timeout(Duration::from_secs(15), gw.shutdown(Duration::from_secs(5)));
            done.await.expect("shutdown hung");
        }
    }
}

/// A catalog-valid notification of about `size` bytes, told apart by `n`.
fn notification(n: usize, size: usize) -> String {
    let mut members = vec![format!(r#"{{"Member_Account":"n{n}"}}"#)];
    let mut len = MEMBER_JOIN.len();
    let mut i = 0;
    while len < size {
        let m = format!(r#"{{"Member_Account":"n{n}-member-{i:04}"}}"#);
        len += m.len() + 1;
        members.push(m);
        i += 1;
    }
    MEMBER_JOIN.replace(
        r#"[{"Member_Account":"bob"}]"#,
        &format!("[{}]", members.join(",")),
    )
}

/// The `n` of a body made by [`notification`].
fn number_of(body: &[u8]) -> Option<usize> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v["NewMemberList"][0]["Member_Account"]
        .as_str()?
        .strip_prefix('n')?
        .parse()
        .ok()
}

/// An upstream answering 503 until `up` is set, then 200.
async fn down_until(up: &Arc<AtomicBool>) -> Upstream {
    let up = up.clone();
    Upstream::scripted(move |_| {
        if up.load(Ordering::SeqCst) {
            Reply::ok()
        } else {
            Reply::status(503)
        }
    })
    .await
}

/// Waits until the upstream received every notification in `sent`.
async fn wait_all_received(upstream: &Upstream, sent: &HashSet<usize>, limit: Duration) {
    let started = Instant::now();
    loop {
        let got: HashSet<usize> = upstream
            .received()
            .iter()
            .filter_map(|r| number_of(&r.body))
            .collect();
        let missing: Vec<&usize> = sent.difference(&got).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "{} acknowledged notifications never delivered, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn routes(upstreams: &str, url: &str) -> String {
    format!(
        "upstreams:\n  {upstreams}:\n    url: \"{url}\"\nroutes:\n  - match: \"*\"\n    upstreams: [{upstreams}]\n"
    )
}

/// A tmpfs mounted on a temporary folder, unmounted on drop.
struct Tmpfs {
    dir: Option<tempfile::TempDir>,
}

impl Tmpfs {
    /// None (said loudly) where this process may not mount.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("temporary folder");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir: Some(dir) }),
            Ok(o) => {
                eprintln!(
                    "\n*** SKIPPED: cannot mount a tmpfs here ({}): this test needs root and mount permission ***\n",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("\n*** SKIPPED: cannot run mount ({e}) ***\n");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.as_ref().expect("mounted").path()
    }

    fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.path())
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "remount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            let plain = Command::new("umount").arg(&path).status();
            if !plain.is_ok_and(|s| s.success()) {
                // Still busy (a test failed with the gateway running):
                // detach it so nothing stays mounted.
                let _ = Command::new("umount").arg("-l").arg(&path).status();
            }
            drop(dir);
        }
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

// ------------------------------------------------------------------ tests

/// A full disk: 503 and not ready while it is full; within 5 s of the disk
/// growing, acknowledged and stored again and ready, with no restart; and
/// every notification that got 200, before or after, is delivered.
#[tokio::test]
async fn a_full_disk_refuses_then_recovers_without_a_restart() {
    let Some(disk) = Tmpfs::mount("1m") else {
        return;
    };
    let outbox: PathBuf = disk.path().join("outbox");
    let up = Arc::new(AtomicBool::new(false));
    let upstream = down_until(&up).await;
    let gw = Gw::start(&format!(
        "delivery:\n  outbox: \"{}\"\n  max_attempts: 100000\n  backoff: 100ms\n  max_backoff: 500ms\n{}",
        outbox.display(),
        routes("down", &upstream.url())
    ))
    .await;
    gw.wait_readyz(200, Duration::from_secs(5)).await;
    assert_eq!(
        gw.metric("callgate_outbox_writable").await,
        Some(1.0),
        "the writable gauge"
    );

    // Fill the disk: ~2 KiB notifications until the outbox refuses.
    let mut acknowledged = HashSet::new();
    let mut n = 0;
    let mut refused = 0;
    while refused == 0 {
        n += 1;
        assert!(n < 2000, "1 MiB never filled up");
        match gw.notify(&notification(n, 2048)).await {
            200 => {
                acknowledged.insert(n);
            }
            503 => refused += 1,
            other => panic!("notification {n}: status {other}"),
        }
    }
    let filled_at = n;
    // Full: refused, and not ready, for as long as it stays full.
    let unready = gw.wait_readyz(503, Duration::from_secs(2)).await;
    gw.wait_metric("callgate_outbox_writable", 0.0, Duration::from_secs(3))
        .await;
    let full_until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < full_until {
        n += 1;
        match gw.notify(&notification(n, 2048)).await {
            200 => {
                acknowledged.insert(n);
            }
            503 => refused += 1,
            other => panic!("notification {n}: status {other}"),
        }
        assert_eq!(gw.readyz().await, 503, "ready while the disk is full");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dropped = gw
        .metric(r#"callgate_deliveries_total{upstream="down",result="dropped"}"#)
        .await
        .unwrap_or(0.0);
    assert!(
        dropped >= refused as f64,
        "{dropped} dropped, {refused} refused"
    );

    // The disk grows: ready again within 5 s, no restart.
    disk.resize("64m");
    let grown = Instant::now();
    gw.wait_readyz(200, Duration::from_secs(5)).await;
    let recovered = grown.elapsed();
    let mut after = 0;
    for _ in 0..50 {
        n += 1;
        let status = gw.notify(&notification(n, 2048)).await;
        assert_eq!(status, 200, "notification {n} after the disk grew");
        acknowledged.insert(n);
        after += 1;
    }
    gw.wait_metric("callgate_outbox_writable", 1.0, Duration::from_secs(3))
        .await;
    eprintln!(
        "disk full after {filled_at} notifications ({} acknowledged before), not ready {unready:?} after the first 503, {refused} refused; ready {recovered:?} after the remount; {after} acknowledged after",
        acknowledged.len() - after
    );

    // The upstream comes up: every acknowledged notification arrives.
    up.store(true, Ordering::SeqCst);
    wait_all_received(&upstream, &acknowledged, Duration::from_secs(60)).await;
    gw.wait_metric("callgate_outbox_pending", 0.0, Duration::from_secs(10))
        .await;
    gw.stop().await;
    // The re-opened file agrees with what was delivered: nothing left in
    // it (no refused event, no delivery the scheduler finished).
    let store = callgate::deliver::embedded::Store::open(&outbox).expect("outbox opens");
    let (events, pending, dead) = store.counts().expect("counts");
    assert_eq!((events, pending, dead), (0, 0, 0), "left in the outbox");
    drop(store);
    drop(disk);
}

/// A full JetStream stream (`max_bytes`, discard new): 503 and not ready
/// while it refuses; ready and storing again once deliveries make room.
#[tokio::test]
async fn a_full_stream_turns_the_gateway_unready_until_it_has_room() {
    let nats = NatsNode::start();
    let up = Arc::new(AtomicBool::new(false));
    let upstream = down_until(&up).await;
    let gw = Gw::start(&format!(
        "delivery:\n  backend: nats\n  max_attempts: 100000\n  backoff: 50ms\n  max_backoff: 200ms\n  nats:\n    servers: [\"{}\"]\n    max_bytes: 64KiB\n    ack_wait: 2s\n    publish_timeout: 1500ms\n{}",
        nats.url(),
        routes("down", &upstream.url())
    ))
    .await;
    gw.wait_readyz(200, Duration::from_secs(10)).await;

    let mut acknowledged = HashSet::new();
    let mut n = 0;
    loop {
        n += 1;
        assert!(n < 500, "64 KiB never filled up");
        match gw.notify(&notification(n, 2048)).await {
            200 => {
                acknowledged.insert(n);
            }
            503 => break,
            other => panic!("notification {n}: status {other}"),
        }
    }
    gw.wait_readyz(503, Duration::from_secs(3)).await;
    gw.wait_metric("callgate_outbox_writable", 0.0, Duration::from_secs(3))
        .await;
    // Still full a while later: still unready.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(gw.readyz().await, 503, "ready while the stream is full");

    // Deliveries make room.
    up.store(true, Ordering::SeqCst);
    let room = Instant::now();
    gw.wait_readyz(200, Duration::from_secs(10)).await;
    eprintln!(
        "stream full after {} acknowledged; ready {:?} after the upstream came up",
        acknowledged.len(),
        room.elapsed()
    );
    for _ in 0..5 {
        n += 1;
        assert_eq!(gw.notify(&notification(n, 2048)).await, 200);
        acknowledged.insert(n);
    }
    wait_all_received(&upstream, &acknowledged, Duration::from_secs(30)).await;
    gw.stop().await;
}

/// Any 2xx is a delivery, whatever its body: 200 with a 1 MiB body is
/// delivered once, never retried.
#[tokio::test]
async fn a_2xx_with_a_huge_body_is_delivered_once() {
    let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(1024 * 1024));
    let upstream = Upstream::start(Reply::json(&huge)).await;
    let gw = Gw::start(&format!(
        "delivery:\n  max_attempts: 3\n  backoff: 50ms\n  max_backoff: 100ms\n{}",
        routes("chatty", &upstream.url())
    ))
    .await;
    for n in 1..=3 {
        assert_eq!(gw.notify(&notification(n, 200)).await, 200);
    }
    gw.wait_metric(
        r#"callgate_deliveries_total{upstream="chatty",result="delivered"}"#,
        3.0,
        Duration::from_secs(10),
    )
    .await;
    // Long enough for retries to show if any were scheduled.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(upstream.count(), 3, "each delivered exactly once");
    for result in ["retried", "dead"] {
        let series = format!(r#"callgate_deliveries_total{{upstream="chatty",result="{result}"}}"#);
        assert_eq!(gw.metric(&series).await.unwrap_or(0.0), 0.0, "{result}");
    }
    // A small answer after it still works (the big one's connection was
    // not put back half-read).
    assert_eq!(gw.notify(&notification(4, 200)).await, 200);
    gw.wait_metric(
        r#"callgate_deliveries_total{upstream="chatty",result="delivered"}"#,
        4.0,
        Duration::from_secs(10),
    )
    .await;
    gw.stop().await;
}

/// The outbox folder is 0700 and its file 0600, whatever the umask; an
/// existing looser folder or file is tightened.
#[tokio::test]
async fn the_outbox_is_private() {
    let root = tempfile::tempdir().expect("temporary folder");
    let fresh = root.path().join("fresh");
    let gw = Gw::start(&format!(
        "delivery:\n  outbox: \"{}\"\n{}",
        fresh.display(),
        routes("u", "http://127.0.0.1:9/im")
    ))
    .await;
    assert_eq!(mode(&fresh), 0o700, "a new outbox folder");
    assert_eq!(mode(&fresh.join("outbox.redb")), 0o600, "a new outbox file");
    gw.stop().await;

    // As an older version left it: world-readable.
    std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(
        fresh.join("outbox.redb"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let gw = Gw::start(&format!(
        "delivery:\n  outbox: \"{}\"\n{}",
        fresh.display(),
        routes("u", "http://127.0.0.1:9/im")
    ))
    .await;
    assert_eq!(mode(&fresh), 0o700, "an existing outbox folder");
    assert_eq!(
        mode(&fresh.join("outbox.redb")),
        0o600,
        "an existing outbox file"
    );
    gw.stop().await;
}
