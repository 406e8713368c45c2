//! `Store`: reads, CAS writes and deletes, lists, snapshots and restore.

use std::collections::HashSet;
use std::ops::Bound;

use imbl::OrdMap;

use crate::error::{DisplayId, Error};
use crate::log::Log;
use crate::model::{self, Key, KeyRef, OwnerKey, Query};
use crate::pb::{Id, Resource, Tenancy, Type};
use crate::sync::{Arc, AtomicBool, AtomicU64, Notify, Ordering, RootCell};
use crate::tree::Root;
use crate::watch::{Watch, WatchOptions};

/// The default number of event log slots.
///
/// A watch whose snapshot takes longer to read than the log takes to fill
/// falls behind before it starts following. The ring should therefore cover
/// at least snapshot read time times write rate: 65,536 events cover about 65 ms of
/// snapshot reading at a million writes per second.
pub const DEFAULT_LOG_CAPACITY: usize = 1 << 16;

/// Settings of a [`Store`].
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct StoreOptions {
    /// Number of events the log keeps for watchers, a power of two. A
    /// watcher that falls further behind gets [`Error::Lagged`].
    pub log_capacity: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            log_capacity: DEFAULT_LOG_CAPACITY,
        }
    }
}

impl StoreOptions {
    /// Sets the number of event log slots (a power of two).
    pub fn log_capacity(mut self, log_capacity: usize) -> Self {
        self.log_capacity = log_capacity;
        self
    }
}

/// State shared by a store's handles and its watches.
pub(crate) struct Shared {
    pub(crate) root: RootCell<Root>,
    pub(crate) log: Log,
    /// Woken after every publication, close and restore.
    pub(crate) notify: Notify,
    /// Set once by [`Store::close`].
    pub(crate) closed: AtomicBool,
    /// Number of restores committed; a watch started under another count
    /// is closed.
    pub(crate) restores: AtomicU64,
    /// The highest index published to the log. Only the negative control
    /// of the loom models has it: its watches start from this counter, as
    /// Consul's subscriptions start from their buffer's head.
    #[cfg(watchstore_consul_order)]
    pub(crate) published: AtomicU64,
}

impl Shared {
    /// Publishes the event of `root` if it is not yet in the log, and wakes
    /// watchers if this call published it.
    pub(crate) fn help_publish(&self, root: &Root, guard: &crate::sync::epoch::Guard) {
        if let Some(event) = &root.event {
            if self.log.publish(event, guard) {
                // Release pairs with the control's Acquire load in
                // `Watch::start`, as a publication counter would in Consul.
                #[cfg(watchstore_consul_order)]
                self.published.fetch_max(event.index, Ordering::Release);
                self.notify.notify_all();
            }
        }
    }

    pub(crate) fn close(&self) {
        // Release pairs with the Acquire in `closed_or_restored`.
        self.closed.store(true, Ordering::Release);
        self.notify.notify_all();
    }

    /// Returns whether the store was closed, or restored since a watch
    /// that saw `restores_at_start` restores began.
    pub(crate) fn closed_or_restored(&self, restores_at_start: u64) -> bool {
        // Acquire pairs with the Release stores in `close` and `restore`,
        // which come after the root swap they announce.
        self.closed.load(Ordering::Acquire)
            || self.restores.load(Ordering::Acquire) != restores_at_start
    }

    /// Commits the root that `build` derives from the current root.
    ///
    /// `build` returns `Ok(None)` when there is nothing to commit. Writers
    /// never wait for each other: each attempt publishes the current root's
    /// event (so a writer descheduled after its swap stalls no other thread), then
    /// swaps the root with a compare-and-swap and retries on conflict.
    fn commit<T>(
        &self,
        mut build: impl FnMut(&Root) -> Result<Option<(Root, T)>, Error>,
    ) -> Result<Option<T>, Error> {
        loop {
            let guard = self.log.pin();
            let current = self.root.load_full();

            // Publish the current event before replacing the root that
            // carries it, so events enter the log in index order.
            self.help_publish(&current, &guard);

            let Some((next, output)) = build(&current)? else {
                return Ok(None);
            };
            let next = Arc::new(next);
            if self.root.compare_and_swap(&current, Arc::clone(&next)) {
                self.help_publish(&next, &guard);
                return Ok(Some(output));
            }
        }
    }
}

/// An in-memory, versioned resource store.
///
/// `Store` is a cheap handle: clones share the same contents. See the crate
/// documentation for the guarantees.
#[derive(Clone)]
pub struct Store {
    pub(crate) shared: Arc<Shared>,
    /// Shared by the store's handles only, not by its watches: when the
    /// last handle drops, no one can close the store any more, so it
    /// closes itself and blocked watches return `WatchClosed`.
    _close_on_drop: Arc<CloseOnDrop>,
}

struct CloseOnDrop(Arc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("index", &self.current_index())
            .field("log_capacity", &self.shared.log.capacity())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Creates an empty store with default options.
    pub fn new() -> Store {
        Store::with_options(StoreOptions::default()).expect("default options are valid")
    }

    /// Creates an empty store.
    ///
    /// Returns [`Error::InvalidArgument`] when `log_capacity` is not a power
    /// of two.
    pub fn with_options(options: StoreOptions) -> Result<Store, Error> {
        let log = Log::new(options.log_capacity)?;
        let shared = Arc::new(Shared {
            root: RootCell::new(Arc::new(Root::default())),
            log,
            notify: Notify::new(),
            closed: AtomicBool::new(false),
            restores: AtomicU64::new(0),
            #[cfg(watchstore_consul_order)]
            published: AtomicU64::new(0),
        });
        Ok(Store {
            _close_on_drop: Arc::new(CloseOnDrop(Arc::clone(&shared))),
            shared,
        })
    }

    /// Returns the commit index of the current contents (0 for a new store).
    pub fn current_index(&self) -> u64 {
        self.shared.root.load().index
    }

    /// Reads the resource stored under `id`'s key.
    ///
    /// An empty `id.uid` matches any stored uid. Returns
    /// [`Error::NotFound`] when nothing is stored or the uid differs, and
    /// [`Error::GroupVersionMismatch`] (carrying the stored resource) when
    /// the group version differs.
    pub fn read(&self, id: &Id) -> Result<Arc<Resource>, Error> {
        model::check_read_id(id)?;
        // NOTE: a reader that drops the last guard of a replaced root frees
        // that root's nodes here, which sets the read p99 under a writer.
        let root = self.shared.root.load();
        read_in(&root, id)
    }

    /// Writes `resource` if its `version` matches the stored version, and
    /// returns the stored copy with its new version.
    ///
    /// An empty version means "create only". The checks run in this order:
    /// nothing stored and a version given is [`Error::CasFailure`]; a stored
    /// resource with another uid (an empty uid counts as another) is
    /// [`Error::WrongUid`]; a stored resource with another version is
    /// [`Error::CasFailure`]. A create with an empty uid is
    /// [`Error::InvalidArgument`], because no later write or delete could
    /// match it. `resource` itself is not modified.
    pub fn write_cas(&self, resource: &Resource) -> Result<Arc<Resource>, Error> {
        let id = model::check_resource(resource)?;
        let key_ref = KeyRef::of(id);
        let stored = self.shared.commit(|root| {
            let (key, previous) = match root.resources.get_key_value(&key_ref) {
                None if !resource.version.is_empty() => {
                    return Err(Error::CasFailure {
                        id: Box::new(id.clone()),
                        expected: resource.version.clone(),
                        stored: None,
                    })
                }
                None if id.uid.is_empty() => return Err(Error::invalid(
                    "id.uid",
                    "is empty; a create needs a uid to tell this life of the name from later ones",
                )),
                None => (Key::of(id), None),
                // An update reuses the stored key: cloning it costs one
                // reference count instead of five string allocations.
                Some((stored_key, existing)) => {
                    check_cas(existing, id, &resource.version)?;
                    (stored_key.clone(), Some(&**existing))
                }
            };
            // NOTE: an update walks the tree twice, once in `get_key_value`
            // and again in `with_upsert`; in profiles that is about a fifth
            // of a CAS write.
            let mut copy = resource.clone();
            copy.version = (root.index + 1).to_string();
            let copy = Arc::new(copy);
            Ok(Some((
                root.with_upsert(key, Arc::clone(&copy), previous),
                copy,
            )))
        })?;
        Ok(stored.expect("an upsert always commits"))
    }

    /// Deletes the resource stored under `id`'s key if its version is
    /// `version`.
    ///
    /// Deleting a missing resource, or one whose uid differs from `id.uid`
    /// (an empty uid differs too), succeeds and changes nothing. A version
    /// mismatch is [`Error::CasFailure`]. The group version is ignored.
    pub fn delete_cas(&self, id: &Id, version: &str) -> Result<(), Error> {
        model::check_delete(id, version)?;
        let key = KeyRef::of(id);
        self.shared.commit(|root| {
            let Some(existing) = root.resources.get(&key) else {
                return Ok(None);
            };
            if id.uid.is_empty() || existing_uid(existing) != id.uid {
                return Ok(None);
            }
            if existing.version != version {
                return Err(Error::CasFailure {
                    id: Box::new(id.clone()),
                    expected: version.to_owned(),
                    stored: Some(existing.version.clone()),
                });
            }
            Ok(Some((root.with_delete(key, Arc::clone(existing)), ())))
        })?;
        Ok(())
    }

    /// Lists resources of `ty`'s group and kind (any group version) whose
    /// tenancy fields equal `tenancy`'s or are matched by the wildcard
    /// `"*"`, and whose name starts with `name_prefix`, in key order.
    pub fn list(
        &self,
        ty: &Type,
        tenancy: &Tenancy,
        name_prefix: &str,
    ) -> Result<Vec<Arc<Resource>>, Error> {
        let query = Query::new(ty, tenancy, name_prefix)?;
        let root = self.shared.root.load();
        let mut found = Vec::new();
        root.scan(&query, &Bound::Unbounded, usize::MAX, &mut found);
        Ok(found)
    }

    /// Lists resources whose owner is `owner` (uid included, group version
    /// ignored), in key order.
    pub fn list_by_owner(&self, owner: &Id) -> Result<Vec<Arc<Resource>>, Error> {
        model::check_owner_id(owner)?;
        let root = self.shared.root.load();
        let Some(owned) = root.owners.get(&OwnerKey::of(owner)) else {
            return Ok(Vec::new());
        };
        Ok(owned
            .iter()
            .filter_map(|key| root.resources.get(key).cloned())
            .collect())
    }

    /// Takes a point-in-time view of the whole store in O(1).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            root: self.shared.root.load_full(),
        }
    }

    /// Replaces the whole contents with `resources`, and returns the commit
    /// index of the restore.
    ///
    /// The restore is one commit: readers see the old contents or the new,
    /// never a mix. Each restored resource is stored with the restore's
    /// index as its version, because versions from another store's history
    /// are not valid CAS tokens here. Every open watch returns
    /// [`Error::WatchClosed`], and so may a watch that starts while the
    /// restore runs, even if its snapshot already shows the restored
    /// contents. A watch resumed from an index before the restore delivers
    /// the events up to the restore, then `WatchClosed`. On invalid input (a resource that
    /// `write_cas` would reject, an empty uid, or two resources with one key)
    /// nothing changes.
    pub fn restore<I>(&self, resources: I) -> Result<u64, Error>
    where
        I: IntoIterator<Item = Resource>,
    {
        let mut contents = Vec::new();
        let mut keys = HashSet::new();
        for (position, resource) in resources.into_iter().enumerate() {
            let id = model::check_resource(&resource).map_err(|error| match error {
                Error::InvalidArgument { field, reason } => Error::InvalidArgument {
                    field,
                    reason: format!("{reason} (resource {position} of the restore)"),
                },
                other => other,
            })?;
            if id.uid.is_empty() {
                return Err(Error::invalid(
                    "id.uid",
                    format!(
                        "is empty for {}; restored resources need a uid",
                        DisplayId(id)
                    ),
                ));
            }
            let key = Key::of(id);
            if !keys.insert(key.clone()) {
                return Err(Error::invalid(
                    "resources",
                    format!(
                        "contain {} twice (same group, kind, tenancy and name); keys must be unique",
                        DisplayId(id)
                    ),
                ));
            }
            contents.push((key, resource));
        }

        let index = self
            .shared
            .commit(|root| {
                let version = (root.index + 1).to_string();
                let map: OrdMap<Key, Arc<Resource>> = contents
                    .iter()
                    .map(|(key, resource)| {
                        let mut copy = resource.clone();
                        copy.version.clone_from(&version);
                        (key.clone(), Arc::new(copy))
                    })
                    .collect();
                let next = root.with_contents(map);
                let index = next.index;
                Ok(Some((next, index)))
            })?
            .expect("a restore always commits");

        // Release pairs with the Acquire in `closed_or_restored`, so a watch
        // that loads the new count also loads the restored root or a later one.
        self.shared.restores.fetch_add(1, Ordering::Release);
        self.shared.notify.notify_all();
        Ok(index)
    }

    /// Closes every open watch: each returns [`Error::WatchClosed`] from
    /// its next call, and blocked ones wake at once. Later watches fail with
    /// the same error. Reads and writes keep working. Dropping the last
    /// `Store` handle closes the store the same way, so a watch never
    /// blocks on a store that no handle can write to.
    pub fn close(&self) {
        self.shared.close();
    }

    /// Watches resources matching the query of [`Store::list`]: a snapshot
    /// of upserts, one `EndOfSnapshot`, then every later matching change.
    pub fn watch_list(
        &self,
        ty: &Type,
        tenancy: &Tenancy,
        name_prefix: &str,
    ) -> Result<Watch, Error> {
        self.watch_list_with(ty, tenancy, name_prefix, WatchOptions::default())
    }

    /// Watches like [`Store::watch_list`], with a start point and a lag
    /// policy.
    pub fn watch_list_with(
        &self,
        ty: &Type,
        tenancy: &Tenancy,
        name_prefix: &str,
        options: WatchOptions,
    ) -> Result<Watch, Error> {
        let query = Query::new(ty, tenancy, name_prefix)?;
        Watch::start(Arc::clone(&self.shared), query, options)
    }
}

/// Applies the read rules to one root.
pub(crate) fn read_in(root: &Root, id: &Id) -> Result<Arc<Resource>, Error> {
    let not_found = || Error::NotFound {
        id: Box::new(id.clone()),
    };
    let stored = root.resources.get(&KeyRef::of(id)).ok_or_else(not_found)?;
    if !id.uid.is_empty() && existing_uid(stored) != id.uid {
        return Err(not_found());
    }
    let requested_version = id.r#type.as_ref().map_or("", |t| t.group_version.as_str());
    let stored_version = stored
        .id
        .as_ref()
        .and_then(|id| id.r#type.as_ref())
        .map_or("", |t| t.group_version.as_str());
    if requested_version != stored_version {
        return Err(Error::GroupVersionMismatch {
            requested: Box::new(id.r#type.clone().unwrap_or_default()),
            stored: Arc::clone(stored),
        });
    }
    Ok(Arc::clone(stored))
}

fn existing_uid(resource: &Resource) -> &str {
    resource.id.as_ref().map_or("", |id| id.uid.as_str())
}

/// Checks the uid and version rules of a write over a stored resource.
fn check_cas(existing: &Resource, id: &Id, version: &str) -> Result<(), Error> {
    let stored_uid = existing_uid(existing);
    if id.uid.is_empty() || id.uid != stored_uid {
        return Err(Error::WrongUid {
            id: Box::new(id.clone()),
            stored_uid: stored_uid.to_owned(),
        });
    }
    if version.is_empty() || version != existing.version {
        return Err(Error::CasFailure {
            id: Box::new(id.clone()),
            expected: version.to_owned(),
            stored: Some(existing.version.clone()),
        });
    }
    Ok(())
}

/// A point-in-time view of the whole store.
///
/// Holding it keeps that version's resources alive; it never changes.
#[derive(Clone)]
pub struct Snapshot {
    root: Arc<Root>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("index", &self.root.index)
            .field("len", &self.root.resources.len())
            .finish()
    }
}

impl Snapshot {
    /// Returns the commit index this snapshot reflects.
    pub fn index(&self) -> u64 {
        self.root.index
    }

    /// Returns the number of resources in the snapshot.
    pub fn len(&self) -> usize {
        self.root.resources.len()
    }

    /// Returns whether the snapshot contains no resources.
    pub fn is_empty(&self) -> bool {
        self.root.resources.is_empty()
    }

    /// Iterates over every resource in key order.
    pub fn iter(&self) -> impl Iterator<Item = Arc<Resource>> + '_ {
        self.root.resources.values().cloned()
    }

    /// Reads one resource as [`Store::read`] would have at this snapshot.
    pub fn read(&self, id: &Id) -> Result<Arc<Resource>, Error> {
        model::check_read_id(id)?;
        read_in(&self.root, id)
    }
}
