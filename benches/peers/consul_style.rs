//! The design of Consul's in-memory resource store, rebuilt in Rust for
//! comparison.
//!
//! Sources: `internal/storage/inmem/{store,watch}.go` and
//! `agent/consul/stream/{event_publisher,event_buffer,event_snapshot}.go` in
//! the hashicorp/consul repository. Consul's in-memory store commits a write
//! like this: take `eventLock`, commit a go-memdb transaction (an immutable
//! radix tree), send the event on the publisher's buffered channel (64
//! slots), release the lock. One publisher goroutine appends each event
//! to an unbounded linked list and closes a channel on the previous item to
//! wake readers. A watch holds the publisher lock while it builds its whole
//! snapshot as a batch of events, then follows the list and drops events
//! whose index it has already seen.
//!
//! The pieces map as follows:
//! - go-memdb tree: `imbl::OrdMap` in an immutable `Root`, swapped with `ArcSwap`;
//! - `eventLock`: `event_lock`, a `Mutex` that also owns the channel sender;
//! - `publishCh`: `std::sync::mpsc::sync_channel(64)` to one publisher thread;
//! - event buffer: `EventNode`s whose `next` is set once, with a condition
//!   variable in place of the closed Go channel.
//!
//! Differences kept on purpose: Consul publishes each event twice (to a
//! wildcard and a tenancy subject) and caches a built snapshot for 10 s per
//! subject. This rebuild keeps one subject and no cache, so every watch pays
//! for its own snapshot. Like Consul, the publisher drops events while no
//! watch is subscribed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use arc_swap::ArcSwap;
use imbl::OrdMap;
use watchstore::{Id, Resource};

use super::fixtures::{
    check_cas, check_read, id_and_key, stored_copy, Filter, Key, PeerError, PeerEvent,
};

/// Slots in the channel from writers to the publisher thread, as in Consul's
/// `EventPublisher`.
pub const PUBLISH_CHANNEL_SLOTS: usize = 64;

/// Immutable state swapped in by each commit.
struct Root {
    /// Commit index of the last write reflected here.
    index: u64,
    resources: OrdMap<Key, Arc<Resource>>,
}

/// Publisher state, guarded by one mutex like Consul's `EventPublisher.lock`.
struct Topic {
    /// Last appended node; new events are linked after it.
    tail: Arc<EventNode>,
    /// Open watches; while zero, the publisher drops events.
    subscribers: usize,
    /// Index of the last event the publisher handled, appended or dropped.
    /// Written under the topic lock, read without it by `flush`.
    handled_index: Arc<AtomicU64>,
}

/// One item of the unbounded event list.
struct EventNode {
    /// `None` only for the sentinel that a new list starts with.
    event: Option<PeerEvent>,
    link: Link,
}

/// The link to the next node and the means to wait for it.
struct Link {
    /// Set once by the publisher, before `state` is locked to wake waiters.
    next: OnceLock<Arc<EventNode>>,
    state: Mutex<LinkState>,
    wake: Condvar,
}

struct LinkState {
    /// Threads blocked in `wait_next`; the publisher notifies only when
    /// there are some, as closing a Go channel without receivers is cheap.
    waiters: usize,
    /// Set when the store is dropped and no further node will follow.
    closed: bool,
}

impl EventNode {
    fn new(event: Option<PeerEvent>) -> EventNode {
        EventNode {
            event,
            link: Link {
                next: OnceLock::new(),
                state: Mutex::new(LinkState {
                    waiters: 0,
                    closed: false,
                }),
                wake: Condvar::new(),
            },
        }
    }
}

impl Drop for EventNode {
    /// Drops the chain behind this node in a loop: the default recursive drop
    /// of a million-node list would overflow the stack.
    fn drop(&mut self) {
        let mut next = self.link.next.take();
        while let Some(node) = next {
            next = match Arc::try_unwrap(node) {
                Ok(mut owned) => owned.link.next.take(),
                Err(_) => None,
            };
        }
    }
}

impl Link {
    /// Sets `node` as the next node and wakes the readers waiting for it.
    fn append(&self, node: Arc<EventNode>) {
        // Only the publisher thread appends, and always to the current tail,
        // which it then replaces, so `set` cannot find a value already there.
        let _ = self.next.set(node);
        let state = lock(&self.state);
        if state.waiters > 0 {
            self.wake.notify_all();
        }
    }

    /// Marks the list as ended after this link and wakes all waiters.
    fn close(&self) {
        let mut state = lock(&self.state);
        state.closed = true;
        self.wake.notify_all();
    }

    /// Blocks until the next node is linked; `None` once the list is closed.
    fn wait_next(&self) -> Option<Arc<EventNode>> {
        if let Some(next) = self.next.get() {
            return Some(Arc::clone(next));
        }
        let mut state = lock(&self.state);
        loop {
            // `append` sets `next` before it locks `state`, so a check under
            // the lock cannot miss an append that has already notified.
            if let Some(next) = self.next.get() {
                return Some(Arc::clone(next));
            }
            if state.closed {
                return None;
            }
            state.waiters += 1;
            state = self
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.waiters -= 1;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The Consul-style store: writer lock, swapped persistent map, a publisher
/// thread and an unbounded event list.
pub struct ConsulStyleStore {
    /// Writer lock, held across commit and send; `None` only during drop.
    event_lock: Mutex<Option<SyncSender<PeerEvent>>>,
    root: ArcSwap<Root>,
    topic: Arc<Mutex<Topic>>,
    publisher: Option<JoinHandle<()>>,
}

impl Default for ConsulStyleStore {
    fn default() -> Self {
        ConsulStyleStore::new()
    }
}

impl ConsulStyleStore {
    /// Creates an empty store and starts its publisher thread.
    pub fn new() -> ConsulStyleStore {
        let (sender, receiver) = mpsc::sync_channel(PUBLISH_CHANNEL_SLOTS);
        let topic = Arc::new(Mutex::new(Topic {
            tail: Arc::new(EventNode::new(None)),
            subscribers: 0,
            handled_index: Arc::new(AtomicU64::new(0)),
        }));
        let publisher_topic = Arc::clone(&topic);
        let publisher = thread::Builder::new()
            .name("consul-style-publisher".to_owned())
            .spawn(move || run_publisher(&receiver, &publisher_topic))
            .expect("spawning the publisher thread failed");
        ConsulStyleStore {
            event_lock: Mutex::new(Some(sender)),
            root: ArcSwap::from_pointee(Root {
                index: 0,
                resources: OrdMap::new(),
            }),
            topic,
            publisher: Some(publisher),
        }
    }

    /// Writes `resource` if its version matches the stored one (empty means
    /// create only), with watchstore's checks; returns the stored copy.
    pub fn write_cas(&self, resource: &Resource) -> Result<Arc<Resource>, PeerError> {
        let (id, key) = id_and_key(resource)?;
        let sender = lock(&self.event_lock);

        let root = self.root.load();
        check_cas(resource, id, root.resources.get(&key))?;
        let index = root.index + 1;
        let stored = stored_copy(resource, index);
        let mut resources = root.resources.clone();
        resources.insert(key, Arc::clone(&stored));
        self.root.store(Arc::new(Root { index, resources }));

        // Sent under the writer lock so events reach the publisher in commit
        // order; blocks while the 64-slot channel is full.
        if let Some(sender) = sender.as_ref() {
            let _ = sender.send(PeerEvent::Upsert {
                index,
                resource: Arc::clone(&stored),
            });
        }
        Ok(stored)
    }

    /// Reads the resource under `id` without a lock.
    pub fn read(&self, id: &Id) -> Result<Arc<Resource>, PeerError> {
        let key = Key::of(id).ok_or(PeerError::InvalidArgument { field: "id.type" })?;
        check_read(id, self.root.load().resources.get(&key))
    }

    /// Returns the commit index of the current root.
    pub fn current_index(&self) -> u64 {
        self.root.load().index
    }

    /// Blocks until the publisher has handled every committed event, so
    /// benchmarks can start timing a drain with all events in the list.
    pub fn flush(&self) {
        let handled = Arc::clone(&lock(&self.topic).handled_index);
        let committed = self.current_index();
        while handled.load(Ordering::Acquire) < committed {
            thread::sleep(Duration::from_micros(100));
        }
    }

    /// Returns the number of stored resources.
    pub fn len(&self) -> usize {
        self.root.load().resources.len()
    }

    /// Reports whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts a watch: a snapshot of the matching resources, built in full
    /// under the publisher lock as Consul does, then every later event.
    pub fn watch(&self, filter: &Filter) -> ConsulStyleWatch {
        let mut topic = lock(&self.topic);
        topic.subscribers += 1;
        let cursor = Arc::clone(&topic.tail);

        // Events committed before this load but not yet appended will arrive
        // after `cursor` too; the watch skips them by index, as Consul does.
        let root = self.root.load_full();
        let prefix = filter.key_prefix();
        let snapshot: Vec<PeerEvent> = root
            .resources
            .range(prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(&prefix))
            .filter(|(_, resource)| filter.matches(resource))
            .map(|(_, resource)| PeerEvent::Upsert {
                index: root.index,
                resource: Arc::clone(resource),
            })
            .collect();
        drop(topic);

        ConsulStyleWatch {
            filter: filter.clone(),
            snapshot: snapshot.into_iter(),
            end_of_snapshot_sent: false,
            last_index: root.index,
            cursor,
            topic: Arc::clone(&self.topic),
        }
    }
}

impl Drop for ConsulStyleStore {
    fn drop(&mut self) {
        // Dropping the sender ends the publisher's receive loop.
        lock(&self.event_lock).take();
        if let Some(publisher) = self.publisher.take() {
            let _ = publisher.join();
        }
    }
}

/// Runs the publisher thread: appends each received event to the list while
/// a watch is subscribed, and closes the list when the sender is dropped.
fn run_publisher(receiver: &Receiver<PeerEvent>, topic: &Mutex<Topic>) {
    for event in receiver {
        let mut topic = lock(topic);
        let index = match &event {
            PeerEvent::Upsert { index, .. } | PeerEvent::EndOfSnapshot { index } => *index,
        };
        if topic.subscribers > 0 {
            let node = Arc::new(EventNode::new(Some(event)));
            let previous = std::mem::replace(&mut topic.tail, Arc::clone(&node));
            previous.link.append(node);
        }
        // Release pairs with the Acquire load in `flush`.
        topic.handled_index.store(index, Ordering::Release);
    }
    lock(topic).tail.link.close();
}

/// A watch on the Consul-style store.
pub struct ConsulStyleWatch {
    filter: Filter,
    snapshot: std::vec::IntoIter<PeerEvent>,
    end_of_snapshot_sent: bool,
    /// Highest index delivered so far, starting at the snapshot's index.
    last_index: u64,
    /// Last node read; holding it keeps every later node in memory.
    cursor: Arc<EventNode>,
    topic: Arc<Mutex<Topic>>,
}

impl ConsulStyleWatch {
    /// Blocks until the next event; `None` once the store is dropped.
    pub fn next(&mut self) -> Option<PeerEvent> {
        if let Some(event) = self.snapshot.next() {
            return Some(event);
        }
        if !self.end_of_snapshot_sent {
            self.end_of_snapshot_sent = true;
            return Some(PeerEvent::EndOfSnapshot {
                index: self.last_index,
            });
        }
        loop {
            self.cursor = self.cursor.link.wait_next()?;
            let Some(PeerEvent::Upsert { index, resource }) = &self.cursor.event else {
                continue;
            };
            if *index <= self.last_index {
                continue;
            }
            self.last_index = *index;
            if self.filter.matches(resource) {
                return Some(PeerEvent::Upsert {
                    index: *index,
                    resource: Arc::clone(resource),
                });
            }
        }
    }
}

impl Drop for ConsulStyleWatch {
    fn drop(&mut self) {
        lock(&self.topic).subscribers -= 1;
    }
}
