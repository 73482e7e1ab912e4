//! The `callgate` command line (SPEC 2). `anyhow` lives here only: below
//! this edge every module has its own error type.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad config.

/// `println!` for command output, but a closed stdout (`callgate outbox
/// list | head`) ends the command quietly instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::emit(format_args!($($arg)*))
    };
}

mod outbox;
mod send;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::signal::unix::{SignalKind, signal};

use crate::config::{Config, OnTimeout};
use crate::gateway::{DRAIN, Gateway};

#[derive(Parser, Debug)]
#[command(
    name = "callgate",
    version,
    propagate_version = true,
    about = "Gateway for instant-messaging third-party callbacks"
)]
pub struct Cli {
    /// Log line format (levels come from RUST_LOG, default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `-c FILE` of `run` and `check`.
#[derive(clap::Args, Debug)]
pub struct ConfigFile {
    /// Config file [default: $CALLGATE_CONFIG, else routes.yaml]
    #[arg(
        short = 'c',
        long = "config",
        env = "CALLGATE_CONFIG",
        default_value = "routes.yaml"
    )]
    config: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway.
    Run(ConfigFile),
    /// Load and validate a config, print a summary; exit 2 listing every problem.
    Check(ConfigFile),
    /// Write a development PKI: CA, server certificate (localhost, 127.0.0.1), IM-side client certificate.
    Certs {
        #[arg(long, default_value = "certs/dev")]
        out: PathBuf,
    },
    /// Send one callback as the IM backend would, and print the answer.
    Send(send::SendArgs),
    /// Inspect, replay or purge the notification outbox (embedded: of a stopped gateway; nats: any time).
    Outbox(outbox::OutboxArgs),
}

/// Why the command failed, and so its exit code.
enum Failure {
    Config(anyhow::Error),
    Runtime(anyhow::Error),
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help and version to stdout and exits 0 for them,
            // and usage errors to stderr with 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    // Commands other than `run` print their own results; the NATS client's
    // connection chatter would only clutter them.
    let default_level = match cli.command {
        Command::Run { .. } => "info",
        _ => "info,async_nats=warn",
    };
    init_logging(cli.log_format, default_level);
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn dispatch(command: Command) -> Result<(), Failure> {
    match command {
        Command::Run(file) => run(&file.config),
        Command::Check(file) => check(&file.config),
        Command::Certs { out } => certs(&out),
        Command::Send(args) => runtime()?
            .block_on(send::send(args))
            .map_err(Failure::Runtime),
        Command::Outbox(args) => {
            let target = outbox::target(&args).map_err(|e| {
                Failure::Config(anyhow::anyhow!(
                    "invalid config {}: {e}",
                    args.config.display()
                ))
            })?;
            match target {
                outbox::Target::Embedded(dir) => {
                    outbox::run(&dir, &args.action).map_err(Failure::Runtime)
                }
                outbox::Target::Nats(cfg) => runtime()?
                    .block_on(outbox::run_nats(&cfg, &args.action))
                    .map_err(Failure::Runtime),
            }
        }
    }
}

/// Writes one line of command output. A closed stdout ends the command
/// with status 0 (the reader had enough, as with `head`); any other
/// write failure with status 1.
pub(crate) fn emit(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{line}") {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("error: cannot write to stdout: {e}");
            std::process::exit(1);
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(Failure::Runtime)
}

fn init_logging(format: LogFormat, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

fn load(path: &Path) -> Result<Config, Failure> {
    Config::load(path).map_err(|e| {
        Failure::Config(anyhow::anyhow!(
            "invalid config {}:\n  - {}",
            path.display(),
            e.problems.join("\n  - ")
        ))
    })
}

fn check(path: &Path) -> Result<(), Failure> {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            out!(
                "{}: INVALID, {} problem(s):",
                path.display(),
                e.problems.len()
            );
            for p in &e.problems {
                out!("  - {p}");
            }
            return Err(Failure::Config(anyhow::anyhow!(
                "{} is not a valid config",
                path.display()
            )));
        }
    };
    out!("{}: OK", path.display());
    out!("listeners:");
    for l in &config.listeners {
        out!("  {} {} ({})", l.addr, l.mode(), l.name);
    }
    let guarded = if config.admin.token.is_some() {
        " (POST and DELETE need admin.token)"
    } else {
        ""
    };
    out!("admin: {}{guarded}", config.admin.addr);
    out!(
        "apps: {}",
        config
            .apps
            .keys()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    match &config.delivery.nats {
        Some(n) => out!(
            "notifications: nats stream {} on {} (replicas {})",
            n.stream,
            n.servers.join(", "),
            n.replicas
        ),
        None => out!(
            "notifications: embedded outbox {}",
            config.delivery.outbox.display()
        ),
    }
    out!("upstreams:");
    for u in config.upstreams.values() {
        let basic = if u.credentials.is_some() {
            " (credentials sent as Basic)"
        } else {
            ""
        };
        out!("  {} -> {}{basic}", u.name, u.url);
    }
    out!("routes (first match wins):");
    for r in &config.routes {
        let app = r
            .sdkappid
            .map(|a| format!(" sdkappid={a}"))
            .unwrap_or_default();
        let kind = r
            .kind
            .map(|k| format!(" kind={k:?}").to_lowercase())
            .unwrap_or_default();
        out!(
            "  {}{app}{kind} -> [{}] policy={:?} on_timeout={}",
            r.pattern,
            r.upstreams.join(", "),
            r.policy,
            on_timeout_in_force(r, config.defaults.on_timeout)
        );
    }
    for w in &config.warnings {
        out!("warning: {w}");
    }
    Ok(())
}

/// The fallback a route answers with (SPEC 4.5): its own `on_timeout`,
/// else the default, except for the commands IM fails closed on that the
/// route matches, which are named.
fn on_timeout_in_force(route: &crate::config::Route, default: OnTimeout) -> String {
    let word = |o: OnTimeout| format!("{o:?}").to_lowercase();
    if let Some(own) = route.on_timeout {
        return word(own);
    }
    let pattern = crate::route::Pattern::new(&route.pattern);
    let closed: Vec<&str> = crate::catalog::COMMANDS
        .iter()
        .filter(|c| c.fails_closed && pattern.matches(c.name))
        .map(|c| c.name)
        .collect();
    if closed.is_empty() || default == OnTimeout::Deny {
        word(default)
    } else {
        format!("{} (deny for {})", word(default), closed.join(", "))
    }
}

fn certs(out: &Path) -> Result<(), Failure> {
    let pki = crate::certs::generate()
        .context("cannot generate certificates")
        .map_err(Failure::Runtime)?;
    let written = pki
        .write(out)
        .with_context(|| format!("cannot write certificates to {}", out.display()))
        .map_err(Failure::Runtime)?;
    for path in written {
        out!("wrote {}", path.display());
    }
    out!("These are for development only: the CA key is on this disk.");
    Ok(())
}

fn run(path: &Path) -> Result<(), Failure> {
    let rt = runtime()?;
    rt.block_on(async {
        // SIGHUP's default action kills the process: take it over before
        // anything slow happens.
        let mut hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP").map_err(Failure::Runtime)?;
        let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM").map_err(Failure::Runtime)?;
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT").map_err(Failure::Runtime)?;
        let config = load(path)?;
        let gateway = Gateway::start(config).await.map_err(|e| Failure::Runtime(e.into()))?;
        tracing::info!(version = env!("CARGO_PKG_VERSION"), config = %path.display(), "callgate ready");
        loop {
            tokio::select! {
                _ = hangup.recv() => {
                    tracing::info!("SIGHUP: reloading config");
                    let _ = gateway.reload("SIGHUP").await;
                }
                _ = terminate.recv() => break,
                _ = interrupt.recv() => break,
            }
        }
        tracing::info!("shutting down: draining requests in flight");
        gateway.shutdown(DRAIN).await;
        tracing::info!("stopped");
        Ok(())
    })
}
