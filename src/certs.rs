//! Development PKI for `callgate certs` and the tests: one CA, a server
//! certificate for the loopback names, and an "IM side" client certificate.
//!
//! Everything is ECDSA P-256 (fast to generate, accepted by every TLS stack).
//! The certificates carry the extensions webpki insists on: the CA has basic
//! constraints plus keyCertSign/cRLSign, and each leaf has the extended key
//! usage for its role, or the chain is rejected at handshake time.

use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};

/// Common name of the development CA.
pub const CA_COMMON_NAME: &str = "callgate dev CA";
/// Common name of the "IM side" client certificate.
pub const CLIENT_COMMON_NAME: &str = "im-callback-client";

/// How long the CA is valid: long, so a checked-in dev PKI does not rot quickly.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long the leaf certificates are valid.
const LEAF_VALIDITY: Duration = Duration::from_secs(2 * 365 * 24 * 3600);
/// Back-dating of `notBefore`, so a peer whose clock runs a little behind still accepts them.
const BACKDATE: Duration = Duration::from_secs(3600);

/// Errors from generating or writing the development PKI.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// rcgen refused to build or sign one of the certificates.
    #[error("cannot generate the {what}: {source}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    /// The output folder could not be created.
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// One of the files could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A generated development PKI, all in PEM.
///
/// `Debug` is deliberately not derived: it would print private keys.
pub struct DevPki {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

/// A development PKI: a CA ("callgate dev CA"), a server certificate for DNS
/// `localhost` + IP `127.0.0.1` + IP `::1` (EKU serverAuth), and an "IM side"
/// client certificate (CN "im-callback-client", EKU clientAuth), both signed
/// by the CA. ECDSA P-256; every call makes fresh keys.
pub fn generate() -> Result<DevPki, CertsError> {
    let now = SystemTime::now();
    let not_before = now.checked_sub(BACKDATE).unwrap_or(now);
    let err = |what| move |source| CertsError::Generate { what, source };

    // CA
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(err("CA key"))?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = dn(CA_COMMON_NAME);
    // Path length 0: this CA signs leaves only, never intermediate CAs.
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = not_before.into();
    ca_params.not_after = (now + CA_VALIDITY).into();
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(err("CA certificate"))?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::from_params(&ca_params, &ca_key);

    // Server
    let server_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(err("server key"))?;
    let mut server_params =
        CertificateParams::new(vec!["localhost".to_string()]).map_err(err("server certificate"))?;
    server_params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    server_params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    server_params.distinguished_name = dn("localhost");
    leaf_common(&mut server_params, not_before, now);
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server_params
        .signed_by(&server_key, &issuer)
        .map_err(err("server certificate"))?;

    // Client ("IM side")
    let client_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(err("client key"))?;
    let mut client_params = CertificateParams::default();
    client_params.distinguished_name = dn(CLIENT_COMMON_NAME);
    leaf_common(&mut client_params, not_before, now);
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client_params
        .signed_by(&client_key, &issuer)
        .map_err(err("client certificate"))?;

    Ok(DevPki {
        ca_cert_pem: ca_cert.pem(),
        ca_key_pem,
        server_cert_pem: server_cert.pem(),
        server_key_pem: server_key.serialize_pem(),
        client_cert_pem: client_cert.pem(),
        client_key_pem: client_key.serialize_pem(),
    })
}

/// A subject with a common name and a fixed organisation, so the files are recognisable.
fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "callgate development");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Settings shared by both leaves: not a CA, signature-only key, AKI pointing at the CA.
fn leaf_common(params: &mut CertificateParams, not_before: SystemTime, now: SystemTime) {
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before.into();
    params.not_after = (now + LEAF_VALIDITY).into();
}

impl DevPki {
    /// Writes ca.pem, ca-key.pem, server.pem, server-key.pem, client.pem and
    /// client-key.pem into `dir` (created if missing), replacing existing
    /// files. Private keys get mode 0600 on unix, set before any key byte is
    /// written. Returns the written paths, in that order.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>, CertsError> {
        fs::create_dir_all(dir).map_err(|source| CertsError::CreateDir {
            path: dir.display().to_string(),
            source,
        })?;
        let files: [(&str, &str, bool); 6] = [
            ("ca.pem", &self.ca_cert_pem, false),
            ("ca-key.pem", &self.ca_key_pem, true),
            ("server.pem", &self.server_cert_pem, false),
            ("server-key.pem", &self.server_key_pem, true),
            ("client.pem", &self.client_cert_pem, false),
            ("client-key.pem", &self.client_key_pem, true),
        ];
        let mut written = Vec::with_capacity(files.len());
        for (name, contents, private) in files {
            let path = dir.join(name);
            write_file(&path, contents.as_bytes(), private).map_err(|source| {
                CertsError::Write {
                    path: path.display().to_string(),
                    source,
                }
            })?;
            written.push(path);
        }
        Ok(written)
    }
}

/// Writes one file; a private one is restricted to its owner first.
fn write_file(path: &Path, contents: &[u8], private: bool) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    // `mode` only applies to new files: an existing key file may be looser, so
    // tighten it before the new key goes in.
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = private;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests;
