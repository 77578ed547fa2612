//! Incremental backup and restore of a data file, including while a writer commits.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use zodiac_storage::offline::{backup, read_manifest, restore};
use zodiac_storage::{Durability, FileOptions, FileStorage, Oid, Storage, Tid, TransactionMeta};

fn commit(s: &dyn Storage, oid: Oid, data: &[u8]) -> Tid {
    let base = s.load(oid, Tid::MAX).map(|r| r.tid).unwrap_or(Tid::ZERO);
    let mut t = s.begin(TransactionMeta::described("test")).unwrap();
    t.store(oid, base, data.to_vec()).unwrap();
    t.finish().unwrap()
}

fn newest(path: &Path, oid: Oid) -> Vec<u8> {
    let s = FileStorage::open(path, FileOptions::new().read_only(true)).unwrap();
    s.load(oid, Tid::MAX).unwrap().data
}

#[test]
fn backups_are_incremental_and_restore_any_point() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let backups = dir.path().join("backups");
    let s = FileStorage::open(&path, FileOptions::new().durability(Durability::Off)).unwrap();
    let oid = s.new_oid().unwrap();
    let t1 = commit(&s, oid, b"one");
    let first = backup(&path, &backups).unwrap().point.unwrap();
    assert_eq!((first.number, first.from, first.last_tid), (1, 0, t1));
    assert_eq!(backup(&path, &backups).unwrap().point, None, "nothing new");
    let t2 = commit(&s, oid, b"two");
    let t3 = commit(&s, oid, b"three");
    let second = backup(&path, &backups).unwrap();
    assert_eq!(second.transactions, 2);
    let second = second.point.unwrap();
    assert_eq!(
        (second.number, second.from, second.to, second.last_tid),
        (2, first.to, s.data_end(), t3)
    );
    assert_eq!(
        read_manifest(&backups).unwrap().unwrap().1,
        vec![first.clone(), second.clone()]
    );

    let latest = dir.path().join("latest.zdb");
    assert_eq!(restore(&backups, &latest, None).unwrap(), second);
    assert_eq!(newest(&latest, oid), b"three");
    let r = FileStorage::open(&latest, FileOptions::new().read_only(true)).unwrap();
    assert_eq!(
        r.history(oid, 10)
            .unwrap()
            .iter()
            .map(|h| h.tid)
            .collect::<Vec<_>>(),
        vec![t3, t2, t1]
    );
    let early = dir.path().join("early.zdb");
    restore(&backups, &early, Some(1)).unwrap();
    assert_eq!(newest(&early, oid), b"one");
    // The restored file is an ordinary data file: it opens for writing.
    let w = FileStorage::open(&early, FileOptions::new()).unwrap();
    assert_eq!(w.last_tid(), t1);
    commit(&w, oid, b"diverged");

    let err = restore(&backups, &latest, None).unwrap_err().to_string();
    assert!(err.contains("exists already"), "{err}");
    let err = restore(&backups, &dir.path().join("x.zdb"), Some(9))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no backup point 9"), "{err}");
}

#[test]
fn a_damaged_increment_is_refused_and_a_packed_file_needs_a_new_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let backups = dir.path().join("backups");
    let s = FileStorage::open(&path, FileOptions::new().durability(Durability::Off)).unwrap();
    let oid = s.new_oid().unwrap();
    commit(&s, oid, b"one");
    backup(&path, &backups).unwrap();
    commit(&s, oid, b"two");
    backup(&path, &backups).unwrap();
    let increment = backups.join("increment-000002");
    let mut bytes = std::fs::read(&increment).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&increment, bytes).unwrap();
    let out = dir.path().join("restored.zdb");
    let err = restore(&backups, &out, None).unwrap_err().to_string();
    assert!(err.contains("does not match its CRC"), "{err}");
    assert!(!out.exists());
    restore(&backups, &out, Some(1)).unwrap();
    assert_eq!(newest(&out, oid), b"one");

    s.pack(Tid::MAX, None).unwrap();
    let err = backup(&path, &backups).unwrap_err().to_string();
    assert!(err.contains("back it up into a new directory"), "{err}");
    assert!(
        backup(&path, &dir.path().join("after-pack"))
            .unwrap()
            .point
            .is_some()
    );
}

#[test]
fn a_backup_taken_while_a_writer_commits_restores_a_consistent_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let backups = dir.path().join("backups");
    let s = Arc::new(FileStorage::open(&path, FileOptions::new()).unwrap());
    let oid = s.new_oid().unwrap();
    commit(&*s, oid, b"0");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (s, stop) = (Arc::clone(&s), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut n = 1u32;
            while !stop.load(Ordering::Relaxed) {
                commit(&*s, oid, n.to_string().as_bytes());
                n += 1;
            }
        })
    };
    let mut points = vec![];
    for _ in 0..5 {
        std::thread::sleep(std::time::Duration::from_millis(15));
        if let Some(p) = backup(&path, &backups).unwrap().point {
            points.push(p);
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(points.len() >= 2, "{points:?}");
    for p in &points {
        let out = dir.path().join(format!("at-{}.zdb", p.number));
        restore(&backups, &out, Some(p.number)).unwrap();
        let r = FileStorage::open(&out, FileOptions::new().read_only(true)).unwrap();
        assert_eq!(r.last_tid(), p.last_tid);
        // The counter's history in the restored file is an unbroken prefix: 0, 1, 2, ...
        let history = r.history(oid, usize::MAX).unwrap();
        for (i, rev) in history.iter().rev().enumerate() {
            assert_eq!(
                r.load_revision(oid, rev.tid).unwrap(),
                i.to_string().into_bytes()
            );
        }
    }
}
