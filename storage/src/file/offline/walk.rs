//! The record walker every offline tool (verify, recover, backup) steps through a
//! data file with; a walk reports how far it got through the one progress
//! reporter (`file::progress`), which recover's copy pass shares.
//!
//! Invariants:
//! - The walk ends: every step moves forward (past a valid record, or past a
//!   damaged region to the next position where a fully valid transaction starts,
//!   or to the end of the written data).
//! - The walk never stops at damage while a valid transaction follows: after each
//!   damaged region it searches the whole rest of the file, so a damaged region is
//!   an *incomplete tail* only when no valid transaction starts anywhere after it.
//! - The end of the written data is the last non-zero byte: the file is
//!   preallocated with zeros, so zeros followed by valid transactions are damage
//!   (acknowledged transactions hidden behind them), never the end.
//! - `verify` and `recover` walk with the same [`walk`], so what `verify` reports
//!   as damaged is exactly what `recover` skips.
//! - Damage is told from the torn last group of a crash as the open tells it
//!   ([`Marks`]: durable marks of the valid transactions after it, and the saved
//!   index's covered end), so verify never calls acknowledged what the open cuts.

use std::path::Path;

use crate::error::Result;
use crate::ids::Tid;

use super::super::format::{self, FileHeader, RecordProblem, TXN_MAGIC, TxnView};
use super::super::progress::Progress;
use super::super::recovery::nonzero_end;

/// The durable marks of the valid transactions after each damaged region, to tell
/// damage in the middle of the file from the torn last group of a crash exactly as
/// the open does (docs/format.md, "Crash semantics"): bytes at X followed only by
/// valid transactions whose durable marks lie at or before X were written in one
/// group with them before any of it was durable. A saved index covering X vouches
/// that X was durable, which makes it damage whatever the marks say.
#[derive(Default)]
pub(crate) struct Marks {
    /// (offset of the region, the caller's tag, the largest durable mark of the
    /// valid transactions between it and the next region).
    regions: Vec<(u64, usize, u64)>,
}

impl Marks {
    /// A damaged region starts at `offset`.
    pub(crate) fn region(&mut self, offset: u64, tag: usize) {
        self.regions.push((offset, tag, 0));
    }

    /// A valid transaction (tid increasing) follows.
    pub(crate) fn valid(&mut self, t: &TxnView<'_>) {
        if let Some(last) = self.regions.last_mut() {
            last.2 = last.2.max(t.durable_mark());
        }
    }

    /// For each region (by tag): whether it and everything after it is a torn group,
    /// given that every byte before `durable_end` is known durable.
    pub(crate) fn torn(&self, durable_end: u64) -> Vec<(usize, bool)> {
        let mut after = 0;
        let mut out = Vec::with_capacity(self.regions.len());
        for &(offset, tag, mark) in self.regions.iter().rev() {
            after = after.max(mark);
            out.push((tag, after <= offset && durable_end <= offset));
        }
        out
    }
}

/// A transaction header read in a damaged region: its magic is right and its
/// length is plausible, but the record fails its checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReadableHeader {
    pub offset: u64,
    /// Where the record ends, by the length its header claims.
    pub end: u64,
    /// The tid the header claims.
    pub tid: Tid,
    /// The next-oid mark it claims, when the length at its end matches the one
    /// at its start (a header whose two lengths disagree says too little).
    pub next_oid: Option<u64>,
}

/// A stretch of bytes where no valid transaction starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Region {
    pub start: u64,
    pub end: u64,
    pub what: String,
    /// Every byte of it is zero.
    pub zeros: bool,
    /// No valid transaction starts anywhere after it.
    pub tail: bool,
    pub readable: Vec<ReadableHeader>,
}

/// One step of [`walk`].
pub(crate) enum Step<'a> {
    /// A valid transaction whose tid is greater than every tid before it.
    Valid(TxnView<'a>),
    /// A valid transaction whose tid is not greater than `previous`.
    NotIncreasing { txn: TxnView<'a>, previous: Tid },
    /// Bytes where no valid transaction starts.
    Region(Region),
}

/// Steps through a file's transaction records in order: the one way the offline
/// tools read them. As an iterator, it yields the intact transactions up to the
/// first position where none starts.
pub(crate) struct Records<'a> {
    file: &'a [u8],
    pos: u64,
}

impl<'a> Records<'a> {
    /// Records from `pos` on.
    pub(crate) fn new(file: &'a [u8], pos: u64) -> Records<'a> {
        Records { file, pos }
    }

    /// Where the next record starts.
    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    /// The intact transaction at the position, stepping past it, or the problem
    /// there (the position stays).
    fn next_intact(&mut self) -> Result<TxnView<'a>, RecordProblem> {
        let t = format::transaction_at(self.file, self.pos)?;
        self.pos = t.end();
        Ok(t)
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = TxnView<'a>;

    fn next(&mut self) -> Option<TxnView<'a>> {
        self.next_intact().ok()
    }
}

/// Walks the whole file from `data_start` to its last non-zero byte, handing each
/// valid transaction and each damaged region to `visit` in file order, and
/// reporting the offset reached to `progress`.
pub(crate) fn walk<'a, F: FnMut(u64, u64)>(
    file: &'a [u8],
    data_start: u64,
    progress: &mut Progress<F>,
    mut visit: impl FnMut(Step<'a>),
) {
    let len = file.len() as u64;
    let data_limit = nonzero_end(file, data_start.min(len));
    let mut records = Records::new(file, data_start);
    let mut last_tid = Tid::ZERO;
    while records.pos < data_limit {
        let pos = records.pos;
        progress.at(pos);
        let problem = match records.next_intact() {
            Ok(t) if t.tid > last_tid => {
                last_tid = t.tid;
                visit(Step::Valid(t));
                continue;
            }
            Ok(t) => {
                visit(Step::NotIncreasing {
                    txn: t,
                    previous: last_tid,
                });
                continue;
            }
            Err(RecordProblem::Zeros) => None,
            Err(RecordProblem::Bad(what)) => Some(what),
        };
        let region = damaged_region(file, pos, data_limit, problem);
        records.pos = region.end;
        visit(Step::Region(region));
    }
}

/// The damaged region at `pos`, where no valid transaction starts (`problem`:
/// what is wrong there, `None` for zero bytes): up to the next position where
/// one does, or the end of the written data.
fn damaged_region(file: &[u8], pos: u64, data_limit: u64, problem: Option<String>) -> Region {
    let len = file.len() as u64;
    let next = next_valid(file, pos, data_limit);
    // A record read in a tail may end in zero bytes (its trailer's length):
    // the region then ends with it, not at the last non-zero byte.
    let readable = readable_headers(file, pos, next.unwrap_or(len));
    let end = next.unwrap_or_else(|| readable.iter().map(|h| h.end).fold(data_limit, u64::max));
    let zeros = file[pos as usize..end as usize].iter().all(|&b| b == 0);
    let what = match problem {
        Some(what) => what,
        None if zeros => format!(
            "{} bytes of zeros where a transaction should start",
            end - pos
        ),
        None => {
            let first = pos
                + file[pos as usize..end as usize]
                    .iter()
                    .position(|&b| b != 0)
                    .unwrap_or(0) as u64;
            format!(
                "{} bytes of zeros, then bytes that are no transaction at offset {first}",
                first - pos
            )
        }
    };
    Region {
        start: pos,
        end,
        what,
        zeros,
        tail: next.is_none(),
        readable,
    }
}

/// The first position in `(after, limit)` where a fully valid transaction starts,
/// whatever its tid (the caller judges the tid, so an intact transaction out of
/// order is listed, not swallowed by the damaged region).
fn next_valid(file: &[u8], after: u64, limit: u64) -> Option<u64> {
    let limit = (limit as usize).min(file.len());
    let mut at = after as usize + 1;
    while at + TXN_MAGIC.len() <= limit {
        let rel = file[at..limit].windows(4).position(|w| w == TXN_MAGIC)?;
        let candidate = at + rel;
        if format::transaction_at(file, candidate as u64).is_ok() {
            return Some(candidate as u64);
        }
        at = candidate + 1;
    }
    None
}

/// Transaction headers in `[start, end)` whose magic is right and whose length is
/// plausible and fits in the region: records that could be read but fail their
/// checks (the walk found no valid transaction there).
fn readable_headers(file: &[u8], start: u64, end: u64) -> Vec<ReadableHeader> {
    let mut found = vec![];
    let mut at = start as usize;
    while at + TXN_MAGIC.len() <= end as usize {
        let Some(rel) = file[at..end as usize]
            .windows(4)
            .position(|w| w == TXN_MAGIC)
        else {
            break;
        };
        let p = (at + rel) as u64;
        if let Ok((len, tid)) = format::peek_transaction(file, p)
            && p + len <= end
        {
            let both_ends = format::length_before(file, p + len) == Some(len);
            found.push(ReadableHeader {
                offset: p,
                end: p + len,
                tid,
                next_oid: both_ends.then(|| header_next_oid(file, p)),
            });
        }
        at += rel + 1;
    }
    found
}

/// The next-oid mark of the transaction header at `pos` (bytes 24..32 of the
/// header, docs/format.md), read without any other check.
fn header_next_oid(file: &[u8], pos: u64) -> u64 {
    let at = pos as usize + 24;
    u64::from_le_bytes(file[at..at + 8].try_into().expect("8 bytes"))
}

/// Maps a data file read-only and decodes its header.
/// Never maps a hole (`holes::map_read_only`): the file ends at a hole with no
/// data after it, and a hole with data after it is an error naming its range.
pub(crate) fn map_data_file(path: &Path) -> Result<(FileHeader, memmap2::Mmap)> {
    super::super::holes::map_read_only(path)
}
