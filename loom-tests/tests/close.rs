//! Model (e): close and restore racing a starting or blocked watch.
#![cfg(loom)]

use loom::thread;
use watchstore::{Error, WatchEvent};
use watchstore_loom_tests::{check, create, drain, name_of, read_snapshot, resource, store, watch};
use watchstore_loom_tests::{Bound, Drained, Outcomes, VIOLATION};

static CLOSE_OUTCOMES: Outcomes = Outcomes::new();
static RESTORE_STARTING_OUTCOMES: Outcomes = Outcomes::new();
static RESTORE_BLOCKED_OUTCOMES: Outcomes = Outcomes::new();

/// A watcher thread starts a watch on an empty store and calls the
/// blocking `Watch::next` until it fails, while the main thread closes the
/// store. The watch must fail to start with `WatchClosed`, or return its
/// `EndOfSnapshot` and then `WatchClosed`. A blocked watcher that the close
/// does not wake is a deadlock, which loom reports.
///
/// Exhaustive: no preemption bound (`run.sh` sets none), so loom explores
/// every interleaving its partial-order reduction distinguishes. The
/// executions must include a watch refused at start, a watch closed before
/// it blocked, and one closed while blocked.
#[test]
fn close_races_watch() {
    check("close_races_watch", Bound::Exhaustive, || {
        let store = store(4);

        let watcher_handle = store.loom_prepare_handle();
        let watcher_store = store.clone();
        let watcher = thread::spawn(move || {
            watcher_handle.install();
            let mut watch = match watch(&watcher_store) {
                Ok(watch) => watch,
                Err(error) => return (Vec::new(), error),
            };
            let mut events = Vec::new();
            loop {
                match watch.next() {
                    Ok(event) => events.push(event),
                    Err(error) => return (events, error),
                }
            }
        });

        store.close();

        let (events, error) = watcher.join().expect("the watcher does not panic");
        assert!(
            matches!(error, Error::WatchClosed),
            "{VIOLATION}: the watch failed with {error}, not WatchClosed"
        );
        let started = match events.as_slice() {
            [] => false,
            [WatchEvent::EndOfSnapshot { index: 0 }] => true,
            other => panic!("{VIOLATION}: a closed watch returned {other:?}"),
        };
        let outcome = match (started, store.loom_blocked_waits()) {
            (false, _) => "refused at start",
            (true, 0) => "closed before blocking",
            (true, _) => "closed while blocked",
        };
        CLOSE_OUTCOMES.record(outcome.into());
    });
    CLOSE_OUTCOMES.assert_reached(
        "close_races_watch",
        &[
            "refused at start",
            "closed before blocking",
            "closed while blocked",
        ],
    );
}

/// The store contains `x` at index 1. A watcher thread starts a watch and
/// reads it without blocking while the main thread restores the store to
/// contain only `y` (index 2). After the join the main thread reads the
/// rest.
/// A watch whose snapshot is from before the restore (`x` at 1) must end
/// with `WatchClosed` and never deliver `y`; it may be closed in the middle
/// of its snapshot. A watch whose snapshot is from after it (`y` at 2)
/// must never deliver `x`; it may end with `WatchClosed` if it counted
/// restores before the restore counted itself.
///
/// Exhaustive: no preemption bound (`run.sh` sets none), so loom explores
/// every interleaving its partial-order reduction distinguishes. The
/// executions must include snapshots on both sides of the restore.
#[test]
fn restore_races_starting_watch() {
    check("restore_races_starting_watch", Bound::Exhaustive, || {
        let store = store(4);
        create(&store, "x");

        let watcher_handle = store.loom_prepare_handle();
        let watcher_store = store.clone();
        let watcher = thread::spawn(move || {
            watcher_handle.install();
            let mut watch = watch(&watcher_store).expect("a restore does not refuse new watches");
            let mut drained = Drained::default();
            drain(&mut watch, &mut drained);
            (watch, drained)
        });

        let restored_at = store
            .restore([resource("y", "")])
            .expect("the restored resource is valid");
        assert_eq!(restored_at, 2, "the restore is the second commit");

        let (mut watch, mut drained) = watcher.join().expect("the watcher does not panic");
        drain(&mut watch, &mut drained);

        let closed = match &drained.error {
            None => false,
            Some(Error::WatchClosed) => true,
            Some(error) => panic!("{VIOLATION}: the watch failed with {error}"),
        };
        // Every item of a watch that never followed the log carries its
        // snapshot's index: 1 holds only `x`, 2 holds only `y`.
        let mut snapshot_index = None;
        for event in &drained.events {
            let index = match event {
                WatchEvent::Upsert { index, resource } => {
                    let expected = if *index == 1 { "x" } else { "y" };
                    assert_eq!(
                        name_of(resource),
                        expected,
                        "{VIOLATION}: the snapshot at {index} returned {event:?}"
                    );
                    *index
                }
                WatchEvent::EndOfSnapshot { index } => *index,
                other => panic!("{VIOLATION}: the watch returned {other:?} across a restore"),
            };
            assert!(
                snapshot_index.is_none_or(|first| first == index),
                "{VIOLATION}: the watch mixed items from before and after the restore: {:?}",
                drained.events
            );
            snapshot_index = Some(index);
        }
        let side = match snapshot_index {
            // The snapshot phase always has an item, so an empty watch failed.
            None => "no item",
            Some(1) => {
                assert!(
                    closed,
                    "{VIOLATION}: a watch of the pre-restore contents outlived the restore"
                );
                "pre-restore snapshot"
            }
            Some(2) => "post-restore snapshot",
            Some(other) => panic!("{VIOLATION}: a snapshot at {other}"),
        };
        let closed = if closed { "closed" } else { "open" };
        RESTORE_STARTING_OUTCOMES.record(format!("{side}, {closed}"));
    });
    RESTORE_STARTING_OUTCOMES.assert_reached(
        "restore_races_starting_watch",
        &[
            "pre-restore snapshot, closed",
            "post-restore snapshot, open",
        ],
    );
}

/// The store contains `x` at index 1 and a watch follows it from index 2. A
/// watcher thread calls the blocking `Watch::next` while the main thread
/// restores the store. The call must return `WatchClosed` and nothing
/// from the restored contents; a watcher left blocked is a deadlock.
///
/// Bounded: at most 5 preemptions (`run.sh` sets the same bound). The
/// executions must include a watcher closed while blocked and one closed
/// before it blocked.
#[test]
fn restore_wakes_blocked_watch() {
    check("restore_wakes_blocked_watch", Bound::Preemptions(5), || {
        let store = store(4);
        create(&store, "x");
        let mut watch = watch(&store).expect("the store is open");
        read_snapshot(&mut watch);

        let watcher_handle = store.loom_prepare_handle();
        let watcher = thread::spawn(move || {
            watcher_handle.install();
            watch.next()
        });

        store
            .restore([resource("y", "")])
            .expect("the restored resource is valid");

        let result = watcher.join().expect("the watcher does not panic");
        assert!(
            matches!(result, Err(Error::WatchClosed)),
            "{VIOLATION}: a watch blocked across a restore returned {result:?}"
        );
        let blocked = if store.loom_blocked_waits() > 0 {
            "blocked"
        } else {
            "not blocked"
        };
        RESTORE_BLOCKED_OUTCOMES.record(blocked.into());
    });
    RESTORE_BLOCKED_OUTCOMES
        .assert_reached("restore_wakes_blocked_watch", &["blocked", "not blocked"]);
}
