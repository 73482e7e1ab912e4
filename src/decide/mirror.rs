//! Mirrors of `policy: first` (SPEC 4.5): every upstream after the first
//! gets the callback on a task of its own, so it never delays the answer
//! nor the next request on the connection. Its verdict is compared with
//! the first upstream's once both are known, counted, and each
//! disagreement logged (at most [`LOG_PER_SECOND`] lines a second).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::oneshot;

use super::{Budget, read};
use crate::answer::{self, Verdict};
use crate::common::{CallResult, Forward, MirrorResult, now_ms};
use crate::metrics::Metrics;
use crate::snapshot::RouteUpstream;

/// Disagreement lines logged per second at most, across the process.
pub const LOG_PER_SECOND: u64 = 10;

/// The mirrors of one decision, waiting for the first upstream's verdict.
pub(super) struct Mirrors {
    waiting: Vec<oneshot::Sender<Option<Verdict>>>,
}

impl Mirrors {
    /// Starts a call to each mirror; nothing is spawned without mirrors.
    pub(super) fn spawn(
        mirrors: &[RouteUpstream],
        fwd: &Forward,
        budget: Budget,
        metrics: &Arc<Metrics>,
        command: &str,
    ) -> Self {
        let mut waiting = Vec::with_capacity(mirrors.len());
        if mirrors.is_empty() {
            return Self { waiting };
        }
        let command: Arc<str> = Arc::from(command);
        for up in mirrors {
            let Some(client) = up.client.clone() else {
                continue;
            };
            let (tx, first) = oneshot::channel();
            waiting.push(tx);
            let (name, fwd, metrics, command) = (
                up.name.clone(),
                fwd.clone(),
                metrics.clone(),
                command.clone(),
            );
            tokio::spawn(async move {
                let call = client.call(&fwd, budget.max_answer, None);
                let (verdict, result) = match tokio::time::timeout_at(budget.deadline, call).await {
                    Err(_) => (None, CallResult::Timeout),
                    Ok(outcome) => {
                        let (verdict, result, _) = read(outcome, budget.family);
                        (verdict.map(|(v, _)| v), result)
                    }
                };
                metrics.upstream(&name, result);
                // The first upstream's verdict; none if the request ended
                // before it (its sender dropped).
                let first = first.await.ok().flatten();
                let compared = match (&first, &verdict) {
                    (Some(a), Some(b)) if answer::agree(budget.family, a, b) => MirrorResult::Agree,
                    (Some(a), Some(b)) => {
                        if may_log() {
                            tracing::warn!(
                                request_id = fwd.request_id(),
                                command = %command,
                                upstream = %name,
                                first = %a,
                                mirror = %b,
                                "mirror disagrees with the first upstream"
                            );
                        }
                        MirrorResult::Disagree
                    }
                    _ => MirrorResult::NoAnswer,
                };
                metrics.mirror(&name, compared);
            });
        }
        Self { waiting }
    }

    /// Hands the first upstream's verdict to every mirror.
    pub(super) fn compare_with(self, first: Option<&Verdict>) {
        for tx in self.waiting {
            let _ = tx.send(first.cloned());
        }
    }
}

/// Whether one more disagreement line may be logged now: a process-wide
/// budget, so a backend that disagrees on everything cannot flood the log.
fn may_log() -> bool {
    static BUDGET: LogBudget = LogBudget::new(LOG_PER_SECOND);
    BUDGET.allow(now_ms() / 1000)
}

/// At most `per_second` lines in each wall-clock second. Racing callers at
/// a second's turn may let a line or two more through: harmless.
struct LogBudget {
    per_second: u64,
    second: AtomicU64,
    used: AtomicU64,
}

impl LogBudget {
    const fn new(per_second: u64) -> Self {
        Self {
            per_second,
            second: AtomicU64::new(0),
            used: AtomicU64::new(0),
        }
    }

    fn allow(&self, second: u64) -> bool {
        if self.second.swap(second, Ordering::Relaxed) != second {
            self.used.store(0, Ordering::Relaxed);
        }
        self.used.fetch_add(1, Ordering::Relaxed) < self.per_second
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_ten_disagreement_lines_a_second() {
        let budget = LogBudget::new(LOG_PER_SECOND);
        let allowed = |second| (0..100).filter(|_| budget.allow(second)).count();
        assert_eq!(allowed(1), 10);
        assert_eq!(allowed(1), 0);
        assert_eq!(allowed(2), 10);
    }
}
