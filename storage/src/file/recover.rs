//! Salvage of a damaged data file: copy every intact transaction before the first
//! damage into a new file, keeping tids and metadata, and report what was lost.
//!
//! Transactions after the damage are counted but not copied: they may build on
//! revisions that were lost, so copying them could show objects pointing at history
//! that no longer exists. The report names them so an operator can decide.

use std::path::Path;

use crate::error::{Error, Result};
use crate::ids::Tid;
use crate::storage::Storage;

use super::format::{self, RecordProblem};
use super::{Durability, FileOptions, FileStorage, recovery, verify};

/// What `recover` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoverReport {
    /// Transactions copied into the new file.
    pub copied: u64,
    pub last_copied_tid: Option<Tid>,
    /// Where the first damage starts, and what it is (None: the file was healthy).
    pub damage: Option<(u64, String)>,
    /// Intact transactions after the damage that were not copied, and their tids.
    pub lost_transactions: u64,
    pub lost_tids: Option<(Tid, Tid)>,
}

/// Copies every intact transaction of `path` before its first damage into a new
/// data file at `output`, which must not exist.
pub fn recover(path: &Path, output: &Path) -> Result<RecoverReport> {
    recover_with(path, output, |_, _| {})
}

/// Like [`recover`], calling `progress(offset, file_bytes)` as the copy advances.
pub fn recover_with(
    path: &Path,
    output: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<RecoverReport> {
    if output.exists() {
        return Err(Error::io(
            output,
            "creating the recovered file",
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "it exists already; name a new file",
            ),
        ));
    }
    let (header, map) = verify::map_data_file(path)?;
    let file: &[u8] = &map;
    let len = file.len() as u64;
    let target = FileStorage::open(output, FileOptions::new().durability(Durability::Off))?;
    let mut report = RecoverReport::default();
    let mut pos = header.data_start;
    let mut last_tid = Tid::ZERO;
    let mut next_report = 0;
    while pos < len {
        if pos >= next_report {
            progress(pos, len);
            next_report = pos + (1 << 20);
        }
        let problem = match format::transaction_at(file, pos) {
            Ok(t) if t.tid > last_tid => {
                let objects = t
                    .records
                    .iter()
                    .map(|(_, r)| (r.oid, r.data.to_vec()))
                    .collect();
                target.copy_transaction(t.tid, t.meta(), t.next_oid, objects)?;
                report.copied += 1;
                report.last_copied_tid = Some(t.tid);
                last_tid = t.tid;
                pos = t.end();
                continue;
            }
            Ok(t) => format!(
                "transaction id {} does not increase (previous {last_tid})",
                t.tid
            ),
            Err(RecordProblem::Zeros) if recovery::nonzero_end(file, pos) == pos => break,
            Err(RecordProblem::Zeros) => "unexpected bytes after the end of the data".to_string(),
            Err(RecordProblem::Bad(what)) => what,
        };
        report.damage = Some((pos, problem));
        break;
    }
    if let Some((offset, _)) = &report.damage {
        // Count what lies beyond, without copying it.
        let limit = recovery::nonzero_end(file, *offset);
        let mut at = recovery::find_valid_after(file, *offset, limit, last_tid);
        while let Some(p) = at {
            match format::transaction_at(file, p) {
                Ok(t) => {
                    report.lost_transactions += 1;
                    let first = report.lost_tids.map_or(t.tid, |(f, _)| f);
                    report.lost_tids = Some((first, t.tid));
                    at = Some(t.end());
                }
                Err(_) => {
                    at = recovery::find_valid_after(
                        file,
                        p,
                        limit,
                        report.lost_tids.map_or(last_tid, |(_, l)| l),
                    )
                }
            }
            if at.is_some_and(|a| a >= limit) {
                break;
            }
        }
    }
    target.sync()?;
    target.close()?;
    progress(len, len);
    Ok(report)
}
