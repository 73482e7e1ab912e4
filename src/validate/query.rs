//! The callback query string: `SdkAppid`, `CallbackCommand`, and the
//! `RequestTime`/`Sign` pair. Names are matched without regard to case
//! because IM products spell the app id `SdkAppid`, `SDKAppID` or `SdkAppId`.

use std::borrow::Cow;

/// The parameters callgate acts on; everything else is passed through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackQuery<'a> {
    pub sdkappid: u64,
    pub command: Option<Cow<'a, str>>,
    pub request_time: Option<Cow<'a, str>>,
    pub sign: Option<Cow<'a, str>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("missing SdkAppid")]
    MissingAppId,
    #[error("SdkAppid must be decimal digits")]
    BadAppId,
    #[error("duplicate query parameter {0}")]
    Duplicate(&'static str),
}

const SDKAPPID: &str = "SdkAppid";
const COMMAND: &str = "CallbackCommand";
const REQUEST_TIME: &str = "RequestTime";
const SIGN: &str = "Sign";

/// Parses the query string. A duplicated parameter that callgate acts on is
/// refused: two values would let a sender show one to the checks and another
/// to the upstream.
pub fn parse_query(query: &str) -> Result<CallbackQuery<'_>, QueryError> {
    let mut appid: Option<Cow<'_, str>> = None;
    let mut command = None;
    let mut request_time = None;
    let mut sign = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode(name);
        let (slot, canonical) = if name.eq_ignore_ascii_case(SDKAPPID) {
            (&mut appid, SDKAPPID)
        } else if name.eq_ignore_ascii_case(COMMAND) {
            (&mut command, COMMAND)
        } else if name.eq_ignore_ascii_case(REQUEST_TIME) {
            (&mut request_time, REQUEST_TIME)
        } else if name.eq_ignore_ascii_case(SIGN) {
            (&mut sign, SIGN)
        } else {
            continue;
        };
        if slot.replace(decode(value)).is_some() {
            // The app id is checked first (SPEC 4.1 order); a duplicate of it
            // is an app id problem, the others surface in this order too.
            return Err(QueryError::Duplicate(canonical));
        }
    }
    let appid = appid.ok_or(QueryError::MissingAppId)?;
    let sdkappid = parse_decimal(&appid).ok_or(QueryError::BadAppId)?;
    Ok(CallbackQuery {
        sdkappid,
        command: command.filter(|c| !c.is_empty()),
        request_time,
        sign,
    })
}

/// One name or value, decoded as `application/x-www-form-urlencoded`
/// (`+` is a space, `%XX` a byte, invalid UTF-8 replaced), the same rules
/// as `form_urlencoded::parse`. Only the parameters callgate acts on are
/// decoded, and text without `%` or `+` (nearly all of it) is borrowed.
fn decode(raw: &str) -> Cow<'_, str> {
    if !raw.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(raw);
    }
    let spaced = raw.replace('+', " ");
    Cow::Owned(
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

/// Decimal digits only: no sign, no spaces, no `0x`, and it must fit u64.
pub(crate) fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
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
}
