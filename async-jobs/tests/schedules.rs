//! Recurring jobs: a schedule puts one job per tick of its cron expression,
//! however many workers poll; missed ticks coalesce into one job; removed and
//! replaced schedules; bad expressions refused at once.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use zodiac_async::limits::MISSED_COUNTED_MAX;
use zodiac_async::{
    Clock, Error, Handlers, ManualClock, Policies, Queue, Runner, ScheduleSpec, Status, Timestamp,
    Unique, Worker, add_schedule, put_due, remove_schedule, schedule, schedules, transact,
};
use zodiac_objects::Database;
use zodiac_storage::MemoryStorage;

fn handlers() -> Handlers {
    let mut h = Handlers::new();
    h.register("tick", |_ctx, n: u32| Ok(n));
    h
}

/// A database, and a clock at a whole second a little ahead of the system's
/// (so the jobs put are due at once).
fn fixture() -> (Database, ManualClock) {
    let db = Database::open(Arc::new(MemoryStorage::new())).unwrap();
    let secs = Timestamp::now().as_micros() / 1_000_000 + 1;
    (
        db,
        ManualClock::new(Timestamp::from_micros(secs * 1_000_000)),
    )
}

fn every_second(name: &str, queue: &str) -> ScheduleSpec {
    ScheduleSpec::new(
        name,
        "* * * * * *",
        queue,
        "tick",
        postcard::to_stdvec(&7u32).unwrap(),
    )
}

fn worker(db: &Database, clock: &ManualClock, id: &str, queue: &str) -> Worker {
    let runner = Runner::new(db.clone(), handlers(), Policies::new()).with_clock(clock.clone());
    Worker::builder(db.clone(), id, runner)
        .queues([queue.to_string()])
        .poll_interval(Duration::from_millis(50))
        .build()
}

fn puts_of(db: &Database, name: &str) -> (u64, u64) {
    transact(db, |tx| {
        let s = schedule(tx, name)?.unwrap();
        let s = tx.get(&s)?;
        Ok((s.puts(), s.missed()))
    })
    .unwrap()
}

#[test]
fn a_schedule_puts_one_job_per_tick_and_coalesces_missed_ticks() {
    let (db, clock) = fixture();
    transact(&db, |tx| {
        add_schedule(tx, &every_second("s", ""), clock.now(), false)
    })
    .unwrap();
    let mut w = worker(&db, &clock, "w1", "");
    // Not yet due: the first tick is the second after the add.
    assert!(w.poll_once().unwrap().scheduled.is_empty());
    clock.advance(Duration::from_secs(1));
    let report = w.poll_once().unwrap();
    assert_eq!(report.scheduled.len(), 1);
    // The same tick is not put twice.
    assert!(w.poll_once().unwrap().scheduled.is_empty());
    w.wait_idle();
    let job = report.scheduled[0];
    let (status, handler) = transact(&db, |tx| {
        let j = tx.get(&job)?;
        Ok((j.status(), j.handler().to_string()))
    })
    .unwrap();
    assert_eq!((status, handler.as_str()), (Status::Completed, "tick"));

    // Ten seconds without a poll: one job for the ten ticks, nine counted missed.
    clock.advance(Duration::from_secs(10));
    assert_eq!(w.poll_once().unwrap().scheduled.len(), 1);
    assert_eq!(puts_of(&db, "s"), (2, 9));
    let next = transact(&db, |tx| {
        let s = schedule(tx, "s")?.unwrap();
        Ok(tx.get(&s)?.next_tick())
    })
    .unwrap();
    assert_eq!(next, Some(clock.now().plus(Duration::from_secs(1))));
    w.wait_idle();
    w.shutdown().unwrap();
}

#[test]
fn racing_workers_put_each_tick_once() {
    let (db, clock) = fixture();
    transact(&db, |tx| {
        add_schedule(tx, &every_second("s", ""), clock.now(), false)
    })
    .unwrap();
    let s = transact(&db, |tx| Ok(schedule(tx, "s")?.unwrap())).unwrap();
    const THREADS: usize = 4;
    const TICKS: u64 = 30;
    for _ in 0..TICKS {
        clock.advance(Duration::from_secs(1));
        let now = clock.now();
        let barrier = Arc::new(Barrier::new(THREADS));
        let puts = (0..THREADS)
            .map(|_| {
                let (db, barrier) = (db.clone(), Arc::clone(&barrier));
                thread::spawn(move || {
                    barrier.wait();
                    transact(&db, |tx| put_due(tx, &s, now)).unwrap().is_some()
                })
            })
            .collect::<Vec<_>>();
        let put = puts
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|p| *p)
            .count();
        assert_eq!(put, 1, "one put per tick");
    }
    assert_eq!(puts_of(&db, "s"), (TICKS, 0));
    let pending = transact(&db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Queue::len(tx, &q)
    })
    .unwrap();
    assert_eq!(pending, TICKS);
}

#[test]
fn a_worker_puts_only_its_queues_schedules() {
    let (db, clock) = fixture();
    transact(&db, |tx| {
        add_schedule(tx, &every_second("other", "reports"), clock.now(), false)
    })
    .unwrap();
    let mut w = worker(&db, &clock, "w1", "");
    clock.advance(Duration::from_secs(2));
    assert!(w.poll_once().unwrap().scheduled.is_empty());
    let mut reports = worker(&db, &clock, "w2", "reports");
    assert_eq!(reports.poll_once().unwrap().scheduled.len(), 1);
    reports.wait_idle();
    reports.shutdown().unwrap();
    w.shutdown().unwrap();
}

#[test]
fn removed_schedules_put_nothing_and_replaced_ones_start_over() {
    let (db, clock) = fixture();
    transact(&db, |tx| {
        add_schedule(tx, &every_second("s", ""), clock.now(), false)
    })
    .unwrap();
    let s = transact(&db, |tx| Ok(schedule(tx, "s")?.unwrap())).unwrap();
    // A second add of the name is refused; a replace keeps the object.
    let again = transact(&db, |tx| {
        add_schedule(tx, &every_second("s", ""), clock.now(), false)
    });
    assert!(
        matches!(again, Err(Error::ScheduleExists { .. })),
        "{again:?}"
    );
    let mut hourly = every_second("s", "");
    hourly.expression = "@hourly".into();
    let replaced = transact(&db, |tx| add_schedule(tx, &hourly, clock.now(), true)).unwrap();
    assert_eq!(replaced, s);
    clock.advance(Duration::from_secs(5));
    assert_eq!(
        transact(&db, |tx| put_due(tx, &s, clock.now())).unwrap(),
        None
    );

    transact(&db, |tx| remove_schedule(tx, "s")).unwrap();
    clock.advance(Duration::from_secs(7200));
    // The removed record puts nothing even when reached directly.
    assert_eq!(
        transact(&db, |tx| put_due(tx, &s, clock.now())).unwrap(),
        None
    );
    assert!(transact(&db, schedules).unwrap().is_empty());
    let missing = transact(&db, |tx| remove_schedule(tx, "s"));
    assert!(
        matches!(missing, Err(Error::NoSuchSchedule { .. })),
        "{missing:?}"
    );
}

#[test]
fn bad_schedules_are_refused_before_anything_is_stored() {
    let (db, clock) = fixture();
    let mut bad = every_second("s", "");
    bad.expression = "every day".into();
    let err = transact(&db, |tx| add_schedule(tx, &bad, clock.now(), false)).unwrap_err();
    assert!(
        err.to_string().contains("cron expression \"every day\""),
        "{err}"
    );
    let mut long_name = every_second(&"n".repeat(300), "");
    long_name.expression = "@daily".into();
    let err = transact(&db, |tx| add_schedule(tx, &long_name, clock.now(), false)).unwrap_err();
    assert!(matches!(err, Error::LimitExceeded { .. }), "{err}");
    assert!(transact(&db, schedules).unwrap().is_empty());
}

#[test]
fn a_tick_whose_unique_key_is_held_puts_no_job_and_a_missing_quota_is_refused() {
    let (db, clock) = fixture();
    let mut spec = every_second("u", "");
    spec.unique = Some(Unique::new("one-at-a-time"));
    let s = transact(&db, |tx| add_schedule(tx, &spec, clock.now(), false)).unwrap();
    let put_next = |clock: &ManualClock| {
        clock.advance(Duration::from_secs(1));
        transact(&db, |tx| put_due(tx, &s, clock.now()))
            .unwrap()
            .expect("a tick is due")
    };
    let first = put_next(&clock);
    assert!(!first.held);
    // The first job has not run: the next tick puts none, and names it.
    let second = put_next(&clock);
    assert!(second.held);
    assert_eq!(second.job, first.job);
    let held = transact(&db, |tx| Ok(tx.get(&s)?.held())).unwrap();
    assert_eq!((puts_of(&db, "u"), held), ((1, 0), 1));
    // Once it completed, the key is free again.
    let mut w = worker(&db, &clock, "w1", "");
    w.poll_once().unwrap();
    w.wait_idle();
    let status = transact(&db, |tx| Ok(tx.get(&first.job)?.status())).unwrap();
    assert_eq!(status, Status::Completed);
    let third = put_next(&clock);
    assert!(!third.held);
    assert_ne!(third.job, first.job);
    assert_eq!(puts_of(&db, "u"), (2, 0));

    // A quota the queue lacks is refused when the schedule is added.
    let mut spec = every_second("q", "");
    spec.quota_names = vec!["absent".into()];
    let err = transact(&db, |tx| add_schedule(tx, &spec, clock.now(), false)).unwrap_err();
    assert!(
        matches!(&err, Error::NoSuchQuota { name, .. } if name == "absent"),
        "{err}"
    );
    assert!(transact(&db, |tx| schedule(tx, "q")).unwrap().is_none());
}

/// Past `MISSED_COUNTED_MAX` missed ticks the count stops, but the job is still
/// put for the latest tick, and the schedule's next tick is after now.
#[test]
fn a_downtime_past_the_counted_ticks_puts_the_latest_tick() {
    let (db, clock) = fixture();
    let s = transact(&db, |tx| {
        add_schedule(tx, &every_second("s", ""), clock.now(), false)
    })
    .unwrap();
    // Twice as many seconds as are counted, and half a second more.
    let down = Duration::from_secs(2 * MISSED_COUNTED_MAX) + Duration::from_millis(500);
    clock.advance(down);
    let now = clock.now();
    let tick = transact(&db, |tx| put_due(tx, &s, now)).unwrap().unwrap();
    assert_eq!(tick.missed, MISSED_COUNTED_MAX);
    let latest_second = Timestamp::from_micros(now.as_micros() / 1_000_000 * 1_000_000);
    assert_eq!(tick.tick, latest_second, "the job is for the latest tick");
    let next = transact(&db, |tx| Ok(tx.get(&s)?.next_tick())).unwrap();
    assert_eq!(next, Some(latest_second.plus(Duration::from_secs(1))));
}
