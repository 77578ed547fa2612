//! Pack with and without garbage collection, while the storage stays open.
//!
//! Object data in these tests is `refs:A,B;payload`, and the test reference
//! extractor reads the oids after `refs:`.

use std::path::PathBuf;
use std::sync::Arc;

use zodiac_storage::io::{FaultPlan, FaultPoint, FaultyIoFactory};
use zodiac_storage::offline::verify;
use zodiac_storage::{
    Durability, Error, FileOptions, FileStorage, Oid, Storage, Tid, TransactionMeta,
};
use zodiac_storage::{
    PackReport,
    offline::{index_path, old_path},
};

fn data(refs: &[Oid], payload: &str) -> Vec<u8> {
    let list: Vec<String> = refs.iter().map(|o| o.0.to_string()).collect();
    format!("refs:{};{payload}", list.join(",")).into_bytes()
}

fn references(bytes: &[u8]) -> Result<Vec<Oid>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
    let list = text
        .strip_prefix("refs:")
        .and_then(|rest| rest.split(';').next())
        .ok_or_else(|| format!("no reference list in {text:?}"))?;
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map(Oid).map_err(|e| format!("{e}")))
        .collect()
}

fn payload(s: &dyn Storage, oid: Oid) -> String {
    let bytes = s.load(oid, Tid::MAX).unwrap().data;
    String::from_utf8(bytes)
        .unwrap()
        .split(';')
        .nth(1)
        .unwrap()
        .to_string()
}

fn write(s: &dyn Storage, writes: &[(Oid, Vec<u8>)]) -> Tid {
    let mut t = s.begin(TransactionMeta::described("test")).unwrap();
    for (oid, bytes) in writes {
        let base = s.load(*oid, Tid::MAX).map(|r| r.tid).unwrap_or(Tid::ZERO);
        t.store(*oid, base, bytes.clone()).unwrap();
    }
    t.finish().unwrap()
}

struct Db {
    _dir: tempfile::TempDir,
    path: PathBuf,
    s: FileStorage,
}

fn open(options: FileOptions) -> Db {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let s = FileStorage::open(&path, options).unwrap();
    Db { _dir: dir, path, s }
}

fn fast() -> FileOptions {
    FileOptions::new().durability(Durability::Off)
}

#[test]
fn pack_without_gc_keeps_the_newest_revision_of_everything() {
    let db = open(fast());
    let oids: Vec<Oid> = (0..10).map(|_| db.s.new_oid().unwrap()).collect();
    for rev in 0..5 {
        let writes: Vec<_> = oids
            .iter()
            .map(|o| (*o, data(&[], &format!("{o} r{rev}"))))
            .collect();
        write(&db.s, &writes);
    }
    let last = db.s.last_tid();
    let before = std::fs::read(&db.path).unwrap()[..db.s.data_end() as usize].to_vec();
    let report = db.s.pack(Tid::MAX, None).unwrap();
    assert_eq!(report.pack_tid, last);
    assert_eq!((report.revisions_before, report.revisions_after), (50, 10));
    // The tables' accounting: two oid tables of 8-byte positions, at least.
    assert!(
        (2 * 10 * 8..10_000).contains(&report.table_bytes_max),
        "{report:?}"
    );
    assert!(report.bytes_after < report.bytes_before / 3, "{report:?}");
    for oid in &oids {
        assert_eq!(payload(&db.s, *oid), format!("{oid} r4"));
        assert_eq!(db.s.history(*oid, 10).unwrap().len(), 1);
    }
    assert_eq!(db.s.last_tid(), last, "the last tid never goes backwards");
    // The original is kept as PATH.old, byte for byte.
    let old = std::fs::read(old_path(&db.path)).unwrap();
    assert_eq!(&old[..before.len()], &before[..]);
    // The storage keeps committing into the packed file, and it reopens with the
    // index the pack wrote.
    let after = write(&db.s, &[(oids[0], data(&[], "after pack"))]);
    drop(db.s);
    assert!(verify(&db.path).unwrap().is_healthy());
    let s = FileStorage::open(&db.path, fast()).unwrap();
    assert_eq!(s.load(oids[0], Tid::MAX).unwrap().tid, after);
    assert_eq!(payload(&s, oids[9]), format!("{} r4", oids[9]));
}

#[test]
fn pack_to_a_past_time_keeps_that_time_and_everything_after() {
    let db = open(fast());
    let oid = db.s.new_oid().unwrap();
    let tids: Vec<Tid> = (0..6)
        .map(|i| write(&db.s, &[(oid, data(&[], &format!("r{i}")))]))
        .collect();
    let report = db.s.pack(tids[3], None).unwrap();
    assert_eq!(report.pack_tid, tids[3]);
    let history: Vec<Tid> =
        db.s.history(oid, 10)
            .unwrap()
            .iter()
            .map(|r| r.tid)
            .collect();
    assert_eq!(history, vec![tids[5], tids[4], tids[3]]);
    assert_eq!(db.s.load(oid, tids[3]).unwrap().data, data(&[], "r3"));
    assert_eq!(db.s.load(oid, tids[4]).unwrap().data, data(&[], "r4"));
    // History before the pack time is gone.
    assert!(matches!(
        db.s.load(oid, tids[2]),
        Err(Error::NotFoundAtSnapshot { .. })
    ));
}

#[test]
fn gc_removes_what_the_root_cannot_reach() {
    let db = open(fast());
    let (a, b, c, d) = (
        db.s.new_oid().unwrap(),
        db.s.new_oid().unwrap(),
        db.s.new_oid().unwrap(),
        db.s.new_oid().unwrap(),
    );
    write(
        &db.s,
        &[
            (Oid::ROOT, data(&[a], "root")),
            (a, data(&[b], "a")),
            (b, data(&[], "b")),
            (c, data(&[d], "c: unreachable")),
            (d, data(&[], "d: only c refers to it")),
        ],
    );
    let report: PackReport = db.s.pack(Tid::MAX, Some(&references)).unwrap();
    assert_eq!(report.objects_removed, 2);
    assert_eq!(payload(&db.s, a), "a");
    assert_eq!(payload(&db.s, b), "b");
    for gone in [c, d] {
        assert!(
            matches!(db.s.load(gone, Tid::MAX), Err(Error::NoSuchObject { .. })),
            "{gone}"
        );
    }
    // Oids of removed objects are never handed out again.
    assert!(db.s.new_oid().unwrap() > d);
    drop(db.s);
    let s = FileStorage::open(&db.path, fast()).unwrap();
    assert!(
        s.new_oid().unwrap() > d,
        "the high-water mark survives the pack and a reopen"
    );
}

#[test]
fn gc_keeps_objects_referred_to_after_the_pack_time() {
    let db = open(fast());
    let (a, b) = (db.s.new_oid().unwrap(), db.s.new_oid().unwrap());
    write(
        &db.s,
        &[
            (Oid::ROOT, data(&[], "root")),
            (b, data(&[], "b: unreachable for now")),
        ],
    );
    let pack_time = db.s.last_tid();
    // After the pack time, a new object refers to b again.
    write(
        &db.s,
        &[(Oid::ROOT, data(&[a], "root")), (a, data(&[b], "a"))],
    );
    let report = db.s.pack(pack_time, Some(&references)).unwrap();
    assert_eq!(report.objects_removed, 0, "{report:?}");
    assert_eq!(payload(&db.s, b), "b: unreachable for now");
}

#[test]
fn commits_during_a_pack_are_all_present_after_it_and_a_second_pack_is_refused() {
    let db = open(fast());
    let oids: Vec<Oid> = (0..50).map(|_| db.s.new_oid().unwrap()).collect();
    for rev in 0..4 {
        for chunk in oids.chunks(10) {
            let writes: Vec<_> = chunk
                .iter()
                .map(|o| (*o, data(&[], &format!("r{rev}"))))
                .collect();
            write(&db.s, &writes);
        }
    }
    let late = db.s.new_oid().unwrap();
    let mut during = vec![];
    let mut second_pack = None;
    let report =
        db.s.pack_with(Tid::MAX, None, |_, _| {
            // Progress is reported during the bulk copy, which runs without the
            // commit lock (and never under any lock): commit from inside it.
            while during.len() < 3 {
                let tid = write(
                    &db.s,
                    &[(late, data(&[], &format!("during {}", during.len())))],
                );
                during.push(tid);
            }
            second_pack.get_or_insert_with(|| db.s.pack(Tid::MAX, None).map(|_| ()));
        })
        .unwrap();
    assert_eq!(during.len(), 3);
    assert!(matches!(
        second_pack,
        Some(Err(Error::PackInProgress { .. }))
    ));
    assert_eq!(report.copied_during_pack, 3);
    let history: Vec<Tid> =
        db.s.history(late, 10)
            .unwrap()
            .iter()
            .rev()
            .map(|r| r.tid)
            .collect();
    assert_eq!(
        history, during,
        "every revision committed during the pack is kept"
    );
    assert_eq!(payload(&db.s, late), "during 2");
    assert_eq!(payload(&db.s, oids[49]), "r3");
    drop(db.s);
    assert!(verify(&db.path).unwrap().is_healthy());
}

#[test]
fn a_failure_while_writing_the_packed_file_leaves_the_original_in_use() {
    let faults = Arc::new(FaultyIoFactory::new());
    let db = open(fast().io(faults.clone()));
    let oid = db.s.new_oid().unwrap();
    for i in 0..20 {
        write(&db.s, &[(oid, data(&[], &format!("r{i}")))]);
    }
    faults.arm(FaultPlan {
        point: FaultPoint::Write(3),
        errno: 28,
        file_suffix: ".pack".into(),
        torn_bytes: 0,
    });
    let err = db.s.pack(Tid::MAX, None).unwrap_err();
    assert!(err.to_string().contains("No space left on device"), "{err}");
    faults.disarm();
    assert!(
        !db.path.with_file_name("data.zdb.pack").exists(),
        "the partial pack is removed"
    );
    assert!(!old_path(&db.path).exists(), "nothing was swapped");
    assert_eq!(db.s.history(oid, 100).unwrap().len(), 20);
    let tid = write(&db.s, &[(oid, data(&[], "still working"))]);
    assert_eq!(db.s.load(oid, Tid::MAX).unwrap().tid, tid);
    // And a later pack succeeds.
    db.s.pack(Tid::MAX, None).unwrap();
    assert_eq!(payload(&db.s, oid), "still working");
}

#[test]
fn a_reference_extractor_error_stops_the_pack_with_the_object_named() {
    let db = open(fast());
    let a = db.s.new_oid().unwrap();
    write(
        &db.s,
        &[
            (Oid::ROOT, data(&[a], "root")),
            (a, b"not a record".to_vec()),
        ],
    );
    let err = db.s.pack(Tid::MAX, Some(&references)).unwrap_err();
    assert!(
        matches!(&err, Error::PackReferences { oid, .. } if *oid == a),
        "{err}"
    );
    assert_eq!(db.s.load(a, Tid::MAX).unwrap().data, b"not a record");
}

#[test]
fn a_crash_between_the_swap_renames_leaves_a_healthy_file_with_every_commit() {
    let faults = Arc::new(FaultyIoFactory::new());
    let db = open(FileOptions::new().io(faults.clone()));
    let oids: Vec<Oid> = (0..30).map(|_| db.s.new_oid().unwrap()).collect();
    for round in 0..3 {
        let writes: Vec<(Oid, Vec<u8>)> = oids
            .iter()
            .map(|oid| (*oid, data(&[], &format!("r{round}"))))
            .collect();
        write(&db.s, &writes);
    }
    // The original's index is saved on disk, as after any clean close.
    db.s.save_index().unwrap();
    assert!(index_path(&db.path).exists());
    // The swap moves the packed file over the original; the process dies before
    // it moves the packed file's index.
    faults.crash_after_rename_to(&db.path);
    assert!(db.s.pack(Tid::MAX, None).is_err());
    drop(db.s);
    faults.restart();
    let report = verify(&db.path).unwrap();
    assert!(
        report.is_healthy(),
        "damage {:?}, index {:?}",
        report.damage,
        report.index
    );
    assert_eq!(report.records, 30, "the packed file is the one in place");
    let s = FileStorage::open(&db.path, fast()).unwrap();
    for oid in &oids {
        assert_eq!(payload(&s, *oid), "r2");
    }
}
