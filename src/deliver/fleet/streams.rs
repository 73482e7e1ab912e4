//! NATS JetStream as the notification store of a fleet: the connection,
//! the names of streams, subjects and consumers, and how an event is laid
//! out in a message. The delivery side is the rest of
//! `deliver::fleet`; the operator commands are in `admin`.
//!
//! Layout: one events stream (interest retention) on
//! `<subject>.events.<command>`, read by one durable pull consumer per
//! upstream that every gateway of the fleet shares, so any instance
//! delivers any event and each consumer sees each event once. A message
//! carries the upstreams its route chose (a header); a consumer acks
//! events that are not for it at once. Dead letters go to a second stream
//! on `<subject>.dead.<upstream>`.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};

use crate::common::chain;
use crate::config::Nats;

pub const HDR_UPSTREAMS: &str = "Callgate-Upstreams";
pub const HDR_COMMAND: &str = "Callgate-Command";
pub const HDR_UPSTREAM: &str = "Callgate-Upstream";
pub const HDR_ATTEMPTS: &str = "Callgate-Attempts";
pub const HDR_ERROR: &str = "Callgate-Error";
pub const HDR_EVENT: &str = "Callgate-Event";

/// How long stream and consumer management calls may take (a replicated
/// stream's creation waits for its peers).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum JetStreamError {
    #[error("cannot connect to NATS ({servers}): {detail}")]
    Connect { servers: String, detail: String },
    #[error("cannot read NATS credentials {path}: {detail}")]
    Credentials { path: String, detail: String },
    #[error("NATS TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("JetStream {what}: {detail}")]
    Setup { what: String, detail: String },
}

pub(super) fn setup(what: impl Into<String>, e: impl std::fmt::Display) -> JetStreamError {
    JetStreamError::Setup {
        what: what.into(),
        detail: e.to_string(),
    }
}

/// Every name the backend uses, derived from `delivery.nats`.
#[derive(Debug, Clone)]
pub struct Names {
    pub stream: String,
    pub dead_stream: String,
    subject: String,
    consumer_prefix: String,
}

impl Names {
    pub fn new(cfg: &Nats) -> Self {
        Self {
            stream: cfg.stream.clone(),
            dead_stream: cfg.dead_stream.clone(),
            subject: cfg.subject.clone(),
            consumer_prefix: cfg.consumer_prefix.clone(),
        }
    }

    pub fn event_subject(&self, command: &str) -> String {
        format!("{}.events.{}", self.subject, token(command))
    }

    pub fn events_filter(&self) -> String {
        format!("{}.events.>", self.subject)
    }

    /// The subject a new events stream listens on until its consumers
    /// exist (see `ensure_streams`); nothing is published there.
    pub fn events_unbound(&self) -> String {
        format!("{}.unbound", self.subject)
    }

    pub fn dead_subject(&self, upstream: &str) -> String {
        format!("{}.dead.{}", self.subject, token(upstream))
    }

    pub fn dead_filter(&self) -> String {
        format!("{}.dead.>", self.subject)
    }

    pub fn consumer(&self, upstream: &str) -> String {
        format!("{}-{}", self.consumer_prefix, token(upstream))
    }
}

/// Encodes a name (a command, an upstream) so that it is one subject
/// token, part of a consumer name and a header value: letters, digits,
/// `_` and `-` stay, every other byte becomes `~XX`.
pub fn token(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("~{b:02X}"));
        }
    }
    out
}

/// The inverse of [`token`] (lossy on input it never produced).
pub fn untoken(token: &str) -> String {
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'~'
            && let Some(hex) = token.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The upstreams an event is for, as its header carries them.
pub fn upstreams_of(headers: Option<&HeaderMap>) -> Vec<String> {
    headers
        .and_then(|h| h.get(HDR_UPSTREAMS))
        .map(|v| v.as_str().split(',').map(untoken).collect())
        .unwrap_or_default()
}

pub fn header<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    headers.and_then(|h| h.get(name)).map(|v| v.as_str())
}

/// Connects to the cluster. `patient`: the gateway's way (return at once
/// and keep trying in the background, so the gateway starts and reports
/// not-ready while NATS is away); otherwise fail fast (the CLI).
pub async fn connect(cfg: &Nats, patient: bool) -> Result<async_nats::Client, JetStreamError> {
    let mut options = async_nats::ConnectOptions::new()
        .name("callgate")
        .connection_timeout(Duration::from_secs(3))
        // Back off to at most 1 s between reconnects: NATS coming back
        // should be noticed within a second or two.
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis(50u64.saturating_mul(1 << attempts.min(5)).min(1000))
        });
    if patient {
        options = options.retry_on_initial_connect();
    }
    if let Some(path) = &cfg.credentials {
        options =
            options
                .credentials_file(path)
                .await
                .map_err(|e| JetStreamError::Credentials {
                    path: path.display().to_string(),
                    detail: e.to_string(),
                })?;
    }
    if let (Some(user), Some(password)) = (&cfg.user, &cfg.password) {
        options = options.user_and_password(user.clone(), password.expose().to_owned());
    }
    if let Some(token) = &cfg.token {
        options = options.token(token.expose().to_owned());
    }
    if let Some(tls) = &cfg.tls {
        let identity = tls.cert.as_deref().zip(tls.key.as_deref());
        let config = crate::tls::client_config(tls.ca.as_deref(), identity)?;
        options = options.require_tls(true).tls_client_config(config);
    }
    let servers: Vec<async_nats::ServerAddr> =
        cfg.servers.iter().filter_map(|s| s.parse().ok()).collect();
    options
        .connect(servers)
        .await
        .map_err(|e| JetStreamError::Connect {
            servers: cfg.servers.join(","),
            detail: crate::common::chain(&e),
        })
}

/// A JetStream context for stream and consumer management.
pub fn admin_context(client: async_nats::Client) -> jetstream::Context {
    let mut js = jetstream::new(client);
    js.set_timeout(ADMIN_TIMEOUT);
    js
}

/// A file-backed stream with the config's replicas, size bound and
/// duplicate window. Full, it refuses new messages (IM gets 503) rather
/// than dropping old ones.
fn stream_config(
    name: String,
    subject: String,
    retention: stream::RetentionPolicy,
    cfg: &Nats,
) -> stream::Config {
    stream::Config {
        name,
        subjects: vec![subject],
        retention,
        storage: stream::StorageType::File,
        num_replicas: cfg.replicas,
        max_bytes: i64::try_from(cfg.max_bytes).unwrap_or(i64::MAX),
        discard: stream::DiscardPolicy::New,
        duplicate_window: cfg.duplicate_window,
        ..Default::default()
    }
}

/// Creates the two streams, or checks that the existing ones fit.
/// Idempotent: every gateway of a fleet runs it at start. With `update`,
/// an existing stream whose replicas, size bound or duplicate window
/// differ from the config is updated to it.
///
/// A new events stream starts on a subject nobody publishes to, and
/// `bind_events` moves it to the events subjects once the consumers
/// exist: an interest-retention stream acknowledges, then drops, a
/// message published while it has no consumer, and IM would have had a
/// 200 for a lost event.
pub async fn ensure_streams(
    js: &jetstream::Context,
    cfg: &Nats,
    names: &Names,
    update: bool,
) -> Result<(), JetStreamError> {
    // A message of the events stream stays until every upstream's
    // consumer acked it; dead letters stay until an operator acts.
    let events = stream_config(
        names.stream.clone(),
        names.events_unbound(),
        stream::RetentionPolicy::Interest,
        cfg,
    );
    let dead = stream_config(
        names.dead_stream.clone(),
        names.dead_filter(),
        stream::RetentionPolicy::Limits,
        cfg,
    );
    let bound = [names.events_filter()];
    for wanted in [events, dead] {
        let name = wanted.name.clone();
        let retention = wanted.retention;
        let mut s = js
            .get_or_create_stream(wanted.clone())
            .await
            .map_err(|e| setup(format!("stream {name}"), chain(&e)))?;
        let info = s
            .info()
            .await
            .map_err(|e| setup(format!("stream {name}"), chain(&e)))?;
        let c = &info.config;
        let subjects_fit =
            c.subjects == wanted.subjects || (name == names.stream && c.subjects == bound);
        if c.retention != retention || !subjects_fit {
            return Err(setup(
                format!("stream {name}"),
                format!(
                    "exists with retention {:?} and subjects {:?}; callgate needs {retention:?} on {:?} (use another delivery.nats.stream name, or delete it)",
                    c.retention, c.subjects, wanted.subjects
                ),
            ));
        }
        let differs = c.num_replicas != wanted.num_replicas
            || c.max_bytes != wanted.max_bytes
            || c.duplicate_window != wanted.duplicate_window
            || c.discard != wanted.discard;
        if update && differs {
            // Subjects as they are: binding is `bind_events`' job.
            let settings = stream::Config {
                subjects: c.subjects.clone(),
                ..wanted
            };
            js.update_stream(&settings)
                .await
                .map_err(|e| setup(format!("stream {name} update"), chain(&e)))?;
            tracing::info!(stream = %name, replicas = settings.num_replicas, max_bytes = settings.max_bytes, "stream settings updated to the config");
        }
    }
    Ok(())
}

/// Moves a new events stream to the events subjects; call once this
/// config's consumers exist. A no-op on a bound stream.
pub async fn bind_events(js: &jetstream::Context, names: &Names) -> Result<(), JetStreamError> {
    let what = || format!("stream {}", names.stream);
    let mut s = js
        .get_stream(&names.stream)
        .await
        .map_err(|e| setup(what(), chain(&e)))?;
    let info = s.info().await.map_err(|e| setup(what(), chain(&e)))?;
    if info.config.subjects != [names.events_unbound()] {
        return Ok(());
    }
    let settings = stream::Config {
        subjects: vec![names.events_filter()],
        ..info.config.clone()
    };
    js.update_stream(&settings)
        .await
        .map_err(|e| setup(format!("stream {} binding", names.stream), chain(&e)))?;
    tracing::info!(stream = %names.stream, subjects = %names.events_filter(), "events stream created and bound to its subjects");
    Ok(())
}

/// Creates (or finds) the durable consumer that delivers to `upstream`.
pub async fn ensure_consumer(
    js: &jetstream::Context,
    cfg: &Nats,
    names: &Names,
    upstream: &str,
) -> Result<consumer::PullConsumer, JetStreamError> {
    let name = names.consumer(upstream);
    let stream = js
        .get_stream(&names.stream)
        .await
        .map_err(|e| setup(format!("stream {}", names.stream), chain(&e)))?;
    stream
        .get_or_create_consumer(
            &name,
            consumer::pull::Config {
                durable_name: Some(name.clone()),
                description: Some(format!("callgate deliveries to upstream {upstream}")),
                deliver_policy: consumer::DeliverPolicy::All,
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: cfg.ack_wait,
                // callgate counts attempts itself and dead-letters.
                max_deliver: -1,
                // No filter: the stream holds events only, and a filter
                // would not fit a stream not yet bound to its subjects.
                max_ack_pending: 10_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| setup(format!("consumer {name}"), chain(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_safe_and_reversible() {
        for name in [
            "legacy",
            "a.b",
            "x y*>",
            "环境",
            "a~b",
            "Group.CallbackAfterNewMember",
        ] {
            let t = token(name);
            assert!(
                t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-~".contains(&b)),
                "{t}"
            );
            assert_eq!(untoken(&t), name);
        }
        assert_eq!(token("legacy-1"), "legacy-1");
    }
}
