//! Unit tests of `upstream`.

use super::*;

fn answer(status: u16, body: &str) -> Answer {
    Answer {
        status: StatusCode::from_u16(status).unwrap(),
        body: Bytes::from(body.to_owned()),
    }
}

#[test]
fn only_200_objects_with_integer_codes_count() {
    assert_eq!(
        error_code(&answer(
            200,
            r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#
        )),
        Some(0)
    );
    assert_eq!(
        error_code(&answer(200, r#" {"ErrorCode":1,"MsgBody":[]}"#)),
        Some(1)
    );
    assert_eq!(
        error_code(&answer(200, r#"{"ErrorCode":10100}"#)),
        Some(10100)
    );
    assert_eq!(error_code(&answer(500, r#"{"ErrorCode":0}"#)), None);
    assert_eq!(error_code(&answer(200, r#"{"ErrorCode":"0"}"#)), None);
    assert_eq!(error_code(&answer(200, r#"{"ErrorCode":1.5}"#)), None);
    assert_eq!(error_code(&answer(200, r#"{"ActionStatus":"OK"}"#)), None);
    assert_eq!(error_code(&answer(200, r#"[1]"#)), None);
    assert_eq!(error_code(&answer(200, "ok")), None);
    assert_eq!(error_code(&answer(200, "")), None);
}

#[test]
fn target_keeps_the_upstream_query() {
    let mk = |url: &str| plain_client(url);
    assert_eq!(
        mk("http://127.0.0.1:9/im").target("SdkAppid=1"),
        "http://127.0.0.1:9/im?SdkAppid=1"
    );
    assert_eq!(
        mk("http://127.0.0.1:9/im?k=v").target("SdkAppid=1"),
        "http://127.0.0.1:9/im?k=v&SdkAppid=1"
    );
    assert_eq!(mk("http://127.0.0.1:9").target(""), "http://127.0.0.1:9/");
    // Credentials leave the URL for a header built once, marked sensitive.
    let c = mk("http://us%65r:pw@127.0.0.1:9/im");
    assert_eq!(c.target(""), "http://127.0.0.1:9/im");
    assert_eq!(c.host.as_ref().unwrap(), "127.0.0.1:9");
    let auth = c.authorization.as_ref().unwrap();
    assert_eq!(auth, "Basic dXNlcjpwdw==");
    assert!(auth.is_sensitive());
    assert!(mk("http://127.0.0.1:9/im").authorization.is_none());
}

#[test]
fn forwarded_for_matches_display() {
    for ip in [
        "0.0.0.0",
        "127.0.0.1",
        "10.20.100.255",
        "1.2.3.4",
        "::1",
        "fe80::1:2",
    ] {
        let ip: IpAddr = ip.parse().unwrap();
        assert_eq!(forwarded_for(ip).to_str().unwrap(), ip.to_string());
    }
}

/// A plain HTTP/1.1 upstream whose nth answer (0-based) is 200 with a
/// body of `sizes(n)` bytes; counts the connections it accepted.
async fn sized_server(
    sizes: fn(usize) -> usize,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let answered = answered.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    let n = answered.fetch_add(1, Ordering::SeqCst);
                    let body = Bytes::from(vec![b'x'; sizes(n)]);
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(body)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(conn), service)
                    .await;
            });
        }
    });
    (addr, accepted)
}

fn forward() -> Forward {
    Forward {
        query: std::sync::Arc::from("SdkAppid=1"),
        body: Bytes::from_static(b"{}"),
        request_id: HeaderValue::from_static("r-1"),
        peer: IpAddr::from([127, 0, 0, 1]),
        proto: "http",
    }
}

#[tokio::test]
async fn status_of_ignores_the_body_and_drops_a_connection_left_half_read() {
    use std::sync::atomic::Ordering;
    // Small, small, 1 MiB, small.
    let (addr, accepted) = sized_server(|n| if n == 2 { 1024 * 1024 } else { 100 }).await;
    let client = plain_client(&format!("http://{addr}/im"));
    let limit = Some(Duration::from_secs(5));
    for _ in 0..2 {
        assert_eq!(client.status_of(&forward(), limit).await.unwrap(), 200);
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "a small answer keeps its connection"
    );
    assert_eq!(client.status_of(&forward(), limit).await.unwrap(), 200);
    assert_eq!(client.status_of(&forward(), limit).await.unwrap(), 200);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "the connection of the 1 MiB answer is not reused"
    );
    // `call` still bounds what it reads: the same answer is a body error.
    let (addr, _) = sized_server(|_| 1024 * 1024).await;
    let client = plain_client(&format!("http://{addr}/im"));
    assert!(matches!(
        client.call(&forward(), 64 * 1024, limit).await,
        Err(CallError::Body(_))
    ));
}

/// A client for a plain upstream at `url`, with no settings of its own.
fn plain_client(url: &str) -> UpstreamClient {
    let (url, credentials) = crate::config::UpstreamUrl::parse(url).unwrap();
    UpstreamClient::new(&Upstream {
        name: "u".into(),
        url,
        credentials,
        timeout: None,
        ca: None,
        client_cert: None,
        client_key: None,
    })
    .unwrap()
}
