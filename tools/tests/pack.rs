//! `zodiac pack` on a database written through the objects layer: garbage
//! collection reads references from the object records themselves.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zodiac_objects::{Database, PRef, Persistent};
use zodiac_storage::{Durability, Error, FileOptions, FileStorage, Oid, Storage, Tid};

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
