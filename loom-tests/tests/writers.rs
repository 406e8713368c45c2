//! Model (d): two writers commit at once.
#![cfg(loom)]

use loom::thread;
use watchstore::WatchEvent;
use watchstore_loom_tests::{check, create, drain, name_of, read_snapshot, store, watch};
use watchstore_loom_tests::{Bound, Drained, Outcomes, VIOLATION};

static OUTCOMES: Outcomes = Outcomes::new();
static WITH_READER_OUTCOMES: Outcomes = Outcomes::new();

/// Checks the commit indexes two writes of `a` and `b` returned and the
/// events a watch that started at index 0 returned: indexes 1 and 2, each
/// event carrying the write that returned its index.
fn check_two_commits(index_of_a: u64, index_of_b: u64, drained: &Drained) {
    let mut indexes = [index_of_a, index_of_b];
    indexes.sort_unstable();
    assert_eq!(
        indexes,
        [1, 2],
        "{VIOLATION}: the writes returned indexes {index_of_a} and {index_of_b}"
    );
    assert!(
        drained.error.is_none(),
        "{VIOLATION}: the watch failed: {:?}",
        drained.error
    );
    assert_eq!(
        drained.events.len(),
        2,
        "{VIOLATION}: the watch returned {:?}",
        drained.events
    );
    for (position, event) in drained.events.iter().enumerate() {
        let expected = position as u64 + 1;
        let WatchEvent::Upsert { index, resource } = event else {
            panic!("{VIOLATION}: the log returned {event:?}, expected an upsert");
        };
        assert_eq!(
            *index, expected,
            "{VIOLATION}: the log returned index {index} in place of {expected}"
        );
        let writer_of_index = if index_of_a == expected { "a" } else { "b" };
        assert_eq!(
            name_of(resource),
            writer_of_index,
            "{VIOLATION}: the event at {index} is not the write that returned {index}"
        );
    }
}

/// The main thread and a writer thread each create one resource; then the
/// main thread reads a watch that started before both. Either writer may
/// publish the other's event, including when one is descheduled between
/// its root swap and its publication. The commit indexes the two writes
/// return must be 1 and 2, and the watch must deliver exactly those two
/// events in index order, each carrying the write that returned its index.
///
/// Bounded: at most 5 preemptions (`run.sh` sets the same bound). The
/// executions must include both commit orders. The watch is read after
/// both writers finish, so a writer that skips publishing the current
/// root's event before its own swap goes unseen here. The next model
/// catches that.
#[test]
fn two_writers() {
    check("two_writers", Bound::Preemptions(5), || {
        let store = store(4);
        let mut watch = watch(&store).expect("the store is open");
        read_snapshot(&mut watch);

        let writer_handle = store.loom_prepare_handle();
        let writer_store = store.clone();
        let writer = thread::spawn(move || {
            writer_handle.install();
            create(&writer_store, "b")
        });

        let index_of_a = create(&store, "a");
        let index_of_b = writer.join().expect("the writer does not panic");
        let mut drained = Drained::default();
        drain(&mut watch, &mut drained);

        check_two_commits(index_of_a, index_of_b, &drained);
        OUTCOMES.record(format!("a committed at {index_of_a}"));
    });
    OUTCOMES.assert_reached("two_writers", &["a committed at 1", "a committed at 2"]);
}

/// As `two_writers`, with a third thread that reads the watch once while
/// both write. A reader that finds its next index pending publishes the
/// current root's event and reads again. That loop ends only because every
/// writer publishes the current root's event before it swaps the root. A
/// writer that skipped this would leave a reader spinning behind a
/// descheduled writer, which loom reports (seen at 1 preemption). Three
/// threads, so the two spawned ones use handles registered on the main
/// thread.
///
/// Bounded: at most 1 preemption (`run.sh` sets the same bound, and 2
/// with `--extended`: about 1.9 million executions, over three minutes on
/// two cores). The executions must include both commit orders and a reader
/// that got an event before the joins.
#[test]
fn two_writers_and_reader() {
    check("two_writers_and_reader", Bound::Preemptions(1), || {
        let store = store(4);
        let mut watch = watch(&store).expect("the store is open");
        read_snapshot(&mut watch);

        let writer_handle = store.loom_prepare_handle();
        let writer_store = store.clone();
        let writer = thread::spawn(move || {
            writer_handle.install();
            create(&writer_store, "b")
        });

        let reader_handle = store.loom_prepare_handle();
        let reader = thread::spawn(move || {
            reader_handle.install();
            let mut drained = Drained::default();
            if let Some(event) = watch.try_next().expect("the store is open") {
                drained.events.push(event);
            }
            (watch, drained)
        });

        let index_of_a = create(&store, "a");
        let index_of_b = writer.join().expect("the writer does not panic");
        let (mut watch, mut drained) = reader.join().expect("the reader does not panic");
        let read_before_join = drained.events.len();
        drain(&mut watch, &mut drained);

        check_two_commits(index_of_a, index_of_b, &drained);
        WITH_READER_OUTCOMES.record(format!("a committed at {index_of_a}"));
        if read_before_join > 0 {
            WITH_READER_OUTCOMES.record("reader got an event before the joins".into());
        }
    });
    WITH_READER_OUTCOMES.assert_reached(
        "two_writers_and_reader",
        &[
            "a committed at 1",
            "a committed at 2",
            "reader got an event before the joins",
        ],
    );
}
