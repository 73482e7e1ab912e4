//! SPEC 4.2, notifications: acknowledged at once, delivered to every
//! upstream independently, retried with backoff, dead-lettered, bounded.

mod support;

use std::time::{Duration, Instant};

use support::*;

const CMD: &str = "Group.CallbackAfterNewMemberJoin";

fn delivery(max_attempts: u32, extra: &str) -> String {
    format!(
        "delivery:\n  max_attempts: {max_attempts}\n  backoff: 20ms\n  max_backoff: 100ms\n{extra}"
    )
}

#[tokio::test]
async fn acknowledged_at_once_and_delivered_to_every_upstream() {
    let slow = Upstream::start(Reply::ok().after(Duration::from_millis(1500))).await;
    let fast = Upstream::start(Reply::ok()).await;
    let gw = Gateway::start(&format!(
        "{}routes:\n  - match: \"Group.CallbackAfter*\"\n    upstreams: [slow, fast]\n",
        upstreams_yaml(&[("slow", &slow), ("fast", &fast)])
    ))
    .await;
    let started = Instant::now();
    let answer = gw.callback(CMD, MEMBER_JOIN).await;
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "not acknowledged at once"
    );
    assert_eq!(
        (answer.status, answer.outcome.as_str(), answer.text()),
        (200, "queued", OK)
    );
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
    let gw = Gateway::start(&format!(
        "{}{}routes:\n  - match: \"*\"\n    upstreams: [flaky, steady]\n",
        delivery(8, ""),
        upstreams_yaml(&[("flaky", &flaky), ("steady", &steady)])
    ))
    .await;
    assert_eq!(gw.callback(CMD, MEMBER_JOIN).await.outcome, "queued");
    let got = flaky.wait_for(3, Duration::from_secs(5)).await;
    assert!(got.iter().all(|r| r.body == MEMBER_JOIN.as_bytes()));
    // The healthy upstream got it once, whatever the flaky one did.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!((flaky.count(), steady.count()), (3, 1));
    let m = gw.metrics().await;
    assert!(
        m.contains(r#"callgate_deliveries_total{upstream="flaky",result="retried"} 2"#),
        "{m}"
    );
    assert!(
        m.contains(r#"callgate_deliveries_total{upstream="flaky",result="delivered"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"callgate_deliveries_total{upstream="steady",result="delivered"} 1"#),
        "{m}"
    );
    assert!(m.contains("callgate_outbox_pending 0"), "{m}");
    gw.shutdown().await;
}

#[tokio::test]
async fn deliveries_are_dead_lettered_after_max_attempts() {
    let down = Upstream::start(Reply::status(503)).await;
    let gw = Gateway::start(&format!(
        "{}{}routes:\n  - match: \"*\"\n    upstreams: [down]\n",
        delivery(3, ""),
        upstreams_yaml(&[("down", &down)])
    ))
    .await;
    assert_eq!(gw.callback(CMD, MEMBER_JOIN).await.outcome, "queued");
    down.wait_for(3, Duration::from_secs(5)).await;
    // No fourth attempt comes.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(down.count(), 3);
    let m = gw.metrics().await;
    assert!(
        m.contains(r#"callgate_deliveries_total{upstream="down",result="dead"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"callgate_deliveries_total{upstream="down",result="retried"} 2"#),
        "{m}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_full_queue_answers_503_and_counts_the_drop() {
    let hang = Upstream::start(Reply::Hang).await;
    let gw = Gateway::start(&format!(
        "{}{}routes:\n  - match: \"*\"\n    upstreams: [hang]\n",
        delivery(8, "  max_pending: 1\n"),
        upstreams_yaml(&[("hang", &hang)])
    ))
    .await;
    assert_eq!(gw.callback(CMD, MEMBER_JOIN).await.outcome, "queued");
    let full = gw.callback(CMD, MEMBER_JOIN).await;
    full.assert_rejected(503, "full");
    let m = gw.metrics().await;
    assert!(
        m.contains(r#"callgate_deliveries_total{upstream="hang",result="dropped"} 1"#),
        "{m}"
    );
    assert!(m.contains("callgate_outbox_pending 1"), "{m}");
    gw.shutdown().await;
}

#[tokio::test]
async fn unrouted_notifications_are_acknowledged_and_counted() {
    let up = Upstream::start(Reply::ok()).await;
    let gw = Gateway::start(&format!(
        "{}routes:\n  - match: \"C2C.*\"\n    upstreams: [a]\n",
        upstreams_yaml(&[("a", &up)])
    ))
    .await;
    let answer = gw.callback(CMD, MEMBER_JOIN).await;
    assert_eq!(
        (answer.status, answer.outcome.as_str(), answer.text()),
        (200, "unrouted", OK)
    );
    let m = gw.metrics().await;
    assert!(
        m.contains(r#"callgate_requests_total{command="Group.CallbackAfterNewMemberJoin",outcome="unrouted"} 1"#),
        "{m}"
    );
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
    let gw = Gateway::start(&format!(
        "{}routes:\n  - match: \"*\"\n    upstreams: [a]\n",
        upstreams_yaml(&[("a", &up)])
    ))
    .await;
    let mut sent = 0;
    for command in callgate::catalog::COMMANDS {
        let body = fixture(command.name);
        let answer = gw.callback(command.name, &body).await;
        // A plain OK lacks `ResultItem`, which a per-friend answer needs
        // to count (SPEC 4.5): those get the fallback, forwarded all the same.
        let expected = match (command.kind, command.family) {
            (callgate::catalog::Kind::Notification, _) => "queued",
            (_, callgate::catalog::Family::PerFriend) => "fallback",
            _ => "upstream",
        };
        assert_eq!(
            (answer.status, answer.outcome.as_str()),
            (200, expected),
            "{}: {}",
            command.name,
            answer.text()
        );
        sent += 1;
    }
    let got = up.wait_for(sent, Duration::from_secs(10)).await;
    for command in callgate::catalog::COMMANDS {
        let body = fixture(command.name);
        assert!(
            got.iter().any(|r| r.body == body.as_bytes()),
            "{} not forwarded unchanged",
            command.name
        );
    }
    gw.shutdown().await;
}
