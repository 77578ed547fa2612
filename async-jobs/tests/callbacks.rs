//! Callbacks: run after the parent's result is stored, in order, with the parent's
//! result; added while running or after completion, never lost.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zodiac_async::{
    Error, FailureKind, Handlers, Job, Location, Outcome, Policies, RunOutcome, Runner, Status,
    add_callback, transact,
};
use zodiac_objects::{Database, PRef, Persistent};
use zodiac_storage::MemoryStorage;

/// What the callbacks saw, in order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Log {
    lines: Vec<String>,
}
impl Persistent for Log {
    const TYPE_NAME: &'static str = "test.Log";
}

fn describe(outcome: &Option<Outcome>) -> String {
    match outcome {
        Some(Outcome::Value(v)) => format!("value {}", postcard::from_bytes::<i64>(v).unwrap()),
        Some(Outcome::Failure(f)) => format!("failure {}", f.kind),
        None => "nothing".into(),
    }
}

fn setup() -> (Database, PRef<Log>, Runner) {
    let db = Database::open(Arc::new(MemoryStorage::new())).unwrap();
    let log = transact(&db, |tx| Ok(tx.add(Log::default())?)).unwrap();
    let mut h = Handlers::new();
    h.register("answer", |_ctx, n: i64| Ok(n));
    h.register("fail", |_ctx, _: ()| -> Result<(), _> { Err("no".into()) });
    h.register("note", move |ctx, name: String| {
        let line = format!("{name}: {}", describe(&ctx.parent_result));
        ctx.tx().modify(&log, |l| l.lines.push(line))?;
        Ok(())
    });
    // A callback that adds another callback to its parent while callbacks run.
    h.register("note-and-add", move |ctx, name: String| {
        let line = format!("{name}: {}", describe(&ctx.parent_result));
        ctx.tx().modify(&log, |l| l.lines.push(line))?;
        let me = PRef::<Job>::from_oid(ctx.job);
        let Location::CallbackOf { parent } = ctx.tx().get(&me)?.location().clone() else {
            return Err("not a callback".into());
        };
        add_callback(
            ctx.tx(),
            &parent,
            Job::with_arguments("note", &"late".to_string())?,
        )?;
        Ok(())
    });
    h.register("boom", |_ctx, _: ()| -> Result<(), _> {
        Err("callback failed".into())
    });
    let runner = Runner::new(db.clone(), h, Policies::new());
    (db, log, runner)
}

fn lines(db: &Database, log: PRef<Log>) -> Vec<String> {
    transact(db, |tx| Ok(tx.get(&log)?.lines.clone())).unwrap()
}

fn job(db: &Database, j: PRef<Job>) -> Arc<Job> {
    transact(db, |tx| Ok(tx.get(&j)?)).unwrap()
}

fn new_job(db: &Database, handler: &str, args: &impl Serialize) -> PRef<Job> {
    transact(db, |tx| Ok(tx.add(Job::with_arguments(handler, args)?)?)).unwrap()
}

fn note(name: &str) -> Job {
    Job::with_arguments("note", &name.to_string()).unwrap()
}

#[test]
fn callbacks_run_in_order_with_the_parents_result_then_it_completes() {
    let (db, log, runner) = setup();
    let parent = new_job(&db, "answer", &42i64);
    let (a, b) = transact(&db, |tx| {
        Ok((
            add_callback(tx, &parent, note("a"))?,
            add_callback(tx, &parent, note("b"))?,
        ))
    })
    .unwrap();
    let outcome = runner.run(&parent, None).unwrap();
    assert!(matches!(outcome, RunOutcome::Finished(Outcome::Value(_))));
    assert_eq!(lines(&db, log), ["a: value 42", "b: value 42"]);
    assert_eq!(job(&db, parent).status(), Status::Completed);
    for cb in [a, b] {
        let cb = job(&db, cb);
        assert_eq!(cb.status(), Status::Completed);
        assert_eq!(cb.location(), &Location::CallbackOf { parent });
    }
}

#[test]
fn a_failed_parent_passes_its_failure_and_a_failed_callback_does_not_stop_the_rest() {
    let (db, log, runner) = setup();
    let parent = new_job(&db, "fail", &());
    let boom = transact(&db, |tx| {
        let boom = add_callback(tx, &parent, Job::with_arguments("boom", &())?)?;
        add_callback(tx, &parent, note("after"))?;
        Ok(boom)
    })
    .unwrap();
    runner.run(&parent, None).unwrap();
    assert_eq!(lines(&db, log), ["after: failure user error"]);
    let boom = job(&db, boom);
    assert_eq!(boom.status(), Status::Completed);
    assert_eq!(boom.failure_level(), zodiac_async::FailureLevel::Critical);
    assert!(matches!(boom.result(), Some(Outcome::Failure(f)) if f.kind == FailureKind::UserError));
    assert_eq!(job(&db, parent).status(), Status::Completed);
}

#[test]
fn callbacks_added_while_callbacks_run_are_picked_up() {
    let (db, log, runner) = setup();
    let parent = new_job(&db, "answer", &7i64);
    transact(&db, |tx| {
        add_callback(
            tx,
            &parent,
            Job::with_arguments("note-and-add", &"first".to_string())?,
        )
    })
    .unwrap();
    runner.run(&parent, None).unwrap();
    assert_eq!(lines(&db, log), ["first: value 7", "late: value 7"]);
    let p = job(&db, parent);
    assert_eq!((p.status(), p.callbacks().len()), (Status::Completed, 2));
}

#[test]
fn a_callback_added_to_a_completed_job_runs_at_once() {
    let (db, log, runner) = setup();
    let parent = new_job(&db, "answer", &1i64);
    runner.run(&parent, None).unwrap();
    assert_eq!(job(&db, parent).status(), Status::Completed);
    // Inside a plain transaction it is refused: nothing there could run it.
    let err = transact(&db, |tx| add_callback(tx, &parent, note("x"))).unwrap_err();
    assert!(matches!(err, Error::ParentCompleted { .. }), "{err}");
    let cb = runner.add_callback(&parent, note("late")).unwrap();
    assert_eq!(lines(&db, log), ["late: value 1"]);
    assert_eq!(job(&db, cb).status(), Status::Completed);
    assert_eq!(job(&db, parent).callbacks(), [cb]);
}

/// Callbacks added from another thread while the parent runs and completes: each
/// one runs exactly once, whichever side runs it.
#[test]
fn callbacks_added_concurrently_with_completion_are_never_lost() {
    const ADDED: usize = 20;
    let (db, log, runner) = setup();
    let parent = new_job(&db, "answer", &3i64);
    let adder = {
        let runner = runner.clone();
        std::thread::spawn(move || {
            (0..ADDED)
                .map(|i| {
                    runner
                        .add_callback(&parent, note(&format!("c{i}")))
                        .unwrap()
                })
                .collect::<Vec<_>>()
        })
    };
    runner.run(&parent, None).unwrap();
    let added = adder.join().unwrap();
    let mut seen = lines(&db, log);
    seen.sort();
    let mut want: Vec<_> = (0..ADDED).map(|i| format!("c{i}: value 3")).collect();
    want.sort();
    assert_eq!(seen, want, "every callback ran exactly once");
    for cb in added {
        assert_eq!(job(&db, cb).status(), Status::Completed);
    }
    let p = job(&db, parent);
    assert_eq!(
        (p.status(), p.callbacks().len()),
        (Status::Completed, ADDED)
    );
}

/// A job that expires in its queue keeps its callbacks: they run with the timeout
/// failure when a runner finishes them.
#[test]
fn an_expired_jobs_callbacks_run_with_its_timeout() {
    use zodiac_async::{Claimer, PutOptions, Queue, Timestamp};
    let (db, log, runner) = setup();
    let parent = transact(&db, |tx| {
        let q = Queue::get_or_create(tx, "")?;
        let options = PutOptions::new()
            .begin_after(Timestamp::from_micros(1_000_000))
            .begin_by(std::time::Duration::from_secs(1));
        let parent = Queue::put_job(tx, &q, Job::with_arguments("answer", &5i64)?, options)?;
        add_callback(tx, &parent, note("cb"))?;
        Ok(parent)
    })
    .unwrap();
    let claimer = Claimer {
        dispatcher: "d".into(),
        agent: "a".into(),
    };
    let claim = transact(&db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Queue::claim(tx, &q, &claimer)
    })
    .unwrap();
    assert_eq!((claim.job, claim.expired), (None, vec![parent]));
    assert_eq!(job(&db, parent).status(), Status::Callbacks);
    runner.finish_callbacks(&parent).unwrap();
    assert_eq!(lines(&db, log), ["cb: failure timeout"]);
    assert_eq!(job(&db, parent).status(), Status::Completed);
}

#[test]
fn add_callbacks_runs_the_branch_that_matches_the_parents_result() {
    let (db, log, runner) = setup();
    let ok = new_job(&db, "answer", &9i64);
    let failed = new_job(&db, "fail", &());
    for parent in [ok, failed] {
        transact(&db, |tx| {
            zodiac_async::add_callbacks(tx, &parent, Some(note("success")), Some(note("failure")))
        })
        .unwrap();
        // A branch left out does nothing.
        transact(&db, |tx| {
            zodiac_async::add_callbacks(tx, &parent, None, Some(note("only-failure")))
        })
        .unwrap();
        runner.run(&parent, None).unwrap();
        assert_eq!(job(&db, parent).status(), Status::Completed);
    }
    assert_eq!(
        lines(&db, log),
        [
            "success: value 9",
            "failure: failure user error",
            "only-failure: failure user error"
        ]
    );
}

/// The last callback's result and its parent's completion commit together, and
/// the parent's result starts the first callback: a job with one callback run
/// outside a queue costs three commits (parent started, parent result with the
/// callback started, callback result with the parent's completion), and the
/// parent's completion time is its last callback's.
#[test]
fn the_last_callbacks_result_completes_its_parent_in_the_same_commit() {
    let (db, log, runner) = setup();
    let parent = new_job(&db, "answer", &7i64);
    let cb = transact(&db, |tx| add_callback(tx, &parent, note("only"))).unwrap();
    let before = db.storage().last_tid();
    runner.run(&parent, None).unwrap();
    let commits = db
        .storage()
        .transactions(zodiac_storage::Tid(before.0 + 1), zodiac_storage::Tid::MAX)
        .unwrap()
        .count();
    assert_eq!(commits, 3);
    assert_eq!(lines(&db, log), ["only: value 7"]);
    let (p, c) = (job(&db, parent), job(&db, cb));
    assert_eq!(
        (p.status(), c.status()),
        (Status::Completed, Status::Completed)
    );
    let completed_in = |j: PRef<Job>| {
        db.storage()
            .history(j.oid(), 1)
            .unwrap()
            .first()
            .map(|r| r.tid)
    };
    assert_eq!(completed_in(parent), completed_in(cb));
}
