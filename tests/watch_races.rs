//! Races between writers and watches.
//!
//! Writers change a small key space with CAS writes and deletes while
//! watches start, stop and resume at random moments. Each watch builds a
//! view (key to resource) from its events and checks every event as it
//! arrives. At the end each view must equal `Store::list` with the same
//! filter. With the default ring, a watch per kind that received every
//! event since index 0 is the reference history. Every other watch must
//! deliver exactly that history's matching events after its start, and
//! every snapshot must equal the history replayed up to the snapshot's
//! index.
//!
//! The randomized tests print their seed. Set `WATCH_RACES_SEED` to rerun
//! one; the thread interleaving still differs from run to run.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use watchstore::{
    Error, Id, LagPolicy, Resource, Store, StoreOptions, Tenancy, Type, Watch, WatchEvent,
    WatchOptions,
};

// ---------------------------------------------------------------------------
// Random numbers and fixtures

/// SplitMix64: small, seedable, good enough to pick keys and actions.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound as u64) as usize
    }

    fn percent(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Returns the seed from `WATCH_RACES_SEED`, or one derived from the clock.
fn base_seed(test: &str) -> u64 {
    let seed = match std::env::var("WATCH_RACES_SEED") {
        Ok(value) => value
            .parse()
            .expect("WATCH_RACES_SEED must be an unsigned integer"),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_nanos() as u64,
    };
    eprintln!("{test}: seed {seed} (rerun with WATCH_RACES_SEED={seed})");
    seed
}

const GROUP: &str = "test";

/// A resource key as the store defines it: the group is always `GROUP`,
/// and neither the group version nor the uid is part of it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Key {
    kind: String,
    partition: String,
    namespace: String,
    name: String,
}

impl Key {
    fn new(kind: &str, partition: &str, namespace: &str, name: &str) -> Key {
        Key {
            kind: kind.into(),
            partition: partition.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    fn of(resource: &Resource) -> Key {
        let id = resource.id.as_ref().expect("stored resources have an id");
        let ty = id.r#type.as_ref().expect("stored ids have a type");
        let tenancy = id.tenancy.clone().unwrap_or_default();
        assert_eq!(ty.group, GROUP, "only group {GROUP:?} is written");
        Key::new(&ty.kind, &tenancy.partition, &tenancy.namespace, &id.name)
    }

    fn id(&self, group_version: &str, uid: &str) -> Id {
        Id {
            uid: uid.into(),
            name: self.name.clone(),
            r#type: Some(Type {
                group: GROUP.into(),
                group_version: group_version.into(),
                kind: self.kind.clone(),
            }),
            tenancy: Some(Tenancy {
                partition: self.partition.clone(),
                namespace: self.namespace.clone(),
            }),
        }
    }
}

fn new_resource(key: &Key, group_version: &str, uid: &str) -> Resource {
    Resource {
        id: Some(key.id(group_version, uid)),
        ..Resource::default()
    }
}

fn uid_of(resource: &Resource) -> &str {
    resource.id.as_ref().map_or("", |id| id.uid.as_str())
}

fn version_of(resource: &Resource) -> u64 {
    resource
        .version
        .parse()
        .unwrap_or_else(|_| panic!("stored version {:?} is not a u64", resource.version))
}

/// Reads whatever is stored under `key`, whatever its group version.
fn read_any(store: &Store, key: &Key) -> Option<Arc<Resource>> {
    match store.read(&key.id("v1", "")) {
        Ok(resource) => Some(resource),
        Err(Error::GroupVersionMismatch { stored, .. }) => Some(stored),
        Err(Error::NotFound { .. }) => None,
        Err(other) => panic!("read of {key:?} failed: {other}"),
    }
}

/// The filter of a list or watch, evaluated independently of the store.
#[derive(Clone, Debug)]
struct Filter {
    kind: String,
    partition: String,
    namespace: String,
    prefix: String,
}

impl Filter {
    fn new(kind: &str, partition: &str, namespace: &str, prefix: &str) -> Filter {
        Filter {
            kind: kind.into(),
            partition: partition.into(),
            namespace: namespace.into(),
            prefix: prefix.into(),
        }
    }

    fn matches(&self, key: &Key) -> bool {
        key.kind == self.kind
            && (self.partition == "*" || key.partition == self.partition)
            && (self.namespace == "*" || key.namespace == self.namespace)
            && key.name.starts_with(&self.prefix)
    }

    fn ty(&self) -> Type {
        // The group version is "v1" while writers write "v1" and "v2": the
        // store must ignore it when filtering.
        Type {
            group: GROUP.into(),
            group_version: "v1".into(),
            kind: self.kind.clone(),
        }
    }

    fn tenancy(&self) -> Tenancy {
        Tenancy {
            partition: self.partition.clone(),
            namespace: self.namespace.clone(),
        }
    }

    fn watch(&self, store: &Store, options: WatchOptions) -> Result<Watch, Error> {
        store.watch_list_with(&self.ty(), &self.tenancy(), &self.prefix, options)
    }

    fn list(&self, store: &Store) -> BTreeMap<Key, Arc<Resource>> {
        let listed = store
            .list(&self.ty(), &self.tenancy(), &self.prefix)
            .expect("list with a valid filter");
        let view: BTreeMap<_, _> = listed
            .iter()
            .map(|resource| (Key::of(resource), Arc::clone(resource)))
            .collect();
        assert_eq!(view.len(), listed.len(), "list returned a key twice");
        for resource in &listed {
            assert!(
                self.matches(&Key::of(resource)),
                "list {self:?} returned {resource:?}"
            );
        }
        view
    }
}

/// Key to (version, uid): what the checks compare.
type Summary = BTreeMap<Key, (u64, String)>;

fn summarize(resources: &BTreeMap<Key, Arc<Resource>>) -> Summary {
    resources
        .iter()
        .map(|(key, resource)| (key.clone(), (version_of(resource), uid_of(resource).into())))
        .collect()
}

// ---------------------------------------------------------------------------
// Views built from watch events

/// One event after a watch's start point, as recorded for the history
/// checks.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Recorded {
    index: u64,
    key: Key,
    /// The upsert's new version, or the version of the deleted copy.
    version: u64,
    uid: String,
    delete: bool,
}

/// What one watch (or one snapshot of a watch that reset) delivered.
#[derive(Debug)]
struct Connection {
    filter: Filter,
    /// The index the following part starts after: the snapshot's index or
    /// the resume index. `None` while the snapshot is incomplete.
    start: Option<u64>,
    /// The snapshot contents, for a connection that began with one.
    snapshot: Option<Summary>,
    /// Events after `start`, in delivery order.
    events: Vec<Recorded>,
    /// Whether the connection was drained up to the final index.
    drained: bool,
}

#[derive(Debug)]
enum Phase {
    /// Receiving snapshot upserts, which all carry one index of at least
    /// `min_index`.
    Snapshot { index: Option<u64>, min_index: u64 },
    /// Receiving changes.
    Follow,
}

/// A materialized view of the resources matching a filter.
struct View {
    filter: Filter,
    /// Seed and watcher name, for failure messages.
    context: String,
    resources: BTreeMap<Key, Arc<Resource>>,
    phase: Phase,
    /// The index of the last event applied, or the start point.
    last_index: u64,
    /// A blind view started without knowing the state (`After(j)` with no
    /// snapshot): a delete of a key it never saw is allowed.
    blind: bool,
    policy: LagPolicy,
    connections: Vec<Connection>,
}

impl View {
    /// Creates a view for a watch that starts with a snapshot, taken at an
    /// index of at least `min_index`.
    fn expecting_snapshot(
        filter: &Filter,
        context: &str,
        min_index: u64,
        policy: LagPolicy,
    ) -> View {
        View {
            filter: filter.clone(),
            context: context.into(),
            resources: BTreeMap::new(),
            phase: Phase::Snapshot {
                index: None,
                min_index,
            },
            last_index: 0,
            blind: false,
            policy,
            connections: vec![Connection {
                filter: filter.clone(),
                start: None,
                snapshot: None,
                events: Vec::new(),
                drained: false,
            }],
        }
    }

    /// Creates a view that follows from `index` with the given contents.
    /// `blind` is set when the contents are unknown.
    fn following(
        filter: &Filter,
        context: &str,
        resources: BTreeMap<Key, Arc<Resource>>,
        index: u64,
        blind: bool,
        policy: LagPolicy,
        snapshot: Option<Summary>,
    ) -> View {
        View {
            filter: filter.clone(),
            context: context.into(),
            resources,
            phase: Phase::Follow,
            last_index: index,
            blind,
            policy,
            connections: vec![Connection {
                filter: filter.clone(),
                start: Some(index),
                snapshot,
                events: Vec::new(),
                drained: false,
            }],
        }
    }

    fn is_following(&self) -> bool {
        matches!(self.phase, Phase::Follow)
    }

    /// Starts a new connection that resumes this view after its last index.
    fn resume(&mut self) {
        assert!(
            self.is_following(),
            "{}: resume during a snapshot",
            self.context
        );
        self.connections.push(Connection {
            filter: self.filter.clone(),
            start: Some(self.last_index),
            snapshot: None,
            events: Vec::new(),
            drained: false,
        });
    }

    fn record(&mut self, index: u64, resource: &Resource, delete: bool) {
        let recorded = Recorded {
            index,
            key: Key::of(resource),
            version: version_of(resource),
            uid: uid_of(resource).into(),
            delete,
        };
        self.connections
            .last_mut()
            .expect("a view has a connection")
            .events
            .push(recorded);
    }

    /// Checks `event` against the view and applies it.
    fn apply(&mut self, event: &WatchEvent) {
        let context = self.context.clone();
        match (&mut self.phase, event) {
            (
                Phase::Snapshot { index, min_index },
                WatchEvent::Upsert {
                    index: at,
                    resource,
                },
            ) => {
                match index {
                    Some(first) => assert_eq!(
                        at, first,
                        "{context}: snapshot upserts carry different indexes"
                    ),
                    None => {
                        assert!(
                            at >= min_index,
                            "{context}: snapshot at {at}, but index {min_index} was already read"
                        );
                        *index = Some(*at);
                    }
                }
                let key = Key::of(resource);
                assert!(
                    version_of(resource) <= *at,
                    "{context}: snapshot at {at} holds version {}",
                    resource.version
                );
                assert!(
                    self.filter.matches(&key),
                    "{context}: snapshot holds unmatched {key:?}"
                );
                let previous = self.resources.insert(key.clone(), Arc::clone(resource));
                assert!(previous.is_none(), "{context}: snapshot repeats {key:?}");
            }
            (Phase::Snapshot { index, min_index }, WatchEvent::EndOfSnapshot { index: at }) => {
                match index {
                    Some(first) => assert_eq!(
                        at, first,
                        "{context}: EndOfSnapshot index differs from the upserts'"
                    ),
                    None => assert!(
                        at >= min_index,
                        "{context}: snapshot at {at}, but index {min_index} was already read"
                    ),
                }
                self.last_index = *at;
                self.phase = Phase::Follow;
                let snapshot = summarize(&self.resources);
                let connection = self
                    .connections
                    .last_mut()
                    .expect("a view has a connection");
                connection.start = Some(*at);
                connection.snapshot = Some(snapshot);
            }
            (Phase::Follow, WatchEvent::Upsert { index, resource }) => {
                let index = *index;
                assert!(
                    index > self.last_index,
                    "{context}: upsert at {index} after index {}",
                    self.last_index
                );
                assert_eq!(
                    version_of(resource),
                    index,
                    "{context}: upsert version differs from its index"
                );
                let key = Key::of(resource);
                assert!(
                    self.filter.matches(&key),
                    "{context}: upsert of unmatched {key:?}"
                );
                if let Some(previous) = self.resources.get(&key) {
                    assert!(
                        version_of(previous) < index,
                        "{context}: upsert of {key:?} at {index} steps back from version {}",
                        previous.version
                    );
                    assert_eq!(
                        uid_of(previous),
                        uid_of(resource),
                        "{context}: upsert of {key:?} at {index} changes the uid without a delete"
                    );
                }
                self.resources.insert(key, Arc::clone(resource));
                self.last_index = index;
                self.record(index, resource, false);
            }
            (Phase::Follow, WatchEvent::Delete { index, resource }) => {
                let index = *index;
                assert!(
                    index > self.last_index,
                    "{context}: delete at {index} after index {}",
                    self.last_index
                );
                assert!(
                    version_of(resource) < index,
                    "{context}: delete at {index} carries version {}",
                    resource.version
                );
                let key = Key::of(resource);
                assert!(
                    self.filter.matches(&key),
                    "{context}: delete of unmatched {key:?}"
                );
                match self.resources.remove(&key) {
                    Some(previous) => assert_eq!(
                        previous, *resource,
                        "{context}: delete at {index} does not carry the last copy seen"
                    ),
                    None => assert!(
                        self.blind,
                        "{context}: delete at {index} of {key:?}, which the view never saw"
                    ),
                }
                self.last_index = index;
                self.record(index, resource, true);
            }
            (Phase::Follow, WatchEvent::Reset { index }) => {
                assert_eq!(
                    self.policy,
                    LagPolicy::Reset,
                    "{context}: Reset under LagPolicy::Error"
                );
                assert!(
                    *index > self.last_index,
                    "{context}: Reset at {index} after index {}",
                    self.last_index
                );
                self.resources.clear();
                self.blind = false;
                self.phase = Phase::Snapshot {
                    index: None,
                    min_index: *index,
                };
                self.connections.push(Connection {
                    filter: self.filter.clone(),
                    start: None,
                    snapshot: None,
                    events: Vec::new(),
                    drained: false,
                });
            }
            (phase, event) => panic!("{context}: {event:?} during {phase:?}"),
        }
    }

    /// Checks an `Error::Lagged` returned to this view's watch.
    fn check_lagged(&self, error: &Error) {
        let context = &self.context;
        let Error::Lagged { next, oldest } = *error else {
            panic!("{context}: expected Lagged, got {error:?}");
        };
        assert_eq!(
            self.policy,
            LagPolicy::Error,
            "{context}: Lagged under LagPolicy::Reset"
        );
        assert!(self.is_following(), "{context}: Lagged during a snapshot");
        assert!(
            next > self.last_index,
            "{context}: Lagged at {next}, but {} was delivered",
            self.last_index
        );
        assert!(
            oldest > next,
            "{context}: Lagged at {next} with oldest {oldest}"
        );
    }

    /// Checks the finished view against `Store::list`.
    fn assert_equals_list(&self, store: &Store) {
        let listed = self.filter.list(store);
        assert_eq!(
            summarize(&self.resources),
            summarize(&listed),
            "{}: view (left) differs from list (right) at index {}",
            self.context,
            store.current_index()
        );
        assert_eq!(
            self.resources, listed,
            "{}: resource contents differ",
            self.context
        );
    }
}

// ---------------------------------------------------------------------------
// Writers and watchers

const KINDS: [&str; 2] = ["a", "b"];
const PARTITIONS: [&str; 2] = ["default", "billing"];
const NAMESPACES: [&str; 2] = ["default", "other"];
const NAMES: [&str; 3] = ["admin", "api", "web"];

/// Returns filters with a wildcard tenancy, one namespace, a name prefix,
/// a wildcard namespace in one partition, and the bulk resources.
fn filters() -> Vec<Filter> {
    vec![
        Filter::new("a", "*", "*", ""),
        Filter::new("a", "default", "default", ""),
        Filter::new("a", "*", "*", "a"),
        Filter::new("b", "billing", "*", ""),
        Filter::new("a", "default", "bulk", "a-"),
    ]
}

/// Returns the 24 keys writers change, few enough that writers often
/// collide.
fn contended_keys() -> Vec<Key> {
    let mut keys = Vec::new();
    for kind in KINDS {
        for partition in PARTITIONS {
            for namespace in NAMESPACES {
                for name in NAMES {
                    keys.push(Key::new(kind, partition, namespace, name));
                }
            }
        }
    }
    keys
}

/// Creates bulk resources that no writer changes later, enough that a
/// snapshot takes several batches.
fn create_bulk(store: &Store, count: usize) {
    for n in 0..count {
        let name = if n % 2 == 0 {
            format!("a-{n:04}")
        } else {
            format!("b-{n:04}")
        };
        let key = Key::new("a", "default", "bulk", &name);
        store
            .write_cas(&new_resource(&key, "v1", &format!("bulk-{n}")))
            .expect("bulk create");
    }
}

/// Counts of what a writer did.
#[derive(Default, Debug)]
struct WriterStats {
    creates: usize,
    updates: usize,
    deletes: usize,
    conflicts: usize,
}

/// Performs `ops` successful creates, updates or deletes on random keys,
/// retrying each on a CAS conflict.
fn run_writer(store: &Store, keys: &[Key], ops: usize, seed: u64, writer: usize) -> WriterStats {
    let mut rng = Rng::new(seed);
    let mut stats = WriterStats::default();
    for op in 0..ops {
        loop {
            let key = rng.pick(keys);
            let group_version = if rng.percent(50) { "v1" } else { "v2" };
            let result = match read_any(store, key) {
                None => store
                    .write_cas(&new_resource(
                        key,
                        group_version,
                        &format!("w{writer}-{op}"),
                    ))
                    .map(|stored| {
                        assert_eq!(uid_of(&stored), format!("w{writer}-{op}"));
                        stats.creates += 1;
                    }),
                Some(stored) if rng.percent(25) => {
                    let id = stored.id.clone().expect("stored resources have an id");
                    // A no-op delete (the resource was replaced by another
                    // life meanwhile) also returns Ok; it is counted anyway.
                    store
                        .delete_cas(&id, &stored.version)
                        .map(|()| stats.deletes += 1)
                }
                Some(stored) => {
                    let mut update = Resource::clone(&stored);
                    if let Some(ty) = update.id.as_mut().and_then(|id| id.r#type.as_mut()) {
                        ty.group_version = group_version.into();
                    }
                    update
                        .metadata
                        .insert("writer".into(), format!("{writer}-{op}"));
                    store.write_cas(&update).map(|written| {
                        assert!(version_of(&written) > version_of(&stored));
                        stats.updates += 1;
                    })
                }
            };
            match result {
                Ok(()) => break,
                Err(Error::CasFailure { .. } | Error::WrongUid { .. }) => stats.conflicts += 1,
                Err(other) => panic!("writer {writer}: unexpected error {other}"),
            }
        }
    }
    stats
}

/// Counts finished writers so watchers know when the store stops changing.
struct Progress {
    finished: AtomicUsize,
    writers: usize,
}

impl Progress {
    fn all_done(&self) -> bool {
        // Acquire pairs with the Release in `finish`: once this returns true,
        // every write has returned, so its event is committed.
        self.finished.load(Ordering::Acquire) == self.writers
    }

    fn finish(&self) {
        self.finished.fetch_add(1, Ordering::Release);
    }
}

/// Counts a writer as finished when dropped, also when the writer panics,
/// so watchers stop and the panic reaches the test instead of a hang.
struct FinishOnDrop<'a>(&'a Progress);

impl Drop for FinishOnDrop<'_> {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// What a watcher hands back: its views, for the history checks.
struct WatcherReport {
    views: Vec<View>,
    lags: usize,
    resets: usize,
    compactions: usize,
}

/// How a watcher (re)connects.
#[derive(Clone, Copy, Debug)]
enum Start {
    /// `watch_list_with` with a snapshot.
    Snapshot,
    /// `Store::snapshot`, then a watch `After` the snapshot's index.
    SnapshotThenAfter,
    /// A watch `After` the last index the current view applied.
    Resume,
    /// A watch `After` the current index, with no known state.
    Blind,
}

/// Watches `filter` on and off until the writers finish, then drains the
/// last watch and checks its view against `list`. `name` prefixes failure
/// messages.
fn run_watcher(
    store: &Store,
    filter: &Filter,
    policy: LagPolicy,
    progress: &Progress,
    seed: u64,
    name: &str,
) -> WatcherReport {
    let mut rng = Rng::new(seed);
    let context = format!("{name}, filter {filter:?}");
    let options = WatchOptions::default().on_lag(policy);
    let mut report = WatcherReport {
        views: Vec::new(),
        lags: 0,
        resets: 0,
        compactions: 0,
    };
    // The view to resume, if the last watch ended while following.
    let mut resumable: Option<View> = None;

    loop {
        let final_round = progress.all_done();
        let mut start = match rng.below(10) {
            0..=2 => Start::Snapshot,
            3..=4 => Start::SnapshotThenAfter,
            5 => Start::Blind,
            _ => Start::Resume,
        };
        if (matches!(start, Start::Resume) && resumable.is_none())
            || (final_round && matches!(start, Start::Blind))
        {
            start = Start::Snapshot;
        }
        if !matches!(start, Start::Resume) {
            report.views.extend(resumable.take());
        }

        let (watch, mut view) = match start {
            Start::Snapshot => {
                let before = store.current_index();
                let view = View::expecting_snapshot(filter, &context, before, policy);
                (filter.watch(store, options), view)
            }
            Start::SnapshotThenAfter => {
                let snapshot = store.snapshot();
                let resources: BTreeMap<Key, Arc<Resource>> = snapshot
                    .iter()
                    .filter(|resource| filter.matches(&Key::of(resource)))
                    .map(|resource| (Key::of(&resource), resource))
                    .collect();
                let summary = summarize(&resources);
                let view = View::following(
                    filter,
                    &context,
                    resources,
                    snapshot.index(),
                    false,
                    policy,
                    Some(summary),
                );
                (filter.watch(store, options.after(snapshot.index())), view)
            }
            Start::Resume => {
                let mut view = resumable.take().expect("checked above");
                view.resume();
                (filter.watch(store, options.after(view.last_index)), view)
            }
            Start::Blind => {
                let after = store.current_index();
                let view =
                    View::following(filter, &context, BTreeMap::new(), after, true, policy, None);
                (filter.watch(store, options.after(after)), view)
            }
        };
        let mut watch = match watch {
            Ok(watch) => watch,
            Err(Error::Compacted { requested, oldest }) => {
                // Only a small ring loses a resume point this fast.
                assert!(
                    oldest > requested,
                    "{context}: Compacted at {requested} with oldest {oldest}"
                );
                report.compactions += 1;
                report.views.push(view);
                continue;
            }
            Err(other) => panic!("{context}: starting a watch ({start:?}) failed: {other}"),
        };

        // Follow for a while, or until caught up once the writers are done.
        let budget = if final_round {
            usize::MAX
        } else {
            rng.below(400)
        };
        let mut lagged = false;
        let mut caught_up = false;
        for _ in 0..budget {
            let received = if rng.percent(50) {
                watch.try_next()
            } else {
                watch.next_timeout(Duration::from_millis(1))
            };
            match received {
                Ok(Some(event)) => {
                    if matches!(event, WatchEvent::Reset { .. }) {
                        report.resets += 1;
                    }
                    view.apply(&event);
                }
                Ok(None) if final_round => {
                    // The writers were done before this call, so every event
                    // is committed: nothing pending means caught up.
                    caught_up = true;
                    break;
                }
                Ok(None) => {}
                Err(error @ Error::Lagged { .. }) => {
                    view.check_lagged(&error);
                    let again = watch.try_next().expect_err("Lagged is final");
                    assert_eq!(
                        again, error,
                        "{context}: a later call returned another error"
                    );
                    report.lags += 1;
                    lagged = true;
                    break;
                }
                Err(other) => panic!("{context}: watch failed: {other}"),
            }
        }
        drop(watch);

        if caught_up {
            assert!(
                !view.blind,
                "{context}: the final watch must know its state"
            );
            view.connections
                .last_mut()
                .expect("a view has a connection")
                .drained = true;
            view.assert_equals_list(store);
            report.views.push(view);
            return report;
        }

        // Disconnect. A following, non-blind view may be resumed. Any other
        // is finished and kept for the history checks.
        if !lagged && view.is_following() && !view.blind {
            resumable = Some(view);
        } else {
            report.views.push(view);
        }
    }
}

// ---------------------------------------------------------------------------
// History checks

/// Every event of the store, by index, from watches that saw all of them.
struct History {
    events: BTreeMap<u64, Recorded>,
}

impl History {
    /// Builds the history from the reference views (one per kind, started
    /// at index 0) and checks that it has exactly one event per index.
    fn from_references(references: &[View], final_index: u64, seed: u64) -> History {
        let mut events = BTreeMap::new();
        for view in references {
            assert_eq!(
                view.connections.len(),
                1,
                "seed {seed}: reference watch reset"
            );
            let connection = &view.connections[0];
            assert_eq!(
                connection.start,
                Some(0),
                "seed {seed}: reference watch start"
            );
            for event in &connection.events {
                let previous = events.insert(event.index, event.clone());
                assert!(
                    previous.is_none(),
                    "seed {seed}: two events at index {}",
                    event.index
                );
            }
        }
        let indexes: Vec<u64> = events.keys().copied().collect();
        let expected: Vec<u64> = (1..=final_index).collect();
        assert!(
            indexes == expected,
            "seed {seed}: reference watches saw {} events, expected one per index 1..={final_index}",
            indexes.len()
        );
        History { events }
    }

    /// Checks that each connection delivered exactly the matching events
    /// after its start, up to its last event (or to the final index if it
    /// was drained).
    fn check_events(&self, connection: &Connection, final_index: u64, context: &str) {
        let Some(start) = connection.start else {
            assert!(
                connection.events.is_empty(),
                "{context}: events before a snapshot ended"
            );
            return;
        };
        let end = if connection.drained {
            final_index
        } else {
            connection.events.last().map_or(start, |event| event.index)
        };
        let expected: Vec<&Recorded> = self
            .events
            .range(start + 1..end + 1)
            .map(|(_, event)| event)
            .filter(|event| connection.filter.matches(&event.key))
            .collect();
        let delivered: Vec<&Recorded> = connection.events.iter().collect();
        if delivered != expected {
            let first_difference = delivered
                .iter()
                .zip(&expected)
                .position(|(a, b)| a != b)
                .unwrap_or(delivered.len().min(expected.len()));
            panic!(
                "{context}: after {start} up to {end}, delivered {} events, expected {}; \
                 first difference at position {first_difference}: delivered {:?}, expected {:?}",
                delivered.len(),
                expected.len(),
                delivered.get(first_difference),
                expected.get(first_difference)
            );
        }
    }

    /// Checks every snapshot against the history replayed up to its index.
    fn check_snapshots(&self, snapshots: &mut [(u64, &Filter, &Summary, String)]) {
        snapshots.sort_by_key(|(index, ..)| *index);
        let mut state: Summary = BTreeMap::new();
        let mut replayed = 0;
        for (index, filter, snapshot, context) in snapshots.iter() {
            for (_, event) in self.events.range(replayed + 1..*index + 1) {
                if event.delete {
                    let removed = state.remove(&event.key);
                    assert_eq!(
                        removed,
                        Some((event.version, event.uid.clone())),
                        "history deletes what it did not store at {}",
                        event.index
                    );
                } else {
                    state.insert(event.key.clone(), (event.version, event.uid.clone()));
                }
            }
            replayed = *index;
            let expected: Summary = state
                .iter()
                .filter(|(key, _)| filter.matches(key))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            assert_eq!(
                *snapshot, &expected,
                "{context}: snapshot at {index} (left) differs from the history (right)"
            );
        }
    }
}

/// Settings of one randomized run: writers, a watcher per filter of
/// `filters`, and the history checks when the ring keeps every event.
struct Scenario {
    writers: usize,
    ops_per_writer: usize,
    log_capacity: usize,
    policies: &'static [LagPolicy],
    bulk: usize,
}

fn run_scenario(name: &str, scenario: &Scenario) {
    let seed = base_seed(name);
    let store = Store::with_options(StoreOptions::default().log_capacity(scenario.log_capacity))
        .expect("valid options");
    let keys = contended_keys();
    let total_events = scenario.bulk + scenario.writers * scenario.ops_per_writer;
    let with_history = total_events < scenario.log_capacity;

    // Reference watches, one per kind, from index 0. They are drained only
    // at the end, which works because the ring keeps every event.
    let mut references: Vec<(Watch, View)> = Vec::new();
    if with_history {
        for kind in KINDS {
            let filter = Filter::new(kind, "*", "*", "");
            let context = format!("seed {seed}, reference watch of kind {kind}");
            let watch = filter
                .watch(&store, WatchOptions::default())
                .expect("watch");
            let view = View::expecting_snapshot(&filter, &context, 0, LagPolicy::Error);
            references.push((watch, view));
        }
    }
    create_bulk(&store, scenario.bulk);

    let progress = Progress {
        finished: AtomicUsize::new(0),
        writers: scenario.writers,
    };
    let (stats, reports) = thread::scope(|scope| {
        let writers: Vec<_> = (0..scenario.writers)
            .map(|writer| {
                let (store, keys, progress) = (&store, &keys, &progress);
                scope.spawn(move || {
                    let _finish = FinishOnDrop(progress);
                    let seed = seed.wrapping_add(1 + writer as u64);
                    run_writer(store, keys, scenario.ops_per_writer, seed, writer)
                })
            })
            .collect();
        let watchers: Vec<_> = filters()
            .into_iter()
            .enumerate()
            .map(|(number, filter)| {
                let (store, progress) = (&store, &progress);
                let policy = scenario.policies[number % scenario.policies.len()];
                scope.spawn(move || {
                    let name = format!("seed {seed}, watcher {number} ({policy:?})");
                    let seed = seed.wrapping_add(100 + number as u64);
                    run_watcher(store, &filter, policy, progress, seed, &name)
                })
            })
            .collect();
        let stats: Vec<WriterStats> = writers.into_iter().map(|w| w.join().unwrap()).collect();
        let reports: Vec<WatcherReport> = watchers.into_iter().map(|w| w.join().unwrap()).collect();
        (stats, reports)
    });

    let final_index = store.current_index();
    let lags: usize = reports.iter().map(|r| r.lags).sum();
    let resets: usize = reports.iter().map(|r| r.resets).sum();
    let compactions: usize = reports.iter().map(|r| r.compactions).sum();
    let connections: usize = reports
        .iter()
        .flat_map(|r| &r.views)
        .map(|v| v.connections.len())
        .sum();
    eprintln!(
        "{name}: final index {final_index}, writers {stats:?}, {connections} watch connections, \
         {lags} lags, {resets} resets, {compactions} compacted resumes"
    );

    if !with_history {
        return;
    }
    let mut finished = Vec::new();
    for (mut watch, mut view) in references {
        while let Some(event) = watch.try_next().expect("reference watch") {
            view.apply(&event);
        }
        view.assert_equals_list(&store);
        finished.push(view);
    }
    let history = History::from_references(&finished, final_index, seed);
    let mut snapshots = Vec::new();
    for view in reports.iter().flat_map(|r| &r.views) {
        for (number, connection) in view.connections.iter().enumerate() {
            let context = format!("{}, connection {number}", view.context);
            history.check_events(connection, final_index, &context);
            if let (Some(start), Some(snapshot)) = (connection.start, &connection.snapshot) {
                snapshots.push((start, &connection.filter, snapshot, context));
            }
        }
    }
    assert!(
        !snapshots.is_empty(),
        "seed {seed}: no watch completed a snapshot"
    );
    history.check_snapshots(&mut snapshots);
}

#[test]
fn writers_and_watchers_agree_with_history_and_list() {
    for (writers, ops_per_writer) in [(2, 12_000), (4, 6_000)] {
        run_scenario(
            &format!("history, {writers} writers"),
            &Scenario {
                writers,
                ops_per_writer,
                log_capacity: watchstore::DEFAULT_LOG_CAPACITY,
                policies: &[LagPolicy::Error],
                bulk: 150,
            },
        );
    }
}

#[test]
fn small_ring_watchers_lag_and_recover() {
    run_scenario(
        "small ring",
        &Scenario {
            writers: 3,
            ops_per_writer: 12_000,
            log_capacity: 64,
            policies: &[LagPolicy::Reset, LagPolicy::Error],
            bulk: 100,
        },
    );
}

// ---------------------------------------------------------------------------
// A change racing the start of a watch

/// One side of a two-thread barrier. A wait fails, instead of hanging,
/// when the other thread has died or does not arrive within 10 s.
struct Rendezvous {
    arrive: mpsc::Sender<()>,
    other_arrived: mpsc::Receiver<()>,
}

impl Rendezvous {
    fn pair() -> (Rendezvous, Rendezvous) {
        let (a_tx, a_rx) = mpsc::channel();
        let (b_tx, b_rx) = mpsc::channel();
        let a = Rendezvous {
            arrive: a_tx,
            other_arrived: b_rx,
        };
        let b = Rendezvous {
            arrive: b_tx,
            other_arrived: a_rx,
        };
        (a, b)
    }

    fn wait(&self) {
        self.arrive.send(()).expect("the other thread has died");
        self.other_arrived
            .recv_timeout(Duration::from_secs(10))
            .expect("the other thread died or did not arrive within 10 s");
    }
}

fn race_key(round: usize) -> Key {
    Key::new("a", "default", "race", &format!("r{round:05}"))
}

/// What the racing writer does to the resource it created.
#[derive(Clone, Copy, Debug)]
enum RacingChange {
    Delete,
    Update,
}

/// Creates a resource, then deletes or updates it while another thread
/// starts a watch on it, many times. The watch gets either the old copy in
/// its snapshot and then the change, or only the outcome. It never gets a
/// delete of a resource it did not receive, nor an upsert older than its
/// snapshot.
fn race_change_with_new_watch(change: RacingChange, rounds: usize) {
    let store = Store::with_options(StoreOptions::default().log_capacity(1024)).unwrap();
    let (barrier, writer_barrier) = Rendezvous::pair();
    let (created_tx, created_rx) = mpsc::channel::<Arc<Resource>>();
    let mut in_snapshot = 0;

    let writer = {
        let (store, barrier) = (store.clone(), writer_barrier);
        thread::spawn(move || {
            for round in 0..rounds {
                let key = race_key(round);
                let created = store.write_cas(&new_resource(&key, "v1", "u")).unwrap();
                created_tx.send(Arc::clone(&created)).unwrap();
                barrier.wait();
                match change {
                    RacingChange::Delete => store.delete_cas(&key.id("v1", "u"), &created.version),
                    RacingChange::Update => store.write_cas(&created).map(drop),
                }
                .expect("the only writer of this key");
                barrier.wait();
            }
        })
    };
    let store = &store;
    for round in 0..rounds {
        let created = created_rx.recv().unwrap();
        // The prefix is the resource's full name, unique per round.
        let filter = Filter::new("a", "default", "race", &race_key(round).name);
        let context = format!("{change:?} race, round {round}");
        let created_at = version_of(&created);
        let changed_at = created_at + 1;

        barrier.wait();
        let mut watch = filter.watch(store, WatchOptions::default()).unwrap();
        let mut view = View::expecting_snapshot(&filter, &context, created_at, LagPolicy::Error);
        while !view.is_following() {
            let event = watch.next_timeout(Duration::from_secs(10)).unwrap();
            view.apply(&event.expect("a snapshot is ready without waiting"));
        }
        let snapshot_index = view.last_index;
        let snapshot = view.resources.clone();
        barrier.wait();

        // The change has returned: drain everything after the snapshot.
        let mut after = Vec::new();
        while let Some(event) = watch.try_next().unwrap() {
            view.apply(&event);
            after.push(event);
        }
        view.assert_equals_list(store);

        if snapshot_index < changed_at {
            in_snapshot += 1;
            assert_eq!(snapshot.len(), 1, "{context}: snapshot before the change");
            assert_eq!(
                after.len(),
                1,
                "{context}: expected the change after the snapshot"
            );
            assert_eq!(after[0].index(), changed_at, "{context}: change index");
            let delete = matches!(after[0], WatchEvent::Delete { .. });
            assert_eq!(
                delete,
                matches!(change, RacingChange::Delete),
                "{context}: event kind"
            );
        } else {
            assert!(
                after.is_empty(),
                "{context}: events after a snapshot of the outcome: {after:?}"
            );
            let expected = usize::from(matches!(change, RacingChange::Update));
            assert_eq!(
                snapshot.len(),
                expected,
                "{context}: snapshot after the change"
            );
        }
    }
    writer.join().expect("writer thread");
    eprintln!(
        "{change:?} race: the snapshot preceded the change in {in_snapshot} of {rounds} rounds"
    );
}

#[test]
fn delete_racing_new_watch() {
    race_change_with_new_watch(RacingChange::Delete, 8_000);
}

#[test]
fn update_racing_new_watch() {
    race_change_with_new_watch(RacingChange::Update, 6_000);
}

// ---------------------------------------------------------------------------
// A restore racing the start of a watch

/// Restores a new set of resources while another thread starts a watch,
/// many times. A watch whose snapshot predates the restore must return
/// `WatchClosed` before any later event. A watch that stays open must show
/// the restored resources (at the restore's index) and end equal to `list`;
/// one that started during the restore may be closed too.
#[test]
fn restore_racing_new_watch() {
    let seed = base_seed("restore_racing_new_watch");
    let mut rng = Rng::new(seed);
    let store = Store::new();
    let filter = Filter::new("a", "*", "*", "");
    let (barrier, restorer_barrier) = Rendezvous::pair();
    let rounds = 3_000;
    let mut closed_count = 0;

    // Each round restores one to four resources on distinct keys.
    let keys = contended_keys();
    let contents: Vec<Vec<Resource>> = (0..rounds)
        .map(|round| {
            let mut unique = BTreeMap::new();
            for n in 0..1 + rng.below(4) {
                let key = rng.pick(&keys).clone();
                unique.insert(
                    key.clone(),
                    new_resource(&key, "v1", &format!("r{round}-{n}")),
                );
            }
            unique.into_values().collect()
        })
        .collect();
    let (index_tx, index_rx) = mpsc::channel::<u64>();

    let restorer = {
        let (store, barrier, contents) = (store.clone(), restorer_barrier, contents.clone());
        thread::spawn(move || {
            for restored in &contents {
                barrier.wait();
                let index = store.restore(restored.iter().cloned()).unwrap();
                index_tx.send(index).unwrap();
                // A write after the restore, which a watch closed by the
                // restore must not deliver.
                let stored = read_any(&store, &Key::of(&restored[0])).unwrap();
                store.write_cas(&stored).unwrap();
                barrier.wait();
            }
        })
    };
    let store = &store;
    for (round, restored) in contents.iter().enumerate() {
        let context = format!("seed {seed}, restore round {round}");
        barrier.wait();
        let before = store.current_index();
        let mut watch = filter.watch(store, WatchOptions::default()).unwrap();
        let mut view = View::expecting_snapshot(&filter, &context, before, LagPolicy::Error);
        let restored_at = index_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the restorer died or took longer than 10 s");
        barrier.wait();

        let mut closed = false;
        loop {
            match watch.try_next() {
                Ok(Some(event)) => {
                    let crosses = view.is_following()
                        && view.last_index < restored_at
                        && event.index() >= restored_at;
                    assert!(
                        !crosses,
                        "{context}: {event:?} follows a pre-restore state; restore at {restored_at}"
                    );
                    view.apply(&event);
                }
                Ok(None) => break,
                Err(Error::WatchClosed) => {
                    closed = true;
                    break;
                }
                Err(other) => panic!("{context}: {other}"),
            }
        }

        if closed {
            closed_count += 1;
            continue;
        }
        let snapshot_index = view.connections[0].start.expect("the snapshot ended");
        assert!(
            snapshot_index >= restored_at,
            "{context}: a watch of index {snapshot_index} outlived the restore at {restored_at}"
        );
        if snapshot_index == restored_at {
            let expected: Summary = restored
                .iter()
                .map(|resource| (Key::of(resource), uid_of(resource).to_string()))
                .filter(|(key, _)| filter.matches(key))
                .map(|(key, uid)| (key, (restored_at, uid)))
                .collect();
            let snapshot = view.connections[0].snapshot.as_ref().unwrap();
            assert_eq!(snapshot, &expected, "{context}: snapshot of the restore");
        }
        view.assert_equals_list(store);
    }
    restorer.join().expect("restorer thread");
    eprintln!("restore race: the restore closed {closed_count} of {rounds} watches");
}
