//! Transactions racing each other: snapshot isolation, conflicts, retries,
//! conflict resolution, check_current, and pooled connections catching up.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;

use common::*;
use zodiac_objects::{Counter, Error, PRef};

#[test]
fn a_running_transaction_never_sees_another_commit_until_its_next_begin() {
    each_storage(|storage| {
        let db = open(storage);
        let a = add_account(&db, "a", 1);
        let b = add_account(&db, "b", 1);
        let mut conn = db.connection();
        let mut tx = conn.begin();
        assert_eq!(tx.get(&a).unwrap().balance, 1); // now cached
        let other = db.clone();
        thread::spawn(move || {
            other
                .transact(|tx| {
                    tx.modify(&a, |x| x.balance = 2)?;
                    tx.modify(&b, |x| x.balance = 2)
                })
                .unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(tx.get(&a).unwrap().balance, 1, "from the cache");
        assert_eq!(tx.get(&b).unwrap().balance, 1, "from the snapshot");
        drop(tx);
        let before = conn.cache_stats().invalidations;
        let mut tx = conn.begin();
        assert_eq!(tx.get(&a).unwrap().balance, 2);
        assert_eq!(tx.get(&b).unwrap().balance, 2);
        drop(tx);
        assert!(conn.cache_stats().invalidations > before);
    });
}

#[test]
fn readers_always_see_a_consistent_total_while_writers_transfer() {
    each_storage(|storage| {
        let db = open(storage);
        let accts: Vec<PRef<_>> = (0..4)
            .map(|i| add_account(&db, &format!("a{i}"), 100))
            .collect();
        let done = Arc::new(AtomicU32::new(0));
        let mut handles = Vec::new();
        for w in 0..2 {
            let (db, accts, done) = (db.clone(), accts.clone(), Arc::clone(&done));
            handles.push(thread::spawn(move || {
                let mut conn = db.connection();
                for i in 0..40 {
                    let (from, to) = (accts[(i + w) % 4], accts[(i + w + 1) % 4]);
                    conn.transact(|tx| {
                        tx.modify(&from, |x| x.balance -= 3)?;
                        tx.modify(&to, |x| x.balance += 3)
                    })
                    .unwrap();
                }
                done.fetch_add(1, Ordering::SeqCst);
            }));
        }
        let reader = {
            let (db, accts, done) = (db.clone(), accts.clone(), Arc::clone(&done));
            thread::spawn(move || {
                let mut conn = db.connection();
                let mut checks = 0;
                while done.load(Ordering::SeqCst) < 2 || checks < 10 {
                    let mut tx = conn.begin();
                    let mut total = 0;
                    for a in &accts {
                        total += tx.get(a).unwrap().balance;
                        thread::yield_now();
                    }
                    assert_eq!(total, 400, "snapshot {}", tx.snapshot());
                    checks += 1;
                }
                checks
            })
        };
        for h in handles {
            h.join().unwrap();
        }
        assert!(reader.join().unwrap() >= 10);
        let total: i64 = accts.iter().map(|a| balance(&db, *a)).sum();
        assert_eq!(total, 400);
    });
}

#[test]
fn a_second_writer_of_an_object_gets_a_conflict_naming_it() {
    each_storage(|storage| {
        let db = open(storage);
        let a = add_account(&db, "a", 1);
        let (mut c1, mut c2) = (db.connection(), db.connection());
        let mut t1 = c1.begin();
        let mut t2 = c2.begin();
        t1.modify(&a, |x| x.balance = 10).unwrap();
        t2.modify(&a, |x| x.balance = 20).unwrap();
        let read_at = db.storage().last_tid();
        let won = t1.commit().unwrap().unwrap();
        let err = t2.commit().unwrap_err();
        let conflict = *err.as_conflict().expect("a conflict");
        assert_eq!(conflict.oid, a.oid());
        assert_eq!(conflict.current_tid, won);
        assert!(conflict.base_tid <= read_at);
        assert_eq!(balance(&db, a), 10);
    });
}

#[test]
fn transact_retries_conflicts_until_every_increment_lands() {
    each_storage(|storage| {
        let db = open_with(storage, |o| o.retry.attempts_max = 1000);
        let a = add_account(&db, "a", 0);
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let db = db.clone();
                thread::spawn(move || {
                    for _ in 0..25 {
                        db.transact(|tx| tx.modify(&a, |x| x.balance += 1)).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(balance(&db, a), 100);
    });
}

#[test]
fn transact_gives_up_after_the_policy_attempts_and_says_where() {
    each_storage(|storage| {
        let db = open_with(storage, |o| o.retry.attempts_max = 3);
        let a = add_account(&db, "a", 0);
        let mut conn = db.connection();
        let calls = AtomicU32::new(0);
        let err = conn
            .transact(|tx| {
                calls.fetch_add(1, Ordering::SeqCst);
                tx.modify(&a, |x| x.balance += 1)?;
                // Someone else always commits first.
                let other = db.clone();
                thread::spawn(move || other.transact(|t| t.modify(&a, |x| x.balance += 100)))
                    .join()
                    .unwrap()
            })
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let Error::RetriesExhausted { attempts, conflict } = &err else {
            panic!("{err}");
        };
        assert_eq!(*attempts, 3);
        assert_eq!(conflict.oid, a.oid());
        assert!(
            err.to_string().starts_with(&format!(
                "gave up after 3 attempts; the last one conflicted on object {} (read revision",
                a.oid()
            )),
            "{err}"
        );
        assert_eq!(balance(&db, a), 300);
    });
}

#[test]
fn resolvable_conflicts_merge_instead_of_failing() {
    each_storage(|storage| {
        let db = open_with(storage, |o| o.retry.attempts_max = 1);
        let tally = db.transact(|tx| tx.add(Tally { count: 5 })).unwrap();
        let (mut c1, mut c2) = (db.connection(), db.connection());
        let mut t1 = c1.begin();
        let mut t2 = c2.begin();
        t1.modify(&tally, |t| t.count += 1).unwrap();
        t2.modify(&tally, |t| t.count += 10).unwrap();
        t1.commit().unwrap();
        t2.commit().unwrap();
        drop((c1, c2));
        assert_eq!(db.transact(|tx| Ok(tx.get(&tally)?.count)).unwrap(), 16);
        // Many threads, no retries allowed: every conflict must be merged.
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let db = db.clone();
                thread::spawn(move || {
                    for _ in 0..25 {
                        db.transact(|tx| tx.modify(&tally, |t| t.count += 1))
                            .unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(db.transact(|tx| Ok(tx.get(&tally)?.count)).unwrap(), 116);
    });
}

#[test]
fn conflicts_the_type_cannot_merge_are_reported() {
    each_storage(|storage| {
        let db = open(storage);
        let reg = db
            .transact(|tx| tx.add(Register { value: "a".into() }))
            .unwrap();
        let (mut c1, mut c2, mut c3) = (db.connection(), db.connection(), db.connection());
        let mut t1 = c1.begin();
        let mut t2 = c2.begin();
        let mut t3 = c3.begin();
        t1.set(&reg, Register { value: "b".into() }).unwrap();
        t2.set(&reg, Register { value: "c".into() }).unwrap();
        // Writes the value it read: merges with whatever was committed.
        t3.set(&reg, Register { value: "a".into() }).unwrap();
        t1.commit().unwrap();
        let err = t2.commit().unwrap_err();
        assert_eq!(err.as_conflict().map(|c| c.oid), Some(reg.oid()));
        t3.commit().unwrap();
        let value = db.transact(|tx| Ok(tx.get(&reg)?.value.clone())).unwrap();
        assert_eq!(value, "b");
    });
}

#[test]
fn check_current_turns_a_stale_read_into_a_conflict() {
    each_storage(|storage| {
        let db = open(storage);
        let (a, b) = (add_account(&db, "a", 1), add_account(&db, "b", 1));
        for checked in [false, true] {
            let mut conn = db.connection();
            let mut tx = conn.begin();
            if checked {
                tx.check_current(&a).unwrap();
            } else {
                tx.get(&a).unwrap();
            }
            tx.modify(&b, |x| x.balance += 1).unwrap();
            db.transact(|t| t.modify(&a, |x| x.balance += 1)).unwrap();
            let result = tx.commit();
            if checked {
                assert_eq!(
                    result.unwrap_err().as_conflict().map(|c| c.oid),
                    Some(a.oid())
                );
            } else {
                result.unwrap();
            }
        }
        assert_eq!(balance(&db, b), 2);
    });
}

#[test]
fn a_pooled_connection_catches_up_on_commits_made_while_idle() {
    each_storage(|storage| {
        let db = open_with(storage, |o| o.pool_size_max = 1);
        let a = add_account(&db, "a", 1);
        {
            let mut conn = db.connection();
            conn.transact(|tx| tx.get(&a).map(|_| ())).unwrap();
        }
        assert_eq!(db.pooled_connections(), 1);
        {
            let mut writer = db.connection(); // the pooled one
            let mut other = db.connection(); // a new one
            assert_eq!(db.pooled_connections(), 0);
            other
                .transact(|tx| tx.modify(&a, |x| x.balance = 5))
                .unwrap();
            drop(other); // back to the pool; the next drop exceeds its size
            writer.transact(|tx| tx.get(&a).map(|_| ())).unwrap();
        }
        assert_eq!(db.pooled_connections(), 1);
        let mut conn = db.connection();
        let stats = conn.cache_stats();
        assert_eq!(conn.transact(|tx| Ok(tx.get(&a)?.balance)).unwrap(), 5);
        assert_eq!(
            conn.cache_stats().hits,
            stats.hits + 1,
            "served from the cache"
        );
    });
}

#[test]
fn counter_increments_from_many_threads_all_land_without_retries() {
    each_storage(|storage| {
        let db = open_with(storage, |o| o.retry.attempts_max = 1);
        let counter = db.transact(|tx| tx.add(Counter::new(0))).unwrap();
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let db = db.clone();
                thread::spawn(move || {
                    for _ in 0..25 {
                        db.transact(|tx| tx.modify(&counter, |c| c.add(i + 1)))
                            .unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let value = db.transact(|tx| Ok(tx.get(&counter)?.value())).unwrap();
        assert_eq!(value, 25 * (1 + 2 + 3 + 4));
    });
}

#[test]
fn root_entries_added_concurrently_both_land() {
    each_storage(|storage| {
        let db = open_with(storage, |o| o.retry.attempts_max = 1);
        let (mut c1, mut c2) = (db.connection(), db.connection());
        let (mut t1, mut t2) = (c1.begin(), c2.begin());
        let a = t1.add(Counter::new(1)).unwrap();
        t1.set_root_entry("a", a).unwrap();
        let b = t2.add(Counter::new(2)).unwrap();
        t2.set_root_entry("b", b).unwrap();
        t1.commit().unwrap();
        t2.commit().unwrap();
        drop((c1, c2));
        let names: Vec<String> = db
            .transact(|tx| {
                let root = tx.root();
                Ok(tx.get(&root)?.names().map(String::from).collect())
            })
            .unwrap();
        assert_eq!(names, ["a", "b"]);
    });
}

/// A memory storage with faults: revisions gone as after a pack, or a vote that
/// always conflicts on one object; with `hints`, it names newer revisions as a
/// client storage does from a conflict reply (`known_newer_revision`).
#[derive(Default)]
struct Faulty {
    inner: zodiac_storage::MemoryStorage,
    revisions_gone: bool,
    hints: bool,
    conflict_on: parking_lot::Mutex<Option<zodiac_storage::Oid>>,
    votes: Arc<AtomicU32>,
}

struct FaultyTransaction {
    inner: Box<dyn zodiac_storage::StorageTransaction>,
    conflict: Option<zodiac_storage::ConflictError>,
    votes: Arc<AtomicU32>,
    voted: bool,
}

impl zodiac_storage::StorageTransaction for FaultyTransaction {
    fn store(
        &mut self,
        oid: zodiac_storage::Oid,
        base_tid: zodiac_storage::Tid,
        data: Vec<u8>,
    ) -> zodiac_storage::Result<()> {
        self.inner.store(oid, base_tid, data)
    }
    fn check_current(
        &mut self,
        oid: zodiac_storage::Oid,
        tid: zodiac_storage::Tid,
    ) -> zodiac_storage::Result<()> {
        self.inner.check_current(oid, tid)
    }
    fn vote(&mut self) -> zodiac_storage::Result<()> {
        self.votes.fetch_add(1, Ordering::SeqCst);
        self.voted = true;
        match self.conflict {
            Some(c) => Err(c.into()),
            None => self.inner.vote(),
        }
    }
    /// Votes first when `vote` was not called, as the contract says.
    fn finish(mut self: Box<Self>) -> zodiac_storage::Result<zodiac_storage::Tid> {
        if !self.voted {
            self.vote()?;
        }
        self.inner.finish()
    }
    fn abort(self: Box<Self>) {
        self.inner.abort()
    }
}

impl zodiac_storage::Storage for Faulty {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn last_tid(&self) -> zodiac_storage::Tid {
        self.inner.last_tid()
    }
    fn new_oid(&self) -> zodiac_storage::Result<zodiac_storage::Oid> {
        self.inner.new_oid()
    }
    fn load(
        &self,
        oid: zodiac_storage::Oid,
        snapshot: zodiac_storage::Tid,
    ) -> zodiac_storage::Result<zodiac_storage::Revision> {
        self.inner.load(oid, snapshot)
    }
    fn load_revision(
        &self,
        oid: zodiac_storage::Oid,
        tid: zodiac_storage::Tid,
    ) -> zodiac_storage::Result<Vec<u8>> {
        if self.revisions_gone {
            return Err(zodiac_storage::Error::NoSuchRevision { oid, tid });
        }
        self.inner.load_revision(oid, tid)
    }
    fn history(
        &self,
        oid: zodiac_storage::Oid,
        limit: usize,
    ) -> zodiac_storage::Result<Vec<zodiac_storage::RevisionInfo>> {
        self.inner.history(oid, limit)
    }
    fn transactions(
        &self,
        from: zodiac_storage::Tid,
        to: zodiac_storage::Tid,
    ) -> zodiac_storage::Result<zodiac_storage::TransactionIter<'_>> {
        self.inner.transactions(from, to)
    }
    fn begin(
        &self,
        meta: zodiac_storage::TransactionMeta,
    ) -> zodiac_storage::Result<Box<dyn zodiac_storage::StorageTransaction>> {
        let conflict = (*self.conflict_on.lock()).map(|oid| {
            let current_tid = self.inner.history(oid, 1).unwrap()[0].tid;
            zodiac_storage::ConflictError {
                oid,
                base_tid: current_tid,
                current_tid,
            }
        });
        Ok(Box::new(FaultyTransaction {
            inner: self.inner.begin(meta)?,
            conflict,
            votes: Arc::clone(&self.votes),
            voted: false,
        }))
    }
    fn subscribe(&self) -> zodiac_storage::CommitSubscription {
        self.inner.subscribe()
    }
    fn known_newer_revision(
        &self,
        oid: zodiac_storage::Oid,
        than: zodiac_storage::Tid,
    ) -> Option<zodiac_storage::Tid> {
        let newest = self.inner.history(oid, 1).ok()?.first()?.tid;
        (self.hints && newest > than).then_some(newest)
    }
    fn close(&self) -> zodiac_storage::Result<()> {
        self.inner.close()
    }
}

#[test]
fn a_merge_whose_old_revision_is_gone_is_reported_as_a_conflict_and_retried() {
    let db = open(Arc::new(Faulty {
        revisions_gone: true,
        ..Faulty::default()
    }));
    let tally = db.transact(|tx| tx.add(Tally { count: 0 })).unwrap();
    let (mut c1, mut c2) = (db.connection(), db.connection());
    let (mut t1, mut t2) = (c1.begin(), c2.begin());
    t1.modify(&tally, |t| t.count += 1).unwrap();
    t2.modify(&tally, |t| t.count += 1).unwrap();
    t1.commit().unwrap();
    let err = t2.commit().unwrap_err();
    assert_eq!(err.as_conflict().map(|c| c.oid), Some(tally.oid()));
    drop((c1, c2));
    // transact retries it from a fresh snapshot.
    db.transact(|tx| tx.modify(&tally, |t| t.count += 1))
        .unwrap();
    assert_eq!(db.transact(|tx| Ok(tx.get(&tally)?.count)).unwrap(), 2);
}

#[test]
fn idle_pooled_connections_catch_up_when_another_returns() {
    each_storage(|storage| {
        let db = open(storage);
        let a = add_account(&db, "a", 1);
        let (mut c1, mut c2) = (db.connection(), db.connection());
        for conn in [&mut c1, &mut c2] {
            conn.transact(|tx| tx.get(&a).map(|_| ())).unwrap();
        }
        let idle_before = c2.cache_stats().invalidations;
        drop(c2);
        drop(c1); // on top: the next connection taken
        db.transact(|tx| tx.modify(&a, |x| x.balance = 2)).unwrap();
        let _top = db.connection();
        let idle = db.connection();
        // Before any transaction of its own, the idle one already dropped `a`.
        assert_eq!(idle.cache_stats().invalidations, idle_before + 1);
    });
}

#[test]
fn one_commit_resolves_at_most_resolve_rounds_max_conflicts() {
    let storage = Arc::new(Faulty::default());
    let db = open(Arc::clone(&storage) as Arc<dyn zodiac_storage::Storage>);
    let tally = db.transact(|tx| tx.add(Tally { count: 0 })).unwrap();
    *storage.conflict_on.lock() = Some(tally.oid());
    storage.votes.store(0, Ordering::SeqCst);
    let mut conn = db.connection();
    let mut tx = conn.begin();
    tx.modify(&tally, |t| t.count += 1).unwrap();
    let err = tx.commit().unwrap_err();
    assert_eq!(err.as_conflict().map(|c| c.oid), Some(tally.oid()));
    // The first vote, then one more after each resolution.
    let rounds = zodiac_objects::RESOLVE_ROUNDS_MAX as u32;
    assert_eq!(storage.votes.load(Ordering::SeqCst), rounds + 1);
}

/// Two stale objects that merge: the vote reports one; the one the storage
/// names as known newer merges in the same round, so the commit takes two votes,
/// not three (one per stale object, then the one that succeeds).
#[test]
fn objects_the_storage_knows_newer_merge_in_the_same_round() {
    for (hints, votes) in [(true, 2), (false, 3)] {
        let storage = Arc::new(Faulty {
            hints,
            ..Faulty::default()
        });
        let db = open(Arc::clone(&storage) as Arc<dyn zodiac_storage::Storage>);
        let (x, y) = db
            .transact(|tx| Ok((tx.add(Tally { count: 0 })?, tx.add(Tally { count: 0 })?)))
            .unwrap();
        let (mut c1, mut c2) = (db.connection(), db.connection());
        let (mut t1, mut t2) = (c1.begin(), c2.begin());
        for t in [&mut t1, &mut t2] {
            t.modify(&x, |t| t.count += 1).unwrap();
            t.modify(&y, |t| t.count += 1).unwrap();
        }
        t1.commit().unwrap();
        storage.votes.store(0, Ordering::SeqCst);
        t2.commit().unwrap();
        assert_eq!(
            storage.votes.load(Ordering::SeqCst),
            votes,
            "hints: {hints}"
        );
        drop((c1, c2));
        for t in [x, y] {
            assert_eq!(db.transact(|tx| Ok(tx.get(&t)?.count)).unwrap(), 2);
        }
    }
}
