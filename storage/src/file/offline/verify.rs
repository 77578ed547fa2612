//! Offline checking of a data file: walk every byte from the data start to the
//! last non-zero byte, check every CRC, length, back-pointer and tid, and report
//! each damaged region, what follows it, and whether the saved index (`PATH.index`)
//! agrees with what the walk found. Never modifies anything.
//!
//! The walk is the offline tools' one walker ([`super::walk`]), whose invariants
//! say where it goes and what it calls damage.
//!
//! Invariants:
//! - A saved index that covers bytes the file no longer holds whole is reported as
//!   evidence that acknowledged transactions are missing, never as an index to delete.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::ids::Tid;

use super::super::format::{self, FileHeader, TxnView};
use super::super::index::{self, Index};
use super::super::index_path;
use super::super::io::StdFileIoFactory;
use super::super::progress::Progress;
use super::walk::{Marks, Region, Step, map_data_file, walk};

/// Index problems listed one by one; past this many, the rest are counted.
const INDEX_PROBLEMS_LISTED_MAX: usize = 8;

/// What kind of damage a [`Damage`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DamageKind {
    /// Bytes where no valid transaction starts, with a valid transaction after them:
    /// damage in the middle of the file.
    Damaged,
    /// Only zero bytes, with a valid transaction after them: acknowledged
    /// transactions hidden behind the zeros.
    Zeros,
    /// Bytes where no valid transaction starts, followed only by valid transactions
    /// whose durable marks lie at or before them (and no saved index vouches for
    /// them): all were written in one group before any of it was durable, the torn
    /// last group of a crash, never acknowledged, which a writable open cuts.
    TornGroup,
    /// Bytes where no valid transaction starts and none follows: an incomplete tail
    /// (a crash mid-write, appended garbage), which a writable open cuts.
    Tail,
    /// An intact transaction whose tid is not greater than the one before it.
    TidNotIncreasing,
    /// A data record of a valid transaction whose back-pointer is not an older
    /// revision of its object.
    BadBackPointer,
}

/// One damaged region (or one bad record, for the last two kinds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// What kind of damage it is.
    pub kind: DamageKind,
    /// Where the damage starts.
    pub offset: u64,
    /// Where it ends (exclusive).
    pub end: u64,
    /// What is wrong.
    pub what: String,
    /// Where the next valid transaction starts, if one does.
    pub resumes_at: Option<u64>,
    /// Tids of transaction records that could be read in the region (magic and a
    /// plausible length that fits) but fail their checks, in file order.
    pub readable_tids: Vec<Tid>,
    /// Valid transactions after this damage, up to the next damaged region.
    pub followed_by: u64,
    /// Tid of the last of them.
    pub followed_up_to: Option<Tid>,
}

impl Damage {
    /// Bytes of the damaged region.
    pub fn bytes(&self) -> u64 {
        self.end - self.offset
    }
}

/// What the check of the saved index found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexCheck {
    /// The saved index's path (`PATH.index`).
    pub path: PathBuf,
    /// What it claims to cover (None when it could not be decoded).
    pub covered_end: Option<u64>,
    /// Every way in which it disagrees with the data file; empty when it agrees.
    pub problems: Vec<String>,
    /// The index covers bytes where the data file no longer holds valid
    /// transactions: it proves acknowledged transactions are missing (a truncation,
    /// or damage). The data file is the problem, and the index is the evidence: keep it.
    pub proves_data_missing: bool,
}

/// What `verify` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// The data file's length in bytes.
    pub file_bytes: u64,
    /// End of the last valid transaction.
    pub data_end: u64,
    /// Valid transactions (tids increasing).
    pub transactions: u64,
    /// Data records in valid transactions.
    pub records: u64,
    /// The tid of the first valid transaction.
    pub first_tid: Option<Tid>,
    /// The tid of the last valid transaction.
    pub last_tid: Option<Tid>,
    /// Damage, in file order. Empty for a healthy file.
    pub damage: Vec<Damage>,
    /// The saved index's check; None when there is no `PATH.index`.
    pub index: Option<IndexCheck>,
}

impl VerifyReport {
    /// No damage and no problem with the saved index.
    pub fn is_healthy(&self) -> bool {
        self.damage.is_empty() && self.index.as_ref().is_none_or(|i| i.problems.is_empty())
    }

    /// Valid transactions that lie after some damage which is not a tail: they
    /// are acknowledged, and an open that stops at the damage does not see them.
    pub fn transactions_after_damage(&self) -> u64 {
        self.damage
            .iter()
            .filter(|d| d.kind != DamageKind::TornGroup)
            .map(|d| d.followed_by)
            .sum()
    }
}

/// Checks every record of the data file at `path`, and its saved index if any.
pub fn verify(path: &Path) -> Result<VerifyReport> {
    verify_with(path, |_, _| {})
}

/// Like [`verify`], calling `progress(offset, file_bytes)` as the walk advances.
pub fn verify_with(path: &Path, progress: impl FnMut(u64, u64)) -> Result<VerifyReport> {
    let (header, map) = map_data_file(path)?;
    let file: &[u8] = &map;
    let file_bytes = file.len() as u64;
    let mut progress = Progress::new(progress, file_bytes);
    let saved = read_index(path, file_bytes);
    let mut verifier = Verifier {
        file,
        report: VerifyReport {
            file_bytes,
            ..Default::default()
        },
        scan: saved
            .as_ref()
            .and_then(|s| s.decoded.as_ref().ok())
            .map(|(h, _)| ScanIndex::new(h.covered_end, header.data_start)),
        last_region: None,
        marks: Marks::default(),
    };
    walk(file, header.data_start, &mut progress, |step| match step {
        Step::Valid(t) => verifier.valid(&t),
        Step::NotIncreasing { txn, previous } => verifier.not_increasing(&txn, previous),
        Step::Region(r) => verifier.region(r),
    });
    let Verifier {
        mut report,
        scan,
        marks,
        ..
    } = verifier;
    for (i, torn) in marks.torn(durable_end(saved.as_ref(), &header)) {
        let d = &mut report.damage[i];
        if torn && matches!(d.kind, DamageKind::Damaged | DamageKind::Zeros) {
            d.kind = DamageKind::TornGroup;
        }
    }
    if let Some(saved) = saved {
        let intact_end = report
            .damage
            .iter()
            .filter(|d| d.kind != DamageKind::BadBackPointer)
            .map(|d| d.offset)
            .min()
            .unwrap_or(report.data_end.max(header.data_start));
        report.index = Some(check_index(&header, saved, scan, intact_end));
    }
    progress.done();
    Ok(report)
}

/// What the walk has found so far.
struct Verifier<'a> {
    file: &'a [u8],
    report: VerifyReport,
    /// The index an open would build up to the saved index's covered end.
    scan: Option<ScanIndex>,
    /// The damage whose `followed_by` counts the valid transactions now met.
    last_region: Option<usize>,
    marks: Marks,
}

impl Verifier<'_> {
    fn valid(&mut self, t: &TxnView<'_>) {
        let report = &mut self.report;
        self.marks.valid(t);
        check_back_pointers(self.file, t, &mut report.damage);
        if let Some(scan) = self.scan.as_mut() {
            scan.add(t);
        }
        if let Some(d) = self.last_region.map(|i| &mut report.damage[i]) {
            d.followed_by += 1;
            d.followed_up_to = Some(t.tid);
        }
        report.transactions += 1;
        report.records += t.records.len() as u64;
        report.first_tid.get_or_insert(t.tid);
        report.last_tid = Some(t.tid);
        report.data_end = t.end();
    }

    fn not_increasing(&mut self, txn: &TxnView<'_>, previous: Tid) {
        self.report.damage.push(Damage {
            kind: DamageKind::TidNotIncreasing,
            offset: txn.pos,
            end: txn.end(),
            what: format!(
                "transaction id {} does not increase (previous {previous})",
                txn.tid
            ),
            resumes_at: Some(txn.end()),
            readable_tids: vec![txn.tid],
            followed_by: 0,
            followed_up_to: None,
        });
        self.last_region = Some(self.report.damage.len() - 1);
    }

    fn region(&mut self, r: Region) {
        let damage = &mut self.report.damage;
        self.marks.region(r.start, damage.len());
        damage.push(Damage {
            kind: if r.tail {
                DamageKind::Tail
            } else if r.zeros {
                DamageKind::Zeros
            } else {
                DamageKind::Damaged
            },
            offset: r.start,
            end: r.end,
            what: r.what,
            resumes_at: (!r.tail).then_some(r.end),
            readable_tids: r.readable.iter().map(|h| h.tid).collect(),
            followed_by: 0,
            followed_up_to: None,
        });
        self.last_region = Some(damage.len() - 1);
    }
}

/// Every byte before this offset is known durable from the saved index (its
/// checksum and file id right): 0 without one.
fn durable_end(saved: Option<&SavedIndex>, header: &FileHeader) -> u64 {
    match saved.map(|s| &s.decoded) {
        Some(Ok((h, _))) if h.file_id == header.file_id => h.covered_end,
        _ => 0,
    }
}

/// What the saved index of the data file at `path` vouches is durable (see
/// [`Marks::torn`]).
pub(crate) fn saved_durable_end(path: &Path, header: &FileHeader, data_len: u64) -> u64 {
    durable_end(read_index(path, data_len).as_ref(), header)
}

/// A data record whose back-pointer is not an older revision of its object is
/// damage the transaction's own checks cannot see (the pointer is CRC-covered).
fn check_back_pointers(file: &[u8], t: &TxnView<'_>, damage: &mut Vec<Damage>) {
    for (rpos, r) in &t.records {
        if r.prev == 0 {
            continue;
        }
        let back = format::data_header_at(file, r.prev);
        if !back.is_ok_and(|(p, _)| p.oid == r.oid && p.tid < t.tid) {
            damage.push(Damage {
                kind: DamageKind::BadBackPointer,
                offset: *rpos,
                end: *rpos + format::DATA_HEADER_LEN + r.data.len() as u64,
                what: format!(
                    "data record of object {} points back to {}, which is not an older revision of it",
                    r.oid, r.prev
                ),
                resumes_at: Some(t.end()),
                readable_tids: vec![],
                followed_by: 0,
                followed_up_to: None,
            });
        }
    }
}

/// The saved index as read from disk.
struct SavedIndex {
    path: PathBuf,
    decoded: std::result::Result<(index::SavedIndexHeader, Index), String>,
}

/// Reads `PATH.index` of a data file of `data_len` bytes; None when there is none.
/// One larger than such a data file's index can be is not read, so a huge file
/// named `PATH.index` cannot exhaust memory.
fn read_index(path: &Path, data_len: u64) -> Option<SavedIndex> {
    let ipath = index_path(path);
    let decoded = match index::read_saved(&StdFileIoFactory, &ipath, index::saved_len_max(data_len))
    {
        Ok(None) => return None,
        Err(e) => Err(format!("cannot be read ({e})")),
        Ok(Some(bytes)) => index::decode_saved(&bytes),
    };
    Some(SavedIndex {
        path: ipath,
        decoded,
    })
}

/// What the walk found up to a saved index's covered end: the index an open
/// would build by scanning that far.
struct ScanIndex {
    covered_end: u64,
    /// Whether a valid transaction ends exactly at the covered end (or it is the
    /// data start), and that transaction's tid.
    boundary: Option<Tid>,
    newest: Index,
    next_oid: u64,
}

impl ScanIndex {
    fn new(covered_end: u64, data_start: u64) -> ScanIndex {
        ScanIndex {
            covered_end,
            boundary: (covered_end == data_start).then_some(Tid::ZERO),
            newest: Index::default(),
            next_oid: 1,
        }
    }

    fn add(&mut self, t: &TxnView<'_>) {
        if t.end() > self.covered_end {
            return;
        }
        for (rpos, r) in &t.records {
            self.newest.set(r.oid, *rpos);
            self.next_oid = self.next_oid.max(r.oid.0.saturating_add(1));
        }
        self.next_oid = self.next_oid.max(t.next_oid);
        if t.end() == self.covered_end {
            self.boundary = Some(t.tid);
        }
    }
}

/// Compares the saved index with the walk's own, as of the index's covered end.
fn check_index(
    header: &FileHeader,
    saved: SavedIndex,
    scan: Option<ScanIndex>,
    intact_end: u64,
) -> IndexCheck {
    let mut check = IndexCheck {
        path: saved.path,
        ..Default::default()
    };
    let (h, idx) = match saved.decoded {
        Ok(v) => v,
        Err(e) => {
            check
                .problems
                .push(format!("the saved index is unreadable: {e}"));
            return check;
        }
    };
    check.covered_end = Some(h.covered_end);
    let problems = &mut check.problems;
    if h.file_id != header.file_id {
        problems.push(format!(
            "the saved index belongs to another data file (file id {:#x}, this file's is {:#x})",
            h.file_id, header.file_id
        ));
        return check;
    }
    if h.covered_end > intact_end {
        // Written only after the data it covers was durable: the bytes it covers
        // were acknowledged, and the file no longer holds them whole.
        problems.push(format!(
            "the saved index records transactions up to offset {} (last tid {}), but the data file's valid transactions end at offset {intact_end}: acknowledged transactions are missing (the file was truncated or damaged)",
            h.covered_end, h.last_tid
        ));
        check.proves_data_missing = true;
        return check;
    }
    let scan = scan.expect("a decoded index has a scan");
    match scan.boundary {
        None => {
            problems.push(format!(
                "the saved index covers the file up to offset {}, which is not the end of a valid transaction",
                h.covered_end
            ));
            return check;
        }
        Some(tid) if tid != h.last_tid => problems.push(format!(
            "the saved index names tid {} as the last one before offset {}, the file has {tid}",
            h.last_tid, h.covered_end
        )),
        Some(_) => {}
    }
    if h.next_oid < scan.next_oid {
        problems.push(format!(
            "the saved index's next oid {} is below {}, the file's mark at offset {}: oids would be reused",
            h.next_oid, scan.next_oid, h.covered_end
        ));
    }
    entry_problems(&idx, &scan, h.covered_end, problems);
    check
}

/// Every entry of the saved index `idx` that disagrees with the walk's own index,
/// and every object it misses: the first few listed, the rest counted.
fn entry_problems(idx: &Index, scan: &ScanIndex, covered_end: u64, problems: &mut Vec<String>) {
    let mut wrong = vec![];
    for (oid, pos) in idx.entries() {
        match scan.newest.get(oid) {
            Some(p) if p == pos => {}
            Some(p) => wrong.push(format!(
                "object {oid}: the index points at offset {pos}, its newest revision is at {p}"
            )),
            None => wrong.push(format!(
                "object {oid}: the index points at offset {pos}, the file has no valid revision of it before offset {}",
                covered_end
            )),
        }
    }
    for (oid, p) in scan.newest.entries() {
        if idx.get(oid).is_none() {
            wrong.push(format!(
                "object {oid}: missing from the index, its newest revision is at {p}"
            ));
        }
    }
    let extra = wrong.len().saturating_sub(INDEX_PROBLEMS_LISTED_MAX);
    problems.extend(wrong.into_iter().take(INDEX_PROBLEMS_LISTED_MAX));
    if extra > 0 {
        problems.push(format!("and {extra} more index entries disagree"));
    }
}
