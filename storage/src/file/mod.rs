//! The file storage: one append-only data file of CRC-checked transaction records
//! (format: `docs/format.md`), an in-memory index from oid to newest revision, a
//! saved copy of that index beside the file, and group commit.
//!
//! This module holds the [`FileStorage`] type, the state its pieces share and its
//! [`Storage`] implementation, which delegates to them:
//!
//! - `options`: how a file is opened ([`FileOptions`], [`Durability`]);
//! - `open`: the open and its checks and repairs (saved index, scan, torn tail);
//! - `read`: loads, history and walks over the transactions;
//! - `transaction`: store, vote (conflicts and merges) and finish;
//! - `restore`: transactions copied from another storage, alone or in batches;
//! - `group_commit`: staging, the leader's write, the shared fdatasync, publishing;
//! - `index_save`: when the in-memory index is saved beside the file;
//! - `pack`: rewriting the file without old revisions and garbage;
//! - beneath them, the persistent pieces: `format` (records), `index`, `recovery`
//!   (the opening scan), `holes`, `io` (the file-I/O seam) and `lock`;
//! - `offline`: the tools that read a file that is not open (verify, recover,
//!   backup); `progress`: the progress reports of pack and those tools.
//!
//! Invariants the shared state keeps:
//! - Loads see only published transactions: `last_tid` moves forward only after
//!   its group's sync and notifications, and `published_end` with it (a pack's
//!   switch sets it to the packed file's end, under the reader lock with the map).
//! - The commit lock is held from vote to the staging of the record in finish;
//!   a pack swaps the file, the map and the index under it.
//! - After a failed write or sync the storage is poisoned: every later commit
//!   fails with the original cause, and nothing more is written.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use memmap2::Mmap;
use parking_lot::{Condvar, Mutex, RwLock};

use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::meta::{CopiedTransaction, Revision, RevisionInfo, TransactionMeta};
use crate::notify::{CommitSubscription, Notifier};
use crate::reports::{PackReport, References};
use crate::storage::{Storage, StorageTransaction, TransactionIter};

pub mod format;
mod group_commit;
mod holes;
pub(crate) mod index;
mod index_save;
pub mod io;
mod lock;
pub(crate) mod offline;
mod open;
mod options;
pub mod pack;
mod progress;
mod read;
pub(crate) mod recovery;
mod restore;
mod transaction;

use format::FileHeader;
use group_commit::{Staging, SyncState};
use index::Index;
use io::FileIo;
use lock::WriterLock;
use read::TidMarks;
use transaction::{CommitState, FileTransaction};

pub use lock::lock_path;
pub use options::{Durability, FileOptions};

/// What to tell an operator who meets a damaged file.
const DAMAGE_ADVICE: &str = "run `zodiac verify` on the file to see the damage and `zodiac recover` to salvage every intact transaction";

/// What to do after a commit failed on a full disk (the storage is poisoned).
const DISK_FULL_COMMIT_ADVICE: &str =
    "reopen the database and retry the commit (nothing acknowledged was lost)";

/// Path of the saved index beside a data file.
pub fn index_path(data_path: &Path) -> PathBuf {
    let mut p = data_path.as_os_str().to_owned();
    p.push(".index");
    PathBuf::from(p)
}

/// A storage in one append-only data file.
///
/// Reads go through a read-only memory map; commits append whole transaction
/// records with `pwrite` and share `fdatasync` calls (group commit).
pub struct FileStorage {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    options: FileOptions,
    /// The open data file; replaced (under the commit lock) when a pack swaps in
    /// the packed file.
    file: RwLock<Arc<OpenFile>>,
    reader: RwLock<Reader>,
    /// The commit lock, held from vote to the staging of the record in finish.
    commit: Arc<Mutex<CommitState>>,
    staging: Mutex<Staging>,
    sync: Mutex<SyncState>,
    durable_changed: Condvar,
    /// Wakes a group-commit leader that gathers committers: a transaction was
    /// written or left without writing.
    gather_changed: Condvar,
    /// Newest published (durable, visible) tid, and the file end after it.
    last_tid: AtomicU64,
    published_end: AtomicU64,
    next_oid: AtomicU64,
    notifier: Notifier,
    closed: AtomicBool,
    index_saving: AtomicBool,
    /// A pack is running (one at a time).
    packing: AtomicBool,
    /// Where transactions start, sampled, so a walk from a tid need not start at the
    /// beginning of the file.
    tid_marks: Mutex<TidMarks>,
    saved_index_end: AtomicU64,
    /// The oid allocator's mark in the saved index (0: unknown, save at close).
    saved_next_oid: AtomicU64,
    /// Data end at the last failed periodic index save: the next periodic attempt
    /// waits for another interval of data after it (a full disk fails each one).
    index_save_failed_end: AtomicU64,
    writer_lock: Mutex<Option<WriterLock>>,
}

/// The data file the storage has open.
struct OpenFile {
    io: Arc<dyn FileIo>,
    /// (device, inode), to detect the path being replaced.
    identity: (u64, u64),
    header: FileHeader,
}

/// What loads read: the map of the file and the index into it.
struct Reader {
    map: Arc<Mmap>,
    /// Only ever points at written records.
    index: Index,
    /// End and tid of the last transaction the index reflects.
    indexed_end: u64,
    indexed_tid: Tid,
}

impl FileStorage {
    /// The data file's path.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// End of the written (and published) data in the file, in bytes.
    pub fn data_end(&self) -> u64 {
        self.shared.published_end.load(Ordering::Acquire)
    }

    /// Number of objects with at least one revision.
    pub fn object_count(&self) -> u64 {
        self.shared.reader.read().index.len()
    }

    /// Bytes of memory the in-memory index uses.
    pub fn index_memory_bytes(&self) -> usize {
        self.shared.reader.read().index.memory_bytes()
    }

    /// The format version of the open file.
    pub fn format_version(&self) -> u32 {
        self.shared.file().header.version
    }

    /// Makes everything written so far durable (for a storage opened with
    /// durability off, e.g. after a bulk copy).
    pub fn sync(&self) -> Result<()> {
        self.shared.check_writable()?;
        // Records before the indexed end were written before this sync begins.
        let written = self.shared.reader.read().indexed_end;
        self.shared
            .file()
            .io
            .sync_data()
            .map_err(|e| self.shared.io_failure("fdatasync of the data file", e))?;
        let mut staging = self.shared.staging.lock();
        // Unless a pack swapped the file meanwhile (its floor is its own end).
        if written <= staging.start {
            staging.durable_floor = staging.durable_floor.max(written);
        }
        Ok(())
    }
}

impl Shared {
    fn file(&self) -> Arc<OpenFile> {
        Arc::clone(&self.file.read())
    }

    fn corrupted(&self, offset: u64, what: impl Into<String>) -> Error {
        Error::Corrupted {
            path: self.path.clone(),
            offset,
            what: what.into(),
            advice: DAMAGE_ADVICE,
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    fn check_writable(&self) -> Result<()> {
        self.check_open()?;
        if self.options.read_only {
            return Err(Error::ReadOnly);
        }
        if let Some(cause) = &self.sync.lock().poisoned {
            return Err(Error::Poisoned {
                cause: Arc::clone(cause),
            });
        }
        Ok(())
    }

    fn last_tid(&self) -> Tid {
        Tid(self.last_tid.load(Ordering::Acquire))
    }

    fn poison(&self, cause: String) -> Arc<str> {
        let mut st = self.sync.lock();
        let cause: Arc<str> = st.poisoned.get_or_insert_with(|| cause.into()).clone();
        log::error!("{}: refusing further commits: {cause}", self.path.display());
        self.durable_changed.notify_all();
        self.gather_changed.notify_all();
        cause
    }

    fn io_failure(&self, action: &'static str, e: std::io::Error) -> Error {
        let full = if crate::error::is_disk_full(&e) {
            "disk full: "
        } else {
            ""
        };
        let cause = self.poison(format!("{full}{action} failed: {e}"));
        let _ = cause;
        Error::io_or_full(&self.path, action, e, DISK_FULL_COMMIT_ADVICE)
    }

    fn close(&self) -> Result<()> {
        // Under the commit lock: a transaction between vote and write finishes its
        // write first, and every later vote sees the storage closed.
        let commit = self.commit.lock();
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let end = commit.end;
        drop(commit);
        let mut result = Ok(());
        let poisoned = self.sync.lock().poisoned.is_some();
        if !self.options.read_only && !poisoned {
            // Transactions finished before close are written (by a group-commit
            // leader) before the writer lock is released: afterwards another writer
            // may own the file.
            result = self.wait_durable(end);
            // Once the data is durable, a failed index save (logged as a warning)
            // is no failure of the close: every commit is safe in the file, and the
            // next open scans what the saved index does not cover.
            if result.is_ok() {
                let _ = self.save_index();
            }
        }
        self.notifier.close();
        self.writer_lock.lock().take();
        result
    }
}

impl Drop for FileStorage {
    fn drop(&mut self) {
        let _ = self.shared.close();
    }
}

impl Storage for FileStorage {
    fn describe(&self) -> String {
        self.shared.path.display().to_string()
    }

    fn identity(&self) -> u64 {
        self.shared.file().header.file_id
    }

    fn last_tid(&self) -> Tid {
        self.shared.last_tid()
    }

    fn new_oid(&self) -> Result<Oid> {
        self.shared.check_open()?;
        // Never wraps: after the largest oid the allocator refuses (a copied history
        // can carry a high-water mark near the top of the oid space).
        self.shared
            .next_oid
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_add(1))
            .map(Oid)
            .map_err(|_| Error::OidsExhausted)
    }

    fn load(&self, oid: Oid, snapshot: Tid) -> Result<Revision> {
        self.shared.load(oid, snapshot)
    }

    fn load_revision(&self, oid: Oid, tid: Tid) -> Result<Vec<u8>> {
        self.shared.load_revision(oid, tid)
    }

    fn history(&self, oid: Oid, limit: usize) -> Result<Vec<RevisionInfo>> {
        self.shared.history(oid, limit)
    }

    fn transactions(&self, from: Tid, to: Tid) -> Result<TransactionIter<'_>> {
        self.shared.transactions(from, to)
    }

    fn begin(&self, meta: TransactionMeta) -> Result<Box<dyn StorageTransaction>> {
        FileTransaction::begin(&self.shared, meta, None).map(|t| t as Box<dyn StorageTransaction>)
    }

    fn subscribe(&self) -> CommitSubscription {
        self.shared.notifier.subscribe()
    }

    fn close(&self) -> Result<()> {
        self.shared.close()
    }

    fn restore(&self, tid: Tid, meta: &TransactionMeta, records: &[(Oid, Vec<u8>)]) -> Result<()> {
        self.restore_one(tid, meta, records)
    }

    fn restore_batch(&self, transactions: &[CopiedTransaction]) -> Result<()> {
        self.restore_many(transactions)
    }

    fn pack(&self, pack_time: Tid, references: Option<References<'_>>) -> Result<PackReport> {
        FileStorage::pack(self, pack_time, references)
    }
}
