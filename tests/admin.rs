//! SPEC 6: the admin address. Health and readiness, the Prometheus
//! metrics of SPEC 6 with their label values, the redacted config in
//! force, and reloads (good and bad) through `POST /reload`.

mod support;

use support::*;

const TOKEN: &str = "very-s3cret-app-t0ken-do-not-leak";

#[tokio::test]
async fn healthz_and_readyz_answer_200_while_running() {
    let gw = Gateway::start(&Config::new()).await;
    assert_eq!(gw.admin().get("/healthz").await.status, 200);
    assert_eq!(gw.admin().get("/readyz").await.status, 200);
    // Query strings do not change the answer.
    assert_eq!(gw.admin().get("/healthz?verbose=1").await.status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn readyz_answers_503_once_draining() {
    let gw = Gateway::start(&Config::new()).await;
    assert_eq!(gw.admin().get("/readyz").await.status, 200);
    gw.gw().shared().start_draining();
    assert_eq!(gw.admin().get("/readyz").await.status, 503);
    assert_eq!(
        gw.admin().get("/healthz").await.status,
        200,
        "healthz stays 200 while the process runs"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn admin_is_not_served_on_the_callback_listener() {
    let gw = Gateway::start(&Config::new()).await;
    // An admin client pointed at the callback listener.
    let listener = Admin::new(gw.addr());
    assert_ne!(listener.get("/healthz").await.status, 200);
    let text = listener.get("/metrics").await.text;
    assert!(!text.contains("callgate_requests_total"), "{text}");
    gw.shutdown().await;
}

#[tokio::test]
async fn metrics_cover_every_spec_6_family_with_its_labels() {
    let ok = Upstream::start(Reply::ok()).await;
    let bad = Upstream::start(Reply::json("not json")).await;
    let slow = Upstream::start(Reply::Hang).await;
    let config = Config::new()
        .retries(2, "10ms", "20ms")
        .upstream("ok", &ok)
        .upstream("bad", &bad)
        .upstream("slow", &slow)
        .upstream("dead", format!("http://{}/im", closed_port()))
        .route(Route::new("Group.CallbackBeforeSendMsg", &["ok"]))
        .route(Route::new("Group.CallbackBeforeCreateGroup", &["bad"]))
        .route(Route::new("Sns.CallbackPrevFriendAdd", &["dead"]))
        .route(Route::new("Group.CallbackBeforeApplyJoinGroup", &["slow"]).deadline("200ms"))
        .route(Route::new("Group.CallbackAfterNewMemberJoin", &["ok"]))
        .route(Route::new("Group.CallbackAfterSendMsg", &["dead"]));
    let gw = Gateway::start(&config).await;

    // Before any traffic and after it: generation 1, nothing pending.
    let at_rest = [
        metric("callgate_config_generation").value(1.0),
        metric("callgate_outbox_pending").value(0.0),
    ];
    let text = gw.metrics().await;
    at_rest.iter().for_each(|m| m.assert_in(&text));

    let send = "Group.CallbackBeforeSendMsg";
    let cases = [
        (send, GROUP_SEND.to_owned(), "upstream"),
        (send, GROUP_SEND.to_owned(), "upstream"),
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
        (send, "not json".to_owned(), "rejected"),
    ];
    for (command, body, outcome) in &cases {
        let a = gw.callback(command, body).await;
        assert_eq!(a.outcome, *outcome, "{command}: {}", a.text());
    }

    // Notifications: delivered to `ok`; retried once then dead for `dead`.
    let mut text = text;
    for settled in [
        deliveries("dead", "dead").value(1.0),
        deliveries("ok", "delivered").value(1.0),
        metric("callgate_outbox_pending").value(0.0),
    ] {
        text = settled.eventually(gw.admin(), secs(10)).await;
    }
    deliveries("dead", "retried").value(1.0).assert_in(&text);

    // callgate_requests_total{command,outcome}
    for (command, outcome, n) in [
        (send, "upstream", 2.0),
        ("Group.CallbackBeforeCreateGroup", "fallback", 1.0),
        ("Sns.CallbackPrevFriendAdd", "fallback", 1.0),
        ("Group.CallbackBeforeApplyJoinGroup", "fallback", 1.0),
        ("Group.CallbackAfterNewMemberJoin", "queued", 1.0),
        ("Group.CallbackAfterSendMsg", "queued", 1.0),
        ("State.StateChange", "unrouted", 1.0),
        (send, "rejected", 1.0),
    ] {
        requests(command, outcome).value(n).assert_in(&text);
    }
    let total = text.total("callgate_requests_total");
    assert_eq!(total, cases.len() as f64, "{text}");

    // callgate_request_duration_seconds: a histogram by kind.
    let hist = "callgate_request_duration_seconds";
    let series = |suffix: &str| metric(&format!("{hist}{suffix}"));
    assert!(
        text.text().contains(&format!("# TYPE {hist} histogram")),
        "{text}"
    );
    let decision = |suffix: &str| series(suffix).label("kind", "decision");
    decision("_count").value(5.0).assert_in(&text);
    decision("_bucket")
        .label("le", "+Inf")
        .value(5.0)
        .assert_in(&text);
    let notif = series("_count").label("kind", "notification").get(&text);
    assert!(notif.unwrap() >= 2.0, "{text}");
    let buckets = series("").label("kind", "decision").buckets(&text);
    assert!(buckets.len() > 3, "{text}");
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "buckets are cumulative: {buckets:?}"
    );
    // The 200 ms timeout decision lands above the 0.1 s bucket, below 2 s.
    let le = |bound: &str| decision("_bucket").label("le", bound).get(&text).unwrap();
    assert!(le("0.1") <= 4.0 && le("2.0") == 5.0, "{text}");
    let sum = decision("_sum").get(&text).unwrap();
    assert!((0.19..5.0).contains(&sum), "{sum}");

    // callgate_upstream_requests_total{upstream,result}
    for (upstream, result, n) in [
        ("ok", "ok", 2.0),
        ("bad", "bad_answer", 1.0),
        ("dead", "error", 1.0),
        ("slow", "timeout", 1.0),
    ] {
        upstream_requests(upstream, result)
            .value(n)
            .assert_in(&text);
    }

    // callgate_fallbacks_total{reason}
    fallbacks("timeout").value(1.0).assert_in(&text);
    let failed: f64 = text
        .samples()
        .iter()
        .filter(|s| s.name == "callgate_fallbacks_total" && s.label("reason") != Some("timeout"))
        .map(|s| s.value)
        .sum();
    assert_eq!(failed, 2.0, "bad answer and refused connection: {text}");

    at_rest.iter().for_each(|m| m.assert_in(&text));
    gw.shutdown().await;
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let up = Upstream::start(Reply::ok()).await;
    let gw = Gateway::start(&Config::catch_all(&up)).await;
    assert_eq!(gw.decision().await.outcome, "upstream");
    let page = gw.admin().get("/metrics").await;
    assert_eq!(page.status, 200);
    let ct = page.header("content-type");
    assert!(
        ct.starts_with("text/plain") || ct.starts_with("application/openmetrics-text"),
        "{ct}"
    );
    let text = &page.text;
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
    assert!(!Metrics::parse(page.text).samples().is_empty());
    gw.shutdown().await;
}

/// Upstreams `a` and `b`, the apps `APP` and `SIGNED_APP` (with `TOKEN`),
/// and one route.
fn reload_config(route: Route, a: &Upstream, b: &Upstream) -> Config {
    Config::new()
        .app(APP)
        .signed_app(SIGNED_APP, TOKEN)
        .upstream("a", a)
        .upstream("b", b)
        .route(route)
}

/// The decision command routed to `target`.
fn to(target: &str) -> Route {
    Route::new("Group.CallbackBeforeSendMsg", &[target])
}

/// A `POST /reload` and its JSON answer.
async fn reload(gw: &Gateway) -> (u16, serde_json::Value) {
    let page = gw.admin().reload().await;
    (page.status, page.json())
}

#[tokio::test]
async fn config_is_json_with_generation_and_redacted_tokens() {
    let a = Upstream::start(Reply::ok()).await;
    let b = Upstream::start(Reply::ok()).await;
    let gw = Gateway::start(&reload_config(to("a"), &a, &b)).await;
    let page = gw.admin().get("/config").await;
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").starts_with("application/json"));
    let text = &page.text;
    assert!(
        !text.contains(TOKEN),
        "the app token leaks through /config: {text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
    assert!(text.contains("<redacted>"), "{text}");
    let v = page.json();
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
    let a = Upstream::start(Reply::tagged("from a")).await;
    let b = Upstream::start(Reply::tagged("from b")).await;
    let gw = Gateway::start(&reload_config(to("a"), &a, &b)).await;
    let answer = gw.decision().await;
    assert!(answer.text().contains("from a"), "{}", answer.text());

    gw.rewrite(&reload_config(to("b"), &a, &b));
    let (status, v) = reload(&gw).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["generation"], 2, "{v}");
    let answer = gw.decision().await;
    assert!(answer.text().contains("from b"), "{}", answer.text());
    assert_eq!((a.count(), b.count()), (1, 1));

    let config = gw.admin().config().await;
    assert!(
        config["generation"].as_u64().is_some_and(|g| g >= 2),
        "{config}"
    );
    assert_eq!(config["config"]["routes"][0]["upstreams"][0], "b");
    // The file watcher may reload the same change before (or besides) the
    // admin call, so reload counts and generations are lower bounds.
    let text = gw.metrics().await;
    metric("callgate_config_generation")
        .at_least(2.0)
        .assert_in(&text);
    metric("callgate_config_reloads_total")
        .label("result", "ok")
        .at_least(1.0)
        .assert_in(&text);

    // Reloading an unchanged file is fine too.
    let (status, v) = reload(&gw).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["generation"].as_u64().is_some_and(|g| g >= 2), "{v}");
    gw.shutdown().await;
}

#[tokio::test]
async fn invalid_reloads_give_400_with_reasons_and_keep_the_old_routes() {
    let a = Upstream::start(Reply::tagged("from a")).await;
    let b = Upstream::start(Reply::ok()).await;
    let gw = Gateway::start(&reload_config(to("a"), &a, &b)).await;
    let good = reload_config(to("a"), &a, &b).yaml();

    let cases: [(&str, String, &[&str]); 5] = [
        (
            "unknown upstream",
            reload_config(to("nowhere"), &a, &b).yaml(),
            &["nowhere"],
        ),
        (
            "unknown key",
            good.replace("routes:\n", "routez: []\nroutes:\n"),
            &["routez"],
        ),
        (
            "unknown key in a route",
            reload_config(to("a").set("polcy", "first"), &a, &b).yaml(),
            &["polcy"],
        ),
        ("bad yaml", format!("{good}  - match: [unclosed\n"), &[]),
        (
            "several problems",
            reload_config(to("ghost").deadline("3s"), &a, &b).yaml(),
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
        let answer = gw.decision().await;
        assert_eq!(answer.outcome, "upstream", "{what}");
        assert!(
            answer.text().contains("from a"),
            "{what}: {}",
            answer.text()
        );
        assert_eq!(gw.admin().config().await["generation"], 1, "{what}");
    }
    assert_eq!(a.count(), cases.len());
    assert_eq!(b.count(), 0);
    let text = gw.metrics().await;
    metric("callgate_config_reloads_total")
        .label("result", "error")
        .at_least(refused)
        .assert_in(&text);
    metric("callgate_config_generation")
        .value(1.0)
        .assert_in(&text);

    // Once the file is fixed, a reload goes through.
    gw.rewrite(&reload_config(to("b"), &a, &b));
    let (status, v) = reload(&gw).await;
    assert_eq!(status, 200, "{v}");
    let generation = v["generation"].as_u64().unwrap();
    assert!(generation >= 2, "{v}");
    assert_eq!(gw.decision().await.outcome, "upstream");
    assert_eq!(b.count(), 1);
    metric("callgate_config_generation")
        .value(generation as f64)
        .assert_in(&gw.metrics().await);
    gw.shutdown().await;
}

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_405() {
    let gw = Gateway::start(&Config::new()).await;
    for path in ["/", "/nope", "/metrics/extra", "/healthz/", "/im"] {
        assert_eq!(gw.admin().get(path).await.status, 404, "GET {path}");
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
        let page = gw.admin().request(method.clone(), path).await;
        assert_eq!(page.status, 405, "{method} {path}");
    }
    // A GET to /reload must not have reloaded anything.
    assert_eq!(gw.admin().config().await["generation"], 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn wrong_method_answers_name_the_allowed_method() {
    let gw = Gateway::start(&Config::new()).await;
    for (method, path, allow) in [
        (reqwest::Method::POST, "/healthz", "GET"),
        (reqwest::Method::POST, "/metrics", "GET"),
        (reqwest::Method::GET, "/reload", "POST"),
    ] {
        let page = gw.admin().request(method.clone(), path).await;
        assert_eq!(page.status, 405);
        let got = page
            .headers
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned());
        assert!(
            got.as_deref().is_some_and(|v| v.contains(allow)),
            "{method} {path}: allow {got:?}"
        );
    }
    gw.shutdown().await;
}
