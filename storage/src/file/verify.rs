//! Offline checking of a data file: walk every record, check every CRC, length,
//! back-pointer and tid, and report each damaged region with its offset and where
//! valid records resume. Never modifies the file.
//!
//! Invariant: the walk ends: every step moves forward (past a valid record, or to
//! the next valid record after damage, or to the end).

use std::path::Path;

use crate::error::{Error, Result};
use crate::ids::Tid;

use super::format::{self, FileHeader, RecordProblem};
use super::io::{FileIoFactory, StdFileIoFactory};
use super::recovery;

/// One damaged region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// Where the damage starts.
    pub offset: u64,
    pub what: String,
    /// Where the next valid transaction starts, if one does.
    pub resumes_at: Option<u64>,
}

/// What `verify` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub file_bytes: u64,
    /// End of the last valid transaction.
    pub data_end: u64,
    /// Valid transactions.
    pub transactions: u64,
    /// Data records in valid transactions.
    pub records: u64,
    pub first_tid: Option<Tid>,
    pub last_tid: Option<Tid>,
    /// Damaged regions, in file order. Empty for a healthy file.
    pub damage: Vec<Damage>,
}

impl VerifyReport {
    pub fn is_healthy(&self) -> bool {
        self.damage.is_empty()
    }
}

/// Checks every record of the data file at `path`.
pub fn verify(path: &Path) -> Result<VerifyReport> {
    verify_with(path, |_, _| {})
}

/// Like [`verify`], calling `progress(offset, file_bytes)` as the walk advances.
pub fn verify_with(path: &Path, mut progress: impl FnMut(u64, u64)) -> Result<VerifyReport> {
    let (header, map) = map_data_file(path)?;
    let file: &[u8] = &map;
    let mut report = VerifyReport {
        file_bytes: file.len() as u64,
        ..Default::default()
    };
    let mut pos = header.data_start;
    let mut last_tid = Tid::ZERO;
    let mut next_report = 0u64;
    while pos < report.file_bytes {
        if pos >= next_report {
            progress(pos, report.file_bytes);
            next_report = pos + (1 << 20);
        }
        let problem = match format::transaction_at(file, pos) {
            Ok(t) if t.tid <= last_tid => {
                format!(
                    "transaction id {} does not increase (previous {last_tid})",
                    t.tid
                )
            }
            Ok(t) => {
                for (rpos, r) in &t.records {
                    if r.prev == 0 {
                        continue;
                    }
                    let back = format::data_header_at(file, r.prev);
                    if !back.is_ok_and(|(p, _)| p.oid == r.oid && p.tid < t.tid) {
                        report.damage.push(Damage {
                            offset: *rpos,
                            what: format!(
                                "data record of object {} points back to {}, which is not an older revision of it",
                                r.oid, r.prev
                            ),
                            resumes_at: Some(t.end()),
                        });
                    }
                }
                report.transactions += 1;
                report.records += t.records.len() as u64;
                report.first_tid.get_or_insert(t.tid);
                report.last_tid = Some(t.tid);
                last_tid = t.tid;
                pos = t.end();
                report.data_end = pos;
                continue;
            }
            Err(RecordProblem::Zeros) => {
                let end = recovery::nonzero_end(file, pos);
                if end == pos {
                    break;
                }
                let first = pos
                    + file[pos as usize..]
                        .iter()
                        .position(|&b| b != 0)
                        .unwrap_or(0) as u64;
                format!("unexpected bytes after the end of the data at offset {first}")
            }
            Err(RecordProblem::Bad(what)) => what,
        };
        let limit = recovery::nonzero_end(file, pos);
        let resumes_at = recovery::find_valid_after(file, pos, limit, last_tid);
        report.damage.push(Damage {
            offset: pos,
            what: problem,
            resumes_at,
        });
        match resumes_at {
            Some(next) => pos = next,
            None => break,
        }
    }
    progress(report.file_bytes, report.file_bytes);
    Ok(report)
}

/// Maps a data file read-only and decodes its header.
pub(crate) fn map_data_file(path: &Path) -> Result<(FileHeader, memmap2::Mmap)> {
    let file = StdFileIoFactory
        .open(path, false, false)
        .map_err(|e| Error::io(path, "opening the data file", e))?;
    let map = file
        .map()
        .map_err(|e| Error::io(path, "mapping the data file", e))?;
    let header = FileHeader::decode(&map).map_err(|what| Error::Format {
        path: path.to_path_buf(),
        what,
    })?;
    Ok((header, map))
}
