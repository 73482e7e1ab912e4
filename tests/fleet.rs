//! The `nats` delivery backend on real NATS JetStream servers: one node,
//! two gateways sharing a stream, a gateway killed mid-load, a
//! three-node cluster losing a node, NATS stopped and restarted.

mod support;

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
