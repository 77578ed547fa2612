//! `zodiac jobs cron add|list|remove`: recurring jobs, put by the workers of
//! their queue at each tick of a cron expression (UTC).
//!
//! Invariants:
//! - Every option is checked while the command line is parsed (the expression
//!   too), before the store is opened.
//! - `add` and `remove` are one transaction each; `list` reads one snapshot.

use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::{Value, json};
use zodiac_async::{
    CronExpr, ScheduleSpec, Timestamp, add_schedule, remove_schedule, schedules, transact,
};
use zodiac_storage::Storage;

use crate::arguments;
use crate::builtins::{decode_json, encode_arguments};
use crate::cli::{ConnectArgs, LockArgs};
use crate::jobs::database;
use crate::jobs_put_options::PutExtraArgs;
use crate::store::{Connect, open_store, open_store_read_only};

/// The `jobs cron` commands.
#[derive(Subcommand)]
pub enum CronCommand {
    /// Add a schedule: at each tick of CRON (UTC) a worker of the queue puts
    /// HANDLER(ARGS_JSON) there, one job per tick however many workers run.
    /// Ticks missed while no worker ran coalesce into one job.
    Add {
        store: String,
        /// The schedule's name, unique in the database.
        name: String,
        /// Five fields (minute hour day-of-month month day-of-week), six with
        /// seconds first, or @hourly, @daily, @weekly, @monthly, @yearly.
        #[arg(value_name = "CRON", value_parser = parse_cron)]
        cron: String,
        #[arg(value_parser = arguments::handler_name)]
        handler: String,
        /// The handler's arguments: one JSON object, `@FILE` or `-`.
        #[arg(value_name = "ARGS_JSON", default_value = "{}", value_parser = arguments::parse)]
        args: Value,
        #[arg(long, value_name = "NAME", default_value = "", value_parser = arguments::queue_name)]
        queue: String,
        /// Each job's priority, attempts, quotas and unique key, as `jobs put`
        /// takes them (with --unique, a tick whose key an earlier job holds puts
        /// no job).
        #[command(flatten)]
        job: Box<PutExtraArgs>,
        /// Replace the schedule of that name if there is one.
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        lock: LockArgs,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// List the schedules: expression, queue, handler, next tick, last job, jobs
    /// put and ticks missed.
    List {
        store: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Remove a schedule: it puts no more jobs (the jobs it put stay).
    Remove {
        store: String,
        name: String,
        #[command(flatten)]
        lock: LockArgs,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

fn parse_cron(text: &str) -> Result<String, String> {
    CronExpr::parse(text)
        .map(|_| text.to_string())
        .map_err(|e| e.to_string())
}

/// Runs one `jobs cron` command.
pub fn run(command: CronCommand, wait: Option<std::time::Duration>) -> Result<()> {
    match command {
        CronCommand::Add {
            store,
            name,
            cron,
            handler,
            args,
            queue,
            job,
            replace,
            lock,
            connect,
        } => {
            let mut spec = ScheduleSpec::new(
                name,
                cron,
                queue,
                handler,
                encode_arguments(&args.to_string()),
            );
            job.apply_to_schedule(&mut spec)?;
            add(&store, &spec, replace, &lock.apply(connect.connect(wait)))
        }
        CronCommand::List {
            store,
            json,
            connect,
        } => list(&store, json, &connect.connect(wait)),
        CronCommand::Remove {
            store,
            name,
            lock,
            connect,
        } => remove(&store, &name, &lock.apply(connect.connect(wait))),
    }
}

fn add(store: &str, spec: &ScheduleSpec, replace: bool, connect: &Connect) -> Result<()> {
    let storage: Arc<dyn Storage> = open_store(store, connect, true)?;
    let db = database(Arc::clone(&storage))?;
    let next = transact(&db, |tx| {
        let s = add_schedule(tx, spec, Timestamp::now(), replace)?;
        Ok(tx.get(&s)?.next_tick())
    })
    .with_context(|| {
        format!(
            "adding schedule {:?} to {}",
            spec.name,
            zodiac_storage::url_without_password(store)
        )
    })?;
    drop(db);
    storage.close()?;
    let queue = if spec.queue.is_empty() {
        "the default queue".to_string()
    } else {
        format!("queue {:?}", spec.queue)
    };
    match next {
        Some(t) => println!(
            "schedule {:?}: {} in {queue}, next at {t}; a worker of that queue puts each job",
            spec.name, spec.handler
        ),
        None => println!(
            "schedule {:?} added, but {:?} has no tick before the year 10000",
            spec.name, spec.expression
        ),
    }
    Ok(())
}

fn remove(store: &str, name: &str, connect: &Connect) -> Result<()> {
    let storage: Arc<dyn Storage> = open_store(store, connect, false)?;
    let db = database(Arc::clone(&storage))?;
    transact(&db, |tx| remove_schedule(tx, name)).with_context(|| {
        format!(
            "removing schedule {name:?} from {}",
            zodiac_storage::url_without_password(store)
        )
    })?;
    drop(db);
    storage.close()?;
    println!("schedule {name:?} removed; the jobs it put stay");
    Ok(())
}

fn list(store: &str, as_json: bool, connect: &Connect) -> Result<()> {
    let storage = open_store_read_only(store, connect)?;
    let db = database(storage)?;
    let rows = transact(&db, |tx| {
        let mut rows = Vec::new();
        for (_, s) in schedules(tx)? {
            // The schedule references its last job, so pack keeps it.
            let last = match s.last_job() {
                Some(job) => Some((job.oid().0, tx.get(&job)?.status())),
                None => None,
            };
            let time = |t: Option<Timestamp>| t.map_or(Value::Null, |t| json!(t.to_string()));
            rows.push(json!({
                "name": s.name(),
                "cron": s.expression(),
                "queue": s.queue(),
                "handler": s.handler(),
                "arguments": decode_json(s.argument_bytes()),
                "priority": s.priority(),
                "next_tick": time(s.next_tick()),
                "last_tick": time(s.last_tick()),
                "last_job": last.map(|(id, _)| id),
                "last_job_status": last.map(|(_, st)| st.name()),
                "quotas": s.quota_names(),
                "unique": s.unique_key(),
                "unique_for_ms": s.unique_for().map(|d| d.as_millis() as u64),
                "puts": s.puts(),
                "missed": s.missed(),
                "held": s.held(),
            }));
        }
        Ok(rows)
    })?;
    if as_json {
        println!("{}", Value::Array(rows));
        return Ok(());
    }
    if rows.is_empty() {
        println!("no schedules (add one with `zodiac jobs cron add`)");
    }
    for r in &rows {
        let text = |k: &str| r[k].as_str().unwrap_or("-").to_string();
        let last = match (&r["last_job"], r["last_job_status"].as_str()) {
            (Value::Number(id), Some(st)) => format!("job {id} ({st})"),
            _ => "none yet".to_string(),
        };
        let held = match r["unique"].as_str() {
            Some(key) => format!(", {} held by unique key {key:?}", r["held"]),
            None => String::new(),
        };
        println!(
            "{:?} '{}' queue {:?} handler {}: next {}, last {last}; {} put, {} missed{held}",
            text("name"),
            text("cron"),
            text("queue"),
            text("handler"),
            text("next_tick"),
            r["puts"],
            r["missed"],
        );
    }
    Ok(())
}
