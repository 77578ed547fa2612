//! serial and parallel composite jobs, run by a worker.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zodiac_async::{
    Handlers, Job, Outcome, Policies, Queue, Runner, Status, Worker, WorkerOptions, parallel,
    part_results, serial, transact,
};
use zodiac_objects::{Database, PRef, Persistent};
use zodiac_storage::MemoryStorage;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Log {
    lines: Vec<String>,
}
impl Persistent for Log {
    const TYPE_NAME: &'static str = "test.Log";
}

fn setup() -> (Database, PRef<Log>, Runner) {
    let db = Database::open(Arc::new(MemoryStorage::new())).unwrap();
    let log = transact(&db, |tx| {
        Queue::get_or_create(tx, "")?;
        Ok(tx.add(Log::default())?)
    })
    .unwrap();
    let mut h = Handlers::new();
    h.register("double", move |ctx, n: i64| {
        ctx.tx()
            .modify(&log, |l| l.lines.push(format!("part {n}")))?;
        Ok(n * 2)
    });
    h.register("sum", move |ctx, _: ()| {
        let me = PRef::<Job>::from_oid(ctx.job);
        let results = part_results(ctx.tx(), &me)?.ok_or("not a postprocess job")?;
        let mut total = 0i64;
        for r in results {
            match r {
                Some(Outcome::Value(v)) => total += postcard::from_bytes::<i64>(&v)?,
                other => return Err(format!("a part did not succeed: {other:?}").into()),
            }
        }
        ctx.tx()
            .modify(&log, |l| l.lines.push(format!("sum {total}")))?;
        Ok(total)
    });
    let runner = Runner::new(db.clone(), h, Policies::new());
    (db, log, runner)
}

fn drive(db: &Database, runner: Runner, post: PRef<Job>) -> Arc<Job> {
    let mut worker = Worker::new(db.clone(), "w1", runner, WorkerOptions::default());
    for _ in 0..20 {
        worker.poll_once().unwrap();
        worker.wait_idle();
        let p = transact(db, |tx| Ok(tx.get(&post)?)).unwrap();
        if p.status() == Status::Completed {
            return p;
        }
    }
    panic!("the postprocess job did not complete");
}

fn lines(db: &Database, log: PRef<Log>) -> Vec<String> {
    transact(db, |tx| Ok(tx.get(&log)?.lines.clone())).unwrap()
}

#[test]
fn parallel_parts_run_then_the_postprocess_runs_once_with_their_results() {
    let (db, log, runner) = setup();
    let post = transact(&db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        let parts = (1..=5)
            .map(|n| Job::with_arguments("double", &n))
            .collect::<Result<Vec<_>, _>>()?;
        parallel(tx, &q, parts, Job::with_arguments("sum", &())?)
    })
    .unwrap();
    let p = drive(&db, runner, post);
    assert!(
        matches!(p.result(), Some(Outcome::Value(v)) if postcard::from_bytes::<i64>(v).unwrap() == 30)
    );
    let lines = lines(&db, log);
    assert_eq!(lines.iter().filter(|l| l.starts_with("part")).count(), 5);
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("sum")).count(),
        1,
        "{lines:?}"
    );
    assert_eq!(lines.last().unwrap(), "sum 30");
}

#[test]
fn serial_parts_run_in_order_then_the_postprocess() {
    let (db, log, runner) = setup();
    let post = transact(&db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        let parts = [3i64, 1, 2]
            .iter()
            .map(|n| Job::with_arguments("double", n))
            .collect::<Result<Vec<_>, _>>()?;
        serial(tx, &q, parts, Job::with_arguments("sum", &())?)
    })
    .unwrap();
    let p = drive(&db, runner, post);
    assert!(matches!(p.result(), Some(Outcome::Value(_))));
    assert_eq!(lines(&db, log), ["part 3", "part 1", "part 2", "sum 12"]);
}

/// A worker dies after running some parts and claiming another; a second worker
/// finds it dead, takes the claimed part back and finishes: no finished part runs
/// again and the postprocess runs once.
#[test]
fn a_composite_survives_the_death_of_its_worker() {
    use std::time::Duration;
    use zodiac_async::limits::AGENT_NAME;
    use zodiac_async::{Dispatchers, Timestamp};
    let (db, log, runner) = setup();
    let post = transact(&db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        let parts = (1..=5)
            .map(|n| Job::with_arguments("double", &n))
            .collect::<Result<Vec<_>, _>>()?;
        parallel(tx, &q, parts, Job::with_arguments("sum", &())?)
    })
    .unwrap();
    let options = WorkerOptions {
        death_interval: Duration::from_millis(50),
        ..WorkerOptions::default()
    };
    let mut first = Worker::new(db.clone(), "first", runner.clone(), options.clone());
    // Parts start (the poll claims some, their runs claim more as they commit).
    assert!(!first.poll_once().unwrap().started.is_empty());
    first.wait_idle();
    // One more part claimed, not run, when it dies (if one is left).
    transact(&db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Dispatchers::claim_for_agent(tx, &q, "first", AGENT_NAME, Timestamp::now())
    })
    .unwrap();
    drop(first); // dies: no shutdown, no more pings
    std::thread::sleep(Duration::from_millis(100));
    let mut second = Worker::new(db.clone(), "second", runner, options);
    let mut cleaned = Vec::new();
    for _ in 0..20 {
        cleaned.extend(second.poll_once().unwrap().cleaned);
        second.wait_idle();
        if transact(&db, |tx| Ok(tx.get(&post)?.status())).unwrap() == Status::Completed {
            break;
        }
    }
    assert_eq!(cleaned, ["first"]);
    let lines = lines(&db, log);
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("part")).count(),
        5,
        "{lines:?}"
    );
    assert_eq!(lines.last().unwrap(), "sum 30");
    assert_eq!(lines.len(), 6);
}
