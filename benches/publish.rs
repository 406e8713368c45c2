//! Publish throughput with one writer and no watcher, in events per second.
//!
//! - `watchstore_log_only`: `bench_support::EventLog::publish_next` on a log
//!   of `DEFAULT_LOG_CAPACITY` slots: pin the epoch, build an upsert event
//!   holding an `Arc<Resource>`, and publish it to its ring slot, which is
//!   what a commit does after its root swap. This is the line to compare
//!   with the bare ring and with tokio broadcast.
//! - `watchstore_write_cas_full_commit`: `Store::write_cas` of one small
//!   resource with its current version: validation, the resource copy, the
//!   new root, and the same log publish as above.
//! - `bare_ring_fetch_add_store`: one `fetch_add` and one store into a
//!   preallocated ring of `AtomicU64`, the floor for any ring publish.
//! - `tokio_broadcast_send`: `broadcast::Sender::send` of an event holding an
//!   `Arc<Resource>`, with one receiver that never reads (tokio drops sends
//!   that have no receiver).
//! - `consul_style_write_cas_full_commit`: the Consul-style store's CAS
//!   write: writer lock, persistent map insert, root swap, channel send to
//!   its publisher thread.
//! - `resource_copy_only`: only the copy of the caller's resource with a new
//!   version string in a new `Arc`, which every CAS write above performs. It
//!   is a reference point for how much of a commit is copying.
//!
//! Environment: `WATCHSTORE_BENCH_QUICK=1` runs each benchmark for about a
//! second (see `peers/settings.rs`).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use watchstore::bench_support::EventLog;
use watchstore::{Store, DEFAULT_LOG_CAPACITY};

#[allow(dead_code)] // Each bench binary uses only part of the shared module.
#[path = "peers/mod.rs"]
mod peers;

use peers::bare_ring::BareRing;
use peers::broadcast::BroadcastLog;
use peers::consul_style::ConsulStyleStore;
use peers::fixtures::{self, PeerEvent};
use peers::harness::BenchStore;
use peers::settings::{self, Pace};

/// Ring capacity of every log-only line: watchstore's default log size.
const RING_CAPACITY: usize = DEFAULT_LOG_CAPACITY;

/// Benchmarks CAS rewrites of one resource on `store`, one event each.
fn bench_commit<S: BenchStore>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    store: &S,
) {
    let mut current = store
        .write_cas(&fixtures::resource(0))
        .unwrap_or_else(|error| panic!("{name}: creating the resource failed: {error}"));
    group.bench_function(name, |b| {
        b.iter(|| {
            current = store
                .write_cas(black_box(&current))
                .unwrap_or_else(|error| panic!("{name}: rewriting the resource failed: {error}"));
        })
    });
}

fn publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish");
    settings::configure(&mut group, Pace::Fast);
    group.throughput(Throughput::Elements(1));

    let mut event_log = EventLog::new(RING_CAPACITY, fixtures::resource(0))
        .unwrap_or_else(|error| panic!("creating the event log failed: {error:?}"));
    group.bench_function("watchstore_log_only", |b| {
        b.iter(|| black_box(event_log.publish_next()))
    });
    // Frees the log and its events before the next benchmark runs.
    drop(event_log);

    bench_commit(
        &mut group,
        "watchstore_write_cas_full_commit",
        &Store::new(),
    );

    let ring = BareRing::new(RING_CAPACITY);
    let mut value = 0u64;
    group.bench_function("bare_ring_fetch_add_store", |b| {
        b.iter(|| {
            value = value.wrapping_add(1);
            black_box(ring.publish(black_box(value)));
        })
    });

    let log = BroadcastLog::new(RING_CAPACITY);
    let _idle_subscriber = log.subscribe();
    let resource = Arc::new(fixtures::resource(0));
    let mut index = 0u64;
    group.bench_function("tokio_broadcast_send", |b| {
        b.iter(|| {
            index += 1;
            black_box(log.publish(PeerEvent::Upsert {
                index,
                resource: Arc::clone(&resource),
            }));
        })
    });

    bench_commit(
        &mut group,
        "consul_style_write_cas_full_commit",
        &ConsulStyleStore::new(),
    );

    let template = fixtures::resource(0);
    let mut index = 0u64;
    group.bench_function("resource_copy_only", |b| {
        b.iter(|| {
            index += 1;
            black_box(fixtures::stored_copy(black_box(&template), index))
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = settings::criterion();
    targets = publish
}
criterion_main!(benches);
