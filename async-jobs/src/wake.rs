//! What wakes a waiting worker before its poll interval ends.
//!
//! Two sources: [`Polling`] never wakes early (the worker polls at its interval
//! only); [`Invalidations`] wakes when a commit writes one of the watched objects
//! (the worker watches its queues' size counters, which every put and put-back
//! writes), so an enqueued job starts within milliseconds.
//!
//! Invariants:
//! - `wait` returns within `timeout` (give or take the scheduler), and returns
//!   `true` only for a change that happened after the last `reset`.
//! - When [`Invalidations::wait`] returns `true` for a commit, a transaction begun
//!   afterwards sees that commit: storages publish a commit's event *before* their
//!   `last_tid` reports it (invalidations first), so the wake-up waits until
//!   `last_tid` has reached the event's tid. Without that, a worker woken by a put
//!   could poll a snapshot without the job and sleep a whole poll interval.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zodiac_storage::{CommitSubscription, Oid, Storage};

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

/// Longest a wake-up waits for the waking commit to become visible (it takes
/// microseconds: the storage moves `last_tid` right after publishing).
const VISIBILITY_WAIT_MAX: Duration = Duration::from_millis(100);

/// Wakes on a commit that writes a watched object.
pub struct Invalidations {
    storage: Arc<dyn Storage>,
    subscription: CommitSubscription,
}

impl Invalidations {
    /// Watches the commits of `storage` from now on.
    pub fn new(storage: Arc<dyn Storage>) -> Invalidations {
        let subscription = storage.subscribe();
        Invalidations {
            storage,
            subscription,
        }
    }
}

impl WakeSource for Invalidations {
    fn reset(&mut self) {
        self.subscription.drain();
    }

    fn wait(&mut self, watched: &BTreeSet<Oid>, timeout: Duration) -> bool {
        let started = Instant::now();
        match self.subscription.recv_timeout(timeout) {
            Some(event) => {
                if !event.oids.iter().any(|oid| watched.contains(oid)) {
                    return false;
                }
                // Published before `last_tid` moves: wait until it is visible.
                let visible_by = Instant::now() + VISIBILITY_WAIT_MAX;
                while self.storage.last_tid() < event.tid && Instant::now() < visible_by {
                    std::thread::yield_now();
                }
                true
            }
            // Cut off for falling too far behind: changes may have been missed, so
            // wake (the poll sees them) and subscribe again.
            None if self.subscription.missed() => {
                self.subscription = self.storage.subscribe();
                true
            }
            None => {
                // Ended early (the storage closed): wait out the interval rather than
                // let the worker poll in a tight loop.
                std::thread::sleep(timeout.saturating_sub(started.elapsed()));
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zodiac_storage::{MemoryStorage, SUBSCRIPTION_EVENTS_MAX, Tid, TransactionMeta};

    fn commit(storage: &dyn Storage, oid: Oid, base: Tid) -> Tid {
        let mut t = storage.begin(TransactionMeta::default()).unwrap();
        t.store(oid, base, b"x".to_vec()).unwrap();
        t.finish().unwrap()
    }

    #[test]
    fn a_cut_off_subscription_wakes_the_worker_and_resubscribes() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let mut wake = Invalidations::new(Arc::clone(&storage));
        let watched_oid = storage.new_oid().unwrap();
        let other = storage.new_oid().unwrap();
        let mut base = Tid::ZERO;
        for _ in 0..=SUBSCRIPTION_EVENTS_MAX {
            base = commit(&*storage, other, base);
        }
        let watched = BTreeSet::from([watched_oid]);
        wake.reset(); // drains what was queued; the rest was missed
        assert!(
            wake.wait(&watched, Duration::from_secs(5)),
            "a miss must wake the worker"
        );
        // Subscribed again: a later commit of a watched object wakes it.
        commit(&*storage, watched_oid, Tid::ZERO);
        assert!(wake.wait(&watched, Duration::from_secs(5)));
    }

    #[test]
    fn an_ended_subscription_waits_out_the_interval() {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let mut wake = Invalidations::new(Arc::clone(&storage));
        storage.close().unwrap();
        let started = Instant::now();
        assert!(!wake.wait(&BTreeSet::new(), Duration::from_millis(200)));
        assert!(
            started.elapsed() >= Duration::from_millis(150),
            "returned at once"
        );
    }
}
