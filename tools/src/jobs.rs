//! `zodiac jobs put|list|show|status`: producing and inspecting jobs (the
//! operator's actions, `cancel`, `retry`, `discard`, `pause`, `resume`, are in
//! `jobs_admin`).
//!
//! Invariant: only `put` writes; `list`, `show` and `status` open a data
//! file read-only (no writer lock, so they work beside a running worker) and never
//! modify anything.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use serde_json::{Value, json};
use zodiac_async::inspect::{self, JobFilter};
use zodiac_async::limits::DEATH_INTERVAL_DEFAULT;
use zodiac_async::{
    Ending, Failure, Job, Location, Outcome, PutOptions, Queue, Status, Timestamp, transact,
};
use zodiac_objects::{Database, PRef};
use zodiac_storage::{Oid, Storage};

use crate::builtins::{decode_json, encode_arguments};
use crate::store::{Connect, is_server, open_store, open_store_read_only};
use crate::wait_hint::NoWorkerHint;

/// Exit code of `jobs put --wait` when the job completed with a failure.
pub const EXIT_JOB_FAILED: u8 = 1;
/// Exit code of `jobs put --wait` when the timeout passed first.
pub const EXIT_WAIT_TIMEOUT: u8 = 3;
/// How often `--wait` looks at the job.
const WAIT_POLL: Duration = Duration::from_millis(20);

/// Parses a status name, in any case.
pub fn parse_status(text: &str) -> Result<Status, String> {
    Status::ALL
        .into_iter()
        .find(|s| s.name().eq_ignore_ascii_case(text))
        .ok_or_else(|| {
            let names: Vec<_> = Status::ALL
                .iter()
                .map(|s| s.name().to_lowercase())
                .collect();
            format!("{text:?} is not a status (one of {})", names.join(", "))
        })
}

/// What `jobs list --status` selects: a status, or how a completed job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListStatus {
    /// Jobs in this status.
    Status(Status),
    /// COMPLETED jobs that ended this way.
    Ending(Ending),
}

/// Parses a status name or a completed job's ending (`failed`, ...), in any case.
pub fn parse_list_status(text: &str) -> Result<ListStatus, String> {
    if let Some(e) = Ending::ALL
        .into_iter()
        .find(|e| e.name().eq_ignore_ascii_case(text))
    {
        return Ok(ListStatus::Ending(e));
    }
    parse_status(text).map(ListStatus::Status).map_err(|_| {
        let names: Vec<_> = Status::ALL
            .iter()
            .map(|s| s.name().to_lowercase())
            .chain(Ending::ALL.iter().map(|e| e.name().to_string()))
            .collect();
        format!("{text:?} is not a status (one of {})", names.join(", "))
    })
}

pub struct Put {
    pub store: String,
    pub handler: String,
    pub arguments: Value,
    pub queue: String,
    pub begin_after: Option<Timestamp>,
    pub begin_by: Option<Duration>,
    pub retry: Option<String>,
    pub wait: bool,
    pub timeout: Option<Duration>,
    pub extra: crate::jobs_put_options::PutExtraArgs,
    pub connect: Connect,
}

pub(crate) fn database(storage: Arc<dyn Storage>) -> Result<Database> {
    Database::open(storage).context("opening the database")
}

/// `jobs put`: prints the new job's id; with `--wait`, then its result.
pub fn put(args: Put) -> Result<ExitCode> {
    let storage = open_store(&args.store, &args.connect, true)?;
    let db = database(Arc::clone(&storage))?;
    let job = Job::new(&args.handler, encode_arguments(&args.arguments.to_string()))?;
    let mut options = PutOptions::new();
    if let Some(t) = args.begin_after {
        options = options.begin_after(t);
    }
    if let Some(d) = args.begin_by {
        options = options.begin_by(d);
    }
    if let Some(p) = &args.retry {
        options = options.retry_policy(p.clone());
    }
    options = args.extra.apply(options)?;
    let queued = transact(&db, |tx| {
        let q = Queue::get_or_create(tx, &args.queue)?;
        Queue::put_job_unique(tx, &q, job.clone(), options.clone())
    })
    .with_context(|| {
        format!(
            "putting the job in {}",
            zodiac_storage::url_without_password(&args.store)
        )
    })?;
    let id = queued.job.oid();
    println!("{}", id.0);
    if queued.existing {
        eprintln!(
            "(job {} already holds unique key {:?} in this queue: nothing was put)",
            id.0,
            args.extra.unique.as_deref().unwrap_or_default()
        );
    }
    if !args.wait {
        drop(db);
        storage.close()?;
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = args.timeout.map(|t| Instant::now() + t);
    let token_file = args.connect.token_file.as_deref();
    let mut hint = NoWorkerHint::new(&args.store, token_file, &args.queue, id);
    let outcome = if is_server(&args.store) {
        wait_for(&db, id, deadline, &mut hint)?
    } else {
        // Let a worker take the file's writer lock, and watch read-only.
        drop(db);
        storage.close()?;
        wait_embedded(&args.store, id, deadline, &mut hint)?
    };
    match outcome {
        None => {
            eprintln!(
                "error: job {} did not complete within {}; it stays queued (see `zodiac jobs \
                 show`)",
                id.0,
                humantime(args.timeout.unwrap_or_default())
            );
            Ok(ExitCode::from(EXIT_WAIT_TIMEOUT))
        }
        Some(Outcome::Value(bytes)) => {
            println!("{}", value_json(&bytes));
            Ok(ExitCode::SUCCESS)
        }
        Some(Outcome::Failure(f)) => {
            println!("failed: {}: {}", f.kind, f.message);
            Ok(ExitCode::from(EXIT_JOB_FAILED))
        }
    }
}

/// The result of job `id` once COMPLETED, or `None` at the deadline.
fn wait_for(
    db: &Database,
    id: Oid,
    deadline: Option<Instant>,
    hint: &mut NoWorkerHint,
) -> Result<Option<Outcome>> {
    loop {
        if let Some(outcome) = completed(db, id)? {
            return Ok(Some(outcome));
        }
        hint.check(db)?;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
        std::thread::sleep(WAIT_POLL);
    }
}

fn wait_embedded(
    store: &str,
    id: Oid,
    deadline: Option<Instant>,
    hint: &mut NoWorkerHint,
) -> Result<Option<Outcome>> {
    loop {
        let storage = open_store_read_only(store, &Connect::default())?;
        let db = database(Arc::clone(&storage))?;
        let outcome = completed(&db, id)?;
        if outcome.is_none() {
            hint.check(&db)?;
        }
        drop(db);
        storage.close()?;
        if outcome.is_some() {
            return Ok(outcome);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
        std::thread::sleep(WAIT_POLL * 5);
    }
}

fn completed(db: &Database, id: Oid) -> Result<Option<Outcome>> {
    let job = load(db, id)?;
    Ok(match job.status() {
        Status::Completed => job.result().cloned(),
        _ => None,
    })
}

/// Job `id`, or an error naming it.
pub(crate) fn load(db: &Database, id: Oid) -> Result<Arc<Job>> {
    let mut conn = db.connection();
    let mut tx = conn.begin();
    tx.get(&PRef::<Job>::from_oid(id)).map_err(|e| match e {
        zodiac_objects::Error::Storage(
            zodiac_storage::Error::NoSuchObject { .. }
            | zodiac_storage::Error::NotFoundAtSnapshot { .. }
            | zodiac_storage::Error::UnallocatedOid { .. },
        ) => anyhow!("there is no job {} (see `zodiac jobs list`)", id.0),
        zodiac_objects::Error::WrongType { .. } => {
            anyhow!("object {} is not a job (see `zodiac jobs list`)", id.0)
        }
        e => anyhow::Error::new(e).context(format!("reading job {}", id.0)),
    })
}

/// A value's bytes as JSON: the JSON a built-in handler stored, else the bytes.
fn value_json(bytes: &[u8]) -> Value {
    decode_json(bytes).unwrap_or_else(|| json!({ "bytes_hex": hex(bytes) }))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn humantime(d: Duration) -> String {
    if d.subsec_millis() != 0 || d.as_secs() == 0 {
        format!("{} ms", d.as_millis())
    } else {
        format!("{} s", d.as_secs())
    }
}

fn time_json(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| Value::String(t.to_string()))
}

fn failure_json(f: &Failure) -> Value {
    json!({
        "kind": f.kind.name(),
        "message": f.message,
        "chain": f.chain,
        "context": f.context,
        "truncated": f.truncated,
    })
}

fn outcome_json(o: Option<&Outcome>) -> (Value, Value) {
    match o {
        None => (Value::Null, Value::Null),
        Some(Outcome::Value(bytes)) => (value_json(bytes), Value::Null),
        Some(Outcome::Failure(f)) => (Value::Null, failure_json(f)),
    }
}

fn location_json(l: &Location) -> Value {
    match l {
        Location::None => Value::Null,
        Location::Queue { queue, .. } => json!({ "queue": queue }),
        Location::Agent {
            queue,
            dispatcher,
            agent,
        } => json!({ "queue": queue, "dispatcher": dispatcher, "agent": agent }),
        Location::CallbackOf { parent } => json!({ "callback_of": parent.oid().0 }),
    }
}

pub struct List {
    pub store: String,
    pub queue: Option<String>,
    pub status: Option<ListStatus>,
    pub handler: Option<String>,
    pub limit: usize,
    pub json: bool,
    pub connect: Connect,
}

/// `jobs list`: the jobs queues and agents hold, filtered.
pub fn list(args: List) -> Result<()> {
    let storage = open_store_read_only(&args.store, &args.connect)?;
    let db = database(storage)?;
    let (status, ending) = match args.status {
        None => (None, None),
        Some(ListStatus::Status(s)) => (Some(s), None),
        Some(ListStatus::Ending(e)) => (Some(Status::Completed), Some(e)),
    };
    let filter = JobFilter {
        status,
        ending,
        queue: args.queue.clone(),
        handler: args.handler.clone(),
        ..JobFilter::default()
    };
    let jobs = transact(&db, |tx| inspect::jobs(tx, &filter, args.limit))?;
    if args.json {
        let rows: Vec<Value> = jobs
            .iter()
            .map(|j| {
                json!({
                    "id": j.id,
                    "queue": j.queue,
                    "handler": j.handler,
                    "status": j.status.name(),
                    "holder": j.holder,
                    "created": j.created.to_string(),
                    "begin_after": time_json(j.begin_after),
                    "active_start": time_json(j.active_start),
                    "active_end": time_json(j.active_end),
                    "attempts": j.attempts,
                    "priority": j.priority,
                    "errors": j.errors,
                    "result": j.result,
                    "ending": j.ending.map(Ending::name),
                })
            })
            .collect();
        println!("{}", Value::Array(rows));
        return Ok(());
    }
    println!(
        "{:>8}  {:<10} {:<12} {:<12} {:>8}  {:<27} RESULT",
        "ID", "STATUS", "QUEUE", "HANDLER", "ATTEMPTS", "CREATED"
    );
    for j in &jobs {
        let queue = if j.queue.is_empty() {
            "(default)"
        } else {
            &j.queue
        };
        println!(
            "{:>8}  {:<10} {:<12} {:<12} {:>8}  {:<27} {}",
            j.id,
            j.status.name(),
            queue,
            j.handler,
            j.attempts,
            j.created.to_string(),
            j.result.as_deref().unwrap_or("-")
        );
    }
    if jobs.len() == args.limit {
        eprintln!("(showing the first {}; --limit N shows more)", args.limit);
    }
    Ok(())
}

/// `jobs show`: one job's whole story.
pub fn show(store: &str, id: Oid, as_json: bool, connect: &Connect) -> Result<()> {
    let storage = open_store_read_only(store, connect)?;
    let db = database(storage)?;
    let job = load(&db, id)?;
    let callbacks = transact(&db, |tx| {
        let mut out = Vec::new();
        for cb in job.callbacks() {
            let c = tx.get(cb)?;
            let (result, failure) = outcome_json(c.result());
            out.push(json!({
                "id": cb.oid().0,
                "handler": c.handler(),
                "status": c.status().name(),
                "result": result,
                "failure": failure,
            }));
        }
        Ok(out)
    })?;
    let (result, failure) = outcome_json(job.result());
    let errors: Vec<Value> = job
        .errors()
        .iter()
        .map(|e| {
            json!({
                "time": e.time.to_string(),
                "attempt": e.attempt,
                "error": e.summary,
                "backtrace": e.backtrace,
            })
        })
        .collect();
    let doc = json!({
        "id": id.0,
        "handler": job.handler(),
        "args": value_json(job.argument_bytes()),
        "status": job.status().name(),
        "location": location_json(job.location()),
        "result": result,
        "failure": failure,
        "created": job.created().to_string(),
        "begin_after": time_json(job.begin_after()),
        "begin_by_ms": job.begin_by().map(|d| d.as_millis() as u64),
        "deadline": time_json(job.deadline()),
        "active_start": time_json(job.active_start()),
        "active_end": time_json(job.active_end()),
        "priority": job.priority(),
        "unique_key": job.unique_key(),
        "attempts": job.attempts(),
        "max_attempts": job.attempt_limit().map(|l| l.max_attempts()),
        "backoff": job.attempt_limit().map(|l| crate::jobs_put_options::backoff_text(&l.backoff())),
        "interruptions": job.retry_data().life_count(zodiac_async::retry::INTERRUPTIONS),
        "errors": errors,
        "errors_dropped": job.errors_dropped(),
        "retry_policy": job.retry_policy().unwrap_or("default"),
        "callbacks": callbacks,
        "awaiting": job.awaiting().map(|j| j.oid().0),
        "annotations": job.annotations().keys().collect::<Vec<_>>(),
        "schedule": zodiac_async::scheduled_by(&job)
            .map(|(name, tick)| json!({"name": name, "tick": tick.to_string()})),
    });
    if as_json {
        println!("{doc}");
        return Ok(());
    }
    print_show(&doc);
    Ok(())
}

fn print_show(doc: &Value) {
    let text = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for key in [
        "id",
        "handler",
        "args",
        "status",
        "location",
        "result",
        "failure",
        "created",
        "begin_after",
        "begin_by_ms",
        "deadline",
        "active_start",
        "active_end",
        "priority",
        "attempts",
        "max_attempts",
        "backoff",
        "interruptions",
        "retry_policy",
        "awaiting",
    ] {
        println!("{:<14}{}", format!("{key}:"), text(&doc[key]));
    }
    if let Some(s) = doc["schedule"].as_object() {
        println!(
            "schedule:     {} (its tick at {})",
            text(&s["name"]),
            text(&s["tick"])
        );
    }
    let errors = doc["errors"].as_array().map_or(&[][..], Vec::as_slice);
    println!("errors:       {}", errors.len());
    for e in errors {
        println!(
            "  {} attempt {}: {}",
            text(&e["time"]),
            e["attempt"],
            text(&e["error"])
        );
        if let Some(trace) = e["backtrace"].as_str() {
            println!(
                "    with a backtrace of {} lines (see --json)",
                trace.lines().count()
            );
        }
    }
    let callbacks = doc["callbacks"].as_array().map_or(&[][..], Vec::as_slice);
    println!("callbacks:    {}", callbacks.len());
    for c in callbacks {
        let outcome = if c["failure"].is_null() {
            text(&c["result"])
        } else {
            format!(
                "failed: {}: {}",
                text(&c["failure"]["kind"]),
                text(&c["failure"]["message"])
            )
        };
        println!(
            "  {} {} {} {}",
            c["id"],
            text(&c["handler"]),
            text(&c["status"]),
            outcome
        );
    }
}

/// `jobs status`: per queue, the counts by status and by ending, whether it is
/// paused, and the dispatchers.
pub fn status(
    store: &str,
    death_interval: Duration,
    as_json: bool,
    connect: &Connect,
) -> Result<()> {
    let storage = open_store_read_only(store, connect)?;
    let db = database(storage)?;
    let now = Timestamp::now();
    let (queues, dispatchers) = transact(&db, |tx| {
        let mut queues = Vec::new();
        for name in Queue::names(tx)? {
            // Counters and the held jobs for the statuses; the endings read the
            // completed jobs kept (bounded by `ENDINGS_JOBS_MAX`).
            let counts = inspect::counts(tx, &name)?.unwrap_or_default();
            let (handlers, endings_all) = inspect::handler_stats(tx, &name)?.unwrap_or_default();
            let paused = inspect::paused(tx, &name)?.unwrap_or(false);
            let quotas = inspect::quotas(tx, &name)?.unwrap_or_default();
            queues.push(QueueStatus {
                quotas,
                name,
                counts,
                endings_all,
                handlers,
                paused,
            });
        }
        Ok((queues, inspect::dispatchers(tx, now, death_interval)?))
    })?;
    if as_json {
        println!("{}", status_json(&queues, &dispatchers));
    } else {
        print_status(&queues, &dispatchers);
    }
    Ok(())
}

/// The queues' counts and their dispatchers, as `jobs status --json` prints them.
fn status_json(queues: &[QueueStatus], dispatchers: &[inspect::DispatcherSummary]) -> Value {
    json!({
        "queues": queues.iter().map(|q| {
            let counts: serde_json::Map<String, Value> = Status::ALL
                .iter()
                .map(|s| (s.name().to_lowercase(), json!(q.counts.get(s).copied().unwrap_or(0))))
                .collect();
            json!({
                "name": q.name,
                "paused": q.paused,
                "counts": counts,
                "completed": endings_json(&q.endings()),
                "completed_all_counted": q.endings_all,
                "handlers": q.handlers.iter().map(|(h, st)| (h.clone(), handler_json(st)))
                    .collect::<serde_json::Map<String, Value>>(),
                "quotas": q.quotas.iter()
                    .map(|qs| (qs.name.clone(), json!({
                        "size": qs.size, "held": qs.held, "every_job": qs.every_job,
                    })))
                    .collect::<serde_json::Map<String, Value>>(),
                "dispatchers": dispatchers.iter().filter(|d| d.queue == q.name).map(|d| json!({
                    "uuid": d.id,
                    "alive": d.alive,
                    "state": liveness(d),
                    "activated": time_json(d.activated),
                    "last_ping": time_json(d.last_ping.filter(|_| !d.left_to_siblings)),
                    "agents": d.agents.iter().map(|(a, size, held)| json!({
                        "name": a, "size": size, "held": held,
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        }).collect::<Vec<_>>(),
    })
}

/// One handler's completed jobs as `jobs status --json` prints them: counts by
/// ending, and run times in milliseconds (null when none ran).
fn handler_json(stats: &inspect::HandlerStats) -> Value {
    let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e3);
    json!({
        "completed": endings_json(&stats.endings),
        "runs": stats.runs,
        "run_ms_p50": ms(stats.run_p50),
        "run_ms_p99": ms(stats.run_p99),
    })
}

/// Completed jobs by ending as JSON: every ending, 0 when none ended so.
fn endings_json(endings: &std::collections::BTreeMap<Ending, u64>) -> Value {
    Ending::ALL
        .iter()
        .map(|e| {
            (
                e.name().to_string(),
                json!(endings.get(e).copied().unwrap_or(0)),
            )
        })
        .collect::<serde_json::Map<String, Value>>()
        .into()
}

/// One handler's line under its queue in `jobs status`: completed jobs by
/// ending and run-time percentiles.
fn handler_line(handler: &str, stats: &inspect::HandlerStats) -> String {
    let endings: Vec<String> = Ending::ALL
        .iter()
        .filter_map(|e| stats.endings.get(e).map(|n| format!("{} {n}", e.name())))
        .collect();
    let run = match (stats.run_p50, stats.run_p99) {
        (Some(p50), Some(p99)) => format!(
            "; run p50 {p50:.1?}, p99 {p99:.1?} over {} runs",
            stats.runs
        ),
        _ => String::new(),
    };
    format!("  handler {handler}: {}{run}", endings.join(", "))
}

/// One queue's line of `jobs status`: counts by status, completed jobs by
/// ending, and `PAUSED` for a paused queue.
fn queue_line(q: &QueueStatus) -> String {
    let shown = if q.name.is_empty() {
        "(default)"
    } else {
        q.name.as_str()
    };
    let count = |n: Option<&u64>| n.copied().unwrap_or(0);
    let ended = q.endings();
    let counts: Vec<String> = Status::ALL
        .iter()
        .map(|s| format!("{} {}", s.name().to_lowercase(), count(q.counts.get(s))))
        .collect();
    let endings: Vec<String> = Ending::ALL
        .iter()
        .map(|e| format!("{} {}", e.name(), count(ended.get(e))))
        .collect();
    format!(
        "queue {shown}{}: {} ({}{})",
        if q.paused { " PAUSED" } else { "" },
        counts.join(", "),
        endings.join(", "),
        if q.endings_all {
            ""
        } else {
            ", of the first counted"
        }
    )
}

/// The queues' counts and their dispatchers, as `jobs status` prints them.
fn print_status(queues: &[QueueStatus], dispatchers: &[inspect::DispatcherSummary]) {
    if queues.is_empty() {
        println!("no queues yet (put a job with `zodiac jobs put`)");
    }
    for q in queues {
        println!("{}", queue_line(q));
        for (handler, stats) in &q.handlers {
            println!("{}", handler_line(handler, stats));
        }
        for qs in &q.quotas {
            let every_job = if qs.every_job { " (every job)" } else { "" };
            println!(
                "  quota {}: {}/{} held{every_job}",
                qs.name, qs.held, qs.size
            );
        }
        for d in dispatchers.iter().filter(|d| d.queue == q.name) {
            let agents: Vec<String> = d
                .agents
                .iter()
                .map(|(a, size, held)| format!("{a} {held}/{size}"))
                .collect();
            println!(
                "  dispatcher {} {} last ping {} agents: {}",
                d.id,
                liveness(d),
                match d.last_ping.or(d.activated) {
                    _ if d.left_to_siblings => "none since its stop".to_string(),
                    Some(t) => t.to_string(),
                    None => "never".to_string(),
                },
                if agents.is_empty() {
                    "none".to_string()
                } else {
                    agents.join(", ")
                }
            );
        }
    }
}

/// A queue as `jobs status` shows it.
struct QueueStatus {
    name: String,
    /// Jobs by status.
    counts: std::collections::BTreeMap<Status, u64>,
    /// Whether every completed job was counted in `handlers`.
    endings_all: bool,
    /// COMPLETED jobs by handler: endings and run times.
    handlers: std::collections::BTreeMap<String, inspect::HandlerStats>,
    paused: bool,
    /// Its quotas.
    quotas: Vec<inspect::QuotaSummary>,
}

impl QueueStatus {
    /// COMPLETED jobs by ending: the sum over handlers.
    fn endings(&self) -> std::collections::BTreeMap<Ending, u64> {
        inspect::sum_endings(self.handlers.values())
    }
}

/// `alive`, `inactive` (stopped gracefully, or already cleaned up), `STOPPED`
/// (stopped gracefully while callbacks of its jobs still ran: the next sibling's
/// cleanup resumes them) or `DEAD` (silent past the death interval: its jobs are
/// recovered by a sibling or its restart).
fn liveness(d: &inspect::DispatcherSummary) -> &'static str {
    match (d.alive, d.activated) {
        (true, _) => "alive",
        (false, None) => "inactive",
        (false, Some(_)) if d.left_to_siblings => "STOPPED",
        (false, Some(_)) => "DEAD",
    }
}

/// The default death interval shown by `status`.
pub const STATUS_DEATH_INTERVAL: Duration = DEATH_INTERVAL_DEFAULT;
