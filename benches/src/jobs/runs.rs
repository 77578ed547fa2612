//! The runs of J1–J6 and J3-mix on a [`Bench`]: what each puts, what it times and
//! what it reports.
//!
//! Invariants:
//! - Only the work the definition names is timed (see the module above).

use std::time::{Duration, Instant};

use zodiac_async::{Job, PutOptions, Queue, Unique, add_callback, transact};
use zodiac_objects::{CommitStats, Database};

use crate::Result;
use crate::report::{Measurement, Value};
use crate::stats::percentile;
use crate::system;
use crate::target::StoreKind;

use super::log::{LogReader, now_ns};
use super::worker::WorkerSpec;
use super::{
    BULK_JOBS, Bench, CHAIN_STEP2_OFFSET, DRAIN_STALL, IDLE_BEFORE, J3_WORKERS, J4_ROUNDS,
    J4_WARM_UP, J5_DEATH, J5_JOBS, J5_LIMIT, J5_PING, J5_SLEEP_MS, J5_STALL, J6_BATCH, J6_CHAINS,
    JobWorkload, NOOP, SLEEP, TAIL_INTERVAL,
};

/// Puts one job in the default queue, in its own (durable) transaction.
fn put(db: &Database, handler: &str, arguments: &impl serde::Serialize) -> Result<()> {
    put_with(db, handler, arguments, PutOptions::new())
}

/// [`put`] with `options`.
fn put_with(
    db: &Database,
    handler: &str,
    arguments: &impl serde::Serialize,
    options: PutOptions,
) -> Result<()> {
    transact(db, |tx| {
        let q = Queue::get_or_create(tx, "")?;
        Queue::put_job(
            tx,
            &q,
            Job::with_arguments(handler, arguments)?,
            options.clone(),
        )
        .map(|_| ())
    })?;
    Ok(())
}

/// Puts `n` no-op jobs with ids `0..n`, each in its own transaction; the seconds.
fn put_noops(db: &Database, n: u64) -> Result<f64> {
    put_noops_prioritised(db, n, Priorities::Default)
}

/// The priorities of a drain's jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Priorities {
    /// Every job at the default priority (J3).
    Default,
    /// Job `i` at priority `(i × 7) mod 10`: the ten priorities evenly mixed, and
    /// not in put order (j3-prio).
    Mixed,
    /// `Mixed`, and every even job with a unique key of its own, which its
    /// completion frees (j3-prio-uniq).
    MixedUnique,
}

impl Priorities {
    /// The put options of job `i`.
    fn options(self, i: u64) -> PutOptions {
        match self {
            Priorities::Default => PutOptions::new(),
            Priorities::Mixed => PutOptions::new().priority(((i * 7) % 10) as u8),
            Priorities::MixedUnique => match i % 2 {
                0 => Priorities::Mixed
                    .options(i)
                    .unique(Unique::new(format!("job-{i}"))),
                _ => Priorities::Mixed.options(i),
            },
        }
    }
}

/// [`put_noops`] with job `i` put with `priorities.options(i)`.
fn put_noops_prioritised(db: &Database, n: u64, priorities: Priorities) -> Result<f64> {
    let start = Instant::now();
    for i in 0..n {
        put_with(db, NOOP, &i, priorities.options(i))?;
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
pub(super) fn j1(bench: &mut Bench) -> Result<Measurement> {
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
pub(super) fn j2(bench: &mut Bench) -> Result<Measurement> {
    put_noops(bench.db(), BULK_JOBS)?;
    let mut log = bench.log()?;
    let drained = drain(bench, &mut log, 1, 1, BULK_JOBS)?;
    bench.stop_workers()?;
    Ok(drain_measurement("j2", &log, BULK_JOBS, &drained, 1, 1))
}

/// J3: fresh store, 10,000 jobs waiting, 4 workers, each running batches of
/// `batch` jobs (reported as `name`); the jobs' priorities as `priorities` says
/// (j3-prio: the ten mixed; j3-prio-uniq: and half the jobs unique).
pub(super) fn j3(
    bench: &mut Bench,
    name: &str,
    batch: u32,
    priorities: Priorities,
) -> Result<Measurement> {
    put_noops_prioritised(bench.db(), BULK_JOBS, priorities)?;
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
pub(super) fn j3_mix(bench: &mut Bench) -> Result<Measurement> {
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
pub(super) fn j4(bench: &mut Bench) -> Result<Measurement> {
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
pub(super) fn j5(bench: &mut Bench) -> Result<Measurement> {
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
    wait_for_recovery(&mut log, &in_flight, &victim, kill_ns, kill_instant)?;
    let seconds = start.elapsed().as_secs_f64();
    // The survivor only: the killed one is gone.
    let survivor = bench.workers.pop().expect("two workers");
    bench.workers.clear();
    survivor.stop()?;
    log.poll()?;
    Ok(j5_measurement(seconds, &log, &in_flight, &victim, kill_ns))
}

/// Waits until every job completed and each job the victim held at the kill started
/// again on the survivor, or J5's limits run out (what is missing is reported).
fn wait_for_recovery(
    log: &mut LogReader,
    in_flight: &[u64],
    victim: &str,
    kill_ns: u64,
    kill_instant: Instant,
) -> Result<()> {
    log.last_progress = Instant::now();
    while (log.ends.len() as u64) < J5_JOBS
        || in_flight.iter().any(|id| {
            !log.starts[id]
                .iter()
                .any(|(tag, t)| tag != victim && *t > kill_ns)
        })
    {
        log.poll()?;
        if kill_instant.elapsed() > J5_LIMIT || log.last_progress.elapsed() > J5_STALL {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// J5's figures: the rate, what was lost or ran twice, and how long the jobs in
/// flight at the kill took to start again on the survivor.
fn j5_measurement(
    seconds: f64,
    log: &LogReader,
    in_flight: &[u64],
    victim: &str,
    kill_ns: u64,
) -> Measurement {
    let recovery: Vec<Option<f64>> = in_flight
        .iter()
        .map(|id| {
            log.starts[id]
                .iter()
                .filter(|(tag, t)| tag != victim && *t > kill_ns)
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
    m
}

/// J6: 1,000 two-step chains, step 2 a callback of step 1, put each chain in its own
/// transaction (timed: the enqueue rate, an extra); then 1 worker runs the 2,000
/// steps: chains/s end to end. Checks step 2 never started before step 1 ended.
pub(super) fn j6(bench: &mut Bench) -> Result<Measurement> {
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
