//! When and how the in-memory index is saved beside the data file (`PATH.index`):
//! at close, on request, and after every `index_save_interval_bytes` of new data.
//!
//! Invariants:
//! - The saved index is a cache: a failed save is logged and never fails a commit
//!   or a close whose data is durable; an open without it scans the file.
//! - An index is saved only once the data it covers is durable, and only for the
//!   file it was taken from (a pack writes its own).

use std::sync::atomic::Ordering;

use crate::error::{Error, Result};

use super::index::{self, SavedIndexHeader};
use super::{FileStorage, Shared, index_path};

impl FileStorage {
    /// Saves the index now (it is also saved at close and every
    /// `index_save_interval_bytes` of new data).
    pub fn save_index(&self) -> Result<()> {
        self.shared.check_writable()?;
        self.shared.save_index()
    }
}

impl Shared {
    /// Saves the index for the durable data. One save at a time; a failure to save
    /// is logged and returned but does not stop commits (the file stays authoritative:
    /// the saved index is a cache, and an open without it scans the file).
    pub(super) fn save_index(&self) -> Result<()> {
        if self.index_saving.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let result = (|| {
            let (saved, index) = {
                let reader = self.reader.read();
                let saved = SavedIndexHeader {
                    file_id: self.file().header.file_id,
                    covered_end: reader.indexed_end,
                    last_tid: reader.indexed_tid,
                    next_oid: self.next_oid.load(Ordering::Acquire),
                };
                (saved, reader.index.clone())
            };
            if saved.covered_end == self.saved_index_end.load(Ordering::Acquire)
                && saved.next_oid == self.saved_next_oid.load(Ordering::Acquire)
            {
                return Ok(());
            }
            self.wait_durable(saved.covered_end)?;
            if self.file().header.file_id != saved.file_id {
                // A pack replaced the file since the snapshot, and wrote its own index.
                return Ok(());
            }
            let bytes = index::encode_saved(&saved, &index);
            let ipath = index_path(&self.path);
            index::write_saved(&*self.options.io, &ipath, &bytes)
                .map_err(|e| Error::io(&ipath, "saving the index", e))?;
            self.saved_index_end
                .store(saved.covered_end, Ordering::Release);
            self.saved_next_oid.store(saved.next_oid, Ordering::Release);
            Ok(())
        })();
        self.index_saving.store(false, Ordering::Release);
        if let Err(e) = &result {
            log::warn!(
                "{}: could not save the index ({e}); the committed data is not affected: the \
                 index is saved again later, and an open without it rebuilds it by scanning",
                self.path.display()
            );
        }
        result
    }

    /// Saves the index after every `index_save_interval_bytes` of new data. A failure
    /// (logged by `save_index`) never fails the commit that triggered it, which is
    /// durable; the next attempt waits for another interval.
    pub(super) fn maybe_save_index(&self, end: u64) {
        let interval = self.options.index_save_interval_bytes;
        let saved = self.saved_index_end.load(Ordering::Acquire);
        let failed = self.index_save_failed_end.load(Ordering::Acquire);
        if end.saturating_sub(saved) >= interval
            && end.saturating_sub(failed) >= interval
            && self.save_index().is_err()
        {
            self.index_save_failed_end.store(end, Ordering::Release);
        }
    }
}
