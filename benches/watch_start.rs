//! Watch start on prefilled stores of 1k, 100k and 1M resources: the time
//! from starting a watch on every resource to its first event
//! (`*_first_event`) and to its `EndOfSnapshot` (`*_end_of_snapshot`).
//!
//! - `watchstore`: `watch_list`, which takes an O(1) snapshot and reads it
//!   lazily.
//! - `consul_style`: builds the whole snapshot as a list of events under the
//!   publisher lock, then subscribes, as Consul does.
//! - `rwlock_btreemap`: subscribes and clones the whole map under the read
//!   lock.
//!
//! Dropping the watch is not timed.
//!
//! Environment: `WATCHSTORE_BENCH_QUICK=1` runs each benchmark for about a
//! second on stores of 1k and 10k; `WATCHSTORE_BENCH_MAX_RESOURCES=N` skips
//! larger stores (see `peers/settings.rs`).

use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion};
use watchstore::{Store, DEFAULT_LOG_CAPACITY};

#[allow(dead_code)] // Each bench binary uses only part of the shared module.
#[path = "peers/mod.rs"]
mod peers;

use peers::consul_style::ConsulStyleStore;
use peers::harness::{prefill, BenchStore, BenchWatch, Delivered};
use peers::locked_btree::LockedBTreeStore;
use peers::settings::{self, Pace};

/// Capacity of the `RwLock<BTreeMap>` store's broadcast channel, equal to
/// watchstore's default log.
const CHANNEL_CAPACITY: usize = DEFAULT_LOG_CAPACITY;

/// Starts a watch on `store` and reads until `stop` accepts an event.
/// Returns the elapsed time, the number of upserts read, and the watch so
/// that the caller drops it after the clock stops.
fn time_watch<S: BenchStore>(
    store: &S,
    stop: fn(Delivered) -> bool,
) -> (Duration, usize, S::Watch) {
    let start = Instant::now();
    let mut watch = store.watch_all();
    let mut upserts = 0;
    loop {
        let event = watch
            .next_event()
            .unwrap_or_else(|error| panic!("reading the watch failed: {error}"));
        if matches!(event, Delivered::Upsert { .. }) {
            upserts += 1;
        }
        if stop(event) {
            return (start.elapsed(), upserts, watch);
        }
    }
}

/// Prefills `store` with `size` resources and benchmarks both watch starts.
fn bench_store<S: BenchStore>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    size: usize,
    store: S,
) {
    prefill(&store, size);

    group.bench_function(BenchmarkId::new(format!("{name}_first_event"), size), |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let (elapsed, upserts, watch) = time_watch(&store, |_| true);
                assert_eq!(upserts, 1, "{name}: the first event is not an upsert");
                total += elapsed;
                drop(watch);
            }
            total
        })
    });

    group.bench_function(
        BenchmarkId::new(format!("{name}_end_of_snapshot"), size),
        |b| {
            b.iter_custom(|iterations| {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    let (elapsed, upserts, watch) = time_watch(&store, |event| {
                        matches!(event, Delivered::EndOfSnapshot { .. })
                    });
                    assert_eq!(upserts, size, "{name}: snapshot size");
                    total += elapsed;
                    drop(watch);
                }
                total
            })
        },
    );
}

fn watch_start(c: &mut Criterion) {
    let mut group = c.benchmark_group("watch_start");
    settings::configure(&mut group, Pace::Slow);

    for size in settings::store_sizes() {
        bench_store(&mut group, "watchstore", size, Store::new());
        bench_store(&mut group, "consul_style", size, ConsulStyleStore::new());
        bench_store(
            &mut group,
            "rwlock_btreemap",
            size,
            LockedBTreeStore::new(CHANNEL_CAPACITY),
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = settings::criterion();
    targets = watch_start
}
criterion_main!(benches);
