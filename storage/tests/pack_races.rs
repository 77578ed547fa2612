//! Pack racing with close, with save_index and with reads.

use std::sync::mpsc;
use std::sync::{Arc, Barrier};

use zodiac_storage::{
    Durability, Error, FileOptions, FileStorage, Oid, Storage, Tid, TransactionMeta,
};

fn fast() -> FileOptions {
    FileOptions::new().durability(Durability::Off)
}

fn write(s: &dyn Storage, oid: Oid, bytes: &[u8]) -> Tid {
    let mut t = s.begin(TransactionMeta::described("test")).unwrap();
    let base = s.load(oid, Tid::MAX).map(|r| r.tid).unwrap_or(Tid::ZERO);
    t.store(oid, base, bytes.to_vec()).unwrap();
    t.finish().unwrap()
}

/// A pack that was running when the storage was closed must not go on to replace
/// the file: after close the writer lock is released and another writer may own it.
#[test]
fn a_pack_running_at_close_does_not_replace_the_file_afterwards() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let a = Arc::new(FileStorage::open(&path, fast()).unwrap());
    for i in 0..20u8 {
        write(&*a, Oid::ROOT, &[i; 100]);
    }
    let (reached_tx, reached_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let packer = {
        let a = Arc::clone(&a);
        std::thread::spawn(move || {
            let mut first = true;
            a.pack_with(Tid::MAX, None, |_, _| {
                if first {
                    first = false;
                    reached_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                }
            })
        })
    };
    reached_rx.recv().unwrap();
    a.close().unwrap();
    // The lock is free now: a second writer opens the file and commits.
    let b = FileStorage::open(&path, fast()).unwrap();
    let acknowledged = write(&b, Oid::ROOT, b"committed by the second writer");
    b.sync().unwrap();
    go_tx.send(()).unwrap();
    let _ = packer.join().unwrap();
    drop(b);
    drop(a);
    let c = FileStorage::open(&path, fast()).unwrap();
    let r = c.load(Oid::ROOT, Tid::MAX).unwrap();
    assert_eq!(r.tid, acknowledged, "the second writer's commit was lost");
    assert_eq!(r.data, b"committed by the second writer");
}

/// Iterating transactions while packs swap the file in never reports damage: the
/// end of the data and the map it is read from must belong to the same file.
#[test]
fn transaction_walks_racing_packs_see_no_damage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let s = Arc::new(FileStorage::open(&path, fast()).unwrap());
    for i in 0..50u8 {
        write(&*s, Oid::ROOT, &[i; 200]);
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let start = Arc::new(Barrier::new(3));
    let packer = {
        let (s, stop, start) = (Arc::clone(&s), Arc::clone(&stop), Arc::clone(&start));
        std::thread::spawn(move || {
            start.wait();
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for i in 0..20u8 {
                    write(&*s, Oid::ROOT, &[i; 200]);
                }
                s.pack(Tid::MAX, None).unwrap();
                n += 1;
            }
            n
        })
    };
    let walker = {
        let (s, stop, start) = (Arc::clone(&s), Arc::clone(&stop), Arc::clone(&start));
        std::thread::spawn(move || {
            start.wait();
            let mut failures = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match s.transactions(Tid::ZERO, Tid::MAX) {
                    Ok(it) => {
                        for t in it {
                            if let Err(e) = t {
                                failures.push(format!("transactions: {e}"));
                                break;
                            }
                        }
                    }
                    Err(e) => failures.push(format!("transactions: {e}")),
                }
                if let Err(e) = s.last_transactions(3) {
                    failures.push(format!("last_transactions: {e}"));
                }
            }
            failures
        })
    };
    start.wait();
    std::thread::sleep(std::time::Duration::from_secs(4));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let packs = packer.join().unwrap();
    let failures = walker.join().unwrap();
    assert!(packs > 0);
    assert!(
        failures.is_empty(),
        "{} of the walks failed during {packs} packs, first: {}",
        failures.len(),
        failures[0]
    );
}

fn refs_data(refs: &[Oid], payload: &str) -> Vec<u8> {
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

/// An object unreachable at the pack time that a transaction committed during the
/// pack refers to again must survive the pack: that transaction is after the pack
/// time, so what it refers to is a GC root.
#[test]
fn gc_keeps_an_object_a_commit_during_the_pack_refers_to() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let s = Arc::new(FileStorage::open(&path, fast()).unwrap());
    let x = s.new_oid().unwrap();
    {
        let mut t = s.begin(TransactionMeta::described("create")).unwrap();
        t.store(Oid::ROOT, Tid::ZERO, refs_data(&[x], "root"))
            .unwrap();
        t.store(x, Tid::ZERO, refs_data(&[], "x")).unwrap();
        t.finish().unwrap();
    }
    write(&*s, Oid::ROOT, &refs_data(&[], "root without x"));
    let (reached_tx, reached_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let packer = {
        let s = Arc::clone(&s);
        std::thread::spawn(move || {
            let mut first = true;
            s.pack_with(Tid::MAX, Some(&references), |_, _| {
                if first {
                    first = false;
                    reached_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                }
            })
        })
    };
    reached_rx.recv().unwrap();
    // Meanwhile the root refers to x again (a client that still held it).
    write(&*s, Oid::ROOT, &refs_data(&[x], "root with x again"));
    go_tx.send(()).unwrap();
    // The pack cannot keep x (its revisions before the pack are left behind), so it
    // is abandoned and the file stays as it was; a later pack keeps x.
    let err = packer.join().unwrap().unwrap_err();
    assert!(
        matches!(&err, Error::PackAbandoned { oid, .. } if *oid == x),
        "{err}"
    );
    assert!(err.to_string().contains("pack again"), "{err}");
    s.pack(Tid::MAX, Some(&references)).unwrap();
    let r = s.load(x, Tid::MAX);
    assert!(
        r.as_ref().is_ok_and(|r| r.data == refs_data(&[], "x")),
        "the root refers to {x} but it was removed: {r:?}"
    );
}

/// A reference to an oid far beyond every allocated one (damaged object data) is a
/// dangling reference to report or ignore: it must not make the GC's reachability
/// set allocate memory in proportion to the oid's value.
#[test]
fn gc_with_a_reference_to_a_huge_oid_does_not_allocate_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let s = FileStorage::open(&path, fast()).unwrap();
    write(&s, Oid::ROOT, &refs_data(&[Oid(1 << 50)], "root"));
    write(&s, Oid::ROOT, &refs_data(&[Oid(1 << 50)], "root again"));
    let report = s.pack(Tid::MAX, Some(&references)).unwrap();
    assert_eq!(report.revisions_after, 1);
}
