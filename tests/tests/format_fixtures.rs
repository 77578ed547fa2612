//! Data files of each format version, committed under `tests/fixtures/`, opened and
//! compared byte for byte with what they hold: an accidental format change fails
//! here. A format change must bump the version and keep these files readable.
//!
//! The files were written by `write_v1_fixtures` (run with `--ignored` only to create
//! the fixtures of a new version; tids and file ids are new each time).

use std::path::{Path, PathBuf};

use zodiac_storage::file::format::FORMAT_VERSION;
use zodiac_storage::{
    Durability, Error, FileOptions, FileStorage, Oid, Storage, Tid, TransactionMeta,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/v1")
        .join(name)
}

/// A writable copy of a fixture in a fresh directory (a writable open may cut a tail).
fn copy_of(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::copy(fixture(name), &path).unwrap();
    (dir, path)
}

/// The tids `basic.zdb` was written with.
const BASIC_TIDS: [Tid; 3] = [
    Tid(1_795_532_263_251_273),
    Tid(1_795_532_263_257_252),
    Tid(1_795_532_263_257_264),
];

fn assert_basic_contents(s: &FileStorage) {
    assert_eq!(s.format_version(), 1);
    assert_eq!(s.last_tid(), BASIC_TIDS[2]);
    assert_eq!(s.load(Oid::ROOT, Tid::MAX).unwrap().data, b"root v2");
    assert_eq!(s.load(Oid::ROOT, BASIC_TIDS[1]).unwrap().data, b"root v1");
    assert_eq!(s.load(Oid(1), Tid::MAX).unwrap().data, b"first object");
    assert_eq!(s.load(Oid(2), Tid::MAX).unwrap().data, vec![0xAB; 300]);
    let txns: Vec<_> = s
        .transactions(Tid::ZERO, Tid::MAX)
        .unwrap()
        .map(|t| t.unwrap())
        .collect();
    assert_eq!(txns.iter().map(|t| t.tid).collect::<Vec<_>>(), BASIC_TIDS);
    assert_eq!(txns[0].meta.user, "alice");
    assert_eq!(txns[0].meta.description, "create");
    assert_eq!(txns[0].meta.extension["app"], b"fixture");
    assert_eq!(txns[2].meta.description, "update root");
    assert!(
        s.new_oid().unwrap() > Oid(3),
        "oid 3 was allocated and must not come back"
    );
}

#[test]
fn version_1_basic_file_reads_exactly() {
    assert_eq!(
        FORMAT_VERSION, 1,
        "a new format version needs its own fixtures"
    );
    let s = FileStorage::open(fixture("basic.zdb"), FileOptions::new().read_only(true)).unwrap();
    assert_basic_contents(&s);
    let (_dir, path) = copy_of("basic.zdb");
    let s = FileStorage::open(&path, FileOptions::new()).unwrap();
    assert_basic_contents(&s);
}

#[test]
fn version_1_torn_tail_is_cut_at_its_offset() {
    let (_dir, path) = copy_of("torn-tail.zdb");
    let bytes = std::fs::read(&path).unwrap();
    let basic_len = std::fs::metadata(fixture("basic.zdb")).unwrap().len();
    let s = FileStorage::open(&path, FileOptions::new()).unwrap();
    assert_basic_contents(&s);
    let tail = PathBuf::from(format!("{}.tail-{basic_len}", path.display()));
    assert_eq!(std::fs::read(tail).unwrap(), bytes[basic_len as usize..]);
}

#[test]
fn version_1_damage_in_the_middle_is_refused_exactly() {
    let (_dir, path) = copy_of("damaged-middle.zdb");
    let err = FileStorage::open(&path, FileOptions::new()).err().unwrap();
    let Error::Corrupted { offset, what, .. } = &err else {
        panic!("expected Corrupted, got {err}");
    };
    assert_eq!(*offset, 48);
    assert!(what.starts_with("transaction checksum mismatch"), "{what}");
    assert!(err.to_string().contains("zodiac verify"), "{err}");
}

/// Writes the version-1 fixtures. Their tids are the commit times of the day they
/// were written, pasted into `BASIC_TIDS`.
#[test]
#[ignore]
fn write_v1_fixtures() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/v1");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("basic.zdb");
    let _ = std::fs::remove_file(&path);
    let s = FileStorage::open(&path, FileOptions::new().durability(Durability::Off)).unwrap();
    let (a, b, c) = (
        s.new_oid().unwrap(),
        s.new_oid().unwrap(),
        s.new_oid().unwrap(),
    );
    assert_eq!((a, b, c), (Oid(1), Oid(2), Oid(3)));
    let mut meta = TransactionMeta::described("create");
    meta.user = "alice".into();
    meta.extension.insert("app".into(), b"fixture".to_vec());
    let mut t = s.begin(meta).unwrap();
    t.store(Oid::ROOT, Tid::ZERO, b"root v1".to_vec()).unwrap();
    t.store(a, Tid::ZERO, b"first object".to_vec()).unwrap();
    let t1 = t.finish().unwrap();
    let mut t = s
        .begin(TransactionMeta::described("second object"))
        .unwrap();
    t.store(b, Tid::ZERO, vec![0xAB; 300]).unwrap();
    let t2 = t.finish().unwrap();
    let mut t = s.begin(TransactionMeta::described("update root")).unwrap();
    t.store(Oid::ROOT, t1, b"root v2".to_vec()).unwrap();
    let t3 = t.finish().unwrap();
    let end = s.data_end();
    drop(s);
    let _ = std::fs::remove_file(dir.join("basic.zdb.index"));
    let _ = std::fs::remove_file(dir.join("basic.zdb.lock"));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(end as usize);
    std::fs::write(&path, &bytes).unwrap();
    println!("BASIC_TIDS = [Tid({}), Tid({}), Tid({})]", t1.0, t2.0, t3.0);
    // A torn copy: half of a fourth transaction after the end.
    let mut torn = bytes.clone();
    torn.extend_from_slice(b"ZTXNC\0\0\0\xff\x01\0\0\0\0\0\0half a transaction");
    std::fs::write(dir.join("torn-tail.zdb"), torn).unwrap();
    // Damage in the first transaction's data.
    let mut damaged = bytes;
    damaged[48 + 60] ^= 0x10;
    std::fs::write(dir.join("damaged-middle.zdb"), damaged).unwrap();
}
