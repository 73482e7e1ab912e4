//! Shutdown drains requests in flight; logs are structured and never carry
//! secrets.

mod support;

use std::time::{Duration, Instant};

use support::*;

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish_and_readyz_reports_draining() {
    let up = Upstream::start(Reply::code(3).after(Duration::from_millis(600))).await;
    let gw = Gateway::start(&format!(
        "{}routes:\n  - match: \"*\"\n    upstreams: [a]\n",
        upstreams_yaml(&[("a", &up)])
    ))
    .await;
    let url = format!(
        "{}?SdkAppid={APP}&CallbackCommand=Group.CallbackBeforeSendMsg",
        gw.base()
    );
    let admin = gw.admin();
    let addr = gw.addr();
    let http = gw.http.clone();
    let in_flight = tokio::spawn({
        let http = http.clone();
        async move { Answer::read(http.post(url).body(GROUP_SEND).send().await.unwrap()).await }
    });
    up.wait_for(1, Duration::from_secs(5)).await;
    let shutdown = tokio::spawn(gw.shutdown());
    // While draining: not ready, and no new connections.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let r = http.get(format!("{admin}/readyz")).send().await.unwrap();
        if r.status() == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "/readyz never said 503");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting while draining"
    );
    let answer = in_flight.await.unwrap();
    assert_eq!(
        (answer.outcome.as_str(), answer.json()["ErrorCode"].as_i64()),
        ("upstream", Some(3))
    );
    tokio::time::timeout(Duration::from_secs(8), shutdown)
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
    let rest = format!(
        "apps:\n  - sdkappid: {APP}\n    token: \"{TOKEN}\"\n{}routes:\n  - match: \"*\"\n    upstreams: [a]\n",
        upstreams_yaml(&[("a", &up)])
    );
    let mut gw = Binary::start(&rest, &["--log-format", "json"], "debug", true).await;
    let (listen, admin) = (gw.listen, gw.admin);
    let http = reqwest::Client::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let sign = callgate::validate::expected_sign(TOKEN, &now);
    let url = format!(
        "http://{listen}/im?SdkAppid={APP}&CallbackCommand=Group.CallbackBeforeSendMsg&RequestTime={now}&Sign={sign}"
    );
    let answer = Answer::read(http.post(&url).body(GROUP_SEND).send().await.unwrap()).await;
    assert_eq!(answer.outcome, "upstream");
    let bad = Answer::read(
        http.post(url.replace(&sign, "0000"))
            .body(GROUP_SEND)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(bad.status, 401);
    // Config endpoint and a failed reload must not leak it either.
    let config_json = http
        .get(format!("http://{admin}/config"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!config_json.contains(TOKEN));

    gw.signal("-TERM");
    let status = tokio::time::timeout(Duration::from_secs(15), gw.child.wait())
        .await
        .expect("no exit after SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(gw.child.stderr.as_mut().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert!(!stderr.contains(TOKEN), "the token leaked into the logs");
    assert!(!stderr.contains(&sign), "a Sign leaked into the logs");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"))
        })
        .collect();
    let callbacks: Vec<_> = lines
        .iter()
        .filter(|l| l["message"] == "callback")
        .collect();
    assert_eq!(callbacks.len(), 2, "{stderr}");
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
