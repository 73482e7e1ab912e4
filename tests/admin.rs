//! SPEC 6: the admin address. Health and readiness, the Prometheus
//! metrics of SPEC 6 with their label values, the redacted config in
//! force, and reloads (good and bad) through `POST /reload`.

#[path = "support_old/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use support::*;

const TOKEN: &str = "very-s3cret-app-t0ken-do-not-leak";
const SIGNED_APP: u64 = 1400000002;

/// A closed port on 127.0.0.1: connecting to it is refused.
async fn closed_port() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

async fn get(gw: &Gateway, path: &str) -> (u16, String) {
    let r = gw
        .http
        .get(format!("{}{path}", gw.admin()))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

async fn reload(gw: &Gateway) -> (u16, serde_json::Value) {
    let r = gw
        .http
        .post(format!("{}/reload", gw.admin()))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("/reload answer is not JSON ({e}): {text}"));
    (status, json)
}

/// One sample line of the Prometheus text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad metrics line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, rest)) => {
                let rest = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("bad labels in {line:?}"));
                let mut labels = BTreeMap::new();
                // Label values here never contain `,` or `"` (command names, words).
                for pair in rest.split(',').filter(|p| !p.is_empty()) {
                    let (k, v) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label in {line:?}"));
                    labels.insert(k.to_owned(), v.trim_matches('"').to_owned());
                }
                (name.to_owned(), labels)
            }
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

/// The value of the series `name` whose labels include `labels`
/// (exactly one must match).
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let samples = parse_metrics(text);
    let matching: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert!(
        matching.len() <= 1,
        "several series match {name} {labels:?}: {matching:?}"
    );
    matching.first().map(|s| s.value)
}

/// The file watcher may reload the same change before (or besides) the
/// admin call, so reload counts and generations are lower bounds.
fn at_least(text: &str, name: &str, labels: &[(&str, &str)], want: f64) {
    let got = value(text, name, labels);
    assert!(
        got.is_some_and(|v| v >= want),
        "{name} {labels:?} = {got:?}, want >= {want} in:\n{text}"
    );
}

fn has(text: &str, name: &str, labels: &[(&str, &str)], want: f64) {
    assert_eq!(
        value(text, name, labels),
        Some(want),
        "{name} {labels:?} in:\n{text}"
    );
}

/// Polls /metrics until `name{labels}` reaches `want` (bounded).
async fn metrics_when(gw: &Gateway, name: &str, labels: &[(&str, &str)], want: f64) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = gw.metrics().await;
        if value(&text, name, labels) == Some(want) {
            return text;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("{name} {labels:?} never reached {want}:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn healthz_and_readyz_answer_200_while_running() {
    let gw = Gateway::start("").await;
    assert_eq!(get(&gw, "/healthz").await.0, 200);
    assert_eq!(get(&gw, "/readyz").await.0, 200);
    // Query strings do not change the answer.
    assert_eq!(get(&gw, "/healthz?verbose=1").await.0, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn readyz_answers_503_once_draining() {
    let gw = Gateway::start("").await;
    assert_eq!(get(&gw, "/readyz").await.0, 200);
    gw.gw().shared().start_draining();
    assert_eq!(get(&gw, "/readyz").await.0, 503);
    assert_eq!(
        get(&gw, "/healthz").await.0,
        200,
        "healthz stays 200 while the process runs"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn admin_is_not_served_on_the_callback_listener() {
    let gw = Gateway::start("").await;
    let r = gw
        .http
        .get(format!("http://{}/healthz", gw.addr()))
        .send()
        .await
        .unwrap();
    assert_ne!(r.status().as_u16(), 200);
    let r = gw
        .http
        .get(format!("http://{}/metrics", gw.addr()))
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(!text.contains("callgate_requests_total"), "{text}");
    gw.shutdown().await;
}

#[tokio::test]
async fn metrics_cover_every_spec_6_family_with_its_labels() {
    let ok = Upstream::start(Reply::ok()).await;
    let bad = Upstream::start(Reply::json("not json")).await;
    let slow = Upstream::start(Reply::Hang).await;
    let dead = closed_port().await;
    let gw = Gateway::start(&format!(
        r#"delivery:
  max_attempts: 2
  backoff: 10ms
  max_backoff: 20ms
{}  dead:
    url: "http://{dead}/im"
routes:
  - match: "Group.CallbackBeforeSendMsg"
    upstreams: [ok]
  - match: "Group.CallbackBeforeCreateGroup"
    upstreams: [bad]
  - match: "Sns.CallbackPrevFriendAdd"
    upstreams: [dead]
  - match: "Group.CallbackBeforeApplyJoinGroup"
    upstreams: [slow]
    deadline: 200ms
  - match: "Group.CallbackAfterNewMemberJoin"
    upstreams: [ok]
  - match: "Group.CallbackAfterSendMsg"
    upstreams: [dead]
"#,
        upstreams_yaml(&[("ok", &ok), ("bad", &bad), ("slow", &slow)])
    ))
    .await;

    // Before any traffic: generation 1, nothing pending.
    let text = gw.metrics().await;
    has(&text, "callgate_config_generation", &[], 1.0);
    has(&text, "callgate_outbox_pending", &[], 0.0);

    let cases = [
        (
            "Group.CallbackBeforeSendMsg",
            GROUP_SEND.to_owned(),
            "upstream",
        ),
        (
            "Group.CallbackBeforeSendMsg",
            GROUP_SEND.to_owned(),
            "upstream",
        ),
        (
            "Group.CallbackBeforeCreateGroup",
            fixture("Group.CallbackBeforeCreateGroup"),
            "fallback",
        ),
        (
            "Sns.CallbackPrevFriendAdd",
            fixture("Sns.CallbackPrevFriendAdd"),
            "fallback",
        ),
        (
            "Group.CallbackBeforeApplyJoinGroup",
            fixture("Group.CallbackBeforeApplyJoinGroup"),
            "fallback",
        ),
        (
            "Group.CallbackAfterNewMemberJoin",
            MEMBER_JOIN.to_owned(),
            "queued",
        ),
        (
            "Group.CallbackAfterSendMsg",
            fixture("Group.CallbackAfterSendMsg"),
            "queued",
        ),
        (
            "State.StateChange",
            fixture("State.StateChange"),
            "unrouted",
        ),
        (
            "Group.CallbackBeforeSendMsg",
            "not json".to_owned(),
            "rejected",
        ),
    ];
    for (command, body, outcome) in &cases {
        let a = gw.callback(command, body).await;
        assert_eq!(a.outcome, *outcome, "{command}: {}", a.text());
    }

    // Notifications: delivered to `ok`; retried once then dead for `dead`.
    let text = metrics_when(
        &gw,
        "callgate_deliveries_total",
        &[("upstream", "dead"), ("result", "dead")],
        1.0,
    )
    .await;
    let text = if value(
        &text,
        "callgate_deliveries_total",
        &[("upstream", "ok"), ("result", "delivered")],
    ) == Some(1.0)
    {
        text
    } else {
        metrics_when(
            &gw,
            "callgate_deliveries_total",
            &[("upstream", "ok"), ("result", "delivered")],
            1.0,
        )
        .await
    };
    let text = if value(&text, "callgate_outbox_pending", &[]) == Some(0.0) {
        text
    } else {
        metrics_when(&gw, "callgate_outbox_pending", &[], 0.0).await
    };
    has(
        &text,
        "callgate_deliveries_total",
        &[("upstream", "dead"), ("result", "retried")],
        1.0,
    );

    // callgate_requests_total{command,outcome}
    let req = "callgate_requests_total";
    has(
        &text,
        req,
        &[
            ("command", "Group.CallbackBeforeSendMsg"),
            ("outcome", "upstream"),
        ],
        2.0,
    );
    has(
        &text,
        req,
        &[
            ("command", "Group.CallbackBeforeCreateGroup"),
            ("outcome", "fallback"),
        ],
        1.0,
    );
    has(
        &text,
        req,
        &[
            ("command", "Sns.CallbackPrevFriendAdd"),
            ("outcome", "fallback"),
        ],
        1.0,
    );
    has(
        &text,
        req,
        &[
            ("command", "Group.CallbackBeforeApplyJoinGroup"),
            ("outcome", "fallback"),
        ],
        1.0,
    );
    has(
        &text,
        req,
        &[
            ("command", "Group.CallbackAfterNewMemberJoin"),
            ("outcome", "queued"),
        ],
        1.0,
    );
    has(
        &text,
        req,
        &[
            ("command", "Group.CallbackAfterSendMsg"),
            ("outcome", "queued"),
        ],
        1.0,
    );
    has(
        &text,
        req,
        &[("command", "State.StateChange"), ("outcome", "unrouted")],
        1.0,
    );
    has(
        &text,
        req,
        &[
            ("command", "Group.CallbackBeforeSendMsg"),
            ("outcome", "rejected"),
        ],
        1.0,
    );
    let total: f64 = parse_metrics(&text)
        .iter()
        .filter(|s| s.name == req)
        .map(|s| s.value)
        .sum();
    assert_eq!(total, cases.len() as f64, "{text}");

    // callgate_request_duration_seconds: a histogram by kind.
    let hist = "callgate_request_duration_seconds";
    assert!(text.contains(&format!("# TYPE {hist} histogram")), "{text}");
    has(
        &text,
        &format!("{hist}_count"),
        &[("kind", "decision")],
        5.0,
    );
    has(
        &text,
        &format!("{hist}_bucket"),
        &[("kind", "decision"), ("le", "+Inf")],
        5.0,
    );
    let notif = value(&text, &format!("{hist}_count"), &[("kind", "notification")]).unwrap();
    assert!(notif >= 2.0, "{text}");
    let samples = parse_metrics(&text);
    let buckets: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.name == format!("{hist}_bucket")
                && s.labels.get("kind").map(String::as_str) == Some("decision")
        })
        .collect();
    assert!(buckets.len() > 3, "{text}");
    assert!(
        buckets.windows(2).all(|w| w[0].value <= w[1].value),
        "buckets are cumulative: {buckets:?}"
    );
    // The 200 ms timeout decision lands above the 0.1 s bucket, below 2 s.
    let le = |bound: &str| {
        value(
            &text,
            &format!("{hist}_bucket"),
            &[("kind", "decision"), ("le", bound)],
        )
        .unwrap()
    };
    assert!(le("0.1") <= 4.0 && le("2.0") == 5.0, "{text}");
    let sum = value(&text, &format!("{hist}_sum"), &[("kind", "decision")]).unwrap();
    assert!((0.19..5.0).contains(&sum), "{sum}");

    // callgate_upstream_requests_total{upstream,result}
    let up = "callgate_upstream_requests_total";
    has(&text, up, &[("upstream", "ok"), ("result", "ok")], 2.0);
    has(
        &text,
        up,
        &[("upstream", "bad"), ("result", "bad_answer")],
        1.0,
    );
    has(&text, up, &[("upstream", "dead"), ("result", "error")], 1.0);
    has(
        &text,
        up,
        &[("upstream", "slow"), ("result", "timeout")],
        1.0,
    );

    // callgate_fallbacks_total{reason}
    has(
        &text,
        "callgate_fallbacks_total",
        &[("reason", "timeout")],
        1.0,
    );
    let failed: f64 = parse_metrics(&text)
        .iter()
        .filter(|s| {
            s.name == "callgate_fallbacks_total"
                && s.labels.get("reason").map(String::as_str) != Some("timeout")
        })
        .map(|s| s.value)
        .sum();
    assert_eq!(failed, 2.0, "bad answer and refused connection: {text}");

    has(&text, "callgate_config_generation", &[], 1.0);
    has(&text, "callgate_outbox_pending", &[], 0.0);
    gw.shutdown().await;
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let up = Upstream::start(Reply::ok()).await;
    let gw = Gateway::start(&format!(
        "{}routes:\n  - match: \"*\"\n    upstreams: [a]\n",
        upstreams_yaml(&[("a", &up)])
    ))
    .await;
    assert_eq!(
        gw.callback("Group.CallbackBeforeSendMsg", GROUP_SEND)
            .await
            .outcome,
        "upstream"
    );
    let r = gw
        .http
        .get(format!("{}/metrics", gw.admin()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        ct.starts_with("text/plain") || ct.starts_with("application/openmetrics-text"),
        "{ct}"
    );
    let text = r.text().await.unwrap();
    for (family, kind) in [
        ("callgate_requests", "counter"),
        ("callgate_request_duration_seconds", "histogram"),
        ("callgate_upstream_requests", "counter"),
        ("callgate_config_generation", "gauge"),
        ("callgate_outbox_pending", "gauge"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} {kind}\n")),
            "{family} not declared as {kind}:\n{text}"
        );
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "{family} has no help:\n{text}"
        );
    }
    // Every sample line parses.
    assert!(!parse_metrics(&text).is_empty());
    gw.shutdown().await;
}

fn reload_yaml(target: &str, a: &Upstream, b: &Upstream) -> String {
    format!(
        "listeners:\n  - addr: \"127.0.0.1:0\"\nadmin:\n  addr: \"127.0.0.1:0\"\napps:\n  - sdkappid: {APP}\n  - sdkappid: {SIGNED_APP}\n    token: \"{TOKEN}\"\n{}routes:\n  - match: \"Group.CallbackBeforeSendMsg\"\n    upstreams: [{target}]\n",
        upstreams_yaml(&[("a", a), ("b", b)])
    )
}

#[tokio::test]
async fn config_is_json_with_generation_and_redacted_tokens() {
    let a = Upstream::start(Reply::ok()).await;
    let b = Upstream::start(Reply::ok()).await;
    let gw = Gateway::start(&reload_yaml("a", &a, &b)).await;
    let r = gw
        .http
        .get(format!("{}/config", gw.admin()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let text = r.text().await.unwrap();
    assert!(
        !text.contains(TOKEN),
        "the app token leaks through /config: {text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
    assert!(text.contains("<redacted>"), "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["generation"], 1);
    let config = &v["config"];
    assert!(config.is_object(), "{text}");
    assert_eq!(
        config["routes"][0]["match"], "Group.CallbackBeforeSendMsg",
        "{text}"
    );
    assert_eq!(config["routes"][0]["upstreams"][0], "a", "{text}");
    assert_eq!(config["upstreams"]["b"]["url"], b.url(), "{text}");
    assert!(text.contains(&SIGNED_APP.to_string()), "{text}");
    gw.shutdown().await;
}

#[tokio::test]
async fn reload_switches_routes_and_bumps_the_generation() {
    let a = Upstream::start(Reply::json(
        r#"{"ActionStatus":"OK","ErrorInfo":"from a","ErrorCode":0}"#,
    ))
    .await;
    let b = Upstream::start(Reply::json(
        r#"{"ActionStatus":"OK","ErrorInfo":"from b","ErrorCode":0}"#,
    ))
    .await;
    let gw = Gateway::start(&reload_yaml("a", &a, &b)).await;
    let answer = gw.callback("Group.CallbackBeforeSendMsg", GROUP_SEND).await;
    assert!(answer.text().contains("from a"), "{}", answer.text());

    std::fs::write(gw.config_path(), reload_yaml("b", &a, &b)).unwrap();
    let (status, v) = reload(&gw).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["generation"], 2, "{v}");
    let answer = gw.callback("Group.CallbackBeforeSendMsg", GROUP_SEND).await;
    assert!(answer.text().contains("from b"), "{}", answer.text());
    assert_eq!((a.count(), b.count()), (1, 1));

    let (_, config) = get(&gw, "/config").await;
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert!(
        config["generation"].as_u64().is_some_and(|g| g >= 2),
        "{config}"
    );
    assert_eq!(config["config"]["routes"][0]["upstreams"][0], "b");
    let text = gw.metrics().await;
    at_least(&text, "callgate_config_generation", &[], 2.0);
    at_least(
        &text,
        "callgate_config_reloads_total",
        &[("result", "ok")],
        1.0,
    );

    // Reloading an unchanged file is fine too.
    let (status, v) = reload(&gw).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["generation"].as_u64().is_some_and(|g| g >= 2), "{v}");
    gw.shutdown().await;
}

#[tokio::test]
async fn invalid_reloads_give_400_with_reasons_and_keep_the_old_routes() {
    let a = Upstream::start(Reply::json(
        r#"{"ActionStatus":"OK","ErrorInfo":"from a","ErrorCode":0}"#,
    ))
    .await;
    let b = Upstream::start(Reply::ok()).await;
    let gw = Gateway::start(&reload_yaml("a", &a, &b)).await;
    let good = reload_yaml("a", &a, &b);

    let cases: [(&str, String, &[&str]); 5] = [
        (
            "unknown upstream",
            reload_yaml("nowhere", &a, &b),
            &["nowhere"],
        ),
        (
            "unknown key",
            good.replace("routes:\n", "routez: []\nroutes:\n"),
            &["routez"],
        ),
        (
            "unknown key in a route",
            good.replace("    upstreams: [a]", "    upstreams: [a]\n    polcy: first"),
            &["polcy"],
        ),
        ("bad yaml", format!("{good}  - match: [unclosed\n"), &[]),
        (
            "several problems",
            good.replace(
                "    upstreams: [a]",
                "    upstreams: [ghost]\n    deadline: 3s",
            ),
            &["ghost", "3s"],
        ),
    ];
    let mut refused = 0.0;
    for (what, text, mentions) in &cases {
        std::fs::write(gw.config_path(), text).unwrap();
        let (status, v) = reload(&gw).await;
        assert_eq!(status, 400, "{what}: {v}");
        refused += 1.0;
        let problems = v["problems"]
            .as_array()
            .unwrap_or_else(|| panic!("{what}: no problems list: {v}"));
        assert!(!problems.is_empty(), "{what}: {v}");
        let all = v.to_string();
        for m in *mentions {
            assert!(all.contains(m), "{what}: reasons should mention {m:?}: {v}");
        }
        // The old config keeps serving.
        let answer = gw.callback("Group.CallbackBeforeSendMsg", GROUP_SEND).await;
        assert_eq!(answer.outcome, "upstream", "{what}");
        assert!(
            answer.text().contains("from a"),
            "{what}: {}",
            answer.text()
        );
        let (_, config) = get(&gw, "/config").await;
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&config).unwrap()["generation"],
            1,
            "{what}"
        );
    }
    assert_eq!(a.count(), cases.len());
    assert_eq!(b.count(), 0);
    let text = gw.metrics().await;
    at_least(
        &text,
        "callgate_config_reloads_total",
        &[("result", "error")],
        refused,
    );
    has(&text, "callgate_config_generation", &[], 1.0);

    // Once the file is fixed, a reload goes through.
    std::fs::write(gw.config_path(), reload_yaml("b", &a, &b)).unwrap();
    let (status, v) = reload(&gw).await;
    assert_eq!(status, 200, "{v}");
    let generation = v["generation"].as_u64().unwrap();
    assert!(generation >= 2, "{v}");
    assert_eq!(
        gw.callback("Group.CallbackBeforeSendMsg", GROUP_SEND)
            .await
            .outcome,
        "upstream"
    );
    assert_eq!(b.count(), 1);
    has(
        &gw.metrics().await,
        "callgate_config_generation",
        &[],
        generation as f64,
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_405() {
    let gw = Gateway::start("").await;
    for path in ["/", "/nope", "/metrics/extra", "/healthz/", "/im"] {
        let (status, _) = get(&gw, path).await;
        assert_eq!(status, 404, "GET {path}");
    }
    let wrong = [
        (reqwest::Method::POST, "/healthz"),
        (reqwest::Method::POST, "/readyz"),
        (reqwest::Method::POST, "/metrics"),
        (reqwest::Method::PUT, "/config"),
        (reqwest::Method::DELETE, "/config"),
        (reqwest::Method::GET, "/reload"),
        (reqwest::Method::PUT, "/reload"),
    ];
    for (method, path) in wrong {
        let r = gw
            .http
            .request(method.clone(), format!("{}{path}", gw.admin()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
    }
    // A GET to /reload must not have reloaded anything.
    let (_, config) = get(&gw, "/config").await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&config).unwrap()["generation"],
        1
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn wrong_method_answers_name_the_allowed_method() {
    let gw = Gateway::start("").await;
    for (method, path, allow) in [
        (reqwest::Method::POST, "/healthz", "GET"),
        (reqwest::Method::POST, "/metrics", "GET"),
        (reqwest::Method::GET, "/reload", "POST"),
    ] {
        let r = gw
            .http
            .request(method.clone(), format!("{}{path}", gw.admin()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405);
        let got = r
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned());
        assert!(
            got.as_deref().is_some_and(|v| v.contains(allow)),
            "{method} {path}: allow {got:?}"
        );
    }
    gw.shutdown().await;
}
