//! Group commit: finished transactions are staged, and one leader at a time writes
//! every staged record with one pwrite, syncs once for the whole group, and
//! publishes the group (notifications first, then `last_tid`).
//!
//! Invariants:
//! - Committers only copy their record into `Staging` under the commit lock; the
//!   leader needs only the staging lock to write, so a pack holding the commit
//!   lock can wait for a leader.
//! - A sync covers a prefix of the file: a transaction is published only once
//!   every byte before its end is durable, and groups are published in commit
//!   order.
//! - Before each sync the leader checks that the path still names the open file,
//!   whole: no commit is acknowledged into a file that was replaced or truncated.
//! - fsync is never retried: a failed write or sync poisons the storage.
//! - The file grows by written (and synced) zeros, never by a hole under the map.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::MutexGuard;

use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::meta::CommitEvent;

use super::format;
use super::io;
use super::{Durability, Shared};

/// Smallest and largest step by which the file is preallocated.
const GROW_STEP_MIN: u64 = 4 << 20;
const GROW_STEP_MAX: u64 = 64 << 20;
/// A transaction at least this large that does not fit the preallocated space is
/// appended without zero-filling first: its fdatasync writes so much data that
/// also updating the file size costs little, while zero-filling would double the
/// bytes written.
const APPEND_DIRECT_MIN: u64 = 64 << 10;

/// Finished records not yet written: the next group-commit leader writes them with
/// one pwrite. Committers only copy their record here (under the commit lock), so
/// the commit lock is held for microseconds, not for a syscall; the leader needs only
/// this lock, so a pack holding the commit lock can wait for it.
pub(super) struct Staging {
    /// The records, back to back; they belong at `start`.
    pub(super) bytes: Vec<u8>,
    pub(super) start: u64,
    pub(super) txns: Vec<StagedTxn>,
    /// The file's length: written records plus preallocated zeros.
    pub(super) file_len: u64,
    /// The records a leader took and is writing (start, bytes): until they are
    /// written and indexed they are neither here nor readable in the file, and a
    /// vote merging a conflict reads them (see `pending_record`).
    pub(super) writing: Option<(u64, Arc<Vec<u8>>)>,
    /// Every byte before this offset is known durable without counting the
    /// group commits' syncs: the end at open, at a pack's swap, or at an explicit
    /// `sync`. The durable mark of records written with durability off.
    pub(super) durable_floor: u64,
}

/// A finished transaction waiting in `Staging`.
pub(super) struct StagedTxn {
    pub(super) tid: Tid,
    /// Where its record starts (the staged records lie back to back).
    pub(super) pos: u64,
    /// From `format::EncodedTxn`, to stamp the durable lag cheaply.
    pub(super) body_crc: u32,
    pub(super) end: u64,
    pub(super) oids: Arc<[Oid]>,
    pub(super) positions: Vec<u64>,
}

/// Group-commit state.
pub(super) struct SyncState {
    pub(super) written_end: u64,
    pub(super) synced_end: u64,
    /// A leader is syncing (or gathering committers to sync).
    pub(super) syncing: bool,
    /// Transactions begun and not yet written or dropped.
    pub(super) in_flight: usize,
    /// Written transactions waiting to be synced and published, in commit order.
    pub(super) unpublished: VecDeque<Unpublished>,
    pub(super) poisoned: Option<Arc<str>>,
    /// How many commits a leader expects to gather: the largest recent group. Grows
    /// at once with a larger group, decays by one per sync, so a leader waits for as
    /// many committers as were recently active, and stops waiting soon after they go.
    pub(super) expected_batch: usize,
    pub(super) last_sync_time: Duration,
}

impl SyncState {
    /// Whether a gathering leader has what it waits for: nobody is between begin and
    /// write, and the group is as large as recent groups were.
    pub(super) fn group_gathered(&self) -> bool {
        self.in_flight == 0 && self.unpublished.len() >= self.expected_batch
    }
}

pub(super) struct Unpublished {
    pub(super) tid: Tid,
    pub(super) end: u64,
    pub(super) oids: Arc<[Oid]>,
}

impl Shared {
    /// Stops commits if the path no longer names the open file, or the file was
    /// truncated under the storage. Checked by each sync leader before it syncs, so
    /// no commit is acknowledged into a file that was replaced (ZODB #38).
    /// `group_start..end` holds the records the leader is about to sync: after a
    /// truncation our own write may have extended the file again, leaving a hole of
    /// zeros, so the trailer of the record before the group must still be there.
    fn check_file_in_place(&self, group_start: u64, end: u64) -> Result<()> {
        let problem = match io::path_identity(&self.path) {
            Err(e) => Some(format!(
                "the data file cannot be found at its path any more ({e})"
            )),
            Ok((dev, ino, len)) => {
                if (dev, ino) != self.file().identity {
                    Some("the data file was replaced by another file while open".to_string())
                } else if len < end || !self.record_ends_at(group_start) {
                    Some("the data file was truncated under the storage".to_string())
                } else {
                    None
                }
            }
        };
        match problem {
            None => Ok(()),
            Some(p) => Err(Error::Poisoned {
                cause: self.poison(p),
            }),
        }
    }

    /// Whether the record before `pos` still ends there (its trailer is intact).
    /// Read with `pread`, not through the map: mapping the page just written would
    /// make its writeback (the fdatasync about to happen) slower.
    fn record_ends_at(&self, pos: u64) -> bool {
        let file = self.file();
        if pos <= file.header.data_start {
            return true;
        }
        let mut trailer = [0u8; format::TXN_TRAILER_LEN as usize];
        let start = pos - format::TXN_TRAILER_LEN;
        file.io.read_at(&mut trailer, start).is_ok()
            && format::length_before(&trailer, trailer.len() as u64).is_some()
    }

    /// Extends the file with zeros (synced) so commits overwrite allocated blocks and
    /// fdatasync need not update the file size. Written zeros, not `allocate`: space
    /// allocated but never written (an unwritten extent) would make the fdatasync of
    /// each commit into it update metadata too. Writing allocates for real, so the
    /// grown part is never a hole; a write that fails (ENOSPC: "disk full") poisons
    /// the storage and leaves the file extended only by zeros actually written.
    fn grow(&self, staging: &mut Staging, needed: u64) -> Result<()> {
        let step = (staging.file_len / 8).clamp(GROW_STEP_MIN, GROW_STEP_MAX);
        let new_len = needed.max(staging.file_len + step).div_ceil(1 << 20) * (1 << 20);
        let zeros = vec![0u8; 1 << 20];
        let mut at = staging.file_len;
        while at < new_len {
            let n = (new_len - at).min(zeros.len() as u64);
            self.file()
                .io
                .write_at(&zeros[..n as usize], at)
                .map_err(|e| self.io_failure("preallocating the data file", e))?;
            at += n;
        }
        if self.options.durability == Durability::Fsync {
            self.file()
                .io
                .sync_data()
                .map_err(|e| self.io_failure("syncing the preallocated file", e))?;
        }
        self.remap(staging, new_len)
    }

    /// Maps the file again after it grew to `new_len`, for readers and the leader.
    fn remap(&self, staging: &mut Staging, new_len: u64) -> Result<()> {
        let map = self
            .file()
            .io
            .map()
            .map_err(|e| self.io_failure("mapping the grown file", e))?;
        self.reader.write().map = Arc::new(map);
        staging.file_len = new_len;
        Ok(())
    }

    /// Lets the file grow to `new_len` by the write about to happen there: allocates
    /// the space (so the map can cover it) without zero-filling or syncing. Never
    /// `set_len`: the write after it can fail (ENOSPC), which would leave a hole
    /// under the map, and a read through a map of a hole on a full tmpfs is a SIGBUS.
    /// An allocation that fails leaves no hole either (see `FileIo::allocate`).
    fn extend_map(&self, staging: &mut Staging, new_len: u64) -> Result<()> {
        debug_assert!(new_len > staging.file_len);
        self.file()
            .io
            .allocate(staging.file_len, new_len - staging.file_len)
            .map_err(|e| self.io_failure("extending the data file", e))?;
        self.remap(staging, new_len)
    }

    /// Takes the staged records, growing the file for them first.
    fn take_staged(&self, staging: &mut Staging) -> Result<(u64, Arc<Vec<u8>>, Vec<StagedTxn>)> {
        let start = staging.start;
        self.stamp_durable_marks(staging);
        let bytes = Arc::new(std::mem::take(&mut staging.bytes));
        staging.writing = Some((start, Arc::clone(&bytes)));
        let txns = std::mem::take(&mut staging.txns);
        let end = start + bytes.len() as u64;
        staging.start = end;
        if end > staging.file_len {
            if bytes.len() as u64 >= APPEND_DIRECT_MIN {
                self.extend_map(staging, end)?;
            } else {
                self.grow(staging, end)?;
            }
        }
        Ok((start, bytes, txns))
    }

    /// Stamps each staged record (of a version-2 file) with its durable mark, just
    /// before the group-commit leader writes them. With fdatasync, every byte before
    /// the group's start is durable now: the leaders before this one wrote and
    /// synced everything before it (a failed write or sync poisons the storage, and
    /// then nothing more is written). With durability off only the floor is known.
    /// Version-1 records keep the reserved field zero (their mark: their offset).
    fn stamp_durable_marks(&self, staging: &mut Staging) {
        if self.file().header.version < format::FORMAT_VERSION_DURABLE_LAG {
            return;
        }
        let mark = match self.options.durability {
            Durability::Fsync => staging.start,
            Durability::Off => staging.durable_floor.min(staging.start),
        };
        for t in &staging.txns {
            let at = (t.pos - staging.start) as usize;
            let record = &mut staging.bytes[at..(t.end - staging.start) as usize];
            format::stamp_durable_lag(record, format::durable_lag(t.pos, mark), t.body_crc);
        }
    }

    /// Writes the staged records with one pwrite and indexes them. Called only by the
    /// group-commit leader (one at a time); committers keep staging meanwhile.
    fn write_staged(&self) -> Result<()> {
        let (start, bytes, txns) = self.take_staged(&mut self.staging.lock())?;
        let written = self.write_taken(start, &bytes, &txns);
        // Written and indexed (or failed, which poisons the storage): readable in
        // the file from now on.
        self.staging.lock().writing = None;
        written
    }

    fn write_taken(&self, start: u64, bytes: &[u8], txns: &[StagedTxn]) -> Result<()> {
        let Some(last) = txns.last() else {
            return Ok(());
        };
        self.file()
            .io
            .write_at(bytes, start)
            .map_err(|e| self.io_failure("writing a transaction to the data file", e))?;
        let mut reader = self.reader.write();
        for t in txns {
            for (oid, pos) in t.oids.iter().zip(&t.positions) {
                reader.index.set(*oid, *pos);
            }
        }
        reader.indexed_end = last.end;
        reader.indexed_tid = last.tid;
        Ok(())
    }

    /// The data of the revision of `oid` at `pos`, CRC-checked, wherever it is: a
    /// finished transaction's record may still be staged, or being written by the
    /// group's leader, or in the file. Takes the staging lock, then (without it)
    /// the reader lock: the caller holds neither (a leader growing the file holds
    /// staging while it takes the reader lock).
    pub(super) fn pending_record(&self, pos: u64, oid: Oid) -> Result<Vec<u8>> {
        let in_memory = |bytes: &[u8], start: u64| -> Option<Result<Vec<u8>>> {
            let end = start + bytes.len() as u64;
            (start..end).contains(&pos).then(|| {
                let r = format::data_record_at(bytes, pos - start)
                    .map_err(|what| self.corrupted(pos, what))?;
                if r.oid != oid {
                    return Err(self.corrupted(
                        pos,
                        format!(
                            "a finished record of object {oid} is one of object {}",
                            r.oid
                        ),
                    ));
                }
                Ok(r.data.to_vec())
            })
        };
        {
            let staging = self.staging.lock();
            if let Some(found) = in_memory(&staging.bytes, staging.start) {
                return found;
            }
            if let Some((start, bytes)) = &staging.writing
                && let Some(found) = in_memory(bytes, *start)
            {
                return found;
            }
        }
        let reader = self.reader.read();
        Ok(self.record(&reader.map, pos, oid)?.data.to_vec())
    }

    /// Waits until transaction `tid` is published (or the storage is poisoned).
    /// Its committer is on its way through `wait_durable`, which publishes it.
    pub(super) fn wait_published(&self, tid: Tid) -> Result<()> {
        let mut st = self.sync.lock();
        while self.last_tid() < tid {
            if let Some(cause) = &st.poisoned {
                return Err(Error::Poisoned {
                    cause: Arc::clone(cause),
                });
            }
            self.durable_changed
                .wait_for(&mut st, Duration::from_millis(100));
        }
        Ok(())
    }

    /// Waits until the file is durable up to `end`, syncing as the group's leader
    /// when no sync is running. Publishes every transaction the sync covers.
    pub(super) fn wait_durable(&self, end: u64) -> Result<()> {
        let mut st = self.sync.lock();
        loop {
            if st.synced_end >= end {
                return Ok(());
            }
            if end > st.written_end {
                // Every end a caller takes from this file is at most `written_end`: this
                // one is from a file a pack replaced since (an index save's snapshot).
                // Nothing will be written there; the caller checks the file's identity.
                return Ok(());
            }
            if let Some(cause) = &st.poisoned {
                return Err(Error::Poisoned {
                    cause: Arc::clone(cause),
                });
            }
            if st.syncing {
                self.durable_changed.wait(&mut st);
                continue;
            }
            st.syncing = true;
            self.gather(&mut st);
            let target = st.written_end;
            let group_start = st.synced_end;
            drop(st);
            // Every record staged up to `target` was staged (and its unpublished
            // entry queued) before `written_end` moved there: the batch covers it.
            if let Err(e) = self
                .write_staged()
                .and_then(|()| self.check_file_in_place(group_start, target))
            {
                let mut st = self.sync.lock();
                st.syncing = false;
                self.durable_changed.notify_all();
                return Err(e);
            }
            let started = Instant::now();
            let result = match self.options.durability {
                Durability::Fsync => self.file().io.sync_data(),
                Durability::Off => Ok(()),
            };
            let took = started.elapsed();
            st = self.sync.lock();
            st.syncing = false;
            if let Err(e) = result {
                drop(st);
                let err = self.io_failure("fdatasync of the data file", e);
                self.durable_changed.notify_all();
                return Err(err);
            }
            st.last_sync_time = took;
            self.publish_synced(&mut st, target);
            self.durable_changed.notify_all();
        }
    }

    /// Gathers the group: gives committers already on their way a moment to write,
    /// so one fdatasync covers them all. Bounded by the last sync's duration.
    fn gather(&self, st: &mut MutexGuard<'_, SyncState>) {
        let wait = self.options.group_commit_wait.min(st.last_sync_time);
        let deadline = Instant::now() + wait;
        while !st.group_gathered() && Instant::now() < deadline {
            self.gather_changed.wait_until(st, deadline);
        }
    }

    /// Publishes, in commit order, every transaction the sync up to `target`
    /// made durable.
    fn publish_synced(&self, st: &mut SyncState, target: u64) {
        st.synced_end = st.synced_end.max(target);
        let mut batch = 0;
        while st.unpublished.front().is_some_and(|u| u.end <= target) {
            let u = st.unpublished.pop_front().expect("checked above");
            // Invalidations first, then the tid: see the ordering contract.
            self.notifier.publish(&CommitEvent {
                tid: u.tid,
                oids: u.oids,
            });
            self.published_end.store(u.end, Ordering::Release);
            self.last_tid.store(u.tid.0, Ordering::Release);
            batch += 1;
        }
        st.expected_batch = batch.max(st.expected_batch.saturating_sub(1)).max(1);
    }
}
