//! `watchstore`: command-line tools for the watchstore resource store.
//!
//! `watchstore replay [TRACE...]` replays recorded control-plane traces
//! through a store with concurrent writers and watchers, verifies that every
//! watcher saw exactly what was committed, and reports speed.
//!
//! Exit status: 0 when every trace replayed and verified, 1 when a
//! verification or the replay failed, 2 for unreadable or malformed input
//! and for invalid options.

mod replay;
mod report;
mod trace;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use watchstore::DEFAULT_LOG_CAPACITY;

use replay::keys::Filter;
use replay::watcher::LagMode;
use trace::{Format, Input, Trace, TraceError};

/// File name of the trace built into the binary, as it is stored in the
/// repository's `data/` directory.
const SHIPPED_TRACE_NAME: &str = "data/etcd-kubernetes-client-1-watch.json";

/// The shipped trace: the complete committed history of an etcd robustness
/// run with Kubernetes-style traffic (see `data/README.md`). It is built in
/// so the command works from any directory.
const SHIPPED_TRACE: &str = include_str!("../../data/etcd-kubernetes-client-1-watch.json");

#[derive(Parser)]
#[command(
    name = "watchstore",
    version,
    about = "Tools for the watchstore resource store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay recorded control-plane traces through a store with concurrent
    /// writers and watchers, verify every watcher, and report speed.
    Replay(ReplayArgs),
}

#[derive(Args)]
struct ReplayArgs {
    /// Trace files: etcd robustness watch.json (with optional
    /// operations.json files of the same run), Kubernetes audit logs, or
    /// SimKube trace JSON; the format is detected from the content. Each
    /// trace is replayed into its own store. With none, the etcd trace built
    /// into the binary is replayed.
    #[arg(value_name = "TRACE")]
    traces: Vec<PathBuf>,

    /// Number of watchers; each opens one watch per resource type of the
    /// trace, served by its own thread.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    watchers: u16,

    /// Filter of every watch: `all`, `namespace=NAME` (with --scale,
    /// copy i of namespace ns is `ns.i`), or `prefix=TEXT` (names starting
    /// with TEXT).
    #[arg(long, default_value = "all", value_parser = Filter::parse)]
    filter: Filter,

    /// Replay the trace K times concurrently, from K writer threads, each
    /// copy under its own namespaces.
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    scale: u16,

    /// Number of events the store's log keeps for watchers (a power of
    /// two); a watcher further behind gets a fresh snapshot with
    /// `--on-lag reset`, or a lag error and a new watch with `--on-lag error`.
    #[arg(long, value_name = "EVENTS", default_value_t = DEFAULT_LOG_CAPACITY, value_parser = parse_ring_capacity)]
    ring_capacity: usize,

    /// Reaction to a watcher falling behind the log. With `reset` the store
    /// restarts the watch with a fresh snapshot. With `error` the store
    /// returns a lag error and the watcher opens a new watch.
    #[arg(long, value_enum, default_value_t = LagMode::Reset)]
    on_lag: LagMode,

    /// Print one JSON summary per trace on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

fn parse_ring_capacity(text: &str) -> Result<usize, String> {
    let capacity: usize = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of events"))?;
    if !capacity.is_power_of_two() {
        return Err(format!(
            "{capacity} is not a power of two (such as 1024 or 65536)"
        ));
    }
    if capacity > watchstore::MAX_LOG_CAPACITY {
        return Err(format!(
            "{capacity} is above the maximum of {} events",
            watchstore::MAX_LOG_CAPACITY
        ));
    }
    Ok(capacity)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Replay(args) => replay_command(&args),
    }
}

fn replay_command(args: &ReplayArgs) -> ExitCode {
    let traces = match load_traces(&args.traces) {
        Ok(traces) => traces,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let config = replay::Config {
        watchers: usize::from(args.watchers),
        filter: args.filter.clone(),
        scale: usize::from(args.scale),
        ring_capacity: args.ring_capacity,
        lag: args.on_lag,
        progress: true,
    };

    let mut status = ExitCode::SUCCESS;
    for (index, trace) in traces.iter().enumerate() {
        let summary = match replay::run(trace, &config) {
            Ok(summary) => summary,
            Err(error) => {
                eprintln!(
                    "error: replay of {} failed: {error:#}",
                    trace.paths[0].display()
                );
                status = ExitCode::from(1);
                continue;
            }
        };
        if args.json {
            match serde_json::to_string(&summary).context("encoding the summary") {
                Ok(line) => println!("{line}"),
                Err(error) => {
                    eprintln!("error: {error:#}");
                    status = ExitCode::from(1);
                }
            }
        } else {
            if index > 0 {
                println!();
            }
            print!("{}", report::table(&summary));
        }
        if !summary.verification.ok {
            eprintln!(
                "error: verification of {} failed: {}",
                trace.paths[0].display(),
                summary.verification.first_failure.as_deref().unwrap_or("")
            );
            status = ExitCode::from(1);
        }
    }
    status
}

/// Reads and parses every trace before any replay starts, so a bad file is
/// reported before work is done. etcd operations files are attached to the
/// one etcd watch file given with them.
fn load_traces(paths: &[PathBuf]) -> Result<Vec<Trace>, TraceError> {
    if paths.is_empty() {
        let input = Input::from_text(Path::new(SHIPPED_TRACE_NAME), SHIPPED_TRACE.to_string())?;
        return Ok(vec![input.parse()?]);
    }

    let mut inputs = Vec::new();
    let mut operations = Vec::new();
    for path in paths {
        let input = Input::open(path)?;
        match input.format {
            Format::EtcdOperations => operations.push(input),
            _ => inputs.push(input),
        }
    }

    if !operations.is_empty() {
        let watch_files = inputs
            .iter()
            .filter(|input| input.format == Format::EtcdWatch)
            .count();
        if watch_files != 1 {
            return Err(TraceError::Invalid {
                path: operations[0].path.clone(),
                message: format!(
                    "etcd operations files need exactly one etcd watch.json of the same run \
                     among the traces, found {watch_files}"
                ),
            });
        }
    }

    let mut traces = Vec::new();
    for input in inputs {
        let trace = if input.format == Format::EtcdWatch {
            input.parse_etcd(std::mem::take(&mut operations))?
        } else {
            input.parse()?
        };
        traces.push(trace);
    }
    Ok(traces)
}
