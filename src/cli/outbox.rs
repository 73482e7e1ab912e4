//! `callgate outbox`: inspect and repair where notifications wait.
//! Embedded backend: the outbox of a stopped gateway (a running gateway
//! locks the store, so no operator action races a delivery). Nats backend:
//! the fleet's streams, while it runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::common::now_ms;
use crate::config::{Backend, Config, Nats};
use crate::deliver::embedded::{Row, Store};
use crate::deliver::fleet::admin::Admin;

#[derive(Args, Debug)]
pub struct OutboxArgs {
    /// Config file naming the outbox (delivery.outbox) [default: $CALLGATE_CONFIG, else routes.yaml]
    #[arg(
        short = 'c',
        long = "config",
        env = "CALLGATE_CONFIG",
        default_value = "routes.yaml",
        global = true
    )]
    pub config: PathBuf,
    /// The outbox folder itself, instead of reading it from the config
    #[arg(long, global = true)]
    pub outbox: Option<PathBuf>,
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Subcommand, Debug)]
pub enum Action {
    /// Counts of events, pending deliveries and dead letters, per upstream.
    Stats,
    /// Lists pending deliveries (or dead letters with --dead).
    List {
        #[arg(long)]
        dead: bool,
        /// Show at most this many
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Makes deliveries due at once with fresh attempts: pending ones, or dead letters with --dead.
    Replay {
        #[arg(long)]
        dead: bool,
        /// Only deliveries to this upstream
        #[arg(long)]
        upstream: Option<String>,
    },
    /// Deletes dead letters.
    Purge {
        /// Required: only dead letters are ever purged
        #[arg(long, required = true)]
        dead: bool,
        /// Only dead letters of this upstream
        #[arg(long)]
        upstream: Option<String>,
    },
}

/// Which store the command works on.
pub enum Target {
    Embedded(PathBuf),
    Nats(Box<Nats>),
}

/// Where notifications are kept, and whether `Config::load` failed (a
/// config error). `--outbox` always means an embedded outbox folder.
pub fn target(args: &OutboxArgs) -> Result<Target, crate::config::ConfigError> {
    if let Some(dir) = &args.outbox {
        return Ok(Target::Embedded(dir.clone()));
    }
    let config = Config::load(&args.config)?;
    Ok(match (config.delivery.backend, config.delivery.nats) {
        (Backend::Nats, Some(nats)) => Target::Nats(Box::new(nats)),
        _ => Target::Embedded(config.delivery.outbox),
    })
}

/// The same actions on the nats backend.
pub async fn run_nats(cfg: &Nats, action: &Action) -> anyhow::Result<()> {
    let admin = Admin::connect(cfg).await?;
    match action {
        Action::Stats => {
            let stats = admin.stats().await?;
            out!("stream: {} (dead letters: {})", cfg.stream, cfg.dead_stream);
            out!("events: {}", stats.events);
            out!(
                "pending deliveries: {}",
                stats.pending.values().sum::<u64>()
            );
            for (upstream, n) in &stats.pending {
                out!("  {upstream}: {n}");
            }
            out!("dead letters: {}", stats.dead);
            for (upstream, n) in &stats.dead_by_upstream {
                out!("  {upstream}: {n}");
            }
        }
        Action::List { dead, limit } => {
            let (rows, more) = if *dead {
                let (rows, total) = admin.dead_letters(*limit).await?;
                let more = (rows.len() as u64) < total;
                (rows, more)
            } else {
                admin.pending(*limit).await?
            };
            print_header();
            for r in &rows {
                print_row(
                    r.seq,
                    &r.upstream,
                    &r.attempts,
                    r.received_ms,
                    &r.request_id,
                    &r.command,
                    &r.error,
                );
            }
            if more {
                out!("... and more (--limit)");
            }
        }
        Action::Replay { dead: false, .. } => anyhow::bail!(
            "on the nats backend JetStream schedules pending redeliveries itself; only dead letters can be replayed (--dead)"
        ),
        Action::Replay {
            dead: true,
            upstream,
        } => {
            let n = admin.replay_dead(upstream.as_deref()).await?;
            out!("{n} dead letters put back on the stream; the fleet delivers them now");
        }
        Action::Purge { upstream, .. } => {
            let n = admin.purge_dead(upstream.as_deref()).await?;
            out!("{n} dead letters deleted");
        }
    }
    Ok(())
}

fn print_header() {
    out!(
        "{:>10}  {:<16} {:>8}  {:<10} {:<34} {:<40} last error",
        "event",
        "upstream",
        "attempts",
        "age",
        "request id",
        "command"
    );
}

fn print_row(
    id: u64,
    upstream: &str,
    attempts: &str,
    created_ms: u64,
    request_id: &str,
    command: &str,
    error: &str,
) {
    out!(
        "{id:>10}  {upstream:<16} {attempts:>8}  {:<10} {request_id:<34} {command:<40} {error}",
        age(created_ms)
    );
}

pub fn run(dir: &Path, action: &Action) -> anyhow::Result<()> {
    if !dir.join(crate::deliver::embedded::FILE_NAME).exists() {
        anyhow::bail!(
            "no outbox at {} (nothing was ever queued there)",
            dir.display()
        );
    }
    let store =
        Store::open(dir).with_context(|| format!("cannot open the outbox in {}", dir.display()))?;
    match action {
        Action::Stats => stats(&store),
        Action::List { dead, limit } => list(&store, *dead, *limit),
        Action::Replay { dead, upstream } => {
            let n = store.replay(*dead, upstream.as_deref(), now_ms())?;
            let what = if *dead {
                "dead letters moved back to pending"
            } else {
                "pending deliveries made due now"
            };
            out!("{n} {what}; they are delivered when the gateway starts");
            Ok(())
        }
        Action::Purge { upstream, .. } => {
            let n = store.purge_dead(upstream.as_deref())?;
            out!("{n} dead letters deleted");
            Ok(())
        }
    }
}

fn stats(store: &Store) -> anyhow::Result<()> {
    let (events, pending, dead) = store.counts()?;
    out!("outbox: {}", store.path().display());
    out!("events: {events}");
    out!("pending deliveries: {pending}");
    print_by_upstream(&store.rows(false)?);
    out!("dead letters: {dead}");
    print_by_upstream(&store.rows(true)?);
    if let Some(oldest) = store.rows(false)?.iter().map(|r| r.record.created_ms).min() {
        out!("oldest pending: {}", age(oldest));
    }
    Ok(())
}

fn print_by_upstream(rows: &[Row]) {
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for r in rows {
        *counts.entry(r.upstream.as_str()).or_default() += 1;
    }
    for (upstream, n) in counts {
        out!("  {upstream}: {n}");
    }
}

fn list(store: &Store, dead: bool, limit: usize) -> anyhow::Result<()> {
    let rows = store.rows(dead)?;
    print_header();
    for row in rows.iter().take(limit) {
        let (request_id, command) = match store.event(row.id)? {
            Some(e) => (e.request_id, e.command),
            None => ("-".into(), "-".into()),
        };
        print_row(
            row.id,
            &row.upstream,
            &row.record.attempts.to_string(),
            row.record.created_ms,
            &request_id,
            &command,
            &row.record.last_error,
        );
    }
    if rows.len() > limit {
        out!("... and {} more (--limit)", rows.len() - limit);
    }
    Ok(())
}

fn age(created_ms: u64) -> String {
    let secs = now_ms().saturating_sub(created_ms) / 1000;
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}
