//! A worker's part in recurring jobs: putting the due ticks of the schedules of
//! its queues (see `crate::schedule` for why each tick is put once).
//!
//! Invariants:
//! - The schedules are read at most once per poll interval (a schedule added
//!   meanwhile is seen within it), and whenever the earliest tick found is due,
//!   so a busy worker's polls cost nothing more.
//! - A schedule whose put fails (e.g. its queue's name is refused) is logged and
//!   skipped; it never fails the poll, so the worker's own jobs go on.

use zodiac_objects::PRef;

use crate::error::Result;
use crate::model::schedule::Schedule;
use crate::schedule::{due_in, put_due};
use crate::time::Timestamp;
use crate::transact::transact;

use super::{PollReport, Worker};

/// When a worker last read its schedules, and the earliest tick not yet due.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct TickCheck {
    checked: Option<Timestamp>,
    pub(super) next: Option<Timestamp>,
}

impl Worker {
    /// Puts the due ticks of this worker's queues' schedules, when a check is due.
    pub(super) fn put_due_ticks(&mut self, report: &mut PollReport) -> Result<()> {
        let now = self.runner.clock().now();
        let recheck = self
            .ticks
            .checked
            .is_none_or(|last| now.since(last) >= self.options.poll_interval);
        if !recheck && self.ticks.next.is_none_or(|t| t > now) {
            return Ok(());
        }
        let queues = self.options.queues.clone();
        let (due, mut next) = transact(&self.db, |tx| due_in(tx, &queues, now))?;
        if !due.is_empty() {
            for schedule in &due {
                self.put_tick(schedule, now, report);
            }
            // Their next ticks moved (a schedule whose put failed stays due, and
            // is tried again at the next check).
            next = transact(&self.db, |tx| due_in(tx, &queues, now))?.1;
        }
        self.ticks = TickCheck {
            checked: Some(now),
            next,
        };
        Ok(())
    }

    fn put_tick(&self, schedule: &PRef<Schedule>, now: Timestamp, report: &mut PollReport) {
        let put = transact(&self.db, |tx| {
            let name = tx.get(schedule)?.name().to_string();
            Ok((name, put_due(tx, schedule, now)?))
        });
        match put {
            Ok((name, Some(tick))) if tick.held => log::info!(
                target: "zodiac_async::events",
                "schedule {name:?} put no job for its tick at {}: job {} holds its unique key",
                tick.tick,
                tick.job.oid().0
            ),
            Ok((name, Some(tick))) => {
                let missed = match tick.missed {
                    0 => String::new(),
                    n => format!(" (and {n} missed ticks before it)"),
                };
                log::info!(
                    target: "zodiac_async::events",
                    "schedule {name:?} put job {} for its tick at {}{missed}",
                    tick.job.oid().0,
                    tick.tick
                );
                report.scheduled.push(tick.job);
            }
            // Another worker put it, or it was removed.
            Ok((_, None)) => {}
            Err(e) => log::error!(
                target: "zodiac_async::events",
                "schedule (object {}) could not put its due job (retried at the next check): {e}",
                schedule.oid().0
            ),
        }
    }
}
