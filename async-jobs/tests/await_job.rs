//! "Await job": a handler hands its result over to another job; the waiting job
//! takes that job's result when it completes, without holding an agent slot.

use std::sync::Arc;

use zodiac_async::{
    Claimer, Handlers, Job, Outcome, Policies, PutOptions, Queue, RunOutcome, Runner, Status,
    Worker, WorkerOptions, add_callback, transact,
};
use zodiac_objects::{Counter, Database, PRef};
use zodiac_storage::MemoryStorage;

/// `first` puts a `second` job (in the default queue) and awaits it; `second`
/// returns its argument times two; `tally` counts in a counter.
fn setup() -> (Database, PRef<Counter>, Runner) {
    let db = Database::open(Arc::new(MemoryStorage::new())).unwrap();
    let counter = transact(&db, |tx| {
        Queue::get_or_create(tx, "")?;
        Ok(tx.add(Counter::new(0))?)
    })
    .unwrap();
    let mut h = Handlers::new();
    h.register("first", move |ctx, n: i64| {
        ctx.tx().modify(&counter, |c| c.add(1))?;
        let q = Queue::get(ctx.tx(), "")?.expect("queue");
        let second = Queue::put_job(
            ctx.tx(),
            &q,
            Job::with_arguments("second", &n)?,
            PutOptions::new(),
        )?;
        ctx.await_job(second);
        Ok(())
    });
    h.register("second", |_ctx, n: i64| Ok(n * 2));
    h.register("tally", move |ctx, _: ()| {
        ctx.tx().modify(&counter, |c| c.add(100))?;
        Ok(())
    });
    let runner = Runner::new(db.clone(), h, Policies::new());
    (db, counter, runner)
}

fn job(db: &Database, j: PRef<Job>) -> Arc<Job> {
    transact(db, |tx| Ok(tx.get(&j)?)).unwrap()
}

fn value(j: &Job) -> i64 {
    match j.result() {
        Some(Outcome::Value(v)) => postcard::from_bytes(v).unwrap(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_waiting_job_takes_the_awaited_jobs_result_and_runs_its_callbacks() {
    let (db, counter, runner) = setup();
    let first = transact(&db, |tx| {
        let first = tx.add(Job::with_arguments("first", &21i64)?)?;
        add_callback(tx, &first, Job::with_arguments("tally", &())?)?;
        Ok(first)
    })
    .unwrap();
    let RunOutcome::Awaiting(second) = runner.run(&first, None).unwrap() else {
        panic!("the handler awaited");
    };
    let f = job(&db, first);
    assert_eq!((f.status(), f.awaiting()), (Status::Active, Some(second)));
    assert_eq!(
        transact(&db, |tx| Ok(tx.get(&counter)?.value())).unwrap(),
        1,
        "the awaiting handler's writes committed"
    );
    let claimer = Claimer {
        dispatcher: "d".into(),
        agent: "a".into(),
    };
    let claimed = transact(&db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Queue::claim(tx, &q, &claimer)
    })
    .unwrap();
    assert_eq!(claimed.job, Some(second));
    runner.run(&second, Some(&claimer)).unwrap();
    let f = job(&db, first);
    assert_eq!(f.status(), Status::Completed);
    assert_eq!(f.awaiting(), None);
    assert_eq!(value(&f), 42);
    assert_eq!(
        transact(&db, |tx| Ok(tx.get(&counter)?.value())).unwrap(),
        101,
        "the waiting job's callback ran"
    );
}

#[test]
fn awaiting_a_completed_job_takes_its_result_at_once() {
    let (db, _, runner) = setup();
    let done = transact(&db, |tx| Ok(tx.add(Job::with_arguments("second", &5i64)?)?)).unwrap();
    runner.run(&done, None).unwrap();
    let mut h = Handlers::new();
    h.register("late", move |ctx, _: ()| {
        ctx.await_job(done);
        Ok(())
    });
    let late_runner = Runner::new(db.clone(), h, Policies::new());
    let late = transact(&db, |tx| Ok(tx.add(Job::with_arguments("late", &())?)?)).unwrap();
    assert!(matches!(
        late_runner.run(&late, None).unwrap(),
        RunOutcome::Finished(Outcome::Value(_))
    ));
    let l = job(&db, late);
    assert_eq!((l.status(), value(&l)), (Status::Completed, 10));
}

/// The zc.async deadlock: an agent of size 1 runs a job that awaits a job in the
/// same queue. Here the waiting job releases the slot, so both complete.
#[test]
fn a_size_one_agent_does_not_deadlock_on_its_own_follow_up_job() {
    let (db, _, runner) = setup();
    let first = transact(&db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Queue::put_job(
            tx,
            &q,
            Job::with_arguments("first", &4i64)?,
            PutOptions::new(),
        )
    })
    .unwrap();
    let options = WorkerOptions {
        agent_size: 1,
        ..WorkerOptions::default()
    };
    let mut worker = Worker::new(db.clone(), "w1", runner, options);
    for _ in 0..5 {
        worker.poll_once().unwrap();
        worker.wait_idle();
        if job(&db, first).status() == Status::Completed {
            break;
        }
    }
    let f = job(&db, first);
    assert_eq!(f.status(), Status::Completed);
    assert_eq!(value(&f), 8);
    // Both are listed as the agent's completed jobs (the waiting one, recorded by
    // its resume, although the agent let it go while it waited).
    worker.poll_once().unwrap(); // moves finished held jobs to the completed tree
    let listed: Vec<u64> = transact(&db, |tx| {
        let filter = zodiac_async::inspect::JobFilter {
            status: Some(Status::Completed),
            ..Default::default()
        };
        zodiac_async::inspect::jobs(tx, &filter, 100)
    })
    .unwrap()
    .into_iter()
    .map(|s| s.id)
    .collect();
    assert!(listed.contains(&first.oid().0), "{listed:?}");
    assert_eq!(listed.len(), 2, "{listed:?}");
}
