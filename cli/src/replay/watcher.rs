//! A watcher thread: follows one resource type with the run's filter, keeps
//! a materialized view, and records every event it receives for the
//! verification that follows the run.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use watchstore::{Error, LagPolicy, Store, Watch, WatchEvent, WatchOptions};

use super::keys::{Filter, StoreKey, TypeKey};

/// How long a blocked watcher sleeps before it checks whether the writers
/// have finished.
const POLL: Duration = Duration::from_millis(20);

/// One event as the watcher received it.
#[derive(Clone, Debug)]
pub enum Observed {
    Upsert {
        index: u64,
        key: StoreKey,
        /// Version of the delivered resource, parsed as a commit index.
        version: u64,
        /// True for the upserts before `EndOfSnapshot`.
        snapshot: bool,
        /// Receive time in nanoseconds since the run started.
        recv_ns: u64,
    },
    Delete {
        index: u64,
        key: StoreKey,
        /// Version of the deleted copy.
        version: u64,
        recv_ns: u64,
    },
    EndOfSnapshot {
        index: u64,
    },
    /// The watch fell behind the event log at index `next`: the store sent
    /// `Reset` (lag policy reset), or returned `Lagged` and the watcher
    /// opened a new watch (lag policy error). A snapshot follows.
    Lagged {
        next: u64,
    },
}

/// Events and final view of one watcher's watch of one type.
#[derive(Debug)]
pub struct WatchLog {
    pub watcher: usize,
    pub ty: TypeKey,
    pub group_version: String,
    pub events: Vec<Observed>,
    /// Materialized view: key to version.
    pub view: BTreeMap<StoreKey, u64>,
    pub lag_errors: u64,
    /// The error that ended the watch early, if any.
    pub error: Option<String>,
}

impl WatchLog {
    /// Names the watch in messages.
    pub fn label(&self) -> String {
        format!("watcher {} ({})", self.watcher, self.ty)
    }
}

/// Reaction of a watcher that falls behind the event log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LagMode {
    /// The store emits `Reset` and a fresh snapshot.
    Reset,
    /// The store returns `Lagged`; the watcher opens a new watch.
    Error,
}

impl LagMode {
    fn policy(self) -> LagPolicy {
        match self {
            LagMode::Reset => LagPolicy::Reset,
            LagMode::Error => LagPolicy::Error,
        }
    }
}

/// Opens one watch of `ty` with `filter`.
pub fn open(
    store: &Store,
    ty: &TypeKey,
    group_version: &str,
    filter: &Filter,
    lag: LagMode,
) -> Result<Watch, Error> {
    let (tenancy, prefix) = filter.query();
    let options = WatchOptions::default().on_lag(lag.policy());
    store.watch_list_with(&ty.to_type(group_version), &tenancy, prefix, options)
}

pub struct Watcher<'a> {
    pub store: &'a Store,
    pub filter: &'a Filter,
    pub lag: LagMode,
    /// Set once every writer has returned, so every commit is published.
    pub writers_done: &'a AtomicBool,
    pub started: Instant,
}

impl Watcher<'_> {
    /// Follows `watch` until it has received every event committed before
    /// the writers finished.
    pub fn run(&self, mut watch: Watch, mut log: WatchLog) -> WatchLog {
        let mut in_snapshot = true;
        loop {
            // Loaded before the read: when the writers were already done
            // and no event is ready, the watch has read up to the last
            // commit, because a watch that finds an empty slot below the
            // current index publishes it itself.
            let finished = self.writers_done.load(Ordering::Acquire);
            let next = if finished {
                watch.try_next()
            } else {
                watch.next_timeout(POLL)
            };
            match next {
                Ok(Some(event)) => {
                    if let Err(message) = self.record(&mut log, &mut in_snapshot, event) {
                        log.error = Some(message);
                        return log;
                    }
                }
                Ok(None) if finished => return log,
                Ok(None) => {}
                Err(Error::Lagged { next, .. }) => {
                    log.lag_errors += 1;
                    log.events.push(Observed::Lagged { next });
                    log.view.clear();
                    in_snapshot = true;
                    match open(
                        self.store,
                        &log.ty,
                        &log.group_version,
                        self.filter,
                        self.lag,
                    ) {
                        Ok(reopened) => watch = reopened,
                        Err(error) => {
                            log.error = Some(format!("reopening the watch failed: {error}"));
                            return log;
                        }
                    }
                }
                Err(error) => {
                    log.error = Some(error.to_string());
                    return log;
                }
            }
        }
    }

    fn record(
        &self,
        log: &mut WatchLog,
        in_snapshot: &mut bool,
        event: WatchEvent,
    ) -> Result<(), String> {
        let recv_ns = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let observed = match event {
            WatchEvent::Upsert { index, resource } => {
                let key = StoreKey::of(&resource);
                let version = parse_version(&resource.version, index)?;
                log.view.insert(key.clone(), version);
                Observed::Upsert {
                    index,
                    key,
                    version,
                    snapshot: *in_snapshot,
                    recv_ns,
                }
            }
            WatchEvent::Delete { index, resource } => {
                let key = StoreKey::of(&resource);
                let version = parse_version(&resource.version, index)?;
                log.view.remove(&key);
                Observed::Delete {
                    index,
                    key,
                    version,
                    recv_ns,
                }
            }
            WatchEvent::EndOfSnapshot { index } => {
                *in_snapshot = false;
                Observed::EndOfSnapshot { index }
            }
            WatchEvent::Reset { index } => {
                log.lag_errors += 1;
                log.view.clear();
                *in_snapshot = true;
                Observed::Lagged { next: index }
            }
        };
        log.events.push(observed);
        Ok(())
    }
}

fn parse_version(version: &str, index: u64) -> Result<u64, String> {
    version.parse().map_err(|_| {
        format!("the event at index {index} carries version {version:?}, not a commit index")
    })
}
