//! `zodiac verify` and `zodiac recover`: offline checks and salvage of a data file.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::json;
use zodiac_storage::References;
use zodiac_storage::offline::{Damage, DamageKind, VerifyReport, verify_with};
use zodiac_storage::offline::{RecoverOptions, RecoverReport, SkippedRegion, recover_with};

use zodiac_storage::{FileOptions, Storage, Tid};

use crate::progress;

/// Walks and checks every record and the saved index; exit 1 on any problem.
pub fn run_verify(path: &Path, as_json: bool) -> Result<ExitCode> {
    let report = verify_with(path, progress::bytes("verifying"))
        .with_context(|| format!("verifying {}", path.display()))?;
    if as_json {
        println!("{}", verify_json(path, &report));
    } else {
        print_verify(path, &report);
    }
    Ok(if report.is_healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn kind_name(kind: DamageKind) -> &'static str {
    match kind {
        DamageKind::Damaged => "damaged",
        DamageKind::Zeros => "zeros",
        DamageKind::TornGroup => "torn_group",
        DamageKind::Tail => "incomplete_tail",
        DamageKind::TidNotIncreasing => "tid_not_increasing",
        DamageKind::BadBackPointer => "bad_back_pointer",
    }
}

fn verify_json(path: &Path, r: &VerifyReport) -> serde_json::Value {
    json!({
        "path": path.display().to_string(),
        "healthy": r.is_healthy(),
        "file_bytes": r.file_bytes,
        "data_end": r.data_end,
        "transactions": r.transactions,
        "transactions_after_damage": r.transactions_after_damage(),
        "records": r.records,
        "first_tid": r.first_tid.map(|t| t.0),
        "last_tid": r.last_tid.map(|t| t.0),
        "damage": r.damage.iter().map(|d| json!({
            "kind": kind_name(d.kind),
            "offset": d.offset,
            "end": d.end,
            "bytes": d.bytes(),
            "what": d.what,
            "resumes_at": d.resumes_at,
            "readable_tids": d.readable_tids.iter().map(|t| t.0).collect::<Vec<_>>(),
            "followed_by": d.followed_by,
            "followed_up_to_tid": d.followed_up_to.map(|t| t.0),
        })).collect::<Vec<_>>(),
        "index": r.index.as_ref().map(|i| json!({
            "path": i.path.display().to_string(),
            "covered_end": i.covered_end,
            "problems": i.problems,
            "proves_data_missing": i.proves_data_missing,
        })),
    })
}

/// "tids 5, 9" for a short list, "17 tids from 5 to 80" for a long one.
fn tid_list(tids: &[Tid]) -> String {
    const LISTED_MAX: usize = 10;
    match tids {
        [] => String::new(),
        [first, .., last] if tids.len() > LISTED_MAX => {
            format!("{} tids from {first} to {last}", tids.len())
        }
        _ => {
            let list: Vec<String> = tids.iter().map(Tid::to_string).collect();
            format!(
                "tid{} {}",
                if tids.len() == 1 { "" } else { "s" },
                list.join(", ")
            )
        }
    }
}

fn followed(d: &Damage) -> String {
    match d.followed_up_to {
        Some(last) => format!(
            "followed by {} valid transactions up to tid {last} ({})",
            d.followed_by,
            last.to_rfc3339()
        ),
        None => "followed by no valid transaction before the next damage".to_string(),
    }
}

fn damage_line(path: &Path, d: &Damage) -> String {
    let at = format!("DAMAGED at offset {}", d.offset);
    let readable = if d.readable_tids.is_empty() {
        String::new()
    } else {
        format!(
            "; {} transaction records there fail their checks ({})",
            d.readable_tids.len(),
            tid_list(&d.readable_tids)
        )
    };
    match d.kind {
        DamageKind::Zeros => format!(
            "{at}: {} bytes of zeros at offset {} {}: acknowledged transactions are hidden; run `zodiac recover {} --output NEW_PATH`",
            d.bytes(),
            d.offset,
            followed(d),
            path.display()
        ),
        DamageKind::Damaged => format!(
            "{at} ({} bytes, to offset {}): {}{readable}; {}: damage in the middle of the file",
            d.bytes(),
            d.end,
            d.what,
            followed(d)
        ),
        DamageKind::TornGroup => format!(
            "{at} ({} bytes): {}{readable}; {}, all written in one group with these bytes before any of it was durable (their durable marks lie at or before offset {}): the torn last group of a crash, never acknowledged, which a writable open cuts",
            d.bytes(),
            d.what,
            followed(d),
            d.offset
        ),
        DamageKind::Tail => format!(
            "{at} ({} bytes): {}{readable} (nothing valid after it: an incomplete tail, which a writable open cuts)",
            d.bytes(),
            d.what
        ),
        DamageKind::TidNotIncreasing => format!(
            "{at}: {}: an intact transaction out of order, {}",
            d.what,
            followed(d)
        ),
        DamageKind::BadBackPointer => format!("{at}: {}", d.what),
    }
}

fn print_verify(path: &Path, r: &VerifyReport) {
    println!(
        "{}: {} transactions, {} object revisions, data ends at {} of {} bytes",
        path.display(),
        r.transactions,
        r.records,
        r.data_end,
        r.file_bytes
    );
    if let (Some(first), Some(last)) = (r.first_tid, r.last_tid) {
        println!(
            "  tids {} ({}) .. {} ({})",
            first,
            first.to_rfc3339(),
            last,
            last.to_rfc3339()
        );
    }
    for d in &r.damage {
        println!("  {}", damage_line(path, d));
    }
    if let Some(i) = &r.index {
        if i.problems.is_empty() {
            println!(
                "  saved index {} agrees with the file (up to offset {})",
                i.path.display(),
                i.covered_end.unwrap_or(0)
            );
        }
        for p in &i.problems {
            println!("  INDEX {}: {p}", i.path.display());
        }
        if i.proves_data_missing {
            println!(
                "  keep {}: it is the evidence that acknowledged transactions are missing; run `zodiac recover {} --output NEW_PATH` or restore a backup",
                i.path.display(),
                path.display()
            );
        } else if !i.problems.is_empty() {
            println!(
                "  fix the index: delete {}; the next writable open rebuilds it by scanning",
                i.path.display()
            );
        }
    }
    if r.is_healthy() {
        println!("  OK: every record is intact");
        return;
    }
    let after = r.transactions_after_damage();
    if after > 0 {
        println!(
            "  {after} valid transactions lie after damage in the middle of the file: \
             opening refuses the file until it is recovered"
        );
    }
    let cut_by_open = |d: &Damage| matches!(d.kind, DamageKind::Tail | DamageKind::TornGroup);
    if !r.damage.is_empty() && r.damage.iter().all(cut_by_open) {
        println!(
            "  a writable open cuts these bytes and keeps them beside the file as {}.tail-OFFSET: \
             a crash leaves such bytes, but damage to the last transactions looks the same, so keep them until you know",
            path.display()
        );
    } else if !r.damage.is_empty() {
        println!(
            "  run `zodiac recover {} --output NEW_PATH` to copy every intact transaction into a new file; it skips and lists the damaged regions",
            path.display()
        );
    }
}

/// Copies every intact transaction into a new file, skipping damaged regions
/// (or, with `stop_at_damage`, only those before the first damage).
pub fn run_recover(path: &Path, output: &Path, stop_at_damage: bool) -> Result<ExitCode> {
    let r = recover_with(
        path,
        output,
        RecoverOptions { stop_at_damage },
        progress::bytes("recovering"),
    )
    .with_context(|| format!("recovering {} into {}", path.display(), output.display()))?;
    println!(
        "copied {} transactions into {}{}",
        r.copied,
        output.display(),
        match (r.first_copied_tid, r.last_copied_tid) {
            (Some(first), Some(last)) => format!(
                " (tids {first} .. {last}, {} .. {})",
                first.to_rfc3339(),
                last.to_rfc3339()
            ),
            _ => String::new(),
        }
    );
    if r.complete() {
        println!("the source had no damage: the copy is complete");
        return Ok(ExitCode::SUCCESS);
    }
    for g in &r.skipped_regions {
        print_skipped_region(g);
    }
    for t in &r.skipped_transactions {
        println!(
            "skipped: the intact transaction at offset {} (tid {}, {}) because its tid does not increase (previous {})",
            t.offset,
            t.tid,
            t.tid.to_rfc3339(),
            t.previous
        );
    }
    if let Some((first, last)) = r.not_copied_tids {
        println!(
            "not copied (--stop-at-damage): {} intact transactions after the first damage (tids {first} .. {last})",
            r.not_copied
        );
    }
    print_next_steps(&r, output, stop_at_damage);
    Ok(ExitCode::SUCCESS)
}

/// One line for a region the recovery skipped: where, what was there, what was lost.
fn print_skipped_region(g: &SkippedRegion) {
    let what = if g.zeros {
        "only zero bytes".to_string()
    } else {
        g.what.clone()
    };
    let lost = if g.unreadable_tids.is_empty() {
        "no transaction record could be read there".to_string()
    } else {
        format!(
            "lost: {} transactions there fail their checks ({})",
            g.unreadable_tids.len(),
            tid_list(&g.unreadable_tids)
        )
    };
    let tail = if g.tail {
        "; nothing valid follows: an incomplete tail, as a crash mid-write leaves (such a transaction was never acknowledged)"
    } else if g.torn_group {
        "; the transactions after it were written in one group with it before any of it was durable (the torn last group of a crash: never acknowledged, and a writable open of the source would cut them); they are copied, use --stop-at-damage to leave them out"
    } else {
        ""
    };
    println!(
        "skipped: offset {} .. {} ({} bytes): {what}; {lost}{tail}",
        g.start,
        g.end,
        g.bytes()
    );
}

/// What the new file's next oid is, and what to check when transactions copied
/// after a skipped region may build on what it held.
fn print_next_steps(r: &RecoverReport, output: &Path, stop_at_damage: bool) {
    if r.copied > 0 {
        println!(
            "next oid {}: the largest mark in the source, so no oid is reused",
            r.next_oid
        );
    } else if r.source_next_oid > 1 {
        println!(
            "nothing could be copied, so the new file does not carry the source's next-oid mark {}",
            r.source_next_oid
        );
    }
    if !stop_at_damage && r.copied > 0 && r.skipped_regions.iter().any(|g| !g.tail && !g.torn_group)
    {
        println!(
            "check: transactions copied after a skipped region may build on what it held; \
             run `zodiac refs {0}` to list references to lost objects, and `zodiac verify {0}`",
            output.display()
        );
    }
}

/// Copies what the data file gained since the last backup into `dir`.
pub fn run_backup(path: &Path, dir: &Path) -> Result<ExitCode> {
    let report = zodiac_storage::offline::backup(path, dir)
        .with_context(|| format!("backing up {} into {}", path.display(), dir.display()))?;
    match report.point {
        None => println!("nothing new since the last backup point"),
        Some(p) => println!(
            "backup point {}: {} transactions, bytes {}..{} (up to tid {}, {}), verified",
            p.number,
            report.transactions,
            p.from,
            p.to,
            p.last_tid,
            p.last_tid.to_rfc3339()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// Rebuilds a data file from a backup directory, as of a backup point.
pub fn run_restore(dir: &Path, output: &Path, at: Option<u64>) -> Result<ExitCode> {
    let p = zodiac_storage::offline::restore(dir, output, at)
        .with_context(|| format!("restoring {} from {}", output.display(), dir.display()))?;
    println!(
        "restored {} as of backup point {} (tid {}, {}), verified",
        output.display(),
        p.number,
        p.last_tid,
        p.last_tid.to_rfc3339()
    );
    Ok(ExitCode::SUCCESS)
}

/// The objects layer's reference reader, for pack's garbage collection.
pub fn references(record: &[u8]) -> std::result::Result<Vec<zodiac_storage::Oid>, String> {
    zodiac_objects::record::referenced_oids(record).map_err(|e| e.to_string())
}

/// Packs to `before` (default: now), with garbage collection through the object
/// records' reference lists unless `no_gc`: a data file offline, the file a
/// running server serves through it (STORE `tcp://HOST:PORT`), or a PostgreSQL
/// schema in place (while its workers run).
pub fn run_pack(
    store: &str,
    before: Option<Tid>,
    no_gc: bool,
    connect: &crate::store::Connect,
) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    let (r, old) = if crate::store::is_server(store) {
        let client = crate::store::connect_to(store, connect)?;
        let r = client
            .pack(before.unwrap_or(Tid::MAX), !no_gc)
            .with_context(|| format!("packing through {store}"))?;
        client.close()?;
        (
            r,
            "the original is kept as PATH.old beside the server's data file".to_string(),
        )
    } else if crate::store::is_postgres(store) {
        let storage = crate::store::open_store(store, connect, false)?;
        let gc: Option<References<'_>> = if no_gc { None } else { Some(&references) };
        let r = storage
            .pack(before.unwrap_or(Tid::MAX), gc)
            .with_context(|| format!("packing {}", zodiac_storage::url_without_password(store)))?;
        storage.close()?;
        (
            r,
            "PostgreSQL keeps no copy of what was removed (pg_dump before a pack keeps one)"
                .to_string(),
        )
    } else {
        let path = Path::new(store);
        let storage =
            crate::store::open_waiting(path, FileOptions::new().create(false), connect.lock_wait)
                .map_err(|e| {
                if e.is::<crate::store::LockHeld>() {
                    // The holder is most often the server that serves the file.
                    anyhow::anyhow!(
                        "{e}; a file a `zodiac server` serves is packed through it: \
                             `zodiac pack tcp://HOST:PORT`"
                    )
                } else {
                    e
                }
            })?;
        let gc: Option<References<'_>> = if no_gc { None } else { Some(&references) };
        let r = storage
            .pack_with(before.unwrap_or(Tid::MAX), gc, progress::bytes("packing"))
            .with_context(|| format!("packing {}", path.display()))?;
        storage.close()?;
        (
            r,
            format!(
                "the original is kept as {}",
                zodiac_storage::offline::old_path(path).display()
            ),
        )
    };
    println!(
        "packed {} to {} ({}) in {:.3} s: {} -> {} bytes, {} -> {} revisions, {} -> {} transactions, {} unreachable objects removed, {} transactions committed meanwhile; {old}",
        zodiac_storage::url_without_password(store),
        r.pack_tid,
        r.pack_tid.to_rfc3339(),
        started.elapsed().as_secs_f64(),
        r.bytes_before,
        r.bytes_after,
        r.revisions_before,
        r.revisions_after,
        r.transactions_before,
        r.transactions_after,
        r.objects_removed,
        r.copied_during_pack,
    );
    Ok(ExitCode::SUCCESS)
}
