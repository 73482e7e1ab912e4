//! Combining answers at the deadline and the fallback (SPEC 4.2).

use super::combine::{Case, DENY1, Expect, OK, OK_INFO, case, check};
use super::*;
use Family::{Message, Partial, PerFriend, Plain};
use OnTimeout::{Allow, Deny};

fn deadline_cases() -> Vec<Case> {
    use Expect::{Fallback, Merged, Upstream};
    vec![
        // missing upstreams count as the fallback verdict
        case(
            "4.2 deadline, allow: a rewrite that arrived is kept",
            Message,
            2,
            vec![(
                1,
                Some(r#"{"ErrorCode":0,"ErrorInfo":"r","MsgBody":[{"MsgType":"TIMTextElem"}]}"#),
            )],
            0,
            Allow,
            Merged(
                r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"r","MsgBody":[{"MsgType":"TIMTextElem"}]}"#,
                "rewrite",
                0,
            ),
        ),
        case(
            "4.2 deadline, allow: a partial rejection that arrived is kept",
            Partial,
            3,
            vec![
                (2, Some(r#"{"ErrorCode":0,"RefusedMembers_Account":["m"]}"#)),
                (0, Some(OK)),
            ],
            0,
            Allow,
            Merged(
                r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","RefusedMembers_Account":["m"]}"#,
                "partial",
                0,
            ),
        ),
        case(
            "4.2 deadline, allow: an allow combined with the fallback is written",
            Plain,
            2,
            vec![(0, Some(OK_INFO))],
            0,
            Allow,
            Merged(OK_BODY, "allow", 0),
        ),
        case(
            "4.2 deadline, deny: a missing upstream counts as deny (message)",
            Message,
            2,
            vec![(0, Some(r#"{"ErrorCode":0,"MsgBody":[]}"#))],
            0,
            Deny,
            Merged(DENY_BODY, "deny", 0),
        ),
        case(
            "4.2 deadline, deny: a missing upstream counts as deny (partial)",
            Partial,
            2,
            vec![(1, Some(r#"{"ErrorCode":0,"RefusedMembers_Account":["m"]}"#))],
            0,
            Deny,
            Merged(DENY_BODY, "deny", 0),
        ),
        case(
            "4.2 deadline, deny: a missing upstream counts as deny (plain)",
            Plain,
            2,
            vec![(1, Some(OK))],
            0,
            Deny,
            Merged(DENY_BODY, "deny", 0),
        ),
        case(
            "4.2 deadline, deny, per-friend: 38000 for every friend, combined per friend in route order",
            PerFriend,
            3,
            vec![
                (
                    0,
                    Some(
                        r#"{"ErrorCode":0,"ResultItem":[{"To_Account":"b","ResultCode":38005,"ResultInfo":"own"}]}"#,
                    ),
                ),
                (
                    2,
                    Some(
                        r#"{"ErrorCode":0,"ResultItem":[{"To_Account":"c","ResultCode":38007,"ResultInfo":"late"}]}"#,
                    ),
                ),
            ],
            0,
            Deny,
            Merged(
                r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","ResultItem":[{"To_Account":"a","ResultCode":38000,"ResultInfo":"rejected by gateway"},{"To_Account":"b","ResultCode":38005,"ResultInfo":"own"},{"To_Account":"c","ResultCode":38000,"ResultInfo":"rejected by gateway"}]}"#,
                "deny",
                0,
            ),
        ),
        case(
            "4.2 deadline, allow, per-friend: the friends refused that arrived are kept",
            PerFriend,
            2,
            vec![(
                1,
                Some(
                    r#"{"ErrorCode":0,"ResultItem":[{"To_Account":"c","ResultCode":38001,"ResultInfo":"x"}]}"#,
                ),
            )],
            0,
            Allow,
            Merged(
                r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","ResultItem":[{"To_Account":"a","ResultCode":0,"ResultInfo":""},{"To_Account":"b","ResultCode":0,"ResultInfo":""},{"To_Account":"c","ResultCode":38001,"ResultInfo":"x"}]}"#,
                "partial",
                0,
            ),
        ),
        case(
            "4.2 a failure counts as the fallback verdict too (deny)",
            Plain,
            2,
            vec![(0, None), (1, Some(OK))],
            2,
            Deny,
            Merged(DENY_BODY, "deny", 0),
        ),
        case(
            "4.2 a failure counts as the fallback verdict too (allow keeps the rewrite)",
            Message,
            2,
            vec![
                (0, Some("not json")),
                (1, Some(r#"{"ErrorCode":0,"CloudCustomData":"k"}"#)),
            ],
            2,
            Allow,
            Merged(
                r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","CloudCustomData":"k"}"#,
                "rewrite",
                0,
            ),
        ),
        case(
            "4.2 no answer at all: the fallback",
            Message,
            2,
            vec![],
            0,
            Deny,
            Fallback,
        ),
        case(
            "4.2 every upstream failed before the deadline: the fallback, decided at once",
            Partial,
            2,
            vec![(1, None), (0, Some(r#"[{"ErrorCode":0}]"#))],
            2,
            Allow,
            Fallback,
        ),
        case(
            "4.2 a deny that arrives after the decision is ignored",
            Plain,
            1,
            vec![(0, Some(OK)), (0, Some(DENY1))],
            1,
            Deny,
            Upstream(0, "allow", 0),
        ),
        case(
            "4.2 one counting upstream that answered: its answer byte for byte",
            Message,
            1,
            vec![(0, Some(r#"{"ErrorCode":0,"MsgBody":[1]}"#))],
            1,
            Deny,
            Upstream(0, "rewrite", 0),
        ),
        case(
            "4.2 one counting per-friend upstream: its answer byte for byte",
            PerFriend,
            1,
            vec![(
                0,
                Some(
                    r#"{"ErrorCode":0,"ResultItem":[{"To_Account":"b","ResultCode":38001,"ResultInfo":""}]}"#,
                ),
            )],
            1,
            Deny,
            Upstream(0, "deny", 0),
        ),
        case(
            "4.2 no counting upstream: the fallback",
            Plain,
            0,
            vec![],
            0,
            Allow,
            Fallback,
        ),
    ]
}

#[test]
fn missing_answers_count_as_the_fallback() {
    check(deadline_cases());
}
