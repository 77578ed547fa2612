//! Jobs that end without a run (cancelled, expired): their callbacks run once, in
//! a worker that adopts them, and survive the death of the worker that found them.

use std::sync::Arc;
use std::time::Duration;

use zodiac_async::limits::AGENT_NAME;
use zodiac_async::{
    Dispatchers, Failure, FailureKind, Handlers, Job, Policies, PutOptions, Queue, Runner, Status,
    Timestamp, Worker, WorkerOptions, add_callback, fail, transact,
};
use zodiac_objects::{Counter, Database, PRef};
use zodiac_storage::MemoryStorage;

fn setup() -> (Database, PRef<Counter>, Handlers) {
    let db = Database::open(Arc::new(MemoryStorage::new())).unwrap();
    let counter = transact(&db, |tx| {
        Queue::get_or_create(tx, "")?;
        let c = tx.add(Counter::new(0))?;
        tx.set_root_entry("tally", c)?;
        Ok(c)
    })
    .unwrap();
    let mut h = Handlers::new();
    h.register("noop", |_ctx, _: ()| Ok(()));
    h.register("tally", move |ctx, _: ()| {
        ctx.tx().modify(&counter, |c| c.add(1))?;
        Ok(())
    });
    (db, counter, h)
}

/// Puts a `noop` job with one `tally` callback.
fn put_with_callback(db: &Database, options: PutOptions) -> PRef<Job> {
    transact(db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        let job = Queue::put_job(tx, &q, Job::with_arguments("noop", &())?, options.clone())?;
        add_callback(tx, &job, Job::with_arguments("tally", &())?)?;
        Ok(job)
    })
    .unwrap()
}

fn status(db: &Database, j: PRef<Job>) -> Status {
    transact(db, |tx| Ok(tx.get(&j)?.status())).unwrap()
}

fn tally(db: &Database, c: PRef<Counter>) -> i64 {
    transact(db, |tx| Ok(tx.get(&c)?.value())).unwrap()
}

/// The story: the callbacks of a job cancelled while pending never ran (nothing
/// held the job). Now the first worker to poll adopts it; a second finds nothing
/// left to adopt, so the callback runs once, and the job ends among the adopting
/// agent's completed jobs.
#[test]
fn a_cancelled_jobs_callbacks_run_once_in_the_worker_that_adopts_it() {
    let (db, counter, h) = setup();
    let job = put_with_callback(&db, PutOptions::new().begin_after(Timestamp(u64::MAX / 2)));
    transact(&db, |tx| {
        fail(tx, &job, Some(Failure::new(FailureKind::Cancelled, "test")))
    })
    .unwrap();
    assert_eq!(status(&db, job), Status::Callbacks);
    let runner = Runner::new(db.clone(), h, Policies::new());
    let mut w1 = Worker::new(db.clone(), "w1", runner.clone(), WorkerOptions::default());
    let mut w2 = Worker::new(db.clone(), "w2", runner, WorkerOptions::default());
    w1.poll_once().unwrap();
    w2.poll_once().unwrap();
    w1.wait_idle();
    w2.wait_idle();
    assert_eq!(status(&db, job), Status::Completed);
    assert_eq!(tally(&db, counter), 1, "the callback ran once");
    w1.poll_once().unwrap();
    let kept = transact(&db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Dispatchers::completed(tx, &q, "w1", AGENT_NAME, 10)
    })
    .unwrap();
    assert_eq!(kept.into_iter().map(|(_, j)| j).collect::<Vec<_>>(), [job]);
}

/// The story (catastrophe E8 with a crash): an agent's claim found a job past its
/// deadline and completed it with a timeout, leaving its callbacks to run after
/// the commit; a process that died then left them unrun for good, since nothing
/// held the job. Now the claiming agent holds it, and the restarted worker (same
/// id) resumes its callbacks.
#[test]
fn the_callbacks_of_an_expired_job_survive_the_death_of_the_claiming_worker() {
    let (db, counter, h) = setup();
    let long_ago = Timestamp::from_micros(Timestamp::now().as_micros() - 3_600_000_000);
    let job = put_with_callback(
        &db,
        PutOptions::new()
            .begin_after(long_ago)
            .begin_by(Duration::from_secs(1)),
    );
    // The claim of a worker that dies right after its commit.
    transact(&db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        let now = Timestamp::now();
        Dispatchers::activate(tx, &q, "w1", now, Duration::from_secs(60))?;
        Dispatchers::set_agent(tx, &q, "w1", AGENT_NAME, 3)?;
        let claim = Dispatchers::claim_for_agent_reporting(tx, &q, "w1", AGENT_NAME, now)?;
        assert_eq!((claim.job, claim.expired), (None, vec![job]));
        Ok(())
    })
    .unwrap();
    assert_eq!(status(&db, job), Status::Callbacks);
    assert_eq!(tally(&db, counter), 0);

    let runner = Runner::new(db.clone(), h, Policies::new());
    let options = WorkerOptions {
        restarted: true,
        ..WorkerOptions::default()
    };
    let mut restarted = Worker::new(db.clone(), "w1", runner, options);
    restarted.poll_once().unwrap();
    restarted.wait_idle();
    assert_eq!(status(&db, job), Status::Completed);
    assert_eq!(tally(&db, counter), 1);
    let failure = transact(&db, |tx| Ok(tx.get(&job)?.result().cloned())).unwrap();
    assert!(
        matches!(failure, Some(zodiac_async::Outcome::Failure(f)) if f.kind == FailureKind::Timeout)
    );
}
