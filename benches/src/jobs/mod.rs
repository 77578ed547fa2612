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
//!   separate process (the harness binary in [`WORKER_MODE`]) with its own client
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

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use zodiac_async::{Queue, transact};
use zodiac_objects::Database;
use zodiac_storage::{ClientOptions, ClientStorage, Server, ServerOptions, Storage};

use crate::Result;
use crate::report::{Measurement, Value};
use crate::target::{StoreKind, StoreUnderTest};

/// The first argument that runs the harness binary as one job worker process.
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
    /// J3 with the jobs' priorities mixed evenly over 0..=9, out of put order:
    /// what honouring priorities costs a drain (target: at least 0.9× J3 in the
    /// same run; not a workloads.md row).
    J3Priorities,
    /// `J3Priorities` with half the jobs put with a unique key (freed when each
    /// completes): priorities and uniques mixed (not a workloads.md row).
    J3PrioritiesUnique,
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
            JobWorkload::J3Priorities => "j3-prio",
            JobWorkload::J3PrioritiesUnique => "j3-prio-uniq",
        }
    }

    /// Why the workload cannot run against `kind`, if it cannot.
    pub fn skip_reason(self, kind: StoreKind) -> Option<&'static str> {
        match (self, kind) {
            (JobWorkload::J5, StoreKind::File | StoreKind::Memory) => Some(
                "j5 kills a worker process with SIGKILL, so it needs worker processes: \
                 run it with --store server",
            ),
            (JobWorkload::J3Mix, StoreKind::Server | StoreKind::Postgres(_)) => Some(
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
            JobWorkload::J3 => j3(&mut bench, "j3", J3_BATCH, Priorities::Default),
            JobWorkload::J3Single => j3(&mut bench, "j3-single", 1, Priorities::Default),
            JobWorkload::J3Priorities => j3(&mut bench, "j3-prio", J3_BATCH, Priorities::Mixed),
            JobWorkload::J3PrioritiesUnique => j3(
                &mut bench,
                "j3-prio-uniq",
                J3_BATCH,
                Priorities::MixedUnique,
            ),
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
            Value::Str(if workers_are_processes(store.kind()) {
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

/// Served, the workers connect to the server; on PostgreSQL, each opens the
/// database itself, as workers on many machines do.
fn workers_are_processes(kind: StoreKind) -> bool {
    matches!(kind, StoreKind::Server | StoreKind::Postgres(_))
}

mod log;
mod runs;
mod worker;

use log::LogReader;
use runs::{Priorities, j1, j2, j3, j3_mix, j4, j5, j6};
use worker::{RunningWorker, WorkerHandle, WorkerSpec, run_worker};

pub use worker::worker_process;

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
    /// What a worker process opens: the server's address or the database's URL.
    worker_store: Option<String>,
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
        let worker_store = match &server {
            Some(server) => Some(server.local_addr().to_string()),
            None => store.pg_url(),
        };
        Ok(Bench {
            db: Some(db),
            backing,
            server,
            producer_client,
            worker_store,
            log_path,
            workers: Vec::new(),
        })
    }

    fn db(&self) -> &Database {
        self.db.as_ref().expect("open until closed")
    }

    /// Whether the workers are processes (served, or on PostgreSQL).
    fn served(&self) -> bool {
        self.worker_store.is_some()
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
        let worker = match &self.worker_store {
            Some(address) => {
                let child = Command::new(crate::helpers::program()?)
                    .args([
                        WORKER_MODE.to_string(),
                        address.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::StoreKind;

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
