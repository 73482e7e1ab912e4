//! Real TLS on both sides of the gateway: HTTPS and mutual-TLS listeners
//! (HTTP/1.1 and HTTP/2 through ALPN), several listeners from one config,
//! and an HTTPS upstream that has its own CA and wants a client
//! certificate. Certificates come from `callgate::certs::generate()`.

#[path = "support_old/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::net::TcpListener;

use support::*;

const CALLBACK_QUERY: &str = "SdkAppid=1400000001&CallbackCommand=Group.CallbackBeforeSendMsg&contenttype=json&ClientIP=1.2.3.4&OptPlatform=RESTAPI";

/// How a test client speaks HTTP over TLS.
#[derive(Clone, Copy, Debug)]
enum Proto {
    /// HTTP/1.1 only (ALPN offers only http/1.1).
    Http1,
    /// Whatever ALPN picks (the client offers h2 and http/1.1).
    Alpn,
    /// HTTP/2 with prior knowledge.
    H2,
}

/// A client trusting only `trust`'s CA, presenting `identity`'s IM-side
/// client certificate when given. `localhost` always resolves to 127.0.0.1.
fn client(trust: &Pki, identity: Option<&Pki>, proto: Proto) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(trust.pki.ca_cert_pem.as_bytes()).unwrap();
    let mut b = reqwest::Client::builder()
        .tls_certs_only([ca])
        .no_proxy()
        .resolve("localhost", SocketAddr::from(([127, 0, 0, 1], 0)))
        .timeout(Duration::from_secs(10));
    if let Some(id) = identity {
        let pem = format!("{}{}", id.pki.client_cert_pem, id.pki.client_key_pem);
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    b = match proto {
        Proto::Http1 => b.http1_only(),
        Proto::Alpn => b,
        Proto::H2 => b.http2_prior_knowledge(),
    };
    b.build().unwrap()
}

fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// POSTs the standard decision callback; returns the HTTP version and the answer.
async fn post(
    client: &reqwest::Client,
    base: &str,
) -> Result<(http::Version, Answer), reqwest::Error> {
    let r = client
        .post(format!("{base}/im?{CALLBACK_QUERY}"))
        .body(GROUP_SEND)
        .send()
        .await?;
    let version = r.version();
    Ok((version, Answer::read(r).await))
}

fn tls_yaml(pki: &Pki, mtls: bool) -> String {
    let mut s = format!(
        "    tls:\n      cert: \"{}\"\n      key: \"{}\"\n",
        pki.path("server.pem"),
        pki.path("server-key.pem")
    );
    if mtls {
        s.push_str(&format!("      client_ca: \"{}\"\n", pki.path("ca.pem")));
    }
    s
}

/// One TLS listener (HTTPS, or mTLS) and a catch-all route to `up`.
async fn tls_gateway(pki: &Pki, mtls: bool, up: &Upstream) -> Gateway {
    Gateway::start(&format!(
        "listeners:\n  - name: secure\n    addr: \"127.0.0.1:0\"\n{}{}routes:\n  - match: \"*\"\n    upstreams: [a]\n",
        tls_yaml(pki, mtls),
        upstreams_yaml(&[("a", up)])
    ))
    .await
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
        let (version, a) = post(&client(&pki, None, *proto), base)
            .await
            .unwrap_or_else(|e| panic!("{proto:?} {base}: {e:?}"));
        assert_eq!(version, *want, "{proto:?} {base}");
        assert_eq!(a.status, 200, "{proto:?}: {}", a.text());
        assert_eq!(a.outcome, "upstream", "{proto:?}");
        assert_eq!(a.text(), answer, "{proto:?}");
        assert!(!a.request_id.is_empty());
    }
    // The support client (HTTP/2 with prior knowledge) agrees.
    let (version, a) = post(
        &pki.client(false, true),
        &format!("https://localhost:{port}"),
    )
    .await
    .unwrap();
    assert_eq!(
        (version, a.outcome.as_str()),
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
        post(&plain_client(), &format!("http://127.0.0.1:{port}"))
            .await
            .is_err()
    );
    // A client that trusts another CA refuses the gateway's certificate.
    let other = Pki::new();
    let err = post(
        &client(&other, None, Proto::Http1),
        &format!("https://localhost:{port}"),
    )
    .await
    .unwrap_err();
    assert!(err.is_connect() || err.is_request(), "{err:?}");
    // Still serving afterwards, and nothing of the above was forwarded.
    let (_, a) = post(
        &client(&pki, None, Proto::Http1),
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
        let (_, a) = post(&client(&pki, Some(&pki), proto), &base)
            .await
            .unwrap_or_else(|e| panic!("{proto:?}: {e:?}"));
        assert_eq!(
            (a.status, a.outcome.as_str()),
            (200, "upstream"),
            "{proto:?}"
        );
    }
    let (_, a) = post(&pki.client(true, false), &base).await.unwrap();
    assert_eq!(a.outcome, "upstream");
    let received = up.wait_for(4, Duration::from_secs(5)).await;
    for r in &received {
        assert_forwarded_over(r, "https");
    }

    // No client certificate, or one signed by another CA: the request
    // fails and the upstream hears nothing of it.
    for proto in [Proto::Http1, Proto::H2] {
        let r = post(&client(&pki, None, proto), &base).await;
        assert!(
            r.is_err(),
            "{proto:?}: no client certificate was accepted: {r:?}"
        );
        let r = post(&client(&pki, Some(&stranger), proto), &base).await;
        assert!(
            r.is_err(),
            "{proto:?}: a stranger's client certificate was accepted: {r:?}"
        );
    }
    assert!(post(&pki.client(false, false), &base).await.is_err());
    assert!(
        post(&plain_client(), &base.replace("https", "http"))
            .await
            .is_err()
    );

    // The gateway still serves a good client, and the upstream got only
    // the good callbacks.
    let (_, a) = post(&client(&pki, Some(&pki), Proto::Http1), &base)
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
    let gw = Gateway::start(&format!(
        "listeners:\n  - name: plain\n    addr: \"127.0.0.1:0\"\n  - name: secure\n    addr: \"127.0.0.1:0\"\n{}  - name: https\n    addr: \"127.0.0.1:0\"\n{}{}routes:\n  - match: \"*\"\n    upstreams: [a]\n",
        tls_yaml(&pki, true),
        tls_yaml(&pki, false),
        upstreams_yaml(&[("a", &up)])
    ))
    .await;
    let addrs = gw.gw().listener_addrs().to_vec();
    assert_eq!(addrs.len(), 3, "{addrs:?}");
    assert!(
        addrs.iter().all(|a| a.ip().is_loopback() && a.port() != 0),
        "{addrs:?}"
    );
    assert_ne!(addrs[0].port(), addrs[1].port());
    assert_ne!(addrs[1].port(), addrs[2].port());

    // Config order: plain, mTLS, HTTPS.
    let (v, a) = post(&plain_client(), &format!("http://{}", addrs[0]))
        .await
        .unwrap();
    assert_eq!(
        (v, a.outcome.as_str()),
        (http::Version::HTTP_11, "upstream")
    );
    let received = up.wait_for(1, Duration::from_secs(5)).await;
    assert_forwarded_over(&received[0], "http");

    let mtls = format!("https://localhost:{}", addrs[1].port());
    let (_, a) = post(&client(&pki, Some(&pki), Proto::Alpn), &mtls)
        .await
        .unwrap();
    assert_eq!(a.outcome, "upstream");
    let received = up.wait_for(2, Duration::from_secs(5)).await;
    assert_forwarded_over(&received[1], "https");
    assert!(post(&client(&pki, None, Proto::Alpn), &mtls).await.is_err());

    let https = format!("https://localhost:{}", addrs[2].port());
    let (_, a) = post(&client(&pki, None, Proto::Alpn), &https)
        .await
        .unwrap();
    assert_eq!(a.outcome, "upstream");
    let received = up.wait_for(3, Duration::from_secs(5)).await;
    assert_forwarded_over(&received[2], "https");

    // Each listener keeps its own mode: TLS is not spoken on the plain
    // port, plain HTTP not on the TLS ports.
    assert!(
        post(
            &client(&pki, Some(&pki), Proto::Http1),
            &format!("https://localhost:{}", addrs[0].port())
        )
        .await
        .is_err()
    );
    assert!(
        post(&plain_client(), &format!("http://{}", addrs[1]))
            .await
            .is_err()
    );
    assert!(
        post(&plain_client(), &format!("http://{}", addrs[2]))
            .await
            .is_err()
    );
    assert_eq!(up.count(), 3);
    gw.shutdown().await;
}

/// What the TLS upstream saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    uri: http::Uri,
    headers: http::HeaderMap,
    body: Bytes,
    /// DER of the first certificate the gateway presented.
    client_cert: Option<Vec<u8>>,
}

/// An HTTPS upstream on an ephemeral port: its own PKI's server
/// certificate, mutual TLS against its own CA (via
/// `callgate::tls::server_config`), answering `answer` to every request.
struct TlsUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    failed_handshakes: Arc<AtomicUsize>,
}

impl TlsUpstream {
    async fn start(pki: &Pki, answer: &'static [u8]) -> Self {
        let config = callgate::tls::server_config(
            Path::new(&pki.path("server.pem")),
            Path::new(&pki.path("server-key.pem")),
            Some(Path::new(&pki.path("ca.pem"))),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let failed_handshakes = Arc::new(AtomicUsize::new(0));
        let (seen2, failed2) = (seen.clone(), failed_handshakes.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, seen, failed) = (acceptor.clone(), seen2.clone(), failed2.clone());
                tokio::spawn(async move {
                    let tls = match acceptor.accept(stream).await {
                        Ok(tls) => tls,
                        Err(_) => {
                            failed.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    };
                    let client_cert = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| c.to_vec());
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (seen, client_cert) = (seen.clone(), client_cert.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            seen.lock().unwrap().push(Seen {
                                uri: parts.uri,
                                headers: parts.headers,
                                body,
                                client_cert,
                            });
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                Bytes::from_static(answer),
                            )))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TlsUpstream {
            addr,
            seen,
            failed_handshakes,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn https_upstream_with_its_own_ca_and_a_client_certificate() {
    // The upstream's PKI is unrelated to anything the gateway would trust by default.
    let up_pki = Pki::new();
    // Odd spacing, a non-ASCII replacement and a trailing newline: only a
    // byte-for-byte copy survives the comparison.
    const ANSWER: &[u8] = "{ \"ActionStatus\": \"OK\", \"ErrorInfo\":\"\",\"ErrorCode\" : 0,\n  \"MsgBody\":[{\"MsgType\":\"TIMTextElem\",\"MsgContent\":{\"Text\":\"h\u{e9}llo \u{2713}\"}}] }\n".as_bytes();
    let up = TlsUpstream::start(&up_pki, ANSWER).await;
    let port = up.addr.port();
    let (ca, cert, key) = (
        up_pki.path("ca.pem"),
        up_pki.path("client.pem"),
        up_pki.path("client-key.pem"),
    );
    let gw = Gateway::start(&format!(
        r#"upstreams:
  moderation:
    url: "https://127.0.0.1:{port}/hook?tenant=7"
    ca: "{ca}"
    client_cert: "{cert}"
    client_key: "{key}"
  no_identity:
    url: "https://127.0.0.1:{port}/hook"
    ca: "{ca}"
  no_ca:
    url: "https://127.0.0.1:{port}/hook"
    client_cert: "{cert}"
    client_key: "{key}"
routes:
  - match: "Group.CallbackBeforeSendMsg"
    upstreams: [moderation]
  - match: "Group.CallbackBeforeCreateGroup"
    upstreams: [no_identity]
  - match: "Sns.CallbackPrevFriendAdd"
    upstreams: [no_ca]
"#
    ))
    .await;

    let a = gw.callback("Group.CallbackBeforeSendMsg", GROUP_SEND).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.outcome, "upstream", "{}", a.text());
    assert_eq!(
        &a.body[..],
        ANSWER,
        "the upstream's answer must come back byte for byte"
    );

    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(
        s.client_cert.as_deref(),
        Some(&der(&up_pki.pki.client_cert_pem)[..]),
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
    let a = gw
        .callback(
            "Group.CallbackBeforeCreateGroup",
            &fixture("Group.CallbackBeforeCreateGroup"),
        )
        .await;
    assert_eq!(
        (a.status, a.outcome.as_str()),
        (200, "fallback"),
        "{}",
        a.text()
    );
    assert_eq!(a.text(), OK);
    let a = gw
        .callback(
            "Sns.CallbackPrevFriendAdd",
            &fixture("Sns.CallbackPrevFriendAdd"),
        )
        .await;
    assert_eq!(
        (a.status, a.outcome.as_str()),
        (200, "fallback"),
        "{}",
        a.text()
    );
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "fallback took {:?}",
        started.elapsed()
    );
    assert_eq!(
        up.seen().len(),
        1,
        "a request got through without the right TLS settings"
    );
    // The upstream saw the no-ca handshake fail (the gateway aborted it);
    // the missing client certificate fails on its side too.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while up.failed_handshakes.load(Ordering::SeqCst) < 2 && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(up.failed_handshakes.load(Ordering::SeqCst) >= 2);

    // And the good route still works on a pooled (or new) connection.
    let a = gw.callback("Group.CallbackBeforeSendMsg", GROUP_SEND).await;
    assert_eq!(&a.body[..], ANSWER);
    assert_eq!(up.seen().len(), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn reload_keeps_each_ephemeral_listener_on_its_own_tls_settings() {
    let pki = Pki::new();
    let up = Upstream::start(Reply::ok()).await;
    let gw = Gateway::start(&format!(
        "listeners:\n  - name: mtls\n    addr: \"127.0.0.1:0\"\n{}  - name: https\n    addr: \"127.0.0.1:0\"\n{}{}routes:\n  - match: \"*\"\n    upstreams: [a]\n",
        tls_yaml(&pki, true),
        tls_yaml(&pki, false),
        upstreams_yaml(&[("a", &up)])
    ))
    .await;
    let mtls = format!("https://localhost:{}", gw.gw().listener_addrs()[0].port());
    assert!(
        post(&client(&pki, None, Proto::Http1), &mtls)
            .await
            .is_err()
    );
    let (status, v) = {
        let r = gw
            .http
            .post(format!("{}/reload", gw.admin()))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    assert_eq!(status, 200, "{v}");
    let r = post(&client(&pki, None, Proto::Http1), &mtls).await;
    assert!(
        r.is_err(),
        "after a reload the mTLS listener accepts clients without a certificate: {r:?}"
    );
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

async fn admin_reload(gw: &Gateway) -> (u16, String) {
    let r = gw
        .http
        .post(format!("{}/reload", gw.admin()))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
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
    let gw = Gateway::start(&format!(
        "listeners:\n  - addr: \"127.0.0.1:0\"\n    tls:\n      cert: \"{}\"\n      key: \"{}\"\n{}routes:\n  - match: \"*\"\n    upstreams: [a]\n",
        cert.display(),
        key.display(),
        upstreams_yaml(&[("a", &up)])
    ))
    .await;
    let base = format!("https://localhost:{}", gw.addr().port());
    assert!(post(&client(&old, None, Proto::Http1), &base).await.is_ok());
    assert!(
        post(&client(&new, None, Proto::Http1), &base)
            .await
            .is_err()
    );

    // New files + reload: new handshakes use them.
    std::fs::write(&cert, &new.pki.server_cert_pem).unwrap();
    std::fs::write(&key, &new.pki.server_key_pem).unwrap();
    let (status, text) = admin_reload(&gw).await;
    assert_eq!(status, 200, "{text}");
    let (_, a) = post(&client(&new, None, Proto::Http1), &base)
        .await
        .unwrap();
    assert_eq!(a.outcome, "upstream");
    assert!(
        post(&client(&old, None, Proto::Http1), &base)
            .await
            .is_err()
    );

    // A key that does not match the certificate: refused, the working
    // certificate stays in force.
    std::fs::write(&key, &old.pki.server_key_pem).unwrap();
    let (status, text) = admin_reload(&gw).await;
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("server-key.pem") || text.contains("server.pem"),
        "{text}"
    );
    let (_, a) = post(&client(&new, None, Proto::Alpn), &base).await.unwrap();
    assert_eq!(a.outcome, "upstream");
    assert_eq!(up.count(), 3);
    gw.shutdown().await;
}
