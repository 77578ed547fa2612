//! Hostile or damaged files must give errors, never panics or runaway work.

use zodiac_storage::format::{FORMAT_VERSION, FileHeader};
use zodiac_storage::{Durability, FileOptions, FileStorage, Oid, Storage, Tid, TransactionMeta};

/// A header whose data start lies far beyond the end of the file (a writer always
/// sizes a new file to its data start) is damage: opening must refuse it rather
/// than let the first commit overflow the offset arithmetic or zero-fill up to it.
#[test]
fn a_data_start_beyond_the_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let header = FileHeader {
        version: FORMAT_VERSION,
        file_id: 42,
        data_start: u64::MAX - 100,
    };
    std::fs::write(&path, header.encode()).unwrap();
    let opened = FileStorage::open(&path, FileOptions::new().durability(Durability::Off));
    let Ok(s) = opened else {
        return;
    };
    let committed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut t = s.begin(TransactionMeta::described("t")).unwrap();
        t.store(Oid::ROOT, Tid::ZERO, b"x".to_vec()).unwrap();
        t.finish().map(|_| ())
    }));
    assert!(
        committed.is_ok(),
        "the file opened and its first commit panicked"
    );
}

/// A file whose last tid is the largest tid (a copied or hostile history) refuses
/// further commits with an error; it must not panic while holding the commit lock.
#[test]
fn a_commit_after_the_largest_tid_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let s = FileStorage::open(&path, FileOptions::new().durability(Durability::Off)).unwrap();
    s.copy_transaction(
        Tid::MAX,
        TransactionMeta::described("copied"),
        1,
        vec![(Oid::ROOT, b"old".to_vec())],
    )
    .unwrap();
    let committed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut t = s.begin(TransactionMeta::described("t")).unwrap();
        t.store(Oid::ROOT, Tid::MAX, b"new".to_vec()).unwrap();
        t.finish().map(|_| ())
    }));
    assert!(
        matches!(committed, Ok(Err(_))),
        "expected an error, got a panic or a commit"
    );
    // The storage still works for reads.
    assert_eq!(s.load(Oid::ROOT, Tid::MAX).unwrap().data, b"old");
}

/// A walk over transactions that meets zeroed bytes in the middle of the file (damage
/// the open did not scan, since the saved index covered it) reports the damage once
/// and ends: `count()` and loops that log and continue must not spin forever.
#[test]
fn a_transaction_walk_meeting_zeroed_bytes_ends() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let s = FileStorage::open(&path, FileOptions::new().durability(Durability::Off)).unwrap();
    let mut ends = Vec::new();
    for i in 0..3u8 {
        let mut t = s.begin(TransactionMeta::described("t")).unwrap();
        let base = s
            .load(Oid::ROOT, Tid::MAX)
            .map(|r| r.tid)
            .unwrap_or(Tid::ZERO);
        t.store(Oid::ROOT, base, vec![i; 100]).unwrap();
        t.finish().unwrap();
        ends.push(s.data_end());
    }
    // Over a MiB of later transactions: the open reads the last MiB the saved index
    // covers whole, and would find the damage there.
    for _ in 0..20 {
        let mut t = s.begin(TransactionMeta::described("later")).unwrap();
        t.store(s.new_oid().unwrap(), Tid::ZERO, vec![9; 64 << 10])
            .unwrap();
        t.finish().unwrap();
    }
    drop(s);
    // Zero the second transaction's header; the saved index covers the whole file.
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[0u8; 48], ends[0]).unwrap();
    drop(f);
    let s = FileStorage::open(&path, FileOptions::new().durability(Durability::Off)).unwrap();
    let items: Vec<_> = s
        .transactions(Tid::ZERO, Tid::MAX)
        .unwrap()
        .take(10)
        .collect();
    let errors = items.iter().filter(|r| r.is_err()).count();
    assert!(
        errors <= 1,
        "the walk repeated the same error {errors} times of {} items",
        items.len()
    );
}

/// An oid mark at the top of the oid space (copied from another file) must not make
/// the allocator wrap around and hand out the root or any oid twice.
#[test]
fn the_oid_allocator_never_wraps_around() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let s = FileStorage::open(&path, FileOptions::new().durability(Durability::Off)).unwrap();
    s.copy_transaction(
        Tid(5),
        TransactionMeta::described("copied"),
        u64::MAX,
        vec![(Oid::ROOT, b"root".to_vec())],
    )
    .unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        if let Ok(oid) = s.new_oid() {
            assert!(
                oid != Oid::ROOT && !seen.contains(&oid),
                "handed out {oid} after {seen:?}"
            );
            seen.push(oid);
        }
    }
}
