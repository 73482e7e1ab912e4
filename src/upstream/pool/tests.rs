//! Unit tests of `pool`.

use super::*;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTP/1.1 server on 127.0.0.1 that answers every request (no body
/// expected) with an empty 200 and keeps the connection; counts accepts.
async fn server() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while let Ok(n) = conn.read(&mut chunk).await {
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                        if conn.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (port, accepted)
}

async fn get(pool: &Pool) {
    let request = Request::builder()
        .uri("/")
        .header("host", "127.0.0.1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (response, lease) = pool.send(request).await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
    pool.checkin(lease);
}

#[tokio::test]
async fn idle_connections_are_reused_until_their_idle_time_is_up() {
    let (port, accepted) = server().await;
    let idle = Duration::from_millis(200);
    let pool = Pool::new("127.0.0.1", port, 1, 4, idle, Duration::from_secs(2));
    for _ in 0..5 {
        get(&pool).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "reused");
    tokio::time::sleep(idle * 2).await;
    get(&pool).await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "an expired one is not used"
    );
    // Checking the new one in closed the expired one.
    let idle_now = pool.idle[0].lock().unwrap().len();
    assert_eq!(idle_now, 1);
}

#[tokio::test]
async fn at_most_max_idle_connections_are_kept() {
    let (port, accepted) = server().await;
    let pool = Pool::new(
        "127.0.0.1",
        port,
        1,
        2,
        Duration::from_secs(20),
        Duration::from_secs(2),
    );
    // Five at once need five connections; two of them stay.
    let calls: Vec<_> = (0..5).map(|_| get(&pool)).collect();
    futures_util::future::join_all(calls).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 5);
    assert_eq!(pool.idle[0].lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_bracketed_ipv6_host_is_connected_to() {
    // Skipped where the machine has no IPv6 loopback.
    let Ok(listener) = tokio::net::TcpListener::bind("[::1]:0").await else {
        return;
    };
    let port = listener.local_addr().unwrap().port();
    let accepting = tokio::spawn(async move { listener.accept().await.is_ok() });
    let pool = Pool::new(
        "[::1]",
        port,
        1,
        2,
        Duration::from_secs(20),
        Duration::from_secs(2),
    );
    assert!(pool.connect().await.is_ok());
    assert!(accepting.await.unwrap());
}

#[tokio::test]
async fn a_refused_connect_is_an_error_naming_the_address() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let pool = Pool::new(
        "127.0.0.1",
        port,
        1,
        2,
        Duration::from_secs(20),
        Duration::from_secs(2),
    );
    let request = Request::new(Full::new(Bytes::new()));
    let error = pool.send(request).await.err().unwrap();
    assert!(
        error.to_string().contains(&format!("127.0.0.1:{port}")),
        "{error}"
    );
}
