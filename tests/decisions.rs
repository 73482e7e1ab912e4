//! SPEC 4.2, decisions: fan-out, `strictest` and `first`, the deadline,
//! fallbacks, cancellation, and what upstreams receive (4.4).

#[path = "support_old/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const CMD: &str = "Group.CallbackBeforeSendMsg";

fn route(upstreams: &str, extra: &str) -> String {
    format!("routes:\n  - match: \"{CMD}\"\n    upstreams: [{upstreams}]\n{extra}")
}

async fn gateway(ups: &[(&str, &Upstream)], routes: &str) -> Gateway {
    Gateway::start(&format!("{}{routes}", upstreams_yaml(ups))).await
}

/// A port with nothing listening on it.
async fn closed_port_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}/im")
}

#[tokio::test]
async fn strictest_all_allow_returns_the_first_upstreams_answer_byte_for_byte() {
    let modified = "{ \"ActionStatus\":\"OK\", \"ErrorCode\":0,\"ErrorInfo\":\"\",\n \"MsgBody\":[{\"MsgType\":\"TIMTextElem\",\"MsgContent\":{\"Text\":\"h*\"}}] }";
    let a = Upstream::start(Reply::json(modified)).await;
    let b = Upstream::start(Reply::ok().after(Duration::from_millis(100))).await;
    let gw = gateway(&[("a", &a), ("b", &b)], &route("a, b", "")).await;
    let answer = gw.callback(CMD, GROUP_SEND).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.outcome, "upstream");
    assert_eq!(answer.text(), modified);
    assert_eq!((a.count(), b.count()), (1, 1));
    gw.shutdown().await;
}

#[tokio::test]
async fn strictest_returns_a_denial_at_once_without_waiting_for_slow_upstreams() {
    let slow = Upstream::start(Reply::Hang).await;
    let deny = r#"{"ActionStatus":"OK","ErrorInfo":"spam","ErrorCode":10100}"#;
    let denier = Upstream::start(Reply::json(deny).after(Duration::from_millis(50))).await;
    let gw = gateway(
        &[("slow", &slow), ("denier", &denier)],
        &route("slow, denier", "    deadline: 1500ms\n"),
    )
    .await;
    let started = Instant::now();
    let answer = gw.callback(CMD, GROUP_SEND).await;
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    assert_eq!((answer.outcome.as_str(), answer.text()), ("upstream", deny));
    gw.shutdown().await;
}

#[tokio::test]
async fn silent_upstreams_get_the_fallback_at_the_deadline() {
    let a = Upstream::start(Reply::Hang).await;
    let b = Upstream::start(Reply::ok().after(Duration::from_secs(5))).await;
    let gw = gateway(
        &[("a", &a), ("b", &b)],
        &route("a, b", "    deadline: 400ms\n"),
    )
    .await;
    let started = Instant::now();
    let answer = gw.callback(CMD, GROUP_SEND).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(380) && elapsed < Duration::from_millis(1400),
        "{elapsed:?}"
    );
    assert_eq!(
        (answer.status, answer.outcome.as_str(), answer.text()),
        (200, "fallback", OK)
    );
    assert!(
        gw.metrics()
            .await
            .contains(r#"callgate_fallbacks_total{reason="timeout"} 1"#)
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn on_timeout_deny_answers_the_deny_fallback() {
    let a = Upstream::start(Reply::Hang).await;
    let gw = gateway(
        &[("a", &a)],
        &route("a", "    deadline: 200ms\n    on_timeout: deny\n"),
    )
    .await;
    let answer = gw.callback(CMD, GROUP_SEND).await;
    assert_eq!(
        (answer.status, answer.outcome.as_str(), answer.text()),
        (200, "fallback", DENY)
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn defaults_apply_when_the_route_sets_nothing() {
    let a = Upstream::start(Reply::Hang).await;
    let gw = Gateway::start(&format!(
        "defaults:\n  deadline: 300ms\n  on_timeout: deny\n{}{}",
        upstreams_yaml(&[("a", &a)]),
        route("a", "")
    ))
    .await;
    let started = Instant::now();
    let answer = gw.callback(CMD, GROUP_SEND).await;
    assert!(started.elapsed() < Duration::from_millis(1300));
    assert_eq!(answer.text(), DENY);
    gw.shutdown().await;
}

/// Broken upstreams cannot answer any more: the fallback comes at once,
/// long before the deadline.
#[tokio::test]
async fn broken_upstreams_get_the_fallback_at_once() {
    let cases: Vec<(&str, Reply)> = vec![
        ("500", Reply::status(500)),
        ("not json", Reply::json("allow")),
        ("json array", Reply::json("[0]")),
        ("string code", Reply::json(r#"{"ErrorCode":"1"}"#)),
        ("no code", Reply::json(r#"{"ActionStatus":"OK"}"#)),
        ("reset", Reply::Drop),
    ];
    for (what, reply) in cases {
        let up = Upstream::start(reply).await;
        let gw = gateway(
            &[("a", &up)],
            &route("a", "    deadline: 1500ms\n    on_timeout: deny\n"),
        )
        .await;
        let started = Instant::now();
        let answer = gw.callback(CMD, GROUP_SEND).await;
        assert!(
            started.elapsed() < Duration::from_millis(1000),
            "{what}: {:?}",
            started.elapsed()
        );
        assert_eq!(
            (answer.outcome.as_str(), answer.text()),
            ("fallback", DENY),
            "{what}"
        );
        assert_eq!(up.count(), 1, "{what}");
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn refused_connections_get_the_fallback_at_once() {
    let gw = Gateway::start(&format!(
        "upstreams:\n  gone:\n    url: \"{}\"\n{}",
        closed_port_url().await,
        route("gone", "    deadline: 1500ms\n")
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
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"callgate_upstream_requests_total{upstream="gone",result="error"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"callgate_fallbacks_total{reason="upstream_failed"} 1"#),
        "{metrics}"
    );
    gw.shutdown().await;
}

/// One upstream allows, the other fails: not every upstream allowed, so
/// no answer decides; since none can come any more, the fallback is at once.
#[tokio::test]
async fn strictest_with_one_failure_answers_the_fallback() {
    let a = Upstream::start(Reply::code(0)).await;
    let b = Upstream::start(Reply::status(502)).await;
    let gw = gateway(
        &[("a", &a), ("b", &b)],
        &route("a, b", "    on_timeout: deny\n"),
    )
    .await;
    let answer = gw.callback(CMD, GROUP_SEND).await;
    assert_eq!((answer.outcome.as_str(), answer.text()), ("fallback", DENY));
    gw.shutdown().await;
}

#[tokio::test]
async fn policy_first_counts_only_the_first_upstream_and_mirrors_the_rest() {
    let primary = Upstream::start(Reply::code(1).after(Duration::from_millis(50))).await;
    let mirror = Upstream::start(Reply::code(0)).await;
    let slow_mirror = Upstream::start(Reply::Hang).await;
    let gw = gateway(
        &[("p", &primary), ("m", &mirror), ("s", &slow_mirror)],
        &route("p, m, s", "    policy: first\n    deadline: 1500ms\n"),
    )
    .await;
    let started = Instant::now();
    let answer = gw.callback(CMD, GROUP_SEND).await;
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "a mirror delayed the answer"
    );
    assert_eq!(answer.outcome, "upstream");
    assert_eq!(answer.json()["ErrorCode"], 1);
    mirror.wait_for(1, Duration::from_secs(5)).await;
    slow_mirror.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(mirror.received()[0].body, GROUP_SEND.as_bytes());
    gw.shutdown().await;
}

#[tokio::test]
async fn policy_first_ignores_mirror_answers_when_the_primary_fails() {
    let primary = Upstream::start(Reply::status(500)).await;
    let mirror = Upstream::start(Reply::code(1)).await;
    let gw = gateway(
        &[("p", &primary), ("m", &mirror)],
        &route("p, m", "    policy: first\n"),
    )
    .await;
    let answer = gw.callback(CMD, GROUP_SEND).await;
    assert_eq!((answer.outcome.as_str(), answer.text()), ("fallback", OK));
    gw.shutdown().await;
}

/// At the deadline the gateway gives up on the call: the upstream sees its
/// connection closed instead of a request that stays open.
#[tokio::test]
async fn calls_still_running_at_the_deadline_are_cancelled() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/im", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        // Read the request, never answer, and time the close.
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0);
        let got_request = Instant::now();
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        let _ = tx.send(got_request.elapsed());
        let _ = stream.shutdown().await;
    });
    let gw = Gateway::start(&format!(
        "upstreams:\n  hang:\n    url: \"{url}\"\n{}",
        route("hang", "    deadline: 300ms\n")
    ))
    .await;
    let answer = gw.callback(CMD, GROUP_SEND).await;
    assert_eq!(answer.outcome, "fallback");
    let open_for = tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .expect("upstream connection never closed")
        .unwrap();
    assert!(open_for < Duration::from_secs(2), "{open_for:?}");
    gw.shutdown().await;
}

/// The deadline counts from the request's arrival, so time spent receiving
/// the body is part of it.
#[tokio::test]
async fn the_deadline_includes_receiving_the_body() {
    let up = Upstream::start(Reply::ok().after(Duration::from_millis(400))).await;
    let gw = gateway(&[("a", &up)], &route("a", "    deadline: 600ms\n")).await;
    let (head, tail) = GROUP_SEND.split_at(20);
    let chunks = vec![head.to_owned(), tail.to_owned()];
    let stream = futures_util::StreamExt::then(
        futures_util::stream::iter(chunks.into_iter().enumerate()),
        |(i, c)| async move {
            if i == 1 {
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
            Ok::<_, std::io::Error>(bytes::Bytes::from(c))
        },
    );
    let r = gw
        .http
        .post(format!(
            "{}?SdkAppid={APP}&CallbackCommand={CMD}",
            gw.base()
        ))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    // 400 ms of body + 400 ms of upstream > 600 ms: the fallback answers.
    assert_eq!(Answer::read(r).await.outcome, "fallback");
    gw.shutdown().await;
}

#[tokio::test]
async fn unrouted_decisions_get_the_fallback_at_once() {
    let up = Upstream::start(Reply::ok()).await;
    let gw = Gateway::start(&format!(
        "defaults:\n  on_timeout: deny\n{}routes:\n  - match: \"C2C.*\"\n    upstreams: [a]\n",
        upstreams_yaml(&[("a", &up)])
    ))
    .await;
    let answer = gw.callback(CMD, GROUP_SEND).await;
    assert_eq!(
        (answer.status, answer.outcome.as_str(), answer.text()),
        (200, "unrouted", DENY)
    );
    assert_eq!(up.count(), 0);
    assert!(
        gw.metrics()
            .await
            .contains(r#"callgate_fallbacks_total{reason="no_route"} 1"#)
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn first_matching_route_wins_with_sdkappid_filters() {
    let other = Upstream::start(Reply::code(7)).await;
    let mine = Upstream::start(Reply::code(8)).await;
    let catch_all = Upstream::start(Reply::code(9)).await;
    let gw = Gateway::start(&format!(
        "apps:\n  - sdkappid: {APP}\n  - sdkappid: 1400000002\n{}routes:\n  - match: \"Group.*\"\n    sdkappid: 1400000002\n    upstreams: [other]\n  - match: \"Group.CallbackBefore*\"\n    upstreams: [mine]\n  - match: \"*\"\n    upstreams: [all]\n",
        upstreams_yaml(&[("other", &other), ("mine", &mine), ("all", &catch_all)])
    ))
    .await;
    assert_eq!(gw.callback(CMD, GROUP_SEND).await.json()["ErrorCode"], 8);
    let a = gw
        .post(
            &format!("SdkAppid=1400000002&CallbackCommand={CMD}"),
            GROUP_SEND,
        )
        .await;
    assert_eq!(a.json()["ErrorCode"], 7);
    let c2c = r#"{"CallbackCommand":"C2C.CallbackBeforeSendMsg","From_Account":"a","To_Account":"b","MsgSeq":1,"MsgRandom":2,"MsgTime":3,"MsgKey":"1_2_3","OnlineOnlyFlag":0,"MsgBody":[]}"#;
    assert_eq!(
        gw.callback("C2C.CallbackBeforeSendMsg", c2c).await.json()["ErrorCode"],
        9
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_route_kind_overrides_the_catalog() {
    let up = Upstream::start(Reply::Hang).await;
    let gw = gateway(&[("a", &up)], &route("a", "    kind: notification\n")).await;
    let started = Instant::now();
    let answer = gw.callback(CMD, GROUP_SEND).await;
    assert!(started.elapsed() < Duration::from_millis(1000));
    assert_eq!(
        (answer.status, answer.outcome.as_str(), answer.text()),
        (200, "queued", OK)
    );
    up.wait_for(1, Duration::from_secs(5)).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn upstreams_receive_the_callback_as_spec_4_4_says() {
    let up = Upstream::start(Reply::ok()).await;
    let gw = Gateway::start(&format!(
        "upstreams:\n  a:\n    url: \"http://{}/hook?tenant=blue\"\n{}",
        up.addr,
        route("a", "")
    ))
    .await;
    let query = format!(
        "SdkAppid={APP}&CallbackCommand={CMD}&contenttype=json&ClientIP=10.0.0.1&OptPlatform=iOS"
    );
    let answer = gw.post(&query, GROUP_SEND).await;
    let got = &up.received()[0];
    assert_eq!(got.uri.path(), "/hook");
    assert_eq!(
        got.uri.query(),
        Some(format!("tenant=blue&{query}").as_str())
    );
    assert_eq!(got.body, GROUP_SEND.as_bytes());
    assert_eq!(got.headers["content-type"], "application/json");
    assert_eq!(got.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(got.headers["x-forwarded-proto"], "http");
    let id = got.headers["x-request-id"].to_str().unwrap();
    assert!(id.len() >= 16);
    assert_eq!(
        answer.request_id, id,
        "the request id is returned to IM too"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn concurrent_decisions_reuse_pooled_connections() {
    let up = Upstream::start(Reply::ok()).await;
    let gw = gateway(&[("a", &up)], &route("a", "")).await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let http = gw.http.clone();
        let url = format!("{}?SdkAppid={APP}&CallbackCommand={CMD}", gw.base());
        tasks.push(tokio::spawn(async move {
            Answer::read(http.post(url).body(GROUP_SEND).send().await.unwrap()).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().outcome, "upstream");
    }
    assert_eq!(up.count(), 50);
    gw.shutdown().await;
}

/// A bare HTTP/1.1 upstream that counts the connections it accepts; with
/// `close_after`, it closes each connection right after its first answer
/// (no `connection: close` header: the gateway learns it from the socket).
async fn counting_upstream(
    close_after: bool,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/im", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // One request: headers, then content-length bytes.
                    let request_end = loop {
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                            let length: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .map_or(0, |v| v.trim().parse().unwrap());
                            if buf.len() >= end + 4 + length {
                                break end + 4 + length;
                            }
                        }
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    buf.drain(..request_end);
                    let body = br#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    if conn.write_all(head.as_bytes()).await.is_err()
                        || conn.write_all(body).await.is_err()
                    {
                        return;
                    }
                    if close_after {
                        let _ = conn.shutdown().await;
                        return;
                    }
                }
            });
        }
    });
    (url, accepted)
}

fn gateway_to(url: &str) -> String {
    format!("upstreams:\n  a:\n    url: \"{url}\"\n{}", route("a", ""))
}

#[tokio::test]
async fn sequential_decisions_share_one_upstream_connection() {
    let (url, accepted) = counting_upstream(false).await;
    let gw = Gateway::start(&gateway_to(&url)).await;
    for _ in 0..20 {
        let answer = gw.callback(CMD, GROUP_SEND).await;
        assert_eq!(answer.outcome, "upstream", "{}", answer.text());
    }
    // One connection per serving thread at most: the rest were reused.
    let connections = accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        (1..=callgate::server::cores::count()).contains(&connections),
        "{connections} upstream connections for 20 sequential decisions"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn an_upstream_closing_its_connections_still_answers_every_decision() {
    let (url, accepted) = counting_upstream(true).await;
    let gw = Gateway::start(&gateway_to(&url)).await;
    for i in 0..20 {
        let answer = gw.callback(CMD, GROUP_SEND).await;
        assert_eq!(
            answer.outcome,
            "upstream",
            "decision {i}: {}",
            answer.text()
        );
        // Sometimes at once (the close may not be seen yet), sometimes
        // after the close has surely arrived.
        if i % 2 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 20);
    gw.shutdown().await;
}
