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
