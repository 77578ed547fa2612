//! A retry policy of the application's own: registered by name, chosen per job when
//! it is put, and given a job whose handler fails now and then.
//!
//! `RetryTimes(n)` retries a failing handler up to `n` times, then gives up with the
//! handler's failure as the job's result. The count lives in the job's `RetryData`,
//! which is stored with the job, so it survives a restart of the worker.
//!
//! Run: `cargo run -p zodiac-examples --example custom_retry_policy`

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use zodiac_async::{
    Decision, Failure, Handlers, Job, Outcome, Policies, PutOptions, Queue, RetryData, RetryPolicy,
    Runner, Status, Worker, transact,
};
use zodiac_objects::{Database, PRef};
use zodiac_storage::MemoryStorage;

/// The name jobs give to choose the policy.
const RETRY_3: &str = "app.retry-3";
/// A handler that fails its first `FLAKY_FAILURES` calls, like a remote call that
/// times out until the other side is back.
const FLAKY: &str = "app.flaky";
const FLAKY_FAILURES: u32 = 2;
/// A handler that always fails: the policy must give up on it.
const BROKEN: &str = "app.broken";
/// The counter `RetryTimes` keeps in the job's `RetryData`.
const RETRIES_KEY: &str = "app.retries";
const JOBS_WAIT: Duration = Duration::from_secs(10);

/// Retries a failed handler up to `.0` times, at once; then gives up.
struct RetryTimes(u32);

impl RetryPolicy for RetryTimes {
    fn on_job_error(&self, data: &mut RetryData, failure: &Failure) -> Decision {
        // A life counter: kept for the job's whole life, across runs and restarts.
        if data.bump_life(RETRIES_KEY) <= self.0 {
            Decision::Retry
        } else {
            Decision::GiveUp(failure.clone())
        }
    }

    fn on_commit_error(&self, data: &mut RetryData, failure: &Failure) -> Decision {
        // A failed commit counts like a failed handler: the job's writes are lost.
        self.on_job_error(data, failure)
    }

    fn on_interrupted(&self, _data: &mut RetryData) -> Decision {
        // The process died while running the job: its writes were never committed.
        Decision::Retry
    }
}

fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    // The memory store: no file, no durability; enough to show the policy.
    let db = Database::open(Arc::new(MemoryStorage::new()))?;

    // Register the policy under its name, beside the built-in ones.
    let mut policies = Policies::new();
    policies.register(RETRY_3, Arc::new(RetryTimes(3)));

    let calls = Arc::new(AtomicU32::new(0));
    let mut handlers = Handlers::new();
    let flaky_calls = Arc::clone(&calls);
    handlers.register(FLAKY, move |_ctx, name: String| {
        let call = flaky_calls.fetch_add(1, Ordering::SeqCst) + 1;
        if call <= FLAKY_FAILURES {
            println!("  {FLAKY}: call {call} fails");
            return Err(format!("call {call}: the service is not answering").into());
        }
        println!("  {FLAKY}: call {call} succeeds");
        Ok(format!("hello, {name}"))
    });
    let broken_calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&broken_calls);
    handlers.register(BROKEN, move |_ctx, ()| -> Result<(), _> {
        counted.fetch_add(1, Ordering::SeqCst);
        Err("this never works".into())
    });

    // Each job names its policy when it is put.
    let flaky = put(&db, Job::with_arguments(FLAKY, &"ann".to_string())?)?;
    let broken = put(&db, Job::with_arguments(BROKEN, &())?)?;

    let stop = Arc::new(AtomicBool::new(false));
    let runner = Runner::new(db.clone(), handlers, policies);
    let mut worker = Worker::builder(db.clone(), "retry-example", runner).build();
    let flag = Arc::clone(&stop);
    let worker = std::thread::spawn(move || worker.run(&flag));
    let waited = wait_for(&db, &[flaky, broken]);
    stop.store(true, Ordering::SeqCst);
    worker.join().expect("the worker thread panicked")?;
    waited?;

    // The flaky handler succeeded on its third call; the broken one was called once
    // and retried 3 times, then the policy gave up. (`Decision::Retry` retries at
    // once, inside the same run: the job's `attempts()`, its runs, stays 1.)
    let flaky_result = outcome(&db, flaky)?;
    let broken_result = outcome(&db, broken)?;
    let flaky_calls = calls.load(Ordering::SeqCst);
    let broken_calls = broken_calls.load(Ordering::SeqCst);
    let greeting = match &flaky_result {
        Some(Outcome::Value(bytes)) => postcard::from_bytes::<String>(bytes)?,
        other => return Err(format!("the flaky job did not succeed: {other:?}").into()),
    };
    println!("{FLAKY}: {greeting:?} after {flaky_calls} calls");
    let Some(Outcome::Failure(failure)) = &broken_result else {
        return Err(format!("the broken job did not fail: {broken_result:?}").into());
    };
    println!(
        "{BROKEN}: gave up after {broken_calls} calls: {}",
        failure.summary()
    );
    if flaky_calls != FLAKY_FAILURES + 1 || broken_calls != 1 + 3 {
        return Err(format!("expected 3 and 4 calls, got {flaky_calls} and {broken_calls}").into());
    }
    Ok(())
}

/// Puts `job` in the default queue under the `RETRY_3` policy.
fn put(db: &Database, job: Job) -> zodiac_async::Result<PRef<Job>> {
    transact(db, |tx| {
        let queue = Queue::get_or_create(tx, "")?;
        let options = PutOptions::new().retry_policy(RETRY_3);
        Queue::put_job(tx, &queue, job.clone(), options)
    })
}

/// A job's result.
fn outcome(db: &Database, job: PRef<Job>) -> zodiac_async::Result<Option<Outcome>> {
    transact(db, |tx| Ok(tx.get(&job)?.result().cloned()))
}

/// Waits until every job in `jobs` is COMPLETED, or fails after `JOBS_WAIT`.
fn wait_for(db: &Database, jobs: &[PRef<Job>]) -> Result<(), Box<dyn Error + Send + Sync>> {
    let started = Instant::now();
    while started.elapsed() < JOBS_WAIT {
        let done = transact(db, |tx| {
            let mut done = true;
            for job in jobs {
                done &= tx.get(job)?.status() == Status::Completed;
            }
            Ok(done)
        })?;
        if done {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("the jobs did not complete in {JOBS_WAIT:?}").into())
}
