//! Close while commits are in the group-commit pipeline.

use std::sync::Arc;
use std::time::Duration;

use zodiac_storage::io::FaultyIoFactory;
use zodiac_storage::{Durability, FileOptions, FileStorage, Oid, Storage, Tid, TransactionMeta};

fn write(s: &dyn Storage, oid: Oid, bytes: &[u8]) -> Tid {
    let mut t = s.begin(TransactionMeta::described("test")).unwrap();
    let base = s.load(oid, Tid::MAX).map(|r| r.tid).unwrap_or(Tid::ZERO);
    t.store(oid, base, bytes.to_vec()).unwrap();
    t.finish().unwrap()
}

/// A transaction finished (staged) before close must be written before close
/// releases the writer lock: afterwards another writer may own the file.
#[test]
fn a_commit_staged_before_close_is_not_written_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let faults = Arc::new(FaultyIoFactory::new());
    let a = Arc::new(
        FileStorage::open(
            &path,
            FileOptions::new()
                .io(faults.clone())
                .group_commit_wait(Duration::from_millis(1500)),
        )
        .unwrap(),
    );
    // One slow sync, so the next leader gathers committers for a while.
    faults.set_sync_delay(Duration::from_millis(1500));
    write(&*a, Oid::ROOT, b"first");
    faults.set_sync_delay(Duration::ZERO);
    // A transaction begun and not yet finished keeps the leader gathering.
    let idle = a.begin(TransactionMeta::described("idle")).unwrap();
    let committer = {
        let a = Arc::clone(&a);
        std::thread::spawn(move || {
            let mut t = a.begin(TransactionMeta::described("late")).unwrap();
            let base = a.load(Oid::ROOT, Tid::MAX).unwrap().tid;
            t.store(Oid::ROOT, base, b"from the first writer".to_vec())
                .unwrap();
            t.finish()
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    a.close().unwrap();
    // The writer lock is free: a second writer takes the file and commits.
    let b = FileStorage::open(&path, FileOptions::new().durability(Durability::Off)).unwrap();
    let acknowledged = write(&b, Oid::ROOT, b"from the second writer");
    b.sync().unwrap();
    let _ = committer.join().unwrap();
    drop(idle);
    drop(b);
    drop(a);
    let c = FileStorage::open(&path, FileOptions::new()).unwrap();
    let r = c.load(Oid::ROOT, Tid::MAX).unwrap();
    assert_eq!(
        (r.tid, r.data.as_slice()),
        (acknowledged, &b"from the second writer"[..]),
        "the second writer's acknowledged commit was overwritten"
    );
}
