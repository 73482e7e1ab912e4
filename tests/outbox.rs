//! The durable outbox (SPEC 4.2 notifications, SPEC 3 `delivery`):
//! acknowledged notifications survive an upstream outage, a graceful
//! restart and a SIGKILL; dead letters are listed, replayed and purged with
//! `callgate outbox`, which refuses to touch the outbox of a running
//! gateway; a full outbox answers 503; a reload dead-letters deliveries to
//! removed upstreams; the outbox metrics.

#[path = "support_old/mod.rs"]
mod support;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_callgate");
const CMD: &str = "Group.CallbackAfterNewMemberJoin";
/// Grace given to in-process gateways at shutdown.
const GRACE: Duration = Duration::from_secs(5);
/// Bounds every wait for a `callgate outbox` command.
const COMMAND_LIMIT: Duration = Duration::from_secs(20);

// ------------------------------------------------------------- helpers

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
    r.headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

fn url_of(addr: SocketAddr) -> String {
    format!("http://{addr}/im/callback")
}

/// `delivery:` settings, the upstreams `(name, url)`, and one catch-all
/// route to all of them.
fn config(delivery: &str, upstreams: &[(&str, String)]) -> String {
    let mut s = format!("delivery:\n{delivery}upstreams:\n");
    for (name, url) in upstreams {
        s.push_str(&format!("  {name}:\n    url: \"{url}\"\n"));
    }
    let names: Vec<&str> = upstreams.iter().map(|(n, _)| *n).collect();
    s.push_str(&format!(
        "routes:\n  - match: \"*\"\n    upstreams: [{}]\n",
        names.join(", ")
    ));
    s
}

/// An upstream answering 503 until `flag` is set, then 200.
async fn down_until(flag: &Arc<AtomicBool>) -> Upstream {
    let flag = flag.clone();
    Upstream::scripted(move |_| {
        if flag.load(Ordering::SeqCst) {
            Reply::ok()
        } else {
            Reply::status(503)
        }
    })
    .await
}

fn delivered(upstream: &str) -> String {
    format!(r#"callgate_deliveries_total{{upstream="{upstream}",result="delivered"}}"#)
}

fn result_of(upstream: &str, result: &str) -> String {
    format!(r#"callgate_deliveries_total{{upstream="{upstream}",result="{result}"}}"#)
}

/// Polls `/metrics` until `series` satisfies `ok`; returns that text.
async fn wait_metric(
    gw: &Gateway,
    series: &str,
    ok: impl Fn(f64) -> bool,
    limit: Duration,
) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let m = gw.metrics().await;
        if metric(&m, series).is_some_and(&ok) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached the expected value within {limit:?}:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls `cond` every 25 ms; panics with `what` after `limit`.
async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
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

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[derive(Debug)]
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "{self:#?}");
        self
    }

    /// A count printed by `outbox stats`, e.g. `pending deliveries: 3`.
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

    /// The rows of `outbox list`: (event, upstream, attempts, whole line).
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

/// `callgate outbox ARGS...`, bounded in time.
async fn outbox(args: &[&str]) -> Out {
    let mut c = tokio::process::Command::new(BIN);
    c.arg("outbox")
        .args(args)
        .env_remove("CALLGATE_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(COMMAND_LIMIT, c.output())
        .await
        .unwrap_or_else(|_| panic!("callgate outbox {args:?} did not exit in time"))
        .unwrap();
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// `callgate run -c FILE` as a child process, its log in a file.
struct Proc {
    child: tokio::process::Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(config: &Path, log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).unwrap();
        let child = tokio::process::Command::new(BIN)
            .args(["run", "-c"])
            .arg(config)
            .env_remove("CALLGATE_CONFIG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Proc { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `/readyz` until it answers 200 (at most 15 s).
    async fn wait_ready(&mut self, admin: SocketAddr) {
        let http = client();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("callgate run exited early ({status}):\n{}", self.log());
            }
            if let Ok(r) = http.get(format!("http://{admin}/readyz")).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/readyz never answered 200:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().expect("still running").to_string();
        let status = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill {name} {pid}");
    }

    async fn exit_within(&mut self, limit: Duration) -> std::process::ExitStatus {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!("callgate did not exit within {limit:?}:\n{}", self.log()),
        }
    }
}

// --------------------------------------------------------------- tests

/// 1. While the upstream fails, notifications are acknowledged at once;
///    once it recovers, every one is delivered, each exactly once.
#[tokio::test]
async fn acknowledged_then_delivered_after_the_upstream_recovers() {
    const N: usize = 10;
    const FAILURES: usize = 3 * N;
    let up = Upstream::scripted(|n| {
        if n < FAILURES {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    })
    .await;
    let gw = Gateway::start(&config(
        "  backoff: 20ms\n  max_backoff: 200ms\n  max_attempts: 50\n",
        &[("legacy", up.url())],
    ))
    .await;
    let mut sent = HashMap::new();
    for n in 0..N {
        let started = Instant::now();
        let a = gw.callback(CMD, &body(n)).await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "not acknowledged at once: {:?}",
            started.elapsed()
        );
        assert_eq!(
            (a.status, a.outcome.as_str(), a.text()),
            (200, "queued", OK)
        );
        sent.insert(a.request_id, n);
    }
    let got = up.wait_for(FAILURES + N, Duration::from_secs(15)).await;
    // The requests after the failures are the successful ones: every
    // notification once, with its own body.
    let mut ok: Vec<(String, Option<usize>)> = got[FAILURES..]
        .iter()
        .map(|r| (request_id(r), group_of(&r.body)))
        .collect();
    ok.sort();
    let mut expected: Vec<(String, Option<usize>)> =
        sent.iter().map(|(id, n)| (id.clone(), Some(*n))).collect();
    expected.sort();
    assert_eq!(ok, expected);
    let m = wait_metric(
        &gw,
        &delivered("legacy"),
        |v| v == N as f64,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        metric(&m, &result_of("legacy", "retried")),
        Some(FAILURES as f64),
        "{m}"
    );
    assert_eq!(metric(&m, "callgate_outbox_pending"), Some(0.0), "{m}");
    // Nothing more comes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(up.count(), FAILURES + N);
    stop(gw).await;
}

/// 2. Notifications queued while the upstream is down survive a graceful
///    restart of the gateway and are delivered by the next run.
#[tokio::test]
async fn delivered_after_a_graceful_restart() {
    const N: usize = 20;
    let addr = free_addr();
    let yaml = config(
        "  backoff: 200ms\n  max_backoff: 1s\n  max_attempts: 1000\n",
        &[("legacy", url_of(addr))],
    );
    let gw = Gateway::start(&yaml).await;
    let mut sent = HashMap::new();
    for n in 0..N {
        let a = gw.callback(CMD, &body(n)).await;
        assert_eq!((a.status, a.outcome.as_str()), (200, "queued"), "{a:?}");
        sent.insert(a.request_id, body(n));
    }
    // Every one was tried (and refused) at least once.
    let m = wait_metric(
        &gw,
        &result_of("legacy", "retried"),
        |v| v >= N as f64,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(metric(&m, "callgate_outbox_pending"), Some(N as f64), "{m}");
    let dir = stop(gw).await;

    let up = Upstream::serve(
        tokio::net::TcpListener::bind(addr).await.unwrap(),
        Arc::new(|_| Reply::ok()),
    );
    let gw = Gateway::start_in(dir, &yaml).await;
    wait_until(
        "every notification delivered after the restart",
        Duration::from_secs(10),
        || {
            let ids: HashSet<String> = up.received().iter().map(request_id).collect();
            sent.keys().all(|id| ids.contains(id))
        },
    )
    .await;
    wait_metric(
        &gw,
        "callgate_outbox_pending",
        |v| v == 0.0,
        Duration::from_secs(5),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = up.received();
    for r in &got {
        let id = request_id(r);
        let expected = sent
            .get(&id)
            .unwrap_or_else(|| panic!("unknown request id {id}"));
        assert_eq!(r.body, expected.as_bytes());
    }
    // Nothing was delivered before the restart, so nothing is repeated.
    assert_eq!(got.len(), N, "duplicates after a graceful restart");
    stop(gw).await;
}

/// 3. SIGKILL while notifications pour in: every notification that was
///    acknowledged is delivered by the next run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_notifications_survive_sigkill() {
    const SENDERS: usize = 8;
    const KILL_AFTER: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let (listen, admin, upstream) = (free_addr(), free_addr(), free_addr());
    let path = dir.path().join("routes.yaml");
    std::fs::write(
        &path,
        format!(
            "listeners:\n  - addr: \"{listen}\"\nadmin:\n  addr: \"{admin}\"\napps:\n  - sdkappid: {APP}\n{}",
            config(
                "  backoff: 50ms\n  max_backoff: 500ms\n  max_attempts: 1000\n",
                &[("legacy", url_of(upstream))]
            )
        ),
    )
    .unwrap();
    let mut first = Proc::spawn(&path, dir.path().join("first.log"));
    first.wait_ready(admin).await;

    let http = client();
    let next = Arc::new(AtomicUsize::new(0));
    let acks = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let unexpected = Arc::new(Mutex::new(Vec::new()));
    let url = format!("http://{listen}/im?SdkAppid={APP}&CallbackCommand={CMD}");
    let mut senders = Vec::new();
    for _ in 0..SENDERS {
        let (http, next, acks, acked, unexpected, url) = (
            http.clone(),
            next.clone(),
            acks.clone(),
            acked.clone(),
            unexpected.clone(),
            url.clone(),
        );
        senders.push(tokio::spawn(async move {
            for _ in 0..5_000 {
                let n = next.fetch_add(1, Ordering::SeqCst);
                match http.post(&url).body(body(n)).send().await {
                    // The answer's head is only sent after the durable
                    // commit: this is the acknowledgement.
                    Ok(r) if r.status() == 200 => {
                        let outcome = r.headers().get("x-callgate-outcome").cloned();
                        if outcome.as_ref().and_then(|v| v.to_str().ok()) == Some("queued") {
                            acked.lock().unwrap().insert(n);
                            acks.fetch_add(1, Ordering::SeqCst);
                        } else {
                            unexpected.lock().unwrap().push(format!("{n}: {outcome:?}"));
                        }
                    }
                    Ok(r) => unexpected
                        .lock()
                        .unwrap()
                        .push(format!("{n}: status {}", r.status())),
                    // The gateway was killed.
                    Err(_) => return,
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while acks.load(Ordering::SeqCst) < KILL_AFTER {
        assert!(
            Instant::now() < deadline,
            "only {} acknowledgements in 20 s:\n{}",
            acks.load(Ordering::SeqCst),
            first.log()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.signal("-KILL");
    let status = first.exit_within(Duration::from_secs(10)).await;
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    for s in senders {
        tokio::time::timeout(Duration::from_secs(15), s)
            .await
            .expect("a sender hung after the kill")
            .unwrap();
    }
    let sent = next.load(Ordering::SeqCst);
    let acked: HashSet<usize> = acked.lock().unwrap().clone();
    assert!(
        unexpected.lock().unwrap().is_empty(),
        "answers other than 200 queued: {:?}",
        unexpected.lock().unwrap()
    );

    // The upstream comes up; the gateway starts again on the same config.
    let up = Upstream::serve(
        tokio::net::TcpListener::bind(upstream).await.unwrap(),
        Arc::new(|_| Reply::ok()),
    );
    let mut second = Proc::spawn(&path, dir.path().join("second.log"));
    second.wait_ready(admin).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got: HashSet<usize> = up
            .received()
            .iter()
            .filter_map(|r| group_of(&r.body))
            .collect();
        let missing: Vec<usize> = acked.difference(&got).copied().collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} acknowledged notifications never arrived (e.g. {:?}):\n{}",
            missing.len(),
            &missing[..missing.len().min(10)],
            second.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the rest (stored but not acknowledged before the kill) drain.
    let http = client();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = http
            .get(format!("http://{admin}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metric(&m, "callgate_outbox_pending") == Some(0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "outbox never drained:\n{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = up.received();
    let mut per_body: HashMap<usize, usize> = HashMap::new();
    for r in &got {
        let n = group_of(&r.body).expect("a body we sent");
        *per_body.entry(n).or_default() += 1;
    }
    let duplicates = got.len() - per_body.len();
    let unacked_delivered = per_body.keys().filter(|n| !acked.contains(n)).count();
    println!(
        "crash test: sent {sent}, acknowledged {}, received {} requests for {} distinct \
         notifications ({unacked_delivered} of them not acknowledged before the kill), \
         {duplicates} duplicates",
        acked.len(),
        got.len(),
        per_body.len()
    );
    assert!(per_body.keys().all(|n| *n < sent));
    second.signal("-TERM");
    let status = second.exit_within(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{}", second.log());
    let stats = outbox(&["-c", s(&path), "stats"]).await.ok();
    assert_eq!(
        (stats.stat("pending deliveries"), stats.stat("dead letters")),
        (0, 0),
        "{}",
        stats.stdout
    );
}

/// 4. After `max_attempts`, a delivery is a dead letter: counted, listed
///    with its attempts and last error, replayed into a later run, or
///    purged.
#[tokio::test]
async fn dead_letters_are_listed_replayed_and_purged() {
    let delivery = "  backoff: 20ms\n  max_backoff: 50ms\n  max_attempts: 3\n";
    let bad = Upstream::start(Reply::status(500)).await;
    let gw = Gateway::start(&config(delivery, &[("legacy", bad.url())])).await;
    let answer = gw.callback(CMD, &body(1)).await;
    assert_eq!(answer.outcome, "queued");
    let m = wait_metric(
        &gw,
        &result_of("legacy", "dead"),
        |v| v == 1.0,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(metric(&m, "callgate_outbox_dead_letters"), Some(1.0), "{m}");
    assert_eq!(
        metric(&m, &result_of("legacy", "retried")),
        Some(2.0),
        "{m}"
    );
    assert_eq!(metric(&m, "callgate_outbox_pending"), Some(0.0), "{m}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(bad.count(), 3, "attempts after the dead letter");
    let cfg = gw.config_path();
    let dir = stop(gw).await;
    let folder = outbox_dir(dir.path());

    // Listed, by the folder or by the config naming it.
    for args in [
        ["--outbox", s(&folder), "list", "--dead"],
        ["-c", s(&cfg), "list", "--dead"],
    ] {
        let out = outbox(&args).await.ok();
        let rows = out.rows();
        assert_eq!(rows.len(), 1, "{}", out.stdout);
        let (_, upstream, attempts, line) = &rows[0];
        assert_eq!((upstream.as_str(), *attempts), ("legacy", 3), "{line}");
        for part in [answer.request_id.as_str(), CMD, "status 500"] {
            assert!(line.contains(part), "{part:?} missing from {line:?}");
        }
    }
    let out = outbox(&["-c", s(&cfg), "list"]).await.ok();
    assert!(out.rows().is_empty(), "{}", out.stdout);
    let stats = outbox(&["-c", s(&cfg), "stats"]).await.ok();
    assert_eq!(
        (
            stats.stat("events"),
            stats.stat("pending deliveries"),
            stats.stat("dead letters")
        ),
        (1, 0, 1),
        "{}",
        stats.stdout
    );
    assert!(stats.stdout.contains("  legacy: 1"), "{}", stats.stdout);

    // Replayed: back to pending, and delivered by the next run.
    let out = outbox(&["-c", s(&cfg), "replay", "--dead"]).await.ok();
    assert!(out.stdout.contains("1 dead letters moved back"), "{out:?}");
    let stats = outbox(&["-c", s(&cfg), "stats"]).await.ok();
    assert_eq!(
        (stats.stat("pending deliveries"), stats.stat("dead letters")),
        (1, 0),
        "{}",
        stats.stdout
    );
    let good = Upstream::start(Reply::ok()).await;
    let gw = Gateway::start_in(dir, &config(delivery, &[("legacy", good.url())])).await;
    let got = good.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(request_id(&got[0]), answer.request_id);
    assert_eq!(got[0].body, body(1).as_bytes());
    let m = wait_metric(
        &gw,
        &delivered("legacy"),
        |v| v == 1.0,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(metric(&m, "callgate_outbox_dead_letters"), Some(0.0), "{m}");
    let dir = stop(gw).await;
    let stats = outbox(&["-c", s(&cfg), "stats"]).await.ok();
    assert_eq!(
        (
            stats.stat("events"),
            stats.stat("pending deliveries"),
            stats.stat("dead letters")
        ),
        (0, 0, 0),
        "{}",
        stats.stdout
    );

    // Another dead letter, purged.
    let gw = Gateway::start_in(dir, &config(delivery, &[("legacy", bad.url())])).await;
    assert_eq!(gw.callback(CMD, &body(2)).await.outcome, "queued");
    wait_metric(
        &gw,
        "callgate_outbox_dead_letters",
        |v| v == 1.0,
        Duration::from_secs(5),
    )
    .await;
    let dir = stop(gw).await;
    let stats = outbox(&["-c", s(&cfg), "stats"]).await.ok();
    assert_eq!(
        (stats.stat("events"), stats.stat("dead letters")),
        (1, 1),
        "{}",
        stats.stdout
    );
    let out = outbox(&["--outbox", s(&folder), "purge", "--dead"])
        .await
        .ok();
    assert!(out.stdout.contains("1 dead letters deleted"), "{out:?}");
    let stats = outbox(&["-c", s(&cfg), "stats"]).await.ok();
    assert_eq!(
        (
            stats.stat("events"),
            stats.stat("pending deliveries"),
            stats.stat("dead letters")
        ),
        (0, 0, 0),
        "{}",
        stats.stdout
    );
    assert!(
        outbox(&["-c", s(&cfg), "list", "--dead"])
            .await
            .ok()
            .rows()
            .is_empty()
    );
    drop(dir);
}

/// 5. The outbox commands do not touch the outbox of a running gateway:
///    they fail at once, saying why.
#[tokio::test]
async fn outbox_commands_refuse_while_a_gateway_runs() {
    let up = Upstream::start(Reply::ok()).await;
    let gw = Gateway::start(&config("  backoff: 20ms\n", &[("legacy", up.url())])).await;
    assert_eq!(gw.callback(CMD, &body(1)).await.outcome, "queued");
    up.wait_for(1, Duration::from_secs(5)).await;
    let cfg = gw.config_path();
    let folder = outbox_dir(gw.dir.path());
    for args in [
        vec!["-c", s(&cfg), "stats"],
        vec!["--outbox", s(&folder), "list", "--dead"],
        vec!["-c", s(&cfg), "replay", "--dead"],
        vec!["-c", s(&cfg), "purge", "--dead"],
    ] {
        let started = Instant::now();
        let out = outbox(&args).await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{args:?} took {:?}",
            started.elapsed()
        );
        assert_eq!(out.code, Some(1), "{args:?}: {out:#?}");
        let msg = out.stderr.to_lowercase();
        assert!(
            msg.contains("running gateway") || msg.contains("lock") || msg.contains("in use"),
            "{args:?}: the message should say the outbox is in use: {out:#?}"
        );
    }
    // The gateway is unaffected.
    assert_eq!(gw.callback(CMD, &body(2)).await.outcome, "queued");
    up.wait_for(2, Duration::from_secs(5)).await;
    let _dir = stop(gw).await;
    let stats = outbox(&["-c", s(&cfg), "stats"]).await.ok();
    assert_eq!(stats.stat("pending deliveries"), 0, "{}", stats.stdout);
}

/// 6. A full outbox answers 503 `rejected`, counts the drop, and the
///    dropped notification is never delivered.
#[tokio::test]
async fn a_full_outbox_answers_503_and_drops_the_notification() {
    let hang = Upstream::start(Reply::Hang).await;
    let gw = Gateway::start(&format!(
        "delivery:\n  backoff: 3s\n  max_backoff: 3s\n  max_attempts: 1000\n  max_pending: 2\nupstreams:\n  hang:\n    url: \"{}\"\n    timeout: 200ms\nroutes:\n  - match: \"*\"\n    upstreams: [hang]\n",
        hang.url()
    ))
    .await;
    let mut kept = HashSet::new();
    for n in 0..2 {
        let a = gw.callback(CMD, &body(n)).await;
        assert_eq!((a.status, a.outcome.as_str()), (200, "queued"));
        kept.insert(a.request_id);
    }
    let full = gw.callback(CMD, &body(2)).await;
    full.assert_rejected(503, "full");
    assert!(!full.request_id.is_empty());
    let m = gw.metrics().await;
    assert_eq!(metric(&m, &result_of("hang", "dropped")), Some(1.0), "{m}");
    assert_eq!(metric(&m, "callgate_outbox_pending"), Some(2.0), "{m}");
    assert_eq!(
        metric(
            &m,
            &format!(r#"callgate_requests_total{{command="{CMD}",outcome="rejected"}}"#)
        ),
        Some(1.0),
        "{m}"
    );
    // Only the two taken ones are tried (and time out; their retries
    // come seconds later, after this test: the outbox below shows the
    // dropped one was never stored, so it can never be delivered).
    hang.wait_for(2, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for r in hang.received() {
        assert!(kept.contains(&request_id(&r)), "the dropped one arrived");
        assert_ne!(group_of(&r.body), Some(2));
    }
    let cfg = gw.config_path();
    let _dir = stop(gw).await;
    let stats = outbox(&["-c", s(&cfg), "stats"]).await.ok();
    assert_eq!(
        (stats.stat("events"), stats.stat("pending deliveries")),
        (2, 2),
        "{}",
        stats.stdout
    );
}

/// 7. A reload that removes an upstream dead-letters its pending
///    deliveries at once (no more attempts); the others carry on.
#[tokio::test]
async fn a_reload_removing_an_upstream_dead_letters_its_deliveries() {
    const N: usize = 3;
    let delivery = "  backoff: 100ms\n  max_backoff: 300ms\n  max_attempts: 1000\n";
    let gone = Upstream::start(Reply::status(503)).await;
    let healthy = Arc::new(AtomicBool::new(false));
    let kept = down_until(&healthy).await;
    let gw = Gateway::start(&config(
        delivery,
        &[("gone", gone.url()), ("kept", kept.url())],
    ))
    .await;
    let mut ids = HashSet::new();
    for n in 0..N {
        let a = gw.callback(CMD, &body(n)).await;
        assert_eq!(a.outcome, "queued");
        ids.insert(a.request_id);
    }
    // Both are being retried.
    gone.wait_for(2 * N, Duration::from_secs(5)).await;
    kept.wait_for(2 * N, Duration::from_secs(5)).await;

    let path = gw.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let prefix = &text[..text.find("delivery:").unwrap()];
    std::fs::write(
        &path,
        format!("{prefix}{}", config(delivery, &[("kept", kept.url())])),
    )
    .unwrap();
    gw.gw().reload("test").await.unwrap();
    let at_reload = gone.count();
    let m = wait_metric(
        &gw,
        &result_of("gone", "dead"),
        |v| v == N as f64,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        metric(&m, "callgate_outbox_dead_letters"),
        Some(N as f64),
        "{m}"
    );
    // Only attempts already in flight at the reload (one per delivery at
    // most) reached the removed upstream since.
    let after_reload = gone.count();
    assert!(
        after_reload <= at_reload + N,
        "{} attempts to the removed upstream after the reload",
        after_reload - at_reload
    );
    // The kept upstream's deliveries are still pending, and delivered when
    // it recovers, with a new notification after them.
    assert_eq!(metric(&m, "callgate_outbox_pending"), Some(N as f64), "{m}");
    healthy.store(true, Ordering::SeqCst);
    let a = gw.callback(CMD, &body(N)).await;
    assert_eq!(a.outcome, "queued");
    ids.insert(a.request_id.clone());
    let m = wait_metric(
        &gw,
        &delivered("kept"),
        |v| v == (N + 1) as f64,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(metric(&m, "callgate_outbox_pending"), Some(0.0), "{m}");
    let kept_ids: HashSet<String> = kept.received().iter().map(request_id).collect();
    assert_eq!(kept_ids, ids);
    // No attempt to the removed upstream since the reload.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        gone.count(),
        after_reload,
        "the removed upstream was retried"
    );
    assert!(
        gone.received()
            .iter()
            .all(|r| request_id(r) != a.request_id)
    );

    let _dir = stop(gw).await;
    let out = outbox(&["-c", s(&path), "list", "--dead"]).await.ok();
    let rows = out.rows();
    assert_eq!(rows.len(), N, "{}", out.stdout);
    for (_, upstream, _, line) in &rows {
        assert_eq!(upstream, "gone", "{line}");
        assert!(line.contains("upstream removed"), "{line}");
    }
    let out = outbox(&["-c", s(&path), "list"]).await.ok();
    assert!(out.rows().is_empty(), "{}", out.stdout);
}

/// 8. A notification to a healthy and a down upstream reaches the healthy
///    one once, and stays pending for the down one only.
#[tokio::test]
async fn one_upstream_down_does_not_repeat_deliveries_to_the_other() {
    let good = Upstream::start(Reply::ok()).await;
    let down = free_addr();
    let gw = Gateway::start(&config(
        "  backoff: 20ms\n  max_backoff: 100ms\n  max_attempts: 1000\n",
        &[("good", good.url()), ("down", url_of(down))],
    ))
    .await;
    let a = gw.callback(CMD, &body(7)).await;
    assert_eq!(a.outcome, "queued");
    let got = good.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(request_id(&got[0]), a.request_id);
    let m = wait_metric(
        &gw,
        &result_of("down", "retried"),
        |v| v >= 5.0,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(metric(&m, &delivered("good")), Some(1.0), "{m}");
    assert_eq!(metric(&m, "callgate_outbox_pending"), Some(1.0), "{m}");
    assert_eq!(good.count(), 1, "the healthy upstream got it again");
    let cfg = gw.config_path();
    let _dir = stop(gw).await;
    let out = outbox(&["-c", s(&cfg), "list"]).await.ok();
    let rows = out.rows();
    assert_eq!(rows.len(), 1, "{}", out.stdout);
    let (_, upstream, attempts, line) = &rows[0];
    assert_eq!(upstream, "down", "{line}");
    assert!(*attempts >= 5, "{line}");
    assert!(line.contains(&a.request_id), "{line}");
    let stats = outbox(&["-c", s(&cfg), "stats"]).await.ok();
    assert_eq!(
        (
            stats.stat("events"),
            stats.stat("pending deliveries"),
            stats.stat("dead letters")
        ),
        (1, 1, 0),
        "{}",
        stats.stdout
    );
    assert!(stats.stdout.contains("  down: 1"), "{}", stats.stdout);
    assert!(!stats.stdout.contains("  good:"), "{}", stats.stdout);
}

/// 9. `callgate_outbox_pending`, `callgate_outbox_oldest_pending_seconds`
///    and the `callgate_delivery_latency_seconds` histogram.
#[tokio::test]
async fn outbox_metrics_follow_the_backlog() {
    const N: usize = 3;
    let healthy = Arc::new(AtomicBool::new(false));
    let up = down_until(&healthy).await;
    let gw = Gateway::start(&config(
        "  backoff: 50ms\n  max_backoff: 200ms\n  max_attempts: 1000\n",
        &[("legacy", up.url())],
    ))
    .await;
    let m = gw.metrics().await;
    assert_eq!(metric(&m, "callgate_outbox_pending"), Some(0.0), "{m}");
    assert_eq!(
        metric(&m, "callgate_outbox_oldest_pending_seconds"),
        Some(0.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "callgate_delivery_latency_seconds_count"),
        Some(0.0),
        "{m}"
    );
    let first_sent = Instant::now();
    for n in 0..N {
        assert_eq!(gw.callback(CMD, &body(n)).await.outcome, "queued");
    }
    let m = gw.metrics().await;
    assert_eq!(metric(&m, "callgate_outbox_pending"), Some(N as f64), "{m}");
    let m = wait_metric(
        &gw,
        "callgate_outbox_oldest_pending_seconds",
        |v| v >= 1.0,
        Duration::from_secs(5),
    )
    .await;
    let oldest = metric(&m, "callgate_outbox_oldest_pending_seconds").unwrap();
    assert!(
        oldest <= first_sent.elapsed().as_secs_f64() + 1.0,
        "oldest {oldest} s after {:?}",
        first_sent.elapsed()
    );
    assert_eq!(metric(&m, "callgate_outbox_pending"), Some(N as f64), "{m}");

    healthy.store(true, Ordering::SeqCst);
    let m = wait_metric(
        &gw,
        &delivered("legacy"),
        |v| v == N as f64,
        Duration::from_secs(5),
    )
    .await;
    let waited = first_sent.elapsed().as_secs_f64();
    assert_eq!(metric(&m, "callgate_outbox_pending"), Some(0.0), "{m}");
    let count = metric(&m, "callgate_delivery_latency_seconds_count");
    assert_eq!(count, Some(N as f64), "{m}");
    // Each waited at least ~1 s (the oldest gauge said so) and at most as
    // long as this test has run.
    let sum = metric(&m, "callgate_delivery_latency_seconds_sum").unwrap();
    assert!(
        sum >= 0.9 * N as f64 && sum <= waited * N as f64 + 0.5,
        "latency sum {sum} for {N} deliveries after {waited} s"
    );
    let buckets: Vec<(f64, f64)> = m
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("callgate_delivery_latency_seconds_bucket{le=\"")?;
            let (le, value) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, value.split_whitespace().next()?.parse().ok()?))
        })
        .collect();
    assert!(buckets.len() >= 5, "{m}");
    assert!(
        buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
        "{m}"
    );
    assert_eq!(buckets.last(), Some(&(f64::INFINITY, N as f64)), "{m}");
    for (le, value) in &buckets {
        if *le < 0.5 {
            assert_eq!(*value, 0.0, "deliveries faster than they were: {m}");
        }
    }
    wait_metric(
        &gw,
        "callgate_outbox_oldest_pending_seconds",
        |v| v == 0.0,
        Duration::from_secs(3),
    )
    .await;
    stop(gw).await;
}

/// 10. A graceful shutdown starts no new delivery attempts, ends within
///     its grace, and leaves nothing running that holds the outbox: a new
///     gateway can open it at once.
#[tokio::test]
async fn shutdown_starts_no_new_attempts_and_releases_the_outbox() {
    const N: usize = 40;
    // Fails, slowly: attempts overlap and retries keep coming due.
    let up = Upstream::start(Reply::status(503).after(Duration::from_millis(100))).await;
    let yaml = config(
        "  backoff: 20ms\n  max_backoff: 40ms\n  max_attempts: 100000\n",
        &[("legacy", up.url())],
    );
    let mut gw = Gateway::start(&yaml).await;
    for n in 0..N {
        assert_eq!(gw.callback(CMD, &body(n)).await.outcome, "queued");
    }
    up.wait_for(2 * N, Duration::from_secs(5)).await;
    let before = up.count();
    let started = Instant::now();
    tokio::time::timeout(
        GRACE + Duration::from_secs(5),
        gw.gw.take().unwrap().shutdown(GRACE),
    )
    .await
    .expect("shutdown hung");
    let took = started.elapsed();
    let during = up.count() - before;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = up.count() - before - during;
    // At most one attempt per delivery was in flight when it began.
    assert!(
        took < Duration::from_secs(2) && during <= N && after == 0,
        "shutdown took {took:?} (grace {GRACE:?}); {during} requests reached the upstream \
         during it, {after} after it returned"
    );
    let gw = Gateway::start_in(gw.dir, &yaml).await;
    stop(gw).await;
}

/// 11. A delivery attempt still hanging when the shutdown grace ends does
///     not outlive the gateway: the outbox can be opened again at once.
#[tokio::test]
async fn a_hanging_attempt_does_not_keep_the_outbox_open_after_shutdown() {
    let hang = Upstream::start(Reply::Hang).await;
    let yaml = config("  backoff: 20ms\n", &[("legacy", hang.url())]);
    let mut gw = Gateway::start(&yaml).await;
    let a = gw.callback(CMD, &body(1)).await;
    assert_eq!(a.outcome, "queued");
    hang.wait_for(1, Duration::from_secs(5)).await;
    tokio::time::timeout(
        Duration::from_secs(6),
        gw.gw.take().unwrap().shutdown(Duration::from_secs(1)),
    )
    .await
    .expect("shutdown hung");
    let cfg = gw.config_path();
    // Kept for the next run, which can open the outbox.
    let ok = Upstream::start(Reply::ok()).await;
    let gw = Gateway::start_in(
        gw.dir,
        &config("  backoff: 20ms\n", &[("legacy", ok.url())]),
    )
    .await;
    let got = ok.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(request_id(&got[0]), a.request_id);
    let _dir = stop(gw).await;
    let stats = outbox(&["-c", s(&cfg), "stats"]).await.ok();
    assert_eq!(stats.stat("pending deliveries"), 0, "{}", stats.stdout);
}
