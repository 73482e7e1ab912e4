//! SPEC 4.4 and 7: credentials in an upstream URL reach the upstream as
//! `Authorization: Basic`, and no secret (URL credentials, a query value
//! from a variable, the admin token, a token in a broken YAML file) shows
//! in `/config`, `callgate check`, a refused reload or the logs.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use support::*;

const USER: &str = "alice-upstream-user";
/// As written in the URL; `%2F` is a `/` once decoded.
const PASSWORD: &str = "pw-s3cr3t%2Fslash";
const QUERY_KEY: &str = "qk-s3cr3t-123";
const ADMIN_TOKEN: &str = "admin-t0ken-s3cr3t";
const YAML_SECRET: &str = "yaml-literal-s3cr3t";

/// Every string that must never be shown.
const SECRETS: [&str; 5] = [USER, "s3cr3t", QUERY_KEY, ADMIN_TOKEN, YAML_SECRET];

fn env() -> [(&'static str, &'static str); 4] {
    [
        ("CG_T_USER", USER),
        ("CG_T_PASS", PASSWORD),
        ("CG_T_KEY", QUERY_KEY),
        ("CG_T_ADMIN", ADMIN_TOKEN),
    ]
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} shows {secret:?}:\n{text}");
    }
}

/// `callgate check -c config` with the test's environment: status and
/// everything it printed.
fn check(config: &Path) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["check", "-c"])
        .arg(config)
        .envs(env())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn upstream_credentials_are_sent_and_no_secret_is_ever_shown() {
    let up = Upstream::start(Reply::ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let (listen, admin) = (free_addr(), free_addr());
    let config = dir.path().join("routes.yaml");
    let good = format!(
        "listeners:\n  - addr: \"{listen}\"\nadmin:\n  addr: \"{admin}\"\n  token: \"${{CG_T_ADMIN}}\"\n\
         apps:\n  - sdkappid: {APP}\n\
         upstreams:\n  up:\n    url: \"http://${{CG_T_USER}}:${{CG_T_PASS}}@{}/im/callback?key=${{CG_T_KEY}}&plain=1\"\n\
         routes:\n  - match: \"*\"\n    upstreams: [up]\n",
        up.addr
    );
    std::fs::write(&config, &good).unwrap();

    let (status, text) = check(&config);
    assert_eq!(status, 0, "{text}");
    assert!(
        text.contains(&format!(
            "up -> http://{}/im/callback?key=<redacted>&plain=1 (credentials sent as Basic)",
            up.addr
        )),
        "{text}"
    );
    assert_no_secret("check", &text);

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["run", "-c"])
        .arg(&config)
        .envs(env())
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let logs = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let gw = Binary {
        child,
        listen,
        admin,
        dir,
    };
    gw.wait_ready().await;
    let http = test_client();

    let r = http
        .post(gw.url("Group.CallbackBeforeSendMsg"))
        .body(GROUP_SEND)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = up.wait_for(1, Duration::from_secs(5)).await;
    // base64("alice-upstream-user:pw-s3cr3t/slash")
    assert_eq!(
        got[0].headers["authorization"],
        "Basic YWxpY2UtdXBzdHJlYW0tdXNlcjpwdy1zM2NyM3Qvc2xhc2g="
    );
    let query = got[0].uri.query().unwrap_or_default();
    assert!(
        query.starts_with(&format!("key={QUERY_KEY}&plain=1&SdkAppid={APP}")),
        "{query}"
    );

    let shown = http
        .get(format!("http://{admin}/config"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(shown.contains("key=<redacted>&plain=1"), "{shown}");
    assert_no_secret("/config", &shown);

    // A broken file with a literal token next to the error.
    let broken =
        format!("{good}  - match: \"x\"\n    upstreams: [up]\n    token: \"{YAML_SECRET}\"\n");
    std::fs::write(&config, &broken).unwrap();
    let r = http
        .post(format!("http://{admin}/reload"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let refused = r.text().await.unwrap();
    assert!(refused.contains("routes.yaml:"), "{refused}");
    assert_no_secret("/reload", &refused);
    let (status, text) = check(&config);
    assert_eq!(status, 2, "{text}");
    assert!(text.contains("routes.yaml:"), "{text}");
    assert_no_secret("check of a broken file", &text);

    gw.signal("-TERM");
    let mut child = gw.child;
    let _ = tokio::time::timeout(Duration::from_secs(15), child.wait()).await;
    let logs = tokio::time::timeout(Duration::from_secs(5), logs)
        .await
        .expect("the log pipe stays open")
        .unwrap();
    assert!(logs.contains("config reload refused"), "{logs}");
    assert_no_secret("the logs", &logs);
}
