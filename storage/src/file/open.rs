//! The checks and repairs a data file's open makes before the storage serves it:
//! refusing a new file beside an existing index, creating the file header,
//! loading and checking the saved index, the opening scan (and its race with a
//! live writer), the saved index as evidence of what the file lost, and cutting a
//! bad tail. `FileStorage::open` calls them in that order.
//!
//! Invariants:
//! - Nothing here writes to the data file except `create_header` (a new file) and
//!   `cut_tail` (a writable open, after saving the cut bytes beside the file).
//! - A refusal leaves every file as it was.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::ids::Tid;

use super::format::{self, FILE_HEADER_LEN, FORMAT_VERSION, FileHeader};
use super::index::{self, Index, SavedIndexHeader};
use super::io::{self, FileIo};
use super::{DAMAGE_ADVICE, index_path, recovery};

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
