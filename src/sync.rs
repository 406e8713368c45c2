//! The concurrency primitives of the crate, in one place.
//!
//! Every atomic, `Arc`, epoch type, the root pointer and the wake-up
//! primitive come from here, so that a loom build can swap them for
//! model-checked stand-ins without touching the algorithm.

pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
pub(crate) use std::sync::Arc;

pub(crate) use crossbeam_epoch as epoch;

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
    /// nobody listens.
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
