//! The client's transactions: stores and checks are sent without waiting, a vote
//! or a finish waits for its reply, and a finish caches the transaction's own
//! writes once its invalidation is applied.
//!
//! Invariants:
//! - `finish` returns only once the invalidation of its own transaction was applied
//!   (or the connection was lost), so `last_tid() >= tid` afterwards.
//! - A transaction is bound to the connection it began on; once that connection is
//!   lost, every call on it fails with `Disconnected` until it is aborted.
//! - At most `TRANSACTIONS_PER_CONNECTION_MAX` are open at once (the server's
//!   limit): `begin` waits for a [`Slot`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::link::Link;
use super::{Inner, unexpected};
use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::meta::Revision;
use crate::net::protocol::{ClientMessage, Request, Response, TRANSACTIONS_PER_CONNECTION_MAX};
use crate::pending::RECORD_BYTES_MAX;
use crate::storage::{Resolver, StorageTransaction};

/// One of the open-transaction slots, released when dropped.
pub(super) struct Slot(Arc<Inner>);

impl Slot {
    /// Waits up to `wait_timeout` for a free slot.
    pub(super) fn take(inner: &Arc<Inner>) -> Result<Slot> {
        let deadline = Instant::now() + inner.options.wait_timeout;
        let mut open = inner.open_transactions.lock();
        while *open >= TRANSACTIONS_PER_CONNECTION_MAX {
            if inner
                .transaction_ended
                .wait_until(&mut open, deadline)
                .timed_out()
                && *open >= TRANSACTIONS_PER_CONNECTION_MAX
            {
                return Err(Error::LimitExceeded {
                    what: "open transactions on one connection",
                    len: *open as u64 + 1,
                    max: TRANSACTIONS_PER_CONNECTION_MAX as u64,
                });
            }
        }
        *open += 1;
        Ok(Slot(Arc::clone(inner)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *self.0.open_transactions.lock() -= 1;
        self.0.transaction_ended.notify_one();
    }
}

pub(super) struct ClientTransaction {
    _slot: Slot,
    inner: Arc<Inner>,
    link: Arc<Link>,
    txn: u64,
    voted: bool,
    /// The connection was lost: every call fails until abort.
    doomed: bool,
    ended: bool,
    /// What this transaction stored, for the cache once it commits (at most
    /// `OWN_WRITES_CACHED_BYTES_MAX` bytes of data are kept).
    written: HashMap<Oid, Vec<u8>>,
    written_bytes: usize,
}

/// Most bytes of its own writes one transaction keeps to cache after its commit.
const OWN_WRITES_CACHED_BYTES_MAX: usize = 1 << 20;

impl ClientTransaction {
    /// Transaction `txn`, just begun on `link`, holding `slot`.
    pub(super) fn new(
        inner: Arc<Inner>,
        link: Arc<Link>,
        txn: u64,
        slot: Slot,
    ) -> ClientTransaction {
        ClientTransaction {
            inner,
            link,
            txn,
            voted: false,
            doomed: false,
            ended: false,
            written: HashMap::new(),
            written_bytes: 0,
            _slot: slot,
        }
    }
    fn check(&mut self) -> Result<()> {
        self.inner.check_open()?;
        if self.doomed || !self.link.is_alive() {
            self.doomed = true;
            return Err(self.inner.link_lost(&self.link));
        }
        Ok(())
    }

    fn doom_on_disconnect<T>(&mut self, result: Result<T>) -> Result<T> {
        if let Err(Error::Disconnected { .. }) = &result {
            self.doomed = true;
        }
        result
    }

    fn send(&mut self, message: ClientMessage) -> Result<()> {
        let result = self.inner.send(&self.link, &message, false);
        self.doom_on_disconnect(result)
    }
}

impl StorageTransaction for ClientTransaction {
    fn store(&mut self, oid: Oid, base_tid: Tid, data: Vec<u8>) -> Result<()> {
        self.send_store(oid, base_tid, data, None)
    }

    fn store_mergeable(
        &mut self,
        oid: Oid,
        base_tid: Tid,
        data: Vec<u8>,
        merge: &str,
    ) -> Result<()> {
        self.send_store(oid, base_tid, data, Some(merge))
    }

    fn check_current(&mut self, oid: Oid, tid: Tid) -> Result<()> {
        self.check()?;
        if self.voted {
            return Err(Error::AlreadyVoted);
        }
        self.send(ClientMessage::CheckCurrent {
            txn: self.txn,
            oid: oid.0,
            tid: tid.0,
        })
    }

    fn vote(&mut self) -> Result<()> {
        self.check()?;
        if self.voted {
            return Err(Error::AlreadyVoted);
        }
        let result = self
            .inner
            .call_on(&self.link, Request::Vote { txn: self.txn });
        match self.doom_on_disconnect(result)? {
            Response::Voted => {
                self.voted = true;
                Ok(())
            }
            other => Err(unexpected(other)),
        }
    }

    /// The server merges the stores whose merge identity it registered; the
    /// resolver is not used (conflicts the server reports are the caller's).
    fn commit_resolving(self: Box<Self>, _resolver: Resolver<'_>) -> Result<(Tid, Vec<Oid>)> {
        (*self).complete()
    }

    fn finish(self: Box<Self>) -> Result<Tid> {
        (*self).complete().map(|(tid, _)| tid)
    }

    fn abort(mut self: Box<Self>) {
        self.end();
    }
}

impl ClientTransaction {
    fn send_store(
        &mut self,
        oid: Oid,
        base_tid: Tid,
        data: Vec<u8>,
        merge: Option<&str>,
    ) -> Result<()> {
        self.check()?;
        if self.voted {
            return Err(Error::AlreadyVoted);
        }
        if data.len() > RECORD_BYTES_MAX {
            return Err(Error::LimitExceeded {
                what: "object revision",
                len: data.len() as u64,
                max: RECORD_BYTES_MAX as u64,
            });
        }
        if self.written_bytes + data.len() <= OWN_WRITES_CACHED_BYTES_MAX {
            self.written_bytes += data.len();
            if let Some(old) = self.written.insert(oid, data.clone()) {
                self.written_bytes -= old.len();
            }
        } else {
            // Not kept: an older copy of the same object must not be cached either.
            if let Some(old) = self.written.remove(&oid) {
                self.written_bytes -= old.len();
            }
        }
        self.send(ClientMessage::Store {
            txn: self.txn,
            oid: oid.0,
            base_tid: base_tid.0,
            data,
            merge: merge.map(str::to_owned),
        })
    }

    /// Finishes (voting first when not voted: one `Commit` round trip); the tid and
    /// the stores the server merged.
    fn complete(mut self) -> Result<(Tid, Vec<Oid>)> {
        let inner = Arc::clone(&self.inner);
        let _closing = inner.closing.read();
        self.check()?;
        // Not voted yet: vote and finish in one round trip.
        let request = if self.voted {
            Request::Finish { txn: self.txn }
        } else {
            Request::Commit { txn: self.txn }
        };
        let epoch = self.inner.cache.lock().epoch;
        let result = self.inner.call_on(&self.link, request);
        self.ended = true;
        match self.doom_on_disconnect(result)? {
            Response::Finished { tid, merged } => {
                let tid = Tid(tid);
                self.inner.wait_published(tid, &self.link);
                // Our own writes are the revisions at `tid`: cached as a load at
                // snapshot `tid` would be (rule 3 of the ordering contract), once
                // the invalidation of `tid` is applied. A merged store committed
                // the server's data instead: that is cached when the reply has it.
                let mut written = std::mem::take(&mut self.written);
                for m in &merged {
                    written.remove(&Oid(m.oid));
                }
                let mut cache = self.inner.cache.lock();
                if cache.last_tid >= tid {
                    let merged_data = merged
                        .iter()
                        .filter_map(|m| Some((Oid(m.oid), m.data.clone()?)));
                    for (oid, data) in written.into_iter().chain(merged_data) {
                        cache.insert_loaded(oid, tid, epoch, &Revision { tid, data });
                    }
                }
                Ok((tid, merged.iter().map(|m| Oid(m.oid)).collect()))
            }
            other => Err(unexpected(other)),
        }
    }
    fn end(&mut self) {
        if !std::mem::replace(&mut self.ended, true) && self.link.is_alive() {
            let _ = self
                .inner
                .send(&self.link, &ClientMessage::Abort { txn: self.txn }, true);
        }
    }
}

impl Drop for ClientTransaction {
    fn drop(&mut self) {
        self.end();
    }
}
