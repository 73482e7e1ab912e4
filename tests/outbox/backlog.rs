//! The backlog: acknowledged at once while upstreams fail, delivered once
//! they recover, a full outbox, and the outbox metrics.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::support::*;

/// 1. While the upstream fails, notifications are acknowledged at once;
///    once it recovers, every one is delivered, each exactly once.
#[tokio::test]
async fn acknowledged_then_delivered_after_the_upstream_recovers() {
    const N: usize = 10;
    const FAILURES: usize = 3 * N;
    let up = Upstream::failing_first(FAILURES, 503).await;
    let gw = Gateway::start(&config(
        retries(50, "20ms", "200ms"),
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
        a.assert_is(200, "queued", OK);
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
    let m = deliveries("legacy", "delivered")
        .value(N as f64)
        .eventually(gw.admin(), Duration::from_secs(5))
        .await;
    assert_eq!(
        deliveries("legacy", "retried").get(&m),
        Some(FAILURES as f64),
        "{m}"
    );
    assert_eq!(pending().get(&m), Some(0.0), "{m}");
    // Nothing more comes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(up.count(), FAILURES + N);
    stop(gw).await;
}

/// 6. A full outbox answers 503 `rejected`, counts the drop, and the
///    dropped notification is never delivered.
#[tokio::test]
async fn a_full_outbox_answers_503_and_drops_the_notification() {
    let hang = Upstream::start(Reply::Hang).await;
    let config = retries(1000, "3s", "3s")
        .delivery("max_pending", 2usize)
        .upstream("hang", Endpoint::from(&hang).timeout("200ms"))
        .route(Route::all(&["hang"]));
    let gw = Gateway::start(&config).await;
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
    assert_eq!(deliveries("hang", "dropped").get(&m), Some(1.0), "{m}");
    assert_eq!(pending().get(&m), Some(2.0), "{m}");
    assert_eq!(requests(CMD, "rejected").get(&m), Some(1.0), "{m}");
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
    let stats = outbox_stats(&cfg).await;
    let (events, pending, _) = stats.counts();
    assert_eq!((events, pending), (2, 2), "{}", stats.stdout);
}

/// 8. A notification to a healthy and a down upstream reaches the healthy
///    one once, and stays pending for the down one only.
#[tokio::test]
async fn one_upstream_down_does_not_repeat_deliveries_to_the_other() {
    let good = Upstream::start(Reply::ok()).await;
    let down = free_addr();
    let gw = Gateway::start(&config(
        retries(1000, "20ms", "100ms"),
        &[("good", good.url()), ("down", url_of(down))],
    ))
    .await;
    let a = gw.callback(CMD, &body(7)).await;
    assert_eq!(a.outcome, "queued");
    let got = good.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(request_id(&got[0]), a.request_id);
    let m = deliveries("down", "retried")
        .at_least(5.0)
        .eventually(gw.admin(), Duration::from_secs(5))
        .await;
    assert_eq!(deliveries("good", "delivered").get(&m), Some(1.0), "{m}");
    assert_eq!(pending().get(&m), Some(1.0), "{m}");
    assert_eq!(good.count(), 1, "the healthy upstream got it again");
    let cfg = gw.config_path();
    let _dir = stop(gw).await;
    let out = outbox(&["-c", arg(&cfg), "list"]).await.ok();
    let rows = out.rows();
    assert_eq!(rows.len(), 1, "{}", out.stdout);
    let (_, upstream, attempts, line) = &rows[0];
    assert_eq!(upstream, "down", "{line}");
    assert!(*attempts >= 5, "{line}");
    assert!(line.contains(&a.request_id), "{line}");
    let stats = outbox_stats(&cfg).await;
    assert_eq!(stats.counts(), (1, 1, 0), "{}", stats.stdout);
    assert!(stats.stdout.contains("  down: 1"), "{}", stats.stdout);
    assert!(!stats.stdout.contains("  good:"), "{}", stats.stdout);
}

/// 9. `callgate_outbox_pending`, `callgate_outbox_oldest_pending_seconds`
///    and the `callgate_delivery_latency_seconds` histogram.
#[tokio::test]
async fn outbox_metrics_follow_the_backlog() {
    const N: usize = 3;
    let healthy = Arc::new(AtomicBool::new(false));
    let up = Upstream::failing_until(&healthy, 503).await;
    let gw = Gateway::start(&config(
        retries(1000, "50ms", "200ms"),
        &[("legacy", up.url())],
    ))
    .await;
    let m = gw.metrics().await;
    assert_eq!(pending().get(&m), Some(0.0), "{m}");
    assert_eq!(
        metric("callgate_outbox_oldest_pending_seconds").get(&m),
        Some(0.0),
        "{m}"
    );
    assert_eq!(
        metric("callgate_delivery_latency_seconds_count").get(&m),
        Some(0.0),
        "{m}"
    );
    let first_sent = Instant::now();
    for n in 0..N {
        assert_eq!(gw.callback(CMD, &body(n)).await.outcome, "queued");
    }
    let m = gw.metrics().await;
    assert_eq!(pending().get(&m), Some(N as f64), "{m}");
    let m = metric("callgate_outbox_oldest_pending_seconds")
        .at_least(1.0)
        .eventually(gw.admin(), Duration::from_secs(5))
        .await;
    let oldest = metric("callgate_outbox_oldest_pending_seconds")
        .get(&m)
        .unwrap();
    assert!(
        oldest <= first_sent.elapsed().as_secs_f64() + 1.0,
        "oldest {oldest} s after {:?}",
        first_sent.elapsed()
    );
    assert_eq!(pending().get(&m), Some(N as f64), "{m}");

    healthy.store(true, Ordering::SeqCst);
    let m = deliveries("legacy", "delivered")
        .value(N as f64)
        .eventually(gw.admin(), Duration::from_secs(5))
        .await;
    let waited = first_sent.elapsed().as_secs_f64();
    assert_eq!(pending().get(&m), Some(0.0), "{m}");
    let count = metric("callgate_delivery_latency_seconds_count").get(&m);
    assert_eq!(count, Some(N as f64), "{m}");
    // Each waited at least ~1 s (the oldest gauge said so) and at most as
    // long as this test has run.
    let sum = metric("callgate_delivery_latency_seconds_sum")
        .get(&m)
        .unwrap();
    assert!(
        sum >= 0.9 * N as f64 && sum <= waited * N as f64 + 0.5,
        "latency sum {sum} for {N} deliveries after {waited} s"
    );
    let buckets = metric("callgate_delivery_latency_seconds").buckets(&m);
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
    metric("callgate_outbox_oldest_pending_seconds")
        .value(0.0)
        .eventually(gw.admin(), Duration::from_secs(3))
        .await;
    stop(gw).await;
}
