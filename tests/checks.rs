//! SPEC 4.1: every check, in order, with its answer, and proof that
//! nothing that fails a check reaches an upstream.

mod support;

use std::time::Duration;

use support::*;

const TOKEN: &str = "s3cr3t-token";
const CMD: &str = "Group.CallbackBeforeSendMsg";

/// An upstream, and a gateway routing everything to it: the app `APP`,
/// `SIGNED_APP` signed with `TOKEN`, bodies up to 2 KiB, and `config`.
async fn setup(config: Config) -> (Upstream, Gateway) {
    let up = Upstream::start(Reply::ok()).await;
    let config = config
        .app(APP)
        .signed_app(SIGNED_APP, TOKEN)
        .limits("max_body", "2KiB")
        .upstream("a", &up)
        .route(Route::all(&["a"]));
    (up, Gateway::start(&config).await)
}

/// Asserts that each `(query, body)` is refused with `status`, its reason
/// mentioning `info`.
async fn refused(gw: &Gateway, cases: &[(String, &str)], status: u16, info: &str) {
    for (query, body) in cases {
        gw.post(query, body).await.assert_rejected(status, info);
    }
}

fn q(command: &str) -> String {
    format!("SdkAppid={APP}&CallbackCommand={command}")
}

fn signed(time: u64, sign: &str) -> String {
    signed_query(SIGNED_APP, "Group.CallbackAfterNewMemberJoin", time, sign)
}

/// Every rejection answers at once, and the upstream never hears of it.
async fn assert_nothing_forwarded(up: &Upstream, gw: Gateway) {
    // A valid callback after the bad ones proves the gateway still serves
    // and gives the upstream time to have received anything sent earlier.
    let a = gw.callback(CMD, GROUP_SEND).await;
    assert_eq!(a.outcome, "upstream");
    assert_eq!(up.count(), 1, "a rejected callback reached the upstream");
    gw.shutdown().await;
}

#[tokio::test]
async fn method_must_be_post() {
    let (up, gw) = setup(Config::new()).await;
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let a = gw.im().send(method, &q(CMD), GROUP_SEND.into()).await;
        assert_eq!(a.headers["allow"], "POST");
        a.assert_rejected(405, "POST");
    }
    assert_nothing_forwarded(&up, gw).await;
}

#[tokio::test]
async fn sdkappid_must_be_present_and_decimal() {
    let (up, gw) = setup(Config::new()).await;
    let mut cases = vec![(format!("CallbackCommand={CMD}"), GROUP_SEND)];
    for bad in ["abc", "-1", "1e9", "%31%2e0", "", "140000000１"] {
        cases.push((format!("SdkAppid={bad}&CallbackCommand={CMD}"), GROUP_SEND));
    }
    cases.push((
        format!("SdkAppid={APP}&SdkAppid=1&CallbackCommand=X"),
        GROUP_SEND,
    ));
    refused(&gw, &cases, 400, "SdkAppid").await;
    assert_nothing_forwarded(&up, gw).await;
}

#[tokio::test]
async fn sdkappid_is_matched_without_regard_to_case() {
    let (up, gw) = setup(Config::new()).await;
    for name in ["SDKAppID", "SdkAppId", "sdkappid"] {
        let query = format!("{name}={APP}&CallbackCommand={CMD}");
        let a = gw.post(&query, GROUP_SEND).await;
        assert_eq!(a.outcome, "upstream", "{name}: {}", a.text());
    }
    assert_eq!(up.count(), 3);
    gw.shutdown().await;
}

#[tokio::test]
async fn sdkappid_must_be_a_configured_app() {
    let (up, gw) = setup(Config::new()).await;
    let query = format!("SdkAppid=1400000099&CallbackCommand={CMD}");
    refused(&gw, &[(query, GROUP_SEND)], 403, "1400000099").await;
    assert_nothing_forwarded(&up, gw).await;
}

#[tokio::test]
async fn callback_command_must_be_present() {
    let (up, gw) = setup(Config::new()).await;
    let cases = [
        (format!("SdkAppid={APP}"), GROUP_SEND),
        (format!("SdkAppid={APP}&CallbackCommand="), GROUP_SEND),
    ];
    refused(&gw, &cases, 400, "CallbackCommand").await;
    assert_nothing_forwarded(&up, gw).await;
}

#[tokio::test]
async fn sign_is_required_and_verified_when_the_app_has_a_token() {
    let (up, gw) = setup(Config::new()).await;
    let t = now();
    let good = sign(TOKEN, &t.to_string());
    // Missing pieces, wrong token, tampered time, stale and future times.
    let unsigned =
        format!("SdkAppid={SIGNED_APP}&CallbackCommand=Group.CallbackAfterNewMemberJoin");
    let no_time = [(unsigned.clone(), MEMBER_JOIN)];
    refused(&gw, &no_time, 401, "RequestTime").await;
    let wrong = sign("other-token", &t.to_string());
    let bad_sign = [
        (format!("{unsigned}&RequestTime={t}"), MEMBER_JOIN),
        (signed(t, &wrong), MEMBER_JOIN),
        (signed(t + 1, &good), MEMBER_JOIN),
        (signed(t, &good.to_uppercase()), MEMBER_JOIN),
    ];
    refused(&gw, &bad_sign, 401, "Sign").await;
    let out_of_window: Vec<(String, &str)> = [t - 120, t + 120]
        .iter()
        .map(|t| (signed(*t, &sign(TOKEN, &t.to_string())), MEMBER_JOIN))
        .collect();
    refused(&gw, &out_of_window, 401, "window").await;
    // The good one passes (and is the only one the upstream gets).
    let a = gw.post(&signed(t, &good), MEMBER_JOIN).await;
    assert_eq!(
        (a.status, a.outcome.as_str()),
        (200, "queued"),
        "{}",
        a.text()
    );
    up.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(up.count(), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn body_must_fit_max_body() {
    let (up, gw) = setup(Config::new()).await;
    let big = format!(
        r#"{{"CallbackCommand":"{CMD}","Pad":"{}"}}"#,
        "x".repeat(4096)
    );
    gw.callback(CMD, &big).await.assert_rejected(413, "larger");
    // Without a Content-Length (chunked), the limit holds while reading.
    let stream = futures_util::stream::iter(
        (0..64).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 1024]))),
    );
    let body = reqwest::Body::wrap_stream(stream);
    let a = gw.im().send(reqwest::Method::POST, &q(CMD), body).await;
    a.assert_rejected(413, "larger");
    assert_nothing_forwarded(&up, gw).await;
}

#[tokio::test]
async fn body_must_be_a_json_object() {
    let (up, gw) = setup(Config::new()).await;
    let bad = [
        "",
        "not json",
        "{\"GroupId\":",
        "[1,2]",
        "\"text\"",
        "42",
        "{} trailing",
        "null",
    ];
    let cases: Vec<(String, &str)> = bad.iter().map(|b| (callback_query(CMD), *b)).collect();
    refused(&gw, &cases, 400, "JSON").await;
    assert_nothing_forwarded(&up, gw).await;
}

#[tokio::test]
async fn body_command_must_equal_the_query_command() {
    let (up, gw) = setup(Config::new()).await;
    let push = r#"{"Events":[{"CallbackCommand":"Push.OfflinePush","EventType":1,"EventTime":1,"To_Account":"a","PushPlatform":1,"PushStage":1,"MsgSeq":1,"MsgTime":1,"PushID":"p","ErrCode":0,"ErrInfo":""},{"CallbackCommand":"Push.AllMemberPush","EventType":1,"EventTime":1,"To_Account":"a","PushPlatform":1,"PushStage":1,"MsgSeq":1,"MsgTime":1,"PushID":"p","ErrCode":0,"ErrInfo":""}]}"#;
    let cases = [
        (callback_query(CMD), MEMBER_JOIN),
        (callback_query("Push.OfflinePush"), push),
    ];
    refused(&gw, &cases, 400, "CallbackCommand").await;
    assert_nothing_forwarded(&up, gw).await;
}

#[tokio::test]
async fn body_must_carry_required_fields_with_their_types() {
    let (up, gw) = setup(Config::new()).await;
    let missing = GROUP_SEND.replace(r#""GroupId":"@TGS#2J4SZEAEL","#, "");
    let mistyped = GROUP_SEND.replace(r#""GroupId":"@TGS#2J4SZEAEL""#, r#""GroupId":42"#);
    refused(
        &gw,
        &[
            (callback_query(CMD), &missing),
            (callback_query(CMD), &mistyped),
        ],
        400,
        "GroupId",
    )
    .await;
    let null = GROUP_SEND.replace(
        r#""MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}]"#,
        r#""MsgBody":null"#,
    );
    refused(&gw, &[(callback_query(CMD), &null)], 400, "MsgBody").await;
    assert_nothing_forwarded(&up, gw).await;
}

#[tokio::test]
async fn unknown_fields_and_both_event_time_forms_pass() {
    let (up, gw) = setup(Config::new()).await;
    let extra = GROUP_SEND.replace(
        r#""Type":"Public","#,
        r#""Type":"Public","BrandNewField":{"x":[1,2]},"TopicId":"t","#,
    );
    let string_time = GROUP_SEND.replace("1670574414123", "\"1670574414123\"");
    for body in [extra, string_time] {
        assert_eq!(gw.callback(CMD, &body).await.outcome, "upstream");
    }
    assert_eq!(up.count(), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn strict_commands_rejects_commands_missing_from_the_catalog() {
    let (up, gw) = setup(Config::new().defaults("strict_commands", true)).await;
    gw.callback("Custom.CallbackAfterSomething", "{}")
        .await
        .assert_rejected(400, "Custom.CallbackAfterSomething");
    assert_nothing_forwarded(&up, gw).await;
}

#[tokio::test]
async fn commands_missing_from_the_catalog_pass_when_not_strict() {
    let (up, gw) = setup(Config::new()).await;
    let a = gw
        .callback("Custom.CallbackAfterSomething", r#"{"Anything":1}"#)
        .await;
    assert_eq!((a.status, a.outcome.as_str()), (200, "queued"));
    up.wait_for(1, Duration::from_secs(5)).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn checks_apply_in_spec_order() {
    let (up, gw) = setup(Config::new()).await;
    let big = "x".repeat(8192);
    // Unknown app and a bad body: the app check comes first.
    let unknown_app = [("SdkAppid=1&CallbackCommand=X".to_owned(), "not json")];
    refused(&gw, &unknown_app, 403, "SdkAppid").await;
    // Bad Sign and an oversized body: Sign first.
    refused(&gw, &[(signed(now(), "bad"), &big)], 401, "Sign").await;
    // Oversized and not JSON: size first.
    gw.callback(CMD, &big).await.assert_rejected(413, "larger");
    // Not JSON wins over a command mismatch hidden in a broken document.
    let broken = r#"{"CallbackCommand":"Other","#;
    gw.callback(CMD, broken).await.assert_rejected(400, "JSON");
    assert_nothing_forwarded(&up, gw).await;
}
