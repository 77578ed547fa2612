//! The bench workers: a [`Worker`] on a thread of the harness, or a process of the
//! harness binary in [`WORKER_MODE`] with its own client connection.
//!
//! Invariants:
//! - A worker process stops gracefully when its standard input ends; a
//!   [`RunningWorker`] dropped without being stopped is told to stop (thread) or
//!   killed (process), so a failed run leaves no process behind.

use std::io::Read;
use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use zodiac_async::{Policies, Runner, Worker, WorkerOptions};
use zodiac_objects::Database;
use zodiac_storage::{ClientOptions, ClientStorage, Storage};

use crate::Result;

use super::WORKER_MODE;
use super::log::{Recorder, bench_handlers};

// ---------------------------------------------------------------- workers

/// How a bench worker runs.
#[derive(Clone, Debug)]
pub(super) struct WorkerSpec {
    pub(super) tag: String,
    pub(super) agent_size: u32,
    pub(super) batch_size: u32,
    pub(super) ping: Duration,
    pub(super) death: Duration,
}

impl WorkerSpec {
    pub(super) fn new(tag: impl Into<String>) -> WorkerSpec {
        let defaults = WorkerOptions::default();
        WorkerSpec {
            tag: tag.into(),
            agent_size: 1,
            batch_size: 1,
            ping: defaults.ping_interval,
            death: defaults.death_interval,
        }
    }

    /// An agent of `batch` jobs that a run thread claims, runs and completes
    /// together (`WorkerOptions::batch_size`).
    pub(super) fn batched(mut self, batch: u32) -> WorkerSpec {
        self.agent_size = batch;
        self.batch_size = batch;
        self
    }

    pub(super) fn options(&self) -> WorkerOptions {
        WorkerOptions {
            agent_size: self.agent_size,
            batch_size: self.batch_size,
            ping_interval: self.ping,
            death_interval: self.death,
            grace_period: Duration::from_secs(5),
            ..WorkerOptions::default()
        }
    }
}

/// A running bench worker: a thread of this process or a process of its own.
/// Dropped without [`RunningWorker::stop`], a thread is told to stop and a process
/// is killed.
pub(super) struct RunningWorker(pub(super) Option<WorkerHandle>);

pub(super) enum WorkerHandle {
    Thread {
        stop: Arc<AtomicBool>,
        handle: JoinHandle<std::result::Result<(), String>>,
    },
    Process(Child),
}

impl RunningWorker {
    /// Stops the worker and waits for it.
    pub(super) fn stop(mut self) -> Result<()> {
        match self.0.take() {
            Some(WorkerHandle::Thread { stop, handle }) => {
                stop.store(true, Ordering::SeqCst);
                handle
                    .join()
                    .map_err(|_| "a worker thread panicked")?
                    .map_err(|e| format!("a worker thread failed: {e}"))?;
            }
            Some(WorkerHandle::Process(mut child)) => {
                drop(child.stdin.take()); // end of input: stop
                let status = child.wait()?;
                if !status.success() {
                    return Err(format!("a worker process failed: {status}").into());
                }
            }
            None => {}
        }
        Ok(())
    }

    /// The process id of a worker process (`None` for a thread).
    pub(super) fn pid(&self) -> Option<u32> {
        match &self.0 {
            Some(WorkerHandle::Process(child)) => Some(child.id()),
            _ => None,
        }
    }

    /// Kills a worker process with SIGKILL (threads cannot be killed).
    pub(super) fn kill9(&mut self) -> Result<()> {
        match self.0.take() {
            Some(WorkerHandle::Process(mut child)) => {
                child.kill()?;
                child.wait()?;
                Ok(())
            }
            other => {
                self.0 = other;
                Err("only a worker process can be killed".into())
            }
        }
    }
}

impl Drop for RunningWorker {
    fn drop(&mut self) {
        match self.0.take() {
            Some(WorkerHandle::Thread { stop, .. }) => stop.store(true, Ordering::SeqCst),
            Some(WorkerHandle::Process(mut child)) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            None => {}
        }
    }
}

/// Runs one worker until `stop` is set (shared by threads and worker processes).
pub(super) fn run_worker(
    db: Database,
    spec: &WorkerSpec,
    log: &Path,
    stop: &AtomicBool,
) -> std::result::Result<(), String> {
    let recorder = Arc::new(Recorder::open(log, &spec.tag).map_err(|e| e.to_string())?);
    let runner = Runner::new(db.clone(), bench_handlers(recorder), Policies::new());
    let mut worker = Worker::new(db, spec.tag.clone(), runner, spec.options());
    worker.run(stop).map_err(|e| e.to_string())
}

/// Worker mode: `WORKER_MODE ADDR LOG TAG AGENT_SIZE BATCH_SIZE PING_MS DEATH_MS` connects to the
/// server at ADDR and runs a worker with the bench handlers until its standard input
/// ends (then it stops gracefully) or it is killed.
pub fn worker_process(args: &[String]) -> std::result::Result<(), String> {
    let [addr, log, tag, agent_size, batch_size, ping_ms, death_ms] = args else {
        return Err(format!(
            "usage: {WORKER_MODE} ADDR LOG TAG AGENT_SIZE BATCH_SIZE PING_MS DEATH_MS"
        ));
    };
    let number = |s: &String| s.parse::<u64>().map_err(|e| format!("{s}: {e}"));
    let spec = WorkerSpec {
        tag: tag.clone(),
        agent_size: u32::try_from(number(agent_size)?).map_err(|e| e.to_string())?,
        batch_size: u32::try_from(number(batch_size)?).map_err(|e| e.to_string())?,
        ping: Duration::from_millis(number(ping_ms)?),
        death: Duration::from_millis(number(death_ms)?),
    };
    let storage: Arc<dyn Storage> = if addr.starts_with("postgres") {
        let options = zodiac_storage::PgOptions::from_url(addr);
        Arc::new(zodiac_storage::PgStorage::open(options).map_err(|e| e.to_string())?)
    } else {
        Arc::new(ClientStorage::connect(addr, ClientOptions::new()).map_err(|e| e.to_string())?)
    };
    let db = Database::open(Arc::clone(&storage)).map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::stdin().lock().read_to_end(&mut sink);
            stop.store(true, Ordering::SeqCst);
        });
    }
    run_worker(db, &spec, Path::new(log), &stop)?;
    storage.close().map_err(|e| e.to_string())
}
