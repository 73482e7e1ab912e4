//! Decisions ("before" callbacks): fan the callback out to every upstream
//! of its route at once and answer under a hard deadline (SPEC 4.2). What
//! the answers say and how they combine is `crate::answer`'s; this module
//! runs the calls, feeds their verdicts in as they arrive and stops at the
//! decision or the deadline.
//!
//! Upstream calls are futures polled by the request itself, so returning
//! (a deciding answer, or the deadline) drops, and thereby cancels, every
//! call still running. Only mirrors of `policy: first` run as tasks of
//! their own (`mirror`), bounded by the same deadline.

mod mirror;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::time::Instant;

use crate::answer::{self, Combined, Combiner, Step, Verdict, VerdictKind};
use crate::catalog::Family;
use crate::common::{CallResult, FallbackReason, Forward};
use crate::config::{OnTimeout, Policy};
use crate::metrics::Metrics;
use crate::route::RouteEntry;
use crate::snapshot::{RouteUpstream, Snapshot};
use crate::upstream::{Answer, CallError};

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
    /// One upstream's answer, to return byte for byte.
    Upstream { upstream: Arc<str>, body: Bytes },
    /// Answers combined (with each other, or with the fallback) by callgate.
    Merged(Bytes),
    /// No answer at all: the fallback.
    Fallback(FallbackReason),
}

/// The end of one decision's fan-out: the reply, what it decided, and
/// what each upstream did (for the log line).
#[derive(Debug)]
pub struct FanOut {
    pub reply: Reply,
    pub verdict: VerdictKind,
    /// Replacing fields that differed between upstreams and were not used.
    pub conflicts: usize,
    pub results: Vec<UpstreamResult>,
    /// The sole counting upstream's verdict, for mirrors to compare with.
    first: Option<Verdict>,
}

impl FanOut {
    /// The sole counting upstream's verdict, which mirrors compare with.
    fn first_verdict(&self) -> Option<&Verdict> {
        self.first.as_ref()
    }
}

/// The terms one decision runs under.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Absolute deadline, measured from the request's arrival.
    pub deadline: Instant,
    /// Largest upstream answer read.
    pub max_answer: usize,
    /// How the command's answers read and combine.
    pub family: Family,
    /// What an upstream without an answer counts as.
    pub fallback: OnTimeout,
}

type Call = (usize, Result<Answer, CallError>, Duration);

pub async fn decide(
    snapshot: &Snapshot,
    route: &RouteEntry,
    fwd: &Forward,
    budget: Budget,
    metrics: &Arc<Metrics>,
    command: &str,
) -> FanOut {
    let upstreams = snapshot.route_upstreams(route.index);
    let counting = match route.policy {
        Policy::Strictest => upstreams.len(),
        Policy::First => upstreams.len().min(1),
    };
    let mirrors = mirror::Mirrors::spawn(&upstreams[counting..], fwd, budget, metrics, command);
    let started = Instant::now();
    let fan_out = match &upstreams[..counting] {
        [one] => decide_one(one, fwd, budget, metrics, started).await,
        counted => decide_all(counted, fwd, budget, metrics, started).await,
    };
    mirrors.compare_with(fan_out.first_verdict());
    fan_out
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
        let results = vec![result(up, CallResult::Timeout, None, started.elapsed())];
        return fallback(FallbackReason::Timeout, budget, results);
    };
    let (verdict, result_of, code) = read(outcome, budget.family);
    metrics.upstream(&up.name, result_of);
    let results = vec![result(up, result_of, code, started.elapsed())];
    match verdict {
        Some((verdict, body)) => FanOut {
            reply: Reply::Upstream {
                upstream: up.name.clone(),
                body,
            },
            verdict: verdict.kind(),
            conflicts: 0,
            results,
            first: Some(verdict),
        },
        None => fallback(FallbackReason::UpstreamFailed, budget, results),
    }
}

/// Every counting upstream's answer is combined by the family's rules; a
/// whole-request refusal decides at once.
async fn decide_all(
    upstreams: &[RouteUpstream],
    fwd: &Forward,
    budget: Budget,
    metrics: &Metrics,
    started: Instant,
) -> FanOut {
    let mut results: Vec<Option<UpstreamResult>> = vec![None; upstreams.len()];
    let mut bodies: Vec<Option<Bytes>> = vec![None; upstreams.len()];
    let mut combiner = Combiner::new(budget.family, upstreams.len());
    // The calls borrow the request's data: this function awaits or drops
    // every one of them before it returns.
    let mut calls: FuturesUnordered<_> = upstreams
        .iter()
        .enumerate()
        .map(|(i, up)| async move { (i, call(up, fwd, budget).await, started.elapsed()) as Call })
        .collect();
    let mut timed_out = false;
    while !upstreams.is_empty() {
        let (i, outcome, elapsed) =
            match tokio::time::timeout_at(budget.deadline, calls.next()).await {
                Err(_) => {
                    timed_out = true;
                    break;
                }
                Ok(None) => break,
                Ok(Some(call)) => call,
            };
        let (verdict, result_of, code) = read(outcome, budget.family);
        metrics.upstream(&upstreams[i].name, result_of);
        results[i] = Some(result(&upstreams[i], result_of, code, elapsed));
        let verdict = verdict.map(|(verdict, body)| {
            bodies[i] = Some(body);
            verdict
        });
        if combiner.add(i, verdict) == Step::Decided {
            break;
        }
    }
    drop(calls);

    // Calls still running were cancelled when `calls` dropped above.
    let results = results
        .into_iter()
        .zip(upstreams)
        .map(|(r, up)| {
            r.unwrap_or_else(|| {
                let late = if timed_out {
                    metrics.upstream(&up.name, CallResult::Timeout);
                    CallResult::Timeout
                } else {
                    CallResult::Cancelled
                };
                result(up, late, None, started.elapsed())
            })
        })
        .collect();
    let reason = if timed_out {
        FallbackReason::Timeout
    } else {
        FallbackReason::UpstreamFailed
    };
    match combiner.finish(budget.fallback, &fwd.body) {
        Combined::Upstream {
            index,
            kind,
            conflicts,
        } => match bodies.get_mut(index).and_then(Option::take) {
            Some(body) => FanOut {
                reply: Reply::Upstream {
                    upstream: upstreams[index].name.clone(),
                    body,
                },
                verdict: kind,
                conflicts,
                results,
                first: None,
            },
            // The combiner only names upstreams that answered.
            None => fallback(reason, budget, results),
        },
        Combined::Merged {
            body,
            kind,
            conflicts,
        } => FanOut {
            reply: Reply::Merged(body),
            verdict: kind,
            conflicts,
            results,
            first: None,
        },
        Combined::Fallback => fallback(reason, budget, results),
    }
}

/// The fallback reply and the verdict it stands for.
fn fallback(reason: FallbackReason, budget: Budget, results: Vec<UpstreamResult>) -> FanOut {
    FanOut {
        reply: Reply::Fallback(reason),
        verdict: fallback_kind(budget.fallback),
        conflicts: 0,
        results,
        first: None,
    }
}

/// The verdict a fallback answer stands for.
pub fn fallback_kind(fallback: OnTimeout) -> VerdictKind {
    match fallback {
        OnTimeout::Allow => VerdictKind::Allow,
        OnTimeout::Deny => VerdictKind::Deny,
    }
}

fn result(
    up: &RouteUpstream,
    result: CallResult,
    code: Option<i64>,
    elapsed: Duration,
) -> UpstreamResult {
    UpstreamResult {
        upstream: up.name.clone(),
        result,
        code,
        elapsed,
    }
}

/// The call to one upstream; the deadline bounds it from outside, only an
/// upstream's own `timeout` may end it sooner.
async fn call(up: &RouteUpstream, fwd: &Forward, budget: Budget) -> Result<Answer, CallError> {
    match &up.client {
        Some(c) => c.call(fwd, budget.max_answer, None).await,
        // Validation rules this out; count it as a failure if a snapshot
        // ever names an upstream it lacks.
        None => Err(CallError::Body("upstream missing from config".into())),
    }
}

/// One call's outcome read once: its verdict with the answer's bytes when
/// it counts (HTTP 200 and what the family reads), its result and its
/// `ErrorCode` for metrics and the log.
fn read(
    outcome: Result<Answer, CallError>,
    family: Family,
) -> (Option<(Verdict, Bytes)>, CallResult, Option<i64>) {
    match outcome {
        Ok(answer) if answer.status == http::StatusCode::OK => {
            match answer::parse(family, &answer.body) {
                Some(verdict) => {
                    let code = error_code(&verdict);
                    (Some((verdict, answer.body)), CallResult::Ok, Some(code))
                }
                None => (None, CallResult::BadAnswer, None),
            }
        }
        Ok(_) => (None, CallResult::BadAnswer, None),
        Err(e) => (None, e.result(), None),
    }
}

/// The top-level `ErrorCode` a verdict was read from, for the log line.
fn error_code(verdict: &Verdict) -> i64 {
    match verdict {
        Verdict::Deny { code, .. } => *code,
        Verdict::Discard { .. } => answer::DISCARD_CODE,
        Verdict::Allow | Verdict::Rewrite(_) | Verdict::Partial(_) | Verdict::PerFriend(_) => 0,
    }
}
