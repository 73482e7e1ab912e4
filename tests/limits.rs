//! `limits:` on real sockets: slow clients are cut off, idle connections
//! closed, the connection limit holds.

mod support;

use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection; returns what it sent and
/// how long that took.
async fn until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut buf)).await {
            Err(_) => panic!("connection still open after {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

/// An upstream, and a gateway on `config` routing everything to it.
async fn gateway(config: Config) -> (Upstream, Gateway) {
    let up = Upstream::start(Reply::ok()).await;
    let config = config.upstream("a", &up).route(Route::all(&["a"]));
    (up, Gateway::start(&config).await)
}

fn request_head(body_len: usize) -> String {
    format!(
        "POST /im?SdkAppid={APP}&CallbackCommand=Group.CallbackBeforeSendMsg HTTP/1.1\r\nhost: x\r\ncontent-length: {body_len}\r\n\r\n"
    )
}

#[tokio::test]
async fn a_silent_client_is_cut_off_after_header_timeout() {
    let (_up, gw) = gateway(Config::new().limits("header_timeout", "500ms")).await;
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    let (_, took) = until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(400), "{took:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn trickled_headers_are_cut_off_after_header_timeout() {
    let (up, gw) = gateway(Config::new().limits("header_timeout", "500ms")).await;
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    let head = request_head(2);
    let started = Instant::now();
    for b in head.as_bytes().chunks(4) {
        if s.write_all(b).await.is_err() || started.elapsed() > Duration::from_secs(5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, _) = until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_trickled_body_gets_408_and_is_not_forwarded() {
    let (up, gw) = gateway(Config::new().limits("header_timeout", "500ms")).await;
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(request_head(GROUP_SEND.len()).as_bytes())
        .await
        .unwrap();
    s.write_all(&GROUP_SEND.as_bytes()[..10]).await.unwrap();
    let (answer, took) = until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("x-callgate-outcome: rejected"), "{answer}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_tls_listener_cuts_off_a_client_that_never_handshakes() {
    let pki = Pki::new();
    let up = Upstream::start(Reply::ok()).await;
    let config = Config::catch_all(&up)
        .listener(Listener::https(&pki))
        .limits("header_timeout", "500ms");
    let gw = Gateway::start(&config).await;
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    let (_, took) = until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // Garbage instead of a ClientHello is dropped at once.
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let (_, took) = until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(took < Duration::from_millis(400), "{took:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let (_up, gw) = gateway(Config::new().limits("idle_timeout", "600ms")).await;
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(request_head(GROUP_SEND.len()).as_bytes())
        .await
        .unwrap();
    s.write_all(GROUP_SEND.as_bytes()).await.unwrap();
    let (answer, took) = until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(3),
        "{took:?}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn max_connections_holds_new_clients_until_a_slot_frees() {
    let (_up, gw) = gateway(Config::new().limits("max_connections", 1usize)).await;
    let mut first = TcpStream::connect(gw.addr()).await.unwrap();
    first
        .write_all(request_head(GROUP_SEND.len()).as_bytes())
        .await
        .unwrap();
    first.write_all(GROUP_SEND.as_bytes()).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = first.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // The second connection is accepted by the kernel but not served.
    let second = gw.decision();
    tokio::pin!(second);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut second)
            .await
            .is_err()
    );
    // Once the first closes, the second is served.
    drop(first);
    let answer = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("never served");
    assert_eq!(answer.outcome, "upstream");
}

#[tokio::test]
async fn garbage_and_invalid_http_get_closed_without_harm() {
    let (up, gw) = gateway(Config::new().limits("max_body", "1MiB")).await;
    for garbage in [
        &b"\x16\x03\x01\x00\xff garbage"[..],
        b"NOT HTTP AT ALL\r\n\r\n",
        b"POST / HTTP/9.9\r\n\r\n",
        &[0u8; 512],
    ] {
        let mut s = TcpStream::connect(gw.addr()).await.unwrap();
        let _ = s.write_all(garbage).await;
        let (answer, _) = until_closed(&mut s, Duration::from_secs(5)).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
            "{answer}"
        );
    }
    assert_eq!(gw.decision().await.outcome, "upstream");
    assert_eq!(up.count(), 1);
    gw.shutdown().await;
}

/// `header_timeout` bounds the first request only: a keep-alive connection
/// may wait for its next request up to `idle_timeout`.
#[tokio::test]
async fn keep_alive_connections_wait_idle_timeout_not_header_timeout() {
    let (up, gw) = gateway(
        Config::new()
            .limits("header_timeout", "300ms")
            .limits("idle_timeout", "5s"),
    )
    .await;
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    for round in 0..2 {
        s.write_all(request_head(GROUP_SEND.len()).as_bytes())
            .await
            .unwrap();
        s.write_all(GROUP_SEND.as_bytes()).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
            "round {round}"
        );
        // Quiet for well over header_timeout.
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    assert_eq!(up.count(), 2);
    gw.shutdown().await;
}
