//! The persistent B+ tree: same answers as std's BTreeMap through splits at every
//! level, one bucket written per change, and bucket-level conflict resolution.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread;

use common::*;
use zodiac_objects::{BTree, PRef};
use zodiac_storage::Storage;

type Tree = BTree<u64, String>;

/// A permutation of 0..n, spread out (multiplication by a unit modulo n).
fn scattered(n: u64) -> impl Iterator<Item = u64> {
    (0..n).map(move |i| (i * 7919) % n)
}

fn changed_objects(storage: &Arc<dyn Storage>) -> usize {
    let last = storage.last_tid();
    let txn = storage
        .transactions(last, last)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    txn.changes.len()
}

#[test]
fn matches_a_std_btreemap_through_splits_at_every_level() {
    each_storage(|storage| {
        let db = open(storage);
        let tree = db.transact(|tx| Tree::create_with(tx, 4, 4)).unwrap();
        let mut model = BTreeMap::new();
        // Several commits, so later ones read what earlier ones wrote.
        let keys: Vec<u64> = scattered(1000).collect();
        for chunk in keys.chunks(250) {
            db.transact(|tx| {
                for &k in chunk {
                    Tree::insert(tx, &tree, k, format!("v{k}"))?;
                }
                Ok(())
            })
            .unwrap();
            for &k in chunk {
                model.insert(k, format!("v{k}"));
            }
        }
        db.transact(|tx| {
            for k in (0..1000).step_by(3) {
                let expected = model.remove(&k);
                assert_eq!(Tree::remove(tx, &tree, &k)?, expected);
            }
            assert_eq!(Tree::remove(tx, &tree, &5000)?, None);
            assert_eq!(Tree::insert(tx, &tree, 1, "new".into())?, Some("v1".into()));
            model.insert(1, "new".into());
            Ok(())
        })
        .unwrap();
        let mut conn = open(Arc::clone(db.storage())).connection(); // a cold cache
        let mut tx = conn.begin();
        assert!(
            Tree::depth(&mut tx, &tree).unwrap() >= 4,
            "splits reached the root"
        );
        let all = Tree::entries(&mut tx, &tree).unwrap();
        assert_eq!(all, model.clone().into_iter().collect::<Vec<_>>());
        assert_eq!(Tree::len(&mut tx, &tree).unwrap(), model.len() as u64);
        for k in 0..1001 {
            assert_eq!(
                Tree::get(&mut tx, &tree, &k).unwrap(),
                model.get(&k).cloned()
            );
        }
    });
}

#[test]
fn a_change_writes_only_its_bucket() {
    each_storage(|storage| {
        let db = open(Arc::clone(&storage));
        let tree = db.transact(Tree::create).unwrap();
        db.transact(|tx| {
            for k in 0..500 {
                Tree::insert(tx, &tree, k, "x".into())?;
            }
            Ok(())
        })
        .unwrap();
        db.transact(|tx| Tree::insert(tx, &tree, 250, "y".into()))
            .unwrap();
        assert_eq!(changed_objects(&storage), 1);
        // Adding or removing a key also changes the length counter, nothing else.
        db.transact(|tx| Tree::remove(tx, &tree, &17)).unwrap();
        assert_eq!(changed_objects(&storage), 2);
        db.transact(|tx| Tree::insert(tx, &tree, 17, "z".into()))
            .unwrap();
        assert_eq!(changed_objects(&storage), 2);
        // Setting the value a key already has writes nothing.
        let last = storage.last_tid();
        db.transact(|tx| Tree::insert(tx, &tree, 250, "y".into()))
            .unwrap();
        assert_eq!(storage.last_tid(), last);
    });
}

#[test]
fn concurrent_changes_to_one_bucket_merge_unless_they_touch_the_same_key() {
    each_storage(|storage| {
        let db = open_with(storage, |o| o.retry.attempts_max = 1);
        let tree = db.transact(Tree::create).unwrap();
        db.transact(|tx| {
            for k in [10, 20, 30] {
                Tree::insert(tx, &tree, k, "old".into())?;
            }
            Ok(())
        })
        .unwrap();
        let (mut c1, mut c2) = (db.connection(), db.connection());
        let (mut t1, mut t2) = (c1.begin(), c2.begin());
        Tree::insert(&mut t1, &tree, 15, "one".into()).unwrap();
        Tree::remove(&mut t1, &tree, &10).unwrap();
        Tree::insert(&mut t2, &tree, 25, "two".into()).unwrap();
        Tree::insert(&mut t2, &tree, 30, "two".into()).unwrap();
        t1.commit().unwrap();
        t2.commit().unwrap();
        drop((c1, c2));
        let all = db.transact(|tx| Tree::entries(tx, &tree)).unwrap();
        let expected: Vec<(u64, String)> = [(15, "one"), (20, "old"), (25, "two"), (30, "two")]
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect();
        assert_eq!(all, expected);
        // The same key changed two ways cannot merge.
        let (mut c1, mut c2) = (db.connection(), db.connection());
        let (mut t1, mut t2) = (c1.begin(), c2.begin());
        Tree::insert(&mut t1, &tree, 20, "a".into()).unwrap();
        Tree::insert(&mut t2, &tree, 20, "b".into()).unwrap();
        t1.commit().unwrap();
        let err = t2.commit().unwrap_err();
        assert!(err.as_conflict().is_some(), "{err}");
    });
}

#[test]
fn a_split_is_not_merged_with_a_concurrent_insert_into_the_moved_half() {
    each_storage(|storage| {
        let db = open(storage);
        let tree = db.transact(|tx| Tree::create_with(tx, 4, 4)).unwrap();
        db.transact(|tx| {
            for k in [10, 20, 30] {
                Tree::insert(tx, &tree, k, "old".into())?;
            }
            Ok(())
        })
        .unwrap();
        let (mut c1, mut c2) = (db.connection(), db.connection());
        let (mut t1, mut t2) = (c1.begin(), c2.begin());
        Tree::insert(&mut t1, &tree, 25, "split".into()).unwrap();
        Tree::insert(&mut t1, &tree, 35, "split".into()).unwrap(); // 5 entries: splits at 25
        Tree::insert(&mut t2, &tree, 40, "late".into()).unwrap(); // 4 entries: no split
        t1.commit().unwrap();
        assert_eq!(db.transact(|tx| Tree::depth(tx, &tree)).unwrap(), 1);
        assert!(t2.commit().unwrap_err().as_conflict().is_some());
        drop((c1, c2));
        // Retried, the insert lands in the bucket that now holds its range.
        db.transact(|tx| Tree::insert(tx, &tree, 40, "late".into()))
            .unwrap();
        let keys: Vec<u64> = db
            .transact(|tx| Tree::entries(tx, &tree))
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, [10, 20, 25, 30, 35, 40]);
    });
}

#[test]
fn many_threads_inserting_lose_nothing() {
    each_storage(|storage| {
        let db = open_with(storage, |o| o.retry.attempts_max = 1000);
        let tree: PRef<Tree> = db.transact(|tx| Tree::create_with(tx, 8, 4)).unwrap();
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                let db = db.clone();
                thread::spawn(move || {
                    for i in 0..50u64 {
                        let k = i * 4 + t;
                        db.transact(|tx| Tree::insert(tx, &tree, k, format!("{t}")))
                            .unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let all = db.transact(|tx| Tree::entries(tx, &tree)).unwrap();
        assert_eq!(all.len(), 200);
        // The length counter merged every concurrent increment.
        assert_eq!(db.transact(|tx| Tree::len(tx, &tree)).unwrap(), 200);
        for (i, (k, v)) in all.iter().enumerate() {
            assert_eq!(*k, i as u64);
            assert_eq!(*v, (k % 4).to_string());
        }
    });
}

mod model {
    use super::*;
    use proptest::prelude::*;
    use zodiac_storage::MemoryStorage;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Inserts and removes in several transactions, small capacities so that
        /// splits happen at every level; the tree must answer like std's BTreeMap.
        #[test]
        fn agrees_with_std_btreemap(
            ops in proptest::collection::vec((any::<bool>(), 0..200u64, 0..5u8), 1..300),
            per_commit in 1..40usize,
        ) {
            let db = open(Arc::new(MemoryStorage::new()));
            let tree = db.transact(|tx| Tree::create_with(tx, 3, 3)).unwrap();
            let mut model = BTreeMap::new();
            for chunk in ops.chunks(per_commit) {
                db.transact(|tx| {
                    for &(insert, k, v) in chunk {
                        if insert {
                            Tree::insert(tx, &tree, k, v.to_string())?;
                        } else {
                            Tree::remove(tx, &tree, &k)?;
                        }
                    }
                    Ok(())
                })
                .unwrap();
                for &(insert, k, v) in chunk {
                    if insert {
                        model.insert(k, v.to_string());
                    } else {
                        model.remove(&k);
                    }
                }
            }
            let all = db.transact(|tx| Tree::entries(tx, &tree)).unwrap();
            prop_assert_eq!(all, model.clone().into_iter().collect::<Vec<_>>());
            prop_assert_eq!(db.transact(|tx| Tree::len(tx, &tree)).unwrap(), model.len() as u64);
            for k in 0..200u64 {
                let got = db.transact(|tx| Tree::get(tx, &tree, &k)).unwrap();
                prop_assert_eq!(got, model.get(&k).cloned());
            }
            for (a, b, limit) in [(0, 200, 1000), (17, 90, 1000), (50, 51, 1000), (60, 30, 5), (3, 150, 7)] {
                let got = db.transact(|tx| Tree::range(tx, &tree, a..b, limit)).unwrap();
                let want: Vec<_> = model
                    .iter()
                    .filter(|(k, _)| (a..b).contains(*k))
                    .take(limit)
                    .map(|(k, v)| (*k, v.clone()))
                    .collect();
                prop_assert_eq!(got, want, "{}..{} limit {}", a, b, limit);
                let got = db.transact(|tx| Tree::range(tx, &tree, a..=b, limit)).unwrap();
                let want: Vec<_> = model
                    .iter()
                    .filter(|(k, _)| (a..=b).contains(*k))
                    .take(limit)
                    .map(|(k, v)| (*k, v.clone()))
                    .collect();
                prop_assert_eq!(got, want, "{}..={} limit {}", a, b, limit);
            }
        }
    }
}

#[test]
fn a_narrow_range_loads_only_the_path_to_its_buckets() {
    each_storage(|storage| {
        let db = open(Arc::clone(&storage));
        let tree = db.transact(|tx| Tree::create_with(tx, 8, 4)).unwrap();
        db.transact(|tx| {
            for k in scattered(1000) {
                Tree::insert(tx, &tree, k, "x".into())?;
            }
            Ok(())
        })
        .unwrap();
        let cold = open(storage);
        let mut conn = cold.connection();
        let mut tx = conn.begin();
        let depth = Tree::depth(&mut tx, &tree).unwrap() as u64;
        let before = conn.cache_stats().misses;
        let mut tx = conn.begin();
        let got = Tree::range(&mut tx, &tree, 500..503, usize::MAX).unwrap();
        assert_eq!(
            got.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            [500, 501, 502]
        );
        drop(tx);
        // The handle and root are cached; the rest of the path plus at most two
        // buckets (the range may straddle a split) are loaded.
        let loaded = conn.cache_stats().misses - before;
        assert!(
            loaded <= depth + 1,
            "loaded {loaded} objects at depth {depth}"
        );
        let mut tx = conn.begin();
        let first = Tree::range(&mut tx, &tree, .., 2).unwrap();
        assert_eq!(first.iter().map(|(k, _)| *k).collect::<Vec<_>>(), [0, 1]);
    });
}

/// A queue's pattern: keys taken from the front. Emptied buckets are detached, so
/// finding the first key reads the path to it, not every emptied bucket before it.
#[test]
fn taking_from_the_front_detaches_emptied_buckets() {
    each_storage(|storage| {
        let db = open(Arc::clone(&storage));
        let tree = db.transact(|tx| Tree::create_with(tx, 4, 4)).unwrap();
        db.transact(|tx| {
            for k in 0..2000u64 {
                Tree::insert(tx, &tree, k, "x".into())?;
            }
            Ok(())
        })
        .unwrap();
        for chunk in (0..1990u64).collect::<Vec<_>>().chunks(37) {
            db.transact(|tx| {
                for k in chunk {
                    assert!(Tree::remove(tx, &tree, k)?.is_some());
                }
                Ok(())
            })
            .unwrap();
        }
        let cold = open(storage);
        let mut conn = cold.connection();
        let mut tx = conn.begin();
        let depth = u64::from(Tree::depth(&mut tx, &tree).unwrap());
        let before = conn.cache_stats().misses;
        let mut tx = conn.begin();
        let first = Tree::range(&mut tx, &tree, .., 1).unwrap();
        drop(tx);
        assert_eq!(first, vec![(1990, "x".to_string())]);
        let loaded = conn.cache_stats().misses - before;
        assert!(
            loaded <= depth + 2,
            "the first key took {loaded} loads in a tree of depth {depth}"
        );
        // The tree still works everywhere: below, inside and after the kept keys.
        db.transact(|tx| {
            for k in [5u64, 1995, 5000] {
                Tree::insert(tx, &tree, k, "y".into())?;
            }
            Ok(())
        })
        .unwrap();
        let keys: Vec<u64> = db
            .transact(|tx| Tree::entries(tx, &tree))
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let mut want: Vec<u64> = (1990..2000).chain([5, 5000]).collect();
        want.sort();
        assert_eq!(keys, want);
        assert_eq!(db.transact(|tx| Tree::len(tx, &tree)).unwrap(), 12);
        // Emptied to nothing, the tree keeps one bucket and takes new keys.
        db.transact(|tx| {
            for k in want.iter() {
                Tree::remove(tx, &tree, k)?;
            }
            Tree::insert(tx, &tree, 7, "z".into())?;
            Ok(())
        })
        .unwrap();
        assert_eq!(
            db.transact(|tx| Tree::entries(tx, &tree)).unwrap(),
            vec![(7, "z".to_string())]
        );
    });
}

#[test]
fn an_insert_racing_the_detach_of_its_bucket_conflicts_and_is_not_lost() {
    each_storage(|storage| {
        let db = open(storage);
        let tree = db.transact(|tx| Tree::create_with(tx, 4, 4)).unwrap();
        db.transact(|tx| {
            for k in [10, 20, 30, 40, 50] {
                Tree::insert(tx, &tree, k, "old".into())?; // buckets [10 20] [30 40 50]
            }
            Ok(())
        })
        .unwrap();
        db.transact(|tx| Tree::remove(tx, &tree, &20)).unwrap();
        let (mut c1, mut c2) = (db.connection(), db.connection());
        let (mut t1, mut t2) = (c1.begin(), c2.begin());
        Tree::remove(&mut t1, &tree, &10).unwrap(); // empties and detaches [10]
        Tree::insert(&mut t2, &tree, 15, "racing".into()).unwrap(); // into that bucket
        t1.commit().unwrap();
        assert!(t2.commit().unwrap_err().as_conflict().is_some());
        drop((c1, c2));
        db.transact(|tx| Tree::insert(tx, &tree, 15, "racing".into()))
            .unwrap();
        let keys: Vec<u64> = db
            .transact(|tx| Tree::entries(tx, &tree))
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, [15, 30, 40, 50]);
    });
}

#[test]
fn takers_at_the_front_and_putters_at_the_back_lose_nothing() {
    each_storage(|storage| {
        let db = open_with(storage, |o| o.retry.attempts_max = 10_000);
        let tree: PRef<Tree> = db.transact(|tx| Tree::create_with(tx, 4, 4)).unwrap();
        db.transact(|tx| {
            for k in 0..200u64 {
                Tree::insert(tx, &tree, k, "x".into())?;
            }
            Ok(())
        })
        .unwrap();
        let putters: Vec<_> = (0..2u64)
            .map(|t| {
                let db = db.clone();
                thread::spawn(move || {
                    for i in 0..100u64 {
                        let k = 1000 + i * 2 + t;
                        db.transact(|tx| Tree::insert(tx, &tree, k, "y".into()))
                            .unwrap();
                    }
                })
            })
            .collect();
        let takers: Vec<_> = (0..2)
            .map(|_| {
                let db = db.clone();
                thread::spawn(move || {
                    let mut taken = Vec::new();
                    while taken.len() < 100 {
                        let got = db
                            .transact(|tx| {
                                let Some((k, _)) = Tree::range(tx, &tree, ..1000, 1)?.pop() else {
                                    return Ok(None);
                                };
                                Tree::remove(tx, &tree, &k)?;
                                Ok(Some(k))
                            })
                            .unwrap();
                        taken.extend(got);
                    }
                    taken
                })
            })
            .collect();
        for p in putters {
            p.join().unwrap();
        }
        let mut taken: Vec<u64> = takers.into_iter().flat_map(|t| t.join().unwrap()).collect();
        taken.sort();
        assert_eq!(taken, (0..200).collect::<Vec<_>>(), "each key taken once");
        let left: Vec<u64> = db
            .transact(|tx| Tree::entries(tx, &tree))
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(left, (1000..1200).collect::<Vec<_>>());
        assert_eq!(db.transact(|tx| Tree::len(tx, &tree)).unwrap(), 200);
    });
}
