//! Running claimed jobs: atomic result and writes, handler errors rolled back,
//! panics and unknown handlers as failures, conflicts retried by the policy.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;

use serde::{Deserialize, Serialize};
use zodiac_async::limits::LANE_SCHEDULED;
use zodiac_async::{
    Claimer, Decision, Error, Failure, FailureKind, Handlers, Job, Location, Outcome, Policies,
    PutOptions, Queue, RetryData, RetryPolicy, RunOutcome, Runner, Status, Timestamp, transact,
};
use zodiac_objects::{Database, PRef, Persistent};
use zodiac_storage::MemoryStorage;

/// A tally whose concurrent changes do not merge: two writers conflict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Tally {
    n: i64,
}
impl Persistent for Tally {
    const TYPE_NAME: &'static str = "test.Tally";
}

fn claimer() -> Claimer {
    Claimer {
        dispatcher: "d1".into(),
        agent: "main".into(),
    }
}

struct Fixture {
    db: Database,
    tally: PRef<Tally>,
}

fn fixture() -> Fixture {
    let db = Database::open(Arc::new(MemoryStorage::new())).unwrap();
    let tally = transact(&db, |tx| {
        Queue::get_or_create(tx, "")?;
        Ok(tx.add(Tally { n: 0 })?)
    })
    .unwrap();
    Fixture { db, tally }
}

impl Fixture {
    /// Puts a job and claims it for `claimer()`.
    fn claimed(&self, job: Job, options: PutOptions) -> PRef<Job> {
        let job = transact(&self.db, |tx| {
            let q = Queue::get(tx, "")?.unwrap();
            Queue::put_job(tx, &q, job.clone(), options.clone())
        })
        .unwrap();
        let claim = transact(&self.db, |tx| {
            let q = Queue::get(tx, "")?.unwrap();
            Queue::claim(tx, &q, &claimer())
        })
        .unwrap();
        assert_eq!(claim.job, Some(job));
        job
    }

    fn job(&self, job: PRef<Job>) -> Arc<Job> {
        transact(&self.db, |tx| Ok(tx.get(&job)?)).unwrap()
    }

    fn tally(&self) -> i64 {
        transact(&self.db, |tx| Ok(tx.get(&self.tally)?.n)).unwrap()
    }

    fn runner(&self, handlers: Handlers) -> Runner {
        Runner::new(self.db.clone(), handlers, Policies::new())
    }
}

/// Adds `by` to the tally and returns the new value.
fn add_handler(tally: PRef<Tally>) -> Handlers {
    let mut h = Handlers::new();
    h.register("add", move |ctx, by: i64| {
        let n = ctx.tx().modify(&tally, |t| {
            t.n += by;
            t.n
        })?;
        Ok(n)
    });
    h
}

fn failure_of(job: &Job) -> &Failure {
    match job.result() {
        Some(Outcome::Failure(f)) => f,
        other => panic!("expected a failure result, got {other:?}"),
    }
}

#[test]
fn the_handler_writes_and_the_result_commit_together() {
    let f = fixture();
    let runner = f.runner(add_handler(f.tally));
    let job = f.claimed(
        Job::with_arguments("add", &5i64).unwrap(),
        PutOptions::new(),
    );
    let outcome = runner.run(&job, Some(&claimer())).unwrap();
    let value = postcard::to_stdvec(&5i64).unwrap();
    assert_eq!(outcome, RunOutcome::Finished(Outcome::Value(value.clone())));
    assert_eq!(f.tally(), 5);
    let j = f.job(job);
    assert_eq!(j.status(), Status::Completed);
    assert_eq!(j.result(), Some(&Outcome::Value(value)));
    assert_eq!(j.attempts(), 1);
    assert!(j.errors().is_empty());
    let (start, end) = (j.active_start().unwrap(), j.active_end().unwrap());
    assert!(start <= end);
    // A completed job is not run again.
    let err = runner.run(&job, Some(&claimer())).unwrap_err();
    assert!(
        matches!(
            err,
            Error::IllegalTransition {
                from: Status::Completed,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(f.tally(), 5);
}

#[test]
fn a_handler_error_rolls_back_its_writes_and_becomes_the_result() {
    let f = fixture();
    let tally = f.tally;
    let mut h = Handlers::new();
    h.register("add-then-fail", move |ctx, by: i64| -> Result<(), _> {
        ctx.tx().modify(&tally, |t| t.n += by)?;
        Err("the mail server said no".into())
    });
    let runner = f.runner(h);
    let job = f.claimed(
        Job::with_arguments("add-then-fail", &5i64).unwrap(),
        PutOptions::new(),
    );
    let RunOutcome::Finished(Outcome::Failure(failure)) =
        runner.run(&job, Some(&claimer())).unwrap()
    else {
        panic!("the job must fail");
    };
    assert_eq!(failure.kind, FailureKind::UserError);
    assert_eq!(failure.message, "the mail server said no");
    assert_eq!(f.tally(), 0, "the handler's write was rolled back");
    let j = f.job(job);
    assert_eq!(j.status(), Status::Completed);
    assert_eq!(failure_of(&j), &failure);
    assert_eq!(j.errors().len(), 1);
    assert_eq!(j.errors()[0].summary, "user error: the mail server said no");
}

#[test]
fn a_panic_becomes_a_panic_failure_and_the_runner_goes_on() {
    let f = fixture();
    let mut h = add_handler(f.tally);
    h.register("explode", |_ctx, _: ()| -> Result<(), _> {
        panic!("kaboom")
    });
    let runner = f.runner(h);
    let job = f.claimed(
        Job::with_arguments("explode", &()).unwrap(),
        PutOptions::new(),
    );
    let j = match runner.run(&job, Some(&claimer())).unwrap() {
        RunOutcome::Finished(_) => f.job(job),
        other => panic!("{other:?}"),
    };
    let failure = failure_of(&j);
    assert_eq!(failure.kind, FailureKind::Panic);
    assert_eq!(failure.message, "the handler panicked: kaboom");
    assert_eq!(
        j.attempts(),
        1,
        "a panic is not retried by the default policy"
    );
    let next = f.claimed(
        Job::with_arguments("add", &1i64).unwrap(),
        PutOptions::new(),
    );
    assert!(matches!(
        runner.run(&next, Some(&claimer())).unwrap(),
        RunOutcome::Finished(Outcome::Value(_))
    ));
    assert_eq!(f.tally(), 1);
}

#[test]
fn an_unknown_handler_fails_the_job_without_retries() {
    let f = fixture();
    let runner = f.runner(Handlers::new());
    let job = f.claimed(
        Job::new("no.such.handler", vec![]).unwrap(),
        PutOptions::new(),
    );
    runner.run(&job, Some(&claimer())).unwrap();
    let j = f.job(job);
    assert_eq!(j.status(), Status::Completed);
    let failure = failure_of(&j);
    assert_eq!(failure.kind, FailureKind::UnknownHandler);
    assert_eq!(
        failure.message,
        "no handler named \"no.such.handler\" is registered in this worker"
    );
    assert_eq!(j.errors().len(), 1);
}

#[test]
fn arguments_of_the_wrong_type_are_a_user_error() {
    let f = fixture();
    let runner = f.runner(add_handler(f.tally));
    let job = f.claimed(Job::new("add", vec![]).unwrap(), PutOptions::new());
    runner.run(&job, Some(&claimer())).unwrap();
    let j = f.job(job);
    let failure = failure_of(&j);
    assert_eq!(failure.kind, FailureKind::UserError);
    assert!(
        failure.message.contains("do not decode"),
        "{}",
        failure.message
    );
}

/// A handler whose first `conflicts` runs are overtaken: after it writes the
/// tally, another transaction commits a change to it, so the result's commit
/// conflicts.
fn overtaken_handler(
    db: &Database,
    tally: PRef<Tally>,
    conflicts: u32,
) -> (Handlers, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let mut h = Handlers::new();
    let (db, counter) = (db.clone(), Arc::clone(&calls));
    h.register("overtaken", move |ctx, _: ()| {
        ctx.tx().modify(&tally, |t| t.n += 1)?;
        if counter.fetch_add(1, Ordering::SeqCst) < conflicts {
            let other = db.clone();
            thread::spawn(move || transact(&other, |tx| Ok(tx.modify(&tally, |t| t.n += 100)?)))
                .join()
                .unwrap()?;
        }
        Ok(())
    });
    (h, calls)
}

#[test]
fn a_commit_conflict_is_retried_and_the_effect_lands_once() {
    let f = fixture();
    let (h, calls) = overtaken_handler(&f.db, f.tally, 2);
    let runner = f.runner(h);
    let job = f.claimed(
        Job::with_arguments("overtaken", &()).unwrap(),
        PutOptions::new(),
    );
    let outcome = runner.run(&job, Some(&claimer())).unwrap();
    assert!(
        matches!(outcome, RunOutcome::Finished(Outcome::Value(_))),
        "{outcome:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        f.tally(),
        201,
        "two outside commits plus the job's one increment"
    );
    let j = f.job(job);
    assert_eq!(j.attempts(), 1, "conflict retries stay within one run");
    assert_eq!(j.errors().len(), 2);
    assert!(
        j.errors()[0].summary.starts_with("conflict: "),
        "{:?}",
        j.errors()
    );
    assert_eq!(j.retry_data().run_count(zodiac_async::retry::CONFLICTS), 2);
}

#[test]
fn the_default_policy_gives_up_after_five_conflicted_attempts() {
    let f = fixture();
    let (h, calls) = overtaken_handler(&f.db, f.tally, u32::MAX);
    let runner = f.runner(h);
    let job = f.claimed(
        Job::with_arguments("overtaken", &()).unwrap(),
        PutOptions::new(),
    );
    let outcome = runner.run(&job, Some(&claimer())).unwrap();
    let RunOutcome::Finished(Outcome::Failure(failure)) = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(failure.kind, FailureKind::Conflict);
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    assert_eq!(f.tally(), 500, "none of the job's increments landed");
    assert_eq!(f.job(job).errors().len(), 5);
}

#[test]
fn only_new_or_assigned_jobs_run_and_only_for_their_holder() {
    let f = fixture();
    let runner = f.runner(add_handler(f.tally));
    // PENDING: not claimed yet.
    let pending = transact(&f.db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Queue::put_job(
            tx,
            &q,
            Job::with_arguments("add", &1i64)?,
            PutOptions::new(),
        )
    })
    .unwrap();
    let err = runner.run(&pending, None).unwrap_err();
    assert!(
        err.to_string()
            .contains("a job may only be run from NEW or ASSIGNED"),
        "{err}"
    );
    assert_eq!(f.job(pending).status(), Status::Pending);
    // Claimed by `claimer()`, run for another agent: abandoned, nothing stored.
    let claim = transact(&f.db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Queue::claim(tx, &q, &claimer())
    })
    .unwrap();
    assert_eq!(claim.job, Some(pending));
    let other = Claimer {
        dispatcher: "d2".into(),
        agent: "main".into(),
    };
    assert_eq!(
        runner.run(&pending, Some(&other)).unwrap(),
        RunOutcome::Abandoned
    );
    assert_eq!(runner.run(&pending, None).unwrap(), RunOutcome::Abandoned);
    assert_eq!(f.job(pending).status(), Status::Assigned);
    assert_eq!(f.tally(), 0);
    // A NEW job outside any queue runs directly.
    let direct = transact(&f.db, |tx| Ok(tx.add(Job::with_arguments("add", &7i64)?)?)).unwrap();
    runner.run(&direct, None).unwrap();
    assert_eq!(f.job(direct).status(), Status::Completed);
    assert_eq!(f.tally(), 7);
}

/// Retries user errors later: at a fixed time far in the future.
struct Later;
impl RetryPolicy for Later {
    fn on_job_error(&self, data: &mut RetryData, f: &Failure) -> Decision {
        if data.bump_life("later") == 1 {
            Decision::RetryAt(Timestamp::from_micros(u64::MAX / 2))
        } else {
            Decision::GiveUp(f.clone())
        }
    }
    fn on_commit_error(&self, _: &mut RetryData, f: &Failure) -> Decision {
        Decision::GiveUp(f.clone())
    }
    fn on_interrupted(&self, _: &mut RetryData) -> Decision {
        Decision::Retry
    }
}

#[test]
fn a_retry_later_puts_the_job_back_in_its_queue_and_the_deadline_stops_it() {
    let f = fixture();
    let mut h = Handlers::new();
    h.register("fail", |_ctx, _: ()| -> Result<(), _> {
        Err("not yet".into())
    });
    let mut policies = Policies::new();
    policies.register("later", Arc::new(Later));
    let runner = Runner::new(f.db.clone(), h, policies);
    let job = f.claimed(
        Job::with_arguments("fail", &()).unwrap(),
        PutOptions::new().retry_policy("later"),
    );
    let retry_at = Timestamp::from_micros(u64::MAX / 2);
    assert_eq!(
        runner.run(&job, Some(&claimer())).unwrap(),
        RunOutcome::PutBack { retry_at }
    );
    let j = f.job(job);
    assert_eq!(j.status(), Status::Pending);
    let Location::Queue { key, .. } = j.location() else {
        panic!("{:?}", j.location());
    };
    assert_eq!((key.lane, key.at), (LANE_SCHEDULED, retry_at));
    assert_eq!(j.retry_data().life_count("later"), 1);
    assert_eq!(j.errors().len(), 1);

    // With a deadline, the same retry would start too late: the job gives up.
    let bounded = f.claimed(
        Job::with_arguments("fail", &()).unwrap(),
        PutOptions::new()
            .retry_policy("later")
            .begin_by(std::time::Duration::from_secs(3600)),
    );
    runner.run(&bounded, Some(&claimer())).unwrap();
    let j = f.job(bounded);
    assert_eq!(j.status(), Status::Completed);
    assert_eq!(failure_of(&j).kind, FailureKind::Timeout);
}

#[test]
fn storing_the_result_frees_the_jobs_quota_place() {
    let f = fixture();
    let quota = transact(&f.db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Queue::set_quota(tx, &q, "one", 1)
    })
    .unwrap();
    let runner = f.runner(add_handler(f.tally));
    let job = f.claimed(
        Job::with_arguments("add", &1i64).unwrap(),
        PutOptions::new().quota("one"),
    );
    let held = |f: &Fixture| transact(&f.db, |tx| Ok(tx.get(&quota)?.held().len())).unwrap();
    assert_eq!(held(&f), 1);
    runner.run(&job, Some(&claimer())).unwrap();
    assert_eq!(held(&f), 0);
    assert_eq!(f.job(job).quota_names(), ["one".to_string()]);
}

/// A handler that, while its job is ACTIVE, has a sibling declare the run
/// interrupted and recover it (a false death): the sibling's decision is applied,
/// and this run must then store nothing.
fn falsely_declared_dead(db: &Database, tally: PRef<Tally>) -> Handlers {
    let mut h = Handlers::new();
    let db = db.clone();
    h.register("stalls", move |ctx, _: ()| {
        ctx.tx().modify(&tally, |t| t.n += 1)?;
        let (db, job) = (db.clone(), PRef::<Job>::from_oid(ctx.job));
        thread::spawn(move || {
            transact(&db, |tx| {
                zodiac_async::recover_interrupted(tx, &job, &Policies::new())
            })
        })
        .join()
        .unwrap()?;
        Ok(())
    });
    h
}

#[test]
fn interrupted_runs_go_back_nine_times_and_the_tenth_aborts() {
    let f = fixture();
    let runner = f.runner(falsely_declared_dead(&f.db, f.tally));
    let job = f.claimed(
        Job::with_arguments("stalls", &()).unwrap(),
        PutOptions::new(),
    );
    for n in 1..=10 {
        assert_eq!(
            runner.run(&job, Some(&claimer())).unwrap(),
            RunOutcome::Abandoned,
            "run {n}: the run that was taken over stores nothing"
        );
        let j = f.job(job);
        assert_eq!(j.attempts(), n);
        assert_eq!(j.errors().len(), n as usize);
        assert!(
            j.errors()[0].summary.starts_with("reassigned: "),
            "{:?}",
            j.errors()
        );
        if n < 10 {
            assert_eq!(j.status(), Status::Pending, "interruption {n} is retried");
            let Location::Queue { key, .. } = j.location() else {
                panic!("{:?}", j.location());
            };
            assert_eq!(key.lane, zodiac_async::limits::LANE_PUT_BACK);
            let claim = transact(&f.db, |tx| {
                let q = Queue::get(tx, "")?.unwrap();
                Queue::claim(tx, &q, &claimer())
            })
            .unwrap();
            assert_eq!(claim.job, Some(job));
        } else {
            assert_eq!(j.status(), Status::Completed);
            assert_eq!(failure_of(&j).kind, FailureKind::Aborted);
        }
    }
    assert_eq!(f.tally(), 0, "no abandoned run's writes landed");
}

#[test]
fn only_active_claimed_jobs_can_be_recovered() {
    let f = fixture();
    let job = f.claimed(Job::with_arguments("x", &()).unwrap(), PutOptions::new());
    let err = transact(&f.db, |tx| {
        zodiac_async::recover_interrupted(tx, &job, &Policies::new())
    })
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::IllegalTransition {
                from: Status::Assigned,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(f.job(job).status(), Status::Assigned);
}

/// A stalled run is declared dead; the job is recovered, claimed again by the same
/// agent and started again before the stalled run gets to store its result. The
/// stalled run must see that the current run is not its own and store nothing.
#[test]
fn a_stale_run_never_stores_over_a_newer_run_of_the_same_agent() {
    use std::sync::Mutex;
    use std::sync::mpsc::{Receiver, Sender, channel};
    let f = fixture();
    let (started_tx, started_rx) = channel::<()>();
    let (go_tx, go_rx) = channel::<()>();
    let started_tx = Arc::new(Mutex::new(started_tx));
    let go_rx: Arc<Mutex<Receiver<()>>> = Arc::new(Mutex::new(go_rx));
    let started_rx: Arc<Mutex<Receiver<()>>> = Arc::new(Mutex::new(started_rx));
    let runner_cell: Arc<Mutex<Option<Runner>>> = Arc::new(Mutex::new(None));
    let nested = Arc::new(Mutex::new(None));
    let calls = Arc::new(AtomicU32::new(0));
    let mut h = Handlers::new();
    {
        let (db, tally) = (f.db.clone(), f.tally);
        let (calls, runner_cell, nested) = (
            Arc::clone(&calls),
            Arc::clone(&runner_cell),
            Arc::clone(&nested),
        );
        let (started_tx, started_rx, go_rx) = (
            Arc::clone(&started_tx),
            Arc::clone(&started_rx),
            Arc::clone(&go_rx),
        );
        h.register("stale", move |ctx, _: ()| {
            ctx.tx().modify(&tally, |t| t.n += 1)?;
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 => {
                    // The stalled run: a sibling recovers the job and the same
                    // agent claims and starts it again, on another thread.
                    let job = PRef::<Job>::from_oid(ctx.job);
                    let (db, runner) = (db.clone(), runner_cell.lock().unwrap().clone().unwrap());
                    let handle = thread::spawn(move || {
                        transact(&db, |tx| {
                            zodiac_async::recover_interrupted(tx, &job, &Policies::new())?;
                            let q = Queue::get(tx, "")?.unwrap();
                            Queue::claim(tx, &q, &claimer())
                        })
                        .unwrap();
                        runner.run(&job, Some(&claimer())).unwrap()
                    });
                    *nested.lock().unwrap() = Some(handle);
                    started_rx.lock().unwrap().recv().unwrap();
                }
                1 => {
                    // The new run: wait until the stalled run has tried to store.
                    let tx: &Sender<()> = &started_tx.lock().unwrap();
                    tx.send(()).unwrap();
                    go_rx.lock().unwrap().recv().unwrap();
                }
                _ => {} // the stalled run retrying after its commit conflicted
            }
            Ok(())
        });
    }
    let runner = f.runner(h);
    *runner_cell.lock().unwrap() = Some(runner.clone());
    let job = f.claimed(
        Job::with_arguments("stale", &()).unwrap(),
        PutOptions::new(),
    );
    assert_eq!(
        runner.run(&job, Some(&claimer())).unwrap(),
        RunOutcome::Abandoned
    );
    go_tx.send(()).unwrap();
    let handle = nested.lock().unwrap().take().unwrap();
    assert!(matches!(
        handle.join().unwrap(),
        RunOutcome::Finished(Outcome::Value(_))
    ));
    let j = f.job(job);
    assert_eq!((j.status(), j.attempts()), (Status::Completed, 2));
    assert_eq!(f.tally(), 1, "only the current run's write landed");
}

/// Workers on threads claim and run jobs that all increment one tally, on a memory
/// and a file storage. Their commits conflict; whatever the policy decides, every
/// job ends COMPLETED and the tally equals the number of jobs that succeeded:
/// each job's effect landed exactly once or not at all.
#[test]
fn concurrent_workers_apply_each_jobs_effect_exactly_once() {
    use std::collections::HashSet;
    use zodiac_storage::{Durability, FileOptions, FileStorage, Storage};
    const JOBS: i64 = 120;
    const WORKERS: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    let storages: Vec<Arc<dyn Storage>> = vec![
        Arc::new(MemoryStorage::new()),
        Arc::new(
            FileStorage::open(
                dir.path().join("x.zdb"),
                FileOptions::new().durability(Durability::Off),
            )
            .unwrap(),
        ),
    ];
    for storage in storages {
        let db = Database::open(storage).unwrap();
        let tally = transact(&db, |tx| {
            let q = Queue::get_or_create(tx, "")?;
            for i in 0..JOBS {
                Queue::put_job(
                    tx,
                    &q,
                    Job::with_arguments("add", &1i64)?,
                    PutOptions::new(),
                )?;
                let _ = i;
            }
            Ok(tx.add(Tally { n: 0 })?)
        })
        .unwrap();
        // Holding the transaction open a little makes the workers overlap.
        let mut h = Handlers::new();
        h.register("add", move |ctx, by: i64| {
            ctx.tx().modify(&tally, |t| t.n += by)?;
            thread::sleep(std::time::Duration::from_micros(300));
            Ok(())
        });
        let runner = Runner::new(db.clone(), h, Policies::new());
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let (db, runner) = (db.clone(), runner.clone());
                thread::spawn(move || {
                    let me = Claimer {
                        dispatcher: "d1".into(),
                        agent: format!("agent-{w}"),
                    };
                    let mut ran = Vec::new();
                    loop {
                        let claim = transact(&db, |tx| {
                            let q = Queue::get(tx, "")?.unwrap();
                            Queue::claim(tx, &q, &me)
                        })
                        .unwrap();
                        let Some(job) = claim.job else { break };
                        let outcome = runner.run(&job, Some(&me)).unwrap();
                        assert!(matches!(outcome, RunOutcome::Finished(_)), "{outcome:?}");
                        ran.push(job);
                    }
                    ran
                })
            })
            .collect();
        let mut all = HashSet::new();
        for w in workers {
            for job in w.join().unwrap() {
                assert!(all.insert(job), "job {job:?} ran twice");
            }
        }
        assert_eq!(all.len(), JOBS as usize);
        let mut succeeded = 0;
        let mut conflicts = 0;
        for job in &all {
            let j = transact(&db, |tx| Ok(tx.get(job)?)).unwrap();
            assert_eq!(j.status(), Status::Completed);
            match j.result() {
                Some(Outcome::Value(_)) => succeeded += 1,
                Some(Outcome::Failure(f)) => assert_eq!(f.kind, FailureKind::Conflict),
                None => panic!("no result"),
            }
            conflicts += j.errors().len();
        }
        let n = transact(&db, |tx| Ok(tx.get(&tally)?.n)).unwrap();
        assert_eq!(
            n, succeeded,
            "the tally counts exactly the jobs that succeeded"
        );
        assert!(succeeded > 0);
        println!(
            "{}: {WORKERS} workers, {JOBS} jobs on one contended object: {succeeded} \
             succeeded, {conflicts} conflicted attempts recorded",
            db.storage().describe()
        );
    }
}
