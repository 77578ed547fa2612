//! The open of a data file, and the checks and repairs it makes before the
//! storage serves it:
//! refusing a new file beside an existing index, creating the file header,
//! loading and checking the saved index, the opening scan (and its race with a
//! live writer), the saved index as evidence of what the file lost, and cutting a
//! bad tail. `FileStorage::open` calls them in that order, then builds the shared
//! state from what the scan found.
//!
//! Invariants:
//! - Nothing here writes to the data file except `create_header` (a new file) and
//!   `cut_tail` (a writable open, after saving the cut bytes beside the file).
//! - A refusal leaves every file as it was.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use memmap2::Mmap;
use parking_lot::{Condvar, Mutex, RwLock};

use crate::error::{Error, Result};
use crate::ids::Tid;
use crate::notify::Notifier;

use super::format::{self, FILE_HEADER_LEN, FORMAT_VERSION, FileHeader};
use super::group_commit::{Staging, SyncState};
use super::index::{self, Index, SavedIndexHeader};
use super::io::{self, FileIo};
use super::lock::WriterLock;
use super::read::TidMarks;
use super::transaction::CommitState;
use super::{
    DAMAGE_ADVICE, Durability, FileOptions, FileStorage, OpenFile, Reader, Shared, holes,
    index_path, recovery,
};

/// A data file that is missing or empty while its saved index exists is a
/// database whose data was lost or moved (a failed copy, a wrong restore, a file
/// system repair): starting a new one there would also overwrite its index.
pub(super) fn refuse_new_file_beside_index(path: &Path, existed: bool) -> Result<()> {
    let ipath = index_path(path);
    if !ipath.exists() {
        return Ok(());
    }
    let state = if existed {
        "is empty"
    } else {
        "does not exist"
    };
    Err(Error::Format {
        path: path.to_path_buf(),
        what: format!(
            "the data file {state}, but its saved index {} exists: the database's data may have \
             been lost or moved, so no new database is started over it. Restore the data file \
             from a backup, or remove {} to start a new, empty database",
            ipath.display(),
            ipath.display()
        ),
    })
}

pub(super) fn create_header(
    factory: &dyn io::FileIoFactory,
    file: &dyn FileIo,
    path: &Path,
    data_start: u64,
) -> Result<u64> {
    let data_start = data_start.max(FILE_HEADER_LEN);
    let header = FileHeader {
        version: FORMAT_VERSION,
        file_id: uuid::Uuid::new_v4().as_u64_pair().0,
        data_start,
    };
    let fail = |action| move |e| Error::io_or_full(path, action, e, "open it again");
    file.write_at(&header.encode(), 0)
        .map_err(fail("writing the file header"))?;
    file.set_len(data_start)
        .map_err(fail("sizing the new file"))?;
    file.sync_data().map_err(fail("syncing the new file"))?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    factory
        .sync_dir(dir)
        .map_err(fail("syncing the directory"))?;
    Ok(data_start)
}

/// The saved index, if it exists and agrees with the data file (see
/// `index::check_saved` for what is checked); logs why not.
pub(super) fn load_saved_index(
    factory: &dyn io::FileIoFactory,
    path: &Path,
    map: &[u8],
    header: &FileHeader,
) -> Option<(SavedIndexHeader, Index)> {
    let ipath = index_path(path);
    let ignore = |why: String| {
        log::warn!(
            "{}: ignoring the saved index: {why}; rebuilding it by scanning the data file",
            ipath.display()
        );
        None
    };
    let bytes = match index::read_saved(factory, &ipath, index::saved_len_max(map.len() as u64)) {
        Ok(Some(b)) => b,
        Ok(None) => return None,
        Err(e) => return ignore(format!("cannot read it ({e})")),
    };
    let (saved, idx) = match index::decode_saved(&bytes) {
        Ok(v) => v,
        Err(e) => return ignore(e),
    };
    drop(bytes);
    if saved.file_id != header.file_id {
        return ignore("it belongs to another data file".into());
    }
    if let Err(why) = index::check_saved(&saved, &idx, map, header.data_start) {
        return ignore(why);
    }
    Some((saved, idx))
}

/// The opening scan. A read-only open may race a live writer: where its scan
/// stopped (the end, or a group being written) the writer may have written and
/// synced more by the time the rest of the file is examined, and those records
/// carry marks beyond that point. The record there is then valid, which damage
/// never is: the open sees the file as it was when its scan passed there. A
/// writable open holds the writer lock: nothing changes under it.
pub(super) fn scan_at_open(
    map: &[u8],
    start: u64,
    last_tid: Tid,
    next_oid: u64,
    index: &mut Index,
    read_only: bool,
) -> std::result::Result<recovery::ScanOutcome, recovery::MidFileDamage> {
    match recovery::scan(map, start, last_tid, next_oid, index) {
        Err(damage) if read_only && format::transaction_at(map, damage.offset).is_ok() => {
            log::debug!(
                "a writer appended after offset {} while this read-only open scanned; it sees \
                 the transactions before that offset",
                damage.offset
            );
            Ok(recovery::ScanOutcome {
                end: damage.offset,
                last_tid: damage.last_tid,
                next_oid: damage.next_oid,
                transactions: damage.transactions,
                tail: None,
            })
        }
        outcome => outcome,
    }
}

/// The error for damage in the middle of the file found by the opening scan.
pub(super) fn mid_file_damage(path: &Path, damage: &recovery::MidFileDamage) -> Error {
    let later = &damage.later;
    Error::Corrupted {
        path: path.to_path_buf(),
        offset: damage.offset,
        what: format!(
            "{} (a valid transaction follows at offset {}: {} intact transactions after it, tids \
             {} to {}; transaction {} was written when every byte before offset {} was durable, so \
             the bytes here had been written and made durable before, and were damaged since)",
            damage.what,
            damage.next_valid,
            later.count,
            later.first_tid,
            later.last_tid,
            later.max_mark_tid,
            later.max_mark
        ),
        advice: DAMAGE_ADVICE,
    }
}

/// What a saved index claims about the data file, when its checksum is right and
/// it belongs to this file, even if it is not used (it may cover more than the
/// file now holds). Streams the file to check its CRC: allocates nothing for it.
pub(super) fn saved_index_claim(
    factory: &dyn io::FileIoFactory,
    path: &Path,
    header: &FileHeader,
) -> Option<SavedIndexHeader> {
    const HEADER_LEN: usize = 64;
    let file = factory.open(&index_path(path), false, false).ok()?;
    let len = file.len().ok()?;
    let body_len = len.checked_sub(4).filter(|&l| l >= HEADER_LEN as u64)?;
    let mut head = [0u8; HEADER_LEN];
    file.read_at(&mut head, 0).ok()?;
    let word = |at: usize| u64::from_le_bytes(head[at..at + 8].try_into().expect("8 bytes"));
    if head[0..8] != index::INDEX_MAGIC
        || u32::from_le_bytes(head[8..12].try_into().expect("4 bytes")) != index::INDEX_VERSION
        || word(16) != header.file_id
    {
        return None;
    }
    let mut crc = crc32fast::Hasher::new();
    let mut chunk = vec![0u8; (1 << 20).min(body_len) as usize];
    let mut at = 0;
    while at < body_len {
        let n = (body_len - at).min(chunk.len() as u64) as usize;
        file.read_at(&mut chunk[..n], at).ok()?;
        crc.update(&chunk[..n]);
        at += n as u64;
    }
    let mut stored = [0u8; 4];
    file.read_at(&mut stored, body_len).ok()?;
    (crc.finalize() == u32::from_le_bytes(stored)).then(|| SavedIndexHeader {
        file_id: word(16),
        covered_end: word(24),
        last_tid: Tid(word(32)),
        next_oid: word(40),
    })
}

/// Refuses an open whose saved index (checksum right, this file's) vouches for
/// transactions the file no longer holds: the index is saved only after the data
/// it covers was durable, so they were acknowledged, and the file was truncated or
/// damaged. A read-only open that may have mapped the file before a live writer
/// grew it (the claim lies beyond its map) only warns.
pub(super) fn check_index_claim(
    path: &Path,
    claim: &SavedIndexHeader,
    outcome: &recovery::ScanOutcome,
    map_len: u64,
    read_only: bool,
) -> Result<()> {
    if claim.covered_end <= outcome.end && claim.last_tid <= outcome.last_tid {
        return Ok(());
    }
    let what = format!(
        "the saved index {} records transactions up to offset {} (last tid {}), but the valid \
         transactions end at offset {} (last tid {}): acknowledged transactions are missing, so \
         the file was truncated or damaged; nothing was changed",
        index_path(path).display(),
        claim.covered_end,
        claim.last_tid,
        outcome.end,
        outcome.last_tid
    );
    if read_only && claim.covered_end > map_len {
        log::error!(
            "{}: {what} (or a live writer grew the file while this read-only open mapped it)",
            path.display()
        );
        return Ok(());
    }
    Err(Error::Corrupted {
        path: path.to_path_buf(),
        offset: outcome.end,
        what,
        advice: DAMAGE_ADVICE,
    })
}

/// Saves the bytes of a bad tail beside the file, then cuts them off.
pub(super) fn cut_tail(
    factory: &dyn io::FileIoFactory,
    file: &dyn FileIo,
    path: &Path,
    tail: &recovery::TailDamage,
) -> Result<()> {
    let mut saved = PathBuf::from(format!("{}.tail-{}", path.display(), tail.offset));
    let mut n = 1;
    while saved.exists() {
        saved = PathBuf::from(format!("{}.tail-{}-{n}", path.display(), tail.offset));
        n += 1;
    }
    let len = tail.extent_end - tail.offset;
    let mut bytes = vec![0u8; len as usize];
    let fail = |action| move |e| Error::io(path, action, e);
    file.read_at(&mut bytes, tail.offset)
        .map_err(fail("reading the damaged tail"))?;
    let out = factory
        .open(&saved, true, true)
        .map_err(fail("saving the damaged tail"))?;
    out.write_at(&bytes, 0)
        .map_err(fail("saving the damaged tail"))?;
    out.sync_data().map_err(fail("saving the damaged tail"))?;
    file.set_len(tail.offset)
        .map_err(fail("cutting the damaged tail"))?;
    file.sync_data().map_err(fail("cutting the damaged tail"))?;
    log::warn!("{}", cut_tail_message(path, tail, &saved));
    Ok(())
}

/// The log line of a cut: what is known, and no more. Nothing in the file proves
/// that the cut bytes were never acknowledged: damage to the last acknowledged
/// transaction (or group) looks the same as the torn write of a crash.
pub(super) fn cut_tail_message(path: &Path, tail: &recovery::TailDamage, saved: &Path) -> String {
    let len = tail.extent_end - tail.offset;
    let tid = tail.tid.map_or(String::new(), |t| format!(", tid {t}"));
    let what = match &tail.later {
        None => format!(
            "an incomplete or damaged last transaction at offset {} ({}{tid}); a crash during its \
             write leaves this, and such a transaction was never acknowledged; damage to the last \
             acknowledged transaction looks the same",
            tail.offset, tail.what
        ),
        Some(later) => format!(
            "an incomplete or damaged group of transactions at offset {} ({}{tid}), followed by {} \
             intact transactions (tids {} to {}) written in one group with it, before any byte of \
             it was durable; a crash during that group's write leaves this, and then none of them \
             was acknowledged; damage to the last acknowledged group looks the same",
            tail.offset, tail.what, later.count, later.first_tid, later.last_tid
        ),
    };
    format!(
        "{}: cut {what}; its {len} bytes are in {}",
        path.display(),
        saved.display()
    )
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
        // Before the writer lock: a refused open leaves no lock file behind.
        refuse_missing_file(&path, &options)?;
        refuse_foreign_file(&path, &options)?;
        let writer_lock = if read_only {
            None
        } else {
            Some(WriterLock::acquire(&path)?)
        };
        let (io, len) = open_data_file(&path, &options)?;
        let header = read_header(&*io, &path, len)?;
        let identity = io
            .identity()
            .map_err(|e| Error::io(&path, "reading file identity", e))?;
        let map_len = holes::mappable_len(&*io, &path, header.data_start, !read_only)?;
        let map = io
            .map_prefix(map_len)
            .map_err(|e| Error::io(&path, "mapping the data file", e))?;
        let mut scanned = scan_file(&*options.io, &path, map, &header, read_only)?;
        if let Some(tail) = &scanned.outcome.tail {
            scanned.map = settle_tail(&*options.io, &*io, &path, tail, scanned.map, read_only)?;
        }
        if !read_only {
            // Every byte before `end` is durable from here on: the durable marks of
            // the records this storage writes rely on it (a previous writer with
            // durability off may have left them in the page cache only).
            io.sync_data()
                .map_err(|e| Error::io(&path, "syncing the data file at open", e))?;
        }
        if options.durability == Durability::Off && !read_only && options.warn_durability_off {
            log::warn!(
                "{}: durability is off: commits are not fsync'd and a crash or power loss can lose \
                 acknowledged transactions; use this only for tests and bulk loads",
                path.display()
            );
        }
        let file = OpenFile {
            io,
            identity,
            header,
        };
        let scanned_bytes = scanned.outcome.end - scanned.start;
        let storage = FileStorage {
            shared: Arc::new(Shared::opened(path, options, file, scanned, writer_lock)),
        };
        let shared = &storage.shared;
        if !read_only && scanned_bytes >= shared.options.index_save_interval_bytes {
            // A failure is logged: the file stays authoritative, the index is saved later.
            let _ = shared.save_index();
        }
        Ok(storage)
    }
}

impl Shared {
    /// The state of a storage just opened on `file`, as the scan left it.
    fn opened(
        path: PathBuf,
        options: FileOptions,
        file: OpenFile,
        scanned: Scanned,
        writer_lock: Option<WriterLock>,
    ) -> Shared {
        let Scanned {
            map,
            index,
            outcome,
            saved_end,
            saved_next_oid,
            next_oid,
            ..
        } = scanned;
        let end = outcome.end;
        let file_len = map.len() as u64;
        Shared {
            path,
            file: RwLock::new(Arc::new(file)),
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
        }
    }
}

/// Opens the data file (creating it, with its header, when allowed); returns it
/// and its length.
/// A missing data file that this open may not create.
fn refuse_missing_file(path: &Path, options: &FileOptions) -> Result<()> {
    if path.exists() || (options.create && !options.read_only) {
        return Ok(());
    }
    Err(Error::io(
        path,
        "opening the data file",
        std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
    ))
}

/// Refuses a file that is not a data file (its first bytes are not the magic
/// number) before the writer lock is taken, so that no lock file is left beside
/// it. A shorter file is left to the header check under the lock (a writer may be
/// creating it). A data file's first bytes never change once written.
fn refuse_foreign_file(path: &Path, options: &FileOptions) -> Result<()> {
    let Ok(io) = options.io.open(path, false, false) else {
        return Ok(()); // missing (being created), or unreadable: the open says why
    };
    let mut magic = [0u8; format::FILE_MAGIC.len()];
    let long_enough = io.len().is_ok_and(|len| len >= magic.len() as u64);
    if !long_enough || io.read_at(&mut magic, 0).is_err() || magic == format::FILE_MAGIC {
        return Ok(());
    }
    Err(Error::Format {
        path: path.to_path_buf(),
        what: FileHeader::decode(&magic).expect_err("a wrong magic number is refused"),
    })
}

fn open_data_file(path: &Path, options: &FileOptions) -> Result<(Arc<dyn FileIo>, u64)> {
    let read_only = options.read_only;
    refuse_missing_file(path, options)?;
    let exists = path.exists();
    if !exists && !read_only {
        // Before creating it: a refused open leaves nothing behind.
        refuse_new_file_beside_index(path, false)?;
    }
    let io = options
        .io
        .open(path, !read_only, !exists)
        .map_err(|e| Error::io(path, "opening the data file", e))?;
    let mut len = io
        .len()
        .map_err(|e| Error::io(path, "reading the file length", e))?;
    if len == 0 && !read_only {
        if exists {
            refuse_new_file_beside_index(path, true)?;
        }
        len = create_header(&*options.io, &*io, path, options.data_start)?;
    }
    Ok((io, len))
}

/// Reads and checks the file header of a file of `len` bytes.
fn read_header(io: &dyn FileIo, path: &Path, len: u64) -> Result<FileHeader> {
    let mut header_bytes = [0u8; FILE_HEADER_LEN as usize];
    let header_len = len.min(FILE_HEADER_LEN) as usize;
    io.read_at(&mut header_bytes[..header_len], 0)
        .map_err(|e| Error::io(path, "reading the file header", e))?;
    let header = FileHeader::decode(&header_bytes[..header_len]).map_err(|what| Error::Format {
        path: path.to_path_buf(),
        what,
    })?;
    if header.data_start > len {
        // A writer sizes a new file to its data start before anything else.
        return Err(Error::Format {
            path: path.to_path_buf(),
            what: format!(
                "data start {} lies beyond the end of the file ({len} bytes)",
                header.data_start
            ),
        });
    }
    Ok(header)
}

/// What the open learned from the saved index and the scan after it.
struct Scanned {
    /// Where the scan began: the saved index's end, or the data start.
    start: u64,
    map: Mmap,
    index: Index,
    outcome: recovery::ScanOutcome,
    /// The end the saved index covers (0: none was loaded).
    saved_end: u64,
    /// The oid mark of the saved index (1 without one).
    saved_next_oid: u64,
    /// The oid allocator's start: every mark the file and the saved index show.
    next_oid: u64,
}

/// Loads the saved index when it is valid and scans the records after it; checks
/// what an unused saved index claims against what the scan found.
fn scan_file(
    factory: &dyn io::FileIoFactory,
    path: &Path,
    map: Mmap,
    header: &FileHeader,
    read_only: bool,
) -> Result<Scanned> {
    let (mut index, start, last_tid, next_oid) = match load_saved_index(factory, path, &map, header)
    {
        Some((h, idx)) => (idx, h.covered_end, h.last_tid, h.next_oid),
        None => (Index::default(), header.data_start, Tid::ZERO, 1),
    };
    let no_saved_index = start == header.data_start && last_tid == Tid::ZERO;
    // Read before the scan: whatever it claims was durable before the scan began
    // (a read-only open may race a live writer).
    let index_claim = if no_saved_index {
        saved_index_claim(factory, path, header)
    } else {
        None
    };
    let saved_end = if no_saved_index { 0 } else { start };
    let scan_start = start.max(header.data_start);
    let outcome = scan_at_open(&map, scan_start, last_tid, next_oid, &mut index, read_only)
        .map_err(|damage| mid_file_damage(path, &damage))?;
    if let Some(claim) = &index_claim {
        check_index_claim(path, claim, &outcome, map.len() as u64, read_only)?;
    }
    log::debug!(
        "{}: scanned {} transactions from offset {scan_start} to {}",
        path.display(),
        outcome.transactions,
        outcome.end
    );
    let all_next_oid = outcome
        .next_oid
        .max(recovery::next_oid_of(&index))
        .max(index_claim.as_ref().map_or(1, |c| c.next_oid));
    Ok(Scanned {
        start,
        map,
        index,
        outcome,
        saved_end,
        saved_next_oid: next_oid,
        next_oid: all_next_oid,
    })
}

/// Bytes after the last complete transaction: a writable open cuts them (and maps
/// the file again); a read-only one only warns.
fn settle_tail(
    factory: &dyn io::FileIoFactory,
    io: &dyn FileIo,
    path: &Path,
    tail: &recovery::TailDamage,
    map: Mmap,
    read_only: bool,
) -> Result<Mmap> {
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
        return Ok(map);
    }
    drop(map);
    cut_tail(factory, io, path, tail)?;
    io.map()
        .map_err(|e| Error::io(path, "mapping the data file", e))
}
