//! The immutable root: commit index, persistent map, owner index, and the
//! event that produced it.

use std::ops::Bound;

use imbl::{OrdMap, OrdSet};

use crate::model::{Key, KeyRef, OwnerKey, Query};
use crate::pb::Resource;
use crate::sync::Arc;

/// The kind of a committed change.
#[derive(Clone, Debug)]
pub(crate) enum Change {
    /// A write stored this resource.
    Upsert(Arc<Resource>),
    /// A delete removed this resource (the last stored copy).
    Delete(Arc<Resource>),
    /// A restore replaced the whole contents.
    Restore,
}

/// One committed change and its commit index.
#[derive(Clone, Debug)]
pub(crate) struct Event {
    pub(crate) index: u64,
    pub(crate) change: Change,
    /// Turns a read of a freed event into a model failure.
    #[cfg(loom)]
    pub(crate) marker: crate::sync::EventMarker,
}

/// One immutable version of the store's contents.
///
/// A root is never changed after it is published: a commit builds a new
/// root that shares all unchanged nodes with this one.
#[derive(Clone, Debug, Default)]
pub(crate) struct Root {
    /// The commit index this root reflects: the number of writes, deletes
    /// and restores committed before it was built.
    pub(crate) index: u64,
    pub(crate) resources: OrdMap<Key, Arc<Resource>>,
    /// Keys of owned resources by owner (key and uid).
    pub(crate) owners: OrdMap<OwnerKey, OrdSet<Key>>,
    /// The event of the commit that built this root (`None` for a new
    /// store). Any thread that loads this root may publish it to the log.
    pub(crate) event: Option<Event>,
}

impl Root {
    /// Builds the root that follows `self` after storing `resource` under
    /// `key` in place of `previous`, the resource stored there now.
    pub(crate) fn with_upsert(
        &self,
        key: Key,
        resource: Arc<Resource>,
        previous: Option<&Resource>,
    ) -> Root {
        let index = self.index + 1;
        let mut owners = self.owners.clone();
        // Most updates keep their owner: leave the owner index alone then.
        if previous.is_none_or(|previous| previous.owner != resource.owner) {
            if let Some(previous) = previous {
                remove_owner_ref(&mut owners, previous, &key);
            }
            add_owner_ref(&mut owners, &resource, &key);
        }
        Root {
            index,
            resources: self.resources.update(key, Arc::clone(&resource)),
            owners,
            event: Some(Event {
                index,
                #[cfg(loom)]
                marker: crate::sync::EventMarker::new(),
                change: Change::Upsert(resource),
            }),
        }
    }

    /// Builds the root that follows `self` after deleting `previous`, the
    /// resource stored under `key`.
    pub(crate) fn with_delete(&self, key: KeyRef<'_>, previous: Arc<Resource>) -> Root {
        let index = self.index + 1;
        let mut owners = self.owners.clone();
        remove_owner_ref(&mut owners, &previous, &key);
        Root {
            index,
            resources: self.resources.without(&key),
            owners,
            event: Some(Event {
                index,
                #[cfg(loom)]
                marker: crate::sync::EventMarker::new(),
                change: Change::Delete(previous),
            }),
        }
    }

    /// Builds the root that replaces `self` with the given contents.
    pub(crate) fn with_contents(&self, resources: OrdMap<Key, Arc<Resource>>) -> Root {
        let index = self.index + 1;
        let mut owners = OrdMap::new();
        for (key, resource) in &resources {
            add_owner_ref(&mut owners, resource, key);
        }
        Root {
            index,
            resources,
            owners,
            event: Some(Event {
                index,
                #[cfg(loom)]
                marker: crate::sync::EventMarker::new(),
                change: Change::Restore,
            }),
        }
    }

    /// Collects up to `limit` resources matching `query` with keys after
    /// `from`, in key order, and returns the key to continue from.
    pub(crate) fn scan(
        &self,
        query: &Query,
        from: &Bound<Key>,
        limit: usize,
        out: &mut Vec<Arc<Resource>>,
    ) -> Option<Key> {
        let start = match from {
            Bound::Unbounded => Bound::Included(query.start_key()),
            bound => bound.clone(),
        };
        let mut taken = 0;
        for (key, resource) in self.resources.range((start, Bound::Unbounded)) {
            if query.is_past_end(key) {
                return None;
            }
            if query.matches(key) {
                out.push(Arc::clone(resource));
                taken += 1;
                if taken == limit {
                    return Some(key.clone());
                }
            }
        }
        None
    }
}

fn add_owner_ref(owners: &mut OrdMap<OwnerKey, OrdSet<Key>>, resource: &Resource, key: &Key) {
    if let Some(owner) = &resource.owner {
        owners
            .entry(OwnerKey::of(owner))
            .or_default()
            .insert(key.clone());
    }
}

fn remove_owner_ref<Q>(owners: &mut OrdMap<OwnerKey, OrdSet<Key>>, resource: &Resource, key: &Q)
where
    Q: equivalent::Comparable<Key> + ?Sized,
{
    let Some(owner) = &resource.owner else {
        return;
    };
    let owner_key = OwnerKey::of(owner);
    let Some(owned) = owners.get_mut(&owner_key) else {
        return;
    };
    owned.remove(key);
    if owned.is_empty() {
        owners.remove(&owner_key);
    }
}
