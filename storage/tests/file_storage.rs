//! File-storage behaviour that the shared contract suite cannot see: reopening,
//! the saved index, crash recovery of the tail (S2), mid-file damage (S3),
//! injected I/O failures (S4), the writer lock (S7), 64-bit offsets, and
//! detection of the file being replaced under a running storage.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use zodiac_storage::io::{FaultPlan, FaultPoint, FaultyIoFactory};
use zodiac_storage::offline::{index_path, lock_path};
use zodiac_storage::{
    Durability, Error, FileOptions, FileStorage, Oid, Storage, Tid, TransactionMeta,
};

const EIO: i32 = 5;
const ENOSPC: i32 = 28;

fn fast() -> FileOptions {
    FileOptions::new().durability(Durability::Off)
}

fn commit(s: &dyn Storage, writes: &[(Oid, &[u8])]) -> Tid {
    let mut t = s.begin(TransactionMeta::described("test")).unwrap();
    for (oid, data) in writes {
        let base = s.load(*oid, Tid::MAX).map(|r| r.tid).unwrap_or(Tid::ZERO);
        t.store(*oid, base, data.to_vec()).unwrap();
    }
    t.finish().unwrap()
}

/// A closed file with three transactions, each writing one new object.
struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    oids: Vec<Oid>,
    tids: Vec<Tid>,
    /// Offset of each transaction record.
    starts: Vec<u64>,
    end: u64,
}

fn three_transactions(options: FileOptions) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let s = FileStorage::open(&path, options).unwrap();
    let oids: Vec<Oid> = (0..3).map(|_| s.new_oid().unwrap()).collect();
    let mut tids = vec![];
    let mut starts = vec![];
    for (i, oid) in oids.iter().enumerate() {
        starts.push(s.data_end());
        let data = format!("revision {i} of object {oid} with some payload").into_bytes();
        tids.push(commit(&s, &[(*oid, &data)]));
    }
    let end = s.data_end();
    s.close().unwrap();
    Fixture {
        _dir: dir,
        path,
        oids,
        tids,
        starts,
        end,
    }
}

fn tail_files(path: &Path) -> Vec<PathBuf> {
    let prefix = format!("{}.tail-", path.file_name().unwrap().to_string_lossy());
    let mut v: Vec<PathBuf> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&prefix)
        })
        .collect();
    v.sort();
    v
}

fn assert_first_two_intact(f: &Fixture, s: &FileStorage) {
    assert_eq!(s.last_tid(), f.tids[1]);
    for i in 0..2 {
        let r = s.load(f.oids[i], Tid::MAX).unwrap();
        assert_eq!(r.tid, f.tids[i]);
        let expected = format!("revision {i} of object {} with some payload", f.oids[i]);
        assert_eq!(r.data, expected.into_bytes());
    }
    assert!(matches!(
        s.load(f.oids[2], Tid::MAX),
        Err(Error::NoSuchObject { .. })
    ));
    assert_eq!(s.transactions(Tid::ZERO, Tid::MAX).unwrap().count(), 2);
}

#[test]
fn reopen_gives_the_same_state_with_and_without_the_saved_index() {
    let f = three_transactions(fast());
    assert!(index_path(&f.path).exists(), "close saves the index");
    for with_index in [true, false] {
        if !with_index {
            std::fs::remove_file(index_path(&f.path)).unwrap();
        }
        let s = FileStorage::open(&f.path, fast()).unwrap();
        assert_eq!(s.last_tid(), f.tids[2]);
        assert_eq!(s.data_end(), f.end);
        for (i, oid) in f.oids.iter().enumerate() {
            assert_eq!(s.load(*oid, Tid::MAX).unwrap().tid, f.tids[i]);
        }
        let txns: Vec<_> = s
            .transactions(Tid::ZERO, Tid::MAX)
            .unwrap()
            .map(|t| t.unwrap().tid)
            .collect();
        assert_eq!(txns, f.tids);
        assert!(s.new_oid().unwrap() > f.oids[2]);
    }
}

#[test]
fn the_index_is_saved_periodically_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let s = FileStorage::open(&path, fast().index_save_interval_bytes(4096)).unwrap();
    let oid = s.new_oid().unwrap();
    assert!(!index_path(&path).exists());
    let mut last = Tid::ZERO;
    for i in 0..40u32 {
        last = commit(&s, &[(oid, &[i as u8; 200])]);
    }
    // Saved during the commits, not only at close: a crash now would not force a
    // full rescan. A reader opening beside the writer uses it and sees everything.
    assert!(
        index_path(&path).exists(),
        "no index saved after 8 KiB of commits"
    );
    let r = FileStorage::open(&path, fast().read_only(true)).unwrap();
    assert_eq!(r.last_tid(), last);
    assert_eq!(r.load(oid, Tid::MAX).unwrap().data, vec![39u8; 200]);
}

#[test]
fn transaction_ranges_start_anywhere_in_a_long_file() {
    // The walk starts from a sampled position near `from`; every range must still
    // be exact, at every boundary, before and after the file grows.
    let dir = tempfile::tempdir().unwrap();
    let s = FileStorage::open(dir.path().join("data.zdb"), fast()).unwrap();
    let oid = s.new_oid().unwrap();
    let mut tids: Vec<Tid> = (0..300u32)
        .map(|i| commit(&s, &[(oid, &i.to_le_bytes())]))
        .collect();
    let range = |from: Tid, to: Tid| -> Vec<Tid> {
        s.transactions(from, to)
            .unwrap()
            .map(|t| t.unwrap().tid)
            .collect()
    };
    for (a, b) in [
        (0, 299),
        (63, 64),
        (64, 64),
        (65, 200),
        (127, 128),
        (250, 299),
        (299, 299),
    ] {
        assert_eq!(range(tids[a], tids[b]), tids[a..=b].to_vec(), "{a}..={b}");
        assert_eq!(
            range(Tid(tids[a].0 - 1), tids[b]),
            tids[a..=b].to_vec(),
            "just before {a}"
        );
    }
    tids.extend((0..100u32).map(|i| commit(&s, &[(oid, &i.to_le_bytes())])));
    assert_eq!(range(tids[290], Tid::MAX), tids[290..].to_vec());
    assert_eq!(range(Tid::ZERO, Tid::MAX), tids);
    assert_eq!(range(Tid(tids[399].0 + 1), Tid::MAX), vec![]);
}

#[test]
fn last_transactions_walks_backwards_to_the_same_records() {
    let f = three_transactions(fast());
    let s = FileStorage::open(&f.path, fast()).unwrap();
    let forward: Vec<_> = s
        .transactions(Tid::ZERO, Tid::MAX)
        .unwrap()
        .map(|t| t.unwrap())
        .collect();
    assert_eq!(s.last_transactions(2).unwrap(), forward[1..].to_vec());
    assert_eq!(s.last_transactions(10).unwrap(), forward);
    assert_eq!(s.last_transactions(0).unwrap(), vec![]);
}

#[test]
fn oid_allocation_survives_restart_including_oids_never_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let unused;
    {
        let s = FileStorage::open(&path, fast()).unwrap();
        let a = s.new_oid().unwrap();
        unused = s.new_oid().unwrap();
        commit(&s, &[(a, b"x")]);
    }
    std::fs::remove_file(index_path(&path)).unwrap();
    let s = FileStorage::open(&path, fast()).unwrap();
    assert!(
        s.new_oid().unwrap() > unused,
        "an allocated oid must never be handed out again"
    );
}

#[test]
fn truncation_anywhere_in_the_last_transaction_cuts_only_it() {
    let f = three_transactions(fast());
    // A crash mid-write leaves no saved index covering the torn transaction (one
    // that does proves it was acknowledged: see end_of_data.rs).
    std::fs::remove_file(index_path(&f.path)).unwrap();
    let bytes = std::fs::read(&f.path).unwrap();
    let last = f.starts[2];
    for cut in (last + 1)..f.end {
        for zero_tail in [false, true] {
            // A crash mid-write: the file ends at `cut`, or (preallocated) zeros follow.
            // (Cutting only bytes that are zero anyway and zero-filling changes nothing.)
            if zero_tail && bytes[cut as usize..f.end as usize].iter().all(|&b| b == 0) {
                continue;
            }
            let mut damaged = bytes[..cut as usize].to_vec();
            if zero_tail {
                damaged.resize(bytes.len(), 0);
            }
            std::fs::write(&f.path, &damaged).unwrap();
            let _ = std::fs::remove_file(index_path(&f.path));
            for t in tail_files(&f.path) {
                std::fs::remove_file(t).unwrap();
            }
            let s = FileStorage::open(&f.path, fast()).unwrap();
            assert_first_two_intact(&f, &s);
            let tails = tail_files(&f.path);
            assert_eq!(tails.len(), 1, "cut at {cut}");
            let name = tails[0].file_name().unwrap().to_string_lossy().to_string();
            assert_eq!(name, format!("data.zdb.tail-{last}"));
            let saved = std::fs::read(&tails[0]).unwrap();
            assert!(!saved.is_empty() && bytes[last as usize..cut as usize].starts_with(&saved));
            // The storage keeps working after the cut, and a second open cuts nothing.
            // (Checked for a sample of cuts: each commit preallocates megabytes.)
            if cut % 16 != 0 {
                continue;
            }
            let tid = commit(&s, &[(f.oids[0], b"after")]);
            drop(s);
            let s = FileStorage::open(&f.path, fast()).unwrap();
            assert_eq!(s.load(f.oids[0], Tid::MAX).unwrap().tid, tid);
            assert_eq!(tail_files(&f.path).len(), 1);
        }
    }
}

#[test]
fn a_flipped_byte_in_the_last_transaction_cuts_only_it() {
    let f = three_transactions(fast());
    let bytes = std::fs::read(&f.path).unwrap();
    for at in f.starts[2]..f.end {
        let mut damaged = bytes.clone();
        damaged[at as usize] ^= 0x20;
        std::fs::write(&f.path, &damaged).unwrap();
        let _ = std::fs::remove_file(index_path(&f.path));
        let s = FileStorage::open(&f.path, fast()).unwrap_or_else(|e| panic!("flip at {at}: {e}"));
        assert_first_two_intact(&f, &s);
    }
}

#[test]
fn garbage_appended_after_the_end_is_cut_and_saved() {
    let f = three_transactions(fast());
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&f.path)
        .unwrap();
    let garbage: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
    std::os::unix::fs::FileExt::write_all_at(&file, &garbage, f.end).unwrap();
    drop(file);
    let s = FileStorage::open(&f.path, fast()).unwrap();
    assert_eq!(s.last_tid(), f.tids[2]);
    let tails = tail_files(&f.path);
    assert_eq!(tails.len(), 1);
    assert_eq!(std::fs::read(&tails[0]).unwrap(), garbage);
}

#[test]
fn a_flipped_byte_in_the_middle_is_refused_with_its_offset() {
    // Written durably: the third transaction's durable mark then shows that the
    // second had been durable before it (records written with durability off
    // cannot tell damage from the torn last group of a crash).
    let f = three_transactions(FileOptions::new());
    let bytes = std::fs::read(&f.path).unwrap();
    let (first, second) = (f.starts[1], f.starts[2]);
    for at in first..second {
        let mut damaged = bytes.clone();
        damaged[at as usize] ^= 0x01;
        std::fs::write(&f.path, &damaged).unwrap();
        let _ = std::fs::remove_file(index_path(&f.path));
        match FileStorage::open(&f.path, fast()) {
            Err(Error::Corrupted { offset, what, .. }) => {
                assert_eq!(offset, first, "flip at {at}: {what}");
                let follows = format!("a valid transaction follows at offset {second}");
                assert!(what.contains(&follows), "{what}");
            }
            Err(e) => panic!("flip at {at}: unexpected error {e}"),
            Ok(_) => panic!("flip at {at}: damaged file opened"),
        }
        assert!(
            tail_files(&f.path).is_empty(),
            "nothing is cut from a damaged file"
        );
        assert_eq!(
            std::fs::read(&f.path).unwrap(),
            damaged,
            "the file is left as it was"
        );
    }
    let err = FileStorage::open(&f.path, fast())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("zodiac verify") && err.contains("zodiac recover"),
        "{err}"
    );
}

#[test]
fn damage_is_caught_by_the_index_check_or_by_the_load() {
    // A transaction of 64 objects with 10-byte data: data record k starts at
    // 48 (header) + 48 (transaction header) + 4 ("test") + 50 k.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let s = FileStorage::open(&path, fast()).unwrap();
    let oids: Vec<Oid> = (0..64).map(|_| s.new_oid().unwrap()).collect();
    let writes: Vec<(Oid, &[u8])> = oids.iter().map(|o| (*o, &b"0123456789"[..])).collect();
    let tid = commit(&s, &writes);
    // Later transactions, so the damaged one is not the last (which would be cut)
    // and lies before the last MiB the open reads whole (`SAVED_TAIL_CHECK_BYTES`).
    let later = vec![3u8; 64 << 10];
    for _ in 0..20 {
        commit(&s, &[(s.new_oid().unwrap(), &later)]);
    }
    drop(s);
    let record = |k: u64| 48 + 48 + 4 + 50 * k;
    let original = std::fs::read(&path).unwrap();
    // The open checks the header of every record the saved index points at: damage
    // there makes it distrust the index, scan, and refuse the damaged file.
    let mut bytes = original.clone();
    bytes[(record(0) + 8) as usize] ^= 0x04;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        FileStorage::open(&path, fast()),
        Err(Error::Corrupted { offset: 48, .. })
    ));
    // Damage in a record's data is caught by the per-record CRC at load.
    let mut bytes = original;
    bytes[(record(1) + 43) as usize] ^= 0x04;
    std::fs::write(&path, &bytes).unwrap();
    let s = FileStorage::open(&path, fast()).unwrap();
    match s.load(oids[1], Tid::MAX) {
        Err(Error::Corrupted { what, offset, .. }) => {
            assert!(what.contains("checksum"), "{what}");
            assert_eq!(offset, record(1));
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
    assert_eq!(s.load(oids[2], Tid::MAX).unwrap().tid, tid);
}

#[test]
fn read_only_open_never_modifies_a_damaged_tail() {
    let f = three_transactions(fast());
    let bytes = std::fs::read(&f.path).unwrap();
    let damaged = bytes[..(f.end - 5) as usize].to_vec();
    std::fs::write(&f.path, &damaged).unwrap();
    let s = FileStorage::open(&f.path, fast().read_only(true)).unwrap();
    assert_first_two_intact(&f, &s);
    assert!(matches!(
        s.begin(TransactionMeta::default()),
        Err(Error::ReadOnly)
    ));
    drop(s);
    assert_eq!(std::fs::read(&f.path).unwrap(), damaged);
    assert!(tail_files(&f.path).is_empty());
}

#[test]
fn a_damaged_or_foreign_or_stale_saved_index_is_not_trusted() {
    let f = three_transactions(fast());
    let ipath = index_path(&f.path);
    let good = std::fs::read(&ipath).unwrap();
    // Damaged.
    let mut bad = good.clone();
    bad[70] ^= 0xff;
    std::fs::write(&ipath, &bad).unwrap();
    let s = FileStorage::open(&f.path, fast()).unwrap();
    assert_eq!(s.load(f.oids[2], Tid::MAX).unwrap().tid, f.tids[2]);
    drop(s);
    // Stale: saved before later commits.
    std::fs::write(&ipath, &good).unwrap();
    let s = FileStorage::open(&f.path, fast()).unwrap();
    let newer = commit(&s, &[(f.oids[1], b"newer")]);
    drop(s);
    std::fs::write(&ipath, &good).unwrap();
    let s = FileStorage::open(&f.path, fast()).unwrap();
    assert_eq!(s.load(f.oids[1], Tid::MAX).unwrap().tid, newer);
    drop(s);
    // Foreign: the index of another data file.
    let other = three_transactions(fast());
    std::fs::copy(index_path(&other.path), &ipath).unwrap();
    let s = FileStorage::open(&f.path, fast()).unwrap();
    assert_eq!(s.load(f.oids[1], Tid::MAX).unwrap().tid, newer);
    assert_eq!(s.load(f.oids[2], Tid::MAX).unwrap().tid, f.tids[2]);
}

#[test]
fn a_second_writer_is_refused_naming_this_process() {
    let f = three_transactions(fast());
    let s = FileStorage::open(&f.path, fast()).unwrap();
    match FileStorage::open(&f.path, fast()) {
        Err(Error::Locked { pid, .. }) => assert_eq!(pid, std::process::id().to_string()),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("second writer opened the file"),
    }
    let msg = FileStorage::open(&f.path, fast())
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains(&format!("locked by process {}", std::process::id())),
        "{msg}"
    );
    // Readers are welcome alongside the writer.
    let r = FileStorage::open(&f.path, fast().read_only(true)).unwrap();
    assert_eq!(r.last_tid(), f.tids[2]);
    drop(s);
    assert!(lock_path(&f.path).exists());
    FileStorage::open(&f.path, fast()).unwrap();
}

#[test]
fn offsets_beyond_four_gib_work_in_a_sparse_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.zdb");
    let start = 5u64 << 30;
    let oid;
    let (t1, t2);
    {
        let s = FileStorage::open(&path, fast().data_start(start)).unwrap();
        oid = s.new_oid().unwrap();
        t1 = commit(&s, &[(oid, b"one")]);
        t2 = commit(&s, &[(oid, b"two")]);
        assert!(s.data_end() > start);
    }
    for with_index in [true, false] {
        if !with_index {
            std::fs::remove_file(index_path(&path)).unwrap();
        }
        let s = FileStorage::open(&path, fast()).unwrap();
        assert_eq!(s.load(oid, t1).unwrap().data, b"one");
        assert_eq!(s.load(oid, Tid::MAX).unwrap().data, b"two");
        let h: Vec<Tid> = s.history(oid, 10).unwrap().iter().map(|r| r.tid).collect();
        assert_eq!(h, vec![t2, t1]);
    }
    // A torn tail beyond 4 GiB is cut and named by its 64-bit offset.
    let end = FileStorage::open(&path, fast()).unwrap().data_end();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"ZTXNgarbage", end).unwrap();
    drop(file);
    let s = FileStorage::open(&path, fast()).unwrap();
    assert_eq!(s.last_tid(), t2);
    let expected = PathBuf::from(format!("{}.tail-{end}", path.display()));
    assert_eq!(tail_files(&path), vec![expected]);
}

struct FaultyFixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    faults: Arc<FaultyIoFactory>,
    storage: FileStorage,
    oid: Oid,
    acked: Tid,
}

/// A durable storage over fault-injecting I/O with one acknowledged commit.
fn faulty_fixture() -> FaultyFixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let faults = Arc::new(FaultyIoFactory::new());
    let storage = FileStorage::open(&path, FileOptions::new().io(faults.clone())).unwrap();
    let oid = storage.new_oid().unwrap();
    let acked = commit(&storage, &[(oid, b"acknowledged")]);
    FaultyFixture {
        _dir: dir,
        path,
        faults,
        storage,
        oid,
        acked,
    }
}

fn arm(faults: &FaultyIoFactory, point: FaultPoint, errno: i32) {
    faults.arm(FaultPlan {
        point,
        errno,
        file_suffix: ".zdb".into(),
        torn_bytes: 10,
    });
}

#[test]
fn a_failed_write_or_fsync_fails_the_commit_and_poisons_until_reopened() {
    let cases = [
        (FaultPoint::Write(1), EIO, "Input/output error"),
        (FaultPoint::Write(1), ENOSPC, "No space left on device"),
        (FaultPoint::Sync(1), EIO, "Input/output error"),
        (FaultPoint::Sync(1), ENOSPC, "No space left on device"),
    ];
    for (point, errno, text) in cases {
        let f = faulty_fixture();
        let s = f.storage;
        arm(&f.faults, point, errno);
        let mut t = s.begin(TransactionMeta::default()).unwrap();
        t.store(f.oid, f.acked, b"never acknowledged".to_vec())
            .unwrap();
        let err = t.finish().unwrap_err();
        if errno == ENOSPC {
            // Said plainly, with what to do.
            assert!(matches!(err, Error::DiskFull { .. }), "{point:?}: {err}");
            assert!(err.to_string().contains("disk full: "), "{err}");
            assert!(err.to_string().contains("free space"), "{err}");
        } else {
            assert!(matches!(err, Error::Io { .. }), "{point:?}: {err}");
        }
        assert!(err.to_string().contains(text), "{err}");
        f.faults.disarm();
        // Poisoned: later commits are refused with the cause even once the fault is
        // gone (fsync is never retried).
        let later = s.begin(TransactionMeta::default()).err().unwrap();
        assert!(matches!(later, Error::Poisoned { .. }), "{later}");
        let later = later.to_string();
        assert!(later.contains(text) && later.contains("reopen"), "{later}");
        // Reads still work and see only acknowledged data.
        assert_eq!(s.load(f.oid, Tid::MAX).unwrap().data, b"acknowledged");
        assert_eq!(s.last_tid(), f.acked);
        drop(s);
        let s = FileStorage::open(&f.path, FileOptions::new()).unwrap();
        assert_eq!(
            s.load(f.oid, f.acked).unwrap().data,
            b"acknowledged",
            "{point:?}"
        );
        // The unacknowledged write may or may not have reached the file; either way
        // the store is consistent and accepts commits again.
        let next = commit(&s, &[(f.oid, b"after reopen")]);
        assert_eq!(s.load(f.oid, Tid::MAX).unwrap().tid, next);
    }
}

#[test]
fn a_failed_preallocation_or_large_append_fails_the_commit_cleanly() {
    // A new file's first small commit preallocates (writes zeros) before writing.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let faults = Arc::new(FaultyIoFactory::new());
    let s = FileStorage::open(&path, FileOptions::new().io(faults.clone())).unwrap();
    arm(&faults, FaultPoint::Write(1), ENOSPC);
    let mut t = s.begin(TransactionMeta::default()).unwrap();
    t.store(s.new_oid().unwrap(), Tid::ZERO, b"small".to_vec())
        .unwrap();
    let err = t.finish().unwrap_err().to_string();
    assert!(
        err.contains("preallocating") && err.contains("No space left"),
        "{err}"
    );
    drop(s);
    let s = FileStorage::open(&path, FileOptions::new()).unwrap();
    assert_eq!(s.last_tid(), Tid::ZERO);
    drop(s);
    // A large transaction beyond the preallocated space is appended directly.
    let f = faulty_fixture();
    arm(&f.faults, FaultPoint::Write(1), ENOSPC);
    let mut t = f.storage.begin(TransactionMeta::default()).unwrap();
    t.store(f.oid, f.acked, vec![7u8; 8 << 20]).unwrap();
    let err = t.finish().unwrap_err().to_string();
    assert!(
        err.contains("writing a transaction") && err.contains("No space left"),
        "{err}"
    );
    drop(f.storage);
    let s = FileStorage::open(&f.path, FileOptions::new()).unwrap();
    assert_eq!(s.load(f.oid, Tid::MAX).unwrap().data, b"acknowledged");
}

#[test]
fn a_power_cut_loses_nothing_that_was_acknowledged_durable() {
    // Durable commits, then commits with durability off (never synced), then a
    // power cut that tears the last write: exactly the durable ones survive.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let faults = Arc::new(FaultyIoFactory::new());
    let oid;
    let mut durable = vec![];
    {
        let s = FileStorage::open(&path, FileOptions::new().io(faults.clone())).unwrap();
        oid = s.new_oid().unwrap();
        for i in 0..20u32 {
            durable.push(commit(&s, &[(oid, &i.to_le_bytes())]));
        }
        s.close().unwrap();
    }
    {
        let options = FileOptions::new()
            .durability(Durability::Off)
            .io(faults.clone());
        let s = FileStorage::open(&path, options).unwrap();
        for i in 0..5u32 {
            commit(&s, &[(oid, &(100 + i).to_le_bytes())]);
        }
        // Crash without a clean close: no index saved, nothing synced.
        std::fs::remove_file(index_path(&path)).unwrap();
        std::mem::forget(s);
    }
    faults.power_cut(&path, 30).unwrap();
    let s = FileStorage::open(&path, FileOptions::new().read_only(true)).unwrap();
    assert_eq!(s.last_tid(), *durable.last().unwrap());
    assert_eq!(s.load(oid, Tid::MAX).unwrap().data, 19u32.to_le_bytes());
    let h: Vec<Tid> = s
        .history(oid, 100)
        .unwrap()
        .iter()
        .rev()
        .map(|r| r.tid)
        .collect();
    assert_eq!(h, durable);
}

#[test]
fn a_data_file_replaced_or_truncated_underneath_stops_commits() {
    for replace in [true, false] {
        let f = three_transactions(fast());
        let s = FileStorage::open(&f.path, fast()).unwrap();
        if replace {
            // A tool writes a new copy and renames it over the open file (ZODB #38).
            let copy = f.path.with_extension("copy");
            std::fs::copy(&f.path, &copy).unwrap();
            std::fs::rename(&copy, &f.path).unwrap();
        } else {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&f.path)
                .unwrap();
            file.set_len(f.starts[2]).unwrap();
        }
        let mut t = s.begin(TransactionMeta::default()).unwrap();
        t.store(f.oids[0], f.tids[0], b"lost?".to_vec()).unwrap();
        let err = t.finish().unwrap_err();
        let expected = if replace { "replaced" } else { "truncated" };
        assert!(matches!(err, Error::Poisoned { .. }), "{err}");
        assert!(err.to_string().contains(expected), "{err}");
        assert!(matches!(
            s.begin(TransactionMeta::default()),
            Err(Error::Poisoned { .. })
        ));
        // Dropping would save an index for a file that is no longer ours.
        std::mem::forget(s);
    }
}

#[test]
fn concurrent_durable_committers_all_succeed_in_one_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let s = Arc::new(FileStorage::open(path, FileOptions::new()).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                let oid = s.new_oid().unwrap();
                let mut base = Tid::ZERO;
                let mut tids = vec![];
                for i in 0..100u32 {
                    let mut t = s.begin(TransactionMeta::default()).unwrap();
                    t.store(oid, base, i.to_le_bytes().to_vec()).unwrap();
                    base = t.finish().unwrap();
                    assert!(s.last_tid() >= base, "finish returned before publishing");
                    tids.push(base);
                }
                (oid, tids)
            })
        })
        .collect();
    let mut all = vec![];
    for th in threads {
        let (oid, tids) = th.join().unwrap();
        assert_eq!(s.load(oid, Tid::MAX).unwrap().data, 99u32.to_le_bytes());
        all.extend(tids);
    }
    let listed: Vec<Tid> = s
        .transactions(Tid::ZERO, Tid::MAX)
        .unwrap()
        .map(|t| t.unwrap().tid)
        .collect();
    all.sort();
    assert_eq!(listed, all);
}

#[test]
fn concurrent_commits_share_one_fdatasync() {
    // While one commit's fdatasync is slow, three more commits write and wait: the
    // next fdatasync covers all three (group commit), so four commits take two.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let faults = Arc::new(FaultyIoFactory::new());
    let s = Arc::new(FileStorage::open(&path, FileOptions::new().io(faults.clone())).unwrap());
    commit(&*s, &[(s.new_oid().unwrap(), b"preallocate")]);
    faults.set_sync_delay(std::time::Duration::from_millis(300));
    let before = faults.syncs_done();
    let first = {
        let s = Arc::clone(&s);
        std::thread::spawn(move || commit(&*s, &[(s.new_oid().unwrap(), b"first")]))
    };
    std::thread::sleep(std::time::Duration::from_millis(100));
    let others: Vec<_> = (0..3)
        .map(|_| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || commit(&*s, &[(s.new_oid().unwrap(), b"other")]))
        })
        .collect();
    let mut tids = vec![first.join().unwrap()];
    tids.extend(others.into_iter().map(|t| t.join().unwrap()));
    assert_eq!(
        faults.syncs_done() - before,
        2,
        "four commits, two fdatasyncs"
    );
    assert_eq!(s.last_tid(), *tids.iter().max().unwrap());
}

#[test]
fn a_conflict_names_a_revision_that_can_be_loaded_at_once() {
    // Story: a conflict resolver loads the committed state named by the conflict.
    // While that commit was written but its fdatasync still running, the revision
    // was not visible yet, and the load failed.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let faults = Arc::new(FaultyIoFactory::new());
    let s = Arc::new(FileStorage::open(&path, FileOptions::new().io(faults.clone())).unwrap());
    let oid = s.new_oid().unwrap();
    let base = commit(&*s, &[(oid, b"base")]);
    faults.set_sync_delay(std::time::Duration::from_millis(300));
    let writer = {
        let s = Arc::clone(&s);
        std::thread::spawn(move || {
            let mut t = s.begin(TransactionMeta::default()).unwrap();
            t.store(oid, base, b"committed".to_vec()).unwrap();
            t.finish().unwrap()
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(100));
    let mut t = s.begin(TransactionMeta::default()).unwrap();
    t.store(oid, base, b"mine".to_vec()).unwrap();
    let conflict = *t.vote().unwrap_err().as_conflict().expect("a conflict");
    assert_eq!(conflict.base_tid, base);
    assert_eq!(
        s.load_revision(oid, conflict.current_tid).unwrap(),
        b"committed"
    );
    assert_eq!(writer.join().unwrap(), conflict.current_tid);
}

#[test]
fn files_that_are_not_zodiac_files_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, vec![b'x'; 100]).unwrap();
    let err = FileStorage::open(&path, fast()).err().unwrap();
    assert!(err.to_string().contains("not a Zodiac data file"), "{err}");
    // Refused before the writer lock: no lock file is left beside it.
    assert!(!dir.path().join("notes.txt.lock").exists());
    std::fs::write(&path, b"short").unwrap();
    let err = FileStorage::open(&path, fast()).err().unwrap();
    assert!(
        err.to_string().contains("shorter than the 48-byte header"),
        "{err}"
    );
    let missing = dir.path().join("missing.zdb");
    let err = FileStorage::open(&missing, fast().create(false))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("missing.zdb") && err.contains("no such file"),
        "{err}"
    );
}

mod garbage {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        /// Whatever follows a valid header, opening either succeeds or fails with an
        /// error; it never panics, and a successful open reads consistent data.
        #[test]
        fn arbitrary_damage_never_panics(
            tail in proptest::collection::vec(any::<u8>(), 0..600),
            flips in proptest::collection::vec((0usize..400, any::<u8>()), 0..4),
        ) {
            let f = three_transactions(fast());
            let mut bytes = std::fs::read(&f.path).unwrap()[..f.end as usize].to_vec();
            for (at, x) in flips {
                let at = 48 + at % (bytes.len() - 48);
                bytes[at] ^= x;
            }
            bytes.extend(tail);
            std::fs::write(&f.path, &bytes).unwrap();
            let _ = std::fs::remove_file(index_path(&f.path));
            if let Ok(s) = FileStorage::open(&f.path, fast()) {
                for t in s.transactions(Tid::ZERO, Tid::MAX).unwrap() {
                    let t = t.unwrap();
                    for c in t.changes {
                        prop_assert!(s.load_revision(c.oid, t.tid).is_ok());
                    }
                }
            }
        }
    }
}

/// A test resolver over 8-byte counters: adds this transaction's change
/// (`mine - old`) to the committed value; refuses anything else.
fn counter_merge(mine: u64) -> impl Fn(Oid, &[u8], &[u8]) -> Option<Vec<u8>> + Sync {
    move |_, old, committed| {
        let old = u64::from_le_bytes(old.try_into().ok()?);
        let committed = u64::from_le_bytes(committed.try_into().ok()?);
        Some((committed + mine - old).to_le_bytes().to_vec())
    }
}

#[test]
fn a_vote_merges_a_conflict_with_a_commit_still_syncing_without_waiting_for_it() {
    // Two counters changed from the same base by two transactions; the first is
    // finished but its fdatasync is slow. The second's vote merges both objects in
    // one pass at once, and becomes durable only with (after) the first.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let faults = Arc::new(FaultyIoFactory::new());
    let s = Arc::new(FileStorage::open(&path, FileOptions::new().io(faults.clone())).unwrap());
    let (a, b) = (s.new_oid().unwrap(), s.new_oid().unwrap());
    let base = commit(&*s, &[(a, &10u64.to_le_bytes()), (b, &10u64.to_le_bytes())]);
    faults.set_sync_delay(std::time::Duration::from_millis(1500));
    let first = {
        let s = Arc::clone(&s);
        std::thread::spawn(move || {
            let mut t = s.begin(TransactionMeta::default()).unwrap();
            t.store(a, base, 11u64.to_le_bytes().to_vec()).unwrap();
            t.store(b, base, 11u64.to_le_bytes().to_vec()).unwrap();
            t.finish().unwrap()
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut t = s.begin(TransactionMeta::default()).unwrap();
    t.store(a, base, 15u64.to_le_bytes().to_vec()).unwrap();
    t.store(b, base, 15u64.to_le_bytes().to_vec()).unwrap();
    assert!(t.merges_conflicts());
    let voted = std::time::Instant::now();
    let merged = t.vote_resolving(&counter_merge(15)).unwrap();
    assert!(
        voted.elapsed() < std::time::Duration::from_millis(1000),
        "the vote waited for the first commit's sync"
    );
    assert_eq!(merged, Some(vec![a, b]));
    assert_eq!(s.last_tid(), base, "the first commit is not durable yet");
    let tid = t.finish().unwrap();
    let first_tid = first.join().unwrap();
    assert!(first_tid < tid);
    for oid in [a, b] {
        assert_eq!(s.load(oid, tid).unwrap().data, 16u64.to_le_bytes());
        assert_eq!(s.load(oid, first_tid).unwrap().data, 11u64.to_le_bytes());
    }
}

#[test]
fn a_merge_on_a_commit_whose_sync_fails_is_never_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let faults = Arc::new(FaultyIoFactory::new());
    let s = Arc::new(FileStorage::open(&path, FileOptions::new().io(faults.clone())).unwrap());
    let a = s.new_oid().unwrap();
    let base = commit(&*s, &[(a, &10u64.to_le_bytes())]);
    faults.set_sync_delay(std::time::Duration::from_millis(500));
    faults.arm(FaultPlan {
        point: FaultPoint::Sync(1),
        errno: EIO,
        file_suffix: ".zdb".into(),
        torn_bytes: 0,
    });
    let first = {
        let s = Arc::clone(&s);
        std::thread::spawn(move || {
            let mut t = s.begin(TransactionMeta::default()).unwrap();
            t.store(a, base, 11u64.to_le_bytes().to_vec()).unwrap();
            t.finish()
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(100));
    let mut t = s.begin(TransactionMeta::default()).unwrap();
    t.store(a, base, 15u64.to_le_bytes().to_vec()).unwrap();
    let merged = t.vote_resolving(&counter_merge(15));
    assert!(
        first.join().unwrap().is_err(),
        "the first commit's sync failed"
    );
    // Merged with a commit that never became durable: this one must fail too.
    let finished = merged.and_then(|_| t.finish());
    assert!(
        finished.is_err(),
        "acknowledged a commit merged on a lost one"
    );
    drop(s);
    // The power goes: what was never synced is gone, with the merge.
    faults.power_cut(&path, 0).unwrap();
    let s = FileStorage::open(&path, FileOptions::new()).unwrap();
    assert_eq!(s.load(a, Tid::MAX).unwrap().data, 10u64.to_le_bytes());
}

#[test]
fn a_vote_reports_what_does_not_merge() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileStorage::open(dir.path().join("data.zdb"), fast()).unwrap();
    let (a, b) = (s.new_oid().unwrap(), s.new_oid().unwrap());
    let base = commit(&s, &[(a, &10u64.to_le_bytes()), (b, b"text")]);
    let newer = commit(&s, &[(a, &11u64.to_le_bytes()), (b, b"other")]);
    // `b` is no counter: the resolver refuses it, the vote reports it.
    let mut t = s.begin(TransactionMeta::default()).unwrap();
    t.store(a, base, 15u64.to_le_bytes().to_vec()).unwrap();
    t.store(b, base, b"mine".to_vec()).unwrap();
    let e = t.vote_resolving(&counter_merge(15)).unwrap_err();
    let c = *e.as_conflict().expect("a conflict");
    assert_eq!((c.oid, c.base_tid, c.current_tid), (b, base, newer));
    // A check_current conflict never merges.
    let mut t = s.begin(TransactionMeta::default()).unwrap();
    t.store(a, newer, 20u64.to_le_bytes().to_vec()).unwrap();
    t.check_current(b, base).unwrap();
    let e = t.vote_resolving(&counter_merge(20)).unwrap_err();
    assert_eq!(e.as_conflict().expect("a conflict").oid, b);
    assert_eq!(s.load(a, Tid::MAX).unwrap().data, 11u64.to_le_bytes());
}
