//! A worker polling on a thread: runs queued jobs, wakes at once on a put, skips
//! a queue whose id is live elsewhere, cleans up dead siblings, and leaves nothing
//! assigned when it stops.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use zodiac_async::{
    Dispatchers, Handlers, Job, Outcome, Policies, PutOptions, Queue, Runner, Status, Timestamp,
    Worker, WorkerOptions, poll_backoff, transact,
};
use zodiac_objects::{Counter, Database, PRef};
use zodiac_storage::MemoryStorage;

fn setup() -> (Database, PRef<Counter>, Runner) {
    let db = Database::open(Arc::new(MemoryStorage::new())).unwrap();
    let counter = transact(&db, |tx| {
        Queue::get_or_create(tx, "")?;
        Ok(tx.add(Counter::new(0))?)
    })
    .unwrap();
    let mut h = Handlers::new();
    h.register("count", move |ctx, by: i64| {
        ctx.tx().modify(&counter, |c| c.add(by))?;
        Ok(())
    });
    (db.clone(), counter, Runner::new(db, h, Policies::new()))
}

fn put(db: &Database, n: i64) -> PRef<Job> {
    transact(db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Queue::put_job(tx, &q, Job::with_arguments("count", &n)?, PutOptions::new())
    })
    .unwrap()
}

/// Puts `n` jobs of `handler` (no arguments) in the default queue.
fn put_unit_jobs(db: &Database, handler: &str, n: usize) -> Vec<PRef<Job>> {
    (0..n)
        .map(|_| {
            transact(db, |tx| {
                let q = Queue::get(tx, "")?.unwrap();
                Queue::put_job(
                    tx,
                    &q,
                    Job::with_arguments(handler, &())?,
                    PutOptions::new(),
                )
            })
            .unwrap()
        })
        .collect()
}

fn status(db: &Database, j: PRef<Job>) -> Status {
    transact(db, |tx| Ok(tx.get(&j)?.status())).unwrap()
}

fn count(db: &Database, c: PRef<Counter>) -> i64 {
    transact(db, |tx| Ok(tx.get(&c)?.value())).unwrap()
}

/// Jobs that block until a gate opens: a poll starts exactly `agent_size` of them
/// (none can finish and free a slot), the next poll the rest.
#[test]
fn polls_run_queued_jobs_at_most_agent_size_at_a_time() {
    use std::sync::{Condvar, Mutex};
    let db = Database::open(Arc::new(MemoryStorage::new())).unwrap();
    transact(&db, |tx| Queue::get_or_create(tx, "").map(|_| ())).unwrap();
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let mut h = Handlers::new();
    {
        let gate = Arc::clone(&gate);
        h.register("gated", move |_ctx, _: u32| {
            let (open, cv) = &*gate;
            let mut open = open.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            Ok(())
        });
    }
    let runner = Runner::new(db.clone(), h, Policies::new());
    let jobs: Vec<_> = (0..5u32)
        .map(|i| {
            transact(&db, |tx| {
                let q = Queue::get(tx, "")?.unwrap();
                Queue::put_job(tx, &q, Job::with_arguments("gated", &i)?, PutOptions::new())
            })
            .unwrap()
        })
        .collect();
    let mut worker = Worker::new(db.clone(), "w1", runner, WorkerOptions::default());
    assert_eq!(
        worker.poll_once().unwrap().started,
        jobs[..3],
        "the agent holds 3"
    );
    assert!(worker.poll_once().unwrap().started.is_empty(), "still full");
    assert_eq!(worker.running(), jobs[..3]);
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    worker.wait_idle();
    // The first runs to end claimed the rest in the commits of their results.
    for j in jobs {
        assert_eq!(status(&db, j), Status::Completed);
    }
    assert!(worker.poll_once().unwrap().started.is_empty());
}

/// Jobs that each wait for a barrier of `size` parties finish only if `size` of
/// them run at the same time.
#[test]
fn the_agent_size_is_the_number_of_jobs_running_at_once() {
    use std::sync::Barrier;
    let db = Database::open(Arc::new(MemoryStorage::new())).unwrap();
    transact(&db, |tx| Queue::get_or_create(tx, "").map(|_| ())).unwrap();
    let barrier = Arc::new(Barrier::new(3));
    let mut h = Handlers::new();
    h.register("meet", move |_ctx, _: ()| {
        barrier.wait();
        Ok(())
    });
    let runner = Runner::new(db.clone(), h, Policies::new());
    let jobs = put_unit_jobs(&db, "meet", 3);
    let mut worker = Worker::new(db.clone(), "w1", runner, WorkerOptions::default());
    assert_eq!(worker.poll_once().unwrap().started, jobs);
    worker.wait_idle();
    for j in jobs {
        assert_eq!(status(&db, j), Status::Completed);
    }
}

#[test]
fn a_put_wakes_the_worker_long_before_the_poll_interval() {
    let (db, counter, runner) = setup();
    let options = WorkerOptions {
        poll_interval: Duration::from_secs(60),
        ..WorkerOptions::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let handle = {
        let (db, stop) = (db.clone(), Arc::clone(&stop));
        thread::spawn(move || Worker::new(db, "w1", runner, options).run(&stop))
    };
    // Let it finish its first poll and start waiting.
    thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let job = put(&db, 7);
    while status(&db, job) != Status::Completed {
        assert!(started.elapsed() < Duration::from_secs(10), "not woken");
        thread::sleep(Duration::from_millis(1));
    }
    println!("put to completed: {:?}", started.elapsed());
    assert_eq!(count(&db, counter), 7);
    stop.store(true, Ordering::SeqCst);
    handle.join().unwrap().unwrap();
    // Stopped: deactivated.
    let activated = transact(&db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        let record = Queue::dispatchers(tx, &q)?["w1"];
        Ok(tx.get(&record)?.activated())
    })
    .unwrap();
    assert_eq!(activated, None);
}

/// A job scheduled ahead starts at its time, not at the next poll.
#[test]
fn a_scheduled_job_starts_at_its_time_not_at_the_next_poll() {
    let (db, counter, runner) = setup();
    let options = WorkerOptions {
        poll_interval: Duration::from_secs(60),
        ..WorkerOptions::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let handle = {
        let (db, stop) = (db.clone(), Arc::clone(&stop));
        thread::spawn(move || Worker::new(db, "w1", runner, options).run(&stop))
    };
    thread::sleep(Duration::from_millis(200));
    let due = Timestamp::now().plus(Duration::from_millis(300));
    let job = transact(&db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Queue::put_job(
            tx,
            &q,
            Job::with_arguments("count", &3i64)?,
            PutOptions::new().begin_after(due),
        )
    })
    .unwrap();
    let started = Instant::now();
    while status(&db, job) != Status::Completed {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the scheduled job waited for the 60 s poll"
        );
        thread::sleep(Duration::from_millis(5));
    }
    let start = transact(&db, |tx| Ok(tx.get(&job)?.active_start()))
        .unwrap()
        .unwrap();
    assert!(start >= due, "not before its time");
    assert_eq!(count(&db, counter), 3);
    stop.store(true, Ordering::SeqCst);
    handle.join().unwrap().unwrap();
}

#[test]
fn a_second_worker_with_a_live_id_skips_the_queue() {
    let (db, _, runner) = setup();
    let mut first = Worker::new(db.clone(), "same", runner.clone(), WorkerOptions::default());
    first.poll_once().unwrap();
    let job = put(&db, 1);
    let mut second = Worker::new(db.clone(), "same", runner, WorkerOptions::default());
    let report = second.poll_once().unwrap();
    assert_eq!(report.skipped, [""]);
    assert!(report.started.is_empty());
    assert_eq!(status(&db, job), Status::Pending);
    assert_eq!(first.poll_once().unwrap().started, [job]);
    first.wait_idle();
}

#[test]
fn a_worker_cleans_up_a_dead_sibling_and_runs_its_jobs() {
    let (db, counter, runner) = setup();
    let job = put(&db, 4);
    // A sibling that activated two minutes ago, claimed the job, and went silent.
    let long_ago = Timestamp::from_micros(Timestamp::now().as_micros() - 120_000_000);
    transact(&db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Dispatchers::activate(tx, &q, "gone", long_ago, Duration::from_secs(60))?;
        Dispatchers::set_agent(tx, &q, "gone", "main", 3)?;
        Dispatchers::claim_for_agent(tx, &q, "gone", "main", Timestamp::now())
    })
    .unwrap();
    assert_eq!(status(&db, job), Status::Assigned);
    let mut worker = Worker::new(db.clone(), "alive", runner, WorkerOptions::default());
    let report = worker.poll_once().unwrap();
    assert_eq!(report.cleaned, ["gone"]);
    assert_eq!(report.started, [job]);
    worker.wait_idle();
    let j = transact(&db, |tx| Ok(tx.get(&job)?)).unwrap();
    assert_eq!(j.status(), Status::Completed);
    assert!(matches!(j.result(), Some(Outcome::Value(_))));
    assert_eq!(count(&db, counter), 4);
}

#[test]
fn shutdown_hands_back_assigned_jobs() {
    let (db, _, runner) = setup();
    let mut worker = Worker::new(db.clone(), "w1", runner, WorkerOptions::default());
    worker.poll_once().unwrap();
    let job = put(&db, 1);
    // Claimed by the worker's agent but not run (as if it stopped in between).
    transact(&db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Dispatchers::claim_for_agent(
            tx,
            &q,
            "w1",
            zodiac_async::limits::AGENT_NAME,
            Timestamp::now(),
        )
    })
    .unwrap();
    assert_eq!(status(&db, job), Status::Assigned);
    worker.shutdown().unwrap();
    assert_eq!(status(&db, job), Status::Pending);
}

#[test]
fn failed_polls_back_off_5_10_up_to_60_seconds() {
    let waits: Vec<u64> = (1..=14).map(|n| poll_backoff(n).as_secs()).collect();
    assert_eq!(
        waits,
        [5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 60, 60]
    );
}

#[test]
fn completed_jobs_are_kept_for_the_retention_period_then_dropped() {
    let (db, _, runner) = setup();
    let options = WorkerOptions {
        retention: Duration::from_secs(3600),
        ..WorkerOptions::default()
    };
    let mut worker = Worker::new(db.clone(), "w1", runner, options);
    let job = put(&db, 1);
    assert_eq!(worker.poll_once().unwrap().started, [job]);
    worker.wait_idle();
    worker.poll_once().unwrap(); // the next claim moves it to the completed jobs
    let completed = |db: &Database| {
        transact(db, |tx| {
            let q = Queue::get(tx, "")?.unwrap();
            Dispatchers::completed(tx, &q, "w1", zodiac_async::limits::AGENT_NAME, 10)
        })
        .unwrap()
    };
    let kept = completed(&db);
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].1, job);
    // Within the retention period it stays; past it, it goes.
    let dropped = |cutoff| {
        transact(&db, |tx| {
            let q = Queue::get(tx, "")?.unwrap();
            Dispatchers::drop_completed_before(
                tx,
                &q,
                "w1",
                zodiac_async::limits::AGENT_NAME,
                cutoff,
                64,
            )
        })
        .unwrap()
    };
    assert_eq!(dropped(kept[0].0), 0);
    assert_eq!(dropped(kept[0].0.plus(Duration::from_micros(1))), 1);
    assert!(completed(&db).is_empty());
}

/// A job still running when the grace period ends is handed to recovery: back in
/// the queue, and its run, when it ends, stores nothing.
#[test]
fn shutdown_hands_jobs_still_running_after_the_grace_period_to_recovery() {
    let db = Database::open(Arc::new(MemoryStorage::new())).unwrap();
    let counter = transact(&db, |tx| {
        Queue::get_or_create(tx, "")?;
        Ok(tx.add(Counter::new(0))?)
    })
    .unwrap();
    let mut h = Handlers::new();
    h.register("slow", move |ctx, _: ()| {
        ctx.tx().modify(&counter, |c| c.add(1))?;
        thread::sleep(Duration::from_millis(300));
        Ok(())
    });
    let runner = Runner::new(db.clone(), h, Policies::new());
    let job = transact(&db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Queue::put_job(tx, &q, Job::with_arguments("slow", &())?, PutOptions::new())
    })
    .unwrap();
    let options = WorkerOptions {
        grace_period: Duration::from_millis(50),
        ..WorkerOptions::default()
    };
    let mut worker = Worker::new(db.clone(), "w1", runner, options);
    assert_eq!(worker.poll_once().unwrap().started, [job]);
    while status(&db, job) != Status::Active {
        thread::sleep(Duration::from_millis(1));
    }
    worker.shutdown().unwrap();
    assert_eq!(
        status(&db, job),
        Status::Pending,
        "recovered: back in the queue"
    );
    thread::sleep(Duration::from_millis(500)); // the abandoned run ends
    assert_eq!(status(&db, job), Status::Pending);
    assert_eq!(count(&db, counter), 0, "the abandoned run stored nothing");
}

/// With plain polling a put waits for the next poll; with invalidations it does
/// not. Both are wake sources a worker can be given.
#[test]
fn a_polling_worker_picks_up_a_put_at_its_next_poll() {
    let (db, counter, runner) = setup();
    let options = WorkerOptions {
        poll_interval: Duration::from_millis(300),
        ..WorkerOptions::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let handle = {
        let (db, stop) = (db.clone(), Arc::clone(&stop));
        thread::spawn(move || {
            let wake = Box::new(zodiac_async::Polling);
            Worker::with_wake_source(db, "w1", runner, options, wake).run(&stop)
        })
    };
    // Wait for its first poll (it activates), so the put lands between polls.
    let activated = || {
        transact(&db, |tx| {
            let q = Queue::get(tx, "")?.unwrap();
            Ok(Queue::dispatchers(tx, &q)?.contains_key("w1"))
        })
        .unwrap()
    };
    while !activated() {
        thread::sleep(Duration::from_millis(1));
    }
    let started = Instant::now();
    let job = put(&db, 3);
    while status(&db, job) != Status::Completed {
        assert!(started.elapsed() < Duration::from_secs(10), "never polled");
        thread::sleep(Duration::from_millis(1));
    }
    let waited = started.elapsed();
    println!("polling: put to completed: {waited:?}");
    assert!(
        waited >= Duration::from_millis(100),
        "woken early: {waited:?}"
    );
    assert_eq!(count(&db, counter), 3);
    stop.store(true, Ordering::SeqCst);
    handle.join().unwrap().unwrap();
}

/// A worker restarts on the same host: it takes its identity file's lock again,
/// which proves the previous process is gone, and recovers that process's jobs at
/// once instead of waiting for the death interval.
#[test]
fn a_restarted_worker_recovers_its_previous_incarnations_jobs_at_once() {
    use zodiac_async::WorkerIdentity;
    use zodiac_async::limits::AGENT_NAME;
    let (db, counter, runner) = setup();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zodiac-worker.uuid");
    let identity = WorkerIdentity::acquire(&path).unwrap();
    assert!(!identity.restarted());
    let id = identity.id();
    let mut before = Worker::new(
        db.clone(),
        id.clone(),
        runner.clone(),
        WorkerOptions::default(),
    );
    before.poll_once().unwrap();
    let job = put(&db, 5);
    transact(&db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Dispatchers::claim_for_agent(tx, &q, &id, AGENT_NAME, Timestamp::now())
    })
    .unwrap();
    assert_eq!(status(&db, job), Status::Assigned);
    // The process dies: no shutdown; its lock goes with it.
    drop(before);
    drop(identity);

    // Without proof of the restart, the id still looks alive: the queue is skipped.
    let mut impostor = Worker::new(
        db.clone(),
        id.clone(),
        runner.clone(),
        WorkerOptions::default(),
    );
    assert_eq!(impostor.poll_once().unwrap().skipped, [""]);

    let identity = WorkerIdentity::acquire(&path).unwrap();
    assert!(identity.restarted());
    assert_eq!(identity.id(), id);
    let options = WorkerOptions {
        restarted: identity.restarted(),
        ..WorkerOptions::default()
    };
    let mut after = Worker::new(db.clone(), identity.id(), runner, options);
    let report = after.poll_once().unwrap();
    assert!(report.skipped.is_empty());
    assert_eq!(report.started, [job]);
    after.wait_idle();
    assert_eq!(status(&db, job), Status::Completed);
    assert_eq!(count(&db, counter), 5);
}

/// A worker with agent size 1 draining a queue commits once per job: each run
/// claims the next job in the commit of its result.
#[test]
fn a_run_claims_the_next_job_in_the_commit_of_its_result() {
    let (db, counter, runner) = setup();
    let jobs: Vec<_> = (1..=5).map(|n| put(&db, n)).collect();
    let options = WorkerOptions {
        agent_size: 1,
        ..WorkerOptions::default()
    };
    let mut worker = Worker::new(db.clone(), "w1", runner, options);
    let commits = db.storage().subscribe();
    assert_eq!(worker.poll_once().unwrap().started, jobs[..1]);
    worker.wait_idle();
    // The poll's activation and claim, then one commit per job.
    let events = commits.drain();
    let polled = events.len() - jobs.len();
    assert!(
        polled <= 3,
        "{} commits for {} jobs",
        events.len(),
        jobs.len()
    );
    for (event, job) in events[polled..].iter().zip(&jobs) {
        assert!(
            event.oids.contains(&job.oid()),
            "one commit per job, in order"
        );
    }
    for j in jobs {
        assert_eq!(status(&db, j), Status::Completed);
    }
    assert_eq!(count(&db, counter), 15);
}

/// When another claimer takes the job a run was claiming with its result, the
/// result commits alone: the handler is not called again, and the job stays
/// with the other claimer.
#[test]
fn a_claim_lost_with_the_result_costs_the_claim_only() {
    use std::sync::atomic::AtomicU32;
    let db = Database::open(Arc::new(MemoryStorage::new())).unwrap();
    transact(&db, |tx| Queue::get_or_create(tx, "").map(|_| ())).unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    // The first run ends only after the poll that started it has returned: a run
    // that ended first freed the agent's slot within that poll, which then
    // claimed another job (a race of the test, not of the worker).
    let poll_returned = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let mut h = Handlers::new();
    {
        let (db, calls) = (db.clone(), Arc::clone(&calls));
        let poll_returned = Arc::clone(&poll_returned);
        h.register("steal_next", move |_ctx, _: ()| {
            // The first run lets a competitor claim the next job meanwhile.
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                let other = zodiac_async::Claimer {
                    dispatcher: "other".into(),
                    agent: "main".into(),
                };
                transact(&db, |tx| {
                    let q = Queue::get(tx, "")?.unwrap();
                    Ok(Queue::claim(tx, &q, &other)?.job)
                })?;
                let (returned, cv) = &*poll_returned;
                let returned = returned.lock().unwrap();
                let (returned, wait) = cv
                    .wait_timeout_while(returned, Duration::from_secs(30), |r| !*r)
                    .unwrap();
                assert!(*returned && !wait.timed_out(), "the poll never returned");
            }
            Ok(())
        });
    }
    let runner = Runner::new(db.clone(), h, Policies::new());
    let jobs = put_unit_jobs(&db, "steal_next", 3);
    let options = WorkerOptions {
        agent_size: 1,
        ..WorkerOptions::default()
    };
    let mut worker = Worker::new(db.clone(), "w1", runner, options);
    assert_eq!(worker.poll_once().unwrap().started, jobs[..1]);
    *poll_returned.0.lock().unwrap() = true;
    poll_returned.1.notify_all();
    worker.wait_idle();
    assert_eq!(status(&db, jobs[0]), Status::Completed);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the handler ran once");
    assert_eq!(
        status(&db, jobs[1]),
        Status::Assigned,
        "the competitor has it"
    );
    assert_eq!(
        status(&db, jobs[2]),
        Status::Pending,
        "not claimed with the result"
    );
    // The poll claims it.
    assert_eq!(worker.poll_once().unwrap().started, jobs[2..]);
    worker.wait_idle();
    assert_eq!(status(&db, jobs[2]), Status::Completed);
}

/// A database with a queued job whose one callback blocks until the gate opens
/// and then adds 1 to the counter; the runner for both.
struct GatedCallback {
    db: Database,
    counter: PRef<Counter>,
    gate: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    parent: PRef<Job>,
    runner: Runner,
}

impl GatedCallback {
    fn new() -> GatedCallback {
        GatedCallback::put_with(PutOptions::new())
    }

    fn put_with(put: PutOptions) -> GatedCallback {
        let db = Database::open(Arc::new(MemoryStorage::new())).unwrap();
        let counter = transact(&db, |tx| {
            Queue::get_or_create(tx, "")?;
            Ok(tx.add(Counter::new(0))?)
        })
        .unwrap();
        let gate = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let mut h = Handlers::new();
        h.register("parent", |_ctx, _: ()| Ok(()));
        {
            let gate = Arc::clone(&gate);
            h.register("gated_count", move |ctx, _: ()| {
                let (open, cv) = &*gate;
                let mut open = open.lock().unwrap();
                while !*open {
                    open = cv.wait(open).unwrap();
                }
                drop(open);
                ctx.tx().modify(&counter, |c| c.add(1))?;
                Ok(())
            });
        }
        let runner = Runner::new(db.clone(), h, Policies::new());
        let parent = transact(&db, |tx| {
            let q = Queue::get(tx, "")?.unwrap();
            let p = Queue::put_job(tx, &q, Job::with_arguments("parent", &())?, put.clone())?;
            zodiac_async::add_callback(tx, &p, Job::with_arguments("gated_count", &())?)?;
            Ok(p)
        })
        .unwrap();
        GatedCallback {
            db,
            counter,
            gate,
            parent,
            runner,
        }
    }

    fn options() -> WorkerOptions {
        WorkerOptions {
            ping_interval: Duration::from_millis(10),
            death_interval: Duration::from_millis(50),
            ..WorkerOptions::default()
        }
    }

    fn worker(&self, id: &str) -> Worker {
        Worker::new(
            self.db.clone(),
            id,
            self.runner.clone(),
            GatedCallback::options(),
        )
    }

    fn held_by(&self, id: &str) -> std::collections::BTreeSet<PRef<Job>> {
        transact(&self.db, |tx| {
            let q = Queue::get(tx, "")?.unwrap();
            let record = Queue::dispatchers(tx, &q)?[id];
            let agent = tx.get(&record)?.agents()["main"];
            Ok(tx.get(&agent)?.held().clone())
        })
        .unwrap()
    }

    fn callback(&self) -> PRef<Job> {
        transact(&self.db, |tx| Ok(tx.get(&self.parent)?.callbacks()[0])).unwrap()
    }

    fn wait_callback_running(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while status(&self.db, self.callback()) != Status::Active {
            assert!(Instant::now() < deadline, "the callback never started");
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn open_gate(&self) {
        *self.gate.0.lock().unwrap() = true;
        self.gate.1.notify_all();
    }

    /// The parent and its callback are COMPLETED and the callback's effect
    /// committed once.
    fn assert_finished_once(&self) {
        assert_eq!(status(&self.db, self.parent), Status::Completed);
        assert_eq!(status(&self.db, self.callback()), Status::Completed);
        assert_eq!(
            count(&self.db, self.counter),
            1,
            "the effect committed once"
        );
    }
}

/// A worker dies while its job's callback runs; a sibling adopts the job and
/// resumes the callback, and dies too; a third finds the job with the second (it
/// was adopted, not left with the first) and finishes it. The callback's effect
/// commits once; the runs of the dead workers store nothing.
#[test]
fn a_sibling_dying_while_it_resumes_callbacks_leaves_them_to_the_next() {
    let g = GatedCallback::new();
    let mut a = g.worker("a");
    assert_eq!(a.poll_once().unwrap().started, [g.parent]);
    g.wait_callback_running();
    drop(a); // dies: no shutdown, no pings; its callback run stays blocked
    thread::sleep(Duration::from_millis(100));
    let mut b = g.worker("b");
    assert_eq!(b.poll_once().unwrap().cleaned, ["a"]);
    g.wait_callback_running();
    assert!(g.held_by("a").is_empty(), "adopted, not left with the dead");
    assert!(g.held_by("b").contains(&g.parent));
    drop(b); // dies while resuming
    thread::sleep(Duration::from_millis(100));
    let mut c = g.worker("c");
    assert_eq!(c.poll_once().unwrap().cleaned, ["b"]);
    g.wait_callback_running();
    g.open_gate();
    c.wait_idle();
    g.assert_finished_once();
}

/// A worker stops while a job's callback still runs after the grace period: the
/// callback is interrupted, the job stays held and the dispatcher activated but
/// dead to its siblings at once, so a sibling's next poll cleans it up and
/// finishes the callbacks, although the death interval (60 s here) has not passed.
#[test]
fn a_stop_during_callbacks_leaves_them_to_a_sibling_at_once() {
    let g = GatedCallback::new();
    let options = WorkerOptions {
        grace_period: Duration::from_millis(50),
        ping_interval: Duration::from_secs(30),
        death_interval: Duration::from_secs(60),
        ..WorkerOptions::default()
    };
    let mut a = Worker::new(g.db.clone(), "a", g.runner.clone(), options.clone());
    assert_eq!(a.poll_once().unwrap().started, [g.parent]);
    g.wait_callback_running();
    a.shutdown().unwrap();
    assert_eq!(
        status(&g.db, g.callback()),
        Status::New,
        "interrupted: retried"
    );
    assert_eq!(status(&g.db, g.parent), Status::Callbacks);
    assert!(g.held_by("a").contains(&g.parent));
    let summary = transact(&g.db, |tx| {
        zodiac_async::inspect::dispatchers(tx, Timestamp::now(), options.death_interval)
    })
    .unwrap();
    let a_summary = summary.iter().find(|d| d.id == "a").unwrap();
    assert!(
        a_summary.activated.is_some(),
        "left for a sibling's cleanup"
    );
    assert!(a_summary.left_to_siblings && !a_summary.alive);
    let mut b = Worker::new(g.db.clone(), "b", g.runner.clone(), options);
    assert_eq!(b.poll_once().unwrap().cleaned, ["a"]);
    g.wait_callback_running();
    g.open_gate();
    b.wait_idle();
    g.assert_finished_once();
}

/// The callbacks of a job that expired in the queue run on a thread of their own:
/// the poll that met the job returns while they run (pings go on).
#[test]
fn an_expired_jobs_callbacks_do_not_hold_up_the_poll() {
    let past = Timestamp::from_micros(Timestamp::now().as_micros() - 2_000_000);
    let g = GatedCallback::put_with(
        PutOptions::new()
            .begin_after(past)
            .begin_by(Duration::from_secs(1)),
    );
    let mut w = g.worker("w");
    let (done, polled) = std::sync::mpsc::channel();
    let poller = thread::spawn(move || {
        let report = w.poll_once().unwrap();
        done.send(()).unwrap();
        (w, report)
    });
    let returned = polled.recv_timeout(Duration::from_secs(5));
    if returned.is_err() {
        g.open_gate(); // let the poll end before failing
    }
    assert!(returned.is_ok(), "the poll waited for the callback");
    let (mut w, report) = poller.join().unwrap();
    assert!(report.started.is_empty(), "expired: not run");
    g.wait_callback_running();
    assert!(w.poll_once().unwrap().started.is_empty());
    g.open_gate();
    w.wait_idle();
    assert_eq!(status(&g.db, g.parent), Status::Completed);
    assert_eq!(count(&g.db, g.counter), 1);
}

/// A worker whose run thread goes on from job to job (its agent never has a free
/// slot) still pings in time, and still cleans up a dead sibling within the death
/// interval and its housekeeping, although its poll interval is long.
#[test]
fn a_busy_worker_still_pings_and_cleans_up_dead_siblings_in_time() {
    let db = Database::open(Arc::new(MemoryStorage::new())).unwrap();
    transact(&db, |tx| Queue::get_or_create(tx, "").map(|_| ())).unwrap();
    let mut h = Handlers::new();
    h.register("sleep", |_ctx, ms: u64| {
        thread::sleep(Duration::from_millis(ms));
        Ok(())
    });
    let runner = Runner::new(db.clone(), h, Policies::new());
    let options = WorkerOptions {
        agent_size: 1,
        poll_interval: Duration::from_secs(60),
        ping_interval: Duration::from_millis(20),
        death_interval: Duration::from_millis(100),
        ..WorkerOptions::default()
    };
    // A sibling that claimed a job and died.
    let orphan = transact(&db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        let job = Queue::put_job(
            tx,
            &q,
            Job::with_arguments("sleep", &1u64)?,
            PutOptions::new(),
        )?;
        Dispatchers::activate(tx, &q, "dead", Timestamp::now(), options.death_interval)?;
        Dispatchers::set_agent(tx, &q, "dead", "main", 1)?;
        Dispatchers::claim_for_agent(tx, &q, "dead", "main", Timestamp::now())?;
        Ok(job)
    })
    .unwrap();
    assert_eq!(status(&db, orphan), Status::Assigned);
    // Work for about a second, in 10 ms jobs.
    transact(&db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        for _ in 0..100 {
            Queue::put_job(
                tx,
                &q,
                Job::with_arguments("sleep", &10u64)?,
                PutOptions::new(),
            )?;
        }
        Ok(())
    })
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let handle = {
        let (db, stop, options) = (db.clone(), Arc::clone(&stop), options.clone());
        thread::spawn(move || Worker::new(db, "busy", runner, options).run(&stop))
    };
    let last_ping = || {
        transact(&db, |tx| {
            let q = Queue::get(tx, "")?.unwrap();
            let Some(record) = Queue::dispatchers(tx, &q)?.get("busy").copied() else {
                return Ok(None);
            };
            Ok(tx.get(&record)?.last_ping())
        })
        .unwrap()
    };
    let started = Instant::now();
    let mut oldest = Duration::ZERO;
    while started.elapsed() < Duration::from_millis(600) {
        if let Some(ping) = last_ping() {
            oldest = oldest.max(Duration::from_micros(
                Timestamp::now()
                    .as_micros()
                    .saturating_sub(ping.as_micros()),
            ));
        }
        thread::sleep(Duration::from_millis(10));
    }
    let busy = transact(&db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Queue::len(tx, &q)
    })
    .unwrap();
    assert!(
        busy > 0,
        "the queue emptied: the test did not keep the worker busy"
    );
    assert!(
        oldest < options.death_interval,
        "the busy worker's ping got {oldest:?} old"
    );
    assert_eq!(
        status(&db, orphan),
        Status::Completed,
        "the dead sibling's job was recovered"
    );
    stop.store(true, Ordering::SeqCst);
    handle.join().unwrap().unwrap();
}

/// Four workers drain a queue on a memory and on a file storage: their runs claim
/// in their results' commits and their commits conflict (all add to one counter,
/// which merges, and all take from the queue's head). Every job completes, and
/// each job's effect commits exactly once.
#[test]
fn concurrent_workers_drain_a_queue_with_each_effect_once() {
    use zodiac_objects::BTree;
    use zodiac_storage::{Durability, FileOptions, FileStorage, Storage};
    const JOBS: u64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let storages: Vec<Arc<dyn Storage>> = vec![
        Arc::new(MemoryStorage::new()),
        Arc::new(
            FileStorage::open(
                dir.path().join("drain.zdb"),
                FileOptions::new().durability(Durability::Off),
            )
            .unwrap(),
        ),
    ];
    // One job per commit, and batches of 4 (whose later claims keep to their lane).
    for (storage, batch) in storages.into_iter().flat_map(|s| [(s.clone(), 1), (s, 4)]) {
        let db = Database::open(storage).unwrap();
        let (counter, done) = transact(&db, |tx| {
            Queue::get_or_create(tx, "")?;
            Ok((tx.add(Counter::new(0))?, BTree::<u64, u64>::create(tx)?))
        })
        .unwrap();
        let mut h = Handlers::new();
        h.register("note", move |ctx, i: u64| {
            ctx.tx().modify(&counter, |c| c.add(1))?;
            BTree::insert(ctx.tx(), &done, i, i)?;
            Ok(())
        });
        let runner = Runner::new(db.clone(), h, Policies::new());
        let jobs: Vec<_> = (0..JOBS)
            .map(|i| {
                transact(&db, |tx| {
                    let q = Queue::get(tx, "")?.unwrap();
                    Queue::put_job(tx, &q, Job::with_arguments("note", &i)?, PutOptions::new())
                })
                .unwrap()
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let (db, runner, stop) = (db.clone(), runner.clone(), Arc::clone(&stop));
                let options = WorkerOptions {
                    agent_size: batch,
                    batch_size: batch,
                    poll_interval: Duration::from_millis(50),
                    ..WorkerOptions::default()
                };
                thread::spawn(move || Worker::new(db, format!("w{w}"), runner, options).run(&stop))
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        while jobs.iter().any(|j| status(&db, *j) != Status::Completed) {
            assert!(Instant::now() < deadline, "the queue was not drained");
            thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::SeqCst);
        for w in workers {
            w.join().unwrap().unwrap();
        }
        for j in &jobs {
            let job = transact(&db, |tx| Ok(tx.get(j)?)).unwrap();
            assert!(
                matches!(job.result(), Some(Outcome::Value(_))),
                "{:?}",
                job.result()
            );
        }
        assert_eq!(count(&db, counter), JOBS as i64, "each effect once");
        let noted = transact(&db, |tx| Ok(BTree::len(tx, &done)?)).unwrap();
        assert_eq!(noted, JOBS);
        println!(
            "{}, batches of {batch}: {:?}",
            db.storage().describe(),
            db.commit_stats()
        );
    }
}

/// A runner finishing a parent's callbacks while one of them runs elsewhere (a
/// cleanup's adopter next to a stalled runner) leaves the parent in CALLBACKS:
/// the running callback's result completes it.
#[test]
fn finishing_callbacks_does_not_complete_a_parent_while_one_runs_elsewhere() {
    let g = GatedCallback::new();
    let mut w = g.worker("w");
    assert_eq!(w.poll_once().unwrap().started, [g.parent]);
    g.wait_callback_running();
    g.runner.finish_callbacks(&g.parent).unwrap();
    assert_eq!(status(&g.db, g.parent), Status::Callbacks);
    g.open_gate();
    w.wait_idle();
    g.assert_finished_once();
}
