//! Retry policies: what happens when a job's handler fails, when committing its
//! result fails, and when its process died while running it.
//!
//! A policy is stateless code plus persistent [`RetryData`] kept in the job, so
//! counts survive restarts. The built-in policies and their numbers (all fields of
//! the policy structs, so configurable):
//!
//! | policy | job error | commit error | interrupted |
//! |---|---|---|---|
//! | [`DefaultPolicy`] (`"default"`, queue jobs) | conflict: retry at once, up to 4 retries (5 attempts) per run; disconnected: forever, waiting 5, 10, … s capped at 60 s; other: give up | the same, sharing the job-error counters | retry for interruptions 1–9; the 10th gives up with an "aborted" failure (count kept for the job's life) |
//! | [`ForeverPolicy`] (`"forever"`, callbacks and recovery jobs) | conflict: retry at once, forever; disconnected: forever, 5…60 s; other: give up | conflict and disconnected as for job errors; other: forever, waiting 0, 1, 2, … s capped at 60 s, logged CRITICAL at the 1st and every 5th | always retry |
//! | [`NeverPolicy`] (`"never"`, non-transactional work) | give up | give up | give up with "aborted" |
//!
//! Invariants:
//! - Per-run counters (`RetryData::run`) are cleared when a run starts; life
//!   counters (`RetryData::life`) are never cleared. [`DefaultPolicy`] counts
//!   disconnects for the job's life: its retries after a disconnect are new runs
//!   (the job goes back to its queue), and the wait must still grow.
//! - A job's deadline also bounds retries: [`bounded`] turns any retry that would
//!   start after the deadline into a give-up with a timeout failure.
//! - A job's [`AttemptLimit`] (its own, or its queue's default at put) extends
//!   its policy for the handler's own errors only ([`is_handler_error`]: a user
//!   error or a panic): [`with_attempt_limit`] turns the policy's give-up after
//!   attempt `n` into a retry after the backoff's wait while `n` is below the
//!   limit. Every other decision of the policy stands.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
pub use crate::model::attempt_limit::{ATTEMPTS_MAX, AttemptLimit, Backoff};
use crate::model::failure::{Failure, FailureKind};
use crate::model::job::Job;
use crate::time::Timestamp;

pub use crate::model::retry_data::RetryData;

/// Name of [`DefaultPolicy`] in [`Policies`].
pub const DEFAULT: &str = "default";
/// Name of [`ForeverPolicy`] in [`Policies`].
pub const FOREVER: &str = "forever";
/// Name of [`NeverPolicy`] in [`Policies`].
pub const NEVER: &str = "never";

/// Counter keys the built-in policies use.
pub const CONFLICTS: &str = "conflicts";
/// The counter of lost storage connections.
pub const DISCONNECTS: &str = "disconnects";
/// The counter of commit errors that are neither conflicts nor lost connections.
pub const OTHER_COMMIT_ERRORS: &str = "other-commit-errors";
/// The counter of interrupted runs.
pub const INTERRUPTIONS: &str = "interruptions";

/// What a policy decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Retry at once (a put-back goes to the front of the queue).
    Retry,
    /// Retry after waiting this long.
    RetryAfter(Duration),
    /// Retry at this time.
    RetryAt(Timestamp),
    /// Stop: this failure becomes the job's result.
    GiveUp(Failure),
}

impl Decision {
    /// Whether the job runs again (now or later).
    pub fn is_retry(&self) -> bool {
        !matches!(self, Decision::GiveUp(_))
    }
}

/// A retry policy. Implement it for custom behaviour and register it in [`Policies`].
pub trait RetryPolicy: Send + Sync {
    /// The handler failed with `failure` (its writes are already rolled back).
    fn on_job_error(&self, data: &mut RetryData, failure: &Failure) -> Decision;
    /// Committing the job's outcome failed with `failure`.
    fn on_commit_error(&self, data: &mut RetryData, failure: &Failure) -> Decision;
    /// The process running the job died (found by recovery).
    fn on_interrupted(&self, data: &mut RetryData) -> Decision;
}

/// Wait `step × n` for the `n`th occurrence, capped at `max`.
fn linear(step: Duration, n: u32, max: Duration) -> Duration {
    step.saturating_mul(n).min(max)
}

/// The policy for queue jobs. See the module docs for the numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefaultPolicy {
    /// Conflicts retried per run (4: five attempts in all).
    pub conflict_retries_max: u32,
    /// Wait after the `n`th disconnect: `n × disconnect_wait_step` …
    pub disconnect_wait_step: Duration,
    /// … capped at this.
    pub disconnect_wait_max: Duration,
    /// Interruptions retried (9: the 10th gives up).
    pub interruption_retries_max: u32,
}

impl Default for DefaultPolicy {
    fn default() -> Self {
        DefaultPolicy {
            conflict_retries_max: 4,
            disconnect_wait_step: Duration::from_secs(5),
            disconnect_wait_max: Duration::from_secs(60),
            interruption_retries_max: 9,
        }
    }
}

impl DefaultPolicy {
    fn on_error(&self, data: &mut RetryData, failure: &Failure) -> Decision {
        match failure.kind {
            FailureKind::Conflict => {
                if data.bump_run(CONFLICTS) <= self.conflict_retries_max {
                    Decision::Retry
                } else {
                    Decision::GiveUp(failure.clone())
                }
            }
            FailureKind::Disconnected => {
                // Counted for the job's life: a queue job waits by going back to its
                // queue, and each retry is a new run, so a per-run count would wait
                // the first step every time instead of backing off.
                let n = data.bump_life(DISCONNECTS);
                Decision::RetryAfter(linear(
                    self.disconnect_wait_step,
                    n,
                    self.disconnect_wait_max,
                ))
            }
            _ => Decision::GiveUp(failure.clone()),
        }
    }
}

impl RetryPolicy for DefaultPolicy {
    fn on_job_error(&self, data: &mut RetryData, failure: &Failure) -> Decision {
        self.on_error(data, failure)
    }

    fn on_commit_error(&self, data: &mut RetryData, failure: &Failure) -> Decision {
        self.on_error(data, failure)
    }

    fn on_interrupted(&self, data: &mut RetryData) -> Decision {
        let n = data.bump_life(INTERRUPTIONS);
        if n <= self.interruption_retries_max {
            Decision::Retry
        } else {
            Decision::GiveUp(Failure::new(
                FailureKind::Aborted,
                format!("the job was interrupted {n} times; giving up"),
            ))
        }
    }
}

/// The policy for callbacks and recovery jobs: retry everything but handler errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeverPolicy {
    /// The wait after the first lost connection, growing by as much after each.
    pub disconnect_wait_step: Duration,
    /// The longest wait after a lost connection.
    pub disconnect_wait_max: Duration,
    /// Wait after the `n`th other commit error: `(n - 1) × other_wait_step` …
    pub other_wait_step: Duration,
    /// … capped at this.
    pub other_wait_max: Duration,
    /// Other commit errors are logged CRITICAL at the 1st and every this-many-th.
    pub other_log_every: u32,
}

impl Default for ForeverPolicy {
    fn default() -> Self {
        ForeverPolicy {
            disconnect_wait_step: Duration::from_secs(5),
            disconnect_wait_max: Duration::from_secs(60),
            other_wait_step: Duration::from_secs(1),
            other_wait_max: Duration::from_secs(60),
            other_log_every: 5,
        }
    }
}

impl ForeverPolicy {
    /// Whether the `n`th other commit error is logged CRITICAL.
    pub fn logs_other_error(&self, n: u32) -> bool {
        n == 1 || (self.other_log_every > 0 && n.is_multiple_of(self.other_log_every))
    }
}

impl RetryPolicy for ForeverPolicy {
    fn on_job_error(&self, data: &mut RetryData, failure: &Failure) -> Decision {
        match failure.kind {
            FailureKind::Conflict => {
                data.bump_run(CONFLICTS);
                Decision::Retry
            }
            FailureKind::Disconnected => {
                let n = data.bump_run(DISCONNECTS);
                Decision::RetryAfter(linear(
                    self.disconnect_wait_step,
                    n,
                    self.disconnect_wait_max,
                ))
            }
            _ => Decision::GiveUp(failure.clone()),
        }
    }

    fn on_commit_error(&self, data: &mut RetryData, failure: &Failure) -> Decision {
        match failure.kind {
            FailureKind::Conflict | FailureKind::Disconnected => self.on_job_error(data, failure),
            _ => {
                let n = data.bump_run(OTHER_COMMIT_ERRORS);
                if self.logs_other_error(n) {
                    log::error!(
                        target: "zodiac_async::events",
                        "critical: committing a job's outcome failed {n} time(s), retrying \
                         forever: {failure}"
                    );
                }
                Decision::RetryAfter(linear(self.other_wait_step, n - 1, self.other_wait_max))
            }
        }
    }

    fn on_interrupted(&self, data: &mut RetryData) -> Decision {
        data.bump_life(INTERRUPTIONS);
        Decision::Retry
    }
}

/// The policy for non-transactional work: never retry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NeverPolicy;

impl RetryPolicy for NeverPolicy {
    fn on_job_error(&self, _: &mut RetryData, failure: &Failure) -> Decision {
        Decision::GiveUp(failure.clone())
    }

    fn on_commit_error(&self, _: &mut RetryData, failure: &Failure) -> Decision {
        Decision::GiveUp(failure.clone())
    }

    fn on_interrupted(&self, data: &mut RetryData) -> Decision {
        data.bump_life(INTERRUPTIONS);
        Decision::GiveUp(Failure::new(
            FailureKind::Aborted,
            "the job was interrupted and its policy never retries",
        ))
    }
}

/// `decision`, unless it retries past `deadline`: then a give-up with a timeout.
pub fn bounded(decision: Decision, deadline: Option<Timestamp>, now: Timestamp) -> Decision {
    let Some(deadline) = deadline else {
        return decision;
    };
    let start = match &decision {
        Decision::GiveUp(_) => return decision,
        Decision::Retry => now,
        Decision::RetryAfter(d) => now.plus(*d),
        Decision::RetryAt(t) => *t,
    };
    if start > deadline {
        Decision::GiveUp(Failure::timeout(format!(
            "the deadline {deadline} passed (a retry would start at {start}); not retried"
        )))
    } else {
        decision
    }
}

/// Whether `kind` is the handler's own failure (its error or its panic): what an
/// [`AttemptLimit`] retries.
pub fn is_handler_error(kind: FailureKind) -> bool {
    matches!(kind, FailureKind::UserError | FailureKind::Panic)
}

/// `decision`, the policy's answer to `failure` on run `attempt` of a job,
/// extended by the job's `limit`: a give-up on a handler error before the last
/// allowed attempt becomes a retry after the backoff's wait.
pub fn with_attempt_limit(
    decision: Decision,
    failure: &Failure,
    limit: Option<&AttemptLimit>,
    attempt: u32,
) -> Decision {
    match (limit, &decision) {
        (Some(limit), Decision::GiveUp(_))
            if is_handler_error(failure.kind) && limit.allows_another_after(attempt) =>
        {
            Decision::RetryAfter(limit.backoff().wait_after(attempt))
        }
        _ => decision,
    }
}

/// What happens after `job`'s handler failed with `failure`: `policy`'s decision
/// (keeping its memory in `data`), extended by the job's attempt limit
/// ([`with_attempt_limit`]). The one place a run asks about a handler error.
pub(crate) fn on_handler_failure(
    policy: &dyn RetryPolicy,
    data: &mut RetryData,
    failure: &Failure,
    job: &Job,
) -> Decision {
    with_attempt_limit(
        policy.on_job_error(data, failure),
        failure,
        job.attempt_limit(),
        job.attempts(),
    )
}

/// Retry policies by name, with the process defaults for queue jobs and callbacks.
#[derive(Clone)]
pub struct Policies {
    by_name: HashMap<String, Arc<dyn RetryPolicy>>,
    job_default: String,
    callback_default: String,
}

impl Default for Policies {
    fn default() -> Self {
        Policies::new()
    }
}

impl Policies {
    /// The built-in policies; queue jobs default to `default`, callbacks to `forever`.
    pub fn new() -> Policies {
        let mut by_name: HashMap<String, Arc<dyn RetryPolicy>> = HashMap::new();
        by_name.insert(DEFAULT.into(), Arc::new(DefaultPolicy::default()));
        by_name.insert(FOREVER.into(), Arc::new(ForeverPolicy::default()));
        by_name.insert(NEVER.into(), Arc::new(NeverPolicy));
        Policies {
            by_name,
            job_default: DEFAULT.into(),
            callback_default: FOREVER.into(),
        }
    }

    /// Registers (or replaces) the policy `name`.
    pub fn register(&mut self, name: impl Into<String>, policy: Arc<dyn RetryPolicy>) {
        self.by_name.insert(name.into(), policy);
    }

    /// The policy registered as `name`.
    pub fn get(&self, name: &str) -> Result<Arc<dyn RetryPolicy>> {
        self.by_name
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NoSuchPolicy { name: name.into() })
    }

    /// Makes `name` the policy of queue jobs that name none.
    pub fn set_job_default(&mut self, name: &str) -> Result<()> {
        self.get(name)?;
        self.job_default = name.into();
        Ok(())
    }

    /// Makes `name` the policy of callbacks that name none.
    pub fn set_callback_default(&mut self, name: &str) -> Result<()> {
        self.get(name)?;
        self.callback_default = name.into();
        Ok(())
    }

    /// The policy for a queue job: its own if it names one, else the job default.
    pub fn for_job(&self, named: Option<&str>) -> Result<Arc<dyn RetryPolicy>> {
        self.get(named.unwrap_or(&self.job_default))
    }

    /// The policy for a callback: its own if it names one, else the callback default.
    pub fn for_callback(&self, named: Option<&str>) -> Result<Arc<dyn RetryPolicy>> {
        self.get(named.unwrap_or(&self.callback_default))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(kind: FailureKind) -> Failure {
        Failure::new(kind, "x")
    }

    fn secs(s: u64) -> Decision {
        Decision::RetryAfter(Duration::from_secs(s))
    }

    #[test]
    fn default_retries_four_conflicts_per_run_shared_with_commit_errors() {
        let p = DefaultPolicy::default();
        let mut data = RetryData::default();
        let conflict = failure(FailureKind::Conflict);
        assert_eq!(p.on_job_error(&mut data, &conflict), Decision::Retry);
        assert_eq!(p.on_commit_error(&mut data, &conflict), Decision::Retry);
        assert_eq!(p.on_job_error(&mut data, &conflict), Decision::Retry);
        assert_eq!(p.on_commit_error(&mut data, &conflict), Decision::Retry);
        // The 5th conflict of the run (5 attempts in all) gives up with it.
        assert_eq!(
            p.on_job_error(&mut data, &conflict),
            Decision::GiveUp(conflict.clone())
        );
        // A new run starts counting again.
        data.start_run();
        assert_eq!(p.on_commit_error(&mut data, &conflict), Decision::Retry);
    }

    #[test]
    fn default_waits_5_10_up_to_60_seconds_for_disconnects_forever() {
        let p = DefaultPolicy::default();
        let mut data = RetryData::default();
        let d = failure(FailureKind::Disconnected);
        let waits: Vec<_> = (0..14).map(|_| p.on_job_error(&mut data, &d)).collect();
        let want: Vec<_> = [5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 60, 60]
            .into_iter()
            .map(secs)
            .collect();
        assert_eq!(waits, want);
        assert_eq!(p.on_commit_error(&mut data, &d), secs(60));
    }

    #[test]
    fn default_disconnect_waits_keep_growing_across_runs() {
        let p = DefaultPolicy::default();
        let mut data = RetryData::default();
        let d = failure(FailureKind::Disconnected);
        let mut waits = Vec::new();
        for _ in 0..4 {
            waits.push(p.on_job_error(&mut data, &d));
            data.start_run(); // a queue job's retry later is a new run
        }
        assert_eq!(waits, [secs(5), secs(10), secs(15), secs(20)]);
        assert_eq!(data.life_count(DISCONNECTS), 4);
    }

    #[test]
    fn default_gives_up_on_other_errors_at_once() {
        let p = DefaultPolicy::default();
        for kind in [
            FailureKind::UserError,
            FailureKind::UnknownHandler,
            FailureKind::Panic,
            FailureKind::Timeout,
        ] {
            let mut data = RetryData::default();
            let f = failure(kind);
            assert_eq!(p.on_job_error(&mut data, &f), Decision::GiveUp(f.clone()));
            assert_eq!(
                p.on_commit_error(&mut data, &f),
                Decision::GiveUp(f.clone())
            );
        }
    }

    #[test]
    fn default_retries_interruptions_1_to_9_and_aborts_the_10th_across_runs() {
        let p = DefaultPolicy::default();
        let mut data = RetryData::default();
        for n in 1..=9 {
            assert_eq!(
                p.on_interrupted(&mut data),
                Decision::Retry,
                "interruption {n}"
            );
            data.start_run(); // each retry is a new run: the count must survive
        }
        let Decision::GiveUp(f) = p.on_interrupted(&mut data) else {
            panic!("the 10th interruption must give up");
        };
        assert_eq!(f.kind, FailureKind::Aborted);
        assert_eq!(data.life_count(INTERRUPTIONS), 10);
    }

    #[test]
    fn forever_retries_conflicts_and_disconnects_but_not_handler_errors() {
        let p = ForeverPolicy::default();
        let mut data = RetryData::default();
        let conflict = failure(FailureKind::Conflict);
        for _ in 0..1000 {
            assert_eq!(p.on_job_error(&mut data, &conflict), Decision::Retry);
        }
        let d = failure(FailureKind::Disconnected);
        let waits: Vec<_> = (0..13).map(|_| p.on_job_error(&mut data, &d)).collect();
        assert_eq!(waits[..3], [secs(5), secs(10), secs(15)]);
        assert_eq!(waits[11..], [secs(60), secs(60)]);
        let user = failure(FailureKind::UserError);
        assert_eq!(
            p.on_job_error(&mut data, &user),
            Decision::GiveUp(user.clone())
        );
        for _ in 0..100 {
            assert_eq!(p.on_interrupted(&mut data), Decision::Retry);
        }
    }

    #[test]
    fn forever_retries_every_commit_error_waiting_0_1_2_up_to_60() {
        let p = ForeverPolicy::default();
        let mut data = RetryData::default();
        let other = failure(FailureKind::UserError);
        let waits: Vec<_> = (0..63)
            .map(|_| p.on_commit_error(&mut data, &other))
            .collect();
        for (i, w) in waits.iter().enumerate() {
            assert_eq!(*w, secs((i as u64).min(60)), "error {}", i + 1);
        }
        assert_eq!(
            p.on_commit_error(&mut data, &failure(FailureKind::Conflict)),
            Decision::Retry
        );
        let logged: Vec<u32> = (1..=21).filter(|&n| p.logs_other_error(n)).collect();
        assert_eq!(logged, [1, 5, 10, 15, 20]);
    }

    #[test]
    fn never_gives_up_on_everything() {
        let p = NeverPolicy;
        let mut data = RetryData::default();
        for kind in [
            FailureKind::Conflict,
            FailureKind::Disconnected,
            FailureKind::UserError,
        ] {
            let f = failure(kind);
            assert_eq!(p.on_job_error(&mut data, &f), Decision::GiveUp(f.clone()));
            assert_eq!(
                p.on_commit_error(&mut data, &f),
                Decision::GiveUp(f.clone())
            );
        }
        let Decision::GiveUp(f) = p.on_interrupted(&mut data) else {
            panic!("never retries");
        };
        assert_eq!(f.kind, FailureKind::Aborted);
    }

    #[test]
    fn an_attempt_limit_retries_handler_errors_until_the_last_attempt() {
        let p = DefaultPolicy::default();
        let limit = AttemptLimit::new(3, Backoff::Fixed(Duration::from_secs(7))).unwrap();
        for kind in [FailureKind::UserError, FailureKind::Panic] {
            let f = failure(kind);
            let mut data = RetryData::default();
            let decide = |data: &mut RetryData, attempt| {
                with_attempt_limit(p.on_job_error(data, &f), &f, Some(&limit), attempt)
            };
            assert_eq!(decide(&mut data, 1), secs(7));
            assert_eq!(decide(&mut data, 2), secs(7));
            assert_eq!(decide(&mut data, 3), Decision::GiveUp(f.clone()));
            // Without a limit the policy's give-up stands.
            assert_eq!(
                with_attempt_limit(p.on_job_error(&mut data, &f), &f, None, 1),
                Decision::GiveUp(f.clone())
            );
        }
        // Other failures keep the policy's decision: an unknown handler is not
        // retried, a conflict past the policy's bound gives up, a disconnect waits
        // the policy's wait.
        let unknown = failure(FailureKind::UnknownHandler);
        let mut data = RetryData::default();
        let d = p.on_job_error(&mut data, &unknown);
        assert_eq!(
            with_attempt_limit(d, &unknown, Some(&limit), 1),
            Decision::GiveUp(unknown.clone())
        );
        let disconnected = failure(FailureKind::Disconnected);
        let d = p.on_job_error(&mut data, &disconnected);
        assert_eq!(
            with_attempt_limit(d, &disconnected, Some(&limit), 1),
            secs(5)
        );
    }

    #[test]
    fn the_deadline_bounds_retries() {
        let deadline = Some(Timestamp(10_000_000));
        let now = Timestamp(9_000_000);
        assert_eq!(bounded(Decision::Retry, deadline, now), Decision::Retry);
        assert_eq!(bounded(secs(1), deadline, now), secs(1));
        let Decision::GiveUp(f) = bounded(secs(2), deadline, now) else {
            panic!("past the deadline");
        };
        assert_eq!(f.kind, FailureKind::Timeout);
        assert!(!bounded(Decision::RetryAt(Timestamp(10_000_001)), deadline, now).is_retry());
        assert!(!bounded(Decision::Retry, deadline, Timestamp(10_000_001)).is_retry());
        assert_eq!(bounded(secs(999), None, now), secs(999));
    }

    /// A custom policy: retries user errors twice, keeping its count in the job.
    struct TwiceThenLater;
    impl RetryPolicy for TwiceThenLater {
        fn on_job_error(&self, data: &mut RetryData, failure: &Failure) -> Decision {
            match data.bump_life("user") {
                1 | 2 => Decision::Retry,
                3 => Decision::RetryAt(Timestamp(42)),
                _ => Decision::GiveUp(failure.clone()),
            }
        }
        fn on_commit_error(&self, _: &mut RetryData, f: &Failure) -> Decision {
            Decision::GiveUp(f.clone())
        }
        fn on_interrupted(&self, _: &mut RetryData) -> Decision {
            Decision::Retry
        }
    }

    #[test]
    fn policies_are_found_by_name_with_changeable_defaults() {
        let mut policies = Policies::new();
        let f = failure(FailureKind::Conflict);
        let mut data = RetryData::default();
        // Queue jobs default to `default` (bounded), callbacks to `forever`.
        for _ in 0..4 {
            policies.for_job(None).unwrap().on_job_error(&mut data, &f);
        }
        assert!(
            !policies
                .for_job(None)
                .unwrap()
                .on_job_error(&mut data, &f)
                .is_retry()
        );
        assert!(
            policies
                .for_callback(None)
                .unwrap()
                .on_job_error(&mut data, &f)
                .is_retry()
        );
        assert!(
            !policies
                .for_job(Some(NEVER))
                .unwrap()
                .on_job_error(&mut data, &f)
                .is_retry()
        );
        assert!(matches!(
            policies.get("nope"),
            Err(Error::NoSuchPolicy { .. })
        ));
        assert!(policies.set_job_default("nope").is_err());

        policies.register("twice", Arc::new(TwiceThenLater));
        policies.set_job_default("twice").unwrap();
        let p = policies.for_job(None).unwrap();
        let mut data = RetryData::default();
        let user = failure(FailureKind::UserError);
        assert_eq!(p.on_job_error(&mut data, &user), Decision::Retry);
        assert_eq!(p.on_job_error(&mut data, &user), Decision::Retry);
        assert_eq!(
            p.on_job_error(&mut data, &user),
            Decision::RetryAt(Timestamp(42))
        );
        assert_eq!(
            p.on_job_error(&mut data, &user),
            Decision::GiveUp(user.clone())
        );
        policies.set_callback_default(NEVER).unwrap();
        assert!(
            !policies
                .for_callback(None)
                .unwrap()
                .on_interrupted(&mut data)
                .is_retry()
        );
    }
}
