//! Hostile clients and broken upstreams: each gets a clear answer or a
//! closed connection, nothing crashes, other clients are unaffected, and
//! nothing bad reaches an upstream.

#[path = "support_old/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CMD: &str = "Group.CallbackBeforeSendMsg";

async fn gateway_to(up: &Upstream, extra: &str) -> Gateway {
    Gateway::start(&format!(
        "{extra}{}routes:\n  - match: \"*\"\n    upstreams: [a]\n    deadline: 800ms\n",
        upstreams_yaml(&[("a", up)])
    ))
    .await
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
    let gw = gateway_to(&up, "").await;
    let q = format!("SdkAppid={APP}&CallbackCommand={CMD}");
    let huge = format!("x-big: {}\r\n", "a".repeat(1024 * 1024));
    let answer = raw(
        gw.addr(),
        &post(&q, &huge, GROUP_SEND),
        Duration::from_secs(5),
    )
    .await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    let many: String = (0..500).map(|i| format!("x-h{i}: v\r\n")).collect();
    let answer = raw(
        gw.addr(),
        &post(&q, &many, GROUP_SEND),
        Duration::from_secs(5),
    )
    .await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    assert_eq!(up.count(), 0);
    assert_eq!(gw.callback(CMD, GROUP_SEND).await.outcome, "upstream");
    gw.shutdown().await;
}

#[tokio::test]
async fn an_endless_chunked_body_is_cut_off_at_max_body() {
    let up = Upstream::start(Reply::ok()).await;
    let gw = gateway_to(&up, "limits:\n  max_body: 64KiB\n").await;
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
    let gw = gateway_to(&up, "").await;
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
    let gw = gateway_to(&up, "").await;
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
    assert!(
        m.contains("callgate_open_connections 1") || m.contains("callgate_open_connections 0"),
        "{m}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn huge_upstream_answers_are_not_returned() {
    let huge = format!(r#"{{"ErrorCode":0,"Pad":"{}"}}"#, "x".repeat(200 * 1024));
    let up = Upstream::start(Reply::json(&huge)).await;
    let gw = gateway_to(&up, "limits:\n  max_body: 64KiB\n").await;
    let answer = gw.callback(CMD, GROUP_SEND).await;
    assert_eq!((answer.outcome.as_str(), answer.text()), ("fallback", OK));
    assert!(
        gw.metrics()
            .await
            .contains(r#"callgate_upstream_requests_total{upstream="a",result="bad_answer"} 1"#)
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let target = Upstream::start(Reply::code(1)).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let location = target.url();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let location = location.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = s.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nlocation: {location}\r\ncontent-length: 0\r\n\r\n"
                );
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
    let gw = Gateway::start(&format!(
        "upstreams:\n  r:\n    url: \"http://{addr}/im\"\nroutes:\n  - match: \"*\"\n    upstreams: [r]\n"
    ))
    .await;
    let answer = gw.callback(CMD, GROUP_SEND).await;
    assert_eq!((answer.outcome.as_str(), answer.text()), ("fallback", OK));
    assert_eq!(target.count(), 0, "a redirect was followed");
    gw.shutdown().await;
}

#[tokio::test]
async fn an_answer_with_a_wrong_content_type_still_counts_when_it_is_json() {
    // IM itself only looks at the JSON; so does callgate.
    let up = Upstream::start(Reply::code(1)).await;
    let gw = gateway_to(&up, "").await;
    assert_eq!(gw.callback(CMD, GROUP_SEND).await.json()["ErrorCode"], 1);
    gw.shutdown().await;
}

/// The upstream restarts: the pool notices its dead connections and the
/// next callbacks reach the new process.
#[tokio::test]
async fn the_upstream_pool_recovers_after_an_upstream_restart() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let first = tokio::spawn(async move {
        // A minimal keep-alive server that we can kill with its connections.
        let mut conns = Vec::new();
        tokio::select! {
            _ = async {
                while let Ok((mut s, _)) = listener.accept().await {
                    conns.push(tokio::spawn(async move {
                        let mut buf = vec![0u8; 65536];
                        while let Ok(n) = s.read(&mut buf).await {
                            if n == 0 { break; }
                            let body = OK;
                            let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                            if s.write_all(answer.as_bytes()).await.is_err() { break; }
                        }
                    }));
                }
            } => {}
            _ = stop_rx => {}
        }
        for c in conns {
            c.abort();
        }
    });
    let gw = Gateway::start(&format!(
        "upstreams:\n  a:\n    url: \"http://{addr}/im\"\nroutes:\n  - match: \"*\"\n    upstreams: [a]\n"
    ))
    .await;
    for _ in 0..3 {
        assert_eq!(gw.callback(CMD, GROUP_SEND).await.outcome, "upstream");
    }
    let _ = stop_tx.send(());
    first.await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = Upstream::serve(
        TcpListener::bind(addr).await.unwrap(),
        std::sync::Arc::new(|_| Reply::ok()),
    );
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
    let gw = Gateway::start(&format!(
        "delivery:\n  max_attempts: 2\n  backoff: 20ms\n  max_backoff: 40ms\nupstreams:\n  nowhere:\n    url: \"http://{host}:9000/im\"\nroutes:\n  - match: \"*\"\n    upstreams: [nowhere]\n    deadline: 1500ms\n"
    ))
    .await;
    let started = Instant::now();
    let answer = gw.callback(CMD, GROUP_SEND).await;
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    assert_eq!((answer.outcome.as_str(), answer.text()), ("fallback", OK));
    // A notification to it is retried, then dead-lettered.
    assert_eq!(
        gw.callback("Group.CallbackAfterNewMemberJoin", MEMBER_JOIN)
            .await
            .outcome,
        "queued"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = gw.metrics().await;
        if m.contains(r#"callgate_deliveries_total{upstream="nowhere",result="dead"} 1"#) {
            assert!(
                m.contains(r#"callgate_deliveries_total{upstream="nowhere",result="retried"} 1"#),
                "{m}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "never dead-lettered: {m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.shutdown().await;
}
