//! `verify` and `recover` on healthy and damaged files (catastrophe S3): exact
//! offsets, exact salvage, nothing modified in the damaged file.

use std::path::{Path, PathBuf};

use zodiac_storage::file::recover::recover;
use zodiac_storage::file::verify::verify;
use zodiac_storage::{Durability, FileOptions, FileStorage, Oid, Storage, Tid, TransactionMeta};

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    oids: Vec<Oid>,
    tids: Vec<Tid>,
    starts: Vec<u64>,
    end: u64,
}

/// Three transactions: creates object 1 and 2, then updates object 1.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let s = FileStorage::open(&path, FileOptions::new().durability(Durability::Off)).unwrap();
    let oids = vec![s.new_oid().unwrap(), s.new_oid().unwrap()];
    let mut tids = vec![];
    let mut starts = vec![];
    let mut meta = TransactionMeta::described("first");
    meta.user = "alice".into();
    for (i, (oid, base)) in [(oids[0], 0), (oids[1], 0), (oids[0], 1)]
        .into_iter()
        .enumerate()
    {
        starts.push(s.data_end());
        let mut t = s
            .begin(if i == 0 {
                meta.clone()
            } else {
                TransactionMeta::described(format!("t{i}"))
            })
            .unwrap();
        let base_tid = if base == 0 { Tid::ZERO } else { tids[0] };
        t.store(oid, base_tid, format!("data {i}").into_bytes())
            .unwrap();
        tids.push(t.finish().unwrap());
    }
    let end = s.data_end();
    drop(s);
    Fixture {
        _dir: dir,
        path,
        oids,
        tids,
        starts,
        end,
    }
}

fn flip(path: &Path, at: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at as usize] ^= 0x08;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn verify_reports_a_healthy_file() {
    let f = fixture();
    let r = verify(&f.path).unwrap();
    assert!(r.is_healthy(), "{:?}", r.damage);
    assert_eq!(r.transactions, 3);
    assert_eq!(r.records, 3);
    assert_eq!(r.data_end, f.end);
    assert_eq!(
        (r.first_tid, r.last_tid),
        (Some(f.tids[0]), Some(f.tids[2]))
    );
}

#[test]
fn verify_finds_mid_file_damage_and_where_records_resume() {
    let f = fixture();
    flip(&f.path, f.starts[1] + 60);
    let before = std::fs::read(&f.path).unwrap();
    let r = verify(&f.path).unwrap();
    assert_eq!(r.damage.len(), 1, "{:?}", r.damage);
    assert_eq!(r.damage[0].offset, f.starts[1]);
    assert_eq!(r.damage[0].resumes_at, Some(f.starts[2]));
    assert!(
        r.damage[0].what.contains("checksum"),
        "{}",
        r.damage[0].what
    );
    assert_eq!(
        r.transactions, 2,
        "the records before and after the damage are valid"
    );
    assert_eq!(
        std::fs::read(&f.path).unwrap(),
        before,
        "verify never writes"
    );
}

#[test]
fn verify_reports_a_torn_tail() {
    let f = fixture();
    let bytes = std::fs::read(&f.path).unwrap();
    std::fs::write(&f.path, &bytes[..(f.end - 7) as usize]).unwrap();
    let r = verify(&f.path).unwrap();
    assert_eq!(r.damage.len(), 1);
    assert_eq!(r.damage[0].offset, f.starts[2]);
    assert_eq!(r.damage[0].resumes_at, None);
    assert_eq!(r.transactions, 2);
}

#[test]
fn recover_salvages_every_transaction_before_the_damage_and_reports_the_rest() {
    let f = fixture();
    flip(&f.path, f.starts[1] + 60);
    let out = f.path.with_file_name("recovered.zdb");
    let r = recover(&f.path, &out).unwrap();
    assert_eq!(r.copied, 1);
    assert_eq!(r.last_copied_tid, Some(f.tids[0]));
    assert_eq!(r.damage.as_ref().map(|d| d.0), Some(f.starts[1]));
    assert_eq!(r.lost_transactions, 1);
    assert_eq!(r.lost_tids, Some((f.tids[2], f.tids[2])));
    // The salvaged file is healthy, keeps tids and metadata, and never reuses oids.
    assert!(verify(&out).unwrap().is_healthy());
    let s = FileStorage::open(&out, FileOptions::new()).unwrap();
    assert_eq!(s.last_tid(), f.tids[0]);
    let rev = s.load(f.oids[0], Tid::MAX).unwrap();
    assert_eq!((rev.tid, rev.data), (f.tids[0], b"data 0".to_vec()));
    let t = s
        .transactions(Tid::ZERO, Tid::MAX)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(
        (t.meta.user.as_str(), t.meta.description.as_str()),
        ("alice", "first")
    );
    assert!(
        s.new_oid().unwrap() > f.oids[1],
        "oids allocated in the source are not reused"
    );
}

#[test]
fn recover_copies_a_healthy_file_whole_and_refuses_to_overwrite() {
    let f = fixture();
    let out = f.path.with_file_name("copy.zdb");
    let r = recover(&f.path, &out).unwrap();
    assert_eq!((r.copied, r.damage, r.lost_transactions), (3, None, 0));
    let s = FileStorage::open(&out, FileOptions::new().read_only(true)).unwrap();
    let h: Vec<Tid> = s
        .history(f.oids[0], 10)
        .unwrap()
        .iter()
        .map(|r| r.tid)
        .collect();
    assert_eq!(h, vec![f.tids[2], f.tids[0]]);
    drop(s);
    let err = recover(&f.path, &out).unwrap_err().to_string();
    assert!(err.contains("exists already"), "{err}");
}

#[test]
fn copied_transactions_must_keep_increasing_tids() {
    let f = fixture();
    let out = f.path.with_file_name("copy.zdb");
    recover(&f.path, &out).unwrap();
    let s = FileStorage::open(&out, FileOptions::new()).unwrap();
    let err = s
        .copy_transaction(
            f.tids[1],
            TransactionMeta::default(),
            0,
            vec![(Oid(1), b"x".to_vec())],
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("is not after the last tid"),
        "{err}"
    );
}
