//! Seeded simulation of the job layer over the file storage: for each seed, random
//! jobs are put (some with callbacks, some with a `begin_by` deadline that passes
//! before a claim, some cancelled, some failing), workers run them, and the
//! process dies now and then, then the database is reopened and a new worker (the
//! same dispatcher id restarted, or a sibling after the death interval) recovers.
//! Packs with garbage collection are mixed in, while jobs run.
//!
//! How the process dies, and why each fault is injected:
//! - a crash in the middle of a run (its storage stops reaching the disk; the
//!   worker is dropped without a graceful stop), sometimes with a power cut that
//!   keeps any subset of the pages written since the last sync: a run interrupted
//!   at any point must be recovered, its effect applied once;
//! - an I/O error: EIO or ENOSPC armed at the Nth write or fdatasync (a failed
//!   write leaving a torn prefix) of the data file, of the saved index (saved
//!   every few KiB here, so saves happen inside runs) or of a pack's new file,
//!   while runs (and sometimes a pack) go on. A failed write or sync of the data
//!   file poisons the storage: every later commit fails naming the cause and
//!   saying to reopen, and the job layer would retry a run's commits until the
//!   process ends. That is where an operator or a supervisor restarts the worker,
//!   so the simulation does: once `Storage::begin` reports the storage poisoned,
//!   the process dies as in a crash (sometimes with a power cut) and a restarted
//!   worker or a sibling recovers. A failed index save or pack poisons nothing:
//!   the workers go on with the same storage.
//!
//! What every seed must show at the end, once the workers ran out of work:
//! - no job lost: every job put (and every callback) is still there and
//!   COMPLETED, cancelled and expired ones included;
//! - no transactional effect applied twice or lost: each successful run of a job
//!   adds one to a counter in the transaction that stores its result, so the
//!   counter equals the number of jobs whose result is a value (likewise for
//!   callbacks), and a failing handler's write never lands;
//! - the queue's counters are exact: `inspect::counts` gives every put job as
//!   COMPLETED and nothing else, and the queue holds no pending job;
//! - a success the job layer reported was acknowledged: the storage under test
//!   notes on each thread whether its last commit returned a tid, and the job
//!   layer's success line ("job J completed on attempt A", logged on the thread
//!   that committed the result) must follow one that did; and every run so
//!   reported ends COMPLETED with a value on attempt A (had the job layer
//!   counted a failed commit as a success, the job would run again after the
//!   restart, on attempt A + 1);
//! - nothing acknowledged before a fault is lost: every job or callback that the
//!   dying process could read as COMPLETED ends COMPLETED with the same attempt
//!   and the same kind of result, whatever the power cut took;
//! - an I/O error shows only where a fault struck: a poll, pack or poisoning with
//!   no injected fault fails the seed, and so does a failed data-file write or
//!   sync that did not poison the storage.
//!
//! Jobs run on the worker's threads, so the interleaving of runs with each other
//! and with the simulation's steps is not deterministic: a replayed seed makes the
//! same choices, but its runs may interleave differently (and an armed fault may
//! strike a different commit). A crash happens while exactly one job is in its
//! handler (the worker's agent holds one job at a time): that handler never
//! returns, as a dead process's would not. Each dead process's threads stay with
//! their handles on its storage until the test process ends (a few file
//! descriptors each): a parked doomed run, or a callback retrying its commit on
//! the poisoned storage every few seconds, changing nothing.
//!
//! `ZODIAC_SIM_SEEDS=N` runs seeds 1..=N; `ZODIAC_SIM_SEED=S` replays seed S.

#[macro_use]
#[path = "../../storage/tests/sim/mod.rs"]
mod sim;
#[path = "simulation/observe.rs"]
mod observe;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use observe::{Recording, SEED_RUNNING, TRACE_TARGET, capture_completions, completions_of};
use serde::{Deserialize, Serialize};
use sim::{Log, Outcome, Rng};
use zodiac_async::{
    Clock, Failure, FailureKind, Handlers, Job, Outcome as JobOutcome, Policies, PutOptions, Queue,
    Runner, Status, Timestamp, Worker, WorkerOptions, add_callback, fail, inspect, transact,
};
use zodiac_objects::{Database, PRef, Persistent};
use zodiac_storage::io::{FaultPlan, FaultPoint, FaultyIoFactory};
use zodiac_storage::{Error, FileOptions, FileStorage, Oid, Storage, Tid, TransactionMeta};

/// Seeds of the default `cargo test` run.
const DEFAULT_SEEDS: u64 = 60;
/// Workload steps per seed.
const STEPS_MAX: u64 = 14;
/// Jobs one put transaction adds, at most.
const PUTS_PER_STEP_MAX: u64 = 3;
/// Polls the final drive may take before the remaining work counts as stuck.
const FINAL_POLLS_MAX: u32 = 400;
/// How long a doomed handler is waited for before the crash happens anyway.
const DOOMED_WAIT: Duration = Duration::from_millis(500);
/// How long an armed fault's runs are given to meet it (or end) before the
/// simulation goes on without it.
const FAULT_WAIT: Duration = Duration::from_millis(1500);
/// The saved index is written after this much new data: small, so that index
/// saves (and their faults) happen inside runs.
const INDEX_SAVE_INTERVAL_BYTES: u64 = 8 << 10;
const EIO: i32 = 5;
const ENOSPC: i32 = 28;
const PING: Duration = Duration::from_millis(20);
const DEATH: Duration = Duration::from_millis(150);

#[test]
fn jobs_survive_crashes_io_errors_power_cuts_and_packs_exactly_once() {
    capture_completions();
    sim::run(
        "cargo test -p zodiac-async --test simulation",
        DEFAULT_SEEDS,
        run_seed,
    );
    eprintln!(
        "I/O faults: {} armed, {} struck, {} poisoned the storage (the process restarted); \
         {} completions reported by the job layer checked",
        FAULTS_ARMED.load(Ordering::SeqCst),
        FAULTS_STRUCK.load(Ordering::SeqCst),
        POISONINGS.load(Ordering::SeqCst),
        COMPLETIONS_CHECKED.load(Ordering::SeqCst)
    );
    // The success check reads the job layer's trace line: a changed line must not
    // leave it checking nothing. (A run of a few seeds may have had every success
    // come from a failed commit that the reopen found durable, which logs none.)
    assert!(
        VALUES_SEEN.load(Ordering::SeqCst) < VALUES_WITHOUT_COMPLETIONS_MAX
            || COMPLETIONS_CHECKED.load(Ordering::SeqCst) > 0,
        "no \"job J (handler) completed on attempt A\" line of {TRACE_TARGET} was read: \
         update parse_completion to the job layer's success line"
    );
}

/// Totals over the seeds of a run, printed at its end: fault windows armed,
/// faults that struck, and the poisonings that restarted the process.
static FAULTS_ARMED: AtomicU64 = AtomicU64::new(0);
static FAULTS_STRUCK: AtomicU64 = AtomicU64::new(0);
static POISONINGS: AtomicU64 = AtomicU64::new(0);
static COMPLETIONS_CHECKED: AtomicU64 = AtomicU64::new(0);
/// Jobs and callbacks that ended with a value, over the seeds of a run.
static VALUES_SEEN: AtomicU64 = AtomicU64::new(0);
/// Values a run may see with no completion line read before the line is taken
/// to have changed.
const VALUES_WITHOUT_COMPLETIONS_MAX: u64 = 10;

/// A counter that each successful run adds one to, in its own transaction.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Tally {
    n: i64,
}

impl Persistent for Tally {
    const TYPE_NAME: &'static str = "sim.Tally";
}

/// What a put job is, to know what its end must look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Adds one to the job tally and returns its label.
    Inc,
    /// Adds 1000 to the job tally, then fails: the write must be rolled back.
    Fails,
    /// An `Inc` whose deadline passes before any claim.
    Expires,
    /// An `Inc` cancelled before any claim.
    Cancelled,
}

struct PutJob {
    job: PRef<Job>,
    kind: Kind,
    callback: Option<PRef<Job>>,
}

/// One incarnation of the process: its storage, database and worker.
struct Life {
    faults: Arc<FaultyIoFactory>,
    db: Database,
    worker: Worker,
    /// The next `inc` run blocks forever (the process dies during it).
    doom: Arc<AtomicBool>,
    /// A doomed run has entered its handler.
    doomed_entered: Arc<AtomicBool>,
}

struct World {
    rng: Rng,
    dir: tempfile::TempDir,
    path: PathBuf,
    tallies: (PRef<Tally>, PRef<Tally>),
    life: Option<Life>,
    jobs: Vec<PutJob>,
    ids: u64,
    crashes: u64,
    worker_id: String,
    /// Jobs and callbacks a dying process read as COMPLETED (acknowledged): their
    /// attempt, and whether the result is a value.
    acknowledged: BTreeMap<Oid, (u32, bool)>,
    /// The workers' clock: a crash skips it past the death interval instead of
    /// sleeping through it.
    clock: SkippingClock,
}

/// The system clock plus a shared offset that only grows.
#[derive(Clone, Default)]
struct SkippingClock {
    skipped_micros: Arc<AtomicU64>,
}

impl SkippingClock {
    fn skip(&self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.skipped_micros.fetch_add(micros, Ordering::SeqCst);
    }
}

impl Clock for SkippingClock {
    fn now(&self) -> Timestamp {
        let skipped = self.skipped_micros.load(Ordering::SeqCst);
        Timestamp::now().plus(Duration::from_micros(skipped))
    }
}

fn run_seed(seed: u64, log: &mut Log) -> Outcome {
    SEED_RUNNING.store(seed, Ordering::SeqCst);
    completions_of(seed);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("data.zdb");
    let faults = Arc::new(FaultyIoFactory::new());
    faults.set_simulated_sync(true);
    let db = open_db(&path, &faults)?;
    let tallies = transact(&db, |tx| {
        Queue::get_or_create(tx, "")?;
        let jobs = tx.add(Tally::default())?;
        let callbacks = tx.add(Tally::default())?;
        // Reachable from the root, or GC would collect them.
        tx.set_root_entry("sim.jobs", jobs)?;
        tx.set_root_entry("sim.callbacks", callbacks)?;
        Ok((jobs, callbacks))
    })
    .map_err(|e| format!("setup: {e}"))?;
    let mut world = World {
        rng: Rng::new(seed),
        dir,
        path,
        tallies,
        life: None,
        jobs: Vec::new(),
        ids: 0,
        crashes: 0,
        worker_id: "sim-worker-0".into(),
        acknowledged: BTreeMap::new(),
        clock: SkippingClock::default(),
    };
    world.life = Some(world.start(faults, db, false));
    let steps = world.rng.range(4, STEPS_MAX);
    log.step(format!("seed {seed}: {steps} steps"));
    for _ in 0..steps {
        match world.rng.weighted(&[40, 30, 12, 10, 8, 14]) {
            0 => world.put(log)?,
            1 => world.poll(log, true)?,
            2 => world.crash(log)?,
            3 => world.pack(log, false)?,
            4 => world.pack(log, true)?,
            _ => world.io_fault(log)?,
        }
    }
    world.finish(log)?;
    world.check(seed, log)
}

fn open_db(path: &Path, faults: &Arc<FaultyIoFactory>) -> Result<Database, String> {
    let options = FileOptions::new()
        .io(faults.clone())
        .group_commit_wait(Duration::ZERO)
        .index_save_interval_bytes(INDEX_SAVE_INTERVAL_BYTES);
    let storage = FileStorage::open(path, options).map_err(|e| format!("open: {e}"))?;
    let recording = Recording {
        inner: Arc::new(storage),
    };
    Database::open(Arc::new(recording) as Arc<dyn Storage>).map_err(|e| format!("database: {e}"))
}

impl World {
    /// Starts a worker on `db`, with handlers whose `inc` can be doomed.
    fn start(&self, faults: Arc<FaultyIoFactory>, db: Database, restarted: bool) -> Life {
        let doom = Arc::new(AtomicBool::new(false));
        let doomed_entered = Arc::new(AtomicBool::new(false));
        let (jobs, callbacks) = self.tallies;
        let mut handlers = Handlers::new();
        {
            let (doom, entered) = (Arc::clone(&doom), Arc::clone(&doomed_entered));
            handlers.register("inc", move |ctx, label: u64| {
                if doom.swap(false, Ordering::SeqCst) {
                    entered.store(true, Ordering::SeqCst);
                    // The process dies here: this run never returns.
                    loop {
                        std::thread::park();
                    }
                }
                ctx.tx().modify(&jobs, |t| t.n += 1)?;
                Ok(label)
            });
        }
        handlers.register("fails", move |ctx, label: u64| -> Result<u64, _> {
            ctx.tx().modify(&jobs, |t| t.n += 1000)?;
            Err(format!("job {label} fails on purpose").into())
        });
        handlers.register("cb", move |ctx, label: u64| {
            ctx.tx().modify(&callbacks, |t| t.n += 1)?;
            Ok(label)
        });
        let runner =
            Runner::new(db.clone(), handlers, Policies::new()).with_clock(self.clock.clone());
        let options = WorkerOptions {
            agent_size: 1,
            poll_interval: Duration::from_millis(50),
            ping_interval: PING,
            death_interval: DEATH,
            grace_period: Duration::from_millis(100),
            restarted,
            ..WorkerOptions::default()
        };
        let worker = Worker::new(db.clone(), self.worker_id.clone(), runner, options);
        Life {
            faults,
            db,
            worker,
            doom,
            doomed_entered,
        }
    }

    fn life(&mut self) -> &mut Life {
        self.life.as_mut().expect("a live process")
    }

    fn put(&mut self, log: &mut Log) -> Outcome {
        let count = self.rng.range(1, PUTS_PER_STEP_MAX);
        let mut planned = Vec::new();
        for _ in 0..count {
            self.ids += 1;
            let kind = match self.rng.weighted(&[70, 10, 10, 10]) {
                0 => Kind::Inc,
                1 => Kind::Fails,
                2 => Kind::Expires,
                _ => Kind::Cancelled,
            };
            planned.push((self.ids, kind, self.rng.chance(30)));
        }
        let db = self.life().db.clone();
        let put = transact(&db, |tx| {
            let queue = Queue::get(tx, "")?.expect("created at setup");
            let mut out = Vec::new();
            for &(id, kind, with_callback) in &planned {
                let handler = if kind == Kind::Fails { "fails" } else { "inc" };
                let mut options = PutOptions::new();
                if kind == Kind::Expires {
                    // A microsecond to begin: past by the time any claim looks.
                    options = options.begin_by(Duration::from_micros(1));
                }
                let job = Queue::put_job(tx, &queue, Job::with_arguments(handler, &id)?, options)?;
                let callback = if with_callback {
                    Some(add_callback(tx, &job, Job::with_arguments("cb", &id)?)?)
                } else {
                    None
                };
                if kind == Kind::Cancelled {
                    fail(
                        tx,
                        &job,
                        Some(Failure::new(FailureKind::Aborted, "cancelled")),
                    )?;
                }
                out.push(PutJob {
                    job,
                    kind,
                    callback,
                });
            }
            Ok(out)
        })
        .map_err(|e| format!("put: {e}"))?;
        let names: Vec<String> = put
            .iter()
            .map(|p| {
                format!(
                    "{}:{:?}{}",
                    p.job.oid(),
                    p.kind,
                    if p.callback.is_some() { "+cb" } else { "" }
                )
            })
            .collect();
        log.step(format!("put {}", names.join(" ")));
        self.jobs.extend(put);
        Ok(())
    }

    fn poll(&mut self, log: &mut Log, wait: bool) -> Outcome {
        let life = self.life();
        let report = life.worker.poll_once().map_err(|e| format!("poll: {e}"))?;
        if wait {
            life.worker.wait_idle();
        }
        log.step(format!(
            "poll: started {:?}, cleaned {:?}",
            report.started.iter().map(|j| j.oid()).collect::<Vec<Oid>>(),
            report.cleaned
        ));
        Ok(())
    }

    /// The process dies during a run (or idle, when nothing is claimable), the
    /// power may go too, and a new process opens the database and starts a worker.
    fn crash(&mut self, log: &mut Log) -> Outcome {
        self.life().worker.wait_idle();
        self.life().doom.store(true, Ordering::SeqCst);
        self.poll(log, false)?;
        let deadline = Instant::now() + DOOMED_WAIT;
        while !self.life().doomed_entered.load(Ordering::SeqCst) && Instant::now() < deadline {
            if self.life().worker.running().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let mid_run = self.life().doomed_entered.load(Ordering::SeqCst);
        self.die_and_restart(log, format!("crash (in a run: {mid_run})"))
    }

    /// The process dies now (`what` says how): nothing more reaches the disk, the
    /// power may go too, and a new process opens the database and starts a
    /// worker (the same id restarted, or a sibling after the death interval).
    fn die_and_restart(&mut self, log: &mut Log, what: String) -> Outcome {
        let life = self.life.take().expect("a live process");
        life.faults.crash();
        // What the dying process could read is what it had acknowledged.
        self.note_acknowledged(&life.db)?;
        // No graceful stop: the worker and the database just go. A doomed run
        // keeps its handles (and the old writer lock) forever, changing nothing.
        drop(life.worker);
        drop(life.db);
        let power = self.rng.chance(40);
        if power {
            let rng = &mut self.rng;
            life.faults
                .power_cut_pages(&self.path, |_| rng.chance(50))
                .map_err(|e| format!("power cut: {e}"))?;
        }
        // The dead process's lock would be gone with it; here its doomed run
        // still holds the old lock file, so the new process gets a new one.
        let _ = std::fs::remove_file(lock_path(&self.path));
        let faults = Arc::new(FaultyIoFactory::new());
        faults.set_simulated_sync(true);
        let db = open_db(&self.path, &faults)?;
        let restarted = self.rng.chance(60);
        self.crashes += 1;
        if !restarted {
            // A sibling with another id takes over after the death interval.
            self.worker_id = format!("sim-worker-{}", self.crashes);
            self.clock.skip(DEATH + PING);
        }
        log.step(format!(
            "{what}, power cut: {power}; new worker {} (restarted: {restarted})",
            self.worker_id
        ));
        self.life = Some(self.start(faults, db, restarted));
        Ok(())
    }

    /// Records the put jobs and callbacks that `db`, the dying process's, reads
    /// as COMPLETED: those commits were acknowledged (a storage publishes a
    /// transaction only once it is durable), so no restart may lose them.
    fn note_acknowledged(&mut self, db: &Database) -> Outcome {
        let all: Vec<PRef<Job>> = self
            .jobs
            .iter()
            .flat_map(|p| std::iter::once(p.job).chain(p.callback))
            .collect();
        // Read without committing: the storage may refuse commits.
        let mut conn = db.connection();
        let mut tx = conn.begin();
        for job in all {
            let j = tx
                .get(&job)
                .map_err(|e| format!("the dying process reading job {}: {e}", job.oid()))?;
            if j.status() == Status::Completed {
                let value = matches!(j.result(), Some(JobOutcome::Value(_)));
                self.acknowledged.insert(job.oid(), (j.attempts(), value));
            }
        }
        Ok(())
    }

    /// The storage's poisoned error, if it refuses commits.
    fn poisoned(&mut self) -> Result<Option<String>, String> {
        let storage = Arc::clone(self.life().db.storage());
        match storage.begin(TransactionMeta::described(
            "sim: does the storage take commits?",
        )) {
            Ok(txn) => {
                txn.abort();
                Ok(None)
            }
            Err(e @ Error::Poisoned { .. }) => Ok(Some(e.to_string())),
            Err(e) => Err(format!("begin: {e}")),
        }
    }

    /// Arms EIO or ENOSPC at the Nth write or sync of the data file, the saved
    /// index or a pack's new file, lets the worker run (sometimes packing
    /// meanwhile) until the fault strikes or the runs end, and when the storage
    /// is poisoned lets the process die as a supervisor would have it restarted.
    fn io_fault(&mut self, log: &mut Log) -> Outcome {
        self.life().worker.wait_idle();
        // Mostly with work queued, so that runs meet the fault; the put itself
        // commits before the fault is armed.
        if self.rng.chance(70) {
            self.put(log)?;
        }
        let (plan, with_pack) = self.plan_fault();
        log.step(format!(
            "arm {:?} errno {} on *{}, torn {} (pack: {with_pack})",
            plan.point, plan.errno, plan.file_suffix, plan.torn_bytes
        ));
        let on_data_file = plan.file_suffix == ".zdb";
        let faults = Arc::clone(&self.life().faults);
        faults.arm(plan);
        FAULTS_ARMED.fetch_add(1, Ordering::SeqCst);
        let errors = self.run_armed(log, with_pack)?;
        let poisoned = self.poisoned()?;
        let struck = !faults.armed();
        faults.disarm();
        for e in &errors {
            log.step(format!("while armed: {e}"));
        }
        ensure!(
            struck || errors.is_empty(),
            "failed with no injected fault: {}",
            errors.join("; ")
        );
        if let Some(cause) = &poisoned {
            ensure!(
                struck,
                "the storage is poisoned with no injected fault: {cause}"
            );
            ensure!(
                cause.contains("reopen"),
                "the poisoned error does not tell to reopen: {cause}"
            );
        }
        ensure!(
            !(struck && on_data_file && poisoned.is_none()),
            "a failed write or sync of the data file left the storage taking commits"
        );
        if struck {
            FAULTS_STRUCK.fetch_add(1, Ordering::SeqCst);
        }
        let Some(cause) = poisoned else {
            log.step(format!("fault struck: {struck}; the storage takes commits"));
            self.life().worker.wait_idle();
            return Ok(());
        };
        POISONINGS.fetch_add(1, Ordering::SeqCst);
        log.step(format!("poisoned: {cause}"));
        let running: Vec<Oid> = self
            .life()
            .worker
            .running()
            .iter()
            .map(|j| j.oid())
            .collect();
        self.die_and_restart(
            log,
            format!("the process dies on the poisoned storage (runs not reaped: {running:?})"),
        )
    }

    /// EIO or ENOSPC at the Nth write or sync (a torn prefix for a write) of the
    /// data file, the saved index or a pack's new file; and whether to pack
    /// while it is armed (mostly, for a fault on the pack's file).
    fn plan_fault(&mut self) -> (FaultPlan, bool) {
        let point = if self.rng.chance(50) {
            FaultPoint::Write(self.rng.range(1, 6))
        } else {
            FaultPoint::Sync(self.rng.range(1, 4))
        };
        let errno = *self.rng.pick(&[EIO, ENOSPC]);
        let file_suffix = match self.rng.weighted(&[70, 15, 15]) {
            0 => ".zdb",
            1 => "index-tmp",
            _ => ".pack",
        };
        let torn_bytes = self.rng.below(300) as usize;
        let with_pack = self
            .rng
            .chance(if file_suffix == ".pack" { 90 } else { 15 });
        let plan = FaultPlan {
            point,
            errno,
            file_suffix: file_suffix.into(),
            torn_bytes,
        };
        (plan, with_pack)
    }

    /// With a fault armed: polls (and packs, with `with_pack`) while runs go on,
    /// until the storage is poisoned, the runs end, or [`FAULT_WAIT`] runs out.
    /// Returns the errors met, to be checked against whether the fault struck.
    fn run_armed(&mut self, log: &mut Log, with_pack: bool) -> Result<Vec<String>, String> {
        let mut errors = Vec::new();
        self.poll_armed(log, &mut errors);
        if with_pack {
            let refs = |bytes: &[u8]| {
                zodiac_objects::record::referenced_oids(bytes).map_err(|e| e.to_string())
            };
            let storage = Arc::clone(self.life().db.storage());
            match storage.pack(Tid::MAX, Some(&refs)) {
                Ok(report) => log.step(format!(
                    "pack with GC: {} objects removed",
                    report.objects_removed
                )),
                Err(e @ Error::PackAbandoned { .. }) => {
                    log.step(format!("pack with GC abandoned: {e}"))
                }
                Err(e) => errors.push(format!("pack: {e}")),
            }
        }
        // Each poll reaps the ended runs and may start more.
        let deadline = Instant::now() + FAULT_WAIT;
        while self.poisoned()?.is_none()
            && !self.life().worker.running().is_empty()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(2));
            self.poll_armed(&mut Log::default(), &mut errors);
        }
        Ok(errors)
    }

    /// A poll while a fault is armed: its error is kept, to be checked against
    /// whether the fault struck.
    fn poll_armed(&mut self, log: &mut Log, errors: &mut Vec<String>) {
        match self.life().worker.poll_once() {
            Ok(report) => log.step(format!(
                "poll: started {:?}, cleaned {:?}",
                report.started.iter().map(|j| j.oid()).collect::<Vec<Oid>>(),
                report.cleaned
            )),
            Err(e) => errors.push(format!("poll: {e}")),
        }
    }

    fn pack(&mut self, log: &mut Log, while_running: bool) -> Outcome {
        if while_running {
            self.poll(log, false)?;
        }
        let refs = |bytes: &[u8]| {
            zodiac_objects::record::referenced_oids(bytes).map_err(|e| e.to_string())
        };
        let storage = Arc::clone(self.life().db.storage());
        match storage.pack(zodiac_storage::Tid::MAX, Some(&refs)) {
            Ok(report) => log.step(format!(
                "pack with GC (jobs running: {while_running}): {} objects removed",
                report.objects_removed
            )),
            // A run made an object the pack found unreachable reachable again: the
            // pack refuses rather than delete it, and changes nothing.
            Err(e @ zodiac_storage::Error::PackAbandoned { .. }) => {
                log.step(format!("pack with GC abandoned: {e}"))
            }
            Err(e) => return Err(format!("pack: {e}")),
        }
        self.life().worker.wait_idle();
        Ok(())
    }

    /// Polls until every put job is COMPLETED (or the polls run out).
    fn finish(&mut self, log: &mut Log) -> Outcome {
        for polls in 0..FINAL_POLLS_MAX {
            self.poll(&mut Log::default(), true)?;
            if self.unfinished()?.is_empty() {
                log.step(format!("all jobs completed after {polls} more polls"));
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let left = self.unfinished()?;
        Err(format!(
            "jobs never completed: {left:?} after {FINAL_POLLS_MAX} polls"
        ))
    }

    /// Put jobs (and callbacks) not COMPLETED, with their status or why they
    /// cannot be read.
    fn unfinished(&mut self) -> Result<Vec<(Oid, String)>, String> {
        let db = self.life().db.clone();
        let all: Vec<PRef<Job>> = self
            .jobs
            .iter()
            .flat_map(|p| std::iter::once(p.job).chain(p.callback))
            .collect();
        transact(&db, |tx| {
            let mut left = Vec::new();
            for job in &all {
                match tx.get(job) {
                    Ok(j) if j.status() == Status::Completed => {}
                    Ok(j) => left.push((job.oid(), format!("{:?}", j.status()))),
                    Err(e) => left.push((job.oid(), format!("unreadable: {e}"))),
                }
            }
            Ok(left)
        })
        .map_err(|e| format!("reading the jobs: {e}"))
    }

    fn check(&mut self, seed: u64, log: &mut Log) -> Outcome {
        let db = self.life().db.clone();
        let known: BTreeMap<Oid, PRef<Job>> = self
            .jobs
            .iter()
            .flat_map(|p| std::iter::once(p.job).chain(p.callback))
            .map(|j| (j.oid(), j))
            .collect();
        let completions = completions_of(seed);
        let unacknowledged = observe::unacknowledged_of(seed);
        ensure!(
            unacknowledged.is_empty(),
            "the job layer reported a success whose commit was not acknowledged (its \
             thread's last commit failed, or there was none): {}",
            unacknowledged.join(", ")
        );
        let acknowledged = self.acknowledged.clone();
        let (jobs_tally, callbacks_tally) = self.tallies;
        let put: Vec<(PRef<Job>, Kind, Option<PRef<Job>>)> = self
            .jobs
            .iter()
            .map(|p| (p.job, p.kind, p.callback))
            .collect();
        let result = transact(&db, |tx| {
            let mut problems = Vec::new();
            let (mut values, mut callback_values) = (0i64, 0i64);
            for (job, kind, callback) in &put {
                let j = tx.get(job)?;
                match (kind, j.result()) {
                    (Kind::Inc, Some(JobOutcome::Value(_))) => values += 1,
                    (
                        Kind::Fails | Kind::Expires | Kind::Cancelled,
                        Some(JobOutcome::Failure(_)),
                    ) => {}
                    (kind, other) => {
                        problems.push(format!("job {} ({kind:?}) ended with {other:?}", job.oid()))
                    }
                }
                if let Some(cb) = callback {
                    match tx.get(cb)?.result() {
                        Some(JobOutcome::Value(_)) => callback_values += 1,
                        other => problems.push(format!(
                            "callback {} of job {} ended with {other:?}",
                            cb.oid(),
                            job.oid()
                        )),
                    }
                }
            }
            let tally = tx.get(&jobs_tally)?.n;
            if tally != values {
                problems.push(format!(
                    "the job tally is {tally}, but {values} jobs completed with a value \
                     (an effect applied twice, lost, or a failed run's write kept)"
                ));
            }
            let tally = tx.get(&callbacks_tally)?.n;
            if tally != callback_values {
                problems.push(format!(
                    "the callback tally is {tally}, but {callback_values} callbacks completed \
                     with a value"
                ));
            }
            let counts = inspect::counts(tx, "")?.unwrap_or_default();
            let expected: std::collections::BTreeMap<Status, u64> = if put.is_empty() {
                Default::default()
            } else {
                [(Status::Completed, put.len() as u64)].into()
            };
            if counts != expected {
                problems.push(format!(
                    "the queue counts {counts:?}, expected {expected:?}"
                ));
            }
            let queue = Queue::get(tx, "")?.expect("created at setup");
            let pending = Queue::len(tx, &queue)?;
            if pending != 0 {
                problems.push(format!("{pending} jobs still pending"));
            }
            for &(oid, attempt) in &completions {
                let Some(job) = known.get(&oid) else { continue };
                COMPLETIONS_CHECKED.fetch_add(1, Ordering::SeqCst);
                let j = tx.get(job)?;
                let value = matches!(j.result(), Some(JobOutcome::Value(_)));
                if j.status() != Status::Completed || !value || j.attempts() != attempt {
                    problems.push(format!(
                        "the job layer reported job {oid} completed on attempt {attempt}, but \
                         it ended {:?} on attempt {} with {:?}: a success whose commit was \
                         not acknowledged, or an acknowledged commit lost",
                        j.status(),
                        j.attempts(),
                        j.result()
                    ));
                }
            }
            for (&oid, &(attempt, value)) in &acknowledged {
                let Some(job) = known.get(&oid) else { continue };
                let j = tx.get(job)?;
                let now_value = matches!(j.result(), Some(JobOutcome::Value(_)));
                if j.status() != Status::Completed || j.attempts() != attempt || now_value != value
                {
                    problems.push(format!(
                        "job {oid} was COMPLETED on attempt {attempt} (value: {value}) in a \
                         process that died, but ended {:?} on attempt {} with {:?}: an \
                         acknowledged commit was lost",
                        j.status(),
                        j.attempts(),
                        j.result()
                    ));
                }
            }
            Ok(problems)
        })
        .map_err(|e| format!("checking: {e}"))?;
        VALUES_SEEN.fetch_add(
            self.jobs
                .iter()
                .map(|p| u64::from(p.kind == Kind::Inc) + u64::from(p.callback.is_some()))
                .sum(),
            Ordering::SeqCst,
        );
        log.step(format!(
            "{} jobs checked, {} reported completions, {} acknowledged before a death",
            put.len(),
            completions.len(),
            acknowledged.len()
        ));
        ensure!(result.is_empty(), "{}", result.join("; "));
        // Leave no worker thread behind for the next seed.
        self.life().worker.wait_idle();
        let _ = &self.dir;
        Ok(())
    }
}

fn lock_path(data_path: &Path) -> PathBuf {
    let mut p = data_path.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}
