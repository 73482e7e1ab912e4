//! SPEC 4.5 (decision answers per command) and the deadline and fallback
//! rows of 4.2, over real sockets: each answer family with two and three
//! upstreams, slow, down and disagreeing ones, and mirrors.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;

const SEND: &str = "Group.CallbackBeforeSendMsg";
const INVITE: &str = "Group.CallbackBeforeInviteJoinGroup";
const SUBSCRIBE: &str = "OfficialAccount.CallbackBeforeAddSubscriber";
const FRIEND_ADD: &str = "Sns.CallbackPrevFriendAdd";
const GIFT: &str = "Live.CallbackBeforeSendGift";

/// An upstream that is down: nothing listens on its port.
fn down() -> Endpoint {
    Endpoint::new(format!("http://{}/im", free_addr()))
}

/// A gateway with one route for `command` to `ups` in order.
async fn gateway(
    command: &str,
    ups: &[(&str, Endpoint)],
    route: impl FnOnce(Route) -> Route,
) -> Gateway {
    let names: Vec<&str> = ups.iter().map(|(name, _)| *name).collect();
    let mut config = Config::new().route(route(Route::new(command, &names)));
    for (name, endpoint) in ups {
        config = config.upstream(name, endpoint.clone());
    }
    Gateway::start(&config).await
}

fn answering(body: Value) -> Reply {
    Reply::json(&body.to_string())
}

fn decisions(verdict: &str) -> MetricMatch {
    metric("callgate_decisions_total").label("verdict", verdict)
}

/// The answer as JSON, and that it is one of IM's (status 200, OK).
fn parsed(answer: &Answer) -> Value {
    assert_eq!(answer.status, 200, "{}", answer.text());
    let v = answer.json();
    assert_eq!(v["ActionStatus"], "OK", "{v}");
    v
}

// ---- message family ----

#[tokio::test]
async fn spec_4_5_message_rewrites_are_taken_field_by_field_in_route_order() {
    let text = json!([{"MsgType": "TIMTextElem", "MsgContent": {"Text": "h*"}}]);
    let a = Upstream::start(answering(
        json!({"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","CloudCustomData":"tagged"}),
    ))
    .await;
    let b = Upstream::start(answering(
        json!({"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"masked","MsgBody":text}),
    ))
    .await;
    let c = Upstream::start(Reply::ok()).await;
    let gw = gateway(
        SEND,
        &[("a", (&a).into()), ("b", (&b).into()), ("c", (&c).into())],
        |r| r,
    )
    .await;
    let answer = gw.callback(SEND, GROUP_SEND).await;
    assert_eq!(answer.outcome, "merged");
    let v = parsed(&answer);
    assert_eq!(
        (&v["ErrorCode"], &v["MsgBody"], &v["CloudCustomData"]),
        (&json!(0), &text, &json!("tagged"))
    );
    decisions("rewrite")
        .value(1.0)
        .assert_in(&gw.metrics().await);
    gw.shutdown().await;
}

#[tokio::test]
async fn spec_4_5_message_a_conflicting_later_rewrite_is_counted_not_used() {
    let first = r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"one"}}]}"#;
    let a = Upstream::start(Reply::json(first)).await;
    let b = Upstream::start(answering(
        json!({"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"",
        "MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"two"}}]}),
    ))
    .await;
    let gw = gateway(SEND, &[("a", (&a).into()), ("b", (&b).into())], |r| r).await;
    let answer = gw.callback(SEND, GROUP_SEND).await;
    // The result is the first upstream's answer unchanged: byte for byte.
    assert_eq!(
        (answer.outcome.as_str(), answer.text()),
        ("upstream", first)
    );
    metric("callgate_answer_conflicts_total")
        .value(1.0)
        .assert_in(&gw.metrics().await);
    gw.shutdown().await;
}

#[tokio::test]
async fn spec_4_5_message_a_silent_drop_from_any_upstream_wins_at_once() {
    let slow = Upstream::start(Reply::ok().after(Duration::from_secs(5))).await;
    let discard = r#"{"ActionStatus":"OK","ErrorCode":2,"ErrorInfo":"dropped"}"#;
    let dropper = Upstream::start(Reply::json(discard)).await;
    let gw = gateway(
        SEND,
        &[("slow", (&slow).into()), ("dropper", (&dropper).into())],
        |r| r.deadline("1500ms"),
    )
    .await;
    let (answer, took) = timed(gw.callback(SEND, GROUP_SEND)).await;
    assert!(took < Duration::from_millis(1000), "{took:?}");
    assert_eq!(
        (answer.outcome.as_str(), answer.text()),
        ("upstream", discard)
    );
    decisions("discard")
        .value(1.0)
        .assert_in(&gw.metrics().await);
    gw.shutdown().await;
}

#[tokio::test]
async fn spec_4_2_a_rewrite_that_arrived_is_kept_at_the_deadline_with_allow() {
    let text = json!([{"MsgType": "TIMTextElem", "MsgContent": {"Text": "***"}}]);
    let a = Upstream::start(answering(
        json!({"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","MsgBody":text}),
    ))
    .await;
    let silent = Upstream::start(Reply::Hang).await;
    let gw = gateway(
        SEND,
        &[("a", (&a).into()), ("silent", (&silent).into())],
        |r| r.deadline("300ms"),
    )
    .await;
    let answer = gw.callback(SEND, GROUP_SEND).await;
    assert_eq!(answer.outcome, "merged");
    let v = parsed(&answer);
    assert_eq!((&v["ErrorCode"], &v["MsgBody"]), (&json!(0), &text));
    gw.shutdown().await;
}

#[tokio::test]
async fn spec_4_2_with_deny_a_silent_upstream_denies_whatever_arrived() {
    let a = Upstream::start(answering(
        json!({"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"",
        "MsgBody":[]}),
    ))
    .await;
    let silent = Upstream::start(Reply::Hang).await;
    let gw = gateway(
        SEND,
        &[("a", (&a).into()), ("silent", (&silent).into())],
        |r| r.deadline("300ms").on_timeout("deny"),
    )
    .await;
    let answer = gw.callback(SEND, GROUP_SEND).await;
    assert_eq!((answer.outcome.as_str(), answer.text()), ("merged", DENY));
    decisions("deny").value(1.0).assert_in(&gw.metrics().await);
    gw.shutdown().await;
}

// ---- partial family ----

#[tokio::test]
async fn spec_4_5_partial_refusals_of_three_upstreams_are_united_once_each() {
    let a = Upstream::start(answering(
        json!({"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"a","RefusedMembers_Account":["jared"]}),
    ))
    .await;
    let b = Upstream::start(answering(
        json!({"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"b",
        "RefusedMembers_Account":["tommy","jared"]}),
    ))
    .await;
    let c = Upstream::start(Reply::ok().after(Duration::from_millis(50))).await;
    let gw = gateway(
        INVITE,
        &[("a", (&a).into()), ("b", (&b).into()), ("c", (&c).into())],
        |r| r,
    )
    .await;
    let answer = gw.callback(INVITE, &fixture(INVITE)).await;
    assert_eq!(answer.outcome, "merged");
    let v = parsed(&answer);
    assert_eq!(
        (
            &v["ErrorCode"],
            &v["RefusedMembers_Account"],
            &v["ErrorInfo"]
        ),
        (&json!(0), &json!(["jared", "tommy"]), &json!("a"))
    );
    decisions("partial")
        .value(1.0)
        .assert_in(&gw.metrics().await);
    gw.shutdown().await;
}

#[tokio::test]
async fn spec_4_5_partial_a_down_upstream_keeps_the_refusals_that_came() {
    let a = Upstream::start(answering(
        json!({"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"",
        "RefusedMembers_Account":["tommy"]}),
    ))
    .await;
    let gw = gateway(INVITE, &[("a", (&a).into()), ("gone", down())], |r| r).await;
    let answer = gw.callback(INVITE, &fixture(INVITE)).await;
    assert_eq!(answer.outcome, "merged");
    assert_eq!(parsed(&answer)["RefusedMembers_Account"], json!(["tommy"]));
    upstream_requests("gone", "error")
        .value(1.0)
        .assert_in(&gw.metrics().await);
    gw.shutdown().await;
}

#[tokio::test]
async fn spec_4_5_partial_lists_keep_the_field_name_the_first_list_used() {
    let a = Upstream::start(answering(
        json!({"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"",
        "RefusedSubscribers_Account":["alice"]}),
    ))
    .await;
    let b = Upstream::start(answering(
        json!({"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"",
        "RefusedMembers_Account":["bob"]}),
    ))
    .await;
    let gw = gateway(SUBSCRIBE, &[("a", (&a).into()), ("b", (&b).into())], |r| r).await;
    let answer = gw.callback(SUBSCRIBE, &fixture(SUBSCRIBE)).await;
    let v = parsed(&answer);
    assert_eq!(
        v["RefusedSubscribers_Account"],
        json!(["alice", "bob"]),
        "{v}"
    );
    assert!(v.get("RefusedMembers_Account").is_none(), "{v}");
    gw.shutdown().await;
}

#[tokio::test]
async fn spec_4_5_partial_a_whole_request_refusal_wins_over_lists() {
    let a = Upstream::start(answering(
        json!({"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"",
        "RefusedMembers_Account":["tommy"]}),
    ))
    .await;
    let deny = r#"{"ActionStatus":"OK","ErrorCode":10101,"ErrorInfo":"closed group"}"#;
    let b = Upstream::start(Reply::json(deny)).await;
    let gw = gateway(INVITE, &[("a", (&a).into()), ("b", (&b).into())], |r| r).await;
    let answer = gw.callback(INVITE, &fixture(INVITE)).await;
    assert_eq!((answer.outcome.as_str(), answer.text()), ("upstream", deny));
    gw.shutdown().await;
}

// ---- per-friend family ----

/// A friend request for `friends`.
fn friend_add(friends: &[&str]) -> String {
    let items: Vec<Value> = friends.iter().map(|f| json!({"To_Account": f})).collect();
    json!({"CallbackCommand": FRIEND_ADD, "Requester_Account": "alice", "From_Account": "alice",
        "FriendItem": items, "AddType": "Add_Type_Both", "ForceAddFlags": 0})
    .to_string()
}

fn results(v: &Value) -> Vec<(String, i64)> {
    v["ResultItem"]
        .as_array()
        .unwrap_or_else(|| panic!("no ResultItem: {v}"))
        .iter()
        .map(|i| {
            (
                i["To_Account"].as_str().unwrap_or("?").to_owned(),
                i["ResultCode"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

#[tokio::test]
async fn spec_4_5_per_friend_deny_fallback_refuses_every_friend_of_the_request() {
    let silent = Upstream::start(Reply::Hang).await;
    let gw = gateway(FRIEND_ADD, &[("silent", (&silent).into())], |r| {
        r.deadline("200ms").on_timeout("deny")
    })
    .await;
    let answer = gw
        .callback(FRIEND_ADD, &friend_add(&["bob", "carol"]))
        .await;
    assert_eq!(answer.outcome, "fallback");
    let v = parsed(&answer);
    // IM ignores the top-level code here: the refusal is per friend.
    assert_eq!(v["ErrorCode"], 0);
    assert_eq!(
        results(&v),
        [("bob".to_owned(), 38000), ("carol".to_owned(), 38000)]
    );
    assert_eq!(v["ResultItem"][0]["ResultInfo"], "rejected by gateway");
    gw.shutdown().await;
}

#[tokio::test]
async fn spec_4_5_per_friend_the_first_refusal_in_route_order_decides_each_friend() {
    let a = Upstream::start(answering(
        json!({"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"",
        "ResultItem":[{"To_Account":"bob","ResultCode":0,"ResultInfo":""},
                      {"To_Account":"carol","ResultCode":38001,"ResultInfo":"blocked"}]}),
    ))
    .await;
    let b = Upstream::start(
        answering(json!({"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"",
        "ResultItem":[{"To_Account":"bob","ResultCode":38002,"ResultInfo":"spam"},
                      {"To_Account":"carol","ResultCode":38003,"ResultInfo":"later"}]}))
        .after(Duration::from_millis(50)),
    )
    .await;
    let c = Upstream::start(answering(
        json!({"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"",
        "ResultItem":[]}),
    ))
    .await;
    let gw = gateway(
        FRIEND_ADD,
        &[("a", (&a).into()), ("b", (&b).into()), ("c", (&c).into())],
        |r| r,
    )
    .await;
    let answer = gw
        .callback(FRIEND_ADD, &friend_add(&["bob", "carol", "dave"]))
        .await;
    assert_eq!(answer.outcome, "merged");
    let v = parsed(&answer);
    assert_eq!(
        results(&v),
        [
            ("bob".to_owned(), 38002),
            ("carol".to_owned(), 38001),
            ("dave".to_owned(), 0)
        ]
    );
    assert_eq!(v["ResultItem"][1]["ResultInfo"], "blocked");
    gw.shutdown().await;
}

#[tokio::test]
async fn spec_4_5_per_friend_an_answer_without_result_items_counts_as_no_answer() {
    let plain = Upstream::start(Reply::ok()).await;
    let gw = gateway(FRIEND_ADD, &[("plain", (&plain).into())], |r| {
        r.on_timeout("deny")
    })
    .await;
    let answer = gw.callback(FRIEND_ADD, &friend_add(&["bob"])).await;
    assert_eq!(answer.outcome, "fallback");
    assert_eq!(results(&parsed(&answer)), [("bob".to_owned(), 38000)]);
    upstream_requests("plain", "bad_answer")
        .value(1.0)
        .assert_in(&gw.metrics().await);
    gw.shutdown().await;
}

// ---- which fallback ----

#[tokio::test]
async fn spec_4_5_a_gift_fails_closed_unless_the_route_says_otherwise() {
    let silent = Upstream::start(Reply::Hang).await;
    let gw = gateway(GIFT, &[("silent", (&silent).into())], |r| {
        r.deadline("200ms")
    })
    .await;
    let answer = gw.callback(GIFT, &fixture(GIFT)).await;
    assert_eq!((answer.outcome.as_str(), answer.text()), ("fallback", DENY));
    gw.shutdown().await;

    let gw = gateway(GIFT, &[("silent", (&silent).into())], |r| {
        r.deadline("200ms").on_timeout("allow")
    })
    .await;
    let answer = gw.callback(GIFT, &fixture(GIFT)).await;
    assert_eq!((answer.outcome.as_str(), answer.text()), ("fallback", OK));
    gw.shutdown().await;
}

#[tokio::test]
async fn spec_4_5_an_unrouted_gift_is_denied_too() {
    let up = Upstream::start(Reply::ok()).await;
    let gw = gateway(SEND, &[("a", (&up).into())], |r| r).await;
    let answer = gw.callback(GIFT, &fixture(GIFT)).await;
    assert_eq!((answer.outcome.as_str(), answer.text()), ("unrouted", DENY));
    assert_eq!(up.count(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn spec_4_5_check_prints_the_fallback_in_force_for_each_route() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.yaml");
    Config::new()
        .upstream("a", down())
        .route(Route::new("Group.*", &["a"]).on_timeout("deny"))
        .route(Route::all(&["a"]))
        .write(&path);
    let out = exec(&["check", "-c", path.to_str().unwrap()]).await;
    out.expect_code(0, "check");
    assert!(out.stdout.contains("on_timeout=deny"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("on_timeout=allow (deny for Live.CallbackBeforeSendGift)"),
        "{}",
        out.stdout
    );
}

// ---- mirrors ----

#[tokio::test]
async fn spec_4_5_mirrors_are_compared_counted_and_never_delay_the_answer() {
    let first = Upstream::start(Reply::ok()).await;
    let same = Upstream::start(Reply::ok()).await;
    let other = Upstream::start(Reply::code(1)).await;
    let slow = Upstream::start(Reply::Hang).await;
    let ups = [
        ("first", Endpoint::from(&first)),
        ("same", (&same).into()),
        ("other", (&other).into()),
        ("gone", down()),
        ("slow", (&slow).into()),
    ];
    let gw = gateway(SEND, &ups, |r| r.policy("first").deadline("1s")).await;
    let (answer, took) = timed(gw.callback(SEND, GROUP_SEND)).await;
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert_eq!((answer.outcome.as_str(), answer.text()), ("upstream", OK));
    for (mirror, result) in [
        ("same", "agree"),
        ("other", "disagree"),
        ("gone", "no_answer"),
        ("slow", "no_answer"),
    ] {
        metric("callgate_mirror_answers_total")
            .label("upstream", mirror)
            .label("result", result)
            .value(1.0)
            .eventually(gw.admin(), Duration::from_secs(5))
            .await;
    }
    gw.shutdown().await;
}
