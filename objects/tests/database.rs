//! The objects layer against every storage: roots and references, typed reads, what
//! a commit writes, savepoints, metadata, the cache bounds, damaged records.

mod common;

use std::sync::Arc;

use common::*;
use zodiac_objects::{Error, PRef, Persistent, record};
use zodiac_storage::{Oid, Tid, TransactionMeta};

#[test]
fn objects_and_references_survive_commit_and_reload() {
    each_storage(|storage| {
        let db = open(Arc::clone(&storage));
        let bank = db
            .transact(|tx| {
                let a = tx.add(Account {
                    owner: "ann".into(),
                    balance: 10,
                })?;
                let b = tx.add(Account {
                    owner: "bob".into(),
                    balance: 20,
                })?;
                let bank = tx.add(Bank {
                    name: "first".into(),
                    accounts: vec![a, b],
                })?;
                tx.set_root_entry("bank", bank)?;
                Ok(bank)
            })
            .unwrap();
        // A second database over the same storage has an empty cache: everything
        // comes from the records.
        let db2 = open(Arc::clone(&storage));
        let mut conn = db2.connection();
        let mut tx = conn.begin();
        let found: PRef<Bank> = tx.root_entry("bank").unwrap().unwrap();
        assert_eq!(found, bank);
        let bank = tx.get(&found).unwrap();
        assert_eq!(bank.name, "first");
        let owners: Vec<String> = bank
            .accounts
            .iter()
            .map(|a| tx.get(a).unwrap().owner.clone())
            .collect();
        assert_eq!(owners, ["ann", "bob"]);
        assert_eq!(
            tx.get(&tx.root()).unwrap().names().collect::<Vec<_>>(),
            ["bank"]
        );
        // The envelope lists the references without the type.
        let rev = storage.load(found.oid(), Tid::MAX).unwrap();
        let mut expected: Vec<Oid> = bank.accounts.iter().map(|a| a.oid()).collect();
        expected.sort();
        assert_eq!(record::referenced_oids(&rev.data).unwrap(), expected);
        assert_eq!(record::type_name(&rev.data).unwrap(), "bank.Bank");
        let root = storage.load(Oid::ROOT, Tid::MAX).unwrap();
        assert_eq!(record::referenced_oids(&root.data).unwrap(), [found.oid()]);
    });
}

#[test]
fn opening_twice_keeps_one_root() {
    each_storage(|storage| {
        let db = open(Arc::clone(&storage));
        add_account(&db, "ann", 1);
        let db2 = open(Arc::clone(&storage));
        let acct = db2
            .transact(|tx| tx.root_entry::<Account>("ann"))
            .unwrap()
            .unwrap();
        assert_eq!(balance(&db2, acct), 1);
        assert_eq!(storage.history(Oid::ROOT, 10).unwrap().len(), 2);
    });
}

#[test]
fn reading_as_the_wrong_type_names_oid_and_both_types() {
    each_storage(|storage| {
        let db = open(storage);
        let acct = add_account(&db, "ann", 1);
        let mut conn = db.connection();
        // Once from the storage, once from the cache, once from the transaction's changes.
        for _ in 0..2 {
            let mut tx = conn.begin();
            let err = tx.get(&acct.cast::<Bank>()).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "object {} is a \"bank.Account\" but was read as a \"bank.Bank\"; fix the \
                     reference's type",
                    acct.oid()
                )
            );
            assert!(matches!(err, Error::WrongType { oid, .. } if oid == acct.oid()));
            tx.get(&acct).unwrap();
        }
        let mut tx = conn.begin();
        tx.modify(&acct, |a| a.balance = 2).unwrap();
        let err = tx
            .modify(&acct.cast::<Tally>(), |t| t.count = 1)
            .unwrap_err();
        assert!(
            matches!(&err, Error::WrongType { stored, requested: "test.Tally", .. } if stored == "bank.Account"),
            "{err}"
        );
    });
}

#[test]
fn only_changed_objects_are_written_with_their_base_tid() {
    each_storage(|storage| {
        let db = open(Arc::clone(&storage));
        let a = add_account(&db, "a", 1);
        let b = add_account(&db, "b", 1);
        let c = add_account(&db, "c", 1);
        db.transact(|tx| {
            for acct in [a, b, c] {
                tx.get(&acct)?;
            }
            tx.modify(&b, |x| x.balance = 5)?;
            Ok(())
        })
        .unwrap();
        let last = storage.last_tid();
        let txn = storage
            .transactions(last, last)
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let written: Vec<Oid> = txn.changes.iter().map(|c| c.oid).collect();
        assert_eq!(written, [b.oid()]);
        // A transaction that only reads writes nothing.
        db.transact(|tx| tx.get(&a).map(|_| ())).unwrap();
        assert_eq!(storage.last_tid(), last);
    });
}

#[test]
fn abort_and_drop_leave_no_trace() {
    each_storage(|storage| {
        let db = open(Arc::clone(&storage));
        let acct = add_account(&db, "ann", 1);
        let last = storage.last_tid();
        let mut conn = db.connection();
        let mut tx = conn.begin();
        tx.modify(&acct, |a| a.balance = 99).unwrap();
        assert_eq!(tx.get(&acct).unwrap().balance, 99);
        tx.abort();
        let mut tx = conn.begin();
        tx.modify(&acct, |a| a.balance = 98).unwrap();
        drop(tx);
        let mut tx = conn.begin();
        assert_eq!(tx.get(&acct).unwrap().balance, 1);
        assert_eq!(storage.last_tid(), last);
    });
}

#[test]
fn savepoint_rollback_forgets_later_changes_only() {
    each_storage(|storage| {
        let db = open(storage);
        let acct = add_account(&db, "ann", 1);
        let mut conn = db.connection();
        let mut tx = conn.begin();
        tx.modify(&acct, |a| a.balance = 2).unwrap();
        let sp = tx.savepoint();
        tx.modify(&acct, |a| a.balance = 3).unwrap();
        let extra = tx
            .add(Account {
                owner: "tmp".into(),
                balance: 0,
            })
            .unwrap();
        tx.set_root_entry("tmp", extra).unwrap();
        assert_eq!(tx.changed_count(), 3);
        tx.rollback_to(&sp).unwrap();
        assert_eq!(tx.get(&acct).unwrap().balance, 2);
        assert_eq!(tx.changed_count(), 1);
        // The savepoint stays usable.
        tx.modify(&acct, |a| a.balance = 4).unwrap();
        tx.rollback_to(&sp).unwrap();
        assert_eq!(tx.get(&acct).unwrap().balance, 2);
        tx.commit().unwrap();
        assert_eq!(balance(&db, acct), 2);
        let root = db.transact(|tx| tx.root_entry::<Account>("tmp")).unwrap();
        assert_eq!(root, None);
        // A savepoint of another transaction is refused.
        let mut tx = conn.begin();
        assert!(matches!(tx.rollback_to(&sp), Err(Error::ForeignSavepoint)));
    });
}

#[test]
fn commit_or_rollback_to_drops_only_the_changes_after_the_savepoint_on_a_conflict() {
    each_storage(|storage| {
        let db = open(storage);
        let (a, b) = (add_account(&db, "ann", 1), add_account(&db, "bob", 1));
        let set = |acct: PRef<Account>, v: i64| {
            db.transact(|tx| tx.modify(&acct, |x| x.balance = v))
                .unwrap();
        };
        let mut conn = db.connection();
        // No conflict: everything commits.
        let mut tx = conn.begin();
        tx.modify(&a, |x| x.balance = 2).unwrap();
        let sp = tx.savepoint();
        tx.modify(&b, |x| x.balance = 2).unwrap();
        let (tid, all) = tx.commit_or_rollback_to(&sp).unwrap();
        assert!(tid.is_some() && all);
        assert_eq!((balance(&db, a), balance(&db, b)), (2, 2));
        // A competitor on a change after the savepoint costs that change only.
        let mut tx = conn.begin();
        tx.modify(&a, |x| x.balance = 3).unwrap();
        let sp = tx.savepoint();
        tx.modify(&b, |x| x.balance = 3).unwrap();
        set(b, 10);
        let (tid, all) = tx.commit_or_rollback_to(&sp).unwrap();
        assert!(tid.is_some() && !all);
        assert_eq!((balance(&db, a), balance(&db, b)), (3, 10));
        // A competitor on a change before the savepoint fails the commit.
        let mut tx = conn.begin();
        tx.modify(&a, |x| x.balance = 4).unwrap();
        let sp = tx.savepoint();
        tx.modify(&b, |x| x.balance = 4).unwrap();
        set(a, 20);
        assert!(matches!(
            tx.commit_or_rollback_to(&sp),
            Err(Error::Conflict(c)) if c.oid == a.oid()
        ));
        assert_eq!((balance(&db, a), balance(&db, b)), (20, 10));
        // A savepoint of another transaction is refused before anything is written.
        let tx = conn.begin();
        assert!(matches!(
            tx.commit_or_rollback_to(&sp),
            Err(Error::ForeignSavepoint)
        ));
    });
}

#[test]
fn commit_stats_count_commits_and_merged_and_reported_conflicts() {
    each_storage(|storage| {
        let db = open(storage);
        let acct = add_account(&db, "ann", 1);
        let counter = db
            .transact(|tx| tx.add(zodiac_objects::Counter::new(0)))
            .unwrap();
        let before = db.commit_stats();
        let (mut c1, mut c2) = (db.connection(), db.connection());
        // Both change the counter: the second merges.
        let (mut t1, mut t2) = (c1.begin(), c2.begin());
        t1.modify(&counter, |c| c.add(1)).unwrap();
        t2.modify(&counter, |c| c.add(2)).unwrap();
        t1.commit().unwrap();
        t2.commit().unwrap();
        // Both change the account: the second is reported.
        let (mut t1, mut t2) = (c1.begin(), c2.begin());
        t1.modify(&acct, |a| a.balance = 5).unwrap();
        t2.modify(&acct, |a| a.balance = 6).unwrap();
        t1.commit().unwrap();
        assert!(matches!(t2.commit(), Err(Error::Conflict(_))));
        // Nothing written: not a commit.
        c1.begin().commit().unwrap();
        let after = db.commit_stats();
        assert_eq!(after.commits - before.commits, 3);
        assert_eq!(after.conflicts_resolved - before.conflicts_resolved, 1);
        assert_eq!(after.conflicts_unresolved - before.conflicts_unresolved, 1);
    });
}

#[test]
fn transaction_metadata_reaches_the_storage() {
    each_storage(|storage| {
        let db = open(Arc::clone(&storage));
        let acct = add_account(&db, "ann", 1);
        let mut conn = db.connection();
        let mut tx = conn.begin();
        tx.set_user("ann");
        tx.set_description("deposit");
        tx.set_extension("request", b"42".to_vec());
        tx.modify(&acct, |a| a.balance += 1).unwrap();
        let tid = tx.commit().unwrap().unwrap();
        let info = storage
            .transactions(tid, tid)
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(info.meta.user, "ann");
        assert_eq!(info.meta.description, "deposit");
        assert_eq!(info.meta.extension["request"], b"42");
    });
}

#[test]
fn cache_is_bounded_by_count_with_stats() {
    each_storage(|storage| {
        let writer = open(Arc::clone(&storage));
        let accts: Vec<_> = (0..5)
            .map(|i| add_account(&writer, &format!("a{i}"), i))
            .collect();
        let db = open_with(storage, |o| o.cache_objects_max = 3);
        let mut conn = db.connection();
        let start = conn.cache_stats();
        assert_eq!(start, Default::default());
        let mut tx = conn.begin();
        for acct in &accts {
            tx.get(acct).unwrap();
        }
        tx.get(&accts[4]).unwrap(); // most recent: a hit
        tx.get(&accts[0]).unwrap(); // evicted: a miss, and another eviction
        drop(tx);
        let stats = conn.cache_stats();
        assert_eq!(stats.objects, 3);
        assert_eq!(stats.hits - start.hits, 1);
        assert_eq!(stats.misses - start.misses, 6);
        assert_eq!(stats.evictions - start.evictions, 3);
    });
}

#[test]
fn cache_is_bounded_by_bytes() {
    each_storage(|storage| {
        let probe = open(Arc::clone(&storage));
        let accts: Vec<_> = (0..4)
            .map(|i| add_account(&probe, &format!("y{i}"), 0))
            .collect();
        let one = storage.load(accts[0].oid(), Tid::MAX).unwrap().data.len();
        // Room for two such records, not three.
        let db = open_with(storage, |o| o.cache_bytes_max = 2 * one + one / 2);
        let mut conn = db.connection();
        let mut tx = conn.begin();
        for a in &accts {
            tx.get(a).unwrap();
        }
        drop(tx);
        let stats = conn.cache_stats();
        assert_eq!(stats.objects, 2);
        assert_eq!(stats.bytes, 2 * one);
        assert!(stats.bytes <= db.options().cache_bytes_max);
        assert_eq!(stats.evictions, 2);
        assert_eq!(stats.misses, 4);
    });
}

#[test]
fn a_damaged_record_is_an_error_naming_the_object() {
    each_storage(|storage| {
        let db = open(Arc::clone(&storage));
        let oid = storage.new_oid().unwrap();
        let mut txn = storage.begin(TransactionMeta::default()).unwrap();
        txn.store(oid, Tid::ZERO, b"not an envelope".to_vec())
            .unwrap();
        txn.finish().unwrap();
        let mut conn = db.connection();
        let mut tx = conn.begin();
        let err = tx.get(&PRef::<Account>::from_oid(oid)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "object {oid}: damaged record: record does not start with the object envelope \
                 magic \"Zo\" (found [6e, 6f])"
            )
        );
        // An envelope whose payload is not the type's encoding.
        let oid = storage.new_oid().unwrap();
        let mut txn = storage.begin(TransactionMeta::default()).unwrap();
        let bad = record::encode(Account::TYPE_NAME, &[], &[0xFF; 3]);
        txn.store(oid, Tid::ZERO, bad).unwrap();
        txn.finish().unwrap();
        let mut tx = conn.begin();
        let err = tx.get(&PRef::<Account>::from_oid(oid)).unwrap_err();
        assert!(
            matches!(err, Error::Decode { oid: o, type_name: "bank.Account", .. } if o == oid),
            "{err}"
        );
    });
}

#[test]
fn a_record_from_an_older_version_of_a_type_reads_with_defaults() {
    mod v2 {
        use serde::{Deserialize, Serialize};
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        pub struct Account {
            pub owner: String,
            pub balance: i64,
            #[serde(default)]
            pub frozen: bool,
        }
        zodiac_objects::persistent!(Account = "bank.Account");
    }
    each_storage(|storage| {
        let old = open(Arc::clone(&storage));
        let acct = add_account(&old, "ann", 7);
        // A new program version opens the same data.
        let new = open(storage);
        let read = new
            .transact(|tx| tx.get(&acct.cast::<v2::Account>()))
            .unwrap();
        assert_eq!(
            *read,
            v2::Account {
                owner: "ann".into(),
                balance: 7,
                frozen: false,
            }
        );
    });
}

#[test]
fn data_survives_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdc");
    let acct = {
        let storage = zodiac_storage::FileStorage::open(&path, Default::default()).unwrap();
        let db = open(Arc::new(storage));
        let acct = add_account(&db, "ann", 3);
        db.transact(|tx| tx.modify(&acct, |a| a.balance += 4))
            .unwrap();
        db.storage().close().unwrap();
        acct
    };
    let storage = zodiac_storage::FileStorage::open(&path, Default::default()).unwrap();
    let db = open(Arc::new(storage));
    let found = db.transact(|tx| tx.root_entry::<Account>("ann")).unwrap();
    assert_eq!(found, Some(acct));
    assert_eq!(balance(&db, acct), 7);
}

#[test]
fn opening_a_storage_whose_root_is_not_a_root_object_fails() {
    each_storage(|storage| {
        let mut txn = storage.begin(TransactionMeta::default()).unwrap();
        let wrong = record::encode("other.Thing", &[], &[]);
        txn.store(Oid::ROOT, Tid::ZERO, wrong).unwrap();
        txn.finish().unwrap();
        let err = zodiac_objects::Database::open(Arc::clone(&storage))
            .err()
            .expect("refused");
        assert_eq!(
            err.to_string(),
            "object 0x0 is a \"other.Thing\" but was read as a \"zodiac.Root\"; fix the \
             reference's type"
        );
        let mut txn = storage.begin(TransactionMeta::default()).unwrap();
        let base = storage.last_tid();
        txn.store(Oid::ROOT, base, b"Zo\x09".to_vec()).unwrap();
        txn.finish().unwrap();
        let err = zodiac_objects::Database::open(storage)
            .err()
            .expect("refused");
        assert!(
            matches!(err, Error::DamagedRecord { oid: Oid::ROOT, .. }),
            "{err}"
        );
    });
}
