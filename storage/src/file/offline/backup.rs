//! Incremental backup of the append-only data file, and restore.
//!
//! A backup directory holds `MANIFEST` (one line per backup point) and one file per
//! increment: `increment-NNNNNN` holds bytes `[from, to)` of the data file (the first
//! also holds the file header, from offset 0). Since the file only ever grows by
//! whole transaction records, the bytes since the last backup point are exactly the
//! transactions committed since.
//!
//! Invariants:
//! - Every increment ends on a transaction boundary, and every transaction in it was
//!   checked (CRC and structure) on the source before the increment was written; the
//!   increment is fdatasync'd and read back against its CRC before the manifest
//!   names it, so a crash mid-backup leaves at most an unnamed file behind.
//! - A manifest belongs to one data file (its file id): after a pack (new file id)
//!   the backup refuses and asks for a new backup directory.
//!
//! `MANIFEST` lines: `zodiac-backup 1 FILE_ID_HEX` first, then per increment
//! `N FROM TO LAST_TID CRC32_HEX` (decimal unless said), in order.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::ids::Tid;

use super::super::format::{self, FILE_HEADER_LEN};
use super::verify;
use super::walk::{self, Records};

const MANIFEST: &str = "MANIFEST";
const MANIFEST_MAGIC: &str = "zodiac-backup 1";

/// One backup point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupPoint {
    /// The point's number: 1 for the first, counting up.
    pub number: u64,
    /// Where its increment starts in the data file.
    pub from: u64,
    /// Where its increment ends (exclusive): a transaction boundary.
    pub to: u64,
    /// The last transaction the data file holds at this point.
    pub last_tid: Tid,
    /// CRC-32 of the increment's bytes.
    pub crc: u32,
}

/// What a backup did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupReport {
    /// The new point, or None when nothing was committed since the last one.
    pub point: Option<BackupPoint>,
    /// Transactions the new point adds.
    pub transactions: u64,
}

fn increment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("increment-{number:06}"))
}

fn manifest_error(dir: &Path, what: impl Into<String>) -> Error {
    Error::Format {
        path: dir.join(MANIFEST),
        what: what.into(),
    }
}

/// Reads a manifest: (file id, points).
pub fn read_manifest(dir: &Path) -> Result<Option<(u64, Vec<BackupPoint>)>> {
    let text = match fs::read_to_string(dir.join(MANIFEST)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::io(
                dir.join(MANIFEST),
                "reading the backup manifest",
                e,
            ));
        }
    };
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let file_id = header
        .strip_prefix(MANIFEST_MAGIC)
        .and_then(|rest| u64::from_str_radix(rest.trim(), 16).ok())
        .ok_or_else(|| manifest_error(dir, "not a Zodiac backup manifest"))?;
    let mut points: Vec<BackupPoint> = Vec::new();
    for line in lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        let parse = |s: &str| s.parse::<u64>().ok();
        let point = match f.as_slice() {
            [n, from, to, tid, crc] => (|| {
                Some(BackupPoint {
                    number: parse(n)?,
                    from: parse(from)?,
                    to: parse(to)?,
                    last_tid: Tid(parse(tid)?),
                    crc: u32::from_str_radix(crc, 16).ok()?,
                })
            })(),
            _ => None,
        }
        .ok_or_else(|| manifest_error(dir, format!("malformed line {line:?}")))?;
        let expected_from = points.last().map_or(0, |p| p.to);
        if point.number != points.len() as u64 + 1
            || point.from != expected_from
            || point.to < point.from
        {
            return Err(manifest_error(
                dir,
                format!("line {line:?} does not continue the previous point"),
            ));
        }
        points.push(point);
    }
    Ok(Some((file_id, points)))
}

/// Backs up what the data file at `path` gained since the last backup point in `dir`
/// (everything, for a new directory). Safe while a writer commits to the file: it
/// copies the transactions complete when it looked.
///
/// A failed backup leaves nothing it created: the source is opened before the
/// directory is created, and a directory this call created is removed again.
pub fn backup(path: &Path, dir: &Path) -> Result<BackupReport> {
    let (header, map) = walk::map_data_file(path)?;
    let created = !dir.exists();
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, "creating the backup directory", e))?;
    let result = backup_into(&header, &map, dir);
    if result.is_err() && created {
        let _ = fs::remove_dir_all(dir);
    }
    result
}

/// The backup of a mapped data file into an existing directory.
fn backup_into(header: &format::FileHeader, map: &[u8], dir: &Path) -> Result<BackupReport> {
    let previous = read_manifest(dir)?;
    let (from, number) = match &previous {
        None => (0, 1),
        Some((file_id, _)) if *file_id != header.file_id => {
            return Err(manifest_error(
                dir,
                "the data file is not the one this directory backs up (it was packed or replaced since): back it up into a new directory",
            ));
        }
        Some((_, points)) => (points.last().map_or(0, |p| p.to), points.len() as u64 + 1),
    };
    // Check every transaction to copy, and find where the complete ones end.
    let mut records = Records::new(map, if from == 0 { header.data_start } else { from });
    let mut last_tid = None;
    let mut transactions = 0;
    for t in records.by_ref() {
        last_tid = Some(t.tid);
        transactions += 1;
    }
    let pos = records.pos();
    if from > 0 && format::length_before(map, from).is_none() {
        return Err(manifest_error(
            dir,
            format!(
                "the data file has no transaction boundary at {from}, where the last backup ended"
            ),
        ));
    }
    let Some(last_tid) = last_tid else {
        return Ok(BackupReport {
            point: None,
            transactions: 0,
        });
    };
    let bytes = &map[from as usize..pos as usize];
    let crc = crc32fast::hash(bytes);
    write_increment(&increment_path(dir, number), bytes, crc)?;
    let point = BackupPoint {
        number,
        from,
        to: pos,
        last_tid,
        crc,
    };
    let manifest = match previous {
        None => format!("{MANIFEST_MAGIC} {:x}\n", header.file_id),
        Some(_) => fs::read_to_string(dir.join(MANIFEST))
            .map_err(|e| Error::io(dir.join(MANIFEST), "reading the backup manifest", e))?,
    };
    write_manifest(
        dir,
        manifest + &format!("{number} {from} {} {} {crc:08x}\n", pos, last_tid.0),
    )?;
    Ok(BackupReport {
        point: Some(point),
        transactions,
    })
}

/// Writes an increment and reads it back against its CRC, before any manifest
/// names it.
fn write_increment(file: &Path, bytes: &[u8], crc: u32) -> Result<()> {
    let fail = |action| move |e| Error::io(file, action, e);
    let mut out = fs::File::create(file).map_err(fail("writing a backup increment"))?;
    out.write_all(bytes)
        .map_err(fail("writing a backup increment"))?;
    out.sync_all().map_err(fail("syncing a backup increment"))?;
    drop(out);
    let written = fs::read(file).map_err(fail("reading back a backup increment"))?;
    if crc32fast::hash(&written) != crc {
        return Err(Error::Corrupted {
            path: file.to_path_buf(),
            offset: 0,
            what: "the increment read back differs from what was written".into(),
            advice: "check the backup disk, then run the backup again",
        });
    }
    Ok(())
}

/// Replaces the manifest with `manifest` (written beside it, synced, renamed over
/// it, and the directory synced).
fn write_manifest(dir: &Path, manifest: String) -> Result<()> {
    let tmp = dir.join("MANIFEST.tmp");
    let manifest_path = dir.join(MANIFEST);
    let manifest_ref = &manifest_path;
    let fail = |action| move |e| Error::io(manifest_ref, action, e);
    fs::write(&tmp, manifest).map_err(fail("writing the backup manifest"))?;
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(fail("syncing the backup manifest"))?;
    fs::rename(&tmp, dir.join(MANIFEST)).map_err(fail("writing the backup manifest"))?;
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(fail("syncing the backup directory"))
}

/// Rebuilds a data file at `output` (which must not exist) from the backup in `dir`,
/// as of backup point `at` (the last one when None). Every increment is checked
/// against its CRC, and the result verified.
pub fn restore(dir: &Path, output: &Path, at: Option<u64>) -> Result<BackupPoint> {
    let (_, points) =
        read_manifest(dir)?.ok_or_else(|| manifest_error(dir, "no backup manifest here"))?;
    let last = match at {
        None => points.last(),
        Some(n) => points.iter().find(|p| p.number == n),
    }
    .cloned()
    .ok_or_else(|| {
        manifest_error(
            dir,
            format!(
                "no backup point {}",
                at.map_or("at all".into(), |n| n.to_string())
            ),
        )
    })?;
    if output.exists() {
        return Err(Error::io(
            output,
            "restoring",
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "it exists already; name a new file",
            ),
        ));
    }
    let tmp = output.with_extension("restoring");
    let result = restore_into(dir, &points, &last, &tmp, output);
    if result.is_err() {
        // A failed restore leaves nothing it created.
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| last)
}

/// Writes the increments up to `last` into `tmp`, verifies it and moves it to `output`.
fn restore_into(
    dir: &Path,
    points: &[BackupPoint],
    last: &BackupPoint,
    tmp: &Path,
    output: &Path,
) -> Result<()> {
    let fail = |action| move |e| Error::io(output, action, e);
    let mut out = fs::File::create(tmp).map_err(fail("creating the restored file"))?;
    for p in points.iter().take_while(|p| p.number <= last.number) {
        let file = increment_path(dir, p.number);
        let bytes =
            fs::read(&file).map_err(|e| Error::io(&file, "reading a backup increment", e))?;
        if bytes.len() as u64 != p.to - p.from || crc32fast::hash(&bytes) != p.crc {
            return Err(Error::Corrupted {
                path: file,
                offset: 0,
                what: "the increment does not match its CRC in the manifest".into(),
                advice: "this backup point cannot be restored; restore an earlier point",
            });
        }
        out.write_all(&bytes)
            .map_err(fail("writing the restored file"))?;
    }
    out.sync_all().map_err(fail("syncing the restored file"))?;
    drop(out);
    let report = verify::verify(tmp)?;
    if !report.is_healthy()
        || report.data_end != last.to
        || report.last_tid != Some(last.last_tid)
        || report.data_end < FILE_HEADER_LEN
    {
        return Err(Error::Format {
            path: output.to_path_buf(),
            what: format!("the restored file does not verify: {:?}", report.damage),
        });
    }
    fs::rename(tmp, output).map_err(fail("moving the restored file in place"))
}
