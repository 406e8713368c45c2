//! An in-memory, versioned resource store for control planes.
//!
//! TODO: guarantees, trade-offs and example.

#![warn(missing_docs)]

mod error;
mod log;
mod model;
mod store;
mod sync;
mod tree;
mod watch;

#[cfg(feature = "conformance")]
#[allow(missing_docs)] // TODO: document once the suite is written.
pub mod conformance;

/// The resource messages, generated from `proto/resource.proto` by prost.
#[allow(missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/watchstore.resource.rs"));
}

pub use error::Error;
pub use model::{MAX_FIELD_BYTES, MAX_NAME_BYTES, MAX_RESOURCE_BYTES, MAX_VERSION_BYTES, WILDCARD};
pub use pb::{Id, Resource, Tenancy, Type};
pub use store::{Snapshot, Store, StoreOptions, DEFAULT_LOG_CAPACITY};
pub use watch::{LagPolicy, Watch, WatchEvent, WatchOptions, WatchStart};
