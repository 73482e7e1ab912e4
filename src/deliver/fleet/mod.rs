//! The `nats` backend: notifications on a JetStream stream shared by a
//! fleet of gateways (layout in `crate::deliver::fleet::streams`).
//!
//! IM gets 200 only after JetStream acknowledged the publish (with
//! replicas > 1, after a quorum stored it); anything else is a 503. Every
//! gateway runs a worker per upstream on that upstream's shared durable
//! consumer, so whichever instance is alive delivers. Retries are
//! nak-with-delay; attempts are JetStream's delivery count; after
//! `max_attempts` or `max_age` the event is copied to the dead-letter
//! stream and acked.
//!
//! `streams` names and sets up what lives on JetStream, `supervise` keeps
//! it set up and runs the workers, `worker` delivers, `admin` serves the
//! operator commands.

pub mod admin;
pub mod streams;
mod supervise;
mod worker;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Delivery, Nats};
use crate::deliver::Context;
use crate::deliver::record::EventRecord;
use streams::{self as js, HDR_COMMAND, HDR_UPSTREAMS, JetStreamError, Names};

use super::{EnqueueError, Notification};
use crate::common::now_ms;

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
    /// The events stream answered the supervisor's last probe.
    stream_reachable: AtomicBool,
    /// The events stream refused a publish for being full (`max_bytes`,
    /// discard new): not ready until it has room again.
    stream_full: AtomicBool,
    /// The size of the publish it refused: the room it needs.
    refused_bytes: AtomicU64,
    accepting: AtomicBool,
    /// Upstreams whose consumer is known to exist: an event is published
    /// only once every consumer it needs exists (interest retention drops
    /// a message no consumer is interested in).
    consumers: Mutex<HashSet<String>>,
    /// Bumped when the events stream was re-created: workers pull from
    /// the new one at once instead of waiting for missed heartbeats.
    stream_epoch: tokio::sync::watch::Sender<u64>,
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
                stream_reachable: AtomicBool::new(false),
                stream_full: AtomicBool::new(false),
                refused_bytes: AtomicU64::new(0),
                accepting: AtomicBool::new(true),
                consumers: Mutex::new(HashSet::new()),
                stream_epoch: tokio::sync::watch::Sender::new(0),
                stop: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        })
    }

    pub fn start(&self, ctx: &Context) {
        let inner = self.inner.clone();
        self.inner
            .tasks
            .spawn(supervise::supervise(inner, ctx.clone()));
    }

    pub fn is_available(&self) -> bool {
        self.inner.is_available()
    }

    pub async fn enqueue(&self, notification: Notification<'_>) -> Result<(), EnqueueError> {
        let Notification {
            fwd,
            command,
            upstreams,
        } = notification;
        let inner = &self.inner;
        if !inner.accepting.load(Ordering::SeqCst) {
            return Err(EnqueueError::ShuttingDown);
        }
        if !inner.set_up.load(Ordering::SeqCst) {
            return Err(EnqueueError::Unavailable(
                "JetStream is not set up yet (is NATS reachable?)".into(),
            ));
        }
        // Fail fast: a publish while disconnected would wait in the
        // client's buffer past the time IM gives us.
        if !inner.connected() {
            return Err(EnqueueError::Unavailable("not connected to NATS".into()));
        }
        let mut headers = HeaderMap::new();
        let targets: Vec<String> = upstreams.iter().map(|u| js::token(u)).collect();
        headers.insert(HDR_UPSTREAMS, targets.join(",").as_str());
        headers.insert(HDR_COMMAND, js::token(command).as_str());
        let payload = Bytes::from(EventRecord::from_forward(fwd, command, now_ms()).encode());
        let id = event_id(&fwd.query, command, &fwd.body);
        let subject = inner.names.event_subject(command);
        let deadline = tokio::time::Instant::now() + inner.cfg.publish_timeout;
        inner
            .publish(subject, headers, payload, &id, upstreams, deadline)
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
        self.set_up.load(Ordering::SeqCst)
            && self.connected()
            && self.stream_reachable.load(Ordering::SeqCst)
            && !self.stream_full.load(Ordering::SeqCst)
    }

    /// The stream refused a publish of `bytes` for want of room.
    fn mark_full(&self, bytes: usize) {
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        self.refused_bytes.store(bytes, Ordering::SeqCst);
        if !self.stream_full.swap(true, Ordering::SeqCst) {
            tracing::warn!(stream = %self.names.stream, "the events stream is full (max_bytes): notifications get 503 and the gateway is not ready until deliveries make room");
        }
    }

    /// The stream has room again (a publish went through, or the
    /// supervisor saw room for the refused one).
    fn mark_room(&self) {
        if self.stream_full.swap(false, Ordering::SeqCst) {
            tracing::info!(stream = %self.names.stream, "the events stream has room again");
        }
    }

    /// After the stream may have been deleted: every consumer is checked
    /// (and made) again before the next publish that needs it.
    fn forget_consumers(&self) {
        if let Ok(mut c) = self.consumers.lock() {
            c.clear();
        }
    }

    fn remember_consumer(&self, upstream: &str) {
        if let Ok(mut c) = self.consumers.lock() {
            c.insert(upstream.to_owned());
        }
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
                self.remember_consumer(name);
            }
        }
        Ok(())
    }

    /// Publishes with message id `id` once the consumers of `upstreams`
    /// exist, retrying what may pass on a second try (no leader for a
    /// moment, a lost acknowledgement, a stream being put back) until
    /// `deadline`; the id makes a repeated publish a no-op.
    async fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
        id: &str,
        upstreams: &[Arc<str>],
        deadline: tokio::time::Instant,
    ) -> Result<(), EnqueueError> {
        loop {
            let consumers = tokio::time::timeout_at(deadline, self.ensure_consumers(upstreams));
            match consumers.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(EnqueueError::Unavailable(e.to_string())),
                Err(_) => {
                    return Err(EnqueueError::Unavailable(
                        "JetStream consumer set-up timed out".into(),
                    ));
                }
            }
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
                Ok(Ok(_ack)) => {
                    self.mark_room();
                    return Ok(());
                }
                Ok(Err(e)) => e,
                Err(_) => {
                    return Err(EnqueueError::Store(
                        "JetStream did not acknowledge the publish in time".into(),
                    ));
                }
            };
            if error.kind() == PublishErrorKind::StreamNotFound {
                // If it comes back, it comes back without our consumers.
                self.forget_consumers();
            }
            if refused_for_room(&error) {
                // What it needs: the message plus its subject and headers.
                self.mark_full(payload.len() + subject.len() + FRAMING);
                return Err(EnqueueError::Full);
            }
            let retry = matches!(
                error.kind(),
                PublishErrorKind::TimedOut
                    | PublishErrorKind::BrokenPipe
                    | PublishErrorKind::StreamNotFound
                    | PublishErrorKind::MaxAckPending
            );
            if !retry || tokio::time::Instant::now() + Duration::from_millis(50) >= deadline {
                return Err(EnqueueError::Store(crate::common::chain(&error)));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Room a stored message takes beyond its payload and subject (headers,
/// sequence, timestamp): a generous estimate, so that "room again" is
/// not said a message too early.
const FRAMING: usize = 512;

/// Whether JetStream refused a publish because the stream is full:
/// with discard-new it answers "maximum bytes (or messages) exceeded"
/// as a store failure.
fn refused_for_room(error: &async_nats::jetstream::context::PublishError) -> bool {
    use std::error::Error as _;
    let Some(js) = error
        .source()
        .and_then(|s| s.downcast_ref::<async_nats::jetstream::Error>())
    else {
        return false;
    };
    let text = js.to_string().to_ascii_lowercase();
    js.error_code() == async_nats::jetstream::ErrorCode::STREAM_STORE_FAILED
        && (text.contains("maximum") || text.contains("resources"))
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
}
