//! The fixed words that metrics labels and log fields are made of, one
//! enum per question with one `as_str` each, so a metric and a log line
//! can never spell the same thing two ways.

/// How a callback was answered: the value of `x-callgate-outcome` and the
/// `outcome` label of `callgate_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Upstream,
    /// callgate combined answers (with each other, or with the fallback).
    Merged,
    Fallback,
    Queued,
    Unrouted,
    Rejected,
}

impl Outcome {
    /// Every outcome, in discriminant order.
    pub const ALL: [Outcome; 6] = [
        Outcome::Upstream,
        Outcome::Merged,
        Outcome::Fallback,
        Outcome::Queued,
        Outcome::Unrouted,
        Outcome::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Upstream => "upstream",
            Outcome::Merged => "merged",
            Outcome::Fallback => "fallback",
            Outcome::Queued => "queued",
            Outcome::Unrouted => "unrouted",
            Outcome::Rejected => "rejected",
        }
    }
}

/// What came of one call to an upstream: the `result` label of
/// `callgate_upstream_requests_total` and of the callback's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallResult {
    Ok,
    Error,
    Timeout,
    BadAnswer,
    /// Another upstream had already decided; logged, never counted.
    Cancelled,
}

impl CallResult {
    pub fn as_str(self) -> &'static str {
        match self {
            CallResult::Ok => "ok",
            CallResult::Error => "error",
            CallResult::Timeout => "timeout",
            CallResult::BadAnswer => "bad_answer",
            CallResult::Cancelled => "cancelled",
        }
    }
}

/// Why the gateway answered a decision itself: the `reason` label of
/// `callgate_fallbacks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackReason {
    /// The deadline came before an answer decided.
    Timeout,
    /// Every upstream that could decide failed before the deadline.
    UpstreamFailed,
    /// No route for the command.
    NoRoute,
}

impl FallbackReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackReason::Timeout => "timeout",
            FallbackReason::UpstreamFailed => "upstream_failed",
            FallbackReason::NoRoute => "no_route",
        }
    }
}

/// What became of a notification for one upstream: the `result` label of
/// `callgate_deliveries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryResult {
    Delivered,
    Retried,
    Dead,
    /// Refused at intake (IM got 503): never stored.
    Dropped,
}

impl DeliveryResult {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryResult::Delivered => "delivered",
            DeliveryResult::Retried => "retried",
            DeliveryResult::Dead => "dead",
            DeliveryResult::Dropped => "dropped",
        }
    }
}

/// How a mirror's verdict compared with the first upstream's: the `result`
/// label of `callgate_mirror_answers_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorResult {
    Agree,
    Disagree,
    /// The mirror or the first upstream gave no answer that counts.
    NoAnswer,
}

impl MirrorResult {
    pub fn as_str(self) -> &'static str {
        match self {
            MirrorResult::Agree => "agree",
            MirrorResult::Disagree => "disagree",
            MirrorResult::NoAnswer => "no_answer",
        }
    }
}
