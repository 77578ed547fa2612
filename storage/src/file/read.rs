//! Reads of the file storage: loads, history, and walks over the transactions.
//!
//! Invariants:
//! - Every read goes through the map and the index taken under one reader lock
//!   (a pack swaps both under the write lock), and sees nothing past the published
//!   end: a snapshot beyond `last_tid` is read as `last_tid`.
//! - Revision chains are walked along back-pointers that strictly decrease, so a
//!   damaged pointer ends the walk with `Corrupted`, never a loop.
//! - An index entry is checked to point at a record of its own object before the
//!   record is used.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use memmap2::Mmap;

use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::meta::{ChangeInfo, Revision, RevisionInfo, TransactionInfo};
use crate::storage::TransactionIter;

use super::format;
use super::{FileStorage, Shared};

/// One object revision, as [`FileStorage::scan_records`] shows it.
#[derive(Debug)]
pub struct RecordVisit<'a> {
    /// The transaction that wrote the revision.
    pub tid: Tid,
    /// The object.
    pub oid: Oid,
    /// Whether this is the object's newest revision.
    pub newest: bool,
    /// The revision's data, in the map of the file.
    pub data: &'a [u8],
}

/// Every `TID_MARK_EVERY`-th transaction's (tid, position), built lazily by header-
/// only walks and extended as the file grows; reset when a pack swaps the file.
#[derive(Default)]
pub(super) struct TidMarks {
    file_id: u64,
    marks: Vec<(Tid, u64)>,
    /// Where the next transaction to sample starts (0: nothing sampled yet).
    scanned_to: u64,
    transactions: u64,
}

/// One tid mark per this many transactions.
const TID_MARK_EVERY: u64 = 64;

impl FileStorage {
    /// Calls `visit` for every data record of every visible transaction, oldest
    /// first, saying whether it is its object's newest revision. For tools that read
    /// a whole file (analyze, refs); cost: one pass over the file.
    pub fn scan_records(&self, mut visit: impl FnMut(&RecordVisit<'_>)) -> Result<()> {
        self.shared.check_open()?;
        let end = self.shared.published_end.load(Ordering::Acquire);
        let (map, newest_of) = {
            let reader = self.shared.reader.read();
            (Arc::clone(&reader.map), reader.index.clone())
        };
        let mut pos = self.shared.file().header.data_start;
        while pos < end {
            let t = format::transaction_at(&map, pos)
                .map_err(|p| self.shared.corrupted(pos, p.describe()))?;
            for (rpos, r) in &t.records {
                visit(&RecordVisit {
                    tid: t.tid,
                    oid: r.oid,
                    newest: newest_of.get(r.oid) == Some(*rpos),
                    data: r.data,
                });
            }
            pos = t.end();
        }
        Ok(())
    }

    /// The last `n` committed transactions, oldest first, found by walking the file
    /// backwards along the records' trailing lengths (cost: `n` records, not the file).
    pub fn last_transactions(&self, n: usize) -> Result<Vec<TransactionInfo>> {
        self.shared.check_open()?;
        // The end and the map under one read lock: a pack swaps both under the write lock.
        let (end, map) = {
            let reader = self.shared.reader.read();
            let end = self.shared.published_end.load(Ordering::Acquire);
            (end, Arc::clone(&reader.map))
        };
        let data_start = self.shared.file().header.data_start;
        let mut found = Vec::with_capacity(n.min(1024));
        let mut at = end;
        while found.len() < n && at > data_start {
            let pos = format::length_before(&map, at)
                .and_then(|len| at.checked_sub(len))
                .filter(|&p| p >= data_start)
                .ok_or_else(|| {
                    self.shared
                        .corrupted(at, "no transaction trailer ends here")
                })?;
            let t = format::transaction_at(&map, pos)
                .map_err(|p| self.shared.corrupted(pos, p.describe()))?;
            found.push(transaction_info(&t));
            at = pos;
        }
        found.reverse();
        Ok(found)
    }
}

impl Shared {
    #[inline]
    pub(super) fn load(&self, oid: Oid, snapshot: Tid) -> Result<Revision> {
        self.check_open()?;
        let snapshot = snapshot.min(self.last_tid());
        let mut found = None;
        self.walk_revisions(oid, |r| {
            if r.tid <= snapshot {
                found = Some(Revision {
                    tid: r.tid,
                    data: r.data.to_vec(),
                });
                false
            } else {
                true
            }
        })?;
        found.ok_or(Error::NotFoundAtSnapshot { oid, snapshot })
    }

    #[inline]
    pub(super) fn load_revision(&self, oid: Oid, tid: Tid) -> Result<Vec<u8>> {
        self.check_open()?;
        let visible = tid <= self.last_tid();
        let mut found = None;
        self.walk_revisions(oid, |r| {
            if visible && r.tid == tid {
                found = Some(r.data.to_vec());
            }
            visible && r.tid > tid
        })?;
        found.ok_or(Error::NoSuchRevision { oid, tid })
    }

    pub(super) fn history(&self, oid: Oid, limit: usize) -> Result<Vec<RevisionInfo>> {
        self.check_open()?;
        let last = self.last_tid();
        let mut revisions = Vec::new();
        let mut visible = false;
        self.walk_revisions(oid, |r| {
            if r.tid <= last {
                visible = true;
                if revisions.len() < limit {
                    revisions.push(RevisionInfo {
                        tid: r.tid,
                        size: r.data.len() as u64,
                    });
                }
            }
            !visible || revisions.len() < limit
        })?;
        if !visible {
            // Created by a transaction not yet visible.
            return Err(Error::NoSuchObject { oid });
        }
        Ok(revisions)
    }

    pub(super) fn transactions(&self, from: Tid, to: Tid) -> Result<TransactionIter<'_>> {
        self.check_open()?;
        // The end and the map under one read lock: a pack swaps both under the write lock.
        let (end, map) = {
            let reader = self.reader.read();
            let end = self.published_end.load(Ordering::Acquire);
            (end, Arc::clone(&reader.map))
        };
        let pos = self.walk_start(&map, end, from);
        Ok(Box::new(TransactionWalk {
            shared: self,
            map,
            pos,
            end,
            from,
            to,
        }))
    }

    /// The data record at `pos`, checked to be a revision of `oid`.
    pub(super) fn record<'m>(
        &self,
        map: &'m [u8],
        pos: u64,
        oid: Oid,
    ) -> Result<format::DataRecord<'m>> {
        let r = format::data_record_at(map, pos).map_err(|what| self.corrupted(pos, what))?;
        if r.oid != oid {
            return Err(self.corrupted(
                pos,
                format!("index entry for object {oid} points at object {}", r.oid),
            ));
        }
        Ok(r)
    }

    /// The tid of the data record at `pos` (a revision of `oid`), without the CRC
    /// check: the vote reads it for every stored object, and the record was either
    /// written by this process or will be CRC-checked when loaded.
    pub(super) fn newest_tid_at(&self, map: &[u8], pos: u64, oid: Oid) -> Result<Tid> {
        let (r, _) = format::data_header_at(map, pos).map_err(|what| self.corrupted(pos, what))?;
        if r.oid != oid {
            return Err(self.corrupted(
                pos,
                format!("index entry for object {oid} points at object {}", r.oid),
            ));
        }
        Ok(r.tid)
    }

    /// Walks the revisions of `oid` newest first, calling `visit` until it says stop.
    pub(super) fn walk_revisions(
        &self,
        oid: Oid,
        mut visit: impl FnMut(&format::DataRecord<'_>) -> bool,
    ) -> Result<()> {
        let reader = self.reader.read();
        let mut pos = reader.index.get(oid).ok_or(Error::NoSuchObject { oid })?;
        loop {
            let r = self.record(&reader.map, pos, oid)?;
            if !visit(&r) || r.prev == 0 {
                return Ok(());
            }
            // Back-pointers strictly decrease, so the walk ends.
            if r.prev >= pos {
                return Err(self.corrupted(
                    pos,
                    format!("back-pointer {} does not point backwards", r.prev),
                ));
            }
            pos = r.prev;
        }
    }

    /// The data of revision `tid` of `oid`, which is in the index's history (a
    /// revision some snapshot read), or `None` if it is gone (packed away).
    pub(super) fn indexed_revision(&self, oid: Oid, tid: Tid) -> Result<Option<Vec<u8>>> {
        let mut found = None;
        self.walk_revisions(oid, |r| {
            if r.tid == tid {
                found = Some(r.data.to_vec());
            }
            r.tid > tid
        })?;
        Ok(found)
    }

    /// Where a walk for transactions with tid >= `from` may start: at a sampled
    /// transaction with a smaller tid (the walk skips the few before `from`).
    pub(super) fn walk_start(&self, map: &[u8], end: u64, from: Tid) -> u64 {
        let header = self.file().header;
        let mut m = self.tid_marks.lock();
        if m.file_id != header.file_id || m.scanned_to < header.data_start {
            *m = TidMarks {
                file_id: header.file_id,
                scanned_to: header.data_start,
                ..TidMarks::default()
            };
        }
        let mut pos = m.scanned_to;
        while pos < end {
            let Ok((len, tid)) = format::peek_transaction(map, pos) else {
                break;
            };
            if m.transactions.is_multiple_of(TID_MARK_EVERY) {
                m.marks.push((tid, pos));
            }
            m.transactions += 1;
            pos += len;
        }
        m.scanned_to = pos;
        // The mark must name a transaction of this map (a pack may have swapped the
        // file between the caller taking its map and this look-up).
        match m.marks.partition_point(|(tid, _)| *tid < from) {
            0 => header.data_start,
            i => {
                let (tid, pos) = m.marks[i - 1];
                match format::peek_transaction(map, pos) {
                    Ok((_, found)) if found == tid => pos,
                    _ => header.data_start,
                }
            }
        }
    }
}

fn transaction_info(t: &format::TxnView<'_>) -> TransactionInfo {
    TransactionInfo {
        tid: t.tid,
        meta: t.meta(),
        changes: t
            .records
            .iter()
            .map(|(_, r)| ChangeInfo {
                oid: r.oid,
                size: r.data.len() as u64,
            })
            .collect(),
    }
}

/// Iterates committed transactions by walking records forward.
struct TransactionWalk<'a> {
    shared: &'a Shared,
    map: Arc<Mmap>,
    pos: u64,
    end: u64,
    from: Tid,
    to: Tid,
}

impl Iterator for TransactionWalk<'_> {
    type Item = Result<TransactionInfo>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.pos < self.end {
            let at = self.pos;
            let fail = |what: String| Some(Err(self.shared.corrupted(at, what)));
            let (len, tid) = match format::peek_transaction(&self.map, at) {
                Ok(v) => v,
                Err(format::RecordProblem::Zeros) => {
                    self.pos = self.end;
                    return fail("unexpected end of records".into());
                }
                Err(format::RecordProblem::Bad(what)) => {
                    self.pos = self.end;
                    return fail(what);
                }
            };
            if tid > self.to {
                self.pos = self.end;
                return None;
            }
            self.pos = at + len;
            if tid < self.from {
                continue;
            }
            return match format::transaction_at(&self.map, at) {
                Ok(t) => Some(Ok(transaction_info(&t))),
                Err(format::RecordProblem::Zeros) => {
                    self.pos = self.end;
                    fail("unexpected end of records".into())
                }
                Err(format::RecordProblem::Bad(what)) => {
                    self.pos = self.end;
                    fail(what)
                }
            };
        }
        None
    }
}
