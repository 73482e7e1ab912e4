//! Validation rules of SPEC 3, each with the problem it reports.

use std::path::Path;
use std::time::Duration;

use super::*;

const GOOD: &str = r#"
listeners:
  - name: public
    addr: "127.0.0.1:18443"
  - addr: "127.0.0.1:18080"
admin:
  addr: "127.0.0.1:19901"
apps:
  - sdkappid: 1400000001
    token: "plain-token"
upstreams:
  legacy:
    url: "http://127.0.0.1:9000/im/callback?x=1"
    timeout: 1s
routes:
  - match: "Group.CallbackBeforeSendMsg"
    sdkappid: 1400000001
    upstreams: [legacy]
    policy: first
    deadline: 1200ms
    on_timeout: deny
    kind: decision
  - match: "*"
    upstreams: [legacy]
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/callgate/routes.yaml"))
}

fn problems(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(_) => panic!("config accepted:\n{text}"),
        Err(e) => e.problems,
    }
}

fn assert_problem(text: &str, needle: &str) {
    let p = problems(text);
    assert!(
        p.iter().any(|p| p.contains(needle)),
        "no problem mentions {needle:?}: {p:#?}"
    );
}

#[test]
fn a_full_config_resolves_with_defaults() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.listeners.len(), 2);
    assert_eq!(c.listeners[0].name, "public");
    assert_eq!(c.listeners[1].name, "127.0.0.1:18080");
    assert_eq!(c.limits.max_body, 1024 * 1024);
    assert_eq!(c.limits.header_timeout, Duration::from_secs(5));
    assert_eq!(c.limits.max_connections, 10_000);
    assert_eq!(c.defaults.deadline, Duration::from_millis(1500));
    assert_eq!(c.defaults.on_timeout, OnTimeout::Allow);
    assert_eq!(c.delivery.max_attempts, 8);
    assert_eq!(c.delivery.outbox, Path::new("/etc/callgate/data/outbox"));
    assert_eq!(c.routes[0].policy, Policy::First);
    assert_eq!(c.routes[0].deadline, Some(Duration::from_millis(1200)));
    assert_eq!(c.routes[1].policy, Policy::Strictest);
    assert_eq!(
        c.apps[&1400000001].token.as_ref().map(Secret::expose),
        Some("plain-token")
    );
}

#[test]
fn admin_defaults_to_localhost() {
    let text = GOOD.replace("admin:\n  addr: \"127.0.0.1:19901\"\n", "");
    assert_eq!(
        parse(&text).unwrap().admin.addr,
        "127.0.0.1:9901".parse().unwrap()
    );
    let public = GOOD.replace("127.0.0.1:19901", "0.0.0.0:19901");
    assert!(
        parse(&public)
            .unwrap()
            .warnings
            .iter()
            .any(|w| w.contains("loopback"))
    );
}

#[test]
fn tokens_never_show_in_debug_or_json() {
    let c = parse(GOOD).unwrap();
    assert!(!format!("{c:?}").contains("plain-token"));
    assert!(!serde_json::to_string(&c).unwrap().contains("plain-token"));
}

#[test]
fn environment_variables_are_expanded() {
    // A lookup function instead of the process environment: no test races.
    let lookup = |n: &str| (n == "CG_TEST_TOKEN").then(|| "from-env".to_string());
    let raw: schema::RawConfig =
        serde_saphyr::from_str(&GOOD.replace("plain-token", "${CG_TEST_TOKEN}")).unwrap();
    let c = check::resolve(raw, Path::new("r.yaml"), Path::new("."), &lookup).unwrap();
    assert_eq!(
        c.apps[&1400000001].token.as_ref().map(Secret::expose),
        Some("from-env")
    );
    let raw: schema::RawConfig = serde_saphyr::from_str(
        &GOOD
            .replace("plain-token", "${CG_UNSET_A}")
            .replace("9000", "${CG_UNSET_B}"),
    )
    .unwrap();
    let err = check::resolve(raw, Path::new("r.yaml"), Path::new("."), &lookup).unwrap_err();
    assert!(
        err.problems.iter().any(|p| p.contains("CG_UNSET_A")),
        "{err:?}"
    );
    assert!(
        err.problems.iter().any(|p| p.contains("CG_UNSET_B")),
        "{err:?}"
    );
}

#[test]
fn unknown_keys_are_errors() {
    assert_problem(
        &GOOD.replace("    timeout: 1s", "    timeuot: 1s"),
        "timeuot",
    );
    assert_problem(&format!("{GOOD}extra: 1\n"), "extra");
}

#[test]
fn every_rule_of_spec_3_is_enforced() {
    assert_problem(
        &GOOD.replace(
            "upstreams: [legacy]\n    policy",
            "upstreams: [nope]\n    policy",
        ),
        "unknown upstream \"nope\"",
    );
    assert_problem(
        &GOOD.replace("http://127.0.0.1:9000", "ftp://127.0.0.1:9000"),
        "http:// or https://",
    );
    assert_problem(
        &GOOD.replace("deadline: 1200ms", "deadline: 0ms"),
        "at most 2s",
    );
    assert_problem(
        &GOOD.replace("deadline: 1200ms", "deadline: 2001ms"),
        "at most 2s",
    );
    assert_problem(
        &format!("{GOOD}defaults:\n  deadline: 3s\n"),
        "defaults.deadline",
    );
    assert_problem(
        &GOOD
            .replace(
                "  - sdkappid: 1400000001\n    token: \"plain-token\"\n",
                "  []\n",
            )
            .replace("apps:\n  []", "apps: []"),
        "at least one app",
    );
    assert_problem(
        &GOOD.replace("127.0.0.1:18080", "127.0.0.1:18443"),
        "duplicate listener address",
    );
    assert_problem(
        &GOOD.replace("deadline: 1200ms", "deadline: soon"),
        "not a duration",
    );
    assert_problem(&format!("{GOOD}limits:\n  max_body: lots\n"), "not a size");
    assert_problem(
        &GOOD.replace("\"127.0.0.1:18080\"", "\"localhost\""),
        "not an address",
    );
    assert_problem(
        &GOOD.replace("  - addr: \"127.0.0.1:18080\"", "  - addr: \"127.0.0.1:18080\"\n    tls:\n      cert: missing.pem\n      key: missing-key.pem"),
        "missing.pem",
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = GOOD
        .replace(
            "upstreams: [legacy]\n    policy",
            "upstreams: [nope]\n    policy",
        )
        .replace("deadline: 1200ms", "deadline: 3s")
        .replace("127.0.0.1:18080", "127.0.0.1:18443")
        .replace("http://127.0.0.1:9000", "ftp://127.0.0.1:9000");
    let p = problems(&text);
    assert!(p.len() >= 4, "{p:#?}");
}

#[test]
fn yaml_errors_are_reported_not_panicked() {
    for text in [
        "",
        "listeners: [",
        "- a\n- b",
        "listeners: 5",
        ":\n  :",
        "\u{0}",
    ] {
        assert!(parse(text).is_err(), "{text:?}");
    }
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let text = GOOD.replace(
        "  - addr: \"127.0.0.1:18080\"",
        "  - addr: \"127.0.0.1:18080\"\n    tls:\n      cert: certs/s.pem\n      key: /abs/k.pem",
    );
    let p = problems(&text);
    assert!(
        p.iter().any(|p| p.contains("/etc/callgate/certs/s.pem")),
        "{p:#?}"
    );
}

const NATS: &str = "delivery:\n  backend: nats\n  nats:\n    servers: [\"nats://127.0.0.1:4222\", \"nats://10.0.0.2:4222\"]\n";

#[test]
fn the_nats_backend_resolves_with_defaults() {
    let c = parse(&format!("{GOOD}{NATS}")).unwrap();
    assert_eq!(c.delivery.backend, Backend::Nats);
    let n = c.delivery.nats.unwrap();
    assert_eq!(n.servers.len(), 2);
    assert_eq!(
        (
            n.stream.as_str(),
            n.dead_stream.as_str(),
            n.subject.as_str()
        ),
        ("CALLGATE", "CALLGATE_DEAD", "callgate")
    );
    assert_eq!(n.consumer_prefix, "callgate");
    assert_eq!(n.replicas, 1);
    assert_eq!(n.max_bytes, 1024 * 1024 * 1024);
    assert_eq!(n.publish_timeout, Duration::from_secs(1));
    assert_eq!(n.ack_wait, Duration::from_secs(30));
    assert_eq!(n.duplicate_window, Duration::from_secs(120));
    // The embedded backend stays the default.
    let c = parse(GOOD).unwrap();
    assert_eq!(
        (c.delivery.backend, c.delivery.nats.is_none()),
        (Backend::Embedded, true)
    );
}

#[test]
fn nats_settings_are_checked() {
    let bad = [
        ("delivery:\n  backend: nats\n", "delivery.nats: required"),
        (
            "delivery:\n  nats:\n    servers: [\"nats://127.0.0.1:4222\"]\n",
            "only used with delivery.backend nats",
        ),
        (
            "delivery:\n  backend: nats\n  nats:\n    servers: []\n",
            "delivery.nats.servers: at least one",
        ),
        (
            "delivery:\n  backend: nats\n  nats:\n    servers: [\"nats://127.0.0.1:99999\"]\n",
            "delivery.nats.servers[0]",
        ),
        (
            &format!("{NATS}    stream: \"a.b\"\n"),
            "delivery.nats.stream",
        ),
        (
            &format!("{NATS}    subject: \"im.*\"\n"),
            "delivery.nats.subject",
        ),
        (
            &format!("{NATS}    dead_stream: CALLGATE\n"),
            "stream and dead_stream must differ",
        ),
        (
            &format!("{NATS}    replicas: 7\n"),
            "delivery.nats.replicas",
        ),
        (
            &format!("{NATS}    publish_timeout: 3s\n"),
            "delivery.nats.publish_timeout",
        ),
        (
            &format!("{NATS}    user: im\n"),
            "user and password go together",
        ),
        (
            &format!("{NATS}    credentials: /nonexistent/im.creds\n"),
            "delivery.nats.credentials",
        ),
        (&format!("{NATS}    streem: X\n"), "streem"),
    ];
    for (extra, needle) in bad {
        assert_problem(&format!("{GOOD}{extra}"), needle);
    }
}

#[test]
fn nats_secrets_never_reach_config_output() {
    let c = parse(&format!(
        "{GOOD}{NATS}    user: im\n    password: hunter2\n    token: t0ken\n"
    ))
    .unwrap();
    let shown = serde_json::to_string(&c).unwrap();
    assert!(
        !shown.contains("hunter2") && !shown.contains("t0ken"),
        "{shown}"
    );
    assert!(shown.contains("\"user\":\"im\""), "{shown}");
}

mod secrets;

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn on_yaml_like_text(text in "[a-z_:\\- \\n\\[\\]{}\"'*&!|>0-9.$]{0,300}") {
            let _ = parse(&text);
        }

        /// Byte-level mutations of a valid config: an error or a config, never a panic.
        #[test]
        fn on_mutated_configs(at in 0usize..GOOD.len(), byte in any::<u8>(), cut in 0usize..GOOD.len()) {
            let mut bytes = GOOD.as_bytes().to_vec();
            bytes[at] = byte;
            bytes.truncate(cut.max(at + 1));
            if let Ok(text) = String::from_utf8(bytes) {
                let _ = parse(&text);
            }
        }
    }
}
