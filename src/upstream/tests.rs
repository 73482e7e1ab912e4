//! Unit tests of `upstream`.

use super::*;

fn answer(status: u16, body: &str) -> Answer {
    Answer {
        status: StatusCode::from_u16(status).unwrap(),
        body: Bytes::from(body.to_owned()),
    }
}

#[test]
fn only_200_objects_with_integer_codes_count() {
    assert_eq!(
        error_code(&answer(
            200,
            r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#
        )),
        Some(0)
    );
    assert_eq!(
        error_code(&answer(200, r#" {"ErrorCode":1,"MsgBody":[]}"#)),
        Some(1)
    );
    assert_eq!(
        error_code(&answer(200, r#"{"ErrorCode":10100}"#)),
        Some(10100)
    );
    assert_eq!(error_code(&answer(500, r#"{"ErrorCode":0}"#)), None);
    assert_eq!(error_code(&answer(200, r#"{"ErrorCode":"0"}"#)), None);
    assert_eq!(error_code(&answer(200, r#"{"ErrorCode":1.5}"#)), None);
    assert_eq!(error_code(&answer(200, r#"{"ActionStatus":"OK"}"#)), None);
    assert_eq!(error_code(&answer(200, r#"[1]"#)), None);
    assert_eq!(error_code(&answer(200, "ok")), None);
    assert_eq!(error_code(&answer(200, "")), None);
}

#[test]
fn target_keeps_the_upstream_query() {
    let mk = |url: &str| {
        let (url, credentials) = crate::config::UpstreamUrl::parse(url).unwrap();
        UpstreamClient::new(&Upstream {
            name: "u".into(),
            url,
            credentials,
            timeout: None,
            ca: None,
            client_cert: None,
            client_key: None,
        })
        .unwrap()
    };
    assert_eq!(
        mk("http://127.0.0.1:9/im").target("SdkAppid=1"),
        "http://127.0.0.1:9/im?SdkAppid=1"
    );
    assert_eq!(
        mk("http://127.0.0.1:9/im?k=v").target("SdkAppid=1"),
        "http://127.0.0.1:9/im?k=v&SdkAppid=1"
    );
    assert_eq!(mk("http://127.0.0.1:9").target(""), "http://127.0.0.1:9/");
    // Credentials leave the URL for a header built once, marked sensitive.
    let c = mk("http://us%65r:pw@127.0.0.1:9/im");
    assert_eq!(c.target(""), "http://127.0.0.1:9/im");
    assert_eq!(c.host.as_ref().unwrap(), "127.0.0.1:9");
    let auth = c.authorization.as_ref().unwrap();
    assert_eq!(auth, "Basic dXNlcjpwdw==");
    assert!(auth.is_sensitive());
    assert!(mk("http://127.0.0.1:9/im").authorization.is_none());
}

#[test]
fn forwarded_for_matches_display() {
    for ip in [
        "0.0.0.0",
        "127.0.0.1",
        "10.20.100.255",
        "1.2.3.4",
        "::1",
        "fe80::1:2",
    ] {
        let ip: IpAddr = ip.parse().unwrap();
        assert_eq!(forwarded_for(ip).to_str().unwrap(), ip.to_string());
    }
}
