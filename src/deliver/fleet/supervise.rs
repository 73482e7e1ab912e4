//! The fleet backend's supervisor: sets JetStream up (retrying until NATS
//! is there), then, once a second, keeps one worker per configured
//! upstream and checks that the events stream answers (readiness); every
//! few seconds it puts back a stream or consumer someone deleted and
//! refreshes the gauges.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::deliver::Context;
use crate::deliver::fleet::streams::{self as js, JetStreamError};
use crate::snapshot::Snapshot;

use super::{Inner, worker};
use crate::common::now_ms;

/// How often workers are matched to the config and the stream is probed.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// Every how many housekeeping ticks streams and consumers are verified.
const VERIFY_EVERY: u64 = 5;
/// Longest pause between tries to set JetStream up.
const MAX_SETUP_DELAY: Duration = Duration::from_secs(2);
/// How long the readiness probe of the stream may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) async fn supervise(inner: Arc<Inner>, ctx: Context) {
    if !set_up(&inner, &ctx).await {
        return;
    }
    let mut workers: HashMap<Arc<str>, CancellationToken> = HashMap::new();
    let mut generation = 0;
    let mut tick = tokio::time::interval(HOUSEKEEPING);
    let mut ticks = 0u64;
    let mut strangers = HashSet::new();
    let mut failing = false;
    let mut created = None;
    loop {
        tokio::select! {
            _ = inner.stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let snapshot = ctx.load();
        if snapshot.generation != generation {
            generation = snapshot.generation;
            match_workers(&inner, &ctx, &snapshot, &mut workers);
        }
        // The connection can be up while the stream has no leader (a
        // cluster that lost its quorum): readiness asks the stream.
        let probe = inner.admin.get_stream(&inner.names.stream);
        let mut reachable = match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
            Ok(Ok(stream)) => {
                // Re-created since the last look: its consumers are new
                // too, and those this gateway knew of may be missing.
                let born = stream.cached_info().created;
                if created.replace(born).is_some_and(|was| was != born) {
                    inner.forget_consumers();
                    inner.stream_epoch.send_modify(|e| *e += 1);
                }
                room_again(&inner, stream.cached_info());
                // Not yet bound to the events subjects: verifying binds it.
                stream.cached_info().config.subjects == [inner.names.events_filter()]
            }
            // Maybe deleted: consumers are checked again before the
            // next publish.
            _ => {
                inner.forget_consumers();
                false
            }
        };
        ticks += 1;
        // Unreachable may mean deleted: verifying puts it back.
        if (!reachable || ticks.is_multiple_of(VERIFY_EVERY)) && inner.connected() {
            match verify(&inner, &snapshot).await {
                Ok(()) => {
                    reachable = true;
                    failing = false;
                }
                // Once per streak: an outage would repeat it every second.
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "cannot verify the JetStream streams and consumers; not ready until it works");
                }
                Err(_) => {}
            }
        }
        inner.stream_reachable.store(reachable, Ordering::SeqCst);
        ctx.metrics
            .outbox_writable
            .set(i64::from(inner.is_available()));
        if reachable && ticks.is_multiple_of(VERIFY_EVERY) {
            refresh_gauges(&inner, &ctx, &snapshot, &mut strangers).await;
        }
    }
}

/// A stream that refused a publish for being full has room again once
/// the refused message would fit (deliveries acked events away, or an
/// operator raised `max_bytes`).
fn room_again(inner: &Inner, info: &async_nats::jetstream::stream::Info) {
    if !inner.stream_full.load(Ordering::SeqCst) {
        return;
    }
    let need = inner.refused_bytes.load(Ordering::SeqCst);
    let fits = u64::try_from(info.config.max_bytes)
        .map_or(true, |max| info.state.bytes.saturating_add(need) <= max);
    if fits {
        inner.mark_room();
    }
}

/// Creates or checks the streams and this config's consumers, retrying
/// until it works; false if the gateway stopped first.
async fn set_up(inner: &Inner, ctx: &Context) -> bool {
    let mut delay = Duration::from_millis(100);
    let mut tries = 0u32;
    loop {
        let attempt = async {
            js::ensure_streams(&inner.admin, &inner.cfg, &inner.names, true).await?;
            for name in ctx.load().upstreams.keys() {
                let consumer =
                    js::ensure_consumer(&inner.admin, &inner.cfg, &inner.names, name).await?;
                let ack_wait = consumer.cached_info().config.ack_wait;
                if ack_wait != inner.cfg.ack_wait {
                    tracing::warn!(
                        consumer = %inner.names.consumer(name),
                        existing = ?ack_wait,
                        configured = ?inner.cfg.ack_wait,
                        "the consumer exists with another ack_wait, which stays in force (change it with `nats consumer edit`)"
                    );
                }
                inner.remember_consumer(name);
            }
            js::bind_events(&inner.admin, &inner.names).await
        };
        tokio::select! {
            _ = inner.stop.cancelled() => return false,
            r = attempt => match r {
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
            _ = inner.stop.cancelled() => return false,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(MAX_SETUP_DELAY);
    }
    inner.stream_reachable.store(true, Ordering::SeqCst);
    inner.set_up.store(true, Ordering::SeqCst);
    ctx.metrics
        .outbox_writable
        .set(i64::from(inner.is_available()));
    tracing::info!(stream = %inner.names.stream, "JetStream ready: notifications are stored in NATS");
    true
}

/// Starts a worker for each upstream of the config, stops those whose
/// upstream is gone. A removed upstream's consumer stays: other gateways
/// of the fleet may still route to it.
fn match_workers(
    inner: &Arc<Inner>,
    ctx: &Context,
    snapshot: &Snapshot,
    workers: &mut HashMap<Arc<str>, CancellationToken>,
) {
    for name in snapshot.upstreams.keys() {
        if !workers.contains_key(name) {
            let stop = inner.stop.child_token();
            inner.tasks.spawn(worker::work(
                inner.clone(),
                ctx.clone(),
                name.clone(),
                stop.clone(),
            ));
            workers.insert(name.clone(), stop);
        }
    }
    workers.retain(|name, stop| {
        let keep = snapshot.upstreams.contains_key(name);
        if !keep {
            stop.cancel();
        }
        keep
    });
}

/// Puts back what an operator (or a NATS restore) deleted: the streams
/// and this config's consumers. Existing settings are left as they are,
/// so gateways with different configs during a rollout do not fight.
async fn verify(inner: &Inner, snapshot: &Snapshot) -> Result<(), JetStreamError> {
    js::ensure_streams(&inner.admin, &inner.cfg, &inner.names, false).await?;
    for name in snapshot.upstreams.keys() {
        js::ensure_consumer(&inner.admin, &inner.cfg, &inner.names, name).await?;
        inner.remember_consumer(name);
    }
    js::bind_events(&inner.admin, &inner.names).await
}

/// Fleet-wide figures from JetStream: the age of the oldest event not
/// yet done, deliveries not yet done (per consumer of this config: not
/// yet looked at, plus in flight) and dead letters. Warns once about a consumer of ours that this config does
/// not use: if no gateway uses it, it holds every event and fills the
/// stream.
async fn refresh_gauges(
    inner: &Inner,
    ctx: &Context,
    snapshot: &Snapshot,
    strangers: &mut HashSet<String>,
) {
    let Ok(stream) = inner.admin.get_stream(&inner.names.stream).await else {
        return;
    };
    // Interest retention keeps a message until every consumer acked it,
    // so the stream's first message is the oldest event some upstream
    // still waits for (or that an unused consumer holds).
    let state = &stream.cached_info().state;
    let oldest = if state.messages == 0 {
        0
    } else {
        let now = i64::try_from(now_ms() / 1000).unwrap_or(i64::MAX);
        (now - state.first_timestamp.unix_timestamp()).max(0)
    };
    ctx.metrics.outbox_oldest.set(oldest);
    let ours: HashSet<String> = snapshot
        .upstreams
        .keys()
        .map(|u| inner.names.consumer(u))
        .collect();
    let prefix = format!("{}-", inner.cfg.consumer_prefix);
    let mut pending = 0u64;
    let mut consumers = stream.consumers();
    while let Some(Ok(info)) = consumers.next().await {
        if ours.contains(&info.name) {
            pending += info.num_pending + info.num_ack_pending as u64;
        } else if info.name.starts_with(&prefix) && strangers.insert(info.name.clone()) {
            tracing::warn!(
                consumer = %info.name,
                waiting = info.num_pending + info.num_ack_pending as u64,
                "a callgate consumer for an upstream this config does not have; if no gateway uses it any more, delete it (`nats consumer rm`): until then it keeps every event in the stream"
            );
        }
    }
    let metrics = &ctx.metrics;
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
