//! A queue's default attempt limit: the [`AttemptLimit`] given to the jobs put
//! in it that name none.
//!
//! Invariants:
//! - The default is copied into each job at its put, in the put's transaction:
//!   changing it changes the jobs put afterwards, never the ones already queued,
//!   and a run never reads the queue to find its limit.
//! - Setting it writes only the queue object, and only when it changes.

use zodiac_objects::{PRef, Transaction};

use crate::error::Result;
use crate::model::attempt_limit::AttemptLimit;
use crate::model::queue::Queue;

impl Queue {
    /// Makes `limit` the attempt limit of the jobs put in `queue` from now on
    /// that name none (`None`: their retry policy alone decides). Returns whether
    /// it changed.
    pub fn set_attempt_limit(
        tx: &mut Transaction<'_>,
        queue: &PRef<Queue>,
        limit: Option<AttemptLimit>,
    ) -> Result<bool> {
        if tx.get(queue)?.attempt_limit == limit {
            return Ok(false);
        }
        tx.modify(queue, |q| q.attempt_limit = limit)?;
        Ok(true)
    }
}
