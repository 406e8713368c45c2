//! `Watch` as a `futures::Stream` (feature "async").
//!
//! Waits that must end run on their own thread behind a 10 s guard, so a
//! lost wake-up fails the test instead of hanging it.

#![cfg(feature = "async")]

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread;
use std::time::Duration;

use futures::executor::block_on;
use futures::task::{waker, ArcWake};
use futures::{Stream, StreamExt};
use watchstore::{
    Error, Id, Resource, Store, StoreOptions, Tenancy, Type, Watch, WatchEvent, WatchOptions,
};

/// The limit on any wait that must end; reaching it fails the test.
const GUARD: Duration = Duration::from_secs(10);

fn ty() -> Type {
    Type {
        group: "test".into(),
        group_version: "v1".into(),
        kind: "a".into(),
    }
}

fn tenancy(namespace: &str) -> Tenancy {
    Tenancy {
        partition: "default".into(),
        namespace: namespace.into(),
    }
}

fn id_in(namespace: &str, name: &str) -> Id {
    Id {
        uid: name.into(),
        name: name.into(),
        r#type: Some(ty()),
        tenancy: Some(tenancy(namespace)),
    }
}

fn create_in(store: &Store, namespace: &str, name: &str) -> Arc<Resource> {
    let resource = Resource {
        id: Some(id_in(namespace, name)),
        ..Resource::default()
    };
    store.write_cas(&resource).expect("create")
}

fn create(store: &Store, name: &str) -> Arc<Resource> {
    create_in(store, "default", name)
}

fn update(store: &Store, stored: &Resource) -> Arc<Resource> {
    let mut next = stored.clone();
    let count: u64 = next
        .metadata
        .get("updates")
        .map_or(0, |c| c.parse().unwrap());
    next.metadata
        .insert("updates".into(), (count + 1).to_string());
    store.write_cas(&next).expect("update")
}

fn delete(store: &Store, stored: &Resource) {
    store
        .delete_cas(stored.id.as_ref().unwrap(), &stored.version)
        .expect("delete");
}

fn watch_default(store: &Store, options: WatchOptions) -> Watch {
    store
        .watch_list_with(&ty(), &tenancy("default"), "", options)
        .expect("watch")
}

/// Runs `work` on a new thread and waits for it up to `GUARD`.
fn run_guarded<T: Send + 'static>(
    description: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        let _ = tx.send(work());
    });
    match rx.recv_timeout(GUARD) {
        Ok(value) => {
            handle.join().expect("thread panicked after sending");
            value
        }
        Err(RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the thread sends before it returns"),
        },
        Err(RecvTimeoutError::Timeout) => panic!("{description} did not finish within {GUARD:?}"),
    }
}

/// Returns the stream's next item.
///
/// The inherent, blocking `Watch::next` shadows `StreamExt::next` in method
/// syntax, so the stream's is called by its path.
async fn next_item(watch: &mut Watch) -> Option<Result<WatchEvent, Error>> {
    StreamExt::next(watch).await
}

/// A waker that counts its wake-ups.
struct CountingWaker {
    wakes: AtomicUsize,
}

impl ArcWake for CountingWaker {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.wakes.fetch_add(1, Ordering::SeqCst);
    }
}

fn poll_once(
    watch: &mut Watch,
    counter: &Arc<CountingWaker>,
) -> Poll<Option<Result<WatchEvent, Error>>> {
    let waker = waker(Arc::clone(counter));
    let mut context = Context::from_waker(&waker);
    Pin::new(watch).poll_next(&mut context)
}

#[test]
fn stream_yields_the_same_events_as_next() {
    let store = Store::new();
    let a = create(&store, "a");
    create(&store, "b");
    create_in(&store, "other", "c");

    let mut blocking = watch_default(&store, WatchOptions::default());
    let mut stream = watch_default(&store, WatchOptions::default());
    let mut resumed = watch_default(&store, WatchOptions::default().after(1));

    let a2 = update(&store, &a);
    delete(&store, &a2);
    create_in(&store, "other", "d");
    create(&store, "e");

    // Snapshot of a and b, EndOfSnapshot, then update, delete and create.
    let mut from_next = Vec::new();
    while let Some(event) = blocking.try_next().unwrap() {
        from_next.push(event);
    }
    assert_eq!(from_next.len(), 6, "{from_next:?}");

    let from_stream: Vec<WatchEvent> = block_on(async {
        let mut events = Vec::new();
        for _ in 0..from_next.len() {
            events.push(
                next_item(&mut stream)
                    .await
                    .expect("stream ended")
                    .expect("stream failed"),
            );
        }
        events
    });
    assert_eq!(from_stream, from_next);

    // A resumed watch as a stream: event 2 (b), then the later ones.
    let from_resumed: Vec<WatchEvent> = block_on(async {
        let mut events = Vec::new();
        for _ in 0..4 {
            events.push(next_item(&mut resumed).await.unwrap().unwrap());
        }
        events
    });
    assert_eq!(from_resumed[0].index(), 2);
    assert_eq!(from_resumed[1..], from_next[3..]);
}

#[test]
fn pending_stream_woken_by_other_thread() {
    let store = Store::new();
    let mut watch = watch_default(&store, WatchOptions::default().after(0));
    let counter = Arc::new(CountingWaker {
        wakes: AtomicUsize::new(0),
    });
    assert!(poll_once(&mut watch, &counter).is_pending());
    assert_eq!(counter.wakes.load(Ordering::SeqCst), 0);

    // A write the watch does not match still wakes it; polling then finds
    // nothing and registers again.
    let writer = store.clone();
    thread::spawn(move || create_in(&writer, "other", "x"))
        .join()
        .unwrap();
    assert!(
        counter.wakes.load(Ordering::SeqCst) >= 1,
        "not woken by a commit"
    );
    assert!(poll_once(&mut watch, &counter).is_pending());

    let before = counter.wakes.load(Ordering::SeqCst);
    let writer = store.clone();
    let written = thread::spawn(move || create(&writer, "a")).join().unwrap();
    assert!(
        counter.wakes.load(Ordering::SeqCst) > before,
        "not woken again"
    );
    assert_eq!(
        poll_once(&mut watch, &counter),
        Poll::Ready(Some(Ok(WatchEvent::Upsert {
            index: 2,
            resource: written
        })))
    );
}

#[test]
fn blocked_stream_wakes_for_each_write() {
    const ROUNDS: u64 = 1_000;
    let store = Store::new();
    let mut watch = watch_default(&store, WatchOptions::default().after(0));
    let (ack_tx, ack_rx) = mpsc::channel();
    // Not a scoped thread: a lost wake-up fails on the guard instead of
    // hanging the join.
    thread::spawn(move || {
        block_on(async {
            for _ in 0..ROUNDS {
                let event = next_item(&mut watch)
                    .await
                    .expect("stream ended")
                    .expect("stream failed");
                if ack_tx.send(event.index()).is_err() {
                    return;
                }
            }
        })
    });

    let mut stored: Option<Arc<Resource>> = None;
    for round in 0..ROUNDS {
        let written = match &stored {
            None => create(&store, "ball"),
            Some(current) => update(&store, current),
        };
        let index: u64 = written.version.parse().unwrap();
        stored = Some(written);
        match ack_rx.recv_timeout(GUARD) {
            Ok(acked) => assert_eq!(acked, index, "round {round}"),
            Err(error) => panic!("the stream missed round {round} ({error})"),
        }
    }
}

#[test]
fn stream_ends_after_yielding_watch_closed_once() {
    let store = Store::new();
    create(&store, "a");
    let mut watch = watch_default(&store, WatchOptions::default().after(1));
    let (started_tx, started_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    thread::spawn(move || {
        started_tx.send(()).unwrap();
        let items = block_on(async {
            let first = next_item(&mut watch).await;
            let second = next_item(&mut watch).await;
            let third = next_item(&mut watch).await;
            (first, second, third)
        });
        let _ = done_tx.send(items);
    });
    started_rx.recv_timeout(GUARD).unwrap();
    // Gives the stream time to be pending; a close before that must give
    // the same items.
    thread::sleep(Duration::from_millis(50));

    store.close();
    let items = done_rx
        .recv_timeout(GUARD)
        .expect("the stream did not wake up on close");
    assert_eq!(items, (Some(Err(Error::WatchClosed)), None, None));
}

#[test]
fn stream_ends_after_restore_or_lag() {
    let store = Store::new();
    create(&store, "a");
    let watch = watch_default(&store, WatchOptions::default());
    store.restore([]).unwrap();
    // Collecting ends only when the stream does; the guard catches a
    // stream that never ends.
    let items = run_guarded("collecting a restored watch", move || {
        block_on(watch.collect::<Vec<_>>())
    });
    assert_eq!(items, vec![Err(Error::WatchClosed)]);

    let small = Store::with_options(StoreOptions::default().log_capacity(8)).unwrap();
    let mut lagging = watch_default(&small, WatchOptions::default().after(0));
    for n in 0..20 {
        create(&small, &format!("r{n}"));
    }
    let (items, after_end) = run_guarded("collecting a lagging watch", move || {
        let items = block_on((&mut lagging).collect::<Vec<_>>());
        (items, block_on(next_item(&mut lagging)))
    });
    assert_eq!(
        items,
        vec![Err(Error::Lagged {
            next: 1,
            oldest: 13
        })]
    );
    assert_eq!(after_end, None);
}
