//! Queue operations against a trivially correct model: a sorted list of pending
//! entries. Random sequences of put, claim, put back and remove must give the same
//! claims, expirations and queue contents.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use zodiac_async::limits::{LANE_PUT_BACK, LANE_SCHEDULED};
use zodiac_async::{Claimer, Job, Location, PutOptions, Queue, Status, Timestamp, transact};
use zodiac_objects::{Database, PRef};
use zodiac_storage::MemoryStorage;

#[derive(Clone, Debug)]
enum Op {
    Put {
        begin_after: u64,
        begin_by: Option<u64>,
    },
    Claim {
        now: u64,
    },
    /// Put back the `i`th held job (modulo), now or at a time.
    PutBack {
        i: usize,
        at: Option<u64>,
    },
    /// Remove the `i`th pending job (modulo).
    Remove {
        i: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..20u64, proptest::option::of(1..10u64))
            .prop_map(|(begin_after, begin_by)| Op::Put { begin_after, begin_by }),
        3 => (0..40u64).prop_map(|now| Op::Claim { now }),
        1 => (any::<usize>(), proptest::option::of(0..40u64))
            .prop_map(|(i, at)| Op::PutBack { i, at }),
        1 => any::<usize>().prop_map(|i| Op::Remove { i }),
    ]
}

fn secs(s: u64) -> Timestamp {
    Timestamp::from_micros(s * 1_000_000)
}

/// A pending entry of the model: (lane, time, job), with the job's deadline.
#[derive(Clone, Debug)]
struct Pending {
    lane: u8,
    at: Timestamp,
    job: PRef<Job>,
    deadline: Option<Timestamp>,
}

fn run(ops: &[Op]) {
    let db = Database::open(Arc::new(MemoryStorage::new())).unwrap();
    let queue = transact(&db, |tx| Queue::get_or_create(tx, "")).unwrap();
    let claimer = Claimer {
        dispatcher: "d".into(),
        agent: "a".into(),
    };
    let mut pending: Vec<Pending> = Vec::new();
    let mut held: Vec<(PRef<Job>, Option<Timestamp>)> = Vec::new();
    for op in ops {
        match *op {
            Op::Put {
                begin_after,
                begin_by,
            } => {
                let mut options = PutOptions::new().begin_after(secs(begin_after));
                if let Some(by) = begin_by {
                    options = options.begin_by(Duration::from_secs(by));
                }
                let job = transact(&db, |tx| {
                    Queue::put_job(tx, &queue, Job::new("h", vec![])?, options.clone())
                })
                .unwrap();
                pending.push(Pending {
                    lane: LANE_SCHEDULED,
                    at: secs(begin_after),
                    job,
                    deadline: begin_by.map(|by| secs(begin_after + by)),
                });
            }
            Op::Claim { now } => {
                let now = secs(now);
                let claim = transact(&db, |tx| Queue::claim_at(tx, &queue, &claimer, now)).unwrap();
                pending.sort_by_key(|p| (p.lane, p.at, p.job.oid()));
                let (mut expired, mut claimed) = (Vec::new(), None);
                while let Some(p) = pending.first() {
                    if p.lane == LANE_SCHEDULED && p.at > now {
                        break;
                    }
                    let p = pending.remove(0);
                    if p.deadline.is_some_and(|d| now > d) {
                        expired.push(p.job);
                        continue;
                    }
                    claimed = Some(p.job);
                    held.push((p.job, p.deadline));
                    break;
                }
                assert_eq!(claim.job, claimed);
                assert_eq!(claim.expired, expired);
            }
            Op::PutBack { i, at } => {
                if held.is_empty() {
                    continue;
                }
                let (job, deadline) = held.remove(i % held.len());
                let at = at.map(secs);
                transact(&db, |tx| Queue::put_back(tx, &job, at)).unwrap();
                let location = transact(&db, |tx| Ok(tx.get(&job)?.location().clone())).unwrap();
                let Location::Queue { key, .. } = location else {
                    panic!("put back: {location:?}");
                };
                pending.push(Pending {
                    lane: if at.is_some() {
                        LANE_SCHEDULED
                    } else {
                        LANE_PUT_BACK
                    },
                    at: at.unwrap_or(key.at),
                    job,
                    deadline,
                });
                // Put-backs are ordered by their time in microseconds.
                std::thread::sleep(Duration::from_micros(2));
            }
            Op::Remove { i } => {
                if pending.is_empty() {
                    continue;
                }
                let p = pending.remove(i % pending.len());
                transact(&db, |tx| Queue::remove(tx, &p.job)).unwrap();
                let status = transact(&db, |tx| Ok(tx.get(&p.job)?.status())).unwrap();
                assert_eq!(status, Status::New);
            }
        }
        // The queue holds exactly the model's pending jobs, in claim order.
        pending.sort_by_key(|p| (p.lane, p.at, p.job.oid()));
        let stored = transact(&db, |tx| Queue::pending(tx, &queue, usize::MAX)).unwrap();
        let stored: Vec<_> = stored.into_iter().map(|(_, j)| j).collect();
        let model: Vec<_> = pending.iter().map(|p| p.job).collect();
        assert_eq!(stored, model);
        let len = transact(&db, |tx| Queue::len(tx, &queue)).unwrap();
        assert_eq!(len, pending.len() as u64);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn queue_matches_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(&ops);
    }
}
