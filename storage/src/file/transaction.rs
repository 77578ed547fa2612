//! The file storage's transaction: store, vote (conflicts, merges, the record),
//! finish (staging the record for the group commit) and abort.
//!
//! Invariants:
//! - From vote to the staging of its record in finish, a transaction holds the
//!   commit lock: no other transaction finishes meanwhile, so the newest revision
//!   of every object stays what the vote found, and the record's tid and position
//!   stay the next ones.
//! - Votes see finished transactions before they are written and indexed, through
//!   `CommitState::pending`, for conflicts and back-pointers alike.
//! - A transaction counts in `SyncState::in_flight` from begin until its record
//!   is staged, or until it is dropped or its vote fails: a gathering group-commit
//!   leader waits only for transactions that will write.
//! - A copied transaction (recover, restore) keeps its source's tid, which must
//!   increase, and skips the conflict check: it is history, not a change.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::{ArcMutexGuard, RawMutex};

use crate::conflicts::{self, Conflicting};
use crate::error::{ConflictError, Error, Result};
use crate::ids::{Oid, OidMap, Tid};
use crate::meta::TransactionMeta;
use crate::pending::{PendingWrites, RECORD_BYTES_MAX};
use crate::storage::{Resolver, StorageTransaction};

use super::format;
use super::group_commit::{StagedTxn, Unpublished};
use super::{FileStorage, Reader, Shared};

/// Guarded by the commit lock.
pub(super) struct CommitState {
    /// End of the finished records, written or staged (the next record goes here).
    pub(super) end: u64,
    /// Tid of the last finished transaction.
    pub(super) last_tid: Tid,
    /// For every oid of a finished transaction not yet in the index: its newest
    /// (tid, position). Votes consult it first, so conflicts and back-pointers see
    /// finished transactions before they are written and indexed.
    pub(super) pending: OidMap<(Tid, u64)>,
}

impl CommitState {
    /// The pending (tid, position) of `oid`, unless the index already reflects it
    /// (entries go stale once their batch is indexed, and are pruned at each finish).
    pub(super) fn pending_newer(&self, oid: Oid, reader: &Reader) -> Option<(Tid, u64)> {
        self.pending
            .get(&oid)
            .copied()
            .filter(|(tid, _)| *tid > reader.indexed_tid)
    }
}

impl FileStorage {
    /// Writes a transaction taken from another file with its own tid, which must be
    /// greater than this file's last tid, and raises the oid allocator to at least
    /// `next_oid` (the source's high-water mark), so no oid is ever reused. No
    /// conflict checks: used by recovery and restore to rebuild history.
    pub fn copy_transaction(
        &self,
        tid: Tid,
        meta: TransactionMeta,
        next_oid: u64,
        objects: Vec<(Oid, Vec<u8>)>,
    ) -> Result<()> {
        let mut txn = FileTransaction::begin(&self.shared, meta, Some(tid))?;
        self.shared.next_oid.fetch_max(next_oid, Ordering::AcqRel);
        for (oid, data) in objects {
            txn.store(oid, Tid::ZERO, data)?;
        }
        txn.finish().map(|_| ())
    }
}

impl Shared {
    /// The merged data for conflict `c` through `resolver`, or `None` when it
    /// cannot be merged (a `check_current`, a new or deleted object, the base
    /// revision packed away, or the resolver refuses). Holds the commit lock's
    /// guard only (see `pending_record`).
    fn merge(&self, c: &Conflicting<u64>, resolver: Resolver<'_>) -> Result<Option<Vec<u8>>> {
        let ConflictError {
            oid,
            base_tid,
            current_tid,
        } = c.conflict;
        if !c.stored || base_tid == Tid::ZERO || current_tid == Tid::ZERO {
            return Ok(None);
        }
        let Some(old) = self.indexed_revision(oid, base_tid)? else {
            return Ok(None);
        };
        let committed = self.pending_record(c.at, oid)?;
        Ok(resolver(oid, &old, &committed).filter(|d| d.len() <= RECORD_BYTES_MAX))
    }
}

pub(super) struct FileTransaction {
    shared: Arc<Shared>,
    meta: TransactionMeta,
    writes: PendingWrites,
    /// For a transaction copied from another file (recover, restore): the tid it
    /// keeps. Such a transaction skips conflict checks: it is history, not a change.
    copied_tid: Option<Tid>,
    voted: Option<Voted>,
    /// Counted in `SyncState::in_flight` (until written or dropped).
    in_flight: bool,
}

struct Voted {
    commit: ArcMutexGuard<RawMutex, CommitState>,
    tid: Tid,
    pos: u64,
    record: format::EncodedTxn,
}

impl FileTransaction {
    /// Starts a transaction (a copied one when `copied_tid` is given).
    pub(super) fn begin(
        shared: &Arc<Shared>,
        meta: TransactionMeta,
        copied_tid: Option<Tid>,
    ) -> Result<Box<FileTransaction>> {
        shared.check_writable()?;
        meta.validate()?;
        shared.sync.lock().in_flight += 1;
        Ok(Box::new(FileTransaction {
            shared: Arc::clone(shared),
            meta,
            writes: PendingWrites::default(),
            copied_tid,
            voted: None,
            in_flight: true,
        }))
    }

    /// Leaves `SyncState::in_flight`, once: this transaction writes nothing more.
    fn leave_flight(&mut self) {
        if std::mem::take(&mut self.in_flight) {
            let mut st = self.shared.sync.lock();
            st.in_flight -= 1;
            // Wake a gathering leader only when its group is complete: waking it
            // for every write costs a context switch each on a busy machine.
            if st.group_gathered() {
                self.shared.gather_changed.notify_one();
            }
        }
    }
}

impl Drop for FileTransaction {
    fn drop(&mut self) {
        self.leave_flight();
    }
}

impl FileTransaction {
    /// The vote, merging conflicting stores through `resolver` when given (see
    /// `StorageTransaction::vote_resolving`); returns the merged oids.
    ///
    /// Merging against a revision that is finished but not yet durable is safe:
    /// this transaction's record follows it in the file and a sync covers a
    /// prefix of the file, so this one is never durable (or acknowledged) without
    /// it; a failed write or sync poisons the storage for both.
    fn vote_with(&mut self, resolver: Option<Resolver<'_>>) -> Result<Vec<Oid>> {
        if self.voted.is_some() {
            return Err(Error::AlreadyVoted);
        }
        let shared = Arc::clone(&self.shared);
        shared.check_writable()?;
        let commit = shared.commit.lock_arc();
        // Again under the lock: close or a failure may have happened while waiting.
        shared.check_writable()?;
        // Under the commit lock no transaction finishes: the newest revision of
        // every object stays what this finds (records only move from staging to the
        // file and the index).
        let found = match self.copied_tid {
            Some(_) => Vec::new(),
            None => self.conflicts(&commit, resolver.is_some())?,
        };
        let merged = conflicts::merge_all(found, |c| match resolver {
            Some(resolver) => shared.merge(c, resolver),
            None => Ok(None),
        })?;
        let merged = match merged {
            Ok(merged) => merged,
            Err(conflict) => {
                drop(commit);
                // This transaction writes nothing now: a gathering leader must not
                // wait for it (while it waits below for that leader's sync).
                self.leave_flight();
                // Report only revisions the caller can load: a conflict resolver
                // reads the committed state right away.
                shared.wait_published(conflict.current_tid)?;
                return Err(conflict.into());
            }
        };
        let resolved = self.writes.apply_merges(merged);
        let prevs = self.back_pointers(&commit);
        let len =
            format::transaction_len(&self.meta, self.writes.stores.iter().map(|s| s.data.len()));
        if len > format::TXN_BYTES_MAX {
            return Err(Error::LimitExceeded {
                what: "transaction record",
                len,
                max: format::TXN_BYTES_MAX,
            });
        }
        let tid = self.next_tid(&commit)?;
        let pos = commit.end;
        let record = self.encode(pos, tid, &prevs);
        self.voted = Some(Voted {
            commit,
            tid,
            pos,
            record,
        });
        Ok(resolved)
    }

    /// The expectations the newest revisions no longer meet (all of them when the
    /// vote merges, else the first), each with the newest revision's position.
    fn conflicts(&self, commit: &CommitState, all: bool) -> Result<Vec<Conflicting<u64>>> {
        let shared = &self.shared;
        let reader = shared.reader.read();
        conflicts::find(&self.writes, all, |oid| {
            Ok(
                match (commit.pending_newer(oid, &reader), reader.index.get(oid)) {
                    (Some((tid, pos)), _) => (tid, pos),
                    (None, None) => (Tid::ZERO, 0),
                    (None, Some(pos)) => (shared.newest_tid_at(&reader.map, pos, oid)?, pos),
                },
            )
        })
    }

    /// For each store, the position of its object's newest revision (0: none), which
    /// its data record points back to.
    fn back_pointers(&self, commit: &CommitState) -> Vec<u64> {
        let reader = self.shared.reader.read();
        self.writes
            .stores
            .iter()
            .map(|s| match commit.pending_newer(s.oid, &reader) {
                Some((_, pos)) => pos,
                None => reader.index.get(s.oid).unwrap_or(0),
            })
            .collect()
    }

    /// The tid this transaction commits with: the next after the last one, or the
    /// copied one, which must be greater.
    fn next_tid(&self, commit: &CommitState) -> Result<Tid> {
        match self.copied_tid {
            None if commit.last_tid == Tid::MAX => Err(self.shared.corrupted(
                commit.end,
                "the last transaction id is the largest possible: no later transaction can commit",
            )),
            None => Ok(Tid::next_after(commit.last_tid)),
            Some(tid) if tid > commit.last_tid => Ok(tid),
            Some(tid) => Err(Error::TidNotIncreasing {
                tid,
                last: commit.last_tid,
            }),
        }
    }

    /// The transaction's record, to be written at `pos`.
    fn encode(&self, pos: u64, tid: Tid, prevs: &[u64]) -> format::EncodedTxn {
        let objects: Vec<format::DataToWrite<'_>> = self
            .writes
            .stores
            .iter()
            .zip(prevs)
            .map(|(s, &prev)| format::DataToWrite {
                oid: s.oid,
                prev,
                data: &s.data,
            })
            .collect();
        let next_oid = self.shared.next_oid.load(Ordering::Acquire);
        format::encode_stampable(pos, tid, next_oid, &self.meta, &objects)
    }
}

impl StorageTransaction for FileTransaction {
    fn store(&mut self, oid: Oid, base_tid: Tid, data: Vec<u8>) -> Result<()> {
        if self.voted.is_some() {
            return Err(Error::AlreadyVoted);
        }
        if self.copied_tid.is_some() {
            self.shared
                .next_oid
                .fetch_max(oid.0.saturating_add(1), Ordering::AcqRel);
        } else if oid != Oid::ROOT && oid.0 >= self.shared.next_oid.load(Ordering::Acquire) {
            return Err(Error::UnallocatedOid { oid });
        }
        self.writes.store(oid, base_tid, data)
    }

    fn check_current(&mut self, oid: Oid, tid: Tid) -> Result<()> {
        if self.voted.is_some() {
            return Err(Error::AlreadyVoted);
        }
        self.writes.check_current(oid, tid);
        Ok(())
    }

    fn vote(&mut self) -> Result<()> {
        self.vote_with(None).map(drop)
    }

    fn vote_resolving(&mut self, resolver: Resolver<'_>) -> Result<Option<Vec<Oid>>> {
        self.vote_with(Some(resolver)).map(Some)
    }

    fn merges_conflicts(&self) -> bool {
        true
    }

    fn finish(self: Box<Self>) -> Result<Tid> {
        let shared = Arc::clone(&self.shared);
        let (tid, end) = self.stage()?;
        shared.wait_durable(end)?;
        shared.maybe_save_index(end);
        Ok(tid)
    }

    fn abort(self: Box<Self>) {}
}

impl FileTransaction {
    /// Votes if not voted yet and stages the record for the group commit, without
    /// waiting for it to become durable: returns its tid and the end of its record,
    /// which `Shared::wait_durable` waits for. `finish` waits at once; a batch of
    /// copied transactions (`FileStorage::restore_batch`) waits once for its last.
    pub(super) fn stage(mut self: Box<Self>) -> Result<(Tid, u64)> {
        if self.voted.is_none() {
            self.vote()?;
        }
        let Voted {
            mut commit,
            tid,
            pos,
            record:
                format::EncodedTxn {
                    bytes: record,
                    positions,
                    body_crc,
                },
        } = self.voted.take().expect("voted above");
        let shared = Arc::clone(&self.shared);
        let end = pos + record.len() as u64;
        // Stage the record; the group's leader writes it (see `write_staged`).
        let oids: Arc<[Oid]> = self.writes.oids().into();
        let indexed_tid = shared.reader.read().indexed_tid;
        commit.pending.retain(|_, (t, _)| *t > indexed_tid);
        for (oid, p) in oids.iter().zip(&positions) {
            commit.pending.insert(*oid, (tid, *p));
        }
        {
            let mut staging = shared.staging.lock();
            debug_assert_eq!(staging.start + staging.bytes.len() as u64, pos);
            if staging.bytes.is_empty() {
                staging.bytes = record;
            } else {
                staging.bytes.extend_from_slice(&record);
            }
            staging.txns.push(StagedTxn {
                tid,
                pos,
                body_crc,
                end,
                oids: Arc::clone(&oids),
                positions,
            });
        }
        commit.end = end;
        commit.last_tid = tid;
        {
            let mut st = shared.sync.lock();
            st.written_end = end;
            st.unpublished.push_back(Unpublished { tid, end, oids });
            if std::mem::take(&mut self.in_flight) {
                st.in_flight -= 1;
            }
            if st.group_gathered() {
                shared.gather_changed.notify_one();
            }
        }
        drop(commit);
        Ok((tid, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::FileOptions;
    use crate::storage::Storage;

    /// A transaction whose vote found a conflict writes nothing more: a gathering
    /// group-commit leader must not wait for it (it waited out the whole gather
    /// time for every conflict, while the loser waited for that leader's sync).
    #[test]
    fn a_conflicting_vote_leaves_the_flight_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FileStorage::open(dir.path().join("data.zdb"), FileOptions::new()).unwrap();
        let oid = storage.new_oid().unwrap();
        let mut first = storage.begin(TransactionMeta::default()).unwrap();
        first.store(oid, Tid::ZERO, b"a".to_vec()).unwrap();
        first.finish().unwrap();
        let mut stale = storage.begin(TransactionMeta::default()).unwrap();
        stale.store(oid, Tid::ZERO, b"b".to_vec()).unwrap();
        assert_eq!(storage.shared.sync.lock().in_flight, 1);
        assert!(matches!(stale.vote(), Err(Error::Conflict(_))));
        assert_eq!(
            storage.shared.sync.lock().in_flight,
            0,
            "still counted as on its way to a write"
        );
        stale.abort();
        assert_eq!(storage.shared.sync.lock().in_flight, 0);
    }
}
