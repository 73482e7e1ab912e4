//! `callgate outbox`: inspect and repair the outbox of a stopped gateway.
//! The store is locked by a running gateway, so these commands refuse to
//! touch it then (no operator action races a delivery).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::config::Config;
use crate::deliver::now_ms;
use crate::outbox::{Row, Store};

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

/// Where the outbox is, and whether `Config::load` failed (a config error).
pub fn folder(args: &OutboxArgs) -> Result<PathBuf, crate::config::ConfigError> {
    match &args.outbox {
        Some(dir) => Ok(dir.clone()),
        None => Config::load(&args.config).map(|c| c.delivery.outbox),
    }
}

pub fn run(dir: &Path, action: &Action) -> anyhow::Result<()> {
    if !dir.join(crate::outbox::store::FILE_NAME).exists() {
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
            println!("{n} {what}; they are delivered when the gateway starts");
            Ok(())
        }
        Action::Purge { upstream, .. } => {
            let n = store.purge_dead(upstream.as_deref())?;
            println!("{n} dead letters deleted");
            Ok(())
        }
    }
}

fn stats(store: &Store) -> anyhow::Result<()> {
    let (events, pending, dead) = store.counts()?;
    println!("outbox: {}", store.path().display());
    println!("events: {events}");
    println!("pending deliveries: {pending}");
    print_by_upstream(&store.rows(false)?);
    println!("dead letters: {dead}");
    print_by_upstream(&store.rows(true)?);
    if let Some(oldest) = store.rows(false)?.iter().map(|r| r.record.created_ms).min() {
        println!("oldest pending: {}", age(oldest));
    }
    Ok(())
}

fn print_by_upstream(rows: &[Row]) {
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for r in rows {
        *counts.entry(r.upstream.as_str()).or_default() += 1;
    }
    for (upstream, n) in counts {
        println!("  {upstream}: {n}");
    }
}

fn list(store: &Store, dead: bool, limit: usize) -> anyhow::Result<()> {
    let rows = store.rows(dead)?;
    println!(
        "{:>10}  {:<16} {:>8}  {:<10} {:<34} {:<40} last error",
        "event", "upstream", "attempts", "age", "request id", "command"
    );
    for row in rows.iter().take(limit) {
        let (request_id, command) = match store.event(row.id)? {
            Some(e) => (e.request_id, e.command),
            None => ("-".into(), "-".into()),
        };
        println!(
            "{:>10}  {:<16} {:>8}  {:<10} {:<34} {:<40} {}",
            row.id,
            row.upstream,
            row.record.attempts,
            age(row.record.created_ms),
            request_id,
            command,
            row.record.last_error
        );
    }
    if rows.len() > limit {
        println!("... and {} more (--limit)", rows.len() - limit);
    }
    Ok(())
}

fn age(created_ms: u64) -> String {
    let secs = now_ms().saturating_sub(created_ms) / 1000;
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}
