//! Unit tests of the job record: its stored encoding, its state and its limits.
use super::*;
use crate::model::failure::FailureKind;

/// Arguments and values are serialized as bytes, which postcard encodes exactly
/// as it did the sequences of `u8` of the records already stored.
#[test]
fn byte_fields_keep_the_stored_encoding() {
    let bytes: Vec<u8> = (0..=255).collect();
    #[derive(Serialize)]
    enum PlainOutcome {
        Value(Vec<u8>),
    }
    assert_eq!(
        postcard::to_allocvec(&Outcome::Value(bytes.clone())).unwrap(),
        postcard::to_allocvec(&PlainOutcome::Value(bytes.clone())).unwrap()
    );
    let job = Job::new("h", bytes.clone()).unwrap();
    let encoded = postcard::to_allocvec(&job).unwrap();
    let prefix = postcard::to_allocvec(&("h", &bytes)).unwrap();
    assert_eq!(&encoded[..prefix.len()], &prefix[..]);
    let decoded: Job = postcard::from_bytes(&encoded).unwrap();
    assert_eq!(decoded, job);
}

/// Records written before `subject` existed end one field earlier; they read
/// as jobs without a subject.
#[test]
fn a_job_record_without_a_subject_reads_as_none() {
    let job = Job::with_arguments("h", &1u8).unwrap();
    let mut payload = postcard::to_allocvec(&job).unwrap();
    assert_eq!(payload.pop(), Some(0), "unique_key None is the last byte");
    assert_eq!(payload.pop(), Some(0), "priority 0 is the one before");
    assert_eq!(
        payload.pop(),
        Some(0),
        "no error backtraces is the one before"
    );
    assert_eq!(
        payload.pop(),
        Some(0),
        "attempt_limit None is the one before"
    );
    assert_eq!(payload.pop(), Some(0), "subject None is the one before");
    let old = zodiac_objects::record::encode(Job::TYPE_NAME, &[], &payload);
    let read = zodiac_objects::decode_value::<Job>(&old).unwrap().unwrap();
    assert_eq!((read.subject(), read), (None, job));
}

/// Records written before attempt limits and error backtraces existed end at
/// `subject`; their error entries read without a backtrace. Newer records keep
/// both.
#[test]
fn error_backtraces_and_the_attempt_limit_are_stored_after_subject() {
    let mut job = Job::with_arguments("h", &1u8).unwrap();
    let failure = Failure::new(FailureKind::Panic, "boom");
    job.record_error(Timestamp(1), &failure);
    job.record_error(Timestamp(2), &failure.clone().with_backtrace("at f\nat g"));
    // The same entries without backtraces: what the older layout reads as.
    let mut plain = job.clone();
    for e in &mut plain.errors {
        e.backtrace = None;
    }
    let backtraces = postcard::to_allocvec(&vec![None, Some("at f\nat g")]).unwrap();
    let stored = postcard::to_allocvec(&job).unwrap();
    assert!(
        stored[..stored.len() - 2].ends_with(&backtraces),
        "the backtraces are last but the priority"
    );
    let read = zodiac_objects::decode_value::<Job>(&zodiac_objects::record::encode(
        Job::TYPE_NAME,
        &[],
        &stored,
    ))
    .unwrap()
    .unwrap();
    assert_eq!(read.errors()[1].backtrace.as_deref(), Some("at f\nat g"));
    assert_eq!(read, job);
    let older = &stored[..stored.len() - 2 - backtraces.len() - 1];
    let read = zodiac_objects::decode_value::<Job>(&zodiac_objects::record::encode(
        Job::TYPE_NAME,
        &[],
        older,
    ))
    .unwrap()
    .unwrap();
    assert_eq!(read, plain);
    let limited = {
        let mut j = job.clone();
        let limit = AttemptLimit::new(3, crate::retry::Backoff::Fixed(Duration::from_secs(2)));
        j.set_attempt_limit(Some(limit.unwrap()));
        j
    };
    let bytes = postcard::to_allocvec(&limited).unwrap();
    assert_eq!(postcard::from_bytes::<Job>(&bytes).unwrap(), limited);
}

#[test]
fn typed_arguments_round_trip_and_a_wrong_type_is_an_error() {
    let job = Job::with_arguments("mail.send", &("ann".to_string(), 3u32)).unwrap();
    assert_eq!(job.handler(), "mail.send");
    assert_eq!(job.status(), Status::New);
    let (who, n): (String, u32) = job.arguments(Oid(7)).unwrap();
    assert_eq!((who.as_str(), n), ("ann", 3));
    let err = job
        .arguments::<(String, String, String)>(Oid(7))
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("the arguments of job 7 do not decode"),
        "{err}"
    );
}

#[test]
fn illegal_transitions_are_refused_and_leave_the_job_unchanged() {
    let mut job = Job::new("h", vec![]).unwrap();
    let now = Timestamp(10);
    let err = job.transition(Oid(1), Status::Completed, now).unwrap_err();
    assert_eq!(
        err.to_string(),
        "job 1: cannot go from NEW to COMPLETED: a job completes only after its \
         callbacks (from CALLBACKS)"
    );
    assert_eq!(job.status(), Status::New);
    job.transition(Oid(1), Status::Active, now).unwrap();
    assert_eq!((job.attempts(), job.active_start()), (1, Some(now)));
    job.push_callback(PRef::from_oid(Oid(2)));
    job.finish(Oid(1), Outcome::Value(vec![]), Timestamp(20))
        .unwrap();
    assert_eq!(job.status(), Status::Callbacks);
    assert_eq!(job.active_end(), Some(Timestamp(20)));
    job.transition(Oid(1), Status::Completed, now).unwrap();
    for to in Status::ALL {
        assert!(matches!(
            job.transition(Oid(1), to, now),
            Err(Error::IllegalTransition {
                from: Status::Completed,
                ..
            })
        ));
    }
}

/// The state is stored as the first version's `status` and `result`; a record
/// where they disagree (COMPLETED without a result) fails to decode.
#[test]
fn a_completed_record_without_a_result_is_a_decode_error() {
    let mut job = Job::new("h", vec![1, 2]).unwrap();
    job.transition(Oid(1), Status::Active, Timestamp(1))
        .unwrap();
    job.finish(Oid(1), Outcome::Value(vec![7]), Timestamp(2))
        .unwrap();
    let bytes = postcard::to_allocvec(&job).unwrap();
    let read: Job = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(read, job);
    assert_eq!(read.outcome(), Some(&Outcome::Value(vec![7])));
    let mut view = postcard::to_allocvec(&JobRecordRef {
        result: None,
        ..job_view(&job)
    })
    .unwrap();
    let err = postcard::from_bytes::<Job>(&view).unwrap_err();
    assert!(matches!(err, postcard::Error::SerdeDeCustom), "{err:?}");
    view = postcard::to_allocvec(&job_view(&job)).unwrap();
    assert_eq!(view, bytes, "the view is the stored layout");
}

fn job_view(job: &Job) -> JobRecordRef<'_> {
    JobRecordRef {
        handler: &job.handler,
        arguments: &job.arguments,
        status: job.status(),
        location: &job.location,
        result: job.outcome(),
        created: job.created,
        begin_after: job.begin_after,
        begin_by: job.begin_by,
        active_start: job.active_start,
        active_end: job.active_end,
        attempts: job.attempts,
        retry_policy: &job.retry_policy,
        retry_data: &job.retry_data,
        failure_level: job.failure_level,
        quota_names: &job.quota_names,
        callbacks: &job.callbacks,
        annotations: &job.annotations,
        errors: StoredErrors(&job.errors),
        errors_dropped: job.errors_dropped,
        awaiting: job.awaiting,
        subject: job.subject,
        attempt_limit: job.attempt_limit,
        error_backtraces: StoredBacktraces(&job.errors),
        priority: job.priority,
        unique_key: &job.unique_key,
    }
}

#[test]
fn limits_hold_at_their_boundaries() {
    assert!(Job::new("h".repeat(HANDLER_NAME_BYTES_MAX), vec![]).is_ok());
    assert!(matches!(
        Job::new("h".repeat(HANDLER_NAME_BYTES_MAX + 1), vec![]),
        Err(Error::LimitExceeded { .. })
    ));
    let mut job = Job::new("h", vec![]).unwrap();
    job.annotate("k", vec![0; ANNOTATION_BYTES_MAX - 1])
        .unwrap();
    assert!(job.annotate("k", vec![0; ANNOTATION_BYTES_MAX]).is_err());
    for i in 1..ANNOTATIONS_MAX {
        job.annotate(format!("k{i}"), "v").unwrap();
    }
    assert!(job.annotate("one-more", "v").is_err());
    job.annotate("k1", "replaced").unwrap();
    let failure = Failure::new(FailureKind::UserError, "boom");
    for i in 0..ERROR_HISTORY_MAX + 3 {
        job.record_error(Timestamp(i as u64), &failure);
    }
    assert_eq!(job.errors().len(), ERROR_HISTORY_MAX);
    assert_eq!(job.errors_dropped(), 3);
    assert_eq!(job.errors()[0].time, Timestamp(3));
    assert_eq!(job.errors()[0].summary, "user error: boom");
}
