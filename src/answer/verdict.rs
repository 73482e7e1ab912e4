//! One upstream answer, read once into what it says (SPEC 4.2, 4.5).
//!
//! Each family reads only the fields it acts on, with borrowed and raw
//! fields: no JSON tree is built, and a replacing field is kept as the
//! upstream wrote it.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::catalog::Family;

/// The message family's "drop silently" code.
pub const DISCARD_CODE: i64 = 2;

/// A JSON value's text exactly as an upstream wrote it; equal when the
/// texts are equal.
#[derive(Clone, Debug)]
pub struct RawJson(Box<RawValue>);

impl RawJson {
    /// `text` when it is one JSON value.
    pub fn parse(text: &str) -> Option<Self> {
        RawValue::from_string(text.to_owned()).ok().map(RawJson)
    }

    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    fn from_raw(raw: &RawValue) -> Self {
        RawJson(raw.to_owned())
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for RawJson {}

/// An allowing message answer that replaces parts of the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewrite {
    /// `MsgBody`, a JSON array.
    pub msg_body: Option<RawJson>,
    /// `CloudCustomData`, a JSON string (its quotes and escapes included).
    pub cloud_custom_data: Option<RawJson>,
    pub info: String,
}

/// The name a partial rejection's list goes by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusedField {
    Members,
    Subscribers,
}

impl RefusedField {
    pub const fn as_str(self) -> &'static str {
        match self {
            RefusedField::Members => "RefusedMembers_Account",
            RefusedField::Subscribers => "RefusedSubscribers_Account",
        }
    }
}

/// An allowing partial answer that refuses some accounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// The field the list came under.
    pub field: RefusedField,
    /// As given (never empty: an empty list allows).
    pub accounts: Vec<String>,
    pub info: String,
}

/// One `ResultItem`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FriendResult {
    pub account: String,
    /// 0 allows the friend, anything else refuses it.
    pub code: i64,
    pub info: String,
}

/// What one counting answer says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// `ErrorCode` 0, nothing replaced or refused.
    Allow,
    /// Message family: `ErrorCode` 0 with `MsgBody` and/or `CloudCustomData`.
    Rewrite(Rewrite),
    /// Partial family: `ErrorCode` 0 with a non-empty refused list.
    Partial(Refused),
    /// Per-friend family: the `ResultItem` list, as given.
    PerFriend(Vec<FriendResult>),
    /// A whole-request refusal.
    Deny { code: i64, info: String },
    /// Message family, `ErrorCode` 2: the message is dropped silently.
    Discard { info: String },
}

/// The metric word for a verdict or a combined answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VerdictKind {
    Allow,
    Rewrite,
    Partial,
    Deny,
    Discard,
}

impl VerdictKind {
    pub const ALL: [VerdictKind; 5] = [
        VerdictKind::Allow,
        VerdictKind::Rewrite,
        VerdictKind::Partial,
        VerdictKind::Deny,
        VerdictKind::Discard,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            VerdictKind::Allow => "allow",
            VerdictKind::Rewrite => "rewrite",
            VerdictKind::Partial => "partial",
            VerdictKind::Deny => "deny",
            VerdictKind::Discard => "discard",
        }
    }
}

impl Verdict {
    pub fn kind(&self) -> VerdictKind {
        match self {
            Verdict::Allow => VerdictKind::Allow,
            Verdict::Rewrite(_) => VerdictKind::Rewrite,
            Verdict::Partial(_) => VerdictKind::Partial,
            Verdict::Deny { .. } => VerdictKind::Deny,
            Verdict::Discard { .. } => VerdictKind::Discard,
            Verdict::PerFriend(items) => {
                let codes = per_account(items);
                let refused = codes.iter().filter(|(_, c, _)| *c != 0).count();
                match refused {
                    0 => VerdictKind::Allow,
                    n if n == codes.len() => VerdictKind::Deny,
                    _ => VerdictKind::Partial,
                }
            }
        }
    }

    /// Refuses the whole request (wins at once outside the per-friend family).
    pub fn refuses_whole(&self) -> bool {
        matches!(self, Verdict::Deny { .. } | Verdict::Discard { .. })
    }
}

/// Each account of a `ResultItem` list once, in order, with its first
/// non-zero code (and that item's info), else 0: a friend refused by any
/// item of an answer is refused by that answer.
pub(super) fn per_account(items: &[FriendResult]) -> Vec<(&str, i64, &str)> {
    let mut out: Vec<(&str, i64, &str)> = Vec::with_capacity(items.len());
    let mut at: HashMap<&str, usize> = HashMap::with_capacity(items.len());
    for item in items {
        match at.get(item.account.as_str()) {
            Some(&i) => {
                if let Some(slot) = out.get_mut(i)
                    && slot.1 == 0
                    && item.code != 0
                {
                    *slot = (&item.account, item.code, &item.info);
                }
            }
            None => {
                at.insert(&item.account, out.len());
                out.push((&item.account, item.code, &item.info));
            }
        }
    }
    out
}

/// Reads an HTTP-200 answer body as `family` reads it; `None` when it does
/// not count (not a JSON object, `ErrorCode` not an integer, or a field the
/// family acts on malformed).
pub fn parse(family: Family, body: &[u8]) -> Option<Verdict> {
    // serde would also read a struct from a JSON array: only objects count.
    let first = body
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))?;
    if *first != b'{' {
        return None;
    }
    match family {
        Family::Plain => plain(body),
        Family::Message => message(body),
        Family::Partial => partial(body),
        Family::PerFriend => per_friend(body),
    }
}

#[derive(Deserialize)]
struct PlainAnswer<'a> {
    #[serde(rename = "ErrorCode")]
    code: i64,
    #[serde(rename = "ErrorInfo", borrow)]
    info: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct MessageAnswer<'a> {
    #[serde(rename = "ErrorCode")]
    code: i64,
    #[serde(rename = "ErrorInfo", borrow)]
    info: Option<&'a RawValue>,
    #[serde(rename = "MsgBody", borrow)]
    msg_body: Option<&'a RawValue>,
    #[serde(rename = "CloudCustomData", borrow)]
    cloud_custom_data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct PartialAnswer<'a> {
    #[serde(rename = "ErrorCode")]
    code: i64,
    #[serde(rename = "ErrorInfo", borrow)]
    info: Option<&'a RawValue>,
    #[serde(rename = "RefusedMembers_Account", borrow)]
    members: Option<&'a RawValue>,
    #[serde(rename = "RefusedSubscribers_Account", borrow)]
    subscribers: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct PerFriendAnswer<'a> {
    #[serde(rename = "ErrorCode")]
    code: i64,
    #[serde(rename = "ResultItem", borrow)]
    items: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Item<'a> {
    #[serde(rename = "To_Account")]
    account: String,
    #[serde(rename = "ResultCode")]
    code: i64,
    #[serde(rename = "ResultInfo", borrow)]
    info: Option<&'a RawValue>,
}

/// `ErrorInfo` and `ResultInfo` are informative only: one that is not a
/// string reads as "" rather than making the answer not count.
fn text(raw: Option<&RawValue>) -> String {
    raw.and_then(|r| serde_json::from_str::<String>(r.get()).ok())
        .unwrap_or_default()
}

/// The whole-request refusal a non-zero code says.
fn refusal(code: i64, info: Option<&RawValue>, discards: bool) -> Option<Verdict> {
    let info = || text(info);
    match code {
        0 => None,
        DISCARD_CODE if discards => Some(Verdict::Discard { info: info() }),
        code => Some(Verdict::Deny { code, info: info() }),
    }
}

fn plain(body: &[u8]) -> Option<Verdict> {
    let a: PlainAnswer = serde_json::from_slice(body).ok()?;
    Some(refusal(a.code, a.info, false).unwrap_or(Verdict::Allow))
}

/// A replacing field: `Some(None)` when absent or null, `None` when it is
/// not of the JSON type whose text starts with `open`.
fn replacing(raw: Option<&RawValue>, open: u8) -> Option<Option<RawJson>> {
    match raw {
        None => Some(None),
        Some(r) if r.get().as_bytes().first() == Some(&open) => Some(Some(RawJson::from_raw(r))),
        Some(_) => None,
    }
}

fn message(body: &[u8]) -> Option<Verdict> {
    let a: MessageAnswer = serde_json::from_slice(body).ok()?;
    // IM applies replacements only with code 0, so only then are they read.
    if let Some(refusal) = refusal(a.code, a.info, true) {
        return Some(refusal);
    }
    let msg_body = replacing(a.msg_body, b'[')?;
    let cloud_custom_data = replacing(a.cloud_custom_data, b'"')?;
    if msg_body.is_none() && cloud_custom_data.is_none() {
        return Some(Verdict::Allow);
    }
    Some(Verdict::Rewrite(Rewrite {
        msg_body,
        cloud_custom_data,
        info: text(a.info),
    }))
}

/// A refused list: empty when absent or null, `None` unless an array of
/// strings.
fn accounts(raw: Option<&RawValue>) -> Option<Vec<String>> {
    match raw {
        None => Some(Vec::new()),
        Some(r) => serde_json::from_str(r.get()).ok(),
    }
}

fn partial(body: &[u8]) -> Option<Verdict> {
    let a: PartialAnswer = serde_json::from_slice(body).ok()?;
    if let Some(refusal) = refusal(a.code, a.info, false) {
        return Some(refusal);
    }
    let mut members = accounts(a.members)?;
    let subscribers = accounts(a.subscribers)?;
    // Both lists given: which one IM reads is not documented, so both
    // refuse, under the name SPEC 4.5 gives for both commands.
    let field = if members.is_empty() && !subscribers.is_empty() {
        RefusedField::Subscribers
    } else {
        RefusedField::Members
    };
    members.extend(subscribers);
    if members.is_empty() {
        return Some(Verdict::Allow);
    }
    Some(Verdict::Partial(Refused {
        field,
        accounts: members,
        info: text(a.info),
    }))
}

fn per_friend(body: &[u8]) -> Option<Verdict> {
    let a: PerFriendAnswer = serde_json::from_slice(body).ok()?;
    if a.code != 0 {
        return None;
    }
    let items: Vec<Item> = serde_json::from_str(a.items?.get()).ok()?;
    Some(Verdict::PerFriend(
        items
            .into_iter()
            .map(|i| FriendResult {
                account: i.account,
                code: i.code,
                info: text(i.info),
            })
            .collect(),
    ))
}

/// At most this many accounts are shown in a verdict's short form, so one
/// log line stays short whatever the lists hold.
const SHOWN: usize = 8;

/// The short form for log lines: `allow`, `deny:1`, `discard`,
/// `rewrite(MsgBody)`, `partial[a,b]`, `per-friend[a=0,b=38001]`.
impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Allow => f.write_str("allow"),
            Verdict::Deny { code, .. } => write!(f, "deny:{code}"),
            Verdict::Discard { .. } => f.write_str("discard"),
            Verdict::Rewrite(r) => {
                let fields: Vec<&str> = [
                    r.msg_body.as_ref().map(|_| "MsgBody"),
                    r.cloud_custom_data.as_ref().map(|_| "CloudCustomData"),
                ]
                .into_iter()
                .flatten()
                .collect();
                write!(f, "rewrite({})", fields.join(","))
            }
            Verdict::Partial(r) => {
                let mut seen = HashSet::new();
                let unique: Vec<&str> = r
                    .accounts
                    .iter()
                    .map(String::as_str)
                    .filter(|a| seen.insert(*a))
                    .collect();
                list(f, "partial", unique.iter().map(|a| a.to_string()))
            }
            Verdict::PerFriend(items) => list(
                f,
                "per-friend",
                per_account(items)
                    .into_iter()
                    .map(|(a, c, _)| format!("{a}={c}")),
            ),
        }
    }
}

fn list(
    f: &mut fmt::Formatter<'_>,
    name: &str,
    items: impl ExactSizeIterator<Item = String>,
) -> fmt::Result {
    let total = items.len();
    let shown: Vec<String> = items.take(SHOWN).collect();
    write!(f, "{name}[{}", shown.join(","))?;
    if total > SHOWN {
        write!(f, ",+{}", total - SHOWN)?;
    }
    f.write_str("]")
}
