//! `zodiac copy SRC DST`: copies every transaction of one store into another,
//! keeping tids and metadata (`Storage::restore_batch`), between any stores that
//! open through `store.rs` (a data file, a `zodiac server`). Incremental: a second
//! run copies only what SRC gained since.
//!
//! Invariants:
//! - Only SRC transactions with a tid after DST's last tid are copied, and only
//!   once DST's last transaction is found in SRC at the same tid with the same
//!   metadata and objects: a DST that diverged from SRC is refused untouched.
//! - SRC is read up to the last tid it had when the copy started; DST reports
//!   each batch durable before the next is read, so an interrupted copy resumes
//!   where DST's last tid says (nothing is copied twice, nothing skipped).
//! - Every copied transaction is verified once DST holds it: its metadata and
//!   objects as DST lists them, and each record's bytes as DST loads them, equal
//!   SRC's.
//! - SRC and DST naming the same store is refused before anything is opened for
//!   writing; SRC is opened read-only, before DST (a SRC that cannot be read
//!   leaves no new DST behind).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use zodiac_storage::{CopiedTransaction, Oid, Storage, Tid, TransactionInfo, url_without_password};

use crate::store::{self, Connect};

/// A batch is handed to DST once it holds this many bytes of records...
const BATCH_BYTES_MAX: u64 = 8 << 20;
/// ... or this many transactions.
const BATCH_TRANSACTIONS_MAX: usize = 1000;

/// What a copy did.
#[derive(Debug, Default)]
struct Summary {
    transactions: u64,
    records: u64,
    bytes: u64,
}

/// `zodiac copy SRC DST`: copies, verifies and prints the summary.
pub fn run_copy(src: &str, dst: &str, connect: &Connect) -> Result<()> {
    refuse_same_store(src, dst)?;
    let started = Instant::now();
    let source =
        store::open_store_read_only(src, &for_store(src, connect)).context("the source")?;
    let target =
        store::open_store(dst, &for_store(dst, connect), true).context("the destination")?;
    // As messages show them: without a URL's password.
    let (src, dst) = (&url_without_password(src), &url_without_password(dst));
    let from = resume_point(&*source, &*target, src, dst)?;
    let until = source.last_tid();
    if from > until {
        println!("{dst} is up to date with {src} (last tid {until}): nothing to copy");
        return target.close().with_context(|| format!("closing {dst}"));
    }
    let total = planned_bytes(&*source, from, until)?;
    let summary = copy_range(&*source, &*target, from, until, total)
        .with_context(|| format!("copying {src} to {dst}"))?;
    target.close().with_context(|| format!("closing {dst}"))?;
    println!(
        "copied {} transactions ({} records, {} bytes) from {src} to {dst} in {:.3} s, \
         verified; {dst} now ends at tid {}",
        summary.transactions,
        summary.records,
        summary.bytes,
        started.elapsed().as_secs_f64(),
        until
    );
    Ok(())
}

/// `connect` for one of the two stores: `--token-file` is for the server (a
/// copy between a data file and a server gives it for the server).
fn for_store(name: &str, connect: &Connect) -> Connect {
    let mut connect = connect.clone();
    if !store::is_server(name) {
        connect.token_file = None;
    }
    connect
}

/// Refuses SRC and DST naming one store: the same data file (however its path is
/// written), or the same server address.
fn refuse_same_store(src: &str, dst: &str) -> Result<()> {
    let same = match (store::is_server(src), store::is_server(dst)) {
        (true, true) => src.trim_end_matches('/') == dst.trim_end_matches('/'),
        (false, false) => canonical(Path::new(src)) == canonical(Path::new(dst)),
        _ => false,
    };
    if same {
        bail!(
            "{} and {} are the same store: name another destination to copy into",
            url_without_password(src),
            url_without_password(dst)
        );
    }
    Ok(())
}

/// The path with its directory resolved (the file itself need not exist).
fn canonical(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.map_or_else(|| Path::new(".").canonicalize(), Path::canonicalize);
    match (dir, path.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => path.to_path_buf(),
    }
}

/// The first tid to copy: after DST's last, once that one is found in SRC as DST
/// has it. `src` and `dst` name the stores in messages.
fn resume_point(source: &dyn Storage, target: &dyn Storage, src: &str, dst: &str) -> Result<Tid> {
    let last = target.last_tid();
    if last == Tid::ZERO {
        return Ok(Tid::ZERO);
    }
    let refuse = |why: String| {
        anyhow::anyhow!(
            "{dst} is not a copy of {src}: {why}; copy into a new data file (or an empty \
             store) instead"
        )
    };
    let ours = one_transaction(target, last)?
        .with_context(|| format!("{dst} lists no transaction at its last tid {last}"))?;
    match one_transaction(source, last)? {
        None if last > source.last_tid() => Err(refuse(format!(
            "its last transaction {last} is newer than {src}'s last, {}",
            source.last_tid()
        ))),
        None => Err(refuse(format!("{src} has no transaction {last}"))),
        Some(theirs) if !same_transaction(&theirs, &ours) => Err(refuse(format!(
            "their transactions {last} differ (metadata or objects written)"
        ))),
        Some(_) => Ok(Tid(last.0 + 1)),
    }
}

/// The transaction with exactly tid `tid`, if the store has one.
fn one_transaction(storage: &dyn Storage, tid: Tid) -> Result<Option<TransactionInfo>> {
    let mut walk = storage.transactions(tid, tid)?;
    Ok(walk.next().transpose()?.filter(|t| t.tid == tid))
}

/// Whether two stores' records of one transaction agree (objects in any order).
fn same_transaction(a: &TransactionInfo, b: &TransactionInfo) -> bool {
    let sorted = |t: &TransactionInfo| {
        let mut c: Vec<(u64, u64)> = t.changes.iter().map(|c| (c.oid.0, c.size)).collect();
        c.sort_unstable();
        c
    };
    a.tid == b.tid && a.meta == b.meta && sorted(a) == sorted(b)
}

/// Bytes of records from `from` to `until` (the progress bar's total).
fn planned_bytes(source: &dyn Storage, from: Tid, until: Tid) -> Result<u64> {
    let mut total = 0;
    for t in source.transactions(from, until)? {
        total += t?.changes.iter().map(|c| c.size).sum::<u64>();
    }
    Ok(total)
}

/// Copies SRC's transactions `from..=until` into DST in batches, verifying each.
fn copy_range(
    source: &dyn Storage,
    target: &dyn Storage,
    from: Tid,
    until: Tid,
    total: u64,
) -> Result<Summary> {
    let mut progress = crate::progress::bytes("copying");
    let mut summary = Summary::default();
    let mut batch: Vec<CopiedTransaction> = Vec::new();
    let mut batch_bytes = 0;
    for info in source.transactions(from, until)? {
        let info = info?;
        let records = info
            .changes
            .iter()
            .map(|c| Ok((c.oid, source.load_revision(c.oid, info.tid)?)))
            .collect::<Result<Vec<(Oid, Vec<u8>)>>>()
            .with_context(|| format!("reading transaction {}", info.tid))?;
        batch_bytes += records.iter().map(|(_, d)| d.len() as u64).sum::<u64>();
        batch.push(CopiedTransaction {
            tid: info.tid,
            meta: info.meta,
            records,
        });
        if batch_bytes >= BATCH_BYTES_MAX || batch.len() >= BATCH_TRANSACTIONS_MAX {
            write_batch(target, &batch, &mut summary)?;
            progress(summary.bytes, total.max(summary.bytes));
            batch.clear();
            batch_bytes = 0;
        }
    }
    if !batch.is_empty() {
        write_batch(target, &batch, &mut summary)?;
    }
    progress(total.max(summary.bytes), total.max(summary.bytes));
    Ok(summary)
}

/// Restores one batch into DST and verifies it there.
fn write_batch(
    target: &dyn Storage,
    batch: &[CopiedTransaction],
    summary: &mut Summary,
) -> Result<()> {
    let (first, last) = match (batch.first(), batch.last()) {
        (Some(f), Some(l)) => (f.tid, l.tid),
        _ => return Ok(()),
    };
    target
        .restore_batch(batch)
        .with_context(|| format!("writing transactions {first} to {last}"))?;
    verify_batch(target, batch)?;
    for t in batch {
        summary.transactions += 1;
        summary.records += t.records.len() as u64;
        summary.bytes += t.records.iter().map(|(_, d)| d.len() as u64).sum::<u64>();
    }
    Ok(())
}

/// Checks that DST holds `batch` exactly: each transaction's metadata and objects,
/// and each record's bytes.
fn verify_batch(target: &dyn Storage, batch: &[CopiedTransaction]) -> Result<()> {
    let (first, last) = (batch[0].tid, batch[batch.len() - 1].tid);
    let listed: Vec<TransactionInfo> = target
        .transactions(first, last)?
        .collect::<zodiac_storage::Result<_>>()?;
    let differs = |tid: Tid, what: &str| {
        anyhow::anyhow!(
            "verification failed: transaction {tid} in the destination differs from the \
             source ({what}); the destination is not a faithful copy, do not use it"
        )
    };
    if listed.len() != batch.len() {
        return Err(differs(
            first,
            &format!(
                "{} transactions listed, {} copied",
                listed.len(),
                batch.len()
            ),
        ));
    }
    for (copied, info) in batch.iter().zip(&listed) {
        let expected = TransactionInfo {
            tid: copied.tid,
            meta: copied.meta.clone(),
            changes: info.changes.clone(),
        };
        if info != &expected || info.changes.len() != copied.records.len() {
            return Err(differs(copied.tid, "tid, metadata or objects written"));
        }
        for (oid, data) in &copied.records {
            let stored = target.load_revision(*oid, copied.tid)?;
            if &stored != data {
                return Err(differs(copied.tid, &format!("the record of object {oid}")));
            }
        }
    }
    Ok(())
}
