//! The store a Rust developer would write by hand: a `BTreeMap` under a
//! `std::sync::RwLock`, plus a tokio broadcast channel for watches.
//!
//! A CAS write takes the write lock, checks the version, inserts and sends
//! the event before it unlocks, so events leave in commit order. A watch
//! takes the read lock, subscribes, clones the whole map and unlocks. So it
//! receives no event twice, and misses none until it lags a full channel
//! behind.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use tokio::sync::broadcast;
use watchstore::{Id, Resource};

use super::fixtures::{
    check_cas, check_read, id_and_key, stored_copy, Filter, Key, PeerError, PeerEvent,
};

struct State {
    /// Commit index of the last write.
    index: u64,
    resources: BTreeMap<Key, Arc<Resource>>,
}

/// `RwLock<BTreeMap<Key, Arc<Resource>>>` with a broadcast channel of events.
pub struct LockedBTreeStore {
    state: RwLock<State>,
    events: broadcast::Sender<PeerEvent>,
}

impl LockedBTreeStore {
    /// Creates an empty store whose channel has room for `channel_capacity` events.
    pub fn new(channel_capacity: usize) -> LockedBTreeStore {
        let (events, _) = broadcast::channel(channel_capacity.max(1));
        LockedBTreeStore {
            state: RwLock::new(State {
                index: 0,
                resources: BTreeMap::new(),
            }),
            events,
        }
    }

    /// Writes `resource` if its version matches the stored one (empty means
    /// create only), with watchstore's checks; returns the stored copy.
    pub fn write_cas(&self, resource: &Resource) -> Result<Arc<Resource>, PeerError> {
        let (id, key) = id_and_key(resource)?;
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);

        check_cas(resource, id, state.resources.get(&key))?;
        state.index += 1;
        let index = state.index;
        let stored = stored_copy(resource, index);
        state.resources.insert(key, Arc::clone(&stored));

        // `send` fails only when no receiver exists, which is not an error here.
        let _ = self.events.send(PeerEvent::Upsert {
            index,
            resource: Arc::clone(&stored),
        });
        Ok(stored)
    }

    /// Reads the resource under `id` with the read lock held.
    pub fn read(&self, id: &Id) -> Result<Arc<Resource>, PeerError> {
        let key = Key::of(id).ok_or(PeerError::InvalidArgument { field: "id.type" })?;
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        check_read(id, state.resources.get(&key))
    }

    /// Returns the commit index of the last write.
    pub fn current_index(&self) -> u64 {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .index
    }

    /// Starts a watch: a clone of the map taken under the read lock, then
    /// every later event from the broadcast channel.
    pub fn watch(&self, filter: &Filter) -> LockedBTreeWatch {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let receiver = self.events.subscribe();
        let snapshot = state.resources.clone();
        let index = state.index;
        drop(state);

        LockedBTreeWatch {
            filter: filter.clone(),
            snapshot: snapshot.into_iter(),
            end_of_snapshot_sent: false,
            snapshot_index: index,
            receiver,
        }
    }
}

/// Failure of a `LockedBTreeWatch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockedWatchError {
    /// The watch fell behind and this many events were overwritten unread.
    Lagged(u64),
    /// The store was dropped.
    Closed,
}

/// A watch on the `RwLock<BTreeMap>` store.
pub struct LockedBTreeWatch {
    filter: Filter,
    snapshot: std::collections::btree_map::IntoIter<Key, Arc<Resource>>,
    end_of_snapshot_sent: bool,
    snapshot_index: u64,
    receiver: broadcast::Receiver<PeerEvent>,
}

impl LockedBTreeWatch {
    /// Blocks until the next matching event. Must not be called from inside
    /// a tokio runtime.
    pub fn next(&mut self) -> Result<PeerEvent, LockedWatchError> {
        for (_, resource) in self.snapshot.by_ref() {
            if self.filter.matches(&resource) {
                return Ok(PeerEvent::Upsert {
                    index: self.snapshot_index,
                    resource,
                });
            }
        }
        if !self.end_of_snapshot_sent {
            self.end_of_snapshot_sent = true;
            return Ok(PeerEvent::EndOfSnapshot {
                index: self.snapshot_index,
            });
        }
        loop {
            let event = self.receiver.blocking_recv().map_err(|error| match error {
                broadcast::error::RecvError::Lagged(missed) => LockedWatchError::Lagged(missed),
                broadcast::error::RecvError::Closed => LockedWatchError::Closed,
            })?;
            if let PeerEvent::Upsert { resource, .. } = &event {
                if !self.filter.matches(resource) {
                    continue;
                }
            }
            return Ok(event);
        }
    }
}
