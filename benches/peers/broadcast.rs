//! `tokio::sync::broadcast` behind a publish / per-subscriber receive
//! adapter, for the log-only publish and fan-out benchmarks.
//!
//! In tokio 1.54 the broadcast channel is a ring of slots, each behind its
//! own mutex with a count of receivers still to read it, plus one mutex over
//! the tail. A receiver that falls a full ring behind gets
//! `RecvError::Lagged`.

use tokio::sync::broadcast;

use super::fixtures::PeerEvent;

/// Sending side: one tokio broadcast channel of `PeerEvent`s.
pub struct BroadcastLog {
    sender: broadcast::Sender<PeerEvent>,
}

impl BroadcastLog {
    /// Creates a channel with room for `capacity` events, which tokio rounds
    /// up to a power of two.
    pub fn new(capacity: usize) -> BroadcastLog {
        let (sender, _) = broadcast::channel(capacity.max(1));
        BroadcastLog { sender }
    }

    /// Publishes `event` to every subscriber; returns how many subscribers
    /// there were (zero means the event was dropped, as tokio does).
    #[inline]
    pub fn publish(&self, event: PeerEvent) -> usize {
        self.sender.send(event).unwrap_or(0)
    }

    /// Subscribes to every event published from now on.
    pub fn subscribe(&self) -> BroadcastSubscriber {
        BroadcastSubscriber {
            receiver: self.sender.subscribe(),
        }
    }
}

/// One subscriber with its own cursor into the channel.
pub struct BroadcastSubscriber {
    receiver: broadcast::Receiver<PeerEvent>,
}

impl BroadcastSubscriber {
    /// Blocks the calling thread until the next event arrives.
    ///
    /// Fails with `Lagged(n)` after `n` events were overwritten unread, and
    /// with `Closed` once the log is dropped and drained. Must not be called
    /// from inside a tokio runtime.
    pub fn recv(&mut self) -> Result<PeerEvent, broadcast::error::RecvError> {
        self.receiver.blocking_recv()
    }
}
