//! The operator's actions, in process: retrying failed jobs, discarding completed
//! ones, cancelling in bulk, pausing and resuming a queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use zodiac_async::inspect::{self, JobFilter};
use zodiac_async::limits::DEATH_INTERVAL_DEFAULT;
use zodiac_async::{
    CANCEL_BATCH_JOBS_MAX, CancelFilter, Claimer, Dispatchers, Ending, Error, Failure, FailureKind,
    Handlers, Job, Outcome, Policies, PutOptions, Queue, Runner, Status, Timestamp, Worker,
    add_callback, cancel_jobs, cancel_matching, discard_jobs, fail, retry_failed, retry_jobs,
    transact,
};
use zodiac_objects::{Database, PRef};
use zodiac_storage::MemoryStorage;

fn db() -> Database {
    Database::open(Arc::new(MemoryStorage::new())).unwrap()
}

fn me() -> Claimer {
    Claimer {
        dispatcher: "d1".into(),
        agent: "main".into(),
    }
}

/// A runner whose `flaky` handler fails until `works` is set, and whose
/// `count` callback handler counts its runs in `ran`.
fn runner(db: &Database, works: Arc<AtomicBool>, ran: Arc<AtomicUsize>) -> Runner {
    let mut h = Handlers::new();
    h.register("flaky", move |_ctx, _: u8| {
        if works.load(Ordering::SeqCst) {
            Ok(7u8)
        } else {
            Err("not yet".into())
        }
    });
    h.register("count", move |_ctx, _: u8| {
        ran.fetch_add(1, Ordering::SeqCst);
        Ok(())
    });
    Runner::new(db.clone(), h, Policies::new())
}

fn put(db: &Database, queue: &str, handler: &str) -> PRef<Job> {
    transact(db, |tx| {
        let q = Queue::get_or_create(tx, queue)?;
        Queue::put_job(
            tx,
            &q,
            Job::with_arguments(handler, &1u8)?,
            PutOptions::new(),
        )
    })
    .unwrap()
}

/// Registers dispatcher d1 with agent `main` in `queue`.
fn agent(db: &Database, queue: &str) {
    transact(db, |tx| {
        let q = Queue::get_or_create(tx, queue)?;
        Dispatchers::activate(tx, &q, "d1", Timestamp::now(), DEATH_INTERVAL_DEFAULT)?;
        Dispatchers::set_agent(tx, &q, "d1", "main", 3)?;
        Ok(())
    })
    .unwrap();
}

/// Claims the next job of `queue` for d1/main and runs it; returns it.
fn claim_and_run(db: &Database, runner: &Runner, queue: &str) -> Option<PRef<Job>> {
    let job = transact(db, |tx| {
        let q = Queue::get(tx, queue)?.unwrap();
        Dispatchers::claim_for_agent(tx, &q, "d1", "main", Timestamp::now())
    })
    .unwrap()?;
    runner.run(&job, Some(&me())).unwrap();
    Some(job)
}

fn get(db: &Database, job: &PRef<Job>) -> Arc<Job> {
    transact(db, |tx| Ok(tx.get(job)?)).unwrap()
}

fn listed(db: &Database, filter: JobFilter) -> Vec<u64> {
    transact(db, |tx| inspect::jobs(tx, &filter, 1000))
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect()
}

#[test]
fn a_retried_job_runs_again_with_a_fresh_attempt_count_and_its_failure_kept() {
    let db = db();
    let works = Arc::new(AtomicBool::new(false));
    let ran = Arc::new(AtomicUsize::new(0));
    let runner = runner(&db, works.clone(), ran.clone());
    agent(&db, "");
    let job = put(&db, "", "flaky");
    transact(&db, |tx| {
        add_callback(tx, &job, Job::with_arguments("count", &0u8)?)
    })
    .unwrap();
    claim_and_run(&db, &runner, "");
    let failed = get(&db, &job);
    assert_eq!(failed.status(), Status::Completed);
    assert_eq!(failed.outcome().unwrap().ending(), Ending::Failed);
    assert_eq!(failed.attempts(), 1);
    assert_eq!(
        ran.load(Ordering::SeqCst),
        1,
        "the callback ran with the failure"
    );
    let failed_list = JobFilter {
        ending: Some(Ending::Failed),
        ..JobFilter::default()
    };
    assert_eq!(listed(&db, failed_list.clone()), [job.oid().0]);

    assert_eq!(transact(&db, |tx| retry_jobs(tx, &[job, job])).unwrap(), 1);
    let retried = get(&db, &job);
    assert_eq!(retried.status(), Status::Pending);
    assert_eq!(retried.attempts(), 0);
    let history: Vec<&str> = retried
        .errors()
        .iter()
        .map(|e| e.summary.as_str())
        .collect();
    assert_eq!(history, ["user error: not yet"]);
    assert_eq!(retried.errors()[0].attempt, 1);
    // Listed once, as pending: it left the agent's completed jobs.
    assert_eq!(listed(&db, JobFilter::default()), [job.oid().0]);
    assert!(listed(&db, failed_list.clone()).is_empty());

    works.store(true, Ordering::SeqCst);
    assert_eq!(claim_and_run(&db, &runner, ""), Some(job));
    let done = get(&db, &job);
    assert_eq!(done.status(), Status::Completed);
    assert_eq!(done.attempts(), 1);
    assert_eq!(done.outcome(), Some(&Outcome::Value(vec![7])));
    assert_eq!(
        done.errors().len(),
        1,
        "the old failure stays in the history"
    );
    assert_eq!(
        ran.load(Ordering::SeqCst),
        1,
        "callbacks that ran do not run again"
    );
    // Counted once among the agent's completed jobs after its next claim.
    claim_and_run(&db, &runner, "");
    let completed = JobFilter {
        status: Some(Status::Completed),
        ..JobFilter::default()
    };
    assert_eq!(listed(&db, completed), [job.oid().0]);
}

#[test]
fn retry_refuses_a_job_that_did_not_fail_and_changes_nothing() {
    let db = db();
    let works = Arc::new(AtomicBool::new(false));
    let runner = runner(&db, works.clone(), Arc::default());
    agent(&db, "");
    let failed = put(&db, "", "flaky");
    claim_and_run(&db, &runner, "");
    works.store(true, Ordering::SeqCst);
    let succeeded = put(&db, "", "flaky");
    claim_and_run(&db, &runner, "");
    let pending = put(&db, "", "flaky");

    for (other, why) in [(succeeded, "it succeeded"), (pending, "it is PENDING")] {
        let err = transact(&db, |tx| retry_jobs(tx, &[failed, other])).unwrap_err();
        assert!(
            matches!(err, Error::Refused { job, .. } if job == other.oid()),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("job {} cannot be retried: {why}", other.oid().0)),
            "{text}"
        );
        assert_eq!(
            get(&db, &failed).status(),
            Status::Completed,
            "nothing changed"
        );
    }
}

#[test]
fn retry_failed_takes_only_failures_and_a_cancelled_job_is_retried_by_id() {
    let db = db();
    let runner = runner(&db, Arc::default(), Arc::default());
    agent(&db, "a");
    agent(&db, "b");
    let fa = put(&db, "a", "flaky");
    claim_and_run(&db, &runner, "a");
    let fb = put(&db, "b", "flaky");
    claim_and_run(&db, &runner, "b");
    let cancelled = put(&db, "a", "flaky");
    let cancel = Failure::new(FailureKind::Cancelled, "by a test");
    transact(&db, |tx| cancel_jobs(tx, &[cancelled], &cancel)).unwrap();
    assert_eq!(
        get(&db, &cancelled).outcome().unwrap().ending(),
        Ending::Cancelled
    );

    let (endings, all) = transact(&db, |tx| inspect::endings(tx, "a"))
        .unwrap()
        .unwrap();
    assert!(all);
    // By handler: the cancelled job never ran, so only the failed one has a run time.
    let (handlers, _) = transact(&db, |tx| inspect::handler_stats(tx, "a"))
        .unwrap()
        .unwrap();
    let flaky = &handlers["flaky"];
    assert_eq!(
        flaky
            .endings
            .iter()
            .map(|(e, n)| (*e, *n))
            .collect::<Vec<_>>(),
        [(Ending::Failed, 1), (Ending::Cancelled, 1)]
    );
    assert_eq!(flaky.runs, 1);
    assert!(flaky.run_p50.is_some() && flaky.run_p50 == flaky.run_p99);
    assert_eq!(handlers.len(), 1, "{handlers:?}");
    assert_eq!(
        endings.into_iter().collect::<Vec<_>>(),
        [(Ending::Failed, 1), (Ending::Cancelled, 1)]
    );
    let retried = transact(&db, |tx| retry_failed(tx, Some("a"))).unwrap();
    assert_eq!(retried, [fa]);
    assert_eq!(get(&db, &fb).status(), Status::Completed, "another queue's");
    assert_eq!(get(&db, &cancelled).status(), Status::Completed);
    assert_eq!(transact(&db, |tx| retry_failed(tx, None)).unwrap(), [fb]);
    assert!(
        transact(&db, |tx| retry_failed(tx, None))
            .unwrap()
            .is_empty()
    );
    let (endings, _) = transact(&db, |tx| inspect::endings(tx, "a"))
        .unwrap()
        .unwrap();
    assert_eq!(
        endings.into_iter().collect::<Vec<_>>(),
        [(Ending::Cancelled, 1)]
    );

    // A cancelled job is kept among its queue's ended jobs, and goes back there.
    transact(&db, |tx| retry_jobs(tx, &[cancelled])).unwrap();
    let j = get(&db, &cancelled);
    assert_eq!(j.status(), Status::Pending);
    assert_eq!(j.errors().len(), 1, "the cancellation, recorded once");
    let in_a = JobFilter {
        queue: Some("a".into()),
        status: Some(Status::Pending),
        ..JobFilter::default()
    };
    let mut pending = listed(&db, in_a);
    pending.sort();
    assert_eq!(pending, [fa.oid().0, cancelled.oid().0]);
}

#[test]
fn discard_drops_a_completed_job_from_the_retained_jobs_and_refuses_others() {
    let db = db();
    let runner = runner(&db, Arc::default(), Arc::default());
    agent(&db, "");
    let done = put(&db, "", "flaky");
    claim_and_run(&db, &runner, "");
    let pending = put(&db, "", "flaky");
    let err = transact(&db, |tx| discard_jobs(tx, &[done, pending])).unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "job {} cannot be discarded: it is PENDING",
            pending.oid().0
        )),
        "{err}"
    );
    assert_eq!(
        listed(&db, JobFilter::default()).len(),
        2,
        "nothing changed"
    );
    assert_eq!(transact(&db, |tx| discard_jobs(tx, &[done])).unwrap(), 1);
    assert_eq!(listed(&db, JobFilter::default()), [pending.oid().0]);
    let counts = transact(&db, |tx| inspect::counts(tx, ""))
        .unwrap()
        .unwrap();
    assert_eq!(counts.get(&Status::Completed), None);
    // Once discarded, no queue keeps it: a second discard or a retry is refused.
    let again = transact(&db, |tx| retry_jobs(tx, &[done])).unwrap_err();
    assert!(again.to_string().contains("no queue keeps it"), "{again}");
}

#[test]
fn cancel_matching_cancels_in_bounded_batches_and_cancel_jobs_is_all_or_nothing() {
    let db = db();
    let jobs = CANCEL_BATCH_JOBS_MAX + 13;
    transact(&db, |tx| {
        let q = Queue::get_or_create(tx, "bulk")?;
        for i in 0..jobs {
            let handler = if i % 2 == 0 { "even" } else { "odd" };
            Queue::put_job(
                tx,
                &q,
                Job::with_arguments(handler, &0u8)?,
                PutOptions::new(),
            )?;
        }
        Ok(())
    })
    .unwrap();
    let failure = Failure::new(FailureKind::Cancelled, "bulk");
    let all = CancelFilter {
        queue: Some("bulk".into()),
        handler: None,
    };
    let odd = CancelFilter {
        handler: Some("odd".into()),
        ..all.clone()
    };
    let first = transact(&db, |tx| cancel_matching(tx, &odd, &failure, 10)).unwrap();
    assert_eq!(first.len(), 10);
    assert!(first.iter().all(|j| get(&db, j).handler() == "odd"));
    let big = transact(&db, |tx| cancel_matching(tx, &all, &failure, usize::MAX)).unwrap();
    assert_eq!(big.len(), CANCEL_BATCH_JOBS_MAX, "one batch is bounded");
    let rest = transact(&db, |tx| cancel_matching(tx, &all, &failure, usize::MAX)).unwrap();
    assert_eq!(rest.len(), jobs - 10 - CANCEL_BATCH_JOBS_MAX);
    let cancelled = JobFilter {
        ending: Some(Ending::Cancelled),
        ..JobFilter::default()
    };
    let ended = transact(&db, |tx| inspect::jobs(tx, &cancelled, 2 * jobs)).unwrap();
    assert_eq!(ended.len(), jobs);
    assert_eq!(transact(&db, Queue::names).unwrap(), ["bulk"]);

    // By id: a started job refuses the whole cancel.
    let runner = runner(&db, Arc::default(), Arc::default());
    agent(&db, "");
    let claimed = put(&db, "", "flaky");
    transact(&db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Dispatchers::claim_for_agent(tx, &q, "d1", "main", Timestamp::now())
    })
    .unwrap();
    let waiting = put(&db, "", "flaky");
    let err = transact(&db, |tx| cancel_jobs(tx, &[waiting, claimed], &failure)).unwrap_err();
    assert!(err.to_string().contains("it is ASSIGNED"), "{err}");
    assert_eq!(get(&db, &waiting).status(), Status::Pending);
    drop(runner);
}

#[test]
fn a_paused_queue_is_claimed_from_by_no_one_until_resumed() {
    let db = db();
    let works = Arc::new(AtomicBool::new(true));
    let runner = runner(&db, works, Arc::default());
    let mut worker = Worker::builder(db.clone(), "w1", runner).build();
    worker.poll_once().unwrap(); // registers its dispatcher in the default queue
    let q = transact(&db, |tx| Queue::get_or_create(tx, "")).unwrap();
    assert!(transact(&db, |tx| Queue::pause(tx, &q)).unwrap());
    assert!(
        !transact(&db, |tx| Queue::pause(tx, &q)).unwrap(),
        "already paused"
    );
    assert_eq!(
        transact(&db, |tx| inspect::paused(tx, "")).unwrap(),
        Some(true)
    );
    // Puts are accepted; a job past its deadline is not even expired.
    let job = put(&db, "", "flaky");
    let late = transact(&db, |tx| {
        let options = PutOptions::new()
            .begin_after(Timestamp::from_micros(1))
            .begin_by(std::time::Duration::from_micros(1));
        Queue::put_job(tx, &q, Job::with_arguments("flaky", &1u8)?, options)
    })
    .unwrap();
    for _ in 0..3 {
        assert!(worker.poll_once().unwrap().started.is_empty());
        worker.wait_idle();
    }
    assert_eq!(get(&db, &job).status(), Status::Pending);
    assert_eq!(get(&db, &late).status(), Status::Pending);
    let claim = transact(&db, |tx| Queue::claim(tx, &q, &me())).unwrap();
    assert_eq!(claim.job, None);
    assert!(claim.expired.is_empty());

    assert!(transact(&db, |tx| Queue::resume(tx, &q)).unwrap());
    assert_eq!(
        transact(&db, |tx| inspect::paused(tx, "")).unwrap(),
        Some(false)
    );
    assert_eq!(worker.poll_once().unwrap().started, [job]);
    worker.wait_idle();
    worker.shutdown().unwrap();
    assert_eq!(get(&db, &job).status(), Status::Completed);
    assert_eq!(
        get(&db, &late).outcome().unwrap().ending(),
        Ending::Timeout,
        "expired by the first claim after the resume"
    );
    // A failed job's `fail` path is unchanged while a queue is paused too.
    let other = put(&db, "", "flaky");
    transact(&db, |tx| Queue::pause(tx, &q)).unwrap();
    transact(&db, |tx| fail(tx, &other, None)).unwrap();
    assert_eq!(get(&db, &other).status(), Status::Completed);
}
