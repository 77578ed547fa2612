//! Dispatcher registry: activation, pings, death, agent claims, and the cleanup of
//! a dead dispatcher by a sibling.

use std::sync::Arc;
use std::time::Duration;

use zodiac_async::limits::{
    AGENT_NAME_BYTES_MAX, DEATH_INTERVAL_DEFAULT, DISPATCHER_ID_BYTES_MAX, LANE_PUT_BACK,
};
use zodiac_async::{
    Dispatchers, Error, Handlers, Job, Location, Outcome, Policies, PutOptions, Queue, RunOutcome,
    Runner, Status, Timestamp, transact,
};
use zodiac_objects::{Database, PRef};
use zodiac_storage::MemoryStorage;

const DEATH: Duration = DEATH_INTERVAL_DEFAULT;

fn setup(jobs: usize) -> (Database, Vec<PRef<Job>>) {
    let db = Database::open(Arc::new(MemoryStorage::new())).unwrap();
    let jobs = transact(&db, |tx| {
        let q = Queue::get_or_create(tx, "")?;
        (0..jobs)
            .map(|i| Queue::put_job(tx, &q, Job::with_arguments("noop", &i)?, PutOptions::new()))
            .collect()
    })
    .unwrap();
    (db, jobs)
}

fn secs_after(t: Timestamp, s: u64) -> Timestamp {
    t.plus(Duration::from_secs(s))
}

fn activate(db: &Database, id: &str, now: Timestamp) -> zodiac_async::Result<()> {
    transact(db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Dispatchers::activate(tx, &q, id, now, DEATH)?;
        Dispatchers::set_agent(tx, &q, id, "main", 2)?;
        Ok(())
    })
}

fn claim(db: &Database, id: &str, now: Timestamp) -> Option<PRef<Job>> {
    transact(db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Dispatchers::claim_for_agent(tx, &q, id, "main", now)
    })
    .unwrap()
}

fn job(db: &Database, j: PRef<Job>) -> Arc<Job> {
    transact(db, |tx| Ok(tx.get(&j)?)).unwrap()
}

#[test]
fn a_live_id_cannot_be_activated_twice_but_a_dead_one_can() {
    let (db, _) = setup(0);
    let t0 = Timestamp::now();
    activate(&db, "d1", t0).unwrap();
    let err = activate(&db, "d1", secs_after(t0, 59)).unwrap_err();
    assert!(matches!(err, Error::AlreadyActive { .. }), "{err}");
    assert!(err.to_string().contains("another process"), "{err}");
    // A ping keeps it alive; 60 s after the last ping it still is, 61 s not.
    let was_active = transact(&db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Dispatchers::ping(tx, &q, "d1", secs_after(t0, 30))
    })
    .unwrap();
    assert!(was_active);
    let dead = |at| {
        transact(&db, |tx| {
            let q = Queue::get(tx, "")?.unwrap();
            Dispatchers::dead(tx, &q, at, DEATH)
        })
        .unwrap()
    };
    assert!(dead(secs_after(t0, 90)).is_empty());
    assert_eq!(dead(secs_after(t0, 91)), ["d1"]);
    activate(&db, "d1", secs_after(t0, 91)).unwrap();
}

#[test]
fn an_agent_holds_at_most_its_size_until_jobs_complete() {
    let (db, jobs) = setup(4);
    let now = Timestamp::now();
    activate(&db, "d1", now).unwrap();
    assert_eq!(claim(&db, "d1", now), Some(jobs[0]));
    assert_eq!(claim(&db, "d1", now), Some(jobs[1]));
    assert_eq!(claim(&db, "d1", now), None, "size 2");
    let mut h = Handlers::new();
    h.register("noop", |_ctx, _: usize| Ok(()));
    let runner = Runner::new(db.clone(), h, Policies::new());
    let me = zodiac_async::Claimer {
        dispatcher: "d1".into(),
        agent: "main".into(),
    };
    assert!(matches!(
        runner.run(&jobs[0], Some(&me)).unwrap(),
        RunOutcome::Finished(Outcome::Value(_))
    ));
    assert_eq!(
        claim(&db, "d1", now),
        Some(jobs[2]),
        "the finished job left"
    );
    assert_eq!(claim(&db, "d1", now), None);
}

#[test]
fn a_sibling_puts_back_a_dead_dispatchers_jobs_once_and_the_dead_one_notices() {
    let (db, jobs) = setup(3);
    let t0 = Timestamp::now();
    activate(&db, "d1", t0).unwrap();
    activate(&db, "d2", t0).unwrap();
    assert_eq!(claim(&db, "d1", t0), Some(jobs[0]));
    assert_eq!(claim(&db, "d1", t0), Some(jobs[1]));
    let cleanup = |at| {
        transact(&db, |tx| {
            let q = Queue::get(tx, "")?.unwrap();
            Dispatchers::cleanup(tx, &q, "d1", &Policies::new(), at, DEATH)
        })
    };
    // Alive: refused.
    assert!(matches!(
        cleanup(secs_after(t0, 10)),
        Err(Error::AlreadyActive { .. })
    ));
    let later = secs_after(t0, 61);
    let report = cleanup(later).unwrap();
    assert_eq!(report.put_back, [jobs[0], jobs[1]]);
    for j in &jobs[..2] {
        let j = job(&db, *j);
        assert_eq!(j.status(), Status::Pending);
        assert!(matches!(j.location(), Location::Queue { key, .. } if key.lane == LANE_PUT_BACK));
    }
    // Once: a second cleanup finds it deactivated and nothing held.
    assert_eq!(cleanup(later).unwrap(), zodiac_async::Cleanup::default());
    // d2 gets the put-back jobs first.
    assert_eq!(claim(&db, "d2", later), Some(jobs[0]));
    // d1 comes back: its ping says it had been declared dead.
    let was_active = transact(&db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Dispatchers::ping(tx, &q, "d1", later)
    })
    .unwrap();
    assert!(!was_active);
}

#[test]
fn concurrent_cleanups_of_one_dead_dispatcher_happen_once() {
    let (db, jobs) = setup(2);
    let t0 = Timestamp::now();
    activate(&db, "dead", t0).unwrap();
    claim(&db, "dead", t0).unwrap();
    claim(&db, "dead", t0).unwrap();
    let later = secs_after(t0, 120);
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let db = db.clone();
            std::thread::spawn(move || {
                transact(&db, |tx| {
                    let q = Queue::get(tx, "")?.unwrap();
                    Dispatchers::cleanup(tx, &q, "dead", &Policies::new(), later, DEATH)
                })
                .unwrap()
            })
        })
        .collect();
    let put_back: usize = handles
        .into_iter()
        .map(|h| h.join().unwrap().put_back.len())
        .sum();
    assert_eq!(put_back, 2, "each job put back exactly once");
    let pending = transact(&db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Queue::pending(tx, &q, 10)
    })
    .unwrap();
    let mut pending: Vec<_> = pending.into_iter().map(|(_, j)| j).collect();
    pending.sort();
    assert_eq!(pending, jobs);
}

/// d1 stalls inside a running job; d2 finds d1 dead and cleans up: the ACTIVE job
/// gets its policy's interruption decision (back to the front of the queue), and
/// d1's run, when it resumes, stores nothing.
#[test]
fn cleanup_recovers_a_running_job_and_the_stalled_run_stores_nothing() {
    let (db, jobs) = setup(1);
    let t0 = Timestamp::now();
    activate(&db, "d1", t0).unwrap();
    assert_eq!(claim(&db, "d1", t0), Some(jobs[0]));
    let mut h = Handlers::new();
    let sibling = db.clone();
    h.register("noop", move |_ctx, _: usize| {
        let db = sibling.clone();
        std::thread::spawn(move || {
            transact(&db, |tx| {
                let q = Queue::get(tx, "")?.unwrap();
                let later = secs_after(t0, 61);
                Dispatchers::cleanup(tx, &q, "d1", &Policies::new(), later, DEATH)
            })
        })
        .join()
        .unwrap()?;
        Ok(())
    });
    let runner = Runner::new(db.clone(), h, Policies::new());
    let me = zodiac_async::Claimer {
        dispatcher: "d1".into(),
        agent: "main".into(),
    };
    assert_eq!(
        runner.run(&jobs[0], Some(&me)).unwrap(),
        RunOutcome::Abandoned
    );
    let j = job(&db, jobs[0]);
    assert_eq!(j.status(), Status::Pending);
    assert_eq!(j.errors().len(), 1);
    assert!(j.errors()[0].summary.starts_with("reassigned: "));
}

/// Dispatcher ids and agent names are bounded: a longer one is refused before
/// anything is stored.
#[test]
fn a_dispatcher_id_or_agent_name_past_its_limit_is_refused() {
    let (db, _) = setup(0);
    let now = Timestamp::now();
    let long_id = "d".repeat(DISPATCHER_ID_BYTES_MAX + 1);
    let err = activate(&db, &long_id, now).unwrap_err();
    assert!(
        matches!(
            err,
            Error::LimitExceeded {
                max: DISPATCHER_ID_BYTES_MAX,
                ..
            }
        ),
        "{err}"
    );
    let long_agent = "a".repeat(AGENT_NAME_BYTES_MAX + 1);
    let err = transact(&db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Dispatchers::activate(tx, &q, "d1", now, DEATH)?;
        Dispatchers::set_agent(tx, &q, "d1", &long_agent, 2)
    })
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::LimitExceeded {
                max: AGENT_NAME_BYTES_MAX,
                ..
            }
        ),
        "{err}"
    );
    let registered = transact(&db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Ok(Queue::dispatchers(tx, &q)?.len())
    })
    .unwrap();
    assert_eq!(registered, 0, "nothing was stored");
    // At the limit, both are taken.
    activate(&db, &"d".repeat(DISPATCHER_ID_BYTES_MAX), now).unwrap();
}
