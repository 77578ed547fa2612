//! The PostgreSQL storage beyond the contract suite: several storages (as
//! separate processes would be) committing at once, a cut connection, the
//! notification wake-up, schema versions, restore, pack and verify. Every test
//! runs in a fresh schema of ZODIAC_TEST_POSTGRES and skips without it.
#![cfg(feature = "postgres")]

mod common;

use std::time::{Duration, Instant};

use common::pg::TempSchema;
use zodiac_storage::{Error, Oid, PgOptions, PgStorage, Storage, Tid, TransactionMeta};

fn meta(d: &str) -> TransactionMeta {
    TransactionMeta::described(d)
}

fn counter(data: &[u8]) -> u64 {
    u64::from_le_bytes(data.try_into().expect("an 8-byte counter"))
}

/// Adds one to the counter `oid` and writes `mine` (an object no one else
/// writes), retrying on conflict; returns how many conflicts it met.
fn increment(s: &PgStorage, oid: Oid, mine: Oid) -> u32 {
    let mut conflicts = 0;
    loop {
        let snapshot = s.last_tid();
        let current = s.load(oid, snapshot).unwrap();
        let own = s
            .load(mine, snapshot)
            .map(|r| (r.tid, counter(&r.data)))
            .unwrap_or((Tid::ZERO, 0));
        let mut txn = s.begin(meta("increment")).unwrap();
        txn.store(
            oid,
            current.tid,
            (counter(&current.data) + 1).to_le_bytes().to_vec(),
        )
        .unwrap();
        txn.store(mine, own.0, (own.1 + 1).to_le_bytes().to_vec())
            .unwrap();
        match txn.finish() {
            Ok(_) => return conflicts,
            Err(Error::Conflict(c)) => {
                assert_eq!(c.oid, oid, "only the shared counter conflicts");
                conflicts += 1;
            }
            Err(e) => panic!("increment failed: {e}"),
        }
    }
}

#[test]
fn concurrent_storages_lose_no_update_and_do_not_deadlock() {
    let Some(schema) = TempSchema::new() else {
        return;
    };
    const WORKERS: u64 = 4;
    const ROUNDS: u64 = 20;
    let first = schema.open();
    let shared = first.new_oid().unwrap();
    let mut txn = first.begin(meta("counter")).unwrap();
    txn.store(shared, Tid::ZERO, 0u64.to_le_bytes().to_vec())
        .unwrap();
    txn.finish().unwrap();
    let started = Instant::now();
    let conflicts: u32 = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                scope.spawn(|| {
                    let s = schema.open();
                    let mine = s.new_oid().unwrap();
                    (0..ROUNDS)
                        .map(|_| increment(&s, shared, mine))
                        .sum::<u32>()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "the committers took too long"
    );
    // `first` follows the others' commits through its poller.
    let newest = newest_in(&schema);
    let deadline = Instant::now() + Duration::from_secs(5);
    while first.last_tid() < newest && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(first.last_tid(), newest);
    let total = counter(&first.load(shared, Tid::MAX).unwrap().data);
    assert_eq!(
        total,
        WORKERS * ROUNDS,
        "{conflicts} conflicts were retried"
    );
    let report = first.verify().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.transactions, 1 + WORKERS * ROUNDS);
}

/// The newest tid in the schema, read directly.
fn newest_in(schema: &TempSchema) -> Tid {
    let mut c = schema.client();
    let row = c
        .query_one(&format!("SELECT tid FROM {}.head", schema.name), &[])
        .unwrap();
    Tid(row.get::<_, i64>(0) as u64)
}

#[test]
fn another_storages_commit_wakes_subscribers_within_milliseconds() {
    let Some(schema) = TempSchema::new() else {
        return;
    };
    let mut options = schema.options();
    options.poll_interval = Duration::from_secs(30);
    let reader = PgStorage::open(options.clone()).unwrap();
    let writer = PgStorage::open(options).unwrap();
    let oid = writer.new_oid().unwrap();
    // A first commit connects the writer's commit connection.
    let mut txn = writer.begin(meta("warm up")).unwrap();
    txn.store(oid, Tid::ZERO, b"w".to_vec()).unwrap();
    let t0 = txn.finish().unwrap();
    while reader.last_tid() < t0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let sub = reader.subscribe();
    let committed = Instant::now();
    let mut txn = writer.begin(meta("seen elsewhere")).unwrap();
    txn.store(oid, t0, b"x".to_vec()).unwrap();
    let tid = txn.finish().unwrap();
    let event = sub
        .recv_timeout(Duration::from_secs(5))
        .expect("the commit is notified");
    let latency = committed.elapsed();
    assert_eq!((event.tid, &event.oids[..]), (tid, &[oid][..]));
    println!("commit to notification on another storage: {latency:?}");
    assert!(
        latency < Duration::from_millis(500),
        "woken after {latency:?}, not by NOTIFY"
    );
    // The event comes first; last_tid follows at once.
    let deadline = Instant::now() + Duration::from_secs(1);
    while reader.last_tid() < tid && Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert_eq!(reader.last_tid(), tid);
    assert_eq!(reader.load(oid, Tid::MAX).unwrap().data, b"x");
}

/// Ends every backend of the storage's schema (its poller, its pool, its commit
/// connection), as a database restart or an operator would.
fn cut_connections(schema: &TempSchema) -> u64 {
    let mut c = schema.client();
    let row = c
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = $1 AND pid <> pg_backend_pid()",
            &[&format!("zodiac {}", schema.name)],
        )
        .unwrap();
    row.get::<_, i64>(0) as u64
}

#[test]
fn a_cut_connection_gives_a_clear_error_and_the_storage_recovers() {
    let Some(schema) = TempSchema::new() else {
        return;
    };
    let s = schema.open();
    let oid = s.new_oid().unwrap();
    let mut txn = s.begin(meta("before")).unwrap();
    txn.store(oid, Tid::ZERO, b"before".to_vec()).unwrap();
    let t1 = txn.finish().unwrap();
    let sub = s.subscribe();

    // Cut while a transaction is voted: its finish fails clearly, nothing lands.
    let mut voted = s.begin(meta("voted across the cut")).unwrap();
    voted.store(oid, t1, b"lost".to_vec()).unwrap();
    voted.vote().unwrap();
    assert!(
        cut_connections(&schema) >= 2,
        "the poller and the commit connection were cut"
    );
    std::thread::sleep(Duration::from_millis(200));
    match voted.finish() {
        Err(e @ Error::PostgresDisconnected { .. }) => {
            assert!(e.is_disconnected(), "callers wait out a lost connection");
            let text = e.to_string();
            assert!(
                text.contains("nothing was committed: retry"),
                "unclear: {text}"
            );
        }
        other => panic!("finish on a cut connection: {other:?}"),
    }
    assert_eq!(
        s.load(oid, Tid::MAX).unwrap().data,
        b"before",
        "a read reconnects"
    );

    // The next commit reconnects and is delivered by the reconnected poller.
    let mut txn = s.begin(meta("after")).unwrap();
    txn.store(oid, t1, b"after".to_vec()).unwrap();
    let t2 = txn.finish().unwrap();
    assert_eq!(s.load(oid, Tid::MAX).unwrap().data, b"after");
    assert_eq!(
        sub.recv_timeout(Duration::from_secs(5)).map(|e| e.tid),
        Some(t2)
    );
    let other = schema.open();
    let mut txn = other.begin(meta("from another")).unwrap();
    txn.store(oid, t2, b"other".to_vec()).unwrap();
    let t3 = txn.finish().unwrap();
    assert_eq!(
        sub.recv_timeout(Duration::from_secs(5)).map(|e| e.tid),
        Some(t3)
    );
    let deadline = Instant::now() + Duration::from_secs(1);
    while s.last_tid() < t3 && Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert_eq!(s.last_tid(), t3);
}

#[test]
fn a_missing_or_newer_schema_is_refused_with_what_to_do() {
    let Some(schema) = TempSchema::new() else {
        return;
    };
    let mut options = schema.options();
    options.create = false;
    let Err(e) = PgStorage::open(options.clone()) else {
        panic!("opened a missing schema")
    };
    assert!(e.to_string().contains("zodiac pg init"), "{e}");
    assert!(
        zodiac_storage::pg_init(&options).unwrap(),
        "init creates the tables"
    );
    assert!(
        !zodiac_storage::pg_init(&options).unwrap(),
        "a second init changes nothing"
    );
    let identity = PgStorage::open(options.clone()).unwrap().identity();
    assert_ne!(identity, 0);
    assert_eq!(
        PgStorage::open(options.clone()).unwrap().identity(),
        identity
    );
    let mut c = schema.client();
    c.batch_execute(&format!(
        "UPDATE {}.zodiac_schema SET version = 99",
        schema.name
    ))
    .unwrap();
    let Err(e) = PgStorage::open(options) else {
        panic!("opened a newer schema")
    };
    assert!(
        e.to_string().contains("newer Zodiac (schema version 99"),
        "{e}"
    );
    assert!(PgStorage::open(PgOptions::new(schema.url.clone()).schema("Bad-Name")).is_err());
}

#[test]
fn restore_keeps_tids_and_counts_restored_oids_as_allocated() {
    let Some(schema) = TempSchema::new() else {
        return;
    };
    let s = schema.open();
    let sub = s.subscribe();
    let tid = Tid(Tid::now().0 - 10_000_000);
    let mut m = meta("copied");
    m.user = "alice".into();
    m.extension.insert("k".into(), b"v".to_vec());
    s.restore(
        tid,
        &m,
        &[(Oid(0), b"root".to_vec()), (Oid(500), b"far".to_vec())],
    )
    .unwrap();
    assert_eq!(s.last_tid(), tid);
    assert_eq!(
        sub.recv_timeout(Duration::from_secs(5)).map(|e| e.tid),
        Some(tid)
    );
    assert_eq!(s.load(Oid(500), Tid::MAX).unwrap().data, b"far");
    let txns: Vec<_> = s
        .transactions(Tid::ZERO, Tid::MAX)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!((txns[0].tid, &txns[0].meta), (tid, &m));
    assert!(s.new_oid().unwrap() > Oid(500));
    assert!(schema.open().new_oid().unwrap() > Oid(500));
    match s.restore(tid, &m, &[(Oid(0), b"again".to_vec())]) {
        Err(Error::TidNotIncreasing { tid: t, last }) => assert_eq!((t, last), (tid, tid)),
        other => panic!("restoring an old tid: {other:?}"),
    }
    assert_eq!(s.load(Oid(0), Tid::MAX).unwrap().data, b"root");
}

/// References of a test record: after one tag byte, little-endian u64 oids.
fn refs_of(data: &[u8]) -> Result<Vec<Oid>, String> {
    let body = data.get(1..).ok_or("empty record")?;
    Ok(body
        .chunks(8)
        .map(|c| Oid(u64::from_le_bytes(c.try_into().unwrap())))
        .collect())
}

fn record(tag: u8, refs: &[Oid]) -> Vec<u8> {
    let mut out = vec![tag];
    for r in refs {
        out.extend_from_slice(&r.0.to_le_bytes());
    }
    out
}

#[test]
fn pack_drops_old_history_and_unreachable_objects_and_verifies_clean() {
    let Some(schema) = TempSchema::new() else {
        return;
    };
    let s = schema.open();
    let (a, garbage) = (s.new_oid().unwrap(), s.new_oid().unwrap());
    let commit = |writes: &[(Oid, Tid, Vec<u8>)]| {
        let mut txn = s.begin(meta("w")).unwrap();
        for (oid, base, data) in writes {
            txn.store(*oid, *base, data.clone()).unwrap();
        }
        txn.finish().unwrap()
    };
    let t1 = commit(&[
        (Oid::ROOT, Tid::ZERO, record(1, &[a, garbage])),
        (a, Tid::ZERO, record(1, &[])),
        (garbage, Tid::ZERO, record(1, &[])),
    ]);
    let t2 = commit(&[(Oid::ROOT, t1, record(2, &[a])), (a, t1, record(2, &[]))]);
    let t3 = commit(&[(a, t2, record(3, &[]))]);
    let report = s.pack(t2, Some(&refs_of)).unwrap();
    assert_eq!(report.pack_tid, t2);
    assert_eq!((report.revisions_before, report.revisions_after), (6, 3));
    assert_eq!(report.objects_removed, 1);
    assert_eq!(
        (report.transactions_before, report.transactions_after),
        (3, 2)
    );
    assert!(matches!(
        s.load(garbage, Tid::MAX),
        Err(Error::NoSuchObject { .. })
    ));
    let history: Vec<Tid> = s.history(a, 10).unwrap().iter().map(|r| r.tid).collect();
    assert_eq!(history, vec![t3, t2]);
    assert_eq!(s.load(Oid::ROOT, Tid::MAX).unwrap().tid, t2);
    let verified = s.verify().unwrap();
    assert!(verified.problems.is_empty(), "{:?}", verified.problems);
    // verify sees a broken invariant.
    let mut c = schema.client();
    c.batch_execute(&format!(
        "UPDATE {}.current SET tid = 1 WHERE oid = {}",
        schema.name, a.0
    ))
    .unwrap();
    let broken = s.verify().unwrap();
    assert_eq!(broken.problems.len(), 1, "{:?}", broken.problems);
    assert!(
        broken.problems[0].contains("current row"),
        "{:?}",
        broken.problems
    );
}

#[test]
fn repeated_loads_are_cached_and_commits_of_another_storage_invalidate_them() {
    let Some(schema) = TempSchema::new() else {
        return;
    };
    let (a, b) = (schema.open(), schema.open());
    let oid = a.new_oid().unwrap();
    let mut txn = a.begin(meta("one")).unwrap();
    txn.store(oid, Tid::ZERO, b"one".to_vec()).unwrap();
    let t1 = txn.finish().unwrap();
    assert_eq!(a.load(oid, Tid::MAX).unwrap().data, b"one");
    assert_eq!(a.cache_usage().0, 1, "the load was cached");
    assert_eq!(a.load(oid, t1).unwrap().data, b"one");

    // Another storage (another process) commits; once `a` has published that
    // commit, its cache no longer answers with the old revision.
    let sub = a.subscribe();
    wait_for(&b, t1);
    let mut txn = b.begin(meta("two")).unwrap();
    txn.store(oid, t1, b"two".to_vec()).unwrap();
    let t2 = txn.finish().unwrap();
    assert_eq!(
        sub.recv_timeout(Duration::from_secs(5)).map(|e| e.tid),
        Some(t2)
    );
    assert_eq!(a.last_tid(), t2);
    assert_eq!(a.cache_usage().0, 0, "the commit invalidated the entry");
    assert_eq!(a.load(oid, Tid::MAX).unwrap().data, b"two");
    assert_eq!(
        a.load(oid, t1).unwrap().data,
        b"one",
        "old snapshots read the old"
    );
    let none = PgStorage::open(PgOptions {
        cache_bytes_max: 0,
        ..schema.options()
    })
    .unwrap();
    assert_eq!(none.load(oid, Tid::MAX).unwrap().data, b"two");
    assert_eq!(none.cache_usage().0, 0, "a cache of 0 bytes holds nothing");
}

/// Waits until `s` has seen the commit `tid`.
fn wait_for(s: &PgStorage, tid: Tid) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.last_tid() < tid {
        assert!(Instant::now() < deadline, "the commit {tid} never arrived");
        std::thread::sleep(Duration::from_millis(10));
    }
}
