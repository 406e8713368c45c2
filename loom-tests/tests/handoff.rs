//! Model (a): a write commits while a new watch takes its snapshot.
#![cfg(loom)]

use loom::thread;
use watchstore::WatchEvent;
use watchstore_loom_tests::{check, create, drain, id, read_snapshot, resource, store, watch};
use watchstore_loom_tests::{Bound, Drained, Outcomes, View, VIOLATION};

static OUTCOMES: Outcomes = Outcomes::new();

/// The main thread updates and then deletes a resource while a watcher
/// thread starts a watch, reads its snapshot and reads the log once. After
/// joining, the main thread reads the rest of the watch. The watch must see
/// each change exactly once, in the snapshot or live: no duplicate upsert,
/// no delete of a resource absent from its view, no older version after a
/// newer one, no gap, and its final view equals the store.
///
/// Exhaustive: no preemption bound (`run.sh` sets none), so loom explores
/// every interleaving its partial-order reduction distinguishes. The
/// executions must include snapshots at each of the three indexes and live
/// events read before the join. Under `--cfg watchstore_consul_order`
/// (watches start from a separate published counter) this model must fail.
#[test]
fn handoff() {
    check("handoff", Bound::Exhaustive, || {
        let store = store(4);
        create(&store, "x");

        let watcher_handle = store.loom_prepare_handle();
        let watcher_store = store.clone();
        let watcher = thread::spawn(move || {
            watcher_handle.install();
            let mut watch = watch(&watcher_store).expect("the store is open");
            let (snapshot, index) = read_snapshot(&mut watch);
            let mut live = Drained::default();
            drain(&mut watch, &mut live);
            (watch, snapshot, index, live)
        });

        // Writes come from the main thread: loom 0.7.3 explores a spawned
        // thread's loads against the main thread's earlier writes, but can
        // miss the reverse order.
        let updated = store
            .write_cas(&resource("x", "1"))
            .expect("the update's expected version is current");
        store
            .delete_cas(&id("x"), &updated.version)
            .expect("the delete's expected version is current");

        let (mut watch, snapshot, index, mut live) =
            watcher.join().expect("the watcher does not panic");
        let live_before_join = live.events.len();
        drain(&mut watch, &mut live);

        let mut view = View::default();
        for event in &snapshot {
            view.apply(event);
        }
        view.apply(&WatchEvent::EndOfSnapshot { index });
        assert!(
            live.error.is_none(),
            "{VIOLATION}: the watch failed: {:?}",
            live.error
        );
        for event in &live.events {
            view.apply(event);
        }
        assert_eq!(
            view.last,
            store.current_index(),
            "{VIOLATION}: the watch stopped before the last commit"
        );
        view.assert_matches(&store);

        OUTCOMES.record(format!("snapshot at {index}"));
        if live_before_join > 0 {
            OUTCOMES.record("live event before the join".into());
        }
    });
    OUTCOMES.assert_reached(
        "handoff",
        &[
            "snapshot at 1",
            "snapshot at 2",
            "snapshot at 3",
            "live event before the join",
        ],
    );
}
