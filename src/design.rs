//! How the store works: the root, the event log, the handoff and the
//! wake-ups. This module contains documentation only.
//!
//! # The root
//!
//! All contents live in one immutable `Root`: the commit index `n`, a
//! persistent ordered map (imbl's B-tree `OrdMap`) from key to
//! `Arc<Resource>`, an owner index, and the event of the commit that built
//! it. The root sits behind an arc-swap pointer. A read loads it once and
//! looks the key up; a snapshot is a clone of the `Arc`, so it costs O(1)
//! and never changes.
//!
//! # Commits
//!
//! A write or delete runs this loop under one crossbeam-epoch guard:
//!
//! 1. Load the current root `R` (index `n`).
//! 2. Publish `R`'s event (index `n`) to the log if it is not there yet.
//! 3. Check the CAS rules against `R` and build `R'`: index `n + 1`, the
//!    changed map (one path of the tree copied), and the event `n + 1`.
//! 4. Compare-and-swap the root from `R` to `R'`. On failure, start again.
//! 5. Publish event `n + 1` and wake sleeping watchers.
//!
//! Step 2 is what keeps writers from waiting for each other: the root
//! carries its own pending event, so any thread that sees an unpublished
//! event can publish it, and a writer descheduled between steps 4 and 5
//! stalls no other thread. It also gives the log's invariant: **when the root has
//! index `n`, every event below `n` is in the log** (or was already
//! overwritten by a later lap), and only event `n` may still be pending.
//! Watchers and resumes help with step 2 too, before they wait or compute
//! the oldest index held.
//!
//! # The event log
//!
//! A ring of `capacity` slots (a power of two); event `i` lives in slot
//! `i & (capacity - 1)` until event `i + capacity` replaces it. Each slot is
//! a crossbeam-epoch `Atomic<Event>`, and the event's own index is the
//! slot's sequence stamp. A reader that wants index `i` finds:
//!
//! - index `i`: the event;
//! - a smaller index, or nothing: `i` is not published yet;
//! - a larger index: `i` was overwritten, so the watcher has lagged.
//!
//! Publishing CASes the slot from what it holds to the new event, unless it
//! already holds index `i` or later. The test is "greater than or equal",
//! not "equal": a helper that loaded an old root could otherwise replace a
//! newer event with an older one and lose it. The publishing CAS is Release
//! and every slot load is Acquire, so a reader sees the event's fields. The
//! replaced event is handed to the epoch collector, which frees it after
//! every guard that could have loaded it is dropped. Each guard is held from
//! the slot load to the CAS that uses it, so an address cannot be freed and
//! reused in between (no ABA).
//!
//! The collector belongs to the store, so dropping the store frees the ring
//! and, once no thread caches a handle for it, every deferred event.
//!
//! # The handoff
//!
//! A watch loads the root once and takes both its snapshot and its start
//! cursor from it: snapshot at index `n`, first log index `n + 1`. The event
//! at `n + 1` was built from exactly this root by the commit that replaced
//! it, so it is the first change the snapshot lacks. Nothing can fall
//! between the two, and nothing can be in both.
//!
//! Consul's in-memory store makes a write visible in its tree before the
//! event reaches subscribers, and a subscriber that snapshots in that window
//! sees the write twice: in the snapshot and again live (a duplicate upsert,
//! a delete of something it never saw, or a step back to an older version).
//! Here the live stream starts where the snapshot ends by construction, so
//! no event is ever dropped for its index.
//!
//! # Following the log
//!
//! A following watch is a cursor and nothing else. Each call pins the epoch,
//! reads the slot for the cursor, clones the event out (two `Arc` clones at
//! most) and unpins, so a stalled watcher pins no memory and delays no
//! reclamation. When the slot is not yet published and the root's index has
//! reached the cursor, the watch publishes the root's event itself.
//!
//! # Wake-ups
//!
//! A watcher that finds nothing registers an event-listener listener, checks
//! again, and only then sleeps. Writers notify after publishing, never after
//! the root swap alone, so a woken watcher finds the event. event-listener 5
//! emits a SeqCst fence after registering a listener and another before
//! notifying, which rules out the lost wake-up where the publish happens
//! between "nothing to read" and "go to sleep".
//!
//! # Close and restore
//!
//! `close` sets a flag and wakes everyone. `restore` commits like a write,
//! with a `Restore` event in the log, then increments a restore counter and
//! wakes everyone. A watch records the counter before it loads its root, and
//! any change of the counter, or the `Restore` event in its stream, closes
//! it. The restore stores the new root before it counts, so a watch can
//! never pair a pre-restore snapshot with a post-restore count.
