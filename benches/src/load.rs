//! `load100`: a server under load. A real `zodiac server` process serves a fresh file
//! store of the run directory; 100 client connections (one `ClientStorage` each, on
//! its own thread) run a mix of loads and commits for 60 s (`--connections N`,
//! `--seconds N`). Half the operations are loads of an object chosen uniformly among
//! every connection's objects; half are commits, and one commit in ten is made to
//! conflict: it stores the shared hot object on a revision known to be stale.
//!
//! Invariants (the workload's checks, which fail the run):
//! - Every commit made to conflict fails with a conflict, and every other commit
//!   succeeds: an error other than these expected conflicts counts, and must be 0.
//! - Nothing acknowledged is lost: after the run, each connection's objects load
//!   with the value of its last acknowledged commit.
//!
//! Reported: operations per second (loads and commits), commits and loads per second,
//! the p50/p99 latency of the successful commits, the conflicts, the errors, and the
//! server's peak resident memory (`VmHWM` from `/proc/PID/status`).

use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use zodiac_storage::{ClientOptions, ClientStorage, Oid, Storage, Tid, TransactionMeta};

use crate::Result;
use crate::report::{Measurement, Value};
use crate::rng::{SplitMix64, index_of, val};
use crate::server_process::ServerProcess;
use crate::stats::Latencies;

/// The workload's name on the command line.
pub const NAME: &str = "load100";
/// Objects each connection owns and updates.
const OBJECTS_PER_CONNECTION: u64 = 10;
/// One commit in this many is made to conflict.
const CONFLICT_EVERY: u64 = 10;
/// Seed of the connections' choices (connection `c` uses `LOAD_SEED + c`).
const LOAD_SEED: u64 = 100;
/// Index of the hot object's value (after every connection's objects).
const HOT_INDEX: u64 = u64::MAX >> 1;
/// Connections the server takes beyond the workload's (the setup's own client).
const SPARE_CONNECTIONS: u64 = 4;

/// How long `load100` runs and with how many connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadShape {
    /// Seconds of load (1 to [`SECONDS_MAX`]).
    pub seconds: u64,
    /// Client connections (1 to [`CONNECTIONS_MAX`]).
    pub connections: u64,
}

/// Longest `--seconds`.
pub const SECONDS_MAX: u64 = 3600;
/// Most `--connections`.
pub const CONNECTIONS_MAX: u64 = 1000;

impl Default for LoadShape {
    fn default() -> Self {
        LoadShape {
            seconds: 60,
            connections: 100,
        }
    }
}

/// What the setup made: every connection's objects and the hot object's stale base.
struct Setup {
    /// Object `c * OBJECTS_PER_CONNECTION + k` is connection `c`'s `k`-th.
    oids: Vec<Oid>,
    tids: Vec<Tid>,
    hot: Oid,
    /// The hot object's first revision, superseded before the load starts.
    hot_stale: Tid,
}

/// What one connection did.
#[derive(Default)]
struct Tally {
    loads: u64,
    commits: u64,
    conflicts: u64,
    errors: u64,
    first_error: Option<String>,
    latencies: Latencies,
    /// (object index, value revision) of this connection's last acknowledged commits.
    acknowledged: Vec<(u64, u64)>,
}

impl Tally {
    fn error(&mut self, what: String) {
        self.errors += 1;
        self.first_error.get_or_insert(what);
    }
}

/// Runs `load100` with a server on a new file store at `data`.
pub fn run(shape: LoadShape, data: &Path) -> Result<Measurement> {
    let server = ServerProcess::start(data, shape.connections + SPARE_CONNECTIONS)?;
    let address = server.address().to_string();
    let setup = Arc::new(setup(&address, shape.connections)?);
    let (elapsed, tallies) = load(&address, shape, &setup)?;
    let server_peak = server.peak_rss_bytes();
    let lost = check_acknowledged(&address, &setup, &tallies)?;
    server.stop()?;
    let mut total = Tally::default();
    for t in tallies {
        total.loads += t.loads;
        total.commits += t.commits;
        total.conflicts += t.conflicts;
        total.errors += t.errors;
        total.first_error = total.first_error.or(t.first_error);
        total.latencies.extend(t.latencies);
    }
    if let Some(e) = total.first_error {
        return Err(format!(
            "{} unexpected errors (must be 0); the first: {e}",
            total.errors
        )
        .into());
    }
    if lost > 0 {
        return Err(format!("{lost} acknowledged commits were lost").into());
    }
    let ops = total.loads + total.commits + total.conflicts;
    let seconds = elapsed.as_secs_f64();
    let mut m = Measurement::new(NAME, seconds, ops, "ops/s");
    m.set("connections", Value::Int(shape.connections));
    m.set("commits", Value::Int(total.commits));
    m.set("conflicts", Value::Int(total.conflicts));
    m.set("loads", Value::Int(total.loads));
    m.set("errors", Value::Int(total.errors));
    m.set(
        "commits_per_s",
        Value::Float(total.commits as f64 / seconds, 1),
    );
    m.set("loads_per_s", Value::Float(total.loads as f64 / seconds, 1));
    if let Some((p50, p99)) = total.latencies.p50_p99() {
        m.set("commit_p50_us", Value::Float(p50, 1));
        m.set("commit_p99_us", Value::Float(p99, 1));
    }
    if let Some(peak) = server_peak {
        m.set("server_peak_rss_bytes", Value::Int(peak));
    }
    Ok(m)
}

fn connect(address: &str) -> Result<ClientStorage> {
    let options = ClientOptions::new().wait_timeout(Duration::from_secs(10));
    Ok(ClientStorage::connect(address, options)?)
}

/// Creates every connection's objects and the hot object, whose first revision is
/// then superseded (the stale base the conflicting commits store on).
fn setup(address: &str, connections: u64) -> Result<Setup> {
    let client = connect(address)?;
    let n = connections * OBJECTS_PER_CONNECTION;
    let mut txn = client.begin(TransactionMeta::described("load100 setup"))?;
    let mut oids = Vec::with_capacity(n as usize);
    for i in 0..n {
        let oid = client.new_oid()?;
        txn.store(oid, Tid::ZERO, val(i, 0))?;
        oids.push(oid);
    }
    let hot = client.new_oid()?;
    txn.store(hot, Tid::ZERO, val(HOT_INDEX, 0))?;
    let first = txn.finish()?;
    let mut txn = client.begin(TransactionMeta::described("load100 hot object"))?;
    txn.store(hot, first, val(HOT_INDEX, 1))?;
    txn.finish()?;
    client.close()?;
    Ok(Setup {
        oids,
        tids: vec![first; n as usize],
        hot,
        hot_stale: first,
    })
}

/// The connections, started together and run until the deadline; the time from the
/// start to the last one's end, and what each did.
fn load(address: &str, shape: LoadShape, setup: &Arc<Setup>) -> Result<(Duration, Vec<Tally>)> {
    let barrier = Arc::new(Barrier::new(shape.connections as usize + 1));
    let duration = Duration::from_secs(shape.seconds);
    let threads: Vec<_> = (0..shape.connections)
        .map(|c| {
            let (setup, barrier) = (Arc::clone(setup), Arc::clone(&barrier));
            let address = address.to_string();
            std::thread::spawn(move || -> std::result::Result<Tally, String> {
                let client = connect(&address).map_err(|e| e.to_string());
                barrier.wait();
                let client = client?;
                let tally = connection(&client, c, &setup, Instant::now() + duration);
                client.close().map_err(|e| e.to_string())?;
                Ok(tally)
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut tallies = Vec::with_capacity(threads.len());
    for thread in threads {
        match thread.join() {
            Ok(Ok(t)) => tallies.push(t),
            Ok(Err(e)) => return Err(format!("a connection failed: {e}").into()),
            Err(_) => return Err("a connection's thread panicked".into()),
        }
    }
    Ok((start.elapsed(), tallies))
}

/// Connection `c`'s loop until `deadline`.
fn connection(client: &ClientStorage, c: u64, setup: &Setup, deadline: Instant) -> Tally {
    let mut rng = SplitMix64::new(LOAD_SEED + c);
    let first = c * OBJECTS_PER_CONNECTION;
    let mut tids: Vec<Tid> =
        setup.tids[first as usize..(first + OBJECTS_PER_CONNECTION) as usize].to_vec();
    let mut revisions = vec![0u64; OBJECTS_PER_CONNECTION as usize];
    let mut tally = Tally::default();
    while Instant::now() < deadline {
        if rng.below(2) == 0 {
            let i = rng.below(setup.oids.len() as u64);
            match client.load(setup.oids[i as usize], Tid::MAX) {
                Ok(r) if index_of(&r.data) == Some(i) => tally.loads += 1,
                Ok(_) => tally.error(format!("object {i} loaded another object's value")),
                Err(e) => tally.error(format!("load: {e}")),
            }
        } else if rng.below(CONFLICT_EVERY) == 0 {
            match commit(client, setup.hot, setup.hot_stale, val(HOT_INDEX, 2)) {
                Err(e) if e.as_conflict().is_some() => tally.conflicts += 1,
                Err(e) => tally.error(format!("conflicting commit: {e}")),
                Ok(tid) => tally.error(format!("a commit on a stale revision succeeded as {tid}")),
            }
        } else {
            let k = rng.below(OBJECTS_PER_CONNECTION) as usize;
            let t0 = Instant::now();
            let value = val(first + k as u64, revisions[k] + 1);
            match commit(client, setup.oids[first as usize + k], tids[k], value) {
                Ok(tid) => {
                    tally.latencies.record(t0.elapsed());
                    tally.commits += 1;
                    tids[k] = tid;
                    revisions[k] += 1;
                }
                Err(e) => tally.error(format!("commit: {e}")),
            }
        }
    }
    tally.acknowledged = (0..OBJECTS_PER_CONNECTION)
        .map(|k| (first + k, revisions[k as usize]))
        .collect();
    tally
}

fn commit(
    client: &ClientStorage,
    oid: Oid,
    base: Tid,
    data: Vec<u8>,
) -> zodiac_storage::Result<Tid> {
    let mut txn = client.begin(TransactionMeta::default())?;
    txn.store(oid, base, data)?;
    txn.finish()
}

/// The objects whose last acknowledged value does not load back, through a new
/// connection (a cold cache).
fn check_acknowledged(address: &str, setup: &Setup, tallies: &[Tally]) -> Result<u64> {
    let client = connect(address)?;
    let mut lost = 0;
    for &(i, revision) in tallies.iter().flat_map(|t| &t.acknowledged) {
        let data = client.load(setup.oids[i as usize], Tid::MAX)?.data;
        if data != val(i, revision) {
            lost += 1;
        }
    }
    client.close()?;
    Ok(lost)
}
