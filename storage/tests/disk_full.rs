//! A full disk, holes in the data file, and a saved index that is only a cache.
//!
//! The tmpfs cases mount a small tmpfs (root only); where mounting is not
//! permitted they say so and the hole cases still run on the normal file system.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{FallocateFlags, SeekFrom, fallocate, seek};
use zodiac_storage::io::{FaultPlan, FaultPoint, FaultyIoFactory};
use zodiac_storage::offline::{index_path, verify};
use zodiac_storage::{
    Durability, Error, FileOptions, FileStorage, Oid, Storage, Tid, TransactionMeta,
};

fn fast() -> FileOptions {
    FileOptions::new().durability(Durability::Off)
}

/// A small tmpfs mounted in a temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// None (and a line saying the case is skipped) when mounting is not permitted.
    fn mount(size_bytes: u64, case: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_bytes}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!(
                "skipping the full-tmpfs part of {case}: mounting a tmpfs is not permitted here"
            );
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system: writes a filler file until ENOSPC.
    fn fill(&self) -> PathBuf {
        let filler = self.path().join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        for chunk in [1 << 20, 4096, 1] {
            let zeros = vec![0u8; chunk];
            while f.write_all(&zeros).is_ok() {}
        }
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A closed database at `path` with `n` transactions, each writing a new object
/// of 200 bytes; returns the oids and the end of the data.
fn database(path: &Path, n: usize) -> (Vec<Oid>, u64) {
    let s = FileStorage::open(path, fast()).unwrap();
    let mut oids = vec![];
    for i in 0..n {
        let oid = s.new_oid().unwrap();
        let mut t = s.begin(TransactionMeta::described("test")).unwrap();
        t.store(oid, Tid::ZERO, payload(i)).unwrap();
        t.finish().unwrap();
        oids.push(oid);
    }
    let end = s.data_end();
    s.close().unwrap();
    (oids, end)
}

fn payload(i: usize) -> Vec<u8> {
    format!("object {i} ").into_bytes().repeat(40)[..200].to_vec()
}

fn extend_with_hole(path: &Path, bytes: u64) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len + bytes).unwrap();
}

fn punch_hole(path: &Path, offset: u64, len: u64) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    fallocate(
        &f,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        offset,
        len,
    )
    .unwrap();
}

/// The first hole at or after `from` (the file's length when there is none).
fn first_hole(path: &Path, from: u64) -> u64 {
    let f = std::fs::File::open(path).unwrap();
    seek(&f, SeekFrom::Hole(from)).unwrap()
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

fn assert_all_loadable(s: &FileStorage, oids: &[Oid]) {
    for (i, oid) in oids.iter().enumerate() {
        assert_eq!(s.load(*oid, Tid::MAX).unwrap().data, payload(i), "{oid}");
    }
}

/// Checks every open mode on a file ending in a hole: each one reads all data.
fn check_trailing_hole(path: &Path, oids: &[Oid], end: u64) {
    let s = FileStorage::open(path, fast().read_only(true)).unwrap();
    assert_all_loadable(&s, oids);
    drop(s);
    let report = verify(path).unwrap();
    assert_eq!(report.data_end, end);
    assert!(report.damage.is_empty(), "{report:?}");
    let s = FileStorage::open(path, fast()).unwrap();
    assert_all_loadable(&s, oids);
    assert!(
        first_hole(path, 48) >= file_len(path),
        "the writable open left the hole in place"
    );
}

/// Checks the open modes on a file with a hole at `hole` followed by data.
fn check_hole_before_data(path: &Path, hole: std::ops::Range<u64>) {
    let range = format!("{}..{}", hole.start, hole.end);
    let err = FileStorage::open(path, fast().read_only(true))
        .err()
        .expect("a read-only open of a file with a hole before data");
    assert!(
        matches!(err, Error::Format { .. }) && err.to_string().contains(&range),
        "{err}"
    );
    let err = verify(path).unwrap_err();
    assert!(err.to_string().contains(&range), "{err}");
}

/// The story: the server filled a tmpfs, and a large append had extended the file
/// with `set_len` before its write failed, leaving a hole. `verify`, `tail`, `jobs
/// status` and the restarted server then died of SIGBUS, without a message: a read
/// fault of a hole through the map must allocate a page, which a full tmpfs cannot.
/// Now no map covers a hole: a hole at the end is the end of the file, one before
/// data is filled by a writable open or refused with its range, and a failed write
/// or allocation says "disk full".
#[test]
fn on_a_full_tmpfs_files_with_holes_open_or_fail_with_a_message() {
    let Some(fs) = Tmpfs::mount(24 << 20, "this test") else {
        return;
    };
    let trailing = fs.path().join("trailing.zdb");
    let (oids, end) = database(&trailing, 100);
    extend_with_hole(&trailing, 8 << 20);
    let middle = fs.path().join("middle.zdb");
    database(&middle, 100);
    punch_hole(&middle, 8192, 4096);
    let filler = fs.fill();

    check_trailing_hole(&trailing, &oids, end);
    let s = FileStorage::open(&trailing, fast()).unwrap();
    // Larger than the preallocated space: appended directly, and the disk is full.
    let big = s.new_oid().unwrap();
    let mut t = s.begin(TransactionMeta::described("big")).unwrap();
    t.store(big, Tid::ZERO, vec![7; 6 << 20]).unwrap();
    let err = t.finish().unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::DiskFull { .. }), "{err}");
    assert!(
        text.contains("disk full") && text.contains("free space"),
        "{text}"
    );
    let later = s.begin(TransactionMeta::default()).err().unwrap();
    assert!(later.to_string().contains("disk full"), "{later}");
    drop(s);
    assert_eq!(
        first_hole(&trailing, 48),
        file_len(&trailing),
        "the failed append left a hole"
    );
    let s = FileStorage::open(&trailing, fast().read_only(true)).unwrap();
    assert_all_loadable(&s, &oids);
    assert!(s.load(big, Tid::MAX).is_err());
    drop(s);

    check_hole_before_data(&middle, 8192..12288);
    let err = FileStorage::open(&middle, fast()).err().unwrap();
    assert!(
        matches!(err, Error::DiskFull { .. }) && err.to_string().contains("hole"),
        "{err}"
    );
    std::fs::remove_file(filler).unwrap();
    // With space, the writable open fills the hole; the zeros are damage in the
    // middle of the records, which the open reports.
    let err = FileStorage::open(&middle, fast()).err().unwrap();
    assert!(matches!(err, Error::Corrupted { .. }), "{err}");
    assert_eq!(first_hole(&middle, 48), file_len(&middle));
}

/// The same holes on the normal file system: no signal is possible there, but
/// each open mode must still treat them the same way.
#[test]
fn holes_are_the_end_of_the_file_or_refused_with_their_range() {
    let dir = tempfile::tempdir().unwrap();
    let trailing = dir.path().join("trailing.zdb");
    let (oids, end) = database(&trailing, 100);
    extend_with_hole(&trailing, 8 << 20);
    let before = file_len(&trailing);
    check_trailing_hole(&trailing, &oids, end);
    assert!(file_len(&trailing) < before);

    // A hole among the zeros preallocated after the data (as a power cut can leave
    // them) is the end of the data too: only zeros follow it.
    let zeros = dir.path().join("zeros.zdb");
    let (oids, end) = database(&zeros, 100);
    let hole_at = end.next_multiple_of(4096) + (64 << 10);
    assert!(hole_at + (64 << 10) < file_len(&zeros));
    punch_hole(&zeros, hole_at, 64 << 10);
    check_trailing_hole(&zeros, &oids, end);

    let middle = dir.path().join("middle.zdb");
    database(&middle, 100);
    punch_hole(&middle, 8192, 4096);
    check_hole_before_data(&middle, 8192..12288);
    let err = FileStorage::open(&middle, fast()).err().unwrap();
    assert!(matches!(err, Error::Corrupted { .. }), "{err}");
    // Filled with written zeros: every later open reads the same bytes.
    assert_eq!(first_hole(&middle, 48), file_len(&middle));
    let err = FileStorage::open(&middle, fast().read_only(true))
        .err()
        .unwrap();
    assert!(matches!(err, Error::Corrupted { .. }), "{err}");
}

/// The story: an embedded `zodiac jobs put` on a full disk exited 1 ("saving the
/// index failed: No space left on device") although its commit was durable and the
/// job was PENDING, so the user's retry queued it twice. The saved index is a
/// cache: failing to save it at close is a warning, and the storage stays usable.
#[test]
fn a_failed_index_save_at_close_is_a_warning_not_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let faults = Arc::new(FaultyIoFactory::new());
    let s = FileStorage::open(&path, FileOptions::new().io(faults.clone())).unwrap();
    let oid = s.new_oid().unwrap();
    let mut t = s.begin(TransactionMeta::described("put")).unwrap();
    t.store(oid, Tid::ZERO, b"job".to_vec()).unwrap();
    let tid = t.finish().unwrap();
    faults.arm(FaultPlan {
        point: FaultPoint::Write(1),
        errno: 28, // ENOSPC
        file_suffix: ".index-tmp".into(),
        torn_bytes: 3,
    });
    // An explicit save reports the failure, and the storage stays usable.
    assert!(s.save_index().is_err());
    assert!(
        !dir.path().join("data.zdb.index-tmp").exists(),
        "the partial index copy still takes space"
    );
    let mut t = s.begin(TransactionMeta::described("after")).unwrap();
    t.store(oid, tid, b"job, updated".to_vec()).unwrap();
    let tid = t.finish().unwrap();
    faults.arm(FaultPlan {
        point: FaultPoint::Write(1),
        errno: 28,
        file_suffix: ".index-tmp".into(),
        torn_bytes: 0,
    });
    s.close()
        .expect("the data is durable: a failed index save is no failure of the close");
    assert!(!index_path(&path).exists());
    let s = FileStorage::open(&path, fast().read_only(true)).unwrap();
    assert_eq!(s.load(oid, Tid::MAX).unwrap().tid, tid);
}

/// The story: a 0-byte data file beside its saved index (a failed copy, a wrong
/// restore) started a fresh empty database and the close overwrote the index, the
/// last trace of the old one. A writable open now refuses, naming both files.
#[test]
fn a_missing_or_empty_data_file_beside_its_index_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    database(&path, 3);
    let ipath = index_path(&path);
    let index = std::fs::read(&ipath).unwrap();
    for empty in [true, false] {
        if empty {
            std::fs::write(&path, b"").unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
        let err = FileStorage::open(&path, fast()).err().unwrap();
        let text = err.to_string();
        for needed in [
            path.display().to_string(),
            ipath.display().to_string(),
            "backup".into(),
            "remove".into(),
        ] {
            assert!(text.contains(&needed), "{needed:?} missing from: {text}");
        }
        assert_eq!(std::fs::read(&ipath).unwrap(), index, "the index changed");
        assert_eq!(
            path.exists(),
            empty,
            "the refused open created the data file"
        );
        if empty {
            assert_eq!(file_len(&path), 0);
        }
    }
    // Removing the index, as the error says, starts a new database.
    std::fs::remove_file(&ipath).unwrap();
    let s = FileStorage::open(&path, fast()).unwrap();
    assert_eq!(s.object_count(), 0);
}

/// Rewrites the saved index of `path` with `change` applied to its dense entries
/// (entry `i`: the offset of oid `i`'s newest revision), with a right checksum.
fn edit_saved_index(path: &Path, change: impl FnOnce(&mut Vec<u64>)) {
    let ipath = index_path(path);
    let mut b = std::fs::read(&ipath).unwrap();
    let dense = u64::from_le_bytes(b[48..56].try_into().unwrap()) as usize;
    let mut entries: Vec<u64> = (0..dense)
        .map(|i| u64::from_le_bytes(b[64 + 8 * i..72 + 8 * i].try_into().unwrap()))
        .collect();
    change(&mut entries);
    for (i, e) in entries.iter().enumerate() {
        b[64 + 8 * i..72 + 8 * i].copy_from_slice(&e.to_le_bytes());
    }
    let body = b.len() - 4;
    let crc = crc32fast::hash(&b[..body]);
    b[body..].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&ipath, b).unwrap();
}

fn dense_entry(path: &Path, oid: Oid) -> u64 {
    let b = std::fs::read(index_path(path)).unwrap();
    let at = 64 + 8 * oid.0 as usize;
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The story: a saved index with a right checksum but a wrong entry was trusted,
/// since only 16 sampled entries were checked; the object's loads failed. An index
/// of up to 256 entries now has every entry checked at open, and an index failing a
/// check is rebuilt.
#[test]
fn a_saved_index_with_one_wrong_entry_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let (oids, _) = database(&path, 300);
    // 300 entries: the old sample checked every 18th; entry 7 was never checked.
    let other = dense_entry(&path, oids[8]);
    edit_saved_index(&path, |e| e[oids[7].0 as usize] = other);
    let s = FileStorage::open(&path, fast()).unwrap();
    assert_all_loadable(&s, &oids);
}

/// Past 256 entries the open reads a sample of the entries' records (reading every
/// one made opens of large files several times slower): a wrong entry outside the
/// sample must then fail its object's load as damage, never return another
/// object's data. Tried for every one of 60 entries, so both outcomes occur.
#[test]
fn a_wrong_entry_outside_the_sample_fails_its_load_never_returns_wrong_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let (oids, _) = database(&path, 1000);
    let pristine = std::fs::read(index_path(&path)).unwrap();
    let (mut rebuilt, mut refused) = (0, 0);
    for i in 100..160 {
        std::fs::write(index_path(&path), &pristine).unwrap();
        // Another object's later revision: the tail check's "no newer revision"
        // cannot tell it from the right one.
        let other = dense_entry(&path, oids[i + 1]);
        edit_saved_index(&path, |e| e[oids[i].0 as usize] = other);
        let s = FileStorage::open(&path, fast().read_only(true)).unwrap();
        match s.load(oids[i], Tid::MAX) {
            Ok(r) => {
                assert_eq!(r.data, payload(i), "entry {i}: wrong data returned");
                rebuilt += 1;
            }
            Err(e) => {
                assert!(
                    matches!(e, zodiac_storage::Error::Corrupted { .. }),
                    "entry {i}: expected damage, got {e}"
                );
                refused += 1;
            }
        }
    }
    assert!(
        rebuilt > 0 && refused > 0,
        "both the sampled and the unsampled case must occur ({rebuilt} rebuilt, {refused} refused)"
    );
}

/// The story: a saved index whose entry still named an older revision of an object
/// updated since (a stale entry): the open trusted it, loads showed the old
/// revision, and the next commit built on it, losing the newer one. An entry of an
/// older revision is a record of its object like the right one, so the open reads
/// the transactions of the last MiB before the index's end for newer revisions;
/// older ones only `zodiac verify` finds (see docs/format.md).
#[test]
fn a_saved_index_missing_a_recent_revision_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let (oids, _) = database(&path, 300);
    let stale = oids[100];
    let old_entry = dense_entry(&path, stale);
    let s = FileStorage::open(&path, fast()).unwrap();
    let base = s.load(stale, Tid::MAX).unwrap().tid;
    let mut t = s.begin(TransactionMeta::described("update")).unwrap();
    t.store(stale, base, b"newer".to_vec()).unwrap();
    let newer = t.finish().unwrap();
    s.close().unwrap();
    assert_ne!(dense_entry(&path, stale), old_entry);
    edit_saved_index(&path, |e| e[stale.0 as usize] = old_entry);
    let s = FileStorage::open(&path, fast()).unwrap();
    let r = s.load(stale, Tid::MAX).unwrap();
    assert_eq!((r.tid, r.data), (newer, b"newer".to_vec()));
}

/// The limit of the open's check (docs/format.md, "Saved index"): an entry naming
/// an older revision of its own object, updated before the last MiB the open reads
/// whole, is a record of that object like the right one. `zodiac verify` compares
/// every entry with a full scan and names it.
#[test]
fn an_older_revision_beyond_the_checked_tail_is_found_by_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let (oids, _) = database(&path, 10);
    let stale = oids[3];
    let old_entry = dense_entry(&path, stale);
    let s = FileStorage::open(&path, fast()).unwrap();
    let base = s.load(stale, Tid::MAX).unwrap().tid;
    let mut t = s.begin(TransactionMeta::described("update")).unwrap();
    t.store(stale, base, b"newer".to_vec()).unwrap();
    t.finish().unwrap();
    for _ in 0..20 {
        let mut t = s.begin(TransactionMeta::described("later")).unwrap();
        t.store(s.new_oid().unwrap(), Tid::ZERO, vec![5; 64 << 10])
            .unwrap();
        t.finish().unwrap();
    }
    s.close().unwrap();
    edit_saved_index(&path, |e| e[stale.0 as usize] = old_entry);
    let report = verify(&path).unwrap();
    let problems = report.index.expect("the saved index was checked").problems;
    assert!(
        problems.iter().any(|p| p.contains(&stale.to_string())),
        "{problems:?}"
    );
}
