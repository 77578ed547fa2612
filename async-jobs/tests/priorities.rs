//! Job priorities (0 highest … 9): claims take a queue's due jobs of a higher
//! priority first, across put-back and scheduled jobs, across claimers spread
//! over the queue, and across the batches of a worker; a priority is kept
//! through put-backs and an operator's retry.

use std::sync::{Arc, Mutex};

use zodiac_async::limits::PRIORITY_MAX;
use zodiac_async::{
    Claimer, Error, Handlers, Job, Location, Policies, PutOptions, Queue, Runner, Spread,
    Timestamp, Worker, WorkerOptions, transact,
};
use zodiac_objects::{Database, PRef};
use zodiac_storage::MemoryStorage;

fn database() -> Database {
    let db = Database::open(Arc::new(MemoryStorage::new())).unwrap();
    transact(&db, |tx| Queue::get_or_create(tx, "")).unwrap();
    db
}

fn put(db: &Database, n: u32, options: PutOptions) -> PRef<Job> {
    transact(db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Queue::put_job(tx, &q, Job::with_arguments("note", &n)?, options.clone())
    })
    .unwrap()
}

fn claimer(agent: &str) -> Claimer {
    Claimer {
        dispatcher: "d1".into(),
        agent: agent.into(),
    }
}

fn claim(db: &Database, spread: Spread, now: Timestamp) -> Option<PRef<Job>> {
    transact(db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Queue::claim_spread(tx, &q, &claimer("main"), now, spread)
    })
    .unwrap()
    .job
}

fn priority_of(db: &Database, job: PRef<Job>) -> u8 {
    transact(db, |tx| Ok(tx.get(&job)?.priority())).unwrap()
}

#[test]
fn claims_take_higher_priorities_first_and_fifo_within_one() {
    let db = database();
    let order = [5u8, 0, 9, 0, 3, 5];
    let jobs: Vec<_> = order
        .iter()
        .map(|&p| put(&db, 0, PutOptions::new().priority(p)))
        .collect();
    let now = Timestamp::now();
    let claimed: Vec<_> = std::iter::from_fn(|| claim(&db, Spread::NONE, now)).collect();
    assert_eq!(
        claimed,
        [jobs[1], jobs[3], jobs[4], jobs[0], jobs[5], jobs[2]]
    );
}

#[test]
fn a_job_not_yet_due_does_not_hold_back_due_jobs_of_a_lower_priority() {
    let db = database();
    let later = Timestamp::now().plus(std::time::Duration::from_secs(3600));
    let scheduled = put(&db, 0, PutOptions::new().begin_after(later));
    let low = put(&db, 0, PutOptions::new().priority(7));
    let now = Timestamp::now();
    assert_eq!(claim(&db, Spread::NONE, now), Some(low));
    assert_eq!(claim(&db, Spread::NONE, now), None);
    assert_eq!(claim(&db, Spread::NONE, later), Some(scheduled));
}

#[test]
fn spread_claimers_take_no_lower_priority_while_a_higher_one_is_claimable() {
    let db = database();
    let low: Vec<_> = (0..16)
        .map(|n| put(&db, n, PutOptions::new().priority(4)))
        .collect();
    let high: Vec<_> = (0..16)
        .map(|n| put(&db, n, PutOptions::new().priority(1)))
        .collect();
    let now = Timestamp::now();
    let mut claimed = Vec::new();
    // Four claimers in turn, each preferring its own lane of the queue.
    for round in 0..32 {
        let job = claim(&db, Spread::new(round % 4, 4), now).expect("a job is claimable");
        claimed.push(job);
    }
    let priorities: Vec<u8> = claimed.iter().map(|j| priority_of(&db, *j)).collect();
    assert!(
        priorities[..16].iter().all(|&p| p == 1),
        "the first 16 claims take the 16 priority-1 jobs: {priorities:?}"
    );
    let mut first: Vec<_> = claimed[..16].to_vec();
    first.sort();
    let mut want = high.clone();
    want.sort();
    assert_eq!(first, want);
    assert!(claimed[16..].iter().all(|j| low.contains(j)));
}

#[test]
fn a_put_back_keeps_its_priority_behind_due_jobs_of_a_higher_one() {
    let db = database();
    let low = put(&db, 0, PutOptions::new().priority(6));
    let now = Timestamp::now();
    assert_eq!(claim(&db, Spread::NONE, now), Some(low));
    let high = put(&db, 1, PutOptions::new().priority(2));
    let same = put(&db, 2, PutOptions::new().priority(6));
    transact(&db, |tx| Queue::put_back(tx, &low, None)).unwrap();
    let key = match transact(&db, |tx| Ok(tx.get(&low)?.location().clone())).unwrap() {
        Location::Queue { key, .. } => key,
        other => panic!("{other:?}"),
    };
    assert_eq!((key.priority(), key.is_put_back()), (6, true));
    let now = Timestamp::now();
    let order: Vec<_> = std::iter::from_fn(|| claim(&db, Spread::NONE, now)).collect();
    // The higher priority first; then, within priority 6, the put-back first.
    assert_eq!(order, [high, low, same]);
}

#[test]
fn a_worker_runs_its_batches_in_priority_order() {
    let db = database();
    let ran = Arc::new(Mutex::new(Vec::new()));
    let mut handlers = Handlers::new();
    let log = Arc::clone(&ran);
    handlers.register("note", move |_ctx, n: u32| -> Result<u32, _> {
        log.lock().unwrap().push(n);
        Ok(n)
    });
    // Job n has priority n % 10: put in an order that is not priority order.
    for n in (0..40u32).rev() {
        put(&db, n, PutOptions::new().priority((n % 10) as u8));
    }
    let runner = Runner::new(db.clone(), handlers, Policies::new());
    let options = WorkerOptions {
        agent_size: 4,
        batch_size: 4,
        ..WorkerOptions::default()
    };
    let mut worker = Worker::new(db.clone(), "w1", runner, options);
    worker.poll_once().unwrap();
    worker.wait_idle();
    worker.shutdown().unwrap();
    let ran = ran.lock().unwrap().clone();
    assert_eq!(ran.len(), 40);
    let priorities: Vec<u32> = ran.iter().map(|n| n % 10).collect();
    let mut sorted = priorities.clone();
    sorted.sort();
    assert_eq!(priorities, sorted, "run order {ran:?}");
}

#[test]
fn a_priority_past_the_lowest_is_refused_at_put() {
    let db = database();
    let refused = transact(&db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Queue::put_job(
            tx,
            &q,
            Job::with_arguments("note", &0u32)?,
            PutOptions::new().priority(PRIORITY_MAX + 1),
        )
    });
    assert!(
        matches!(
            refused,
            Err(Error::LimitExceeded {
                len: 10,
                max: 9,
                ..
            })
        ),
        "{refused:?}"
    );
    let lowest = put(&db, 0, PutOptions::new().priority(PRIORITY_MAX));
    assert_eq!(priority_of(&db, lowest), PRIORITY_MAX);
}

/// Claimers that find no job of their own lane among the few claimable jobs
/// (the end of a priority, or of the queue) take the `lane mod n`-th of them
/// counted from the last, so they spread over those jobs instead of all
/// conflicting on the first, and keep away from the first ones, which their own
/// lanes' claimers take first.
#[test]
fn claimers_without_a_job_of_their_lane_spread_over_the_others() {
    let db = database();
    let lanes = 8;
    // Put jobs until some lane has none of them and is not the first pick.
    let mut jobs = Vec::new();
    let lane = loop {
        jobs.push(put(&db, jobs.len() as u32, PutOptions::new()));
        let used: Vec<usize> = jobs
            .iter()
            .map(|j| Spread::lane_of(j.oid(), lanes))
            .collect();
        let pick = |l: usize| jobs.len() - 1 - l % jobs.len();
        if let Some(l) = (0..lanes).find(|l| !used.contains(l) && pick(*l) != 0) {
            break l;
        }
        assert!(jobs.len() < 16, "no such lane for {used:?}");
    };
    let now = Timestamp::now();
    assert_eq!(
        claim(&db, Spread::new(lane, lanes), now),
        Some(jobs[jobs.len() - 1 - lane % jobs.len()])
    );
}
