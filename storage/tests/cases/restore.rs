//! Contract cases for `Storage::restore` and `restore_batch`: a transaction copied
//! from another storage keeps its tid, metadata and data, only after the last tid;
//! its oids count as allocated; subscribers hear of it as of any commit. Every
//! backend in the tree takes copied transactions, so no case skips one.

use super::*;
use zodiac_storage::CopiedTransaction;

/// Metadata with every field set, to see each one kept.
fn full_meta(description: &str) -> TransactionMeta {
    let mut meta = meta(description);
    meta.user = "/ copier".into();
    meta.extension
        .insert("origin".into(), b"\x00source\xff".to_vec());
    meta
}

pub fn restore_keeps_tid_metadata_and_data(s: Subject) {
    let (a, t1) = create(&*s, b"a1");
    let far = Oid(1000);
    let tid = Tid(t1.0 + 10);
    let records = vec![(far, b"far".to_vec()), (a, b"a2".to_vec())];
    s.restore(tid, &full_meta("copied"), &records).unwrap();
    assert_eq!(s.last_tid(), tid);
    assert_eq!(s.load(far, Tid::MAX).unwrap(), rev(tid, b"far"));
    assert_eq!(s.load(a, Tid::MAX).unwrap(), rev(tid, b"a2"));
    assert_eq!(s.load(a, t1).unwrap(), rev(t1, b"a1"));
    assert_eq!(s.load_revision(far, tid).unwrap(), b"far");
    let txns = all_transactions(&*s, tid, tid);
    assert_eq!(
        txns,
        vec![TransactionInfo {
            tid,
            meta: full_meta("copied"),
            changes: vec![
                ChangeInfo { oid: a, size: 2 },
                ChangeInfo { oid: far, size: 3 },
            ],
        }]
    );
    // A batch restores in order; later commits follow the copied tids.
    let batch: Vec<CopiedTransaction> = (1..=3)
        .map(|i| CopiedTransaction {
            tid: Tid(tid.0 + i),
            meta: meta(&format!("batch {i}")),
            records: vec![(far, vec![i as u8])],
        })
        .collect();
    s.restore_batch(&batch).unwrap();
    assert_eq!(s.last_tid(), Tid(tid.0 + 3));
    assert_eq!(
        s.load(far, Tid(tid.0 + 2)).unwrap(),
        rev(Tid(tid.0 + 2), &[2])
    );
    let later = commit(&*s, &[(far, Tid(tid.0 + 3), b"after")]);
    assert!(later > Tid(tid.0 + 3));
}

pub fn restore_refuses_a_tid_not_after_the_last_tid(s: Subject) {
    let (a, t1) = create(&*s, b"a1");
    let fresh = Oid(700);
    for tid in [t1, Tid(t1.0 - 1)] {
        assert_err!(
            s.restore(tid, &meta("late"), &[(fresh, b"x".to_vec())]),
            Error::TidNotIncreasing { tid: got, last } if got == tid && last == t1
        );
    }
    assert_eq!(s.last_tid(), t1);
    assert_eq!(all_transactions(&*s, Tid::ZERO, Tid::MAX).len(), 1);
    assert_err!(s.load(fresh, Tid::MAX), Error::NoSuchObject { .. });
    assert_eq!(s.load(a, Tid::MAX).unwrap(), rev(t1, b"a1"));
}

pub fn restored_oids_are_never_handed_out_by_new_oid(s: Subject) {
    // One oid allocated before: a client storage holds spare ones from its server.
    let first = s.new_oid().unwrap();
    let restored = [Oid(first.0 + 2), Oid(first.0 + 500)];
    let records: Vec<_> = restored.iter().map(|o| (*o, b"r".to_vec())).collect();
    s.restore(Tid(s.last_tid().0 + 1_000), &meta("copied"), &records)
        .unwrap();
    for _ in 0..600 {
        let oid = s.new_oid().unwrap();
        assert!(
            !restored.contains(&oid),
            "new_oid handed out restored {oid}"
        );
        assert_ne!(oid, first);
    }
}

pub fn subscribers_see_restored_transactions(s: Subject) {
    let sub = s.subscribe();
    let tid = Tid(s.last_tid().0 + 77);
    let (b, c) = (Oid(40), Oid(30));
    s.restore(
        tid,
        &meta("copied"),
        &[(b, b"b".to_vec()), (c, b"c".to_vec())],
    )
    .unwrap();
    assert_eq!(event_of(&sub), (tid, vec![c, b]));
    assert!(sub.try_recv().is_none());
}
