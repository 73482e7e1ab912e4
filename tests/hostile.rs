//! Hostile clients and broken upstreams: each gets a clear answer or a
//! closed connection, nothing crashes, other clients are unaffected, and
//! nothing bad reaches an upstream.

mod support;

use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CMD: &str = "Group.CallbackBeforeSendMsg";

/// A gateway on `config` routing everything to `up`, with a deadline.
async fn gateway_to(up: &Upstream, config: Config) -> Gateway {
    let route = Route::all(&["a"]).deadline("800ms");
    Gateway::start(&config.upstream("a", up).route(route)).await
}

/// Sends raw bytes, returns everything the server sent before closing
/// (bounded by `limit`).
async fn raw(addr: std::net::SocketAddr, bytes: &[u8], limit: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline.into(), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                // One answer is enough; keep-alive would otherwise wait.
                if got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() > 40 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_millis(50), s.read(&mut buf)).await
                    {
                        got.extend_from_slice(&buf[..n]);
                    }
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn post(query: &str, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "POST /im?{query} HTTP/1.1\r\nhost: x\r\n{headers}content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn oversized_headers_and_too_many_headers_are_refused() {
    let up = Upstream::start(Reply::ok()).await;
    let gw = gateway_to(&up, Config::new()).await;
    let q = format!("SdkAppid={APP}&CallbackCommand={CMD}");
    let huge = format!("x-big: {}\r\n", "a".repeat(1024 * 1024));
    let many: String = (0..500).map(|i| format!("x-h{i}: v\r\n")).collect();
    for headers in [huge, many] {
        let answer = raw(gw.addr(), &post(&q, &headers, GROUP_SEND), secs(5)).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
            "{answer}"
        );
    }
    assert_eq!(up.count(), 0);
    assert_eq!(gw.callback(CMD, GROUP_SEND).await.outcome, "upstream");
    gw.shutdown().await;
}

#[tokio::test]
async fn an_endless_chunked_body_is_cut_off_at_max_body() {
    let up = Upstream::start(Reply::ok()).await;
    let gw = gateway_to(&up, Config::new().limits("max_body", "64KiB")).await;
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    let head = format!(
        "POST /im?SdkAppid={APP}&CallbackCommand={CMD} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 8192, " ".repeat(8192));
    let started = Instant::now();
    let mut sent = 0usize;
    // Keep sending until the gateway answers or closes (bounded).
    let mut answer = Vec::new();
    while started.elapsed() < Duration::from_secs(5) && sent < 64 * 1024 * 1024 {
        if s.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
        sent += 8192;
        let mut buf = [0u8; 1024];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut buf)).await {
            answer.extend_from_slice(&buf[..n]);
            break;
        }
    }
    let mut buf = [0u8; 1024];
    if answer.is_empty()
        && let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await
    {
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        sent < 8 * 1024 * 1024,
        "the gateway kept reading {sent} bytes"
    );
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn invalid_percent_encoding_and_non_utf8_are_answered_not_crashed() {
    let up = Upstream::start(Reply::ok()).await;
    let gw = gateway_to(&up, Config::new()).await;
    let cases: Vec<Vec<u8>> = vec![
        post(
            &format!("SdkAppid={APP}&CallbackCommand=%ZZ%"),
            "",
            GROUP_SEND,
        ),
        post(
            "SdkAppid=%31%34%30%30%30%30%30%30%30%31%FF&CallbackCommand=X",
            "",
            GROUP_SEND,
        ),
        post(
            &format!("SdkAppid={APP}&CallbackCommand=%FF%FE"),
            "",
            GROUP_SEND,
        ),
        [
            b"POST /im?SdkAppid=1\xff\xfe HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}"
                .as_slice(),
        ]
        .concat(),
        post(
            &format!("SdkAppid={APP}&CallbackCommand={CMD}"),
            "",
            "{\"GroupId\":\"\u{0}\"}",
        ),
        [
            post(&format!("SdkAppid={APP}&CallbackCommand={CMD}"), "", ""),
            vec![],
        ]
        .concat(),
    ];
    let mut body_bad = post(
        &format!("SdkAppid={APP}&CallbackCommand={CMD}"),
        "",
        "{\"a\":\"xx\"}",
    );
    let n = body_bad.len();
    body_bad[n - 4] = 0xff;
    body_bad[n - 3] = 0xfe;
    for case in cases.iter().chain([&body_bad]) {
        let answer = raw(gw.addr(), case, Duration::from_secs(5)).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
            "{}\n=> {answer}",
            String::from_utf8_lossy(case)
        );
    }
    assert_eq!(up.count(), 0);
    assert_eq!(gw.callback(CMD, GROUP_SEND).await.outcome, "upstream");
    gw.shutdown().await;
}

#[tokio::test]
async fn clients_that_vanish_mid_request_leave_nothing_behind() {
    let up = Upstream::start(Reply::ok().after(Duration::from_millis(200))).await;
    let gw = gateway_to(&up, Config::new()).await;
    for cut in [10, GROUP_SEND.len() / 2] {
        let mut s = TcpStream::connect(gw.addr()).await.unwrap();
        let req = post(
            &format!("SdkAppid={APP}&CallbackCommand={CMD}"),
            "",
            GROUP_SEND,
        );
        let head_len = req.len() - GROUP_SEND.len();
        s.write_all(&req[..head_len + cut]).await.unwrap();
        drop(s);
    }
    // A client that leaves while its decision is being made.
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(&post(
        &format!("SdkAppid={APP}&CallbackCommand={CMD}"),
        "",
        GROUP_SEND,
    ))
    .await
    .unwrap();
    up.wait_for(1, Duration::from_secs(5)).await;
    drop(s);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gw.callback(CMD, GROUP_SEND).await.outcome, "upstream");
    let m = gw.metrics().await;
    let open = metric("callgate_open_connections").get(&m);
    assert!(open == Some(1.0) || open == Some(0.0), "{m}");
    gw.shutdown().await;
}

#[tokio::test]
async fn huge_upstream_answers_are_not_returned() {
    let huge = format!(r#"{{"ErrorCode":0,"Pad":"{}"}}"#, "x".repeat(200 * 1024));
    let up = Upstream::start(Reply::json(&huge)).await;
    let gw = gateway_to(&up, Config::new().limits("max_body", "64KiB")).await;
    let answer = gw.callback(CMD, GROUP_SEND).await;
    assert_eq!((answer.outcome.as_str(), answer.text()), ("fallback", OK));
    upstream_requests("a", "bad_answer")
        .value(1.0)
        .assert_in(&gw.metrics().await);
    gw.shutdown().await;
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let target = Upstream::start(Reply::code(1)).await;
    let redirect = Upstream::start(Reply::redirect(&target.url())).await;
    let gw = Gateway::start(&Config::catch_all(&redirect)).await;
    let answer = gw.callback(CMD, GROUP_SEND).await;
    assert_eq!((answer.outcome.as_str(), answer.text()), ("fallback", OK));
    assert_eq!(target.count(), 0, "a redirect was followed");
    gw.shutdown().await;
}

#[tokio::test]
async fn an_answer_with_a_wrong_content_type_still_counts_when_it_is_json() {
    // IM itself only looks at the JSON; so does callgate.
    let up = Upstream::start(Reply::code(1)).await;
    let gw = gateway_to(&up, Config::new()).await;
    assert_eq!(gw.callback(CMD, GROUP_SEND).await.json()["ErrorCode"], 1);
    gw.shutdown().await;
}

/// The upstream restarts: the pool notices its dead connections and the
/// next callbacks reach the new process.
#[tokio::test]
async fn the_upstream_pool_recovers_after_an_upstream_restart() {
    // Keep-alive connections, all killed when it stops.
    let first = Upstream::start(Reply::ok()).await;
    let gw = Gateway::start(&Config::catch_all(&first)).await;
    for _ in 0..3 {
        assert_eq!(gw.callback(CMD, GROUP_SEND).await.outcome, "upstream");
    }
    first.stop().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = Upstream::builder().bind(first.addr).start().await;
    // At most one callback may fall back while the stale connection is
    // found dead; after that every callback reaches the new upstream.
    let mut fallbacks = 0;
    for _ in 0..5 {
        if gw.callback(CMD, GROUP_SEND).await.outcome != "upstream" {
            fallbacks += 1;
        }
    }
    assert!(fallbacks <= 1, "{fallbacks} fallbacks after the restart");
    assert!(second.count() >= 4);
    gw.shutdown().await;
}

/// A host name that does not resolve. The name has a 70-character label,
/// which the system resolver refuses before sending any query (DNS labels
/// are at most 63 characters), so no packet leaves this machine.
#[tokio::test]
async fn an_upstream_name_that_does_not_resolve_is_a_failure_not_a_hang() {
    let host = format!("{}.invalid", "b".repeat(70));
    let config = Config::new()
        .retries(2, "20ms", "40ms")
        .upstream("nowhere", format!("http://{host}:9000/im"))
        .route(Route::all(&["nowhere"]).deadline("1500ms"));
    let gw = Gateway::start(&config).await;
    let (answer, took) = timed(gw.callback(CMD, GROUP_SEND)).await;
    assert!(took < ms(1000), "{took:?}");
    assert_eq!((answer.outcome.as_str(), answer.text()), ("fallback", OK));
    // A notification to it is retried, then dead-lettered.
    assert_eq!(
        gw.callback("Group.CallbackAfterNewMemberJoin", MEMBER_JOIN)
            .await
            .outcome,
        "queued"
    );
    let m = deliveries("nowhere", "dead")
        .value(1.0)
        .eventually(gw.admin(), secs(5))
        .await;
    deliveries("nowhere", "retried").value(1.0).assert_in(&m);
    gw.shutdown().await;
}
