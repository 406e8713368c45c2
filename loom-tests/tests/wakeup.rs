//! Model (c): a watcher goes to sleep while a writer publishes.
#![cfg(loom)]

use loom::thread;
use watchstore::WatchEvent;
use watchstore_loom_tests::{check, create, name_of, read_snapshot, store, watch};
use watchstore_loom_tests::{Bound, Outcomes, VIOLATION};

static OUTCOMES: Outcomes = Outcomes::new();

/// A watcher thread calls the blocking `Watch::next` twice while the main
/// thread writes two resources. Both calls must return, with the two
/// writes in order. A wake-up lost between "nothing to read" and "go to
/// sleep" leaves the watcher blocked forever, which loom reports as a
/// deadlock.
///
/// Bounded: at most 5 preemptions (`run.sh` sets the same bound). The
/// executions must include a watcher that never blocked, one that blocked
/// once and one that blocked before each write.
#[test]
fn wakeup() {
    check("wakeup", Bound::Preemptions(5), || {
        let store = store(4);
        let mut watch = watch(&store).expect("the store is open");
        read_snapshot(&mut watch);

        let watcher_handle = store.loom_prepare_handle();
        let watcher = thread::spawn(move || {
            watcher_handle.install();
            let mut events = Vec::new();
            for _ in 0..2 {
                events.push(watch.next().expect("the store stays open"));
            }
            events
        });

        create(&store, "a");
        create(&store, "b");

        let events = watcher.join().expect("the watcher does not panic");
        for (position, (event, name)) in events.iter().zip(["a", "b"]).enumerate() {
            let expected = position as u64 + 1;
            let WatchEvent::Upsert { index, resource } = event else {
                panic!("{VIOLATION}: next returned {event:?}, expected an upsert");
            };
            assert_eq!(
                *index, expected,
                "{VIOLATION}: next returned index {index} in place of {expected}"
            );
            assert_eq!(
                name_of(resource),
                name,
                "{VIOLATION}: next returned another write"
            );
        }
        OUTCOMES.record(format!("blocked {} times", store.loom_blocked_waits()));
    });
    OUTCOMES.assert_reached(
        "wakeup",
        &["blocked 0 times", "blocked 1 times", "blocked 2 times"],
    );
}
