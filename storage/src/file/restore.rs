//! Restore: transactions copied from another storage (`zodiac copy`) written with
//! the tid and metadata they have there.
//!
//! Invariants:
//! - A restored transaction's tid is greater than every finished one (checked at
//!   its vote, under the commit lock); it skips the conflict check (it is history,
//!   not a change) and raises the oid allocator past every oid it writes, so
//!   `new_oid` never hands one of them out.
//! - Nothing is acknowledged before it is durable (as the storage's durability
//!   says): `restore` returns after its record's sync, `restore_batch` after the
//!   sync of its last record. A batch shares one sync per `RESTORE_BATCH_BYTES_MAX`
//!   of records, which bounds the staged bytes held in memory.
//! - A batch that fails part way leaves the transactions before the failing one
//!   durable (it waits for them before returning the error) and none after it.

use crate::error::Result;
use crate::ids::{Oid, Tid};
use crate::meta::{CopiedTransaction, TransactionMeta};
use crate::storage::StorageTransaction;

use super::FileStorage;
use super::transaction::FileTransaction;

/// Bytes of records a batch stages before it waits for them to be written and
/// synced (one sync per this many bytes, at most, plus one at the end).
pub const RESTORE_BATCH_BYTES_MAX: u64 = 16 << 20;

impl FileStorage {
    /// Writes one copied transaction (see `Storage::restore`), durable on return.
    pub(super) fn restore_one(
        &self,
        tid: Tid,
        meta: &TransactionMeta,
        records: &[(Oid, Vec<u8>)],
    ) -> Result<()> {
        let end = self.stage_copied(tid, meta, records)?;
        self.wait_restored(end)
    }

    /// Writes copied transactions in order with one sync per
    /// [`RESTORE_BATCH_BYTES_MAX`] of records and one at the end (see
    /// `Storage::restore_batch`).
    pub(super) fn restore_many(&self, transactions: &[CopiedTransaction]) -> Result<()> {
        let mut waited_end = self.data_end();
        let mut staged_end = waited_end;
        for t in transactions {
            match self.stage_copied(t.tid, &t.meta, &t.records) {
                Ok(end) => staged_end = end,
                Err(e) => {
                    // What was staged before is written and made durable before
                    // the error is reported: `last_tid()` then says how far it got.
                    if staged_end > waited_end {
                        self.wait_restored(staged_end)?;
                    }
                    return Err(e);
                }
            }
            if staged_end - waited_end >= RESTORE_BATCH_BYTES_MAX {
                self.wait_restored(staged_end)?;
                waited_end = staged_end;
            }
        }
        if staged_end > waited_end {
            self.wait_restored(staged_end)?;
        }
        Ok(())
    }

    /// Stages one copied transaction for the group commit; returns its record's end.
    fn stage_copied(
        &self,
        tid: Tid,
        meta: &TransactionMeta,
        records: &[(Oid, Vec<u8>)],
    ) -> Result<u64> {
        let mut txn = FileTransaction::begin(&self.shared, meta.clone(), Some(tid))?;
        for (oid, data) in records {
            txn.store(*oid, Tid::ZERO, data.clone())?;
        }
        txn.stage().map(|(_, end)| end)
    }

    /// Waits until everything up to `end` is durable and published.
    fn wait_restored(&self, end: u64) -> Result<()> {
        self.shared.wait_durable(end)?;
        self.shared.maybe_save_index(end);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::FileOptions;
    use crate::file::io::FaultyIoFactory;
    use crate::storage::Storage;
    use std::sync::Arc;

    fn copied(tid: u64, oid: u64) -> CopiedTransaction {
        CopiedTransaction {
            tid: Tid(tid),
            meta: TransactionMeta::default(),
            records: vec![(Oid(oid), vec![tid as u8; 100])],
        }
    }

    /// A batch of small copied transactions shares one sync instead of one each.
    #[test]
    fn a_batch_shares_one_sync() {
        let dir = tempfile::tempdir().unwrap();
        let io = Arc::new(FaultyIoFactory::new());
        let options = FileOptions::new().io(Arc::clone(&io) as Arc<_>);
        let storage = FileStorage::open(dir.path().join("data.zdb"), options).unwrap();
        let batch: Vec<_> = (1..=50).map(|i| copied(1000 + i, i)).collect();
        let before = io.syncs_done();
        storage.restore_batch(&batch).unwrap();
        // One for the records, one for the file's first preallocation.
        let syncs = io.syncs_done() - before;
        assert!(syncs <= 2, "{syncs} syncs for one batch of 50");
        assert_eq!(storage.last_tid(), Tid(1050));
        assert_eq!(
            storage.load(Oid(7), Tid::MAX).unwrap().data,
            vec![1007u64 as u8; 100]
        );
    }

    /// A batch failing part way leaves the transactions before the failure restored.
    #[test]
    fn a_failing_batch_keeps_the_transactions_before_the_failure() {
        let dir = tempfile::tempdir().unwrap();
        let storage = FileStorage::open(dir.path().join("data.zdb"), FileOptions::new()).unwrap();
        let batch = vec![copied(10, 1), copied(20, 2), copied(15, 3), copied(30, 4)];
        let err = storage.restore_batch(&batch).unwrap_err();
        assert!(err.to_string().contains("not after the last tid"), "{err}");
        assert_eq!(storage.last_tid(), Tid(20));
        assert!(storage.load(Oid(4), Tid::MAX).is_err());
    }
}
