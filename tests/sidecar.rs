//! The real binary's life as a sidecar: SIGTERM under load answers every
//! request it accepted, and a storm of SIGHUPs changes nothing but the
//! generation.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use support::*;

const CMD: &str = "Group.CallbackBeforeSendMsg";

/// What the senders saw, and when they should stop.
#[derive(Default)]
struct Load {
    answered: AtomicUsize,
    refused: AtomicUsize,
    broken: AtomicUsize,
    stop: AtomicBool,
}

#[tokio::test]
async fn sigterm_under_load_answers_every_accepted_request() {
    let up = Upstream::start(Reply::code(0).after(ms(150))).await;
    let mut gw = Binary::start_quiet(&Config::catch_all(&up)).await;
    // A fresh connection per request (the IM client does not pool): after
    // SIGTERM new connections are refused (not accepted), while accepted
    // ones must be answered.
    let load = Arc::new(Load::default());
    let mut senders = Vec::new();
    for _ in 0..8 {
        let (im, load) = (gw.im().clone(), load.clone());
        senders.push(tokio::spawn(async move {
            for _ in 0..500 {
                if load.stop.load(Ordering::Relaxed) {
                    break;
                }
                match im.try_callback(CMD, GROUP_SEND).await {
                    Ok(a) => {
                        assert_eq!(
                            (a.status, a.outcome.as_str()),
                            (200, "upstream"),
                            "{}",
                            a.text()
                        );
                        load.answered.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if e.is_connect() => {
                        load.refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(ms(20)).await;
                    }
                    Err(e) => {
                        eprintln!("accepted request without an answer: {e:?}");
                        load.broken.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    up.wait_for(16, secs(10)).await;
    let status = gw.terminate().await;
    load.stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    assert_eq!(status.code(), Some(0));
    eprintln!(
        "answered {}, refused after SIGTERM {}, broken {}",
        load.answered.load(Ordering::Relaxed),
        load.refused.load(Ordering::Relaxed),
        load.broken.load(Ordering::Relaxed)
    );
    assert_eq!(
        load.broken.load(Ordering::Relaxed),
        0,
        "accepted requests were left without an answer"
    );
    assert!(load.answered.load(Ordering::Relaxed) >= 16);
}

#[tokio::test]
async fn a_sighup_storm_reloads_and_drops_nothing() {
    let up = Upstream::start(Reply::ok()).await;
    let mut gw = Binary::start_quiet(&Config::catch_all(&up)).await;
    for i in 0..50 {
        gw.signal("-HUP");
        if i % 5 == 0 {
            assert_eq!(gw.callback(CMD, GROUP_SEND).await.outcome, "upstream");
        }
    }
    // Signals arriving together may merge; at least some reloads happened
    // and the process is alive and ready.
    assert_eventually!(
        gw.admin().generation().await > 1,
        secs(5),
        "no reload happened"
    );
    assert_eq!(gw.admin().readyz().await, 200);
    assert!(gw.try_wait().is_none(), "the gateway died");
    gw.kill().await;
}
