//! Dead letters: listed, replayed and purged with `callgate outbox`, which
//! refuses a running gateway's outbox; a reload dead-letters deliveries to
//! removed upstreams.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::support::*;

/// 4. After `max_attempts`, a delivery is a dead letter: counted, listed
///    with its attempts and last error, replayed into a later run, or
///    purged.
#[tokio::test]
async fn dead_letters_are_listed_replayed_and_purged() {
    let delivery = retries(3, "20ms", "50ms");
    let bad = Upstream::start(Reply::status(500)).await;
    let gw = Gateway::start(&config(delivery.clone(), &[("legacy", bad.url())])).await;
    let answer = gw.callback(CMD, &body(1)).await;
    assert_eq!(answer.outcome, "queued");
    let m = deliveries("legacy", "dead")
        .value(1.0)
        .eventually(gw.admin(), Duration::from_secs(5))
        .await;
    assert_eq!(dead_letters().get(&m), Some(1.0), "{m}");
    assert_eq!(deliveries("legacy", "retried").get(&m), Some(2.0), "{m}");
    assert_eq!(pending().get(&m), Some(0.0), "{m}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(bad.count(), 3, "attempts after the dead letter");
    let cfg = gw.config_path();
    let dir = stop(gw).await;
    let folder = outbox_dir(dir.path());

    // Listed, by the folder or by the config naming it.
    for args in [
        ["--outbox", arg(&folder), "list", "--dead"],
        ["-c", arg(&cfg), "list", "--dead"],
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
    let out = outbox(&["-c", arg(&cfg), "list"]).await.ok();
    assert!(out.rows().is_empty(), "{}", out.stdout);
    let stats = outbox_stats(&cfg).await;
    assert_eq!(stats.counts(), (1, 0, 1), "{}", stats.stdout);
    assert!(stats.stdout.contains("  legacy: 1"), "{}", stats.stdout);

    // Replayed: back to pending, and delivered by the next run.
    let out = outbox(&["-c", arg(&cfg), "replay", "--dead"]).await.ok();
    assert!(out.stdout.contains("1 dead letters moved back"), "{out:?}");
    let stats = outbox_stats(&cfg).await;
    assert_eq!(
        (stats.stat("pending deliveries"), stats.stat("dead letters")),
        (1, 0),
        "{}",
        stats.stdout
    );
    let good = Upstream::start(Reply::ok()).await;
    let gw = Gateway::start_in(dir, &config(delivery.clone(), &[("legacy", good.url())])).await;
    let got = good.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(request_id(&got[0]), answer.request_id);
    assert_eq!(got[0].body, body(1).as_bytes());
    let m = deliveries("legacy", "delivered")
        .value(1.0)
        .eventually(gw.admin(), Duration::from_secs(5))
        .await;
    assert_eq!(dead_letters().get(&m), Some(0.0), "{m}");
    let dir = stop(gw).await;
    let stats = outbox_stats(&cfg).await;
    assert_eq!(stats.counts(), (0, 0, 0), "{}", stats.stdout);

    // Another dead letter, purged.
    let gw = Gateway::start_in(dir, &config(delivery.clone(), &[("legacy", bad.url())])).await;
    assert_eq!(gw.callback(CMD, &body(2)).await.outcome, "queued");
    dead_letters()
        .value(1.0)
        .eventually(gw.admin(), Duration::from_secs(5))
        .await;
    let dir = stop(gw).await;
    let stats = outbox_stats(&cfg).await;
    let (events, _, dead) = stats.counts();
    assert_eq!((events, dead), (1, 1), "{}", stats.stdout);
    let out = outbox(&["--outbox", arg(&folder), "purge", "--dead"])
        .await
        .ok();
    assert!(out.stdout.contains("1 dead letters deleted"), "{out:?}");
    let stats = outbox_stats(&cfg).await;
    assert_eq!(stats.counts(), (0, 0, 0), "{}", stats.stdout);
    assert!(
        outbox(&["-c", arg(&cfg), "list", "--dead"])
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
    let gw = Gateway::start(&config(
        Config::new().delivery("backoff", "20ms"),
        &[("legacy", up.url())],
    ))
    .await;
    assert_eq!(gw.callback(CMD, &body(1)).await.outcome, "queued");
    up.wait_for(1, Duration::from_secs(5)).await;
    let cfg = gw.config_path();
    let folder = outbox_dir(gw.dir.path());
    for args in [
        vec!["-c", arg(&cfg), "stats"],
        vec!["--outbox", arg(&folder), "list", "--dead"],
        vec!["-c", arg(&cfg), "replay", "--dead"],
        vec!["-c", arg(&cfg), "purge", "--dead"],
    ] {
        let started = Instant::now();
        let out = outbox(&args).await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{args:?} took {:?}",
            started.elapsed()
        );
        assert_eq!(out.code(), Some(1), "{args:?}: {out:#?}");
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
    let stats = outbox_stats(&cfg).await;
    assert_eq!(stats.stat("pending deliveries"), 0, "{}", stats.stdout);
}

/// 7. A reload that removes an upstream dead-letters its pending
///    deliveries at once (no more attempts); the others carry on.
#[tokio::test]
async fn a_reload_removing_an_upstream_dead_letters_its_deliveries() {
    const N: usize = 3;
    let delivery = retries(1000, "100ms", "300ms");
    let gone = Upstream::start(Reply::status(503)).await;
    let healthy = Arc::new(AtomicBool::new(false));
    let kept = Upstream::failing_until(&healthy, 503).await;
    let gw = Gateway::start(&config(
        delivery.clone(),
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
    gw.rewrite(&config(delivery.clone(), &[("kept", kept.url())]));
    gw.gw().reload("test").await.unwrap();
    let at_reload = gone.count();
    let m = deliveries("gone", "dead")
        .value(N as f64)
        .eventually(gw.admin(), Duration::from_secs(5))
        .await;
    assert_eq!(dead_letters().get(&m), Some(N as f64), "{m}");
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
    assert_eq!(pending().get(&m), Some(N as f64), "{m}");
    healthy.store(true, Ordering::SeqCst);
    let a = gw.callback(CMD, &body(N)).await;
    assert_eq!(a.outcome, "queued");
    ids.insert(a.request_id.clone());
    let m = deliveries("kept", "delivered")
        .value((N + 1) as f64)
        .eventually(gw.admin(), Duration::from_secs(5))
        .await;
    assert_eq!(pending().get(&m), Some(0.0), "{m}");
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
    let out = outbox(&["-c", arg(&path), "list", "--dead"]).await.ok();
    let rows = out.rows();
    assert_eq!(rows.len(), N, "{}", out.stdout);
    for (_, upstream, _, line) in &rows {
        assert_eq!(upstream, "gone", "{line}");
        assert!(line.contains("upstream removed"), "{line}");
    }
    let out = outbox(&["-c", arg(&path), "list"]).await.ok();
    assert!(out.rows().is_empty(), "{}", out.stdout);
}
