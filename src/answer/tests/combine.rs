//! Combining answers: SPEC 4.5's `strictest` column and 4.2's
//! byte-for-byte vs merged rule (the deadline rows are in `deadline.rs`).

use super::*;
use Family::{Message, Partial, PerFriend, Plain};
use OnTimeout::{Allow, Deny};

pub(super) enum Expect {
    /// Upstream index's answer byte for byte: (index, kind, conflicts).
    Upstream(usize, &'static str, usize),
    /// A written answer: (exact body, kind, conflicts).
    Merged(&'static str, &'static str, usize),
    Fallback,
}

pub(super) struct Case {
    rule: &'static str,
    family: Family,
    counting: usize,
    /// In arrival order: (route index, answer body; `None` a failure).
    /// A body that does not count is a failure too.
    arrivals: Vec<(usize, Option<&'static str>)>,
    /// How many arrivals make `add` say Decided (0: none does; the rest
    /// are the deadline's).
    decided_after: usize,
    fallback: OnTimeout,
    request: &'static str,
    expect: Expect,
}

pub(super) const REQ_ADD: &str = r#"{"CallbackCommand":"Sns.CallbackPrevFriendAdd","From_Account":"me","FriendItem":[{"To_Account":"a"},{"To_Account":"b"},{"To_Account":"c"}]}"#;
const REQ_RESPONSE: &str = r#"{"CallbackCommand":"Sns.CallbackPrevFriendResponse","ResponseFriendItem":[{"To_Account":"c"},{"To_Account":"a"}]}"#;

pub(super) const OK: &str = r#"{"ErrorCode":0}"#;
pub(super) const OK_INFO: &str = r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"fine"}"#;
pub(super) const DENY1: &str = r#"{"ErrorCode":1,"ErrorInfo":"no"}"#;

pub(super) fn case(
    rule: &'static str,
    family: Family,
    counting: usize,
    arrivals: Vec<(usize, Option<&'static str>)>,
    decided_after: usize,
    fallback: OnTimeout,
    expect: Expect,
) -> Case {
    Case {
        rule,
        family,
        counting,
        arrivals,
        decided_after,
        fallback,
        request: REQ_ADD,
        expect,
    }
}

fn family_cases() -> Vec<Case> {
    use Expect::{Merged, Upstream};
    let mut cases = vec![
        // ---- message ----
        case(
            "4.5 message: the first non-zero answer to arrive wins at once",
            Message,
            3,
            vec![
                (1, Some(r#"{"ErrorCode":0,"MsgBody":[]}"#)),
                (2, Some(DENY1)),
                (0, Some(r#"{"ErrorCode":120001}"#)),
            ],
            2,
            Allow,
            Upstream(2, "deny", 0),
        ),
        case(
            "4.5 message: 2 drops silently, and wins at once",
            Message,
            2,
            vec![(1, Some(r#"{"ErrorCode":2}"#)), (0, Some(DENY1))],
            1,
            Allow,
            Upstream(1, "discard", 0),
        ),
        case(
            "4.5 message: all allow, each replacing field from the first upstream in route order that carries it",
            Message,
            3,
            vec![
                (
                    2,
                    Some(r#"{"ErrorCode":0,"MsgBody":[3],"CloudCustomData":"c3"}"#),
                ),
                (
                    1,
                    Some(r#"{"ErrorCode":0,"ErrorInfo":"one","CloudCustomData":"c1"}"#),
                ),
                (
                    0,
                    Some(r#"{"ErrorCode":0,"ErrorInfo":"zero","MsgBody":[ 0 ]}"#),
                ),
            ],
            3,
            Allow,
            Merged(
                r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"zero","MsgBody":[ 0 ],"CloudCustomData":"c1"}"#,
                "rewrite",
                2,
            ),
        ),
        case(
            "4.5 message: a different value from a later upstream is a conflict, counted, not used",
            Message,
            2,
            vec![
                (1, Some(r#"{"ErrorCode":0,"MsgBody":[2]}"#)),
                (0, Some(r#"{"ErrorCode":0,"MsgBody":[1]}"#)),
            ],
            2,
            Allow,
            Upstream(0, "rewrite", 1),
        ),
        case(
            "4.5 message: the same value later is no conflict",
            Message,
            2,
            vec![
                (0, Some(r#"{"ErrorCode":0,"MsgBody":[1]}"#)),
                (1, Some(r#"{"ErrorCode":0,"MsgBody":[1]}"#)),
            ],
            2,
            Allow,
            Upstream(0, "rewrite", 0),
        ),
        case(
            "4.2 message: one rewrite among allows is that upstream's answer unchanged",
            Message,
            3,
            vec![
                (0, Some(OK)),
                (2, Some(OK)),
                (1, Some(r#"{"ErrorCode":0,"CloudCustomData":"x"}"#)),
            ],
            3,
            Allow,
            Upstream(1, "rewrite", 0),
        ),
        case(
            "4.5 message: all allow with nothing replaced is the first upstream's answer",
            Message,
            2,
            vec![(1, Some(OK)), (0, Some(OK_INFO))],
            2,
            Allow,
            Upstream(0, "allow", 0),
        ),
        // ---- partial ----
        case(
            "4.5 partial: a non-zero answer wins at once",
            Partial,
            3,
            vec![
                (0, Some(r#"{"ErrorCode":0,"RefusedMembers_Account":["a"]}"#)),
                (2, Some(r#"{"ErrorCode":10100}"#)),
            ],
            2,
            Allow,
            Upstream(2, "deny", 0),
        ),
        case(
            "4.5 partial: all allow, lists united in route order, each account once, under the first list's name",
            Partial,
            3,
            vec![
                (
                    2,
                    Some(r#"{"ErrorCode":0,"RefusedMembers_Account":["d","a"]}"#),
                ),
                (
                    0,
                    Some(
                        r#"{"ErrorCode":0,"ErrorInfo":"z","RefusedSubscribers_Account":["b","a","b"]}"#,
                    ),
                ),
                (1, Some(r#"{"ErrorCode":0,"RefusedMembers_Account":["c"]}"#)),
            ],
            3,
            Allow,
            Merged(
                r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"z","RefusedSubscribers_Account":["b","a","c","d"]}"#,
                "partial",
                0,
            ),
        ),
        case(
            "4.5 partial: the first list's name, not the first upstream's",
            Partial,
            3,
            vec![
                (0, Some(OK_INFO)),
                (
                    1,
                    Some(r#"{"ErrorCode":0,"ErrorInfo":"one","RefusedMembers_Account":["x"]}"#),
                ),
                (
                    2,
                    Some(r#"{"ErrorCode":0,"RefusedSubscribers_Account":["y"]}"#),
                ),
            ],
            3,
            Allow,
            Merged(
                r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"one","RefusedMembers_Account":["x","y"]}"#,
                "partial",
                0,
            ),
        ),
        case(
            "4.2 partial: one list whose union is itself is that upstream's answer unchanged",
            Partial,
            3,
            vec![
                (0, Some(OK)),
                (
                    1,
                    Some(r#"{"ErrorCode":0,"RefusedMembers_Account":["x","y"]}"#),
                ),
                (2, Some(r#"{"ErrorCode":0,"RefusedMembers_Account":["y"]}"#)),
            ],
            3,
            Allow,
            Upstream(1, "partial", 0),
        ),
        case(
            "4.5 partial: all allow with no list is the first upstream's answer",
            Partial,
            2,
            vec![
                (1, Some(OK)),
                (0, Some(r#"{"ErrorCode":0,"RefusedMembers_Account":[]}"#)),
            ],
            2,
            Allow,
            Upstream(0, "allow", 0),
        ),
        // ---- per-friend ----
        case(
            "4.5 per-friend: one ResultItem per friend of the request, in its order; the first non-zero in route order, else 0",
            PerFriend,
            2,
            vec![
                (
                    1,
                    Some(
                        r#"{"ErrorCode":0,"ResultItem":[{"To_Account":"c","ResultCode":38003,"ResultInfo":"c1"},{"To_Account":"a","ResultCode":38001,"ResultInfo":"a1"}]}"#,
                    ),
                ),
                (
                    0,
                    Some(
                        r#"{"ErrorCode":0,"ResultItem":[{"To_Account":"b","ResultCode":0,"ResultInfo":"ok"},{"To_Account":"c","ResultCode":38002,"ResultInfo":"c0"},{"To_Account":"zz","ResultCode":1,"ResultInfo":""}]}"#,
                    ),
                ),
            ],
            2,
            Allow,
            Merged(
                r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","ResultItem":[{"To_Account":"a","ResultCode":38001,"ResultInfo":"a1"},{"To_Account":"b","ResultCode":0,"ResultInfo":""},{"To_Account":"c","ResultCode":38002,"ResultInfo":"c0"}]}"#,
                "partial",
                0,
            ),
        ),
        case(
            "4.5 per-friend: an answer that lacks a friend says 0 for it; no answer decides early",
            PerFriend,
            2,
            vec![
                (
                    0,
                    Some(
                        r#"{"ErrorCode":0,"ResultItem":[{"To_Account":"a","ResultCode":38001,"ResultInfo":"x"},{"To_Account":"b","ResultCode":38001,"ResultInfo":"x"},{"To_Account":"c","ResultCode":38001,"ResultInfo":"x"}]}"#,
                    ),
                ),
                (1, Some(r#"{"ErrorCode":0,"ResultItem":[]}"#)),
            ],
            2,
            Allow,
            Upstream(0, "deny", 0),
        ),
        case(
            "4.5 per-friend: a non-zero ErrorCode or no ResultItem counts as no answer (the fallback)",
            PerFriend,
            3,
            vec![
                (
                    0,
                    Some(r#"{"ErrorCode":1,"ResultItem":[{"To_Account":"a","ResultCode":0}]}"#),
                ),
                (1, Some(r#"{"ErrorCode":0}"#)),
                (
                    2,
                    Some(
                        r#"{"ErrorCode":0,"ResultItem":[{"To_Account":"b","ResultCode":38009,"ResultInfo":"b2"}]}"#,
                    ),
                ),
            ],
            3,
            Deny,
            Merged(
                r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","ResultItem":[{"To_Account":"a","ResultCode":38000,"ResultInfo":"rejected by gateway"},{"To_Account":"b","ResultCode":38000,"ResultInfo":"rejected by gateway"},{"To_Account":"c","ResultCode":38000,"ResultInfo":"rejected by gateway"}]}"#,
                "deny",
                0,
            ),
        ),
        // ---- plain ----
        case(
            "4.5 plain: the first non-zero answer wins at once",
            Plain,
            3,
            vec![
                (2, Some(OK)),
                (1, Some(r#"{"ErrorCode":10100,"ErrorInfo":"x"}"#)),
                (0, Some(DENY1)),
            ],
            2,
            Allow,
            Upstream(1, "deny", 0),
        ),
        case(
            "4.5 plain: all allow is the first upstream's answer in route order",
            Plain,
            3,
            vec![(2, Some(OK)), (1, Some(OK)), (0, Some(OK_INFO))],
            3,
            Allow,
            Upstream(0, "allow", 0),
        ),
    ];
    let response = case(
        "4.5 per-friend: ResponseFriendItem[].To_Account for Sns.CallbackPrevFriendResponse",
        PerFriend,
        2,
        vec![(
            0,
            Some(
                r#"{"ErrorCode":0,"ResultItem":[{"To_Account":"a","ResultCode":38002,"ResultInfo":"n"}]}"#,
            ),
        )],
        0,
        OnTimeout::Deny,
        Merged(
            r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","ResultItem":[{"To_Account":"c","ResultCode":38000,"ResultInfo":"rejected by gateway"},{"To_Account":"a","ResultCode":38002,"ResultInfo":"n"}]}"#,
            "deny",
            0,
        ),
    );
    cases.push(Case {
        request: REQ_RESPONSE,
        ..response
    });
    let unreadable = case(
        "spec silent: a request without readable friends uses the answers' accounts",
        PerFriend,
        2,
        vec![(
            1,
            Some(
                r#"{"ErrorCode":0,"ResultItem":[{"To_Account":"q","ResultCode":38001,"ResultInfo":""}]}"#,
            ),
        )],
        0,
        Allow,
        Merged(
            r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","ResultItem":[{"To_Account":"q","ResultCode":38001,"ResultInfo":""}]}"#,
            "deny",
            0,
        ),
    );
    cases.push(Case {
        request: r#"{"FriendItem":[{"Remark":"no account"}]}"#,
        ..unreadable
    });
    cases
}

#[test]
fn strictest_combines_by_family() {
    check(family_cases());
}

/// Runs each case: feeds its arrivals, checks when `add` says Decided and
/// what `finish` says.
pub(super) fn check(cases: Vec<Case>) {
    for c in cases {
        let mut combiner = Combiner::new(c.family, c.counting);
        let mut decided_at = 0;
        for (n, (index, body)) in c.arrivals.iter().enumerate() {
            let verdict = body.and_then(|b| parse(c.family, b.as_bytes()));
            let step = combiner.add(*index, verdict);
            if step == Step::Decided && decided_at == 0 {
                decided_at = n + 1;
            }
            if decided_at > 0 {
                assert_eq!(step, Step::Decided, "{}: decided stays decided", c.rule);
            }
        }
        assert_eq!(decided_at, c.decided_after, "{}: when decided", c.rule);
        let got = combiner.finish(c.fallback, c.request.as_bytes());
        match (&got, &c.expect) {
            (
                Combined::Upstream {
                    index,
                    kind,
                    conflicts,
                },
                Expect::Upstream(i, k, n),
            ) => {
                assert_eq!(
                    (*index, kind.as_str(), *conflicts),
                    (*i, *k, *n),
                    "{}",
                    c.rule
                );
            }
            (
                Combined::Merged {
                    body,
                    kind,
                    conflicts,
                },
                Expect::Merged(b, k, n),
            ) => {
                assert_eq!(
                    (
                        std::str::from_utf8(body).expect("utf-8"),
                        kind.as_str(),
                        *conflicts
                    ),
                    (*b, *k, *n),
                    "{}",
                    c.rule
                );
                // what callgate writes always counts for its family
                let back = parse(c.family, body).expect("written answer counts");
                assert_eq!(back.kind(), *kind, "{}", c.rule);
            }
            (Combined::Fallback, Expect::Fallback) => {}
            _ => panic!("{}: got {got:?}", c.rule),
        }
        assert_eq!(
            got.conflicts(),
            match c.expect {
                Expect::Upstream(_, _, n) | Expect::Merged(_, _, n) => n,
                Expect::Fallback => 0,
            }
        );
    }
}

#[test]
fn records_out_of_range_or_repeated_are_ignored() {
    let mut c = Combiner::new(Plain, 2);
    assert_eq!(c.add(5, Some(deny(1, ""))), Step::Pending);
    assert_eq!(c.add(0, Some(Verdict::Allow)), Step::Pending);
    // the first record of an index counts
    assert_eq!(c.add(0, Some(deny(1, ""))), Step::Pending);
    assert_eq!(c.step(), Step::Pending);
    assert_eq!(c.add(1, Some(Verdict::Allow)), Step::Decided);
    assert!(matches!(
        c.finish(Deny, b""),
        Combined::Upstream {
            index: 0,
            kind: VerdictKind::Allow,
            ..
        }
    ));
}

#[test]
fn kind_of_a_fallback_is_the_fallback() {
    assert_eq!(Combined::Fallback.kind(Allow), VerdictKind::Allow);
    assert_eq!(Combined::Fallback.kind(Deny), VerdictKind::Deny);
    assert_eq!(Combined::Fallback.conflicts(), 0);
}

#[test]
fn written_strings_are_escaped() {
    let mut c = Combiner::new(Partial, 2);
    let nasty = "q\"b\\s\n\u{1}é\u{7f}/";
    let body = serde_json::json!({"ErrorCode": 0, "ErrorInfo": nasty, "RefusedMembers_Account": [nasty, "x"]});
    c.add(1, parse(Partial, body.to_string().as_bytes()));
    let Combined::Merged { body, .. } = c.finish(Allow, b"") else {
        panic!("merged");
    };
    let v: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
    assert_eq!(v["ErrorInfo"], nasty);
    assert_eq!(v["RefusedMembers_Account"], serde_json::json!([nasty, "x"]));
}
