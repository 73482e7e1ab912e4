//! Restarts: what was acknowledged survives a graceful restart, a SIGKILL
//! and a shutdown with attempts in flight.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::support::*;

/// 2. Notifications queued while the upstream is down survive a graceful
///    restart of the gateway and are delivered by the next run.
#[tokio::test]
async fn delivered_after_a_graceful_restart() {
    const N: usize = 20;
    let addr = free_addr();
    let yaml = config(retries(1000, "200ms", "1s"), &[("legacy", url_of(addr))]);
    let gw = Gateway::start(&yaml).await;
    let mut sent = HashMap::new();
    for n in 0..N {
        let a = gw.callback(CMD, &body(n)).await;
        assert_eq!((a.status, a.outcome.as_str()), (200, "queued"), "{a:?}");
        sent.insert(a.request_id, body(n));
    }
    // Every one was tried (and refused) at least once.
    let m = deliveries("legacy", "retried")
        .at_least(N as f64)
        .eventually(gw.admin(), Duration::from_secs(5))
        .await;
    assert_eq!(pending().get(&m), Some(N as f64), "{m}");
    let dir = stop(gw).await;

    let up = Upstream::builder().bind(addr).start().await;
    let gw = Gateway::start_in(dir, &yaml).await;
    let all_delivered = || {
        let ids: HashSet<String> = up.received().iter().map(request_id).collect();
        sent.keys().all(|id| ids.contains(id))
    };
    assert_eventually!(
        all_delivered(),
        Duration::from_secs(10),
        "timed out: every notification delivered after the restart"
    );
    pending()
        .value(0.0)
        .eventually(gw.admin(), Duration::from_secs(5))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = up.received();
    for r in &got {
        let id = request_id(r);
        let expected = sent
            .get(&id)
            .unwrap_or_else(|| panic!("unknown request id {id}"));
        assert_eq!(r.body, expected.as_bytes());
    }
    // Nothing was delivered before the restart, so nothing is repeated.
    assert_eq!(got.len(), N, "duplicates after a graceful restart");
    stop(gw).await;
}

/// What the senders of the SIGKILL test sent and saw acknowledged.
#[derive(Default)]
struct Load {
    next: AtomicUsize,
    acks: AtomicUsize,
    acked: Mutex<HashSet<usize>>,
    unexpected: Mutex<Vec<String>>,
}

/// 3. SIGKILL while notifications pour in: every notification that was
///    acknowledged is delivered by the next run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_notifications_survive_sigkill() {
    const SENDERS: usize = 8;
    const KILL_AFTER: usize = 200;
    let upstream = free_addr();
    let config = config(
        retries(1000, "50ms", "500ms"),
        &[("legacy", url_of(upstream))],
    );
    let mut gw = Binary::start(&config).await;

    // A pooled client: the answer's head is all a sender reads.
    let http = pooled_client();
    let load = Arc::new(Load::default());
    let url = format!("{}?SdkAppid={APP}&CallbackCommand={CMD}", gw.im().base());
    let mut senders = Vec::new();
    for _ in 0..SENDERS {
        let (http, load, url) = (http.clone(), load.clone(), url.clone());
        senders.push(tokio::spawn(async move {
            for _ in 0..5_000 {
                let n = load.next.fetch_add(1, Ordering::SeqCst);
                match http.post(&url).body(body(n)).send().await {
                    // The answer's head is only sent after the durable
                    // commit: this is the acknowledgement.
                    Ok(r) if r.status() == 200 => {
                        let outcome = r.headers().get("x-callgate-outcome").cloned();
                        if outcome.as_ref().and_then(|v| v.to_str().ok()) == Some("queued") {
                            load.acked.lock().unwrap().insert(n);
                            load.acks.fetch_add(1, Ordering::SeqCst);
                        } else {
                            load.unexpected
                                .lock()
                                .unwrap()
                                .push(format!("{n}: {outcome:?}"));
                        }
                    }
                    Ok(r) => load
                        .unexpected
                        .lock()
                        .unwrap()
                        .push(format!("{n}: status {}", r.status())),
                    // The gateway was killed.
                    Err(_) => return,
                }
            }
        }));
    }
    assert_eventually!(
        load.acks.load(Ordering::SeqCst) >= KILL_AFTER,
        Duration::from_secs(20),
        "only {} acknowledgements in 20 s:\n{}",
        load.acks.load(Ordering::SeqCst),
        gw.log()
    );
    gw.signal("-KILL");
    let status = gw.exit_within(Duration::from_secs(10)).await;
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    for s in senders {
        tokio::time::timeout(Duration::from_secs(15), s)
            .await
            .expect("a sender hung after the kill")
            .unwrap();
    }
    let sent = load.next.load(Ordering::SeqCst);
    let acked: HashSet<usize> = load.acked.lock().unwrap().clone();
    assert!(
        load.unexpected.lock().unwrap().is_empty(),
        "answers other than 200 queued: {:?}",
        load.unexpected.lock().unwrap()
    );

    // The upstream comes up; the gateway starts again on the same config.
    let up = Upstream::builder().bind(upstream).start().await;
    gw.restart().await;
    let missing = || {
        let got: HashSet<usize> = up
            .received()
            .iter()
            .filter_map(|r| group_of(&r.body))
            .collect();
        let mut missing: Vec<usize> = acked.difference(&got).copied().collect();
        missing.sort_unstable();
        missing
    };
    assert_eventually!(
        missing().is_empty(),
        Duration::from_secs(30),
        "{} acknowledged notifications never arrived (e.g. {:?}):\n{}",
        missing().len(),
        &missing()[..missing().len().min(10)],
        gw.log()
    );
    // Let the rest (stored but not acknowledged before the kill) drain.
    pending()
        .value(0.0)
        .eventually(gw.admin(), Duration::from_secs(10))
        .await;
    let got = up.received();
    let mut per_body: HashMap<usize, usize> = HashMap::new();
    for r in &got {
        let n = group_of(&r.body).expect("a body we sent");
        *per_body.entry(n).or_default() += 1;
    }
    let duplicates = got.len() - per_body.len();
    let unacked_delivered = per_body.keys().filter(|n| !acked.contains(n)).count();
    println!(
        "crash test: sent {sent}, acknowledged {}, received {} requests for {} distinct \
         notifications ({unacked_delivered} of them not acknowledged before the kill), \
         {duplicates} duplicates",
        acked.len(),
        got.len(),
        per_body.len()
    );
    assert!(per_body.keys().all(|n| *n < sent));
    let status = gw.terminate().await;
    assert_eq!(status.code(), Some(0), "{}", gw.log());
    let stats = outbox_stats(gw.config_path()).await;
    assert_eq!(
        (stats.stat("pending deliveries"), stats.stat("dead letters")),
        (0, 0),
        "{}",
        stats.stdout
    );
}

/// 10. A graceful shutdown starts no new delivery attempts, ends within
///     its grace, and leaves nothing running that holds the outbox: a new
///     gateway can open it at once.
#[tokio::test]
async fn shutdown_starts_no_new_attempts_and_releases_the_outbox() {
    const N: usize = 40;
    // Fails, slowly: attempts overlap and retries keep coming due.
    let up = Upstream::start(Reply::status(503).after(Duration::from_millis(100))).await;
    let yaml = config(retries(100000, "20ms", "40ms"), &[("legacy", up.url())]);
    let mut gw = Gateway::start(&yaml).await;
    for n in 0..N {
        assert_eq!(gw.callback(CMD, &body(n)).await.outcome, "queued");
    }
    up.wait_for(2 * N, Duration::from_secs(5)).await;
    let before = up.count();
    let started = Instant::now();
    tokio::time::timeout(
        GRACE + Duration::from_secs(5),
        gw.gw.take().unwrap().shutdown(GRACE),
    )
    .await
    .expect("shutdown hung");
    let took = started.elapsed();
    let during = up.count() - before;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = up.count() - before - during;
    // At most one attempt per delivery was in flight when it began.
    assert!(
        took < Duration::from_secs(2) && during <= N && after == 0,
        "shutdown took {took:?} (grace {GRACE:?}); {during} requests reached the upstream \
         during it, {after} after it returned"
    );
    let gw = Gateway::start_in(gw.dir, &yaml).await;
    stop(gw).await;
}

/// 11. A delivery attempt still hanging when the shutdown grace ends does
///     not outlive the gateway: the outbox can be opened again at once.
#[tokio::test]
async fn a_hanging_attempt_does_not_keep_the_outbox_open_after_shutdown() {
    let hang = Upstream::start(Reply::Hang).await;
    let yaml = config(
        Config::new().delivery("backoff", "20ms"),
        &[("legacy", hang.url())],
    );
    let mut gw = Gateway::start(&yaml).await;
    let a = gw.callback(CMD, &body(1)).await;
    assert_eq!(a.outcome, "queued");
    hang.wait_for(1, Duration::from_secs(5)).await;
    tokio::time::timeout(
        Duration::from_secs(6),
        gw.gw.take().unwrap().shutdown(Duration::from_secs(1)),
    )
    .await
    .expect("shutdown hung");
    let cfg = gw.config_path();
    // Kept for the next run, which can open the outbox.
    let ok = Upstream::start(Reply::ok()).await;
    let gw = Gateway::start_in(
        gw.dir,
        &config(
            Config::new().delivery("backoff", "20ms"),
            &[("legacy", ok.url())],
        ),
    )
    .await;
    let got = ok.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(request_id(&got[0]), a.request_id);
    let _dir = stop(gw).await;
    let stats = outbox_stats(&cfg).await;
    assert_eq!(stats.stat("pending deliveries"), 0, "{}", stats.stdout);
}
