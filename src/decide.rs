//! Decisions ("before" callbacks): fan the callback out to every upstream
//! of its route at once and answer under a hard deadline (SPEC 4.2).
//!
//! Upstream calls are futures polled by the request itself, so returning
//! (a deciding answer, or the deadline) drops, and thereby cancels, every
//! call still running. Only mirrors of `policy: first` run as tasks of
//! their own, bounded by the same deadline.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::time::Instant;

use crate::config::Policy;
use crate::metrics::Metrics;
use crate::route::RouteEntry;
use crate::state::{RouteUpstream, Snapshot};
use crate::upstream::{CallError, Forward, UpstreamClient, verdict};

/// Why the gateway answered a decision itself.
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
    pub fn label(self) -> &'static str {
        match self {
            FallbackReason::Timeout => "timeout",
            FallbackReason::UpstreamFailed => "upstream_failed",
            FallbackReason::NoRoute => "no_route",
        }
    }
}

/// What happened with one upstream, for the request's log line.
#[derive(Debug, Clone)]
pub struct UpstreamResult {
    pub upstream: Arc<str>,
    /// ok, error, timeout, bad_answer, or cancelled (the answer was already
    /// decided by another upstream).
    pub result: &'static str,
    pub code: Option<i64>,
    pub elapsed: Duration,
}

#[derive(Debug)]
pub enum Verdict {
    /// An upstream's answer, to return byte for byte.
    Upstream {
        upstream: Arc<str>,
        body: Bytes,
    },
    Fallback(FallbackReason),
}

#[derive(Debug)]
pub struct Decided {
    pub verdict: Verdict,
    pub results: Vec<UpstreamResult>,
}

/// Limits one decision runs under.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Absolute deadline, measured from the request's arrival.
    pub deadline: Instant,
    /// Largest upstream answer read.
    pub max_answer: usize,
}

type Call = (usize, Result<crate::upstream::Answer, CallError>, Duration);

pub async fn decide(
    snapshot: &Snapshot,
    route: &RouteEntry,
    fwd: &Forward,
    budget: Budget,
    metrics: &Arc<Metrics>,
) -> Decided {
    let upstreams = snapshot.route_upstreams(route.index);
    let counting = match route.policy {
        Policy::Strictest => upstreams.len(),
        Policy::First => upstreams.len().min(1),
    };
    for up in upstreams.iter().skip(counting) {
        if let Some(client) = up.client.clone() {
            spawn_mirror(
                up.name.clone(),
                client,
                fwd.clone(),
                budget,
                metrics.clone(),
            );
        }
    }
    let started = Instant::now();
    match &upstreams[..counting] {
        [one] => decide_one(one, fwd, budget, metrics, started).await,
        counted => decide_all(counted, fwd, budget, metrics, started).await,
    }
}

/// One upstream decides: its call is awaited directly, with no fan-out
/// bookkeeping (the common case, and the same outcome as `decide_all`).
async fn decide_one(
    up: &RouteUpstream,
    fwd: &Forward,
    budget: Budget,
    metrics: &Metrics,
    started: Instant,
) -> Decided {
    let outcome = tokio::time::timeout_at(budget.deadline, call(up, fwd, budget)).await;
    let Ok(outcome) = outcome else {
        metrics.upstream(&up.name, "timeout");
        return Decided {
            verdict: Verdict::Fallback(FallbackReason::Timeout),
            results: vec![UpstreamResult {
                upstream: up.name.clone(),
                result: "timeout",
                code: None,
                elapsed: started.elapsed(),
            }],
        };
    };
    let (label, code) = classify(&outcome);
    metrics.upstream(&up.name, label);
    let results = vec![UpstreamResult {
        upstream: up.name.clone(),
        result: label,
        code,
        elapsed: started.elapsed(),
    }];
    let verdict = match (outcome, code) {
        (Ok(answer), Some(_)) => Verdict::Upstream {
            upstream: up.name.clone(),
            body: answer.body,
        },
        _ => Verdict::Fallback(FallbackReason::UpstreamFailed),
    };
    Decided { verdict, results }
}

/// The call to one upstream; the deadline bounds it from outside, only an
/// upstream's own `timeout` may end it sooner.
async fn call(
    up: &RouteUpstream,
    fwd: &Forward,
    budget: Budget,
) -> Result<crate::upstream::Answer, CallError> {
    match &up.client {
        Some(c) => c.call(fwd, budget.max_answer, None).await,
        // Validation rules this out; count it as a failure if a snapshot
        // ever names an upstream it lacks.
        None => Err(CallError::Body("upstream missing from config".into())),
    }
}

/// The `result` label and the decision code of one call's outcome.
fn classify(outcome: &Result<crate::upstream::Answer, CallError>) -> (&'static str, Option<i64>) {
    match outcome {
        Ok(answer) => match verdict(answer) {
            Some(code) => ("ok", Some(code)),
            None => ("bad_answer", None),
        },
        Err(e) => (e.label(), None),
    }
}

/// Every upstream of `upstreams` must allow; the first refusal decides.
async fn decide_all(
    upstreams: &[RouteUpstream],
    fwd: &Forward,
    budget: Budget,
    metrics: &Metrics,
    started: Instant,
) -> Decided {
    let counting = upstreams.len();
    let mut results: Vec<Option<UpstreamResult>> = vec![None; counting];
    // The calls borrow the request's data: this function awaits or drops
    // every one of them before it returns.
    let mut calls: FuturesUnordered<_> = upstreams
        .iter()
        .enumerate()
        .map(|(i, up)| async move { (i, call(up, fwd, budget).await, started.elapsed()) as Call })
        .collect();

    let mut first_zero: Option<Bytes> = None;
    let mut failed = 0usize;
    let verdict = loop {
        let next = tokio::time::timeout_at(budget.deadline, calls.next()).await;
        let (i, outcome, elapsed) = match next {
            Err(_) => break Verdict::Fallback(FallbackReason::Timeout),
            Ok(None) if failed > 0 => break Verdict::Fallback(FallbackReason::UpstreamFailed),
            Ok(None) => match first_zero.take() {
                // Everyone allowed: the first upstream's answer may carry
                // modifications (MsgBody, RefusedMembers_Account...).
                Some(body) => {
                    break Verdict::Upstream {
                        upstream: upstreams[0].name.clone(),
                        body,
                    };
                }
                None => break Verdict::Fallback(FallbackReason::UpstreamFailed),
            },
            Ok(Some(call)) => call,
        };
        let name = &upstreams[i].name;
        let (label, code) = classify(&outcome);
        metrics.upstream(name, label);
        results[i] = Some(UpstreamResult {
            upstream: name.clone(),
            result: label,
            code,
            elapsed,
        });
        match (outcome, code) {
            (Ok(answer), Some(0)) if i == 0 => first_zero = Some(answer.body),
            (Ok(_), Some(0)) => {}
            (Ok(answer), Some(_)) => {
                break Verdict::Upstream {
                    upstream: name.clone(),
                    body: answer.body,
                };
            }
            _ => failed += 1,
        }
    };
    drop(calls);

    // Calls still running were cancelled when `calls` dropped above.
    let timed_out = matches!(verdict, Verdict::Fallback(FallbackReason::Timeout));
    let results = results
        .into_iter()
        .zip(upstreams)
        .map(|(r, up)| {
            r.unwrap_or_else(|| {
                let result = if timed_out { "timeout" } else { "cancelled" };
                if timed_out {
                    metrics.upstream(&up.name, "timeout");
                }
                UpstreamResult {
                    upstream: up.name.clone(),
                    result,
                    code: None,
                    elapsed: started.elapsed(),
                }
            })
        })
        .collect();
    Decided { verdict, results }
}

/// A mirror gets the callback; its answer is only logged and counted.
fn spawn_mirror(
    name: Arc<str>,
    client: Arc<UpstreamClient>,
    fwd: Forward,
    budget: Budget,
    metrics: Arc<Metrics>,
) {
    tokio::spawn(async move {
        let call = client.call(&fwd, budget.max_answer, None);
        let label = match tokio::time::timeout_at(budget.deadline, call).await {
            Err(_) => "timeout",
            Ok(Err(e)) => e.label(),
            Ok(Ok(answer)) => match verdict(&answer) {
                Some(_) => "ok",
                None => "bad_answer",
            },
        };
        metrics.upstream(&name, label);
        tracing::debug!(request_id = fwd.request_id(), upstream = %name, result = label, "mirror answered");
    });
}
