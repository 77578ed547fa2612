//! Opening scan and crash recovery: walk transaction records forward from a
//! start position, apply each to the index, and decide what a bad record means.
//!
//! Invariants:
//! - Tids strictly increase along the file; a record breaking that is damage.
//! - The written data ends where only zero bytes follow (the file is preallocated
//!   with zeros, so the file length is not the end).
//! - A bad record with no valid transaction anywhere after it is an incomplete
//!   tail (a crash mid-write, garbage appended, a flipped byte in the last
//!   transaction): it is cut, never an acknowledged commit. A bad record followed
//!   by a valid transaction is damage in the middle of the file: opening refuses.

use crate::ids::{Oid, Tid};

use super::format::{self, RecordProblem, TXN_MAGIC};
use super::index::Index;

/// Bytes after the end that must be zero for the end to be trusted.
const ZERO_WINDOW: u64 = 64 << 10;

/// Where a scan stopped and what it learned.
#[derive(Debug)]
pub struct ScanOutcome {
    /// Position after the last valid transaction.
    pub end: u64,
    pub last_tid: Tid,
    pub next_oid: u64,
    /// Transactions scanned (for the open log line).
    pub transactions: u64,
    /// A bad tail found at `end`, to be cut by the caller.
    pub tail: Option<TailDamage>,
}

#[derive(Debug)]
pub struct TailDamage {
    pub offset: u64,
    /// End of the non-zero bytes from `offset` on: the bytes to save and cut.
    pub extent_end: u64,
    pub what: String,
}

/// Damage in the middle of the file.
#[derive(Debug)]
pub struct MidFileDamage {
    pub offset: u64,
    pub what: String,
    /// Position of the first valid transaction after the damage.
    pub next_valid: u64,
}

/// Scans from `start` to the end of the written data, updating `index`.
pub fn scan(
    file: &[u8],
    start: u64,
    mut last_tid: Tid,
    mut next_oid: u64,
    index: &mut Index,
) -> Result<ScanOutcome, MidFileDamage> {
    let mut pos = start;
    let mut transactions = 0;
    let len = file.len() as u64;
    let problem = loop {
        if pos >= len {
            break None;
        }
        match format::transaction_at(file, pos) {
            Ok(t) if t.tid <= last_tid => {
                break Some(format!(
                    "transaction id {} does not increase (previous {last_tid})",
                    t.tid
                ));
            }
            Ok(t) => {
                for (rpos, r) in &t.records {
                    index.set(r.oid, *rpos);
                    next_oid = next_oid.max(r.oid.0.saturating_add(1));
                }
                next_oid = next_oid.max(t.next_oid);
                last_tid = t.tid;
                pos = t.end();
                transactions += 1;
            }
            Err(RecordProblem::Zeros) => {
                let window_end = (pos + ZERO_WINDOW).min(len);
                match file[pos as usize..window_end as usize]
                    .iter()
                    .position(|&b| b != 0)
                {
                    None => break None,
                    Some(i) => {
                        break Some(format!(
                            "unexpected bytes after the end at offset {}",
                            pos + i as u64
                        ));
                    }
                }
            }
            Err(RecordProblem::Bad(what)) => break Some(what),
        }
    };
    let tail = match problem {
        None => None,
        Some(what) => {
            let extent_end = nonzero_end(file, pos);
            if let Some(next_valid) = find_valid_after(file, pos, extent_end, last_tid) {
                return Err(MidFileDamage {
                    offset: pos,
                    what,
                    next_valid,
                });
            }
            Some(TailDamage {
                offset: pos,
                extent_end,
                what,
            })
        }
    };
    Ok(ScanOutcome {
        end: pos,
        last_tid,
        next_oid: next_oid.max(1),
        transactions,
        tail,
    })
}

/// The position after the last non-zero byte at or after `from`.
pub fn nonzero_end(file: &[u8], from: u64) -> u64 {
    let tail = &file[from as usize..];
    match tail.iter().rposition(|&b| b != 0) {
        Some(i) => from + i as u64 + 1,
        None => from,
    }
}

/// The first position in `(after, limit)` where a fully valid transaction with a
/// tid greater than `last_tid` starts.
pub fn find_valid_after(file: &[u8], after: u64, limit: u64, last_tid: Tid) -> Option<u64> {
    let limit = (limit as usize).min(file.len());
    let mut at = after as usize + 1;
    while at + TXN_MAGIC.len() <= limit {
        let rel = file[at..limit].windows(4).position(|w| w == TXN_MAGIC)?;
        let candidate = at + rel;
        if format::transaction_at(file, candidate as u64).is_ok_and(|t| t.tid > last_tid) {
            return Some(candidate as u64);
        }
        at = candidate + 1;
    }
    None
}

/// Oid high-water mark implied by an index (for files whose records say less).
pub fn next_oid_of(index: &Index) -> u64 {
    index.max_oid().map_or(1, |Oid(o)| o.saturating_add(1))
}
