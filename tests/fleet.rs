//! The `nats` delivery backend on real NATS JetStream servers: one node,
//! two gateways sharing a stream, a gateway killed mid-load, a
//! three-node cluster losing a node, NATS stopped and restarted.

#[path = "support_old/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::nats::{NatsNode, nats_delivery};
use support::*;

const CMD: &str = "Group.CallbackAfterNewMemberJoin";

/// A catalog-valid notification, unique per `n`.
fn member_join(n: usize) -> String {
    MEMBER_JOIN.replace("\"bob\"", &format!("\"bob-{n}\""))
}

fn routes(upstreams: &str) -> String {
    format!("routes:\n  - match: \"*\"\n    upstreams: [{upstreams}]\n")
}

/// The three-node cluster tests run one at a time: each starts three NATS
/// servers and a load, and with both at once on a 2-core machine the
/// elections after a node is lost can take longer than their bounds allow
/// (seen once in CI: no acknowledgement for 45 s after the kill).
static CLUSTERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn single_node_stores_then_delivers_and_retries() {
    let nats = NatsNode::start();
    // 500 twice, then success.
    let flaky = Upstream::scripted(|n| {
        if n < 2 {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    })
    .await;
    let steady = Upstream::start(Reply::ok()).await;
    let gw = Gateway::start(&format!(
        "{}{}{}",
        nats_delivery(&[nats.url()], 8, 1),
        upstreams_yaml(&[("flaky", &flaky), ("steady", &steady)]),
        routes("flaky, steady")
    ))
    .await;
    gw.wait_ready(Duration::from_secs(10)).await;

    let answer = gw.callback(CMD, &member_join(1)).await;
    assert_eq!((answer.status, answer.outcome.as_str()), (200, "queued"));
    let got = steady.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].body, member_join(1).as_bytes());
    let got = flaky.wait_for(3, Duration::from_secs(10)).await;
    assert!(got.iter().all(|r| r.body == member_join(1).as_bytes()));
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("callgate_deliveries_total{upstream=\"flaky\",result=\"retried\"} 2"),
        "{metrics}"
    );
    // Delivered exactly once to each after success.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!((flaky.count(), steady.count()), (3, 1));
    gw.shutdown().await;
}

/// The backlog alert's gauge works on this backend too: the age of the
/// oldest event an upstream still waits for, back to 0 once delivered.
#[tokio::test]
async fn the_oldest_pending_age_follows_the_stream() {
    let nats = NatsNode::start();
    let failing = Arc::new(AtomicBool::new(true));
    let f = failing.clone();
    let up = Upstream::scripted(move |_| {
        if f.load(Ordering::SeqCst) {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    })
    .await;
    let gw = Gateway::start(&format!(
        "{}{}{}",
        nats_delivery(&[nats.url()], 1000, 1),
        upstreams_yaml(&[("legacy", &up)]),
        routes("legacy")
    ))
    .await;
    gw.wait_ready(Duration::from_secs(10)).await;
    let answer = gw.callback(CMD, &member_join(1)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let oldest = "callgate_outbox_oldest_pending_seconds";
    let started = std::time::Instant::now();
    // Refreshed every 5 s; the event is at least 2 s old by the second look.
    while metric(&gw.metrics().await, oldest).unwrap_or(0.0) < 2.0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{oldest} stayed below 2"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    failing.store(false, Ordering::SeqCst);
    while metric(&gw.metrics().await, oldest) != Some(0.0) {
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "{oldest} never fell back to 0"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    gw.shutdown().await;
}

/// Runs `callgate outbox ARGS -c CONFIG` and returns (exit code, stdout+stderr).
fn outbox_cli(config: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
        .arg("outbox")
        .args(args)
        .arg("-c")
        .arg(config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

async fn wait_metric(gw: &Gateway, needle: &str) {
    let started = std::time::Instant::now();
    loop {
        let m = gw.metrics().await;
        if m.contains(needle) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "metric {needle} never appeared:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn dead_letters_are_listed_replayed_and_purged_while_the_fleet_runs() {
    let nats = NatsNode::start();
    // Fails both attempts, then would succeed (after a replay).
    let flaky = Upstream::scripted(|n| {
        if n < 2 {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    })
    .await;
    let broken = Upstream::start(Reply::status(503)).await;
    let gw = Gateway::start(&format!(
        "{}{}{}",
        nats_delivery(&[nats.url()], 2, 1),
        upstreams_yaml(&[("flaky", &flaky), ("broken", &broken)]),
        routes("flaky, broken")
    ))
    .await;
    gw.wait_ready(Duration::from_secs(10)).await;
    let answer = gw.callback(CMD, &member_join(7)).await;
    assert_eq!(answer.status, 200);
    wait_metric(
        &gw,
        "callgate_deliveries_total{upstream=\"flaky\",result=\"dead\"} 1",
    )
    .await;
    wait_metric(
        &gw,
        "callgate_deliveries_total{upstream=\"broken\",result=\"dead\"} 1",
    )
    .await;
    assert_eq!((flaky.count(), broken.count()), (2, 2));

    let config = gw.config_path();
    let (code, text) = outbox_cli(&config, &["stats"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("dead letters: 2"), "{text}");
    assert!(
        text.contains("  flaky: 1") && text.contains("  broken: 1"),
        "{text}"
    );

    let (code, text) = outbox_cli(&config, &["list", "--dead"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(CMD) && text.contains("status 503"), "{text}");
    assert!(text.contains(&answer.request_id), "{text}");

    // Only dead letters can be replayed on this backend: a clear refusal.
    let (code, text) = outbox_cli(&config, &["replay"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("only dead letters"), "{text}");

    let (code, text) = outbox_cli(&config, &["replay", "--dead", "--upstream", "flaky"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("1 dead letters put back"), "{text}");
    let got = flaky.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(got[2].body, member_join(7).as_bytes());

    let (code, text) = outbox_cli(&config, &["purge", "--dead", "--upstream", "broken"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("1 dead letters deleted"), "{text}");
    let (_, text) = outbox_cli(&config, &["stats"]);
    assert!(text.contains("dead letters: 0"), "{text}");
    // The replayed event went to flaky alone.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!((flaky.count(), broken.count()), (3, 2));
    gw.shutdown().await;
}

/// Counts of each body an upstream received.
fn tally(up: &Upstream) -> HashMap<Vec<u8>, usize> {
    let mut seen = HashMap::new();
    for r in up.received() {
        *seen.entry(r.body.to_vec()).or_insert(0) += 1;
    }
    seen
}

#[tokio::test]
async fn two_gateways_share_one_stream_and_deliver_each_event_once_per_upstream() {
    let nats = NatsNode::start();
    let a = Upstream::start(Reply::ok()).await;
    let b = Upstream::start(Reply::ok()).await;
    let yaml = format!(
        "{}{}{}",
        nats_delivery(&[nats.url()], 8, 1),
        upstreams_yaml(&[("a", &a), ("b", &b)]),
        routes("a, b")
    );
    let one = Gateway::start(&yaml).await;
    let two = Gateway::start(&yaml).await;
    one.wait_ready(Duration::from_secs(10)).await;
    two.wait_ready(Duration::from_secs(10)).await;

    const N: usize = 120;
    for chunk in (0..N).collect::<Vec<_>>().chunks(8) {
        let sends = chunk.iter().map(|&i| {
            let gw = if i % 2 == 0 { &one } else { &two };
            let body = member_join(i);
            async move { gw.callback(CMD, &body).await.status }
        });
        let statuses = futures_util::future::join_all(sends).await;
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    }
    a.wait_for(N, Duration::from_secs(20)).await;
    b.wait_for(N, Duration::from_secs(20)).await;
    // Give a duplicate time to show up, then check there is none.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for up in [&a, &b] {
        let seen = tally(up);
        assert_eq!(seen.len(), N);
        assert!(seen.values().all(|n| *n == 1), "duplicates: {seen:?}");
    }
    one.shutdown().await;
    two.shutdown().await;
}

/// Sends `n` distinct notifications to `url_of(i)`, `conc` at a time, and
/// returns the bodies that were acknowledged with 200. Every other answer
/// (503, a dropped connection) is allowed: it tells IM nothing was taken.
async fn load(
    url_of: impl Fn(usize) -> String + Send + Sync + 'static,
    n: impl Into<std::ops::Range<usize>>,
    conc: usize,
    acked: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use futures_util::StreamExt;
    let http = test_client();
    let url_of = std::sync::Arc::new(url_of);
    futures_util::stream::iter(n.into())
        .for_each_concurrent(conc, |i| {
            let (http, acked, url_of) = (http.clone(), acked.clone(), url_of.clone());
            async move {
                let body = member_join(i);
                let sent = http
                    .post(url_of(i))
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

/// Waits (bounded) until `up` has received every body of `acked`.
async fn assert_all_delivered(up: &Upstream, acked: &[String], limit: Duration) {
    let started = std::time::Instant::now();
    loop {
        let seen = tally(up);
        let missing: Vec<&String> = acked
            .iter()
            .filter(|b| !seen.contains_key(b.as_bytes()))
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "{} of {} acknowledged notifications never delivered, e.g. {}",
            missing.len(),
            acked.len(),
            missing[0]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn callback_url(addr: std::net::SocketAddr) -> String {
    format!("http://{addr}/im?SdkAppid={APP}&CallbackCommand={CMD}")
}

#[tokio::test]
async fn a_gateway_killed_mid_load_leaves_nothing_acknowledged_behind() {
    let nats = NatsNode::start();
    // The first deliveries hang, so the victim surely dies with attempts
    // in flight (unacked); the rest are answered at once.
    const HUNG: usize = 8;
    let up = Upstream::scripted(|n| {
        if n < HUNG {
            Reply::ok().after(Duration::from_secs(30))
        } else {
            Reply::ok()
        }
    })
    .await;
    let rest = format!(
        "apps:\n  - sdkappid: {APP}\n{}{}{}",
        nats_delivery(&[nats.url()], 50, 1),
        upstreams_yaml(&[("legacy", &up)]),
        routes("legacy")
    );
    let victim = Binary::start(&rest, &[], "warn", false).await;
    let targets = std::sync::Arc::new(std::sync::Mutex::new(vec![victim.listen]));
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let to = targets.clone();
    let load = tokio::spawn(load(
        move |i| {
            let t = to.lock().unwrap();
            callback_url(t[i % t.len()])
        },
        0..600,
        16,
        acked.clone(),
    ));
    let started = std::time::Instant::now();
    while acked.lock().unwrap().len() < 200 || up.count() < HUNG {
        assert!(started.elapsed() < Duration::from_secs(30), "load too slow");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A second gateway joins, traffic moves to it, the victim is killed.
    let survivor = Binary::start(&rest, &[], "warn", false).await;
    *targets.lock().unwrap() = vec![survivor.listen];
    victim.signal("-KILL");
    load.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 200, "{}", acked.len());
    // The victim's unacked messages come back after ack_wait (2 s).
    assert_all_delivered(&up, &acked, Duration::from_secs(45)).await;
    // The hung ones (received, never answered) are taken over: the
    // survivor sends them again after ack_wait.
    let hung: Vec<Vec<u8>> = up.received()[..HUNG]
        .iter()
        .map(|r| r.body.to_vec())
        .collect();
    let started = std::time::Instant::now();
    while !hung
        .iter()
        .all(|b| tally(&up).get(b).copied().unwrap_or(0) >= 2)
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "a delivery in flight on the victim was never redelivered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(survivor);
}

#[tokio::test]
async fn losing_a_node_of_a_three_node_cluster_loses_nothing_acknowledged() {
    let _alone = CLUSTERS.lock().await;
    let mut cluster = support::nats::NatsCluster::start();
    let up = Upstream::start(Reply::ok().after(Duration::from_millis(5))).await;
    let gw = Gateway::start(&format!(
        "{}{}{}",
        nats_delivery(&cluster.urls(), 50, 3),
        upstreams_yaml(&[("legacy", &up)]),
        routes("legacy")
    ))
    .await;
    // A new cluster elects its leaders first.
    gw.wait_ready(Duration::from_secs(45)).await;

    // Kill the events stream's leader: the harshest node to lose.
    let servers: Vec<async_nats::ServerAddr> =
        cluster.urls().iter().map(|u| u.parse().unwrap()).collect();
    let client = async_nats::connect(servers).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("CALLGATE").await.unwrap();
    let leader = stream
        .info()
        .await
        .unwrap()
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("a replicated stream has a leader");
    let victim: usize = leader.trim_start_matches('n').parse::<usize>().unwrap() - 1;

    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let addr = gw.addr();
    // Open-ended load, stopped once the cluster has proven it goes on.
    let load = tokio::spawn(load(
        move |_| callback_url(addr),
        0..100_000,
        8,
        acked.clone(),
    ));
    let wait_acked = |n: usize| {
        let acked = acked.clone();
        async move {
            let started = std::time::Instant::now();
            while acked.lock().unwrap().len() < n {
                assert!(
                    started.elapsed() < Duration::from_secs(45),
                    "stuck at {} acknowledged, waiting for {n}",
                    acked.lock().unwrap().len()
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    wait_acked(150).await;
    cluster.nodes[victim].kill();
    // The other two keep a quorum: after a new election, callbacks are
    // acknowledged again.
    let at_kill = acked.lock().unwrap().len();
    wait_acked(at_kill + 150).await;
    load.abort();
    let _ = load.await;
    let acked = acked.lock().unwrap().clone();
    assert_all_delivered(&up, &acked, Duration::from_secs(45)).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn nats_down_means_503_for_notifications_only_and_recovery_after() {
    let mut nats = NatsNode::start();
    let up = Upstream::start(Reply::ok()).await;
    let gw = Gateway::start(&format!(
        "{}{}routes:\n  - match: \"Group.CallbackBefore*\"\n    upstreams: [legacy]\n  - match: \"*\"\n    upstreams: [legacy]\n",
        nats_delivery(&[nats.url()], 50, 1),
        upstreams_yaml(&[("legacy", &up)]),
    ))
    .await;
    gw.wait_ready(Duration::from_secs(10)).await;
    let mut acked = Vec::new();
    for i in 0..5 {
        let a = gw.callback(CMD, &member_join(i)).await;
        assert_eq!(a.status, 200);
        acked.push(member_join(i));
    }

    nats.kill();
    // Soon: notifications refused, not ready, decisions unaffected.
    let started = std::time::Instant::now();
    let mut refused = None;
    for i in 100.. {
        let a = gw.callback(CMD, &member_join(i)).await;
        if a.status == 200 {
            acked.push(member_join(i));
        } else {
            refused = Some(a);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = refused.unwrap();
    assert_eq!(refused.status, 503, "{}", refused.text());
    let ready = gw
        .http
        .get(format!("{}/readyz", gw.admin()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let decision = gw.callback("Group.CallbackBeforeSendMsg", GROUP_SEND).await;
    assert_eq!(
        (decision.status, decision.outcome.as_str()),
        (200, "upstream")
    );
    assert!(gw.metrics().await.contains("result=\"dropped\""));

    nats.restart();
    gw.wait_ready(Duration::from_secs(20)).await;
    for i in 200..205 {
        let a = gw.callback(CMD, &member_join(i)).await;
        assert_eq!(a.status, 200, "{}", a.text());
        acked.push(member_join(i));
    }
    assert_all_delivered(&up, &acked, Duration::from_secs(20)).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn a_fleet_scaled_up_and_down_under_load_on_a_cluster_loses_nothing_acknowledged() {
    let _alone = CLUSTERS.lock().await;
    let cluster = support::nats::NatsCluster::start();
    let up = Upstream::start(Reply::ok().after(Duration::from_millis(20))).await;
    let rest = format!(
        "apps:\n  - sdkappid: {APP}\n{}{}{}",
        nats_delivery(&cluster.urls(), 50, 3),
        upstreams_yaml(&[("legacy", &up)]),
        routes("legacy")
    );
    // Binary::start waits for /readyz, which waits for the cluster.
    let first = Binary::start(&rest, &[], "warn", false).await;
    let second = Binary::start(&rest, &[], "warn", false).await;
    let addrs = std::sync::Arc::new(std::sync::Mutex::new(vec![first.listen, second.listen]));

    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let targets = addrs.clone();
    let load = tokio::spawn(load(
        move |i| {
            let t = targets.lock().unwrap();
            callback_url(t[i % t.len()])
        },
        0..900,
        12,
        acked.clone(),
    ));
    let wait_acked = |n: usize| {
        let acked = acked.clone();
        async move {
            let started = std::time::Instant::now();
            while acked.lock().unwrap().len() < n {
                assert!(started.elapsed() < Duration::from_secs(60), "load stalled");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    // Scale up: a third gateway joins and takes traffic.
    wait_acked(150).await;
    let third = Binary::start(&rest, &[], "warn", false).await;
    addrs.lock().unwrap().push(third.listen);
    // Scale down gracefully (what Kubernetes does): SIGTERM, traffic moves.
    wait_acked(350).await;
    addrs.lock().unwrap().retain(|a| *a != first.listen);
    first.signal("-TERM");
    // And a crash: SIGKILL, its deliveries in flight come back to the rest.
    wait_acked(550).await;
    addrs.lock().unwrap().retain(|a| *a != second.listen);
    second.signal("-KILL");
    load.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 600,
        "only {} of 900 acknowledged",
        acked.len()
    );
    assert_all_delivered(&up, &acked, Duration::from_secs(60)).await;
    drop(third);
}

#[tokio::test]
async fn a_gateway_started_before_nats_waits_for_it_without_taking_notifications() {
    let mut nats = NatsNode::start();
    nats.kill();
    let up = Upstream::start(Reply::ok()).await;
    let gw = Gateway::start(&format!(
        "{}{}{}",
        nats_delivery(&[nats.url()], 50, 1),
        upstreams_yaml(&[("legacy", &up)]),
        routes("legacy")
    ))
    .await;
    let ready = gw
        .http
        .get(format!("{}/readyz", gw.admin()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let refused = gw.callback(CMD, &member_join(1)).await;
    assert_eq!(refused.status, 503, "{}", refused.text());

    nats.restart();
    gw.wait_ready(Duration::from_secs(20)).await;
    let answer = gw.callback(CMD, &member_join(2)).await;
    assert_eq!(answer.status, 200);
    let got = up.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].body, member_join(2).as_bytes());
    // The refused one was never stored, so never delivered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(up.count(), 1);
    gw.shutdown().await;
}

async fn jetstream(url: &str) -> async_nats::jetstream::Context {
    async_nats::jetstream::new(async_nats::connect(url).await.unwrap())
}

#[tokio::test]
async fn a_stream_deleted_under_running_gateways_is_put_back_without_losing_what_they_acknowledge()
{
    let nats = NatsNode::start();
    let up = Upstream::start(Reply::ok()).await;
    let rest = format!(
        "apps:\n  - sdkappid: {APP}\n{}{}{}",
        nats_delivery(&[nats.url()], 50, 1),
        upstreams_yaml(&[("legacy", &up)]),
        routes("legacy")
    );
    let one = Binary::start(&rest, &[], "warn", false).await;
    let two = Binary::start(&rest, &[], "warn", false).await;
    one.wait_ready().await;
    two.wait_ready().await;
    // Load on both. What was stored before the deletion is the
    // operator's loss; what is acknowledged after it must all arrive (a
    // re-created stream without its consumers would take events and drop
    // them). "During" is a load started once the deletion returned, while
    // the gateways put the stream back; "after" one started once both
    // take notifications again, which must all be acknowledged.
    let targets = [one.listen, two.listen];
    let before = Arc::new(Mutex::new(Vec::new()));
    let first = tokio::spawn(load(
        move |i| callback_url(targets[i % 2]),
        0..1500,
        8,
        before.clone(),
    ));
    let started = std::time::Instant::now();
    while before.lock().unwrap().len() < 200 {
        assert!(started.elapsed() < Duration::from_secs(30), "load too slow");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let js = jetstream(&nats.url()).await;
    js.delete_stream("CALLGATE").await.unwrap();
    let during = Arc::new(Mutex::new(Vec::new()));
    load(
        move |i| callback_url(targets[i % 2]),
        10_000..11_000,
        8,
        during.clone(),
    )
    .await;
    first.await.unwrap();
    // The gateways put the stream back and take notifications again.
    let mut probe = 20_000;
    for target in targets {
        let started = std::time::Instant::now();
        loop {
            let acked = Arc::new(Mutex::new(Vec::new()));
            load(
                move |_| callback_url(target),
                probe..probe + 1,
                1,
                acked.clone(),
            )
            .await;
            probe += 1;
            if !acked.lock().unwrap().is_empty() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{target} takes no notification 30 s after the deletion"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let after = Arc::new(Mutex::new(Vec::new()));
    load(
        move |i| callback_url(targets[i % 2]),
        30_000..30_400,
        8,
        after.clone(),
    )
    .await;
    let after = after.lock().unwrap().clone();
    assert_eq!(after.len(), 400, "acknowledged once the stream was back");
    let mut acked = during.lock().unwrap().clone();
    acked.extend(after);
    assert_all_delivered(&up, &acked, Duration::from_secs(30)).await;
    drop((one, two));
}

/// An interest-retention stream acknowledges, then drops, a message no
/// consumer is interested in: a new events stream must take nothing
/// until its consumers exist, so such a publish gets no acknowledgement
/// (IM a 503) rather than a 200 for a lost event.
#[tokio::test]
async fn a_new_events_stream_takes_no_event_before_its_consumers_exist() {
    use callgate::jetstream::{Names, bind_events, ensure_consumer, ensure_streams};
    let nats = NatsNode::start();
    let yaml = format!(
        "listeners:\n  - addr: \"127.0.0.1:0\"\napps:\n  - sdkappid: {APP}\n{}upstreams:\n  legacy:\n    url: \"http://127.0.0.1:9/\"\n{}",
        nats_delivery(&[nats.url()], 5, 1),
        routes("legacy")
    );
    let config = callgate::Config::parse(&yaml, std::path::Path::new("routes.yaml")).unwrap();
    let cfg = config.delivery.nats.unwrap();
    let names = Names::new(&cfg);
    let js = jetstream(&nats.url()).await;
    ensure_streams(&js, &cfg, &names, true).await.unwrap();
    let publish = |n: usize| {
        let js = js.clone();
        let subject = names.event_subject(CMD);
        async move {
            js.publish(subject, member_join(n).into())
                .await
                .unwrap()
                .await
        }
    };
    assert!(publish(1).await.is_err(), "an unbound stream took an event");
    let mut consumer = ensure_consumer(&js, &cfg, &names, "legacy").await.unwrap();
    bind_events(&js, &names).await.unwrap();
    publish(2).await.expect("a bound stream takes events");
    let info = consumer.info().await.unwrap();
    assert_eq!(info.num_pending, 1);
    // Idempotent, and a second gateway finds it bound.
    ensure_streams(&js, &cfg, &names, false).await.unwrap();
    bind_events(&js, &names).await.unwrap();
    publish(3).await.unwrap();
    assert_eq!(consumer.info().await.unwrap().num_pending, 2);
}

#[tokio::test]
async fn stream_settings_follow_the_config_at_start() {
    let nats = NatsNode::start();
    let up = Upstream::start(Reply::ok()).await;
    let yaml = |max_bytes: &str| {
        format!(
            "{}    max_bytes: {max_bytes}\n{}{}",
            nats_delivery(&[nats.url()], 50, 1),
            upstreams_yaml(&[("legacy", &up)]),
            routes("legacy")
        )
    };
    let gw = Gateway::start(&yaml("64MiB")).await;
    gw.wait_ready(Duration::from_secs(10)).await;
    gw.shutdown().await;
    let js = jetstream(&nats.url()).await;
    let max_bytes = |js: async_nats::jetstream::Context| async move {
        let mut s = js.get_stream("CALLGATE").await.unwrap();
        s.info().await.unwrap().config.max_bytes
    };
    assert_eq!(max_bytes(js.clone()).await, 64 * 1024 * 1024);

    let gw = Gateway::start(&yaml("32MiB")).await;
    gw.wait_ready(Duration::from_secs(10)).await;
    assert_eq!(max_bytes(js.clone()).await, 32 * 1024 * 1024);
    gw.shutdown().await;
}
