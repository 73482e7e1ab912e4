//! Reading one answer (SPEC 4.2 "counts", 4.5 "what an upstream's answer says").

use super::*;
use RefusedField::{Members, Subscribers};

/// Bodies that count for no family.
#[test]
fn answers_that_do_not_count_in_any_family() {
    let rows: &[(&str, &str)] = &[
        ("4.2 ErrorCode a string", r#"{"ErrorCode":"0"}"#),
        ("4.2 ErrorCode a float", r#"{"ErrorCode":1.5}"#),
        ("4.2 ErrorCode an exponent", r#"{"ErrorCode":1e2}"#),
        ("4.2 ErrorCode null", r#"{"ErrorCode":null}"#),
        (
            "4.2 ErrorCode beyond i64",
            r#"{"ErrorCode":9223372036854775808}"#,
        ),
        ("4.2 no ErrorCode", r#"{"ActionStatus":"OK"}"#),
        ("4.2 array body, only objects count", r#"[1]"#),
        ("4.2 array body read as a struct by serde", r#"[0,""]"#),
        ("4.2 array of an answer", r#"[{"ErrorCode":0}]"#),
        ("4.2 not JSON", "ok"),
        ("4.2 empty body", ""),
        ("4.2 whitespace only", " \n"),
        ("4.2 truncated object", r#"{"ErrorCode":0"#),
        ("4.2 trailing garbage", r#"{"ErrorCode":0} x"#),
        ("4.2 a JSON string", r#""{\"ErrorCode\":0}""#),
        (
            "4.2 duplicate ErrorCode is ambiguous",
            r#"{"ErrorCode":0,"ErrorCode":1}"#,
        ),
    ];
    for (rule, body) in rows {
        for family in FAMILIES {
            assert_eq!(
                parse(family, body.as_bytes()),
                None,
                "{rule} ({}): {body}",
                family.as_str()
            );
        }
    }
}

/// Rows carried over from `upstream::verdict` plus each family's reading.
#[test]
fn what_each_family_reads() {
    use Family::{Message, Partial, PerFriend, Plain};
    let none: Option<Verdict> = None;
    let rows: Vec<(&str, Family, &str, Option<Verdict>)> = vec![
        // ---- plain ----
        (
            "4.5 plain: 0 allows",
            Plain,
            r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#,
            Some(Verdict::Allow),
        ),
        (
            "4.5 plain: non-zero denies",
            Plain,
            r#" {"ErrorCode":1,"MsgBody":[]}"#,
            Some(deny(1, "")),
        ),
        (
            "4.5 plain: any non-zero denies",
            Plain,
            r#"{"ErrorCode":10100,"ErrorInfo":"busy"}"#,
            Some(deny(10100, "busy")),
        ),
        (
            "4.5 plain: 2 is a deny outside the message family",
            Plain,
            r#"{"ErrorCode":2}"#,
            Some(deny(2, "")),
        ),
        (
            "4.5 plain: a negative code denies",
            Plain,
            r#"{"ErrorCode":-1}"#,
            Some(deny(-1, "")),
        ),
        (
            "4.5 plain: replacing fields are not read",
            Plain,
            r#"{"ErrorCode":0,"MsgBody":{}}"#,
            Some(Verdict::Allow),
        ),
        (
            "4.2 whitespace before the object",
            Plain,
            "\r\n\t {\"ErrorCode\":0}",
            Some(Verdict::Allow),
        ),
        (
            "spec silent: ErrorInfo not a string reads as \"\"",
            Plain,
            r#"{"ErrorCode":1,"ErrorInfo":5}"#,
            Some(deny(1, "")),
        ),
        (
            "spec silent: ErrorInfo escapes are decoded",
            Plain,
            r#"{"ErrorCode":1,"ErrorInfo":"a\"b\u00e9"}"#,
            Some(deny(1, "a\"bé")),
        ),
        (
            "spec silent: unknown fields are ignored",
            Plain,
            r#"{"x":[1,{"y":null}],"ErrorCode":0}"#,
            Some(Verdict::Allow),
        ),
        // ---- message ----
        (
            "4.5 message: 0 allows",
            Message,
            r#"{"ErrorCode":0,"ErrorInfo":""}"#,
            Some(Verdict::Allow),
        ),
        (
            "4.5 message: 1 denies",
            Message,
            r#"{"ErrorCode":1,"ErrorInfo":"no"}"#,
            Some(deny(1, "no")),
        ),
        (
            "4.5 message: 2 drops the message silently",
            Message,
            r#"{"ErrorCode":2,"ErrorInfo":"spam"}"#,
            Some(Verdict::Discard {
                info: "spam".into(),
            }),
        ),
        (
            "4.5 message: other non-zero codes deny",
            Message,
            r#"{"ErrorCode":120001}"#,
            Some(deny(120001, "")),
        ),
        (
            "4.5 message: MsgBody in an allowing answer replaces",
            Message,
            r#"{"ErrorCode":0,"MsgBody":[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}]}"#,
            Some(rewrite(
                Some(r#"[{"MsgType":"TIMTextElem","MsgContent":{"Text":"hi"}}]"#),
                None,
                "",
            )),
        ),
        (
            "4.5 message: CloudCustomData replaces",
            Message,
            r#"{"ErrorCode":0,"ErrorInfo":"ok","CloudCustomData":"x\"y"}"#,
            Some(rewrite(None, Some(r#""x\"y""#), "ok")),
        ),
        (
            "4.5 message: both fields",
            Message,
            r#"{"CloudCustomData":"c","ErrorCode":0,"MsgBody":[]}"#,
            Some(rewrite(Some("[]"), Some(r#""c""#), "")),
        ),
        (
            "4.5 message: raw fields kept as given",
            Message,
            r#"{"ErrorCode":0,"MsgBody":[ {"a" : 1} ]}"#,
            Some(rewrite(Some(r#"[ {"a" : 1} ]"#), None, "")),
        ),
        (
            "4.5 message: replacements in a refusing answer are not read",
            Message,
            r#"{"ErrorCode":1,"MsgBody":"bad"}"#,
            Some(deny(1, "")),
        ),
        (
            "malformed message: MsgBody an object",
            Message,
            r#"{"ErrorCode":0,"MsgBody":{}}"#,
            none.clone(),
        ),
        (
            "malformed message: MsgBody a string",
            Message,
            r#"{"ErrorCode":0,"MsgBody":"[]"}"#,
            none.clone(),
        ),
        (
            "malformed message: CloudCustomData a number",
            Message,
            r#"{"ErrorCode":0,"CloudCustomData":5}"#,
            none.clone(),
        ),
        (
            "malformed message: CloudCustomData an object",
            Message,
            r#"{"ErrorCode":0,"MsgBody":[],"CloudCustomData":{}}"#,
            none.clone(),
        ),
        (
            "spec silent: null replacing fields are absent",
            Message,
            r#"{"ErrorCode":0,"MsgBody":null,"CloudCustomData":null}"#,
            Some(Verdict::Allow),
        ),
        // ---- partial ----
        (
            "4.5 partial: 0 with no list allows",
            Partial,
            r#"{"ErrorCode":0}"#,
            Some(Verdict::Allow),
        ),
        (
            "4.5 partial: an empty list allows",
            Partial,
            r#"{"ErrorCode":0,"RefusedMembers_Account":[]}"#,
            Some(Verdict::Allow),
        ),
        (
            "4.5 partial: listed accounts are refused",
            Partial,
            r#"{"ErrorCode":0,"ErrorInfo":"i","RefusedMembers_Account":["a","b"]}"#,
            Some(refused(Members, &["a", "b"], "i")),
        ),
        (
            "4.5 partial: the subscribers' field name",
            Partial,
            r#"{"ErrorCode":0,"RefusedSubscribers_Account":["s"]}"#,
            Some(refused(Subscribers, &["s"], "")),
        ),
        (
            "4.5 partial: non-zero rejects the whole request",
            Partial,
            r#"{"ErrorCode":10100,"RefusedMembers_Account":["a"]}"#,
            Some(deny(10100, "")),
        ),
        (
            "4.5 partial: 2 is a deny",
            Partial,
            r#"{"ErrorCode":2}"#,
            Some(deny(2, "")),
        ),
        (
            "spec silent: both lists given, both refuse",
            Partial,
            r#"{"ErrorCode":0,"RefusedSubscribers_Account":["s"],"RefusedMembers_Account":["m"]}"#,
            Some(refused(Members, &["m", "s"], "")),
        ),
        (
            "spec silent: an empty members list with subscribers",
            Partial,
            r#"{"ErrorCode":0,"RefusedMembers_Account":[],"RefusedSubscribers_Account":["s"]}"#,
            Some(refused(Subscribers, &["s"], "")),
        ),
        (
            "malformed partial: a number in the list",
            Partial,
            r#"{"ErrorCode":0,"RefusedMembers_Account":["a",1]}"#,
            none.clone(),
        ),
        (
            "malformed partial: the list a string",
            Partial,
            r#"{"ErrorCode":0,"RefusedMembers_Account":"a"}"#,
            none.clone(),
        ),
        (
            "malformed partial: the other list malformed",
            Partial,
            r#"{"ErrorCode":0,"RefusedMembers_Account":["a"],"RefusedSubscribers_Account":{}}"#,
            none.clone(),
        ),
        // ---- per-friend ----
        (
            "4.5 per-friend: ResultItem decides per friend",
            PerFriend,
            r#"{"ErrorCode":0,"ResultItem":[{"To_Account":"a","ResultCode":0,"ResultInfo":""},{"To_Account":"b","ResultCode":38001,"ResultInfo":"no"}]}"#,
            Some(friends(&[("a", 0, ""), ("b", 38001, "no")])),
        ),
        (
            "4.5 per-friend: an empty ResultItem counts",
            PerFriend,
            r#"{"ErrorCode":0,"ResultItem":[]}"#,
            Some(friends(&[])),
        ),
        (
            "spec silent: ResultInfo missing or not a string reads as \"\"",
            PerFriend,
            r#"{"ErrorCode":0,"ResultItem":[{"To_Account":"a","ResultCode":1},{"To_Account":"b","ResultCode":0,"ResultInfo":7}]}"#,
            Some(friends(&[("a", 1, ""), ("b", 0, "")])),
        ),
        (
            "4.5 per-friend: non-zero ErrorCode counts as no answer",
            PerFriend,
            r#"{"ErrorCode":1,"ResultItem":[]}"#,
            none.clone(),
        ),
        (
            "4.5 per-friend: no ResultItem counts as no answer",
            PerFriend,
            r#"{"ErrorCode":0}"#,
            none.clone(),
        ),
        (
            "4.5 per-friend: ResultItem null counts as no answer",
            PerFriend,
            r#"{"ErrorCode":0,"ResultItem":null}"#,
            none.clone(),
        ),
        (
            "malformed per-friend: ResultItem not an array",
            PerFriend,
            r#"{"ErrorCode":0,"ResultItem":{"To_Account":"a","ResultCode":0}}"#,
            none.clone(),
        ),
        (
            "malformed per-friend: an item not an object",
            PerFriend,
            r#"{"ErrorCode":0,"ResultItem":["a"]}"#,
            none.clone(),
        ),
        (
            "malformed per-friend: To_Account not a string",
            PerFriend,
            r#"{"ErrorCode":0,"ResultItem":[{"To_Account":5,"ResultCode":0}]}"#,
            none.clone(),
        ),
        (
            "malformed per-friend: To_Account missing",
            PerFriend,
            r#"{"ErrorCode":0,"ResultItem":[{"ResultCode":0}]}"#,
            none.clone(),
        ),
        (
            "malformed per-friend: ResultCode a string",
            PerFriend,
            r#"{"ErrorCode":0,"ResultItem":[{"To_Account":"a","ResultCode":"0"}]}"#,
            none.clone(),
        ),
        (
            "malformed per-friend: ResultCode a float",
            PerFriend,
            r#"{"ErrorCode":0,"ResultItem":[{"To_Account":"a","ResultCode":0.5}]}"#,
            none.clone(),
        ),
        (
            "malformed per-friend: ResultCode missing",
            PerFriend,
            r#"{"ErrorCode":0,"ResultItem":[{"To_Account":"a"}]}"#,
            none,
        ),
    ];
    for (rule, family, body, expected) in rows {
        assert_eq!(parse(family, body.as_bytes()), expected, "{rule}: {body}");
    }
}

#[test]
fn kinds_are_the_metric_words() {
    let rows = [
        ("allow", Verdict::Allow),
        ("rewrite", rewrite(Some("[]"), None, "")),
        ("partial", refused(Members, &["a"], "")),
        ("deny", deny(1, "")),
        (
            "discard",
            Verdict::Discard {
                info: String::new(),
            },
        ),
        (
            "per-friend all zero reduces to allow",
            friends(&[("a", 0, ""), ("b", 0, "")]),
        ),
        ("per-friend empty reduces to allow", friends(&[])),
        (
            "per-friend some refused reduces to partial",
            friends(&[("a", 0, ""), ("b", 38001, "")]),
        ),
        (
            "per-friend all refused reduces to deny",
            friends(&[("a", 1, ""), ("b", 38001, "")]),
        ),
        (
            "per-friend a friend refused by any of its items is refused",
            friends(&[("a", 0, ""), ("a", 38001, "")]),
        ),
    ];
    let expected = [
        "allow", "rewrite", "partial", "deny", "discard", "allow", "allow", "partial", "deny",
        "deny",
    ];
    for ((rule, verdict), word) in rows.iter().zip(expected) {
        assert_eq!(verdict.kind().as_str(), word, "{rule}");
    }
    let words: Vec<_> = VerdictKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(words, ["allow", "rewrite", "partial", "deny", "discard"]);
}

#[test]
fn short_forms_for_the_log() {
    let many: Vec<String> = (0..10).map(|i| format!("u{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let rows = [
        (Verdict::Allow, "allow"),
        (deny(1, "x"), "deny:1"),
        (deny(10100, ""), "deny:10100"),
        (Verdict::Discard { info: "x".into() }, "discard"),
        (rewrite(Some("[]"), None, ""), "rewrite(MsgBody)"),
        (
            rewrite(None, Some(r#""c""#), ""),
            "rewrite(CloudCustomData)",
        ),
        (
            rewrite(Some("[]"), Some(r#""c""#), ""),
            "rewrite(MsgBody,CloudCustomData)",
        ),
        (refused(Members, &["a", "b", "a"], ""), "partial[a,b]"),
        (
            friends(&[("a", 0, ""), ("b", 38001, ""), ("b", 1, "")]),
            "per-friend[a=0,b=38001]",
        ),
        (
            refused(Members, &many, ""),
            "partial[u0,u1,u2,u3,u4,u5,u6,u7,+2]",
        ),
    ];
    for (verdict, text) in rows {
        assert_eq!(verdict.to_string(), text);
    }
}
