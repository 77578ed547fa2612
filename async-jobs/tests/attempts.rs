//! Retries of a handler's own errors: a job's attempt limit and backoff (its own
//! or its queue's default), each attempt's error in its history with the
//! backtrace of a panic or of an error that carries one.

use std::sync::Arc;
use std::time::Duration;

use zodiac_async::{
    AttemptLimit, Backoff, Claimer, Clock, FailureKind, Handlers, Job, ManualClock, Outcome,
    Policies, PutOptions, Queue, RunOutcome, Runner, Status, Timestamp, TracedError, transact,
};
use zodiac_objects::{Database, PRef};
use zodiac_storage::MemoryStorage;

const WAIT: Duration = Duration::from_secs(10);

fn claimer() -> Claimer {
    Claimer {
        dispatcher: "d1".into(),
        agent: "main".into(),
    }
}

/// A handler that fails on the attempts before `succeed_on` (0: always).
fn flaky_handlers() -> Handlers {
    let mut h = Handlers::new();
    h.register("flaky", |ctx, succeed_on: u32| -> Result<u32, _> {
        if succeed_on != 0 && ctx.attempt >= succeed_on {
            Ok(ctx.attempt)
        } else {
            Err(format!("attempt {} failed", ctx.attempt).into())
        }
    });
    h.register("panics", |_ctx, _: ()| -> Result<(), _> {
        panic_deep_inside()
    });
    h.register("traced", |_ctx, _: ()| -> Result<(), _> {
        Err(Box::new(TracedError::new(refuse_with_trace())))
    });
    h
}

fn panic_deep_inside() -> Result<(), zodiac_async::HandlerError> {
    panic!("the handler's invariant broke")
}

fn refuse_with_trace() -> String {
    "refused, with a trace".to_string()
}

struct Fixture {
    db: Database,
    clock: ManualClock,
    runner: Runner,
}

fn fixture() -> Fixture {
    let db = Database::open(Arc::new(MemoryStorage::new())).unwrap();
    transact(&db, |tx| Queue::get_or_create(tx, "")).unwrap();
    // Ahead of the system clock the puts read, so their jobs are due at once.
    let clock = ManualClock::new(Timestamp::now().plus(Duration::from_secs(1)));
    let runner =
        Runner::new(db.clone(), flaky_handlers(), Policies::new()).with_clock(clock.clone());
    Fixture { db, clock, runner }
}

impl Fixture {
    fn put(&self, job: Job, options: PutOptions) -> PRef<Job> {
        transact(&self.db, |tx| {
            let q = Queue::get(tx, "")?.unwrap();
            Queue::put_job(tx, &q, job.clone(), options.clone())
        })
        .unwrap()
    }

    /// Claims the next job due now on the fixture's clock.
    fn claim(&self) -> Option<PRef<Job>> {
        transact(&self.db, |tx| {
            let q = Queue::get(tx, "")?.unwrap();
            Queue::claim_at(tx, &q, &claimer(), self.clock.now())
        })
        .unwrap()
        .job
    }

    fn job(&self, job: PRef<Job>) -> Arc<Job> {
        transact(&self.db, |tx| Ok(tx.get(&job)?)).unwrap()
    }

    /// Claims and runs jobs until `job` completes, advancing the clock past each
    /// backoff; returns the runs' outcomes.
    fn run_to_completion(&self, job: PRef<Job>) -> Vec<RunOutcome> {
        let mut outcomes = Vec::new();
        for _ in 0..20 {
            let Some(claimed) = self.claim() else {
                self.clock.advance(WAIT);
                continue;
            };
            assert_eq!(claimed, job);
            let outcome = self.runner.run(&claimed, Some(&claimer())).unwrap();
            let finished = matches!(outcome, RunOutcome::Finished(_));
            outcomes.push(outcome);
            if finished {
                return outcomes;
            }
        }
        panic!("job did not complete: {outcomes:?}");
    }
}

fn fixed(max_attempts: u32) -> AttemptLimit {
    AttemptLimit::new(max_attempts, Backoff::Fixed(WAIT)).unwrap()
}

#[test]
fn a_failing_handler_is_retried_after_its_backoff_until_it_succeeds() {
    let f = fixture();
    let job = f.put(
        Job::with_arguments("flaky", &3u32).unwrap(),
        PutOptions::new().attempt_limit(fixed(5)),
    );
    assert_eq!(f.claim(), Some(job));
    let started = f.clock.now();
    assert_eq!(
        f.runner.run(&job, Some(&claimer())).unwrap(),
        RunOutcome::PutBack {
            retry_at: started.plus(WAIT)
        }
    );
    // Not claimable before its backoff has passed.
    f.clock.advance(WAIT - Duration::from_micros(1));
    assert_eq!(f.claim(), None);
    f.clock.advance(Duration::from_micros(1));
    let outcomes = f.run_to_completion(job);
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    assert_eq!(
        outcomes.last(),
        Some(&RunOutcome::Finished(Outcome::Value(
            postcard::to_stdvec(&3u32).unwrap()
        )))
    );
    let j = f.job(job);
    assert_eq!((j.status(), j.attempts()), (Status::Completed, 3));
    let history: Vec<_> = j
        .errors()
        .iter()
        .map(|e| (e.attempt, e.summary.as_str()))
        .collect();
    assert_eq!(
        history,
        [
            (1, "user error: attempt 1 failed"),
            (2, "user error: attempt 2 failed")
        ]
    );
}

#[test]
fn the_last_attempt_gives_up_with_every_error_in_the_history() {
    let f = fixture();
    let job = f.put(
        Job::with_arguments("flaky", &0u32).unwrap(),
        PutOptions::new().attempt_limit(fixed(3)),
    );
    let outcomes = f.run_to_completion(job);
    assert_eq!(outcomes.len(), 3);
    let j = f.job(job);
    let Some(Outcome::Failure(failure)) = j.outcome() else {
        panic!("{:?}", j.outcome());
    };
    assert_eq!(failure.message, "attempt 3 failed");
    assert_eq!(j.attempts(), 3);
    let attempts: Vec<u32> = j.errors().iter().map(|e| e.attempt).collect();
    assert_eq!(attempts, [1, 2, 3]);
}

#[test]
fn without_a_limit_a_handler_error_is_not_retried() {
    let f = fixture();
    let job = f.put(
        Job::with_arguments("flaky", &2u32).unwrap(),
        PutOptions::new(),
    );
    let outcomes = f.run_to_completion(job);
    assert_eq!(outcomes.len(), 1);
    assert!(f.job(job).outcome().unwrap().is_failure());
}

#[test]
fn a_queue_default_limit_is_given_to_jobs_that_name_none() {
    let f = fixture();
    transact(&f.db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        assert!(Queue::set_attempt_limit(tx, &q, Some(fixed(2)))?);
        assert!(!Queue::set_attempt_limit(tx, &q, Some(fixed(2)))?);
        Ok(())
    })
    .unwrap();
    let defaulted = f.put(
        Job::with_arguments("flaky", &2u32).unwrap(),
        PutOptions::new(),
    );
    assert_eq!(f.job(defaulted).attempt_limit(), Some(&fixed(2)));
    let outcomes = f.run_to_completion(defaulted);
    assert_eq!(outcomes.len(), 2);
    assert!(!f.job(defaulted).outcome().unwrap().is_failure());
    // A job's own limit wins over the queue's.
    let own = f.put(
        Job::with_arguments("flaky", &0u32).unwrap(),
        PutOptions::new().attempt_limit(fixed(4)),
    );
    assert_eq!(f.job(own).attempt_limit(), Some(&fixed(4)));
    assert_eq!(f.run_to_completion(own).len(), 4);
}

#[test]
fn panics_and_traced_errors_keep_their_backtrace_in_the_history() {
    let f = fixture();
    let panics = f.put(
        Job::with_arguments("panics", &()).unwrap(),
        PutOptions::new().attempt_limit(fixed(2)),
    );
    assert_eq!(f.run_to_completion(panics).len(), 2);
    let j = f.job(panics);
    assert_eq!(j.errors().len(), 2);
    for e in j.errors() {
        assert!(
            e.summary.starts_with("panic: the handler panicked"),
            "{}",
            e.summary
        );
        let trace = e.backtrace.as_deref().expect("a panic's backtrace");
        assert!(trace.contains("panic_deep_inside"), "{trace}");
    }
    let Some(Outcome::Failure(failure)) = j.outcome() else {
        panic!("{:?}", j.outcome());
    };
    assert_eq!(failure.kind, FailureKind::Panic);
    assert!(
        failure
            .backtrace
            .as_deref()
            .unwrap()
            .contains("panic_deep_inside")
    );

    let traced = f.put(
        Job::with_arguments("traced", &()).unwrap(),
        PutOptions::new(),
    );
    f.run_to_completion(traced);
    let j = f.job(traced);
    let entry = &j.errors()[0];
    assert_eq!(entry.summary, "user error: refused, with a trace");
    assert!(entry.backtrace.as_deref().unwrap().contains("attempts"));

    // A plain error has none.
    let plain = f.put(
        Job::with_arguments("flaky", &0u32).unwrap(),
        PutOptions::new(),
    );
    f.run_to_completion(plain);
    assert_eq!(f.job(plain).errors()[0].backtrace, None);
}
