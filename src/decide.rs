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
use crate::state::Snapshot;
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
    let clients: Vec<(Arc<str>, Option<Arc<UpstreamClient>>)> = route
        .upstreams
        .iter()
        .map(|name| (name.clone(), snapshot.upstream(name).cloned()))
        .collect();
    let counting = match route.policy {
        Policy::Strictest => clients.len(),
        Policy::First => 1,
    };
    for (name, client) in clients.iter().skip(counting) {
        if let Some(client) = client.clone() {
            spawn_mirror(name.clone(), client, fwd.clone(), budget, metrics.clone());
        }
    }

    let started = Instant::now();
    let mut results: Vec<Option<UpstreamResult>> = vec![None; counting];
    let mut calls = FuturesUnordered::new();
    for (i, (_, client)) in clients.iter().take(counting).enumerate() {
        let fwd = fwd.clone();
        let client = client.clone();
        calls.push(async move {
            let outcome = match client {
                // The deadline bounds the call from outside; only an upstream's
                // own `timeout` may end it sooner.
                Some(c) => c.call(&fwd, budget.max_answer, None).await,
                // Validation rules this out; count it as a failure if a
                // snapshot ever names an upstream it lacks.
                None => Err(CallError::Body("upstream missing from config".into())),
            };
            (i, outcome, started.elapsed()) as Call
        });
    }

    let mut zeros: Vec<Option<Bytes>> = vec![None; counting];
    let mut failed = 0usize;
    let verdict = loop {
        let next = tokio::time::timeout_at(budget.deadline, calls.next()).await;
        let (i, outcome, elapsed) = match next {
            Err(_) => break Verdict::Fallback(FallbackReason::Timeout),
            Ok(None) if failed > 0 => break Verdict::Fallback(FallbackReason::UpstreamFailed),
            Ok(None) => match zeros.first_mut().and_then(Option::take) {
                // Everyone allowed: the first upstream's answer may carry
                // modifications (MsgBody, RefusedMembers_Account...).
                Some(body) => {
                    break Verdict::Upstream {
                        upstream: clients[0].0.clone(),
                        body,
                    };
                }
                None => break Verdict::Fallback(FallbackReason::UpstreamFailed),
            },
            Ok(Some(call)) => call,
        };
        let name = clients[i].0.clone();
        let (label, code) = match &outcome {
            Ok(answer) => match verdict(answer) {
                Some(code) => ("ok", Some(code)),
                None => ("bad_answer", None),
            },
            Err(e) => (e.label(), None),
        };
        metrics.upstream(&name, label);
        results[i] = Some(UpstreamResult {
            upstream: name.clone(),
            result: label,
            code,
            elapsed,
        });
        match (outcome, code) {
            (Ok(answer), Some(0)) => zeros[i] = Some(answer.body),
            (Ok(answer), Some(_)) => {
                break Verdict::Upstream {
                    upstream: name,
                    body: answer.body,
                };
            }
            _ => failed += 1,
        }
    };

    // Calls still running are cancelled when `calls` drops below.
    let timed_out = matches!(verdict, Verdict::Fallback(FallbackReason::Timeout));
    let results = results
        .into_iter()
        .zip(clients.iter())
        .map(|(r, (name, _))| {
            r.unwrap_or_else(|| {
                let result = if timed_out { "timeout" } else { "cancelled" };
                if timed_out {
                    metrics.upstream(name, "timeout");
                }
                UpstreamResult {
                    upstream: name.clone(),
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
        tracing::debug!(request_id = %fwd.request_id, upstream = %name, result = label, "mirror answered");
    });
}
