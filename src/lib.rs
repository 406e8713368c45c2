//! An in-memory, versioned resource store for control planes.
//!
//! A [`Store`] stores protobuf [`Resource`]s shaped like Consul's
//! `pbresource` messages. Writers change them with compare-and-swap on a
//! version; readers read and list without taking a lock; watchers receive a
//! consistent snapshot followed by every later change, exactly once and in
//! commit order.
//!
//! # Example
//!
//! ```
//! use watchstore::{Error, Id, Resource, Store, Tenancy, Type, WatchEvent};
//!
//! let store = Store::new();
//! let ty = Type { group: "demo".into(), group_version: "v1".into(), kind: "Service".into() };
//! let tenancy = Tenancy { partition: "default".into(), namespace: "default".into() };
//! let id = Id { uid: "u1".into(), name: "api".into(), r#type: Some(ty.clone()), tenancy: Some(tenancy.clone()) };
//!
//! // An empty version means "create only".
//! let created = store.write_cas(&Resource { id: Some(id.clone()), ..Default::default() })?;
//! assert_eq!(created.version, "1");
//!
//! // A write with a stale version is rejected and changes nothing.
//! let stale = Resource { id: Some(id.clone()), version: "0".into(), ..Default::default() };
//! assert!(matches!(store.write_cas(&stale), Err(Error::CasFailure { .. })));
//!
//! // A watch sees the snapshot, then every later change.
//! let mut watch = store.watch_list(&ty, &tenancy, "")?;
//! assert!(matches!(watch.next()?, WatchEvent::Upsert { index: 1, .. }));
//! assert_eq!(watch.next()?, WatchEvent::EndOfSnapshot { index: 1 });
//! store.delete_cas(&id, &created.version)?;
//! assert!(matches!(watch.next()?, WatchEvent::Delete { index: 2, .. }));
//! assert!(matches!(store.read(&id), Err(Error::NotFound { .. })));
//! # Ok::<(), Error>(())
//! ```
//!
//! # Guarantees
//!
//! - **Commit index.** One global index counts committed writes, deletes
//!   and restores, one each. A stored resource's version is the decimal
//!   index of the write that stored it. Rejected writes and no-op deletes do
//!   not advance it.
//! - **Linearizable writes.** Each commit is one compare-and-swap of the
//!   root, so writes and deletes take effect in index order, and every CAS
//!   check runs against the contents at the index just below its own.
//! - **Reads.** [`Store::read`], [`Store::list`], [`Store::list_by_owner`]
//!   and [`Store::snapshot`] each load the root once: they see one commit
//!   index, never a mix of two, and take no lock.
//! - **Watches.** [`Store::watch_list`] delivers one upsert per matching
//!   resource at some index `I`, then [`WatchEvent::EndOfSnapshot`] with
//!   `I`, then every matching upsert and delete with an index above `I`, in
//!   index order. The snapshot and the first log index come from the same
//!   root, so a change is never both in the snapshot and in the live stream,
//!   and never in neither. No index filtering is involved.
//! - **Monotonic reads.** An event is published only after its root is
//!   visible, so a [`Store::read`] made after a watch returned index `n`
//!   sees index `n` or later.
//! - **Resume.** [`WatchStart::After`]`(j)` skips the snapshot and delivers
//!   every matching change above `j`, if the log still holds `j + 1`;
//!   otherwise it fails with [`Error::Compacted`] naming the oldest index
//!   held.
//! - **Lag.** The log is a ring of [`StoreOptions::log_capacity`] events
//!   and writers never wait for watchers. A watcher whose next event was
//!   overwritten gets [`Error::Lagged`], never a wrong event; with
//!   [`LagPolicy::Reset`] it gets [`WatchEvent::Reset`] and a fresh
//!   snapshot instead.
//! - **Close and restore.** [`Store::close`] and [`Store::restore`] make
//!   every open watch return [`Error::WatchClosed`] from its next call,
//!   waking blocked ones. No event from before a restore follows it.
//!
//! # Trade-offs and limits
//!
//! - **Memory.** The log keeps the last `log_capacity` events and the
//!   resources they reference, whether or not anyone watches. A held
//!   [`Snapshot`] or a watch still reading its snapshot keeps that version
//!   of the tree alive; unchanged nodes are shared with the current tree.
//! - **Writes retry under contention.** A writer whose root CAS loses
//!   rebuilds its change on the new root and tries again, so a write costs
//!   more as writers contend for the same root. No writer ever waits for
//!   another to finish.
//! - **Wake-ups.** A watcher that finds nothing to read sleeps on an
//!   [`event-listener`](https://docs.rs/event-listener) event. Its
//!   registration and a writer's notification then take that crate's short
//!   internal lock; with no sleeping watcher, a notification costs one fence
//!   and one load.
//! - **Fan-out.** Every watcher reads the shared log and filters events
//!   itself, so a watcher of a narrow query still reads every event.
//! - **Epoch handles.** Each thread keeps one crossbeam-epoch handle per
//!   store it has used, found by a linear search, so a thread that uses
//!   thousands of live stores pays for it on every operation. Each handle
//!   buffers up to 64 replaced events (crossbeam-epoch's per-thread bag)
//!   until the thread pins again, so an idle thread that wrote keeps up to
//!   64 old resource versions alive beyond the ring. A thread that used a
//!   store that is now dropped keeps that store's last deferred events until
//!   the thread exits or registers a handle for another store.
//! - **Input limits.** Names up to [`MAX_NAME_BYTES`], other identity
//!   strings up to [`MAX_FIELD_BYTES`], versions and generations up to
//!   [`MAX_VERSION_BYTES`], resources up to [`MAX_RESOURCE_BYTES`] encoded
//!   (without the version), logs up to [`MAX_LOG_CAPACITY`] slots. Anything
//!   else is rejected with [`Error::InvalidArgument`] before the store
//!   changes. A missing tenancy is stored as an empty partition and
//!   namespace, and names are not checked for characters beyond their
//!   length.
//!
//! The algorithm and its memory orderings are described in [`design`].

#![warn(missing_docs)]

#[cfg(not(loom))]
#[doc(hidden)]
pub mod bench_support;
pub mod design;
mod error;
mod log;
mod model;
mod store;
mod sync;
mod tree;
mod watch;

#[cfg(feature = "conformance")]
pub mod conformance;

/// The resource messages, generated from `proto/resource.proto` by prost.
#[allow(missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/watchstore.resource.rs"));
}

// Compiles and runs the README's example as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub use error::Error;
pub use log::MAX_LOG_CAPACITY;
pub use model::{MAX_FIELD_BYTES, MAX_NAME_BYTES, MAX_RESOURCE_BYTES, MAX_VERSION_BYTES, WILDCARD};
pub use pb::{Id, Resource, Tenancy, Type};
pub use store::{Snapshot, Store, StoreOptions, DEFAULT_LOG_CAPACITY};
pub use watch::{LagPolicy, Watch, WatchEvent, WatchOptions, WatchStart};
