//! The in-memory index and the saved index.

use zodiac_storage::{Durability, FileOptions, FileStorage, Oid, Tid, TransactionMeta};

/// An oid first kept in the sparse part, then pulled into the dense part when the
/// dense part grows towards it, is still one object.
#[test]
fn object_count_survives_an_oid_moving_from_sparse_to_dense() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let s = FileStorage::open(&path, FileOptions::new().durability(Durability::Off)).unwrap();
    let far = Oid(3 << 20);
    let near = Oid(1 << 20);
    let meta = || TransactionMeta::described("copy");
    s.copy_transaction(Tid(10), meta(), far.0 + 1, vec![(far, b"a".to_vec())])
        .unwrap();
    s.copy_transaction(Tid(11), meta(), far.0 + 1, vec![(near, b"b".to_vec())])
        .unwrap();
    assert_eq!(s.object_count(), 2);
    s.copy_transaction(Tid(12), meta(), far.0 + 1, vec![(far, b"c".to_vec())])
        .unwrap();
    assert_eq!(s.object_count(), 2, "one object counted twice");
}

/// Saving the index is an optimisation: when the scan at open is long enough to
/// save it and the save fails (a full disk), the file still opens.
#[test]
fn a_failed_index_save_at_open_does_not_fail_the_open() {
    use std::sync::Arc;
    use zodiac_storage::Storage;
    use zodiac_storage::io::{FaultPlan, FaultPoint, FaultyIoFactory};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let s = FileStorage::open(&path, FileOptions::new().durability(Durability::Off)).unwrap();
    let mut t = s.begin(TransactionMeta::described("t")).unwrap();
    t.store(Oid::ROOT, Tid::ZERO, vec![7; 1000]).unwrap();
    let tid = t.finish().unwrap();
    drop(s);
    std::fs::remove_file(zodiac_storage::offline::index_path(&path)).unwrap();
    let faults = Arc::new(FaultyIoFactory::new());
    faults.arm(FaultPlan {
        point: FaultPoint::Write(1),
        errno: 28, // ENOSPC
        file_suffix: ".index-tmp".into(),
        torn_bytes: 0,
    });
    let s = FileStorage::open(
        &path,
        FileOptions::new()
            .io(faults.clone())
            .index_save_interval_bytes(100),
    )
    .expect("the index could not be saved, but the data file is fine");
    assert_eq!(s.load(Oid::ROOT, Tid::MAX).unwrap().tid, tid);
}

/// Oids handed out after the index was last saved are still never handed out again
/// after a clean close and reopen, even when no transaction was committed since.
#[test]
fn oids_allocated_after_the_last_index_save_survive_a_clean_close() {
    use zodiac_storage::Storage;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let unused;
    {
        let s = FileStorage::open(&path, FileOptions::new().durability(Durability::Off)).unwrap();
        let a = s.new_oid().unwrap();
        let mut t = s.begin(TransactionMeta::described("t")).unwrap();
        t.store(a, Tid::ZERO, b"a".to_vec()).unwrap();
        t.finish().unwrap();
        s.save_index().unwrap();
        unused = s.new_oid().unwrap();
        s.close().unwrap();
    }
    let s = FileStorage::open(&path, FileOptions::new().durability(Durability::Off)).unwrap();
    let next = s.new_oid().unwrap();
    assert!(
        next > unused,
        "oid {unused} was handed out before the close and again ({next}) after it"
    );
}

/// index.rs promises that a damaged or hostile file cannot make the index allocate
/// memory out of proportion to the records it holds. Oids that each lie just within
/// the dense part's growth reach double it per record: k records cost 2^k MiB.
#[test]
fn a_few_far_apart_oids_do_not_grow_the_index_exponentially() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let s = FileStorage::open(&path, FileOptions::new().durability(Durability::Off)).unwrap();
    let mut oid = 0u64;
    for k in 1..=4u64 {
        oid = 2 * oid + (1 << 20);
        s.copy_transaction(
            Tid(k),
            TransactionMeta::described("copy"),
            oid + 1,
            vec![(Oid(oid), b"x".to_vec())],
        )
        .unwrap();
    }
    assert_eq!(s.object_count(), 4);
    assert!(
        s.index_memory_bytes() < 32 << 20,
        "4 objects take {} bytes of index",
        s.index_memory_bytes()
    );
}
