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

use crate::common::{CallResult, FallbackReason, Forward};
use crate::config::Policy;
use crate::metrics::Metrics;
use crate::route::RouteEntry;
use crate::snapshot::{RouteUpstream, Snapshot};
use crate::upstream::{CallError, UpstreamClient, error_code};

/// What happened with one upstream, for the request's log line.
#[derive(Debug, Clone)]
pub struct UpstreamResult {
    pub upstream: Arc<str>,
    pub result: CallResult,
    pub code: Option<i64>,
    pub elapsed: Duration,
}

/// How a decision is answered.
#[derive(Debug)]
pub enum Reply {
    /// An upstream's answer, to return byte for byte.
    Upstream {
        upstream: Arc<str>,
        body: Bytes,
    },
    Fallback(FallbackReason),
}

/// The end of one decision's fan-out: the reply, and what each upstream
/// did (for the log line).
#[derive(Debug)]
pub struct FanOut {
    pub reply: Reply,
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
) -> FanOut {
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
) -> FanOut {
    let outcome = tokio::time::timeout_at(budget.deadline, call(up, fwd, budget)).await;
    let Ok(outcome) = outcome else {
        metrics.upstream(&up.name, CallResult::Timeout);
        return FanOut {
            reply: Reply::Fallback(FallbackReason::Timeout),
            results: vec![UpstreamResult {
                upstream: up.name.clone(),
                result: CallResult::Timeout,
                code: None,
                elapsed: started.elapsed(),
            }],
        };
    };
    let (result, code) = classify(&outcome);
    metrics.upstream(&up.name, result);
    let results = vec![UpstreamResult {
        upstream: up.name.clone(),
        result,
        code,
        elapsed: started.elapsed(),
    }];
    let reply = match (outcome, code) {
        (Ok(answer), Some(_)) => Reply::Upstream {
            upstream: up.name.clone(),
            body: answer.body,
        },
        _ => Reply::Fallback(FallbackReason::UpstreamFailed),
    };
    FanOut { reply, results }
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

/// The result and the `ErrorCode` of one call's outcome.
fn classify(outcome: &Result<crate::upstream::Answer, CallError>) -> (CallResult, Option<i64>) {
    match outcome {
        Ok(answer) => match error_code(answer) {
            Some(code) => (CallResult::Ok, Some(code)),
            None => (CallResult::BadAnswer, None),
        },
        Err(e) => (e.result(), None),
    }
}

/// Every upstream of `upstreams` must allow; the first refusal decides.
async fn decide_all(
    upstreams: &[RouteUpstream],
    fwd: &Forward,
    budget: Budget,
    metrics: &Metrics,
    started: Instant,
) -> FanOut {
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
    let reply = loop {
        let next = tokio::time::timeout_at(budget.deadline, calls.next()).await;
        let (i, outcome, elapsed) = match next {
            Err(_) => break Reply::Fallback(FallbackReason::Timeout),
            Ok(None) if failed > 0 => break Reply::Fallback(FallbackReason::UpstreamFailed),
            Ok(None) => match first_zero.take() {
                // Everyone allowed: the first upstream's answer may carry
                // modifications (MsgBody, RefusedMembers_Account...).
                Some(body) => {
                    break Reply::Upstream {
                        upstream: upstreams[0].name.clone(),
                        body,
                    };
                }
                None => break Reply::Fallback(FallbackReason::UpstreamFailed),
            },
            Ok(Some(call)) => call,
        };
        let name = &upstreams[i].name;
        let (result, code) = classify(&outcome);
        metrics.upstream(name, result);
        results[i] = Some(UpstreamResult {
            upstream: name.clone(),
            result,
            code,
            elapsed,
        });
        match (outcome, code) {
            (Ok(answer), Some(0)) if i == 0 => first_zero = Some(answer.body),
            (Ok(_), Some(0)) => {}
            (Ok(answer), Some(_)) => {
                break Reply::Upstream {
                    upstream: name.clone(),
                    body: answer.body,
                };
            }
            _ => failed += 1,
        }
    };
    drop(calls);

    // Calls still running were cancelled when `calls` dropped above.
    let timed_out = matches!(reply, Reply::Fallback(FallbackReason::Timeout));
    let results = results
        .into_iter()
        .zip(upstreams)
        .map(|(r, up)| {
            r.unwrap_or_else(|| {
                let result = if timed_out {
                    CallResult::Timeout
                } else {
                    CallResult::Cancelled
                };
                if timed_out {
                    metrics.upstream(&up.name, result);
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
    FanOut { reply, results }
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
        let result = match tokio::time::timeout_at(budget.deadline, call).await {
            Err(_) => CallResult::Timeout,
            Ok(outcome) => classify(&outcome).0,
        };
        metrics.upstream(&name, result);
        tracing::debug!(request_id = fwd.request_id(), upstream = %name, result = result.as_str(), "mirror answered");
    });
}
