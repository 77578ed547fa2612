//! Queues over real storages: claim order, scheduling, deadlines, cancellation,
//! put-back, and many producers and claimers at once.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use zodiac_async::limits::{LANE_PUT_BACK, SPREAD_WINDOW_PER_LANE};
use zodiac_async::{
    Claimer, Error, FailureKind, Job, Location, Outcome, PutOptions, Queue, Spread, Status,
    Timestamp, fail, transact,
};
use zodiac_objects::{Database, DatabaseOptions, PRef};
use zodiac_storage::{Durability, FileOptions, FileStorage, MemoryStorage, Storage};

/// Runs `check` against a memory storage and a file storage (without fsync).
fn each_storage(check: impl Fn(Database)) {
    check(open(Arc::new(MemoryStorage::new())));
    let dir = tempfile::tempdir().unwrap();
    let file = FileStorage::open(
        dir.path().join("x.zdb"),
        FileOptions::new().durability(Durability::Off),
    )
    .unwrap();
    check(open(Arc::new(file)));
}

fn open(storage: Arc<dyn Storage>) -> Database {
    let mut options = DatabaseOptions::default();
    options.retry.attempts_max = 1000;
    Database::open_with(storage, options).unwrap()
}

fn claimer(agent: &str) -> Claimer {
    Claimer {
        dispatcher: "dispatcher-1".into(),
        agent: agent.into(),
    }
}

fn put(db: &Database, handler: &str, options: PutOptions) -> PRef<Job> {
    transact(db, |tx| {
        let q = Queue::get_or_create(tx, "")?;
        Queue::put_job(tx, &q, Job::new(handler, vec![])?, options.clone())
    })
    .unwrap()
}

fn claim_at(db: &Database, now: Timestamp) -> zodiac_async::Claim {
    transact(db, |tx| {
        let q = Queue::get(tx, "")?.expect("queue exists");
        Queue::claim_at(tx, &q, &claimer("a"), now)
    })
    .unwrap()
}

fn job(db: &Database, job: PRef<Job>) -> Arc<Job> {
    transact(db, |tx| Ok(tx.get(&job)?)).unwrap()
}

fn queue_len(db: &Database) -> u64 {
    transact(db, |tx| {
        let q = Queue::get(tx, "")?.expect("queue exists");
        Queue::len(tx, &q)
    })
    .unwrap()
}

fn at(secs: u64) -> Timestamp {
    Timestamp::from_micros(secs * 1_000_000)
}

#[test]
fn claims_follow_begin_after_then_creation_and_assign_to_the_claimer() {
    each_storage(|db| {
        let c = put(&db, "c", PutOptions::new().begin_after(at(30)));
        let a = put(&db, "a", PutOptions::new().begin_after(at(10)));
        let b1 = put(&db, "b1", PutOptions::new().begin_after(at(20)));
        let b2 = put(&db, "b2", PutOptions::new().begin_after(at(20)));
        assert_eq!(queue_len(&db), 4);
        let order: Vec<_> = (0..4)
            .map(|_| claim_at(&db, at(100)).job.unwrap())
            .collect();
        assert_eq!(order, [a, b1, b2, c]);
        assert_eq!(claim_at(&db, at(100)).job, None);
        assert_eq!(queue_len(&db), 0);
        let j = job(&db, a);
        assert_eq!(j.status(), Status::Assigned);
        assert_eq!(
            j.location(),
            &Location::Agent {
                queue: "".into(),
                dispatcher: "dispatcher-1".into(),
                agent: "a".into()
            }
        );
    });
}

#[test]
fn a_scheduled_job_is_not_claimable_before_its_time() {
    each_storage(|db| {
        let later = put(&db, "later", PutOptions::new().begin_after(at(50)));
        assert_eq!(claim_at(&db, at(49)).job, None);
        assert_eq!(job(&db, later).status(), Status::Pending);
        // Exactly at begin_after it is due.
        assert_eq!(claim_at(&db, at(50)).job, Some(later));
        // By default a job may start at once.
        let now = put(&db, "now", PutOptions::new());
        assert_eq!(claim_at(&db, Timestamp::now()).job, Some(now));
    });
}

#[test]
fn a_job_past_its_deadline_completes_with_a_timeout_instead_of_running() {
    each_storage(|db| {
        let options = PutOptions::new()
            .begin_after(at(10))
            .begin_by(Duration::from_secs(5));
        let expired = put(&db, "expired", options.clone());
        let on_time = put(&db, "on-time", options.begin_after(at(12)));
        // At 15 s both are still within their deadlines (10+5 and 12+5).
        let claim = claim_at(&db, at(15));
        assert_eq!((claim.job, claim.expired), (Some(expired), vec![]));
        let claim = claim_at(&db, at(17).plus(Duration::from_micros(1)));
        assert_eq!(claim.job, None);
        assert_eq!(claim.expired, [on_time]);
        let j = job(&db, on_time);
        assert_eq!(j.status(), Status::Completed);
        assert_eq!(j.location(), &Location::None);
        let Some(Outcome::Failure(f)) = j.result() else {
            panic!("a failure result: {:?}", j.result());
        };
        assert_eq!(f.kind, FailureKind::Timeout);
        assert_eq!(j.errors().len(), 1);
        assert_eq!(queue_len(&db), 0);
    });
}

#[test]
fn pull_and_remove_cancel_pending_jobs_back_to_new() {
    each_storage(|db| {
        let first = put(&db, "first", PutOptions::new().begin_after(at(1)));
        let second = put(&db, "second", PutOptions::new().begin_after(at(2)));
        let pulled = transact(&db, |tx| {
            let q = Queue::get(tx, "")?.unwrap();
            Queue::pull(tx, &q)
        })
        .unwrap();
        assert_eq!(pulled, Some(first));
        transact(&db, |tx| Queue::remove(tx, &second)).unwrap();
        for j in [first, second] {
            let j = job(&db, j);
            assert_eq!((j.status(), j.location()), (Status::New, &Location::None));
        }
        assert_eq!(queue_len(&db), 0);
        assert_eq!(claim_at(&db, at(100)).job, None);
        // Removing again is refused; a pulled job can be put again.
        let err = transact(&db, |tx| Queue::remove(tx, &second)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::NotInQueue {
                    status: Status::New,
                    ..
                }
            ),
            "{err}"
        );
        transact(&db, |tx| {
            let q = Queue::get(tx, "")?.unwrap();
            Queue::put(tx, &q, &second, PutOptions::new().begin_after(at(3)))
        })
        .unwrap();
        assert_eq!(claim_at(&db, at(100)).job, Some(second));
    });
}

#[test]
fn only_new_jobs_can_be_put() {
    each_storage(|db| {
        let j = put(&db, "j", PutOptions::new());
        let err = transact(&db, |tx| {
            let q = Queue::get(tx, "")?.unwrap();
            Queue::put(tx, &q, &j, PutOptions::new())
        })
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::NotNew {
                    status: Status::Pending,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains("only a NEW job can be put"),
            "{err}"
        );
        assert_eq!(queue_len(&db), 1);
    });
}

#[test]
fn put_back_jobs_are_claimed_first_in_put_back_order() {
    each_storage(|db| {
        let jobs: Vec<_> = (0..4)
            .map(|i| put(&db, &format!("j{i}"), PutOptions::new().begin_after(at(i))))
            .collect();
        let a = claim_at(&db, at(100)).job.unwrap();
        let b = claim_at(&db, at(100)).job.unwrap();
        assert_eq!([a, b], [jobs[0], jobs[1]]);
        // b first, then a: put-backs keep their own FIFO, ahead of due jobs.
        transact(&db, |tx| Queue::put_back(tx, &b, None)).unwrap();
        thread::sleep(Duration::from_millis(2));
        transact(&db, |tx| Queue::put_back(tx, &a, None)).unwrap();
        let Location::Queue { key, .. } = job(&db, b).location().clone() else {
            panic!("back in the queue");
        };
        assert_eq!(key.lane, LANE_PUT_BACK);
        let now = Timestamp::now();
        let order: Vec<_> = (0..4).map(|_| claim_at(&db, now).job.unwrap()).collect();
        assert_eq!(order, [b, a, jobs[2], jobs[3]]);
        // A retry scheduled later waits for its time.
        transact(&db, |tx| Queue::put_back(tx, &a, Some(at(500)))).unwrap();
        assert_eq!(claim_at(&db, at(499)).job, None);
        assert_eq!(claim_at(&db, at(500)).job, Some(a));
        // Only claimed jobs go back.
        let fresh = transact(&db, |tx| {
            tx.add(Job::new("x", vec![])?).map_err(Error::from)
        })
        .unwrap();
        let err = transact(&db, |tx| Queue::put_back(tx, &fresh, None)).unwrap_err();
        assert!(matches!(err, Error::NotClaimed { .. }), "{err}");
    });
}

#[test]
fn fail_completes_unstarted_jobs_and_refuses_finished_ones() {
    each_storage(|db| {
        let pending = put(&db, "pending", PutOptions::new());
        transact(&db, |tx| fail(tx, &pending, None)).unwrap();
        let j = job(&db, pending);
        assert_eq!(j.status(), Status::Completed);
        assert!(matches!(j.result(), Some(Outcome::Failure(f)) if f.kind == FailureKind::Timeout));
        assert_eq!(queue_len(&db), 0);
        let err = transact(&db, |tx| fail(tx, &pending, None)).unwrap_err();
        assert!(
            err.to_string()
                .contains("a COMPLETED job never changes again"),
            "{err}"
        );
    });
}

/// Producers put jobs while claimers drain the queue, all on one database with
/// conflict retries. Every job must be claimed exactly once, none lost. The share of
/// attempts that conflicted, for puts and for claims that took a job, is printed
/// (run with `--nocapture` to see it); empty claims write nothing and are not counted.
#[test]
fn concurrent_producers_and_claimers_claim_every_job_exactly_once() {
    const PRODUCERS: usize = 3;
    const CLAIMERS: usize = 3;
    const JOBS_PER_PRODUCER: usize = 150;
    each_storage(|db| {
        transact(&db, |tx| Queue::get_or_create(tx, "")).unwrap();
        // Extra attempts (conflicts) of puts and of successful claims.
        let put_retries = Arc::new(AtomicU64::new(0));
        let claim_retries = Arc::new(AtomicU64::new(0));
        let produced = Arc::new(AtomicU64::new(0));
        let total = (PRODUCERS * JOBS_PER_PRODUCER) as u64;
        let mut producers = Vec::new();
        for p in 0..PRODUCERS {
            let (db, put_retries, produced) =
                (db.clone(), Arc::clone(&put_retries), Arc::clone(&produced));
            producers.push(thread::spawn(move || {
                let mut ids = Vec::new();
                for i in 0..JOBS_PER_PRODUCER {
                    let mut attempts = 0;
                    let job = transact(&db, |tx| {
                        attempts += 1;
                        let q = Queue::get(tx, "")?.unwrap();
                        let job = Job::with_arguments("work", &(p, i))?;
                        Queue::put_job(tx, &q, job, PutOptions::new())
                    })
                    .unwrap();
                    put_retries.fetch_add(attempts - 1, Ordering::Relaxed);
                    produced.fetch_add(1, Ordering::SeqCst);
                    ids.push(job);
                }
                ids
            }));
        }
        let claimed_count = Arc::new(AtomicU64::new(0));
        let mut claimers = Vec::new();
        for c in 0..CLAIMERS {
            let (db, claim_retries, produced, claimed_count) = (
                db.clone(),
                Arc::clone(&claim_retries),
                Arc::clone(&produced),
                Arc::clone(&claimed_count),
            );
            claimers.push(thread::spawn(move || {
                let me = claimer(&format!("agent-{c}"));
                let mut mine = Vec::new();
                while claimed_count.load(Ordering::SeqCst) < total {
                    let now = Timestamp::now();
                    let mut attempts = 0;
                    let claim = transact(&db, |tx| {
                        attempts += 1;
                        let q = Queue::get(tx, "")?.unwrap();
                        Queue::claim_at(tx, &q, &me, now)
                    })
                    .unwrap();
                    assert!(claim.expired.is_empty());
                    match claim.job {
                        Some(job) => {
                            claim_retries.fetch_add(attempts - 1, Ordering::Relaxed);
                            claimed_count.fetch_add(1, Ordering::SeqCst);
                            mine.push(job);
                        }
                        None if produced.load(Ordering::SeqCst) < total => thread::yield_now(),
                        None => thread::sleep(Duration::from_millis(1)),
                    }
                }
                (me.agent, mine)
            }));
        }
        let put_ids: HashSet<_> = producers
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(put_ids.len(), total as usize);
        let mut claimed = HashSet::new();
        for h in claimers {
            let (agent, mine) = h.join().unwrap();
            for j in mine {
                assert!(claimed.insert(j), "job {j:?} claimed twice");
                let job = job(&db, j);
                assert_eq!(job.status(), Status::Assigned);
                assert!(matches!(job.location(), Location::Agent { agent: a, .. } if *a == agent));
            }
        }
        assert_eq!(claimed, put_ids, "every job claimed exactly once");
        assert_eq!(queue_len(&db), 0);
        let rate = |retries: u64| {
            format!(
                "{retries} conflicted attempts ({:.1}% of {} attempts)",
                100.0 * retries as f64 / (total + retries) as f64,
                total + retries
            )
        };
        println!(
            "{}: {PRODUCERS} producers, {CLAIMERS} claimers, {total} jobs; puts: {}; claims: {}",
            db.storage().describe(),
            rate(put_retries.load(Ordering::Relaxed)),
            rate(claim_retries.load(Ordering::Relaxed)),
        );
    });
}

/// Drains a full queue with `claimers` threads, each claim transaction held open
/// `latency` (a stand-in for a storage round trip) before it commits. Returns the
/// conflicted attempts (of every claim, the final empty ones too); asserts every
/// job is claimed exactly once.
fn drain_full_queue(db: &Database, claimers: usize, jobs: usize, latency: Duration) -> u64 {
    let put_ids: HashSet<_> = transact(db, |tx| {
        let q = Queue::get_or_create(tx, "")?;
        (0..jobs)
            .map(|i| Queue::put_job(tx, &q, Job::with_arguments("w", &i)?, PutOptions::new()))
            .collect::<Result<HashSet<_>, _>>()
    })
    .unwrap();
    let retries = Arc::new(AtomicU64::new(0));
    let all_attempts = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..claimers)
        .map(|c| {
            let (db, retries, all_attempts) =
                (db.clone(), Arc::clone(&retries), Arc::clone(&all_attempts));
            thread::spawn(move || {
                let me = claimer(&format!("agent-{c}"));
                let mut mine = Vec::new();
                loop {
                    let mut attempts = 0;
                    let claim = transact(&db, |tx| {
                        attempts += 1;
                        let q = Queue::get(tx, "")?.unwrap();
                        let claim = Queue::claim(tx, &q, &me)?;
                        thread::sleep(latency);
                        Ok(claim)
                    })
                    .unwrap();
                    retries.fetch_add(attempts - 1, Ordering::Relaxed);
                    all_attempts.fetch_add(attempts, Ordering::Relaxed);
                    let Some(job) = claim.job else { break };
                    mine.push(job);
                }
                mine
            })
        })
        .collect();
    let mut claimed = HashSet::new();
    for h in handles {
        for j in h.join().unwrap() {
            assert!(claimed.insert(j), "job {j:?} claimed twice");
        }
    }
    assert_eq!(claimed, put_ids);
    assert_eq!(queue_len(db), 0);
    let retries = retries.load(Ordering::Relaxed);
    let attempts = all_attempts.load(Ordering::Relaxed);
    println!(
        "{}: {claimers} claimers draining {jobs} jobs, {latency:?} in each claim: {retries} \
         conflicted attempts ({:.1}% of {} attempts)",
        db.storage().describe(),
        100.0 * retries as f64 / attempts as f64,
        attempts
    );
    retries
}

/// The worst case for claims: the queue is full before the claimers start, so every
/// claimer wants the same head job at once. Nothing is lost or claimed twice, with
/// or without a delay inside each claim; the conflict rates are printed.
#[test]
fn claimers_racing_for_the_head_of_a_full_queue_lose_nothing() {
    each_storage(|db| {
        drain_full_queue(&db, 4, 400, Duration::ZERO);
    });
    let db = open(Arc::new(MemoryStorage::new()));
    drain_full_queue(&db, 4, 100, Duration::from_micros(500));
}

#[test]
fn a_quota_limits_held_jobs_and_frees_its_place_when_they_leave() {
    each_storage(|db| {
        transact(&db, |tx| {
            let q = Queue::get_or_create(tx, "")?;
            Queue::set_quota(tx, &q, "db", 1)
        })
        .unwrap();
        let a = put(&db, "a", PutOptions::new().begin_after(at(1)).quota("db"));
        let b = put(&db, "b", PutOptions::new().begin_after(at(2)).quota("db"));
        let c = put(&db, "c", PutOptions::new().begin_after(at(3)));
        assert_eq!(claim_at(&db, at(9)).job, Some(a));
        // b waits for the quota; c, without quotas, goes ahead of it.
        assert_eq!(claim_at(&db, at(9)).job, Some(c));
        assert_eq!(claim_at(&db, at(9)).job, None);
        assert_eq!(job(&db, b).status(), Status::Pending);
        let held = |db: &Database| {
            transact(db, |tx| {
                let q = Queue::get(tx, "")?.unwrap();
                let quota = Queue::quota(tx, &q, "db")?.unwrap();
                Ok(tx.get(&quota)?.held().clone())
            })
            .unwrap()
        };
        assert_eq!(held(&db), [a].into());
        // A put-back at the front keeps its quota place (b still waits), and
        // comes first again.
        transact(&db, |tx| Queue::put_back(tx, &a, None)).unwrap();
        assert_eq!(held(&db), [a].into());
        assert_eq!(claim_at(&db, Timestamp::now()).job, Some(a));
        assert_eq!(held(&db), [a].into());
        // Failing it frees the place for b.
        transact(&db, |tx| fail(tx, &a, None)).unwrap();
        assert_eq!(claim_at(&db, Timestamp::now()).job, Some(b));
        assert_eq!(held(&db), [b].into());
        // Room for two: a second quota job is claimable at once.
        let d = put(&db, "d", PutOptions::new().quota("db"));
        assert_eq!(claim_at(&db, Timestamp::now()).job, None);
        transact(&db, |tx| {
            let q = Queue::get(tx, "")?.unwrap();
            Queue::set_quota(tx, &q, "db", 2)
        })
        .unwrap();
        assert_eq!(claim_at(&db, Timestamp::now()).job, Some(d));
    });
}

/// The queue's every-job quota (its global concurrency) limits the jobs that
/// name no quota, put before it was set too, and is let go of when they leave.
#[test]
fn an_every_job_quota_limits_every_job_of_the_queue() {
    each_storage(|db| {
        let a = put(&db, "a", PutOptions::new().begin_after(at(1)));
        let b = put(&db, "b", PutOptions::new().begin_after(at(2)));
        let err = transact(&db, |tx| {
            let q = Queue::get(tx, "")?.unwrap();
            Queue::set_every_job_quota(tx, &q, Some("all"))
        })
        .unwrap_err();
        assert!(
            matches!(err, zodiac_async::Error::NoSuchQuota { .. }),
            "{err}"
        );
        transact(&db, |tx| {
            let q = Queue::get(tx, "")?.unwrap();
            Queue::set_quota(tx, &q, "all", 1)?;
            Queue::set_every_job_quota(tx, &q, Some("all"))
        })
        .unwrap();
        assert_eq!(claim_at(&db, at(9)).job, Some(a));
        assert_eq!(job(&db, a).quota_names(), ["all".to_string()]);
        assert_eq!(claim_at(&db, at(9)).job, None, "the quota is full");
        transact(&db, |tx| fail(tx, &a, None)).unwrap();
        assert_eq!(claim_at(&db, at(9)).job, Some(b));
        // Unset: the queue's jobs no longer wait for it.
        let c = put(&db, "c", PutOptions::new().begin_after(at(3)));
        assert_eq!(claim_at(&db, at(9)).job, None);
        transact(&db, |tx| {
            let q = Queue::get(tx, "")?.unwrap();
            Queue::set_every_job_quota(tx, &q, None)
        })
        .unwrap();
        assert_eq!(claim_at(&db, at(9)).job, Some(c));
        assert!(job(&db, c).quota_names().is_empty());
    });
}

#[test]
fn a_job_may_only_name_quotas_its_queue_has() {
    each_storage(|db| {
        transact(&db, |tx| Queue::get_or_create(tx, "")).unwrap();
        let err = transact(&db, |tx| {
            let q = Queue::get(tx, "")?.unwrap();
            Queue::put_job(
                tx,
                &q,
                Job::new("j", vec![])?,
                PutOptions::new().quota("nope"),
            )
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "queue \"\" has no quota named \"nope\"; create it with Queue::set_quota (`zodiac jobs quota STORE QUEUE NAME SIZE`)"
        );
        assert_eq!(queue_len(&db), 0);
    });
}

/// Claimers race for jobs limited by a quota of 2 while each releases its job
/// soon after; a watcher checks the quota never holds more than 2.
#[test]
fn concurrent_claims_never_overfill_a_quota() {
    const JOBS: usize = 60;
    let db = open(Arc::new(MemoryStorage::new()));
    transact(&db, |tx| {
        let q = Queue::get_or_create(tx, "")?;
        Queue::set_quota(tx, &q, "limited", 2)?;
        for i in 0..JOBS {
            let job = Job::with_arguments("w", &i)?;
            Queue::put_job(tx, &q, job, PutOptions::new().quota("limited"))?;
        }
        Ok(())
    })
    .unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (db, done) = (db.clone(), Arc::clone(&done));
        thread::spawn(move || {
            let mut most = 0;
            while done.load(Ordering::SeqCst) < JOBS as u64 {
                let held = transact(&db, |tx| {
                    let q = Queue::get(tx, "")?.unwrap();
                    let quota = Queue::quota(tx, &q, "limited")?.unwrap();
                    Ok(tx.get(&quota)?.held().len())
                })
                .unwrap();
                assert!(held <= 2, "the quota holds {held} jobs");
                most = most.max(held);
                thread::yield_now();
            }
            most
        })
    };
    let claimers: Vec<_> = (0..3)
        .map(|c| {
            let (db, done) = (db.clone(), Arc::clone(&done));
            thread::spawn(move || {
                let me = claimer(&format!("agent-{c}"));
                while done.load(Ordering::SeqCst) < JOBS as u64 {
                    let claim = transact(&db, |tx| {
                        let q = Queue::get(tx, "")?.unwrap();
                        Queue::claim(tx, &q, &me)
                    })
                    .unwrap();
                    let Some(job) = claim.job else {
                        thread::yield_now();
                        continue;
                    };
                    thread::sleep(Duration::from_micros(200));
                    transact(&db, |tx| fail(tx, &job, None)).unwrap();
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for h in claimers {
        h.join().unwrap();
    }
    let most = watcher.join().unwrap();
    assert!(most <= 2);
    assert_eq!(queue_len(&db), 0);
}

/// A spread claim takes the first claimable job of its lane within the window
/// (`lanes × SPREAD_WINDOW_PER_LANE` claimable jobs), else another claimable
/// one, and leaves the passed-over ones pending; distinct lanes take distinct
/// jobs; it never takes a job not due yet; a scan reads past its first few
/// entries when those cannot be taken (here: full quotas).
#[test]
fn spread_claims_take_their_lanes_jobs_and_stay_within_the_due_ones() {
    each_storage(|db| {
        const LANES: usize = 4;
        let jobs: Vec<_> = (0..12)
            .map(|i| put(&db, &format!("j{i}"), PutOptions::new().begin_after(at(i))))
            .collect();
        let later = put(&db, "later", PutOptions::new().begin_after(at(1_000)));
        let lane = |job: &PRef<Job>| Spread::lane_of(job.oid(), LANES);
        let spread = |spread: Spread, now: Timestamp| {
            transact(&db, |tx| {
                let q = Queue::get(tx, "")?.expect("queue exists");
                Queue::claim_spread(tx, &q, &claimer("a"), now, spread)
            })
            .unwrap()
            .job
        };
        let mut pending = jobs.clone();
        for l in [2, 0, 3, 1, 2, 2] {
            let expected = pending
                .iter()
                .take(LANES * SPREAD_WINDOW_PER_LANE)
                .find(|j| lane(j) == l)
                .or(pending.first())
                .copied();
            let claimed = spread(Spread::new(l, LANES), at(100));
            assert_eq!(claimed, expected, "lane {l}");
            pending.retain(|j| Some(*j) != claimed);
        }
        // The rest in strict order, then nothing: only a job not due yet is left.
        for expected in pending {
            assert_eq!(spread(Spread::NONE, at(100)), Some(expected));
        }
        for l in 0..LANES {
            let none = spread(Spread::new(l, LANES), at(100));
            assert_eq!(none, None, "only a job not due yet is left");
        }
        assert_eq!(job(&db, later).status(), Status::Pending);
        assert_eq!(queue_len(&db), 1);

        assert_eq!(
            spread(Spread::NONE, Timestamp::now()),
            Some(later),
            "due by now"
        );

        // Quota-blocked entries in front: the claim reads on past its first read.
        transact(&db, |tx| {
            let q = Queue::get(tx, "")?.expect("queue exists");
            Queue::set_quota(tx, &q, "one", 1)
        })
        .unwrap();
        let blocked: Vec<_> = (0..6)
            .map(|_| put(&db, "q", PutOptions::new().quota("one")))
            .collect();
        let free = put(&db, "free", PutOptions::new());
        assert_eq!(spread(Spread::NONE, Timestamp::now()), Some(blocked[0]));
        assert_eq!(
            spread(Spread::NONE, Timestamp::now()),
            Some(free),
            "past five blocked entries"
        );
    });
}

/// Lanes spread sequential oids (and oids allocated with a stride) evenly.
#[test]
fn lanes_spread_oids_of_any_stride_evenly() {
    for stride in [1u64, 2, 3, 4, 8] {
        let mut counts = [0usize; 4];
        for i in 0..4000u64 {
            counts[Spread::lane_of(zodiac_storage::Oid(100 + i * stride), 4)] += 1;
        }
        for c in counts {
            assert!((800..=1200).contains(&c), "stride {stride}: {counts:?}");
        }
    }
    assert_eq!(Spread::lane_of(zodiac_storage::Oid(12345), 1), 0);
}

/// Over a server, a claim prefetches the next job of its lane: it travels with the
/// claim's commit, so the next claim reads that job without a round trip.
#[test]
fn a_served_claim_prefetches_the_next_job_of_its_lane() {
    use zodiac_storage::{ClientOptions, ClientStorage, Server, ServerOptions, Tid};

    let server = Server::start(
        Arc::new(MemoryStorage::new()),
        "127.0.0.1:0",
        ServerOptions::new(),
    )
    .unwrap();
    let connect = || {
        let options = ClientOptions::new().wait_timeout(Duration::from_millis(500));
        Arc::new(ClientStorage::connect(&server.local_addr().to_string(), options).unwrap())
    };
    let producer = open(connect());
    let jobs: Vec<_> = (0..3)
        .map(|i| put(&producer, &format!("j{i}"), PutOptions::new()))
        .collect();
    let client = connect();
    let claimer_db = open(Arc::clone(&client) as Arc<dyn Storage>);
    let claimed = transact(&claimer_db, |tx| {
        let q = Queue::get(tx, "")?.expect("queue exists");
        Queue::claim_spread(tx, &q, &claimer("a"), Timestamp::now(), Spread::NONE)
    })
    .unwrap()
    .job;
    assert_eq!(claimed, Some(jobs[0]));
    // With the server gone, the claimer's storage has the next job, not the one after.
    server.shutdown();
    assert!(client.load(jobs[1].oid(), Tid::MAX).is_ok(), "prefetched");
    assert!(
        client.load(jobs[2].oid(), Tid::MAX).is_err(),
        "not prefetched"
    );
}

/// A batch's later claims (no fallback) keep to their lane, except at the end
/// of a priority: the last job of priority 0, of another lane, is taken before
/// the claimer's own jobs of priority 1 (the batch neither ends there nor
/// skips past it).
#[test]
fn a_claim_without_fallback_takes_the_last_jobs_of_a_priority_first() {
    each_storage(|db| {
        const LANES: usize = 2;
        let urgent = put(&db, "urgent", PutOptions::new().begin_after(at(1)));
        let mine = 1 - Spread::lane_of(urgent.oid(), LANES);
        let later: Vec<_> = (0..6)
            .map(|i| {
                let options = PutOptions::new().begin_after(at(2 + i)).priority(1);
                put(&db, &format!("later-{i}"), options)
            })
            .collect();
        let claim = || {
            let spread = Spread {
                fallback: false,
                ..Spread::new(mine, LANES)
            };
            transact(&db, |tx| {
                let q = Queue::get(tx, "")?.expect("queue exists");
                Queue::claim_spread(tx, &q, &claimer("a"), at(100), spread)
            })
            .unwrap()
            .job
        };
        assert_eq!(claim(), Some(urgent), "priority 0 first, whatever its lane");
        let next = claim().expect("a job of priority 1");
        assert_eq!(Spread::lane_of(next.oid(), LANES), mine);
        assert!(later.contains(&next));
    });
}
