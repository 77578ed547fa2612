//! Connections against a trivially correct model: several connections, each in its
//! own thread with a small cache, interleave reads, writes, commits and aborts; every
//! read must return the value at the transaction's snapshot (or its own write), and a
//! commit must conflict exactly when another transaction committed one of its
//! objects after its snapshot. This checks the cache's invalidation at transaction
//! boundaries and the snapshot rule together.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread;

use common::*;
use proptest::prelude::*;
use zodiac_objects::{Database, Error, PRef};
use zodiac_storage::{MemoryStorage, Tid};

const KEYS: usize = 4;
const WORKERS: usize = 3;

enum Command {
    Begin(Sender<Tid>),
    Read(usize, Sender<i64>),
    Write(usize, i64),
    /// Replies `Ok(tid)` or `Err(conflicting key's oid)`.
    Commit(Sender<Result<Option<Tid>, u64>>),
    Abort,
}

fn worker(db: Database, keys: Vec<PRef<Account>>, commands: Receiver<Command>) {
    let mut conn = db.connection();
    while let Ok(command) = commands.recv() {
        let Command::Begin(reply) = command else {
            panic!("a transaction starts with Begin");
        };
        let mut tx = conn.begin();
        reply.send(tx.snapshot()).unwrap();
        loop {
            match commands.recv().unwrap() {
                Command::Read(k, reply) => reply.send(tx.get(&keys[k]).unwrap().balance).unwrap(),
                Command::Write(k, v) => tx.modify(&keys[k], |a| a.balance = v).unwrap(),
                Command::Commit(reply) => {
                    let outcome = match tx.commit() {
                        Ok(tid) => Ok(tid),
                        Err(Error::Conflict(c)) => Err(c.oid.0),
                        Err(e) => panic!("{e}"),
                    };
                    reply.send(outcome).unwrap();
                    break;
                }
                Command::Abort => break,
                Command::Begin(_) => panic!("Begin inside a transaction"),
            }
        }
    }
}

/// The committed history: for each key, its revisions as (tid, value), oldest first.
struct Model {
    revisions: Vec<Vec<(Tid, i64)>>,
}

impl Model {
    fn at(&self, k: usize, snapshot: Tid) -> i64 {
        let revs = &self.revisions[k];
        revs.iter().rev().find(|(t, _)| *t <= snapshot).unwrap().1
    }
    fn changed_after(&self, k: usize, snapshot: Tid) -> bool {
        self.revisions[k].last().unwrap().0 > snapshot
    }
}

struct Open {
    snapshot: Tid,
    writes: HashMap<usize, i64>,
}

fn run(ops: &[(usize, u8, usize, i64)]) -> Result<(), TestCaseError> {
    let storage = Arc::new(MemoryStorage::new());
    let db = open_with(storage, |o| {
        o.cache_objects_max = 2;
        o.retry.attempts_max = 1;
    });
    let mut keys = Vec::new();
    let mut model = Model {
        revisions: Vec::new(),
    };
    for k in 0..KEYS {
        keys.push(add_account(&db, &format!("k{k}"), 0));
        let tid = db.storage().last_tid();
        model.revisions.push(vec![(tid, 0)]);
    }
    let mut senders = Vec::new();
    let mut threads = Vec::new();
    for _ in 0..WORKERS {
        let (send, recv) = channel();
        let (db, keys) = (db.clone(), keys.clone());
        threads.push(thread::spawn(move || worker(db, keys, recv)));
        senders.push(send);
    }
    let mut open: Vec<Option<Open>> = (0..WORKERS).map(|_| None).collect();
    for &(w, kind, k, value) in ops {
        let to = &senders[w];
        if open[w].is_none() {
            let (reply, answer) = channel();
            to.send(Command::Begin(reply)).unwrap();
            open[w] = Some(Open {
                snapshot: answer.recv().unwrap(),
                writes: HashMap::new(),
            });
        }
        let txn = open[w].as_mut().unwrap();
        match kind {
            0 => {
                let (reply, answer) = channel();
                to.send(Command::Read(k, reply)).unwrap();
                let expected = txn
                    .writes
                    .get(&k)
                    .copied()
                    .unwrap_or_else(|| model.at(k, txn.snapshot));
                prop_assert_eq!(answer.recv().unwrap(), expected, "worker {} key {}", w, k);
            }
            1 => {
                to.send(Command::Write(k, value)).unwrap();
                txn.writes.insert(k, value);
            }
            2 => {
                let (reply, answer) = channel();
                to.send(Command::Commit(reply)).unwrap();
                let txn = open[w].take().unwrap();
                let stale: Vec<u64> = (0..KEYS)
                    .filter(|k| txn.writes.contains_key(k) && model.changed_after(*k, txn.snapshot))
                    .map(|k| keys[k].oid().0)
                    .collect();
                match answer.recv().unwrap() {
                    Ok(Some(tid)) => {
                        prop_assert!(stale.is_empty(), "committed over {:?}", stale);
                        for (&k, &v) in &txn.writes {
                            model.revisions[k].push((tid, v));
                        }
                    }
                    Ok(None) => prop_assert!(txn.writes.is_empty()),
                    Err(oid) => prop_assert!(stale.contains(&oid), "conflict on {}", oid),
                }
            }
            _ => {
                to.send(Command::Abort).unwrap();
                open[w] = None;
            }
        }
    }
    for (w, txn) in open.iter().enumerate() {
        if txn.is_some() {
            senders[w].send(Command::Abort).unwrap();
        }
    }
    drop(senders);
    for t in threads {
        t.join().unwrap();
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn connections_agree_with_the_model(
        ops in proptest::collection::vec((0..WORKERS, 0..4u8, 0..KEYS, -100..100i64), 1..80)
    ) {
        run(&ops)?;
    }
}

/// A fixed interleaving the model test relies on: a stale cached read must not
/// survive the next begin.
#[test]
fn regression_cached_value_is_refreshed_after_another_commit() {
    run(&[
        (0, 0, 1, 0), // worker 0 caches key 1
        (0, 3, 0, 0), // and ends its transaction
        (1, 1, 1, 7), // worker 1 writes key 1
        (1, 2, 0, 0), // and commits
        (0, 0, 1, 0), // worker 0 must read 7
    ])
    .unwrap();
}
