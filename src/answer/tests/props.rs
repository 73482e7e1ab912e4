//! Properties of `strictest` over random answers, arrival orders, missing
//! upstreams and both fallbacks: what any upstream refused stays refused.

use super::*;
use crate::answer::verdict::per_account;
use proptest::prelude::*;
use serde_json::{Value, json};

/// Accounts, one of them needing escapes when written.
const POOL: [&str; 5] = ["a", "b", "c", "d", "q\"\\é"];

#[derive(Clone, Debug)]
enum Up {
    /// Never answers before the deadline.
    Missing,
    /// Refused, reset, non-200...
    Failed,
    /// An HTTP-200 body, counting or not.
    Body(String),
}

#[derive(Clone, Debug)]
struct Scenario {
    family: Family,
    ups: Vec<Up>,
    /// Two arrival orders of the same answers.
    order: Vec<usize>,
    other_order: Vec<usize>,
    fallback: OnTimeout,
    request: String,
    friends: Vec<String>,
}

fn code() -> impl Strategy<Value = i64> {
    prop_oneof![
        6 => Just(0i64),
        1 => Just(1),
        1 => Just(2),
        1 => Just(10100),
        1 => Just(38001),
        1 => Just(-7),
    ]
}

fn info() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "\\PC{0,6}",
        Just("x\"\\\n\u{1}".to_owned())
    ]
}

fn account() -> impl Strategy<Value = String> {
    proptest::sample::select(POOL.to_vec()).prop_map(str::to_owned)
}

fn accounts() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(account(), 0..5)
}

/// Bodies that never count, whatever the family.
fn garbage() -> impl Strategy<Value = String> {
    proptest::sample::select(vec![
        "[]",
        r#"[{"ErrorCode":1}]"#,
        r#"{"ErrorCode":"1"}"#,
        r#"{"ErrorCode":1.0}"#,
        "not json",
        "",
    ])
    .prop_map(str::to_owned)
}

fn body(family: Family) -> BoxedStrategy<String> {
    let answer: BoxedStrategy<Value> = match family {
        Family::Plain => (code(), info())
            .prop_map(|(c, i)| json!({"ActionStatus": "OK", "ErrorCode": c, "ErrorInfo": i}))
            .boxed(),
        Family::Message => (
            code(),
            info(),
            proptest::option::of(proptest::sample::select(vec![
                json!([]),
                json!([{"MsgType": "TIMTextElem", "MsgContent": {"Text": "x"}}]),
                json!([1]),
            ])),
            proptest::option::of(proptest::sample::select(vec!["", "x", "y\""])),
            any::<bool>(),
        )
            .prop_map(|(c, i, msg, ccd, malformed)| {
                let mut v = json!({"ErrorCode": c, "ErrorInfo": i});
                if let Some(m) = msg {
                    v["MsgBody"] = if malformed { json!({"not": "an array"}) } else { m };
                }
                if let Some(d) = ccd {
                    v["CloudCustomData"] = json!(d);
                }
                v
            })
            .boxed(),
        Family::Partial => (
            code(),
            info(),
            proptest::option::of(accounts()),
            proptest::option::of(accounts()),
            prop_oneof![9 => Just(false), 1 => Just(true)],
        )
            .prop_map(|(c, i, members, subscribers, malformed)| {
                let mut v = json!({"ErrorCode": c, "ErrorInfo": i});
                if let Some(m) = members {
                    v["RefusedMembers_Account"] = json!(m);
                }
                if let Some(s) = subscribers {
                    v["RefusedSubscribers_Account"] = json!(s);
                }
                if malformed {
                    v["RefusedMembers_Account"] = json!(["a", 1]);
                }
                v
            })
            .boxed(),
        Family::PerFriend => (
            prop_oneof![8 => Just(0i64), 1 => Just(1), 1 => Just(38000)],
            proptest::option::of(proptest::collection::vec(
                (account(), prop_oneof![3 => Just(0i64), 1 => Just(38001), 1 => Just(38002)], info()),
                0..6,
            )),
            prop_oneof![9 => Just(false), 1 => Just(true)],
        )
            .prop_map(|(c, items, malformed)| {
                let mut v = json!({"ErrorCode": c});
                if let Some(items) = items {
                    let mut items: Vec<Value> = items
                        .into_iter()
                        .map(|(a, rc, ri)| json!({"To_Account": a, "ResultCode": rc, "ResultInfo": ri}))
                        .collect();
                    if malformed {
                        items.push(json!({"To_Account": 7, "ResultCode": 0}));
                    }
                    v["ResultItem"] = Value::Array(items);
                }
                v
            })
            .boxed(),
    };
    prop_oneof![9 => answer.prop_map(|v| v.to_string()), 1 => garbage()].boxed()
}

fn up(family: Family) -> impl Strategy<Value = Up> {
    prop_oneof![
        1 => Just(Up::Missing),
        1 => Just(Up::Failed),
        6 => body(family).prop_map(Up::Body),
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let family = proptest::sample::select(FAMILIES.to_vec());
    (family, 1usize..=4)
        .prop_flat_map(|(family, n)| {
            let order: Vec<usize> = (0..n).collect();
            (
                Just(family),
                proptest::collection::vec(up(family), n),
                Just(order.clone()).prop_shuffle(),
                Just(order).prop_shuffle(),
                any::<bool>(),
                proptest::collection::vec(account(), 1..5),
                any::<bool>(),
            )
        })
        .prop_map(
            |(family, ups, order, other_order, deny, friends, response)| {
                let key = if response {
                    "ResponseFriendItem"
                } else {
                    "FriendItem"
                };
                let items: Vec<Value> = friends.iter().map(|f| json!({"To_Account": f})).collect();
                let mut unique = Vec::new();
                for f in friends {
                    if !unique.contains(&f) {
                        unique.push(f);
                    }
                }
                Scenario {
                    family,
                    ups,
                    order,
                    other_order,
                    fallback: if deny {
                        OnTimeout::Deny
                    } else {
                        OnTimeout::Allow
                    },
                    request: json!({ key: items }).to_string(),
                    friends: unique,
                }
            },
        )
}

struct Run {
    combined: Combined,
    /// What each upstream was recorded as (`None`: not recorded).
    added: Vec<Option<Option<Verdict>>>,
    /// The bytes IM gets.
    answer: Bytes,
}

/// Feeds the answers in `order`, stopping at the decision like the fan-out
/// does (or not), and resolves the answer IM gets.
fn run(s: &Scenario, order: &[usize], stop: bool) -> Run {
    let mut combiner = Combiner::new(s.family, s.ups.len());
    let mut added = vec![None; s.ups.len()];
    for &i in order {
        if stop && combiner.step() == Step::Decided {
            break;
        }
        let verdict = match &s.ups[i] {
            Up::Missing => continue,
            Up::Failed => None,
            Up::Body(b) => parse(s.family, b.as_bytes()),
        };
        added[i] = Some(verdict.clone());
        combiner.add(i, verdict);
    }
    let combined = combiner.finish(s.fallback, s.request.as_bytes());
    let answer = match &combined {
        Combined::Upstream { index, .. } => match &s.ups[*index] {
            Up::Body(b) => Bytes::from(b.clone()),
            other => panic!("upstream {index} returned but it is {other:?}"),
        },
        Combined::Merged { body, .. } => body.clone(),
        Combined::Fallback => fallback_answer(s.family, s.fallback, s.request.as_bytes()),
    };
    Run {
        combined,
        added,
        answer,
    }
}

/// The friends the answer refuses (a friend it lacks is let through).
fn refused_friends(answer: &Verdict) -> Vec<&str> {
    match answer {
        Verdict::PerFriend(items) => per_account(items)
            .into_iter()
            .filter(|(_, code, _)| *code != 0)
            .map(|(a, _, _)| a)
            .collect(),
        _ => Vec::new(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// (1) A whole-request deny from a counting upstream is never turned
    /// into an allow; nor is the deny fallback of an upstream without an
    /// answer (SPEC 4.2, 4.5).
    #[test]
    fn refusals_of_the_whole_request_stand(s in scenario()) {
        let r = run(&s, &s.order, true);
        let answer = parse(s.family, &r.answer);
        let denied = r.added.iter().flatten().flatten().any(Verdict::refuses_whole);
        let unanswered = r.added.iter().any(|a| !matches!(a, Some(Some(_))));
        if s.family != Family::PerFriend && denied {
            prop_assert!(answer.as_ref().is_some_and(Verdict::refuses_whole), "{:?} -> {:?}", s, answer);
        }
        if s.fallback == OnTimeout::Deny && unanswered {
            match s.family {
                Family::PerFriend => {
                    let answer = answer.expect("per-friend deny counts");
                    let refused = refused_friends(&answer);
                    for f in &s.friends {
                        prop_assert!(refused.contains(&f.as_str()), "{} let through: {:?}", f, s);
                    }
                }
                _ => prop_assert!(answer.as_ref().is_some_and(Verdict::refuses_whole), "{:?}", s),
            }
        }
    }

    /// (2) An account refused by any upstream (a partial list, a non-zero
    /// per-friend code) is never let through by the combined answer.
    #[test]
    fn refused_accounts_stay_refused(s in scenario()) {
        let r = run(&s, &s.order, true);
        let answer = parse(s.family, &r.answer);
        for verdict in r.added.iter().flatten().flatten() {
            match verdict {
                Verdict::Partial(p) => {
                    let answer = answer.as_ref().expect("counts");
                    if answer.refuses_whole() {
                        continue;
                    }
                    let Verdict::Partial(out) = answer else {
                        return Err(TestCaseError::fail(format!("{p:?} let through by {answer:?}")));
                    };
                    for a in &p.accounts {
                        prop_assert!(out.accounts.contains(a), "{} let through: {:?}", a, s);
                    }
                }
                Verdict::PerFriend(items) => {
                    let answer = answer.as_ref().expect("counts");
                    let refused = refused_friends(answer);
                    for (account, _, _) in per_account(items).into_iter().filter(|(_, c, _)| *c != 0) {
                        if s.friends.iter().any(|f| f == account) {
                            prop_assert!(refused.contains(&account), "{} let through: {:?}", account, s);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// (3) What callgate writes counts for its family and says the kind it
    /// reports; an upstream's answer is returned only when it was recorded.
    #[test]
    fn written_answers_count_and_say_their_kind(s in scenario()) {
        let r = run(&s, &s.order, true);
        match &r.combined {
            Combined::Merged { body, kind, .. } => {
                let back = parse(s.family, body);
                prop_assert_eq!(back.map(|v| v.kind()), Some(*kind));
            }
            Combined::Upstream { index, kind, .. } => {
                let recorded = r.added[*index].clone().flatten();
                prop_assert_eq!(recorded.map(|v| v.kind()), Some(*kind));
            }
            Combined::Fallback => {
                prop_assert!(r.added.iter().all(|a| !matches!(a, Some(Some(_)))));
            }
        }
    }

    /// (4) Records after the decision change nothing, and without a
    /// whole-request refusal the arrival order changes nothing either.
    #[test]
    fn late_records_and_arrival_order_change_nothing(s in scenario()) {
        let stopped = run(&s, &s.order, true);
        let fed_all = run(&s, &s.order, false);
        prop_assert_eq!(&stopped.combined, &fed_all.combined);
        let other = run(&s, &s.other_order, true);
        let refusal = stopped.added.iter().chain(&other.added).flatten().flatten().any(Verdict::refuses_whole);
        if !refusal || s.family == Family::PerFriend {
            prop_assert_eq!(&stopped.combined, &other.combined);
        }
    }
}
