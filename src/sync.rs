//! The concurrency primitives of the crate, in one place.
//!
//! Every atomic, epoch type, the root pointer, the wake-up primitive and the
//! thread-local macro come from here. A normal build uses std, arc-swap and
//! event-listener. A loom build (`--cfg loom --cfg crossbeam_loom`) swaps in
//! loom's atomics and thread locals and two stand-ins built on loom
//! primitives: [`RootCell`] for arc-swap and [`Notify`] for event-listener,
//! whose internals loom cannot see. crossbeam-epoch switches to loom's
//! primitives by itself under `crossbeam_loom`. The algorithm is the same
//! code in both builds. The loom build only adds a liveness marker to each
//! event and hidden `Store::loom_*` hooks for the models in `loom-tests/`.
//!
//! `Arc` is std's in both builds. No reference count takes part in the
//! store's protocol, and a loom `Arc` makes every clone and drop a
//! scheduling point, which multiplies the interleavings of every snapshot
//! and event copy. The stand-in root pointer never frees a stored root
//! while the store lives, so no root can be freed early in a model either.

#[cfg(all(loom, not(crossbeam_loom)))]
compile_error!(
    "the loom build needs `--cfg crossbeam_loom` as well as `--cfg loom`, \
     so that crossbeam-epoch uses loom's primitives too"
);

#[cfg(all(loom, feature = "async"))]
compile_error!("the `async` feature is not supported in the loom build");

pub(crate) use std::sync::Arc;

pub(crate) use crossbeam_epoch as epoch;

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::thread_local;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// `std::thread_local!` on loom: loom runs its threads as coroutines on one
/// OS thread, so std thread locals would be shared between model threads.
/// loom's macro takes no `const { .. }` initializer, so this unwraps it.
#[cfg(loom)]
macro_rules! loom_thread_local {
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = const { $init:expr };) => {
        loom::thread_local! { $(#[$attr])* $vis static $name: $t = $init; }
    };
    ($($declaration:tt)*) => {
        loom::thread_local! { $($declaration)* }
    };
}
#[cfg(loom)]
pub(crate) use loom_thread_local as thread_local;

#[cfg(all(not(loom), feature = "async"))]
pub(crate) use real::NotifyListener;
#[cfg(not(loom))]
pub(crate) use real::{wait, wait_deadline, Notify, RootCell};

#[cfg(loom)]
pub(crate) use mocked::{wait, wait_deadline, EventMarker, Notify, RootCell};

#[cfg(not(loom))]
mod real {
    use std::sync::Arc;
    use std::time::Instant;

    use event_listener::Listener as _;

    /// An atomically swapped pointer to an immutable value (arc-swap).
    ///
    /// Loads take no lock; [`RootCell::compare_and_swap`] replaces the value
    /// only if it is still the one the caller loaded.
    pub(crate) struct RootCell<T> {
        inner: arc_swap::ArcSwap<T>,
    }

    /// A loaded root. It keeps the value alive while held; hold it briefly,
    /// because arc-swap serves only a few such guards per thread cheaply.
    pub(crate) type RootGuard<T> = arc_swap::Guard<Arc<T>>;

    impl<T> RootCell<T> {
        pub(crate) fn new(value: Arc<T>) -> Self {
            RootCell {
                inner: arc_swap::ArcSwap::new(value),
            }
        }

        /// Loads the current value for a short use.
        pub(crate) fn load(&self) -> RootGuard<T> {
            self.inner.load()
        }

        /// Loads the current value for a long use, such as a snapshot.
        pub(crate) fn load_full(&self) -> Arc<T> {
            self.inner.load_full()
        }

        /// Stores `new` if the current value is still `current` (compared by
        /// pointer) and returns whether it did.
        pub(crate) fn compare_and_swap(&self, current: &Arc<T>, new: Arc<T>) -> bool {
            let previous = self.inner.compare_and_swap(current, new);
            Arc::ptr_eq(&previous, current)
        }
    }

    /// Wakes blocked watchers when the event log or the store state changes.
    ///
    /// Waiters follow the listen, re-check, wait pattern: a notification sent
    /// after `listen` returns is never lost.
    pub(crate) struct Notify {
        event: event_listener::Event,
    }

    /// A registration for the next [`Notify::notify_all`].
    pub(crate) type NotifyListener = event_listener::EventListener;

    impl Notify {
        pub(crate) fn new() -> Self {
            Notify {
                event: event_listener::Event::new(),
            }
        }

        /// Registers for the next notification. Check the condition again
        /// after this call and before waiting.
        pub(crate) fn listen(&self) -> NotifyListener {
            self.event.listen()
        }

        /// Wakes every registered listener. Costs one fence and one load when
        /// no listener is registered.
        pub(crate) fn notify_all(&self) {
            self.event.notify(usize::MAX);
        }
    }

    /// Blocks until the listener is notified.
    pub(crate) fn wait(listener: NotifyListener) {
        listener.wait();
    }

    /// Blocks until the listener is notified or the deadline passes, and
    /// returns whether it was notified.
    pub(crate) fn wait_deadline(listener: NotifyListener, deadline: Instant) -> bool {
        listener.wait_deadline(deadline).is_some()
    }
}

#[cfg(loom)]
mod mocked {
    use std::sync::Arc;
    use std::time::Instant;

    use loom::cell::UnsafeCell;
    use loom::sync::atomic::{AtomicPtr, Ordering};
    use loom::sync::{Condvar, Mutex};

    /// The loom stand-in for the arc-swap root pointer, with the same
    /// contract: loads take no lock, and a compare-and-swap by pointer
    /// replaces the value only if it is still the one the caller loaded.
    ///
    /// The pointer is a loom atomic, so loom schedules around each load and
    /// swap and chooses which stored value a load reads. Its orderings are
    /// weaker than arc-swap's, whose operations each contain a SeqCst
    /// read-modify-write: loads are Acquire and the swap is AcqRel, so the
    /// models do not rely on arc-swap's stronger ordering.
    pub(crate) struct RootCell<T> {
        /// The current value, a pointer taken from an `Arc` in `stored`.
        current: AtomicPtr<T>,
        /// Every value ever stored, kept alive until the cell drops, so a
        /// loaded pointer is always valid and no address is reused (no ABA).
        /// Loom does not see this std mutex: it is never held across a loom
        /// operation, so no model thread can block on it.
        stored: std::sync::Mutex<Vec<Arc<T>>>,
    }

    /// A loaded root.
    pub(crate) type RootGuard<T> = Arc<T>;

    impl<T> RootCell<T> {
        pub(crate) fn new(value: Arc<T>) -> Self {
            RootCell {
                current: AtomicPtr::new(Arc::as_ptr(&value).cast_mut()),
                stored: std::sync::Mutex::new(vec![value]),
            }
        }

        /// Loads the current value for a short use.
        pub(crate) fn load(&self) -> RootGuard<T> {
            self.load_full()
        }

        /// Loads the current value for a long use, such as a snapshot.
        pub(crate) fn load_full(&self) -> Arc<T> {
            // Acquire pairs with the Release of the swap that stored the
            // pointer, so the value's contents are visible.
            let pointer = self.current.load(Ordering::Acquire);
            // SAFETY: every pointer `current` ever held came from
            // `Arc::as_ptr` of an `Arc` that `stored` (or the swapping call,
            // until it moves it there) keeps alive until the cell drops, and
            // `&self` proves the cell is alive. Taking a new reference first
            // leaves that `Arc`'s own reference untouched.
            unsafe {
                Arc::increment_strong_count(pointer);
                Arc::from_raw(pointer)
            }
        }

        /// Stores `new` if the current value is still `current` (compared by
        /// pointer) and returns whether it did.
        pub(crate) fn compare_and_swap(&self, current: &Arc<T>, new: Arc<T>) -> bool {
            let expected = Arc::as_ptr(current).cast_mut();
            let replacement = Arc::as_ptr(&new).cast_mut();
            // AcqRel on success: Release publishes the new value to loads,
            // Acquire orders this thread after the swap it replaces.
            let swapped = self
                .current
                .compare_exchange(expected, replacement, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
            if swapped {
                // `new` stays alive until it is in `stored`, so a load that
                // already saw `replacement` has a valid pointer.
                self.stored
                    .lock()
                    .expect("no thread panics while holding the lock")
                    .push(new);
            }
            swapped
        }
    }

    /// The loom stand-in for event-listener, with the same contract: a
    /// notification sent after `listen` returns is never lost.
    ///
    /// A generation counter under a loom mutex replaces event-listener's
    /// fences, so the models check the listen, re-check, wait pattern of its
    /// callers, not event-listener itself.
    pub(crate) struct Notify {
        shared: Arc<NotifyShared>,
    }

    struct NotifyShared {
        state: Mutex<NotifyState>,
        /// Signalled after every increment of the generation.
        changed: Condvar,
    }

    struct NotifyState {
        /// Number of `notify_all` calls so far.
        generation: u64,
        /// Number of waits that blocked, so models can tell that they
        /// explored a sleeping watcher.
        blocked_waits: u64,
    }

    /// A registration for the next [`Notify::notify_all`].
    pub(crate) struct NotifyListener {
        shared: Arc<NotifyShared>,
        /// The generation when the listener registered.
        generation: u64,
    }

    impl Notify {
        pub(crate) fn new() -> Self {
            Notify {
                shared: Arc::new(NotifyShared {
                    state: Mutex::new(NotifyState {
                        generation: 0,
                        blocked_waits: 0,
                    }),
                    changed: Condvar::new(),
                }),
            }
        }

        /// Registers for the next notification. Check the condition again
        /// after this call and before waiting.
        pub(crate) fn listen(&self) -> NotifyListener {
            let generation = self.shared.lock().generation;
            NotifyListener {
                shared: Arc::clone(&self.shared),
                generation,
            }
        }

        /// Wakes every registered listener.
        pub(crate) fn notify_all(&self) {
            self.shared.lock().generation += 1;
            self.shared.changed.notify_all();
        }

        /// Returns how many waits have blocked so far.
        pub(crate) fn blocked_waits(&self) -> u64 {
            self.shared.lock().blocked_waits
        }
    }

    impl NotifyShared {
        fn lock(&self) -> loom::sync::MutexGuard<'_, NotifyState> {
            self.state
                .lock()
                .expect("no thread panics while holding the lock")
        }
    }

    /// Blocks until the listener is notified.
    pub(crate) fn wait(listener: NotifyListener) {
        let mut state = listener.shared.lock();
        if state.generation == listener.generation {
            state.blocked_waits += 1;
        }
        while state.generation == listener.generation {
            state = listener
                .shared
                .changed
                .wait(state)
                .expect("no thread panics while holding the lock");
        }
    }

    /// Blocks until the listener is notified, and returns true.
    // NOTE: loom has no clock, so the deadline is ignored and this waits like
    // `wait`; no model uses `Watch::next_timeout`.
    pub(crate) fn wait_deadline(listener: NotifyListener, _deadline: Instant) -> bool {
        wait(listener);
        true
    }

    /// A loom-tracked liveness flag carried by every event in the loom build.
    ///
    /// The log checks it before it reads an event it loaded from a slot, and
    /// dropping the event clears it. A read that is not ordered before the
    /// drop (a use after free) fails the model as a loom causality
    /// violation, and a read ordered after it fails the assertion. Each
    /// clone tracks its own copy's lifetime.
    pub(crate) struct EventMarker {
        live: UnsafeCell<bool>,
    }

    // SAFETY: the flag is written only in `drop`, which has `&mut self`;
    // shared references only read it, and loom tracks both.
    unsafe impl Sync for EventMarker {}

    impl EventMarker {
        pub(crate) fn new() -> Self {
            EventMarker {
                live: UnsafeCell::new(true),
            }
        }

        /// Panics if the event carrying this marker was dropped.
        pub(crate) fn check(&self) {
            // SAFETY: loom checks this read against the write in `drop` and
            // panics on a concurrent pair instead of racing.
            let live = self.live.with(|live| unsafe { *live });
            assert!(live, "an event was read after it was freed");
        }
    }

    impl Clone for EventMarker {
        fn clone(&self) -> Self {
            self.check();
            EventMarker::new()
        }
    }

    impl Drop for EventMarker {
        fn drop(&mut self) {
            // SAFETY: as in `check`, loom reports a concurrent read.
            self.live.with_mut(|live| unsafe { *live = false });
        }
    }

    impl std::fmt::Debug for EventMarker {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("EventMarker")
        }
    }
}

/// Hooks for the loom models in `loom-tests/`, compiled only under
/// `cfg(loom)`. They are not part of the public API.
#[cfg(loom)]
mod model_hooks {
    use crate::log::PreparedHandle;
    use crate::Store;

    impl Store {
        /// Registers an epoch handle for this store's log on the calling
        /// thread and pins it once, for another model thread to install.
        ///
        /// A handle's first pin advances crossbeam-epoch's global epoch, and
        /// loom 0.7 can fail internally when two spawned threads do that
        /// (tokio-rs/loom#252), so models register on the main thread.
        #[doc(hidden)]
        pub fn loom_prepare_handle(&self) -> PreparedHandle {
            self.shared.log.prepare_handle()
        }

        /// Pins the calling thread and flushes its deferred destructors to
        /// the log's collector, advancing the epoch if it can.
        #[doc(hidden)]
        pub fn loom_flush(&self) {
            self.shared.log.flush();
        }

        /// Returns how many times a watcher of this store blocked waiting
        /// for a notification.
        #[doc(hidden)]
        pub fn loom_blocked_waits(&self) -> u64 {
            self.shared.notify.blocked_waits()
        }
    }
}
