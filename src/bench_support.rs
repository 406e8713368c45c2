//! Internals exposed for the crate's own benchmarks. Not a stable API:
//! anything here may change in any release.

use crate::error::Error;
use crate::log::Log;
use crate::pb::Resource;
use crate::sync::Arc;
use crate::tree::{Change, Event};

/// The event log alone, without the root and the commit around it.
pub struct EventLog {
    log: Log,
    resource: Arc<Resource>,
    last_index: u64,
}

impl EventLog {
    /// Creates a log of `capacity` slots whose events all carry `resource`.
    pub fn new(capacity: usize, resource: Resource) -> Result<EventLog, Error> {
        Ok(EventLog {
            log: Log::new(capacity)?,
            resource: Arc::new(resource),
            last_index: 0,
        })
    }

    /// Publishes an upsert with the next index, as a commit does after its
    /// root swap (pin, build the event, publish), and returns its index.
    pub fn publish_next(&mut self) -> u64 {
        let guard = self.log.pin();
        self.last_index += 1;
        let event = Event {
            index: self.last_index,
            change: Change::Upsert(Arc::clone(&self.resource)),
        };
        self.log.publish(&event, &guard);
        self.last_index
    }
}
