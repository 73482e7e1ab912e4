//! The gateway's own answers (SPEC 4.2 fallback, 4.5 deny answers and
//! "which fallback").

use super::*;
use crate::catalog::lookup;

#[test]
fn fallback_answers_by_family() {
    let request =
        br#"{"FriendItem":[{"To_Account":"a"},{"To_Account":"b"},{"To_Account":"a"},{"x":1}]}"#;
    let rows: &[(&str, Family, OnTimeout, &str)] = &[
        (
            "4.2 allow fallback (message)",
            Family::Message,
            OnTimeout::Allow,
            OK_BODY,
        ),
        (
            "4.2 allow fallback (partial)",
            Family::Partial,
            OnTimeout::Allow,
            OK_BODY,
        ),
        (
            "4.2 allow fallback (plain)",
            Family::Plain,
            OnTimeout::Allow,
            OK_BODY,
        ),
        (
            "4.2 allow fallback (per-friend)",
            Family::PerFriend,
            OnTimeout::Allow,
            OK_BODY,
        ),
        (
            "4.5 message deny answer: ErrorCode 1",
            Family::Message,
            OnTimeout::Deny,
            DENY_BODY,
        ),
        (
            "4.5 partial deny answer: ErrorCode 1",
            Family::Partial,
            OnTimeout::Deny,
            DENY_BODY,
        ),
        (
            "4.5 plain deny answer: ErrorCode 1",
            Family::Plain,
            OnTimeout::Deny,
            DENY_BODY,
        ),
        (
            "4.5 per-friend deny answer: ErrorCode 0, 38000 for every friend of the request, each once",
            Family::PerFriend,
            OnTimeout::Deny,
            r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","ResultItem":[{"To_Account":"a","ResultCode":38000,"ResultInfo":"rejected by gateway"},{"To_Account":"b","ResultCode":38000,"ResultInfo":"rejected by gateway"}]}"#,
        ),
    ];
    for (rule, family, on_timeout, body) in rows {
        assert_eq!(
            fallback_answer(*family, *on_timeout, request),
            body.as_bytes(),
            "{rule}"
        );
    }
}

#[test]
fn fixed_bodies_are_spec_4_2_s_to_the_byte() {
    assert_eq!(
        OK_BODY,
        r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#
    );
    assert_eq!(
        DENY_BODY,
        r#"{"ActionStatus":"OK","ErrorInfo":"rejected by gateway","ErrorCode":1}"#
    );
}

#[test]
fn request_friends_of_both_commands() {
    let rows: &[(&str, &str, &[&str])] = &[
        (
            "Sns.CallbackPrevFriendAdd: FriendItem",
            r#"{"FriendItem":[{"To_Account":"x","Remark":"r"},{"To_Account":"y"}]}"#,
            &["x", "y"],
        ),
        (
            "Sns.CallbackPrevFriendResponse: ResponseFriendItem",
            r#"{"ResponseFriendItem":[{"To_Account":"y"},{"To_Account":"x"}]}"#,
            &["y", "x"],
        ),
        (
            "each friend once",
            r#"{"FriendItem":[{"To_Account":"x"},{"To_Account":"x"}]}"#,
            &["x"],
        ),
        (
            "items without a string To_Account are skipped",
            r#"{"FriendItem":[1,{"To_Account":2},{"To_Account":"z"}]}"#,
            &["z"],
        ),
        (
            "FriendItem not an array: ResponseFriendItem",
            r#"{"FriendItem":{},"ResponseFriendItem":[{"To_Account":"r"}]}"#,
            &["r"],
        ),
        ("not an object", r#"[{"To_Account":"x"}]"#, &[]),
        ("not JSON", "{", &[]),
    ];
    for (rule, body, expected) in rows {
        assert_eq!(request_friends(body.as_bytes()), *expected, "{rule}");
    }
}

#[test]
fn which_fallback() {
    let gift = lookup("Live.CallbackBeforeSendGift");
    let group = lookup("Group.CallbackBeforeSendMsg");
    let rows = [
        (
            "4.5 the route's on_timeout first",
            Some(OnTimeout::Allow),
            gift,
            OnTimeout::Allow,
            OnTimeout::Allow,
        ),
        (
            "4.5 the route's on_timeout first (deny)",
            Some(OnTimeout::Deny),
            group,
            OnTimeout::Allow,
            OnTimeout::Deny,
        ),
        (
            "4.5 else deny for a command IM fails closed on",
            None,
            gift,
            OnTimeout::Allow,
            OnTimeout::Deny,
        ),
        (
            "4.5 else defaults.on_timeout",
            None,
            group,
            OnTimeout::Allow,
            OnTimeout::Allow,
        ),
        (
            "4.5 else defaults.on_timeout (deny)",
            None,
            group,
            OnTimeout::Deny,
            OnTimeout::Deny,
        ),
        (
            "4.5 an uncatalogued command: defaults.on_timeout",
            None,
            None,
            OnTimeout::Allow,
            OnTimeout::Allow,
        ),
    ];
    for (rule, route, command, default, expected) in rows {
        assert_eq!(fallback_for(route, command, default), expected, "{rule}");
    }
}
