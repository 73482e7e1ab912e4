//! `callgate run` as a real process: ready, serving, reloading on SIGHUP,
//! stopping on SIGTERM and SIGINT, and its exit codes and log lines.

use std::time::{Duration, Instant};

use crate::TOKEN;
use crate::support::*;
use crate::write;

#[tokio::test]
async fn run_serves_and_exits_0_on_sigterm() {
    let up = Upstream::start(Reply::ok()).await;
    let mut gw = Binary::start(&Config::catch_all(&up)).await;

    let a = gw.decision().await;
    assert_eq!(
        (a.status, a.outcome.as_str()),
        (200, "upstream"),
        "{}",
        a.text()
    );
    let received = up.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(received[0].body, GROUP_SEND.as_bytes());

    let started = Instant::now();
    let status = gw.terminate().await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", gw.log());
    // Nothing in flight: no reason to use the 10 s drain window.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    // The ports are released.
    std::net::TcpListener::bind(gw.listen).unwrap();
    std::net::TcpListener::bind(gw.admin().addr).unwrap();
}

#[tokio::test]
async fn run_uses_callgate_config_and_exits_0_on_sigint() {
    let up = Upstream::start(Reply::ok()).await;
    let mut gw = Binary::launch(&Config::catch_all(&up))
        .config_from_env()
        .start()
        .await;
    let a = gw.decision().await;
    assert_eq!(a.outcome, "upstream");
    gw.signal("-INT");
    let status = gw.exit_within(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", gw.log());
}

#[tokio::test]
async fn run_with_an_invalid_config_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::new()
        .listener(Listener::at("127.0.0.1:18080"))
        .no_apps()
        .route(Route::all(&["nowhere"]));
    let bad = write(dir.path(), "bad.yaml", &config.yaml());
    let out = exec(&["run", "-c", arg(&bad)]).await;
    out.expect_code(2, "run with an invalid config");
    assert!(out.all().contains("nowhere"), "{out:#?}");
    let out = exec(&["run", "-c", arg(&dir.path().join("absent.yaml"))]).await;
    out.expect_code(2, "run with a missing config");

    // Through CALLGATE_CONFIG too.
    let mut c = callgate();
    c.arg("run").env("CALLGATE_CONFIG", &bad);
    exec_with(c, None)
        .await
        .expect_code(2, "CALLGATE_CONFIG=bad");
}

#[tokio::test]
async fn run_when_the_listener_port_is_taken_exits_1() {
    let up = Upstream::start(Reply::ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let config = Config::catch_all(&up)
        .listener(Listener::at(addr))
        .admin(free_addr());
    let path = write(dir.path(), "run.yaml", &config.yaml());
    let out = exec(&["run", "-c", arg(&path)]).await;
    out.expect_code(1, "run on a taken port");
    assert!(
        out.stderr.contains(&addr.port().to_string()),
        "the address is named: {out:#?}"
    );
    drop(taken);
}

#[tokio::test]
async fn run_reloads_on_sighup() {
    let a = Upstream::start(Reply::tagged("a")).await;
    let b = Upstream::start(Reply::tagged("b")).await;
    let mut gw = Binary::start(&Config::catch_all(&a)).await;
    let answer = |gw: &Binary| {
        let im = gw.im().clone();
        async move { im.decision().await }
    };
    assert!(answer(&gw).await.text().contains("\"a\""));

    gw.rewrite(&Config::catch_all(&b));
    gw.signal("-HUP");
    // The reload is asynchronous: poll (bounded) until b answers.
    assert_eventually!(
        answer(&gw).await.text().contains("\"b\""),
        Duration::from_secs(10),
        "SIGHUP did not reload:\n{}",
        gw.log()
    );
    let status = gw.terminate().await;
    assert_eq!(status.code(), Some(0), "{}", gw.log());
}

#[tokio::test]
async fn run_logs_one_json_line_per_callback_without_secrets() {
    let up = Upstream::start(Reply::ok()).await;
    let config = Config::catch_all(&up).signed_app(SIGNED_APP, TOKEN);
    let mut gw = Binary::launch(&config).json_logs().start().await;
    let (query, _) = signed_now(SIGNED_APP, "Group.CallbackBeforeSendMsg", TOKEN);
    let a = gw.im().post(&query, GROUP_SEND).await;
    assert_eq!(a.outcome, "upstream", "{}", a.text());
    assert_eq!(gw.terminate().await.code(), Some(0));

    let log = gw.log();
    assert!(
        !log.contains(TOKEN),
        "the token leaked into the log:\n{log}"
    );
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"))
        })
        .collect();
    let callbacks: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l.to_string().contains(&a.request_id))
        .collect();
    assert_eq!(callbacks.len(), 1, "one line per callback:\n{log}");
    let line = callbacks[0].to_string();
    for want in [
        &SIGNED_APP.to_string(),
        "Group.CallbackBeforeSendMsg",
        "upstream",
    ] {
        assert!(line.contains(want), "{want:?} missing from {line}");
    }
}
