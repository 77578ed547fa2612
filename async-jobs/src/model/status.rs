//! The job status machine.
//!
//! Invariants:
//! - [`check`] is the only place that decides whether a status change is legal; every
//!   change of a job's status goes through it (see `Job::transition`).
//! - COMPLETED is terminal for the job layer itself: only an operator's retry of a
//!   job that completed with a failure leaves it (back to PENDING).
//! - A job is *run* only from NEW or ASSIGNED.
//!
//! The legal transitions, and who performs each:
//!
//! | from | to | event | performed by |
//! |---|---|---|---|
//! | NEW | PENDING | put in a queue | a producer, in its own transaction |
//! | PENDING | NEW | pulled/removed from the queue (cancelled before a claim) | a producer or operator |
//! | PENDING | ASSIGNED | claimed | an agent of a dispatcher |
//! | ASSIGNED | PENDING | put back (its dispatcher died or stopped before running it) | the cleanup of that dispatcher |
//! | NEW, ASSIGNED | ACTIVE | a run starts | the worker running it |
//! | ACTIVE | PENDING | the retry policy asked for a retry (now or later), or an interrupted run is retried | the worker, or a recovery job |
//! | ACTIVE | NEW | an interrupted callback is retried (its process died while it ran) | the cleanup of that process's dispatcher |
//! | ACTIVE | CALLBACKS | the result (value or failure) is stored | the worker |
//! | NEW, PENDING, ASSIGNED | CALLBACKS | `fail(error)`, e.g. a deadline that passed before the claim | whoever fails it; the queue when a claim finds it expired |
//! | CALLBACKS | COMPLETED | every callback has run (at once when there are none) | the worker or whoever stored the result |
//! | COMPLETED (with a failure) | PENDING | retried (`retry_jobs`, `zodiac jobs retry`): a fresh attempt count, the failure kept in its error history | an operator |

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a job is in its life. See the module docs for the legal transitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Status {
    /// Created, not in any queue.
    New,
    /// In a queue, waiting to be claimed.
    Pending,
    /// Claimed by an agent, not started.
    Assigned,
    /// Running.
    Active,
    /// Result stored, callbacks running.
    Callbacks,
    /// Done; only an operator's retry of a failed job leaves it.
    Completed,
}

impl Status {
    /// Every status, in life order.
    pub const ALL: [Status; 6] = [
        Status::New,
        Status::Pending,
        Status::Assigned,
        Status::Active,
        Status::Callbacks,
        Status::Completed,
    ];

    /// The upper-case name used in logs and tools, e.g. `PENDING`.
    pub fn name(self) -> &'static str {
        match self {
            Status::New => "NEW",
            Status::Pending => "PENDING",
            Status::Assigned => "ASSIGNED",
            Status::Active => "ACTIVE",
            Status::Callbacks => "CALLBACKS",
            Status::Completed => "COMPLETED",
        }
    }

    /// Whether a job in this status may be run.
    pub fn is_runnable(self) -> bool {
        matches!(self, Status::New | Status::Assigned)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether `from → to` is a legal transition (the table in the module docs).
pub fn is_legal(from: Status, to: Status) -> bool {
    use Status::*;
    matches!(
        (from, to),
        (New, Pending)
            | (Pending, New)
            | (Pending, Assigned)
            | (Assigned, Pending)
            | (New | Assigned, Active)
            | (Active, Pending)
            | (Active, New)
            | (Active, Callbacks)
            | (New | Pending | Assigned, Callbacks)
            | (Callbacks, Completed)
            | (Completed, Pending)
    )
}

/// Checks `from → to` against the status machine.
pub fn check(from: Status, to: Status) -> Result<(), (Status, Status)> {
    if is_legal(from, to) {
        Ok(())
    } else {
        Err((from, to))
    }
}

/// Why `from → to` is refused, for error messages.
pub(crate) fn why_illegal(from: Status, to: Status) -> &'static str {
    use Status::*;
    match (from, to) {
        (Completed, Pending) => "only a job that completed with a failure can be retried",
        (Completed, _) => {
            "a COMPLETED job never changes again (only an operator's retry puts a failed one back to PENDING)"
        }
        (_, Active) => "a job may only be run from NEW or ASSIGNED",
        (a, b) if a == b => "the job is already in that status",
        (_, New) => {
            "only a PENDING job can be pulled back to NEW, or an interrupted ACTIVE callback reset"
        }
        (_, Pending) => "only a NEW job can be put, and only an ASSIGNED or ACTIVE one put back",
        (_, Assigned) => "only a PENDING job can be claimed",
        (_, Callbacks) => "the result of a job in CALLBACKS is already stored",
        (_, Completed) => "a job completes only after its callbacks (from CALLBACKS)",
    }
}

#[cfg(test)]
mod tests {
    use super::Status::*;
    use super::*;

    #[test]
    fn exactly_the_table_is_legal() {
        let legal = [
            (New, Pending),
            (Pending, New),
            (Pending, Assigned),
            (Assigned, Pending),
            (New, Active),
            (Assigned, Active),
            (Active, Pending),
            (Active, New),
            (Active, Callbacks),
            (New, Callbacks),
            (Pending, Callbacks),
            (Assigned, Callbacks),
            (Callbacks, Completed),
            (Completed, Pending),
        ];
        for from in Status::ALL {
            for to in Status::ALL {
                assert_eq!(
                    is_legal(from, to),
                    legal.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn completed_leaves_only_for_a_retry_and_runs_start_only_from_new_or_assigned() {
        for to in Status::ALL {
            if to == Pending {
                assert_eq!(check(Completed, to), Ok(()));
                continue;
            }
            assert_eq!(check(Completed, to), Err((Completed, to)));
            assert_eq!(
                why_illegal(Completed, to),
                "a COMPLETED job never changes again (only an operator's retry puts a failed one back to PENDING)"
            );
        }
        let runnable: Vec<_> = Status::ALL
            .into_iter()
            .filter(|s| s.is_runnable())
            .collect();
        assert_eq!(runnable, [New, Assigned]);
        for from in [Pending, Active, Callbacks] {
            assert!(!is_legal(from, Active));
            assert_eq!(
                why_illegal(from, Active),
                "a job may only be run from NEW or ASSIGNED"
            );
        }
    }
}
