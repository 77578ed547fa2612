//! One database shared by several processes: a server in this process serves a data
//! file; two worker processes connect to it and run the jobs this process puts.
//!
//! The workers are this same program started again with the argument `worker`
//! (`std::env::current_exe()`), so the example is one file. A real deployment runs
//! `zodiac server` and `zodiac worker`, or its own binaries built the same way.
//!
//! Run: `cargo run -p zodiac-examples --example server_and_workers`

use std::collections::BTreeMap;
use std::error::Error;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use zodiac_async::{
    Handlers, Job, Outcome, Policies, PutOptions, Queue, Runner, Status, Worker, transact,
};
use zodiac_objects::{Database, PRef};
use zodiac_storage::{
    ClientOptions, ClientStorage, FileOptions, FileStorage, Server, ServerOptions, Storage,
};

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// The handler the workers run: squares a number and says who did it.
const SQUARE: &str = "example.square";
const JOBS: u64 = 20;
const WORKERS: usize = 2;
const JOBS_WAIT: Duration = Duration::from_secs(20);

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        None => run_application(),
        Some("worker") if args.len() == 4 => run_worker(&args[2], &args[3]),
        _ => Err("usage: server_and_workers [worker ADDRESS NAME]".into()),
    }
}

/// The application: serves the file, starts the workers, puts the jobs, waits for
/// them and prints who ran what.
fn run_application() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file: Arc<dyn Storage> = Arc::new(FileStorage::open(
        dir.path().join("shared.zdb"),
        FileOptions::new(),
    )?);
    // As `zodiac server` does: the job layer's merge functions let concurrent
    // changes to a queue (a put and a claim) both commit instead of conflicting.
    let options = ServerOptions::new().merge(Some(zodiac_async::merges().into_merge_fn()));
    let server = Server::start(Arc::clone(&file), "127.0.0.1:0", options)?;
    let address = server.local_addr().to_string();
    println!("serving on {address}");

    let mut workers = Vec::new();
    for n in 0..WORKERS {
        workers.push(start_worker_process(&address, &format!("worker-{n}"))?);
    }

    // This process is a client too, with its own connection.
    let client: Arc<dyn Storage> =
        Arc::new(ClientStorage::connect(&address, ClientOptions::new())?);
    let db = Database::open(Arc::clone(&client))?;
    let mut jobs = Vec::new();
    for n in 1..=JOBS {
        jobs.push(transact(&db, |tx| {
            let queue = Queue::get_or_create(tx, "")?;
            Queue::put_job(
                tx,
                &queue,
                Job::with_arguments(SQUARE, &n)?,
                PutOptions::new(),
            )
        })?);
    }
    println!("put {JOBS} jobs");
    let results = wait_for_results(&db, &jobs);

    // Closing a worker's standard input asks it to stop gracefully.
    let mut stopped = true;
    for mut worker in workers {
        drop(worker.stdin.take());
        stopped &= worker.wait()?.success();
    }
    drop(db);
    client.close()?;
    server.shutdown();
    file.close()?;

    let results = results?;
    let mut by_worker: BTreeMap<&str, u64> = BTreeMap::new();
    let mut sum = 0;
    for (worker, square) in &results {
        *by_worker.entry(worker.as_str()).or_default() += 1;
        sum += square;
    }
    for (worker, count) in &by_worker {
        println!("{worker} ran {count} jobs");
    }
    let expected: u64 = (1..=JOBS).map(|n| n * n).sum();
    println!("sum of the squares: {sum} (expected {expected})");
    if sum != expected || !stopped {
        return Err("a result is wrong or a worker did not stop cleanly".into());
    }
    Ok(())
}

/// Starts this program as a worker process and waits until it says it is ready.
fn start_worker_process(address: &str, name: &str) -> Result<Child> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["worker", address, name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    if line.trim() != "ready" {
        let _ = child.kill();
        return Err(format!("{name} said {line:?}").into());
    }
    Ok(child)
}

/// Waits until every job completed; returns each job's value (who ran it, the square).
fn wait_for_results(db: &Database, jobs: &[PRef<Job>]) -> Result<Vec<(String, u64)>> {
    let started = Instant::now();
    while started.elapsed() < JOBS_WAIT {
        let outcomes = transact(db, |tx| {
            let mut outcomes = Vec::new();
            for job in jobs {
                let job = tx.get(job)?;
                if job.status() == Status::Completed {
                    outcomes.push(job.result().cloned());
                }
            }
            Ok(outcomes)
        })?;
        if outcomes.len() == jobs.len() {
            return outcomes
                .into_iter()
                .map(|outcome| match outcome {
                    Some(Outcome::Value(bytes)) => Ok(postcard::from_bytes(&bytes)?),
                    other => Err(format!("a job did not succeed: {other:?}").into()),
                })
                .collect();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("the jobs did not complete in {JOBS_WAIT:?}").into())
}

/// A worker process: connects to the server, runs jobs until its standard input
/// ends, then stops gracefully.
fn run_worker(address: &str, name: &str) -> Result<()> {
    let client: Arc<dyn Storage> = Arc::new(ClientStorage::connect(address, ClientOptions::new())?);
    let db = Database::open(Arc::clone(&client))?;
    let mut handlers = Handlers::new();
    let me = name.to_string();
    handlers.register(SQUARE, move |_ctx, n: u64| Ok((me.clone(), n * n)));
    let runner = Runner::new(db.clone(), handlers, Policies::new());
    // Each worker needs its own dispatcher id: two live workers may not share one.
    let mut worker = Worker::builder(db, name, runner).agent_size(4).build();

    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    std::thread::spawn(move || {
        let mut rest = Vec::new();
        let _ = std::io::stdin().lock().read_to_end(&mut rest);
        flag.store(true, Ordering::SeqCst);
    });
    println!("ready");
    worker.run(&stop)?;
    client.close()?;
    Ok(())
}
