//! Salvage of a damaged data file: copy every intact transaction into a new file,
//! in tid order, keeping tids and metadata, and report exactly what was skipped.
//!
//! The walk is `verify`'s ([`super::walk`]): at damage it searches forward for
//! the next position where a fully valid transaction starts (magic, lengths at
//! both ends, CRC, data records pointing back to their own transaction) and
//! resumes there, as ZODB's fsrecover does.
//!
//! Invariants:
//! - The output is written through `FileStorage::copy_transaction`, so it is an
//!   ordinary, fully checked data file with strictly increasing tids.
//! - Nothing is skipped silently: each damaged region (start, end, bytes, what is
//!   wrong, the tids of records that could be read there but fail their checks) and
//!   each intact transaction whose tid does not increase is in the report.
//! - Oids are never reused: the output's next-oid mark is at least the largest
//!   mark of any valid transaction, and of any readable header in a damaged region
//!   (unless a valid transaction after it has a smaller mark, which proves the
//!   header's mark damaged: marks never decrease along a file).
//! - The source is never modified.
//!
//! Why salvaging past damage is safe enough: every copied transaction passed every
//! check, so its bytes are exactly what was committed. What can be wrong is only
//! what it *builds on*: a later transaction may have been computed from a revision
//! that was lost in the damage (a B-tree bucket, a counter), or may reference an
//! object created only in the lost transaction. Copying it cannot hide that: the
//! report names every skipped region and the tids lost in it, and `zodiac refs` on
//! the output lists every reference to an object that no longer exists. The
//! operator should run `zodiac refs` and `zodiac verify` on the output, decide for
//! each lost tid whether what it wrote matters (a value later transactions were
//! computed from cannot be detected by any tool), and restore from a backup where
//! it does. `RecoverOptions::stop_at_damage` keeps
//! only the prefix before the first damage, for an operator who wants nothing that
//! may build on a lost revision.

use std::path::Path;

use crate::error::{Error, Result};
use crate::ids::Tid;

use crate::storage::Storage;

use super::super::format;
use super::super::progress::Progress;
use super::super::{Durability, FileOptions, FileStorage};
use super::verify;
use super::walk::{self, Marks, Step};

/// How to recover.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecoverOptions {
    /// Copy only the transactions before the first damage (the prefix), and count
    /// the intact ones after it without copying them.
    pub stop_at_damage: bool,
}

/// A stretch of the source that was not copied because no valid transaction
/// starts in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedRegion {
    /// Where the region starts.
    pub start: u64,
    /// Exclusive.
    pub end: u64,
    /// What is wrong at `start`.
    pub what: String,
    /// Every byte of it is zero.
    pub zeros: bool,
    /// No valid transaction follows it: an incomplete tail (a crash mid-write,
    /// appended garbage, damage in the last transaction), which a writable open
    /// of the source would cut.
    pub tail: bool,
    /// Valid transactions follow, but all of them were written in one group with
    /// this region before any of it was durable (their durable marks lie at or
    /// before it, and no saved index vouches for it): the torn last group of a
    /// crash, never acknowledged, which a writable open of the source would cut.
    /// They are copied all the same (nothing proves them unwanted) and the report
    /// says so; `stop_at_damage` leaves them out.
    pub torn_group: bool,
    /// Tids claimed by transaction records that could be read in the region but
    /// fail their checks: those transactions are lost.
    pub unreadable_tids: Vec<Tid>,
}

impl SkippedRegion {
    /// Bytes skipped.
    pub fn bytes(&self) -> u64 {
        self.end - self.start
    }
}

/// An intact transaction that was not copied because its tid is not greater than
/// the last copied one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedTransaction {
    /// Where the transaction starts in the source.
    pub offset: u64,
    /// Its tid.
    pub tid: Tid,
    /// The last tid copied before it.
    pub previous: Tid,
}

/// What `recover` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoverReport {
    /// Transactions copied into the new file.
    pub copied: u64,
    /// The tid of the first transaction copied.
    pub first_copied_tid: Option<Tid>,
    /// The tid of the last transaction copied.
    pub last_copied_tid: Option<Tid>,
    /// Damaged regions of the source, in file order. Empty: the file was healthy.
    pub skipped_regions: Vec<SkippedRegion>,
    /// Intact transactions skipped because their tid did not increase.
    pub skipped_transactions: Vec<SkippedTransaction>,
    /// With `stop_at_damage`: intact transactions after the first damage, counted
    /// but not copied, and their first and last tids.
    pub not_copied: u64,
    /// The first and last tids of those counted in `not_copied`.
    pub not_copied_tids: Option<(Tid, Tid)>,
    /// The next-oid mark the output carries (0 when nothing was copied, so the
    /// output carries none).
    pub next_oid: u64,
    /// The largest next-oid mark found in the source.
    pub source_next_oid: u64,
}

impl RecoverReport {
    /// Whether the source had no damage at all (the copy is complete).
    pub fn complete(&self) -> bool {
        self.skipped_regions.is_empty()
            && self.skipped_transactions.is_empty()
            && self.not_copied == 0
    }

    /// Transactions lost in damaged regions that could be read but fail their checks.
    pub fn unreadable_transactions(&self) -> usize {
        self.skipped_regions
            .iter()
            .map(|r| r.unreadable_tids.len())
            .sum()
    }
}

/// Copies every intact transaction of `path` into a new data file at `output`,
/// which must not exist, skipping damaged regions.
pub fn recover(path: &Path, output: &Path) -> Result<RecoverReport> {
    recover_with(path, output, RecoverOptions::default(), |_, _| {})
}

/// Like [`recover`] with options, calling `progress(done, total)` as it advances.
pub fn recover_with(
    path: &Path,
    output: &Path,
    options: RecoverOptions,
    progress: impl FnMut(u64, u64),
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
    let (header, map) = walk::map_data_file(path)?;
    let file: &[u8] = &map;
    let len = file.len() as u64;
    // Two passes over the file: the walk, then the copy.
    let mut progress = Progress::new(progress, 2 * len);
    // First the plan (what to copy, what to skip, the oid mark), then the copy:
    // the mark must be known before the first transaction is written, since damage
    // anywhere after it may hold the largest one.
    let mut report = RecoverReport::default();
    let mut plan = Plan::default();
    walk::walk(file, header.data_start, &mut progress, |step| {
        plan.step(step, options, &mut report)
    });
    plan.close_marks();
    report.source_next_oid = plan.mark;
    let durable_end = verify::saved_durable_end(path, &header, len);
    for (i, torn) in plan.durable.torn(durable_end) {
        let g = &mut report.skipped_regions[i];
        g.torn_group = torn && !g.tail;
    }
    progress.next_pass(len);
    copy_planned(path, output, file, &plan, &mut report, &mut progress)?;
    progress.done();
    Ok(report)
}

/// Copies the transactions `plan` names from `file` into a new data file at
/// `output`, carrying the plan's oid mark.
fn copy_planned<F: FnMut(u64, u64)>(
    path: &Path,
    output: &Path,
    file: &[u8],
    plan: &Plan,
    report: &mut RecoverReport,
    progress: &mut Progress<F>,
) -> Result<()> {
    let target = FileStorage::open(
        output,
        FileOptions::new()
            .durability(Durability::Off)
            .internal_copy(),
    )?;
    for &pos in &plan.copy {
        progress.at(pos);
        let t = format::transaction_at(file, pos).map_err(|p| Error::Format {
            path: path.to_path_buf(),
            what: format!(
                "the transaction at offset {pos} changed while it was being recovered ({}): \
                 stop every process that writes the file and recover again",
                p.describe()
            ),
        })?;
        let objects = t
            .records
            .iter()
            .map(|(_, r)| (r.oid, r.data.to_vec()))
            .collect();
        target.copy_transaction(t.tid, t.meta(), plan.mark.max(t.next_oid), objects)?;
        report.copied += 1;
        report.first_copied_tid.get_or_insert(t.tid);
        report.last_copied_tid = Some(t.tid);
    }
    if report.copied > 0 {
        report.next_oid = plan.mark;
    }
    target.sync()?;
    target.close()
}

/// What the walk decided.
#[derive(Default)]
struct Plan {
    /// Offsets of the transactions to copy, in file (and tid) order.
    copy: Vec<u64>,
    /// Damage met (with `stop_at_damage`, nothing more is copied).
    damaged: bool,
    /// The oid mark so far: the largest of valid transactions' marks and oids.
    mark: u64,
    /// Marks of readable headers in damaged regions not yet confirmed by a
    /// valid transaction after them.
    pending_marks: Vec<u64>,
    /// Durable marks after each region (damage, or the torn group of a crash).
    durable: Marks,
}

impl Plan {
    fn step(&mut self, step: Step<'_>, options: RecoverOptions, report: &mut RecoverReport) {
        match step {
            Step::Valid(t) => {
                self.valid_mark(&t);
                self.durable.valid(&t);
                if self.damaged && options.stop_at_damage {
                    report.not_copied += 1;
                    let first = report.not_copied_tids.map_or(t.tid, |(f, _)| f);
                    report.not_copied_tids = Some((first, t.tid));
                } else {
                    self.copy.push(t.pos);
                }
            }
            Step::NotIncreasing { txn, previous } => {
                self.valid_mark(&txn);
                self.damaged = true;
                report.skipped_transactions.push(SkippedTransaction {
                    offset: txn.pos,
                    tid: txn.tid,
                    previous,
                });
            }
            Step::Region(r) => {
                self.damaged = true;
                self.pending_marks
                    .extend(r.readable.iter().filter_map(|h| h.next_oid));
                self.durable.region(r.start, report.skipped_regions.len());
                report.skipped_regions.push(SkippedRegion {
                    start: r.start,
                    end: r.end,
                    what: r.what,
                    zeros: r.zeros,
                    tail: r.tail,
                    torn_group: false,
                    unreadable_tids: r.readable.iter().map(|h| h.tid).collect(),
                });
            }
        }
    }

    /// Takes a valid transaction's mark, and judges the pending damaged marks by
    /// it: one above it cannot be genuine (marks never decrease along a file).
    fn valid_mark(&mut self, t: &format::TxnView<'_>) {
        let mut mark = t.next_oid;
        for (_, r) in &t.records {
            mark = mark.max(r.oid.0.saturating_add(1));
        }
        for m in self.pending_marks.drain(..) {
            if m <= mark {
                self.mark = self.mark.max(m);
            }
        }
        self.mark = self.mark.max(mark);
    }

    /// Damaged marks with no valid transaction after them cannot be judged: keep
    /// them, since reusing an oid is worse than skipping some.
    fn close_marks(&mut self) {
        for m in self.pending_marks.drain(..) {
            self.mark = self.mark.max(m);
        }
        self.mark = self.mark.max(1);
    }
}
