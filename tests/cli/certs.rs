//! `callgate certs`: a development PKI.

use crate::support::*;
use crate::write;

const PKI_FILES: [&str; 6] = [
    "ca.pem",
    "ca-key.pem",
    "server.pem",
    "server-key.pem",
    "client.pem",
    "client-key.pem",
];

#[tokio::test]
async fn certs_writes_a_usable_dev_pki_with_private_keys_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("nested/pki");
    let out = exec(&["certs", "--out", arg(&out_dir)]).await;
    out.expect_code(0, "certs --out");
    for name in PKI_FILES {
        let path = out_dir.join(name);
        let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{name}: {e}\n{out:#?}"));
        assert!(meta.len() > 0, "{name} is empty");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("-----BEGIN "), "{name} is not PEM");
        if name.ends_with("-key.pem") {
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
        }
    }
    // The files make a working mutual-TLS listener config.
    let listener = Listener::at("127.0.0.1:18443")
        .tls("nested/pki/server.pem", "nested/pki/server-key.pem")
        .client_ca("nested/pki/ca.pem");
    let config = dir.path().join("mtls.yaml");
    Config::new()
        .listener(listener)
        .admin("127.0.0.1:19901")
        .write(&config);
    let out = exec(&["check", "-c", arg(&config)]).await;
    out.expect_code(0, "check with the generated certs");
    assert!(out.stdout.contains("mtls"), "{out:#?}");
    assert!(
        !out.all().contains("warning"),
        "keys are 0600, no warning expected: {out:#?}"
    );
}

#[tokio::test]
async fn certs_defaults_to_certs_dev() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = callgate();
    c.arg("certs").current_dir(dir.path());
    exec_with(c, None).await.expect_code(0, "certs");
    for name in PKI_FILES {
        assert!(dir.path().join("certs/dev").join(name).is_file(), "{name}");
    }
}

#[tokio::test]
async fn certs_into_an_unwritable_place_fails_with_1() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = write(dir.path(), "file", "x");
    let out = exec(&["certs", "--out", arg(&blocker.join("sub"))]).await;
    out.expect_code(1, "certs under a regular file");
    assert!(out.stderr.contains("file"), "{out:#?}");
}
