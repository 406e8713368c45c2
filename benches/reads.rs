//! Read latency on a store of 100k resources (10k in quick mode), idle and
//! with one writer thread rewriting random resources as fast as it can.
//!
//! Two measurements per store and mode:
//! - criterion's mean time per `read` of a random resource (group `read`);
//! - latency percentiles (p50, p99, p99.9, max) from timing each of many
//!   reads with `Instant::now()` into an HDR histogram. Each sample includes
//!   one `Instant::now()` call (tens of nanoseconds), the same for every
//!   store. They are printed and written to
//!   `<target dir>/criterion-percentiles.json`.
//!
//! Compared: watchstore (lock-free reads of the current root), the
//! Consul-style store (lock-free reads of a swapped persistent map) and
//! `RwLock<BTreeMap>` (reads take the read lock).
//!
//! Environment: `WATCHSTORE_BENCH_QUICK=1` runs each benchmark for about a
//! second on 10k resources with 100k timed reads per case
//! (see `peers/settings.rs`).

use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use hdrhistogram::Histogram;
use watchstore::{Id, Store, DEFAULT_LOG_CAPACITY};

#[allow(dead_code)] // Each bench binary uses only part of the shared module.
#[path = "peers/mod.rs"]
mod peers;

use peers::consul_style::ConsulStyleStore;
use peers::fixtures::{self, Rng};
use peers::harness::{prefill, BenchStore, RandomUpdater};
use peers::locked_btree::LockedBTreeStore;
use peers::settings::{self, Pace};

/// Capacity of the `RwLock<BTreeMap>` store's broadcast channel, equal to
/// watchstore's default log.
const CHANNEL_CAPACITY: usize = DEFAULT_LOG_CAPACITY;

/// Percentiles of one store and mode, in nanoseconds.
struct Percentiles {
    store: &'static str,
    mode: &'static str,
    reads: u64,
    mean: f64,
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
    /// Writes per second of the background writer, `None` when idle.
    writer_rate: Option<f64>,
}

/// A thread that rewrites random resources until stopped.
struct SaturatingWriter {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<u64>,
    started: Instant,
}

impl SaturatingWriter {
    fn start<S: BenchStore>(
        store: &Arc<S>,
        current: Vec<Arc<watchstore::Resource>>,
    ) -> SaturatingWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let store = Arc::clone(store);
        let handle = thread::spawn(move || {
            let mut updater = RandomUpdater::new(current, 0x5eed_0002);
            let mut writes = 0u64;
            while !thread_stop.load(Ordering::Relaxed) {
                updater.update_one(&*store);
                writes += 1;
            }
            writes
        });
        // Give the writer time to start so the first reads already compete.
        thread::sleep(Duration::from_millis(20));
        SaturatingWriter {
            stop,
            handle,
            started: Instant::now(),
        }
    }

    /// Stops the writer; returns its writes per second since `start`
    /// returned (slightly high, as it also counts the warm-up writes).
    fn stop(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        let elapsed = self.started.elapsed();
        let writes = self.handle.join().expect("the writer thread panicked");
        writes as f64 / elapsed.as_secs_f64()
    }
}

/// Times `count` reads of random resources, one sample per read.
fn timed_reads<S: BenchStore>(store: &S, ids: &[Id], count: u64) -> Histogram<u64> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
        .expect("the histogram bounds are valid");
    let mut rng = Rng::new(0x5eed_0003);
    for _ in 0..count {
        let id = &ids[rng.below(ids.len())];
        let start = Instant::now();
        let resource = store.read(id);
        let elapsed = start.elapsed();
        black_box(resource.expect("every read resource exists"));
        histogram.saturating_record(elapsed.as_nanos().max(1) as u64);
    }
    histogram
}

/// Benchmarks reads of `store`, idle and under a writer, and appends the
/// percentiles of both modes to `results`.
fn bench_store<S: BenchStore>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &'static str,
    size: usize,
    store: S,
    results: &mut Vec<Percentiles>,
) {
    let store = Arc::new(store);
    let current = prefill(&*store, size);
    let ids: Vec<Id> = (0..size).map(fixtures::id).collect();
    let timed_count = if settings::quick_mode() {
        100_000
    } else {
        1_000_000
    };

    for mode in ["idle", "under_writer"] {
        let writer =
            (mode == "under_writer").then(|| SaturatingWriter::start(&store, current.clone()));

        let mut rng = Rng::new(0x5eed_0004);
        group.bench_function(BenchmarkId::new(format!("{name}_{mode}"), size), |b| {
            b.iter(|| black_box(store.read(&ids[rng.below(ids.len())])))
        });

        let histogram = timed_reads(&*store, &ids, timed_count);
        let writer_rate = writer.map(SaturatingWriter::stop);
        results.push(Percentiles {
            store: name,
            mode,
            reads: histogram.len(),
            mean: histogram.mean(),
            p50: histogram.value_at_quantile(0.50),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
            writer_rate,
        });
    }
}

/// Renders the percentiles as JSON; the values contain nothing to escape.
fn percentiles_json(size: usize, results: &[Percentiles]) -> String {
    let mut json = String::new();
    let _ = writeln!(json, "{{");
    let _ = writeln!(json, "  \"benchmark\": \"reads\",");
    let _ = writeln!(json, "  \"store_size\": {size},");
    let _ = writeln!(json, "  \"unit\": \"ns\",");
    let _ = writeln!(
        json,
        "  \"includes\": \"one Instant::now() call per sample\","
    );
    let _ = writeln!(json, "  \"results\": [");
    for (position, result) in results.iter().enumerate() {
        let writer_rate = result
            .writer_rate
            .map_or_else(|| "null".to_owned(), |rate| format!("{rate:.0}"));
        let separator = if position + 1 < results.len() {
            ","
        } else {
            ""
        };
        let _ = writeln!(
            json,
            "    {{\"store\": \"{}\", \"mode\": \"{}\", \"reads\": {}, \"mean\": {:.1}, \"p50\": {}, \"p99\": {}, \"p999\": {}, \"max\": {}, \"writer_writes_per_sec\": {}}}{}",
            result.store, result.mode, result.reads, result.mean, result.p50, result.p99, result.p999,
            result.max, writer_rate, separator
        );
    }
    let _ = writeln!(json, "  ]");
    let _ = writeln!(json, "}}");
    json
}

fn print_percentiles(results: &[Percentiles]) {
    println!();
    println!("read latency percentiles (ns, including one Instant::now() per sample)");
    println!(
        "{:<18} {:<13} {:>8} {:>8} {:>8} {:>9} {:>14}",
        "store", "mode", "p50", "p99", "p99.9", "max", "writer w/s"
    );
    for result in results {
        let writer_rate = result
            .writer_rate
            .map_or_else(|| "-".to_owned(), |rate| format!("{rate:.0}"));
        println!(
            "{:<18} {:<13} {:>8} {:>8} {:>8} {:>9} {:>14}",
            result.store, result.mode, result.p50, result.p99, result.p999, result.max, writer_rate
        );
    }
    println!();
}

fn reads(c: &mut Criterion) {
    let size = if settings::quick_mode() {
        10_000
    } else {
        100_000
    };
    let mut results = Vec::new();
    let mut group = c.benchmark_group("read");
    settings::configure(&mut group, Pace::Fast);
    group.throughput(Throughput::Elements(1));

    bench_store(&mut group, "watchstore", size, Store::new(), &mut results);
    bench_store(
        &mut group,
        "consul_style",
        size,
        ConsulStyleStore::new(),
        &mut results,
    );
    let locked = LockedBTreeStore::new(CHANNEL_CAPACITY);
    bench_store(&mut group, "rwlock_btreemap", size, locked, &mut results);
    group.finish();

    print_percentiles(&results);
    let path = settings::target_dir().join("criterion-percentiles.json");
    match std::fs::write(&path, percentiles_json(size, &results)) {
        Ok(()) => println!("read percentiles written to {}", path.display()),
        Err(error) => eprintln!("writing {} failed: {error}", path.display()),
    }
}

criterion_group! {
    name = benches;
    config = settings::criterion();
    targets = reads
}
criterion_main!(benches);
