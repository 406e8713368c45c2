//! Resident memory after N writes, with one stalled watcher (it reads its
//! snapshot before the writes, then nothing) and with none, for watchstore
//! and the Consul-style store.
//!
//! Each case runs in a fresh child process (this binary started again with
//! `--child DESIGN WATCHER WRITES`), so no case inherits another's heap.
//! The child fills 1,000 resources, opens the watcher if any, rewrites
//! random resources N times with their current versions, and reports its
//! resident set size from `/proc/self/statm`. Linux only.
//!
//! Environment: `WATCHSTORE_BENCH_EVENTS=N` sets N (default 1,000,000);
//! `WATCHSTORE_BENCH_QUICK=1` sets N = 10,000 (see `peers/settings.rs`).

use std::env;
use std::fs;
use std::process::{Command, ExitCode};

use watchstore::Store;

#[allow(dead_code)] // Each bench binary uses only part of the shared module.
#[path = "peers/mod.rs"]
mod peers;

use peers::consul_style::ConsulStyleStore;
use peers::harness::{prefill, BenchStore, BenchWatch, Delivered, RandomUpdater};
use peers::settings;

/// Argument that makes this binary run one case and print its result.
const CHILD_FLAG: &str = "--child";
/// Resources in the store; each write rewrites one of them.
const RESOURCES: usize = 1_000;
/// Designs measured, as named on the child's command line.
const DESIGNS: [&str; 2] = ["watchstore", "consul_style"];
/// Watcher cases, as named on the child's command line.
const WATCHERS: [&str; 2] = ["none", "stalled"];
/// `AT_PAGESZ` in the ELF auxiliary vector: the system page size.
const AT_PAGESZ: u64 = 6;

/// Returns the page size from `/proc/self/auxv`.
fn page_size() -> Result<u64, String> {
    let auxv = fs::read("/proc/self/auxv")
        .map_err(|error| format!("reading /proc/self/auxv failed: {error}"))?;
    let word = std::mem::size_of::<usize>();
    auxv.chunks_exact(2 * word)
        .find_map(|pair| {
            let (key, value) = pair.split_at(word);
            let key = usize::from_ne_bytes(key.try_into().ok()?) as u64;
            let value = usize::from_ne_bytes(value.try_into().ok()?) as u64;
            (key == AT_PAGESZ).then_some(value)
        })
        .ok_or_else(|| "AT_PAGESZ is missing from /proc/self/auxv".to_owned())
}

/// Returns the resident set size of this process in bytes.
fn resident_bytes() -> Result<u64, String> {
    let statm = fs::read_to_string("/proc/self/statm")
        .map_err(|error| format!("reading /proc/self/statm failed: {error}"))?;
    // Fields: size resident shared text lib data dt, in pages.
    let resident_pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .ok_or_else(|| format!("unexpected /proc/self/statm contents: {statm:?}"))?;
    Ok(resident_pages * page_size()?)
}

/// Runs one case on `store` and returns the line the parent parses.
fn measure<S: BenchStore>(store: S, stalled: bool, writes: usize) -> Result<String, String> {
    let mut updater = RandomUpdater::new(prefill(&store, RESOURCES), 0x5eed_0005);
    let mut watch = stalled.then(|| store.watch_all());
    if let Some(watch) = watch.as_mut() {
        // The watcher reads its snapshot, then stalls.
        while !matches!(watch.next_event()?, Delivered::EndOfSnapshot { .. }) {}
    }
    let before = resident_bytes()?;

    for _ in 0..writes {
        updater.update_one(&store);
    }
    let after = resident_bytes()?;

    // Reading the stalled watch now shows what it kept. Once the writes
    // exceed watchstore's log capacity its next event is overwritten and the
    // read fails with a lag error, while the Consul-style list keeps them all.
    let watcher_state = match watch.as_mut().map(BenchWatch::next_event) {
        None => "none".to_owned(),
        Some(Ok(event)) => format!("readable:{event:?}").replace(' ', ""),
        Some(Err(error)) => format!("error:{error}").replace(' ', ""),
    };
    Ok(format!(
        "rss_before_writes={before} rss_after_writes={after} watcher_state={watcher_state}"
    ))
}

/// Child process: runs the case named by `args` and prints one result line.
fn run_child(args: &[String]) -> Result<(), String> {
    let [design, watcher, writes] = args else {
        return Err(format!(
            "expected DESIGN WATCHER WRITES after {CHILD_FLAG}, got {args:?}"
        ));
    };
    let stalled = match watcher.as_str() {
        "none" => false,
        "stalled" => true,
        other => {
            return Err(format!(
                "invalid watcher case {other:?}: expected none or stalled"
            ))
        }
    };
    let writes: usize = writes
        .parse()
        .map_err(|error| format!("invalid write count {writes:?}: {error}"))?;
    let line = match design.as_str() {
        "watchstore" => measure(Store::new(), stalled, writes)?,
        "consul_style" => measure(ConsulStyleStore::new(), stalled, writes)?,
        other => {
            return Err(format!(
                "invalid design {other:?}: expected watchstore or consul_style"
            ))
        }
    };
    println!("{line}");
    Ok(())
}

/// Returns the value of `name=value` in a child's result line.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Parent process: runs every case in a child and prints a table.
fn run_parent() -> Result<(), String> {
    let writes = settings::event_count();
    let exe = env::current_exe()
        .map_err(|error| format!("locating this bench binary failed: {error}"))?;
    println!("memory: resident set size after {writes} CAS writes over {RESOURCES} resources");
    println!(
        "{:<14} {:<8} {:>16} {:>16} {:>10}  watcher state at the end",
        "design", "watcher", "before (MiB)", "after (MiB)", "vs none"
    );

    for design in DESIGNS {
        let mut after_without_watcher = None;
        for watcher in WATCHERS {
            let output = Command::new(&exe)
                .args([CHILD_FLAG, design, watcher, &writes.to_string()])
                .output()
                .map_err(|error| {
                    format!("starting the child for {design}/{watcher} failed: {error}")
                })?;
            let stdout = String::from_utf8_lossy(&output.stdout);
            if !output.status.success() {
                return Err(format!(
                    "the child for {design}/{watcher} failed with {}: {}{}",
                    output.status,
                    stdout,
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
            let line = stdout
                .lines()
                .find(|line| line.starts_with("rss_before_writes="))
                .ok_or_else(|| {
                    format!("no result line from the child for {design}/{watcher}: {stdout}")
                })?;
            let number = |name: &str| -> Result<u64, String> {
                field(line, name)
                    .and_then(|value| value.parse().ok())
                    .ok_or_else(|| format!("missing {name} in {line:?}"))
            };
            let before = number("rss_before_writes")?;
            let after = number("rss_after_writes")?;
            let state = field(line, "watcher_state").unwrap_or("?");

            let ratio = match after_without_watcher {
                None => {
                    after_without_watcher = Some(after);
                    "1.00x".to_owned()
                }
                Some(base) => format!("{:.2}x", after as f64 / base as f64),
            };
            println!(
                "{design:<14} {watcher:<8} {:>16.1} {:>16.1} {ratio:>10}  {state}",
                mib(before),
                mib(after)
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = env::args().collect();
    let result = match args.iter().position(|arg| arg == CHILD_FLAG) {
        Some(position) => run_child(&args[position + 1..]),
        None => run_parent(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("memory bench: {error}");
            ExitCode::FAILURE
        }
    }
}
