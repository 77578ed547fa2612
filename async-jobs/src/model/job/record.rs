//! The stored layout of a [`Job`]: written through a borrowed view of its
//! fields ([`JobRecordRef`], no copy per store) in the order of the first
//! version of the type, read through an owned record ([`JobRecord`]) checked on
//! the way in (see the invariants of the parent module).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use zodiac_objects::PRef;

use super::*;

/// An error history entry as stored in the entries' place (its backtrace is
/// stored at the end of the record: see the module docs).
#[derive(Serialize, Deserialize)]
struct StoredErrorEntry<S> {
    time: Timestamp,
    attempt: u32,
    summary: S,
}

/// The stored form of the error history's entries, borrowed for writing.
pub(super) struct StoredErrors<'a>(pub(super) &'a [ErrorEntry]);

impl Serialize for StoredErrors<'_> {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|e| StoredErrorEntry {
            time: e.time,
            attempt: e.attempt,
            summary: e.summary.as_str(),
        }))
    }
}

/// The error history's backtraces, in entry order, borrowed for writing.
pub(super) struct StoredBacktraces<'a>(pub(super) &'a [ErrorEntry]);

impl Serialize for StoredBacktraces<'_> {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|e| e.backtrace.as_deref()))
    }
}

/// The stored layout of a [`Job`], borrowed for writing: the fields in the order
/// of the first version of the type, the state as `status` and `result`.
#[derive(Serialize)]
pub(super) struct JobRecordRef<'a> {
    pub(super) handler: &'a str,
    /// Bytes (one copy, not a sequence of `u8`s: the same encoding in postcard).
    #[serde(with = "serde_bytes")]
    pub(super) arguments: &'a [u8],
    pub(super) status: Status,
    pub(super) location: &'a Location,
    pub(super) result: Option<&'a Outcome>,
    pub(super) created: Timestamp,
    pub(super) begin_after: Option<Timestamp>,
    pub(super) begin_by: Option<Duration>,
    pub(super) active_start: Option<Timestamp>,
    pub(super) active_end: Option<Timestamp>,
    pub(super) attempts: u32,
    pub(super) retry_policy: &'a Option<String>,
    pub(super) retry_data: &'a RetryData,
    pub(super) failure_level: FailureLevel,
    pub(super) quota_names: &'a [String],
    pub(super) callbacks: &'a [PRef<Job>],
    pub(super) annotations: &'a BTreeMap<String, Vec<u8>>,
    pub(super) errors: StoredErrors<'a>,
    pub(super) errors_dropped: u64,
    pub(super) awaiting: Option<PRef<Job>>,
    pub(super) subject: Option<PRef<()>>,
    pub(super) attempt_limit: Option<AttemptLimit>,
    pub(super) error_backtraces: StoredBacktraces<'a>,
    pub(super) priority: u8,
    pub(super) unique_key: &'a Option<String>,
}

/// The stored layout of a [`Job`], owned for reading (see [`JobRecordRef`]).
#[derive(Deserialize)]
struct JobRecord {
    handler: String,
    #[serde(with = "serde_bytes")]
    arguments: Vec<u8>,
    status: Status,
    location: Location,
    result: Option<Outcome>,
    created: Timestamp,
    begin_after: Option<Timestamp>,
    begin_by: Option<Duration>,
    active_start: Option<Timestamp>,
    active_end: Option<Timestamp>,
    attempts: u32,
    retry_policy: Option<String>,
    retry_data: RetryData,
    failure_level: FailureLevel,
    quota_names: Vec<String>,
    callbacks: Vec<PRef<Job>>,
    annotations: BTreeMap<String, Vec<u8>>,
    errors: Vec<StoredErrorEntry<String>>,
    errors_dropped: u64,
    awaiting: Option<PRef<Job>>,
    /// Added after version 1 of the type: old records read it as `None`.
    #[serde(default)]
    subject: Option<PRef<()>>,
    /// Added after `subject`: old records read it as `None`.
    #[serde(default)]
    attempt_limit: Option<AttemptLimit>,
    /// Added after `attempt_limit`: old records read it as empty.
    #[serde(default)]
    error_backtraces: Vec<Option<String>>,
    /// Added after `error_backtraces`: old records read it as 0.
    #[serde(default)]
    priority: u8,
    /// Added after `priority`: old records read it as `None`.
    #[serde(default)]
    unique_key: Option<String>,
}

impl Serialize for Job {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        JobRecordRef {
            handler: &self.handler,
            arguments: &self.arguments,
            status: self.state.status(),
            location: &self.location,
            result: self.state.outcome(),
            created: self.created,
            begin_after: self.begin_after,
            begin_by: self.begin_by,
            active_start: self.active_start,
            active_end: self.active_end,
            attempts: self.attempts,
            retry_policy: &self.retry_policy,
            retry_data: &self.retry_data,
            failure_level: self.failure_level,
            quota_names: &self.quota_names,
            callbacks: &self.callbacks,
            annotations: &self.annotations,
            errors: StoredErrors(&self.errors),
            errors_dropped: self.errors_dropped,
            awaiting: self.awaiting,
            subject: self.subject,
            attempt_limit: self.attempt_limit,
            error_backtraces: StoredBacktraces(&self.errors),
            priority: self.priority,
            unique_key: &self.unique_key,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Job {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Job, D::Error> {
        let r = JobRecord::deserialize(deserializer)?;
        let has_result = r.result.is_some();
        let state = State::from_stored(r.status, r.result).ok_or_else(|| {
            serde::de::Error::custom(format_args!(
                "a job record with status {} {} a result",
                r.status,
                if has_result { "and" } else { "but without" }
            ))
        })?;
        if r.error_backtraces.len() > r.errors.len() {
            return Err(serde::de::Error::custom(format_args!(
                "a job record with {} error backtraces for {} error entries",
                r.error_backtraces.len(),
                r.errors.len()
            )));
        }
        let mut backtraces = r.error_backtraces.into_iter();
        let errors = r
            .errors
            .into_iter()
            .map(|e| ErrorEntry {
                time: e.time,
                attempt: e.attempt,
                summary: e.summary,
                backtrace: backtraces.next().flatten(),
            })
            .collect();
        Ok(Job {
            handler: r.handler,
            arguments: r.arguments,
            state,
            location: r.location,
            created: r.created,
            begin_after: r.begin_after,
            begin_by: r.begin_by,
            active_start: r.active_start,
            active_end: r.active_end,
            attempts: r.attempts,
            retry_policy: r.retry_policy,
            retry_data: r.retry_data,
            failure_level: r.failure_level,
            quota_names: r.quota_names,
            callbacks: r.callbacks,
            annotations: r.annotations,
            errors,
            errors_dropped: r.errors_dropped,
            awaiting: r.awaiting,
            subject: r.subject,
            attempt_limit: r.attempt_limit,
            priority: r.priority,
            unique_key: r.unique_key,
        })
    }
}
