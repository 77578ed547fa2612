//! Holes in the data file: ranges with no disk space allocated, which read as
//! zeros through `pread` but kill the process with SIGBUS when touched through a
//! map on a file system that must allocate a page to answer and cannot (a full
//! tmpfs). Every map of a data file is decided here.
//!
//! Invariants:
//! - No map of a data file covers a hole after its data start. (The range between
//!   the header and a large data start is a hole on purpose and is never read.)
//! - A hole with no data after it, or only zeros, holds nothing: a writable open
//!   cuts the file there, a read-only one treats the file as ending there. Either way the end of
//!   the data is still decided by the records, as for preallocated zeros.
//! - A hole with data after it is filled with written zeros by a writable open
//!   (then read like any zeros among the records, i.e. as damage or end) and
//!   refused with its range by a read-only one, which never modifies the file.
//! - The walk over holes ends: each step moves past the hole it found.
//! - The writer never makes a hole (see `Shared::grow` and `extend_map`): holes
//!   come from other programs, older versions, or a file copied sparsely.

use std::path::Path;

use memmap2::Mmap;

use crate::error::{Error, Result};

use super::format::{FILE_HEADER_LEN, FileHeader};
use super::io::{FileIo, FileIoFactory, StdFileIoFactory};

/// What to do once a writable open failed to fill a hole for lack of space.
const FILL_ADVICE: &str =
    "open the data file again: the open fills the hole with zeros before reading the file";

/// Makes the data file safe to map from `data_start` on, and returns how much of
/// it may be mapped: its length, or where a hole at its end starts. `writable`
/// says whether the file may be changed (cut or filled); otherwise a hole with
/// data after it is an error naming its range.
pub(crate) fn mappable_len(
    file: &dyn FileIo,
    path: &Path,
    data_start: u64,
    writable: bool,
) -> Result<u64> {
    let holes = |e| Error::io(path, "looking for holes in the data file", e);
    let mut from = data_start;
    while let Some(hole) = file.find_hole(from).map_err(holes)? {
        // Only zeros after the hole (preallocated zeros that a power cut left partly
        // unallocated, say): the hole is the end of the data as much as they are.
        let data_at = match hole.data_at {
            Some(at) if !only_zeros_from(file, at).map_err(holes)? => Some(at),
            _ => None,
        };
        let Some(data_at) = data_at else {
            if writable {
                cut_trailing_hole(file, path, hole.start)?;
            }
            return Ok(hole.start);
        };
        if !writable {
            return Err(Error::Format {
                path: path.to_path_buf(),
                what: format!(
                    "bytes {}..{data_at} are a hole (no disk space is allocated to them, as after the \
                     disk filled up) with data after it; they are not read, since reading them could \
                     crash this process: free space on the file system and open the file writable \
                     once (e.g. `zodiac server`), which fills the hole with zeros, then run \
                     `zodiac verify` on it",
                    hole.start
                ),
            });
        }
        // Written zeros, not `allocate`: lseek reports space allocated but never
        // written as a hole too, so only written zeros make every later open
        // (read-only ones included) see the same bytes as this one.
        let zeros = vec![0u8; (data_at - hole.start).min(1 << 20) as usize];
        let mut at = hole.start;
        while at < data_at {
            let n = (data_at - at).min(zeros.len() as u64);
            file.write_at(&zeros[..n as usize], at).map_err(|e| {
                Error::io_or_full(path, "filling a hole in the data file", e, FILL_ADVICE)
            })?;
            at += n;
        }
        file.sync_data().map_err(|e| {
            Error::io_or_full(
                path,
                "syncing a filled hole of the data file",
                e,
                FILL_ADVICE,
            )
        })?;
        log::warn!(
            "{}: filled a hole (bytes {}..{data_at}, no disk space was allocated to them) with zeros \
             so that reading the file cannot crash; the records around it are checked as usual",
            path.display(),
            hole.start
        );
        debug_assert!(data_at > from);
        from = data_at;
    }
    file.len()
        .map_err(|e| Error::io(path, "reading the file length", e))
}

/// Whether the file holds only zeros (or holes) from `from` to its end. Reads the
/// data with `pread`, never through a map.
fn only_zeros_from(file: &dyn FileIo, from: u64) -> std::io::Result<bool> {
    let len = file.len()?;
    let mut buf = vec![0u8; ZERO_CHECK_CHUNK_BYTES];
    let mut at = from;
    // Each step moves `at` forward: past a hole, or past bytes read.
    while at < len {
        let segment_end = match file.find_hole(at)? {
            Some(hole) if hole.start <= at => match hole.data_at {
                Some(data) => {
                    at = data.max(at + 1);
                    continue;
                }
                None => return Ok(true),
            },
            Some(hole) => hole.start,
            None => len,
        };
        while at < segment_end {
            let n = (segment_end - at).min(buf.len() as u64) as usize;
            file.read_at(&mut buf[..n], at)?;
            if buf[..n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            at += n as u64;
        }
    }
    Ok(true)
}

/// Bytes read at a time when checking that what follows a hole is only zeros.
const ZERO_CHECK_CHUNK_BYTES: usize = 1 << 20;

/// Cuts a hole that runs to the end of the file: it holds only zeros.
fn cut_trailing_hole(file: &dyn FileIo, path: &Path, start: u64) -> Result<()> {
    let len = file
        .len()
        .map_err(|e| Error::io(path, "reading the file length", e))?;
    file.set_len(start)
        .map_err(|e| Error::io(path, "cutting a hole at the end of the data file", e))?;
    // Not synced: if the cut is lost, the hole comes back and is cut again.
    log::info!(
        "{}: cut {} bytes at offset {start} that had no disk space allocated (zeros, no data)",
        path.display(),
        len - start
    );
    Ok(())
}

/// Opens the data file at `path` read-only, decodes its header and maps it up to
/// the hole at its end, if any; refuses a file with a hole before data. For the
/// tools that read a whole file offline (verify, recover, backup).
pub(crate) fn map_read_only(path: &Path) -> Result<(FileHeader, Mmap)> {
    let file = StdFileIoFactory
        .open(path, false, false)
        .map_err(|e| Error::io(path, "opening the data file", e))?;
    let len = file
        .len()
        .map_err(|e| Error::io(path, "reading the file length", e))?;
    let mut header_bytes = [0u8; FILE_HEADER_LEN as usize];
    let header_len = len.min(FILE_HEADER_LEN) as usize;
    file.read_at(&mut header_bytes[..header_len], 0)
        .map_err(|e| Error::io(path, "reading the file header", e))?;
    let header = FileHeader::decode(&header_bytes[..header_len]).map_err(|what| Error::Format {
        path: path.to_path_buf(),
        what,
    })?;
    let map_len = mappable_len(&*file, path, header.data_start, false)?;
    let map = file
        .map_prefix(map_len)
        .map_err(|e| Error::io(path, "mapping the data file", e))?;
    Ok((header, map))
}
