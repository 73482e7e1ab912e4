//! Real TLS on both sides of the gateway: HTTPS and mutual-TLS listeners
//! (HTTP/1.1 and HTTP/2 through ALPN), several listeners from one config,
//! and an HTTPS upstream that has its own CA and wants a client
//! certificate. Certificates are generated per test.

mod support;

use std::time::Duration;

use support::*;

/// POSTs the standard decision callback with `client` to `root` (such as
/// `https://localhost:PORT`).
async fn post(client: reqwest::Client, root: &str) -> Result<Answer, reqwest::Error> {
    let im = Im::with(client, root);
    im.try_callback("Group.CallbackBeforeSendMsg", GROUP_SEND)
        .await
}

/// One TLS listener (HTTPS, or mTLS) and a catch-all route to `up`.
async fn tls_gateway(pki: &Pki, mtls: bool, up: &Upstream) -> Gateway {
    let listener = if mtls {
        Listener::mtls(pki)
    } else {
        Listener::https(pki)
    };
    Gateway::start(&Config::catch_all(up).listener(listener.name("secure"))).await
}

fn assert_forwarded_over(received: &Received, proto: &str) {
    assert_eq!(
        received.headers.get("x-forwarded-proto").unwrap(),
        proto,
        "{:?}",
        received.headers
    );
    assert_eq!(
        received.headers.get("x-forwarded-for").unwrap(),
        "127.0.0.1"
    );
    assert_eq!(received.body, GROUP_SEND.as_bytes());
}

#[tokio::test]
async fn https_listener_serves_http1_and_http2_and_forwards_proto_https() {
    let pki = Pki::new();
    let answer = r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0,"MsgBody":[]}"#;
    let up = Upstream::start(Reply::json(answer)).await;
    let gw = tls_gateway(&pki, false, &up).await;
    let port = gw.addr().port();

    let cases = [
        (
            Proto::Http1,
            format!("https://localhost:{port}"),
            http::Version::HTTP_11,
        ),
        (
            Proto::Alpn,
            format!("https://localhost:{port}"),
            http::Version::HTTP_2,
        ),
        (
            Proto::H2,
            format!("https://127.0.0.1:{port}"),
            http::Version::HTTP_2,
        ),
        (
            Proto::Http1,
            format!("https://127.0.0.1:{port}"),
            http::Version::HTTP_11,
        ),
    ];
    for (proto, base, want) in &cases {
        let a = post(pki.client(None, *proto), base)
            .await
            .unwrap_or_else(|e| panic!("{proto:?} {base}: {e:?}"));
        assert_eq!(a.version, *want, "{proto:?} {base}");
        assert_eq!(a.status, 200, "{proto:?}: {}", a.text());
        assert_eq!(a.outcome, "upstream", "{proto:?}");
        assert_eq!(a.text(), answer, "{proto:?}");
        assert!(!a.request_id.is_empty());
    }
    // HTTP/2 with prior knowledge to the name agrees.
    let a = post(
        pki.client(None, Proto::H2),
        &format!("https://localhost:{port}"),
    )
    .await
    .unwrap();
    assert_eq!(
        (a.version, a.outcome.as_str()),
        (http::Version::HTTP_2, "upstream")
    );

    let received = up.wait_for(cases.len() + 1, Duration::from_secs(5)).await;
    assert_eq!(received.len(), cases.len() + 1);
    for r in &received {
        assert_forwarded_over(r, "https");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn https_listener_refuses_plain_http_and_untrusted_clients() {
    let pki = Pki::new();
    let up = Upstream::start(Reply::ok()).await;
    let gw = tls_gateway(&pki, false, &up).await;
    let port = gw.addr().port();
    // Plain HTTP to the TLS port: no answer.
    assert!(
        post(test_client(), &format!("http://127.0.0.1:{port}"))
            .await
            .is_err()
    );
    // A client that trusts another CA refuses the gateway's certificate.
    let other = Pki::new();
    let err = post(
        other.client(None, Proto::Http1),
        &format!("https://localhost:{port}"),
    )
    .await
    .unwrap_err();
    assert!(err.is_connect() || err.is_request(), "{err:?}");
    // Still serving afterwards, and nothing of the above was forwarded.
    let a = post(
        pki.client(None, Proto::Http1),
        &format!("https://localhost:{port}"),
    )
    .await
    .unwrap();
    assert_eq!(a.outcome, "upstream");
    assert_eq!(up.count(), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn mtls_listener_requires_a_client_certificate_from_its_ca() {
    let pki = Pki::new();
    let stranger = Pki::new();
    let up = Upstream::start(Reply::ok()).await;
    let gw = tls_gateway(&pki, true, &up).await;
    let base = format!("https://localhost:{}", gw.addr().port());

    // The dev client certificate: accepted, over both HTTP versions.
    for proto in [Proto::Http1, Proto::Alpn, Proto::H2] {
        let a = post(pki.client(Some(&pki), proto), &base)
            .await
            .unwrap_or_else(|e| panic!("{proto:?}: {e:?}"));
        assert_eq!(
            (a.status, a.outcome.as_str()),
            (200, "upstream"),
            "{proto:?}"
        );
    }
    let a = post(pki.client(Some(&pki), Proto::Alpn), &base)
        .await
        .unwrap();
    assert_eq!(a.outcome, "upstream");
    let received = up.wait_for(4, Duration::from_secs(5)).await;
    for r in &received {
        assert_forwarded_over(r, "https");
    }

    // No client certificate, or one signed by another CA: the request
    // fails and the upstream hears nothing of it.
    for proto in [Proto::Http1, Proto::H2] {
        let r = post(pki.client(None, proto), &base).await;
        assert!(
            r.is_err(),
            "{proto:?}: no client certificate was accepted: {r:?}"
        );
        let r = post(pki.client(Some(&stranger), proto), &base).await;
        assert!(
            r.is_err(),
            "{proto:?}: a stranger's client certificate was accepted: {r:?}"
        );
    }
    assert!(post(pki.client(None, Proto::Alpn), &base).await.is_err());
    assert!(
        post(test_client(), &base.replace("https", "http"))
            .await
            .is_err()
    );

    // The gateway still serves a good client, and the upstream got only
    // the good callbacks.
    let a = post(pki.client(Some(&pki), Proto::Http1), &base)
        .await
        .unwrap();
    assert_eq!(a.outcome, "upstream");
    up.wait_for(5, Duration::from_secs(5)).await;
    assert_eq!(up.count(), 5);
    gw.shutdown().await;
}

#[tokio::test]
async fn several_listeners_from_one_config_all_serve() {
    let pki = Pki::new();
    let up = Upstream::start(Reply::ok()).await;
    let config = Config::catch_all(&up)
        .listener(Listener::new().name("plain"))
        .listener(Listener::mtls(&pki).name("secure"))
        .listener(Listener::https(&pki).name("https"));
    let gw = Gateway::start(&config).await;
    let addrs = gw.gw().listener_addrs().to_vec();
    assert_eq!(addrs.len(), 3, "{addrs:?}");
    assert!(
        addrs.iter().all(|a| a.ip().is_loopback() && a.port() != 0),
        "{addrs:?}"
    );
    assert_ne!(addrs[0].port(), addrs[1].port());
    assert_ne!(addrs[1].port(), addrs[2].port());

    // Config order: plain, mTLS, HTTPS.
    let a = post(test_client(), &format!("http://{}", addrs[0]))
        .await
        .unwrap();
    assert_eq!(
        (a.version, a.outcome.as_str()),
        (http::Version::HTTP_11, "upstream")
    );
    let received = up.wait_for(1, Duration::from_secs(5)).await;
    assert_forwarded_over(&received[0], "http");

    let mtls = format!("https://localhost:{}", addrs[1].port());
    let a = post(pki.client(Some(&pki), Proto::Alpn), &mtls)
        .await
        .unwrap();
    assert_eq!(a.outcome, "upstream");
    let received = up.wait_for(2, Duration::from_secs(5)).await;
    assert_forwarded_over(&received[1], "https");
    assert!(post(pki.client(None, Proto::Alpn), &mtls).await.is_err());

    let https = format!("https://localhost:{}", addrs[2].port());
    let a = post(pki.client(None, Proto::Alpn), &https).await.unwrap();
    assert_eq!(a.outcome, "upstream");
    let received = up.wait_for(3, Duration::from_secs(5)).await;
    assert_forwarded_over(&received[2], "https");

    // Each listener keeps its own mode: TLS is not spoken on the plain
    // port, plain HTTP not on the TLS ports.
    assert!(
        post(
            pki.client(Some(&pki), Proto::Http1),
            &format!("https://localhost:{}", addrs[0].port())
        )
        .await
        .is_err()
    );
    assert!(
        post(test_client(), &format!("http://{}", addrs[1]))
            .await
            .is_err()
    );
    assert!(
        post(test_client(), &format!("http://{}", addrs[2]))
            .await
            .is_err()
    );
    assert_eq!(up.count(), 3);
    gw.shutdown().await;
}

#[tokio::test]
async fn https_upstream_with_its_own_ca_and_a_client_certificate() {
    // The upstream's PKI is unrelated to anything the gateway would trust by default.
    let up_pki = Pki::new();
    // Odd spacing, a non-ASCII replacement and a trailing newline: only a
    // byte-for-byte copy survives the comparison.
    const ANSWER: &str = "{ \"ActionStatus\": \"OK\", \"ErrorInfo\":\"\",\"ErrorCode\" : 0,\n  \"MsgBody\":[{\"MsgType\":\"TIMTextElem\",\"MsgContent\":{\"Text\":\"h\u{e9}llo \u{2713}\"}}] }\n";
    // Mutual TLS against its own CA, as the gateway's listeners do it.
    let up = Upstream::builder()
        .tls(&up_pki)
        .reply(Reply::json(ANSWER))
        .start()
        .await;
    let (ca, cert, key) = (
        up_pki.path("ca.pem"),
        up_pki.path("client.pem"),
        up_pki.path("client-key.pem"),
    );
    let hook = up.url_with("/hook");
    let config = Config::new()
        .upstream(
            "moderation",
            Endpoint::new(up.url_with("/hook?tenant=7"))
                .ca(&ca)
                .identity(&cert, &key),
        )
        .upstream("no_identity", Endpoint::new(&hook).ca(&ca))
        .upstream("no_ca", Endpoint::new(&hook).identity(&cert, &key))
        .route(Route::new("Group.CallbackBeforeSendMsg", &["moderation"]))
        .route(Route::new(
            "Group.CallbackBeforeCreateGroup",
            &["no_identity"],
        ))
        .route(Route::new("Sns.CallbackPrevFriendAdd", &["no_ca"]));
    let gw = Gateway::start(&config).await;

    let a = gw.decision().await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.outcome, "upstream", "{}", a.text());
    assert_eq!(
        &a.body[..],
        ANSWER.as_bytes(),
        "the upstream's answer must come back byte for byte"
    );

    let seen = up.received();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(
        s.client_cert.as_deref(),
        Some(&up_pki.client_cert_der()[..]),
        "the gateway must present its configured client certificate"
    );
    assert_eq!(s.body, GROUP_SEND.as_bytes());
    assert_eq!(s.uri.path(), "/hook");
    let query = s.uri.query().unwrap();
    assert!(query.starts_with("tenant=7&"), "{query}");
    assert!(
        query.contains("CallbackCommand=Group.CallbackBeforeSendMsg"),
        "{query}"
    );
    assert_eq!(s.headers["x-forwarded-proto"], "http");
    assert_eq!(s.headers["x-request-id"], a.request_id.as_str());
    assert_eq!(s.headers["content-type"], "application/json");

    // Without the client certificate, or without the upstream's CA, no
    // request gets through: the decision falls back at once (well before
    // the 1.5 s default deadline, since the upstream failed).
    let started = std::time::Instant::now();
    for command in [
        "Group.CallbackBeforeCreateGroup",
        "Sns.CallbackPrevFriendAdd",
    ] {
        let a = gw.callback(command, &fixture(command)).await;
        assert_eq!(
            (a.status, a.outcome.as_str()),
            (200, "fallback"),
            "{command}: {}",
            a.text()
        );
        assert_eq!(a.text(), OK, "{command}");
    }
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "fallback took {:?}",
        started.elapsed()
    );
    assert_eq!(
        up.count(),
        1,
        "a request got through without the right TLS settings"
    );
    // The upstream saw the no-ca handshake fail (the gateway aborted it);
    // the missing client certificate fails on its side too.
    assert_eventually!(up.failed_handshakes() >= 2, secs(5));

    // And the good route still works on a pooled (or new) connection.
    let a = gw.decision().await;
    assert_eq!(&a.body[..], ANSWER.as_bytes());
    assert_eq!(up.count(), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn reload_keeps_each_ephemeral_listener_on_its_own_tls_settings() {
    let pki = Pki::new();
    let up = Upstream::start(Reply::ok()).await;
    let config = Config::catch_all(&up)
        .listener(Listener::mtls(&pki).name("mtls"))
        .listener(Listener::https(&pki).name("https"));
    let gw = Gateway::start(&config).await;
    let mtls = format!("https://localhost:{}", gw.gw().listener_addrs()[0].port());
    assert!(post(pki.client(None, Proto::Http1), &mtls).await.is_err());
    let reload = gw.admin().reload().await;
    assert_eq!(reload.status, 200, "{}", reload.text);
    let r = post(pki.client(None, Proto::Http1), &mtls).await;
    assert!(
        r.is_err(),
        "after a reload the mTLS listener accepts clients without a certificate: {r:?}"
    );
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn reload_picks_up_new_certificate_files_and_refuses_broken_ones() {
    let old = Pki::new();
    let new = Pki::new();
    let up = Upstream::start(Reply::ok()).await;
    // The listener's files live in their own folder so they can be replaced.
    let files = tempfile::tempdir().unwrap();
    let (cert, key) = (
        files.path().join("server.pem"),
        files.path().join("server-key.pem"),
    );
    std::fs::write(&cert, &old.pki.server_cert_pem).unwrap();
    std::fs::write(&key, &old.pki.server_key_pem).unwrap();
    let listener = Listener::new().tls(arg(&cert), arg(&key));
    let gw = Gateway::start(&Config::catch_all(&up).listener(listener)).await;
    let base = format!("https://localhost:{}", gw.addr().port());
    assert!(post(old.client(None, Proto::Http1), &base).await.is_ok());
    assert!(post(new.client(None, Proto::Http1), &base).await.is_err());

    // New files + reload: new handshakes use them.
    std::fs::write(&cert, &new.pki.server_cert_pem).unwrap();
    std::fs::write(&key, &new.pki.server_key_pem).unwrap();
    let reload = gw.admin().reload().await;
    assert_eq!(reload.status, 200, "{}", reload.text);
    let a = post(new.client(None, Proto::Http1), &base).await.unwrap();
    assert_eq!(a.outcome, "upstream");
    assert!(post(old.client(None, Proto::Http1), &base).await.is_err());

    // A key that does not match the certificate: refused, the working
    // certificate stays in force.
    std::fs::write(&key, &old.pki.server_key_pem).unwrap();
    let reload = gw.admin().reload().await;
    let (status, text) = (reload.status, reload.text);
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("server-key.pem") || text.contains("server.pem"),
        "{text}"
    );
    let a = post(new.client(None, Proto::Alpn), &base).await.unwrap();
    assert_eq!(a.outcome, "upstream");
    assert_eq!(up.count(), 3);
    gw.shutdown().await;
}
