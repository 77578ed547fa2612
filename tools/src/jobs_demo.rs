//! `zodiac demo`: durable jobs end to end on an embedded file store. It puts jobs
//! (ordinary ones, a failing one, a scheduled one, one with a callback), runs a
//! dispatcher, kills a worker process with SIGKILL mid-job and restarts it, and
//! prints results and timings. Every value it prints was read back from the store;
//! every claim it makes is checked, and a failed check ends the demo with an error.

use std::fs;
use std::io::{BufRead, BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use zodiac_async::{
    HandlerError, Handlers, Job, JobContext, Outcome, Policies, PutOptions, Queue, Runner, Status,
    Timestamp, Worker, WorkerOptions, add_callback, transact,
};
use zodiac_objects::{Database, PRef};
use zodiac_storage::{FileOptions, Storage};

use crate::builtins::{self, add_to_counter, decode_json, encode_arguments};

const FILE_NAME: &str = "demo.zodiac";
/// Ordinary jobs put in step 1.
const RESIZE_JOBS: u32 = 40;
/// How far in the future the scheduled job is put.
const SCHEDULED_AFTER: Duration = Duration::from_millis(1500);
/// The job the crash step's worker is killed in the middle of.
const CRASH_JOB_MS: u64 = 1500;
/// Longest the demo waits for anything.
const PATIENCE: Duration = Duration::from_secs(60);

/// A job the demo put, with what it expects of it.
struct Put {
    id: PRef<Job>,
    label: &'static str,
}

pub fn run(dir: Option<&Path>) -> Result<()> {
    let started = Instant::now();
    let temp_dir = match dir {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("zodiac-demo-")
                .tempdir()
                .context("creating a temporary directory")?,
        ),
    };
    let dir = match &temp_dir {
        Some(t) => t.path().to_path_buf(),
        None => dir
            .expect("given when no temporary directory")
            .to_path_buf(),
    };
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(FILE_NAME);
    if path.exists() {
        bail!(
            "{} already exists: pass --dir with a new or empty directory",
            path.display()
        );
    }
    println!("Zodiac jobs demo: an embedded store in {}", path.display());
    println!("(every commit below is durable: fdatasync'd before it returns)");

    let storage: Arc<dyn Storage> = Arc::new(crate::store::open(&path, FileOptions::new())?);
    let db = Database::open(Arc::clone(&storage)).context("opening the database")?;

    let (puts, put_time) = put_jobs(&db)?;
    let run_time = run_dispatcher(&db, &puts)?;
    let latencies = report(&db, &puts)?;
    drop(db);
    storage.close()?;
    drop(storage);
    let crash = crash_and_recover(&path, &dir)?;

    let jobs = puts.len() as f64;
    println!();
    println!("Summary");
    println!(
        "  put {} jobs, one durable transaction each: {:.1} ms ({:.0} jobs/s)",
        puts.len(),
        ms(put_time),
        jobs / put_time.as_secs_f64()
    );
    println!(
        "  ran them with one dispatcher (4 threads): {:.1} ms, claim and result both durable",
        ms(run_time)
    );
    println!(
        "  time in the queue before starting ({RESIZE_JOBS} jobs due at once, 4 at a time): \
         p50 {:.1} ms, max {:.1} ms",
        ms(latencies.p50),
        ms(latencies.max)
    );
    println!(
        "  crash recovery: the restarted worker re-ran the interrupted job {:.0} ms after it started",
        ms(crash)
    );
    println!("  whole demo: {:.2} s", started.elapsed().as_secs_f64());
    if temp_dir.is_none() {
        println!("  the store is kept in {}", dir.display());
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The handlers of the demo's in-process worker: the built-ins, plus `resize`
/// (simulated work that also counts itself in a persistent counter, in the
/// job's own transaction) and `notify` (a callback that reports its parent's
/// result).
fn handlers() -> Handlers {
    let mut handlers = builtins::handlers(false);
    handlers.register(
        "resize",
        |ctx: &mut JobContext<'_, '_>, args: String| -> Result<String, HandlerError> {
            let args: Value = serde_json::from_str(&args)?;
            let image = args["image"].as_u64().unwrap_or(0);
            std::thread::sleep(Duration::from_millis(5 + image % 4 * 5));
            add_to_counter(ctx.tx(), "resized", 1)?;
            Ok(json!(format!("image-{image}-256px.jpg")).to_string())
        },
    );
    handlers.register(
        "notify",
        |ctx: &mut JobContext<'_, '_>, _: String| -> Result<String, HandlerError> {
            let parent = match &ctx.parent_result {
                Some(Outcome::Value(bytes)) => decode_json(bytes).unwrap_or(Value::Null),
                Some(Outcome::Failure(f)) => json!(format!("failed: {}", f.summary())),
                None => Value::Null,
            };
            Ok(json!(format!("notified with {parent}")).to_string())
        },
    );
    handlers
}

fn job(handler: &str, args: Value) -> zodiac_async::Result<Job> {
    Job::new(handler, encode_arguments(&args.to_string()))
}

/// Step 1: puts the jobs, each in its own transaction.
fn put_jobs(db: &Database) -> Result<(Vec<Put>, Duration)> {
    println!();
    println!("1. Put jobs in the default queue, each in its own transaction");
    let started = Instant::now();
    let mut puts = Vec::new();
    let mut put = |label: &'static str, j: Job, options: PutOptions| -> Result<PRef<Job>> {
        let id = transact(db, |tx| {
            let q = Queue::get_or_create(tx, "")?;
            Queue::put_job(tx, &q, j.clone(), options.clone())
        })?;
        puts.push(Put { id, label });
        Ok(id)
    };
    for image in 0..RESIZE_JOBS {
        put(
            "resize",
            job("resize", json!({ "image": image }))?,
            PutOptions::new(),
        )?;
    }
    put(
        "failing",
        job("fail", json!({ "message": "card declined" }))?,
        PutOptions::new().retry_policy("never"),
    )?;
    put(
        "scheduled",
        job("echo", json!({ "value": "the nightly report" }))?,
        PutOptions::new().begin_after(Timestamp::now().plus(SCHEDULED_AFTER)),
    )?;
    // A job and its callback, put in one transaction.
    let fetch = transact(db, |tx| {
        let q = Queue::get_or_create(tx, "")?;
        let fetch = Queue::put_job(
            tx,
            &q,
            job(
                "echo",
                json!({ "value": { "url": "/index.html", "bytes": 5120 } }),
            )?,
            PutOptions::new(),
        )?;
        add_callback(tx, &fetch, job("notify", json!({}))?)?;
        Ok(fetch)
    })?;
    puts.push(Put {
        id: fetch,
        label: "with callback",
    });
    let elapsed = started.elapsed();
    println!(
        "   {} `resize` jobs, a `fail` job (retry policy never), an `echo` job scheduled {:.1} s \
         ahead, an `echo` job with a `notify` callback: {} jobs in {:.1} ms",
        RESIZE_JOBS,
        SCHEDULED_AFTER.as_secs_f64(),
        puts.len(),
        ms(elapsed)
    );
    Ok((puts, elapsed))
}

fn completed_count(db: &Database, puts: &[Put]) -> Result<usize> {
    Ok(transact(db, |tx| {
        let mut done = 0;
        for p in puts {
            if tx.get(&p.id)?.status() == Status::Completed {
                done += 1;
            }
        }
        Ok(done)
    })?)
}

/// Step 2: runs an in-process worker until every job is COMPLETED.
fn run_dispatcher(db: &Database, puts: &[Put]) -> Result<Duration> {
    println!();
    println!(
        "2. Run a dispatcher: one agent of 4 threads, woken by commits to the queue \
         (polling every second as the fallback)"
    );
    let runner = Runner::new(db.clone(), handlers(), Policies::new());
    let options = WorkerOptions {
        agent_size: 4,
        poll_interval: Duration::from_secs(1),
        ..WorkerOptions::default()
    };
    let mut worker = Worker::new(db.clone(), "demo-dispatcher", runner, options);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let thread = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || worker.run(&stop))
    };
    let bar = std::io::stdout().is_terminal().then(|| {
        let bar = ProgressBar::new(puts.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("   [{bar:40}] {pos}/{len} jobs completed")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    });
    let mut reported = 0;
    let result = loop {
        let done = completed_count(db, puts)?;
        match &bar {
            Some(bar) => bar.set_position(done as u64),
            None if done >= reported + puts.len() / 4 || done == puts.len() && done > reported => {
                println!("   {done}/{} jobs completed", puts.len());
                reported = done;
            }
            None => {}
        }
        if done == puts.len() {
            break Ok(started.elapsed());
        }
        if started.elapsed() > PATIENCE {
            break Err(anyhow!("the jobs did not all complete within {PATIENCE:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if let Some(bar) = bar {
        bar.finish();
    }
    stop.store(true, Ordering::SeqCst);
    thread
        .join()
        .map_err(|_| anyhow!("the dispatcher thread panicked"))??;
    result
}

struct Latencies {
    p50: Duration,
    max: Duration,
}

fn value_of(job: &Job) -> Result<Value> {
    match job.result() {
        Some(Outcome::Value(bytes)) => {
            decode_json(bytes).ok_or_else(|| anyhow!("a value that is not JSON"))
        }
        other => bail!("expected a value, found {other:?}"),
    }
}

/// Step 3: reads every job back and checks and prints what happened.
fn report(db: &Database, puts: &[Put]) -> Result<Latencies> {
    println!();
    println!("3. Results, read back from the store");
    let (jobs, counter) = transact(db, |tx| {
        let mut jobs = Vec::new();
        for p in puts {
            let j = tx.get(&p.id)?;
            let callbacks = j
                .callbacks()
                .iter()
                .map(|cb| tx.get(cb))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            jobs.push((p, j, callbacks));
        }
        let counter = add_to_counter(tx, "resized", 0)?;
        Ok((jobs, counter))
    })?;
    let mut waits = Vec::new();
    for (p, j, callbacks) in &jobs {
        waits.extend(check_job(p, j, callbacks)?);
    }
    let resized = jobs.iter().filter(|(p, ..)| p.label == "resize").count();
    let sample = jobs
        .iter()
        .find(|(p, ..)| p.label == "resize")
        .map(|(_, j, _)| value_of(j))
        .transpose()?
        .unwrap_or(Value::Null);
    println!(
        "   {resized} resize jobs: all COMPLETED, e.g. {sample}; each added 1 to a persistent \
         counter in the transaction that stored its result: counter = {counter} (exactly once each)"
    );
    ensure!(
        counter == i64::from(RESIZE_JOBS),
        "the counter is {counter}, not {RESIZE_JOBS}"
    );
    waits.sort();
    Ok(Latencies {
        p50: waits.get(waits.len() / 2).copied().unwrap_or_default(),
        max: waits.last().copied().unwrap_or_default(),
    })
}

/// Checks and prints one job of the demo (a resize job prints nothing: they are
/// summed up together); returns a resize job's wait from due to start.
fn check_job(p: &Put, j: &Job, callbacks: &[Arc<Job>]) -> Result<Option<Duration>> {
    ensure!(
        j.status() == Status::Completed,
        "job {} is {}",
        p.id.oid().0,
        j.status()
    );
    let (start, end) = (
        j.active_start().unwrap_or_default(),
        j.active_end().unwrap_or_default(),
    );
    let due = j.begin_after().unwrap_or(j.created());
    match p.label {
        "resize" => return Ok(Some(start.since(due))),
        "failing" => {
            let Some(Outcome::Failure(f)) = j.result() else {
                bail!("the failing job has no failure: {:?}", j.result());
            };
            ensure!(j.attempts() == 1, "the `never` policy ran it once");
            println!(
                "   job {} fail: COMPLETED with a failure: \"{}\" after {} attempt (policy never: no retry)",
                p.id.oid().0,
                f.summary(),
                j.attempts()
            );
        }
        "scheduled" => {
            let early = start.since(j.created());
            ensure!(
                early >= SCHEDULED_AFTER,
                "the scheduled job started too early"
            );
            println!(
                "   job {} echo (scheduled): {}, started {:.2} s after it was put ({:.1} ms after it was due)",
                p.id.oid().0,
                value_of(j)?,
                early.as_secs_f64(),
                ms(start.since(due))
            );
        }
        _ => {
            let cb = callbacks
                .first()
                .ok_or_else(|| anyhow!("the callback is missing"))?;
            let value = value_of(j)?;
            let notified = value_of(cb)?;
            ensure!(
                notified == json!(format!("notified with {value}")),
                "the callback got {notified}"
            );
            println!(
                "   job {} echo: {value} in {:.1} ms; its callback `notify` ran after it: {notified}",
                p.id.oid().0,
                ms(end.since(start))
            );
        }
    }
    Ok(None)
}

/// A `zodiac worker` child process on the data file.
struct WorkerProcess {
    child: Child,
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_worker(path: &Path, uuid_file: &Path) -> Result<WorkerProcess> {
    let exe = std::env::current_exe().context("finding the zodiac executable")?;
    let mut child = Command::new(exe)
        .arg("worker")
        .arg(path)
        .arg("--uuid-file")
        .arg(uuid_file)
        .args(["--poll-interval", "100ms"])
        .env("RUST_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting `zodiac worker`")?;
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("piped"))
        .read_line(&mut line)
        .context("reading the worker's first line")?;
    let process = WorkerProcess { child };
    ensure!(line.ends_with(" ready\n"), "the worker said {line:?}");
    Ok(process)
}

/// Reads job `id` from the data file without its writer lock (a worker holds it).
fn peek(path: &Path, id: PRef<Job>) -> Result<Arc<Job>> {
    let storage: Arc<dyn Storage> = Arc::new(crate::store::open(
        path,
        FileOptions::new().read_only(true),
    )?);
    let db = Database::open(Arc::clone(&storage))?;
    let job = transact(&db, |tx| Ok(tx.get(&id)?))?;
    drop(db);
    storage.close()?;
    Ok(job)
}

fn wait_until(
    path: &Path,
    id: PRef<Job>,
    what: &str,
    ok: impl Fn(&Job) -> bool,
) -> Result<Arc<Job>> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let job = peek(path, id)?;
        if ok(&job) {
            return Ok(job);
        }
        ensure!(
            Instant::now() < deadline,
            "job {} never got {what}",
            id.oid().0
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Step 4: a worker process is killed mid-job and restarted with its UUID file.
/// Returns the time from the first start to the re-run's start.
fn crash_and_recover(path: &Path, dir: &Path) -> Result<Duration> {
    println!();
    println!("4. Crash: a `zodiac worker` process is killed with SIGKILL in the middle of a job");
    let id = {
        let storage: Arc<dyn Storage> = Arc::new(crate::store::open(path, FileOptions::new())?);
        let db = Database::open(Arc::clone(&storage))?;
        let id = transact(&db, |tx| {
            let q = Queue::get_or_create(tx, "")?;
            Queue::put_job(
                tx,
                &q,
                job("sleep", json!({ "ms": CRASH_JOB_MS }))?,
                PutOptions::new(),
            )
        })?;
        drop(db);
        storage.close()?;
        id
    };
    let uuid_file: PathBuf = dir.join("demo-worker.uuid");
    let mut first = start_worker(path, &uuid_file)?;
    let running = wait_until(path, id, "started", |j| j.status() == Status::Active)?;
    let first_start = running.active_start().unwrap_or_default();
    std::thread::sleep(Duration::from_millis(200));
    first.child.kill().context("killing the worker")?;
    first.child.wait()?;
    println!(
        "   job {} (sleep {CRASH_JOB_MS} ms) was ACTIVE in worker pid {}; killed it with SIGKILL",
        id.oid().0,
        first.child.id()
    );
    drop(first);
    let _second = start_worker(path, &uuid_file)?;
    let done = wait_until(path, id, "completed", |j| j.status() == Status::Completed)?;
    let rerun = done.active_start().unwrap_or_default();
    let interruptions = done
        .retry_data()
        .life_count(zodiac_async::retry::INTERRUPTIONS);
    ensure!(interruptions == 1, "interruptions: {interruptions}");
    ensure!(done.attempts() == 2, "attempts: {}", done.attempts());
    let value = value_of(&done)?;
    println!(
        "   restarted with the same UUID file, the worker knew its previous incarnation was \
         dead (it holds the file's lock), recovered the job at once and re-ran it: {value} \
         (attempt {}, interruptions {interruptions})",
        done.attempts()
    );
    Ok(rerun.since(first_start))
}
