//! The answer model of decisions (SPEC 4.2, 4.5): what one upstream's
//! answer says ([`parse`] into a [`Verdict`], by the command's answer
//! family), how the counting upstreams' verdicts combine under
//! `policy: strictest` and the deadline ([`Combiner`]), the gateway's own
//! fallback answers ([`fallback_answer`], [`fallback_for`]), and how a
//! mirror's verdict compares with the first upstream's ([`agree`]).
//!
//! Pure logic: no I/O, no clock. The fan-out feeds it answers as they
//! arrive and asks it, at the deadline, how to answer.

mod combine;
mod mirror;
mod verdict;
mod write;

use bytes::Bytes;

pub use combine::{Combined, Combiner, Step};
pub use mirror::agree;
pub use verdict::{
    DISCARD_CODE, FriendResult, RawJson, Refused, RefusedField, Rewrite, Verdict, VerdictKind,
    parse,
};
pub use write::{DENY_BODY, DENY_CODE, FRIEND_DENY_CODE, GATEWAY_INFO, OK_BODY, request_friends};

use crate::catalog::{Command, Family};
use crate::config::OnTimeout;

/// The fallback in force for a decision (SPEC 4.5): the route's
/// `on_timeout`; else deny for a command IM itself fails closed on; else
/// `default` (`defaults.on_timeout`).
pub fn fallback_for(
    route_on_timeout: Option<OnTimeout>,
    command: Option<&Command>,
    default: OnTimeout,
) -> OnTimeout {
    route_on_timeout
        .or_else(|| command.filter(|c| c.fails_closed).map(|_| OnTimeout::Deny))
        .unwrap_or(default)
}

/// The answer when no upstream answered: `on_timeout: allow` gives
/// [`OK_BODY`]; deny gives the family's deny answer, [`DENY_BODY`], or for
/// the per-friend family `ErrorCode` 0 with every friend of the request
/// refused (`ResultCode` 38000, "rejected by gateway").
pub fn fallback_answer(family: Family, on_timeout: OnTimeout, request_body: &[u8]) -> Bytes {
    match (on_timeout, family) {
        (OnTimeout::Allow, _) => Bytes::from_static(OK_BODY.as_bytes()),
        (OnTimeout::Deny, Family::PerFriend) => {
            write::answer(&write::friends_denied(&request_friends(request_body)))
        }
        (OnTimeout::Deny, _) => Bytes::from_static(DENY_BODY.as_bytes()),
    }
}

#[cfg(test)]
mod tests;
