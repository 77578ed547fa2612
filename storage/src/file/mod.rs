//! The file storage: one append-only data file of CRC-checked transaction records
//! (format: `docs/format.md`), an in-memory index from oid to newest revision, a
//! saved copy of that index beside the file, and group commit.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use memmap2::Mmap;
use parking_lot::{ArcMutexGuard, Condvar, Mutex, RawMutex, RwLock};

use crate::error::{ConflictError, Error, Result};
use crate::ids::{Oid, OidMap, Tid};
use crate::meta::{
    ChangeInfo, CommitEvent, Revision, RevisionInfo, TransactionInfo, TransactionMeta,
};
use crate::notify::{CommitSubscription, Notifier};
use crate::pending::{PendingWrites, RECORD_BYTES_MAX};
use crate::storage::{Resolver, Storage, StorageTransaction, TransactionIter};

pub mod backup;
pub mod format;
mod holes;
mod index;
pub mod io;
mod lock;
mod open;
pub mod pack;
pub mod recover;
mod recovery;
pub mod verify;

use format::{FILE_HEADER_LEN, FileHeader};
use index::{Index, SavedIndexHeader};
use io::FileIo;
use lock::WriterLock;
use open::{
    check_index_claim, create_header, cut_tail, load_saved_index, mid_file_damage,
    refuse_new_file_beside_index, saved_index_claim, scan_at_open,
};

pub use lock::lock_path;

/// What to tell an operator who meets a damaged file.
const DAMAGE_ADVICE: &str = "run `zodiac verify` on the file to see the damage and `zodiac recover` to salvage every intact transaction";

/// Smallest and largest step by which the file is preallocated.
const GROW_STEP_MIN: u64 = 4 << 20;
const GROW_STEP_MAX: u64 = 64 << 20;
/// A transaction at least this large that does not fit the preallocated space is
/// appended without zero-filling first: its fdatasync writes so much data that
/// also updating the file size costs little, while zero-filling would double the
/// bytes written.
const APPEND_DIRECT_MIN: u64 = 64 << 10;

/// What to do after a commit failed on a full disk (the storage is poisoned).
const DISK_FULL_COMMIT_ADVICE: &str =
    "reopen the database and retry the commit (nothing acknowledged was lost)";

/// Path of the saved index beside a data file.
pub fn index_path(data_path: &Path) -> PathBuf {
    let mut p = data_path.as_os_str().to_owned();
    p.push(".index");
    PathBuf::from(p)
}

/// Whether `finish` waits for the data to reach stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// `finish` returns after fdatasync (shared by concurrent committers). The default.
    #[default]
    Fsync,
    /// No fdatasync: a crash or power loss can lose acknowledged commits. For tests and
    /// bulk loads only; the storage logs a warning when opened this way.
    Off,
}

/// How to open a data file.
#[derive(Clone)]
pub struct FileOptions {
    pub(crate) durability: Durability,
    pub(crate) read_only: bool,
    pub(crate) create: bool,
    pub(crate) index_save_interval_bytes: u64,
    pub(crate) group_commit_wait: Duration,
    pub(crate) data_start: u64,
    pub(crate) io: Arc<dyn io::FileIoFactory>,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            durability: Durability::Fsync,
            read_only: false,
            create: true,
            index_save_interval_bytes: 64 << 20,
            group_commit_wait: Duration::from_micros(500),
            data_start: 0,
            io: Arc::new(io::StdFileIoFactory),
        }
    }
}

impl FileOptions {
    pub fn new() -> Self {
        Self::default()
    }
    /// Durability of commits (default: [`Durability::Fsync`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }
    /// Open without taking the writer lock and never modify the file (default: false).
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }
    /// Create the file when it does not exist (default: true).
    pub fn create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }
    /// Save the index after this many bytes of new data (default: 64 MiB).
    pub fn index_save_interval_bytes(mut self, bytes: u64) -> Self {
        self.index_save_interval_bytes = bytes;
        self
    }
    /// Longest time a group-commit leader waits for other committers already
    /// between begin and write before it syncs (default: 500 µs).
    pub fn group_commit_wait(mut self, wait: Duration) -> Self {
        self.group_commit_wait = wait;
        self
    }
    /// Where the first transaction starts in a new file (0: right after the header).
    /// Leaves a hole (sparse on most file systems); tests use it for 64-bit offsets.
    pub fn data_start(mut self, offset: u64) -> Self {
        self.data_start = offset;
        self
    }
    /// The file-I/O implementation (default: the operating system's files). Tests
    /// pass a fault-injecting one.
    pub fn io(mut self, io: Arc<dyn io::FileIoFactory>) -> Self {
        self.io = io;
        self
    }
}

/// One object revision, as [`FileStorage::scan_records`] shows it.
#[derive(Debug)]
pub struct RecordVisit<'a> {
    pub tid: Tid,
    pub oid: Oid,
    /// Whether this is the object's newest revision.
    pub newest: bool,
    pub data: &'a [u8],
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

/// Guarded by the commit lock.
struct CommitState {
    /// End of the finished records, written or staged (the next record goes here).
    end: u64,
    /// Tid of the last finished transaction.
    last_tid: Tid,
    /// For every oid of a finished transaction not yet in the index: its newest
    /// (tid, position). Votes consult it first, so conflicts and back-pointers see
    /// finished transactions before they are written and indexed.
    pending: OidMap<(Tid, u64)>,
}

impl CommitState {
    /// The pending (tid, position) of `oid`, unless the index already reflects it
    /// (entries go stale once their batch is indexed, and are pruned at each finish).
    fn pending_newer(&self, oid: Oid, reader: &Reader) -> Option<(Tid, u64)> {
        self.pending
            .get(&oid)
            .copied()
            .filter(|(tid, _)| *tid > reader.indexed_tid)
    }
}

/// Finished records not yet written: the next group-commit leader writes them with
/// one pwrite. Committers only copy their record here (under the commit lock), so
/// the commit lock is held for microseconds, not for a syscall; the leader needs only
/// this lock, so a pack holding the commit lock can wait for it.
struct Staging {
    /// The records, back to back; they belong at `start`.
    bytes: Vec<u8>,
    start: u64,
    txns: Vec<StagedTxn>,
    /// The file's length: written records plus preallocated zeros.
    file_len: u64,
    /// The records a leader took and is writing (start, bytes): until they are
    /// written and indexed they are neither here nor readable in the file, and a
    /// vote merging a conflict reads them (see `pending_record`).
    writing: Option<(u64, Arc<Vec<u8>>)>,
    /// Every byte before this offset is known durable without counting the
    /// group commits' syncs: the end at open, at a pack's swap, or at an explicit
    /// `sync`. The durable mark of records written with durability off.
    durable_floor: u64,
}

/// Every `TID_MARK_EVERY`-th transaction's (tid, position), built lazily by header-
/// only walks and extended as the file grows; reset when a pack swaps the file.
#[derive(Default)]
struct TidMarks {
    file_id: u64,
    marks: Vec<(Tid, u64)>,
    /// Where the next transaction to sample starts (0: nothing sampled yet).
    scanned_to: u64,
    transactions: u64,
}

/// One tid mark per this many transactions.
const TID_MARK_EVERY: u64 = 64;

/// A finished transaction waiting in `Staging`.
struct StagedTxn {
    tid: Tid,
    /// Where its record starts (the staged records lie back to back).
    pos: u64,
    /// From `format::EncodedTxn`, to stamp the durable lag cheaply.
    body_crc: u32,
    end: u64,
    oids: Arc<[Oid]>,
    positions: Vec<u64>,
}

/// Group-commit state.
struct SyncState {
    written_end: u64,
    synced_end: u64,
    /// A leader is syncing (or gathering committers to sync).
    syncing: bool,
    /// Transactions begun and not yet written or dropped.
    in_flight: usize,
    /// Written transactions waiting to be synced and published, in commit order.
    unpublished: VecDeque<Unpublished>,
    poisoned: Option<Arc<str>>,
    /// How many commits a leader expects to gather: the largest recent group. Grows
    /// at once with a larger group, decays by one per sync, so a leader waits for as
    /// many committers as were recently active, and stops waiting soon after they go.
    expected_batch: usize,
    last_sync_time: Duration,
}

impl SyncState {
    /// Whether a gathering leader has what it waits for: nobody is between begin and
    /// write, and the group is as large as recent groups were.
    fn group_gathered(&self) -> bool {
        self.in_flight == 0 && self.unpublished.len() >= self.expected_batch
    }
}

struct Unpublished {
    tid: Tid,
    end: u64,
    oids: Arc<[Oid]>,
}

impl FileStorage {
    /// Opens (or creates) the data file at `path`.
    ///
    /// A writable open takes the writer lock (`PATH.lock`), loads the saved index
    /// (`PATH.index`) when it is valid, scans the records after it, and cuts an
    /// incomplete last transaction (saving its bytes to `PATH.tail-OFFSET`). Damage
    /// in the middle of the file makes the open fail with [`Error::Corrupted`].
    pub fn open(path: impl AsRef<Path>, options: FileOptions) -> Result<FileStorage> {
        let path = path.as_ref().to_path_buf();
        let read_only = options.read_only;
        let writer_lock = if read_only {
            None
        } else {
            Some(WriterLock::acquire(&path)?)
        };
        let exists = path.exists();
        if !exists && (read_only || !options.create) {
            return Err(Error::io(
                &path,
                "opening the data file",
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            ));
        }
        if !exists && !read_only {
            // Before creating it: a refused open leaves nothing behind.
            refuse_new_file_beside_index(&path, false)?;
        }
        let io = options
            .io
            .open(&path, !read_only, !exists)
            .map_err(|e| Error::io(&path, "opening the data file", e))?;
        let mut len = io
            .len()
            .map_err(|e| Error::io(&path, "reading the file length", e))?;
        if len == 0 && !read_only {
            if exists {
                refuse_new_file_beside_index(&path, true)?;
            }
            len = create_header(&*options.io, &*io, &path, options.data_start)?;
        }
        let mut header_bytes = [0u8; FILE_HEADER_LEN as usize];
        let header_len = len.min(FILE_HEADER_LEN) as usize;
        io.read_at(&mut header_bytes[..header_len], 0)
            .map_err(|e| Error::io(&path, "reading the file header", e))?;
        let header =
            FileHeader::decode(&header_bytes[..header_len]).map_err(|what| Error::Format {
                path: path.clone(),
                what,
            })?;
        if header.data_start > len {
            // A writer sizes a new file to its data start before anything else.
            return Err(Error::Format {
                path: path.clone(),
                what: format!(
                    "data start {} lies beyond the end of the file ({len} bytes)",
                    header.data_start
                ),
            });
        }
        let identity = io
            .identity()
            .map_err(|e| Error::io(&path, "reading file identity", e))?;

        let map_len = holes::mappable_len(&*io, &path, header.data_start, !read_only)?;
        let mut map = io
            .map_prefix(map_len)
            .map_err(|e| Error::io(&path, "mapping the data file", e))?;
        let (mut index, start, last_tid, next_oid) =
            match load_saved_index(&*options.io, &path, &map, &header) {
                Some((h, idx)) => (idx, h.covered_end, h.last_tid, h.next_oid),
                None => (Index::default(), header.data_start, Tid::ZERO, 1),
            };
        // Read before the scan: whatever it claims was durable before the scan began
        // (a read-only open may race a live writer).
        let index_claim = if start == header.data_start && last_tid == Tid::ZERO {
            saved_index_claim(&*options.io, &path, &header)
        } else {
            None
        };
        let saved_end = if start == header.data_start && last_tid == Tid::ZERO {
            0
        } else {
            start
        };
        let saved_next_oid = next_oid;
        let scan_start = start.max(header.data_start);
        let outcome = scan_at_open(&map, scan_start, last_tid, next_oid, &mut index, read_only)
            .map_err(|damage| mid_file_damage(&path, &damage))?;
        let end = outcome.end;
        if let Some(claim) = &index_claim {
            check_index_claim(&path, claim, &outcome, map.len() as u64, read_only)?;
        }
        log::debug!(
            "{}: scanned {} transactions from offset {scan_start} to {end}",
            path.display(),
            outcome.transactions
        );
        if let Some(tail) = &outcome.tail {
            if read_only {
                // A live writer may be writing them right now (this open raced its
                // write), or a crash left them: only a writable open can tell.
                log::warn!(
                    "{}: ignoring {} bytes at offset {} after the last complete transaction ({}): \
                     a transaction a live writer is writing, or the torn tail of a crash, which a \
                     writable open will cut",
                    path.display(),
                    tail.extent_end - tail.offset,
                    tail.offset,
                    tail.what
                );
            } else {
                drop(map);
                cut_tail(&*options.io, &*io, &path, tail)?;
                map = io
                    .map()
                    .map_err(|e| Error::io(&path, "mapping the data file", e))?;
            }
        }
        if !read_only {
            // Every byte before `end` is durable from here on: the durable marks of
            // the records this storage writes rely on it (a previous writer with
            // durability off may have left them in the page cache only).
            io.sync_data()
                .map_err(|e| Error::io(&path, "syncing the data file at open", e))?;
        }
        let file_len = map.len() as u64;
        let next_oid = outcome
            .next_oid
            .max(recovery::next_oid_of(&index))
            .max(index_claim.as_ref().map_or(1, |c| c.next_oid));
        if options.durability == Durability::Off && !read_only {
            log::warn!(
                "{}: durability is off: commits are not fsync'd and a crash or power loss can lose \
                 acknowledged transactions; use this only for tests and bulk loads",
                path.display()
            );
        }
        let shared = Arc::new(Shared {
            path,
            file: RwLock::new(Arc::new(OpenFile {
                io,
                identity,
                header,
            })),
            reader: RwLock::new(Reader {
                map: Arc::new(map),
                index,
                indexed_end: end,
                indexed_tid: outcome.last_tid,
            }),
            commit: Arc::new(Mutex::new(CommitState {
                end,
                last_tid: outcome.last_tid,
                pending: HashMap::default(),
            })),
            staging: Mutex::new(Staging {
                bytes: Vec::new(),
                start: end,
                txns: Vec::new(),
                file_len,
                writing: None,
                durable_floor: end,
            }),
            sync: Mutex::new(SyncState {
                written_end: end,
                synced_end: end,
                syncing: false,
                in_flight: 0,
                unpublished: VecDeque::new(),
                poisoned: None,
                expected_batch: 1,
                last_sync_time: Duration::ZERO,
            }),
            durable_changed: Condvar::new(),
            gather_changed: Condvar::new(),
            last_tid: AtomicU64::new(outcome.last_tid.0),
            published_end: AtomicU64::new(end),
            next_oid: AtomicU64::new(next_oid),
            notifier: Notifier::default(),
            closed: AtomicBool::new(false),
            index_saving: AtomicBool::new(false),
            packing: AtomicBool::new(false),
            tid_marks: Mutex::new(TidMarks::default()),
            saved_index_end: AtomicU64::new(saved_end),
            saved_next_oid: AtomicU64::new(saved_next_oid),
            index_save_failed_end: AtomicU64::new(0),
            writer_lock: Mutex::new(writer_lock),
            options,
        });
        let storage = FileStorage { shared };
        if !read_only && end - start >= storage.shared.options.index_save_interval_bytes {
            // A failure is logged: the file stays authoritative, the index is saved later.
            let _ = storage.shared.save_index();
        }
        Ok(storage)
    }

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

    /// The format version of the open file.
    pub fn format_version(&self) -> u32 {
        self.shared.file().header.version
    }

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
        self.shared.check_writable()?;
        meta.validate()?;
        self.shared.next_oid.fetch_max(next_oid, Ordering::AcqRel);
        self.shared.sync.lock().in_flight += 1;
        let mut txn = Box::new(FileTransaction {
            shared: Arc::clone(&self.shared),
            meta,
            writes: PendingWrites::default(),
            copied_tid: Some(tid),
            voted: None,
            in_flight: true,
        });
        for (oid, data) in objects {
            txn.store(oid, Tid::ZERO, data)?;
        }
        txn.finish().map(|_| ())
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

    /// Saves the index now (it is also saved at close and every
    /// `index_save_interval_bytes` of new data).
    pub fn save_index(&self) -> Result<()> {
        self.shared.check_writable()?;
        self.shared.save_index()
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

    /// The data record at `pos`, checked to be a revision of `oid`.
    fn record<'m>(&self, map: &'m [u8], pos: u64, oid: Oid) -> Result<format::DataRecord<'m>> {
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
    fn newest_tid_at(&self, map: &[u8], pos: u64, oid: Oid) -> Result<Tid> {
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
    fn walk_revisions(
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
    fn pending_record(&self, pos: u64, oid: Oid) -> Result<Vec<u8>> {
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

    /// The merged data for conflict `c` through `resolver`, or `None` when it
    /// cannot be merged (a `check_current`, a new or deleted object, the base
    /// revision packed away, or the resolver refuses). Holds the commit lock's
    /// guard only (see `pending_record`).
    fn merge(&self, c: &Conflicting, resolver: Resolver<'_>) -> Result<Option<Vec<u8>>> {
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
        let committed = self.pending_record(c.pos, oid)?;
        Ok(resolver(oid, &old, &committed).filter(|d| d.len() <= RECORD_BYTES_MAX))
    }

    /// The data of revision `tid` of `oid`, which is in the index's history (a
    /// revision some snapshot read), or `None` if it is gone (packed away).
    fn indexed_revision(&self, oid: Oid, tid: Tid) -> Result<Option<Vec<u8>>> {
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
    fn walk_start(&self, map: &[u8], end: u64, from: Tid) -> u64 {
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

    /// Waits until transaction `tid` is published (or the storage is poisoned).
    /// Its committer is on its way through `wait_durable`, which publishes it.
    fn wait_published(&self, tid: Tid) -> Result<()> {
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
    fn wait_durable(&self, end: u64) -> Result<()> {
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
            // Gather: give committers already on their way a moment to write, so
            // one fdatasync covers them all. Bounded by the last sync's duration.
            let wait = self.options.group_commit_wait.min(st.last_sync_time);
            let deadline = Instant::now() + wait;
            while !st.group_gathered() && Instant::now() < deadline {
                self.gather_changed.wait_until(&mut st, deadline);
            }
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
            self.durable_changed.notify_all();
        }
    }

    /// Saves the index for the durable data. One save at a time; a failure to save
    /// is logged and returned but does not stop commits (the file stays authoritative:
    /// the saved index is a cache, and an open without it scans the file).
    fn save_index(&self) -> Result<()> {
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
    fn maybe_save_index(&self, end: u64) {
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
        self.shared.check_open()?;
        let snapshot = snapshot.min(self.shared.last_tid());
        let mut found = None;
        self.shared.walk_revisions(oid, |r| {
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

    fn load_revision(&self, oid: Oid, tid: Tid) -> Result<Vec<u8>> {
        self.shared.check_open()?;
        let visible = tid <= self.shared.last_tid();
        let mut found = None;
        self.shared.walk_revisions(oid, |r| {
            if visible && r.tid == tid {
                found = Some(r.data.to_vec());
            }
            visible && r.tid > tid
        })?;
        found.ok_or(Error::NoSuchRevision { oid, tid })
    }

    fn history(&self, oid: Oid, limit: usize) -> Result<Vec<RevisionInfo>> {
        self.shared.check_open()?;
        let last = self.shared.last_tid();
        let mut revisions = Vec::new();
        let mut visible = false;
        self.shared.walk_revisions(oid, |r| {
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

    fn transactions(&self, from: Tid, to: Tid) -> Result<TransactionIter<'_>> {
        self.shared.check_open()?;
        // The end and the map under one read lock: a pack swaps both under the write lock.
        let (end, map) = {
            let reader = self.shared.reader.read();
            let end = self.shared.published_end.load(Ordering::Acquire);
            (end, Arc::clone(&reader.map))
        };
        let pos = self.shared.walk_start(&map, end, from);
        Ok(Box::new(TransactionWalk {
            shared: &self.shared,
            map,
            pos,
            end,
            from,
            to,
        }))
    }

    fn begin(&self, meta: TransactionMeta) -> Result<Box<dyn StorageTransaction>> {
        self.shared.check_writable()?;
        meta.validate()?;
        self.shared.sync.lock().in_flight += 1;
        Ok(Box::new(FileTransaction {
            shared: Arc::clone(&self.shared),
            meta,
            writes: PendingWrites::default(),
            copied_tid: None,
            voted: None,
            in_flight: true,
        }))
    }

    fn subscribe(&self) -> CommitSubscription {
        self.shared.notifier.subscribe()
    }

    fn close(&self) -> Result<()> {
        self.shared.close()
    }

    fn pack(
        &self,
        pack_time: Tid,
        references: Option<pack::References<'_>>,
    ) -> Result<pack::PackReport> {
        FileStorage::pack(self, pack_time, references)
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

struct FileTransaction {
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

/// A conflicting expectation found by a vote.
struct Conflicting {
    /// A stored object (mergeable), not a `check_current`.
    stored: bool,
    conflict: ConflictError,
    /// Where the newest revision is (0: the object has none).
    pos: u64,
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
        let mut conflicts = Vec::new();
        {
            let reader = shared.reader.read();
            let checked = if self.copied_tid.is_some() {
                0
            } else {
                usize::MAX
            };
            let stores = self.writes.stores.len();
            for (i, (oid, expected)) in self.writes.expectations().take(checked).enumerate() {
                let (current, pos) =
                    match (commit.pending_newer(oid, &reader), reader.index.get(oid)) {
                        (Some((tid, pos)), _) => (tid, pos),
                        (None, None) => (Tid::ZERO, 0),
                        (None, Some(pos)) => (shared.newest_tid_at(&reader.map, pos, oid)?, pos),
                    };
                if current != expected {
                    conflicts.push(Conflicting {
                        stored: i < stores,
                        conflict: ConflictError {
                            oid,
                            base_tid: expected,
                            current_tid: current,
                        },
                        pos,
                    });
                    if resolver.is_none() {
                        break;
                    }
                }
            }
        }
        let mut merged = Vec::new();
        for c in conflicts {
            let data = match resolver {
                Some(resolver) => shared.merge(&c, resolver)?,
                None => None,
            };
            let Some(data) = data else {
                drop(commit);
                // This transaction writes nothing now: a gathering leader must not
                // wait for it (while it waits below for that leader's sync).
                self.leave_flight();
                // Report only revisions the caller can load: a conflict resolver
                // reads the committed state right away.
                shared.wait_published(c.conflict.current_tid)?;
                return Err(c.conflict.into());
            };
            merged.push((c.conflict.oid, c.conflict.current_tid, data));
        }
        let resolved = self.writes.apply_merges(merged);
        let mut prevs = Vec::with_capacity(self.writes.stores.len());
        {
            let reader = shared.reader.read();
            for s in &self.writes.stores {
                let prev = match commit.pending_newer(s.oid, &reader) {
                    Some((_, pos)) => pos,
                    None => reader.index.get(s.oid).unwrap_or(0),
                };
                prevs.push(prev);
            }
        }
        let len =
            format::transaction_len(&self.meta, self.writes.stores.iter().map(|s| s.data.len()));
        if len > format::TXN_BYTES_MAX {
            return Err(Error::LimitExceeded {
                what: "transaction record",
                len,
                max: format::TXN_BYTES_MAX,
            });
        }
        let tid = match self.copied_tid {
            None if commit.last_tid == Tid::MAX => {
                return Err(shared.corrupted(
                    commit.end,
                    "the last transaction id is the largest possible: no later transaction can commit",
                ));
            }
            None => Tid::next_after(commit.last_tid),
            Some(tid) if tid > commit.last_tid => tid,
            Some(tid) => {
                return Err(Error::TidNotIncreasing {
                    tid,
                    last: commit.last_tid,
                });
            }
        };
        let pos = commit.end;
        let objects: Vec<format::DataToWrite<'_>> = self
            .writes
            .stores
            .iter()
            .zip(&prevs)
            .map(|(s, &prev)| format::DataToWrite {
                oid: s.oid,
                prev,
                data: &s.data,
            })
            .collect();
        let next_oid = shared.next_oid.load(Ordering::Acquire);
        let record = format::encode_stampable(pos, tid, next_oid, &self.meta, &objects);
        self.voted = Some(Voted {
            commit,
            tid,
            pos,
            record,
        });
        Ok(resolved)
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

    fn finish(mut self: Box<Self>) -> Result<Tid> {
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
        shared.wait_durable(end)?;
        shared.maybe_save_index(end);
        Ok(tid)
    }

    fn abort(self: Box<Self>) {}
}

#[cfg(test)]
mod tests {
    use super::*;
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
