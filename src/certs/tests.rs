//! Unit tests of `certs`.

use super::*;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

#[test]
fn generate_produces_parseable_pem() {
    let pki = generate().unwrap();
    for pem in [&pki.ca_cert_pem, &pki.server_cert_pem, &pki.client_cert_pem] {
        let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(certs.len(), 1);
    }
    for pem in [&pki.ca_key_pem, &pki.server_key_pem, &pki.client_key_pem] {
        assert!(matches!(
            PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap(),
            PrivateKeyDer::Pkcs8(_)
        ));
    }
}

#[test]
fn generate_is_fresh_each_time() {
    let a = generate().unwrap();
    let b = generate().unwrap();
    assert_ne!(a.ca_cert_pem, b.ca_cert_pem);
    assert_ne!(a.ca_key_pem, b.ca_key_pem);
}

#[cfg(unix)]
#[test]
fn write_creates_dir_and_restricts_keys() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs/dev");
    // A pre-existing, world-readable key must end up 0600 too.
    fs::create_dir_all(&dir).unwrap();
    let old_key = dir.join("server-key.pem");
    fs::write(&old_key, "old").unwrap();
    fs::set_permissions(&old_key, fs::Permissions::from_mode(0o644)).unwrap();

    let pki = generate().unwrap();
    let paths = pki.write(&dir).unwrap();
    let names: Vec<_> = paths
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "ca.pem",
            "ca-key.pem",
            "server.pem",
            "server-key.pem",
            "client.pem",
            "client-key.pem"
        ]
    );
    for path in &paths {
        let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
        if path.to_str().unwrap().ends_with("-key.pem") {
            assert_eq!(mode, 0o600, "{}", path.display());
            assert!(crate::tls::loose_key_permissions(path).is_none());
        }
    }
    assert_eq!(
        fs::read_to_string(&old_key).unwrap(),
        pki.server_key_pem,
        "existing key replaced"
    );
}

#[test]
fn write_reports_path_on_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let blocker = tmp.path().join("file");
    fs::write(&blocker, "x").unwrap();
    let pki = generate().unwrap();
    let err = pki.write(&blocker.join("sub")).unwrap_err().to_string();
    assert!(err.contains(&*blocker.display().to_string()), "{err}");
}
