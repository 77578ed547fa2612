//! How a worker waits between polls: for the poll interval, the next scheduled
//! start, its next ping or housekeeping, the next tick of a schedule, a free slot, or a commit that changes a
//! watched queue, whichever comes first.
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use zodiac_storage::Oid;

use crate::error::Result;
use crate::model::queue::Queue;
use crate::time::Timestamp;
use crate::transact::transact;

use super::slots::Slot;
use super::{Worker, housekeeping_interval};
impl Worker {
    /// What [`Worker::watched`] returns while this worker has room for another
    /// job; nothing while it runs as many as its agents hold, so that it wakes
    /// only when one of them ends, not at every change of a busy queue (other
    /// workers' claims and puts would wake it for a poll that cannot claim).
    pub(super) fn watched_if_room(&self) -> Result<(BTreeSet<Oid>, Option<Timestamp>)> {
        if self.full() {
            return Ok((BTreeSet::new(), None));
        }
        self.watched()
    }

    /// The size-counter oids of the queues this worker polls, and the earliest
    /// time a job pending in them becomes claimable later (scheduled, or put back
    /// for a later retry).
    pub(super) fn watched(&self) -> Result<(BTreeSet<Oid>, Option<Timestamp>)> {
        let queues = self.active.keys().cloned().collect::<Vec<_>>();
        let now = self.runner.clock().now();
        transact(&self.db, |tx| {
            let mut oids = BTreeSet::new();
            let mut next: Option<Timestamp> = None;
            for name in &queues {
                if let Some(q) = Queue::get(tx, name)? {
                    oids.insert(Queue::size_oid(tx, &q)?);
                    if let Some(at) = Queue::next_start(tx, &q, now)? {
                        next = Some(next.map_or(at, |n| n.min(at)));
                    }
                }
            }
            Ok((oids, next))
        })
    }

    /// Waits up to the poll interval, or until the next scheduled start if that
    /// is sooner; returns early when a run thread ends (a slot is free), when a
    /// commit changes a watched queue while the agents have room, or when `stop`
    /// is set. A full worker waits for its run threads only: other workers' claims
    /// and puts would wake it for a poll that cannot claim.
    pub(super) fn wait(
        &mut self,
        stop: &AtomicBool,
        watched: &BTreeSet<Oid>,
        next_start: Option<Timestamp>,
    ) {
        let mut deadline = Instant::now() + self.options.poll_interval;
        if let Some(at) = next_start {
            deadline = deadline.min(Instant::now() + at.since(self.runner.clock().now()));
        }
        // Pings and housekeeping are due however busy the run threads keep the
        // agents (a run thread going on with the next job frees no slot).
        if let Some(due) = self.next_housekeeping() {
            deadline = deadline.min(due);
        }
        if let Some(tick) = self.ticks.next {
            deadline = deadline.min(Instant::now() + tick.since(self.runner.clock().now()));
        }
        while !stop.load(Ordering::SeqCst) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            // Read before the flags: a thread ending after this rings past it.
            let seen = self.slot_freed.count();
            if self.running.iter().any(Slot::ended) {
                return; // a slot is free: claim more
            }
            let slice = left.min(Duration::from_millis(20));
            let woken = if self.full() {
                self.slot_freed.wait(seen, slice)
            } else {
                self.wake.wait(watched, slice)
            };
            if woken {
                return;
            }
        }
    }

    /// When the next ping or housekeeping (dead siblings, retention) of a queue
    /// this worker polls is due.
    pub(super) fn next_housekeeping(&self) -> Option<Instant> {
        let pings = self
            .active
            .values()
            .map(|last| last.plus(self.options.ping_interval));
        let housekeeping = housekeeping_interval(&self.options);
        let house = self.housekept.values().map(|last| last.plus(housekeeping));
        let due = pings.chain(house).min()?;
        Some(Instant::now() + due.since(self.runner.clock().now()))
    }
}
