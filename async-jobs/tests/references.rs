//! Every link the job layer stores is a reference: pack with garbage collection,
//! on the real file storage, keeps every job a worker holds, the jobs a quota
//! counts, a job awaiting another, a composite, and the jobs kept after they
//! completed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use zodiac_async::limits::COMPOSITE_ANNOTATION;
use zodiac_async::{
    Composite, Handlers, Job, Outcome, Policies, PutOptions, Queue, Runner, Status, Worker,
    WorkerOptions, parallel, part_results, transact,
};
use zodiac_objects::{Database, PRef};
use zodiac_storage::{Durability, FileOptions, FileStorage, Storage, Tid};

/// The objects layer's reference reader, as `zodiac pack` hands it to the storage.
fn references(record: &[u8]) -> Result<Vec<zodiac_storage::Oid>, String> {
    zodiac_objects::record::referenced_oids(record).map_err(|e| e.to_string())
}

type Gate = Arc<(Mutex<bool>, Condvar)>;

fn wait_gate(gate: &Gate) {
    let (open, cv) = &**gate;
    let mut open = open.lock().unwrap();
    while !*open {
        open = cv.wait(open).unwrap();
    }
}

fn open_gate(gate: &Gate) {
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
}

fn handlers(gate: &Gate) -> Handlers {
    let mut h = Handlers::new();
    let g = Arc::clone(gate);
    h.register("gated", move |_ctx, n: i64| {
        wait_gate(&g);
        Ok(n)
    });
    h.register("first", |ctx, n: i64| {
        let q = Queue::get(ctx.tx(), "")?.expect("queue");
        let second = Queue::put_job(
            ctx.tx(),
            &q,
            Job::with_arguments("gated", &n)?,
            PutOptions::new(),
        )?;
        ctx.await_job(second);
        Ok(0i64)
    });
    h.register("sum", |ctx, _: ()| {
        let me = PRef::from_oid(ctx.job);
        let results = part_results(ctx.tx(), &me)?.ok_or("not a postprocess job")?;
        let mut sum = 0i64;
        for r in results {
            if let Some(Outcome::Value(v)) = r {
                sum += postcard::from_bytes::<i64>(&v).map_err(|e| e.to_string())?;
            }
        }
        Ok(sum)
    });
    h
}

fn job(db: &Database, j: PRef<Job>) -> zodiac_async::Result<Arc<Job>> {
    transact(db, |tx| Ok(tx.get(&j)?))
}

fn value(j: &Job) -> i64 {
    match j.result() {
        Some(Outcome::Value(v)) => postcard::from_bytes(v).unwrap(),
        other => panic!("not a value: {other:?}"),
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// The story: `zodiac pack` (GC is its default) run while a worker held an
/// ACTIVE job reported "1 unreachable objects removed", and the job was gone: the
/// agent kept the ids of its jobs as plain numbers, which GC cannot see. The same
/// held for the jobs a quota counts, the job waiting for another (named only in
/// its resume callback's arguments) and a composite (named only in arguments and
/// an annotation).
#[test]
fn pack_with_gc_keeps_the_jobs_a_worker_holds_and_they_complete() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let file = Arc::new(
        FileStorage::open(
            &path,
            FileOptions::new().create(true).durability(Durability::Off),
        )
        .unwrap(),
    );
    let storage: Arc<dyn Storage> = file.clone();
    let db = Database::open(Arc::clone(&storage)).unwrap();
    let gate: Gate = Arc::default();
    let (held, first, post) = transact(&db, |tx| {
        let q = Queue::get_or_create(tx, "")?;
        Queue::set_quota(tx, &q, "q", 1)?;
        let held = Queue::put_job(
            tx,
            &q,
            Job::with_arguments("gated", &1i64)?,
            PutOptions::new().quota("q"),
        )?;
        let first = Queue::put_job(
            tx,
            &q,
            Job::with_arguments("first", &20i64)?,
            PutOptions::new(),
        )?;
        let parts = vec![
            Job::with_arguments("gated", &300i64)?,
            Job::with_arguments("gated", &400i64)?,
        ];
        let post = parallel(tx, &q, parts, Job::with_arguments("sum", &())?)?;
        Ok((held, first, post))
    })
    .unwrap();
    let runner = Runner::new(db.clone(), handlers(&gate), Policies::new());
    let options = WorkerOptions {
        agent_size: 8,
        poll_interval: Duration::from_millis(20),
        ..WorkerOptions::default()
    };
    let mut worker = Worker::new(db.clone(), "w1", runner, options);
    let stop = Arc::new(AtomicBool::new(false));
    let worker_thread = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || worker.run(&stop))
    };
    wait_for("the jobs to be running or waiting", || {
        let active = |j| job(&db, j).unwrap().status() == Status::Active;
        active(held) && job(&db, first).unwrap().awaiting().is_some()
    });
    let composite = {
        let post_job = job(&db, post).unwrap();
        let annotation = &post_job.annotations()[COMPOSITE_ANNOTATION];
        let oid = u64::from_le_bytes(annotation.as_slice().try_into().unwrap());
        PRef::<Composite>::from_oid(zodiac_storage::Oid(oid))
    };
    let awaited = job(&db, first).unwrap().awaiting().unwrap();
    wait_for("the awaited job to run", || {
        job(&db, awaited).unwrap().status() == Status::Active
    });

    let report = file.pack(Tid::MAX, Some(&references)).unwrap();
    // A fresh database reads through to the packed file (no cached objects).
    let fresh = Database::open(Arc::clone(&storage)).unwrap();
    for (what, j) in [
        ("held", held),
        ("waiting", first),
        ("awaited", awaited),
        ("post", post),
    ] {
        let loaded = job(&fresh, j);
        assert!(
            loaded.is_ok(),
            "pack removed {} objects, among them the {what} job {}: {:?}",
            report.objects_removed,
            j.oid(),
            loaded.err()
        );
    }
    let parts = transact(&fresh, |tx| Ok(tx.get(&composite)?.parts().to_vec()))
        .expect("the composite survives the pack");
    assert_eq!(parts.len(), 2);
    let quota = transact(&fresh, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        let quota = Queue::quota(tx, &q, "q")?.unwrap();
        Ok(tx.get(&quota)?.held().clone())
    })
    .unwrap();
    assert_eq!(quota.len(), 1, "the quota counts the held job");

    open_gate(&gate);
    wait_for("every job to complete", || {
        [held, first, post]
            .iter()
            .all(|j| job(&fresh, *j).unwrap().status() == Status::Completed)
    });
    assert_eq!(value(&job(&fresh, held).unwrap()), 1);
    assert_eq!(value(&job(&fresh, first).unwrap()), 20);
    assert_eq!(value(&job(&fresh, post).unwrap()), 700);

    // Completed jobs are kept (retention) through a second pack too.
    file.pack(Tid::MAX, Some(&references)).unwrap();
    let again = Database::open(Arc::clone(&storage)).unwrap();
    for j in [held, first, awaited, post] {
        assert_eq!(job(&again, j).unwrap().status(), Status::Completed);
    }
    stop.store(true, Ordering::SeqCst);
    worker_thread.join().unwrap().unwrap();
}

/// The story: a job cancelled with `zodiac jobs cancel`, or found past its
/// deadline (`begin_by`) by a claim, was held by nothing: `jobs list` and `jobs
/// status` did not show it, the next pack deleted it, and the callbacks of a
/// cancelled job never ran. Now both are COMPLETED jobs with their failure, kept
/// like the others, and their callbacks run.
#[test]
fn cancelled_and_expired_jobs_are_listed_counted_kept_by_pack_and_their_callbacks_run() {
    use zodiac_async::inspect::{self, JobFilter};
    use zodiac_async::{Failure, FailureKind, Timestamp, add_callback, fail};
    use zodiac_objects::Counter;

    let dir = tempfile::tempdir().unwrap();
    let file = Arc::new(
        FileStorage::open(
            dir.path().join("data.zdb"),
            FileOptions::new().create(true).durability(Durability::Off),
        )
        .unwrap(),
    );
    let storage: Arc<dyn Storage> = file.clone();
    let db = Database::open(Arc::clone(&storage)).unwrap();
    let long_ago = Timestamp::from_micros(Timestamp::now().as_micros() - 3_600_000_000);
    let (tally, cancelled, expired) = transact(&db, |tx| {
        let q = Queue::get_or_create(tx, "")?;
        let tally = tx.add(Counter::new(0))?;
        tx.set_root_entry("tally", tally)?;
        let cancelled = Queue::put_job(
            tx,
            &q,
            Job::with_arguments("gated", &1i64)?,
            PutOptions::new(),
        )?;
        let expired = Queue::put_job(
            tx,
            &q,
            Job::with_arguments("gated", &2i64)?,
            PutOptions::new()
                .begin_after(long_ago)
                .begin_by(Duration::from_secs(1)),
        )?;
        for job in [cancelled, expired] {
            add_callback(tx, &job, Job::with_arguments("tally", &())?)?;
        }
        Ok((tally, cancelled, expired))
    })
    .unwrap();
    transact(&db, |tx| {
        let why = Failure::new(FailureKind::Cancelled, "cancelled by the test");
        fail(tx, &cancelled, Some(why))
    })
    .unwrap();

    let gate: Gate = Arc::default();
    let mut h = handlers(&gate);
    h.register("tally", move |ctx, _: ()| {
        ctx.tx().modify(&tally, |c| c.add(1))?;
        Ok(())
    });
    let runner = Runner::new(db.clone(), h, Policies::new());
    let options = WorkerOptions {
        poll_interval: Duration::from_millis(20),
        ..WorkerOptions::default()
    };
    let mut worker = Worker::new(db.clone(), "w1", runner, options);
    let stop = Arc::new(AtomicBool::new(false));
    let worker_thread = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || worker.run(&stop))
    };
    let tallied = |db: &Database| transact(db, |tx| Ok(tx.get(&tally)?.value())).unwrap();
    wait_for("the callbacks of both jobs", || {
        tallied(&db) == 2
            && [cancelled, expired]
                .iter()
                .all(|j| job(&db, *j).unwrap().status() == Status::Completed)
    });
    stop.store(true, Ordering::SeqCst);
    worker_thread.join().unwrap().unwrap();

    file.pack(Tid::MAX, Some(&references)).unwrap();
    let fresh = Database::open(Arc::clone(&storage)).unwrap();
    let kind = |j| match job(&fresh, j).unwrap().result() {
        Some(Outcome::Failure(f)) => f.kind,
        other => panic!("not a failure: {other:?}"),
    };
    assert_eq!(kind(cancelled), FailureKind::Cancelled);
    assert_eq!(kind(expired), FailureKind::Timeout);
    assert_eq!(tallied(&fresh), 2, "each callback ran once");
    for j in [cancelled, expired] {
        let callback = job(&fresh, j).unwrap().callbacks()[0];
        assert_eq!(job(&fresh, callback).unwrap().status(), Status::Completed);
    }
    let (listed, counts) = transact(&fresh, |tx| {
        let listed = inspect::jobs(tx, &JobFilter::default(), 100)?;
        Ok((listed, inspect::counts(tx, "")?.unwrap()))
    })
    .unwrap();
    let mut ids: Vec<u64> = listed.iter().map(|s| s.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, [cancelled.oid().0, expired.oid().0], "{listed:?}");
    assert!(listed.iter().all(|s| s.status == Status::Completed));
    assert_eq!(counts.get(&Status::Completed), Some(&2), "{counts:?}");
    assert_eq!(counts.values().sum::<u64>(), 2, "{counts:?}");
}
