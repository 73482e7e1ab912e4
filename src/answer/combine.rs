//! Combining the counting upstreams' verdicts of one decision under
//! `policy: strictest` (SPEC 4.5), with the deadline rules of SPEC 4.2.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;

use super::verdict::{FriendResult, Refused, Rewrite, Verdict, VerdictKind, per_account};
use super::write::{self, DENY_CODE, GATEWAY_INFO};
use crate::catalog::Family;
use crate::config::OnTimeout;

/// Whether the decision is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// An answer still to come could change it.
    Pending,
    /// Nothing still to come can change it: call [`Combiner::finish`].
    Decided,
}

/// How to answer IM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Combined {
    /// Return upstream `index`'s answer byte for byte
    /// (`x-callgate-outcome: upstream`): it says exactly the result, and
    /// every counting upstream answered (or its refusal won at once).
    Upstream {
        index: usize,
        kind: VerdictKind,
        /// Replacing fields of later upstreams that differed and were not used.
        conflicts: usize,
    },
    /// callgate writes the answer (`x-callgate-outcome: merged`): two or
    /// more answers combined, or answers combined with the fallback.
    Merged {
        body: Bytes,
        kind: VerdictKind,
        conflicts: usize,
    },
    /// No answer at all: answer [`super::fallback_answer`].
    Fallback,
}

impl Combined {
    /// The metric word; `fallback` is the verdict a `Fallback` answers with.
    pub fn kind(&self, fallback: OnTimeout) -> VerdictKind {
        match self {
            Combined::Upstream { kind, .. } | Combined::Merged { kind, .. } => *kind,
            Combined::Fallback => match fallback {
                OnTimeout::Allow => VerdictKind::Allow,
                OnTimeout::Deny => VerdictKind::Deny,
            },
        }
    }

    /// Conflicting replacing fields (message family), counted, not used.
    pub fn conflicts(&self) -> usize {
        match self {
            Combined::Upstream { conflicts, .. } | Combined::Merged { conflicts, .. } => *conflicts,
            Combined::Fallback => 0,
        }
    }
}

#[derive(Debug)]
enum Slot {
    /// Not added yet: counts as the fallback at `finish`.
    Pending,
    /// Counts as no answer: the fallback too.
    Failed,
    Answered(Verdict),
}

/// One decision's verdicts, in route order.
///
/// Verdicts are expected from [`super::parse`] with the same family. One the
/// family does not produce is read by its kind: a whole-request refusal
/// always refuses (every friend, in the per-friend family); anything else
/// contributes only what the family writes.
#[derive(Debug)]
pub struct Combiner {
    family: Family,
    slots: Vec<Slot>,
    added: usize,
    /// The upstream whose refusal won at once.
    winner: Option<usize>,
}

impl Combiner {
    /// For a decision of `family` with `counting` upstreams whose answers count.
    pub fn new(family: Family, counting: usize) -> Self {
        Self {
            family,
            slots: (0..counting).map(|_| Slot::Pending).collect(),
            added: 0,
            winner: None,
        }
    }

    /// Records upstream `index`'s (route order) verdict, `None` when it
    /// counts as no answer. The first record of an index counts; records
    /// after the decision, or of an index out of range, are ignored.
    pub fn add(&mut self, index: usize, verdict: Option<Verdict>) -> Step {
        if self.winner.is_none()
            && let Some(slot) = self.slots.get_mut(index)
            && matches!(slot, Slot::Pending)
        {
            // The first refusal to arrive wins; IM ignores a per-friend
            // answer's top level, so there no answer decides alone.
            let wins = self.family != Family::PerFriend
                && verdict.as_ref().is_some_and(Verdict::refuses_whole);
            *slot = verdict.map_or(Slot::Failed, Slot::Answered);
            self.added += 1;
            if wins {
                self.winner = Some(index);
            }
        }
        self.step()
    }

    pub fn step(&self) -> Step {
        if self.winner.is_some() || self.added == self.slots.len() {
            Step::Decided
        } else {
            Step::Pending
        }
    }

    /// Every upstream not answered counts as the `fallback` verdict;
    /// combines and says how to answer. `request_body` is read only for the
    /// per-friend family (its friends).
    pub fn finish(self, fallback: OnTimeout, request_body: &[u8]) -> Combined {
        if let Some(index) = self.winner {
            let kind = match &self.slots[index] {
                Slot::Answered(v) => v.kind(),
                _ => VerdictKind::Deny,
            };
            return Combined::Upstream {
                index,
                kind,
                conflicts: 0,
            };
        }
        let answered: Vec<Option<&Verdict>> = self
            .slots
            .iter()
            .map(|s| match s {
                Slot::Answered(v) => Some(v),
                _ => None,
            })
            .collect();
        if answered.iter().all(Option::is_none) {
            return Combined::Fallback;
        }
        if let [Some(only)] = answered[..] {
            // The only counting answer is the answer, as it came.
            return Combined::Upstream {
                index: 0,
                kind: only.kind(),
                conflicts: 0,
            };
        }
        let friends = match self.family {
            Family::PerFriend => friends(request_body, &answered),
            _ => Vec::new(),
        };
        let stand_in = fallback_verdict(self.family, fallback, &friends);
        let complete = answered.iter().all(Option::is_some);
        let verdicts: Vec<&Verdict> = answered.iter().map(|v| v.unwrap_or(&stand_in)).collect();
        let (combined, conflicts) = combine(self.family, &verdicts, &friends);
        let kind = combined.kind();
        if complete && let Some(index) = verdicts.iter().position(|v| **v == combined) {
            return Combined::Upstream {
                index,
                kind,
                conflicts,
            };
        }
        Combined::Merged {
            body: write::answer(&combined),
            kind,
            conflicts,
        }
    }
}

/// What an upstream without an answer counts as.
fn fallback_verdict(family: Family, fallback: OnTimeout, friends: &[String]) -> Verdict {
    match (fallback, family) {
        (OnTimeout::Allow, _) => Verdict::Allow,
        (OnTimeout::Deny, Family::PerFriend) => write::friends_denied(friends),
        (OnTimeout::Deny, _) => Verdict::Deny {
            code: DENY_CODE,
            info: GATEWAY_INFO.to_owned(),
        },
    }
}

/// The request's friends; when it names none readable, the accounts the
/// answers name (first appearance in route order), so that no refusal is
/// dropped for want of a friend to attach it to.
fn friends(request_body: &[u8], answered: &[Option<&Verdict>]) -> Vec<String> {
    let friends = write::request_friends(request_body);
    if !friends.is_empty() {
        return friends;
    }
    let mut seen = HashSet::new();
    answered
        .iter()
        .flatten()
        .filter_map(|v| match v {
            Verdict::PerFriend(items) => Some(items),
            _ => None,
        })
        .flatten()
        .filter(|i| seen.insert(i.account.as_str()))
        .map(|i| i.account.clone())
        .collect()
}

/// The combined verdict of every counting upstream, in route order, and the
/// number of conflicting replacing fields.
fn combine(family: Family, verdicts: &[&Verdict], friends: &[String]) -> (Verdict, usize) {
    if family == Family::PerFriend {
        return (per_friend(verdicts, friends), 0);
    }
    if let Some(refusal) = verdicts.iter().find(|v| v.refuses_whole()) {
        return ((*refusal).clone(), 0);
    }
    match family {
        Family::Message => rewrites(verdicts),
        Family::Partial => (refusals(verdicts), 0),
        Family::Plain | Family::PerFriend => (Verdict::Allow, 0),
    }
}

/// Each replacing field from the first upstream that carries it; a later
/// different value is a conflict. `ErrorInfo` from the first supplier.
fn rewrites(verdicts: &[&Verdict]) -> (Verdict, usize) {
    let mut msg_body = None;
    let mut cloud_custom_data = None;
    let mut conflicts = 0;
    for (i, verdict) in verdicts.iter().enumerate() {
        let Verdict::Rewrite(r) = verdict else {
            continue;
        };
        for (chosen, value) in [
            (&mut msg_body, &r.msg_body),
            (&mut cloud_custom_data, &r.cloud_custom_data),
        ] {
            match (chosen.as_ref(), value) {
                (_, None) => {}
                (None, Some(v)) => *chosen = Some((i, v)),
                (Some((_, c)), Some(v)) if *c != v => conflicts += 1,
                (Some(_), Some(_)) => {}
            }
        }
    }
    let first = match (msg_body, cloud_custom_data) {
        (None, None) => return (Verdict::Allow, conflicts),
        (Some((i, _)), None) | (None, Some((i, _))) => i,
        (Some((i, _)), Some((j, _))) => i.min(j),
    };
    let info = match verdicts[first] {
        Verdict::Rewrite(r) => r.info.clone(),
        _ => String::new(),
    };
    let rewrite = Rewrite {
        msg_body: msg_body.map(|(_, v)| v.clone()),
        cloud_custom_data: cloud_custom_data.map(|(_, v)| v.clone()),
        info,
    };
    (Verdict::Rewrite(rewrite), conflicts)
}

/// The refused lists united in route order, each account once, under the
/// first list's field name and with its `ErrorInfo`.
fn refusals(verdicts: &[&Verdict]) -> Verdict {
    let mut united: Option<Refused> = None;
    let mut seen = HashSet::new();
    for verdict in verdicts {
        let Verdict::Partial(r) = verdict else {
            continue;
        };
        let out = united.get_or_insert_with(|| Refused {
            field: r.field,
            accounts: Vec::new(),
            info: r.info.clone(),
        });
        for account in &r.accounts {
            if seen.insert(account.as_str()) {
                out.accounts.push(account.clone());
            }
        }
    }
    united.map_or(Verdict::Allow, Verdict::Partial)
}

/// One result per friend, in the request's order: the first non-zero code
/// in route order (with its info), else 0. An answer lacking a friend says
/// 0 for it; a whole-request refusal refuses every friend with its code.
fn per_friend(verdicts: &[&Verdict], friends: &[String]) -> Verdict {
    let tables: Vec<Option<HashMap<&str, (i64, &str)>>> = verdicts
        .iter()
        .map(|v| match v {
            Verdict::PerFriend(items) => Some(
                per_account(items)
                    .into_iter()
                    .map(|(a, c, i)| (a, (c, i)))
                    .collect(),
            ),
            _ => None,
        })
        .collect();
    let results = friends
        .iter()
        .map(|friend| {
            let refusal = verdicts.iter().zip(&tables).find_map(|(v, table)| {
                let (code, info) = match (v, table) {
                    (Verdict::Deny { code, info }, _) => (*code, info.as_str()),
                    (Verdict::Discard { info }, _) => (super::verdict::DISCARD_CODE, info.as_str()),
                    (_, Some(t)) => t.get(friend.as_str()).copied()?,
                    _ => return None,
                };
                (code != 0).then_some((code, info))
            });
            let (code, info) = refusal.unwrap_or((0, ""));
            FriendResult {
                account: friend.clone(),
                code,
                info: info.to_owned(),
            }
        })
        .collect();
    Verdict::PerFriend(results)
}
