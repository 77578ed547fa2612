//! An application that embeds Zodiac: its own data file, its own typed job handler,
//! and a worker running the jobs in the same process.
//!
//! The handler adds a page's visits to a persistent counter. Its write and the job's
//! result commit in one transaction, so each job counts its visits exactly once,
//! even if the process dies half-way and the job runs again.
//!
//! Run: `cargo run -p zodiac-examples --example embedded_app`

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use zodiac_async::{
    Handlers, Job, Outcome, Policies, PutOptions, Queue, Runner, Status, Worker, transact,
};
use zodiac_objects::{Counter, Database, PRef};
use zodiac_storage::{FileOptions, FileStorage, Storage};

/// The handler's name: jobs name their handler, the worker finds it by that name.
const ADD_VISITS: &str = "app.add_visits";
/// The root entry through which the application finds its counter again.
const COUNTER_ENTRY: &str = "app.visits";
/// How long the example waits for its jobs before it calls itself failed.
const JOBS_WAIT: Duration = Duration::from_secs(10);

/// A job's arguments: any serde type (stored with the job, encoded with postcard).
#[derive(Serialize, Deserialize)]
struct AddVisits {
    page: String,
    visits: i64,
}

fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    // 1. A data file in a temporary directory (removed when `dir` is dropped).
    //    Default options: every commit is durable (fsync'd) before it returns.
    let dir = tempfile::tempdir()?;
    let storage = Arc::new(FileStorage::open(
        dir.path().join("app.zdb"),
        FileOptions::new(),
    )?);
    let db = Database::open(storage.clone())?;

    // 2. The counter: created once, reachable from the root so it is never
    //    garbage-collected and the application finds it after a restart.
    let counter = transact(&db, |tx| {
        if let Some(counter) = tx.root_entry::<Counter>(COUNTER_ENTRY)? {
            return Ok(counter);
        }
        let counter = tx.add(Counter::new(0))?;
        tx.set_root_entry(COUNTER_ENTRY, counter)?;
        Ok(counter)
    })?;

    // 3. Put some jobs, one transaction each, in the default queue ("").
    let pages = [("/", 3), ("/about", 1), ("/blog", 5), ("/", 2)];
    let mut jobs = Vec::new();
    for (page, visits) in pages {
        let arguments = AddVisits {
            page: page.to_string(),
            visits,
        };
        jobs.push(transact(&db, |tx| {
            let queue = Queue::get_or_create(tx, "")?;
            let job = Job::with_arguments(ADD_VISITS, &arguments)?;
            Queue::put_job(tx, &queue, job, PutOptions::new())
        })?);
    }
    println!("put {} jobs", jobs.len());

    // 4. A worker with the application's handler, on a thread of its own until
    //    `stop` is set.
    let stop = Arc::new(AtomicBool::new(false));
    let worker = start_worker(&db, counter, Arc::clone(&stop));

    // 5. Wait until every job completed, then stop the worker.
    let waited = wait_for(&db, &jobs);
    stop.store(true, Ordering::SeqCst);
    worker.join().expect("the worker thread panicked")?;
    waited?;

    // 6. Read the results back: each job's value, and the counter.
    for job in &jobs {
        let total = transact(&db, |tx| Ok(tx.get(job)?.result().cloned()))?;
        let Some(Outcome::Value(bytes)) = total else {
            return Err(format!("job {} has no value: {total:?}", job.oid().0).into());
        };
        let total: i64 = postcard::from_bytes(&bytes)?;
        // Jobs run at once on the worker's threads; `Counter` merges concurrent
        // increments, so each saw the counter as of its own snapshot plus its visits.
        println!(
            "job {}: its transaction left the counter at {total}",
            job.oid().0
        );
    }
    let visits = transact(&db, |tx| Ok(tx.get(&counter)?.value()))?;
    let expected: i64 = pages.iter().map(|(_, v)| v).sum();
    println!("visits counted: {visits} (expected {expected})");
    if visits != expected {
        return Err(format!("the counter is {visits}, not {expected}").into());
    }

    // 7. Close the database before the directory goes: close saves the index.
    drop(db);
    storage.close()?;
    Ok(())
}

/// Starts a worker running `ADD_VISITS` jobs; the thread returns when `stop` is set.
fn start_worker(
    db: &Database,
    counter: PRef<Counter>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<zodiac_async::Result<()>> {
    let mut handlers = Handlers::new();
    // The handler gets typed arguments; `ctx.tx()` is the job's transaction, so the
    // counter's change commits with the job's result or not at all.
    handlers.register(ADD_VISITS, move |ctx, args: AddVisits| {
        let total = ctx.tx().modify(&counter, |c| {
            c.add(args.visits);
            c.value()
        })?;
        println!("  counted {} visits of {}", args.visits, args.page);
        Ok(total)
    });
    let runner = Runner::new(db.clone(), handlers, Policies::new());
    let mut worker = Worker::builder(db.clone(), "embedded-app", runner).build();
    std::thread::spawn(move || worker.run(&stop))
}

/// Waits until every job in `jobs` is COMPLETED, or fails after `JOBS_WAIT`.
fn wait_for(db: &Database, jobs: &[PRef<Job>]) -> Result<(), Box<dyn Error + Send + Sync>> {
    let started = Instant::now();
    loop {
        let done = transact(db, |tx| {
            let mut done = 0;
            for job in jobs {
                if tx.get(job)?.status() == Status::Completed {
                    done += 1;
                }
            }
            Ok(done)
        })?;
        if done == jobs.len() {
            return Ok(());
        }
        if started.elapsed() > JOBS_WAIT {
            return Err(format!("{done} of {} jobs completed in {JOBS_WAIT:?}", jobs.len()).into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
