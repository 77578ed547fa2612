//! One poll of a queue: activation, pings, the cleanup of dead siblings and
//! retention (housekeeping), the adoption of ended jobs, and claims.
use std::time::Duration;

use zodiac_objects::{PRef, Transaction};

use crate::dispatcher::{Dispatchers, RETENTION_DROPS_MAX};
use crate::error::{Error, Result};
use crate::model::job::Job;
use crate::model::queue::Queue;
use crate::queue::Claimer;
use crate::recovery::Cleanup;
use crate::run::{Claimed, Runner, Started};
use crate::time::Timestamp;
use crate::transact::transact;

use super::{PollReport, Worker, housekeeping_interval};
/// What the claims of one transaction took: the jobs claimed and started, a
/// job claimed that cannot be started here (its retry policy is not
/// registered; the claims stop there), and the expired jobs they completed.
#[derive(Default)]
struct Claims {
    started: Vec<Started>,
    unstartable: Option<PRef<Job>>,
    expired: Vec<PRef<Job>>,
}

/// Up to `n` claims for agent `claimer` in `queue` (see the module docs), in the
/// transaction `tx`, each claimed job started there too.
fn claim_in(
    tx: &mut Transaction<'_>,
    queue: &str,
    claimer: &Claimer,
    death_interval: Duration,
    runner: &Runner,
    n: u32,
) -> Result<Claims> {
    let q = Queue::get_or_create(tx, queue)?;
    let now = runner.clock().now();
    let mut spread = Dispatchers::claim_lane(tx, &q, &claimer.dispatcher, now, death_interval)?;
    if n > 1 {
        // The rest of this batch and the next one: the next batch's claims then
        // find their jobs cached.
        spread.ahead = 2 * n as usize;
    }
    let mut claims = Claims::default();
    for _ in 0..n.max(1) {
        let claim = Dispatchers::claim_for_agent_spread(
            tx,
            &q,
            &claimer.dispatcher,
            &claimer.agent,
            now,
            spread,
        )?;
        claims.expired.extend(claim.expired);
        let Some(job) = claim.job else {
            break;
        };
        // A batch's later claims take only its lane's jobs.
        spread.fallback = false;
        match runner.start_in(tx, &job, Some(claimer))? {
            Some(started) => {
                // Its result's commit starts its first callback: a client storage
                // fetches them meanwhile.
                tx.prefetch(started.callbacks());
                claims.started.push((job, started));
            }
            None => {
                claims.unstartable = Some(job);
                break;
            }
        }
    }
    Ok(claims)
}

/// The claim a run makes in its last commit ([`Runner::run_chain`],
/// [`Runner::run_batch`]): a job that cannot be started here fails it, so it is
/// rolled back and left to the poll.
pub(super) fn claim_next(
    tx: &mut Transaction<'_>,
    queue: &str,
    claimer: &Claimer,
    death_interval: Duration,
    runner: &Runner,
    n: u32,
) -> Result<Claimed> {
    let claims = claim_in(tx, queue, claimer, death_interval, runner, n)?;
    if let Some(job) = claims.unstartable {
        return Err(Error::NoSuchPolicy {
            name: tx
                .get(&job)?
                .retry_policy()
                .unwrap_or("(the default)")
                .to_string(),
        });
    }
    Ok(Claimed {
        next: claims.started,
        expired: claims.expired,
    })
}

impl Worker {
    /// Activates on the first visit, pings when due, cleans up dead siblings.
    /// Returns whether this worker may claim from the queue.
    pub(super) fn visit(&mut self, name: &str, report: &mut PollReport) -> Result<bool> {
        let now = self.runner.clock().now();
        if !self.activate_or_ping(name, now, report)? {
            return Ok(false);
        }
        self.adopt_ended(name)?;
        let due = self
            .housekept
            .get(name)
            .is_none_or(|last| now.since(*last) >= housekeeping_interval(&self.options));
        if due {
            self.housekept
                .insert(name.to_string(), self.runner.clock().now());
            self.clean_up_dead_siblings(name, now, report)?;
            self.drop_old_completed(name, now)?;
        }
        Ok(true)
    }

    /// Activates this dispatcher in queue `name` on the first visit (recovering
    /// its previous incarnation's jobs), or pings when due. Returns `false` when
    /// a live dispatcher with this id holds the queue (it is skipped).
    fn activate_or_ping(
        &mut self,
        name: &str,
        now: Timestamp,
        report: &mut PollReport,
    ) -> Result<bool> {
        let (id, options) = (self.id.clone(), self.options.clone());
        match self.active.get(name) {
            None => {
                let policies = self.runner.policies().clone();
                let activated = transact(&self.db, |tx| {
                    let q = Queue::get_or_create(tx, name)?;
                    let previous = if options.restarted {
                        Dispatchers::cleanup_previous_incarnation_at(tx, &q, &id, &policies, now)?
                    } else if Dispatchers::dead(tx, &q, now, options.death_interval)?.contains(&id)
                    {
                        // This id's dead dispatcher (e.g. on another host): its jobs
                        // were never handed back.
                        let death = options.death_interval;
                        Dispatchers::cleanup(tx, &q, &id, &policies, now, death)?
                    } else {
                        Cleanup::default()
                    };
                    match Dispatchers::activate(tx, &q, &id, now, options.death_interval) {
                        Ok(_) => {}
                        Err(Error::AlreadyActive { .. }) => return Ok(None),
                        Err(e) => return Err(e),
                    }
                    Dispatchers::set_agent(tx, &q, &id, &options.agent, options.agent_size)?;
                    Ok(Some(previous))
                })?;
                let Some(previous) = activated else {
                    log::error!(
                        target: "zodiac_async::events",
                        "dispatcher {id} is already activated in queue {name:?} by another \
                         process? not polling that queue"
                    );
                    report.skipped.push(name.to_string());
                    return Ok(false);
                };
                self.active
                    .insert(name.to_string(), self.runner.clock().now());
                self.resume_callbacks(name, &id, &previous.in_callbacks);
            }
            Some(last) if self.runner.clock().now().since(*last) >= options.ping_interval => {
                let was_active = transact(&self.db, |tx| {
                    let q = Queue::get_or_create(tx, name)?;
                    Dispatchers::ping(tx, &q, &id, now)
                })?;
                if !was_active {
                    log::error!(
                        target: "zodiac_async::events",
                        "critical: dispatcher {id} had been declared dead in queue {name:?} \
                         (a stall?); re-activated; its jobs were handed to recovery"
                    );
                }
                self.active
                    .insert(name.to_string(), self.runner.clock().now());
            }
            Some(_) => {}
        }
        Ok(true)
    }

    /// Cleans up the dead siblings of queue `name`, adopting their jobs in
    /// CALLBACKS and resuming those callbacks.
    fn clean_up_dead_siblings(
        &mut self,
        name: &str,
        now: Timestamp,
        report: &mut PollReport,
    ) -> Result<()> {
        let (id, options) = (self.id.clone(), self.options.clone());
        let dead = transact(&self.db, |tx| {
            let q = Queue::get_or_create(tx, name)?;
            Dispatchers::dead(tx, &q, now, options.death_interval)
        })?;
        let me = Claimer {
            dispatcher: id.clone(),
            agent: options.agent.clone(),
        };
        for sibling in dead.into_iter().filter(|d| *d != id) {
            let policies = self.runner.policies().clone();
            let cleaned = transact(&self.db, |tx| {
                let q = Queue::get_or_create(tx, name)?;
                let death = options.death_interval;
                match Dispatchers::cleanup_adopting(tx, &q, &sibling, &policies, now, death, &me) {
                    Ok(c) => Ok(Some(c)),
                    // It pinged meanwhile, or another sibling got there first.
                    Err(Error::AlreadyActive { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })?;
            if let Some(cleanup) = cleaned {
                // Adopted: held by this worker's agent now.
                self.resume_callbacks(name, &id, &cleanup.in_callbacks);
                report.cleaned.push(sibling);
            }
        }
        Ok(())
    }

    /// Drops the completed jobs of queue `name` (this agent's and the ended ones)
    /// older than the retention period.
    fn drop_old_completed(&self, name: &str, now: Timestamp) -> Result<()> {
        let (id, options) = (&self.id, &self.options);
        let cutoff = Timestamp::from_micros(
            now.as_micros()
                .saturating_sub(u64::try_from(options.retention.as_micros()).unwrap_or(u64::MAX)),
        );
        transact(&self.db, |tx| {
            let q = Queue::get_or_create(tx, name)?;
            Dispatchers::drop_completed_before(
                tx,
                &q,
                id,
                &options.agent,
                cutoff,
                RETENTION_DROPS_MAX,
            )?;
            crate::ended::drop_completed_before(tx, &q, cutoff, RETENTION_DROPS_MAX)
        })?;
        Ok(())
    }

    /// Takes the jobs of queue `name` that ended without a run with callbacks no
    /// one took (cancelled with callbacks) and runs their callbacks, as for jobs a
    /// cleanup found in CALLBACKS. Reads one cached object when there are none.
    pub(super) fn adopt_ended(&mut self, name: &str) -> Result<()> {
        let me = Claimer {
            dispatcher: self.id.clone(),
            agent: self.options.agent.clone(),
        };
        let now = self.runner.clock().now();
        let adopted = transact(&self.db, |tx| {
            let Some(q) = Queue::get(tx, name)? else {
                return Ok(Vec::new());
            };
            match crate::ended::of(tx, &q)? {
                Some(ended) if !ended.callbacks_due().is_empty() => {
                    Dispatchers::adopt_ended_at(tx, &q, &me, now)
                }
                _ => Ok(Vec::new()),
            }
        })?;
        let id = self.id.clone();
        self.resume_callbacks(name, &id, &adopted);
        Ok(())
    }

    pub(super) fn claim_and_run(&mut self, name: &str, report: &mut PollReport) -> Result<()> {
        let claimer = Claimer {
            dispatcher: self.id.clone(),
            agent: self.options.agent.clone(),
        };
        let death_interval = self.options.death_interval;
        let batch_size = self.options.batch_size;
        while !self.full() {
            let mut claimed = None;
            for attempt in 0..=self.options.claim_conflict_retries {
                let runner = &self.runner;
                let result = crate::helpers::attempt(&self.db, &mut |tx| {
                    claim_in(tx, name, &claimer, death_interval, runner, batch_size)
                });
                match result {
                    Ok(claims) => {
                        claimed = Some(claims);
                        break;
                    }
                    Err(e) if e.is_conflict() => {
                        log::debug!(target: "zodiac_async::events", "claim attempt {} conflicted", attempt + 1);
                    }
                    Err(e) => return Err(e),
                }
            }
            let Some(claims) = claimed else {
                return Ok(());
            };
            // Expired jobs met by the claims: their callbacks run now, on threads
            // of their own (a long callback must not hold up polls and pings).
            for &job in &claims.expired {
                self.spawn_callbacks(job, None);
            }
            if claims.started.is_empty() && claims.unstartable.is_none() {
                return Ok(());
            }
            report
                .started
                .extend(claims.started.iter().map(|(job, _)| *job));
            if !claims.started.is_empty() {
                self.spawn_run(name, &claimer, claims.started);
            }
            if let Some(job) = claims.unstartable {
                // Not startable here (e.g. its retry policy is unknown): the
                // ordinary run reports why.
                let (runner, claimer) = (self.runner.clone(), claimer.clone());
                self.spawn_slot(job, move |_| runner.run(&job, Some(&claimer)).map(|_| ()));
                report.started.push(job);
            }
        }
        Ok(())
    }
}
