//! Unit tests of `tls`.

use super::*;
use crate::certs::{self, DevPki};
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A dev PKI written to a temp dir; keeps the dir alive.
struct Pki {
    dir: tempfile::TempDir,
    pem: DevPki,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pem = certs::generate().unwrap();
        pem.write(dir.path()).unwrap();
        Self { dir, pem }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn server(&self, mtls: bool) -> Arc<ServerConfig> {
        let ca = self.path("ca.pem");
        server_config(
            &self.path("server.pem"),
            &self.path("server-key.pem"),
            mtls.then_some(ca.as_path()),
        )
        .unwrap()
    }
}

/// What the server saw on a successful handshake.
#[derive(Debug)]
struct Seen {
    alpn: Option<Vec<u8>>,
    peer_certs: Option<Vec<CertificateDer<'static>>>,
}

/// Accepts one TLS connection, answers "ping" with "pong".
async fn serve_once(
    config: Arc<ServerConfig>,
) -> (SocketAddr, tokio::task::JoinHandle<std::io::Result<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = TlsAcceptor::from(config).accept(tcp).await?;
        let (_, conn) = tls.get_ref();
        let seen = Seen {
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            peer_certs: conn.peer_certificates().map(|c| c.to_vec()),
        };
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await?;
        tls.write_all(b"pong").await?;
        tls.shutdown().await?;
        Ok(seen)
    });
    (addr, task)
}

/// Connects, says "ping", expects "pong"; returns the negotiated ALPN.
async fn ping(
    addr: SocketAddr,
    name: &str,
    config: ClientConfig,
) -> std::io::Result<Option<Vec<u8>>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_string()).unwrap();
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    tls.write_all(b"ping").await?;
    let mut buf = [0u8; 4];
    tls.read_exact(&mut buf).await?;
    assert_eq!(&buf, b"pong");
    Ok(alpn)
}

/// Runs one exchange; returns (client result, server result).
async fn exchange(
    server: Arc<ServerConfig>,
    name: &str,
    client: ClientConfig,
) -> (std::io::Result<Option<Vec<u8>>>, std::io::Result<Seen>) {
    let (addr, task) = serve_once(server).await;
    let client_res = tokio::time::timeout(TIMEOUT, ping(addr, name, client))
        .await
        .expect("client timed out");
    let server_res = tokio::time::timeout(TIMEOUT, task)
        .await
        .expect("server timed out")
        .unwrap();
    (client_res, server_res)
}

fn client_trusting(pki: &Pki, identity: Option<(&Path, &Path)>) -> ClientConfig {
    client_config(Some(&pki.path("ca.pem")), identity).unwrap()
}

fn with_alpn(mut config: ClientConfig, alpn: &[&[u8]]) -> ClientConfig {
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

#[test]
fn provider_is_shared() {
    assert!(Arc::ptr_eq(&provider(), &provider()));
}

#[test]
fn server_config_sets_alpn_and_client_config_leaves_it_empty() {
    let pki = Pki::new();
    assert_eq!(
        pki.server(false).alpn_protocols,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    let client = client_trusting(
        &pki,
        Some((&pki.path("client.pem"), &pki.path("client-key.pem"))),
    );
    assert!(client.alpn_protocols.is_empty());
    assert!(client_config(None, None).unwrap().alpn_protocols.is_empty());
}

#[tokio::test]
async fn tls_handshake_localhost_and_ip() {
    let pki = Pki::new();
    for name in ["localhost", "127.0.0.1"] {
        let (client, server) = exchange(pki.server(false), name, client_trusting(&pki, None)).await;
        assert_eq!(client.unwrap(), None, "{name}: no ALPN offered");
        let seen = server.unwrap();
        assert!(seen.peer_certs.is_none());
        assert_eq!(seen.alpn, None);
    }
}

#[tokio::test]
async fn tls_negotiates_h2_and_http11() {
    let pki = Pki::new();
    let client = with_alpn(client_trusting(&pki, None), &[b"h2", b"http/1.1"]);
    let (client, server) = exchange(pki.server(false), "localhost", client).await;
    assert_eq!(client.unwrap().as_deref(), Some(&b"h2"[..]));
    assert_eq!(server.unwrap().alpn.as_deref(), Some(&b"h2"[..]));

    let client = with_alpn(client_trusting(&pki, None), &[b"http/1.1"]);
    let (client, _) = exchange(pki.server(false), "localhost", client).await;
    assert_eq!(client.unwrap().as_deref(), Some(&b"http/1.1"[..]));
}

#[tokio::test]
async fn tls12_client_is_accepted() {
    let pki = Pki::new();
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pki.pem.ca_cert_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let client = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let (client, server) = exchange(pki.server(false), "localhost", client).await;
    client.unwrap();
    server.unwrap();
}

#[tokio::test]
async fn tls_rejects_wrong_name_and_unknown_ca() {
    let pki = Pki::new();
    let (client, _) = exchange(
        pki.server(false),
        "example.com",
        client_trusting(&pki, None),
    )
    .await;
    assert!(client.is_err());

    let other = Pki::new();
    let (client, server) = exchange(
        pki.server(false),
        "localhost",
        client_trusting(&other, None),
    )
    .await;
    assert!(client.is_err());
    assert!(server.is_err());
}

#[tokio::test]
async fn mtls_accepts_dev_client_cert() {
    let pki = Pki::new();
    let identity = (pki.path("client.pem"), pki.path("client-key.pem"));
    let client = with_alpn(
        client_trusting(&pki, Some((&identity.0, &identity.1))),
        &[b"h2", b"http/1.1"],
    );
    let (client, server) = exchange(pki.server(true), "localhost", client).await;
    assert_eq!(client.unwrap().as_deref(), Some(&b"h2"[..]));
    let seen = server.unwrap();
    let expected: Vec<_> = CertificateDer::pem_slice_iter(pki.pem.client_cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(seen.peer_certs.unwrap(), expected);
}

#[tokio::test]
async fn mtls_client_config_without_alpn_works() {
    // The config exactly as an upstream connector would get it (ALPN empty).
    let pki = Pki::new();
    let client = client_config_pem(
        Some(pki.pem.ca_cert_pem.as_bytes()),
        Some((
            pki.pem.client_cert_pem.as_bytes(),
            pki.pem.client_key_pem.as_bytes(),
        )),
    )
    .unwrap();
    let (client, server) = exchange(pki.server(true), "127.0.0.1", client).await;
    assert_eq!(client.unwrap(), None);
    assert!(server.unwrap().peer_certs.is_some());
}

#[tokio::test]
async fn mtls_rejects_client_without_cert() {
    let pki = Pki::new();
    let (client, server) =
        exchange(pki.server(true), "localhost", client_trusting(&pki, None)).await;
    assert!(client.is_err(), "client should see the rejection");
    let err = server.unwrap_err().to_string();
    assert!(
        err.contains("CertificateRequired") || err.contains("certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn mtls_rejects_cert_from_other_pki() {
    let pki = Pki::new();
    let other = Pki::new();
    // Trusts the right server CA, but presents a client cert from another CA.
    let client = client_trusting(
        &pki,
        Some((&other.path("client.pem"), &other.path("client-key.pem"))),
    );
    let (client, server) = exchange(pki.server(true), "localhost", client).await;
    assert!(client.is_err());
    assert!(server.is_err());
}

#[tokio::test]
async fn mtls_rejects_server_cert_used_as_client_cert() {
    // Signed by the right CA but with EKU serverAuth only.
    let pki = Pki::new();
    let client = client_trusting(
        &pki,
        Some((&pki.path("server.pem"), &pki.path("server-key.pem"))),
    );
    let (client, server) = exchange(pki.server(true), "localhost", client).await;
    assert!(client.is_err());
    assert!(server.is_err());
}

#[test]
fn pem_server_config_matches_path_version() {
    let pki = Pki::new();
    let config = server_config_pem(
        pki.pem.server_cert_pem.as_bytes(),
        pki.pem.server_key_pem.as_bytes(),
        Some(pki.pem.ca_cert_pem.as_bytes()),
    )
    .unwrap();
    assert_eq!(config.alpn_protocols.len(), 2);
}

fn server_err(cert: &Path, key: &Path, ca: Option<&Path>) -> String {
    let err = server_config(cert, key, ca).unwrap_err().to_string();
    eprintln!("{err}");
    err
}

#[test]
fn error_missing_files() {
    let pki = Pki::new();
    let missing = pki.path("nope.pem");
    let (cert, key, ca) = (
        pki.path("server.pem"),
        pki.path("server-key.pem"),
        pki.path("ca.pem"),
    );
    let m = missing.display().to_string();
    for err in [
        server_err(&missing, &key, None),
        server_err(&cert, &missing, None),
        server_err(&cert, &key, Some(&missing)),
        client_config(Some(&missing), None).unwrap_err().to_string(),
        client_config(Some(&ca), Some((&cert, &missing)))
            .unwrap_err()
            .to_string(),
    ] {
        assert!(err.starts_with(&format!("cannot read {m}")), "{err}");
    }
}

#[test]
fn error_no_certificate() {
    let pki = Pki::new();
    let junk = pki.path("junk.pem");
    std::fs::write(&junk, "hello, not a certificate\n").unwrap();
    let err = server_err(&junk, &pki.path("server-key.pem"), None);
    assert_eq!(err, format!("{}: no certificate found", junk.display()));
    // A key file given as the certificate has no certificate either.
    let key = pki.path("server-key.pem");
    let err = server_err(&key, &key, None);
    assert_eq!(err, format!("{}: no certificate found", key.display()));
}

#[test]
fn error_no_private_key() {
    let pki = Pki::new();
    let cert = pki.path("server.pem");
    let err = server_err(&cert, &cert, None);
    assert!(
        err.starts_with(&format!("{}: no private key found", cert.display())),
        "{err}"
    );
}

#[test]
fn error_bad_der_certificate() {
    let pki = Pki::new();
    let bad = pki.path("bad.pem");
    std::fs::write(
        &bad,
        "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = server_err(&bad, &pki.path("server-key.pem"), None);
    assert!(
        err.starts_with(&format!("{}: invalid certificate", bad.display())),
        "{err}"
    );
}

#[test]
fn error_key_mismatch() {
    let pki = Pki::new();
    let (cert, key) = (pki.path("server.pem"), pki.path("client-key.pem"));
    let err = server_err(&cert, &key, None);
    assert_eq!(
        err,
        format!(
            "{} and {}: certificate and key do not match",
            cert.display(),
            key.display()
        )
    );
    let err = client_config(Some(&pki.path("ca.pem")), Some((&cert, &key)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("do not match"), "{err}");
    assert!(matches!(
        client_config_pem(
            None,
            Some((
                pki.pem.client_cert_pem.as_bytes(),
                pki.pem.server_key_pem.as_bytes()
            ))
        ),
        Err(TlsError::KeyMismatch { .. })
    ));
}

#[test]
fn error_garbage_client_ca() {
    let pki = Pki::new();
    let (cert, key) = (pki.path("server.pem"), pki.path("server-key.pem"));
    let garbage = pki.path("garbage-ca.pem");
    for contents in [
        "garbage garbage\n",
        "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----\nAAECAwQF\n",
    ] {
        std::fs::write(&garbage, contents).unwrap();
        let err = server_err(&cert, &key, Some(&garbage));
        assert!(
            err.starts_with(&format!("{}: invalid client CA: ", garbage.display())),
            "{err}"
        );
        let err = client_config(Some(&garbage), None).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}: invalid CA: ", garbage.display())),
            "{err}"
        );
    }
}

#[test]
fn errors_never_quote_key_material() {
    let pki = Pki::new();
    let body: String = pki
        .pem
        .server_key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let broken = pki.path("broken-key.pem");
    for contents in [
        // Truncated: no END line.
        pki.pem
            .server_key_pem
            .replace("-----END PRIVATE KEY-----", ""),
        // Corrupted base64.
        pki.pem.server_key_pem.replacen(&body[..8], "!!!!!!!!", 1),
        // Valid base64, not a key.
        "-----BEGIN PRIVATE KEY-----\nAAECAwQF\n-----END PRIVATE KEY-----\n".into(),
    ] {
        std::fs::write(&broken, &contents).unwrap();
        let err = server_err(&pki.path("server.pem"), &broken, None);
        assert!(err.starts_with(&broken.display().to_string()), "{err}");
        assert!(!err.contains(&body[8..24]), "{err}");
    }
}

#[test]
fn client_config_defaults_to_webpki_roots() {
    let config = client_config(None, None).unwrap();
    assert!(!config.client_auth_cert_resolver.has_certs());
    let pki = Pki::new();
    let config = client_config(
        None,
        Some((&pki.path("client.pem"), &pki.path("client-key.pem"))),
    )
    .unwrap();
    assert!(config.client_auth_cert_resolver.has_certs());
}

#[cfg(unix)]
#[test]
fn loose_key_permissions_warns_only_when_group_or_other_can_access() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    std::fs::write(&key, "k").unwrap();
    for (mode, warns) in [
        (0o644, true),
        (0o640, true),
        (0o604, true),
        (0o600, false),
        (0o400, false),
    ] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        let warning = loose_key_permissions(&key);
        assert_eq!(warning.is_some(), warns, "mode {mode:o}: {warning:?}");
        if let Some(w) = warning {
            assert!(w.contains(&key.display().to_string()), "{w}");
            assert!(w.contains(&format!("{mode:04o}")), "{w}");
        }
    }
    assert!(loose_key_permissions(&dir.path().join("missing.pem")).is_none());
}
