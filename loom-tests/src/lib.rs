//! Loom models of watchstore: the snapshot-to-log handoff, the ring
//! overwrite and its reclamation, the wake-ups, two concurrent writers, and
//! close and restore racing watches.
//!
//! The models exist only in the loom build. Run them with `run.sh` in this
//! directory, which sets `--cfg loom --cfg crossbeam_loom`, each model's
//! preemption bound and a separate target directory. In a normal build this
//! crate is empty.
//!
//! Every model builds a fresh store, so each has its own epoch collector.
//! Each model thread other than the main one installs an epoch handle that
//! the main thread registered and pinned before spawning it, and at most one
//! thread flushes. Both rules exist because loom 0.7.3 can fail internally
//! when two spawned threads advance crossbeam-epoch's global epoch
//! (tokio-rs/loom#252).
//!
//! A violated property panics with a message starting with
//! [`VIOLATION`], so `run.sh` can tell a caught bug from a crash.

#![cfg(loom)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use watchstore::{Error, Id, Resource, Store, StoreOptions, Tenancy, Type, Watch, WatchEvent};

/// The prefix of every property assertion's message.
pub const VIOLATION: &str = "model property violated";

/// How much of the interleaving space a model explores.
#[derive(Clone, Copy, Debug)]
pub enum Bound {
    /// Every interleaving loom distinguishes.
    Exhaustive,
    /// Interleavings with at most this many preemptions.
    Preemptions(usize),
}

/// Runs `model` under loom with `bound`, unless `LOOM_MAX_PREEMPTIONS`
/// overrides it, and prints the bound used.
pub fn check<F>(name: &str, bound: Bound, model: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        if let Bound::Preemptions(preemptions) = bound {
            builder.preemption_bound = Some(preemptions);
        }
    }
    let described = match builder.preemption_bound {
        Some(preemptions) => format!("at most {preemptions} preemptions"),
        None => "exhaustive".to_owned(),
    };
    let executions = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&executions);
    builder.check(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        model();
    });
    println!(
        "model {name}: {} executions checked, {described}",
        executions.load(Ordering::Relaxed)
    );
}

/// The outcomes a model's executions reached, to show that loom explored
/// the interleavings the model is about.
///
/// loom 0.7.3's partial-order reduction misses some races (a thread's load
/// of an object can hide an earlier load by another thread from its later
/// write: tokio-rs/loom#166 and #392), so a model that passes without
/// reaching its interesting interleavings would prove little. Each model
/// records a short outcome per execution and asserts afterwards that it saw
/// the ones it needs.
pub struct Outcomes {
    seen: Mutex<BTreeSet<String>>,
}

impl Outcomes {
    pub const fn new() -> Self {
        Outcomes {
            seen: Mutex::new(BTreeSet::new()),
        }
    }

    /// Records the outcome of one execution.
    pub fn record(&self, outcome: String) {
        self.lock().insert(outcome);
    }

    /// Prints every outcome seen, and panics if one of `required` is
    /// missing.
    pub fn assert_reached(&self, model: &str, required: &[&str]) {
        let seen = self.lock();
        println!("model {model}: outcomes {seen:?}");
        for outcome in required {
            assert!(
                seen.contains(*outcome),
                "model {model} never reached outcome {outcome:?}, so it proves less than it \
                 states; a lower preemption bound or a loom scheduling gap can cause this"
            );
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for Outcomes {
    fn default() -> Self {
        Outcomes::new()
    }
}

/// Returns the resource type every model uses.
pub fn test_type() -> Type {
    Type {
        group: "test".into(),
        group_version: "v1".into(),
        kind: "a".into(),
    }
}

/// Returns the tenancy every model uses.
pub fn test_tenancy() -> Tenancy {
    Tenancy {
        partition: "default".into(),
        namespace: "default".into(),
    }
}

/// Builds a resource named `name` with uid `uid-{name}`, to write with the
/// expected version `version` (empty to create).
pub fn resource(name: &str, version: &str) -> Resource {
    Resource {
        id: Some(id(name)),
        version: version.into(),
        ..Default::default()
    }
}

/// Returns the id of the resource named `name`.
pub fn id(name: &str) -> Id {
    Id {
        uid: format!("uid-{name}"),
        name: name.into(),
        r#type: Some(test_type()),
        tenancy: Some(test_tenancy()),
    }
}

/// Creates a store whose log keeps `capacity` events.
pub fn store(capacity: usize) -> Store {
    Store::with_options(StoreOptions::default().log_capacity(capacity))
        .expect("a power-of-two capacity is valid")
}

/// Starts a watch over every resource of the models' type and tenancy.
pub fn watch(store: &Store) -> Result<Watch, Error> {
    store.watch_list(&test_type(), &test_tenancy(), "")
}

/// Creates `name` and returns its commit index.
pub fn create(store: &Store, name: &str) -> u64 {
    let stored = store
        .write_cas(&resource(name, ""))
        .expect("creating a new name succeeds");
    parse_version(&stored)
}

/// Returns the commit index that wrote `resource`.
pub fn parse_version(resource: &Resource) -> u64 {
    resource
        .version
        .parse()
        .expect("versions are decimal commit indexes")
}

/// Returns the name of a resource.
pub fn name_of(resource: &Resource) -> &str {
    resource.id.as_ref().map_or("", |id| id.name.as_str())
}

/// The items and the final error of a series of non-blocking reads of a
/// watch.
#[derive(Debug, Default)]
pub struct Drained {
    pub events: Vec<WatchEvent>,
    /// The error that ended the watch, if any.
    pub error: Option<Error>,
}

/// Reads `watch` with `try_next` until it has nothing ready or fails, and
/// appends what it returned to `into`.
pub fn drain(watch: &mut Watch, into: &mut Drained) {
    while into.error.is_none() {
        match watch.try_next() {
            Ok(Some(event)) => into.events.push(event),
            Ok(None) => return,
            Err(error) => into.error = Some(error),
        }
    }
}

/// Reads `watch` until its `EndOfSnapshot`, and returns the snapshot's
/// events and index. The snapshot phase never waits, so `try_next` returns
/// an item each time unless the watch fails, and this panics if it does.
pub fn read_snapshot(watch: &mut Watch) -> (Vec<WatchEvent>, u64) {
    let mut events = Vec::new();
    loop {
        match watch.try_next() {
            Ok(Some(WatchEvent::EndOfSnapshot { index })) => return (events, index),
            Ok(Some(event)) => events.push(event),
            other => panic!("{VIOLATION}: a snapshot read returned {other:?}"),
        }
    }
}

/// A watcher's view of the store, built from its events, that checks every
/// event against the watch contract: a snapshot at one index, then each
/// later change exactly once and in commit order.
#[derive(Debug, Default)]
pub struct View {
    /// Resources by name, as the events left them.
    pub resources: BTreeMap<String, Arc<Resource>>,
    /// The snapshot index, once `EndOfSnapshot` was seen.
    pub snapshot: Option<u64>,
    /// The index of the last event applied.
    pub last: u64,
}

impl View {
    /// Applies `event` and panics if it breaks the watch contract.
    pub fn apply(&mut self, event: &WatchEvent) {
        match (self.snapshot, event) {
            (None, WatchEvent::Upsert { index, resource }) => {
                assert!(
                    parse_version(resource) <= *index,
                    "{VIOLATION}: snapshot at {index} holds a resource of version {}",
                    resource.version
                );
                self.resources
                    .insert(name_of(resource).to_owned(), Arc::clone(resource));
                self.last = *index;
            }
            (None, WatchEvent::EndOfSnapshot { index }) => {
                assert!(
                    self.resources.is_empty() || self.last == *index,
                    "{VIOLATION}: snapshot upserts at {} but EndOfSnapshot at {index}",
                    self.last
                );
                self.snapshot = Some(*index);
                self.last = *index;
            }
            (Some(snapshot), WatchEvent::Upsert { index, resource }) => {
                self.check_live_index(snapshot, *index);
                let name = name_of(resource);
                assert_eq!(
                    parse_version(resource),
                    *index,
                    "{VIOLATION}: upsert of {name} at {index} carries another version"
                );
                if let Some(previous) = self.resources.get(name) {
                    assert!(
                        parse_version(previous) < *index,
                        "{VIOLATION}: upsert of {name} at {index} after version {}",
                        previous.version
                    );
                }
                self.resources.insert(name.to_owned(), Arc::clone(resource));
            }
            (Some(snapshot), WatchEvent::Delete { index, resource }) => {
                self.check_live_index(snapshot, *index);
                let name = name_of(resource);
                let viewed = self.resources.remove(name);
                let viewed = viewed.unwrap_or_else(|| {
                    panic!("{VIOLATION}: delete at {index} of {name}, absent from the view")
                });
                assert_eq!(
                    viewed.version, resource.version,
                    "{VIOLATION}: delete at {index} of {name} carries another version than the view's"
                );
            }
            (snapshot, event) => {
                panic!("{VIOLATION}: {event:?} out of place (snapshot index {snapshot:?})")
            }
        }
    }

    fn check_live_index(&mut self, snapshot: u64, index: u64) {
        assert!(
            index > snapshot,
            "{VIOLATION}: live event at {index} is already in the snapshot at {snapshot}"
        );
        assert_eq!(
            index,
            self.last + 1,
            "{VIOLATION}: live event at {index} follows index {}, not the one before it",
            self.last
        );
        self.last = index;
    }

    /// Panics unless the view contains exactly the resources `store` contains
    /// now.
    pub fn assert_matches(&self, store: &Store) {
        let listed = store
            .list(&test_type(), &test_tenancy(), "")
            .expect("the models' query is valid");
        let stored: BTreeMap<String, String> = listed
            .iter()
            .map(|resource| (name_of(resource).to_owned(), resource.version.clone()))
            .collect();
        let viewed: BTreeMap<String, String> = self
            .resources
            .iter()
            .map(|(name, resource)| (name.clone(), resource.version.clone()))
            .collect();
        assert_eq!(
            viewed, stored,
            "{VIOLATION}: the watch's view differs from the store"
        );
    }
}
