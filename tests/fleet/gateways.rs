//! Several gateways on one stream: each event once per upstream, a
//! gateway killed mid-load, the stream deleted under them.

use std::time::Duration;

use super::*;
use crate::support::nats::NatsNode;
use crate::support::*;

#[tokio::test]
async fn two_gateways_share_one_stream_and_deliver_each_event_once_per_upstream() {
    let nats = NatsNode::start();
    let a = Upstream::start(Reply::ok()).await;
    let b = Upstream::start(Reply::ok()).await;
    let yaml = on_nats(&[nats.url()], 8, 1, &[("a", &a), ("b", &b)]);
    let one = Gateway::start(&yaml).await;
    let two = Gateway::start(&yaml).await;
    one.admin().wait_ready(Duration::from_secs(10)).await;
    two.admin().wait_ready(Duration::from_secs(10)).await;

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
    let rest = on_nats(&[nats.url()], 50, 1, &[("legacy", &up)]);
    let victim = Binary::start_quiet(&rest).await;
    let targets = targets(&[victim.listen]);
    let acked = acked();
    let load = tokio::spawn(load(targets.clone(), 0..600, 16, acked.clone()));
    assert_eventually!(
        acked.lock().unwrap().len() >= 200 && up.count() >= HUNG,
        Duration::from_secs(30),
        "load too slow"
    );
    // A second gateway joins, traffic moves to it, the victim is killed.
    let survivor = Binary::start_quiet(&rest).await;
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
    let redelivered = || {
        let seen = tally(&up);
        hung.iter().all(|b| seen.get(b).copied().unwrap_or(0) >= 2)
    };
    assert_eventually!(
        redelivered(),
        Duration::from_secs(30),
        every Duration::from_millis(100),
        "a delivery in flight on the victim was never redelivered"
    );
    drop(survivor);
}

#[tokio::test]
async fn a_stream_deleted_under_running_gateways_is_put_back_without_losing_what_they_acknowledge()
{
    let nats = NatsNode::start();
    let up = Upstream::start(Reply::ok()).await;
    let rest = on_nats(&[nats.url()], 50, 1, &[("legacy", &up)]);
    let mut one = Binary::start_quiet(&rest).await;
    let mut two = Binary::start_quiet(&rest).await;
    one.wait_ready().await;
    two.wait_ready().await;
    // Load on both. What was stored before the deletion is the
    // operator's loss; what is acknowledged after it must all arrive (a
    // re-created stream without its consumers would take events and drop
    // them). "During" is a load started once the deletion returned, while
    // the gateways put the stream back; "after" one started once both
    // take notifications again, which must all be acknowledged.
    let both = targets(&[one.listen, two.listen]);
    let before = acked();
    let first = tokio::spawn(load(both.clone(), 0..1500, 8, before.clone()));
    wait_acked(&before, 200, Duration::from_secs(30)).await;
    let js = jetstream(&nats.url()).await;
    js.delete_stream("CALLGATE").await.unwrap();
    let during = acked();
    load(both.clone(), 10_000..11_000, 8, during.clone()).await;
    first.await.unwrap();
    // The gateways put the stream back and take notifications again.
    let mut probe = 20_000;
    for target in [one.listen, two.listen] {
        assert_eventually!(
            {
                let acked = acked();
                let once = probe..probe + 1;
                load(targets(&[target]), once, 1, acked.clone()).await;
                probe += 1;
                !acked.lock().unwrap().is_empty()
            },
            Duration::from_secs(30),
            every Duration::from_millis(100),
            "{target} takes no notification 30 s after the deletion"
        );
    }
    let after = acked();
    load(both, 30_000..30_400, 8, after.clone()).await;
    let after = after.lock().unwrap().clone();
    assert_eq!(after.len(), 400, "acknowledged once the stream was back");
    let mut acked = during.lock().unwrap().clone();
    acked.extend(after);
    assert_all_delivered(&up, &acked, Duration::from_secs(30)).await;
    drop((one, two));
}
