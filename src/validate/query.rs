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
mod tests;
