//! The `nats` delivery backend on real NATS JetStream servers: one node,
//! two gateways sharing a stream, a gateway killed mid-load, a
//! three-node cluster losing a node, NATS stopped and restarted.

mod support;

use std::collections::HashMap;
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
