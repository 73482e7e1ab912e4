//! SPEC 4.1: every check, in order, with its answer, and proof that
//! nothing that fails a check reaches an upstream.

#[path = "support_old/mod.rs"]
mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::*;

const SIGNED_APP: u64 = 1400000002;
const TOKEN: &str = "s3cr3t-token";

async fn setup(extra: &str) -> (Upstream, Gateway) {
    let up = Upstream::start(Reply::ok()).await;
    let gw = Gateway::start(&format!(
        "apps:\n  - sdkappid: {APP}\n  - sdkappid: {SIGNED_APP}\n    token: \"{TOKEN}\"\nlimits:\n  max_body: 2KiB\n{extra}{}routes:\n  - match: \"*\"\n    upstreams: [a]\n",
        upstreams_yaml(&[("a", &up)])
    ))
    .await;
    (up, gw)
}

fn q(command: &str) -> String {
    format!("SdkAppid={APP}&CallbackCommand={command}")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn signed(time: u64, sign: &str) -> String {
    format!(
        "SdkAppid={SIGNED_APP}&CallbackCommand=Group.CallbackAfterNewMemberJoin&RequestTime={time}&Sign={sign}"
    )
}

/// Every rejection answers at once, and the upstream never hears of it.
async fn assert_nothing_forwarded(up: &Upstream, gw: Gateway) {
    // A valid callback after the bad ones proves the gateway still serves
    // and gives the upstream time to have received anything sent earlier.
    let a = gw.callback("Group.CallbackBeforeSendMsg", GROUP_SEND).await;
    assert_eq!(a.outcome, "upstream");
    assert_eq!(up.count(), 1, "a rejected callback reached the upstream");
    gw.shutdown().await;
}

#[tokio::test]
async fn method_must_be_post() {
    let (up, gw) = setup("").await;
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let r = gw
            .http
            .request(
                method,
                format!("{}?{}", gw.base(), q("Group.CallbackBeforeSendMsg")),
            )
            .body(GROUP_SEND)
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["allow"], "POST");
        Answer::read(r).await.assert_rejected(405, "POST");
    }
    assert_nothing_forwarded(&up, gw).await;
}

#[tokio::test]
async fn sdkappid_must_be_present_and_decimal() {
    let (up, gw) = setup("").await;
    gw.post("CallbackCommand=Group.CallbackBeforeSendMsg", GROUP_SEND)
        .await
        .assert_rejected(400, "SdkAppid");
    for bad in ["abc", "-1", "1e9", "%31%2e0", "", "140000000１"] {
        gw.post(
            &format!("SdkAppid={bad}&CallbackCommand=Group.CallbackBeforeSendMsg"),
            GROUP_SEND,
        )
        .await
        .assert_rejected(400, "SdkAppid");
    }
    gw.post(
        &format!("SdkAppid={APP}&SdkAppid=1&CallbackCommand=X"),
        GROUP_SEND,
    )
    .await
    .assert_rejected(400, "SdkAppid");
    assert_nothing_forwarded(&up, gw).await;
}

#[tokio::test]
async fn sdkappid_is_matched_without_regard_to_case() {
    let (up, gw) = setup("").await;
    for name in ["SDKAppID", "SdkAppId", "sdkappid"] {
        let a = gw
            .post(
                &format!("{name}={APP}&CallbackCommand=Group.CallbackBeforeSendMsg"),
                GROUP_SEND,
            )
            .await;
        assert_eq!(a.outcome, "upstream", "{name}: {}", a.text());
    }
    assert_eq!(up.count(), 3);
    gw.shutdown().await;
}

#[tokio::test]
async fn sdkappid_must_be_a_configured_app() {
    let (up, gw) = setup("").await;
    gw.post(
        "SdkAppid=1400000099&CallbackCommand=Group.CallbackBeforeSendMsg",
        GROUP_SEND,
    )
    .await
    .assert_rejected(403, "1400000099");
    assert_nothing_forwarded(&up, gw).await;
}

#[tokio::test]
async fn callback_command_must_be_present() {
    let (up, gw) = setup("").await;
    gw.post(&format!("SdkAppid={APP}"), GROUP_SEND)
        .await
        .assert_rejected(400, "CallbackCommand");
    gw.post(&format!("SdkAppid={APP}&CallbackCommand="), GROUP_SEND)
        .await
        .assert_rejected(400, "CallbackCommand");
    assert_nothing_forwarded(&up, gw).await;
}

#[tokio::test]
async fn sign_is_required_and_verified_when_the_app_has_a_token() {
    let (up, gw) = setup("").await;
    let t = now();
    let good = callgate::validate::expected_sign(TOKEN, &t.to_string());
    // Missing pieces, wrong token, tampered time, stale and future times.
    gw.post(
        &format!("SdkAppid={SIGNED_APP}&CallbackCommand=Group.CallbackAfterNewMemberJoin"),
        MEMBER_JOIN,
    )
    .await
    .assert_rejected(401, "RequestTime");
    gw.post(
        &format!(
            "SdkAppid={SIGNED_APP}&CallbackCommand=Group.CallbackAfterNewMemberJoin&RequestTime={t}"
        ),
        MEMBER_JOIN,
    )
    .await
    .assert_rejected(401, "Sign");
    let wrong = callgate::validate::expected_sign("other-token", &t.to_string());
    gw.post(&signed(t, &wrong), MEMBER_JOIN)
        .await
        .assert_rejected(401, "Sign");
    gw.post(&signed(t + 1, &good), MEMBER_JOIN)
        .await
        .assert_rejected(401, "Sign");
    gw.post(&signed(t, &good.to_uppercase()), MEMBER_JOIN)
        .await
        .assert_rejected(401, "Sign");
    for off in [-120i64, 120] {
        let t2 = (t as i64 + off) as u64;
        let s = callgate::validate::expected_sign(TOKEN, &t2.to_string());
        gw.post(&signed(t2, &s), MEMBER_JOIN)
            .await
            .assert_rejected(401, "window");
    }
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
    let (up, gw) = setup("").await;
    let big = format!(
        r#"{{"CallbackCommand":"Group.CallbackBeforeSendMsg","Pad":"{}"}}"#,
        "x".repeat(4096)
    );
    gw.callback("Group.CallbackBeforeSendMsg", &big)
        .await
        .assert_rejected(413, "larger");
    // Without a Content-Length (chunked), the limit holds while reading.
    let stream = futures_util::stream::iter(
        (0..64).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 1024]))),
    );
    let r = gw
        .http
        .post(format!(
            "{}?{}",
            gw.base(),
            q("Group.CallbackBeforeSendMsg")
        ))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    Answer::read(r).await.assert_rejected(413, "larger");
    assert_nothing_forwarded(&up, gw).await;
}

#[tokio::test]
async fn body_must_be_a_json_object() {
    let (up, gw) = setup("").await;
    for bad in [
        "",
        "not json",
        "{\"GroupId\":",
        "[1,2]",
        "\"text\"",
        "42",
        "{} trailing",
        "null",
    ] {
        gw.callback("Group.CallbackBeforeSendMsg", bad)
            .await
            .assert_rejected(400, "JSON");
    }
    assert_nothing_forwarded(&up, gw).await;
}

#[tokio::test]
async fn body_command_must_equal_the_query_command() {
    let (up, gw) = setup("").await;
    gw.callback("Group.CallbackBeforeSendMsg", MEMBER_JOIN)
        .await
        .assert_rejected(400, "CallbackCommand");
    let push = r#"{"Events":[{"CallbackCommand":"Push.OfflinePush","EventType":1,"EventTime":1,"To_Account":"a","PushPlatform":1,"PushStage":1,"MsgSeq":1,"MsgTime":1,"PushID":"p","ErrCode":0,"ErrInfo":""},{"CallbackCommand":"Push.AllMemberPush","EventType":1,"EventTime":1,"To_Account":"a","PushPlatform":1,"PushStage":1,"MsgSeq":1,"MsgTime":1,"PushID":"p","ErrCode":0,"ErrInfo":""}]}"#;
    gw.callback("Push.OfflinePush", push)
        .await
        .assert_rejected(400, "CallbackCommand");
    assert_nothing_forwarded(&up, gw).await;
}

#[tokio::test]
async fn body_must_carry_required_fields_with_their_types() {
    let (up, gw) = setup("").await;
    let missing = GROUP_SEND.replace(r#""GroupId":"@TGS#2J4SZEAEL","#, "");
    gw.callback("Group.CallbackBeforeSendMsg", &missing)
        .await
        .assert_rejected(400, "GroupId");
    let mistyped = GROUP_SEND.replace(r#""GroupId":"@TGS#2J4SZEAEL""#, r#""GroupId":42"#);
    gw.callback("Group.CallbackBeforeSendMsg", &mistyped)
        .await
        .assert_rejected(400, "GroupId");
    let null = GROUP_SEND.replace(
        r#""MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}]"#,
        r#""MsgBody":null"#,
    );
    gw.callback("Group.CallbackBeforeSendMsg", &null)
        .await
        .assert_rejected(400, "MsgBody");
    assert_nothing_forwarded(&up, gw).await;
}

#[tokio::test]
async fn unknown_fields_and_both_event_time_forms_pass() {
    let (up, gw) = setup("").await;
    let extra = GROUP_SEND.replace(
        r#""Type":"Public","#,
        r#""Type":"Public","BrandNewField":{"x":[1,2]},"TopicId":"t","#,
    );
    assert_eq!(
        gw.callback("Group.CallbackBeforeSendMsg", &extra)
            .await
            .outcome,
        "upstream"
    );
    let string_time = GROUP_SEND.replace("1670574414123", "\"1670574414123\"");
    assert_eq!(
        gw.callback("Group.CallbackBeforeSendMsg", &string_time)
            .await
            .outcome,
        "upstream"
    );
    assert_eq!(up.count(), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn strict_commands_rejects_commands_missing_from_the_catalog() {
    let (up, gw) = setup("defaults:\n  strict_commands: true\n").await;
    gw.callback("Custom.CallbackAfterSomething", "{}")
        .await
        .assert_rejected(400, "Custom.CallbackAfterSomething");
    assert_nothing_forwarded(&up, gw).await;
}

#[tokio::test]
async fn commands_missing_from_the_catalog_pass_when_not_strict() {
    let (up, gw) = setup("").await;
    let a = gw
        .callback("Custom.CallbackAfterSomething", r#"{"Anything":1}"#)
        .await;
    assert_eq!((a.status, a.outcome.as_str()), (200, "queued"));
    up.wait_for(1, Duration::from_secs(5)).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn checks_apply_in_spec_order() {
    let (up, gw) = setup("").await;
    // Unknown app and a bad body: the app check comes first.
    gw.post("SdkAppid=1&CallbackCommand=X", "not json")
        .await
        .assert_rejected(403, "SdkAppid");
    // Bad Sign and an oversized body: Sign first.
    let big = "x".repeat(8192);
    gw.post(&signed(now(), "bad"), &big)
        .await
        .assert_rejected(401, "Sign");
    // Oversized and not JSON: size first.
    gw.callback("Group.CallbackBeforeSendMsg", &big)
        .await
        .assert_rejected(413, "larger");
    // Not JSON wins over a command mismatch hidden in a broken document.
    gw.callback(
        "Group.CallbackBeforeSendMsg",
        r#"{"CallbackCommand":"Other","#,
    )
    .await
    .assert_rejected(400, "JSON");
    assert_nothing_forwarded(&up, gw).await;
}
