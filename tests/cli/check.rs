//! `callgate check`: what it prints for a good config, every problem of a
//! bad one, and where it finds the config.

use std::path::{Path, PathBuf};

use crate::support::*;
use crate::write;

/// A config as a user writes it (unquoted durations, flow lists), on
/// ports nothing listens on: `check` never binds them.
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
    let out = exec(&["check", "-c", arg(&path)]).await;
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
    exec(&["check", "--config", arg(&path)])
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
    let out = exec(&["check", "-c", arg(&path)]).await;
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
        let out = exec(&["check", "-c", arg(&path)]).await;
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
    let config = Config::new()
        .listener(Listener::at("${CALLGATE_CLI_TEST_ADDR}"))
        .admin("127.0.0.1:19901")
        .signed_app(APP, "${CALLGATE_CLI_TEST_UNSET_TOKEN}")
        .upstream("legacy", "http://127.0.0.1:9000/im")
        .route(Route::all(&["legacy"]));
    let path = write(dir.path(), "env.yaml", &config.yaml());
    let mut c = callgate();
    c.args(["check", "-c", arg(&path)])
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
    c.args(["check", "-c", arg(&path)])
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
    exec(&["check", "-c", arg(&path)])
        .await
        .expect_code(2, "bad YAML");
    let missing = dir.path().join("absent.yaml");
    let out = exec(&["check", "-c", arg(&missing)]).await;
    out.expect_code(2, "missing config file");
    assert!(out.all().contains("absent.yaml"), "{out:#?}");
}

#[tokio::test]
async fn the_shipped_routes_yaml_checks_ok() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("routes.yaml");
    let out = exec(&["check", "-c", arg(&path)]).await;
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
    cmd.args(["check", "-c", arg(&path)])
        .stdout(writer)
        .stderr(std::process::Stdio::piped());
    // Not `output()`: it would capture stdout instead of using the pipe.
    let child = cmd.spawn().unwrap();
    let out = tokio::time::timeout(secs(30), child.wait_with_output())
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
    c.args(["check", "-c", arg(&good)])
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
