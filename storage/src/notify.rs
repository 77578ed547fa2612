//! Commit notifications: a fan-out of [`CommitEvent`]s to subscribers.
//!
//! Invariant: events are published in commit order, each exactly once, and
//! before the storage reports the event's tid as its last tid (the ordering
//! contract of docs/format.md's companion, spec: invalidations first).

use std::sync::mpsc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::meta::CommitEvent;

/// Receives commit notifications for one subscriber. Unsubscribes when dropped.
pub struct CommitSubscription {
    receiver: mpsc::Receiver<CommitEvent>,
}

impl CommitSubscription {
    /// The next event, waiting for it. `None` once the storage is gone.
    pub fn recv(&self) -> Option<CommitEvent> {
        self.receiver.recv().ok()
    }

    /// The next event if one is waiting.
    pub fn try_recv(&self) -> Option<CommitEvent> {
        self.receiver.try_recv().ok()
    }

    /// The next event, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<CommitEvent> {
        self.receiver.recv_timeout(timeout).ok()
    }

    /// Every event waiting now, without blocking.
    pub fn drain(&self) -> Vec<CommitEvent> {
        self.receiver.try_iter().collect()
    }
}

/// The publishing side, owned by a storage.
pub(crate) struct Notifier {
    /// `None` once closed: new subscriptions end at once.
    senders: Mutex<Option<Vec<mpsc::Sender<CommitEvent>>>>,
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier {
            senders: Mutex::new(Some(Vec::new())),
        }
    }
}

impl Notifier {
    pub(crate) fn subscribe(&self) -> CommitSubscription {
        let (sender, receiver) = mpsc::channel();
        if let Some(senders) = self.senders.lock().as_mut() {
            senders.push(sender);
        }
        CommitSubscription { receiver }
    }

    /// Sends `event` to every live subscriber and forgets the ones that went away.
    pub(crate) fn publish(&self, event: &CommitEvent) {
        if let Some(senders) = self.senders.lock().as_mut() {
            senders.retain(|s| s.send(event.clone()).is_ok());
        }
    }

    /// Ends every subscription, present and future (their `recv` returns `None`).
    pub(crate) fn close(&self) {
        self.senders.lock().take();
    }
}
