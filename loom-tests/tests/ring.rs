//! Model (b): the ring overwrites a slot while a lagging watcher reads it.
#![cfg(loom)]

use loom::thread;
use watchstore::{Error, Store, Watch, WatchEvent};
use watchstore_loom_tests::{check, create, drain, name_of, parse_version, read_snapshot};
use watchstore_loom_tests::{store, watch, Bound, Drained, Outcomes, VIOLATION};

static OVERWRITE_OUTCOMES: Outcomes = Outcomes::new();
static RECLAIM_OUTCOMES: Outcomes = Outcomes::new();

/// Starts a watch on the empty `store` and reads its snapshot, so that it
/// follows the log from index 1.
fn following_watch(store: &Store) -> Watch {
    let mut watch = watch(store).expect("the store is open");
    let (snapshot, index) = read_snapshot(&mut watch);
    assert!(snapshot.is_empty(), "the store starts empty");
    assert_eq!(index, 0, "the store starts at index 0");
    watch
}

/// Checks what a watch returned after the writes of `names` (one per
/// index, from 1) into a log of `capacity` slots, and returns a short
/// outcome. The watch must return consecutive events from index 1, each the
/// write of its index. Then it must stop with nothing more (all read) or
/// with one `Lagged` naming the first unread index, which must have been
/// overwritten.
fn check_lagging_reads(drained: &Drained, names: &[&str], capacity: u64) -> String {
    for (position, event) in drained.events.iter().enumerate() {
        let expected = position as u64 + 1;
        let WatchEvent::Upsert { index, resource } = event else {
            panic!("{VIOLATION}: the log returned {event:?}, expected an upsert");
        };
        assert_eq!(
            *index, expected,
            "{VIOLATION}: the log returned index {index} in place of {expected}"
        );
        assert_eq!(
            parse_version(resource),
            expected,
            "{VIOLATION}: the event at {index} carries another index's resource"
        );
        assert_eq!(
            name_of(resource),
            names[position],
            "{VIOLATION}: the event at {index} carries another write's resource"
        );
    }
    let read = drained.events.len() as u64;
    let last = names.len() as u64;
    match &drained.error {
        None => {
            assert_eq!(
                read, last,
                "{VIOLATION}: the watch stopped without an error"
            );
            format!("read all {last}")
        }
        Some(Error::Lagged { next, oldest }) => {
            // The oldest index is computed from a root loaded after the
            // overwrite was seen, so it lies between the overwritten index
            // and the oldest index held once every write is in.
            let final_oldest = (last + 1).saturating_sub(capacity).max(1);
            assert_eq!(
                *next,
                read + 1,
                "{VIOLATION}: Lagged names {next}, not the next unread index"
            );
            assert!(
                next < oldest && *oldest <= final_oldest,
                "{VIOLATION}: Lagged for index {next} names oldest index {oldest}, \
                 outside {next} < oldest <= {final_oldest}"
            );
            format!("lagged at {next}")
        }
        Some(error) => panic!("{VIOLATION}: the watch failed with {error}"),
    }
}

/// A watcher thread reads a log of two slots while the main thread writes
/// four resources, so indexes 3 and 4 replace indexes 1 and 2 in their
/// slots. The watcher must get each event with its own index and resource,
/// or `Lagged` for the overwritten index with the right oldest index, never
/// another index's event and never a hang. A reader that mistakes a newer
/// event for a pending one spins, and so does one that finds an older event
/// that a helper holding a stale root put back over a newer one.
///
/// Bounded: at most 5 preemptions (`run.sh` sets the same bound). The
/// executions must include both a watcher that read every event and one
/// that lagged.
#[test]
fn ring_overwrite() {
    check("ring_overwrite", Bound::Preemptions(5), || {
        let store = store(2);
        let watch = following_watch(&store);

        let watcher_handle = store.loom_prepare_handle();
        let watcher = thread::spawn(move || {
            watcher_handle.install();
            let mut watch = watch;
            let mut drained = Drained::default();
            drain(&mut watch, &mut drained);
            (watch, drained)
        });

        let names = ["a", "b", "c", "d"];
        for name in names {
            create(&store, name);
        }

        let (mut watch, mut drained) = watcher.join().expect("the watcher does not panic");
        drain(&mut watch, &mut drained);
        OVERWRITE_OUTCOMES.record(check_lagging_reads(&drained, &names, 2));
    });
    OVERWRITE_OUTCOMES.assert_reached(
        "ring_overwrite",
        &["read all 4", "lagged at 1", "lagged at 2"],
    );
}

/// A ring of one slot. The main thread writes two resources, so the second
/// event replaces the first, which is deferred for reclamation. Then it
/// flushes its epoch handle twice, enough to advance the epoch twice and
/// free the replaced event when no reader holds a guard. A watcher thread
/// reads the log meanwhile. Every event carries a loom-tracked marker, so
/// a read of a freed event fails the model. The watcher must get both
/// events or `Lagged` at index 1.
///
/// Bounded: at most 4 preemptions (`run.sh` sets the same bound). Only the
/// main thread flushes. The executions must include a watcher that read
/// index 1 and one that lagged.
#[test]
fn ring_reclaim() {
    check("ring_reclaim", Bound::Preemptions(4), || {
        let store = store(1);
        let watch = following_watch(&store);

        let watcher_handle = store.loom_prepare_handle();
        let watcher = thread::spawn(move || {
            watcher_handle.install();
            let mut watch = watch;
            let mut drained = Drained::default();
            drain(&mut watch, &mut drained);
            (watch, drained)
        });

        let names = ["a", "b"];
        for name in names {
            create(&store, name);
        }
        store.loom_flush();
        store.loom_flush();

        let (mut watch, mut drained) = watcher.join().expect("the watcher does not panic");
        drain(&mut watch, &mut drained);
        RECLAIM_OUTCOMES.record(check_lagging_reads(&drained, &names, 1));
    });
    RECLAIM_OUTCOMES.assert_reached("ring_reclaim", &["read all 2", "lagged at 1"]);
}
