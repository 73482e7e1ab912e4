//! Answers callgate writes itself, and the friends of a per-friend request.

use std::collections::HashSet;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::verdict::{FriendResult, Verdict};

/// The allow fallback; the same bytes as `respond`'s.
pub const OK_BODY: &str = r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#;
/// The deny answer of the message, partial and plain families; the same
/// bytes as `respond`'s.
pub const DENY_BODY: &str =
    r#"{"ActionStatus":"OK","ErrorInfo":"rejected by gateway","ErrorCode":1}"#;

/// The `ErrorCode` and `ErrorInfo` of the gateway's own deny.
pub const DENY_CODE: i64 = 1;
pub const GATEWAY_INFO: &str = "rejected by gateway";
/// The `ResultCode` of the gateway's own per-friend deny.
pub const FRIEND_DENY_CODE: i64 = 38000;

/// The answer that says `verdict`. The gateway's own allow and deny are
/// the fixed bodies; anything else is
/// `{"ActionStatus":"OK","ErrorCode":..,"ErrorInfo":..}` plus the family's
/// fields, raw fields copied as given.
pub(super) fn answer(verdict: &Verdict) -> Bytes {
    let mut out = Vec::with_capacity(128);
    match verdict {
        Verdict::Allow => return Bytes::from_static(OK_BODY.as_bytes()),
        Verdict::Deny { code, info } if *code == DENY_CODE && info == GATEWAY_INFO => {
            return Bytes::from_static(DENY_BODY.as_bytes());
        }
        Verdict::Deny { code, info } => head(&mut out, *code, info),
        Verdict::Discard { info } => head(&mut out, super::verdict::DISCARD_CODE, info),
        Verdict::Rewrite(r) => {
            head(&mut out, 0, &r.info);
            for (name, value) in [
                ("MsgBody", &r.msg_body),
                ("CloudCustomData", &r.cloud_custom_data),
            ] {
                if let Some(value) = value {
                    key(&mut out, name);
                    out.extend_from_slice(value.as_str().as_bytes());
                }
            }
        }
        Verdict::Partial(r) => {
            head(&mut out, 0, &r.info);
            key(&mut out, r.field.as_str());
            out.push(b'[');
            for (i, account) in r.accounts.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(&mut out, account);
            }
            out.push(b']');
        }
        Verdict::PerFriend(items) => {
            head(&mut out, 0, "");
            key(&mut out, "ResultItem");
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(br#"{"To_Account":"#);
                string(&mut out, &item.account);
                out.extend_from_slice(br#","ResultCode":"#);
                out.extend_from_slice(item.code.to_string().as_bytes());
                out.extend_from_slice(br#","ResultInfo":"#);
                string(&mut out, &item.info);
                out.push(b'}');
            }
            out.push(b']');
        }
    }
    out.push(b'}');
    Bytes::from(out)
}

/// `{"ActionStatus":"OK","ErrorCode":code,"ErrorInfo":info` (object left open).
fn head(out: &mut Vec<u8>, code: i64, info: &str) {
    out.extend_from_slice(br#"{"ActionStatus":"OK","ErrorCode":"#);
    out.extend_from_slice(code.to_string().as_bytes());
    out.extend_from_slice(br#","ErrorInfo":"#);
    string(out, info);
}

/// `,"name":`
fn key(out: &mut Vec<u8>, name: &str) {
    out.push(b',');
    string(out, name);
    out.push(b':');
}

/// A JSON string: quotes, backslashes and control characters escaped.
fn string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(br#"\""#),
            b'\\' => out.extend_from_slice(br"\\"),
            b'\n' => out.extend_from_slice(br"\n"),
            b'\r' => out.extend_from_slice(br"\r"),
            b'\t' => out.extend_from_slice(br"\t"),
            0..0x20 => {
                out.extend_from_slice(br"\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            // UTF-8 bytes, including those of multi-byte characters, as is.
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

#[derive(Deserialize)]
struct FriendRequest<'a> {
    #[serde(rename = "FriendItem", borrow)]
    add: Option<&'a RawValue>,
    #[serde(rename = "ResponseFriendItem", borrow)]
    response: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Friend {
    #[serde(rename = "To_Account")]
    account: String,
}

/// The friends a per-friend request is about, each once, in its order:
/// `FriendItem[].To_Account` (`Sns.CallbackPrevFriendAdd`), else
/// `ResponseFriendItem[].To_Account` (`Sns.CallbackPrevFriendResponse`).
/// Items without a string `To_Account` are skipped; an unreadable body
/// has none.
pub fn request_friends(body: &[u8]) -> Vec<String> {
    let Ok(request) = serde_json::from_slice::<FriendRequest>(body) else {
        return Vec::new();
    };
    let items = friend_items(request.add)
        .or_else(|| friend_items(request.response))
        .unwrap_or_default();
    let mut seen = HashSet::with_capacity(items.len());
    items
        .into_iter()
        .filter_map(|item| serde_json::from_str::<Friend>(item.get()).ok())
        .map(|f| f.account)
        .filter(|a| seen.insert(a.clone()))
        .collect()
}

fn friend_items(raw: Option<&RawValue>) -> Option<Vec<&RawValue>> {
    raw.and_then(|r| serde_json::from_str(r.get()).ok())
}

/// The gateway's per-friend deny: every friend refused with 38000.
pub(super) fn friends_denied(friends: &[String]) -> Verdict {
    Verdict::PerFriend(
        friends
            .iter()
            .map(|account| FriendResult {
                account: account.clone(),
                code: FRIEND_DENY_CODE,
                info: GATEWAY_INFO.to_owned(),
            })
            .collect(),
    )
}
