//! The real binary's life as a sidecar: SIGTERM under load answers every
//! request it accepted, and a storm of SIGHUPs changes nothing but the
//! generation.

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::*;

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

struct Running {
    child: tokio::process::Child,
    listen: SocketAddr,
    admin: SocketAddr,
    _dir: tempfile::TempDir,
}

async fn start(up: &Upstream) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let (listen, admin) = (free_addr(), free_addr());
    let config = dir.path().join("routes.yaml");
    std::fs::write(
        &config,
        format!(
            "listeners:\n  - addr: \"{listen}\"\nadmin:\n  addr: \"{admin}\"\napps:\n  - sdkappid: {APP}\n{}routes:\n  - match: \"*\"\n    upstreams: [a]\n",
            upstreams_yaml(&[("a", up)])
        ),
    )
    .unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["run", "-c"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let started = Instant::now();
    while http
        .get(format!("http://{admin}/readyz"))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(started.elapsed() < Duration::from_secs(10), "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Running {
        child,
        listen,
        admin,
        _dir: dir,
    }
}

fn signal(pid: u32, sig: &str) {
    assert!(
        std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

#[tokio::test]
async fn sigterm_under_load_answers_every_accepted_request() {
    let up = Upstream::start(Reply::code(0).after(Duration::from_millis(150))).await;
    let mut gw = start(&up).await;
    let pid = gw.child.id().unwrap();
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
        let url = format!(
            "http://{}/im?SdkAppid={APP}&CallbackCommand=Group.CallbackBeforeSendMsg",
            gw.listen
        );
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
    signal(pid, "-TERM");
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
    let pid = gw.child.id().unwrap();
    let http = reqwest::Client::new();
    let url = format!(
        "http://{}/im?SdkAppid={APP}&CallbackCommand=Group.CallbackBeforeSendMsg",
        gw.listen
    );
    for i in 0..50 {
        signal(pid, "-HUP");
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
