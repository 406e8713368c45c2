//! Fan-out: one writer, 1, 4 and 8 watcher threads, N events delivered to
//! each watcher. Throughput is deliveries per second: N times the number of
//! watchers, divided by the timed span.
//!
//! Two groups:
//! - `fanout_live`: the clock starts at the first write and stops when every
//!   watcher has received its N-th event, so the writer's commit cost and
//!   the watchers share the machine's cores.
//! - `fanout_backlog`: the watchers subscribe, the N writes are committed
//!   and published before the clock starts, then the watchers drain them.
//!   This isolates the delivery path from the commit path.
//!
//! Implementations:
//! - `watchstore`: `write_cas` rewrites of one resource; each watcher is a
//!   `Watch` on every resource, past its snapshot before the clock starts.
//! - `consul_style`: the same writes on the Consul-style store; watchers
//!   follow its unbounded event list.
//! - `rwlock_btreemap`: the same writes on `RwLock<BTreeMap>`; watchers are
//!   tokio broadcast receivers.
//! - `tokio_broadcast`: the writer only sends events (no store and no CAS),
//!   a log-only fan-out that does less work per event than the three stores
//!   in `fanout_live`.
//!
//! Every log is sized to hold all N events, so no watcher lags: this
//! measures delivery, not the lag path. Each watcher checks that it
//! received N upserts with strictly increasing indexes.
//!
//! Environment: `WATCHSTORE_BENCH_EVENTS=N` sets N (default 1,000,000);
//! `WATCHSTORE_BENCH_QUICK=1` runs each benchmark for about a second with
//! N = 10,000 (see `peers/settings.rs`).

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use watchstore::{Resource, Store, StoreOptions};

#[allow(dead_code)] // Each bench binary uses only part of the shared module.
#[path = "peers/mod.rs"]
mod peers;

use peers::broadcast::{BroadcastLog, BroadcastSubscriber};
use peers::consul_style::ConsulStyleStore;
use peers::fixtures::{self, PeerEvent};
use peers::harness::{BenchStore, BenchWatch, Delivered};
use peers::locked_btree::LockedBTreeStore;
use peers::settings::{self, Pace};

/// Watcher thread counts to benchmark.
const WATCHER_COUNTS: [usize; 3] = [1, 4, 8];

/// Whether the writes run inside or before the timed span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Writes run while the watchers read; both are timed.
    Live,
    /// Writes are committed and published first; only the drain is timed.
    Backlog,
}

impl Mode {
    fn group_name(self) -> &'static str {
        match self {
            Mode::Live => "fanout_live",
            Mode::Backlog => "fanout_backlog",
        }
    }
}

/// Returns a log capacity with room for `events` events and some to spare.
fn log_capacity(events: usize) -> usize {
    (events + 1024).next_power_of_two()
}

/// Spawns one thread per source, releases them together with the writer,
/// runs `write_all` on this thread, and returns the time until the last
/// watcher has received `events` upserts.
///
/// # Panics
///
/// Panics with the watcher's error when a watcher fails, lags or receives
/// an index that does not increase.
fn timed_round<W, F>(
    sources: Vec<W>,
    events: usize,
    next_index: fn(&mut W) -> Result<u64, String>,
    write_all: F,
) -> Duration
where
    W: Send + 'static,
    F: FnOnce(),
{
    let barrier = Arc::new(Barrier::new(sources.len() + 1));
    let watchers: Vec<_> = sources
        .into_iter()
        .map(|mut source| {
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || -> Result<(), String> {
                barrier.wait();
                let mut last = 0;
                for received in 0..events {
                    let index = next_index(&mut source)?;
                    if index <= last && received > 0 {
                        return Err(format!("index {index} after {last}"));
                    }
                    last = index;
                }
                Ok(())
            })
        })
        .collect();

    barrier.wait();
    let start = Instant::now();
    write_all();
    for watcher in watchers {
        match watcher.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => panic!("a watcher failed: {error}"),
            Err(_) => panic!("a watcher thread panicked"),
        }
    }
    start.elapsed()
}

/// Returns the index of the next upsert, skipping `EndOfSnapshot`.
fn next_upsert<W: BenchWatch>(watch: &mut W) -> Result<u64, String> {
    loop {
        match watch.next_event()? {
            Delivered::Upsert { index } => return Ok(index),
            Delivered::EndOfSnapshot { .. } => continue,
        }
    }
}

/// Starts `count` watches on `store` and reads each past its snapshot.
fn started_watches<S: BenchStore>(store: &S, count: usize) -> Vec<S::Watch> {
    (0..count)
        .map(|_| {
            let mut watch = store.watch_all();
            loop {
                match watch.next_event() {
                    Ok(Delivered::EndOfSnapshot { .. }) => break watch,
                    Ok(Delivered::Upsert { .. }) => continue,
                    Err(error) => panic!("reading a watch snapshot failed: {error}"),
                }
            }
        })
        .collect()
}

/// Benchmarks `events` CAS rewrites of one resource fanned out to `watchers`.
fn bench_store<S: BenchStore>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    mode: Mode,
    name: &str,
    watchers: usize,
    events: usize,
    store: S,
) {
    let mut current = store
        .write_cas(&fixtures::resource(0))
        .unwrap_or_else(|error| panic!("{name}: creating the resource failed: {error}"));
    let mut write_all = move |store: &S| {
        for _ in 0..events {
            current = store
                .write_cas(&current)
                .unwrap_or_else(|error| panic!("{name}: rewrite failed: {error}"));
        }
    };
    group.bench_function(BenchmarkId::new(name, watchers), |b| {
        b.iter_custom(|rounds| {
            let mut total = Duration::ZERO;
            for _ in 0..rounds {
                let watches = started_watches(&store, watchers);
                total += match mode {
                    Mode::Live => timed_round(watches, events, next_upsert::<S::Watch>, || {
                        write_all(&store)
                    }),
                    Mode::Backlog => {
                        write_all(&store);
                        store.flush();
                        timed_round(watches, events, next_upsert::<S::Watch>, || {})
                    }
                };
            }
            total
        })
    });
}

fn next_broadcast(subscriber: &mut BroadcastSubscriber) -> Result<u64, String> {
    match subscriber.recv() {
        Ok(PeerEvent::Upsert { index, .. }) => Ok(index),
        Ok(other) => Err(format!("unexpected event {other:?}")),
        Err(error) => Err(format!("{error:?}")),
    }
}

/// Benchmarks `events` broadcast sends fanned out to `watchers`.
fn bench_broadcast(
    group: &mut BenchmarkGroup<'_, WallTime>,
    mode: Mode,
    watchers: usize,
    events: usize,
) {
    let log = BroadcastLog::new(log_capacity(events));
    let resource: Arc<Resource> = Arc::new(fixtures::resource(0));
    let mut index = 0u64;
    let mut send_all = || {
        for _ in 0..events {
            index += 1;
            log.publish(PeerEvent::Upsert {
                index,
                resource: Arc::clone(&resource),
            });
        }
    };
    group.bench_function(BenchmarkId::new("tokio_broadcast", watchers), |b| {
        b.iter_custom(|rounds| {
            let mut total = Duration::ZERO;
            for _ in 0..rounds {
                let subscribers = (0..watchers).map(|_| log.subscribe()).collect();
                total += match mode {
                    Mode::Live => timed_round(subscribers, events, next_broadcast, &mut send_all),
                    Mode::Backlog => {
                        send_all();
                        timed_round(subscribers, events, next_broadcast, || {})
                    }
                };
            }
            total
        })
    });
}

fn fanout(c: &mut Criterion) {
    let events = settings::event_count();
    for mode in [Mode::Live, Mode::Backlog] {
        let mut group = c.benchmark_group(mode.group_name());
        settings::configure(&mut group, Pace::Slow);

        for watchers in WATCHER_COUNTS {
            group.throughput(Throughput::Elements((events * watchers) as u64));
            let options = StoreOptions::default().log_capacity(log_capacity(events));
            let store = Store::with_options(options)
                .unwrap_or_else(|error| panic!("creating the watchstore store failed: {error:?}"));
            bench_store(&mut group, mode, "watchstore", watchers, events, store);
            bench_broadcast(&mut group, mode, watchers, events);
            bench_store(
                &mut group,
                mode,
                "consul_style",
                watchers,
                events,
                ConsulStyleStore::new(),
            );
            let locked = LockedBTreeStore::new(log_capacity(events));
            bench_store(
                &mut group,
                mode,
                "rwlock_btreemap",
                watchers,
                events,
                locked,
            );
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = settings::criterion();
    targets = fanout
}
criterion_main!(benches);
