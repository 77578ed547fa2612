//! The tools that read object records (pack with GC, analyze, refs), on a database
//! written through the objects layer.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zodiac_objects::{Database, PRef, Persistent};
use zodiac_storage::{
    Durability, Error, FileOptions, FileStorage, Oid, Storage, Tid, TransactionMeta,
};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Note {
    text: String,
    next: Option<PRef<Note>>,
}
impl Persistent for Note {
    const TYPE_NAME: &'static str = "test.Note";
}

fn zodiac(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zodiac"))
        .args(args)
        .output()
        .expect("run zodiac")
}

/// A chain root -> a -> b, plus an orphan; each edited a few times. Returns the
/// oids of (a, b, orphan).
fn notes(path: &Path) -> (Oid, Oid, Oid) {
    let storage = FileStorage::open(path, FileOptions::new().durability(Durability::Off)).unwrap();
    let db = Database::open(Arc::new(storage)).unwrap();
    let mut conn = db.connection();
    let (a, b, orphan) = conn
        .transact(|tx| {
            let b = tx.add(Note {
                text: "b".into(),
                next: None,
            })?;
            let a = tx.add(Note {
                text: "a".into(),
                next: Some(b),
            })?;
            let orphan = tx.add(Note {
                text: "orphan".into(),
                next: None,
            })?;
            tx.set_root_entry("first", a)?;
            Ok((a, b, orphan))
        })
        .unwrap();
    for i in 0..3 {
        conn.transact(|tx| {
            tx.modify(&b, |n| n.text = format!("b{i}"))?;
            tx.modify(&orphan, |n| n.text = format!("orphan{i}"))
        })
        .unwrap();
    }
    (a.oid(), b.oid(), orphan.oid())
}

#[test]
fn pack_collects_what_the_root_cannot_reach_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.zdb");
    let (a, b, orphan) = notes(&path);
    let out = zodiac(&["pack", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 unreachable objects removed"), "{stdout}");
    assert!(stdout.contains("notes.zdb.old"), "{stdout}");

    let storage = FileStorage::open(&path, FileOptions::new().read_only(true)).unwrap();
    for kept in [Oid::ROOT, a, b] {
        assert_eq!(storage.history(kept, 10).unwrap().len(), 1, "{kept}");
    }
    assert!(matches!(
        storage.load(orphan, Tid::MAX),
        Err(Error::NoSuchObject { .. })
    ));
    drop(storage);
    // The objects layer reads the packed file as before.
    let db = Database::open(Arc::new(
        FileStorage::open(&path, FileOptions::new()).unwrap(),
    ))
    .unwrap();
    let text = db
        .connection()
        .transact(|tx| {
            let first: PRef<Note> = tx.root_entry("first")?.expect("named in the root");
            let first = tx.get(&first)?;
            let next = tx.get(first.next.as_ref().expect("a refers to b"))?;
            Ok(next.text.clone())
        })
        .unwrap();
    assert_eq!(text, "b2");
}

#[test]
fn pack_without_gc_keeps_unreachable_objects_and_bad_times_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.zdb");
    let (_, _, orphan) = notes(&path);
    let out = zodiac(&["pack", path.to_str().unwrap(), "--no-gc", "--before", "+1h"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let storage = FileStorage::open(&path, FileOptions::new().read_only(true)).unwrap();
    assert_eq!(storage.history(orphan, 10).unwrap().len(), 1);
    let out = zodiac(&["pack", path.to_str().unwrap(), "--before", "last tuesday"]);
    assert_eq!(out.status.code(), Some(2));
    let out = zodiac(&["pack", dir.path().join("missing.zdb").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: "));
}

#[test]
fn analyze_counts_live_objects_and_old_revisions_per_type() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.zdb");
    notes(&path);
    let out = zodiac(&["analyze", path.to_str().unwrap(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let note = json["types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == "test.Note")
        .expect("test.Note listed");
    assert_eq!(note["objects"], 3);
    assert_eq!(
        note["old_revisions"], 6,
        "b and the orphan were rewritten 3 times each"
    );
    let out = zodiac(&["analyze", path.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("test.Note"));
}

#[test]
fn refs_finds_references_to_missing_objects() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.zdb");
    notes(&path);
    let out = zodiac(&["refs", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no dangling references among 4 objects")
    );
    // An object whose record refers to an object that was never stored.
    let s = FileStorage::open(&path, FileOptions::new()).unwrap();
    let oid = s.new_oid().unwrap();
    let mut t = s.begin(TransactionMeta::default()).unwrap();
    let bad = zodiac_objects::record::encode("test.Note", &[Oid(999)], b"");
    t.store(oid, Tid::ZERO, bad).unwrap();
    t.finish().unwrap();
    drop(s);
    let out = zodiac(&["refs", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "object {oid} refers to object 0x3e7, which does not exist"
        )),
        "{stdout}"
    );
}
