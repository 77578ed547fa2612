//! Commit notifications: a fan-out of [`CommitEvent`]s to subscribers.
//!
//! Invariants:
//! - Events are published in commit order, each exactly once, and before the storage
//!   reports the event's tid as its last tid (invalidations first).
//! - A subscriber holds at most [`SUBSCRIPTION_EVENTS_MAX`] unread events. One that
//!   falls further behind is cut off: its subscription ends once it has read what was
//!   queued, and [`CommitSubscription::missed`] says so, so it can treat everything it
//!   cached as stale and subscribe again. Memory stays bounded however idle a
//!   subscriber is.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use parking_lot::Mutex;

use crate::meta::CommitEvent;

/// Most events a subscriber may leave unread before it is cut off.
pub const SUBSCRIPTION_EVENTS_MAX: usize = 100_000;

/// Called after each event is queued for a subscriber (see [`CommitSubscription::set_waker`]).
pub type Waker = Arc<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct Backlog {
    /// Events sent and not yet received.
    queued: AtomicUsize,
    /// Events were dropped because the subscriber fell too far behind.
    missed: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

/// Receives commit notifications for one subscriber. Unsubscribes when dropped.
pub struct CommitSubscription {
    receiver: mpsc::Receiver<CommitEvent>,
    backlog: Arc<Backlog>,
}

impl CommitSubscription {
    fn took(&self, event: Option<CommitEvent>) -> Option<CommitEvent> {
        if event.is_some() {
            self.backlog.queued.fetch_sub(1, Ordering::AcqRel);
        }
        event
    }

    /// The next event, waiting for it. `None` once the storage is gone, or after the
    /// last queued event of a subscriber that was cut off (see [`missed`](Self::missed)).
    pub fn recv(&self) -> Option<CommitEvent> {
        self.took(self.receiver.recv().ok())
    }

    /// The next event if one is waiting.
    pub fn try_recv(&self) -> Option<CommitEvent> {
        self.took(self.receiver.try_recv().ok())
    }

    /// The next event, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<CommitEvent> {
        self.took(self.receiver.recv_timeout(timeout).ok())
    }

    /// Every event waiting now, without blocking.
    pub fn drain(&self) -> Vec<CommitEvent> {
        let events: Vec<CommitEvent> = self.receiver.try_iter().collect();
        self.backlog
            .queued
            .fetch_sub(events.len(), Ordering::AcqRel);
        events
    }

    /// Whether events were dropped because this subscriber left more than
    /// [`SUBSCRIPTION_EVENTS_MAX`] unread. The subscription has then ended: treat
    /// everything learned from it as incomplete and subscribe again.
    pub fn missed(&self) -> bool {
        self.backlog.missed.load(Ordering::Acquire)
    }

    /// Calls `waker` (from the publishing thread, which must not be held up) after
    /// each event is queued, and when the subscription is cut off: for a receiver
    /// that polls with [`try_recv`](Self::try_recv) from several threads.
    pub fn set_waker(&self, waker: Waker) {
        *self.backlog.waker.lock() = Some(waker);
    }
}

impl Backlog {
    fn wake(&self) {
        let waker = self.waker.lock().clone();
        if let Some(waker) = waker {
            waker();
        }
    }
}

/// One subscriber, as the publisher sees it.
type Subscriber = (mpsc::Sender<CommitEvent>, Arc<Backlog>);

/// The publishing side, owned by a storage.
pub(crate) struct Notifier {
    /// `None` once closed: new subscriptions end at once.
    senders: Mutex<Option<Vec<Subscriber>>>,
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
        let backlog = Arc::new(Backlog::default());
        if let Some(senders) = self.senders.lock().as_mut() {
            senders.push((sender, Arc::clone(&backlog)));
        }
        CommitSubscription { receiver, backlog }
    }

    /// Sends `event` to every live subscriber, forgets the ones that went away, and
    /// cuts off the ones too far behind.
    pub(crate) fn publish(&self, event: &CommitEvent) {
        if let Some(senders) = self.senders.lock().as_mut() {
            senders.retain(|(sender, backlog)| {
                if backlog.queued.load(Ordering::Acquire) >= SUBSCRIPTION_EVENTS_MAX {
                    backlog.missed.store(true, Ordering::Release);
                    log::warn!(
                        "a commit subscriber left {SUBSCRIPTION_EVENTS_MAX} events unread and \
                         was cut off; it must treat its cached state as stale"
                    );
                    backlog.wake();
                    return false;
                }
                backlog.queued.fetch_add(1, Ordering::AcqRel);
                let sent = sender.send(event.clone()).is_ok();
                backlog.wake();
                sent
            });
        }
    }

    /// Cuts off every present subscriber as if it had fallen too far behind: each
    /// reads what was queued, then its subscription ends with
    /// [`CommitSubscription::missed`] set. For a storage that lost track of some
    /// commits (a client storage that dropped its cache on reconnect). Later
    /// subscriptions are not affected.
    pub(crate) fn cut_off_all(&self) {
        if let Some(senders) = self.senders.lock().as_mut() {
            for (_, backlog) in senders.drain(..) {
                backlog.missed.store(true, Ordering::Release);
                backlog.wake();
            }
        }
    }

    /// Ends every subscription, present and future (their `recv` returns `None`).
    pub(crate) fn close(&self) {
        self.senders.lock().take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Oid, Tid};

    fn event(tid: u64) -> CommitEvent {
        CommitEvent {
            tid: Tid(tid),
            oids: Arc::from(vec![Oid(1)]),
        }
    }

    #[test]
    fn a_subscriber_too_far_behind_is_cut_off_and_told() {
        let notifier = Notifier::default();
        let idle = notifier.subscribe();
        let reader = notifier.subscribe();
        for tid in 1..=SUBSCRIPTION_EVENTS_MAX as u64 + 5 {
            notifier.publish(&event(tid));
            assert_eq!(reader.try_recv().map(|e| e.tid), Some(Tid(tid)));
        }
        assert!(idle.missed());
        assert!(!reader.missed());
        assert_eq!(idle.drain().len(), SUBSCRIPTION_EVENTS_MAX);
        assert!(
            idle.try_recv().is_none(),
            "the cut-off subscription has ended"
        );
        notifier.publish(&event(u64::MAX));
        assert_eq!(reader.recv().map(|e| e.tid), Some(Tid(u64::MAX)));
    }

    #[test]
    fn a_subscriber_that_keeps_up_is_never_cut_off() {
        let notifier = Notifier::default();
        let sub = notifier.subscribe();
        for round in 0..3u64 {
            for i in 0..SUBSCRIPTION_EVENTS_MAX as u64 - 1 {
                notifier.publish(&event(round * 1_000_000 + i + 1));
            }
            assert_eq!(sub.drain().len(), SUBSCRIPTION_EVENTS_MAX - 1);
        }
        assert!(!sub.missed());
    }
}
