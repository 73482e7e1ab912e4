//! The `nats` backend: notifications on a JetStream stream shared by a
//! fleet of gateways (layout in `crate::jetstream`).
//!
//! IM gets 200 only after JetStream acknowledged the publish (with
//! replicas > 1, after a quorum stored it); anything else is a 503. Every
//! gateway runs a worker per upstream on that upstream's shared durable
//! consumer, so whichever instance is alive delivers. Retries are
//! nak-with-delay; attempts are JetStream's delivery count; after
//! `max_attempts` or `max_age` the event is copied to the dead-letter
//! stream and acked.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, AckKind};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Delivery, Nats};
use crate::jetstream::{
    self as js, HDR_ATTEMPTS, HDR_COMMAND, HDR_ERROR, HDR_EVENT, HDR_UPSTREAM, HDR_UPSTREAMS,
    JetStreamError, Names,
};
use crate::outbox::EventRecord;
use crate::state::Shared;
use crate::upstream::Forward;

use super::{Attempt, Refused, backoff, now_ms};

/// Messages a worker pulls at once, and attempts it runs at once, per
/// upstream. Small: what a stopping gateway holds unacked waits
/// `ack_wait` before another instance gets it.
const BATCH: usize = 32;
/// How often workers are matched to the config and gauges refreshed.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// Longest pause between tries to set JetStream up.
const MAX_SETUP_DELAY: Duration = Duration::from_secs(2);

pub struct Fleet {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: Nats,
    names: Names,
    client: async_nats::Client,
    /// Publishes, with `publish_timeout` as the acknowledgement wait.
    publisher: jetstream::Context,
    /// Stream and consumer management, dead-lettering.
    admin: jetstream::Context,
    /// Streams exist and the first consumers are set up.
    set_up: AtomicBool,
    accepting: AtomicBool,
    /// Upstreams whose consumer is known to exist: an event is published
    /// only once every consumer it needs exists (interest retention drops
    /// a message no consumer is interested in).
    consumers: Mutex<HashSet<String>>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Fleet {
    /// Starts connecting; never waits for NATS (the gateway starts and
    /// reports not-ready until it is there).
    pub async fn open(settings: &Delivery) -> Result<Self, JetStreamError> {
        let Some(cfg) = settings.nats.clone() else {
            return Err(JetStreamError::Setup {
                what: "config".into(),
                detail: "delivery.nats is missing".into(),
            });
        };
        let client = js::connect(&cfg, true).await?;
        let mut publisher = jetstream::new(client.clone());
        publisher.set_timeout(cfg.publish_timeout);
        Ok(Self {
            inner: Arc::new(Inner {
                names: Names::new(&cfg),
                admin: js::admin_context(client.clone()),
                publisher,
                client,
                cfg,
                set_up: AtomicBool::new(false),
                accepting: AtomicBool::new(true),
                consumers: Mutex::new(HashSet::new()),
                stop: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        })
    }

    pub fn start(&self, shared: &Arc<Shared>) {
        let inner = self.inner.clone();
        self.inner.tasks.spawn(supervise(inner, shared.clone()));
    }

    pub fn is_available(&self) -> bool {
        self.inner.is_available()
    }

    pub async fn enqueue(
        &self,
        fwd: &Forward,
        command: &str,
        upstreams: &[Arc<str>],
    ) -> Result<(), Refused> {
        let inner = &self.inner;
        if !inner.accepting.load(Ordering::SeqCst) {
            return Err(Refused::ShuttingDown);
        }
        if !inner.set_up.load(Ordering::SeqCst) {
            return Err(Refused::Unavailable(
                "JetStream is not set up yet (is NATS reachable?)".into(),
            ));
        }
        // Fail fast: a publish while disconnected would wait in the
        // client's buffer past the time IM gives us.
        if !inner.connected() {
            return Err(Refused::Unavailable("not connected to NATS".into()));
        }
        let deadline = tokio::time::Instant::now() + inner.cfg.publish_timeout;
        tokio::time::timeout_at(deadline, inner.ensure_consumers(upstreams))
            .await
            .map_err(|_| Refused::Unavailable("JetStream consumer set-up timed out".into()))?
            .map_err(|e| Refused::Unavailable(e.to_string()))?;

        let mut headers = HeaderMap::new();
        let targets: Vec<String> = upstreams.iter().map(|u| js::token(u)).collect();
        headers.insert(HDR_UPSTREAMS, targets.join(",").as_str());
        headers.insert(HDR_COMMAND, js::token(command).as_str());
        let payload = Bytes::from(EventRecord::from_forward(fwd, command, now_ms()).encode());
        let id = event_id(&fwd.query, command, &fwd.body);
        let subject = inner.names.event_subject(command);
        inner
            .publish(subject, headers, payload, &id, deadline)
            .await
    }

    pub async fn shutdown(&self, grace: Duration) -> usize {
        let inner = &self.inner;
        inner.accepting.store(false, Ordering::SeqCst);
        inner.stop.cancel();
        inner.tasks.close();
        if tokio::time::timeout(grace, inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "delivery attempts still running at the end of the drain window; JetStream redelivers them after ack_wait"
            );
        }
        // Push out the last acks before the connection goes.
        let _ = tokio::time::timeout(Duration::from_secs(1), inner.client.flush()).await;
        0
    }
}

impl Inner {
    fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn is_available(&self) -> bool {
        self.set_up.load(Ordering::SeqCst) && self.connected()
    }

    async fn ensure_consumers(&self, upstreams: &[Arc<str>]) -> Result<(), JetStreamError> {
        for name in upstreams {
            let known = self
                .consumers
                .lock()
                .map(|c| c.contains(&**name))
                .unwrap_or(false);
            if !known {
                js::ensure_consumer(&self.admin, &self.cfg, &self.names, name).await?;
                if let Ok(mut c) = self.consumers.lock() {
                    c.insert(name.to_string());
                }
            }
        }
        Ok(())
    }

    /// Publishes with message id `id`, retrying what may pass on a second
    /// try (no leader for a moment, a lost acknowledgement) until
    /// `deadline`; the id makes a repeated publish a no-op.
    async fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
        id: &str,
        deadline: tokio::time::Instant,
    ) -> Result<(), Refused> {
        loop {
            let publish = PublishMessage::build()
                .payload(payload.clone())
                .headers(headers.clone())
                .message_id(id);
            let attempt = async {
                self.publisher
                    .send_publish(subject.clone(), publish)
                    .await?
                    .await
            };
            let error = match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(_ack)) => return Ok(()),
                Ok(Err(e)) => e,
                Err(_) => {
                    return Err(Refused::Store(
                        "JetStream did not acknowledge the publish in time".into(),
                    ));
                }
            };
            let retry = matches!(
                error.kind(),
                PublishErrorKind::TimedOut
                    | PublishErrorKind::BrokenPipe
                    | PublishErrorKind::StreamNotFound
                    | PublishErrorKind::MaxAckPending
            );
            if !retry || tokio::time::Instant::now() + Duration::from_millis(50) >= deadline {
                return Err(Refused::Store(crate::upstream::chain(&error)));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// The message id of an event: the same callback (query, command and
/// body) published twice within the duplicate window is stored once, so a
/// publish retried after a lost acknowledgement is not stored twice. The
/// query is part of it so that distinct callbacks never merge.
fn event_id(query: &str, command: &str, body: &[u8]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(query.as_bytes());
    ctx.update(b"\n");
    ctx.update(command.as_bytes());
    ctx.update(b"\n");
    ctx.update(body);
    let digest = ctx.finish();
    let mut id = String::with_capacity(32);
    for b in &digest.as_ref()[..16] {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

/// Sets JetStream up (retrying until it works or the gateway stops), then
/// keeps one worker per configured upstream.
async fn supervise(inner: Arc<Inner>, shared: Arc<Shared>) {
    let mut delay = Duration::from_millis(100);
    let mut tries = 0u32;
    loop {
        let result = async {
            js::ensure_streams(&inner.admin, &inner.cfg, &inner.names).await?;
            let names: Vec<Arc<str>> = shared.load().upstreams.keys().cloned().collect();
            inner.ensure_consumers(&names).await
        };
        tokio::select! {
            _ = inner.stop.cancelled() => return,
            r = result => match r {
                Ok(()) => break,
                Err(e) => {
                    tries += 1;
                    // Say it once, then every ~30 tries: NATS may be away for long.
                    if tries == 1 || tries.is_multiple_of(30) {
                        tracing::warn!(error = %e, tries, "JetStream is not ready; notifications get 503 until it is");
                    }
                }
            }
        }
        tokio::select! {
            _ = inner.stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(MAX_SETUP_DELAY);
    }
    inner.set_up.store(true, Ordering::SeqCst);
    tracing::info!(stream = %inner.names.stream, "JetStream ready: notifications are stored in NATS");

    let mut workers: HashMap<Arc<str>, CancellationToken> = HashMap::new();
    let mut generation = 0;
    let mut tick = tokio::time::interval(HOUSEKEEPING);
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = inner.stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let snapshot = shared.load();
        if snapshot.generation != generation {
            generation = snapshot.generation;
            for name in snapshot.upstreams.keys() {
                if !workers.contains_key(name) {
                    let stop = inner.stop.child_token();
                    inner.tasks.spawn(work(
                        inner.clone(),
                        shared.clone(),
                        name.clone(),
                        stop.clone(),
                    ));
                    workers.insert(name.clone(), stop);
                }
            }
            // A removed upstream's consumer stays: other gateways of the
            // fleet may still have it in their config.
            workers.retain(|name, stop| {
                let keep = snapshot.upstreams.contains_key(name);
                if !keep {
                    stop.cancel();
                }
                keep
            });
        }
        ticks += 1;
        if ticks % 5 == 1 {
            refresh_gauges(&inner, &shared, workers.keys()).await;
        }
    }
}

/// Fleet-wide figures from JetStream: deliveries not yet done (per
/// consumer: not yet looked at, plus in flight) and dead letters.
async fn refresh_gauges<'a>(
    inner: &Inner,
    shared: &Shared,
    upstreams: impl Iterator<Item = &'a Arc<str>>,
) {
    let Ok(stream) = inner.admin.get_stream(&inner.names.stream).await else {
        return;
    };
    let mut pending = 0u64;
    for name in upstreams {
        if let Ok(info) = stream.consumer_info(inner.names.consumer(name)).await {
            pending += info.num_pending + info.num_ack_pending as u64;
        }
    }
    let metrics = &shared.metrics;
    metrics
        .outbox_pending
        .set(i64::try_from(pending).unwrap_or(i64::MAX));
    if let Ok(mut dead) = inner.admin.get_stream(&inner.names.dead_stream).await
        && let Ok(info) = dead.info().await
    {
        metrics
            .outbox_dead
            .set(i64::try_from(info.state.messages).unwrap_or(i64::MAX));
    }
}

/// Delivers from `upstream`'s consumer until stopped, at most `BATCH`
/// attempts at once; on any consumer trouble, starts over after a pause.
async fn work(inner: Arc<Inner>, shared: Arc<Shared>, upstream: Arc<str>, stop: CancellationToken) {
    let mut attempts = JoinSet::new();
    'consumer: while !stop.is_cancelled() {
        let messages = async {
            let consumer =
                js::ensure_consumer(&inner.admin, &inner.cfg, &inner.names, &upstream).await?;
            consumer
                .stream()
                .max_messages_per_batch(BATCH)
                .heartbeat(Duration::from_secs(5))
                .messages()
                .await
                .map_err(|e| JetStreamError::Setup {
                    what: format!("consumer {}", inner.names.consumer(&upstream)),
                    detail: crate::upstream::chain(&e),
                })
        };
        let mut messages = tokio::select! {
            _ = stop.cancelled() => break,
            m = messages => match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(upstream = %upstream, error = %e, "cannot read the consumer yet");
                    pause(&stop).await;
                    continue;
                }
            }
        };
        loop {
            while attempts.len() >= BATCH {
                attempts.join_next().await;
            }
            tokio::select! {
                _ = stop.cancelled() => break 'consumer,
                Some(_) = attempts.join_next(), if !attempts.is_empty() => {}
                next = messages.next() => match next {
                    Some(Ok(message)) => {
                        attempts.spawn(handle(inner.clone(), shared.clone(), upstream.clone(), message));
                    }
                    Some(Err(e)) => {
                        tracing::debug!(upstream = %upstream, error = %e, "consumer stream interrupted; starting over");
                        pause(&stop).await;
                        continue 'consumer;
                    }
                    None => continue 'consumer,
                }
            }
        }
    }
    // Let the attempts in flight finish and ack (the shutdown bounds this).
    while attempts.join_next().await.is_some() {}
}

async fn pause(stop: &CancellationToken) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
    }
}

async fn handle(
    inner: Arc<Inner>,
    shared: Arc<Shared>,
    upstream: Arc<str>,
    message: jetstream::Message,
) {
    let headers = message.headers.as_ref();
    if !js::upstreams_of(headers).iter().any(|u| **u == *upstream) {
        // Not for this upstream: this consumer is done with it.
        let _ = message.ack().await;
        return;
    }
    let attempt_no = message
        .info()
        .map(|i| u32::try_from(i.delivered).unwrap_or(u32::MAX))
        .unwrap_or(1);
    let event = match EventRecord::decode(&message.payload) {
        Ok(e) => e,
        Err(e) => {
            dead_letter(
                &inner,
                &shared,
                &upstream,
                &message,
                attempt_no,
                e.to_string(),
            )
            .await;
            return;
        }
    };
    let snapshot = shared.load();
    let settings = &snapshot.config.delivery;
    let Some(client) = snapshot.upstream(&upstream).cloned() else {
        // This gateway's config lost the upstream; another may have it.
        let _ = message
            .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
            .await;
        return;
    };
    let fwd = event.to_forward();
    let outcome = with_progress(&message, inner.cfg.ack_wait, super::post(&client, &fwd)).await;
    let metrics = &shared.metrics;
    let age = Duration::from_millis(now_ms().saturating_sub(event.received_ms));
    match outcome {
        Attempt::Delivered => {
            if let Err(e) = message.double_ack().await {
                tracing::warn!(upstream = %upstream, error = %e, "delivered, but the ack was lost: JetStream may deliver it again");
            }
            metrics.delivery(&upstream, "delivered");
            metrics.delivery_latency.observe(age.as_secs_f64());
        }
        Attempt::Failed(e) if attempt_no >= settings.max_attempts => {
            dead_letter(&inner, &shared, &upstream, &message, attempt_no, e).await;
        }
        Attempt::Failed(e) if age >= settings.max_age => {
            let e = format!("{e} (older than max_age)");
            dead_letter(&inner, &shared, &upstream, &message, attempt_no, e).await;
        }
        Attempt::Failed(e) => {
            let delay = backoff(settings, attempt_no);
            tracing::debug!(upstream = %upstream, attempt = attempt_no, error = %e, ?delay, "notification will be retried");
            metrics.delivery(&upstream, "retried");
            let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
        }
        Attempt::Hopeless(e) => {
            dead_letter(&inner, &shared, &upstream, &message, attempt_no, e).await;
        }
    }
}

/// Runs one attempt, telling JetStream it is still being worked on so a
/// slow upstream does not make it redeliver to another gateway.
async fn with_progress(
    message: &jetstream::Message,
    ack_wait: Duration,
    attempt: impl Future<Output = Attempt>,
) -> Attempt {
    let every = ack_wait / 3;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut attempt = std::pin::pin!(attempt);
    loop {
        tokio::select! {
            outcome = &mut attempt => return outcome,
            _ = tick.tick() => {
                let _ = message.ack_with(AckKind::Progress).await;
            }
        }
    }
}

/// Copies the event to the dead-letter stream, then acks it. If the copy
/// cannot be stored, the event stays and is tried again later.
async fn dead_letter(
    inner: &Inner,
    shared: &Shared,
    upstream: &str,
    message: &jetstream::Message,
    attempts: u32,
    error: String,
) {
    let headers = message.headers.as_ref();
    let event = js::header(headers, "Nats-Msg-Id")
        .map(str::to_owned)
        .or_else(|| message.info().ok().map(|i| i.stream_sequence.to_string()))
        .unwrap_or_default();
    let mut dead = HeaderMap::new();
    dead.insert(HDR_UPSTREAM, js::token(upstream).as_str());
    dead.insert(
        HDR_COMMAND,
        js::header(headers, HDR_COMMAND).unwrap_or("other"),
    );
    dead.insert(HDR_ATTEMPTS, attempts.to_string().as_str());
    dead.insert(HDR_ERROR, header_text(&error).as_str());
    dead.insert(HDR_EVENT, event.as_str());
    let publish = PublishMessage::build()
        .payload(message.payload.clone())
        .headers(dead)
        .message_id(format!("{event}.{}", js::token(upstream)));
    let stored = async {
        inner
            .admin
            .send_publish(inner.names.dead_subject(upstream), publish)
            .await?
            .await
    }
    .await;
    match stored {
        Ok(_) => {
            let _ = message.double_ack().await;
            shared.metrics.delivery(upstream, "dead");
            tracing::warn!(upstream, attempts, error = %error, "notification dead-lettered");
        }
        Err(e) => {
            tracing::warn!(upstream, error = %crate::upstream::chain(&e), "cannot store a dead letter; the event stays and is tried again");
            let _ = message
                .ack_with(AckKind::Nak(Some(inner.cfg.ack_wait)))
                .await;
        }
    }
}

/// A header value: one line, bounded.
fn header_text(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(400)
        .collect();
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_follow_the_event() {
        let q = "SdkAppid=1400000001&CallbackCommand=Group.CallbackAfterNewMember";
        let a = event_id(q, "Group.CallbackAfterNewMember", b"{\"x\":1}");
        assert_eq!(a.len(), 32);
        assert_eq!(a, event_id(q, "Group.CallbackAfterNewMember", b"{\"x\":1}"));
        assert_ne!(a, event_id(q, "Group.CallbackAfterNewMember", b"{\"x\":2}"));
        assert_ne!(a, event_id(q, "Group.CallbackAfterQuitGroup", b"{\"x\":1}"));
        assert_ne!(
            a,
            event_id("SdkAppid=2", "Group.CallbackAfterNewMember", b"{\"x\":1}")
        );
    }

    #[test]
    fn header_text_is_one_bounded_line() {
        let t = header_text(&format!("a\r\nb{}", "x".repeat(1000)));
        assert!(!t.contains(['\r', '\n']));
        assert_eq!(t.chars().count(), 400);
    }
}
