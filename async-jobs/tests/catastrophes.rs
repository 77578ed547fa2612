//! The in-process rows of the catastrophe suite (the spec's `catastrophes.md`): one test
//! per row, named after it (P1, P3, D5–D9, D12, E1–E11, and the cleanup logic of
//! D11 in process).
//!
//! Fixture (as the suite describes it): one queue (the default one), a worker whose
//! agent holds 3 jobs, short intervals (poll 100 ms, ping 200 ms, death 1 s), and a
//! job `f` that blocks until the test releases it and returns 42, with a callback
//! handler that records the result it received.
//!
//! Faults are injected in process: a storage wrapper ([`Faulty`]) fails loads or
//! commits on demand and can run a competing transaction in the middle of a
//! commit; "process death" is a worker dropped without shutdown (its running jobs
//! stay blocked, then find themselves taken over and store nothing), recovered by
//! a restarted worker with the same id or by a sibling after the death interval;
//! time is compressed with short policy waits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use zodiac_async::limits::{LANE_PUT_BACK, LANE_SCHEDULED};
use zodiac_async::retry::{DISCONNECTS, DefaultPolicy, INTERRUPTIONS};
use zodiac_async::{
    Decision, Dispatchers, Failure, FailureKind, FailureLevel, Handlers, Job, Location,
    ManualClock, Outcome, Policies, PutOptions, Queue, RetryData, RetryPolicy, RunOutcome, Runner,
    Status, Timestamp, Worker, WorkerOptions, add_callback, add_callbacks, parallel, part_results,
    serial, transact,
};
use zodiac_objects::{Database, PRef, Persistent};
use zodiac_storage::{
    CommitSubscription, ConflictError, MemoryStorage, Oid, Revision, RevisionInfo, Storage,
    StorageTransaction, Tid, TransactionIter, TransactionMeta,
};

// ---------------------------------------------------------------------------
// Fault injection: a storage wrapper
// ---------------------------------------------------------------------------

/// The error an injected commit fault returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Conflict,
    Disconnected,
    /// Not transient: the storage refuses writes.
    ReadOnly,
}

impl Fault {
    fn error(self) -> zodiac_storage::Error {
        match self {
            // An object no transaction stores: the objects layer cannot merge it.
            Fault::Conflict => zodiac_storage::Error::Conflict(ConflictError {
                oid: Oid(u64::MAX),
                base_tid: Tid(1),
                current_tid: Tid(2),
            }),
            Fault::Disconnected => disconnected(),
            Fault::ReadOnly => zodiac_storage::Error::ReadOnly,
        }
    }
}

fn disconnected() -> zodiac_storage::Error {
    zodiac_storage::Error::Disconnected {
        address: "tcp://127.0.0.1:1 (injected)".into(),
        reason: "connection reset (injected)".into(),
    }
}

type Hook = Box<dyn FnOnce() + Send>;

/// Faults waiting to happen. A filter `Some(oid)` applies a fault only to loads of
/// that object, or to commits that store it.
#[derive(Default)]
struct Faults {
    loads: Mutex<Vec<(Option<Oid>, u32)>>,
    commits: Mutex<Vec<(Option<Oid>, Fault, u32)>>,
    /// Run at the vote of the next commit storing the object, before it votes.
    hooks: Mutex<Vec<(Oid, Hook)>>,
    loads_failed: AtomicU32,
    commits_failed: AtomicU32,
}

/// A memory storage whose loads and commits fail when told to.
struct Faulty {
    inner: MemoryStorage,
    faults: Arc<Faults>,
}

impl Faulty {
    fn new() -> Faulty {
        Faulty {
            inner: MemoryStorage::new(),
            faults: Arc::new(Faults::default()),
        }
    }

    /// The next `n` loads (of `oid`, or of anything) fail with "disconnected".
    fn fail_loads(&self, oid: Option<Oid>, n: u32) {
        self.faults.loads.lock().unwrap().push((oid, n));
    }

    /// The next `n` commits (storing `oid`, or any) fail with `fault`.
    fn fail_commits(&self, oid: Option<Oid>, fault: Fault, n: u32) {
        self.faults.commits.lock().unwrap().push((oid, fault, n));
    }

    /// Runs `hook` in the middle of the next commit that stores `oid`.
    fn during_commit_of(&self, oid: Oid, hook: impl FnOnce() + Send + 'static) {
        self.faults
            .hooks
            .lock()
            .unwrap()
            .push((oid, Box::new(hook)));
    }
}

impl Storage for Faulty {
    fn describe(&self) -> String {
        format!("faulty {}", self.inner.describe())
    }
    fn last_tid(&self) -> Tid {
        self.inner.last_tid()
    }
    fn new_oid(&self) -> zodiac_storage::Result<Oid> {
        self.inner.new_oid()
    }
    fn load(&self, oid: Oid, snapshot: Tid) -> zodiac_storage::Result<Revision> {
        {
            let mut loads = self.faults.loads.lock().unwrap();
            if let Some(slot) = loads
                .iter_mut()
                .find(|(filter, left)| *left > 0 && filter.is_none_or(|f| f == oid))
            {
                slot.1 -= 1;
                self.faults.loads_failed.fetch_add(1, Ordering::SeqCst);
                return Err(disconnected());
            }
        }
        self.inner.load(oid, snapshot)
    }
    fn load_revision(&self, oid: Oid, tid: Tid) -> zodiac_storage::Result<Vec<u8>> {
        self.inner.load_revision(oid, tid)
    }
    fn history(&self, oid: Oid, limit: usize) -> zodiac_storage::Result<Vec<RevisionInfo>> {
        self.inner.history(oid, limit)
    }
    fn transactions(&self, from: Tid, to: Tid) -> zodiac_storage::Result<TransactionIter<'_>> {
        self.inner.transactions(from, to)
    }
    fn begin(&self, meta: TransactionMeta) -> zodiac_storage::Result<Box<dyn StorageTransaction>> {
        Ok(Box::new(FaultyTxn {
            inner: self.inner.begin(meta)?,
            faults: Arc::clone(&self.faults),
            stored: Vec::new(),
            voted: false,
        }))
    }
    fn subscribe(&self) -> CommitSubscription {
        self.inner.subscribe()
    }
    fn close(&self) -> zodiac_storage::Result<()> {
        self.inner.close()
    }
}

struct FaultyTxn {
    inner: Box<dyn StorageTransaction>,
    faults: Arc<Faults>,
    stored: Vec<Oid>,
    voted: bool,
}

impl StorageTransaction for FaultyTxn {
    fn store(&mut self, oid: Oid, base_tid: Tid, data: Vec<u8>) -> zodiac_storage::Result<()> {
        self.stored.push(oid);
        self.inner.store(oid, base_tid, data)
    }
    fn check_current(&mut self, oid: Oid, tid: Tid) -> zodiac_storage::Result<()> {
        self.inner.check_current(oid, tid)
    }
    fn vote(&mut self) -> zodiac_storage::Result<()> {
        let hooks: Vec<Hook> = {
            let mut all = self.faults.hooks.lock().unwrap();
            let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut *all)
                .into_iter()
                .partition(|(oid, _)| self.stored.contains(oid));
            *all = rest;
            mine.into_iter().map(|(_, h)| h).collect()
        };
        for hook in hooks {
            hook();
        }
        let fault = {
            let mut commits = self.faults.commits.lock().unwrap();
            commits
                .iter_mut()
                .find(|(filter, _, left)| {
                    *left > 0 && filter.is_none_or(|f| self.stored.contains(&f))
                })
                .map(|slot| {
                    slot.2 -= 1;
                    slot.1
                })
        };
        if let Some(fault) = fault {
            self.faults.commits_failed.fetch_add(1, Ordering::SeqCst);
            return Err(fault.error());
        }
        self.inner.vote()?;
        self.voted = true;
        Ok(())
    }
    fn finish(mut self: Box<Self>) -> zodiac_storage::Result<Tid> {
        if !self.voted {
            self.vote()?;
        }
        self.inner.finish()
    }
    fn abort(self: Box<Self>) {
        self.inner.abort()
    }
}

// ---------------------------------------------------------------------------
// A test logger: records every record so tests can check levels and texts
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Record {
    level: log::Level,
    target: String,
    message: String,
}

struct TestLogger {
    records: Mutex<Vec<Record>>,
}

impl log::Log for TestLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Info
    }
    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            self.records.lock().unwrap().push(Record {
                level: record.level(),
                target: record.target().to_string(),
                message: record.args().to_string(),
            });
        }
    }
    fn flush(&self) {}
}

fn logger() -> &'static TestLogger {
    static LOGGER: OnceLock<&'static TestLogger> = OnceLock::new();
    LOGGER.get_or_init(|| {
        let logger: &'static TestLogger = Box::leak(Box::new(TestLogger {
            records: Mutex::new(Vec::new()),
        }));
        log::set_logger(logger).expect("the only logger of this test binary");
        log::set_max_level(log::LevelFilter::Info);
        logger
    })
}

/// Log records whose message contains `needle` (tests run in parallel: each
/// test's handler names are unique, so a handler name picks its test's records).
fn logged(needle: &str) -> Vec<Record> {
    logger()
        .records
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.message.contains(needle))
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------
// The fixture
// ---------------------------------------------------------------------------

/// Gates by label: closed until released. `f` (and the composite parts) wait on
/// the gate of their label.
///
/// A worker "killed" in process leaves its threads behind; [`Gates::kill_waiting`]
/// makes the runs blocked at that moment block for good, as if their process had
/// died with them (otherwise a released zombie would go on running its handler).
#[derive(Default)]
struct Gates {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    open: HashMap<String, bool>,
    /// Runs waiting at a gate, by token: whether their process was killed.
    waiting: HashMap<u64, bool>,
    next: u64,
}

impl Gates {
    fn release(&self, label: &str) {
        self.state
            .lock()
            .unwrap()
            .open
            .insert(label.to_string(), true);
        self.changed.notify_all();
    }

    fn kill_waiting(&self) {
        let mut s = self.state.lock().unwrap();
        for killed in s.waiting.values_mut() {
            *killed = true;
        }
    }

    /// Records the call of `label` in `calls` and waits for its gate. The call is
    /// recorded once the run is registered as waiting, so a test that sees the
    /// call and then kills the worker kills this run too.
    fn wait(&self, label: &str, calls: &Calls) {
        let mut s = self.state.lock().unwrap();
        let token = s.next;
        s.next += 1;
        s.waiting.insert(token, false);
        calls.push(label);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if s.waiting[&token] {
                // Its process is dead: it never returns.
                loop {
                    s = self.changed.wait(s).unwrap();
                }
            }
            if s.open.get(label).copied().unwrap_or(false) {
                s.waiting.remove(&token);
                return;
            }
            if Instant::now() >= deadline {
                s.waiting.remove(&token);
                drop(s);
                panic!("gate {label} never released");
            }
            s = self
                .changed
                .wait_timeout(s, Duration::from_millis(50))
                .unwrap()
                .0;
        }
    }
}

/// Handler calls by label, in call order.
#[derive(Default)]
struct Calls {
    order: Mutex<Vec<String>>,
}

impl Calls {
    fn push(&self, label: &str) {
        self.order.lock().unwrap().push(label.to_string());
    }
    fn count(&self, label: &str) -> usize {
        self.order
            .lock()
            .unwrap()
            .iter()
            .filter(|l| *l == label)
            .count()
    }
    fn order(&self) -> Vec<String> {
        self.order.lock().unwrap().clone()
    }
}

/// Lines written by handlers in their job's transaction: only committed runs
/// leave one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Lines {
    lines: Vec<String>,
}
impl Persistent for Lines {
    const TYPE_NAME: &'static str = "test.catastrophes.Lines";
}

/// What a `record` callback received: its label and its parent's result.
type Received = (String, Option<Outcome>);

const POLL: Duration = Duration::from_millis(100);
const PING: Duration = Duration::from_millis(200);
const DEATH: Duration = Duration::from_secs(1);

struct Fx {
    storage: Arc<Faulty>,
    db: Database,
    gates: Arc<Gates>,
    calls: Arc<Calls>,
    /// What each `record` callback received: (its label, the parent's result).
    received: Arc<Mutex<Vec<Received>>>,
    lines: PRef<Lines>,
    handlers: Handlers,
    policies: Policies,
}

fn fixture() -> Fx {
    logger();
    let storage = Arc::new(Faulty::new());
    let db = Database::open(Arc::clone(&storage) as Arc<dyn Storage>).unwrap();
    let lines = transact(&db, |tx| {
        Queue::get_or_create(tx, "")?;
        Ok(tx.add(Lines::default())?)
    })
    .unwrap();
    let gates = Arc::new(Gates::default());
    let calls = Arc::new(Calls::default());
    let received = Arc::new(Mutex::new(Vec::new()));
    let mut handlers = Handlers::new();
    {
        let (gates, calls) = (Arc::clone(&gates), Arc::clone(&calls));
        // `f`: blocks until its label is released, then returns 42.
        handlers.register("f", move |_ctx, label: String| {
            gates.wait(&label, &calls);
            Ok(42i64)
        });
    }
    {
        let (calls, received) = (Arc::clone(&calls), Arc::clone(&received));
        // A callback that records the result it received.
        handlers.register("record", move |ctx, label: String| {
            calls.push(&label);
            received
                .lock()
                .unwrap()
                .push((label, ctx.parent_result.clone()));
            Ok(())
        });
    }
    {
        let (gates, calls) = (Arc::clone(&gates), Arc::clone(&calls));
        // A composite part: notes its label (committed with its result), waits for
        // its gate, returns its value.
        handlers.register("step", move |ctx, (label, value): (String, i64)| {
            ctx.tx().modify(&lines, |l| l.lines.push(label.clone()))?;
            gates.wait(&label, &calls);
            Ok(value)
        });
    }
    {
        let (gates, calls) = (Arc::clone(&gates), Arc::clone(&calls));
        // A composite's postprocess: sums the parts' values.
        handlers.register("post", move |ctx, label: String| {
            let me = PRef::<Job>::from_oid(ctx.job);
            let results = part_results(ctx.tx(), &me)?.ok_or("not a postprocess job")?;
            let mut sum = 0i64;
            for r in results {
                match r {
                    Some(Outcome::Value(v)) => sum += postcard::from_bytes::<i64>(&v)?,
                    other => return Err(format!("a part has no value: {other:?}").into()),
                }
            }
            ctx.tx()
                .modify(&lines, |l| l.lines.push(format!("{label} {sum}")))?;
            gates.wait(&label, &calls);
            Ok(sum)
        });
    }
    Fx {
        storage,
        db,
        gates,
        calls,
        received,
        lines,
        handlers,
        policies: Policies::new(),
    }
}

fn options() -> WorkerOptions {
    WorkerOptions {
        agent_size: 3,
        poll_interval: POLL,
        ping_interval: PING,
        death_interval: DEATH,
        grace_period: Duration::from_millis(100),
        ..WorkerOptions::default()
    }
}

fn f_job(label: &str) -> Job {
    Job::with_arguments("f", &label.to_string()).unwrap()
}

fn record_job(label: &str) -> Job {
    Job::with_arguments("record", &label.to_string()).unwrap()
}

fn value(outcome: &Outcome) -> i64 {
    match outcome {
        Outcome::Value(v) => postcard::from_bytes(v).unwrap(),
        Outcome::Failure(f) => panic!("expected a value, got the failure {f}"),
    }
}

fn failure_of(job: &Job) -> Failure {
    match job.result() {
        Some(Outcome::Failure(f)) => f.clone(),
        other => panic!("expected a failure result, got {other:?}"),
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

impl Fx {
    fn runner(&self) -> Runner {
        Runner::new(
            self.db.clone(),
            self.handlers.clone(),
            self.policies.clone(),
        )
    }

    /// A worker reading the time from `clock`.
    fn worker_at(&self, id: &str, clock: ManualClock) -> Worker {
        Worker::new(
            self.db.clone(),
            id,
            self.runner().with_clock(clock),
            options(),
        )
    }

    fn worker(&self, id: &str, restarted: bool) -> Worker {
        Worker::new(
            self.db.clone(),
            id,
            self.runner(),
            WorkerOptions {
                restarted,
                ..options()
            },
        )
    }

    fn put(&self, job: Job, options: PutOptions) -> PRef<Job> {
        transact(&self.db, |tx| {
            let q = Queue::get(tx, "")?.unwrap();
            Queue::put_job(tx, &q, job.clone(), options.clone())
        })
        .unwrap()
    }

    /// Puts `f(label)` with a `record` callback labelled `cb-{label}`.
    fn put_f_with_callback(&self, label: &str, options: PutOptions) -> (PRef<Job>, PRef<Job>) {
        transact(&self.db, |tx| {
            let q = Queue::get(tx, "")?.unwrap();
            let j = Queue::put_job(tx, &q, f_job(label), options.clone())?;
            let cb = add_callback(tx, &j, record_job(&format!("cb-{label}")))?;
            Ok((j, cb))
        })
        .unwrap()
    }

    fn job(&self, j: PRef<Job>) -> Arc<Job> {
        transact(&self.db, |tx| Ok(tx.get(&j)?)).unwrap()
    }

    fn status(&self, j: PRef<Job>) -> Status {
        self.job(j).status()
    }

    fn lines(&self) -> Vec<String> {
        transact(&self.db, |tx| Ok(tx.get(&self.lines)?.lines.clone())).unwrap()
    }

    /// What the `record` callback labelled `label` received, once per run.
    fn received(&self, label: &str) -> Vec<Option<Outcome>> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(l, _)| l == label)
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// Waits until `label`'s handler has been called `n` times.
    fn wait_calls(&self, label: &str, n: usize) {
        wait_until(&format!("{label} is called {n} time(s)"), || {
            self.calls.count(label) >= n
        });
    }

    /// Polls with `worker` until `cond` holds.
    fn drive(&self, worker: &mut Worker, what: &str, mut cond: impl FnMut(&Fx) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            worker.poll_once().unwrap();
            if cond(self) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out driving until {what}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Polls until `job` is COMPLETED.
    fn complete(&self, worker: &mut Worker, job: PRef<Job>) -> Arc<Job> {
        self.drive(worker, "the job completes", |fx| {
            fx.status(job) == Status::Completed
        });
        // Not `wait_idle`: other runs of the worker may be blocked at their gates.
        self.job(job)
    }

    /// Claims the next job in a transaction that is then dropped (aborted): what a
    /// claim would take now, changing nothing.
    fn would_claim(&self) -> Option<PRef<Job>> {
        let mut conn = self.db.connection();
        let mut tx = conn.begin();
        let q = Queue::get(&mut tx, "").unwrap().unwrap();
        let claimer = zodiac_async::Claimer {
            dispatcher: "probe".into(),
            agent: "probe".into(),
        };
        Queue::claim(&mut tx, &q, &claimer).unwrap().job
    }

    /// Kills `worker` in process: no shutdown, no more polls or pings, and the runs
    /// it had blocked at a gate never come back.
    fn kill(&self, worker: Worker) {
        self.gates.kill_waiting();
        drop(worker);
    }

    fn interruptions(&self, j: PRef<Job>) -> u32 {
        self.job(j).retry_data().life_count(INTERRUPTIONS)
    }
}

/// A custom policy: every interruption (and error) is retried after `wait`.
struct RetryAfter(Duration);
impl RetryPolicy for RetryAfter {
    fn on_job_error(&self, _: &mut RetryData, f: &Failure) -> Decision {
        Decision::GiveUp(f.clone())
    }
    fn on_commit_error(&self, _: &mut RetryData, f: &Failure) -> Decision {
        Decision::GiveUp(f.clone())
    }
    fn on_interrupted(&self, data: &mut RetryData) -> Decision {
        data.bump_life(INTERRUPTIONS);
        Decision::RetryAfter(self.0)
    }
}

// ---------------------------------------------------------------------------
// Polling faults
// ---------------------------------------------------------------------------

/// P1 — fault: "While a dispatcher's claim transaction holds a job, another
/// transaction pulls the same job and commits (claim conflict)."
/// Expected: "The poll survives; nothing crashes; the job is not lost (put it back
/// and it runs: 42)."
#[test]
fn p1_a_claim_conflict_survives_the_poll_and_the_job_runs_later() {
    let fx = fixture();
    let mut worker = fx.worker("p1", false);
    // The first poll activates the dispatcher: the next commit storing the job is
    // the claim.
    assert!(worker.poll_once().unwrap().started.is_empty());
    let job = fx.put(f_job("p1"), PutOptions::new());
    let db = fx.db.clone();
    let pulled = Arc::new(Mutex::new(None));
    {
        let pulled = Arc::clone(&pulled);
        fx.storage.during_commit_of(job.oid(), move || {
            // Another transaction pulls the job and commits while the claim votes.
            let p = thread::spawn(move || {
                transact(&db, |tx| {
                    let q = Queue::get(tx, "")?.unwrap();
                    Queue::pull(tx, &q)
                })
            })
            .join()
            .unwrap()
            .unwrap();
            *pulled.lock().unwrap() = Some(p);
        });
    }
    let report = worker
        .poll_once()
        .expect("the poll survives the claim conflict");
    assert!(report.started.is_empty(), "{report:?}");
    assert_eq!(*pulled.lock().unwrap(), Some(Some(job)), "the pull won");
    let j = fx.job(job);
    assert_eq!(j.status(), Status::New, "pulled: not lost, back to NEW");
    assert_eq!(j.location(), &Location::None);
    assert_eq!(fx.calls.count("p1"), 0, "never started");
    // Put it back: it runs and returns 42.
    transact(&fx.db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Queue::put(tx, &q, &job, PutOptions::new())
    })
    .unwrap();
    fx.gates.release("p1");
    let j = fx.complete(&mut worker, job);
    assert_eq!(value(j.result().unwrap()), 42);
    assert_eq!(fx.calls.count("p1"), 1);
    assert_eq!(j.attempts(), 1);
}

/// P3 — fault: "Reading the queue fails once with disconnected."
/// Expected: "The poll records the error; the next poll claims; result 42."
///
/// The worker runs its own loop (`Worker::run`): the failed poll is logged at
/// ERROR, and the next poll, after the first backoff (5 s, `poll_backoff(1)`),
/// claims the job.
#[test]
fn p3_a_failed_queue_read_fails_one_poll_and_the_next_claims() {
    use std::sync::atomic::AtomicBool;
    let fx = fixture();
    let mut worker = fx.worker("p3", false);
    assert!(worker.poll_once().unwrap().started.is_empty());
    let stop = Arc::new(AtomicBool::new(false));
    let running = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || worker.run(&stop))
    };
    // A producer elsewhere (its own connections: the worker's cache must catch up
    // from the storage). Its put changes the queue's size counter: the claim must
    // load it again, and that read fails.
    let producer = Database::open(Arc::clone(&fx.storage) as Arc<dyn Storage>).unwrap();
    let size = transact(&producer, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Queue::len(tx, &q)?; // the producer has the counter cached: its put reads none
        Queue::size_oid(tx, &q)
    })
    .unwrap();
    fx.storage.fail_loads(Some(size), 1);
    let put_at = Instant::now();
    let job = transact(&producer, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Queue::put_job(tx, &q, f_job("p3"), PutOptions::new())
    })
    .unwrap();
    wait_until("the failed poll is logged", || {
        !logged("poll of dispatcher p3 failed").is_empty()
    });
    let records = logged("poll of dispatcher p3 failed");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].level, log::Level::Error);
    assert!(
        records[0].message.contains("(1 in a row)") && records[0].message.contains("injected"),
        "the poll records the disconnect: {:?}",
        records[0]
    );
    assert_eq!(fx.storage.faults.loads_failed.load(Ordering::SeqCst), 1);
    assert_eq!(fx.status(job), Status::Pending, "nothing was claimed");
    // The next poll claims it.
    fx.wait_calls("p3", 1);
    assert!(
        put_at.elapsed() >= Duration::from_secs(5),
        "after the backoff"
    );
    fx.gates.release("p3");
    wait_until("the job completes", || fx.status(job) == Status::Completed);
    stop.store(true, Ordering::SeqCst);
    running.join().unwrap().unwrap();
    let j = fx.job(job);
    assert_eq!(value(j.result().unwrap()), 42);
    assert_eq!(fx.calls.count("p3"), 1);
    assert_eq!(
        logged("poll of dispatcher p3 failed").len(),
        1,
        "one failed poll"
    );
}

// ---------------------------------------------------------------------------
// Process death while a job runs
// ---------------------------------------------------------------------------

/// D5 — fault: "D1/D2/D3 with the `never` policy and a failure callback."
/// Expected: "`f` is not re-run: result is an "aborted" failure, status COMPLETED,
/// the failure callback ran."
///
/// All three deaths, in process: D1 a graceful stop whose grace period is shorter
/// than `f`; D2 a worker dropped without stopping and restarted with the same id
/// (holding the id's lock); D3 a worker dropped while a sibling lives on, which
/// cleans it up after the death interval.
#[test]
fn d5_never_policy_aborts_an_interrupted_job_and_runs_its_failure_callback() {
    let fx = fixture();
    let put = |label: &str| {
        transact(&fx.db, |tx| {
            let q = Queue::get(tx, "")?.unwrap();
            let j = Queue::put_job(
                tx,
                &q,
                f_job(label),
                PutOptions::new().retry_policy("never"),
            )?;
            add_callbacks(tx, &j, None, Some(record_job(&format!("failed-{label}"))))?;
            Ok(j)
        })
        .unwrap()
    };
    let check = |label: &str, job: PRef<Job>| {
        let j = fx.job(job);
        assert_eq!(j.status(), Status::Completed, "{label}");
        let failure = failure_of(&j);
        assert_eq!(failure.kind, FailureKind::Aborted, "{label}: {failure}");
        assert_eq!(fx.calls.count(label), 1, "{label}: f is not re-run");
        assert_eq!(j.attempts(), 1, "{label}");
        assert_eq!(fx.interruptions(job), 1, "{label}");
        let received = fx.received(&format!("failed-{label}"));
        assert_eq!(
            received,
            [Some(Outcome::Failure(failure))],
            "{label}: the failure callback ran once with the aborted failure"
        );
    };

    // D1: graceful stop, grace shorter than f.
    let d1 = put("d5-stop");
    let mut worker = fx.worker("d5-a", false);
    assert_eq!(worker.poll_once().unwrap().started, [d1]);
    fx.wait_calls("d5-stop", 1);
    worker.shutdown().unwrap();
    fx.kill(worker); // the stopped process exits
    let mut restarted = fx.worker("d5-a", true);
    restarted.poll_once().unwrap();
    check("d5-stop", d1);

    // D2: killed, restarted with the same id.
    let d2 = put("d5-kill");
    assert_eq!(restarted.poll_once().unwrap().started, [d2]);
    fx.wait_calls("d5-kill", 1);
    fx.kill(restarted);
    let mut again = fx.worker("d5-a", true);
    again.poll_once().unwrap();
    again.wait_idle();
    check("d5-kill", d2);

    // D3: killed while a sibling lives on.
    let d3 = put("d5-sibling");
    assert_eq!(again.poll_once().unwrap().started, [d3]);
    fx.wait_calls("d5-sibling", 1);
    fx.kill(again);
    let clock = ManualClock::new(Timestamp::now());
    let mut sibling = fx.worker_at("d5-b", clock.clone());
    sibling.poll_once().unwrap();
    assert_eq!(fx.status(d3), Status::Active, "before the death interval");
    clock.advance(DEATH + Duration::from_millis(100));
    let report = sibling.poll_once().unwrap();
    assert_eq!(report.cleaned, ["d5-a"]);
    assert!(report.started.is_empty(), "{report:?}");
    sibling.wait_idle(); // the failure callback runs on a thread of its own
    check("d5-sibling", d3);
    for label in ["d5-stop", "d5-kill", "d5-sibling"] {
        fx.gates.release(label);
    }
}

/// D6 — fault: "`forever` policy, more than 10 interruptions."
/// Expected: "Always re-run, never aborted."
#[test]
fn d6_forever_policy_reruns_after_more_than_ten_interruptions() {
    let fx = fixture();
    let (job, _cb) = fx.put_f_with_callback("d6", PutOptions::new().retry_policy("forever"));
    let mut worker = fx.worker("d6", false);
    assert_eq!(worker.poll_once().unwrap().started, [job]);
    for n in 1..=12u32 {
        fx.wait_calls("d6", n as usize);
        fx.kill(worker); // killed while f runs
        worker = fx.worker("d6", true);
        // The restart recovers it (retry: at the front) and claims it again.
        assert_eq!(
            worker.poll_once().unwrap().started,
            [job],
            "interruption {n}"
        );
        fx.wait_calls("d6", n as usize + 1);
        assert_eq!(fx.interruptions(job), n);
        let j = fx.job(job);
        assert!(j.result().is_none(), "interruption {n}: never aborted");
        assert_eq!(j.attempts(), n + 1);
    }
    fx.gates.release("d6");
    let j = fx.complete(&mut worker, job);
    assert_eq!(value(j.result().unwrap()), 42);
    assert_eq!(fx.calls.count("d6"), 13, "12 interrupted runs and the last");
    assert_eq!(fx.interruptions(job), 12);
    assert_eq!(fx.received("cb-d6"), [Some(j.result().unwrap().clone())]);
}

/// D7 — fault: "Default policy, 10 interruptions of the same job."
/// Expected: "Interruptions 1–9 put it back; the 10th completes it with an
/// "aborted" failure."
#[test]
fn d7_default_policy_puts_back_nine_interruptions_and_aborts_the_tenth() {
    let fx = fixture();
    let (job, _cb) = fx.put_f_with_callback("d7", PutOptions::new());
    for n in 1..=9u32 {
        let mut worker = fx.worker("d7", false);
        assert_eq!(worker.poll_once().unwrap().started, [job], "run {n}");
        fx.wait_calls("d7", n as usize);
        fx.kill(worker); // killed while f runs
        // Its restart (holding the id's lock) recovers it.
        let cleanup = transact(&fx.db, |tx| {
            let q = Queue::get(tx, "")?.unwrap();
            Dispatchers::cleanup_previous_incarnation(tx, &q, "d7", &fx.policies)
        })
        .unwrap();
        assert_eq!(cleanup.recovered, [job]);
        let j = fx.job(job);
        assert_eq!(fx.interruptions(job), n);
        assert_eq!(j.status(), Status::Pending, "interruption {n} puts it back");
        let Location::Queue { key, .. } = j.location() else {
            panic!("{:?}", j.location());
        };
        assert_eq!(key.lane, LANE_PUT_BACK, "at the front");
        assert!(j.result().is_none());
    }
    let mut worker = fx.worker("d7", false);
    assert_eq!(worker.poll_once().unwrap().started, [job], "run 10");
    fx.wait_calls("d7", 10);
    fx.kill(worker);
    // The restarted worker recovers it: the 10th interruption completes it.
    let mut restarted = fx.worker("d7", true);
    let report = restarted.poll_once().unwrap();
    assert!(report.started.is_empty(), "{report:?}");
    restarted.wait_idle();
    let j = fx.job(job);
    assert_eq!(fx.interruptions(job), 10);
    assert_eq!(j.status(), Status::Completed, "the 10th completes it");
    let failure = failure_of(&j);
    assert_eq!(failure.kind, FailureKind::Aborted, "{failure}");
    assert_eq!(fx.calls.count("d7"), 10, "not run an 11th time");
    // Its callback ran once, with the aborted failure.
    assert_eq!(fx.received("cb-d7"), [j.result().cloned()]);
}

/// D8 — fault: "Custom policy answering "in 1 hour" to an interruption."
/// Expected: "Job PENDING with `begin_after` = now + 1 h, not at the front."
#[test]
fn d8_a_custom_policy_schedules_an_interrupted_job_an_hour_later() {
    let mut fx = fixture();
    fx.policies.register(
        "in-an-hour",
        Arc::new(RetryAfter(Duration::from_secs(3600))),
    );
    let job = fx.put(f_job("d8"), PutOptions::new().retry_policy("in-an-hour"));
    let mut worker = fx.worker("d8", false);
    assert_eq!(worker.poll_once().unwrap().started, [job]);
    fx.wait_calls("d8", 1);
    fx.kill(worker);
    let other = fx.put(f_job("d8-other"), PutOptions::new());
    let before = Timestamp::now();
    let mut restarted = fx.worker("d8", true);
    let report = restarted.poll_once().unwrap();
    let after = Timestamp::now();
    assert_eq!(report.started, [other], "the job is not at the front");
    let j = fx.job(job);
    assert_eq!(j.status(), Status::Pending);
    let hour = Duration::from_secs(3600);
    let Location::Queue { key, .. } = j.location() else {
        panic!("{:?}", j.location());
    };
    assert_eq!(
        key.lane, LANE_SCHEDULED,
        "scheduled, not put back at the front"
    );
    assert!(before.plus(hour) <= key.at && key.at <= after.plus(hour));
    let begin_after = j.begin_after().unwrap();
    assert!(
        before.plus(hour) <= begin_after && begin_after <= after.plus(hour),
        "begin_after {begin_after} is now + 1 h"
    );
    assert_eq!(fx.interruptions(job), 1);
    assert_eq!(fx.calls.count("d8"), 1);
    fx.gates.release("d8");
    fx.gates.release("d8-other");
    restarted.wait_idle();
}

/// D9 — fault: "Quota of size 1 held by `j` (j2 waiting); `j` interrupted, policy
/// "retry now"." Expected: "j2 stays unclaimable; j returns to the front, keeps the
/// quota, then j2 runs. With "retry later", the quota frees and j2 runs first."
#[test]
fn d9_an_interrupted_quota_holder_keeps_its_quota_on_retry_now_and_frees_it_on_retry_later() {
    let mut fx = fixture();
    fx.policies
        .register("later", Arc::new(RetryAfter(Duration::from_millis(300))));
    let quota = transact(&fx.db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Queue::set_quota(tx, &q, "one", 1)
    })
    .unwrap();
    let held = |fx: &Fx| -> Vec<u64> {
        transact(&fx.db, |tx| {
            Ok(tx.get(&quota)?.held().iter().map(|j| j.oid().0).collect())
        })
        .unwrap()
    };

    for (half, policy) in [("now", "default"), ("later", "later")] {
        let (j_label, j2_label) = (format!("d9-{half}-j"), format!("d9-{half}-j2"));
        let id = format!("d9-{half}");
        let j = fx.put(
            f_job(&j_label),
            PutOptions::new().quota("one").retry_policy(policy),
        );
        let j2 = fx.put(f_job(&j2_label), PutOptions::new().quota("one"));
        let mut worker = fx.worker(&id, false);
        assert_eq!(worker.poll_once().unwrap().started, [j], "{half}: j2 waits");
        fx.wait_calls(&j_label, 1);
        assert_eq!(held(&fx), [j.oid().0]);
        fx.kill(worker); // killed while j runs
        let cleanup = transact(&fx.db, |tx| {
            let q = Queue::get(tx, "")?.unwrap();
            Dispatchers::cleanup_previous_incarnation(tx, &q, &id, &fx.policies)
        })
        .unwrap();
        assert_eq!(cleanup.recovered, [j], "{half}");
        assert_eq!(fx.status(j), Status::Pending, "{half}");
        assert_eq!(fx.status(j2), Status::Pending, "{half}");
        let mut restarted = fx.worker(&id, false);
        if half == "now" {
            // j is back at the front and keeps the quota: j2 cannot be claimed.
            let Location::Queue { key, .. } = fx.job(j).location().clone() else {
                panic!("{:?}", fx.job(j).location());
            };
            assert_eq!(key.lane, LANE_PUT_BACK);
            assert_eq!(held(&fx), [j.oid().0], "j keeps the quota");
            assert_eq!(fx.would_claim(), Some(j), "j is claimed first");
            assert_eq!(restarted.poll_once().unwrap().started, [j]);
            fx.wait_calls(&j_label, 2);
            restarted.poll_once().unwrap();
            assert_eq!(fx.status(j2), Status::Pending, "j2 still waits");
            fx.gates.release(&j_label);
            fx.complete(&mut restarted, j);
            fx.gates.release(&j2_label);
            fx.complete(&mut restarted, j2);
            let order: Vec<_> = fx
                .calls
                .order()
                .into_iter()
                .filter(|l| l.starts_with("d9-now"))
                .collect();
            assert_eq!(order, [j_label.clone(), j_label.clone(), j2_label.clone()]);
        } else {
            // Retried later: the quota is free and j2 runs first.
            assert!(held(&fx).is_empty(), "the quota frees");
            assert_eq!(fx.would_claim(), Some(j2));
            assert_eq!(restarted.poll_once().unwrap().started, [j2]);
            fx.gates.release(&j2_label);
            fx.complete(&mut restarted, j2);
            fx.gates.release(&j_label);
            fx.complete(&mut restarted, j);
            let order: Vec<_> = fx
                .calls
                .order()
                .into_iter()
                .filter(|l| l.starts_with("d9-later"))
                .collect();
            assert_eq!(order, [j_label.clone(), j2_label.clone(), j_label.clone()]);
        }
        for job in [j, j2] {
            let done = fx.job(job);
            assert_eq!(done.status(), Status::Completed);
            assert_eq!(value(done.result().unwrap()), 42, "{half}");
        }
        assert!(held(&fx).is_empty(), "{half}: the quota is free at the end");
        restarted.shutdown().unwrap();
    }
}

/// Polls until `label` has been called `n` times and is the only run left (the
/// others finished, callbacks included): a kill then interrupts only it.
fn drive_until_only(fx: &Fx, worker: &mut Worker, label: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        worker.poll_once().unwrap();
        if fx.calls.count(label) == n && worker.running().len() == 1 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for run {n} of {label}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// Drives a composite through two deaths: one while `victim_part` runs (its gate
/// closed), one while the postprocess runs.
fn interrupt_composite(fx: &Fx, id: &str, post: PRef<Job>, victim_part: &str, post_label: &str) {
    let mut worker = fx.worker(id, false);
    drive_until_only(fx, &mut worker, victim_part, 1);
    fx.kill(worker); // killed during an inner job
    let mut worker = fx.worker(id, true);
    drive_until_only(fx, &mut worker, victim_part, 2);
    fx.gates.release(victim_part);
    drive_until_only(fx, &mut worker, post_label, 1);
    fx.kill(worker); // killed during the postprocess
    let mut worker = fx.worker(id, true);
    drive_until_only(fx, &mut worker, post_label, 2);
    fx.gates.release(post_label);
    fx.complete(&mut worker, post);
}

/// D12 — fault: "`serial(a, b, post)` and `parallel(a, b, post)` interrupted during
/// an inner job and during `post`." Expected: "On restart each interrupted piece
/// re-runs once, finished parts are not re-run, `post` runs once, the outer result
/// is right."
#[test]
fn d12_serial_and_parallel_survive_deaths_during_a_part_and_during_post() {
    let fx = fixture();
    let step = |label: &str, v: i64| Job::with_arguments("step", &(label.to_string(), v)).unwrap();
    let post_job = |label: &str| Job::with_arguments("post", &label.to_string()).unwrap();
    fx.gates.release("s-a");
    fx.gates.release("p-a");

    let post = transact(&fx.db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        serial(
            tx,
            &q,
            vec![step("s-a", 1), step("s-b", 2)],
            post_job("s-post"),
        )
    })
    .unwrap();
    interrupt_composite(&fx, "d12-serial", post, "s-b", "s-post");
    let p = fx.job(post);
    assert_eq!(value(p.result().unwrap()), 3, "the outer result");
    assert_eq!(
        (
            fx.calls.count("s-a"),
            fx.calls.count("s-b"),
            fx.calls.count("s-post")
        ),
        (1, 2, 2),
        "each interrupted piece re-ran once; the finished part did not"
    );

    let post = transact(&fx.db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        parallel(
            tx,
            &q,
            vec![step("p-a", 10), step("p-b", 20)],
            post_job("p-post"),
        )
    })
    .unwrap();
    interrupt_composite(&fx, "d12-parallel", post, "p-b", "p-post");
    let p = fx.job(post);
    assert_eq!(value(p.result().unwrap()), 30, "the outer result");
    assert_eq!(
        (
            fx.calls.count("p-a"),
            fx.calls.count("p-b"),
            fx.calls.count("p-post")
        ),
        (1, 2, 2)
    );
    // Committed effects: each part once, each postprocess once.
    let mut lines = fx.lines();
    lines[3..5].sort(); // the parallel parts in either order
    assert_eq!(
        lines,
        ["s-a", "s-b", "s-post 3", "p-a", "p-b", "p-post 30"],
        "finished parts not re-run, post ran once"
    );
}

/// D11 (its cleanup logic, in process) — fault: "A dead dispatcher's agent holds
/// jobs in ASSIGNED, ACTIVE, CALLBACKS and COMPLETED." Expected: "Cleanup: ASSIGNED
/// back to the queue; ACTIVE → interrupt recovery; CALLBACKS → resume; COMPLETED →
/// completed collection; the agent is empty."
///
/// The dead worker's agent (size 4 here, to hold all four) claimed: `active` (f,
/// blocked), `callbacks` (finished; its first callback ran, and the process died
/// while starting the second), `completed` (finished, not yet moved out by a later
/// claim) and `assigned` (claimed, never started). Its restart cleans it up.
#[test]
fn d11_in_process_cleanup_of_a_dead_agent_holding_every_status() {
    let fx = fixture();
    let id = "d11";
    let (active, callbacks, completed) = transact(&fx.db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        let active = Queue::put_job(tx, &q, f_job("d11-active"), PutOptions::new())?;
        let callbacks = Queue::put_job(tx, &q, f_job("d11-callbacks"), PutOptions::new())?;
        let completed = Queue::put_job(tx, &q, f_job("d11-completed"), PutOptions::new())?;
        Ok((active, callbacks, completed))
    })
    .unwrap();
    let (cb1, cb2) = transact(&fx.db, |tx| {
        Ok((
            add_callback(tx, &callbacks, record_job("d11-cb1"))?,
            add_callback(tx, &callbacks, record_job("d11-cb2"))?,
        ))
    })
    .unwrap();
    let mut worker = Worker::new(
        fx.db.clone(),
        id,
        fx.runner(),
        WorkerOptions {
            agent_size: 4,
            ..options()
        },
    );
    let mut started = worker.poll_once().unwrap().started;
    started.sort();
    let mut want = vec![active, callbacks, completed];
    want.sort();
    assert_eq!(started, want);
    // While `completed` still runs, the agent claims one more, never started.
    let assigned = fx.put(f_job("d11-assigned"), PutOptions::new());
    let claimed = transact(&fx.db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Dispatchers::claim_for_agent(
            tx,
            &q,
            id,
            zodiac_async::limits::AGENT_NAME,
            Timestamp::now(),
        )
    })
    .unwrap();
    assert_eq!(claimed, Some(assigned));
    fx.wait_calls("d11-completed", 1);
    fx.gates.release("d11-completed");
    wait_until("`completed` completes", || {
        fx.status(completed) == Status::Completed
    });
    // The process dies while committing the start of the second callback.
    {
        let (gates, calls) = (Arc::clone(&fx.gates), Arc::clone(&fx.calls));
        fx.storage
            .during_commit_of(cb2.oid(), move || gates.wait("d11-dies", &calls));
    }
    fx.gates.release("d11-callbacks");
    fx.wait_calls("d11-dies", 1);
    fx.wait_calls("d11-active", 1);
    fx.kill(worker);
    assert_eq!(fx.status(callbacks), Status::Callbacks);
    assert_eq!(fx.status(cb1), Status::Completed);
    assert_eq!(fx.status(cb2), Status::New);
    assert_eq!(fx.status(active), Status::Active);
    assert_eq!(fx.status(assigned), Status::Assigned);

    // The restart cleans up its previous incarnation.
    let cleanup = transact(&fx.db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Dispatchers::cleanup_previous_incarnation(tx, &q, id, &fx.policies)
    })
    .unwrap();
    assert_eq!(cleanup.put_back, [assigned]);
    assert_eq!(cleanup.recovered, [active]);
    assert_eq!(cleanup.in_callbacks, [callbacks]);
    for job in cleanup.in_callbacks {
        fx.runner().finish_callbacks(&job).unwrap();
    }
    // As a worker does once the resumed callbacks are done: the agent lets go.
    transact(&fx.db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Dispatchers::release_finished(tx, &q, id)
    })
    .unwrap();
    // ASSIGNED: back in the queue.
    let a = fx.job(assigned);
    assert_eq!(a.status(), Status::Pending);
    assert!(matches!(a.location(), Location::Queue { .. }));
    // ACTIVE: recovered through its policy (default: retried, at the front).
    let r = fx.job(active);
    assert_eq!(r.status(), Status::Pending);
    assert_eq!(fx.interruptions(active), 1);
    // CALLBACKS: resumed; the callback that ran is not run again.
    assert_eq!(fx.status(callbacks), Status::Completed);
    assert_eq!(fx.status(cb2), Status::Completed);
    assert_eq!(fx.calls.count("d11-cb1"), 1);
    assert_eq!(fx.calls.count("d11-cb2"), 1);
    assert_eq!(
        fx.received("d11-cb2"),
        [fx.job(callbacks).result().cloned()]
    );
    // COMPLETED: in the agent's completed collection; the agent is empty.
    let (held, done) = transact(&fx.db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        let record = Queue::dispatchers(tx, &q)?[id];
        let agent = tx.get(&record)?.agents()[zodiac_async::limits::AGENT_NAME];
        let held = tx.get(&agent)?.held().clone();
        let done = Dispatchers::completed(tx, &q, id, zodiac_async::limits::AGENT_NAME, 10)?;
        Ok((held, done))
    })
    .unwrap();
    assert!(held.is_empty(), "the agent is empty: {held:?}");
    let done: Vec<_> = done.into_iter().map(|(_, j)| j).collect();
    assert!(done.contains(&completed), "{done:?}");
}

// ---------------------------------------------------------------------------
// Job and commit faults
// ---------------------------------------------------------------------------

/// E1 — fault: "Handler returns an error after writing to the database."
/// Expected: "Writes rolled back; result is a failure of kind "user error" with
/// the message; COMPLETED; logged at ERROR."
#[test]
fn e1_a_handler_error_rolls_back_its_writes_and_is_logged_at_error() {
    let mut fx = fixture();
    let lines = fx.lines;
    fx.handlers
        .register("e1.write_then_fail", move |ctx, _: ()| -> Result<(), _> {
            ctx.tx()
                .modify(&lines, |l| l.lines.push("e1 wrote".into()))?;
            Err("e1: the mail server said no".into())
        });
    let job = fx.put(
        Job::with_arguments("e1.write_then_fail", &()).unwrap(),
        PutOptions::new(),
    );
    let mut worker = fx.worker("e1", false);
    let j = fx.complete(&mut worker, job);
    assert!(fx.lines().is_empty(), "the handler's write was rolled back");
    let failure = failure_of(&j);
    assert_eq!(failure.kind, FailureKind::UserError);
    assert_eq!(failure.message, "e1: the mail server said no");
    assert_eq!(j.status(), Status::Completed);
    assert_eq!(j.attempts(), 1);
    let records = logged("(e1.write_then_fail) failed");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].level, log::Level::Error);
    assert_eq!(records[0].target, "zodiac_async::events");
    assert!(!records[0].message.starts_with("critical"));
    assert!(
        records[0]
            .message
            .contains("user error: e1: the mail server said no")
    );
}

/// E2 — fault: "Callback fails."
/// Expected: "Parent's result intact, parent COMPLETED; callback result is a
/// failure, logged at the callback's (critical) level."
#[test]
fn e2_a_failing_callback_leaves_the_parent_intact_and_is_logged_critical() {
    let mut fx = fixture();
    fx.handlers
        .register("e2.boom", |_ctx, _: ()| -> Result<(), _> {
            Err("e2: the callback broke".into())
        });
    let (job, cb) = transact(&fx.db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        let j = Queue::put_job(tx, &q, f_job("e2"), PutOptions::new())?;
        let cb = add_callback(tx, &j, Job::with_arguments("e2.boom", &())?)?;
        Ok((j, cb))
    })
    .unwrap();
    fx.gates.release("e2");
    let mut worker = fx.worker("e2", false);
    let j = fx.complete(&mut worker, job);
    assert_eq!(
        value(j.result().unwrap()),
        42,
        "the parent's result is intact"
    );
    let c = fx.job(cb);
    assert_eq!(c.status(), Status::Completed);
    assert_eq!(c.failure_level(), FailureLevel::Critical);
    let failure = failure_of(&c);
    assert_eq!(failure.kind, FailureKind::UserError);
    assert_eq!(failure.message, "e2: the callback broke");
    let records = logged("(e2.boom) failed");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].level, log::Level::Error);
    assert!(
        records[0].message.starts_with("critical: "),
        "{:?}",
        records[0]
    );
}

/// A handler that writes an object of its own and, for its first `conflicts`
/// calls, has another transaction change it before it commits: its commit
/// conflicts. Returns the object.
fn overtaken(fx: &mut Fx, name: &'static str, conflicts: usize) -> PRef<Lines> {
    let lines = transact(&fx.db, |tx| Ok(tx.add(Lines::default())?)).unwrap();
    let (db, calls) = (fx.db.clone(), Arc::clone(&fx.calls));
    fx.handlers.register(name, move |ctx, _: ()| {
        calls.push(name);
        ctx.tx()
            .modify(&lines, |l| l.lines.push(format!("{name} ran")))?;
        if calls.count(name) <= conflicts {
            let db = db.clone();
            thread::spawn(move || {
                transact(&db, |tx| {
                    Ok(tx.modify(&lines, |l| l.lines.push(format!("{name} overtaken")))?)
                })
            })
            .join()
            .unwrap()?;
        }
        Ok(42i64)
    });
    lines
}

/// E3 — fault: "Handler hits a conflict on attempts 1–2, succeeds on 3."
/// Expected: "Result 42 after 3 calls. Conflicts on every attempt: 5 calls, then a
/// conflict failure."
#[test]
fn e3_conflicts_are_retried_five_attempts_in_all() {
    let mut fx = fixture();
    let twice_lines = overtaken(&mut fx, "e3.twice", 2);
    let always_lines = overtaken(&mut fx, "e3.always", usize::MAX);
    let twice = fx.put(
        Job::with_arguments("e3.twice", &()).unwrap(),
        PutOptions::new(),
    );
    let always = fx.put(
        Job::with_arguments("e3.always", &()).unwrap(),
        PutOptions::new(),
    );
    let mut worker = fx.worker("e3", false);
    let j = fx.complete(&mut worker, twice);
    let a = fx.complete(&mut worker, always);
    assert_eq!(value(j.result().unwrap()), 42);
    assert_eq!(fx.calls.count("e3.twice"), 3);
    assert_eq!(j.errors().len(), 2);
    assert_eq!(fx.calls.count("e3.always"), 5);
    let failure = failure_of(&a);
    assert_eq!(failure.kind, FailureKind::Conflict, "{failure}");
    assert_eq!(a.status(), Status::Completed);
    let read = |l: PRef<Lines>| transact(&fx.db, |tx| Ok(tx.get(&l)?.lines.clone())).unwrap();
    assert_eq!(
        read(twice_lines),
        ["e3.twice overtaken", "e3.twice overtaken", "e3.twice ran"],
        "only the successful attempt's write landed"
    );
    assert_eq!(read(always_lines).len(), 5, "none of its writes landed");
    assert!(
        read(always_lines)
            .iter()
            .all(|l| l == "e3.always overtaken")
    );
}

/// E4 — fault: "Handler sees "disconnected" 49 times, then succeeds."
/// Expected: "50 attempts with backoff sleeps (test with a compressed clock or
/// short backoff), result 42."
///
/// The default policy with its disconnect wait compressed to 1 ms steps (capped at
/// 4 ms): a queue job goes back to its queue for each retry (49 put-backs, 50
/// runs); a job run outside a queue sleeps between attempts (one run, 50 calls).
#[test]
fn e4_fifty_attempts_through_forty_nine_disconnects() {
    let mut fx = fixture();
    fx.policies.register(
        "default",
        Arc::new(DefaultPolicy {
            disconnect_wait_step: Duration::from_millis(1),
            disconnect_wait_max: Duration::from_millis(4),
            ..DefaultPolicy::default()
        }),
    );
    // An object the handler reads; loads of it fail while the fault lasts. It is
    // made through another database, so no connection of `fx.db` has it cached.
    let other = Database::open(Arc::clone(&fx.storage) as Arc<dyn Storage>).unwrap();
    let config = transact(&other, |tx| {
        Ok(tx.add(Lines {
            lines: vec!["42".into()],
        })?)
    })
    .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    {
        let calls = Arc::clone(&calls);
        fx.handlers.register("e4.read", move |ctx, _: ()| {
            calls.fetch_add(1, Ordering::SeqCst);
            let c = ctx.tx().get(&config)?;
            Ok(c.lines[0].parse::<i64>()?)
        });
    }
    fx.storage.fail_loads(Some(config.oid()), 49);
    let job = fx.put(
        Job::with_arguments("e4.read", &()).unwrap(),
        PutOptions::new(),
    );
    let mut worker = fx.worker("e4", false);
    let started = Instant::now();
    let j = fx.complete(&mut worker, job);
    assert_eq!(value(j.result().unwrap()), 42);
    assert_eq!(calls.load(Ordering::SeqCst), 50);
    assert_eq!(j.attempts(), 50, "49 put-backs, 50 runs");
    assert_eq!(j.errors().len(), 49);
    assert!(
        j.errors()
            .iter()
            .all(|e| e.summary.starts_with("disconnected: "))
    );
    assert_eq!(j.retry_data().life_count(DISCONNECTS), 49);
    // Each put-back waited 1, 2, 3, 4, 4, … ms: the backoff grows across runs.
    let slept: u64 = (1..=49u64).map(|n| n.min(4)).sum();
    assert!(
        started.elapsed() >= Duration::from_millis(slept),
        "each retry waited its backoff"
    );

    // Outside a queue: one run sleeping 1, 2, 3, 4, 4, … ms between 50 attempts.
    let other_config = transact(&other, |tx| {
        Ok(tx.add(Lines {
            lines: vec!["42".into()],
        })?)
    })
    .unwrap();
    let calls2 = Arc::new(AtomicU32::new(0));
    {
        let calls2 = Arc::clone(&calls2);
        fx.handlers.register("e4.read2", move |ctx, _: ()| {
            calls2.fetch_add(1, Ordering::SeqCst);
            let c = ctx.tx().get(&other_config)?;
            Ok(c.lines[0].parse::<i64>()?)
        });
    }
    fx.storage.fail_loads(Some(other_config.oid()), 49);
    let direct = transact(&fx.db, |tx| {
        Ok(tx.add(Job::with_arguments("e4.read2", &())?)?)
    })
    .unwrap();
    let started = Instant::now();
    let outcome = fx.runner().run(&direct, None).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(slept));
    let RunOutcome::Finished(outcome) = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(value(&outcome), 42);
    assert_eq!(calls2.load(Ordering::SeqCst), 50);
    let d = fx.job(direct);
    assert_eq!((d.attempts(), d.errors().len()), (1, 49));
}

/// E5 — fault: "Committing the result fails with a non-transient error."
/// Expected: "Handler called once; result is the commit failure; log says the job
/// had succeeded with its result before the commit failed."
#[test]
fn e5_a_non_transient_commit_failure_is_stored_and_the_lost_success_logged() {
    let mut fx = fixture();
    let (storage, calls) = (Arc::clone(&fx.storage), Arc::clone(&fx.calls));
    fx.handlers.register("e5.succeeds", move |ctx, _: ()| {
        calls.push("e5");
        // The commit of this job's result fails once, not transiently.
        storage.fail_commits(Some(ctx.job), Fault::ReadOnly, 1);
        Ok(42i64)
    });
    let job = fx.put(
        Job::with_arguments("e5.succeeds", &()).unwrap(),
        PutOptions::new(),
    );
    let mut worker = fx.worker("e5", false);
    let j = fx.complete(&mut worker, job);
    assert_eq!(fx.calls.count("e5"), 1, "the handler is called once");
    let failure = failure_of(&j);
    assert_eq!(failure.kind, FailureKind::Storage, "{failure}");
    assert_eq!(
        failure.context.get("phase").map(String::as_str),
        Some("commit")
    );
    assert_eq!(j.status(), Status::Completed);
    assert_eq!(fx.storage.faults.commits_failed.load(Ordering::SeqCst), 1);
    let records = logged("(e5.succeeds) had succeeded");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].level, log::Level::Error);
    assert!(
        records[0].message.contains("42") || records[0].message.contains("value"),
        "the log names the result: {:?}",
        records[0]
    );
}

/// E6 — fault: "Committing the result conflicts 6 times."
/// Expected: "5 runs of the handler, then a conflict failure, stored (retried until
/// stored)."
#[test]
fn e6_six_commit_conflicts_give_five_runs_and_a_stored_conflict_failure() {
    let mut fx = fixture();
    let (storage, calls) = (Arc::clone(&fx.storage), Arc::clone(&fx.calls));
    fx.handlers.register("e6.succeeds", move |ctx, _: ()| {
        calls.push("e6");
        if calls.count("e6") == 1 {
            // Every commit storing this job conflicts, six times.
            storage.fail_commits(Some(ctx.job), Fault::Conflict, 6);
        }
        Ok(42i64)
    });
    let job = fx.put(
        Job::with_arguments("e6.succeeds", &()).unwrap(),
        PutOptions::new(),
    );
    let mut worker = fx.worker("e6", false);
    let j = fx.complete(&mut worker, job);
    assert_eq!(fx.calls.count("e6"), 5, "5 runs of the handler");
    let failure = failure_of(&j);
    assert_eq!(failure.kind, FailureKind::Conflict, "{failure}");
    assert_eq!(j.status(), Status::Completed);
    assert_eq!(
        fx.storage.faults.commits_failed.load(Ordering::SeqCst),
        6,
        "the 6th conflict hit the store of the failure, which was retried"
    );
}

/// E7 — fault: "`never` policy; conflict or disconnect at commit."
/// Expected: "No retry; the failure is stored; callbacks run."
#[test]
fn e7_never_policy_stores_a_commit_failure_without_retry_and_runs_callbacks() {
    let mut fx = fixture();
    let (storage, calls) = (Arc::clone(&fx.storage), Arc::clone(&fx.calls));
    fx.handlers
        .register("e7.succeeds", move |ctx, fault: String| {
            calls.push(&fault);
            let fault = match fault.as_str() {
                "e7-conflict" => Fault::Conflict,
                _ => Fault::Disconnected,
            };
            storage.fail_commits(Some(ctx.job), fault, 1);
            Ok(42i64)
        });
    let mut jobs = Vec::new();
    for label in ["e7-conflict", "e7-disconnect"] {
        jobs.push(
            transact(&fx.db, |tx| {
                let q = Queue::get(tx, "")?.unwrap();
                let j = Queue::put_job(
                    tx,
                    &q,
                    Job::with_arguments("e7.succeeds", &label.to_string())?,
                    PutOptions::new().retry_policy("never"),
                )?;
                add_callback(tx, &j, record_job(&format!("cb-{label}")))?;
                Ok((label, j))
            })
            .unwrap(),
        );
    }
    let mut worker = fx.worker("e7", false);
    for (label, job) in jobs {
        let j = fx.complete(&mut worker, job);
        assert_eq!(fx.calls.count(label), 1, "{label}: no retry");
        let failure = failure_of(&j);
        let kind = if label == "e7-conflict" {
            FailureKind::Conflict
        } else {
            FailureKind::Disconnected
        };
        assert_eq!(failure.kind, kind, "{label}: {failure}");
        assert_eq!(j.status(), Status::Completed);
        assert_eq!(
            fx.received(&format!("cb-{label}")),
            [Some(Outcome::Failure(failure))],
            "{label}: the callback ran with the failure"
        );
    }
}

/// E8 — fault: "Job whose `begin_by` passed before any worker claimed it."
/// Expected: "Not run; COMPLETED with a timeout failure; callbacks ran."
#[test]
fn e8_a_job_past_its_deadline_is_not_run_and_its_callbacks_run() {
    let fx = fixture();
    let past = Timestamp::from_micros(Timestamp::now().as_micros() - 2_000_000);
    let (job, cb) = fx.put_f_with_callback(
        "e8",
        PutOptions::new()
            .begin_after(past)
            .begin_by(Duration::from_secs(1)),
    );
    let mut worker = fx.worker("e8", false);
    fx.drive(&mut worker, "the expired job completes", |fx| {
        fx.status(job) == Status::Completed
    });
    worker.wait_idle();
    let j = fx.job(job);
    assert_eq!(fx.calls.count("e8"), 0, "not run");
    let failure = failure_of(&j);
    assert_eq!(failure.kind, FailureKind::Timeout, "{failure}");
    assert_eq!(fx.status(cb), Status::Completed);
    assert_eq!(
        fx.received("cb-e8"),
        [Some(Outcome::Failure(failure))],
        "the callback ran once with the timeout"
    );
}

/// E9 — fault: "Callback added concurrently with the parent's completion (two
/// threads/processes)." Expected: "No callback is lost; each runs exactly once."
/// "Runs" is the committed run, as for every transactional job: a callback whose
/// result commit conflicts with an addition to its parent (both write the parent)
/// is called again, and only one call's effect commits. So each callback notes
/// its label in the database, and the test counts the committed notes.
#[test]
fn e9_callbacks_added_during_completion_each_run_exactly_once() {
    const CALLBACKS: usize = 30;
    let mut fx = fixture();
    let lines = fx.lines;
    fx.handlers
        .register("e9.note", move |ctx, label: String| -> Result<(), _> {
            let parent = format!("{:?}", ctx.parent_result);
            ctx.tx()
                .modify(&lines, |l| l.lines.push(format!("{label} {parent}")))?;
            Ok(())
        });
    let job = fx.put(f_job("e9"), PutOptions::new());
    let mut worker = fx.worker("e9", false);
    assert_eq!(worker.poll_once().unwrap().started, [job]);
    fx.wait_calls("e9", 1);
    let runner = fx.runner();
    let adder = {
        let gates = Arc::clone(&fx.gates);
        thread::spawn(move || {
            let mut added = Vec::new();
            for i in 0..CALLBACKS {
                if i == CALLBACKS / 3 {
                    gates.release("e9"); // the parent completes while we add
                }
                let note = Job::with_arguments("e9.note", &format!("e9-{i}")).unwrap();
                added.push(runner.add_callback(&job, note).unwrap());
                thread::sleep(Duration::from_micros(300));
            }
            added
        })
    };
    let added = adder.join().unwrap();
    worker.wait_idle();
    let j = fx.job(job);
    assert_eq!(j.status(), Status::Completed);
    assert_eq!(j.callbacks(), added.as_slice());
    let notes = fx.lines();
    let parent = format!("{:?}", j.result().cloned());
    for (i, cb) in added.iter().enumerate() {
        let line = format!("e9-{i} {parent}");
        assert_eq!(fx.status(*cb), Status::Completed, "e9-{i}");
        assert_eq!(
            notes.iter().filter(|l| **l == line).count(),
            1,
            "e9-{i} committed exactly once, with the parent's result: {notes:?}"
        );
    }
    assert_eq!(notes.len(), CALLBACKS, "{notes:?}");
}

/// E10 — fault: "Handler name not registered in the worker."
/// Expected: "Failure "unknown handler"; the worker keeps running other jobs."
#[test]
fn e10_an_unknown_handler_fails_its_job_and_the_worker_goes_on() {
    let fx = fixture();
    let unknown = fx.put(
        Job::with_arguments("e10.not-registered", &()).unwrap(),
        PutOptions::new(),
    );
    let job = fx.put(f_job("e10"), PutOptions::new());
    fx.gates.release("e10");
    let mut worker = fx.worker("e10", false);
    let u = fx.complete(&mut worker, unknown);
    let failure = failure_of(&u);
    assert_eq!(failure.kind, FailureKind::UnknownHandler);
    assert!(failure.message.contains("e10.not-registered"), "{failure}");
    assert_eq!((u.status(), u.attempts()), (Status::Completed, 1));
    let j = fx.complete(&mut worker, job);
    assert_eq!(value(j.result().unwrap()), 42);
    let after = fx.put(f_job("e10"), PutOptions::new());
    let a = fx.complete(&mut worker, after);
    assert_eq!(value(a.result().unwrap()), 42);
}

/// E11 — fault: "Handler panics."
/// Expected: "Caught: failure of kind "panic" with the message; the worker thread
/// survives."
#[test]
fn e11_a_panicking_handler_becomes_a_panic_failure_and_the_worker_survives() {
    let mut fx = fixture();
    fx.handlers
        .register("e11.explode", |_ctx, _: ()| -> Result<(), _> {
            panic!("e11: kaboom")
        });
    let boom = fx.put(
        Job::with_arguments("e11.explode", &()).unwrap(),
        PutOptions::new(),
    );
    let mut worker = fx.worker("e11", false);
    let b = fx.complete(&mut worker, boom);
    let failure = failure_of(&b);
    assert_eq!(failure.kind, FailureKind::Panic);
    assert_eq!(failure.message, "the handler panicked: e11: kaboom");
    assert_eq!((b.status(), b.attempts()), (Status::Completed, 1));
    // The thread that ran it returned normally: nothing logged as a crash.
    assert!(logged(&format!("the thread running job {}", boom.oid())).is_empty());
    let job = fx.put(f_job("e11"), PutOptions::new());
    fx.gates.release("e11");
    let j = fx.complete(&mut worker, job);
    assert_eq!(value(j.result().unwrap()), 42);
}
