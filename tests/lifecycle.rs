//! Shutdown drains requests in flight; logs are structured and never carry
//! secrets.

mod support;

use support::*;

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish_and_readyz_reports_draining() {
    let up = Upstream::start(Reply::code(3).after(ms(600))).await;
    let gw = Gateway::start(&Config::catch_all(&up)).await;
    let (im, admin, addr) = (gw.im().clone(), gw.admin().clone(), gw.addr());
    let in_flight = tokio::spawn(async move { im.decision().await });
    up.wait_for(1, secs(5)).await;
    let shutdown = tokio::spawn(gw.shutdown());
    // While draining: not ready, and no new connections.
    assert_eventually!(
        admin.readyz().await == 503,
        secs(2),
        "/readyz never said 503"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting while draining"
    );
    let answer = in_flight.await.unwrap();
    assert_eq!(
        (answer.outcome.as_str(), answer.json()["ErrorCode"].as_i64()),
        ("upstream", Some(3))
    );
    tokio::time::timeout(secs(8), shutdown)
        .await
        .expect("shutdown hung")
        .unwrap();
}

/// Runs the real binary with JSON logs, sends a signed callback, stops it
/// with SIGTERM, and reads every log line.
#[tokio::test]
async fn json_logs_have_one_line_per_callback_and_no_secrets() {
    const TOKEN: &str = "tok-NEVER-IN-LOGS-42";
    let up = Upstream::start(Reply::ok()).await;
    let config = Config::catch_all(&up).signed_app(APP, TOKEN);
    let launch = Binary::launch(&config).json_logs().rust_log("debug");
    let mut gw = launch.start().await;
    let (query, sign) = signed_now(APP, "Group.CallbackBeforeSendMsg", TOKEN);
    let answer = gw.im().post(&query, GROUP_SEND).await;
    assert_eq!(answer.outcome, "upstream");
    let bad = gw
        .im()
        .post(&query.replace(&sign, "0000"), GROUP_SEND)
        .await;
    assert_eq!(bad.status, 401);
    // Config endpoint and a failed reload must not leak it either.
    let config_json = gw.admin().get("/config").await.text;
    assert!(!config_json.contains(TOKEN));

    let status = gw.terminate().await;
    assert_eq!(status.code(), Some(0));
    let log = gw.log();
    assert!(!log.contains(TOKEN), "the token leaked into the logs");
    assert!(!log.contains(&sign), "a Sign leaked into the logs");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"))
        })
        .collect();
    let callbacks: Vec<_> = lines
        .iter()
        .filter(|l| l["message"] == "callback")
        .collect();
    assert_eq!(callbacks.len(), 2, "{log}");
    let ok = callbacks
        .iter()
        .find(|l| l["outcome"] == "upstream")
        .expect("no upstream line");
    assert_eq!(ok["request_id"], answer.request_id.as_str());
    assert_eq!(ok["sdkappid"], APP);
    assert_eq!(ok["command"], "Group.CallbackBeforeSendMsg");
    assert!(
        ok["upstreams"].as_str().unwrap().starts_with("a=ok:0/"),
        "{ok}"
    );
    assert!(ok["duration_ms"].is_number());
    let rejected = callbacks
        .iter()
        .find(|l| l["outcome"] == "rejected")
        .expect("no rejected line");
    assert_eq!(rejected["status"], 401);
}
