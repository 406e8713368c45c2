//! One interface over watchstore and the peer stores, so each benchmark runs
//! the same code against all of them.

use std::fmt::Debug;
use std::sync::Arc;

use watchstore::{Id, Resource, Store, Tenancy, Watch, WatchEvent};

use super::consul_style::{ConsulStyleStore, ConsulStyleWatch};
use super::fixtures::{self, Filter, PeerEvent, Rng};
use super::locked_btree::{LockedBTreeStore, LockedBTreeWatch};

/// Kind and index of a delivered watch event. The resource is dropped on
/// conversion, as a consumer that is done with it would drop it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivered {
    Upsert { index: u64 },
    EndOfSnapshot { index: u64 },
}

/// A store under benchmark.
pub trait BenchStore: Send + Sync + 'static {
    type Watch: BenchWatch;

    /// Writes with compare-and-swap; `resource.version` is the expected version.
    fn write_cas(&self, resource: &Resource) -> Result<Arc<Resource>, String>;

    /// Reads one resource.
    fn read(&self, id: &Id) -> Result<Arc<Resource>, String>;

    /// Starts a watch on every benchmark resource: a snapshot, the end of
    /// the snapshot, then every later write.
    fn watch_all(&self) -> Self::Watch;

    /// Blocks until every committed write is readable by open watches. Only
    /// the Consul-style store publishes after the write returns.
    fn flush(&self) {}
}

/// A watch under benchmark.
pub trait BenchWatch: Send + 'static {
    /// Blocks until the next event.
    fn next_event(&mut self) -> Result<Delivered, String>;
}

fn describe(error: impl Debug) -> String {
    format!("{error:?}")
}

fn delivered(event: PeerEvent) -> Delivered {
    match event {
        PeerEvent::Upsert { index, .. } => Delivered::Upsert { index },
        PeerEvent::EndOfSnapshot { index } => Delivered::EndOfSnapshot { index },
    }
}

impl BenchStore for Store {
    type Watch = Watch;

    fn write_cas(&self, resource: &Resource) -> Result<Arc<Resource>, String> {
        Store::write_cas(self, resource).map_err(describe)
    }

    fn read(&self, id: &Id) -> Result<Arc<Resource>, String> {
        Store::read(self, id).map_err(describe)
    }

    /// # Panics
    ///
    /// Panics with the store's error if the watch cannot start; the type
    /// and tenancy are valid, so that is a bug in the store.
    fn watch_all(&self) -> Watch {
        let tenancy = Tenancy {
            partition: "*".to_owned(),
            namespace: "*".to_owned(),
        };
        self.watch_list(&fixtures::resource_type(), &tenancy, "")
            .unwrap_or_else(|error| panic!("starting a watchstore watch failed: {error:?}"))
    }
}

impl BenchWatch for Watch {
    fn next_event(&mut self) -> Result<Delivered, String> {
        match self.next().map_err(describe)? {
            WatchEvent::Upsert { index, .. } => Ok(Delivered::Upsert { index }),
            WatchEvent::EndOfSnapshot { index } => Ok(Delivered::EndOfSnapshot { index }),
            other => Err(format!("unexpected watch event {other:?}")),
        }
    }
}

impl BenchStore for ConsulStyleStore {
    type Watch = ConsulStyleWatch;

    fn write_cas(&self, resource: &Resource) -> Result<Arc<Resource>, String> {
        ConsulStyleStore::write_cas(self, resource).map_err(describe)
    }

    fn read(&self, id: &Id) -> Result<Arc<Resource>, String> {
        ConsulStyleStore::read(self, id).map_err(describe)
    }

    fn watch_all(&self) -> ConsulStyleWatch {
        self.watch(&Filter::all_items())
    }

    fn flush(&self) {
        ConsulStyleStore::flush(self);
    }
}

impl BenchWatch for ConsulStyleWatch {
    fn next_event(&mut self) -> Result<Delivered, String> {
        self.next()
            .map(delivered)
            .ok_or_else(|| "the Consul-style store was dropped".to_owned())
    }
}

impl BenchStore for LockedBTreeStore {
    type Watch = LockedBTreeWatch;

    fn write_cas(&self, resource: &Resource) -> Result<Arc<Resource>, String> {
        LockedBTreeStore::write_cas(self, resource).map_err(describe)
    }

    fn read(&self, id: &Id) -> Result<Arc<Resource>, String> {
        LockedBTreeStore::read(self, id).map_err(describe)
    }

    fn watch_all(&self) -> LockedBTreeWatch {
        self.watch(&Filter::all_items())
    }
}

impl BenchWatch for LockedBTreeWatch {
    fn next_event(&mut self) -> Result<Delivered, String> {
        self.next().map(delivered).map_err(describe)
    }
}

/// Creates resources `0..count` in `store`; returns the stored copies, whose
/// versions are the expected versions of the next writes.
///
/// # Panics
///
/// Panics with the store's error if a create fails: the store is empty, so
/// a failure is a bug in the store.
pub fn prefill<S: BenchStore>(store: &S, count: usize) -> Vec<Arc<Resource>> {
    (0..count)
        .map(|n| {
            store
                .write_cas(&fixtures::resource(n))
                .unwrap_or_else(|error| panic!("creating resource {n} failed: {error}"))
        })
        .collect()
}

/// Rewrites stored resources picked at random, each with its current version.
pub struct RandomUpdater {
    current: Vec<Arc<Resource>>,
    rng: Rng,
}

impl RandomUpdater {
    /// Starts from the stored copies returned by `prefill`.
    pub fn new(current: Vec<Arc<Resource>>, seed: u64) -> RandomUpdater {
        RandomUpdater {
            current,
            rng: Rng::new(seed),
        }
    }

    /// Rewrites one random resource with its current version.
    ///
    /// # Panics
    ///
    /// Panics with the store's error if the write fails, which means another
    /// writer changed the resource or the store lost a write.
    #[inline]
    pub fn update_one<S: BenchStore>(&mut self, store: &S) {
        let slot = self.rng.below(self.current.len());
        let stored = store
            .write_cas(&self.current[slot])
            .unwrap_or_else(|error| panic!("updating resource {slot} failed: {error}"));
        self.current[slot] = stored;
    }
}
