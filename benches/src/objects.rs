//! Object-level workloads: W1 and W2 through `zodiac-objects` (compared with ZODB's
//! DB + Connection layer, `zodb-db` in workloads.md), and a B-tree workload.
//!
//! - `obj-w1`: 10,000 transactions, each adding one new object whose encoded state is
//!   about 100 bytes (an integer and 60 bytes of padding, as the ZODB harness's `Obj`).
//! - `obj-w2`: 100 transactions of 1,000 new objects each.
//! - `btree`: 1,000,000 random u64 keys inserted into one `BTree<u64, u64>` in
//!   transactions of 1,000, then 1,000,000 random lookups from a fresh connection.
//! - `btree-4`: 4 threads insert into one tree concurrently, 100 keys per transaction,
//!   random keys and then increasing keys (the ZODB #232 pattern); reports the
//!   conflict rate (commits that failed after bucket-level resolution).

use std::sync::{Arc, Barrier};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use zodiac_objects::{BTree, Database, PRef, Persistent};

use crate::Result;
use crate::report::{Measurement, Value};
use crate::rng::SplitMix64;
use crate::stats::Latencies;
use crate::target::StoreUnderTest;

const OBJ_W1_COMMITS: u64 = 10_000;
const OBJ_W2_TRANSACTIONS: u64 = 100;
const OBJ_W2_OBJECTS_PER_TRANSACTION: u64 = 1_000;
const BTREE_KEYS: u64 = 1_000_000;
const BTREE_KEYS_PER_TRANSACTION: u64 = 1_000;
const BTREE_SEED: u64 = 42;
const CONCURRENT_WRITERS: u64 = 4;
const CONCURRENT_TRANSACTIONS_PER_WRITER: u64 = 100;
const CONCURRENT_KEYS_PER_TRANSACTION: u64 = 100;

/// The benchmark object: about 100 bytes encoded, like the ZODB harness's `Obj`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Obj {
    v: u64,
    pad: Vec<u8>,
}
impl Persistent for Obj {
    const TYPE_NAME: &'static str = "bench.Obj";
}

fn obj(v: u64) -> Obj {
    Obj {
        v,
        pad: vec![b'x'; 60],
    }
}

type Tree = BTree<u64, u64>;

pub fn obj_w1(store: &mut StoreUnderTest) -> Result<Measurement> {
    let db = Database::open(store.create()?)?;
    let mut conn = db.connection();
    let mut latencies = Latencies::with_capacity(OBJ_W1_COMMITS as usize);
    let start = Instant::now();
    for i in 0..OBJ_W1_COMMITS {
        let t0 = Instant::now();
        conn.transact(|tx| tx.add(obj(i)))?;
        latencies.record(t0.elapsed());
    }
    let elapsed = start.elapsed();
    let mut m = Measurement::new("obj-w1", elapsed.as_secs_f64(), OBJ_W1_COMMITS, "commits/s");
    crate::workloads::set_latencies(&mut m, &latencies);
    drop(conn);
    close(store, db)?;
    Ok(m)
}

pub fn obj_w2(store: &mut StoreUnderTest) -> Result<Measurement> {
    let db = Database::open(store.create()?)?;
    let mut conn = db.connection();
    let start = Instant::now();
    for t in 0..OBJ_W2_TRANSACTIONS {
        conn.transact(|tx| {
            for i in 0..OBJ_W2_OBJECTS_PER_TRANSACTION {
                tx.add(obj(t * OBJ_W2_OBJECTS_PER_TRANSACTION + i))?;
            }
            Ok(())
        })?;
    }
    let elapsed = start.elapsed();
    let objects = OBJ_W2_TRANSACTIONS * OBJ_W2_OBJECTS_PER_TRANSACTION;
    drop(conn);
    close(store, db)?;
    Ok(Measurement::new(
        "obj-w2",
        elapsed.as_secs_f64(),
        objects,
        "objects/s",
    ))
}

pub fn btree(store: &mut StoreUnderTest) -> Result<Measurement> {
    let db = Database::open(store.create()?)?;
    let tree: PRef<Tree> = db.transact(|tx| {
        let tree = Tree::create(tx)?;
        tx.set_root_entry("tree", tree)?;
        Ok(tree)
    })?;
    let mut rng = SplitMix64::new(BTREE_SEED);
    let keys: Vec<u64> = (0..BTREE_KEYS).map(|_| rng.next_u64()).collect();
    let mut conn = db.connection();
    let start = Instant::now();
    for chunk in keys.chunks(BTREE_KEYS_PER_TRANSACTION as usize) {
        conn.transact(|tx| {
            for &k in chunk {
                Tree::insert(tx, &tree, k, k ^ 1)?;
            }
            Ok(())
        })?;
    }
    let insert_secs = start.elapsed().as_secs_f64();
    drop(conn);
    // Lookups from a fresh connection (cold object cache).
    let mut conn = db.connection();
    let mut rng = SplitMix64::new(BTREE_SEED + 1);
    let start = Instant::now();
    let found = conn.transact(|tx| {
        let mut found = 0u64;
        for _ in 0..BTREE_KEYS {
            let k = keys[rng.below(BTREE_KEYS) as usize];
            found += u64::from(Tree::get(tx, &tree, &k)? == Some(k ^ 1));
        }
        Ok(found)
    })?;
    let lookup_secs = start.elapsed().as_secs_f64();
    if found != BTREE_KEYS {
        return Err(format!("btree: {found} of {BTREE_KEYS} lookups found their key").into());
    }
    let depth = conn.transact(|tx| Tree::depth(tx, &tree))?;
    drop(conn);
    close(store, db)?;
    let mut m = Measurement::new("btree", insert_secs, BTREE_KEYS, "inserts/s");
    m.set(
        "lookups_per_s",
        Value::Float(BTREE_KEYS as f64 / lookup_secs, 1),
    );
    m.set("depth", Value::Int(u64::from(depth)));
    Ok(m)
}

/// Inserts from `CONCURRENT_WRITERS` threads; `key(writer, n)` gives the n-th key a
/// writer inserts. Returns (seconds, commits, conflicts).
fn concurrent_inserts(
    db: &Arc<Database>,
    tree: PRef<Tree>,
    key: fn(u64, u64) -> u64,
) -> Result<(f64, u64, u64)> {
    let barrier = Arc::new(Barrier::new(CONCURRENT_WRITERS as usize));
    let start = Instant::now();
    let threads: Vec<_> = (0..CONCURRENT_WRITERS)
        .map(|w| {
            let (db, barrier) = (Arc::clone(db), Arc::clone(&barrier));
            std::thread::spawn(move || -> Result<(u64, u64)> {
                let mut conn = db.connection();
                let mut conflicts = 0;
                barrier.wait();
                for t in 0..CONCURRENT_TRANSACTIONS_PER_WRITER {
                    loop {
                        let mut tx = conn.begin();
                        for i in 0..CONCURRENT_KEYS_PER_TRANSACTION {
                            let n = t * CONCURRENT_KEYS_PER_TRANSACTION + i;
                            Tree::insert(&mut tx, &tree, key(w, n), n)?;
                        }
                        match tx.commit() {
                            Ok(_) => break,
                            Err(e) if e.as_conflict().is_some() => conflicts += 1,
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
                Ok((CONCURRENT_TRANSACTIONS_PER_WRITER, conflicts))
            })
        })
        .collect();
    let (mut commits, mut conflicts) = (0, 0);
    for t in threads {
        let (c, k) = t.join().map_err(|_| "a writer thread panicked")??;
        commits += c;
        conflicts += k;
    }
    Ok((start.elapsed().as_secs_f64(), commits, conflicts))
}

pub fn btree_concurrent(store: &mut StoreUnderTest) -> Result<Measurement> {
    let db = Arc::new(Database::open(store.create()?)?);
    let tree: PRef<Tree> = db.transact(|tx| {
        let tree = Tree::create(tx)?;
        tx.set_root_entry("tree", tree)?;
        Ok(tree)
    })?;
    let random = |w: u64, n: u64| {
        let mut rng = SplitMix64::new(w * 1_000_003 + n);
        rng.next_u64()
    };
    let (secs, commits, random_conflicts) = concurrent_inserts(&db, tree, random)?;
    // Increasing keys, interleaved across writers: every writer inserts at the end.
    let sequential = |w: u64, n: u64| (1u64 << 62) + n * CONCURRENT_WRITERS + w;
    let (seq_secs, seq_commits, seq_conflicts) = concurrent_inserts(&db, tree, sequential)?;
    let keys =
        CONCURRENT_WRITERS * CONCURRENT_TRANSACTIONS_PER_WRITER * CONCURRENT_KEYS_PER_TRANSACTION;
    let mut m = Measurement::new("btree-4", secs, keys, "inserts/s");
    m.set("writers", Value::Int(CONCURRENT_WRITERS));
    m.set(
        "conflict_rate",
        Value::Float(random_conflicts as f64 / commits as f64, 4),
    );
    m.set(
        "sequential_inserts_per_s",
        Value::Float(keys as f64 / seq_secs, 1),
    );
    m.set(
        "sequential_conflict_rate",
        Value::Float(seq_conflicts as f64 / seq_commits as f64, 4),
    );
    let db = Arc::try_unwrap(db).map_err(|_| "the database is still shared")?;
    close(store, db)?;
    Ok(m)
}

fn close(store: &mut StoreUnderTest, db: Database) -> Result<()> {
    let storage = Arc::clone(db.storage());
    drop(db);
    store.close(storage)
}
