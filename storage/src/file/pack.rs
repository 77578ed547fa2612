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
//! - The packed file keeps the last transaction (possibly with no objects left), so
//!   its last tid and oid high-water mark never go backwards: no tid or oid is reused.
//! - GC roots are the root object and every object written, or referred to, by a
//!   revision after the pack time: a later revision may refer to an object that was
//!   unreachable at the pack time, and it must not dangle.
//! - Memory: two oid → position tables (8–12 bytes per object each), a reachability
//!   bit per object and a stack of at most one oid per object: about 30 bytes per
//!   object in the worst case, 300 MB for 10 million objects.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::storage::Storage;

use super::format::{self, TxnView};
use super::index::Index;
use super::{Durability, FileOptions, FileStorage, OpenFile, Reader, index_path};

/// Reads the oids an object revision refers to. The objects layer provides it; the
/// storage itself knows nothing of what the bytes mean.
pub type References<'a> = &'a (dyn Fn(&[u8]) -> std::result::Result<Vec<Oid>, String> + Sync);

/// What a pack did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackReport {
    /// The effective pack time (the requested one, or the last tid if earlier).
    pub pack_tid: Tid,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub transactions_before: u64,
    pub transactions_after: u64,
    pub revisions_before: u64,
    pub revisions_after: u64,
    /// Objects dropped as unreachable from the root at the pack time.
    pub objects_removed: u64,
    /// Transactions committed while the pack ran, copied under the commit lock.
    pub copied_during_pack: u64,
    /// The most memory the pack's tables took at once (the oid tables, the
    /// reachability set and the traversal stack), in bytes.
    pub table_bytes_max: u64,
}

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

/// How far past the bit vector's end (in 64-bit words) an oid may lie and still
/// extend it; farther oids (only through damaged references) go to the hash set, so
/// they cannot make the set allocate memory in proportion to their value.
const DENSE_WORDS_SLACK: u64 = 1 << 14;

/// A set of oids, one bit each (oids are dense), with a hash set for outliers.
#[derive(Default)]
struct OidSet {
    dense: Vec<u64>,
    sparse: std::collections::HashSet<u64>,
}

impl OidSet {
    /// Bytes of memory the set takes.
    fn memory_bytes(&self) -> usize {
        self.dense.capacity() * 8 + self.sparse.capacity() * 9
    }

    /// Adds `oid`; returns whether it was new.
    fn insert(&mut self, oid: Oid) -> bool {
        if self.contains(oid) {
            return false;
        }
        let (word, bit) = (oid.0 / 64, oid.0 % 64);
        if word <= 2 * self.dense.len() as u64 + DENSE_WORDS_SLACK {
            let word = word as usize;
            if word >= self.dense.len() {
                self.dense.resize(word + 1, 0);
            }
            self.dense[word] |= 1 << bit;
        } else {
            self.sparse.insert(oid.0);
        }
        true
    }

    fn contains(&self, oid: Oid) -> bool {
        let (word, bit) = ((oid.0 / 64) as usize, oid.0 % 64);
        self.dense.get(word).is_some_and(|w| w & (1 << bit) != 0) || self.sparse.contains(&oid.0)
    }
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

    fn pack_inner(
        &self,
        pack_time: Tid,
        references: Option<References<'_>>,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<PackReport> {
        let shared = &self.shared;
        let path = &shared.path;
        let data_start = shared.file().header.data_start;
        // A snapshot of the published state: later commits are copied at the end.
        let (map, index, end0, last0) = {
            let reader = shared.reader.read();
            let end = shared.published_end.load(Ordering::Acquire);
            (
                Arc::clone(&reader.map),
                reader.index.clone(),
                end,
                shared.last_tid(),
            )
        };
        let pack_tid = pack_time.min(last0);
        let mut report = PackReport {
            pack_tid,
            table_bytes_max: 0,
            bytes_before: end0,
            ..Default::default()
        };

        let current = revisions_current_at(shared, &map, &index, pack_tid)?;
        let both_tables = index.memory_bytes() + current.memory_bytes();
        drop(index);
        let (reachable, gc_bytes) = match references {
            Some(refs) => {
                let (reached, stack_bytes) =
                    reachable_from_root(shared, &map, &current, data_start, end0, pack_tid, refs)?;
                let bytes = current.memory_bytes() + reached.memory_bytes() + stack_bytes;
                (Some(reached), bytes)
            }
            None => (None, 0),
        };
        report.table_bytes_max = both_tables.max(gc_bytes) as u64;
        if let Some(reached) = &reachable {
            report.objects_removed = current
                .entries()
                .filter(|(oid, _)| !reached.contains(*oid))
                .count() as u64;
        }
        let keep = |t: &TxnView<'_>, rpos: u64, oid: Oid| {
            t.tid > pack_tid
                || (current.get(oid) == Some(rpos)
                    && reachable.as_ref().is_none_or(|r| r.contains(oid)))
        };

        remove_pack_files(path);
        let target_path = pack_path(path);
        let target = FileStorage::open(
            &target_path,
            FileOptions::new()
                .durability(Durability::Off)
                .data_start(data_start)
                .index_save_interval_bytes(u64::MAX)
                .io(Arc::clone(&shared.options.io)),
        )?;
        let copy = |t: &TxnView<'_>, report: &mut PackReport, is_last: bool| -> Result<()> {
            report.transactions_before += 1;
            report.revisions_before += t.records.len() as u64;
            let objects: Vec<(Oid, Vec<u8>)> = t
                .records
                .iter()
                .filter(|(rpos, r)| keep(t, *rpos, r.oid))
                .map(|(_, r)| (r.oid, r.data.to_vec()))
                .collect();
            if objects.is_empty() && !is_last {
                return Ok(());
            }
            report.transactions_after += 1;
            report.revisions_after += objects.len() as u64;
            target.copy_transaction(t.tid, t.meta(), t.next_oid, objects)
        };

        // Bulk: everything published when the pack began, without the commit lock.
        let mut pos = data_start;
        let mut next_report = 0;
        while pos < end0 {
            if pos >= next_report {
                progress(pos, end0);
                next_report = pos + (1 << 20);
            }
            let t = format::transaction_at(&map, pos)
                .map_err(|p| shared.corrupted(pos, p.describe()))?;
            pos = t.end();
            copy(&t, &mut report, pos >= end0)?;
        }
        // Never under the commit lock: the callback may do anything, even commit.
        progress(end0, end0);

        // Tail: under the commit lock, once everything written is durable.
        let mut commit = shared.commit.lock();
        // Close sets its flag under the commit lock and then releases the writer
        // lock: a pack must not touch the file once the storage is closed.
        shared.check_writable()?;
        let end = commit.end;
        // Holding the commit lock stops new commits; the group-commit leader needs
        // only the staging lock, so waiting here for it cannot deadlock.
        shared.wait_durable(end)?;
        let end1 = commit.end;
        if end1 > end0 {
            let map1 = Arc::clone(&shared.reader.read().map);
            let mut pos = end0;
            while pos < end1 {
                let t = format::transaction_at(&map1, pos)
                    .map_err(|p| shared.corrupted(pos, p.describe()))?;
                // A commit made during the pack may refer again to an object the GC
                // is dropping; its pre-pack revisions are already left behind, so the
                // pack cannot keep it: abandon the pack, the file stays as it is.
                if let (Some(reached), Some(refs)) = (&reachable, references) {
                    for (_, r) in &t.records {
                        let children = refs(r.data)
                            .map_err(|what| Error::PackReferences { oid: r.oid, what })?;
                        if let Some(child) = children
                            .into_iter()
                            .find(|c| !reached.contains(*c) && current.get(*c).is_some())
                        {
                            return Err(Error::PackAbandoned {
                                path: path.clone(),
                                oid: child,
                            });
                        }
                    }
                }
                pos = t.end();
                copy(&t, &mut report, pos >= end1)?;
                report.copied_during_pack += 1;
            }
        }
        target.sync()?;
        let new_end = target.data_end();
        target.close()?;
        drop(target);

        // Swap: PATH.old keeps the original; the packed file replaces PATH atomically.
        let factory = &*shared.options.io;
        let old = old_path(path);
        let fail = |action: &'static str| move |e| Error::io(path, action, e);
        let _ = factory.remove(&old);
        factory
            .hard_link(path, &old)
            .map_err(fail("keeping the original as PATH.old"))?;
        factory
            .rename(&target_path, path)
            .map_err(fail("moving the packed file in place"))?;
        let _ = factory.rename(&index_path(&target_path), &index_path(path));
        let _ = factory.remove(&super::lock_path(&target_path));
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        factory
            .sync_dir(dir)
            .map_err(fail("syncing the directory"))?;

        // Switch this storage over to the packed file, still under the commit lock.
        let switched = (|| -> Result<()> {
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
            let index = match super::load_saved_index(factory, path, &map, &header) {
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
        })();
        if let Err(e) = switched {
            let cause = shared.poison(format!(
                "the pack replaced the data file but could not switch to it ({e})"
            ));
            return Err(Error::Poisoned { cause });
        }
        drop(commit);
        report.bytes_after = new_end;
        log::info!(
            "{}: packed to {} ({}): {} -> {} bytes, {} -> {} revisions, {} objects removed, {} transactions copied during the pack",
            path.display(),
            pack_tid,
            pack_tid.to_rfc3339(),
            report.bytes_before,
            report.bytes_after,
            report.revisions_before,
            report.revisions_after,
            report.objects_removed,
            report.copied_during_pack
        );
        Ok(report)
    }
}

/// For each object, the position of its newest revision with tid <= `pack_tid`.
fn revisions_current_at(
    shared: &super::Shared,
    map: &[u8],
    index: &Index,
    pack_tid: Tid,
) -> Result<Index> {
    let mut current = Index::default();
    for (oid, newest) in index.entries() {
        let mut pos = newest;
        loop {
            let (r, _) = format::data_header_at(map, pos).map_err(|w| shared.corrupted(pos, w))?;
            if r.oid != oid {
                return Err(shared.corrupted(
                    pos,
                    format!("index entry for object {oid} points at object {}", r.oid),
                ));
            }
            if r.tid <= pack_tid {
                current.set(oid, pos);
                break;
            }
            if r.prev == 0 {
                break;
            }
            if r.prev >= pos {
                return Err(shared.corrupted(
                    pos,
                    format!("back-pointer {} does not point backwards", r.prev),
                ));
            }
            pos = r.prev;
        }
    }
    Ok(current)
}

/// Objects reachable from the GC roots (see the module docs) through the revisions
/// current at the pack time.
fn reachable_from_root(
    shared: &super::Shared,
    map: &[u8],
    current: &Index,
    data_start: u64,
    end: u64,
    pack_tid: Tid,
    refs: References<'_>,
) -> Result<(OidSet, usize)> {
    let mut reached = OidSet::default();
    let mut stack = vec![Oid::ROOT];
    reached.insert(Oid::ROOT);
    let references_of =
        |oid: Oid, data: &[u8]| refs(data).map_err(|what| Error::PackReferences { oid, what });
    let mut pos = data_start;
    while pos < end {
        let (len, tid) =
            format::peek_transaction(map, pos).map_err(|p| shared.corrupted(pos, p.describe()))?;
        if tid > pack_tid {
            let t = format::transaction_at(map, pos)
                .map_err(|p| shared.corrupted(pos, p.describe()))?;
            for (_, r) in &t.records {
                if reached.insert(r.oid) {
                    stack.push(r.oid);
                }
                for child in references_of(r.oid, r.data)? {
                    if reached.insert(child) {
                        stack.push(child);
                    }
                }
            }
        }
        pos += len;
    }
    let mut stack_bytes = stack.capacity() * 8;
    while let Some(oid) = stack.pop() {
        let Some(pos) = current.get(oid) else {
            continue;
        };
        let r = format::data_record_at(map, pos).map_err(|w| shared.corrupted(pos, w))?;
        for child in references_of(oid, r.data)? {
            if reached.insert(child) {
                stack.push(child);
            }
        }
    }
    stack_bytes = stack_bytes.max(stack.capacity() * 8);
    Ok((reached, stack_bytes))
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
