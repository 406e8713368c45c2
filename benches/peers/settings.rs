//! Benchmark sizes and criterion settings, read from environment variables.
//!
//! - `WATCHSTORE_BENCH_QUICK=1`: every benchmark runs for a second or two,
//!   with inputs of at most 10,000 resources or events, so CI can run
//!   `cargo bench` to keep the benchmarks compiling and running. A bench
//!   binary started without `--bench` (as `cargo test --benches` does) uses
//!   the same sizes.
//! - `WATCHSTORE_BENCH_EVENTS=N`: events delivered to each watcher in the
//!   fan-out benchmark and writes in the memory benchmark (default
//!   1,000,000, or 10,000 in quick mode).
//! - `WATCHSTORE_BENCH_MAX_RESOURCES=N`: skips store sizes above N in the
//!   benchmarks that prefill a store.

use std::env;
use std::path::PathBuf;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode};

/// Set to `1` for the short run described in the module docs.
pub const QUICK_ENV: &str = "WATCHSTORE_BENCH_QUICK";
/// Events per watcher in the fan-out benchmark, writes in the memory benchmark.
pub const EVENTS_ENV: &str = "WATCHSTORE_BENCH_EVENTS";
/// Largest store size to benchmark.
pub const MAX_RESOURCES_ENV: &str = "WATCHSTORE_BENCH_MAX_RESOURCES";

/// Largest input of any benchmark in quick mode.
const QUICK_MAX_INPUT: usize = 10_000;

/// Reports whether to use the quick sizes: `WATCHSTORE_BENCH_QUICK=1` is
/// set, or the binary was started without `--bench`, so by `cargo test`.
pub fn quick_mode() -> bool {
    env::var(QUICK_ENV).is_ok_and(|value| value == "1") || !env::args().any(|arg| arg == "--bench")
}

/// Reads a positive integer from the environment variable `name`.
///
/// # Panics
///
/// Panics with the variable's name and value when it is set but is not a
/// positive integer, so a typo never runs the benchmark at a wrong size.
fn env_count(name: &str) -> Option<usize> {
    let value = env::var(name).ok()?;
    match value.trim().replace('_', "").parse::<usize>() {
        Ok(count) if count > 0 => Some(count),
        _ => panic!("{name} must be a positive integer, got {value:?}"),
    }
}

/// Returns the criterion configuration for all bench binaries: shorter runs
/// in quick mode, and no plots (the numbers are read from the text output).
pub fn criterion() -> Criterion {
    let criterion = Criterion::default().without_plots();
    if quick_mode() {
        criterion
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1))
            .sample_size(10)
    } else {
        criterion
    }
}

/// How long one iteration of a benchmark takes, which decides its settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// Nanoseconds to microseconds: criterion's defaults (100 samples, 5 s).
    Fast,
    /// Milliseconds or more: 10 samples in flat sampling mode.
    Slow,
}

/// Applies the settings for `pace`, shortened in quick mode.
pub fn configure(group: &mut BenchmarkGroup<'_, WallTime>, pace: Pace) {
    match (pace, quick_mode()) {
        (Pace::Fast, false) => {}
        (Pace::Fast, true) => {
            group
                .warm_up_time(Duration::from_millis(300))
                .measurement_time(Duration::from_secs(1))
                .sample_size(10);
        }
        (Pace::Slow, quick) => {
            group
                .sampling_mode(SamplingMode::Flat)
                .sample_size(10)
                .warm_up_time(Duration::from_millis(if quick { 100 } else { 1000 }))
                .measurement_time(Duration::from_secs(if quick { 1 } else { 5 }));
        }
    }
}

/// Returns the store sizes to prefill: 1k, 100k and 1M, or 1k and 10k in
/// quick mode, without those above `WATCHSTORE_BENCH_MAX_RESOURCES`.
pub fn store_sizes() -> Vec<usize> {
    let sizes: &[usize] = if quick_mode() {
        &[1_000, QUICK_MAX_INPUT]
    } else {
        &[1_000, 100_000, 1_000_000]
    };
    let max = env_count(MAX_RESOURCES_ENV).unwrap_or(usize::MAX);
    sizes.iter().copied().filter(|&size| size <= max).collect()
}

/// Returns the events per watcher for fan-out and the writes for the memory
/// benchmark: `WATCHSTORE_BENCH_EVENTS`, else 1M, or 10k in quick mode.
pub fn event_count() -> usize {
    env_count(EVENTS_ENV).unwrap_or(if quick_mode() {
        QUICK_MAX_INPUT
    } else {
        1_000_000
    })
}

/// Returns the directory that criterion writes its reports under: the
/// cargo target directory that contains the running bench binary.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    // Bench binaries live in <target>/<profile>/deps/.
    env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("target"))
}
