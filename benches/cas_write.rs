//! CAS writes on prefilled stores of 1k, 100k and 1M resources: each
//! iteration rewrites one random existing resource with its current version.
//!
//! Compared: watchstore, `RwLock<BTreeMap>` with a tokio broadcast channel,
//! and the Consul-style store. No watch is open, so every store skips the
//! cost of delivering events.
//!
//! Environment: `WATCHSTORE_BENCH_QUICK=1` runs each benchmark for about a
//! second on stores of 1k and 10k; `WATCHSTORE_BENCH_MAX_RESOURCES=N` skips
//! larger stores (see `peers/settings.rs`).

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use watchstore::{Store, DEFAULT_LOG_CAPACITY};

#[allow(dead_code)] // Each bench binary uses only part of the shared module.
#[path = "peers/mod.rs"]
mod peers;

use peers::consul_style::ConsulStyleStore;
use peers::harness::{prefill, BenchStore, RandomUpdater};
use peers::locked_btree::LockedBTreeStore;
use peers::settings::{self, Pace};

/// Capacity of the `RwLock<BTreeMap>` store's broadcast channel, equal to
/// watchstore's default log.
const CHANNEL_CAPACITY: usize = DEFAULT_LOG_CAPACITY;

/// Prefills `store` with `size` resources, then benchmarks random rewrites.
fn bench_store<S: BenchStore>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    size: usize,
    store: S,
) {
    let mut updater = RandomUpdater::new(prefill(&store, size), 0x5eed_0001);
    group.bench_function(BenchmarkId::new(name, size), |b| {
        b.iter(|| updater.update_one(&store));
    });
    // The store and its resources are dropped here, before the next store
    // is filled, so at most one large store is in memory at a time.
}

fn cas_write(c: &mut Criterion) {
    let mut group = c.benchmark_group("cas_write");
    settings::configure(&mut group, Pace::Fast);
    group.throughput(Throughput::Elements(1));

    for size in settings::store_sizes() {
        bench_store(&mut group, "watchstore", size, Store::new());
        bench_store(
            &mut group,
            "rwlock_btreemap",
            size,
            LockedBTreeStore::new(CHANNEL_CAPACITY),
        );
        bench_store(&mut group, "consul_style", size, ConsulStyleStore::new());
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = settings::criterion();
    targets = cas_write
}
criterion_main!(benches);
