//! SPEC 2: the `callgate` binary itself. Help and version, exit codes,
//! `check`, `certs`, `send` against an in-process gateway, and `run` as a
//! real process that becomes ready, serves, and stops on a signal.

#[path = "support_old/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_callgate");
const SIGNED_APP: u64 = 1400000002;
const TOKEN: &str = "cli-test-token";
/// Bounds every wait for a short-lived command.
const COMMAND_LIMIT: Duration = Duration::from_secs(30);

/// The binary, with the environment variables it reads cleared so the
/// test runner's environment cannot change what a test sees.
fn callgate() -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("CALLGATE_CONFIG")
        .env_remove("CALLGATE_SEND_TOKEN")
        .env_remove("RUST_LOG")
        .kill_on_drop(true);
    c
}

#[derive(Debug)]
struct Out {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Out {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }
    /// Both streams: where a message goes is not part of the contract.
    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
    fn expect_code(&self, code: i32, what: &str) -> &Self {
        assert_eq!(self.code(), Some(code), "{what}: {self:#?}");
        self
    }
}

async fn exec_with(mut cmd: Command, stdin: Option<&[u8]>) -> Out {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input).await.unwrap();
        drop(pipe);
    }
    let out = tokio::time::timeout(COMMAND_LIMIT, child.wait_with_output())
        .await
        .expect("callgate did not exit in time")
        .unwrap();
    Out {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn exec(args: &[&str]) -> Out {
    let mut c = callgate();
    c.args(args);
    exec_with(c, None).await
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

// ---------------------------------------------------------------- usage

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

// ---------------------------------------------------------------- check

fn good_config(dir: &Path) -> PathBuf {
    write(
        dir,
        "good.yaml",
        r#"listeners:
  - name: local
    addr: "127.0.0.1:18080"
  - addr: "127.0.0.1:18081"
admin:
  addr: "127.0.0.1:19901"
apps:
  - sdkappid: 1400000001
upstreams:
  legacy:
    url: "http://127.0.0.1:9000/im/callback"
  moderation:
    url: "http://127.0.0.1:9001/hook"
routes:
  - match: "Group.CallbackBeforeSendMsg"
    upstreams: [moderation, legacy]
    deadline: 1200ms
  - match: "Group.CallbackAfter*"
    upstreams: [legacy]
  - match: "*"
    upstreams: [legacy]
"#,
    )
}

#[tokio::test]
async fn check_prints_listeners_and_routes_of_a_good_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = good_config(dir.path());
    let out = exec(&["check", "-c", s(&path)]).await;
    out.expect_code(0, "check good config");
    for want in [
        "127.0.0.1:18080",
        "127.0.0.1:18081",
        "local",
        "Group.CallbackBeforeSendMsg",
        "Group.CallbackAfter*",
        "moderation",
        "legacy",
    ] {
        assert!(out.stdout.contains(want), "missing {want:?}: {out:#?}");
    }
    // Routes are listed in config order (first match wins).
    let first = out.stdout.find("Group.CallbackBeforeSendMsg").unwrap();
    let second = out.stdout.find("Group.CallbackAfter*").unwrap();
    assert!(first < second, "{}", out.stdout);
    // The long form of the flag works too.
    exec(&["check", "--config", s(&path)])
        .await
        .expect_code(0, "--config");
}

#[tokio::test]
async fn check_lists_every_problem_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "bad.yaml",
        r#"listeners:
  - addr: "127.0.0.1:18080"
  - addr: "127.0.0.1:18080"
  - addr: "127.0.0.1:18443"
    tls:
      cert: certs/missing-server.pem
      key: certs/missing-server-key.pem
admin:
  addr: "127.0.0.1:19901"
apps: []
upstreams:
  legacy:
    url: "ftp://127.0.0.1:9000/im/callback"
  other:
    url: "http://127.0.0.1:9001/im"
routes:
  - match: "Group.CallbackBeforeSendMsg"
    upstreams: [nowhere]
  - match: "*"
    upstreams: [other]
    deadline: 3s
"#,
    );
    let out = exec(&["check", "-c", s(&path)]).await;
    out.expect_code(2, "check bad config");
    let all = out.all();
    let lines: Vec<&str> = all.lines().collect();
    let mut seen_lines = Vec::new();
    for (problem, needle) in [
        ("unknown upstream in a route", "nowhere"),
        ("deadline of 3s", "3s"),
        ("empty apps list", "apps"),
        ("duplicate listener address", "duplicate"),
        ("ftp upstream URL", "ftp"),
        ("missing cert file", "missing-server.pem"),
    ] {
        let line = lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{problem} ({needle:?}) not reported:\n{all}"));
        seen_lines.push(line);
    }
    assert!(
        all.contains("127.0.0.1:18080"),
        "the duplicate address is named:\n{all}"
    );
    seen_lines.sort_unstable();
    seen_lines.dedup();
    assert_eq!(seen_lines.len(), 6, "each problem on its own line:\n{all}");
}

#[tokio::test]
async fn check_rejects_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(good_config(dir.path())).unwrap();
    for (what, text, needle) in [
        (
            "top level",
            good.replace("routes:", "routez: []\nroutes:"),
            "routez",
        ),
        (
            "in a route",
            good.replace("    deadline: 1200ms", "    deadlin: 1200ms"),
            "deadlin",
        ),
        (
            "in an upstream",
            good.replace(
                "    url: \"http://127.0.0.1:9001/hook\"",
                "    url: \"http://127.0.0.1:9001/hook\"\n    timout: 1s",
            ),
            "timout",
        ),
    ] {
        let path = write(dir.path(), "typo.yaml", &text);
        let out = exec(&["check", "-c", s(&path)]).await;
        out.expect_code(2, what);
        assert!(
            out.all().contains(needle),
            "{what}: {needle:?} not named: {out:#?}"
        );
    }
}

#[tokio::test]
async fn check_expands_env_vars_and_names_unset_ones() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"listeners:
  - addr: "${CALLGATE_CLI_TEST_ADDR}"
admin:
  addr: "127.0.0.1:19901"
apps:
  - sdkappid: 1400000001
    token: "${CALLGATE_CLI_TEST_UNSET_TOKEN}"
upstreams:
  legacy:
    url: "http://127.0.0.1:9000/im"
routes:
  - match: "*"
    upstreams: [legacy]
"#;
    let path = write(dir.path(), "env.yaml", text);
    let mut c = callgate();
    c.args(["check", "-c", s(&path)])
        .env("CALLGATE_CLI_TEST_ADDR", "127.0.0.1:18099")
        .env_remove("CALLGATE_CLI_TEST_UNSET_TOKEN");
    let out = exec_with(c, None).await;
    out.expect_code(2, "unset variable");
    assert!(
        out.all().contains("CALLGATE_CLI_TEST_UNSET_TOKEN"),
        "{out:#?}"
    );
    assert!(
        !out.all().contains("CALLGATE_CLI_TEST_ADDR"),
        "a set variable is no problem: {out:#?}"
    );

    let mut c = callgate();
    c.args(["check", "-c", s(&path)])
        .env("CALLGATE_CLI_TEST_ADDR", "127.0.0.1:18099")
        .env("CALLGATE_CLI_TEST_UNSET_TOKEN", "some-secret-value");
    let out = exec_with(c, None).await;
    out.expect_code(0, "all variables set");
    assert!(out.stdout.contains("127.0.0.1:18099"), "{out:#?}");
    assert!(
        !out.all().contains("some-secret-value"),
        "the token must not be printed: {out:#?}"
    );
}

#[tokio::test]
async fn check_reports_bad_yaml_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "broken.yaml", "listeners: [\n");
    exec(&["check", "-c", s(&path)])
        .await
        .expect_code(2, "bad YAML");
    let missing = dir.path().join("absent.yaml");
    let out = exec(&["check", "-c", s(&missing)]).await;
    out.expect_code(2, "missing config file");
    assert!(out.all().contains("absent.yaml"), "{out:#?}");
}

#[tokio::test]
async fn the_shipped_routes_yaml_checks_ok() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("routes.yaml");
    let out = exec(&["check", "-c", s(&path)]).await;
    out.expect_code(0, "routes.yaml");
    assert!(out.stdout.contains("OK"), "{out:#?}");
}

/// `callgate check | head -1`: the reader goes away, the command ends
/// quietly (no panic on the broken pipe).
#[tokio::test]
async fn output_into_a_closed_pipe_ends_quietly() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("routes.yaml");
    // The reading end is closed before the command starts, so its first
    // line meets a broken pipe, whatever the timing.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut cmd = callgate();
    cmd.args(["check", "-c", s(&path)])
        .stdout(writer)
        .stderr(std::process::Stdio::piped());
    // Not `output()`: it would capture stdout instead of using the pipe.
    let child = cmd.spawn().unwrap();
    let out = tokio::time::timeout(COMMAND_LIMIT, child.wait_with_output())
        .await
        .expect("check hung")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn config_defaults_to_callgate_config_then_routes_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let good = good_config(dir.path());
    let bad = write(dir.path(), "bad.yaml", "listeners: []\napps: []\n");
    let empty = tempfile::tempdir().unwrap();

    // CALLGATE_CONFIG is used when -c is absent.
    let mut c = callgate();
    c.arg("check")
        .env("CALLGATE_CONFIG", &good)
        .current_dir(empty.path());
    let out = exec_with(c, None).await;
    out.expect_code(0, "CALLGATE_CONFIG=good");
    assert!(out.stdout.contains("good.yaml"), "{out:#?}");
    let mut c = callgate();
    c.arg("check")
        .env("CALLGATE_CONFIG", &bad)
        .current_dir(empty.path());
    exec_with(c, None)
        .await
        .expect_code(2, "CALLGATE_CONFIG=bad");

    // -c wins over CALLGATE_CONFIG.
    let mut c = callgate();
    c.args(["check", "-c", s(&good)])
        .env("CALLGATE_CONFIG", &bad);
    exec_with(c, None)
        .await
        .expect_code(0, "-c over CALLGATE_CONFIG");

    // Neither: routes.yaml in the current folder.
    let mut c = callgate();
    c.arg("check").current_dir(empty.path());
    let out = exec_with(c, None).await;
    out.expect_code(2, "no routes.yaml here");
    assert!(out.all().contains("routes.yaml"), "{out:#?}");
    std::fs::copy(&good, empty.path().join("routes.yaml")).unwrap();
    let mut c = callgate();
    c.arg("check").current_dir(empty.path());
    exec_with(c, None)
        .await
        .expect_code(0, "routes.yaml in the current folder");
}

// ---------------------------------------------------------------- certs

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
    let out = exec(&["certs", "--out", s(&out_dir)]).await;
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
    let config = write(
        dir.path(),
        "mtls.yaml",
        r#"listeners:
  - addr: "127.0.0.1:18443"
    tls:
      cert: nested/pki/server.pem
      key: nested/pki/server-key.pem
      client_ca: nested/pki/ca.pem
admin:
  addr: "127.0.0.1:19901"
apps:
  - sdkappid: 1400000001
"#,
    );
    let out = exec(&["check", "-c", s(&config)]).await;
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
    let out = exec(&["certs", "--out", s(&blocker.join("sub"))]).await;
    out.expect_code(1, "certs under a regular file");
    assert!(out.stderr.contains("file"), "{out:#?}");
}

// ---------------------------------------------------------------- send

async fn send_gateway(up: &Upstream, listener: &str) -> Gateway {
    Gateway::start(&format!(
        "{listener}apps:\n  - sdkappid: {APP}\n  - sdkappid: {SIGNED_APP}\n    token: \"{TOKEN}\"\n{}routes:\n  - match: \"*\"\n    upstreams: [a]\n",
        upstreams_yaml(&[("a", up)])
    ))
    .await
}

fn send_args(url: &str, app: u64, command: &str) -> Vec<String> {
    [
        "send",
        "--url",
        url,
        "--sdkappid",
        &app.to_string(),
        "--command",
        command,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

async fn send(args: &[String], stdin: Option<&[u8]>) -> Out {
    let mut c = callgate();
    c.args(args);
    exec_with(c, stdin).await
}

#[tokio::test]
async fn send_delivers_a_decision_and_prints_the_answer() {
    let answer = r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0,"Marker":"from-upstream"}"#;
    let up = Upstream::start(Reply::json(answer)).await;
    let gw = send_gateway(&up, "").await;
    let out = send(
        &send_args(&gw.base(), APP, "Group.CallbackBeforeSendMsg"),
        None,
    )
    .await;
    out.expect_code(0, "send");
    assert!(out.stdout.contains("HTTP 200"), "{out:#?}");
    assert!(
        out.stdout.contains("x-callgate-outcome: upstream"),
        "{out:#?}"
    );
    assert!(
        out.stdout.contains("from-upstream"),
        "the answer body is printed: {out:#?}"
    );
    let received = up.wait_for(1, Duration::from_secs(5)).await;
    let r = &received[0];
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["CallbackCommand"], "Group.CallbackBeforeSendMsg");
    let query = r.uri.query().unwrap();
    assert!(query.contains(&format!("SdkAppid={APP}")), "{query}");
    assert!(
        query.contains("CallbackCommand=Group.CallbackBeforeSendMsg"),
        "{query}"
    );
    // The request id printed is the one the upstream got.
    let id = r.headers["x-request-id"].to_str().unwrap();
    assert!(out.stdout.contains(id), "{out:#?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn send_default_bodies_pass_the_checks_for_every_kind() {
    let up = Upstream::start(Reply::ok()).await;
    let gw = send_gateway(&up, "").await;
    for (command, outcome) in [
        ("Group.CallbackAfterNewMemberJoin", "queued"),
        ("Sns.CallbackPrevFriendAdd", "upstream"),
        ("Push.OfflinePush", "queued"),
        ("ContentCallback.ResultNotify", "queued"),
    ] {
        let out = send(&send_args(&gw.base(), APP, command), None).await;
        out.expect_code(0, command);
        assert!(out.stdout.contains("HTTP 200"), "{command}: {out:#?}");
        assert!(
            out.stdout
                .contains(&format!("x-callgate-outcome: {outcome}")),
            "{command}: {out:#?}"
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn send_signs_with_token() {
    let up = Upstream::start(Reply::ok()).await;
    let gw = send_gateway(&up, "").await;
    let base = send_args(&gw.base(), SIGNED_APP, "Group.CallbackBeforeSendMsg");

    let mut args = base.clone();
    args.extend(["--token".into(), TOKEN.into()]);
    let out = send(&args, None).await;
    out.expect_code(0, "send --token");
    assert!(out.stdout.contains("HTTP 200"), "{out:#?}");
    assert!(
        out.stdout.contains("x-callgate-outcome: upstream"),
        "{out:#?}"
    );
    let received = up.wait_for(1, Duration::from_secs(5)).await;
    let query = received[0].uri.query().unwrap().to_owned();
    assert!(
        query.contains("RequestTime=") && query.contains("Sign="),
        "{query}"
    );

    // The token from the environment works the same.
    let mut c = callgate();
    c.args(&base).env("CALLGATE_SEND_TOKEN", TOKEN);
    let out = exec_with(c, None).await;
    assert!(
        out.stdout.contains("x-callgate-outcome: upstream"),
        "{out:#?}"
    );

    // Without the token, or with a wrong one: 401, nothing forwarded.
    let out = send(&base, None).await;
    assert!(out.stdout.contains("HTTP 401"), "{out:#?}");
    assert!(
        out.stdout.contains("x-callgate-outcome: rejected"),
        "{out:#?}"
    );
    let mut args = base.clone();
    args.extend(["--token".into(), "wrong-token".into()]);
    let out = send(&args, None).await;
    assert!(out.stdout.contains("HTTP 401"), "{out:#?}");
    assert!(
        !out.all().contains(TOKEN),
        "the token is never printed: {out:#?}"
    );
    assert_eq!(up.count(), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn send_presents_a_client_certificate_to_an_mtls_listener() {
    let pki = Pki::new();
    let up = Upstream::start(Reply::ok()).await;
    let gw = send_gateway(
        &up,
        &format!(
            "listeners:\n  - addr: \"127.0.0.1:0\"\n    tls:\n      cert: \"{}\"\n      key: \"{}\"\n      client_ca: \"{}\"\n",
            pki.path("server.pem"),
            pki.path("server-key.pem"),
            pki.path("ca.pem")
        ),
    )
    .await;
    let url = format!("https://127.0.0.1:{}/im", gw.addr().port());
    let base = send_args(&url, APP, "Group.CallbackBeforeSendMsg");

    let mut args = base.clone();
    args.extend(
        [
            "--cert",
            &pki.path("client.pem"),
            "--key",
            &pki.path("client-key.pem"),
            "--ca",
            &pki.path("ca.pem"),
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let out = send(&args, None).await;
    out.expect_code(0, "send with a client certificate");
    assert!(out.stdout.contains("HTTP 200"), "{out:#?}");
    assert!(
        out.stdout.contains("x-callgate-outcome: upstream"),
        "{out:#?}"
    );
    let received = up.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(received[0].headers["x-forwarded-proto"], "https");

    // Without the client certificate the handshake fails: a transport failure.
    let mut args = base.clone();
    args.extend(["--ca".to_string(), pki.path("ca.pem")]);
    let out = send(&args, None).await;
    assert_ne!(out.code(), Some(0), "{out:#?}");
    // Without --ca the dev certificate is not trusted.
    let mut args = base.clone();
    args.extend(
        [
            "--cert",
            &pki.path("client.pem"),
            "--key",
            &pki.path("client-key.pem"),
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let out = send(&args, None).await;
    assert_ne!(out.code(), Some(0), "{out:#?}");
    assert_eq!(up.count(), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn send_to_a_closed_port_fails() {
    let addr: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let out = send(
        &send_args(
            &format!("http://{addr}/im"),
            APP,
            "Group.CallbackBeforeSendMsg",
        ),
        None,
    )
    .await;
    assert_ne!(out.code(), Some(0), "{out:#?}");
    assert_eq!(
        out.code(),
        Some(1),
        "a transport failure is a runtime failure: {out:#?}"
    );
    assert!(!out.stderr.is_empty(), "{out:#?}");
    assert!(!out.stdout.contains("HTTP "), "{out:#?}");
}

#[tokio::test]
async fn send_body_from_a_file_and_from_stdin_byte_for_byte() {
    let up = Upstream::start(Reply::ok()).await;
    let gw = send_gateway(&up, "").await;
    let dir = tempfile::tempdir().unwrap();
    // Spacing, key order, escapes and non-ASCII text as written: any
    // re-serialisation would show.
    let file_body = "{ \"CallbackCommand\" : \"Group.CallbackBeforeSendMsg\",\n  \"GroupId\":\"@TGS#2J4SZEAEL\",\"Type\":\"Public\",\"From_Account\":\"alice\",\"Operator_Account\":\"alice\",\"Random\":123456,\"OnlineOnlyFlag\":0,\n  \"MsgBody\":[{\"MsgType\":\"TIMTextElem\",\"MsgContent\":{\"Text\":\"h\u{e9}llo \\u00e9 \u{1f600}\"}}],\"EventTime\":1670574414123 }\n";
    let stdin_body = file_body
        .replace("alice", "bob\\tby stdin")
        .replace("\n", "\r\n");
    let path = write(dir.path(), "body.json", file_body);

    let mut args = send_args(&gw.base(), APP, "Group.CallbackBeforeSendMsg");
    args.extend(["--body".into(), s(&path).to_owned()]);
    let out = send(&args, None).await;
    assert!(
        out.stdout.contains("x-callgate-outcome: upstream"),
        "{out:#?}"
    );

    let mut args = send_args(&gw.base(), APP, "Group.CallbackBeforeSendMsg");
    args.extend(["--body".into(), "-".into()]);
    let out = send(&args, Some(stdin_body.as_bytes())).await;
    assert!(
        out.stdout.contains("x-callgate-outcome: upstream"),
        "{out:#?}"
    );

    let received = up.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(received[0].body, file_body.as_bytes());
    assert_eq!(received[1].body, stdin_body.as_bytes());

    // A body file that does not exist: nothing is sent.
    let mut args = send_args(&gw.base(), APP, "Group.CallbackBeforeSendMsg");
    args.extend([
        "--body".into(),
        s(&dir.path().join("absent.json")).to_owned(),
    ]);
    let out = send(&args, None).await;
    assert_ne!(out.code(), Some(0), "{out:#?}");
    assert!(out.stderr.contains("absent.json"), "{out:#?}");
    assert_eq!(up.count(), 2);
    gw.shutdown().await;
}

// ---------------------------------------------------------------- run

/// A config for `run` on fixed free ports, routing everything to `up`.
fn run_config(dir: &Path, listen: u16, admin: u16, up: &Upstream) -> PathBuf {
    write(
        dir,
        "run.yaml",
        &format!(
            "listeners:\n  - addr: \"127.0.0.1:{listen}\"\nadmin:\n  addr: \"127.0.0.1:{admin}\"\napps:\n  - sdkappid: {APP}\n{}routes:\n  - match: \"*\"\n    upstreams: [a]\n",
            upstreams_yaml(&[("a", up)])
        ),
    )
}

/// `callgate run` as a child process, its log in a file.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn spawn(mut cmd: Command, dir: &Path) -> Self {
        let log = dir.join("callgate.log");
        let file = std::fs::File::create(&log).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        Running {
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `/readyz` until it answers 200 (at most 10 s).
    async fn wait_ready(&mut self, admin: u16) {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("callgate run exited early ({status}):\n{}", self.log());
            }
            if let Ok(r) = http
                .get(format!("http://127.0.0.1:{admin}/readyz"))
                .send()
                .await
                && r.status() == 200
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "/readyz never answered 200:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().expect("still running").to_string();
        let status = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill {name} {pid}");
    }

    async fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!("callgate did not exit within {limit:?}:\n{}", self.log()),
        }
    }
}

async fn callback_to(port: u16) -> Answer {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = http
        .post(format!(
            "http://127.0.0.1:{port}/im?SdkAppid={APP}&CallbackCommand=Group.CallbackBeforeSendMsg"
        ))
        .body(GROUP_SEND)
        .send()
        .await
        .unwrap();
    Answer::read(r).await
}

#[tokio::test]
async fn run_serves_and_exits_0_on_sigterm() {
    let up = Upstream::start(Reply::ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let (listen, admin) = (free_addr().port(), free_addr().port());
    let config = run_config(dir.path(), listen, admin, &up);
    let mut c = callgate();
    c.args(["run", "-c", s(&config)]);
    let mut gw = Running::spawn(c, dir.path());
    gw.wait_ready(admin).await;

    let a = callback_to(listen).await;
    assert_eq!(
        (a.status, a.outcome.as_str()),
        (200, "upstream"),
        "{}",
        a.text()
    );
    let received = up.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(received[0].body, GROUP_SEND.as_bytes());

    let started = std::time::Instant::now();
    gw.signal("-TERM");
    let status = gw.exit_within(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", gw.log());
    // Nothing in flight: no reason to use the 10 s drain window.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    // The ports are released.
    std::net::TcpListener::bind(("127.0.0.1", listen)).unwrap();
    std::net::TcpListener::bind(("127.0.0.1", admin)).unwrap();
}

#[tokio::test]
async fn run_uses_callgate_config_and_exits_0_on_sigint() {
    let up = Upstream::start(Reply::ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let (listen, admin) = (free_addr().port(), free_addr().port());
    let config = run_config(dir.path(), listen, admin, &up);
    let cwd = tempfile::tempdir().unwrap();
    let mut c = callgate();
    c.arg("run")
        .env("CALLGATE_CONFIG", &config)
        .current_dir(cwd.path());
    let mut gw = Running::spawn(c, dir.path());
    gw.wait_ready(admin).await;
    assert_eq!(callback_to(listen).await.outcome, "upstream");
    gw.signal("-INT");
    let status = gw.exit_within(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", gw.log());
}

#[tokio::test]
async fn run_with_an_invalid_config_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "bad.yaml",
        "listeners:\n  - addr: \"127.0.0.1:18080\"\napps: []\nroutes:\n  - match: \"*\"\n    upstreams: [nowhere]\n",
    );
    let out = exec(&["run", "-c", s(&bad)]).await;
    out.expect_code(2, "run with an invalid config");
    assert!(out.all().contains("nowhere"), "{out:#?}");
    let out = exec(&["run", "-c", s(&dir.path().join("absent.yaml"))]).await;
    out.expect_code(2, "run with a missing config");

    // Through CALLGATE_CONFIG too.
    let mut c = callgate();
    c.arg("run").env("CALLGATE_CONFIG", &bad);
    exec_with(c, None)
        .await
        .expect_code(2, "CALLGATE_CONFIG=bad");
}

#[tokio::test]
async fn run_when_the_listener_port_is_taken_exits_1() {
    let up = Upstream::start(Reply::ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = run_config(dir.path(), port, free_addr().port(), &up);
    let out = exec(&["run", "-c", s(&config)]).await;
    out.expect_code(1, "run on a taken port");
    assert!(
        out.stderr.contains(&port.to_string()),
        "the address is named: {out:#?}"
    );
    drop(taken);
}

#[tokio::test]
async fn run_reloads_on_sighup() {
    let a = Upstream::start(Reply::json(
        r#"{"ActionStatus":"OK","ErrorInfo":"a","ErrorCode":0}"#,
    ))
    .await;
    let b = Upstream::start(Reply::json(
        r#"{"ActionStatus":"OK","ErrorInfo":"b","ErrorCode":0}"#,
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (listen, admin) = (free_addr().port(), free_addr().port());
    let config = run_config(dir.path(), listen, admin, &a);
    let mut c = callgate();
    c.args(["run", "-c", s(&config)]);
    let mut gw = Running::spawn(c, dir.path());
    gw.wait_ready(admin).await;
    assert!(callback_to(listen).await.text().contains("\"a\""));

    run_config(dir.path(), listen, admin, &b);
    gw.signal("-HUP");
    // The reload is asynchronous: poll (bounded) until b answers.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let a = callback_to(listen).await;
        if a.text().contains("\"b\"") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "SIGHUP did not reload:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.signal("-TERM");
    assert_eq!(
        gw.exit_within(Duration::from_secs(15)).await.code(),
        Some(0),
        "{}",
        gw.log()
    );
}

/// Unix seconds now, for the log check below.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn run_logs_one_json_line_per_callback_without_secrets() {
    let up = Upstream::start(Reply::ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let (listen, admin) = (free_addr().port(), free_addr().port());
    let config = write(
        dir.path(),
        "run.yaml",
        &format!(
            "listeners:\n  - addr: \"127.0.0.1:{listen}\"\nadmin:\n  addr: \"127.0.0.1:{admin}\"\napps:\n  - sdkappid: {SIGNED_APP}\n    token: \"{TOKEN}\"\n{}routes:\n  - match: \"*\"\n    upstreams: [a]\n",
            upstreams_yaml(&[("a", &up)])
        ),
    );
    let mut c = callgate();
    c.args(["--log-format", "json", "run", "-c", s(&config)]);
    let mut gw = Running::spawn(c, dir.path());
    gw.wait_ready(admin).await;
    let t = now().to_string();
    let sign = callgate::validate::expected_sign(TOKEN, &t);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = http
        .post(format!(
            "http://127.0.0.1:{listen}/im?SdkAppid={SIGNED_APP}&CallbackCommand=Group.CallbackBeforeSendMsg&RequestTime={t}&Sign={sign}"
        ))
        .body(GROUP_SEND)
        .send()
        .await
        .unwrap();
    let a = Answer::read(r).await;
    assert_eq!(a.outcome, "upstream", "{}", a.text());
    gw.signal("-TERM");
    assert_eq!(
        gw.exit_within(Duration::from_secs(15)).await.code(),
        Some(0)
    );

    let log = gw.log();
    assert!(
        !log.contains(TOKEN),
        "the token leaked into the log:\n{log}"
    );
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"))
        })
        .collect();
    let callbacks: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l.to_string().contains(&a.request_id))
        .collect();
    assert_eq!(callbacks.len(), 1, "one line per callback:\n{log}");
    let line = callbacks[0].to_string();
    for want in [
        &SIGNED_APP.to_string(),
        "Group.CallbackBeforeSendMsg",
        "upstream",
    ] {
        assert!(line.contains(want), "{want:?} missing from {line}");
    }
}
