//! `zodiac verify` and `zodiac recover`: offline checks and salvage of a data file.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::json;
use zodiac_storage::file::pack::References;
use zodiac_storage::file::recover::recover_with;
use zodiac_storage::file::verify::{VerifyReport, verify_with};

use zodiac_storage::{FileOptions, FileStorage, Storage, Tid};

use crate::progress;

/// Walks and checks every record; exit 1 when anything is damaged.
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

fn verify_json(path: &Path, r: &VerifyReport) -> serde_json::Value {
    json!({
        "path": path.display().to_string(),
        "healthy": r.is_healthy(),
        "file_bytes": r.file_bytes,
        "data_end": r.data_end,
        "transactions": r.transactions,
        "records": r.records,
        "first_tid": r.first_tid.map(|t| t.0),
        "last_tid": r.last_tid.map(|t| t.0),
        "damage": r.damage.iter().map(|d| json!({
            "offset": d.offset,
            "what": d.what,
            "resumes_at": d.resumes_at,
        })).collect::<Vec<_>>(),
    })
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
    if r.is_healthy() {
        println!("  OK: every record is intact");
        return;
    }
    for d in &r.damage {
        match d.resumes_at {
            Some(next) => println!(
                "  DAMAGED at offset {}: {} (valid records resume at offset {next})",
                d.offset, d.what
            ),
            None => println!(
                "  DAMAGED at offset {}: {} (nothing valid after it: an incomplete tail, which a writable open cuts)",
                d.offset, d.what
            ),
        }
    }
    println!(
        "  run `zodiac recover {} --output NEW_PATH` to copy every intact transaction before the damage",
        path.display()
    );
}

/// Copies every intact transaction before the first damage into a new file.
pub fn run_recover(path: &Path, output: &Path) -> Result<ExitCode> {
    let r = recover_with(path, output, progress::bytes("recovering"))
        .with_context(|| format!("recovering {} into {}", path.display(), output.display()))?;
    println!(
        "copied {} transactions into {}{}",
        r.copied,
        output.display(),
        r.last_copied_tid
            .map(|t| format!(" (up to tid {t}, {})", t.to_rfc3339()))
            .unwrap_or_default()
    );
    match &r.damage {
        None => println!("the source had no damage: the copy is complete"),
        Some((offset, what)) => {
            println!("lost: the damaged region at offset {offset} ({what})");
            if let Some((first, last)) = r.lost_tids {
                println!(
                    "lost: {} intact transactions after the damage (tids {first} .. {last}), not copied because they may build on what was lost",
                    r.lost_transactions
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Copies what the data file gained since the last backup into `dir`.
pub fn run_backup(path: &Path, dir: &Path) -> Result<ExitCode> {
    let report = zodiac_storage::file::backup::backup(path, dir)
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
    let p = zodiac_storage::file::backup::restore(dir, output, at)
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

/// Packs a data file offline to `before` (default: now), with garbage collection
/// through the object records' reference lists unless `no_gc`.
/// The objects layer's reference reader, for pack's garbage collection.
pub fn references(record: &[u8]) -> std::result::Result<Vec<zodiac_storage::Oid>, String> {
    zodiac_objects::record::referenced_oids(record).map_err(|e| e.to_string())
}

/// Packs a data file offline, or (STORE `tcp://HOST:PORT`) the file a running
/// server serves, through it.
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
        (r, "PATH.old beside the server's data file".to_string())
    } else {
        let path = Path::new(store);
        let storage = FileStorage::open(path, FileOptions::new().create(false))
            .with_context(|| format!("opening {}", path.display()))?;
        let gc: Option<References<'_>> = if no_gc { None } else { Some(&references) };
        let r = storage
            .pack_with(before.unwrap_or(Tid::MAX), gc, progress::bytes("packing"))
            .with_context(|| format!("packing {}", path.display()))?;
        storage.close()?;
        (
            r,
            zodiac_storage::file::pack::old_path(path)
                .display()
                .to_string(),
        )
    };
    println!(
        "packed {store} to {} ({}) in {:.3} s: {} -> {} bytes, {} -> {} revisions, {} -> {} transactions, {} unreachable objects removed, {} transactions committed meanwhile; the original is kept as {old}",
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
