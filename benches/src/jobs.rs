//! The job workloads of workloads.md (J1–J6), run against `zodiac-async` on a fresh
//! store, observed the way the peers' harness observes huey, RQ and procrastinate.
//!
//! Observation (as in `peers/jobs/harness`): every job body appends `S <id> <tag>
//! <ns>` when it starts and `E <id> <tag> <ns>` when it returns, each with one
//! `write()` on an `O_APPEND` descriptor of the run's execution log (no fsync);
//! `<ns>` is the wall clock (same host clock for every process). The harness tails
//! that file. "Lost" is an id without an `E`, "ran twice" an id with two or more
//! `E`s: the log is independent of the jobs' stored status, so a job run twice is
//! seen even if the store recorded one completion.
//!
//! Where the workers are:
//! - `--store file` / `--store memory` (embedded): each worker is a [`Worker`] on a
//!   thread of this process, all on one [`Database`] over the store; J3 runs 4
//!   `Worker`s with distinct dispatcher ids and agent size 1 each (4 threads
//!   polling, each running one job at a time).
//! - `--store server`: the file store is served on 127.0.0.1 by an in-process
//!   server; the producer is a client in this process, and each worker is a
//!   separate process (this binary in [`WORKER_MODE`]) with its own client
//!   connection; J5 kills one with SIGKILL. J5 needs processes, so it runs only
//!   over the server.
//!
//! Every worker has one agent of size 1 (the peers' "concurrency 1") and the
//! default wake-up on invalidations; rates follow the peers: drains are reported
//! end to end (worker launch → last `E`) with the steady rate (first `S` → last
//! `E`) as an extra.
//!
//! Invariants:
//! - Only the work the definition names is timed: J1 the puts, J2/J3/J6 the drain
//!   (J6 also reports its enqueue rate), J4 each round from before the put.
//! - Every commit is durable: the file store is opened with default options, and
//!   the job layer commits each claim and each completion.
//! - Workers are stopped (stdin closed for processes, the stop flag for threads)
//!   and joined before the store is closed; a failed run kills its processes.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use zodiac_async::{
    Handlers, Job, Policies, PutOptions, Queue, Runner, Worker, WorkerOptions, add_callback,
    transact,
};
use zodiac_objects::{CommitStats, Database};
use zodiac_storage::{ClientOptions, ClientStorage, Server, ServerOptions, Storage};

use crate::Result;
use crate::report::{Measurement, Value};
use crate::stats::percentile;
use crate::system;
use crate::target::{StoreKind, StoreUnderTest};

/// The first argument that runs this binary as one job worker process.
pub const WORKER_MODE: &str = "job-worker";

/// Jobs of J1, J2 and J3.
const BULK_JOBS: u64 = 10_000;
/// Workers of J3.
const J3_WORKERS: usize = 4;
/// J3's agent size and batch size: each worker's run thread claims, runs and
/// completes 8 jobs per commit.
const J3_BATCH: u32 = 8;
/// Measured rounds of J4, after the warm-up rounds.
const J4_ROUNDS: usize = 200;
const J4_WARM_UP: usize = 5;
/// How long J4 and J5 let their workers start and go idle.
const IDLE_BEFORE: Duration = Duration::from_secs(3);
/// J5: jobs, each sleeping this long; the kill comes after half have completed.
const J5_JOBS: u64 = 1_000;
const J5_SLEEP_MS: u64 = 10;
/// J5's liveness settings (short, so the recovery is seen within the run).
const J5_PING: Duration = Duration::from_millis(200);
const J5_DEATH: Duration = Duration::from_secs(1);
/// J5 stops waiting this long after the kill, or after this long without a record.
const J5_LIMIT: Duration = Duration::from_secs(60);
const J5_STALL: Duration = Duration::from_secs(20);
/// J6 chains; step 2 of chain `i` has the id `CHAIN_STEP2_OFFSET + i`.
const J6_CHAINS: u64 = 1_000;
const CHAIN_STEP2_OFFSET: u64 = 1_000_000;
/// J6's agent size and batch size: the worker runs 8 first steps per commit,
/// then their 8 callbacks in the next.
const J6_BATCH: u32 = 8;
/// A drain that has seen no new record for this long has failed.
const DRAIN_STALL: Duration = Duration::from_secs(60);
/// How often the harness reads the execution log while it waits for one job (J4),
/// and while it waits for a drain to end (as the peers' harness does; the times
/// come from the records, so this only bounds how late the end is noticed).
const TAIL_INTERVAL: Duration = Duration::from_micros(500);
const DRAIN_TAIL_INTERVAL: Duration = Duration::from_millis(20);

/// Handler names of the bench jobs.
const NOOP: &str = "bench.noop";
const SLEEP: &str = "bench.sleep";

/// The job workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobWorkload {
    J1,
    J2,
    J3,
    J4,
    J5,
    J6,
    /// J3 with workers that run one job per thread and per commit (batch size 1,
    /// an agent of size 1): the cost of a job on its own (not a workloads.md row).
    J3Single,
    /// J3's drain with 4 producers putting the jobs meanwhile: the conflict rate
    /// of concurrent puts and claims (not a workloads.md row).
    J3Mix,
}

impl JobWorkload {
    pub fn name(self) -> &'static str {
        match self {
            JobWorkload::J1 => "j1",
            JobWorkload::J2 => "j2",
            JobWorkload::J3 => "j3",
            JobWorkload::J3Single => "j3-single",
            JobWorkload::J4 => "j4",
            JobWorkload::J5 => "j5",
            JobWorkload::J6 => "j6",
            JobWorkload::J3Mix => "j3-mix",
        }
    }

    /// Why the workload cannot run against `kind`, if it cannot.
    pub fn skip_reason(self, kind: StoreKind) -> Option<&'static str> {
        match (self, kind) {
            (JobWorkload::J5, StoreKind::File | StoreKind::Memory) => Some(
                "j5 kills a worker process with SIGKILL, so it needs worker processes: \
                 run it with --store server",
            ),
            (JobWorkload::J3Mix, StoreKind::Server) => Some(
                "j3-mix counts the conflicts of producers and workers on one database: \
                 run it embedded (--store file or memory)",
            ),
            _ => None,
        }
    }

    pub fn run(self, store: &mut StoreUnderTest, run_dir: &Path) -> Result<Measurement> {
        let mut bench = Bench::open(store, run_dir)?;
        let result = match self {
            JobWorkload::J1 => j1(&mut bench),
            JobWorkload::J2 => j2(&mut bench),
            JobWorkload::J3 => j3(&mut bench, "j3", J3_BATCH),
            JobWorkload::J3Single => j3(&mut bench, "j3-single", 1),
            JobWorkload::J4 => j4(&mut bench),
            JobWorkload::J5 => j5(&mut bench),
            JobWorkload::J6 => j6(&mut bench),
            JobWorkload::J3Mix => j3_mix(&mut bench),
        };
        let closed = bench.close();
        let mut m = result?;
        closed?;
        m.set(
            "workers_are",
            Value::Str(if bench_is_served(store.kind()) {
                "processes".into()
            } else {
                "threads".into()
            }),
        );
        Ok(m)
    }
}

fn bench_is_served(kind: StoreKind) -> bool {
    kind == StoreKind::Server
}

/// Wall-clock nanoseconds since the epoch: the execution log's time base.
fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

// ---------------------------------------------------------------- the execution log

/// Appends a job body's records to the execution log, one `write()` each.
struct Recorder {
    file: File,
    tag: String,
}

impl Recorder {
    fn open(path: &Path, tag: &str) -> std::io::Result<Recorder> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Recorder {
            file,
            tag: tag.to_string(),
        })
    }

    fn record(&self, kind: char, id: u64) {
        let line = format!("{kind} {id} {} {}\n", self.tag, now_ns());
        // One write of a short line on an O_APPEND descriptor: whole and in order.
        if let Err(e) = (&self.file).write_all(line.as_bytes()) {
            eprintln!("zodiac-benches: cannot append to the execution log: {e}");
        }
    }
}

/// The bench handlers, recording into `recorder`: a no-op job, and a job sleeping
/// for its second argument in milliseconds.
fn bench_handlers(recorder: Arc<Recorder>) -> Handlers {
    let mut h = Handlers::new();
    let r = Arc::clone(&recorder);
    h.register(NOOP, move |_ctx, id: u64| {
        r.record('S', id);
        r.record('E', id);
        Ok(())
    });
    h.register(SLEEP, move |_ctx, (id, ms): (u64, u64)| {
        recorder.record('S', id);
        std::thread::sleep(Duration::from_millis(ms));
        recorder.record('E', id);
        Ok(())
    });
    h
}

/// What the harness read from the execution log so far.
struct LogReader {
    file: File,
    partial: Vec<u8>,
    /// Start and end records per id: (worker tag, ns).
    starts: HashMap<u64, Vec<(String, u64)>>,
    ends: HashMap<u64, Vec<(String, u64)>>,
    /// (id, tag) started and not ended by that tag.
    open: HashSet<(u64, String)>,
    first_start: Option<u64>,
    last_end: Option<u64>,
    last_progress: Instant,
}

impl LogReader {
    fn new(path: &Path) -> Result<LogReader> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)?;
        Ok(LogReader {
            file,
            partial: Vec::new(),
            starts: HashMap::new(),
            ends: HashMap::new(),
            open: HashSet::new(),
            first_start: None,
            last_end: None,
            last_progress: Instant::now(),
        })
    }

    /// Reads what was appended since the last call; returns whether there was any.
    fn poll(&mut self) -> Result<bool> {
        let mut fresh = Vec::new();
        self.file.read_to_end(&mut fresh)?;
        if fresh.is_empty() {
            return Ok(false);
        }
        self.last_progress = Instant::now();
        self.partial.extend_from_slice(&fresh);
        let complete = match self.partial.iter().rposition(|&b| b == b'\n') {
            Some(at) => at + 1,
            None => return Ok(true),
        };
        let lines: Vec<u8> = self.partial.drain(..complete).collect();
        for line in lines.lines() {
            let line = line?;
            let mut parts = line.split(' ');
            let (Some(kind), Some(id), Some(tag), Some(ns), None) = (
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
            ) else {
                return Err(format!("bad execution log line {line:?}").into());
            };
            let id: u64 = id.parse()?;
            let ns: u64 = ns.parse()?;
            match kind {
                "S" => {
                    self.starts.entry(id).or_default().push((tag.into(), ns));
                    self.open.insert((id, tag.into()));
                    self.first_start = Some(self.first_start.map_or(ns, |f| f.min(ns)));
                }
                "E" => {
                    self.ends.entry(id).or_default().push((tag.into(), ns));
                    self.open.remove(&(id, tag.to_string()));
                    self.last_end = Some(self.last_end.map_or(ns, |l| l.max(ns)));
                }
                _ => return Err(format!("bad execution log line {line:?}").into()),
            }
        }
        Ok(true)
    }

    /// Waits until `n` distinct ids have ended; fails after `stall` without a record.
    fn wait_ended(&mut self, n: usize, stall: Duration) -> Result<()> {
        self.last_progress = Instant::now();
        loop {
            self.poll()?;
            if self.ends.len() >= n {
                return Ok(());
            }
            if self.last_progress.elapsed() > stall {
                return Err(format!(
                    "only {} of {n} jobs ended, and nothing happened for {stall:?}",
                    self.ends.len()
                )
                .into());
            }
            std::thread::sleep(DRAIN_TAIL_INTERVAL);
        }
    }

    fn ran_twice(&self) -> u64 {
        self.ends.values().filter(|v| v.len() > 1).count() as u64
    }

    fn started_twice(&self) -> u64 {
        self.starts.values().filter(|v| v.len() > 1).count() as u64
    }
}

// ---------------------------------------------------------------- workers

/// How a bench worker runs.
#[derive(Clone, Debug)]
struct WorkerSpec {
    tag: String,
    agent_size: u32,
    batch_size: u32,
    ping: Duration,
    death: Duration,
}

impl WorkerSpec {
    fn new(tag: impl Into<String>) -> WorkerSpec {
        let defaults = WorkerOptions::default();
        WorkerSpec {
            tag: tag.into(),
            agent_size: 1,
            batch_size: 1,
            ping: defaults.ping_interval,
            death: defaults.death_interval,
        }
    }

    /// An agent of `batch` jobs that a run thread claims, runs and completes
    /// together (`WorkerOptions::batch_size`).
    fn batched(mut self, batch: u32) -> WorkerSpec {
        self.agent_size = batch;
        self.batch_size = batch;
        self
    }

    fn options(&self) -> WorkerOptions {
        WorkerOptions {
            agent_size: self.agent_size,
            batch_size: self.batch_size,
            ping_interval: self.ping,
            death_interval: self.death,
            grace_period: Duration::from_secs(5),
            ..WorkerOptions::default()
        }
    }
}

/// A running bench worker: a thread of this process or a process of its own.
/// Dropped without [`RunningWorker::stop`], a thread is told to stop and a process
/// is killed.
struct RunningWorker(Option<WorkerHandle>);

enum WorkerHandle {
    Thread {
        stop: Arc<AtomicBool>,
        handle: JoinHandle<std::result::Result<(), String>>,
    },
    Process(Child),
}

impl RunningWorker {
    /// Stops the worker and waits for it.
    fn stop(mut self) -> Result<()> {
        match self.0.take() {
            Some(WorkerHandle::Thread { stop, handle }) => {
                stop.store(true, Ordering::SeqCst);
                handle
                    .join()
                    .map_err(|_| "a worker thread panicked")?
                    .map_err(|e| format!("a worker thread failed: {e}"))?;
            }
            Some(WorkerHandle::Process(mut child)) => {
                drop(child.stdin.take()); // end of input: stop
                let status = child.wait()?;
                if !status.success() {
                    return Err(format!("a worker process failed: {status}").into());
                }
            }
            None => {}
        }
        Ok(())
    }

    /// The process id of a worker process (`None` for a thread).
    fn pid(&self) -> Option<u32> {
        match &self.0 {
            Some(WorkerHandle::Process(child)) => Some(child.id()),
            _ => None,
        }
    }

    /// Kills a worker process with SIGKILL (threads cannot be killed).
    fn kill9(&mut self) -> Result<()> {
        match self.0.take() {
            Some(WorkerHandle::Process(mut child)) => {
                child.kill()?;
                child.wait()?;
                Ok(())
            }
            other => {
                self.0 = other;
                Err("only a worker process can be killed".into())
            }
        }
    }
}

impl Drop for RunningWorker {
    fn drop(&mut self) {
        match self.0.take() {
            Some(WorkerHandle::Thread { stop, .. }) => stop.store(true, Ordering::SeqCst),
            Some(WorkerHandle::Process(mut child)) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            None => {}
        }
    }
}

/// Runs one worker until `stop` is set (shared by threads and worker processes).
fn run_worker(
    db: Database,
    spec: &WorkerSpec,
    log: &Path,
    stop: &AtomicBool,
) -> std::result::Result<(), String> {
    let recorder = Arc::new(Recorder::open(log, &spec.tag).map_err(|e| e.to_string())?);
    let runner = Runner::new(db.clone(), bench_handlers(recorder), Policies::new());
    let mut worker = Worker::new(db, spec.tag.clone(), runner, spec.options());
    worker.run(stop).map_err(|e| e.to_string())
}

/// Worker mode: `WORKER_MODE ADDR LOG TAG AGENT_SIZE BATCH_SIZE PING_MS DEATH_MS` connects to the
/// server at ADDR and runs a worker with the bench handlers until its standard input
/// ends (then it stops gracefully) or it is killed.
pub fn worker_process(args: &[String]) -> std::result::Result<(), String> {
    let [addr, log, tag, agent_size, batch_size, ping_ms, death_ms] = args else {
        return Err(format!(
            "usage: {WORKER_MODE} ADDR LOG TAG AGENT_SIZE BATCH_SIZE PING_MS DEATH_MS"
        ));
    };
    let number = |s: &String| s.parse::<u64>().map_err(|e| format!("{s}: {e}"));
    let spec = WorkerSpec {
        tag: tag.clone(),
        agent_size: u32::try_from(number(agent_size)?).map_err(|e| e.to_string())?,
        batch_size: u32::try_from(number(batch_size)?).map_err(|e| e.to_string())?,
        ping: Duration::from_millis(number(ping_ms)?),
        death: Duration::from_millis(number(death_ms)?),
    };
    let client = ClientStorage::connect(addr, ClientOptions::new()).map_err(|e| e.to_string())?;
    let storage: Arc<dyn Storage> = Arc::new(client);
    let db = Database::open(Arc::clone(&storage)).map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::stdin().lock().read_to_end(&mut sink);
            stop.store(true, Ordering::SeqCst);
        });
    }
    run_worker(db, &spec, Path::new(log), &stop)?;
    storage.close().map_err(|e| e.to_string())
}

// ---------------------------------------------------------------- the store and its users

/// The store of one job workload run: the database the producer uses, and where
/// workers run.
struct Bench {
    /// The storage under the producer's database (a client when served).
    db: Option<Database>,
    /// The file (or memory) store itself.
    backing: Arc<dyn Storage>,
    /// The server and the producer's client, when served.
    server: Option<Server>,
    producer_client: Option<Arc<dyn Storage>>,
    log_path: PathBuf,
    workers: Vec<RunningWorker>,
}

impl Bench {
    fn open(store: &mut StoreUnderTest, run_dir: &Path) -> Result<Bench> {
        let backing = store.create_unserved()?;
        let log_path = run_dir.join("executions.log");
        File::create(&log_path)?;
        let (db, server, producer_client) = if bench_is_served(store.kind()) {
            // As `zodiac server` runs: with the job layer's merge functions.
            let options = ServerOptions::new().merge(Some(zodiac_async::merges().into_merge_fn()));
            let server = Server::start(Arc::clone(&backing), "127.0.0.1:0", options)?;
            let client: Arc<dyn Storage> = Arc::new(ClientStorage::connect(
                &server.local_addr().to_string(),
                ClientOptions::new(),
            )?);
            let db = Database::open(Arc::clone(&client))?;
            (db, Some(server), Some(client))
        } else {
            (Database::open(Arc::clone(&backing))?, None, None)
        };
        transact(&db, |tx| Queue::get_or_create(tx, "").map(|_| ()))?;
        Ok(Bench {
            db: Some(db),
            backing,
            server,
            producer_client,
            log_path,
            workers: Vec::new(),
        })
    }

    fn db(&self) -> &Database {
        self.db.as_ref().expect("open until closed")
    }

    fn served(&self) -> bool {
        self.server.is_some()
    }

    /// The process ids of the running worker processes.
    fn worker_pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.workers.iter().filter_map(RunningWorker::pid)
    }

    fn log(&self) -> Result<LogReader> {
        LogReader::new(&self.log_path)
    }

    /// Starts a worker: a thread on the producer's database, or a process with its
    /// own connection to the server.
    fn start_worker(&mut self, spec: WorkerSpec) -> Result<()> {
        let worker = match &self.server {
            Some(server) => {
                let exe = std::env::current_exe()
                    .map_err(|e| format!("cannot find the benchmark binary: {e}"))?;
                let child = Command::new(exe)
                    .args(crate::reexec_prefix())
                    .args([
                        WORKER_MODE.to_string(),
                        server.local_addr().to_string(),
                        self.log_path.display().to_string(),
                        spec.tag.clone(),
                        spec.agent_size.to_string(),
                        spec.batch_size.to_string(),
                        spec.ping.as_millis().to_string(),
                        spec.death.as_millis().to_string(),
                    ])
                    .stdin(Stdio::piped())
                    .spawn()?;
                RunningWorker(Some(WorkerHandle::Process(child)))
            }
            None => {
                let stop = Arc::new(AtomicBool::new(false));
                let (db, log) = (self.db().clone(), self.log_path.clone());
                let flag = Arc::clone(&stop);
                let handle = std::thread::Builder::new()
                    .name(format!("worker {}", spec.tag))
                    .spawn(move || run_worker(db, &spec, &log, &flag))?;
                RunningWorker(Some(WorkerHandle::Thread { stop, handle }))
            }
        };
        self.workers.push(worker);
        Ok(())
    }

    fn stop_workers(&mut self) -> Result<()> {
        let mut first_error = None;
        for worker in self.workers.drain(..) {
            if let Err(e) = worker.stop() {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Stops the workers, then closes the producer, the server and the store.
    fn close(&mut self) -> Result<()> {
        let stopped = self.stop_workers();
        self.db = None;
        if let Some(client) = self.producer_client.take() {
            client.close()?;
        }
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
        self.backing.close()?;
        stopped
    }
}

/// Puts one job in the default queue, in its own (durable) transaction.
fn put(db: &Database, handler: &str, arguments: &impl serde::Serialize) -> Result<()> {
    transact(db, |tx| {
        let q = Queue::get_or_create(tx, "")?;
        Queue::put_job(
            tx,
            &q,
            Job::with_arguments(handler, arguments)?,
            PutOptions::new(),
        )
        .map(|_| ())
    })?;
    Ok(())
}

/// Puts `n` no-op jobs with ids `0..n`, each in its own transaction; the seconds.
fn put_noops(db: &Database, n: u64) -> Result<f64> {
    let start = Instant::now();
    for i in 0..n {
        put(db, NOOP, &i)?;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// What a drain measured.
struct Drained {
    /// Launch of the workers → the last end.
    e2e: f64,
    /// The first start → the last end.
    steady: f64,
    /// CPU seconds (user, system) over the drain, of this process and of the
    /// worker processes when they are processes; `None` when `/proc` is missing.
    cpu: Option<(f64, f64)>,
    /// The worker processes' share of `cpu` (user + system seconds); `None` when
    /// the workers are threads.
    cpu_workers: Option<f64>,
}

impl Drained {
    /// Sets `cpu_user_us` and `cpu_sys_us` per unit of work (job, or step).
    fn set_cpu(&self, m: &mut Measurement, units: u64) {
        if let Some((user, system)) = self.cpu {
            let per_unit = |s: f64| Value::Float(s * 1e6 / units as f64, 1);
            m.set("cpu_user_us", per_unit(user));
            m.set("cpu_sys_us", per_unit(system));
        }
        if let Some(workers) = self.cpu_workers {
            m.set(
                "cpu_workers_us",
                Value::Float(workers * 1e6 / units as f64, 1),
            );
        }
    }
}

/// Starts `workers` workers, each with an agent of `batch` jobs run in batches
/// of `batch` ([`WorkerSpec::batched`]), and waits until `n` ids have ended.
fn drain(
    bench: &mut Bench,
    log: &mut LogReader,
    workers: usize,
    batch: u32,
    n: u64,
) -> Result<Drained> {
    let cpu_before = system::cpu_seconds();
    let launch = now_ns();
    for w in 0..workers {
        bench.start_worker(WorkerSpec::new(format!("w{w}")).batched(batch))?;
    }
    log.wait_ended(n as usize, DRAIN_STALL)?;
    // Worker processes started with the drain: all their CPU time is the drain's
    // (their start-up included, a few milliseconds). None of them (threads): (0, 0).
    let workers_cpu = bench
        .worker_pids()
        .map(system::cpu_seconds_of)
        .try_fold((0.0, 0.0), |(u, s), cpu| {
            cpu.map(|(cu, cs)| (u + cu, s + cs))
        });
    let cpu = match (cpu_before, system::cpu_seconds(), workers_cpu) {
        (Some((u0, s0)), Some((u1, s1)), Some((wu, ws))) => Some((u1 - u0 + wu, s1 - s0 + ws)),
        _ => None,
    };
    let cpu_workers = workers_cpu.filter(|_| bench.served()).map(|(u, s)| u + s);
    let last = log.last_end.expect("records");
    let first = log.first_start.expect("records");
    Ok(Drained {
        e2e: last.saturating_sub(launch) as f64 / 1e9,
        steady: last.saturating_sub(first) as f64 / 1e9,
        cpu,
        cpu_workers,
    })
}

// ---------------------------------------------------------------- the workloads

/// J1: one producer puts 10,000 no-op jobs, each in its own durable transaction.
fn j1(bench: &mut Bench) -> Result<Measurement> {
    let seconds = put_noops(bench.db(), BULK_JOBS)?;
    let pending = transact(bench.db(), |tx| {
        let q = Queue::get(tx, "")?.expect("created");
        Queue::len(tx, &q)
    })?;
    if pending != BULK_JOBS {
        return Err(format!("j1: {pending} jobs pending, not {BULK_JOBS}").into());
    }
    Ok(Measurement::new("j1", seconds, BULK_JOBS, "jobs/s"))
}

/// The drain workloads' measurement: end to end rate, steady rate, lost, ran twice.
fn drain_measurement(
    name: &str,
    log: &LogReader,
    n: u64,
    drained: &Drained,
    workers: usize,
    batch: u32,
) -> Measurement {
    let mut m = Measurement::new(name, drained.e2e, n, "jobs/s");
    m.set("workers", Value::Int(workers as u64));
    m.set("agent_size", Value::Int(batch.into()));
    m.set("batch_size", Value::Int(batch.into()));
    m.set("steady_rate", Value::Float(n as f64 / drained.steady, 1));
    drained.set_cpu(&mut m, n);
    m.set("lost", Value::Int(n - log.ends.len() as u64));
    m.set("ran_twice", Value::Int(log.ran_twice()));
    m
}

/// J2: with J1's 10,000 jobs waiting (put untimed, as J1 does), 1 worker with one
/// agent of size 1 runs them all.
fn j2(bench: &mut Bench) -> Result<Measurement> {
    put_noops(bench.db(), BULK_JOBS)?;
    let mut log = bench.log()?;
    let drained = drain(bench, &mut log, 1, 1, BULK_JOBS)?;
    bench.stop_workers()?;
    Ok(drain_measurement("j2", &log, BULK_JOBS, &drained, 1, 1))
}

/// J3: fresh store, 10,000 jobs waiting, 4 workers, each running batches of
/// `batch` jobs (reported as `name`).
fn j3(bench: &mut Bench, name: &str, batch: u32) -> Result<Measurement> {
    put_noops(bench.db(), BULK_JOBS)?;
    let mut log = bench.log()?;
    let before = bench.db().commit_stats();
    let drained = drain(bench, &mut log, J3_WORKERS, batch, BULK_JOBS)?;
    bench.stop_workers()?;
    // Let late duplicates (if any) reach the log before counting.
    std::thread::sleep(Duration::from_millis(100));
    log.poll()?;
    let mut m = drain_measurement(name, &log, BULK_JOBS, &drained, J3_WORKERS, batch);
    if !bench.served() {
        // Over the server the workers' commits are in their own processes.
        set_commit_stats(&mut m, before, bench.db().commit_stats(), BULK_JOBS);
    }
    Ok(m)
}

/// Producers of j3-mix, each putting an equal share of the jobs.
const J3_MIX_PRODUCERS: u64 = 4;

/// j3-mix: 4 producers put 10,000 no-op jobs (each put its own transaction) while
/// 4 workers run them; the rate from the first put to the last end, and what the
/// commits of producers and workers met.
fn j3_mix(bench: &mut Bench) -> Result<Measurement> {
    let mut log = bench.log()?;
    let before = bench.db().commit_stats();
    let launch = now_ns();
    for w in 0..J3_WORKERS {
        bench.start_worker(WorkerSpec::new(format!("w{w}")))?;
    }
    let share = BULK_JOBS / J3_MIX_PRODUCERS;
    let producers: Vec<_> = (0..J3_MIX_PRODUCERS)
        .map(|p| {
            let db = bench.db().clone();
            std::thread::spawn(move || -> Result<()> {
                for i in p * share..(p + 1) * share {
                    put(&db, NOOP, &i)?;
                }
                Ok(())
            })
        })
        .collect();
    for producer in producers {
        producer
            .join()
            .map_err(|_| "a j3-mix producer panicked")??;
    }
    log.wait_ended(BULK_JOBS as usize, DRAIN_STALL)?;
    let last = log.last_end.expect("records");
    bench.stop_workers()?;
    std::thread::sleep(Duration::from_millis(100));
    log.poll()?;
    let seconds = last.saturating_sub(launch) as f64 / 1e9;
    let mut m = Measurement::new("j3-mix", seconds, BULK_JOBS, "jobs/s");
    m.set("producers", Value::Int(J3_MIX_PRODUCERS));
    m.set("workers", Value::Int(J3_WORKERS as u64));
    m.set("agent_size", Value::Int(1));
    m.set("lost", Value::Int(BULK_JOBS - log.ends.len() as u64));
    m.set("ran_twice", Value::Int(log.ran_twice()));
    set_commit_stats(&mut m, before, bench.db().commit_stats(), BULK_JOBS);
    Ok(m)
}

/// The commits and conflicts between `before` and `after`, per job.
fn set_commit_stats(m: &mut Measurement, before: CommitStats, after: CommitStats, jobs: u64) {
    let per_job = |a: u64, b: u64| Value::Float(a.saturating_sub(b) as f64 / jobs as f64, 3);
    m.set("commits_per_job", per_job(after.commits, before.commits));
    m.set(
        "conflicts_merged_per_job",
        per_job(after.conflicts_resolved, before.conflicts_resolved),
    );
    m.set(
        "conflicts_reported_per_job",
        per_job(after.conflicts_unresolved, before.conflicts_unresolved),
    );
}

/// J4: an idle worker; 5 warm-up and 200 measured rounds of: put one no-op job,
/// wait until its end record appears. Put-to-start and put-to-done from the
/// records' times; the put call's own latency too.
fn j4(bench: &mut Bench) -> Result<Measurement> {
    let mut log = bench.log()?;
    bench.start_worker(WorkerSpec::new("w0"))?;
    std::thread::sleep(IDLE_BEFORE);
    let mut to_start = Vec::with_capacity(J4_ROUNDS);
    let mut to_done = Vec::with_capacity(J4_ROUNDS);
    let mut put_call = Vec::with_capacity(J4_ROUNDS);
    let started = Instant::now();
    for i in 0..(J4_WARM_UP + J4_ROUNDS) as u64 {
        let t0 = now_ns();
        put(bench.db(), NOOP, &i)?;
        let t1 = now_ns();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !log.ends.contains_key(&i) {
            log.poll()?;
            if Instant::now() > deadline {
                return Err(format!("j4: job {i} not done within 60 s").into());
            }
            std::thread::sleep(TAIL_INTERVAL);
        }
        if i >= J4_WARM_UP as u64 {
            let ms = |t: u64| t.saturating_sub(t0) as f64 / 1e6;
            to_start.push(ms(log.starts[&i][0].1));
            to_done.push(ms(log.ends[&i][0].1));
            put_call.push(ms(t1));
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    bench.stop_workers()?;
    for v in [&mut to_start, &mut to_done, &mut put_call] {
        v.sort_by(f64::total_cmp);
    }
    let p = |v: &[f64], q: usize| Value::Float(percentile(v, q).unwrap_or(f64::NAN), 3);
    let mut m = Measurement::new("j4", seconds, (J4_WARM_UP + J4_ROUNDS) as u64, "rounds/s");
    m.set("start_p50_ms", p(&to_start, 50));
    m.set("start_p99_ms", p(&to_start, 99));
    m.set("done_p50_ms", p(&to_done, 50));
    m.set("done_p99_ms", p(&to_done, 99));
    m.set("done_max_ms", p(&to_done, 100));
    m.set("put_call_p50_ms", p(&put_call, 50));
    m.set("samples", Value::Int(to_done.len() as u64));
    m.set("lost", Value::Int(0));
    m.set("ran_twice", Value::Int(log.ran_twice()));
    Ok(m)
}

/// J5: 2 worker processes (ping 200 ms, death 1 s); 1,000 jobs sleeping 10 ms each;
/// once 500 have completed, at the first moment w0 is inside a job body, w0 is
/// killed with SIGKILL and not restarted. Reports lost, completed twice, and the
/// time from the kill until each of w0's in-flight jobs starts again elsewhere.
fn j5(bench: &mut Bench) -> Result<Measurement> {
    if !bench.served() {
        return Err(JobWorkload::J5
            .skip_reason(StoreKind::File)
            .expect("j5 is skipped embedded")
            .into());
    }
    let mut log = bench.log()?;
    for w in 0..2 {
        let mut spec = WorkerSpec::new(format!("w{w}"));
        spec.ping = J5_PING;
        spec.death = J5_DEATH;
        bench.start_worker(spec)?;
    }
    std::thread::sleep(IDLE_BEFORE);
    let mut kill_at: Option<(u64, Instant)> = None;
    let mut half_at: Option<Instant> = None;
    let victim = "w0".to_string();
    // Once half have completed: kill w0 at the first moment it is inside a job body
    // (or after 5 s anyway, as the peers' harness does).
    let mut maybe_kill = |bench: &mut Bench,
                          log: &mut LogReader,
                          kill_at: &mut Option<(u64, Instant)>|
     -> Result<()> {
        log.poll()?;
        if kill_at.is_none() && log.ends.len() as u64 >= J5_JOBS / 2 {
            let half = *half_at.get_or_insert_with(Instant::now);
            let inside = log.open.iter().any(|(_, tag)| *tag == victim);
            if inside || half.elapsed() > Duration::from_secs(5) {
                *kill_at = Some((now_ns(), Instant::now()));
                bench.workers[0].kill9()?;
            }
        }
        Ok(())
    };
    let start = Instant::now();
    for i in 0..J5_JOBS {
        put(bench.db(), SLEEP, &(i, J5_SLEEP_MS))?;
        if i % 20 == 0 {
            maybe_kill(bench, &mut log, &mut kill_at)?;
        }
    }
    while kill_at.is_none() {
        maybe_kill(bench, &mut log, &mut kill_at)?;
        if start.elapsed() > J5_LIMIT {
            return Err("j5: half the jobs never completed".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let (kill_ns, kill_instant) = kill_at.expect("killed");
    std::thread::sleep(Duration::from_millis(50));
    log.poll()?;
    let in_flight: Vec<u64> = log
        .open
        .iter()
        .filter(|(_, tag)| *tag == victim)
        .map(|(id, _)| *id)
        .collect();
    log.last_progress = Instant::now();
    while (log.ends.len() as u64) < J5_JOBS
        || in_flight.iter().any(|id| {
            !log.starts[id]
                .iter()
                .any(|(tag, t)| *tag != victim && *t > kill_ns)
        })
    {
        log.poll()?;
        if kill_instant.elapsed() > J5_LIMIT || log.last_progress.elapsed() > J5_STALL {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let seconds = start.elapsed().as_secs_f64();
    // The survivor only: the killed one is gone.
    let survivor = bench.workers.pop().expect("two workers");
    bench.workers.clear();
    survivor.stop()?;
    log.poll()?;
    let recovery: Vec<Option<f64>> = in_flight
        .iter()
        .map(|id| {
            log.starts[id]
                .iter()
                .filter(|(tag, t)| *tag != victim && *t > kill_ns)
                .map(|(_, t)| (t - kill_ns) as f64 / 1e9)
                .reduce(f64::min)
        })
        .collect();
    let mut m = Measurement::new("j5", seconds, J5_JOBS, "jobs/s");
    m.set("workers", Value::Int(2));
    m.set("ping_ms", Value::Int(J5_PING.as_millis() as u64));
    m.set("death_ms", Value::Int(J5_DEATH.as_millis() as u64));
    m.set("completed", Value::Int(log.ends.len() as u64));
    m.set("lost", Value::Int(J5_JOBS - log.ends.len() as u64));
    m.set("completed_twice", Value::Int(log.ran_twice()));
    m.set("started_twice", Value::Int(log.started_twice()));
    m.set("in_flight_at_kill", Value::Int(in_flight.len() as u64));
    m.set(
        "in_flight_recovered",
        Value::Int(recovery.iter().flatten().count() as u64),
    );
    let worst = recovery
        .iter()
        .try_fold(0.0f64, |worst, r| r.map(|r| worst.max(r)));
    match worst {
        Some(s) if !in_flight.is_empty() => m.set("recovery_s", Value::Float(s, 3)),
        _ => m.set("recovery_s", Value::Str("none".into())),
    };
    Ok(m)
}

/// J6: 1,000 two-step chains, step 2 a callback of step 1, put each chain in its own
/// transaction (timed: the enqueue rate, an extra); then 1 worker runs the 2,000
/// steps: chains/s end to end. Checks step 2 never started before step 1 ended.
fn j6(bench: &mut Bench) -> Result<Measurement> {
    let start = Instant::now();
    for i in 0..J6_CHAINS {
        transact(bench.db(), |tx| {
            let q = Queue::get_or_create(tx, "")?;
            let first = Queue::put_job(tx, &q, Job::with_arguments(NOOP, &i)?, PutOptions::new())?;
            add_callback(
                tx,
                &first,
                Job::with_arguments(NOOP, &(CHAIN_STEP2_OFFSET + i))?,
            )?;
            Ok(())
        })?;
    }
    let enqueue_seconds = start.elapsed().as_secs_f64();
    let mut log = bench.log()?;
    let before = bench.db().commit_stats();
    let drained = drain(bench, &mut log, 1, J6_BATCH, 2 * J6_CHAINS)?;
    bench.stop_workers()?;
    let after = bench.db().commit_stats();
    let out_of_order = (0..J6_CHAINS)
        .filter(|i| {
            let first_end = log.ends.get(i).map(|v| v[0].1);
            let second_start = log.starts.get(&(CHAIN_STEP2_OFFSET + i)).map(|v| v[0].1);
            !matches!((first_end, second_start), (Some(e), Some(s)) if e <= s)
        })
        .count();
    let mut m = Measurement::new("j6", drained.e2e, J6_CHAINS, "chains/s");
    m.set("workers", Value::Int(1));
    m.set("agent_size", Value::Int(J6_BATCH.into()));
    m.set("batch_size", Value::Int(J6_BATCH.into()));
    m.set(
        "steady_rate",
        Value::Float(J6_CHAINS as f64 / drained.steady, 1),
    );
    drained.set_cpu(&mut m, 2 * J6_CHAINS);
    m.set(
        "enqueue_rate",
        Value::Float(J6_CHAINS as f64 / enqueue_seconds, 1),
    );
    m.set("lost", Value::Int(2 * J6_CHAINS - log.ends.len() as u64));
    m.set("ran_twice", Value::Int(log.ran_twice()));
    m.set("out_of_order", Value::Int(out_of_order as u64));
    if !bench.served() {
        // Per step; over the server the worker's commits are in its own process.
        set_commit_stats(&mut m, before, after, 2 * J6_CHAINS);
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::StoreKind;

    #[test]
    fn the_log_reader_counts_starts_ends_and_open_bodies() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("zodiac-jobs-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("log");
        let mut reader = LogReader::new(&path)?;
        let a = Recorder::open(&path, "w0")?;
        let b = Recorder::open(&path, "w1")?;
        a.record('S', 1);
        a.record('E', 1);
        b.record('S', 1);
        b.record('E', 1);
        a.record('S', 2);
        assert!(reader.poll()?);
        assert_eq!(reader.ends.len(), 1);
        assert_eq!(reader.ran_twice(), 1);
        assert_eq!(reader.started_twice(), 1);
        assert!(reader.open.contains(&(2, "w0".to_string())));
        assert!(!reader.poll()?);
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn embedded_jobs_run_on_the_memory_store() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("zodiac-jobs-mem-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut store = StoreUnderTest::new(StoreKind::Memory, &dir);
        let m = JobWorkload::J6.run(&mut store, &dir)?;
        assert_eq!(m.get("lost"), Some(&Value::Int(0)));
        assert_eq!(m.get("out_of_order"), Some(&Value::Int(0)));
        assert!(JobWorkload::J5.skip_reason(StoreKind::Memory).is_some());
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
