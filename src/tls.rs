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
mod tests;
