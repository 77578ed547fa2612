//! Pausing and resuming a queue: an operator's switch that stops claims.
//!
//! Invariants:
//! - While a queue is paused no claim takes (or expires) any of its jobs; puts are
//!   accepted and running jobs finish (see `claim.rs`).
//! - Pausing and resuming write only the queue object, and only when the switch
//!   changes; a worker notices a resume at its next poll.

use zodiac_objects::{PRef, Transaction};

use crate::error::Result;
use crate::model::queue::Queue;

impl Queue {
    /// Pauses `queue`: claims stop until [`Queue::resume`]. Returns whether it was
    /// running (`false`: it was already paused, and nothing was written).
    pub fn pause(tx: &mut Transaction<'_>, queue: &PRef<Queue>) -> Result<bool> {
        Queue::set_paused(tx, queue, true)
    }

    /// Resumes a paused `queue`: claims take its jobs again. Returns whether it was
    /// paused (`false`: it was running, and nothing was written).
    pub fn resume(tx: &mut Transaction<'_>, queue: &PRef<Queue>) -> Result<bool> {
        Queue::set_paused(tx, queue, false)
    }

    fn set_paused(tx: &mut Transaction<'_>, queue: &PRef<Queue>, paused: bool) -> Result<bool> {
        if tx.get(queue)?.paused == paused {
            return Ok(false);
        }
        tx.modify(queue, |q| q.paused = paused)?;
        Ok(true)
    }
}
