//! Unit tests of `query`.

use super::*;
use proptest::prelude::*;

#[test]
fn reads_the_parameters_in_any_case() {
    let q = parse_query("sdkappid=1400000001&CallbackCommand=Group.CallbackAfterNewMemberJoin&contenttype=json&ClientIP=1.2.3.4&OptPlatform=Web").unwrap();
    assert_eq!(q.sdkappid, 1400000001);
    assert_eq!(
        q.command.as_deref(),
        Some("Group.CallbackAfterNewMemberJoin")
    );
    assert!(q.sign.is_none() && q.request_time.is_none());
    for spelling in ["SdkAppid", "SDKAppID", "SdkAppId"] {
        assert_eq!(parse_query(&format!("{spelling}=7")).unwrap().sdkappid, 7);
    }
    let q = parse_query("SdkAppid=1&RequestTime=1669872112&Sign=ab%63").unwrap();
    assert_eq!(q.request_time.as_deref(), Some("1669872112"));
    assert_eq!(q.sign.as_deref(), Some("abc"));
}

#[test]
fn refuses_bad_app_ids_and_duplicates() {
    assert_eq!(parse_query(""), Err(QueryError::MissingAppId));
    assert_eq!(
        parse_query("CallbackCommand=x"),
        Err(QueryError::MissingAppId)
    );
    for bad in [
        "",
        "abc",
        "-1",
        "+1",
        "1.0",
        " 1",
        "0x10",
        "99999999999999999999999",
    ] {
        assert_eq!(
            parse_query(&format!("SdkAppid={bad}")),
            Err(QueryError::BadAppId),
            "{bad:?}"
        );
    }
    assert_eq!(
        parse_query("SdkAppid=1&sdkappid=1"),
        Err(QueryError::Duplicate("SdkAppid"))
    );
    assert_eq!(
        parse_query("SdkAppid=1&Sign=a&Sign=b"),
        Err(QueryError::Duplicate("Sign"))
    );
    // An empty command is the same as none.
    assert_eq!(
        parse_query("SdkAppid=1&CallbackCommand=").unwrap().command,
        None
    );
}

/// The parse of `form_urlencoded`, which `parse_query` must equal.
fn reference(query: &str) -> Result<CallbackQuery<'static>, QueryError> {
    let mut slots: [Option<String>; 4] = Default::default();
    let names = [SDKAPPID, COMMAND, REQUEST_TIME, SIGN];
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let Some(i) = names.iter().position(|n| name.eq_ignore_ascii_case(n)) else {
            continue;
        };
        if slots[i].replace(value.into_owned()).is_some() {
            return Err(QueryError::Duplicate(names[i]));
        }
    }
    let [appid, command, request_time, sign] = slots;
    let appid = appid.ok_or(QueryError::MissingAppId)?;
    Ok(CallbackQuery {
        sdkappid: parse_decimal(&appid).ok_or(QueryError::BadAppId)?,
        command: command.filter(|c| !c.is_empty()).map(Cow::Owned),
        request_time: request_time.map(Cow::Owned),
        sign: sign.map(Cow::Owned),
    })
}

proptest! {
    #[test]
    fn decodes_as_form_urlencoded_does(
        pairs in proptest::collection::vec(
            (
                "SdkAppid|sdkAPPID|Sd%6bAppid|Sdk+Appid|CallbackCommand|Callback%43ommand|RequestTime|Sign|x|",
                "[=%+a-f0-9A-F.]{0,8}",
                "[=&]{1,2}",
            ),
            0..6,
        )
    ) {
        let q: String = pairs.iter().map(|(n, v, sep)| format!("{n}={v}{sep}")).collect();
        prop_assert_eq!(parse_query(&q), reference(&q), "{}", q);
    }

    #[test]
    fn never_panics(q in ".{0,200}") {
        let _ = parse_query(&q);
    }

    #[test]
    fn any_u64_app_id_is_accepted(id in any::<u64>(), extra in "[a-z]{1,8}=[a-z0-9%]{0,8}") {
        let text = format!("{extra}&SdkAppid={id}&{extra}x=1");
        let q = parse_query(&text).unwrap();
        prop_assert_eq!(q.sdkappid, id);
    }
}
