//! What `callgate outbox` does on the nats backend: counts, listings,
//! replay and purge of dead letters. Unlike the embedded outbox, the
//! stream can be worked on while the fleet runs.

use std::collections::BTreeMap;

use async_nats::HeaderMap;
use async_nats::jetstream;
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::message::{PublishMessage, StreamMessage};
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use futures_util::StreamExt;

use super::streams::{
    self, HDR_ATTEMPTS, HDR_COMMAND, HDR_ERROR, HDR_UPSTREAM, HDR_UPSTREAMS, JetStreamError, Names,
    setup, token, untoken,
};
use crate::common::chain;
use crate::config::Nats;
use crate::deliver::record::EventRecord;

/// The backend's figures, fleet-wide.
#[derive(Debug, Default)]
pub struct Stats {
    /// Events in the stream (each waits for at least one upstream).
    pub events: u64,
    /// Per upstream: events its consumer has not finished with.
    pub pending: BTreeMap<String, u64>,
    pub dead: u64,
    pub dead_by_upstream: BTreeMap<String, u64>,
}

/// One event or dead letter, as `outbox list` prints it.
#[derive(Debug)]
pub struct Letter {
    pub seq: u64,
    pub upstream: String,
    pub attempts: String,
    pub received_ms: u64,
    pub request_id: String,
    pub command: String,
    pub error: String,
}

/// The CLI's view of the backend: a fail-fast connection.
pub struct Admin {
    js: jetstream::Context,
    cfg: Nats,
    names: Names,
}

impl Admin {
    pub async fn connect(cfg: &Nats) -> Result<Self, JetStreamError> {
        let client = streams::connect(cfg, false).await?;
        Ok(Self {
            js: streams::admin_context(client),
            cfg: cfg.clone(),
            names: Names::new(cfg),
        })
    }

    async fn stream(&self, name: &str) -> Result<Stream, JetStreamError> {
        self.js
            .get_stream(name)
            .await
            .map_err(|e| setup(format!("stream {name}"), chain(&e)))
    }

    pub async fn stats(&self) -> Result<Stats, JetStreamError> {
        let mut stats = Stats::default();
        let mut events = self.stream(&self.names.stream).await?;
        stats.events = events
            .info()
            .await
            .map_err(|e| setup("stream info", chain(&e)))?
            .state
            .messages;
        let prefix = format!("{}-", self.cfg.consumer_prefix);
        let mut consumers = events.consumers();
        while let Some(info) = consumers.next().await {
            let info = info.map_err(|e| setup("consumer list", chain(&e)))?;
            if let Some(t) = info.name.strip_prefix(&prefix) {
                stats
                    .pending
                    .insert(untoken(t), info.num_pending + info.num_ack_pending as u64);
            }
        }
        let dead = self.stream(&self.names.dead_stream).await?;
        let mut subjects = dead
            .info_with_subjects(self.names.dead_filter())
            .await
            .map_err(|e| setup("dead-letter stream info", chain(&e)))?;
        while let Some(item) = subjects.next().await {
            let (subject, n) = item.map_err(|e| setup("dead-letter subjects", chain(&e)))?;
            let upstream = subject.rsplit('.').next().map(untoken).unwrap_or_default();
            stats.dead += n as u64;
            *stats.dead_by_upstream.entry(upstream).or_default() += n as u64;
        }
        Ok(stats)
    }

    /// Dead letters, oldest first, at most `limit`; and how many there
    /// are in all.
    pub async fn dead_letters(&self, limit: usize) -> Result<(Vec<Letter>, u64), JetStreamError> {
        let mut dead = self.stream(&self.names.dead_stream).await?;
        let total = dead
            .info()
            .await
            .map_err(|e| setup("dead-letter stream info", chain(&e)))?
            .state
            .messages;
        let filter = self.names.dead_filter();
        let mut letters = Vec::new();
        let mut seq = 1;
        while letters.len() < limit {
            let Some(message) = next(&dead, &filter, seq).await? else {
                break;
            };
            seq = message.sequence + 1;
            letters.extend(self.dead_letter(&message));
        }
        Ok((letters, total))
    }

    fn dead_letter(&self, message: &StreamMessage) -> Option<Letter> {
        let h = &message.headers;
        let get = |name: &str| h.get(name).map(|v| v.as_str().to_owned());
        let event = EventRecord::decode(&message.payload).ok();
        Some(Letter {
            seq: message.sequence,
            upstream: untoken(&get(HDR_UPSTREAM)?),
            attempts: get(HDR_ATTEMPTS).unwrap_or_else(|| "-".into()),
            received_ms: event.as_ref().map_or(0, |e| e.received_ms),
            request_id: event
                .as_ref()
                .map_or_else(|| "-".into(), |e| e.request_id.clone()),
            command: get(HDR_COMMAND).map_or_else(|| "-".into(), |c| untoken(&c)),
            error: get(HDR_ERROR).unwrap_or_default(),
        })
    }

    /// Pending deliveries, oldest first, at most `limit`: for each event
    /// in the stream, each upstream it is for whose consumer has not
    /// passed it yet. The flag says whether there are more.
    pub async fn pending(&self, limit: usize) -> Result<(Vec<Letter>, bool), JetStreamError> {
        let events = self.stream(&self.names.stream).await?;
        let prefix = format!("{}-", self.cfg.consumer_prefix);
        let mut floors = BTreeMap::new();
        let mut consumers = events.consumers();
        while let Some(info) = consumers.next().await {
            let info = info.map_err(|e| setup("consumer list", chain(&e)))?;
            if let Some(t) = info.name.strip_prefix(&prefix) {
                floors.insert(untoken(t), info.ack_floor.stream_sequence);
            }
        }
        let filter = self.names.events_filter();
        let mut rows = Vec::new();
        let mut seq = 1;
        while rows.len() <= limit {
            let Some(message) = next(&events, &filter, seq).await? else {
                break;
            };
            seq = message.sequence + 1;
            let event = EventRecord::decode(&message.payload).ok();
            for upstream in streams::upstreams_of(Some(&message.headers)) {
                if floors
                    .get(&upstream)
                    .is_some_and(|f| *f >= message.sequence)
                {
                    continue;
                }
                rows.push(Letter {
                    seq: message.sequence,
                    upstream,
                    attempts: "-".into(),
                    received_ms: event.as_ref().map_or(0, |e| e.received_ms),
                    request_id: event
                        .as_ref()
                        .map_or_else(|| "-".into(), |e| e.request_id.clone()),
                    command: event
                        .as_ref()
                        .map_or_else(|| "-".into(), |e| e.command.clone()),
                    error: String::new(),
                });
            }
        }
        let more = rows.len() > limit;
        rows.truncate(limit);
        Ok((rows, more))
    }

    /// Puts dead letters (of `upstream`, or all) back on the events stream
    /// for their upstream alone, with fresh attempts, and removes them
    /// from the dead-letter stream. Returns how many.
    pub async fn replay_dead(&self, upstream: Option<&str>) -> Result<usize, JetStreamError> {
        let dead = self.stream(&self.names.dead_stream).await?;
        let filter = match upstream {
            Some(u) => self.names.dead_subject(u),
            None => self.names.dead_filter(),
        };
        let mut replayed = 0;
        let mut seq = 1;
        while let Some(message) = next(&dead, &filter, seq).await? {
            seq = message.sequence + 1;
            let Some(letter) = self.dead_letter(&message) else {
                continue;
            };
            // Interest retention keeps a message only for existing consumers.
            streams::ensure_consumer(&self.js, &self.cfg, &self.names, &letter.upstream).await?;
            let command = message
                .headers
                .get(HDR_COMMAND)
                .map_or("other", |v| v.as_str());
            let mut headers = HeaderMap::new();
            headers.insert(HDR_UPSTREAMS, token(&letter.upstream).as_str());
            headers.insert(HDR_COMMAND, command);
            let publish = PublishMessage::build()
                .payload(message.payload.clone())
                .headers(headers)
                // Replaying the same letter twice stores it once.
                .message_id(format!(
                    "replay.{}.{}",
                    self.names.dead_stream, message.sequence
                ));
            let subject = format!("{}.events.{command}", self.cfg.subject);
            async { self.js.send_publish(subject, publish).await?.await }
                .await
                .map_err(|e| setup("replay publish", chain(&e)))?;
            dead.delete_message(message.sequence)
                .await
                .map_err(|e| setup("dead letter delete", chain(&e)))?;
            replayed += 1;
        }
        Ok(replayed)
    }

    /// Deletes dead letters (of `upstream`, or all). Returns how many.
    pub async fn purge_dead(&self, upstream: Option<&str>) -> Result<u64, JetStreamError> {
        let dead = self.stream(&self.names.dead_stream).await?;
        let purge = match upstream {
            Some(u) => dead.purge().filter(self.names.dead_subject(u)).await,
            None => dead.purge().await,
        };
        purge
            .map(|r| r.purged)
            .map_err(|e| setup("dead letter purge", chain(&e)))
    }
}

/// The first message at or after `seq` on `subject` (wildcards allowed),
/// or `None` past the last: walks a stream without stepping through the
/// gaps that acks and deletes leave.
async fn next(
    stream: &Stream,
    subject: &str,
    seq: u64,
) -> Result<Option<StreamMessage>, JetStreamError> {
    match stream.get_first_raw_message_by_subject(subject, seq).await {
        Ok(m) => Ok(Some(m)),
        Err(e) => match e.kind() {
            LastRawMessageErrorKind::NoMessageFound => Ok(None),
            LastRawMessageErrorKind::JetStream(j)
                if j.error_code() == ErrorCode::NO_MESSAGE_FOUND =>
            {
                Ok(None)
            }
            _ => Err(setup("stream read", chain(&e))),
        },
    }
}
