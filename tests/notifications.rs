//! SPEC 4.2, notifications: acknowledged at once, delivered to every
//! upstream independently, retried with backoff, dead-lettered, bounded.

mod support;

use std::time::{Duration, Instant};

use support::*;

const CMD: &str = "Group.CallbackAfterNewMemberJoin";

/// Quick retries, at most `max_attempts`.
fn retrying(max_attempts: u32) -> Config {
    Config::new().retries(max_attempts, "20ms", "100ms")
}

#[tokio::test]
async fn acknowledged_at_once_and_delivered_to_every_upstream() {
    let slow = Upstream::start(Reply::ok().after(Duration::from_millis(1500))).await;
    let fast = Upstream::start(Reply::ok()).await;
    let config = Config::new()
        .upstream("slow", &slow)
        .upstream("fast", &fast)
        .route(Route::new("Group.CallbackAfter*", &["slow", "fast"]));
    let gw = Gateway::start(&config).await;
    let started = Instant::now();
    let answer = gw.callback(CMD, MEMBER_JOIN).await;
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "not acknowledged at once"
    );
    answer.assert_is(200, "queued", OK);
    for up in [&fast, &slow] {
        let got = up.wait_for(1, Duration::from_secs(5)).await;
        assert_eq!(got[0].body, MEMBER_JOIN.as_bytes());
        assert_eq!(
            got[0].headers["x-request-id"].to_str().unwrap(),
            answer.request_id
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn failed_deliveries_are_retried_until_they_succeed() {
    // 500, then a reset connection, then success.
    let flaky = Upstream::scripted(|n| match n {
        0 => Reply::status(500),
        1 => Reply::Drop,
        _ => Reply::status(204),
    })
    .await;
    let steady = Upstream::start(Reply::ok()).await;
    let config = retrying(8)
        .upstream("flaky", &flaky)
        .upstream("steady", &steady)
        .route(Route::all(&["flaky", "steady"]));
    let gw = Gateway::start(&config).await;
    assert_eq!(gw.callback(CMD, MEMBER_JOIN).await.outcome, "queued");
    let got = flaky.wait_for(3, Duration::from_secs(5)).await;
    assert!(got.iter().all(|r| r.body == MEMBER_JOIN.as_bytes()));
    // The healthy upstream got it once, whatever the flaky one did.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!((flaky.count(), steady.count()), (3, 1));
    let m = gw.metrics().await;
    deliveries("flaky", "retried").value(2.0).assert_in(&m);
    deliveries("flaky", "delivered").value(1.0).assert_in(&m);
    deliveries("steady", "delivered").value(1.0).assert_in(&m);
    metric("callgate_outbox_pending").value(0.0).assert_in(&m);
    gw.shutdown().await;
}

#[tokio::test]
async fn deliveries_are_dead_lettered_after_max_attempts() {
    let down = Upstream::start(Reply::status(503)).await;
    let config = retrying(3)
        .upstream("down", &down)
        .route(Route::all(&["down"]));
    let gw = Gateway::start(&config).await;
    assert_eq!(gw.callback(CMD, MEMBER_JOIN).await.outcome, "queued");
    down.wait_for(3, Duration::from_secs(5)).await;
    // No fourth attempt comes.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(down.count(), 3);
    let m = gw.metrics().await;
    deliveries("down", "dead").value(1.0).assert_in(&m);
    deliveries("down", "retried").value(2.0).assert_in(&m);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_full_queue_answers_503_and_counts_the_drop() {
    let hang = Upstream::start(Reply::Hang).await;
    let config = retrying(8)
        .delivery("max_pending", 1usize)
        .upstream("hang", &hang)
        .route(Route::all(&["hang"]));
    let gw = Gateway::start(&config).await;
    assert_eq!(gw.callback(CMD, MEMBER_JOIN).await.outcome, "queued");
    let full = gw.callback(CMD, MEMBER_JOIN).await;
    full.assert_rejected(503, "full");
    let m = gw.metrics().await;
    deliveries("hang", "dropped").value(1.0).assert_in(&m);
    metric("callgate_outbox_pending").value(1.0).assert_in(&m);
    gw.shutdown().await;
}

#[tokio::test]
async fn unrouted_notifications_are_acknowledged_and_counted() {
    let up = Upstream::start(Reply::ok()).await;
    let config = Config::new()
        .upstream("a", &up)
        .route(Route::new("C2C.*", &["a"]));
    let gw = Gateway::start(&config).await;
    let answer = gw.callback(CMD, MEMBER_JOIN).await;
    answer.assert_is(200, "unrouted", OK);
    requests(CMD, "unrouted")
        .value(1.0)
        .assert_in(&gw.metrics().await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

/// The worst bug a gateway like this can have is a false rejection: every
/// documented command's sample body goes through and reaches the upstream
/// unchanged.
#[tokio::test]
async fn every_catalog_command_is_accepted_and_forwarded() {
    let up = Upstream::start(Reply::ok()).await;
    let gw = Gateway::start(&Config::catch_all(&up)).await;
    let mut sent = 0;
    for (command, kind) in catalog() {
        let body = fixture(command);
        let answer = gw.callback(command, &body).await;
        // A plain OK lacks `ResultItem`, which a per-friend answer needs
        // to count (SPEC 4.5): those get the fallback, forwarded all the same.
        let per_friend = callgate::catalog::lookup(command)
            .is_some_and(|c| c.family == callgate::catalog::Family::PerFriend);
        let expected = match kind {
            Kind::Notification => "queued",
            Kind::Decision if per_friend => "fallback",
            Kind::Decision => "upstream",
        };
        assert_eq!(
            (answer.status, answer.outcome.as_str()),
            (200, expected),
            "{command}: {}",
            answer.text()
        );
        sent += 1;
    }
    let got = up.wait_for(sent, Duration::from_secs(10)).await;
    for (command, _) in catalog() {
        let body = fixture(command);
        assert!(
            got.iter().any(|r| r.body == body.as_bytes()),
            "{command} not forwarded unchanged"
        );
    }
    gw.shutdown().await;
}
