//! What wakes a waiting worker before its poll interval ends.
//!
//! Two sources: [`Polling`] never wakes early (the worker polls at its interval
//! only); [`Invalidations`] wakes when a commit writes one of the watched objects
//! (the worker watches its queues' size counters, which every put and put-back
//! writes), so an enqueued job starts within milliseconds.
//!
//! Invariant: `wait` returns within `timeout` (give or take the scheduler), and
//! returns `true` only for a change that happened after the last `reset`.

use std::collections::BTreeSet;
use std::time::Duration;

use zodiac_storage::{CommitSubscription, Oid};

/// A source of early wake-ups for a worker.
pub trait WakeSource: Send {
    /// Forgets everything seen so far (called before each poll, which sees it).
    fn reset(&mut self);
    /// Waits at most `timeout`; returns `true` if one of `watched` changed.
    fn wait(&mut self, watched: &BTreeSet<Oid>, timeout: Duration) -> bool;
}

/// Never wakes early: plain polling.
#[derive(Clone, Copy, Debug, Default)]
pub struct Polling;

impl WakeSource for Polling {
    fn reset(&mut self) {}

    fn wait(&mut self, _: &BTreeSet<Oid>, timeout: Duration) -> bool {
        std::thread::sleep(timeout);
        false
    }
}

/// Wakes on a commit that writes a watched object.
pub struct Invalidations {
    subscription: CommitSubscription,
}

impl Invalidations {
    /// Watches the commits of `storage` from now on.
    pub fn new(storage: &dyn zodiac_storage::Storage) -> Invalidations {
        Invalidations {
            subscription: storage.subscribe(),
        }
    }
}

impl WakeSource for Invalidations {
    fn reset(&mut self) {
        self.subscription.drain();
    }

    fn wait(&mut self, watched: &BTreeSet<Oid>, timeout: Duration) -> bool {
        match self.subscription.recv_timeout(timeout) {
            Some(event) => event.oids.iter().any(|oid| watched.contains(oid)),
            None => false,
        }
    }
}
