//! Help, version and usage errors.

use crate::support::*;

#[tokio::test]
async fn version_and_help_exit_0() {
    let out = exec(&["--version"]).await;
    out.expect_code(0, "--version");
    assert!(
        out.stdout
            .contains(&format!("callgate {}", env!("CARGO_PKG_VERSION"))),
        "{out:#?}"
    );
    exec(&["-V"]).await.expect_code(0, "-V");
    for args in [
        &["--help"][..],
        &["-h"],
        &["help"],
        &["run", "--help"],
        &["check", "--help"],
        &["certs", "--help"],
        &["send", "--help"],
        &["help", "send"],
        &["send", "-h"],
    ] {
        let out = exec(args).await;
        out.expect_code(0, &format!("{args:?}"));
        assert!(out.stdout.contains("Usage"), "{args:?}: {out:#?}");
    }
    // Each subcommand's help documents its own options.
    assert!(
        exec(&["send", "--help"])
            .await
            .stdout
            .contains("--sdkappid")
    );
    assert!(exec(&["certs", "--help"]).await.stdout.contains("--out"));
    assert!(exec(&["check", "--help"]).await.stdout.contains("--config"));
    assert!(
        exec(&["run", "--help"])
            .await
            .stdout
            .contains("CALLGATE_CONFIG")
    );
}

#[tokio::test]
async fn version_works_on_every_subcommand() {
    for sub in ["run", "check", "certs", "send"] {
        let out = exec(&[sub, "--version"]).await;
        out.expect_code(0, &format!("{sub} --version"));
        assert!(
            out.stdout.contains(env!("CARGO_PKG_VERSION")),
            "{sub}: {out:#?}"
        );
    }
}

#[tokio::test]
async fn bad_usage_exits_2() {
    for args in [
        &["bogus"][..],
        &[],
        &["--bogus"],
        &["check", "--bogus"],
        &["run", "--nope", "x"],
        &["certs", "--out"],
        &["send"],
        &["send", "--url", "http://127.0.0.1:1/im", "--command", "X"],
        &[
            "send",
            "--url",
            "http://127.0.0.1:1/im",
            "--sdkappid",
            "abc",
            "--command",
            "X",
        ],
        &[
            "send",
            "--url",
            "http://127.0.0.1:1/im",
            "--sdkappid",
            "1",
            "--command",
            "X",
            "--cert",
            "c.pem",
        ],
        &["--log-format", "xml", "check"],
    ] {
        let out = exec(args).await;
        out.expect_code(2, &format!("{args:?}"));
        assert!(
            !out.stderr.is_empty(),
            "{args:?}: usage errors are explained: {out:#?}"
        );
    }
}
