//! Listing jobs and dispatchers for tools.

use std::sync::Arc;
use std::time::Duration;

use zodiac_async::inspect::{self, JobFilter};
use zodiac_async::limits::DEATH_INTERVAL_DEFAULT;
use zodiac_async::{
    Claimer, Dispatchers, Handlers, Job, Policies, PutOptions, Queue, Runner, Status, Timestamp,
    transact,
};
use zodiac_objects::Database;
use zodiac_storage::MemoryStorage;

#[test]
fn jobs_are_listed_by_status_handler_and_holder_and_dispatchers_with_their_load() {
    let db = Database::open(Arc::new(MemoryStorage::new())).unwrap();
    let now = Timestamp::now();
    let (a, b, c) = transact(&db, |tx| {
        let q = Queue::get_or_create(tx, "")?;
        let a = Queue::put_job(
            tx,
            &q,
            Job::with_arguments("mail", &1u8)?,
            PutOptions::new(),
        )?;
        let b = Queue::put_job(
            tx,
            &q,
            Job::with_arguments("mail", &2u8)?,
            PutOptions::new(),
        )?;
        let c = Queue::put_job(
            tx,
            &q,
            Job::with_arguments("bill", &3u8)?,
            PutOptions::new(),
        )?;
        Dispatchers::activate(tx, &q, "d1", now, DEATH_INTERVAL_DEFAULT)?;
        Dispatchers::set_agent(tx, &q, "d1", "main", 3)?;
        Dispatchers::claim_for_agent(tx, &q, "d1", "main", Timestamp::now())?;
        Dispatchers::claim_for_agent(tx, &q, "d1", "main", Timestamp::now())?;
        Ok((a, b, c))
    })
    .unwrap();
    let mut h = Handlers::new();
    h.register("mail", |_ctx, _: u8| Ok(()));
    let runner = Runner::new(db.clone(), h, Policies::new());
    let me = Claimer {
        dispatcher: "d1".into(),
        agent: "main".into(),
    };
    runner.run(&a, Some(&me)).unwrap();
    // The next claim moves a to the completed jobs and takes c.
    transact(&db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Dispatchers::claim_for_agent(tx, &q, "d1", "main", Timestamp::now())
    })
    .unwrap();
    let list = |filter: JobFilter| {
        transact(&db, |tx| inspect::jobs(tx, &filter, 100))
            .unwrap()
            .into_iter()
            .map(|s| (s.id, s.status, s.holder, s.result))
            .collect::<Vec<_>>()
    };
    let all = list(JobFilter::default());
    assert_eq!(all.len(), 3);
    let holder = Some("d1/main".to_string());
    assert_eq!(
        list(JobFilter {
            status: Some(Status::Completed),
            ..JobFilter::default()
        }),
        [(
            a.oid().0,
            Status::Completed,
            holder.clone(),
            Some("value".into())
        )]
    );
    let assigned = list(JobFilter {
        status: Some(Status::Assigned),
        dispatcher: Some("d1".into()),
        ..JobFilter::default()
    });
    let ids: Vec<u64> = assigned.iter().map(|s| s.0).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&b.oid().0) && ids.contains(&c.oid().0));
    let bills = list(JobFilter {
        handler: Some("bill".into()),
        ..JobFilter::default()
    });
    assert_eq!(bills.len(), 1);
    assert!(
        list(JobFilter {
            created_until: Some(Timestamp::from_micros(1)),
            ..JobFilter::default()
        })
        .is_empty()
    );
    // The counts agree with the listing, without reading every job.
    let counts = transact(&db, |tx| inspect::counts(tx, ""))
        .unwrap()
        .unwrap();
    let mut listed = std::collections::BTreeMap::new();
    for (_, status, _, _) in &all {
        *listed.entry(*status).or_insert(0u64) += 1;
    }
    assert_eq!(counts, listed);
    assert_eq!(counts[&Status::Completed], 1);
    assert_eq!(
        transact(&db, |tx| inspect::counts(tx, "nope")).unwrap(),
        None
    );
    transact(&db, |tx| {
        let q = Queue::get(tx, "")?.unwrap();
        Queue::put_job(
            tx,
            &q,
            Job::with_arguments("mail", &4u8)?,
            PutOptions::new(),
        )
    })
    .unwrap();
    let counts = transact(&db, |tx| inspect::counts(tx, ""))
        .unwrap()
        .unwrap();
    assert_eq!(
        (counts[&Status::Pending], counts[&Status::Assigned]),
        (1, 2)
    );
    let limited = transact(&db, |tx| inspect::jobs(tx, &JobFilter::default(), 2)).unwrap();
    assert_eq!(limited.len(), 2);

    let ds = transact(&db, |tx| {
        inspect::dispatchers(tx, Timestamp::now(), DEATH_INTERVAL_DEFAULT)
    })
    .unwrap();
    assert_eq!(ds.len(), 1);
    assert!(ds[0].alive);
    assert_eq!(ds[0].agents, [("main".to_string(), 3, 2)]);
    let later = Timestamp::now().plus(Duration::from_secs(120));
    let ds = transact(&db, |tx| {
        inspect::dispatchers(tx, later, DEATH_INTERVAL_DEFAULT)
    })
    .unwrap();
    assert!(!ds[0].alive);
}
