//! The server's side of a transaction: each open transaction is an actor whose
//! operations (stores, checks, vote, finish, commit, abort) run one at a time in the
//! order received; a commit merges conflicting stores through the server's merge
//! function, and a conflict reply carries the revisions to merge it on the client.
//!
//! Invariants:
//! - A transaction's operations run in the order received, one at a time.
//! - The first error of a store, check or vote is the transaction's: its vote and
//!   finish report it, and nothing after it is stored.
//! - A finish pumps the commit notifications before it replies, so the reply's
//!   write carries this client's invalidation.
//! - Every byte a transaction holds for its stores (and the copies it keeps to
//!   merge) is reserved against the server's client memory until the transaction
//!   finishes or ends; a store that finds no room fails the transaction.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;

use super::memory::{self, Reservation};
use super::outbox::Outbox;
use super::{Job, Shared};
use crate::error::{ConflictError, Error, Result};
use crate::ids::{Oid, Tid};
use crate::net::protocol::{
    MERGED_REPLY_BYTES_MAX, MergedStore, Response, ServerMessage, WireError, WireRevision,
};
use crate::storage::StorageTransaction;

/// Largest revision a conflict reply carries (larger ones are loaded if needed).
const CONFLICT_REVISION_BYTES_MAX: usize = 64 << 10;
/// Most bytes of revisions one conflict reply carries.
const CONFLICT_REVISIONS_BYTES_MAX: usize = 1 << 20;
/// Most stored objects a conflict reply looks at.
const CONFLICT_SCAN_MAX: usize = 4096;

/// A transaction's operations, in the order the client sent them.
pub(super) enum TxnOp {
    /// A store, with its merge identity when the client named one, and the client
    /// memory its data holds.
    Store(Oid, Tid, Vec<u8>, Option<String>, Reservation),
    CheckCurrent(Oid, Tid),
    Vote(u64),
    Finish(u64),
    /// Vote and finish.
    Commit(u64),
    Abort,
}

impl TxnOp {
    /// Whether the op may wait (for the commit lock, for the disk): it then runs on
    /// a pooled worker, never on the connection's reader.
    pub(super) fn may_wait(&self) -> bool {
        matches!(self, TxnOp::Vote(_) | TxnOp::Finish(_) | TxnOp::Commit(_))
    }
}

/// One open transaction: its operations run one at a time in order, the quick ones
/// (stores, checks) on the connection's reader when nothing else is queued, the
/// ones that may wait on a pooled worker.
pub(super) struct TxnActor {
    state: Mutex<ActorState>,
}

pub(super) struct ActorState {
    /// Taken while a worker runs an op on it.
    data: TxnData,
    queue: VecDeque<TxnOp>,
    /// A worker is draining `queue`.
    running: bool,
}

/// One transaction's state, which its ops change.
#[derive(Default)]
pub(super) struct TxnData {
    /// `None` while a worker runs an op on it, or once finished or aborted.
    txn: Option<Box<dyn StorageTransaction>>,
    /// The first error of a store, check or vote, reported at vote/finish.
    failed: Option<WireError>,
    /// What was stored: (oid, base tid), for the revisions a conflict reports.
    stored: Vec<(Oid, Tid)>,
    /// The stores that named a merge identity, when the server merges: oid →
    /// (identity, stored data), what a `Commit` merges a conflict with.
    mergeable: HashMap<Oid, (String, Vec<u8>)>,
    /// The client memory the stores and merge copies hold, given back when the
    /// transaction finishes or ends.
    held: Reservation,
}

impl Drop for TxnData {
    fn drop(&mut self) {
        if let Some(txn) = self.txn.take() {
            txn.abort();
        }
    }
}

/// What an op needs to reply and to broadcast.
#[derive(Clone)]
pub(super) struct TxnContext {
    pub(super) shared: Arc<Shared>,
    pub(super) outbox: Arc<Outbox>,
}

impl TxnContext {
    pub(super) fn reply(&self, id: u64, result: std::result::Result<Response, WireError>) {
        self.outbox.send(&ServerMessage::Reply { id, result });
    }

    /// Conflict `c` of a vote, with the revisions a client needs to merge every
    /// stored object found stale (not only `c`'s): each one's newest revision and
    /// the revision it was stored on, while they fit [`CONFLICT_REVISION_BYTES_MAX`]
    /// each and [`CONFLICT_REVISIONS_BYTES_MAX`] in all. The storage's vote waited
    /// for the conflicting commits to be readable.
    fn conflict_with_revisions(&self, c: &ConflictError, stored: &[(Oid, Tid)]) -> WireError {
        let storage = &self.shared.storage;
        let mut revisions = Vec::new();
        let mut bytes = 0;
        for &(oid, base) in stored.iter().take(CONFLICT_SCAN_MAX) {
            if base == Tid::ZERO {
                continue;
            }
            let Ok(newest) = storage.load(oid, Tid::MAX) else {
                continue;
            };
            if newest.tid == base {
                continue;
            }
            let Ok(old) = storage.load_revision(oid, base) else {
                continue;
            };
            let size = newest.data.len() + old.len();
            if newest.data.len().max(old.len()) > CONFLICT_REVISION_BYTES_MAX
                || bytes + size > CONFLICT_REVISIONS_BYTES_MAX
            {
                continue;
            }
            bytes += size;
            revisions.push(WireRevision {
                oid: oid.0,
                tid: newest.tid.0,
                data: newest.data,
            });
            revisions.push(WireRevision {
                oid: oid.0,
                tid: base.0,
                data: old,
            });
        }
        WireError::ConflictWithRevisions {
            oid: c.oid.0,
            base_tid: c.base_tid.0,
            current_tid: c.current_tid.0,
            revisions,
        }
    }

    /// Votes `t`, merging its conflicting mergeable stores through the server's
    /// merge function, and finishes it; the tid and what was merged (with the
    /// merged data while it fits [`MERGED_REPLY_BYTES_MAX`]). A merge function that
    /// panics counts as one that does not merge.
    fn merge_and_finish(
        &self,
        mut t: Box<dyn StorageTransaction>,
        mergeable: &HashMap<Oid, (String, Vec<u8>)>,
    ) -> Result<(Tid, Vec<MergedStore>)> {
        let (Some(merge), false) = (&self.shared.options.merge, mergeable.is_empty()) else {
            t.vote()?;
            return t.finish().map(|tid| (tid, Vec::new()));
        };
        let outputs = Mutex::new(HashMap::new());
        let resolver = |oid: Oid, old: &[u8], committed: &[u8]| {
            let (identity, mine) = mergeable.get(&oid)?;
            let call = std::panic::AssertUnwindSafe(|| merge(identity, old, committed, mine));
            let merged = match std::panic::catch_unwind(call) {
                Ok(merged) => merged?,
                Err(_) => {
                    log::error!("the merge function for {identity} panicked on object {oid}");
                    return None;
                }
            };
            outputs.lock().insert(oid, merged.clone());
            Some(merged)
        };
        let merged_oids = t.vote_resolving(&resolver)?.unwrap_or_default();
        let tid = t.finish()?;
        let mut outputs = outputs.into_inner();
        let mut bytes = 0;
        let merged = merged_oids
            .into_iter()
            .map(|oid| {
                let data = outputs.remove(&oid).filter(|d| {
                    bytes += d.len();
                    bytes <= MERGED_REPLY_BYTES_MAX
                });
                MergedStore { oid: oid.0, data }
            })
            .collect();
        Ok((tid, merged))
    }

    /// A vote's conflict carries the revisions to merge it (protocol 3).
    fn wire_error(&self, e: Error, stored: &[(Oid, Tid)]) -> WireError {
        match &e {
            Error::Conflict(c) => self.conflict_with_revisions(c, stored),
            _ => WireError::from(&e),
        }
    }

    /// Runs `op` on the transaction.
    fn apply(&self, op: TxnOp, data: &mut TxnData) {
        match op {
            TxnOp::Store(oid, base, bytes, merge, reserved) => {
                self.store(data, oid, base, bytes, merge, reserved)
            }
            TxnOp::CheckCurrent(oid, tid) => {
                if data.failed.is_none()
                    && let Some(t) = data.txn.as_mut()
                    && let Err(e) = t.check_current(oid, tid)
                {
                    data.failed = Some(WireError::from(&e));
                }
            }
            TxnOp::Vote(id) => self.vote(data, id),
            TxnOp::Finish(id) => self.finish(data, id, false),
            TxnOp::Commit(id) => self.finish(data, id, true),
            TxnOp::Abort => {
                if let Some(t) = data.txn.take() {
                    t.abort();
                }
                data.held = Reservation::default();
            }
        }
    }

    fn store(
        &self,
        data: &mut TxnData,
        oid: Oid,
        base: Tid,
        bytes: Vec<u8>,
        merge: Option<String>,
        reserved: Reservation,
    ) {
        let TxnData {
            txn,
            failed,
            stored,
            mergeable,
            held,
        } = data;
        if failed.is_none()
            && let Some(t) = txn.as_mut()
        {
            held.absorb(reserved);
            let merge = merge.filter(|_| self.shared.options.merge.is_some());
            if let Some(identity) = merge {
                // The copy kept to merge holds memory too.
                let Some(copy) = self.shared.memory.try_reserve(bytes.len()) else {
                    *failed = Some(self.memory_full());
                    return;
                };
                held.absorb(copy);
                mergeable.insert(oid, (identity, bytes.clone()));
            } else {
                // Stored again without an identity: no longer merged.
                mergeable.remove(&oid);
            }
            match t.store(oid, base, bytes) {
                Ok(()) => stored.push((oid, base)),
                Err(e) => *failed = Some(WireError::from(&e)),
            }
        }
    }

    /// The error of a transaction that found no room in the client memory.
    pub(super) fn memory_full(&self) -> WireError {
        WireError::Server {
            message: memory::full_message(self.shared.memory.bytes_max()),
        }
    }

    fn vote(&self, data: &mut TxnData, id: u64) {
        let result = match (data.failed.clone(), data.txn.as_mut()) {
            (Some(e), _) => Err(e),
            (None, Some(t)) => t
                .vote()
                .map(|()| Response::Voted)
                .map_err(|e| self.wire_error(e, &data.stored)),
            (None, None) => Err(WireError::Server {
                message: "the transaction ended".into(),
            }),
        };
        if let Err(e) = &result {
            data.failed.get_or_insert_with(|| e.clone());
        }
        self.reply(id, result);
    }

    /// A `Finish`, or with `commit` a `Commit` (vote, merges and finish).
    fn finish(&self, data: &mut TxnData, id: u64, commit: bool) {
        let result = match (data.failed.clone(), data.txn.take()) {
            (Some(e), t) => {
                if let Some(t) = t {
                    t.abort();
                }
                data.mergeable.clear();
                data.held = Reservation::default();
                Err(e)
            }
            (None, Some(t)) => {
                // The waker leaves this commit's event to the pump below.
                self.shared.finishing.fetch_add(1, Ordering::SeqCst);
                let result = if commit {
                    self.merge_and_finish(t, &data.mergeable)
                } else {
                    t.finish().map(|tid| (tid, Vec::new()))
                };
                // The stores are written (or dropped): their memory is free.
                data.mergeable.clear();
                data.held = Reservation::default();
                // Broadcast it (and whatever else is waiting) before the
                // reply: the reply's write carries this client's invalidation.
                self.shared.pump(Some(self.outbox.id));
                self.shared.finishing.fetch_sub(1, Ordering::SeqCst);
                // Again: an event published while `finishing` hid it from the
                // waker (before the reply, whose write may block on a slow
                // client).
                self.shared.pump(Some(self.outbox.id));
                result
                    .map(|(tid, merged)| Response::Finished { tid: tid.0, merged })
                    .map_err(|e| self.wire_error(e, &data.stored))
            }
            (None, None) => Err(WireError::Server {
                message: "the transaction ended".into(),
            }),
        };
        self.reply(id, result);
    }
}

impl TxnActor {
    pub(super) fn new(txn: Box<dyn StorageTransaction>) -> Arc<TxnActor> {
        Arc::new(TxnActor {
            state: Mutex::new(ActorState {
                data: TxnData {
                    txn: Some(txn),
                    failed: None,
                    stored: Vec::new(),
                    mergeable: HashMap::new(),
                    held: Reservation::default(),
                },
                queue: VecDeque::new(),
                running: false,
            }),
        })
    }

    /// Runs `op` after the ones before it: here when it is quick and nothing is
    /// queued. An op that may wait, with nothing running, comes back as a job for
    /// the caller to run off the connection's reader.
    #[must_use]
    pub(super) fn submit(self: &Arc<Self>, op: TxnOp, ctx: &TxnContext) -> Option<Job> {
        let mut st = self.state.lock();
        if st.running {
            st.queue.push_back(op);
            return None;
        }
        if !op.may_wait() {
            ctx.apply(op, &mut st.data);
            return None;
        }
        st.queue.push_back(op);
        st.running = true;
        drop(st);
        let actor = Arc::clone(self);
        let ctx = ctx.clone();
        Some(Box::new(move || actor.drain(&ctx)))
    }

    /// On a worker: runs the queued ops in order, without holding the lock.
    fn drain(&self, ctx: &TxnContext) {
        let mut st = self.state.lock();
        while let Some(op) = st.queue.pop_front() {
            let mut data = std::mem::take(&mut st.data);
            drop(st);
            ctx.apply(op, &mut data);
            st = self.state.lock();
            st.data = data;
        }
        st.running = false;
    }
}

pub(super) enum TxnSlot {
    /// The transaction, and the bytes stored so far.
    Running(Arc<TxnActor>, u64),
    /// `begin` failed: every vote or finish gets this error.
    Failed(WireError),
}

#[cfg(test)]
mod tests;
