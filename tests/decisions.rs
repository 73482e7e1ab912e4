//! SPEC 4.2, decisions: fan-out, `strictest` and `first`, the deadline,
//! fallbacks, cancellation, and what upstreams receive (4.4).

mod support;

use std::time::Duration;

use support::*;

const CMD: &str = "Group.CallbackBeforeSendMsg";

/// A gateway with one route for `CMD` to all of `ups` (in order), its
/// settings from `route`.
async fn gateway(ups: &[(&str, &Upstream)], route: impl FnOnce(Route) -> Route) -> Gateway {
    let names: Vec<&str> = ups.iter().map(|(name, _)| *name).collect();
    let mut config = Config::new().route(route(Route::new(CMD, &names)));
    for (name, up) in ups {
        config = config.upstream(name, *up);
    }
    Gateway::start(&config).await
}

/// Sends the decision and asserts it was answered within `limit`.
async fn answered_within(gw: &Gateway, limit: Duration) -> Answer {
    let (answer, took) = timed(gw.callback(CMD, GROUP_SEND)).await;
    assert!(took < limit, "answered after {took:?}");
    answer
}

#[tokio::test]
async fn strictest_all_allow_returns_the_first_upstreams_answer_byte_for_byte() {
    let modified = "{ \"ActionStatus\":\"OK\", \"ErrorCode\":0,\"ErrorInfo\":\"\",\n \"MsgBody\":[{\"MsgType\":\"TIMTextElem\",\"MsgContent\":{\"Text\":\"h*\"}}] }";
    let a = Upstream::start(Reply::json(modified)).await;
    let b = Upstream::start(Reply::ok().after(ms(100))).await;
    let gw = gateway(&[("a", &a), ("b", &b)], |r| r).await;
    let answer = gw.callback(CMD, GROUP_SEND).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.outcome, "upstream");
    assert_eq!(answer.text(), modified);
    assert_eq!((a.count(), b.count()), (1, 1));
    gw.shutdown().await;
}

#[tokio::test]
async fn strictest_returns_a_denial_at_once_without_waiting_for_slow_upstreams() {
    let slow = Upstream::start(Reply::Hang).await;
    let deny = r#"{"ActionStatus":"OK","ErrorInfo":"spam","ErrorCode":10100}"#;
    let denier = Upstream::start(Reply::json(deny).after(ms(50))).await;
    let ups = [("slow", &slow), ("denier", &denier)];
    let gw = gateway(&ups, |r| r.deadline("1500ms")).await;
    let answer = answered_within(&gw, ms(1000)).await;
    assert_eq!((answer.outcome.as_str(), answer.text()), ("upstream", deny));
    gw.shutdown().await;
}

#[tokio::test]
async fn silent_upstreams_get_the_fallback_at_the_deadline() {
    let a = Upstream::start(Reply::Hang).await;
    let b = Upstream::start(Reply::ok().after(secs(5))).await;
    let gw = gateway(&[("a", &a), ("b", &b)], |r| r.deadline("400ms")).await;
    let (answer, elapsed) = timed(gw.callback(CMD, GROUP_SEND)).await;
    assert!(elapsed >= ms(380) && elapsed < ms(1400), "{elapsed:?}");
    answer.assert_is(200, "fallback", OK);
    fallbacks("timeout")
        .value(1.0)
        .assert_in(&gw.metrics().await);
    gw.shutdown().await;
}

#[tokio::test]
async fn on_timeout_deny_answers_the_deny_fallback() {
    let a = Upstream::start(Reply::Hang).await;
    let gw = gateway(&[("a", &a)], |r| r.deadline("200ms").on_timeout("deny")).await;
    let answer = gw.callback(CMD, GROUP_SEND).await;
    answer.assert_is(200, "fallback", DENY);
    gw.shutdown().await;
}

#[tokio::test]
async fn defaults_apply_when_the_route_sets_nothing() {
    let a = Upstream::start(Reply::Hang).await;
    let config = Config::new()
        .defaults("deadline", "300ms")
        .defaults("on_timeout", "deny")
        .upstream("a", &a)
        .route(Route::new(CMD, &["a"]));
    let gw = Gateway::start(&config).await;
    let answer = answered_within(&gw, ms(1300)).await;
    assert_eq!(answer.text(), DENY);
    gw.shutdown().await;
}

/// Broken upstreams cannot answer any more: the fallback comes at once,
/// long before the deadline.
#[tokio::test]
async fn broken_upstreams_get_the_fallback_at_once() {
    let cases: Vec<(&str, Reply)> = vec![
        ("500", Reply::status(500)),
        ("not json", Reply::json("allow")),
        ("json array", Reply::json("[0]")),
        ("string code", Reply::json(r#"{"ErrorCode":"1"}"#)),
        ("no code", Reply::json(r#"{"ActionStatus":"OK"}"#)),
        ("reset", Reply::Drop),
    ];
    for (what, reply) in cases {
        let up = Upstream::start(reply).await;
        let gw = gateway(&[("a", &up)], |r| r.deadline("1500ms").on_timeout("deny")).await;
        let (answer, took) = timed(gw.callback(CMD, GROUP_SEND)).await;
        assert!(took < ms(1000), "{what}: {took:?}");
        assert_eq!(
            (answer.outcome.as_str(), answer.text()),
            ("fallback", DENY),
            "{what}"
        );
        assert_eq!(up.count(), 1, "{what}");
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn refused_connections_get_the_fallback_at_once() {
    let config = Config::new()
        .upstream("gone", format!("http://{}/im", closed_port()))
        .route(Route::new(CMD, &["gone"]).deadline("1500ms"));
    let gw = Gateway::start(&config).await;
    let answer = answered_within(&gw, ms(1000)).await;
    assert_eq!((answer.outcome.as_str(), answer.text()), ("fallback", OK));
    let metrics = gw.metrics().await;
    upstream_requests("gone", "error")
        .value(1.0)
        .assert_in(&metrics);
    fallbacks("upstream_failed").value(1.0).assert_in(&metrics);
    gw.shutdown().await;
}

/// SPEC 4.2: an upstream that failed counts as the fallback verdict and is
/// combined with the answers in; one answer combined with the fallback is
/// written by callgate (`merged`). With `deny`, the allow does not survive.
#[tokio::test]
async fn strictest_counts_a_failed_upstream_as_the_fallback_verdict() {
    let a = Upstream::start(Reply::code(0)).await;
    let b = Upstream::start(Reply::status(502)).await;
    let gw = gateway(&[("a", &a), ("b", &b)], |r| r.on_timeout("deny")).await;
    let answer = gw.callback(CMD, GROUP_SEND).await;
    assert_eq!((answer.outcome.as_str(), answer.text()), ("merged", DENY));
    gw.shutdown().await;
}

#[tokio::test]
async fn policy_first_counts_only_the_first_upstream_and_mirrors_the_rest() {
    let primary = Upstream::start(Reply::code(1).after(ms(50))).await;
    let mirror = Upstream::start(Reply::code(0)).await;
    let slow_mirror = Upstream::start(Reply::Hang).await;
    let ups = [("p", &primary), ("m", &mirror), ("s", &slow_mirror)];
    let gw = gateway(&ups, |r| r.policy("first").deadline("1500ms")).await;
    let answer = answered_within(&gw, ms(1000)).await;
    assert_eq!(answer.outcome, "upstream");
    assert_eq!(answer.json()["ErrorCode"], 1);
    mirror.wait_for(1, secs(5)).await;
    slow_mirror.wait_for(1, secs(5)).await;
    assert_eq!(mirror.received()[0].body, GROUP_SEND.as_bytes());
    gw.shutdown().await;
}

#[tokio::test]
async fn policy_first_ignores_mirror_answers_when_the_primary_fails() {
    let primary = Upstream::start(Reply::status(500)).await;
    let mirror = Upstream::start(Reply::code(1)).await;
    let gw = gateway(&[("p", &primary), ("m", &mirror)], |r| r.policy("first")).await;
    let answer = gw.callback(CMD, GROUP_SEND).await;
    assert_eq!((answer.outcome.as_str(), answer.text()), ("fallback", OK));
    gw.shutdown().await;
}

/// At the deadline the gateway gives up on the call: the upstream sees its
/// connection closed instead of a request that stays open.
#[tokio::test]
async fn calls_still_running_at_the_deadline_are_cancelled() {
    let silent = Upstream::start(Reply::Hang).await;
    let gw = gateway(&[("hang", &silent)], |r| r.deadline("300ms")).await;
    let answer = gw.callback(CMD, GROUP_SEND).await;
    assert_eq!(answer.outcome, "fallback");
    let got = silent.wait_for(1, secs(5)).await;
    let closed = silent.wait_closed(got[0].peer, secs(5)).await;
    let open_for = closed - got[0].at;
    assert!(open_for < secs(2), "{open_for:?}");
    gw.shutdown().await;
}

/// The deadline counts from the request's arrival, so time spent receiving
/// the body is part of it.
#[tokio::test]
async fn the_deadline_includes_receiving_the_body() {
    let up = Upstream::start(Reply::ok().after(ms(400))).await;
    let gw = gateway(&[("a", &up)], |r| r.deadline("600ms")).await;
    let (head, tail) = GROUP_SEND.split_at(20);
    let chunks = vec![head.to_owned(), tail.to_owned()];
    let stream = futures_util::StreamExt::then(
        futures_util::stream::iter(chunks.into_iter().enumerate()),
        |(i, c)| async move {
            if i == 1 {
                tokio::time::sleep(ms(400)).await;
            }
            Ok::<_, std::io::Error>(bytes::Bytes::from(c))
        },
    );
    let query = format!("SdkAppid={APP}&CallbackCommand={CMD}");
    let body = reqwest::Body::wrap_stream(stream);
    let answer = gw.im().send(reqwest::Method::POST, &query, body).await;
    // 400 ms of body + 400 ms of upstream > 600 ms: the fallback answers.
    assert_eq!(answer.outcome, "fallback");
    gw.shutdown().await;
}

#[tokio::test]
async fn unrouted_decisions_get_the_fallback_at_once() {
    let up = Upstream::start(Reply::ok()).await;
    let config = Config::new()
        .defaults("on_timeout", "deny")
        .upstream("a", &up)
        .route(Route::new("C2C.*", &["a"]));
    let gw = Gateway::start(&config).await;
    let answer = gw.callback(CMD, GROUP_SEND).await;
    answer.assert_is(200, "unrouted", DENY);
    assert_eq!(up.count(), 0);
    fallbacks("no_route")
        .value(1.0)
        .assert_in(&gw.metrics().await);
    gw.shutdown().await;
}

#[tokio::test]
async fn first_matching_route_wins_with_sdkappid_filters() {
    let other = Upstream::start(Reply::code(7)).await;
    let mine = Upstream::start(Reply::code(8)).await;
    let catch_all = Upstream::start(Reply::code(9)).await;
    let config = Config::new()
        .app(APP)
        .app(SIGNED_APP)
        .upstream("other", &other)
        .upstream("mine", &mine)
        .upstream("all", &catch_all)
        .route(Route::new("Group.*", &["other"]).sdkappid(SIGNED_APP))
        .route(Route::new("Group.CallbackBefore*", &["mine"]))
        .route(Route::all(&["all"]));
    let gw = Gateway::start(&config).await;
    assert_eq!(gw.callback(CMD, GROUP_SEND).await.json()["ErrorCode"], 8);
    let query = format!("SdkAppid={SIGNED_APP}&CallbackCommand={CMD}");
    assert_eq!(gw.post(&query, GROUP_SEND).await.json()["ErrorCode"], 7);
    let c2c = r#"{"CallbackCommand":"C2C.CallbackBeforeSendMsg","From_Account":"a","To_Account":"b","MsgSeq":1,"MsgRandom":2,"MsgTime":3,"MsgKey":"1_2_3","OnlineOnlyFlag":0,"MsgBody":[]}"#;
    assert_eq!(
        gw.callback("C2C.CallbackBeforeSendMsg", c2c).await.json()["ErrorCode"],
        9
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_route_kind_overrides_the_catalog() {
    let up = Upstream::start(Reply::Hang).await;
    let gw = gateway(&[("a", &up)], |r| r.kind("notification")).await;
    let answer = answered_within(&gw, ms(1000)).await;
    answer.assert_is(200, "queued", OK);
    up.wait_for(1, secs(5)).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn upstreams_receive_the_callback_as_spec_4_4_says() {
    let up = Upstream::start(Reply::ok()).await;
    let config = Config::new()
        .upstream("a", up.url_with("/hook?tenant=blue"))
        .route(Route::new(CMD, &["a"]));
    let gw = Gateway::start(&config).await;
    let query = format!(
        "SdkAppid={APP}&CallbackCommand={CMD}&contenttype=json&ClientIP=10.0.0.1&OptPlatform=iOS"
    );
    let answer = gw.post(&query, GROUP_SEND).await;
    let got = &up.received()[0];
    assert_eq!(got.uri.path(), "/hook");
    assert_eq!(
        got.uri.query(),
        Some(format!("tenant=blue&{query}").as_str())
    );
    assert_eq!(got.body, GROUP_SEND.as_bytes());
    assert_eq!(got.headers["content-type"], "application/json");
    assert_eq!(got.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(got.headers["x-forwarded-proto"], "http");
    let id = got.headers["x-request-id"].to_str().unwrap();
    assert!(id.len() >= 16);
    assert_eq!(
        answer.request_id, id,
        "the request id is returned to IM too"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn concurrent_decisions_reuse_pooled_connections() {
    let up = Upstream::start(Reply::ok()).await;
    let gw = gateway(&[("a", &up)], |r| r).await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let im = gw.im().clone();
        tasks.push(tokio::spawn(
            async move { im.callback(CMD, GROUP_SEND).await },
        ));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().outcome, "upstream");
    }
    assert_eq!(up.count(), 50);
    gw.shutdown().await;
}

#[tokio::test]
async fn sequential_decisions_share_one_upstream_connection() {
    let up = Upstream::start(Reply::ok()).await;
    let gw = gateway(&[("a", &up)], |r| r).await;
    for _ in 0..20 {
        let answer = gw.callback(CMD, GROUP_SEND).await;
        assert_eq!(answer.outcome, "upstream", "{}", answer.text());
    }
    // One connection per serving thread at most: the rest were reused.
    let connections = up.connections();
    assert!(
        (1..=serving_threads()).contains(&connections),
        "{connections} upstream connections for 20 sequential decisions"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn an_upstream_closing_its_connections_still_answers_every_decision() {
    // It closes each connection after one answer, without saying so.
    let up = Upstream::builder().closing().start().await;
    let gw = gateway(&[("a", &up)], |r| r).await;
    for i in 0..20 {
        let answer = gw.callback(CMD, GROUP_SEND).await;
        assert_eq!(
            answer.outcome,
            "upstream",
            "decision {i}: {}",
            answer.text()
        );
        // Sometimes at once (the close may not be seen yet), sometimes
        // after the close has surely arrived.
        if i % 2 == 0 {
            tokio::time::sleep(ms(20)).await;
        }
    }
    assert_eq!(up.connections(), 20);
    gw.shutdown().await;
}
