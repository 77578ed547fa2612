//! The job layer on the PostgreSQL storage: workers in threads, each with its own
//! storage and database (as separate processes would have), drain a queue with
//! every job's effect exactly once, and a put wakes a waiting worker within
//! milliseconds through the storage's commit notifications. Runs in a fresh
//! schema of ZODIAC_TEST_POSTGRES and skips without it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use zodiac_async::{
    Handlers, Job, Policies, PutOptions, Queue, Runner, Status, Worker, WorkerOptions, transact,
};
use zodiac_objects::{Counter, Database, PRef};
use zodiac_storage::{PgOptions, PgStorage};

/// A schema for one test, dropped at the end.
struct TempSchema {
    url: String,
    name: String,
}

impl TempSchema {
    fn new() -> Option<TempSchema> {
        let Ok(url) = std::env::var("ZODIAC_TEST_POSTGRES") else {
            eprintln!("skipped PostgreSQL: set ZODIAC_TEST_POSTGRES");
            return None;
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("zj_{}_{}", std::process::id(), nanos);
        Some(TempSchema { url, name })
    }

    fn database(&self) -> Database {
        let mut options = PgOptions::new(self.url.clone()).schema(self.name.clone());
        options.poll_interval = Duration::from_secs(30);
        Database::open(Arc::new(PgStorage::open(options).unwrap())).unwrap()
    }
}

impl Drop for TempSchema {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.url, postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
        }
    }
}

/// A runner whose job `bump` adds one to the counter it is given.
fn runner(db: &Database) -> Runner {
    let mut h = Handlers::new();
    h.register("bump", move |ctx, counter: PRef<Counter>| {
        ctx.tx().modify(&counter, |c| c.add(1))?;
        Ok(())
    });
    Runner::new(db.clone(), h, Policies::new())
}

fn put(db: &Database, counter: PRef<Counter>) -> PRef<Job> {
    transact(db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Queue::put_job(
            tx,
            &q,
            Job::with_arguments("bump", &counter)?,
            PutOptions::new(),
        )
    })
    .unwrap()
}

fn status(db: &Database, j: PRef<Job>) -> Status {
    transact(db, |tx| Ok(tx.get(&j)?.status())).unwrap()
}

#[test]
fn workers_on_their_own_storages_drain_a_queue_each_effect_exactly_once() {
    let Some(schema) = TempSchema::new() else {
        return;
    };
    const JOBS: usize = 30;
    const WORKERS: usize = 4;
    let db = schema.database();
    let counters: Vec<PRef<Counter>> = transact(&db, |tx| {
        Queue::get_or_create(tx, "")?;
        (0..JOBS).map(|_| Ok(tx.add(Counter::new(0))?)).collect()
    })
    .unwrap();
    let jobs: Vec<PRef<Job>> = counters.iter().map(|&c| put(&db, c)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|i| {
            let wdb = schema.database();
            let stop = Arc::clone(&stop);
            let options = WorkerOptions {
                poll_interval: Duration::from_millis(200),
                ..WorkerOptions::default()
            };
            thread::spawn(move || {
                Worker::new(wdb.clone(), format!("w{i}"), runner(&wdb), options).run(&stop)
            })
        })
        .collect();
    let started = Instant::now();
    while jobs.iter().any(|&j| status(&db, j) != Status::Completed) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the queue was not drained"
        );
        thread::sleep(Duration::from_millis(50));
    }
    println!(
        "{JOBS} jobs drained by {WORKERS} workers in {:?}",
        started.elapsed()
    );
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap().unwrap();
    }
    let values: Vec<i64> = transact(&db, |tx| {
        counters.iter().map(|c| Ok(tx.get(c)?.value())).collect()
    })
    .unwrap();
    assert_eq!(values, vec![1; JOBS], "every job's effect exactly once");
}

#[test]
fn a_put_wakes_a_worker_on_another_storage_within_milliseconds() {
    let Some(schema) = TempSchema::new() else {
        return;
    };
    let db = schema.database();
    let counter = transact(&db, |tx| {
        Queue::get_or_create(tx, "")?;
        Ok(tx.add(Counter::new(0))?)
    })
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let handle = {
        let (wdb, stop) = (schema.database(), Arc::clone(&stop));
        let options = WorkerOptions {
            poll_interval: Duration::from_secs(60),
            ..WorkerOptions::default()
        };
        thread::spawn(move || Worker::new(wdb.clone(), "w1", runner(&wdb), options).run(&stop))
    };
    thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let job = put(&db, counter);
    while status(&db, job) != Status::Completed {
        assert!(started.elapsed() < Duration::from_secs(10), "not woken");
        thread::sleep(Duration::from_millis(1));
    }
    let latency = started.elapsed();
    println!("put to completed on PostgreSQL: {latency:?}");
    assert!(
        latency < Duration::from_secs(2),
        "woken after {latency:?}, not by the commit"
    );
    stop.store(true, Ordering::SeqCst);
    handle.join().unwrap().unwrap();
}
