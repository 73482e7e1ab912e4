//! TLS configuration: the server side of listeners (HTTPS, or mutual TLS when
//! a client CA is configured) and the client side for HTTPS upstreams.
//!
//! Every config is built with an explicit aws-lc-rs [`CryptoProvider`]
//! ([`provider()`]) instead of the process-level default, so a second
//! provider feature turned on somewhere in the dependency graph can never
//! make rustls panic at runtime.
//!
//! PEM is parsed with `rustls-pki-types` (`rustls-pemfile` is unmaintained).
//! Files are read whole first and then parsed, so the path and the PEM-bytes
//! variants share one code path and every error names its source. Error
//! messages describe what is wrong but never quote file contents, so a key
//! can never leak into a log.

use std::path::Path;
use std::sync::{Arc, LazyLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// ALPN offered by listeners, in server preference order.
pub const SERVER_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why a certificate, key or CA could not be turned into a TLS config.
///
/// `path` is the file path, or a label such as "client certificate (PEM)"
/// for the PEM-bytes functions.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read (missing, permissions, ...).
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file holds no `CERTIFICATE` PEM block.
    #[error("{path}: no certificate found")]
    NoCertificate { path: String },
    /// A PEM block is broken (bad BEGIN/END line, bad base64).
    #[error("{path}: malformed PEM: {reason}")]
    Pem { path: String, reason: String },
    /// A PEM block decodes, but is not a usable X.509 certificate.
    #[error("{path}: invalid certificate: {reason}")]
    InvalidCertificate { path: String, reason: String },
    /// The file holds no private key block that can be used.
    #[error(
        "{path}: no private key found (expected an unencrypted PKCS#8, PKCS#1 or SEC1 PEM key)"
    )]
    NoPrivateKey { path: String },
    /// The key block decodes, but the crypto provider cannot use it.
    #[error("{path}: invalid private key: {reason}")]
    InvalidKey { path: String, reason: String },
    /// The key is not the one the certificate was issued for.
    #[error("{cert} and {key}: certificate and key do not match")]
    KeyMismatch { cert: String, key: String },
    /// The CA used to verify client certificates (mutual TLS) is unusable.
    #[error("{path}: invalid client CA: {reason}")]
    InvalidClientCa { path: String, reason: String },
    /// The CA used to verify an upstream's certificate is unusable.
    #[error("{path}: invalid CA: {reason}")]
    InvalidCa { path: String, reason: String },
    /// rustls rejected the assembled configuration (should not happen with the built-in provider).
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// PEM input together with the name used for it in error messages.
#[derive(Clone, Copy)]
struct Source<'a> {
    label: &'a str,
    bytes: &'a [u8],
}

static PROVIDER: LazyLock<Arc<CryptoProvider>> =
    LazyLock::new(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));

/// The aws-lc-rs provider every config here is built with (created once, shared).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::clone(&PROVIDER)
}

/// Server side of a listener: TLS 1.2+ (safe defaults), ALPN `["h2","http/1.1"]`.
/// With `client_ca`: mutual TLS through `WebPkiClientVerifier` (a client
/// certificate signed by that CA is REQUIRED).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_file = read_file(cert)?;
    let key_file = read_file(key)?;
    let ca_file = client_ca.map(read_file).transpose()?;
    server_config_from(
        cert_file.source(),
        key_file.source(),
        ca_file.as_ref().map(Loaded::source),
    )
}

/// [`server_config`] from PEM bytes (errors name "server certificate (PEM)" and so on).
pub fn server_config_pem(
    cert: &[u8],
    key: &[u8],
    client_ca: Option<&[u8]>,
) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_from(
        Source {
            label: "server certificate (PEM)",
            bytes: cert,
        },
        Source {
            label: "server key (PEM)",
            bytes: key,
        },
        client_ca.map(|bytes| Source {
            label: "client CA (PEM)",
            bytes,
        }),
    )
}

fn server_config_from(
    cert: Source<'_>,
    key: Source<'_>,
    client_ca: Option<Source<'_>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certified = certified_key(cert, key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let bad_ca = |reason: String| TlsError::InvalidClientCa {
                path: ca.label.to_string(),
                reason,
            };
            let roots = root_store(ca, bad_ca)?;
            // `build()` without `allow_unauthenticated()`: a client certificate is mandatory.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| bad_ca(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    // Without ALPN a client can never pick h2.
    config.alpn_protocols = SERVER_ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A connector for `http://` and `https://` URLs with `tls`, offering
/// HTTP/1.1 and HTTP/2 by ALPN; `tcp` carries the TCP settings.
pub fn https_connector(
    tls: ClientConfig,
    mut tcp: hyper_util::client::legacy::connect::HttpConnector,
) -> hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector> {
    tcp.enforce_http(false);
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(tcp)
}

/// Client side for upstreams: trusts only `ca` when given, else webpki-roots
/// (Mozilla's roots); optional client identity `(cert, key)`.
///
/// `alpn_protocols` stays EMPTY: hyper-rustls sets it from the enabled HTTP
/// versions and panics if it is already set. Returned by value because
/// `HttpsConnectorBuilder::with_tls_config` takes it that way.
pub fn client_config(
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<ClientConfig, TlsError> {
    let ca_file = ca.map(read_file).transpose()?;
    let identity_files = identity
        .map(|(cert, key)| Ok::<_, TlsError>((read_file(cert)?, read_file(key)?)))
        .transpose()?;
    client_config_from(
        ca_file.as_ref().map(Loaded::source),
        identity_files
            .as_ref()
            .map(|(c, k)| (c.source(), k.source())),
    )
}

/// [`client_config`] from PEM bytes, e.g. for `callgate send --ca/--cert/--key`.
pub fn client_config_pem(
    ca: Option<&[u8]>,
    identity: Option<(&[u8], &[u8])>,
) -> Result<ClientConfig, TlsError> {
    client_config_from(
        ca.map(|bytes| Source {
            label: "CA (PEM)",
            bytes,
        }),
        identity.map(|(cert, key)| {
            (
                Source {
                    label: "client certificate (PEM)",
                    bytes: cert,
                },
                Source {
                    label: "client key (PEM)",
                    bytes: key,
                },
            )
        }),
    )
}

fn client_config_from(
    ca: Option<Source<'_>>,
    identity: Option<(Source<'_>, Source<'_>)>,
) -> Result<ClientConfig, TlsError> {
    // Identity before CA: same order as the server side (own cert first, then the CA).
    let certified = identity
        .map(|(cert, key)| certified_key(cert, key))
        .transpose()?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match ca {
        Some(ca) => {
            let roots = root_store(ca, |reason| TlsError::InvalidCa {
                path: ca.label.to_string(),
                reason,
            })?;
            builder.with_root_certificates(roots)
        }
        None => hyper_rustls::ConfigBuilderExt::with_webpki_roots(builder),
    };
    Ok(match certified {
        Some(certified) => {
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified)))
        }
        None => builder.with_no_client_auth(),
    })
}

/// Warn text when a private key file is readable by group/others
/// (unix `mode & 0o077 != 0`); `None` otherwise, on non-unix systems, or when
/// the file cannot be inspected (loading it reports that). Symlinks are
/// followed, so a Kubernetes secret volume is judged by the real file.
pub fn loose_key_permissions(key: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(key).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then(|| {
            format!(
                "{}: private key is accessible by group/others (mode {mode:04o}); restrict it, e.g. chmod 600",
                key.display()
            )
        })
    }
    #[cfg(not(unix))]
    {
        let _ = key;
        None
    }
}

/// File contents plus its display path, kept together for error messages.
struct Loaded {
    label: String,
    bytes: Vec<u8>,
}

impl Loaded {
    fn source(&self) -> Source<'_> {
        Source {
            label: &self.label,
            bytes: &self.bytes,
        }
    }
}

fn read_file(path: &Path) -> Result<Loaded, TlsError> {
    let label = path.display().to_string();
    match std::fs::read(path) {
        Ok(bytes) => Ok(Loaded { label, bytes }),
        Err(source) => Err(TlsError::Read {
            path: label,
            source,
        }),
    }
}

/// All `CERTIFICATE` blocks of a PEM input; at least one.
fn load_certs(src: Source<'_>) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(src.bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: src.label.to_string(),
            reason: pem_reason(&e),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: src.label.to_string(),
        });
    }
    Ok(certs)
}

/// The first private key block (PKCS#8, PKCS#1 or SEC1) of a PEM input.
fn load_key(src: Source<'_>) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(src.bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: src.label.to_string(),
        },
        e => TlsError::Pem {
            path: src.label.to_string(),
            reason: pem_reason(&e),
        },
    })
}

/// Certificate chain plus key, checked to belong together.
///
/// rustls' `with_single_cert` also checks this, but its error does not say
/// which files are involved; doing it here gives a precise message and lets
/// the server and client sides share one path.
fn certified_key(cert: Source<'_>, key: Source<'_>) -> Result<CertifiedKey, TlsError> {
    let chain = load_certs(cert)?;
    let key_der = load_key(key)?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| TlsError::InvalidKey {
            path: key.label.to_string(),
            reason: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                cert: cert.label.to_string(),
                key: key.label.to_string(),
            })
        }
        // The provider cannot derive a public key from this key type, so the pair cannot
        // be compared; rustls accepts that case too (a wrong key then fails at handshake).
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            tracing::warn!(
                cert = cert.label,
                key = key.label,
                "cannot check that certificate and key match"
            );
            Ok(certified)
        }
        // keys_match parses the end-entity certificate: anything else means it is not valid X.509.
        Err(e) => Err(TlsError::InvalidCertificate {
            path: cert.label.to_string(),
            reason: rustls_reason(&e),
        }),
    }
}

/// A root store holding every certificate of `src`; any unusable one is an error
/// (silently skipping it would leave a CA the operator believes is trusted).
fn root_store(
    src: Source<'_>,
    bad: impl Fn(String) -> TlsError,
) -> Result<RootCertStore, TlsError> {
    let certs = match load_certs(src) {
        Ok(certs) => certs,
        Err(TlsError::NoCertificate { .. }) => return Err(bad("no certificate found".into())),
        Err(TlsError::Pem { reason, .. }) => return Err(bad(format!("malformed PEM: {reason}"))),
        Err(e) => return Err(e),
    };
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|e| bad(format!("certificate #{}: {}", i + 1, rustls_reason(&e))))?;
    }
    Ok(roots)
}

/// A PEM error without any of the input's bytes (they may be key material).
fn pem_reason(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a section has no END line".into(),
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed".into(),
        pem::Error::Base64Decode(_) => "invalid base64 inside a section".into(),
        pem::Error::SectionTooLarge => "a section is too large".into(),
        pem::Error::NoItemsFound => "nothing found".into(),
        pem::Error::Io(e) => e.to_string(),
        _ => "unreadable PEM".into(),
    }
}

/// rustls says "invalid peer certificate" even for local files; say it plainly instead.
fn rustls_reason(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding) => {
            "not a valid X.509 certificate (bad DER encoding)".into()
        }
        rustls::Error::InvalidCertificate(other) => format!("{other:?}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
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
            let (client, server) =
                exchange(pki.server(false), name, client_trusting(&pki, None)).await;
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
}
