//! Pack: rewrite the data file keeping, for each object, the newest revision at or
//! before the pack time and every later revision; with garbage collection, also drop
//! objects unreachable from the root as of the pack time.
//!
//! Invariants:
//! - The storage stays open for reads and commits: the bulk of the file is copied
//!   from a snapshot without the commit lock; only transactions committed during the
//!   pack are copied under it, just before the swap.
//! - The swap is crash-safe: `PATH.old` is a hard link to the original, then the
//!   packed file is renamed over `PATH` (atomic). A crash before the rename leaves
//!   the original in place and a stale `PATH.pack`, removed by the next pack.
//!   The original's saved index is removed (durably) before the swap begins, so no
//!   crash leaves it beside the packed file; the packed file's own index follows
//!   the data file, and an open without one scans.
//! - The packed file keeps the last transaction (possibly with no objects left), so
//!   its last tid and oid high-water mark never go backwards: no tid or oid is reused.
//! - What is kept (the revisions current at the pack time, the objects reachable
//!   from the GC roots, and the memory that takes) is decided in `reach`.
//!
//! A pack runs in named steps: a snapshot of the published state, the decision
//! of what to keep, the copy phase (without the commit lock), the catch-up phase
//! (under it, the transactions committed meanwhile), the swap of the files on
//! disk, and the switch of this storage to the packed file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use memmap2::Mmap;
use parking_lot::MutexGuard;

use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::storage::Storage;

use super::format::{self, TxnView};
use super::index::Index;
use super::progress::Progress;
use super::transaction::CommitState;
use super::{Durability, FileOptions, FileStorage, OpenFile, Reader, index_path};

mod reach;

use reach::Keep;

// The reports live with the trait; these paths stay for the callers that name
// them through the file backend.
pub use crate::reports::{PackReport, References};

/// `PATH.old`: the file as it was before the last pack.
pub fn old_path(path: &Path) -> PathBuf {
    suffixed(path, ".old")
}

fn pack_path(path: &Path) -> PathBuf {
    suffixed(path, ".pack")
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

impl FileStorage {
    /// Packs the file to `pack_time` (see the module docs), with garbage collection
    /// when `references` is given. Returns once the packed file is in place.
    pub fn pack(&self, pack_time: Tid, references: Option<References<'_>>) -> Result<PackReport> {
        self.pack_with(pack_time, references, |_, _| {})
    }

    /// Like [`pack`](Self::pack), calling `progress(done, total)` (bytes of the
    /// original file) as the copy advances, never with a lock held (it may commit).
    pub fn pack_with(
        &self,
        pack_time: Tid,
        references: Option<References<'_>>,
        progress: impl FnMut(u64, u64),
    ) -> Result<PackReport> {
        self.shared.check_writable()?;
        if self.shared.packing.swap(true, Ordering::AcqRel) {
            return Err(Error::PackInProgress {
                path: self.shared.path.clone(),
            });
        }
        let result = self.pack_inner(pack_time, references, progress);
        self.shared.packing.store(false, Ordering::Release);
        if result.is_err() {
            remove_pack_files(&self.shared.path);
        }
        result
    }
}

/// The published state a pack starts from: later commits are copied at the end.
struct Snapshot {
    map: Arc<Mmap>,
    index: Index,
    end: u64,
    last_tid: Tid,
}

impl FileStorage {
    fn pack_inner(
        &self,
        pack_time: Tid,
        references: Option<References<'_>>,
        progress: impl FnMut(u64, u64),
    ) -> Result<PackReport> {
        let shared = &self.shared;
        let path = &shared.path;
        let data_start = shared.file().header.data_start;
        let Snapshot {
            map,
            index,
            end: end0,
            last_tid,
        } = self.pack_snapshot();
        let pack_tid = pack_time.min(last_tid);
        let mut report = PackReport {
            pack_tid,
            table_bytes_max: 0,
            bytes_before: end0,
            ..Default::default()
        };
        let keep = Keep::decide(
            shared,
            &map,
            index,
            data_start..end0,
            pack_tid,
            references,
            &mut report,
        )?;
        remove_pack_files(path);
        let target_path = pack_path(path);
        let target = FileStorage::open(
            &target_path,
            FileOptions::new()
                .durability(Durability::Off)
                .internal_copy()
                .data_start(data_start)
                .index_save_interval_bytes(u64::MAX)
                .io(Arc::clone(&shared.options.io)),
        )?;
        let packed = Packed {
            target: &target,
            keep: &keep,
        };
        packed.copy_phase(shared, &map, data_start..end0, &mut report, progress)?;
        let commit = packed.catch_up_phase(shared, end0, references, &mut report)?;
        target.sync()?;
        let new_end = target.data_end();
        target.close()?;
        drop(target);
        self.swap_files(&target_path)?;
        self.switch_to_packed(commit, new_end)?;
        report.bytes_after = new_end;
        log_pack(path, &report);
        Ok(report)
    }

    fn pack_snapshot(&self) -> Snapshot {
        let reader = self.shared.reader.read();
        let end = self.shared.published_end.load(Ordering::Acquire);
        Snapshot {
            map: Arc::clone(&reader.map),
            index: reader.index.clone(),
            end,
            last_tid: self.shared.last_tid(),
        }
    }

    /// Swap: `PATH.old` keeps the original; the packed file replaces `PATH`
    /// atomically.
    fn swap_files(&self, target_path: &Path) -> Result<()> {
        let path = &self.shared.path;
        let factory = &*self.shared.options.io;
        let old = old_path(path);
        let fail = |action: &'static str| move |e| Error::io(path, action, e);
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        // The original's saved index goes first, durably: a kill between the two
        // renames below must not leave it beside the packed file, whose index it
        // is not. Without one, an open scans the file.
        match factory.remove(&index_path(path)) {
            Ok(()) => factory
                .sync_dir(dir)
                .map_err(fail("syncing the directory"))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail("removing the original's saved index")(e)),
        }
        let _ = factory.remove(&old);
        factory
            .hard_link(path, &old)
            .map_err(fail("keeping the original as PATH.old"))?;
        factory
            .rename(target_path, path)
            .map_err(fail("moving the packed file in place"))?;
        let _ = factory.rename(&index_path(target_path), &index_path(path));
        let _ = factory.remove(&super::lock_path(target_path));
        factory.sync_dir(dir).map_err(fail("syncing the directory"))
    }

    /// Switches this storage over to the packed file, still under the commit lock.
    /// The file on disk is already the packed one: a failure here poisons.
    fn switch_to_packed(
        &self,
        mut commit: MutexGuard<'_, CommitState>,
        new_end: u64,
    ) -> Result<()> {
        if let Err(e) = self.switch_under(&mut commit, new_end) {
            let cause = self.shared.poison(format!(
                "the pack replaced the data file but could not switch to it ({e})"
            ));
            return Err(Error::Poisoned { cause });
        }
        Ok(())
    }

    fn switch_under(&self, commit: &mut CommitState, new_end: u64) -> Result<()> {
        let shared = &self.shared;
        let path = &shared.path;
        let factory = &*shared.options.io;
        let fail = |action: &'static str| move |e| Error::io(path, action, e);
        let io = factory
            .open(path, true, false)
            .map_err(fail("opening the packed file"))?;
        let identity = io
            .identity()
            .map_err(fail("reading the packed file's identity"))?;
        let map = io.map().map_err(fail("mapping the packed file"))?;
        let header = format::FileHeader::decode(&map).map_err(|what| Error::Format {
            path: path.clone(),
            what,
        })?;
        let index = match super::open::load_saved_index(factory, path, &map, &header) {
            Some((_, index)) => index,
            None => {
                let mut index = Index::default();
                super::recovery::scan(&map, header.data_start, Tid::ZERO, 1, &mut index)
                    .map_err(|d| shared.corrupted(d.offset, d.what))?;
                index
            }
        };
        commit.end = new_end;
        commit.pending.clear();
        {
            let mut staging = shared.staging.lock();
            debug_assert!(staging.txns.is_empty());
            staging.start = new_end;
            staging.file_len = map.len() as u64;
            // The packed file was synced before the swap.
            staging.durable_floor = new_end;
        }
        {
            let mut reader = shared.reader.write();
            *reader = Reader {
                map: Arc::new(map),
                index,
                indexed_end: new_end,
                indexed_tid: commit.last_tid,
            };
            // With the map: readers take both under the read lock.
            shared.published_end.store(new_end, Ordering::Release);
        }
        *shared.file.write() = Arc::new(OpenFile {
            io,
            identity,
            header,
        });
        let mut st = shared.sync.lock();
        st.written_end = new_end;
        st.synced_end = new_end;
        shared.saved_index_end.store(new_end, Ordering::Release);
        // The packed file's index holds the copy's oid mark, not this storage's.
        shared.saved_next_oid.store(0, Ordering::Release);
        Ok(())
    }
}

/// The packed file being written, and what goes into it.
struct Packed<'a> {
    target: &'a FileStorage,
    keep: &'a Keep,
}

impl Packed<'_> {
    /// Copies what transaction `t` keeps (the last one always, so the packed file's
    /// last tid and oid mark never go backwards).
    fn copy(&self, t: &TxnView<'_>, report: &mut PackReport, is_last: bool) -> Result<()> {
        report.transactions_before += 1;
        report.revisions_before += t.records.len() as u64;
        let objects: Vec<(Oid, Vec<u8>)> = t
            .records
            .iter()
            .filter(|(rpos, r)| self.keep.keeps(t, *rpos, r.oid))
            .map(|(_, r)| (r.oid, r.data.to_vec()))
            .collect();
        if objects.is_empty() && !is_last {
            return Ok(());
        }
        report.transactions_after += 1;
        report.revisions_after += objects.len() as u64;
        self.target
            .copy_transaction(t.tid, t.meta(), t.next_oid, objects)
    }

    /// The bulk: everything published when the pack began, without the commit lock.
    fn copy_phase(
        &self,
        shared: &super::Shared,
        map: &[u8],
        span: std::ops::Range<u64>,
        report: &mut PackReport,
        progress: impl FnMut(u64, u64),
    ) -> Result<()> {
        let end0 = span.end;
        let mut progress = Progress::new(progress, end0);
        let mut pos = span.start;
        while pos < end0 {
            progress.at(pos);
            let t = format::transaction_at(map, pos)
                .map_err(|p| shared.corrupted(pos, p.describe()))?;
            pos = t.end();
            self.copy(&t, report, pos >= end0)?;
        }
        // Never under the commit lock: the callback may do anything, even commit.
        progress.done();
        Ok(())
    }

    /// The tail: under the commit lock, once everything written is durable, the
    /// transactions committed since `end0`. Returns the commit lock, held until the
    /// switch.
    fn catch_up_phase<'s>(
        &self,
        shared: &'s super::Shared,
        end0: u64,
        references: Option<References<'_>>,
        report: &mut PackReport,
    ) -> Result<MutexGuard<'s, CommitState>> {
        let commit = shared.commit.lock();
        // Close sets its flag under the commit lock and then releases the writer
        // lock: a pack must not touch the file once the storage is closed.
        shared.check_writable()?;
        let end = commit.end;
        // Holding the commit lock stops new commits; the group-commit leader needs
        // only the staging lock, so waiting here for it cannot deadlock.
        shared.wait_durable(end)?;
        let end1 = commit.end;
        if end1 <= end0 {
            return Ok(commit);
        }
        let map1 = Arc::clone(&shared.reader.read().map);
        let mut pos = end0;
        while pos < end1 {
            let t = format::transaction_at(&map1, pos)
                .map_err(|p| shared.corrupted(pos, p.describe()))?;
            // A commit made during the pack may refer again to an object the GC
            // is dropping: abandon the pack, the file stays as it is.
            if let Some(oid) = self.keep.dropped_referent(&t, references)? {
                return Err(Error::PackAbandoned {
                    path: shared.path.clone(),
                    oid,
                });
            }
            pos = t.end();
            self.copy(&t, report, pos >= end1)?;
            report.copied_during_pack += 1;
        }
        Ok(commit)
    }
}

fn log_pack(path: &Path, report: &PackReport) {
    log::info!(
        "{}: packed to {} ({}): {} -> {} bytes, {} -> {} revisions, {} objects removed, {} transactions copied during the pack",
        path.display(),
        report.pack_tid,
        report.pack_tid.to_rfc3339(),
        report.bytes_before,
        report.bytes_after,
        report.revisions_before,
        report.revisions_after,
        report.objects_removed,
        report.copied_during_pack
    );
}

fn remove_pack_files(path: &Path) {
    let target = pack_path(path);
    for p in [index_path(&target), super::lock_path(&target), target] {
        let _ = std::fs::remove_file(p);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::meta::TransactionMeta;

    fn write(s: &FileStorage, bytes: &[u8]) {
        let mut t = s.begin(TransactionMeta::described("t")).unwrap();
        let base = s.load(Oid::ROOT, Tid::MAX).map_or(Tid::ZERO, |r| r.tid);
        t.store(Oid::ROOT, base, bytes.to_vec()).unwrap();
        t.finish().unwrap();
    }

    /// `save_index` snapshots the index (and its covered end) and then waits for that
    /// end to be durable. When a pack swaps in the shorter packed file between the two
    /// steps, the wait is for an offset of the old file: it must return, not sync in a
    /// loop until new commits happen to reach that offset.
    #[test]
    fn a_save_whose_snapshot_predates_a_pack_swap_returns() {
        let dir = tempfile::tempdir().unwrap();
        let s = FileStorage::open(
            dir.path().join("data.zdb"),
            FileOptions::new().durability(Durability::Off),
        )
        .unwrap();
        for i in 0..20u8 {
            write(&s, &[i; 200]);
        }
        // The first step of save_index...
        let covered_end = s.shared.reader.read().indexed_end;
        // ...a pack swaps the file in...
        s.pack(Tid::MAX, None).unwrap();
        assert!(s.data_end() < covered_end);
        // ...and the second step.
        let shared = Arc::clone(&s.shared);
        let (done_tx, done_rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let _ = shared.wait_durable(covered_end);
            let _ = done_tx.send(());
        });
        let returned = done_rx.recv_timeout(Duration::from_secs(2)).is_ok();
        // Release it either way: commit past the old end.
        while s.data_end() < covered_end {
            write(&s, &[9; 200]);
        }
        waiter.join().unwrap();
        assert!(
            returned,
            "the wait did not return while nothing was committed"
        );
    }
}
