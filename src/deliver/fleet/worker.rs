//! A fleet worker: delivers the events of one upstream's shared durable
//! consumer, at most `BATCH` at once, and settles each message: ack on
//! success, nak-with-delay to retry, copy to the dead-letter stream and
//! ack when it is hopeless.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::common::{DeliveryResult, now_ms};
use crate::deliver::Context;
use crate::deliver::fleet::streams::{
    self as js, HDR_ATTEMPTS, HDR_COMMAND, HDR_ERROR, HDR_EVENT, HDR_UPSTREAM, JetStreamError,
};
use crate::deliver::record::EventRecord;
use crate::deliver::{Attempt, backoff};

use super::Inner;

/// Messages a worker pulls at once, and attempts it runs at once. Small:
/// what a stopping gateway holds unacked waits `ack_wait` before another
/// instance gets it.
const BATCH: usize = 32;

/// Delivers from `upstream`'s consumer until stopped, at most `BATCH`
/// attempts at once; on any consumer trouble, starts over after a pause.
pub(super) async fn work(
    inner: Arc<Inner>,
    ctx: Context,
    upstream: Arc<str>,
    stop: CancellationToken,
) {
    let mut attempts = JoinSet::new();
    let mut epoch = inner.stream_epoch.subscribe();
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
                    detail: crate::common::chain(&e),
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
                // The stream was re-created: its consumer is a new one.
                Ok(()) = epoch.changed() => continue 'consumer,
                Some(_) = attempts.join_next(), if !attempts.is_empty() => {}
                next = messages.next() => match next {
                    Some(Ok(message)) => {
                        attempts.spawn(handle(inner.clone(), ctx.clone(), upstream.clone(), message));
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

/// One message being settled for one upstream.
struct Job<'a> {
    inner: &'a Inner,
    ctx: &'a Context,
    upstream: &'a str,
    message: &'a jetstream::Message,
    /// JetStream's delivery count: 1 on the first attempt.
    attempt: u32,
}

async fn handle(inner: Arc<Inner>, ctx: Context, upstream: Arc<str>, message: jetstream::Message) {
    if !js::upstreams_of(message.headers.as_ref())
        .iter()
        .any(|u| **u == *upstream)
    {
        // Not for this upstream: this consumer is done with it.
        let _ = message.ack().await;
        return;
    }
    let job = Job {
        inner: &inner,
        ctx: &ctx,
        upstream: &upstream,
        message: &message,
        attempt: message
            .info()
            .map(|i| u32::try_from(i.delivered).unwrap_or(u32::MAX))
            .unwrap_or(1),
    };
    let event = match EventRecord::decode(&message.payload) {
        Ok(e) => e,
        Err(e) => return job.dead_letter("-", e.to_string()).await,
    };
    let snapshot = ctx.load();
    let settings = &snapshot.config.delivery;
    let Some(client) = snapshot.upstream(&upstream).cloned() else {
        // This gateway's config lost the upstream; another may have it.
        let _ = message
            .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
            .await;
        return;
    };
    let fwd = event.to_forward();
    let attempt = crate::deliver::post(&client, &fwd);
    let outcome = with_progress(&message, inner.cfg.ack_wait, attempt).await;
    let metrics = &ctx.metrics;
    let age = Duration::from_millis(now_ms().saturating_sub(event.received_ms));
    let request_id = event.request_id.as_str();
    match outcome {
        Attempt::Delivered => {
            if let Err(e) = message.double_ack().await {
                tracing::warn!(upstream = %upstream, request_id, error = %e, "delivered, but the ack was lost: JetStream may deliver it again");
            }
            metrics.delivery(&upstream, DeliveryResult::Delivered);
            metrics.delivery_latency.observe(age.as_secs_f64());
        }
        Attempt::Failed(e) if job.attempt >= settings.max_attempts => {
            job.dead_letter(request_id, e).await;
        }
        Attempt::Failed(e) if age >= settings.max_age => {
            job.dead_letter(request_id, format!("{e} (older than max_age)"))
                .await;
        }
        Attempt::Failed(e) => {
            let delay = backoff(settings, job.attempt);
            tracing::debug!(upstream = %upstream, request_id, attempt = job.attempt, error = %e, ?delay, "notification will be retried");
            metrics.delivery(&upstream, DeliveryResult::Retried);
            let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
        }
        Attempt::Hopeless(e) => job.dead_letter(request_id, e).await,
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
impl Job<'_> {
    async fn dead_letter(&self, request_id: &str, error: String) {
        let Job {
            inner,
            ctx,
            upstream,
            message,
            attempt: attempts,
        } = *self;
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
                ctx.metrics.delivery(upstream, DeliveryResult::Dead);
                tracing::warn!(upstream, attempts, request_id, event = %event, error = %error, "notification dead-lettered");
            }
            Err(e) => {
                tracing::warn!(upstream, error = %crate::common::chain(&e), "cannot store a dead letter; the event stays and is tried again");
                let _ = message
                    .ack_with(AckKind::Nak(Some(inner.cfg.ack_wait)))
                    .await;
            }
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
    fn header_text_is_one_bounded_line() {
        let t = header_text(&format!("a\r\nb{}", "x".repeat(1000)));
        assert!(!t.contains(['\r', '\n']));
        assert_eq!(t.chars().count(), 400);
    }
}
