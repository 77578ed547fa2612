//! `zodiac analyze` (what the file holds, per type) and `zodiac refs` (references to
//! objects that do not exist), read from the object records' envelopes, and for the
//! job layer's records also from their values (`zodiac_async::named_ids`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::json;
use zodiac_objects::record;
use zodiac_storage::{FileOptions, FileStorage, Oid, Tid};

/// Records that are not object envelopes are counted under this name.
const NOT_AN_OBJECT: &str = "(not an object record)";

#[derive(Default)]
struct TypeStats {
    objects: u64,
    live_bytes: u64,
    old_revisions: u64,
    old_bytes: u64,
}

fn open(path: &Path) -> Result<FileStorage> {
    FileStorage::open(path, FileOptions::new().read_only(true))
        .with_context(|| format!("opening {}", path.display()))
}

/// Visits every revision of STORE as (oid, whether it is the object's newest,
/// data). A data file is scanned in place; a server or a PostgreSQL database is
/// walked transaction by transaction, each revision loaded (one request each).
fn scan_revisions(store: &str, mut visit: impl FnMut(Oid, bool, &[u8])) -> Result<()> {
    if !(crate::store::is_server(store) || crate::store::is_postgres(store)) {
        open(Path::new(store))?.scan_records(|r| visit(r.oid, r.newest, r.data))?;
        return Ok(());
    }
    let storage = crate::store::open_store_read_only(store, &crate::store::Connect::default())?;
    let mut newest: HashMap<Oid, Tid> = HashMap::new();
    let mut revisions = Vec::new();
    for t in storage.transactions(Tid::ZERO, Tid::MAX)? {
        let t = t?;
        for change in &t.changes {
            newest.insert(change.oid, t.tid);
            revisions.push((t.tid, change.oid));
        }
    }
    for (tid, oid) in revisions {
        let data = storage
            .load_revision(oid, tid)
            .with_context(|| format!("loading object {oid} at {tid}"))?;
        visit(oid, newest[&oid] == tid, &data);
    }
    Ok(())
}

/// Per-type object counts and bytes, live (newest revisions) and old.
pub fn run_analyze(store: &str, as_json: bool) -> Result<ExitCode> {
    let mut types: BTreeMap<String, TypeStats> = BTreeMap::new();
    scan_revisions(store, |_, newest, data| {
        let name = record::type_name(data).unwrap_or(NOT_AN_OBJECT);
        let stats = types.entry(name.to_string()).or_default();
        if newest {
            stats.objects += 1;
            stats.live_bytes += data.len() as u64;
        } else {
            stats.old_revisions += 1;
            stats.old_bytes += data.len() as u64;
        }
    })?;
    if as_json {
        let list: Vec<_> = types
            .iter()
            .map(|(name, s)| {
                json!({"type": name, "objects": s.objects, "live_bytes": s.live_bytes,
                       "old_revisions": s.old_revisions, "old_bytes": s.old_bytes})
            })
            .collect();
        println!("{}", json!({"path": store, "types": list}));
    } else {
        println!(
            "{:<40} {:>10} {:>14} {:>14} {:>14}",
            "type", "objects", "live bytes", "old revisions", "old bytes"
        );
        for (name, s) in &types {
            println!(
                "{name:<40} {:>10} {:>14} {:>14} {:>14}",
                s.objects, s.live_bytes, s.old_revisions, s.old_bytes
            );
        }
        let old: u64 = types.values().map(|s| s.old_bytes).sum();
        println!("old revisions take {old} bytes: `zodiac pack` reclaims them");
    }
    Ok(ExitCode::SUCCESS)
}

/// What `refs` reads from the newest revision of every object.
struct RefScan {
    /// Every object that exists.
    existing: BTreeSet<Oid>,
    /// (from, to) of every listed reference.
    references: Vec<(Oid, Oid)>,
    /// (from, its type, to): ids the job layer's records name outside their lists.
    unlisted: Vec<(Oid, String, Oid)>,
    /// Records whose references cannot be read, and why.
    unreadable: Vec<(Oid, String)>,
}

/// Reads the references of the newest revision of every object.
fn scan_refs(store: &str) -> Result<RefScan> {
    let mut existing = BTreeSet::new();
    let mut references: Vec<(Oid, Oid)> = Vec::new();
    let mut unlisted: Vec<(Oid, String, Oid)> = Vec::new();
    let mut unreadable: Vec<(Oid, String)> = Vec::new();
    scan_revisions(store, |oid, newest, data| {
        if !newest {
            return;
        }
        existing.insert(oid);
        let refs = match record::referenced_oids(data) {
            Ok(refs) => refs,
            Err(e) => {
                unreadable.push((oid, e.to_string()));
                return;
            }
        };
        match zodiac_async::named_ids(data) {
            None => {}
            Some(Ok(named)) => {
                let type_name = record::type_name(data).unwrap_or("?").to_string();
                for id in named.into_iter().filter(|id| !refs.contains(id)) {
                    unlisted.push((oid, type_name.clone(), id));
                }
            }
            Some(Err(e)) => unreadable.push((oid, e)),
        }
        references.extend(refs.into_iter().map(|to| (oid, to)));
    })?;
    Ok(RefScan {
        existing,
        references,
        unlisted,
        unreadable,
    })
}

/// Lists references from live objects to objects that do not exist, and ids a
/// job-layer value names outside its reference list (records written before every
/// link was a reference: pack's GC cannot see those links); exit 1 if any.
pub fn run_refs(store: &str) -> Result<ExitCode> {
    let RefScan {
        existing,
        references,
        unlisted,
        unreadable,
    } = scan_refs(store)?;
    let dangling: Vec<(Oid, Oid)> = references
        .into_iter()
        .filter(|(_, to)| !existing.contains(to))
        .collect();
    for (from, to) in &dangling {
        println!("object {from} refers to object {to}, which does not exist");
    }
    let mut problems = dangling.len();
    for (from, type_name, to) in &unlisted {
        problems += 1;
        if existing.contains(to) {
            println!(
                "object {from} ({type_name}) names object {to} outside its reference list \
                 (written by an earlier version): pack's garbage collection would delete \
                 {to}; pack with --no-gc while `zodiac refs` reports this"
            );
        } else {
            println!(
                "object {from} ({type_name}) names object {to}, which does not exist \
                 (not in its reference list: it was deleted by a garbage collection)"
            );
        }
    }
    for (oid, why) in &unreadable {
        problems += 1;
        println!("object {oid}: its references cannot be read: {why}");
    }
    if problems == 0 {
        println!(
            "{}: no dangling references among {} objects",
            zodiac_storage::url_without_password(store),
            existing.len()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "{} dangling references, {} ids outside reference lists, {} unreadable records",
            dangling.len(),
            unlisted.len(),
            unreadable.len()
        );
        Ok(ExitCode::from(1))
    }
}
