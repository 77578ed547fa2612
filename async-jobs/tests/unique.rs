//! Unique jobs: a put with a unique key held by a job of its queue (not yet
//! completed, or within the key's period) queues nothing and returns that job,
//! checked in the put's transaction, so racing producers never queue two.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use zodiac_async::{
    Handlers, Job, Policies, PutOptions, Queue, Queued, Runner, Status, Unique, Worker,
    WorkerOptions, discard_jobs, transact,
};
use zodiac_objects::{Database, PRef};
use zodiac_storage::MemoryStorage;

fn database() -> Database {
    Database::open(Arc::new(MemoryStorage::new())).unwrap()
}

fn put(db: &Database, queue: &str, unique: Option<Unique>) -> Queued {
    transact(db, |tx| {
        let q = Queue::get_or_create(tx, queue)?;
        let mut options = PutOptions::new();
        if let Some(u) = &unique {
            options = options.unique(u.clone());
        }
        Queue::put_job_unique(tx, &q, Job::with_arguments("echo", &1u32)?, options)
    })
    .unwrap()
}

fn pending(db: &Database, queue: &str) -> Vec<PRef<Job>> {
    transact(db, |tx| {
        let q = Queue::get(tx, queue)?.unwrap();
        Ok(Queue::pending(tx, &q, usize::MAX)?
            .into_iter()
            .map(|(_, j)| j)
            .collect())
    })
    .unwrap()
}

/// Runs every pending job of the default queue to completion with a worker.
fn run_all(db: &Database) {
    let mut handlers = Handlers::new();
    handlers.register("echo", |_ctx, n: u32| -> Result<u32, _> { Ok(n) });
    let runner = Runner::new(db.clone(), handlers, Policies::new());
    let mut worker = Worker::new(db.clone(), "w1", runner, WorkerOptions::default());
    worker.poll_once().unwrap();
    worker.wait_idle();
    worker.shutdown().unwrap();
}

fn status(db: &Database, job: PRef<Job>) -> Status {
    transact(db, |tx| Ok(tx.get(&job)?.status())).unwrap()
}

#[test]
fn a_second_put_with_a_held_key_returns_the_first_job() {
    let db = database();
    let first = put(&db, "", Some(Unique::new("report-7")));
    assert!(!first.existing);
    let second = put(&db, "", Some(Unique::new("report-7")));
    assert_eq!(
        second,
        Queued {
            job: first.job,
            existing: true
        }
    );
    // Another key, another queue, or no key: new jobs.
    assert!(!put(&db, "", Some(Unique::new("report-8"))).existing);
    assert!(!put(&db, "other", Some(Unique::new("report-7"))).existing);
    assert!(!put(&db, "", None).existing);
    assert_eq!(pending(&db, "").len(), 3);
    // Queue::put of a NEW job with a held key leaves it NEW and names the holder.
    let (held_by, left) = transact(&db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        let job = tx.add(Job::with_arguments("echo", &2u32)?)?;
        let id = Queue::put(
            tx,
            &q,
            &job,
            PutOptions::new().unique(Unique::new("report-7")),
        )?;
        Ok((id, tx.get(&job)?.status()))
    })
    .unwrap();
    assert_eq!((held_by, left), (first.job.oid(), Status::New));
}

#[test]
fn a_completed_job_lets_its_key_go_unless_within_its_period() {
    let db = database();
    let plain = put(&db, "", Some(Unique::new("plain")));
    let period = Unique::new("period").for_period(Duration::from_secs(3600));
    let held = put(&db, "", Some(period.clone()));
    run_all(&db);
    assert_eq!(status(&db, plain.job), Status::Completed);
    assert_eq!(status(&db, held.job), Status::Completed);
    assert!(!put(&db, "", Some(Unique::new("plain"))).existing);
    assert_eq!(put(&db, "", Some(period.clone())).job, held.job);

    // A short period passes: the key is free again.
    let short = Unique::new("short").for_period(Duration::from_millis(1));
    let first = put(&db, "", Some(short.clone()));
    run_all(&db);
    thread::sleep(Duration::from_millis(5));
    let again = put(&db, "", Some(short));
    assert!(!again.existing && again.job != first.job);
}

#[test]
fn a_pulled_or_discarded_job_frees_its_key() {
    let db = database();
    let first = put(&db, "", Some(Unique::new("k")));
    transact(&db, |tx| Queue::remove(tx, &first.job)).unwrap();
    let second = put(&db, "", Some(Unique::new("k")));
    assert!(!second.existing);

    // Discarded after completion: the entry goes, even within its period.
    let period = Unique::new("p").for_period(Duration::from_secs(3600));
    let held = put(&db, "", Some(period.clone()));
    run_all(&db);
    assert_eq!(put(&db, "", Some(period.clone())).job, held.job);
    transact(&db, |tx| discard_jobs(tx, &[held.job])).unwrap();
    assert!(!put(&db, "", Some(period)).existing);
}

#[test]
fn racing_producers_on_threads_queue_one_job_per_key() {
    let db = database();
    transact(&db, |tx| Queue::get_or_create(tx, "")).unwrap();
    let producers = 8;
    let barrier = Arc::new(Barrier::new(producers));
    let threads: Vec<_> = (0..producers)
        .map(|_| {
            let db = db.clone();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                (0..10)
                    .map(|k| put(&db, "", Some(Unique::new(format!("key-{k}")))).job)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let results: Vec<Vec<PRef<Job>>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for k in 0..10 {
        let ids: Vec<_> = results.iter().map(|r| r[k]).collect();
        assert!(ids.iter().all(|id| *id == ids[0]), "key-{k}: {ids:?}");
    }
    let mut queued = pending(&db, "");
    queued.sort();
    let mut want: Vec<_> = results[0].clone();
    want.sort();
    assert_eq!(queued, want, "exactly one job per key");
}

#[test]
fn a_key_past_its_limit_is_refused() {
    let db = database();
    let long = "k".repeat(zodiac_async::limits::UNIQUE_KEY_BYTES_MAX + 1);
    let refused = transact(&db, |tx| {
        let q = Queue::get_or_create(tx, "")?;
        Queue::put_job(
            tx,
            &q,
            Job::with_arguments("echo", &1u32)?,
            PutOptions::new().unique(Unique::new(long.clone())),
        )
    });
    assert!(refused.is_err());
    let longest = "k".repeat(zodiac_async::limits::UNIQUE_KEY_BYTES_MAX);
    assert!(!put(&db, "", Some(Unique::new(longest))).existing);
}
