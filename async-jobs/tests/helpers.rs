//! never_fail and try_n_times against real conflicts and errors.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zodiac_async::{Error, NeverFail, never_fail_with, transact, try_n_times};
use zodiac_objects::{Database, PRef, Persistent};
use zodiac_storage::MemoryStorage;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Tally {
    n: i64,
}
impl Persistent for Tally {
    const TYPE_NAME: &'static str = "test.Tally";
}

fn setup() -> (Database, PRef<Tally>) {
    let db = Database::open(Arc::new(MemoryStorage::new())).unwrap();
    let tally = transact(&db, |tx| Ok(tx.add(Tally { n: 0 })?)).unwrap();
    (db, tally)
}

fn tally(db: &Database, t: PRef<Tally>) -> i64 {
    transact(db, |tx| Ok(tx.get(&t)?.n)).unwrap()
}

/// Commits `+100` to the tally from another thread (overtaking the caller).
fn overtake(db: &Database, t: PRef<Tally>) {
    let db = db.clone();
    thread::spawn(move || transact(&db, |tx| Ok(tx.modify(&t, |x| x.n += 100)?)))
        .join()
        .unwrap()
        .unwrap();
}

#[test]
fn try_n_times_retries_conflicts_up_to_n_attempts() {
    let (db, t) = setup();
    let mut calls = 0;
    let r = try_n_times(&db, 5, |tx| {
        calls += 1;
        tx.modify(&t, |x| x.n += 1)?;
        if calls < 5 {
            overtake(&db, t);
        }
        Ok(calls)
    })
    .unwrap();
    assert_eq!(r, 5);
    assert_eq!(tally(&db, t), 401);

    let mut calls = 0;
    let err = try_n_times(&db, 5, |tx| {
        calls += 1;
        tx.modify(&t, |x| x.n += 1)?;
        overtake(&db, t);
        Ok(())
    })
    .unwrap_err();
    assert_eq!(calls, 5);
    assert!(
        matches!(
            err,
            Error::Objects(zodiac_objects::Error::RetriesExhausted { attempts: 5, .. })
        ),
        "{err}"
    );
    assert_eq!(
        tally(&db, t),
        901,
        "none of the failed attempts' writes landed"
    );

    // Other errors are not retried.
    let mut calls = 0;
    let err = try_n_times(&db, 5, |_| -> zodiac_async::Result<()> {
        calls += 1;
        Err(Error::NoSuchQueue { name: "x".into() })
    })
    .unwrap_err();
    assert_eq!(calls, 1);
    assert!(matches!(err, Error::NoSuchQueue { .. }));
}

#[test]
fn never_fail_retries_conflicts_and_errors_until_it_commits() {
    let (db, t) = setup();
    let options = NeverFail {
        wait_step: Duration::from_millis(1),
        wait_max: Duration::from_millis(3),
        ..NeverFail::default()
    };
    let mut calls = 0;
    let started = std::time::Instant::now();
    let r = never_fail_with(&db, &options, |tx| {
        calls += 1;
        tx.modify(&t, |x| x.n += 1)?;
        match calls {
            1..=6 => overtake(&db, t),
            7..=11 => return Err(Error::NoSuchQueue { name: "x".into() }),
            _ => {}
        }
        Ok(calls)
    });
    assert_eq!(r, 12);
    assert_eq!(
        tally(&db, t),
        601,
        "six overtaking commits and the one that landed"
    );
    // Waits of 1, 2, 3, 3, 3 ms after the five errors.
    assert!(started.elapsed() >= Duration::from_millis(12));
}
