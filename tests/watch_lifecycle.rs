//! Watch lifecycle: lag on a small ring, memory held by the ring, drop,
//! resume points, close, restore, and blocking.
//!
//! Timeouts here only keep a broken wake-up from hanging the test run:
//! every wait that should end does so at once, and a 10 s limit turns a
//! lost wake-up into a failure.

use std::collections::BTreeMap;
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Weak};
use std::thread;
use std::time::Duration;

use watchstore::{
    Error, Id, LagPolicy, Resource, Store, StoreOptions, Tenancy, Type, Watch, WatchEvent,
    WatchOptions, MAX_NAME_BYTES,
};

/// The limit on any wait that must end; reaching it fails the test.
const GUARD: Duration = Duration::from_secs(10);

/// The limit for a long workload, such as 100,000 writes in a debug build
/// on a loaded machine.
const LONG_GUARD: Duration = Duration::from_secs(120);

fn ty(group_version: &str) -> Type {
    Type {
        group: "test".into(),
        group_version: group_version.into(),
        kind: "a".into(),
    }
}

fn tenancy(namespace: &str) -> Tenancy {
    Tenancy {
        partition: "default".into(),
        namespace: namespace.into(),
    }
}

fn id_in(namespace: &str, name: &str, uid: &str) -> Id {
    Id {
        uid: uid.into(),
        name: name.into(),
        r#type: Some(ty("v1")),
        tenancy: Some(tenancy(namespace)),
    }
}

fn id(name: &str, uid: &str) -> Id {
    id_in("default", name, uid)
}

fn resource(id: Id, version: &str) -> Resource {
    Resource {
        id: Some(id),
        version: version.into(),
        ..Resource::default()
    }
}

fn store_with_capacity(log_capacity: usize) -> Store {
    Store::with_options(StoreOptions::default().log_capacity(log_capacity)).expect("valid options")
}

/// Creates `name` in namespace "default" with uid `name`.
fn create(store: &Store, name: &str) -> Arc<Resource> {
    store
        .write_cas(&resource(id(name, name), ""))
        .expect("create")
}

/// Writes `stored` again with its "updates" metadata counter incremented.
fn update(store: &Store, stored: &Resource) -> Arc<Resource> {
    let mut next = stored.clone();
    let count: u64 = next
        .metadata
        .get("updates")
        .map_or(0, |count| count.parse().expect("a counter"));
    next.metadata
        .insert("updates".into(), (count + 1).to_string());
    store.write_cas(&next).expect("update")
}

fn delete(store: &Store, stored: &Resource) {
    let id = stored.id.as_ref().expect("stored resources have an id");
    store.delete_cas(id, &stored.version).expect("delete");
}

/// Watches every resource in namespace "default".
fn watch_default(store: &Store, options: WatchOptions) -> Result<Watch, Error> {
    store.watch_list_with(&ty("v1"), &tenancy("default"), "", options)
}

fn watch_after(store: &Store, index: u64) -> Result<Watch, Error> {
    watch_default(store, WatchOptions::default().after(index))
}

fn version_of(resource: &Resource) -> u64 {
    resource.version.parse().expect("versions are u64s")
}

fn name_of(resource: &Resource) -> String {
    resource.id.as_ref().expect("an id").name.clone()
}

/// Returns the next event, failing if none arrives within `GUARD`.
fn expect_event(watch: &mut Watch) -> WatchEvent {
    watch
        .next_timeout(GUARD)
        .expect("watch failed")
        .expect("no event within the guard timeout")
}

/// Reads a snapshot up to its `EndOfSnapshot`; returns the upserts and the
/// snapshot's index.
fn read_snapshot(watch: &mut Watch) -> (Vec<Arc<Resource>>, u64) {
    let mut resources = Vec::new();
    loop {
        match expect_event(watch) {
            WatchEvent::Upsert { resource, .. } => resources.push(resource),
            WatchEvent::EndOfSnapshot { index } => return (resources, index),
            other => panic!("unexpected {other:?} in a snapshot"),
        }
    }
}

/// Returns every event ready now.
fn drain(watch: &mut Watch) -> Vec<WatchEvent> {
    let mut events = Vec::new();
    while let Some(event) = watch.try_next().expect("watch failed") {
        events.push(event);
    }
    events
}

/// Runs `work` on a new thread and waits for it up to `GUARD`, so a
/// blocked call fails the test instead of hanging it.
fn run_guarded<T: Send + 'static>(
    description: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    run_guarded_for(GUARD, description, work)
}

/// Runs `work` on a new thread and waits for it up to `limit`.
fn run_guarded_for<T: Send + 'static>(
    limit: Duration,
    description: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        let _ = tx.send(work());
    });
    match rx.recv_timeout(limit) {
        Ok(value) => {
            handle.join().expect("thread panicked after sending");
            value
        }
        Err(RecvTimeoutError::Disconnected) => {
            // The thread panicked: report its panic.
            match handle.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(()) => unreachable!("the thread sends before it returns"),
            }
        }
        Err(RecvTimeoutError::Timeout) => panic!("{description} did not finish within {limit:?}"),
    }
}

/// A view of namespace "default" built from events, with the checks every
/// event must pass.
struct View {
    resources: BTreeMap<String, Arc<Resource>>,
    /// Snapshot index while a snapshot is being read.
    snapshot: Option<u64>,
    last_index: u64,
}

impl View {
    fn new() -> View {
        View {
            resources: BTreeMap::new(),
            snapshot: None,
            last_index: 0,
        }
    }

    fn apply(&mut self, event: &WatchEvent) {
        match event {
            WatchEvent::Upsert { index, resource } if self.snapshot.is_some() => {
                assert_eq!(
                    Some(*index),
                    self.snapshot,
                    "snapshot upserts share one index"
                );
                assert!(version_of(resource) <= *index);
                self.resources
                    .insert(name_of(resource), Arc::clone(resource));
            }
            WatchEvent::Upsert { index, resource } => {
                assert!(
                    *index > self.last_index,
                    "upsert at {index} after {}",
                    self.last_index
                );
                assert_eq!(version_of(resource), *index);
                if let Some(previous) = self.resources.get(&name_of(resource)) {
                    assert!(version_of(previous) < *index);
                }
                self.resources
                    .insert(name_of(resource), Arc::clone(resource));
                self.last_index = *index;
            }
            WatchEvent::Delete { index, resource } => {
                assert!(self.snapshot.is_none(), "delete during a snapshot");
                assert!(
                    *index > self.last_index,
                    "delete at {index} after {}",
                    self.last_index
                );
                let previous = self.resources.remove(&name_of(resource));
                assert_eq!(
                    previous.as_ref(),
                    Some(resource),
                    "delete of an unseen copy"
                );
                self.last_index = *index;
            }
            WatchEvent::EndOfSnapshot { index } => {
                if let Some(snapshot) = self.snapshot {
                    assert_eq!(*index, snapshot);
                }
                self.snapshot = None;
                self.last_index = *index;
            }
            WatchEvent::Reset { index } => {
                assert!(
                    *index > self.last_index,
                    "Reset at {index} after {}",
                    self.last_index
                );
                self.resources.clear();
                self.last_index = *index;
            }
        }
    }

    /// Marks the start of a snapshot at `index` (the first upsert's, or
    /// the `EndOfSnapshot`'s for an empty one).
    fn begin_snapshot(&mut self, index: u64) {
        self.snapshot = Some(index);
    }

    fn assert_equals_list(&self, store: &Store) {
        let listed: BTreeMap<String, Arc<Resource>> = store
            .list(&ty("v1"), &tenancy("default"), "")
            .expect("list")
            .into_iter()
            .map(|resource| (name_of(&resource), resource))
            .collect();
        assert_eq!(self.resources, listed, "view differs from list");
    }
}

// ---------------------------------------------------------------------------
// A stalled watcher on a small ring

#[test]
fn stalled_watcher_gets_lagged_and_writers_finish() {
    const CAPACITY: u64 = 8;
    let store = store_with_capacity(CAPACITY as usize);
    let first = create(&store, "first");

    let mut stalled = watch_default(&store, WatchOptions::default()).unwrap();
    let (snapshot, snapshot_index) = read_snapshot(&mut stalled);
    assert_eq!(snapshot, vec![Arc::clone(&first)]);
    assert_eq!(snapshot_index, 1);

    // A second watch reads two events, then stalls too.
    let mut partial = watch_after(&store, 1).unwrap();
    let second = create(&store, "second");
    let third = update(&store, &second);
    assert_eq!(
        expect_event(&mut partial),
        WatchEvent::Upsert {
            index: 2,
            resource: second
        }
    );
    assert_eq!(
        expect_event(&mut partial),
        WatchEvent::Upsert {
            index: 3,
            resource: third
        }
    );

    // Writers never wait for watchers: 200 writes finish while both stall.
    let writer_store = store.clone();
    run_guarded("writes while watchers stall", move || {
        for n in 0..200 {
            create(&writer_store, &format!("r{n:03}"));
        }
    });
    let current = store.current_index();
    assert_eq!(current, 203);
    let oldest = current + 1 - CAPACITY;

    let lagged = Error::Lagged { next: 2, oldest };
    assert_eq!(stalled.next(), Err(lagged.clone()));
    let lagged_partial = Error::Lagged { next: 4, oldest };
    assert_eq!(partial.try_next(), Err(lagged_partial.clone()));

    // The error is final: every later call returns it again, even after
    // more writes.
    create(&store, "later");
    assert_eq!(stalled.try_next(), Err(lagged.clone()));
    assert_eq!(stalled.next_timeout(GUARD), Err(lagged.clone()));
    assert_eq!(stalled.next(), Err(lagged));
    assert_eq!(partial.next(), Err(lagged_partial));
}

#[test]
fn watcher_in_snapshot_lags_after_end_of_snapshot() {
    let store = store_with_capacity(8);
    for n in 0..5 {
        create(&store, &format!("r{n}"));
    }
    let mut watch = watch_default(&store, WatchOptions::default()).unwrap();
    for _ in 0..2 {
        assert!(matches!(
            expect_event(&mut watch),
            WatchEvent::Upsert { index: 5, .. }
        ));
    }
    for n in 0..100 {
        create(&store, &format!("s{n:03}"));
    }

    // The watch still returns its whole snapshot, unchanged.
    for _ in 2..5 {
        match expect_event(&mut watch) {
            WatchEvent::Upsert { index, resource } => {
                assert_eq!(index, 5);
                assert!(version_of(&resource) <= 5);
            }
            other => panic!("expected a snapshot upsert, got {other:?}"),
        }
    }
    assert_eq!(
        expect_event(&mut watch),
        WatchEvent::EndOfSnapshot { index: 5 }
    );
    let oldest = store.current_index() + 1 - 8;
    assert_eq!(watch.next(), Err(Error::Lagged { next: 6, oldest }));
}

/// One writer overwrites a ring of 8 slots thousands of times while a
/// watcher reads as fast as it can. Every event the watcher gets must be
/// the one written at its index; falling behind must give `Lagged`.
#[test]
fn racing_reader_never_gets_a_wrong_event() {
    const WRITES: u64 = 20_000;
    let store = store_with_capacity(8);
    let names = ["a", "b", "c", "d"];
    for name in names {
        create(&store, name);
    }
    let base = store.current_index();
    let mut watch = watch_after(&store, base).unwrap();

    let writer_store = store.clone();
    let writer = thread::spawn(move || {
        let mut stored: Vec<Arc<Resource>> = names
            .iter()
            .map(|name| writer_store.read(&id(name, "")).unwrap())
            .collect();
        for n in 0..WRITES {
            let slot = (n % 4) as usize;
            let mut next = Resource::clone(&stored[slot]);
            next.metadata.insert("write".into(), n.to_string());
            stored[slot] = writer_store.write_cas(&next).unwrap();
        }
    });

    let mut cursor = base + 1;
    let (mut received, mut lags) = (0, 0);
    while cursor <= base + WRITES {
        match watch.next_timeout(GUARD) {
            Ok(Some(WatchEvent::Upsert { index, resource })) => {
                assert_eq!(index, cursor, "skipped or repeated an index");
                assert_eq!(version_of(&resource), index);
                let write = resource
                    .metadata
                    .get("write")
                    .expect("written by the writer");
                assert_eq!(
                    write,
                    &(index - base - 1).to_string(),
                    "event {index} is another write"
                );
                assert_eq!(name_of(&resource), names[((index - base - 1) % 4) as usize]);
                cursor += 1;
                received += 1;
            }
            Ok(other) => panic!("expected an upsert at {cursor}, got {other:?}"),
            Err(Error::Lagged { next, oldest }) => {
                assert_eq!(next, cursor, "Lagged names another index than the cursor");
                assert!(oldest > next);
                lags += 1;
                // Resume at the oldest index still held. The writer may
                // overwrite it before the resume, so retry from the oldest
                // index each Compacted error names.
                let mut after = oldest - 1;
                watch = loop {
                    match watch_after(&store, after) {
                        Ok(resumed) => break resumed,
                        Err(Error::Compacted { requested, oldest }) => {
                            assert_eq!(requested, after + 1);
                            assert!(oldest > requested);
                            after = oldest - 1;
                        }
                        Err(other) => panic!("resume after {after} failed: {other}"),
                    }
                };
                cursor = after + 1;
            }
            Err(other) => panic!("watch failed: {other}"),
        }
    }
    writer.join().unwrap();
    eprintln!("racing reader: {received} events, {lags} lags");
}

#[test]
fn reset_policy_resnapshots_and_follows() {
    let store = store_with_capacity(8);
    let mut stored: BTreeMap<String, Arc<Resource>> = (0..6)
        .map(|n| {
            let name = format!("r{n}");
            (name.clone(), create(&store, &name))
        })
        .collect();

    let mut watch =
        watch_default(&store, WatchOptions::default().on_lag(LagPolicy::Reset)).unwrap();
    let mut view = View::new();
    view.begin_snapshot(6);
    loop {
        let event = expect_event(&mut watch);
        view.apply(&event);
        if matches!(event, WatchEvent::EndOfSnapshot { .. }) {
            break;
        }
    }
    assert_eq!(view.last_index, 6);

    // Stall through 60 changes: updates, deletes and creates.
    for n in 0..60 {
        let name = format!("r{}", n % 8);
        match stored.remove(&name) {
            Some(current) if n % 3 == 0 => delete(&store, &current),
            Some(current) => {
                stored.insert(name, update(&store, &current));
            }
            None => {
                stored.insert(name.clone(), create(&store, &name));
            }
        }
    }
    let current = store.current_index();
    assert_eq!(current, 66);

    assert_eq!(expect_event(&mut watch), WatchEvent::Reset { index: 7 });
    view.apply(&WatchEvent::Reset { index: 7 });
    view.begin_snapshot(current);
    loop {
        let event = expect_event(&mut watch);
        view.apply(&event);
        if let WatchEvent::EndOfSnapshot { index } = event {
            assert_eq!(index, current, "the fresh snapshot is of the current root");
            break;
        }
    }
    view.assert_equals_list(&store);

    // Then it follows again.
    let name = stored.keys().next().unwrap().clone();
    let updated = update(&store, &stored[&name]);
    delete(&store, &updated);
    create(&store, "new");
    let events = drain(&mut watch);
    assert_eq!(events.len(), 3, "{events:?}");
    for event in &events {
        view.apply(event);
    }
    view.assert_equals_list(&store);
}

// ---------------------------------------------------------------------------
// Memory held by the ring and by watches

/// Counts the `Weak`s whose resource is still alive.
fn count_alive(weaks: &[Weak<Resource>]) -> usize {
    weaks.iter().filter(|weak| weak.strong_count() > 0).count()
}

/// Up to how many overwritten events may wait in crossbeam-epoch garbage.
///
/// crossbeam-epoch 0.9 collects deferred destructions in a per-thread bag
/// of 64, seals a full bag into the collector's queue, and frees a sealed
/// bag only once the global epoch has advanced twice since. A pinning
/// thread tries to advance the epoch and frees up to 8 expired bags every
/// 128 pins, and the store pins once per write. With one writer, about two
/// epochs of sealed bags (4 bags) plus the bag being filled wait at any
/// moment. When the writer thread exits, its partial bag is sealed too. The
/// bound of 8 bags of 64 is twice that estimate. What the test checks is
/// that the count does not grow with the number of writes.
const EPOCH_GARBAGE_SLACK: usize = 8 * 64;

#[test]
fn ring_bounds_memory_while_watcher_stalls() {
    const CAPACITY: usize = 64;
    const KEYS: usize = 8;
    const WRITES: usize = 100_000;
    let store = store_with_capacity(CAPACITY);

    let created: Vec<Arc<Resource>> = (0..KEYS)
        .map(|n| create(&store, &format!("r{n}")))
        .collect();
    let created_weak: Vec<Weak<Resource>> = created.iter().map(Arc::downgrade).collect();

    // One watcher stalls while following, one in the middle of its
    // snapshot (which keeps the first versions alive).
    let mut following = watch_after(&store, store.current_index()).unwrap();
    let mut in_snapshot = watch_default(&store, WatchOptions::default()).unwrap();
    assert!(matches!(
        expect_event(&mut in_snapshot),
        WatchEvent::Upsert { .. }
    ));

    let writer_store = store.clone();
    let weaks = run_guarded_for(LONG_GUARD, "100k writes while watchers stall", move || {
        let mut stored = created;
        let mut weaks = Vec::with_capacity(WRITES);
        for n in 0..WRITES {
            let written = update(&writer_store, &stored[n % KEYS]);
            weaks.push(Arc::downgrade(&written));
            stored[n % KEYS] = written;
        }
        weaks
    });

    // Alive: the stored versions, those in the ring, and epoch garbage.
    let alive = count_alive(&weaks);
    eprintln!("after {WRITES} writes through a ring of {CAPACITY}: {alive} versions alive");
    assert!(
        alive <= KEYS + CAPACITY + EPOCH_GARBAGE_SLACK,
        "{alive} of {WRITES} versions are still alive, more than {KEYS} stored + \
         {CAPACITY} in the ring + {EPOCH_GARBAGE_SLACK} in epoch garbage"
    );
    let last: Vec<&Weak<Resource>> = weaks.iter().rev().take(KEYS).collect();
    assert!(
        last.iter().all(|weak| weak.strong_count() > 0),
        "a stored version was freed"
    );

    // Only the stalled snapshot keeps the first versions alive, so dropping
    // it frees them.
    assert_eq!(
        count_alive(&created_weak),
        KEYS,
        "the snapshot holds the first versions"
    );
    drop(in_snapshot);
    assert_eq!(
        count_alive(&created_weak),
        0,
        "a dropped watch kept its snapshot alive"
    );

    let oldest = store.current_index() + 1 - CAPACITY as u64;
    assert_eq!(
        following.next(),
        Err(Error::Lagged {
            next: KEYS as u64 + 1,
            oldest
        })
    );
}

/// Writes, updates and deletes resources from `threads` joined threads, and
/// returns a `Weak` for every version written.
///
/// The threads are spawned with `thread::spawn` and joined one by one,
/// because `join` returns only after the thread's thread-local destructors
/// ran: those drop the thread's cached epoch handle, which moves its
/// deferred destructions to the store's collector.
fn write_from_threads(store: &Store, threads: usize, rounds: usize) -> Vec<Weak<Resource>> {
    let handles: Vec<_> = (0..threads)
        .map(|thread| {
            let store = store.clone();
            thread::spawn(move || {
                let mut weaks = Vec::new();
                for round in 0..rounds {
                    let name = format!("t{thread}-{}", round % 5);
                    let current = match store.read(&id(&name, "")) {
                        Ok(current) => current,
                        Err(Error::NotFound { .. }) => {
                            let created = store
                                .write_cas(&resource(id(&name, &format!("{round}")), ""))
                                .unwrap();
                            weaks.push(Arc::downgrade(&created));
                            continue;
                        }
                        Err(other) => panic!("read failed: {other}"),
                    };
                    if round % 4 == 0 {
                        delete(&store, &current);
                    } else {
                        weaks.push(Arc::downgrade(&update(&store, &current)));
                    }
                }
                weaks
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|handle| handle.join().expect("writer thread"))
        .collect()
}

/// Every resource version ever written is freed once the store, its clones
/// and its watches are dropped: versions still in the ring, in epoch
/// garbage, and in snapshots held by watches or by `Store::snapshot`.
#[test]
fn dropping_store_and_watches_frees_every_resource() {
    for capacity in [8, 1024] {
        let store = store_with_capacity(capacity);
        let clone = store.clone();
        let mut weaks: Vec<Weak<Resource>> = (0..3)
            .map(|n| Arc::downgrade(&create(&store, &format!("early{n}"))))
            .collect();
        let mut unread_snapshot = watch_default(&store, WatchOptions::default()).unwrap();
        let mut mid_snapshot = watch_default(&store, WatchOptions::default()).unwrap();
        assert!(matches!(
            expect_event(&mut mid_snapshot),
            WatchEvent::Upsert { .. }
        ));
        let mut following = watch_after(&clone, clone.current_index()).unwrap();
        let mut moved = watch_after(&store, store.current_index()).unwrap();

        weaks.extend(write_from_threads(&store, 2, 400));
        let snapshot = store.snapshot();

        // Read some events on this thread, which pins the log here (a
        // watch in a snapshot does not pin). With 8 slots the watch has
        // fallen behind, which pins too.
        let mut read = Vec::new();
        for _ in 0..5 {
            match following.try_next() {
                Ok(event) => read.push(event.expect("events are ready")),
                Err(Error::Lagged { .. }) if capacity < 800 => break,
                Err(other) => panic!("capacity {capacity}: {other}"),
            }
        }
        let alive_while_open = count_alive(&weaks);
        assert!(alive_while_open > 0);

        // A watch moved to another thread, read there and dropped there.
        run_guarded("reading on another thread", move || {
            let _ = moved.try_next();
            drop(moved);
        });

        drop(read);
        drop(snapshot);
        drop(following);
        drop(clone);
        drop(store);
        // The watches still hold the store's shared state, but dropping
        // the last handle closed them.
        drop(mid_snapshot);
        assert_eq!(
            unread_snapshot.try_next().map(|event| event.is_some()),
            Err(Error::WatchClosed),
            "dropping every store handle closes open watches"
        );
        drop(unread_snapshot);

        let alive = count_alive(&weaks);
        assert_eq!(
            alive,
            0,
            "capacity {capacity}: {alive} of {} versions outlive the store (were {alive_while_open} while open)",
            weaks.len()
        );
    }
}

/// When another thread drops the store last, this thread's cached epoch
/// handle for the store may still keep deferred destructions. They run when
/// this thread next registers a handle (for any store) or exits.
#[test]
fn cached_garbage_freed_at_next_registration() {
    let store = store_with_capacity(8);
    let mut following = watch_after(&store, 0).unwrap();
    let mut weaks = write_from_threads(&store, 2, 300);

    // Pin the log on this thread, and write here too, so this thread's
    // handle may hold garbage of its own.
    let mut stored = create(&store, "main");
    weaks.push(Arc::downgrade(&stored));
    for _ in 0..20 {
        stored = update(&store, &stored);
        weaks.push(Arc::downgrade(&stored));
    }
    drop(stored);
    let _ = following.try_next();

    run_guarded("dropping the store on another thread", move || {
        drop(following);
        drop(store);
    });

    // Registering a handle for another store drops the dead one.
    let other = Store::new();
    create(&other, "x");
    assert_eq!(
        count_alive(&weaks),
        0,
        "garbage outlived the next registration"
    );
}

// ---------------------------------------------------------------------------
// Resume points

#[test]
fn resume_after_current_index_is_invalid() {
    let store = Store::new();
    assert!(watch_after(&store, 0).is_ok(), "After(0) on an empty store");
    assert!(matches!(
        watch_after(&store, 1),
        Err(Error::InvalidArgument { field: "start", .. })
    ));
    for n in 0..3 {
        create(&store, &format!("r{n}"));
    }
    assert!(watch_after(&store, 3).is_ok());
    for after in [4, 100, u64::MAX] {
        assert!(
            matches!(
                watch_after(&store, after),
                Err(Error::InvalidArgument { field: "start", .. })
            ),
            "After({after}) with current index 3"
        );
    }
}

#[test]
fn resume_before_oldest_held_is_compacted() {
    let store = store_with_capacity(8);
    let written: Vec<Arc<Resource>> = (0..20)
        .map(|n| create(&store, &format!("r{n:02}")))
        .collect();
    assert_eq!(store.current_index(), 20);
    let oldest = 13;

    for after in [0, 5, 11] {
        assert_eq!(
            watch_after(&store, after).err(),
            Some(Error::Compacted {
                requested: after + 1,
                oldest
            }),
            "After({after})"
        );
    }

    // After(12): index 13 is the oldest held, so every event from there on
    // arrives, exactly once.
    let mut watch = watch_after(&store, 12).unwrap();
    let events = drain(&mut watch);
    let expected: Vec<WatchEvent> = written[12..]
        .iter()
        .map(|resource| WatchEvent::Upsert {
            index: version_of(resource),
            resource: Arc::clone(resource),
        })
        .collect();
    assert_eq!(events, expected);

    let mut at_current = watch_after(&store, 20).unwrap();
    assert_eq!(at_current.try_next(), Ok(None));
}

#[test]
fn resume_at_current_delivers_exactly_later_writes() {
    let store = Store::new();
    let a = create(&store, "a");
    let c = create(&store, "c");
    let current = store.current_index();
    let mut watch = watch_after(&store, current).unwrap();
    assert_eq!(watch.try_next(), Ok(None));

    let a2 = update(&store, &a);
    // Not matched: another namespace.
    store
        .write_cas(&resource(id_in("other", "b", "b"), ""))
        .unwrap();
    delete(&store, &c);
    let d = create(&store, "d");

    let expected = vec![
        WatchEvent::Upsert {
            index: current + 1,
            resource: a2,
        },
        WatchEvent::Delete {
            index: current + 3,
            resource: c,
        },
        WatchEvent::Upsert {
            index: current + 4,
            resource: d,
        },
    ];
    assert_eq!(drain(&mut watch), expected);
    assert_eq!(watch.try_next(), Ok(None));

    // Resuming a snapshot watch after its EndOfSnapshot index gives the
    // same events as the watch itself.
    let mut first = watch_default(&store, WatchOptions::default()).unwrap();
    let (_, snapshot_index) = read_snapshot(&mut first);
    let mut resumed = watch_after(&store, snapshot_index).unwrap();
    let e = create(&store, "e");
    delete(&store, &e);
    let from_first = drain(&mut first);
    assert_eq!(from_first.len(), 2);
    assert_eq!(from_first, drain(&mut resumed));
}

// ---------------------------------------------------------------------------
// Close

/// Starts a thread that calls `next` (or `next_timeout(Duration::MAX)`) on
/// `watch` once and sends the result. Returns the receiver; the thread
/// sends `None` first to say it is about to block.
fn block_on_next(
    mut watch: Watch,
    unlimited_timeout: bool,
) -> mpsc::Receiver<Option<Result<WatchEvent, Error>>> {
    let (tx, rx) = mpsc::channel();
    // Not a scoped thread: if the wake-up is lost, the test fails on the
    // guard timeout instead of hanging on the join.
    thread::spawn(move || {
        tx.send(None).unwrap();
        let result = if unlimited_timeout {
            watch
                .next_timeout(Duration::MAX)
                .map(|event| event.expect("an unlimited wait ends with an event"))
        } else {
            watch.next()
        };
        let _ = tx.send(Some(result));
    });
    assert_eq!(rx.recv_timeout(GUARD).unwrap(), None, "the thread started");
    rx
}

fn expect_result(
    rx: &mpsc::Receiver<Option<Result<WatchEvent, Error>>>,
    description: &str,
) -> Result<WatchEvent, Error> {
    match rx.recv_timeout(GUARD) {
        Ok(Some(result)) => result,
        Ok(None) => unreachable!("sent once"),
        Err(error) => panic!("{description}: no result within {GUARD:?} ({error})"),
    }
}

/// Gives blocked threads time to reach their wait. Nothing depends on it
/// for correctness: a watcher that has not blocked yet must return the same
/// result.
fn let_threads_block() {
    thread::sleep(Duration::from_millis(50));
}

#[test]
fn close_wakes_blocked_watchers_and_rejects_new_ones() {
    let store = Store::new();
    let first = create(&store, "first");
    create(&store, "second");
    let current = store.current_index();

    let blocked: Vec<_> = [false, true, false]
        .into_iter()
        .map(|unlimited| block_on_next(watch_after(&store, current).unwrap(), unlimited))
        .collect();
    let mut unread_snapshot = watch_default(&store, WatchOptions::default()).unwrap();
    let mut mid_snapshot = watch_default(&store, WatchOptions::default()).unwrap();
    assert!(matches!(
        expect_event(&mut mid_snapshot),
        WatchEvent::Upsert { .. }
    ));
    let_threads_block();
    for rx in &blocked {
        assert_eq!(
            rx.try_recv(),
            Err(TryRecvError::Empty),
            "next returned on an idle store"
        );
    }

    // Close through a clone: every handle shares the state.
    store.clone().close();
    for rx in &blocked {
        assert_eq!(
            expect_result(rx, "blocked watcher after close"),
            Err(Error::WatchClosed)
        );
    }
    assert_eq!(unread_snapshot.try_next(), Err(Error::WatchClosed));
    assert_eq!(mid_snapshot.next(), Err(Error::WatchClosed));
    assert_eq!(mid_snapshot.next_timeout(GUARD), Err(Error::WatchClosed));
    assert_eq!(unread_snapshot.next(), Err(Error::WatchClosed));

    assert_eq!(
        watch_default(&store, WatchOptions::default()).err(),
        Some(Error::WatchClosed)
    );
    assert_eq!(watch_after(&store, current).err(), Some(Error::WatchClosed));
    store.close();

    // Reads and writes keep working.
    let updated = update(&store, &first);
    assert_eq!(store.read(&id("first", "")).unwrap(), updated);
    assert_eq!(
        store
            .list(&ty("v1"), &tenancy("default"), "")
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn dropping_last_handle_wakes_blocked_watchers() {
    let store = Store::new();
    create(&store, "first");
    let current = store.current_index();
    let blocked = block_on_next(watch_after(&store, current).unwrap(), false);

    // Dropping one of two handles closes nothing.
    let other_handle = store.clone();
    drop(store);
    let_threads_block();
    assert_eq!(
        blocked.try_recv(),
        Err(TryRecvError::Empty),
        "dropping a clone closed the store"
    );
    let mut follower = watch_after(&other_handle, current).unwrap();
    assert_eq!(follower.try_next(), Ok(None));

    // Dropping the last one closes every watch, blocked or not.
    drop(other_handle);
    assert_eq!(
        expect_result(&blocked, "blocked watcher after the last handle dropped"),
        Err(Error::WatchClosed)
    );
    assert_eq!(follower.try_next(), Err(Error::WatchClosed));
}

// ---------------------------------------------------------------------------
// Restore

#[test]
fn restore_closes_open_watches() {
    let store = Store::new();
    create(&store, "a");
    create(&store, "b");
    let current = store.current_index();

    let blocked = block_on_next(watch_after(&store, current).unwrap(), false);
    let mut unread_snapshot = watch_default(&store, WatchOptions::default()).unwrap();
    let mut mid_snapshot = watch_default(&store, WatchOptions::default()).unwrap();
    assert!(matches!(
        expect_event(&mut mid_snapshot),
        WatchEvent::Upsert { .. }
    ));
    let mut following = watch_after(&store, 0).unwrap();
    assert!(matches!(
        expect_event(&mut following),
        WatchEvent::Upsert { index: 1, .. }
    ));
    let_threads_block();

    let restored_at = store
        .restore([resource(id("c", "c"), "")])
        .expect("restore");
    assert_eq!(restored_at, current + 1);

    assert_eq!(
        expect_result(&blocked, "blocked watcher after restore"),
        Err(Error::WatchClosed)
    );
    assert_eq!(unread_snapshot.try_next(), Err(Error::WatchClosed));
    assert_eq!(mid_snapshot.next(), Err(Error::WatchClosed));
    // Event 2 is still in the ring, but the restore closes the watch first.
    assert_eq!(following.next(), Err(Error::WatchClosed));
    assert_eq!(following.try_next(), Err(Error::WatchClosed));

    // The store is open: new watches work.
    let mut after = watch_default(&store, WatchOptions::default()).unwrap();
    let (resources, index) = read_snapshot(&mut after);
    assert_eq!(index, restored_at);
    assert_eq!(resources.len(), 1);
}

#[test]
fn watch_after_restore_gets_no_older_event() {
    let store = Store::new();
    let a = create(&store, "a");
    let b = create(&store, "b");
    let a2 = update(&store, &a);
    let restored_at = store
        .restore([
            resource(id("x", "x"), "17"),
            resource(id("y", "y"), ""),
            Resource::clone(&b),
        ])
        .unwrap();
    assert_eq!(restored_at, 4);

    // A snapshot watch gets exactly the restored contents, at the restore's
    // index, and then only later events.
    let mut watch = watch_default(&store, WatchOptions::default()).unwrap();
    let (resources, index) = read_snapshot(&mut watch);
    assert_eq!(index, restored_at);
    let names: Vec<String> = resources.iter().map(|r| name_of(r)).collect();
    assert_eq!(names, ["b", "x", "y"]);
    assert!(resources.iter().all(|r| version_of(r) == restored_at));
    let x = store.read(&id("x", "")).unwrap();
    let x2 = update(&store, &x);
    assert_eq!(
        drain(&mut watch),
        vec![WatchEvent::Upsert {
            index: restored_at + 1,
            resource: Arc::clone(&x2)
        }]
    );

    // Resuming at the restore works like any resume.
    let mut resumed = watch_after(&store, restored_at).unwrap();
    assert_eq!(
        drain(&mut resumed),
        vec![WatchEvent::Upsert {
            index: restored_at + 1,
            resource: x2
        }]
    );

    // Resuming before the restore delivers the events before it, then
    // WatchClosed at the restore: nothing from after the restore follows
    // a pre-restore state.
    let mut across = watch_after(&store, 1).unwrap();
    assert_eq!(
        across.try_next(),
        Ok(Some(WatchEvent::Upsert {
            index: 2,
            resource: b
        }))
    );
    assert_eq!(
        across.try_next(),
        Ok(Some(WatchEvent::Upsert {
            index: 3,
            resource: a2
        }))
    );
    assert_eq!(across.try_next(), Err(Error::WatchClosed));
    assert_eq!(across.next(), Err(Error::WatchClosed));
    let mut at_restore = watch_after(&store, restored_at - 1).unwrap();
    assert_eq!(at_restore.next(), Err(Error::WatchClosed));
}

#[test]
fn restore_sets_versions_to_its_index() {
    let store = Store::new();
    let a = create(&store, "a");
    update(&store, &a);
    let before = store.current_index();

    let input = [
        resource(id("a", "new-a"), ""),
        resource(id("b", "b"), "7"),
        resource(id("c", "c"), "123456"),
    ];
    let restored_at = store.restore(input.clone()).unwrap();
    assert_eq!(restored_at, before + 1);
    assert_eq!(store.current_index(), restored_at);
    assert_eq!(store.snapshot().index(), restored_at);
    assert_eq!(store.snapshot().len(), 3);

    for original in &input {
        let name = name_of(original);
        let stored = store.read(&id(&name, "")).unwrap();
        assert_eq!(stored.version, restored_at.to_string(), "version of {name}");
        assert_eq!(stored.id, original.id, "id of {name}");
    }
    // The caller's values are not modified.
    assert_eq!(input[2].version, "123456");

    // Only the restore's index is a valid CAS token now.
    let c = store.read(&id("c", "")).unwrap();
    let mut stale = Resource::clone(&c);
    stale.version = "123456".into();
    assert!(matches!(
        store.write_cas(&stale),
        Err(Error::CasFailure { .. })
    ));
    let c2 = store.write_cas(&c).unwrap();
    assert_eq!(version_of(&c2), restored_at + 1);

    // Restoring nothing empties the store; the index still grows.
    let emptied_at = store.restore([]).unwrap();
    assert_eq!(emptied_at, restored_at + 2);
    assert_eq!(store.snapshot().len(), 0);
    assert!(matches!(
        store.read(&id("a", "")),
        Err(Error::NotFound { .. })
    ));
    assert_eq!(version_of(&create(&store, "z")), emptied_at + 1);
}

#[test]
fn invalid_restore_changes_nothing() {
    let store = Store::new();
    let a = create(&store, "a");
    let b = create(&store, "b");
    let index = store.current_index();
    let mut open = watch_after(&store, index).unwrap();

    let mut no_id = resource(id("n", "n"), "");
    no_id.id = None;
    let mut empty_group_version = resource(id("g", "g"), "");
    empty_group_version
        .id
        .as_mut()
        .unwrap()
        .r#type
        .as_mut()
        .unwrap()
        .group_version = String::new();
    let mut wildcard = resource(id("w", "w"), "");
    wildcard
        .id
        .as_mut()
        .unwrap()
        .tenancy
        .as_mut()
        .unwrap()
        .partition = "*".into();
    let mut other_version = resource(id("dup", "dup"), "");
    other_version
        .id
        .as_mut()
        .unwrap()
        .r#type
        .as_mut()
        .unwrap()
        .group_version = "v2".into();
    let valid = resource(id("ok", "ok"), "");

    let cases: Vec<(&str, Vec<Resource>, &str)> = vec![
        ("missing id", vec![valid.clone(), no_id], "id"),
        ("empty name", vec![resource(id("", "u"), "")], "id.name"),
        (
            "name too long",
            vec![resource(id(&"n".repeat(MAX_NAME_BYTES + 1), "u"), "")],
            "id.name",
        ),
        (
            "empty uid",
            vec![valid.clone(), resource(id("e", ""), "")],
            "id.uid",
        ),
        (
            "empty group version",
            vec![empty_group_version],
            "id.type.group_version",
        ),
        ("wildcard partition", vec![wildcard], "id.tenancy.partition"),
        (
            "same key and uid twice",
            vec![
                resource(id("dup", "dup"), ""),
                valid.clone(),
                resource(id("dup", "dup"), ""),
            ],
            "resources",
        ),
        (
            "same key, another uid",
            vec![resource(id("dup", "u1"), ""), resource(id("dup", "u2"), "")],
            "resources",
        ),
        (
            "same key, another group version",
            vec![resource(id("dup", "dup"), ""), other_version],
            "resources",
        ),
    ];
    for (case, resources, expected_field) in cases {
        match store.restore(resources) {
            Err(Error::InvalidArgument { field, .. }) => {
                assert_eq!(field, expected_field, "{case}: field")
            }
            other => panic!("{case}: expected InvalidArgument, got {other:?}"),
        }
        assert_eq!(store.current_index(), index, "{case}: index changed");
        assert_eq!(store.read(&id("a", "")).unwrap(), a, "{case}: a changed");
        assert_eq!(store.read(&id("b", "")).unwrap(), b, "{case}: b changed");
        assert_eq!(store.snapshot().len(), 2, "{case}: contents changed");
        assert_eq!(open.try_next(), Ok(None), "{case}: open watch affected");
    }

    // The watch still follows.
    let a2 = update(&store, &a);
    assert_eq!(
        open.try_next(),
        Ok(Some(WatchEvent::Upsert {
            index: index + 1,
            resource: a2
        }))
    );
}

// ---------------------------------------------------------------------------
// Blocking

#[test]
fn next_blocks_until_a_write() {
    let store = Store::new();
    create(&store, "a");
    for unlimited in [false, true] {
        let rx = block_on_next(
            watch_after(&store, store.current_index()).unwrap(),
            unlimited,
        );
        let_threads_block();
        assert_eq!(
            rx.try_recv(),
            Err(TryRecvError::Empty),
            "returned before any write"
        );

        let written = create(&store, &format!("b{unlimited}"));
        let expected = WatchEvent::Upsert {
            index: version_of(&written),
            resource: written,
        };
        assert_eq!(
            expect_result(&rx, "blocked watcher after a write"),
            Ok(expected)
        );
    }
}

#[test]
fn idle_watch_returns_none() {
    // On its own thread, so a call that blocks or spins fails the guard.
    run_guarded("calls on an idle watch", || {
        let store = Store::new();
        let mut empty = watch_default(&store, WatchOptions::default()).unwrap();
        assert_eq!(
            empty.try_next(),
            Ok(Some(WatchEvent::EndOfSnapshot { index: 0 }))
        );
        assert_eq!(empty.next_timeout(Duration::from_millis(20)), Ok(None));
        assert_eq!(empty.next_timeout(Duration::ZERO), Ok(None));

        create(&store, "a");
        let mut following = watch_after(&store, 1).unwrap();
        assert_eq!(following.next_timeout(Duration::from_millis(20)), Ok(None));
        // A non-matching write wakes the watcher, which finds nothing.
        store
            .write_cas(&resource(id_in("other", "b", "b"), ""))
            .unwrap();
        assert_eq!(following.next_timeout(Duration::from_millis(20)), Ok(None));
        for _ in 0..10_000 {
            assert_eq!(following.try_next(), Ok(None));
        }

        // A ready event is returned by next_timeout at once, even with a
        // zero timeout.
        let mut ready = watch_after(&store, 1).unwrap();
        create(&store, "c");
        assert!(matches!(
            ready.next_timeout(Duration::ZERO),
            Ok(Some(WatchEvent::Upsert { index: 3, .. }))
        ));
    });
}

/// Writer and watchers take turns for many rounds; each round the writer
/// waits for every watcher's acknowledgement. A lost wake-up leaves a
/// watcher asleep and fails the round on the guard timeout.
#[test]
fn ping_pong_loses_no_wake_up() {
    const ROUNDS: u64 = 2_000;
    let store = Store::new();
    let start = store.current_index();

    // Three watchers: next(), next_timeout(GUARD) and next_timeout(MAX).
    let acks: Vec<mpsc::Receiver<u64>> = (0..3)
        .map(|mode| {
            let mut watch = watch_after(&store, start).unwrap();
            let (tx, rx) = mpsc::channel();
            thread::spawn(move || {
                for _ in 0..ROUNDS {
                    let event = match mode {
                        0 => watch.next().unwrap(),
                        1 => watch
                            .next_timeout(GUARD)
                            .unwrap()
                            .expect("no event within the guard timeout"),
                        _ => watch.next_timeout(Duration::MAX).unwrap().unwrap(),
                    };
                    if tx.send(event.index()).is_err() {
                        return;
                    }
                }
            });
            rx
        })
        .collect();

    let mut stored: Option<Arc<Resource>> = None;
    for round in 0..ROUNDS {
        // Every other round first writes something no watcher matches: it
        // wakes them, and they must go back to sleep and still wake for
        // the next write.
        if round % 2 == 1 {
            store
                .write_cas(&resource(id_in("other", &format!("n{round}"), "n"), ""))
                .unwrap();
        }
        let written = match &stored {
            None => create(&store, "ball"),
            Some(current) => update(&store, current),
        };
        let index = version_of(&written);
        stored = Some(written);
        for (watcher, ack) in acks.iter().enumerate() {
            match ack.recv_timeout(GUARD) {
                Ok(acked) => assert_eq!(acked, index, "watcher {watcher}, round {round}"),
                Err(error) => panic!("watcher {watcher} missed round {round} ({error})"),
            }
        }
    }
}
