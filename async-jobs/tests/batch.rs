//! Workers that run jobs in batches (`WorkerOptions::batch_size`): one commit
//! starts a batch, one commit completes it with the next batch's claim; a failure
//! rolls back its own job's writes only; a policy's retry runs the job again on
//! its own; every job of a batch is ACTIVE before the first handler runs; and a
//! stopping worker's runs claim nothing more.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use zodiac_async::{
    Decision, Failure, Handlers, Job, Outcome, Policies, PutOptions, Queue, RetryData, RetryPolicy,
    Runner, Status, Worker, WorkerOptions, transact,
};
use zodiac_objects::{Counter, Database, PRef};
use zodiac_storage::MemoryStorage;

fn database() -> (Database, PRef<Counter>) {
    let db = Database::open(Arc::new(MemoryStorage::new())).unwrap();
    let counter = transact(&db, |tx| {
        Queue::get_or_create(tx, "")?;
        Ok(tx.add(Counter::new(0))?)
    })
    .unwrap();
    (db, counter)
}

/// Handlers writing to `counter`: `count` adds its argument; `fail` adds 100,
/// then fails.
fn handlers(counter: PRef<Counter>) -> Handlers {
    let mut h = Handlers::new();
    h.register("count", move |ctx, by: i64| {
        ctx.tx().modify(&counter, |c| c.add(by))?;
        Ok(())
    });
    h.register(
        "fail",
        move |ctx, _: ()| -> Result<(), zodiac_async::HandlerError> {
            ctx.tx().modify(&counter, |c| c.add(100))?;
            Err("this job fails after writing".into())
        },
    );
    h
}

fn put_with(db: &Database, job: Job, options: PutOptions) -> PRef<Job> {
    transact(db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Queue::put_job(tx, &q, job.clone(), options.clone())
    })
    .unwrap()
}

fn put(db: &Database, handler: &str, n: i64) -> PRef<Job> {
    let job = match handler {
        "count" => Job::with_arguments(handler, &n).unwrap(),
        _ => Job::with_arguments(handler, &()).unwrap(),
    };
    put_with(db, job, PutOptions::new())
}

fn job(db: &Database, j: PRef<Job>) -> Arc<Job> {
    transact(db, |tx| Ok(tx.get(&j)?)).unwrap()
}

fn count(db: &Database, c: PRef<Counter>) -> i64 {
    transact(db, |tx| Ok(tx.get(&c)?.value())).unwrap()
}

fn batched(batch: u32) -> WorkerOptions {
    WorkerOptions {
        agent_size: batch,
        batch_size: batch,
        ..WorkerOptions::default()
    }
}

#[test]
fn a_batch_completes_in_one_commit_which_claims_the_next_batch() {
    let (db, counter) = database();
    let jobs: Vec<_> = (1..=12).map(|n| put(&db, "count", n)).collect();
    let runner = Runner::new(db.clone(), handlers(counter), Policies::new());
    let mut worker = Worker::new(db.clone(), "w1", runner, batched(4));
    let commits = db.storage().subscribe();
    assert_eq!(
        worker.poll_once().unwrap().started,
        jobs[..4],
        "one claim takes a batch"
    );
    worker.wait_idle();
    for j in &jobs {
        assert_eq!(job(&db, *j).status(), Status::Completed);
    }
    assert_eq!(count(&db, counter), 78, "each effect once");
    // The poll's activation and its claim of the first batch, then one commit
    // per batch: its 4 results with the next batch's claim.
    let events = commits.drain();
    let polled = events.len() - 3;
    assert!(polled <= 3, "{} commits for 3 batches", events.len());
    for (event, batch) in events[polled..].iter().zip(jobs.chunks(4)) {
        for j in batch {
            assert!(
                event.oids.contains(&j.oid()),
                "job {} in its batch's commit",
                j.oid()
            );
        }
    }
}

#[test]
fn a_failure_in_a_batch_rolls_back_only_its_own_writes() {
    let (db, counter) = database();
    let jobs = [
        put(&db, "count", 1),
        put(&db, "fail", 0),
        put(&db, "count", 2),
        put(&db, "count", 3),
    ];
    let runner = Runner::new(db.clone(), handlers(counter), Policies::new());
    let mut worker = Worker::new(db.clone(), "w1", runner, batched(4));
    assert_eq!(worker.poll_once().unwrap().started, jobs);
    worker.wait_idle();
    assert_eq!(count(&db, counter), 6, "the failed job's write is gone");
    for (i, j) in jobs.iter().enumerate() {
        let j = job(&db, *j);
        assert_eq!(j.status(), Status::Completed);
        match (i, j.result()) {
            (1, Some(Outcome::Failure(f))) => {
                assert!(f.message.contains("fails after writing"), "{f:?}")
            }
            (1, other) => panic!("the failing job's result: {other:?}"),
            (_, Some(Outcome::Value(_))) => {}
            (_, other) => panic!("job {i}'s result: {other:?}"),
        }
    }
}

/// Retries a failed job once, at once.
struct RetryOnce;

impl RetryPolicy for RetryOnce {
    fn on_job_error(&self, data: &mut RetryData, failure: &Failure) -> Decision {
        match data.bump_run("errors") {
            1 => Decision::Retry,
            _ => Decision::GiveUp(failure.clone()),
        }
    }
    fn on_commit_error(&self, _: &mut RetryData, failure: &Failure) -> Decision {
        Decision::GiveUp(failure.clone())
    }
    fn on_interrupted(&self, _: &mut RetryData) -> Decision {
        Decision::Retry
    }
}

#[test]
fn a_retry_in_a_batch_calls_the_handler_again_on_its_own() {
    let (db, counter) = database();
    let calls = Arc::new(AtomicU32::new(0));
    let mut h = handlers(counter);
    {
        let calls = Arc::clone(&calls);
        h.register(
            "flaky",
            move |ctx, _: ()| -> Result<(), zodiac_async::HandlerError> {
                ctx.tx().modify(&counter, |c| c.add(10))?;
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 => Err("the first call fails".into()),
                    _ => Ok(()),
                }
            },
        );
    }
    let mut policies = Policies::new();
    policies.register("once", Arc::new(RetryOnce));
    let mut flaky = Job::with_arguments("flaky", &()).unwrap();
    flaky.set_retry_policy("once");
    let jobs = [
        put(&db, "count", 1),
        put_with(&db, flaky, PutOptions::new()),
        put(&db, "count", 2),
    ];
    let runner = Runner::new(db.clone(), h, policies);
    let mut worker = Worker::new(db.clone(), "w1", runner, batched(3));
    assert_eq!(worker.poll_once().unwrap().started, jobs);
    worker.wait_idle();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "called again after the batch"
    );
    assert_eq!(count(&db, counter), 13, "the second call's write only");
    let flaky = job(&db, jobs[1]);
    assert_eq!(flaky.status(), Status::Completed);
    assert!(matches!(flaky.result(), Some(Outcome::Value(_))));
    assert_eq!(flaky.errors().len(), 1, "the failed call is in its history");
}

/// A gate the `wait` handler blocks on until it opens.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
    waiting: AtomicU32,
}

impl Gate {
    fn pass(&self) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }

    fn wait_for_a_waiter(&self) {
        while self.waiting.load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn gated_handlers(counter: PRef<Counter>, gate: &Arc<Gate>) -> Handlers {
    let mut h = handlers(counter);
    let gate = Arc::clone(gate);
    h.register("wait", move |_ctx, _: ()| {
        gate.pass();
        Ok(())
    });
    h
}

/// [`gated_handlers`] whose `count` also counts its calls in `calls`.
fn counted_gated_handlers(
    counter: PRef<Counter>,
    gate: &Arc<Gate>,
    calls: &Arc<AtomicU32>,
) -> Handlers {
    let mut h = gated_handlers(counter, gate);
    let calls = Arc::clone(calls);
    h.register("count", move |ctx, by: i64| {
        calls.fetch_add(1, Ordering::SeqCst);
        ctx.tx().modify(&counter, |c| c.add(by))?;
        Ok(())
    });
    h
}

/// A worker dying during a batch leaves every job of it ACTIVE, for recovery to
/// ask each job's policy: none of them can be lost, however far the batch got.
#[test]
fn every_job_of_a_batch_is_active_before_its_first_handler_runs() {
    let (db, counter) = database();
    let gate = Arc::new(Gate::default());
    let jobs = [
        put(&db, "wait", 0),
        put(&db, "count", 1),
        put(&db, "count", 2),
    ];
    let runner = Runner::new(db.clone(), gated_handlers(counter, &gate), Policies::new());
    let mut worker = Worker::new(db.clone(), "w1", runner, batched(3));
    assert_eq!(worker.poll_once().unwrap().started, jobs);
    gate.wait_for_a_waiter();
    for j in jobs {
        let j = job(&db, j);
        assert_eq!(j.status(), Status::Active);
        assert_eq!(j.attempts(), 1);
    }
    gate.open();
    worker.wait_idle();
    assert_eq!(count(&db, counter), 3);
}

/// A stopping worker's runs end with their own jobs: the commit of a result
/// claims nothing more, so the grace period is not spent on new work.
#[test]
fn a_stopping_workers_runs_claim_no_more_jobs() {
    let (db, counter) = database();
    let gate = Arc::new(Gate::default());
    let first = put(&db, "wait", 0);
    let rest: Vec<_> = (1..=5).map(|n| put(&db, "count", n)).collect();
    let runner = Runner::new(db.clone(), gated_handlers(counter, &gate), Policies::new());
    let options = WorkerOptions {
        agent_size: 1,
        grace_period: Duration::from_secs(10),
        ..WorkerOptions::default()
    };
    let mut worker = Worker::new(db.clone(), "w1", runner, options);
    assert_eq!(worker.poll_once().unwrap().started, [first]);
    gate.wait_for_a_waiter();
    let opener = {
        let gate = Arc::clone(&gate);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            gate.open();
        })
    };
    worker.shutdown().unwrap();
    opener.join().unwrap();
    assert_eq!(job(&db, first).status(), Status::Completed);
    for j in rest {
        assert_eq!(job(&db, j).status(), Status::Pending, "left in the queue");
    }
    assert_eq!(count(&db, counter), 0);
}

/// A batch whose commit fails (here another transaction wrote one of its jobs
/// meanwhile) is every job's commit failure: each policy decides, and the
/// default one retries a conflict, so every job runs again on its own, its
/// effect once.
#[test]
fn a_failed_batch_commit_runs_each_job_again_on_its_own() {
    let (db, counter) = database();
    let gate = Arc::new(Gate::default());
    let calls = Arc::new(AtomicU32::new(0));
    let h = counted_gated_handlers(counter, &gate, &calls);
    let jobs = [
        put(&db, "wait", 0),
        put(&db, "count", 1),
        put(&db, "count", 2),
    ];
    let runner = Runner::new(db.clone(), h, Policies::new());
    let mut worker = Worker::new(db.clone(), "w1", runner, batched(3));
    assert_eq!(worker.poll_once().unwrap().started, jobs);
    gate.wait_for_a_waiter();
    transact(&db, |tx| {
        tx.modify(&jobs[2], |j| j.annotate("note", b"x".to_vec()))??;
        Ok(())
    })
    .unwrap();
    gate.open();
    worker.wait_idle();
    assert_eq!(calls.load(Ordering::SeqCst), 4, "both count jobs ran again");
    assert_eq!(count(&db, counter), 3, "each effect once");
    for j in jobs {
        let j = job(&db, j);
        assert_eq!(j.status(), Status::Completed);
        assert!(
            matches!(j.result(), Some(Outcome::Value(_))),
            "{:?}",
            j.result()
        );
        assert_eq!(
            j.errors().len(),
            1,
            "the batch's commit failure: {:?}",
            j.errors()
        );
    }
}

/// Puts `count(n)` with a `record(tag)` callback per tag, in one transaction.
fn put_with_callbacks(db: &Database, n: i64, tags: &[&str]) -> PRef<Job> {
    transact(db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        let j = Queue::put_job(tx, &q, Job::with_arguments("count", &n)?, PutOptions::new())?;
        for tag in tags {
            zodiac_async::add_callback(tx, &j, Job::with_arguments("record", &tag.to_string())?)?;
        }
        Ok(j)
    })
    .unwrap()
}

/// Handlers with `record(tag)`, a callback noting `tag` and whether its
/// parent's result was a value.
fn recording_handlers(counter: PRef<Counter>, seen: &Arc<Mutex<Vec<String>>>) -> Handlers {
    let mut h = handlers(counter);
    let seen = Arc::clone(seen);
    h.register("record", move |ctx, tag: String| {
        let value = matches!(ctx.parent_result, Some(Outcome::Value(_)));
        seen.lock().unwrap().push(format!("{tag}:{value}"));
        Ok(())
    });
    h
}

#[test]
fn the_callbacks_a_batch_started_run_as_a_batch_that_completes_the_parents() {
    let (db, counter) = database();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let jobs: Vec<_> = (1..=4)
        .map(|n| put_with_callbacks(&db, n, &[&format!("c{n}")]))
        .collect();
    let runner = Runner::new(
        db.clone(),
        recording_handlers(counter, &seen),
        Policies::new(),
    );
    let mut worker = Worker::new(db.clone(), "w1", runner, batched(4));
    let commits = db.storage().subscribe();
    assert_eq!(worker.poll_once().unwrap().started, jobs);
    worker.wait_idle();
    assert_eq!(count(&db, counter), 10);
    assert_eq!(
        *seen.lock().unwrap(),
        ["c1:true", "c2:true", "c3:true", "c4:true"]
    );
    for j in &jobs {
        let parent = job(&db, *j);
        assert_eq!(parent.status(), Status::Completed);
        assert_eq!(job(&db, parent.callbacks()[0]).status(), Status::Completed);
    }
    // After the poll's: the batch's results (starting the callbacks), then the
    // callbacks' results (completing the parents).
    let events = commits.drain();
    let polled = events.len() - 2;
    assert!(polled <= 3, "{} commits for 4 chains", events.len());
    for j in &jobs {
        let callback = job(&db, *j).callbacks()[0];
        assert!(
            events[polled].oids.contains(&callback.oid()),
            "started by the results"
        );
        assert!(
            events[polled + 1].oids.contains(&j.oid()),
            "completed by the callbacks"
        );
    }
}

#[test]
fn a_parents_later_callbacks_run_after_the_batch_and_then_it_completes() {
    let (db, counter) = database();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let jobs = [
        put_with_callbacks(&db, 1, &["a1", "a2"]),
        put_with_callbacks(&db, 2, &["b1"]),
    ];
    let runner = Runner::new(
        db.clone(),
        recording_handlers(counter, &seen),
        Policies::new(),
    );
    let mut worker = Worker::new(db.clone(), "w1", runner, batched(2));
    assert_eq!(worker.poll_once().unwrap().started, jobs);
    worker.wait_idle();
    assert_eq!(*seen.lock().unwrap(), ["a1:true", "b1:true", "a2:true"]);
    for j in jobs {
        let parent = job(&db, j);
        assert_eq!(parent.status(), Status::Completed);
        for cb in parent.callbacks() {
            assert_eq!(job(&db, *cb).status(), Status::Completed);
        }
    }
}

/// A callback whose retry policy is not registered here runs on its own (and
/// reports that, as a run of its own does): it does not stop the rest of its
/// batch.
#[test]
fn a_callback_without_its_policy_does_not_hold_up_its_batch() {
    let (db, counter) = database();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut unknown = Job::with_arguments("record", &"x".to_string()).unwrap();
    unknown.set_retry_policy("not registered");
    let (a, b) = transact(&db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        let a = Queue::put_job(tx, &q, Job::with_arguments("count", &1)?, PutOptions::new())?;
        zodiac_async::add_callback(tx, &a, unknown.clone())?;
        let b = Queue::put_job(tx, &q, Job::with_arguments("count", &2)?, PutOptions::new())?;
        zodiac_async::add_callback(tx, &b, Job::with_arguments("record", &"b".to_string())?)?;
        Ok((a, b))
    })
    .unwrap();
    let runner = Runner::new(
        db.clone(),
        recording_handlers(counter, &seen),
        Policies::new(),
    );
    let mut worker = Worker::new(db.clone(), "w1", runner, batched(2));
    assert_eq!(worker.poll_once().unwrap().started, [a, b]);
    worker.wait_idle();
    assert_eq!(*seen.lock().unwrap(), ["b:true"]);
    assert_eq!(job(&db, b).status(), Status::Completed);
    assert_eq!(
        job(&db, a).status(),
        Status::Callbacks,
        "its callback cannot run here"
    );
}

/// A false death during a long batch: a sibling recovers a job of the batch
/// that has not started yet. A batch's transaction takes further jobs only for
/// `BATCH_SPAN_MAX`; the next one's fresh snapshot shows the job recovered, so
/// its handler does not run here. It runs once, when claimed again.
#[test]
fn a_job_recovered_while_its_batch_ran_long_is_not_run_by_the_batch() {
    let (db, counter) = database();
    let gate = Arc::new(Gate::default());
    let calls = Arc::new(AtomicU32::new(0));
    let h = counted_gated_handlers(counter, &gate, &calls);
    let jobs = [put(&db, "wait", 0), put(&db, "count", 1)];
    let runner = Runner::new(db.clone(), h, Policies::new());
    let mut worker = Worker::new(db.clone(), "w1", runner, batched(2));
    assert_eq!(worker.poll_once().unwrap().started, jobs);
    gate.wait_for_a_waiter();
    transact(&db, |tx| {
        zodiac_async::recover_interrupted(tx, &jobs[1], &Policies::new())?;
        Ok(())
    })
    .unwrap();
    std::thread::sleep(zodiac_async::limits::BATCH_SPAN_MAX + Duration::from_millis(100));
    gate.open();
    worker.wait_idle();
    assert_eq!(job(&db, jobs[0]).status(), Status::Completed);
    assert_eq!(calls.load(Ordering::SeqCst), 0, "not run by the batch");
    assert_eq!(job(&db, jobs[1]).status(), Status::Pending, "recovered");
    assert_eq!(worker.poll_once().unwrap().started, jobs[1..]);
    worker.wait_idle();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(count(&db, counter), 1);
    assert_eq!(job(&db, jobs[1]).status(), Status::Completed);
}

/// How long after its put the awaited job of the next test becomes due.
const SECOND_DUE_AFTER: Duration = Duration::from_millis(300);

/// A job of a batch that awaits another job commits its wait with the batch and
/// lets its slot go; it takes the awaited job's result once that one completes.
#[test]
fn a_job_awaiting_another_in_a_batch_takes_its_result_later() {
    let (db, counter) = database();
    let mut h = handlers(counter);
    h.register("first", move |ctx, n: i64| {
        ctx.tx().modify(&counter, |c| c.add(10))?;
        let q = Queue::get(ctx.tx(), "")?.expect("queue");
        // Not due at once: a poll whose batch ended fast would otherwise claim
        // it too, and the first poll's claims would depend on timing.
        let due = zodiac_async::Timestamp::now().plus(SECOND_DUE_AFTER);
        let second = Queue::put_job(
            ctx.tx(),
            &q,
            Job::with_arguments("second", &n)?,
            PutOptions::new().begin_after(due),
        )?;
        ctx.await_job(second);
        Ok(())
    });
    h.register("second", |_ctx, n: i64| Ok(n * 2));
    let first = put_with(
        &db,
        Job::with_arguments("first", &21i64).unwrap(),
        PutOptions::new(),
    );
    let other = put(&db, "count", 1);
    let runner = Runner::new(db.clone(), h, Policies::new());
    let mut worker = Worker::new(db.clone(), "w1", runner, batched(2));
    assert_eq!(worker.poll_once().unwrap().started, [first, other]);
    worker.wait_idle();
    let waiting = job(&db, first);
    assert_eq!(waiting.status(), Status::Active);
    let second = waiting.awaiting().expect("it awaits the job it put");
    assert_eq!(job(&db, other).status(), Status::Completed);
    assert_eq!(
        count(&db, counter),
        11,
        "the waiting handler's writes committed"
    );
    std::thread::sleep(SECOND_DUE_AFTER + Duration::from_millis(50));
    assert_eq!(worker.poll_once().unwrap().started, [second]);
    worker.wait_idle();
    let done = job(&db, first);
    assert_eq!(done.status(), Status::Completed);
    match done.result() {
        Some(Outcome::Value(v)) => assert_eq!(postcard::from_bytes::<i64>(v).unwrap(), 42),
        other => panic!("{other:?}"),
    }
}
