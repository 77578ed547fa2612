//! `zodiac worker`: one dispatcher with the built-in handlers, polling its queues
//! until SIGTERM or SIGINT, then stopping gracefully (running jobs get the grace
//! period; what is still running is handed to recovery). A second signal exits at
//! once, like a crash: the next start of the same UUID file recovers its jobs.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use signal_hook::consts::{SIGINT, SIGTERM};
use zodiac_async::limits::WORKER_ID_PATH_DEFAULT;
use zodiac_async::{Policies, Runner, Worker, WorkerIdentity, WorkerOptions};
use zodiac_objects::Database;
use zodiac_storage::{ClientStorage, Storage};

use crate::store::{Connect, Unreachable, connect_to, is_server, open_store};

pub struct Args {
    pub store: String,
    pub queues: Vec<String>,
    pub agent: String,
    pub size: u32,
    pub batch: u32,
    pub uuid_file: Option<PathBuf>,
    pub poll_interval: Duration,
    pub ping_interval: Duration,
    pub death_interval: Duration,
    pub grace: Duration,
    pub allow_shell: bool,
    pub connect: Connect,
}

pub fn run(args: Args) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGTERM, SIGINT] {
        // The first signal asks for a graceful stop; a second one exits at once.
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&stop))
            .context("installing signal handlers")?;
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let uuid_file = args
        .uuid_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(WORKER_ID_PATH_DEFAULT));
    // A UUID file this start creates names a dispatcher only once the worker
    // polls; a start that fails before must not leave it behind.
    let created = !uuid_file.exists();
    let identity = WorkerIdentity::acquire(&uuid_file)?;
    let opened = open_writable(&args.store, &args.connect, &stop).and_then(|storage| {
        let db = Database::open(Arc::clone(&storage)).context("opening the database")?;
        Ok((storage, db))
    });
    let (storage, db) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            // Removed while still locked: no other start can take this UUID in
            // between and then lose its file.
            if created {
                let _ = std::fs::remove_file(&uuid_file);
            }
            drop(identity);
            return Err(e);
        }
    };
    let runner = Runner::new(
        db.clone(),
        crate::builtins::handlers(args.allow_shell),
        Policies::new(),
    );
    let options = WorkerOptions {
        queues: if args.queues.is_empty() {
            vec![String::new()]
        } else {
            args.queues.clone()
        },
        agent: args.agent.clone(),
        agent_size: args.size,
        batch_size: args.batch,
        poll_interval: args.poll_interval,
        ping_interval: args.ping_interval,
        death_interval: args.death_interval,
        grace_period: args.grace,
        restarted: identity.restarted(),
        ..WorkerOptions::default()
    };
    let id = identity.id();
    let mut worker = Worker::new(db, id.clone(), runner, options);
    // The first poll activates the dispatcher in its queues (and, after a restart,
    // recovers what the previous incarnation held); a failure is retried by `run`.
    if let Err(e) = worker.poll_once() {
        log::warn!("first poll of dispatcher {id} failed (retrying): {e}");
    }
    println!("worker {id} ready");
    std::io::stdout().flush()?;
    log::info!(
        "worker {id} polling {} on {} (uuid file {})",
        describe_queues(&args.queues),
        zodiac_storage::url_without_password(&args.store),
        uuid_file.display()
    );
    worker.run(&stop)?;
    log::info!("worker {id} stopped");
    drop(worker);
    storage.close()?;
    drop(identity);
    Ok(())
}

/// Opens STORE for the worker, refusing a server that refuses commits: every poll
/// of a worker commits, so it would otherwise print "ready" and fail forever.
fn open_writable(store: &str, connect: &Connect, stop: &AtomicBool) -> Result<Arc<dyn Storage>> {
    if !is_server(store) {
        return open_store(store, connect, true);
    }
    let client = connect_until_stopped(store, connect, stop)?;
    if client.server_is_read_only() {
        let _ = client.close();
        bail!(
            "{store} is served read-only (`zodiac server --read-only`): a worker commits \
             every job it runs; point it at a server started without --read-only"
        );
    }
    Ok(Arc::new(client))
}

/// How long one attempt to reach the server waits.
const CONNECT_ATTEMPT: Duration = Duration::from_secs(5);

/// Connects to the server, waiting for it as long as it takes (a worker may start
/// before its server) until a stop is asked: a silent wait ending in an error
/// after 30 s is what a user who forgot the server met. Says once that it waits.
/// The client returned is connected with `connect` as given (its wait for a
/// server that goes away later), once a brief attempt found the server.
fn connect_until_stopped(
    store: &str,
    connect: &Connect,
    stop: &AtomicBool,
) -> Result<ClientStorage> {
    let mut waiting = false;
    loop {
        // A short first attempt: a server that is not there is told soon.
        let attempt = Connect {
            wait_timeout: Some(if waiting {
                CONNECT_ATTEMPT
            } else {
                CONNECT_ATTEMPT / 5
            }),
            ..connect.clone()
        };
        let started = Instant::now();
        match connect_to(store, &attempt) {
            Err(e) if e.is::<Unreachable>() && !stop.load(Ordering::Relaxed) => {
                // An attempt that gave up at once (an unknown host) must not spin.
                if started.elapsed() < CONNECT_ATTEMPT / 5 {
                    std::thread::sleep(CONNECT_ATTEMPT / 5);
                }
                if !waiting {
                    log::warn!(
                        "{e}; the worker keeps trying until the server answers (SIGTERM or \
                         SIGINT to give up)"
                    );
                    waiting = true;
                }
            }
            Ok(probe) => {
                if waiting {
                    log::info!("reached {}", zodiac_storage::url_without_password(store));
                }
                // The attempts wait briefly; the worker's own client keeps the
                // usual wait for a server that restarts while it runs.
                let _ = probe.close();
                return connect_to(store, connect);
            }
            Err(e) => return Err(e),
        }
    }
}

fn describe_queues(queues: &[String]) -> String {
    if queues.is_empty() {
        return "the default queue".into();
    }
    let names: Vec<_> = queues
        .iter()
        .map(|q| {
            if q.is_empty() {
                "(default)".to_string()
            } else {
                q.clone()
            }
        })
        .collect();
    format!("queue(s) {}", names.join(", "))
}
