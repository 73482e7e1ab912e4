//! TLS policy seen from a different TLS stack (the `openssl` command):
//! TLS 1.2 and 1.3 with forward-secret AEAD suites only.

mod support;

use std::process::Stdio;

use support::*;

/// Runs `openssl s_client` against `port` with `args`; true when the
/// handshake completed.
async fn handshake(port: u16, ca: &str, args: &[&str]) -> bool {
    let out = tokio::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "localhost",
            "-CAfile",
            ca,
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("the openssl command is needed for this test (apt-get install openssl)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.contains("Verify return code: 0 (ok)") && !text.contains("Cipher is (NONE)")
}

#[tokio::test]
async fn only_tls_1_2_and_1_3_with_strong_suites() {
    let pki = Pki::new();
    let up = Upstream::start(Reply::ok()).await;
    let gw = Gateway::start(&Config::catch_all(&up).listener(Listener::https(&pki))).await;
    let port = gw.addr().port();
    let ca = pki.path("ca.pem");
    // Controls: the modern protocols work from this client.
    assert!(handshake(port, &ca, &["-tls1_3"]).await, "TLS 1.3 refused");
    assert!(handshake(port, &ca, &["-tls1_2"]).await, "TLS 1.2 refused");
    // Old protocols, offered as hard as the client can.
    for old in ["-tls1_1", "-tls1"] {
        assert!(
            !handshake(port, &ca, &[old, "-cipher", "DEFAULT:@SECLEVEL=0"]).await,
            "{old} accepted"
        );
    }
    // Weak or non-forward-secret suites under TLS 1.2.
    for suite in [
        "AES128-SHA",
        "AES256-GCM-SHA384",
        "DES-CBC3-SHA",
        "ECDHE-RSA-AES128-SHA",
        "ECDHE-ECDSA-AES128-SHA",
    ] {
        assert!(
            !handshake(
                port,
                &ca,
                &["-tls1_2", "-cipher", &format!("{suite}:@SECLEVEL=0")]
            )
            .await,
            "{suite} accepted"
        );
    }
    gw.shutdown().await;
}
