//! One NATS node: stored, delivered and retried; the backlog gauge; dead
//! letters; NATS down and back; the stream's settings and binding.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::*;
use crate::support::nats::NatsNode;
use crate::support::*;

#[tokio::test]
async fn single_node_stores_then_delivers_and_retries() {
    let nats = NatsNode::start();
    // 500 twice, then success.
    let flaky = Upstream::failing_first(2, 500).await;
    let steady = Upstream::start(Reply::ok()).await;
    let ups = [("flaky", &flaky), ("steady", &steady)];
    let config = on_nats(&[nats.url()], 8, 1, &ups);
    let gw = Gateway::start(&config).await;
    gw.admin().wait_ready(Duration::from_secs(10)).await;

    let answer = gw.callback(CMD, &member_join(1)).await;
    assert_eq!((answer.status, answer.outcome.as_str()), (200, "queued"));
    let got = steady.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].body, member_join(1).as_bytes());
    let got = flaky.wait_for(3, Duration::from_secs(10)).await;
    assert!(got.iter().all(|r| r.body == member_join(1).as_bytes()));
    deliveries("flaky", "retried")
        .value(2.0)
        .assert_in(&gw.metrics().await);
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
    let healthy = Arc::new(AtomicBool::new(false));
    let up = Upstream::failing_until(&healthy, 500).await;
    let config = on_nats(&[nats.url()], 1000, 1, &[("legacy", &up)]);
    let gw = Gateway::start(&config).await;
    gw.admin().wait_ready(Duration::from_secs(10)).await;
    let answer = gw.callback(CMD, &member_join(1)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let oldest = metric("callgate_outbox_oldest_pending_seconds");
    let started = std::time::Instant::now();
    // Refreshed every 5 s; the event is at least 2 s old by the second look.
    oldest
        .clone()
        .at_least(2.0)
        .eventually(gw.admin(), secs(20))
        .await;
    healthy.store(true, Ordering::SeqCst);
    // Within 40 s of the first look.
    let left = secs(40).saturating_sub(started.elapsed());
    oldest.value(0.0).eventually(gw.admin(), left).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn dead_letters_are_listed_replayed_and_purged_while_the_fleet_runs() {
    let nats = NatsNode::start();
    // Fails both attempts, then would succeed (after a replay).
    let flaky = Upstream::failing_first(2, 500).await;
    let broken = Upstream::start(Reply::status(503)).await;
    let ups = [("flaky", &flaky), ("broken", &broken)];
    let config = on_nats(&[nats.url()], 2, 1, &ups);
    let gw = Gateway::start(&config).await;
    gw.admin().wait_ready(Duration::from_secs(10)).await;
    let answer = gw.callback(CMD, &member_join(7)).await;
    assert_eq!(answer.status, 200);
    for upstream in ["flaky", "broken"] {
        deliveries(upstream, "dead")
            .value(1.0)
            .eventually(gw.admin(), secs(15))
            .await;
    }
    assert_eq!((flaky.count(), broken.count()), (2, 2));

    let config = gw.config_path();
    let (code, text) = outbox_cli(&config, &["stats"]).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("dead letters: 2"), "{text}");
    assert!(
        text.contains("  flaky: 1") && text.contains("  broken: 1"),
        "{text}"
    );

    let (code, text) = outbox_cli(&config, &["list", "--dead"]).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(CMD) && text.contains("status 503"), "{text}");
    assert!(text.contains(&answer.request_id), "{text}");

    // Only dead letters can be replayed on this backend: a clear refusal.
    let (code, text) = outbox_cli(&config, &["replay"]).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("only dead letters"), "{text}");

    let (code, text) = outbox_cli(&config, &["replay", "--dead", "--upstream", "flaky"]).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("1 dead letters put back"), "{text}");
    let got = flaky.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(got[2].body, member_join(7).as_bytes());

    let (code, text) = outbox_cli(&config, &["purge", "--dead", "--upstream", "broken"]).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("1 dead letters deleted"), "{text}");
    let (_, text) = outbox_cli(&config, &["stats"]).await;
    assert!(text.contains("dead letters: 0"), "{text}");
    // The replayed event went to flaky alone.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!((flaky.count(), broken.count()), (3, 2));
    gw.shutdown().await;
}

#[tokio::test]
async fn nats_down_means_503_for_notifications_only_and_recovery_after() {
    let mut nats = NatsNode::start();
    let up = Upstream::start(Reply::ok()).await;
    let config = Config::new()
        .nats(&[nats.url()], 1)
        .delivery("max_attempts", 50u32)
        .upstream("legacy", &up)
        .route(Route::new("Group.CallbackBefore*", &["legacy"]))
        .route(Route::all(&["legacy"]));
    let gw = Gateway::start(&config).await;
    gw.admin().wait_ready(Duration::from_secs(10)).await;
    let mut acked = Vec::new();
    for i in 0..5 {
        let a = gw.callback(CMD, &member_join(i)).await;
        assert_eq!(a.status, 200);
        acked.push(member_join(i));
    }

    nats.kill();
    // Soon: notifications refused, not ready, decisions unaffected.
    let mut refused = None;
    let mut next = 100;
    assert_eventually!(
        {
            let i = next;
            next += 1;
            let a = gw.callback(CMD, &member_join(i)).await;
            if a.status == 200 {
                acked.push(member_join(i));
            } else {
                refused = Some(a);
            }
            refused.is_some()
        },
        secs(10),
        every ms(50),
        "never refused"
    );
    let refused = refused.unwrap();
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(gw.admin().readyz().await, 503);
    let decision = gw.decision().await;
    assert_eq!(
        (decision.status, decision.outcome.as_str()),
        (200, "upstream")
    );
    let m = gw.metrics().await;
    assert!(
        m.samples()
            .iter()
            .any(|s| s.label("result") == Some("dropped"))
    );

    nats.restart();
    gw.admin().wait_ready(Duration::from_secs(20)).await;
    for i in 200..205 {
        let a = gw.callback(CMD, &member_join(i)).await;
        assert_eq!(a.status, 200, "{}", a.text());
        acked.push(member_join(i));
    }
    assert_all_delivered(&up, &acked, Duration::from_secs(20)).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn a_gateway_started_before_nats_waits_for_it_without_taking_notifications() {
    let mut nats = NatsNode::start();
    nats.kill();
    let up = Upstream::start(Reply::ok()).await;
    let config = on_nats(&[nats.url()], 50, 1, &[("legacy", &up)]);
    let gw = Gateway::start(&config).await;
    assert_eq!(gw.admin().readyz().await, 503);
    let refused = gw.callback(CMD, &member_join(1)).await;
    assert_eq!(refused.status, 503, "{}", refused.text());

    nats.restart();
    gw.admin().wait_ready(Duration::from_secs(20)).await;
    let answer = gw.callback(CMD, &member_join(2)).await;
    assert_eq!(answer.status, 200);
    let got = up.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].body, member_join(2).as_bytes());
    // The refused one was never stored, so never delivered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(up.count(), 1);
    gw.shutdown().await;
}

/// An interest-retention stream acknowledges, then drops, a message no
/// consumer is interested in: a new events stream must take nothing
/// until its consumers exist, so such a publish gets no acknowledgement
/// (IM a 503) rather than a 200 for a lost event.
#[tokio::test]
async fn a_new_events_stream_takes_no_event_before_its_consumers_exist() {
    use callgate::deliver::fleet::streams::{Names, bind_events, ensure_consumer, ensure_streams};
    let nats = NatsNode::start();
    let config = Config::new()
        .nats(&[nats.url()], 1)
        .delivery("max_attempts", 5u32)
        .upstream("legacy", "http://127.0.0.1:9/")
        .route(Route::all(&["legacy"]))
        .parse();
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
        on_nats(&[nats.url()], 50, 1, &[("legacy", &up)]).nats_setting("max_bytes", max_bytes)
    };
    let gw = Gateway::start(&yaml("64MiB")).await;
    gw.admin().wait_ready(Duration::from_secs(10)).await;
    gw.shutdown().await;
    let js = jetstream(&nats.url()).await;
    let max_bytes = |js: async_nats::jetstream::Context| async move {
        let mut s = js.get_stream("CALLGATE").await.unwrap();
        s.info().await.unwrap().config.max_bytes
    };
    assert_eq!(max_bytes(js.clone()).await, 64 * 1024 * 1024);

    let gw = Gateway::start(&yaml("32MiB")).await;
    gw.admin().wait_ready(Duration::from_secs(10)).await;
    assert_eq!(max_bytes(js.clone()).await, 32 * 1024 * 1024);
    gw.shutdown().await;
}
