//! The broadcast of commits: the storage's commit notifications become
//! invalidation frames queued on every connection's outbox, and the invalidation
//! history lets a reconnecting client catch up.
//!
//! Invariants:
//! - Invalidations reach every connection's outbox in commit order (whoever pumps
//!   holds the subscription's lock), and nobody broadcasting blocks on a
//!   connection (see `outbox`).
//! - A connection is registered for invalidations under the same lock as its
//!   catch-up is computed, so it misses none and gets none twice.
//! - The history holds every transaction with `floor < tid <= last_tid`.
//! - An invalidation of tid T is sent only once the storage reads snapshot T (its
//!   `last_tid() >= T`), so a client never gets a load answered below the snapshot
//!   it asked for.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Shared;
use super::outbox::{Delivery, Outbox};
use crate::ids::{Oid, Tid};
use crate::meta::CommitEvent;
use crate::net::handshake::{Hello, Welcome};
use crate::net::protocol::{
    self, CatchUp, INVALIDATION_CHUNK_OIDS_MAX, INVALIDATION_DATA_BYTES_MAX,
    INVALIDATION_DATA_OBJECT_BYTES_MAX, ServerMessage,
};
use crate::notify::CommitSubscription;
use crate::storage::Storage;

/// Most of a commit's oids the server looks at for the data its invalidation
/// carries.
const INVALIDATION_DATA_OIDS_EXAMINED: usize = 256;

/// Upper bound of the bytes one oid takes in an `Invalidation` frame (a u64 varint).
const CATCH_UP_BYTES_PER_OID: usize = 10;

/// The connections following the commits, and the recent commits for those that
/// reconnect.
pub(super) struct Hub {
    pub(super) last_tid: Tid,
    /// Every transaction with `floor < tid <= last_tid`, oldest first.
    pub(super) history: VecDeque<(Tid, Arc<[Oid]>)>,
    pub(super) floor: Tid,
    pub(super) subscribers: HashMap<u64, Arc<Outbox>>,
}

impl Hub {
    /// How the server answers a client at `client_tid` (or `fresh`) at connect;
    /// `Behind` only when the missed invalidations fit `budget` bytes.
    fn catch_up(&self, fresh: bool, client_tid: Tid, peer: &str, budget: usize) -> CatchUp {
        if fresh {
            CatchUp::Fresh
        } else if client_tid == self.last_tid {
            CatchUp::Equal
        } else if client_tid > self.last_tid {
            log::warn!(
                "client {peer} has seen transaction {client_tid}, newer than this server's last \
                 ({}): was the data file restored from a backup? The client drops its cache",
                self.last_tid
            );
            CatchUp::Ahead
        } else if client_tid >= self.floor
            && self
                .missed(client_tid)
                .map(|(_, oids)| oids.len() * CATCH_UP_BYTES_PER_OID + 16)
                .sum::<usize>()
                <= budget
        {
            CatchUp::Behind
        } else {
            // Older than the history, or so much to send that it would overflow the
            // send queue (and the client would reconnect to the same again).
            CatchUp::TooFar
        }
    }

    /// The transactions of the history after `tid`, oldest first.
    fn missed(&self, tid: Tid) -> impl Iterator<Item = &(Tid, Arc<[Oid]>)> {
        self.history.iter().filter(move |(t, _)| *t > tid)
    }
}

impl Shared {
    /// Registers a connection that passed the handshake for invalidations, queuing
    /// first the ones it missed (when it can catch up) and then its `Welcome`.
    pub(super) fn welcome(&self, outbox: &Arc<Outbox>, hello: &Hello) -> Result<(), String> {
        let mut hub = self.hub.lock();
        let budget = self.options.send_queue_bytes_max / 2;
        let catch_up = hub.catch_up(hello.fresh, hello.last_tid, &outbox.peer, budget);
        if catch_up == CatchUp::Behind {
            for (tid, oids) in hub.missed(hello.last_tid) {
                for frame in invalidation_frames(*tid, oids, Vec::new()) {
                    if !outbox.push_own_or_close(frame, Delivery::Now) {
                        return Err("catch-up overflowed the send queue".into());
                    }
                }
            }
        }
        hub.subscribers.insert(outbox.id, Arc::clone(outbox));
        let welcome = Welcome {
            last_tid: hub.last_tid,
            // Not for a read-only token: its client then refuses writes itself
            // with a plain "read-only", where the server's refusal says why.
            read_only: self.options.read_only,
            catch_up,
            identity: self.storage.identity(),
        };
        outbox.push_own_or_close(protocol::encode(&welcome.message()).into(), Delivery::Now);
        drop(hub);
        Ok(())
    }

    /// The broadcaster thread: pumps whenever the waker says events wait.
    pub(super) fn broadcast_loop(self: &Arc<Self>) {
        while !self.stopping.load(Ordering::Acquire) {
            {
                let mut waiting = self.events_waiting.lock();
                if !*waiting {
                    // The timeout is a fallback: the waker ends the wait.
                    self.events_changed
                        .wait_for(&mut waiting, Duration::from_millis(100));
                }
                *waiting = false;
            }
            self.pump(None);
        }
    }

    /// Makes the storage wake the broadcaster thread after each commit event, unless
    /// a worker of this server is finishing a commit and pumps right after it.
    pub(super) fn set_waker(self: &Arc<Self>, subscription: &CommitSubscription) {
        let weak = Arc::downgrade(self);
        subscription.set_waker(Arc::new(move || {
            // Never takes `events`: its holder may be waiting for this commit's
            // tid to become readable, which happens after this call returns.
            if let Some(shared) = weak.upgrade()
                && shared.finishing.load(Ordering::SeqCst) == 0
            {
                *shared.events_waiting.lock() = true;
                shared.events_changed.notify_one();
            }
        }));
    }

    /// Broadcasts every commit event waiting, in commit order. `quiet`: the
    /// connection whose reply the caller sends next, which writes the invalidations
    /// with it (its writer thread is not woken).
    pub(super) fn pump(self: &Arc<Self>, quiet: Option<u64>) {
        let mut events = self.events.lock();
        loop {
            if let Some(event) = events.try_recv() {
                self.broadcast(&event, quiet);
            } else if events.missed() {
                *events = self.restart_after_missed_commits();
                self.set_waker(&events);
            } else {
                return;
            }
        }
    }

    /// The broadcaster fell so far behind the storage that commit events were
    /// dropped: the history has a gap, so no client can catch up from it. Start the
    /// history afresh and drop every client; they reconnect, find themselves too far
    /// behind, and drop their caches.
    pub(super) fn restart_after_missed_commits(&self) -> CommitSubscription {
        log::error!(
            "the server fell behind its storage's commit notifications; disconnecting every \
             client so they rebuild their caches"
        );
        let subscription = self.storage.subscribe();
        let mut hub = self.hub.lock();
        hub.last_tid = self.storage.last_tid();
        hub.floor = hub.last_tid;
        hub.history.clear();
        for (_, outbox) in hub.subscribers.drain() {
            outbox.close("the server missed commit notifications");
        }
        subscription
    }

    /// Waits until the storage reads snapshot `tid`. A storage delivers the event
    /// before its last_tid reports the tid. A client that applied this invalidation
    /// may at once load at this tid: were the storage still to read such a load at
    /// the previous tid, the client would cache an old revision as current.
    fn wait_readable(&self, tid: Tid) {
        let waited = Instant::now();
        // The gap is a few instructions under the storage's publication lock: yield
        // first (a sleep lasts far longer than 20 us and delays every commit's reply).
        for _ in 0..1_000 {
            if self.storage.last_tid() >= tid {
                break;
            }
            std::thread::yield_now();
        }
        while self.storage.last_tid() < tid {
            if waited.elapsed() > Duration::from_secs(5) {
                log::warn!(
                    "the storage has not reported transaction {tid} as its last 5 s after \
                     notifying it; sending its invalidation anyway"
                );
                break;
            }
            std::thread::sleep(Duration::from_micros(20));
        }
    }

    fn broadcast(&self, event: &CommitEvent, quiet: Option<u64>) {
        self.wait_readable(event.tid);
        // The data is a saving, never a reason to overflow a send queue: at most a
        // 64th of it.
        let budget = INVALIDATION_DATA_BYTES_MAX.min(self.options.send_queue_bytes_max / 64);
        let data = invalidation_data(&*self.storage, event.tid, &event.oids, budget);
        let frames = invalidation_frames(event.tid, &event.oids, data);
        let mut hub = self.hub.lock();
        if event.tid <= hub.last_tid {
            return;
        }
        hub.last_tid = event.tid;
        hub.history.push_back((event.tid, Arc::clone(&event.oids)));
        while hub.history.len() > self.options.invalidation_history {
            let (tid, _) = hub.history.pop_front().expect("not empty");
            hub.floor = tid;
        }
        hub.subscribers.retain(|id, outbox| {
            let delivery = if quiet == Some(*id) {
                Delivery::WithReply
            } else {
                Delivery::Soon
            };
            frames
                .iter()
                .all(|frame| outbox.push_or_close(Arc::clone(frame), delivery))
        });
    }
}

/// Splits a transaction's invalidation into frames of at most the chunk limit.
pub(super) fn invalidation_frames(
    tid: Tid,
    oids: &[Oid],
    mut data: Vec<(u64, Vec<u8>)>,
) -> Vec<Arc<[u8]>> {
    let mut frames = Vec::new();
    let mut chunks = oids.chunks(INVALIDATION_CHUNK_OIDS_MAX).peekable();
    if chunks.peek().is_none() {
        return vec![
            protocol::encode(&ServerMessage::Invalidation {
                tid: tid.0,
                oids: Vec::new(),
                complete: true,
                data: Vec::new(),
            })
            .into(),
        ];
    }
    while let Some(chunk) = chunks.next() {
        let complete = chunks.peek().is_none();
        frames.push(
            protocol::encode(&ServerMessage::Invalidation {
                tid: tid.0,
                oids: chunk.iter().map(|o| o.0).collect(),
                complete,
                data: if complete {
                    std::mem::take(&mut data)
                } else {
                    Vec::new()
                },
            })
            .into(),
        );
    }
    frames
}

/// The new records of the small objects transaction `tid` changed, for its
/// invalidation, at most `budget` bytes (see [`INVALIDATION_DATA_BYTES_MAX`]): a
/// client caching one of them keeps it current instead of loading it again. Only
/// revisions written by `tid` itself (a later commit may have replaced one
/// already: that one's own invalidation carries it). Looks at the first
/// [`INVALIDATION_DATA_OIDS_EXAMINED`] oids only: every commit is broadcast
/// through here, and a bulk commit of large objects must not load them all.
pub(super) fn invalidation_data(
    storage: &dyn Storage,
    tid: Tid,
    oids: &[Oid],
    budget: usize,
) -> Vec<(u64, Vec<u8>)> {
    let mut data = Vec::new();
    let mut bytes = 0;
    for &oid in oids.iter().take(INVALIDATION_DATA_OIDS_EXAMINED) {
        let Ok(revision) = storage.load(oid, tid) else {
            continue;
        };
        let len = revision.data.len();
        if revision.tid != tid || len > INVALIDATION_DATA_OBJECT_BYTES_MAX {
            continue;
        }
        if bytes + len > budget {
            break;
        }
        bytes += len;
        data.push((oid.0, revision.data));
    }
    data
}

#[cfg(test)]
mod tests;
