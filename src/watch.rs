//! `Watch`: a snapshot, then every later change from the event log.

use std::collections::VecDeque;
use std::ops::Bound;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::log::Slot;
use crate::model::{Key, Query};
use crate::pb::{self, Resource};
use crate::store::Shared;
use crate::sync::{self, Arc, Ordering};
use crate::tree::{Change, Root};

/// Maximum number of snapshot resources fetched per scan of the persistent
/// map. The first scan fetches one, so the first event comes without
/// waiting for a full batch, and each later scan fetches twice as many.
const SNAPSHOT_BATCH: usize = 64;

/// The start point of a watch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchStart {
    /// Upserts of every matching resource at one commit index, then
    /// `EndOfSnapshot`, then later changes.
    #[default]
    Snapshot,
    /// No snapshot: every matching change with an index greater than this
    /// one. Fails with [`Error::Compacted`] when the log no longer contains the
    /// next index, and with [`Error::InvalidArgument`] when the index is
    /// above the store's current index.
    After(u64),
}

/// The reaction of a watch whose next event was overwritten in the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LagPolicy {
    /// Return [`Error::Lagged`]; the watch is then finished.
    #[default]
    Error,
    /// Emit [`WatchEvent::Reset`], then a fresh snapshot and
    /// `EndOfSnapshot`, then follow again.
    Reset,
}

/// Settings of one watch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WatchOptions {
    /// The start point of the watch.
    pub start: WatchStart,
    /// The reaction of the watch when it falls behind the log.
    pub on_lag: LagPolicy,
}

impl WatchOptions {
    /// Starts after commit index `index`, without a snapshot.
    pub fn after(mut self, index: u64) -> Self {
        self.start = WatchStart::After(index);
        self
    }

    /// Sets the lag policy.
    pub fn on_lag(mut self, policy: LagPolicy) -> Self {
        self.on_lag = policy;
        self
    }
}

/// One item of a watch.
#[derive(Clone, Debug, PartialEq)]
pub enum WatchEvent {
    /// The resource was written at `index` (or, in a snapshot, is stored as
    /// of the snapshot's index).
    Upsert {
        /// Commit index: the write's, or the snapshot's during a snapshot.
        index: u64,
        /// The stored resource.
        resource: Arc<Resource>,
    },
    /// The resource was deleted at `index`.
    Delete {
        /// Commit index of the delete.
        index: u64,
        /// The last stored copy of the resource.
        resource: Arc<Resource>,
    },
    /// The snapshot is complete; it reflects commit index `index`.
    EndOfSnapshot {
        /// Commit index of the snapshot.
        index: u64,
    },
    /// The watch fell behind under [`LagPolicy::Reset`]: drop the view
    /// built so far, because a fresh snapshot follows.
    Reset {
        /// The index that was overwritten before the watch read it.
        index: u64,
    },
}

impl WatchEvent {
    /// Returns the commit index of the event.
    pub fn index(&self) -> u64 {
        match self {
            WatchEvent::Upsert { index, .. }
            | WatchEvent::Delete { index, .. }
            | WatchEvent::EndOfSnapshot { index }
            | WatchEvent::Reset { index } => *index,
        }
    }

    /// Converts the event to the protobuf `WatchEvent`; `None` for
    /// [`WatchEvent::Reset`], which the protobuf type cannot express.
    pub fn to_proto(&self) -> Option<pb::WatchEvent> {
        use pb::watch_event::{Delete, EndOfSnapshot, Event, Upsert};
        let event = match self {
            WatchEvent::Upsert { resource, .. } => Event::Upsert(Upsert {
                resource: Some(Resource::clone(resource)),
            }),
            WatchEvent::Delete { resource, .. } => Event::Delete(Delete {
                resource: Some(Resource::clone(resource)),
            }),
            WatchEvent::EndOfSnapshot { .. } => Event::EndOfSnapshot(EndOfSnapshot {}),
            WatchEvent::Reset { .. } => return None,
        };
        Some(pb::WatchEvent { event: Some(event) })
    }
}

enum State {
    /// Reading the snapshot of `root`.
    Snapshot {
        root: Arc<Root>,
        /// The bound the next scan of the map starts from.
        from: Bound<Key>,
        /// Fetched resources not yet returned.
        batch: VecDeque<Arc<Resource>>,
        /// Whether the scan has reached the end of the matching keys.
        scanned: bool,
        /// How many resources the next scan fetches.
        batch_size: usize,
    },
    /// Following the log; `cursor` is the next index to read.
    Follow { cursor: u64 },
    /// Finished after returning an error; returns it again.
    Failed(Error),
}

/// A stream of changes to the resources matching one query.
///
/// Created by [`Store::watch_list`](crate::Store::watch_list). A watch holds
/// no lock and no epoch guard between calls: a snapshot in progress keeps
/// its root alive, and a following watch is only a cursor. Dropping it frees
/// everything it holds.
///
/// With the `async` feature, `Watch` is also a `futures::Stream`. The
/// inherent, blocking [`Watch::next`] takes precedence over
/// `StreamExt::next` in method calls, so async code writes
/// `StreamExt::next(&mut watch).await`.
pub struct Watch {
    shared: Arc<Shared>,
    query: Query,
    on_lag: LagPolicy,
    /// The store's restore count when the watch started.
    restores_at_start: u64,
    /// The published counter read before the snapshot's root (negative
    /// control only): the watch follows from here, in Consul's order.
    #[cfg(watchstore_consul_order)]
    published_at_start: u64,
    state: State,
    /// The registration a pending `poll_next` sleeps on.
    #[cfg(feature = "async")]
    listener: Option<sync::NotifyListener>,
    /// Set once the stream has yielded its final error.
    #[cfg(feature = "async")]
    ended: bool,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Snapshot { root, .. } => format!("snapshot at {}", root.index),
            State::Follow { cursor } => format!("following at {cursor}"),
            State::Failed(error) => format!("failed: {error}"),
        };
        f.debug_struct("Watch")
            .field("query", &self.query)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl Watch {
    pub(crate) fn start(
        shared: Arc<Shared>,
        query: Query,
        options: WatchOptions,
    ) -> Result<Watch, Error> {
        // Read the restore count before the root: a restore stores the new
        // root before it counts, so this watch cannot pair a pre-restore
        // root with a post-restore count.
        let restores_at_start = shared.restores.load(Ordering::Acquire);
        // Acquire pairs with the Release store in `Shared::close`.
        if shared.closed.load(Ordering::Acquire) {
            return Err(Error::WatchClosed);
        }
        #[cfg(watchstore_consul_order)]
        let published_at_start = shared.published.load(Ordering::Acquire);
        let state = match options.start {
            WatchStart::Snapshot => snapshot_state(shared.root.load_full()),
            WatchStart::After(after) => State::Follow {
                cursor: resume_cursor(&shared, after)?,
            },
        };
        Ok(Watch {
            shared,
            query,
            on_lag: options.on_lag,
            restores_at_start,
            #[cfg(watchstore_consul_order)]
            published_at_start,
            state,
            #[cfg(feature = "async")]
            listener: None,
            #[cfg(feature = "async")]
            ended: false,
        })
    }

    /// Returns the next event, blocking until there is one.
    // Not `Iterator::next`: this one blocks and returns a `Result`, and a
    // watch never ends without an error.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<WatchEvent, Error> {
        loop {
            if let Some(event) = self.try_next()? {
                return Ok(event);
            }
            let listener = self.shared.notify.listen();
            // Check again after registering: a publication between the first
            // check and `listen` would otherwise go unnoticed.
            if let Some(event) = self.try_next()? {
                return Ok(event);
            }
            sync::wait(listener);
        }
    }

    /// Returns the next event, or `Ok(None)` if none arrives within
    /// `timeout`.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<WatchEvent>, Error> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if let Some(event) = self.try_next()? {
                return Ok(Some(event));
            }
            let listener = self.shared.notify.listen();
            if let Some(event) = self.try_next()? {
                return Ok(Some(event));
            }
            match deadline {
                Some(deadline) => {
                    if !sync::wait_deadline(listener, deadline) && Instant::now() >= deadline {
                        return self.try_next();
                    }
                }
                // A timeout too large for `Instant` waits without limit.
                None => sync::wait(listener),
            }
        }
    }

    /// Returns the next event if one is ready, without blocking.
    pub fn try_next(&mut self) -> Result<Option<WatchEvent>, Error> {
        if let State::Failed(error) = &self.state {
            return Err(error.clone());
        }
        if self.shared.closed_or_restored(self.restores_at_start) {
            return Err(self.fail(Error::WatchClosed));
        }
        match self.state {
            State::Snapshot { .. } => Ok(Some(self.next_from_snapshot())),
            State::Follow { cursor } => self.next_from_log(cursor),
            State::Failed(_) => unreachable!("handled above"),
        }
    }

    fn fail(&mut self, error: Error) -> Error {
        self.state = State::Failed(error.clone());
        error
    }

    fn next_from_snapshot(&mut self) -> WatchEvent {
        let State::Snapshot {
            root,
            from,
            batch,
            scanned,
            batch_size,
        } = &mut self.state
        else {
            unreachable!("called in the snapshot state only");
        };

        // Refill the batch from the map when it runs out.
        if batch.is_empty() && !*scanned {
            let mut found = Vec::with_capacity(*batch_size);
            match root.scan(&self.query, from, *batch_size, &mut found) {
                Some(last) => *from = Bound::Excluded(last),
                None => *scanned = true,
            }
            batch.extend(found);
            *batch_size = (*batch_size * 2).min(SNAPSHOT_BATCH);
        }

        if let Some(resource) = batch.pop_front() {
            return WatchEvent::Upsert {
                index: root.index,
                resource,
            };
        }

        let index = root.index;
        // The snapshot and the cursor come from one root load: the event
        // after root `index` is exactly log index `index + 1`.
        #[cfg(not(watchstore_consul_order))]
        let cursor = index + 1;
        // Negative control: a write that became visible to the snapshot
        // before it was published is delivered again.
        #[cfg(watchstore_consul_order)]
        let cursor = self.published_at_start + 1;
        self.state = State::Follow { cursor };
        WatchEvent::EndOfSnapshot { index }
    }

    fn next_from_log(&mut self, mut cursor: u64) -> Result<Option<WatchEvent>, Error> {
        let guard = self.shared.log.pin();
        loop {
            let found = match self.shared.log.get(cursor, &guard) {
                Slot::Pending => {
                    // The event may be committed but not yet published by a
                    // descheduled writer: publish it rather than wait. Every
                    // event below the root's index is already published (a
                    // writer publishes the current event before swapping the
                    // root), so after this help the slot contains `cursor` or a
                    // later index and the loop moves on.
                    let root = self.shared.root.load();
                    if root.index < cursor {
                        self.state = State::Follow { cursor };
                        return Ok(None);
                    }
                    self.shared.help_publish(&root, &guard);
                    continue;
                }
                Slot::Overwritten => {
                    let root = self.shared.root.load();
                    self.shared.help_publish(&root, &guard);
                    let oldest = self.shared.log.oldest_held(root.index);
                    drop(guard);
                    return self.lagged(cursor, oldest);
                }
                Slot::Ready(event) => event,
            };
            cursor += 1;
            let event = match found.change {
                Change::Restore => return Err(self.fail(Error::WatchClosed)),
                Change::Upsert(resource) => WatchEvent::Upsert {
                    index: found.index,
                    resource,
                },
                Change::Delete(resource) => WatchEvent::Delete {
                    index: found.index,
                    resource,
                },
            };
            let resource = match &event {
                WatchEvent::Upsert { resource, .. } | WatchEvent::Delete { resource, .. } => {
                    resource
                }
                _ => unreachable!("built above as an upsert or a delete"),
            };
            if self.query.matches_resource(resource) {
                self.state = State::Follow { cursor };
                return Ok(Some(event));
            }
        }
    }

    fn lagged(&mut self, next: u64, oldest: u64) -> Result<Option<WatchEvent>, Error> {
        match self.on_lag {
            LagPolicy::Error => Err(self.fail(Error::Lagged { next, oldest })),
            LagPolicy::Reset => {
                self.state = snapshot_state(self.shared.root.load_full());
                Ok(Some(WatchEvent::Reset { index: next }))
            }
        }
    }
}

fn snapshot_state(root: Arc<Root>) -> State {
    State::Snapshot {
        root,
        from: Bound::Unbounded,
        batch: VecDeque::new(),
        scanned: false,
        batch_size: 1,
    }
}

/// Checks a resume point and returns the first index to read.
fn resume_cursor(shared: &Shared, after: u64) -> Result<u64, Error> {
    let guard = shared.log.pin();
    let root = shared.root.load();
    if after > root.index {
        return Err(Error::invalid(
            "start",
            format!(
                "resumes after index {after}, but the store's current index is {}",
                root.index
            ),
        ));
    }
    shared.help_publish(&root, &guard);
    let oldest = shared.log.oldest_held(root.index);
    let requested = after + 1;
    if after < root.index && requested < oldest {
        return Err(Error::Compacted { requested, oldest });
    }
    Ok(requested)
}

#[cfg(feature = "async")]
impl futures_core::Stream for Watch {
    type Item = Result<WatchEvent, Error>;

    /// Yields events; an error is yielded once and then the stream ends.
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::future::Future;
        use std::task::Poll;

        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        loop {
            match this.try_next() {
                Ok(Some(event)) => {
                    this.listener = None;
                    return Poll::Ready(Some(Ok(event)));
                }
                Err(error) => {
                    this.listener = None;
                    this.ended = true;
                    return Poll::Ready(Some(Err(error)));
                }
                Ok(None) => {}
            }
            match this.listener.as_mut() {
                // Register, then check again before sleeping.
                None => this.listener = Some(this.shared.notify.listen()),
                Some(listener) => match std::pin::Pin::new(listener).poll(cx) {
                    Poll::Ready(()) => this.listener = None,
                    Poll::Pending => return Poll::Pending,
                },
            }
        }
    }
}
