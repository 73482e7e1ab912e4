//! A three-node NATS cluster: losing a node, and a fleet scaled up and
//! down under load.

use std::time::Duration;

use super::*;
use crate::support::nats::NatsCluster;
use crate::support::*;

#[tokio::test]
async fn losing_a_node_of_a_three_node_cluster_loses_nothing_acknowledged() {
    let _alone = CLUSTERS.lock().await;
    let mut cluster = NatsCluster::start();
    let up = Upstream::start(Reply::ok().after(Duration::from_millis(5))).await;
    let config = on_nats(&cluster.urls(), 50, 3, &[("legacy", &up)]);
    let gw = Gateway::start(&config).await;
    // A new cluster elects its leaders first.
    gw.admin().wait_ready(Duration::from_secs(45)).await;

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

    let acked = acked();
    // Open-ended load, stopped once the cluster has proven it goes on.
    let load = tokio::spawn(load(targets(&[gw.addr()]), 0..100_000, 8, acked.clone()));
    wait_acked(&acked, 150, Duration::from_secs(45)).await;
    cluster.nodes[victim].kill();
    // The other two keep a quorum: after a new election, callbacks are
    // acknowledged again.
    let at_kill = acked.lock().unwrap().len();
    wait_acked(&acked, at_kill + 150, Duration::from_secs(45)).await;
    load.abort();
    let _ = load.await;
    let acked = acked.lock().unwrap().clone();
    assert_all_delivered(&up, &acked, Duration::from_secs(45)).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn a_fleet_scaled_up_and_down_under_load_on_a_cluster_loses_nothing_acknowledged() {
    let _alone = CLUSTERS.lock().await;
    let cluster = NatsCluster::start();
    let up = Upstream::start(Reply::ok().after(Duration::from_millis(20))).await;
    let rest = on_nats(&cluster.urls(), 50, 3, &[("legacy", &up)]);
    // Binary::start_quiet waits for /readyz, which waits for the cluster.
    let first = Binary::start_quiet(&rest).await;
    let second = Binary::start_quiet(&rest).await;
    let addrs = targets(&[first.listen, second.listen]);

    let acked = acked();
    let load = tokio::spawn(load(addrs.clone(), 0..900, 12, acked.clone()));
    let wait_acked = |n| wait_acked(&acked, n, Duration::from_secs(60));
    // Scale up: a third gateway joins and takes traffic.
    wait_acked(150).await;
    let third = Binary::start_quiet(&rest).await;
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
