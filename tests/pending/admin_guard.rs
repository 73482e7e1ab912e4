//! SPEC 6: the admin address's own limits and guards. Headers within 5 s,
//! idle connections closed after 30 s, at most 128 connections (a flood
//! starves neither callbacks nor `/healthz`), `admin.token` on the methods
//! that change state, and no request that carries an `Origin`.

mod support;

use std::io::Read as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::*;

const ADMIN_TOKEN: &str = "adm1n-t0ken-for-guard-tests";

fn decision_route(up: &Upstream) -> String {
    format!(
        "{}routes:\n  - match: \"*\"\n    upstreams: [up]\n",
        upstreams_yaml(&[("up", up)])
    )
}

/// The binary under a file-descriptor limit of `nofile`, so that a flood
/// which holds one descriptor per connection exhausts it quickly.
async fn start_limited(rest: &str, nofile: u32) -> Binary {
    let dir = tempfile::tempdir().unwrap();
    let (listen, admin) = (free_addr(), free_addr());
    let config = dir.path().join("routes.yaml");
    std::fs::write(
        &config,
        format!(
            "listeners:\n  - addr: \"{listen}\"\nadmin:\n  addr: \"{admin}\"\napps:\n  - sdkappid: {APP}\n{rest}"
        ),
    )
    .unwrap();
    let child = tokio::process::Command::new("prlimit")
        .arg(format!("--nofile={nofile}:{nofile}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_callgate"))
        .args(["run", "-c"])
        .arg(&config)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("prlimit (util-linux) runs the binary");
    let binary = Binary {
        child,
        listen,
        admin,
        dir,
    };
    binary.wait_ready().await;
    binary
}

/// Whether the gateway still holds this connection open (no EOF, no reset).
fn is_open(mut stream: &std::net::TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// How long until the gateway closes `stream`, if it does within `limit`.
async fn closed_after(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// A request the test client sends in time, or a failure naming `what`.
async fn promptly(what: &str, request: reqwest::RequestBuilder) -> reqwest::Response {
    let started = Instant::now();
    match tokio::time::timeout(Duration::from_secs(2), request.send()).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => panic!("{what}: {e}"),
        Err(_) => panic!("{what}: no answer within {:?}", started.elapsed()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_silent_admin_connections_starves_neither_callbacks_nor_healthz() {
    let up = Upstream::start(Reply::ok()).await;
    // 256 descriptors, 300 silent connections: without a bound on admin
    // connections, the flood takes every descriptor the gateway has.
    let gw = start_limited(&decision_route(&up), 256).await;
    let flood: Vec<std::net::TcpStream> = (0..300)
        .map(|_| {
            let s = std::net::TcpStream::connect(gw.admin).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    // Well inside the 5 s header timeout: what is still open is what the
    // connection limit left.
    tokio::time::sleep(Duration::from_millis(700)).await;

    let http = test_client();
    let answer = promptly(
        "callback during the flood",
        http.post(gw.url("Group.CallbackBeforeSendMsg"))
            .body(GROUP_SEND),
    )
    .await;
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer.headers()["x-callgate-outcome"],
        "upstream",
        "the callback was not forwarded"
    );
    let health = promptly(
        "/healthz during the flood",
        http.get(format!("http://{}/healthz", gw.admin)),
    )
    .await;
    assert_eq!(health.status(), 200);
    // Reading the config file needs a descriptor too.
    let reload = promptly(
        "/reload during the flood",
        http.post(format!("http://{}/reload", gw.admin)),
    )
    .await;
    assert_eq!(reload.status(), 200, "{}", reload.text().await.unwrap());

    let open = flood.iter().filter(|s| is_open(s)).count();
    assert!(
        open <= 128,
        "{open} admin connections open at once, more than 128"
    );
}

#[tokio::test]
async fn admin_headers_must_arrive_within_5s() {
    let gw = Gateway::start("").await;
    let admin = gw.gw().admin_addr();
    let mut silent = TcpStream::connect(admin).await.unwrap();
    let trickle = TcpStream::connect(admin).await.unwrap();
    let (mut trickle_read, mut trickle_write) = trickle.into_split();
    // One header byte every 300 ms: always some traffic, never a request.
    let writer = tokio::spawn(async move {
        let _ = trickle_write
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n")
            .await;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if trickle_write.write_all(b"X").await.is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    let silent_closed = closed_after(&mut silent, Duration::from_secs(9))
        .await
        .expect("a silent admin connection was never closed");
    let mut buf = [0u8; 1024];
    let trickle_closed = loop {
        match tokio::time::timeout(Duration::from_secs(9), trickle_read.read(&mut buf)).await {
            Err(_) => panic!("a trickling admin connection was never closed"),
            Ok(Ok(0) | Err(_)) => break started.elapsed(),
            Ok(Ok(_)) => {}
        }
    };
    writer.abort();
    for (what, after) in [("silent", silent_closed), ("trickling", trickle_closed)] {
        assert!(
            after >= Duration::from_millis(4500) && after <= Duration::from_millis(7500),
            "{what} connection closed after {after:?}, not at 5 s"
        );
    }
    // The address itself still serves.
    let r = gw.http.get(format!("{}/healthz", gw.admin())).send().await;
    assert_eq!(r.unwrap().status(), 200);
}

#[tokio::test]
async fn idle_admin_connections_close_after_30s() {
    let gw = Gateway::start("").await;
    let mut conn = TcpStream::connect(gw.gw().admin_addr()).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"ok\n") {
        let n = tokio::time::timeout(Duration::from_secs(2), conn.read(&mut buf))
            .await
            .expect("no answer to /healthz")
            .unwrap();
        assert!(n > 0, "closed before answering");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"), "{got:?}");
    let idle_since = Instant::now();
    // Past the header timeout: a kept-alive connection is not cut at 5 s.
    assert_eq!(
        closed_after(&mut conn, Duration::from_secs(12)).await,
        None,
        "an idle admin connection was closed long before 30 s"
    );
    let closed = closed_after(&mut conn, Duration::from_secs(22))
        .await
        .map(|_| idle_since.elapsed())
        .expect("an idle admin connection was still open after 34 s");
    assert!(
        closed >= Duration::from_secs(29),
        "closed after {closed:?} idle, before 30 s"
    );
}

async fn admin_with_token() -> Gateway {
    Gateway::start(&format!(
        "admin:\n  addr: \"127.0.0.1:0\"\n  token: \"{ADMIN_TOKEN}\"\n"
    ))
    .await
}

#[tokio::test]
async fn with_a_token_post_and_delete_need_the_bearer_token() {
    let gw = admin_with_token().await;
    let admin = gw.admin();
    let http = &gw.http;
    let status = |r: reqwest::Response| r.status().as_u16();
    for auth in [
        None,
        Some("Bearer wrong-token".to_string()),
        Some(format!("Bearer {ADMIN_TOKEN}x")),
        Some(format!("Basic {ADMIN_TOKEN}")),
        Some(ADMIN_TOKEN.to_string()),
        Some("Bearer ".to_string()),
    ] {
        let mut post = http.post(format!("{admin}/reload"));
        let mut delete = http.delete(format!("{admin}/outbox/dead"));
        if let Some(a) = &auth {
            post = post.header("authorization", a);
            delete = delete.header("authorization", a);
        }
        let r = post.send().await.unwrap();
        assert_eq!(r.status(), 401, "POST /reload with {auth:?}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        assert_eq!(
            status(delete.send().await.unwrap()),
            401,
            "DELETE with {auth:?}"
        );
    }
    for scheme in ["Bearer", "bearer"] {
        let r = http
            .post(format!("{admin}/reload"))
            .header("authorization", format!("{scheme} {ADMIN_TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{scheme}: {}", r.text().await.unwrap());
    }
    let r = http
        .delete(format!("{admin}/outbox/dead"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 401);
    // Reading needs no token, and the token is not part of what is read.
    for path in ["/healthz", "/readyz", "/metrics", "/config"] {
        let r = http.get(format!("{admin}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let text = r.text().await.unwrap();
        assert!(!text.contains(ADMIN_TOKEN), "{path} shows the token");
    }
    let config = http
        .get(format!("{admin}/config"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["config"]["admin"]["token"], "<redacted>");
}

#[tokio::test]
async fn without_a_token_post_needs_no_authorization() {
    let gw = Gateway::start("").await;
    let r = gw
        .http
        .post(format!("{}/reload", gw.admin()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_request_with_an_origin_header_is_refused() {
    let gw = admin_with_token().await;
    let admin = gw.admin();
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    for origin in ["http://evil.example", "null", "http://127.0.0.1:9901"] {
        for (method, path) in [
            ("GET", "/healthz"),
            ("GET", "/config"),
            ("GET", "/metrics"),
            ("POST", "/reload"),
            ("DELETE", "/outbox/dead"),
        ] {
            let r = gw
                .http
                .request(method.parse().unwrap(), format!("{admin}{path}"))
                .header("origin", origin)
                .header("authorization", &bearer)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 403, "{method} {path} with Origin {origin}");
        }
    }
    let r = gw
        .http
        .get(format!("{admin}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
