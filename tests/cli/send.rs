//! `callgate send`: a callback as IM sends it, to an in-process gateway.

use std::time::Duration;

use crate::TOKEN;
use crate::support::*;
use crate::write;

/// The apps `APP` and `SIGNED_APP` (with `TOKEN`), everything to `up`.
fn send_config(up: &Upstream) -> Config {
    Config::catch_all(up).app(APP).signed_app(SIGNED_APP, TOKEN)
}

async fn send_gateway(up: &Upstream) -> Gateway {
    Gateway::start(&send_config(up)).await
}

/// `callgate send` of `command` for `app` to `url`: the arguments every
/// call has.
fn send_args(url: &str, app: u64, command: &str) -> Vec<String> {
    let app = app.to_string();
    let args = [
        "send",
        "--url",
        url,
        "--sdkappid",
        &app,
        "--command",
        command,
    ];
    args.iter().map(|s| s.to_string()).collect()
}

/// Runs `callgate` with `args` then `extra`, `stdin` as its input.
async fn send(args: &[String], extra: &[&str], stdin: Option<&[u8]>) -> Out {
    let mut c = callgate();
    c.args(args).args(extra);
    exec_with(c, stdin).await
}

/// Asserts the answer printed says `status` and `outcome`.
#[track_caller]
fn assert_answered(out: &Out, status: u16, outcome: &str) {
    let (status, outcome) = (
        format!("HTTP {status}"),
        format!("x-callgate-outcome: {outcome}"),
    );
    assert!(out.stdout.contains(&status), "{status}: {out:#?}");
    assert!(out.stdout.contains(&outcome), "{outcome}: {out:#?}");
}

#[tokio::test]
async fn send_delivers_a_decision_and_prints_the_answer() {
    let answer = r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0,"Marker":"from-upstream"}"#;
    let up = Upstream::start(Reply::json(answer)).await;
    let gw = send_gateway(&up).await;
    let base = send_args(gw.im().base(), APP, "Group.CallbackBeforeSendMsg");
    let out = send(&base, &[], None).await;
    out.expect_code(0, "send");
    assert_answered(&out, 200, "upstream");
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
    let gw = send_gateway(&up).await;
    for (command, outcome) in [
        ("Group.CallbackAfterNewMemberJoin", "queued"),
        ("Group.CallbackBeforeCreateGroup", "upstream"),
        // The upstream's plain OK has no `ResultItem`: no answer (SPEC 4.5).
        ("Sns.CallbackPrevFriendAdd", "fallback"),
        ("Push.OfflinePush", "queued"),
        ("ContentCallback.ResultNotify", "queued"),
    ] {
        let out = send(&send_args(gw.im().base(), APP, command), &[], None).await;
        out.expect_code(0, command);
        assert_answered(&out, 200, outcome);
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn send_signs_with_token() {
    let up = Upstream::start(Reply::ok()).await;
    let gw = send_gateway(&up).await;
    let base = send_args(gw.im().base(), SIGNED_APP, "Group.CallbackBeforeSendMsg");

    let out = send(&base, &["--token", TOKEN], None).await;
    out.expect_code(0, "send --token");
    assert_answered(&out, 200, "upstream");
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
    let out = send(&base, &[], None).await;
    assert_answered(&out, 401, "rejected");
    let out = send(&base, &["--token", "wrong-token"], None).await;
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
    let config = send_config(&up).listener(Listener::mtls(&pki));
    let gw = Gateway::start(&config).await;
    let url = format!("https://127.0.0.1:{}/im", gw.addr().port());
    let base = send_args(&url, APP, "Group.CallbackBeforeSendMsg");

    let (cert, key, ca) = (
        pki.path("client.pem"),
        pki.path("client-key.pem"),
        pki.path("ca.pem"),
    );
    let identity = ["--cert", &cert, "--key", &key];
    let out = send(&base, &[&identity[..], &["--ca", &ca]].concat(), None).await;
    out.expect_code(0, "send with a client certificate");
    assert_answered(&out, 200, "upstream");
    let received = up.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(received[0].headers["x-forwarded-proto"], "https");

    // Without the client certificate the handshake fails: a transport failure.
    let out = send(&base, &["--ca", &ca], None).await;
    assert_ne!(out.code(), Some(0), "{out:#?}");
    // Without --ca the dev certificate is not trusted.
    let out = send(&base, &identity, None).await;
    assert_ne!(out.code(), Some(0), "{out:#?}");
    assert_eq!(up.count(), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn send_to_a_closed_port_fails() {
    let addr = closed_port();
    let url = format!("http://{addr}/im");
    let out = send(
        &send_args(&url, APP, "Group.CallbackBeforeSendMsg"),
        &[],
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
    let gw = send_gateway(&up).await;
    let dir = tempfile::tempdir().unwrap();
    // Spacing, key order, escapes and non-ASCII text as written: any
    // re-serialisation would show.
    let file_body = "{ \"CallbackCommand\" : \"Group.CallbackBeforeSendMsg\",\n  \"GroupId\":\"@TGS#2J4SZEAEL\",\"Type\":\"Public\",\"From_Account\":\"alice\",\"Operator_Account\":\"alice\",\"Random\":123456,\"OnlineOnlyFlag\":0,\n  \"MsgBody\":[{\"MsgType\":\"TIMTextElem\",\"MsgContent\":{\"Text\":\"h\u{e9}llo \\u00e9 \u{1f600}\"}}],\"EventTime\":1670574414123 }\n";
    let stdin_body = file_body
        .replace("alice", "bob\\tby stdin")
        .replace("\n", "\r\n");
    let path = write(dir.path(), "body.json", file_body);

    let base = send_args(gw.im().base(), APP, "Group.CallbackBeforeSendMsg");
    let out = send(&base, &["--body", arg(&path)], None).await;
    assert!(
        out.stdout.contains("x-callgate-outcome: upstream"),
        "{out:#?}"
    );
    let out = send(&base, &["--body", "-"], Some(stdin_body.as_bytes())).await;
    assert!(
        out.stdout.contains("x-callgate-outcome: upstream"),
        "{out:#?}"
    );

    let received = up.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(received[0].body, file_body.as_bytes());
    assert_eq!(received[1].body, stdin_body.as_bytes());

    // A body file that does not exist: nothing is sent.
    let absent = dir.path().join("absent.json");
    let out = send(&base, &["--body", arg(&absent)], None).await;
    assert_ne!(out.code(), Some(0), "{out:#?}");
    assert!(out.stderr.contains("absent.json"), "{out:#?}");
    assert_eq!(up.count(), 2);
    gw.shutdown().await;
}
