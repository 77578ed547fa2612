//! `zodiac jobs cancel|retry|discard|pause|resume|quota`: an operator's actions on
//! jobs and queues.
//!
//! Invariants:
//! - Each command writes in one transaction (a `cancel` by selection: one per
//!   batch of at most `CANCEL_BATCH_JOBS_MAX` jobs), and a command naming jobs
//!   changes all of them or none: the first job refused is named in a one-line
//!   error, and nothing is committed.
//! - Every job id is checked to name a job before anything is written.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use zodiac_async::{
    CANCEL_BATCH_JOBS_MAX, CancelFilter, Failure, FailureKind, Job, Queue, RETRY_BATCH_JOBS_MAX,
    Status, cancel_jobs, cancel_matching, discard_jobs, retry_failed, retry_jobs, transact,
};
use zodiac_objects::{Database, PRef};
use zodiac_storage::{Oid, Storage};

use crate::cli::JobsCommand;
use crate::jobs::{database, load};
use crate::store::{Connect, open_store};

/// Runs one of the operator's `jobs` commands (the others are in `jobs`).
pub fn run(command: JobsCommand, wait: Option<std::time::Duration>) -> Result<()> {
    match command {
        JobsCommand::Cancel {
            store,
            job_ids,
            queue,
            handler,
            status,
            lock,
            connect,
        } => {
            let filter = CancelFilter { queue, handler };
            cancel(
                &store,
                &job_ids,
                filter,
                status,
                &lock.apply(connect.connect(wait)),
            )
        }
        JobsCommand::Retry {
            store,
            job_ids,
            all_failed,
            queue,
            lock,
            connect,
        } => retry(
            &store,
            &job_ids,
            all_failed,
            queue,
            &lock.apply(connect.connect(wait)),
        ),
        JobsCommand::Discard {
            store,
            job_ids,
            lock,
            connect,
        } => discard(&store, &job_ids, &lock.apply(connect.connect(wait))),
        JobsCommand::Pause {
            store,
            queue,
            lock,
            connect,
        } => pause(&store, &queue, true, &lock.apply(connect.connect(wait))),
        JobsCommand::Resume {
            store,
            queue,
            lock,
            connect,
        } => pause(&store, &queue, false, &lock.apply(connect.connect(wait))),
        JobsCommand::Quota {
            store,
            queue,
            name,
            size,
            every_job,
            named_only,
            lock,
            connect,
        } => {
            let scope = match (every_job, named_only) {
                (true, _) => QuotaScope::EveryJob,
                (_, true) => QuotaScope::NamedOnly,
                _ => QuotaScope::Unchanged,
            };
            let connect = lock.apply(connect.connect(wait));
            set_quota(&store, &queue, &name, size, scope, &connect)
        }
        _ => unreachable!("main routes the other jobs commands to `jobs`"),
    }
}

/// Opens STORE for writing; runs `f`; closes it (the data file's lock goes).
fn with_store<T>(
    store: &str,
    connect: &Connect,
    f: impl FnOnce(&Database) -> Result<T>,
) -> Result<T> {
    let storage: Arc<dyn Storage> = open_store(store, connect, false)?;
    let db = database(Arc::clone(&storage))?;
    let out = f(&db)?;
    drop(db);
    storage.close()?;
    Ok(out)
}

/// The jobs `ids`, each checked to be a job.
fn jobs_named(db: &Database, ids: &[Oid]) -> Result<Vec<PRef<Job>>> {
    ids.iter()
        .map(|id| load(db, *id).map(|_| PRef::from_oid(*id)))
        .collect()
}

fn ids_text(jobs: &[PRef<Job>]) -> String {
    let ids: Vec<String> = jobs.iter().map(|j| j.oid().0.to_string()).collect();
    ids.join(" ")
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `jobs cancel`: by id, all or none; or every pending job the filter selects, in
/// batches.
fn cancel(
    store: &str,
    ids: &[Oid],
    filter: CancelFilter,
    status: Option<Status>,
    connect: &Connect,
) -> Result<()> {
    if let Some(s) = status.filter(|s| *s != Status::Pending) {
        bail!(
            "--status {}: only PENDING jobs are selected for a cancel (a started job cannot be \
             cancelled; cancel a NEW one by its id)",
            s.name().to_lowercase()
        );
    }
    if ids.is_empty() && filter == CancelFilter::default() && status.is_none() {
        bail!(
            "name the jobs to cancel (JOB_ID...), or select them with --queue, --handler or --status pending"
        );
    }
    let failure = Failure::new(
        FailureKind::Cancelled,
        "cancelled with `zodiac jobs cancel`",
    );
    if !ids.is_empty() {
        let jobs = with_store(store, connect, |db| {
            let jobs = jobs_named(db, ids)?;
            transact(db, |tx| cancel_jobs(tx, &jobs, &failure))?;
            Ok(jobs)
        })?;
        match jobs.as_slice() {
            [one] => println!("cancelled job {}", one.oid().0),
            many => println!("cancelled {} jobs: {}", many.len(), ids_text(many)),
        }
        return Ok(());
    }
    let count = with_store(store, connect, |db| {
        let mut count = 0;
        loop {
            let batch = transact(db, |tx| {
                cancel_matching(tx, &filter, &failure, CANCEL_BATCH_JOBS_MAX)
            })
            .with_context(|| format!("cancelling jobs after the first {count}"))?;
            count += batch.len();
            if batch.len() < CANCEL_BATCH_JOBS_MAX {
                return Ok(count);
            }
        }
    })?;
    println!("cancelled {count} job{}", plural(count));
    Ok(())
}

/// `jobs retry`: by id (all or none), or up to a batch of every failed job.
fn retry(
    store: &str,
    ids: &[Oid],
    all_failed: bool,
    queue: Option<String>,
    connect: &Connect,
) -> Result<()> {
    let retried = with_store(store, connect, |db| {
        if all_failed {
            return Ok(transact(db, |tx| retry_failed(tx, queue.as_deref()))?);
        }
        let jobs = jobs_named(db, ids)?;
        transact(db, |tx| retry_jobs(tx, &jobs))?;
        Ok(jobs)
    })?;
    let n = retried.len();
    if n == 0 {
        println!(
            "retried 0 jobs (no failed job is kept{})",
            match &queue {
                Some(q) => format!(" in queue {q:?}"),
                None => String::new(),
            }
        );
    } else {
        println!("retried {n} job{}: {}", plural(n), ids_text(&retried));
    }
    if all_failed && n >= RETRY_BATCH_JOBS_MAX {
        eprintln!("(at most {RETRY_BATCH_JOBS_MAX} per run: run it again for the rest)");
    }
    Ok(())
}

/// `jobs discard`: all or none.
fn discard(store: &str, ids: &[Oid], connect: &Connect) -> Result<()> {
    let jobs = with_store(store, connect, |db| {
        let jobs = jobs_named(db, ids)?;
        transact(db, |tx| discard_jobs(tx, &jobs))?;
        Ok(jobs)
    })?;
    let n = jobs.len();
    println!(
        "discarded {n} job{}: {} (the next pack reclaims them)",
        plural(n),
        ids_text(&jobs)
    );
    Ok(())
}

/// `jobs pause` (`paused`) and `jobs resume`.
fn pause(store: &str, name: &str, paused: bool, connect: &Connect) -> Result<()> {
    let shown = if name.is_empty() { "(default)" } else { name };
    let changed = with_store(store, connect, |db| {
        Ok(transact(db, |tx| {
            let Some(queue) = Queue::get(tx, name)? else {
                return Ok(None);
            };
            let changed = if paused {
                Queue::pause(tx, &queue)?
            } else {
                Queue::resume(tx, &queue)?
            };
            Ok(Some(changed))
        })?)
    })?;
    let (verb, state) = if paused {
        ("paused", "paused")
    } else {
        ("resumed", "running")
    };
    match changed {
        None => bail!(
            "there is no queue {shown:?} in {} (see `zodiac jobs status`; '' is the default queue)",
            zodiac_storage::url_without_password(store)
        ),
        Some(true) => println!("{verb} queue {shown}"),
        Some(false) => println!("queue {shown} was already {state}"),
    }
    Ok(())
}

/// `jobs quota`: creates or resizes a quota of a queue (created if missing).
/// Which jobs of its queue a quota counts, as `jobs quota` sets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum QuotaScope {
    /// As it was (new quotas: the jobs naming it).
    Unchanged,
    /// Every job of the queue (`--every-job`).
    EveryJob,
    /// The jobs naming it (`--named-only`).
    NamedOnly,
}

fn set_quota(
    store: &str,
    queue: &str,
    name: &str,
    size: u32,
    scope: QuotaScope,
    connect: &Connect,
) -> Result<()> {
    let every_job = with_store(store, connect, |db| {
        transact(db, |tx| {
            let q = Queue::get_or_create(tx, queue)?;
            Queue::set_quota(tx, &q, name, size)?;
            let current = tx.get(&q)?.every_job_quota().map(str::to_string);
            match scope {
                QuotaScope::EveryJob => Queue::set_every_job_quota(tx, &q, Some(name))?,
                QuotaScope::NamedOnly if current.as_deref() == Some(name) => {
                    Queue::set_every_job_quota(tx, &q, None)?
                }
                _ => {}
            }
            Ok(tx.get(&q)?.every_job_quota() == Some(name))
        })
        .with_context(|| format!("setting quota {name:?} of queue {queue:?}"))
    })?;
    let counted = if every_job {
        "every job of the queue".to_string()
    } else {
        format!("jobs put with --quota {name}")
    };
    println!("quota {name:?} of queue {queue:?}: {size} jobs at once ({counted})");
    Ok(())
}
