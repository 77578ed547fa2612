//! Prefetches ([`Storage::prefetch`](crate::Storage::prefetch)): loads sent ahead
//! of need, whose replies only fill the cache.
//!
//! Invariants:
//! - Prefetches are loads nobody waits for: their replies enter the cache under the
//!   same rules as a load's, at most one is in flight per oid, and a load that meets
//!   one waits for it (sending it first if buffered) rather than asking again. A
//!   lost connection drops them with the other requests in flight, waking the loads
//!   that wait for them.
//! - At most [`PREFETCHES_IN_FLIGHT_MAX`] are in flight on one connection.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Instant;

use super::Inner;
use super::link::{REPLY_SPIN, Waiting, receive};
use crate::ids::{Oid, Tid};
use crate::meta::Revision;
use crate::net::protocol::{ClientMessage, Request, Response, WireError};

/// Prefetches one connection keeps in flight at most; more are not sent.
pub const PREFETCHES_IN_FLIGHT_MAX: usize = 64;

/// A load sent ahead of need ([`Storage::prefetch`]).
pub(super) struct Prefetch {
    pub(super) oid: Oid,
    pub(super) snapshot: Tid,
    pub(super) epoch: u64,
    /// Loads of `oid` that found this prefetch in flight and wait for its reply.
    pub(super) waiters: Vec<mpsc::SyncSender<()>>,
}

impl Inner {
    /// Sends loads of `oids` at `snapshot` (read in cache `epoch`) without waiting:
    /// their replies fill the cache. Skips oids already in flight and any beyond
    /// [`PREFETCHES_IN_FLIGHT_MAX`]. The frames go out with the next flushed
    /// request (or a load waiting for one of them), in the same write.
    pub(super) fn prefetch(&self, oids: &[Oid], snapshot: Tid, epoch: u64) {
        let Some(link) = self.live_link() else {
            return;
        };
        let mut ids = Vec::with_capacity(oids.len());
        {
            let mut pending = link.pending.lock();
            let Some(in_flight) = pending.as_mut() else {
                return;
            };
            for &oid in oids {
                if in_flight.prefetching.len() >= PREFETCHES_IN_FLIGHT_MAX {
                    break;
                }
                if in_flight.prefetching.contains_key(&oid) {
                    continue;
                }
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let prefetch = Prefetch {
                    oid,
                    snapshot,
                    epoch,
                    waiters: Vec::new(),
                };
                in_flight.requests.insert(id, Waiting::Prefetch(prefetch));
                in_flight.prefetching.insert(oid, id);
                ids.push((id, oid));
            }
        }
        for (id, oid) in ids {
            let request = Request::Load {
                oid: oid.0,
                snapshot: snapshot.0,
            };
            if self
                .send(&link, &ClientMessage::Request { id, request }, false)
                .is_err()
            {
                return; // the connection is lost; the loads will say so
            }
        }
    }

    /// Waits for the prefetch of `oid` in flight, if there is one (sending it
    /// first if it is still buffered). Afterwards the reply of any prefetch of
    /// `oid` is in the cache, if the cache took it: the reader caches a reply
    /// before the prefetch stops being in flight.
    pub(super) fn await_prefetch(&self, oid: Oid) {
        let Some(link) = self.live_link() else {
            return;
        };
        let (sender, receiver) = mpsc::sync_channel(1);
        {
            let mut pending = link.pending.lock();
            let Some(in_flight) = pending.as_mut() else {
                return;
            };
            let Some(id) = in_flight.prefetching.get(&oid) else {
                return;
            };
            match in_flight.requests.get_mut(id) {
                Some(Waiting::Prefetch(p)) => p.waiters.push(sender),
                _ => return,
            }
        }
        let flushed = link.writer.lock().flush();
        if let Err(e) = flushed {
            link.kill(&format!("write failed: {e}"));
            return;
        }
        *link.sent.lock() = Instant::now();
        // Woken by the reply, or failed when the connection is lost.
        let _ = receive(&receiver, REPLY_SPIN);
    }

    /// A prefetch's reply: into the cache (if not made stale meanwhile). A failed
    /// prefetch is only logged: the load that needs the object asks again and
    /// reports the error.
    pub(super) fn prefetched(
        &self,
        p: &Prefetch,
        result: std::result::Result<Response, WireError>,
    ) {
        match result {
            Ok(Response::Revision { tid, data }) => {
                let revision = Revision {
                    tid: Tid(tid),
                    data,
                };
                self.cache
                    .lock()
                    .insert_loaded(p.oid, p.snapshot, p.epoch, &revision);
            }
            Ok(other) => log::debug!("prefetch of {}: unexpected {other:?}", p.oid),
            Err(e) => log::debug!("prefetch of {}: {e:?}", p.oid),
        }
    }
}
