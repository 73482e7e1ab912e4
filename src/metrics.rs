//! Prometheus metrics (SPEC 6). One registry per gateway, no global state,
//! so tests can run several gateways in one process.
//!
//! Label values are bounded: commands are catalog names (anything else is
//! `other`), upstreams are config names, outcomes and results are fixed
//! words. A sender can therefore not grow the label space.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::answer::VerdictKind;
use crate::catalog::{self, Command, Kind};
use crate::common::{CallResult, DeliveryResult, FallbackReason, MirrorResult, Outcome};

pub type Label = Cow<'static, str>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub command: Label,
    pub outcome: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum KindLabel {
    decision,
    notification,
    rejected,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: KindLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: Name,
    pub result: Label,
}

/// An upstream's config name as a label value: shares the name's
/// allocation, so counting a call copies no string.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Name(pub Arc<str>);

impl EncodeLabelValue for Name {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&&*self.0, encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    pub verdict: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: Label,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<KindLabels, Histogram>,
    pub upstream_requests: Family<UpstreamLabels, Counter>,
    pub fallbacks: Family<ReasonLabels, Counter>,
    pub decisions: Family<VerdictLabels, Counter>,
    pub answer_conflicts: Counter,
    pub mirror_answers: Family<UpstreamLabels, Counter>,
    pub config_reloads: Family<ResultLabels, Counter>,
    pub config_generation: Gauge,
    pub deliveries: Family<UpstreamLabels, Counter>,
    pub outbox_pending: Gauge,
    pub outbox_dead: Gauge,
    pub outbox_oldest: Gauge,
    /// 1 while the notification store takes events, 0 while it refuses them.
    pub outbox_writable: Gauge,
    pub delivery_latency: Histogram,
    pub connections: Gauge,
    /// Handles into `requests`, by command (catalog index, then `other`
    /// and `none`) and outcome, and into `request_duration` by kind, made
    /// on first use: counting a callback then hashes no label and takes no
    /// lock of the family's.
    request_counters: Box<[[OnceLock<Counter>; Outcome::ALL.len()]]>,
    /// Handles into `decisions`, by verdict, for the same reason.
    decision_counters: [OnceLock<Counter>; VerdictKind::ALL.len()],
    durations: [OnceLock<Histogram>; 3],
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::default();
        // 0.5 ms .. ~2 s: the interesting range of a decision under a 2 s cap.
        let request_duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 5.0,
            ])
        });
        let upstream_requests = Family::default();
        let fallbacks = Family::default();
        let decisions = Family::default();
        let answer_conflicts = Counter::default();
        let mirror_answers = Family::default();
        let config_reloads = Family::default();
        let config_generation = Gauge::default();
        let deliveries = Family::default();
        let outbox_pending = Gauge::default();
        let outbox_dead = Gauge::default();
        let outbox_oldest = Gauge::default();
        let outbox_writable = Gauge::default();
        // 5 ms .. 1 h: from a healthy upstream to a long outage.
        let delivery_latency = Histogram::new([
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 3600.0,
        ]);
        let connections = Gauge::default();
        // prometheus-client appends `_total` to counters itself.
        registry.register(
            "callgate_requests",
            "Callbacks answered, by command and outcome",
            requests.clone(),
        );
        registry.register(
            "callgate_request_duration_seconds",
            "Time from a callback's arrival to its answer, by kind",
            request_duration.clone(),
        );
        registry.register(
            "callgate_upstream_requests",
            "Requests to upstreams, by result (ok, error, timeout, bad_answer)",
            upstream_requests.clone(),
        );
        registry.register(
            "callgate_fallbacks",
            "Decisions answered by the gateway's fallback, by reason",
            fallbacks.clone(),
        );
        registry.register(
            "callgate_decisions",
            "Decisions answered, by what the answer says (allow, rewrite, partial, deny, discard)",
            decisions.clone(),
        );
        registry.register(
            "callgate_answer_conflicts",
            "Replacing fields of a message that two upstreams gave different values (the later one not used)",
            answer_conflicts.clone(),
        );
        registry.register(
            "callgate_mirror_answers",
            "Mirror answers compared with the first upstream's, by mirror and result (agree, disagree, no_answer)",
            mirror_answers.clone(),
        );
        registry.register(
            "callgate_config_reloads",
            "Config reloads, by result",
            config_reloads.clone(),
        );
        registry.register(
            "callgate_config_generation",
            "Generation of the config in force",
            config_generation.clone(),
        );
        registry.register(
            "callgate_deliveries",
            "Notification delivery attempts, by upstream and result (delivered, retried, dead, dropped)",
            deliveries.clone(),
        );
        registry.register(
            "callgate_outbox_pending",
            "Notification deliveries not yet finished",
            outbox_pending.clone(),
        );
        registry.register(
            "callgate_open_connections",
            "Client connections currently open",
            connections.clone(),
        );
        registry.register(
            "callgate_outbox_dead_letters",
            "Dead-lettered deliveries kept in the outbox",
            outbox_dead.clone(),
        );
        registry.register(
            "callgate_outbox_oldest_pending_seconds",
            "Age of the oldest pending notification delivery",
            outbox_oldest.clone(),
        );
        registry.register(
            "callgate_outbox_writable",
            "1 while the notification store takes events, 0 while it refuses them (disk full, I/O error, stream full, NATS away)",
            outbox_writable.clone(),
        );
        registry.register(
            "callgate_delivery_latency_seconds",
            "Time from a notification's acknowledgement to its delivery",
            delivery_latency.clone(),
        );
        Self {
            registry,
            requests,
            request_duration,
            upstream_requests,
            fallbacks,
            decisions,
            answer_conflicts,
            mirror_answers,
            config_reloads,
            config_generation,
            deliveries,
            outbox_pending,
            outbox_dead,
            outbox_oldest,
            outbox_writable,
            delivery_latency,
            connections,
            request_counters: (0..catalog::COMMANDS.len() + 2)
                .map(|_| Default::default())
                .collect(),
            durations: Default::default(),
            decision_counters: Default::default(),
        }
    }

    /// Counts one answered callback. `command` is its catalog entry; without
    /// one it is labelled `other` if the query had a command (`had_command`),
    /// else `none`.
    pub fn request(
        &self,
        command: Option<&'static Command>,
        had_command: bool,
        outcome: Outcome,
        kind: Option<Kind>,
        seconds: f64,
    ) {
        // Label values are catalog names only, so the label space stays
        // bounded whatever senders put in the query.
        let commands = catalog::COMMANDS.len();
        let catalogued = command.and_then(|c| Some((catalog::index(c)?, c.name)));
        let (row, label) = match catalogued {
            Some(row) => row,
            None if had_command => (commands, "other"),
            None => (commands + 1, "none"),
        };
        if let Some(slot) = self
            .request_counters
            .get(row)
            .and_then(|r| r.get(outcome as usize))
        {
            slot.get_or_init(|| {
                self.requests
                    .get_or_create(&RequestLabels {
                        command: Cow::Borrowed(label),
                        outcome: Cow::Borrowed(outcome.as_str()),
                    })
                    .clone()
            })
            .inc();
        }
        let kind = match kind {
            Some(Kind::Decision) => KindLabel::decision,
            Some(Kind::Notification) => KindLabel::notification,
            None => KindLabel::rejected,
        };
        self.durations[kind.clone() as usize]
            .get_or_init(|| {
                self.request_duration
                    .get_or_create(&KindLabels { kind })
                    .clone()
            })
            .observe(seconds);
    }

    /// Counts one finished upstream call (a cancelled one is not a call's
    /// result and is never counted).
    pub fn upstream(&self, upstream: &Arc<str>, result: CallResult) {
        self.upstream_requests
            .get_or_create(&UpstreamLabels {
                upstream: Name(upstream.clone()),
                result: Cow::Borrowed(result.as_str()),
            })
            .inc();
    }

    pub fn fallback(&self, reason: FallbackReason) {
        self.fallbacks
            .get_or_create(&ReasonLabels {
                reason: Cow::Borrowed(reason.as_str()),
            })
            .inc();
    }

    /// Counts one decision answered, by what its answer says, and the
    /// replacing fields that conflicted in it.
    pub fn decision(&self, verdict: VerdictKind, conflicts: usize) {
        self.decision_counters[verdict as usize]
            .get_or_init(|| {
                self.decisions
                    .get_or_create(&VerdictLabels {
                        verdict: Cow::Borrowed(verdict.as_str()),
                    })
                    .clone()
            })
            .inc();
        if conflicts > 0 {
            self.answer_conflicts.inc_by(conflicts as u64);
        }
    }

    pub fn mirror(&self, upstream: &Arc<str>, result: MirrorResult) {
        self.mirror_answers
            .get_or_create(&UpstreamLabels {
                upstream: Name(upstream.clone()),
                result: Cow::Borrowed(result.as_str()),
            })
            .inc();
    }

    pub fn delivery(&self, upstream: &str, result: DeliveryResult) {
        self.deliveries
            .get_or_create(&UpstreamLabels {
                upstream: Name(Arc::from(upstream)),
                result: Cow::Borrowed(result.as_str()),
            })
            .inc();
    }

    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.config_reloads
            .get_or_create(&ResultLabels {
                result: Cow::Borrowed(result),
            })
            .inc();
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The content type prometheus-client's text output is in.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
