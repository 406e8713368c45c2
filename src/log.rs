//! The bounded ring event log.
//!
//! Slot `index & mask` contains the event with commit index `index` until the
//! event `index + capacity` replaces it. The event's own index is the slot's
//! sequence stamp: a reader that wants index `i` and finds a smaller index
//! knows `i` is not published yet, and one that finds a larger index knows
//! `i` was overwritten. There is no separate head or tail counter: the root's
//! commit index is the tail, and the oldest index held follows from it.
//!
//! Replaced events are freed through crossbeam-epoch, so a reader that
//! loaded a slot pointer under a guard can finish with it.

use std::cell::RefCell;
use std::sync::Weak;

use crate::error::Error;
use crate::sync::epoch::{self, Atomic, Collector, Guard, LocalHandle, Owned};
use crate::sync::{thread_local, Arc, Ordering};
use crate::tree::Event;

/// The result of looking up one index in the log.
pub(crate) enum Slot {
    /// The event with the requested index.
    Ready(Event),
    /// The requested index has not been published yet.
    Pending,
    /// The requested index was overwritten by a later one.
    Overwritten,
}

/// Maximum number of log slots: 2^24 slots take 128 MiB of pointers
/// before any event is stored.
pub const MAX_LOG_CAPACITY: usize = 1 << 24;

pub(crate) struct Log {
    slots: Box<[Atomic<Event>]>,
    /// `capacity - 1`; the capacity is a power of two.
    mask: u64,
    /// Owns every deferred destructor of replaced events, so dropping the
    /// store frees them and nothing is shared with other stores.
    collector: Collector,
    /// Tells per-thread handle caches whether this log is still alive.
    alive: Arc<()>,
}

thread_local! {
    /// One epoch handle per thread per live log: registering a handle is
    /// costly (its first pin runs a collection), so it is done once.
    static HANDLES: RefCell<Vec<(Weak<()>, LocalHandle)>> = const { RefCell::new(Vec::new()) };
}

impl Log {
    /// Creates a log of `capacity` slots; `capacity` must be a power of two.
    pub(crate) fn new(capacity: usize) -> Result<Log, Error> {
        if capacity == 0 || !capacity.is_power_of_two() || capacity > MAX_LOG_CAPACITY {
            return Err(Error::invalid(
                "log_capacity",
                format!("is {capacity}, expected a power of two from 1 to {MAX_LOG_CAPACITY}"),
            ));
        }
        let slots = (0..capacity).map(|_| Atomic::null()).collect();
        Ok(Log {
            slots,
            mask: capacity as u64 - 1,
            collector: Collector::new(),
            alive: Arc::new(()),
        })
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.mask + 1
    }

    /// Pins the current thread in this log's epoch, through a handle cached
    /// per thread.
    pub(crate) fn pin(&self) -> Guard {
        let cached = HANDLES.try_with(|handles| {
            let mut handles = handles.borrow_mut();
            if let Some((_, handle)) = handles
                .iter()
                .find(|(_, handle)| handle.collector() == &self.collector)
            {
                return handle.pin();
            }
            // A dead log's handle keeps its collector's garbage alive, so
            // drop those before caching one more.
            handles.retain(|(alive, _)| alive.strong_count() > 0);
            let handle = self.collector.register();
            let guard = handle.pin();
            handles.push((Arc::downgrade(&self.alive), handle));
            guard
        });
        // During thread teardown the cache is gone: use a one-off handle.
        cached.unwrap_or_else(|_| self.collector.register().pin())
    }

    /// Publishes `event` to its slot unless the slot already contains it or a
    /// later event, and returns whether this call published it.
    ///
    /// Equality alone would not do: a helper that loaded an old root could
    /// otherwise overwrite a newer event in the same slot, losing it.
    pub(crate) fn publish(&self, event: &Event, guard: &Guard) -> bool {
        let slot = &self.slots[(event.index & self.mask) as usize];
        // Acquire: the index read below belongs to the event the pointer
        // was published with (pairs with the Release of the CAS below).
        let mut current = slot.load(Ordering::Acquire, guard);
        // Allocated only once the slot is known to need it, and reused
        // across CAS retries.
        let mut new: Option<Owned<Event>> = None;
        loop {
            // SAFETY: `current` was loaded under `guard`, and events leave a
            // slot only through `defer_destroy`, which waits for the guard.
            if let Some(existing) = unsafe { current.as_ref() } {
                #[cfg(loom)]
                existing.marker.check();
                if existing.index >= event.index {
                    return false;
                }
            }
            // Release on success publishes the event's contents to readers'
            // Acquire loads. Acquire on failure, for the same reason as the
            // first load: the loop reads the index of the event it finds.
            // The guard is held from the load to this CAS, so `current`
            // cannot be freed and its address reused (no ABA).
            let owned = new.take().unwrap_or_else(|| Owned::new(event.clone()));
            match slot.compare_exchange(current, owned, Ordering::Release, Ordering::Acquire, guard)
            {
                Ok(_) => {
                    if !current.is_null() {
                        // SAFETY: the CAS unlinked `current` from the only
                        // place that referenced it, and the deferred
                        // destructor runs only after every guard that could
                        // have loaded it is dropped.
                        unsafe { guard.defer_destroy(current) };
                    }
                    return true;
                }
                Err(failure) => {
                    current = failure.current;
                    new = Some(failure.new);
                }
            }
        }
    }

    /// Looks up the event with commit index `index`.
    pub(crate) fn get(&self, index: u64, guard: &Guard) -> Slot {
        let slot = &self.slots[(index & self.mask) as usize];
        // Acquire pairs with the Release of the publishing CAS, so the
        // event's fields are visible.
        let shared = slot.load(Ordering::Acquire, guard);
        // SAFETY: loaded under `guard`; see `publish`.
        let loaded = unsafe { shared.as_ref() };
        #[cfg(loom)]
        if let Some(event) = loaded {
            event.marker.check();
        }
        match loaded {
            None => Slot::Pending,
            Some(event) if event.index == index => Slot::Ready(event.clone()),
            Some(event) if event.index < index => Slot::Pending,
            Some(_) => Slot::Overwritten,
        }
    }

    /// Returns the oldest index in the log once every event up to
    /// `published` is published.
    pub(crate) fn oldest_held(&self, published: u64) -> u64 {
        (published + 1).saturating_sub(self.capacity()).max(1)
    }
}

/// An epoch handle registered on one model thread for another (loom
/// builds only).
#[cfg(loom)]
pub struct PreparedHandle {
    alive: Weak<()>,
    handle: LocalHandle,
}

// SAFETY: a `LocalHandle` is `!Send` so that two threads cannot use it at
// once; it has no tie to the thread that registered it. A prepared handle
// moves to one thread before that thread uses it, and the registering thread
// keeps no copy.
#[cfg(loom)]
unsafe impl Send for PreparedHandle {}

#[cfg(loom)]
impl PreparedHandle {
    /// Caches the handle for the calling thread's pins of its log.
    pub fn install(self) {
        HANDLES.with(|handles| handles.borrow_mut().push((self.alive, self.handle)));
    }
}

#[cfg(loom)]
impl Log {
    /// Registers a handle and pins it once, so that its first pin (which
    /// runs a collection) happens on the calling thread.
    pub(crate) fn prepare_handle(&self) -> PreparedHandle {
        let handle = self.collector.register();
        drop(handle.pin());
        PreparedHandle {
            alive: Arc::downgrade(&self.alive),
            handle,
        }
    }

    /// Flushes the calling thread's deferred destructors to the collector.
    pub(crate) fn flush(&self) {
        self.pin().flush();
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        // SAFETY: `&mut self` proves no other thread can load a slot, so
        // freeing the events now cannot race a reader.
        let guard = unsafe { epoch::unprotected() };
        for slot in self.slots.iter() {
            // Relaxed: `&mut self` already orders this against every
            // earlier access.
            let shared = slot.swap(epoch::Shared::null(), Ordering::Relaxed, guard);
            if !shared.is_null() {
                // SAFETY: the pointer came from `Owned::new` in `publish`
                // and was unlinked just now, so this is its only owner.
                drop(unsafe { shared.into_owned() });
            }
        }
        // Drop this thread's cached handle now; other threads drop theirs
        // the next time they register a handle for any log, or at exit.
        let _ = HANDLES.try_with(|handles| {
            if let Ok(mut handles) = handles.try_borrow_mut() {
                handles.retain(|(_, handle)| handle.collector() != &self.collector);
            }
        });
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::pb::Resource;
    use crate::tree::Change;

    fn restore_event(index: u64) -> Event {
        Event {
            index,
            change: Change::Restore,
        }
    }

    fn upsert_event(index: u64, resource: &Arc<Resource>) -> Event {
        Event {
            index,
            change: Change::Upsert(Arc::clone(resource)),
        }
    }

    fn index_of(slot: Slot) -> Option<u64> {
        match slot {
            Slot::Ready(event) => Some(event.index),
            Slot::Pending | Slot::Overwritten => None,
        }
    }

    #[test]
    fn new_rejects_capacity_not_power_of_two() {
        for capacity in [0, 3, 6] {
            let result = Log::new(capacity);
            assert!(
                matches!(
                    result,
                    Err(Error::InvalidArgument {
                        field: "log_capacity",
                        ..
                    })
                ),
                "capacity {capacity} was accepted"
            );
        }
        assert!(Log::new(1).is_ok());
    }

    #[test]
    fn publish_then_get_returns_event() {
        let log = Log::new(4).unwrap();
        let guard = log.pin();
        assert!(matches!(log.get(1, &guard), Slot::Pending));

        assert!(log.publish(&restore_event(1), &guard));

        assert_eq!(index_of(log.get(1, &guard)), Some(1));
        assert!(matches!(log.get(2, &guard), Slot::Pending));
    }

    #[test]
    fn publish_skips_same_or_older_event() {
        let log = Log::new(4).unwrap();
        let guard = log.pin();
        assert!(log.publish(&restore_event(1), &guard));
        assert!(
            !log.publish(&restore_event(1), &guard),
            "published index 1 twice"
        );

        // Index 5 replaces index 1 in slot 1; a helper holding the older
        // event must not put it back.
        assert!(log.publish(&restore_event(5), &guard));
        assert!(
            !log.publish(&restore_event(1), &guard),
            "a stale event replaced a newer one"
        );
        assert_eq!(index_of(log.get(5, &guard)), Some(5));
    }

    #[test]
    fn get_reports_overwritten_index() {
        let log = Log::new(2).unwrap();
        let guard = log.pin();
        for index in 1..=3 {
            assert!(log.publish(&restore_event(index), &guard));
        }

        assert!(matches!(log.get(1, &guard), Slot::Overwritten));
        assert_eq!(index_of(log.get(2, &guard)), Some(2));
        assert_eq!(index_of(log.get(3, &guard)), Some(3));
        // Slot 1 holds index 3, older than 5: not published yet.
        assert!(matches!(log.get(5, &guard), Slot::Pending));
    }

    #[test]
    fn oldest_held_follows_capacity() {
        let log = Log::new(4).unwrap();
        assert_eq!(log.oldest_held(0), 1);
        assert_eq!(log.oldest_held(4), 1);
        assert_eq!(log.oldest_held(5), 2);
        assert_eq!(log.oldest_held(100), 97);
    }

    #[test]
    fn drop_frees_replaced_and_newest_events() {
        let replaced = Arc::new(Resource::default());
        let newest = Arc::new(Resource::default());
        let log = Log::new(1).unwrap();
        {
            let guard = log.pin();
            assert!(log.publish(&upsert_event(1, &replaced), &guard));
            assert!(log.publish(&upsert_event(2, &newest), &guard));
        }
        assert_eq!(
            Arc::strong_count(&newest),
            2,
            "the log keeps a copy of the newest event"
        );

        drop(log);

        assert_eq!(
            Arc::strong_count(&replaced),
            1,
            "the replaced event was not freed"
        );
        assert_eq!(
            Arc::strong_count(&newest),
            1,
            "the newest event was not freed"
        );
    }

    #[test]
    fn reader_thread_sees_own_index_or_overwritten() {
        const LAST: u64 = 8;
        let log = Arc::new(Log::new(2).unwrap());
        let reader_log = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            let mut cursor = 1;
            while cursor <= LAST {
                let guard = reader_log.pin();
                match reader_log.get(cursor, &guard) {
                    Slot::Ready(event) => {
                        assert_eq!(event.index, cursor, "read another index's event");
                        cursor += 1;
                    }
                    // Only the last two indexes are never overwritten.
                    Slot::Overwritten => {
                        assert!(cursor <= LAST - 2, "index {cursor} reported overwritten");
                        cursor += 1;
                    }
                    Slot::Pending => std::thread::yield_now(),
                }
            }
        });

        for index in 1..=LAST {
            let guard = log.pin();
            assert!(log.publish(&restore_event(index), &guard));
            guard.flush();
        }

        reader.join().unwrap();
    }
}
