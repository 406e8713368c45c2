//! The floor for publishing into a ring log: one `fetch_add` to claim an
//! index and one store into a preallocated slot, with nothing else.
//!
//! No reader can tell a half-written slot from a full one and nothing is
//! reclaimed, so this is not a usable log. It bounds from below what any
//! ring publish can cost on this machine.

use std::sync::atomic::{AtomicU64, Ordering};

/// Preallocated ring of `AtomicU64` slots with an atomic tail counter.
pub struct BareRing {
    slots: Box<[AtomicU64]>,
    /// Next index to claim; only `publish` writes it.
    tail: AtomicU64,
    mask: u64,
}

impl BareRing {
    /// Allocates a ring of `capacity` slots, rounded up to a power of two.
    pub fn new(capacity: usize) -> BareRing {
        let capacity = capacity.max(1).next_power_of_two();
        BareRing {
            slots: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
            tail: AtomicU64::new(0),
            mask: capacity as u64 - 1,
        }
    }

    /// Claims the next index and stores `value` in its slot; returns the index.
    #[inline]
    pub fn publish(&self, value: u64) -> u64 {
        // Relaxed is enough to claim a unique index. The Release store is what
        // a reader of the slot would pair an Acquire load with.
        let index = self.tail.fetch_add(1, Ordering::Relaxed);
        self.slots[(index & self.mask) as usize].store(value, Ordering::Release);
        index
    }

    /// Loads the value last stored at `index`'s slot.
    pub fn load(&self, index: u64) -> u64 {
        self.slots[(index & self.mask) as usize].load(Ordering::Acquire)
    }
}
