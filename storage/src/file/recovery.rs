//! Opening scan and crash recovery: walk transaction records forward from a
//! start position, apply each to the index, and decide what a bad record means.
//!
//! Invariants:
//! - Tids strictly increase along the file; a record breaking that is damage.
//! - The written data ends where no valid record starts and only zero bytes follow
//!   up to the end of the file (the file is preallocated with zeros, so the file
//!   length is not the end). The whole rest of the file is checked, never a window.
//! - At the first offset X where no valid record starts, the valid transactions
//!   after X (increasing tids, each data record pointing back to its own
//!   transaction) decide: none, and the bytes from X are an incomplete tail; some
//!   whose durable mark lies beyond X, and the bytes at X had been durable before
//!   they were written: damage in the middle, the open refuses; some, all with
//!   marks at or before X, and they were written in one group with the bytes at X
//!   before any of it was durable: the torn last group of a crash, cut as a tail.
//! - Nothing found after X is thrown away unseen: the largest next-oid mark of the
//!   bytes after X (valid records, a readable header at X) raises the allocator.

use crate::ids::{Oid, Tid};

use super::format::{self, RecordProblem, TXN_MAGIC};
use super::index::Index;

/// Bytes compared at a time when looking for the last non-zero byte.
const ZERO_CHECK_CHUNK: usize = 4096;

/// Where a scan stopped and what it learned.
#[derive(Debug)]
pub struct ScanOutcome {
    /// Position after the last valid transaction.
    pub end: u64,
    pub last_tid: Tid,
    /// The oid allocator's high-water mark: at least every mark and oid seen, in
    /// the valid records and in the bytes after them.
    pub next_oid: u64,
    /// Transactions scanned (for the open log line).
    pub transactions: u64,
    /// A bad tail found at `end`, to be cut by the caller.
    pub tail: Option<TailDamage>,
}

/// Bytes after the end of the valid records that no durable record vouches for.
#[derive(Debug)]
pub struct TailDamage {
    pub offset: u64,
    /// End of the non-zero bytes from `offset` on: the bytes to save and cut.
    pub extent_end: u64,
    pub what: String,
    /// The tid in the header at `offset`, when its magic is right.
    pub tid: Option<Tid>,
    /// Intact transactions inside the tail (written in one group with the bytes
    /// at `offset`, before any of it was durable).
    pub later: Option<LaterTransactions>,
}

/// Damage in the middle of the file.
#[derive(Debug)]
pub struct MidFileDamage {
    pub offset: u64,
    pub what: String,
    /// Position of the first valid transaction after the damage.
    pub next_valid: u64,
    /// The valid transactions after the damage (boxed: the error stays small).
    pub later: Box<LaterTransactions>,
    /// What the scan had learned up to the damage: its last tid, oid mark (the
    /// bytes after the damage not counted) and transactions.
    pub last_tid: Tid,
    pub next_oid: u64,
    pub transactions: u64,
}

/// The valid transactions found after a bad offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaterTransactions {
    pub count: u64,
    pub first_pos: u64,
    pub first_tid: Tid,
    pub last_tid: Tid,
    /// The end of the last of them.
    pub end: u64,
    /// The greatest durable mark among them, and the tid of its transaction.
    pub max_mark: u64,
    pub max_mark_tid: Tid,
    /// Their greatest next-oid mark (or oid + 1).
    pub next_oid: u64,
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
                break Some(RecordProblem::Bad(format!(
                    "transaction id {} does not increase (previous {last_tid})",
                    t.tid
                )));
            }
            Ok(t) => {
                for (rpos, r) in &t.records {
                    index.set(r.oid, *rpos);
                }
                next_oid = next_oid.max(txn_next_oid(&t));
                last_tid = t.tid;
                pos = t.end();
                transactions += 1;
            }
            Err(problem) => break Some(problem),
        }
    };
    let tail = match problem {
        None => None,
        Some(problem) => judge_stop(file, pos, problem, last_tid, &mut next_oid, transactions)?,
    };
    Ok(ScanOutcome {
        end: pos,
        last_tid,
        next_oid: next_oid.max(1),
        transactions,
        tail,
    })
}

/// What the bad record at `pos`, where the scan stopped, means: the end (only
/// zeros follow), a tail to cut (raising `next_oid` to every mark after it), or
/// damage in the middle of the file (valid transactions after it were durable).
fn judge_stop(
    file: &[u8],
    pos: u64,
    problem: RecordProblem,
    last_tid: Tid,
    next_oid: &mut u64,
    transactions: u64,
) -> Result<Option<TailDamage>, MidFileDamage> {
    let extent_end = nonzero_end(file, pos);
    if extent_end == pos {
        // Only zeros from here to the end of the file: the end.
        return Ok(None);
    }
    let what = match problem {
        RecordProblem::Zeros => {
            let first = first_nonzero(file, pos).unwrap_or(pos);
            format!(
                "no transaction record starts here (zero bytes), but non-zero bytes \
                 follow at offset {first}"
            )
        }
        RecordProblem::Bad(what) => what,
    };
    let header = format::header_marks(file, pos);
    let later = later_transactions(file, pos, extent_end, last_tid);
    if let Some(later) = later.as_ref().filter(|l| l.max_mark > pos) {
        return Err(MidFileDamage {
            offset: pos,
            what,
            next_valid: later.first_pos,
            later: Box::new(later.clone()),
            last_tid,
            next_oid: (*next_oid).max(1),
            transactions,
        });
    }
    if let Some(h) = header {
        *next_oid = (*next_oid).max(h.next_oid);
    }
    if let Some(later) = &later {
        *next_oid = (*next_oid).max(later.next_oid);
    }
    Ok(Some(TailDamage {
        offset: pos,
        // The intact records whole, even where a trailer's length ends in
        // zero bytes (zeros after a torn record are not saved).
        extent_end: later.as_ref().map_or(extent_end, |l| l.end.max(extent_end)),
        what,
        tid: header.map(|h| h.tid),
        later,
    }))
}

/// The oid high-water mark a valid transaction implies.
fn txn_next_oid(t: &format::TxnView<'_>) -> u64 {
    t.records
        .iter()
        .map(|(_, r)| r.oid.0.saturating_add(1))
        .fold(t.next_oid, u64::max)
}

/// Every valid transaction in `(after, limit)` with increasing tids above
/// `last_tid`, summarised; `None` when there is none. Walks record to record and
/// searches byte by byte only across bytes that are not a valid record.
pub fn later_transactions(
    file: &[u8],
    after: u64,
    limit: u64,
    last_tid: Tid,
) -> Option<LaterTransactions> {
    let first_pos = find_valid_after(file, after, limit, last_tid)?;
    let mut found: Option<LaterTransactions> = None;
    let mut at = Some(first_pos);
    let mut tid_floor = last_tid;
    // Every step moves forward (past a record, or to a later candidate): it ends.
    while let Some(pos) = at.filter(|&p| p < limit) {
        match format::transaction_at(file, pos) {
            Ok(t) if t.tid > tid_floor => {
                let mark = t.durable_mark();
                let f = found.get_or_insert(LaterTransactions {
                    count: 0,
                    first_pos: pos,
                    first_tid: t.tid,
                    last_tid: t.tid,
                    end: t.end(),
                    max_mark: mark,
                    max_mark_tid: t.tid,
                    next_oid: 0,
                });
                f.count += 1;
                f.last_tid = t.tid;
                f.end = t.end();
                if mark > f.max_mark {
                    (f.max_mark, f.max_mark_tid) = (mark, t.tid);
                }
                f.next_oid = f.next_oid.max(txn_next_oid(&t));
                tid_floor = t.tid;
                at = Some(t.end());
            }
            _ => at = find_valid_after(file, pos, limit, tid_floor),
        }
    }
    found
}

/// The position after the last non-zero byte at or after `from`.
pub fn nonzero_end(file: &[u8], from: u64) -> u64 {
    let Some(tail) = usize::try_from(from).ok().and_then(|f| file.get(f..)) else {
        return from;
    };
    // Whole chunks OR-folded (which the compiler vectorises): a 64 MiB preallocated
    // tail is checked at memory speed.
    let mut end = tail.len();
    for chunk in tail.rchunks(ZERO_CHECK_CHUNK) {
        if chunk.iter().fold(0u8, |a, &b| a | b) != 0 {
            let i = chunk
                .iter()
                .rposition(|&b| b != 0)
                .expect("a non-zero byte");
            return from + (end - chunk.len() + i) as u64 + 1;
        }
        end -= chunk.len();
    }
    from
}

/// The first non-zero byte at or after `from`.
fn first_nonzero(file: &[u8], from: u64) -> Option<u64> {
    let tail = file.get(usize::try_from(from).ok()?..)?;
    let mut start = 0;
    for chunk in tail.chunks(ZERO_CHECK_CHUNK) {
        if chunk.iter().fold(0u8, |a, &b| a | b) != 0 {
            let i = chunk.iter().position(|&b| b != 0).expect("a non-zero byte");
            return Some(from + (start + i) as u64);
        }
        start += chunk.len();
    }
    None
}

/// The first position in `(after, limit)` where a fully valid transaction with a
/// tid greater than `last_tid` starts.
pub fn find_valid_after(file: &[u8], after: u64, limit: u64, last_tid: Tid) -> Option<u64> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX).min(file.len());
    let mut at = usize::try_from(after).ok()?.checked_add(1)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::TransactionMeta;

    /// A file of `n` one-object transactions from offset 48, each with durable mark
    /// `mark(i, pos)`; returns it and each record's offset.
    fn file_of(n: u64, mark: impl Fn(u64, u64) -> u64) -> (Vec<u8>, Vec<u64>) {
        let mut file = vec![0u8; 48];
        let mut starts = vec![];
        for i in 0..n {
            let pos = file.len() as u64;
            let data = [i as u8; 100];
            let objects = [format::DataToWrite {
                oid: Oid(i + 1),
                prev: 0,
                data: &data,
            }];
            let meta = TransactionMeta::described("t");
            let mut e = format::encode_stampable(pos, Tid(10 + i), i + 2, &meta, &objects);
            let lag = format::durable_lag(pos, mark(i, pos));
            format::stamp_durable_lag(&mut e.bytes, lag, e.body_crc);
            file.extend(e.bytes);
            starts.push(pos);
        }
        file.resize(file.len() + 10_000, 0);
        (file, starts)
    }

    #[test]
    fn nonzero_end_finds_the_last_non_zero_byte_in_any_chunk() {
        let mut file = vec![0u8; 3 * ZERO_CHECK_CHUNK + 123];
        assert_eq!(nonzero_end(&file, 0), 0);
        assert_eq!(nonzero_end(&file, 5000), 5000);
        assert_eq!(
            nonzero_end(&file, file.len() as u64 + 10),
            file.len() as u64 + 10
        );
        for at in [0, 1, 4095, 4096, 4097, 8191, file.len() - 1] {
            file.fill(0);
            file[at] = 1;
            assert_eq!(nonzero_end(&file, 0), at as u64 + 1, "byte at {at}");
            assert_eq!(first_nonzero(&file, 0), Some(at as u64), "byte at {at}");
            assert_eq!(nonzero_end(&file, at as u64 + 1), at as u64 + 1);
        }
    }

    #[test]
    fn zeros_followed_by_records_marked_beyond_them_are_damage() {
        // Each record's mark is its own offset (written durably one by one).
        let (mut file, starts) = file_of(6, |_, pos| pos);
        file[starts[2] as usize..starts[4] as usize].fill(0);
        let err = scan(&file, 48, Tid::ZERO, 1, &mut Index::default()).unwrap_err();
        assert_eq!((err.offset, err.next_valid), (starts[2], starts[4]));
        assert_eq!((err.later.count, err.later.first_tid), (2, Tid(14)));
        assert_eq!(err.later.max_mark, starts[5]);
    }

    #[test]
    fn zeros_followed_by_records_marked_before_them_are_a_torn_group() {
        // Records 2.. were written in one group starting at record 2.
        let (mut file, starts) = file_of(6, |i, pos| if i >= 2 { 0 } else { pos });
        let (file_marked, _) = file_of(6, |i, pos| if i >= 2 { starts[2] } else { pos });
        for f in [&mut file, &mut file_marked.clone()] {
            f[starts[2] as usize..starts[3] as usize].fill(0);
            let outcome = scan(f, 48, Tid::ZERO, 1, &mut Index::default()).unwrap();
            assert_eq!((outcome.end, outcome.last_tid), (starts[2], Tid(11)));
            let tail = outcome.tail.expect("a tail to cut");
            let later = tail.later.expect("the intact records of the group");
            assert_eq!((later.count, later.last_tid), (3, Tid(15)));
            assert_eq!(tail.extent_end, later.end);
            // The group's oids (up to 6) stay allocated.
            assert_eq!(outcome.next_oid, 7);
        }
    }

    #[test]
    fn only_zeros_after_the_records_are_the_end() {
        let (file, _) = file_of(3, |_, pos| pos);
        let outcome = scan(&file, 48, Tid::ZERO, 1, &mut Index::default()).unwrap();
        assert!(outcome.tail.is_none());
        assert_eq!(outcome.transactions, 3);
        assert_eq!(outcome.end, file.len() as u64 - 10_000);
    }
}
