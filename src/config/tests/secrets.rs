//! Secrets in the config (SPEC 4.4, 6, 7): tokens and URL credentials are
//! never shown, nor values expanded into secret fields; YAML errors give
//! path, line and column, never the source text around them.

use std::path::Path;

use super::*;

/// Resolves `text` with a fixed environment instead of the process's.
fn resolve_with(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let lookup = |n: &str| {
        env.iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| (*v).to_string())
    };
    let raw: schema::RawConfig = serde_saphyr::from_str(text).unwrap();
    check::resolve(raw, Path::new("r.yaml"), Path::new("."), &lookup)
}

fn with_url(url: &str) -> String {
    GOOD.replace("http://127.0.0.1:9000/im/callback?x=1", url)
}

/// Everything a config shows of itself: `/config`, `Debug`, `check`.
fn shown(c: &Config) -> String {
    let urls: Vec<String> = c.upstreams.values().map(|u| u.url.to_string()).collect();
    format!(
        "{}\n{c:?}\n{}",
        serde_json::to_string(c).unwrap(),
        urls.join("\n")
    )
}

#[test]
fn yaml_errors_give_path_line_and_column_never_the_source_text() {
    let text = "listeners:\n  - addr: \"127.0.0.1:1\"\napps:\n  - sdkappid: 1\n    token: \"yaml-s3cret\"\n    oops: [unclosed\n";
    let p = problems(text);
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(
        p[0].starts_with("/etc/callgate/routes.yaml:"),
        "no path first: {}",
        p[0]
    );
    let mut fields = p[0]["/etc/callgate/routes.yaml:".len()..].splitn(3, ':');
    let (line, column) = (fields.next(), fields.next());
    assert!(
        line.is_some_and(|l| l.parse::<u32>().is_ok())
            && column.is_some_and(|c| c.parse::<u32>().is_ok()),
        "no line and column: {}",
        p[0]
    );
    assert!(
        !p[0].contains("yaml-s3cret") && !p[0].contains('\n'),
        "{}",
        p[0]
    );
    // An unknown key is a YAML error of its own kind: same form.
    let p = problems(&GOOD.replace(
        "    token: \"plain-token\"\n",
        "    token: \"plain-token\"\n    tokn: x\n",
    ));
    assert!(
        p[0].starts_with("/etc/callgate/routes.yaml:11:5: "),
        "{}",
        p[0]
    );
    assert!(
        p[0].contains("tokn") && !p[0].contains("plain-token"),
        "{}",
        p[0]
    );
}

#[test]
fn upstream_credentials_are_sent_as_basic_and_never_shown() {
    let c = parse(&with_url(
        "https://alice:p%40ss%3Aw0rd@127.0.0.1:9000/im?x=1",
    ))
    .unwrap();
    let up = &c.upstreams["legacy"];
    // base64("alice:p@ss:w0rd"): percent-decoded first (RFC 3986).
    assert_eq!(
        up.credentials.as_ref().map(Secret::expose),
        Some("Basic YWxpY2U6cEBzczp3MHJk")
    );
    assert_eq!(up.url.uri().to_string(), "https://127.0.0.1:9000/im?x=1");
    assert_eq!(up.url.to_string(), "https://127.0.0.1:9000/im?x=1");
    let text = shown(&c);
    assert!(
        !text.contains("alice") && !text.contains("p%40ss"),
        "{text}"
    );
    // A user without a password, and no user at all.
    let c = parse(&with_url("http://bob@127.0.0.1:9000/")).unwrap();
    assert_eq!(
        c.upstreams["legacy"]
            .credentials
            .as_ref()
            .map(Secret::expose),
        Some("Basic Ym9iOg==")
    );
    assert_eq!(parse(GOOD).unwrap().upstreams["legacy"].credentials, None);
}

#[test]
fn credentials_and_queries_from_variables_are_never_shown() {
    let env = [
        ("CG_USER", "env-user"),
        ("CG_PASS", "env-pa%2Fss"),
        ("CG_KEY", "env-query-key"),
        ("CG_HOST", "127.0.0.1"),
        (
            "CG_URL",
            "http://whole-user:whole-pass@127.0.0.1:9/p?k=whole-query",
        ),
    ];
    let c = resolve_with(
        &with_url("http://${CG_USER}:${CG_PASS}@${CG_HOST}:9000/im?key=${CG_KEY}&plain=1"),
        &env,
    )
    .unwrap();
    let up = &c.upstreams["legacy"];
    assert_eq!(
        up.url.to_string(),
        "http://127.0.0.1:9000/im?key=<redacted>&plain=1"
    );
    // What is sent keeps the query as expanded.
    assert_eq!(up.url.uri().query(), Some("key=env-query-key&plain=1"));
    // base64("env-user:env-pa/ss")
    assert_eq!(
        up.credentials.as_ref().map(Secret::expose),
        Some("Basic ZW52LXVzZXI6ZW52LXBhL3Nz")
    );
    let text = shown(&c);
    for secret in ["env-user", "env-pa", "env-query-key"] {
        assert!(!text.contains(secret), "{secret} shown: {text}");
    }
    let c = resolve_with(&with_url("${CG_URL}"), &env).unwrap();
    assert_eq!(
        c.upstreams["legacy"].url.to_string(),
        "http://127.0.0.1:9/p?<redacted>"
    );
    let text = shown(&c);
    assert!(!text.contains("whole-"), "{text}");
}

#[test]
fn url_errors_never_quote_credentials_or_expanded_values() {
    let env = [
        ("CG_PASS", "env-s3cret"),
        ("CG_BAD", "ftp://u:env-s3cret@h/"),
    ];
    for url in [
        "ftp://alice:lit-s3cret@127.0.0.1/",
        "http://alice:lit-s3cret@127.0.0.1:notaport/",
        "http://alice:${CG_PASS}@ bad host/",
        "${CG_BAD}",
        "http://alice:lit-s3cret@/nohost",
    ] {
        let err = resolve_with(&with_url(url), &env).expect_err(url);
        let text = err.problems.join("\n");
        assert!(text.contains("upstreams.legacy.url"), "{url}: {text}");
        for secret in ["lit-s3cret", "env-s3cret", "alice"] {
            assert!(!text.contains(secret), "{url}: {secret} in {text}");
        }
    }
    assert_problem(
        &with_url("http://alice:p%zz@127.0.0.1/"),
        "percent-encoding",
    );
}

#[test]
fn an_unterminated_variable_is_an_error() {
    assert_problem(&GOOD.replace("plain-token", "${CG_TOKEN"), "unterminated");
    assert_problem(&GOOD.replace("plain-token", "a${}b"), "empty variable name");
}

#[test]
fn the_admin_token_is_expanded_redacted_and_never_empty() {
    let lookup = |n: &str| (n == "CG_ADMIN").then(|| "adm-from-env".to_string());
    let text = GOOD.replace(
        "  addr: \"127.0.0.1:19901\"\n",
        "  addr: \"127.0.0.1:19901\"\n  token: \"${CG_ADMIN}\"\n",
    );
    let raw: schema::RawConfig = serde_saphyr::from_str(&text).unwrap();
    let c = check::resolve(raw, Path::new("r.yaml"), Path::new("."), &lookup).unwrap();
    assert_eq!(
        c.admin.token.as_ref().map(Secret::expose),
        Some("adm-from-env")
    );
    let shown = serde_json::to_string(&c).unwrap();
    assert!(!shown.contains("adm-from-env") && !format!("{c:?}").contains("adm-from-env"));
    assert!(shown.contains(r#""token":"<redacted>""#), "{shown}");
    assert_eq!(parse(GOOD).unwrap().admin.token, None);
    assert_problem(
        &GOOD.replace(
            "  addr: \"127.0.0.1:19901\"\n",
            "  addr: \"127.0.0.1:19901\"\n  token: \"\"\n",
        ),
        "admin.token: empty token",
    );
    // The token alone: the address keeps its default.
    let c = parse(&GOOD.replace("  addr: \"127.0.0.1:19901\"\n", "  token: t\n")).unwrap();
    assert_eq!(c.admin.addr, "127.0.0.1:9901".parse().unwrap());
}
