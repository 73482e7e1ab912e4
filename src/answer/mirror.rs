//! Comparing a mirror's verdict with the first upstream's (`policy: first`,
//! SPEC 4.5): by what IM would do, not by the answers' text.

use std::collections::{HashMap, HashSet};

use super::verdict::{Verdict, per_account};
use crate::catalog::Family;

/// Whether `mirror` decides like `primary` by `family`'s rules: allow,
/// deny and its code, discard, the refused accounts as a set, the
/// per-friend codes per account (a friend an answer lacks is 0), the
/// replacing fields' JSON text. `ErrorInfo` and `ResultInfo` do not count.
pub fn agree(family: Family, primary: &Verdict, mirror: &Verdict) -> bool {
    match (primary, mirror) {
        (Verdict::Allow, Verdict::Allow) | (Verdict::Discard { .. }, Verdict::Discard { .. }) => {
            true
        }
        (Verdict::Deny { code: a, .. }, Verdict::Deny { code: b, .. }) => a == b,
        (Verdict::Partial(a), Verdict::Partial(b)) => {
            let set =
                |accounts: &[String]| -> HashSet<String> { accounts.iter().cloned().collect() };
            set(&a.accounts) == set(&b.accounts)
        }
        (Verdict::Rewrite(a), Verdict::Rewrite(b)) => {
            a.msg_body == b.msg_body && a.cloud_custom_data == b.cloud_custom_data
        }
        (Verdict::PerFriend(a), Verdict::PerFriend(b)) => refused(a) == refused(b),
        // IM reads a per-friend answer only by its items: no items refusing
        // is the same as an allow.
        (Verdict::PerFriend(items), Verdict::Allow)
        | (Verdict::Allow, Verdict::PerFriend(items))
            if family == Family::PerFriend =>
        {
            refused(items).is_empty()
        }
        _ => false,
    }
}

/// The refused friends and their codes.
fn refused(items: &[super::verdict::FriendResult]) -> HashMap<&str, i64> {
    per_account(items)
        .into_iter()
        .filter(|(_, code, _)| *code != 0)
        .map(|(account, code, _)| (account, code))
        .collect()
}
