//! The one error type of the store.

use std::fmt;
use std::sync::Arc;

use crate::pb::{Id, Resource, Type};

/// Errors returned by [`Store`](crate::Store) and [`Watch`](crate::Watch).
///
/// Every variant carries the values involved, so a caller can act on it
/// without parsing the message. Ids are boxed to keep `Result`s small on
/// the read path.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// Nothing is stored under the id's key, or the stored resource has
    /// another uid.
    NotFound {
        /// The id that was requested.
        id: Box<Id>,
    },
    /// The expected version does not match the stored one.
    CasFailure {
        /// The id of the resource being written or deleted.
        id: Box<Id>,
        /// The version the caller expected; empty means "not stored yet".
        expected: String,
        /// The stored version, or `None` when nothing is stored.
        stored: Option<String>,
    },
    /// A write names a uid other than the stored resource's uid.
    WrongUid {
        /// The id of the rejected write.
        id: Box<Id>,
        /// The uid of the stored resource.
        stored_uid: String,
    },
    /// A read asked for a group version other than the stored one.
    GroupVersionMismatch {
        /// The type that was requested.
        requested: Box<Type>,
        /// The stored resource, so the caller can convert it.
        stored: Arc<Resource>,
    },
    /// The backend cannot return a consistent result, as a backend that
    /// lost quorum would. The in-memory store never returns it.
    Inconsistent,
    /// The watch was closed by [`Store::close`](crate::Store::close) or
    /// [`Store::restore`](crate::Store::restore).
    WatchClosed,
    /// The watcher's next event was overwritten in the event log before the
    /// watcher read it.
    Lagged {
        /// The index the watcher needed next.
        next: u64,
        /// The oldest index the log still held when the lag was detected.
        oldest: u64,
    },
    /// A resumed watch asked for an index the event log no longer holds.
    Compacted {
        /// The first index the resumed watch needed.
        requested: u64,
        /// The oldest index the log still holds.
        oldest: u64,
    },
    /// An argument is missing or malformed; the store was not changed.
    InvalidArgument {
        /// The field at fault, such as `id.type.kind`.
        field: &'static str,
        /// The problem with the value and the value expected.
        reason: String,
    },
}

impl Error {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }
}

/// Formats an id as `group.group_version.kind/partition/namespace/name@uid`.
pub(crate) struct DisplayId<'a>(pub(crate) &'a Id);

impl fmt::Display for DisplayId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self.0;
        match &id.r#type {
            Some(t) => write!(f, "{}", DisplayType(t))?,
            None => f.write_str("<no type>")?,
        }
        match &id.tenancy {
            Some(t) => write!(f, "/{}/{}", t.partition, t.namespace)?,
            None => f.write_str("//")?,
        }
        write!(f, "/{}", id.name)?;
        if !id.uid.is_empty() {
            write!(f, "@{}", id.uid)?;
        }
        Ok(())
    }
}

/// Formats a type as `group.group_version.kind`.
pub(crate) struct DisplayType<'a>(pub(crate) &'a Type);

impl fmt::Display for DisplayType<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.0;
        write!(f, "{}.{}.{}", t.group, t.group_version, t.kind)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound { id } => write!(f, "resource {} not found", DisplayId(id)),
            Error::CasFailure {
                id,
                expected,
                stored: Some(stored),
            } => write!(
                f,
                "CAS failed on {}: expected version {expected:?}, stored version is {stored:?}; \
                 read the resource again and retry with its version",
                DisplayId(id)
            ),
            Error::CasFailure {
                id,
                expected,
                stored: None,
            } => write!(
                f,
                "CAS failed on {}: expected version {expected:?}, but nothing is stored; \
                 write with an empty version to create it",
                DisplayId(id)
            ),
            Error::WrongUid { id, stored_uid } => write!(
                f,
                "write to {} has uid {:?}, but the stored resource has uid {stored_uid:?}",
                DisplayId(id),
                id.uid
            ),
            Error::GroupVersionMismatch { requested, stored } => {
                let stored_version = stored
                    .id
                    .as_ref()
                    .and_then(|id| id.r#type.as_ref())
                    .map(|t| t.group_version.as_str())
                    .unwrap_or_default();
                write!(
                    f,
                    "requested group version {:?} of {}, but the stored resource is group version {stored_version:?}",
                    requested.group_version,
                    DisplayType(requested)
                )
            }
            Error::Inconsistent => f.write_str("the store cannot return a consistent result; retry later"),
            Error::WatchClosed => {
                f.write_str("watch closed because the store was closed or restored")
            }
            Error::Lagged { next, oldest } => write!(
                f,
                "watcher lagged: event {next} was overwritten and the oldest event held is {oldest}; \
                 start a new watch"
            ),
            Error::Compacted { requested, oldest } => write!(
                f,
                "cannot resume at index {requested}: the oldest event held is {oldest}; \
                 start a new watch with a snapshot"
            ),
            Error::InvalidArgument { field, reason } => {
                write!(f, "invalid argument {field}: {reason}")
            }
        }
    }
}

impl std::error::Error for Error {}
