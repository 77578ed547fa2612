//! What a power cut can leave on disk, beyond a torn prefix of the last write.

use std::os::unix::fs::FileExt;

use zodiac_storage::{Durability, FileOptions, FileStorage, Oid, Storage, Tid, TransactionMeta};

fn write(s: &dyn Storage, oid: Oid, bytes: &[u8]) -> Tid {
    let mut t = s.begin(TransactionMeta::described("test")).unwrap();
    let base = s.load(oid, Tid::MAX).map(|r| r.tid).unwrap_or(Tid::ZERO);
    t.store(oid, base, bytes.to_vec()).unwrap();
    t.finish().unwrap()
}

/// A group-commit leader writes several transactions with one pwrite and then
/// syncs. Before the sync returns, the kernel may have written back any subset of
/// the pages: here the page holding the first transaction's header is lost and the
/// rest of the group reached the disk. None of the group was acknowledged, so the
/// file must open with every acknowledged commit.
#[test]
fn a_group_whose_first_page_was_lost_in_a_power_cut_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let s = FileStorage::open(&path, FileOptions::new()).unwrap();
    let acknowledged = write(&s, Oid::ROOT, b"acknowledged");
    let group_start = s.data_end();
    drop(s);
    let s = FileStorage::open(&path, FileOptions::new().durability(Durability::Off)).unwrap();
    write(&s, Oid::ROOT, &[1; 5000]);
    write(&s, Oid::ROOT, &[2; 100]);
    drop(s);
    // The crash: no saved index for the group, and its first page never written.
    std::fs::remove_file(zodiac_storage::offline::index_path(&path)).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let page_end = (group_start / 4096 + 1) * 4096;
    f.write_all_at(&vec![0u8; (page_end - group_start) as usize], group_start)
        .unwrap();
    drop(f);
    let s = FileStorage::open(&path, FileOptions::new())
        .expect("a file a power cut left behind must open");
    let r = s.load(Oid::ROOT, Tid::MAX).unwrap();
    assert_eq!(
        (r.tid, r.data.as_slice()),
        (acknowledged, &b"acknowledged"[..])
    );
}
