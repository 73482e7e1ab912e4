//! The real binary's life as a sidecar: SIGTERM under load answers every
//! request it accepted, and a storm of SIGHUPs changes nothing but the
//! generation.

#[path = "support_old/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::*;

async fn start(up: &Upstream) -> Binary {
    let rest = format!(
        "apps:\n  - sdkappid: {APP}\n{}routes:\n  - match: \"*\"\n    upstreams: [a]\n",
        upstreams_yaml(&[("a", up)])
    );
    Binary::start(&rest, &[], "warn", false).await
}

#[tokio::test]
async fn sigterm_under_load_answers_every_accepted_request() {
    let up = Upstream::start(Reply::code(0).after(Duration::from_millis(150))).await;
    let mut gw = start(&up).await;
    // A fresh connection per request: after SIGTERM new connections are
    // refused (not accepted), while accepted ones must be answered.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let (answered, refused, broken) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for _ in 0..8 {
        let (http, answered, refused, broken, stop) = (
            http.clone(),
            answered.clone(),
            refused.clone(),
            broken.clone(),
            stop.clone(),
        );
        let url = gw.url("Group.CallbackBeforeSendMsg");
        senders.push(tokio::spawn(async move {
            for _ in 0..500 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match http.post(&url).body(GROUP_SEND).send().await {
                    Ok(r) => {
                        let a = Answer::read(r).await;
                        assert_eq!(
                            (a.status, a.outcome.as_str()),
                            (200, "upstream"),
                            "{}",
                            a.text()
                        );
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if e.is_connect() => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => {
                        eprintln!("accepted request without an answer: {e:?}");
                        broken.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    up.wait_for(16, Duration::from_secs(10)).await;
    gw.signal("-TERM");
    let status = tokio::time::timeout(Duration::from_secs(15), gw.child.wait())
        .await
        .expect("no exit")
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    assert_eq!(status.code(), Some(0));
    eprintln!(
        "answered {}, refused after SIGTERM {}, broken {}",
        answered.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        broken.load(Ordering::Relaxed)
    );
    assert_eq!(
        broken.load(Ordering::Relaxed),
        0,
        "accepted requests were left without an answer"
    );
    assert!(answered.load(Ordering::Relaxed) >= 16);
}

#[tokio::test]
async fn a_sighup_storm_reloads_and_drops_nothing() {
    let up = Upstream::start(Reply::ok()).await;
    let mut gw = start(&up).await;
    let http = reqwest::Client::new();
    let url = gw.url("Group.CallbackBeforeSendMsg");
    for i in 0..50 {
        gw.signal("-HUP");
        if i % 5 == 0 {
            let a = Answer::read(http.post(&url).body(GROUP_SEND).send().await.unwrap()).await;
            assert_eq!(a.outcome, "upstream");
        }
    }
    // Signals arriving together may merge; at least some reloads happened
    // and the process is alive and ready.
    let started = Instant::now();
    let generation = loop {
        let config: serde_json::Value = serde_json::from_str(
            &http
                .get(format!("http://{}/config", gw.admin))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        )
        .unwrap();
        let g = config["generation"].as_u64().unwrap();
        if g > 1 || started.elapsed() > Duration::from_secs(5) {
            break g;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(generation > 1, "no reload happened");
    assert_eq!(
        http.get(format!("http://{}/readyz", gw.admin))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(gw.child.try_wait().unwrap().is_none(), "the gateway died");
    gw.child.kill().await.unwrap();
}
