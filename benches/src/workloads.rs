//! The storage workloads of workloads.md (W1, W1 with 4 writers, W2, W3, W4, W5, W7
//! with and without the saved index), each run once against a fresh store.
//!
//! Invariants, so the figures compare with the peers':
//! - Object `i` (0-based, in the order the workload writes them) has the value
//!   `val(i, rev)` and the oid the storage allocated for it; random choices pick an
//!   index with SplitMix64 and map it to that oid.
//! - Only the work the definition names is inside the timed section; loading the
//!   preconditions, closing and reopening for W3, and checks of the results are not.
//! - Every commit is a whole transaction: begin, store each object, finish (which
//!   votes first).

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use zodiac_storage::{Oid, Storage, Tid, TransactionMeta};

use crate::Result;
use crate::jobs::JobWorkload;
use crate::load::LoadShape;
use crate::report::{Measurement, Value};
use crate::rng::{SplitMix64, VALUE_BYTES, W3_SEED, W4_SEED, index_of, val};
use crate::stats::Latencies;
use crate::system;
use crate::target::StoreUnderTest;

/// Commits of W1 (in all, for any number of writers).
const W1_COMMITS: u64 = 10_000;
/// Writer threads of `w1-4`.
const W1_WRITERS_CONCURRENT: u64 = 4;
/// Transactions and objects per transaction of W2 (and of every W2-style load).
const W2_TRANSACTIONS: u64 = 100;
const W2_OBJECTS_PER_TRANSACTION: u64 = 1_000;
/// Objects W3 and W7 load first, and loads W3 times.
const W3_OBJECTS: u64 = 100_000;
const W3_LOADS: u64 = 100_000;
/// Objects W4 updates, and its update commits.
const W4_OBJECTS: u64 = 1_000;
const W4_COMMITS: u64 = 10_000;
/// Objects W7 loads before it times the open.
const W7_OBJECTS: u64 = 100_000;
/// W3 loads checked for the right content after the timed section.
const W3_CHECKED_LOADS: usize = 1_000;

/// A named workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    PhysFdatasync,
    W1,
    W1Concurrent,
    W2,
    W3,
    W4,
    W5,
    /// W5's shape at 1,000,000 objects (by name only: not in `ALL`).
    W5Large,
    W7,
    W7NoIndex,
    ObjW1,
    ObjW2,
    BTree,
    BTreeConcurrent,
    /// W6's W1 with 4 client processes over the server (by name only: not in `ALL`).
    W6Processes,
    /// A job workload (J1–J6; see `jobs`).
    Job(JobWorkload),
    /// `load100`: connections loading and committing against a `zodiac server`
    /// process (by name only: not in `ALL`; see `load`).
    Load(LoadShape),
}

impl Workload {
    /// Every workload, in the order `storage` runs them.
    pub const ALL: [Workload; 9] = [
        Workload::PhysFdatasync,
        Workload::W1,
        Workload::W1Concurrent,
        Workload::W2,
        Workload::W3,
        Workload::W4,
        Workload::W5,
        Workload::W7,
        Workload::W7NoIndex,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::PhysFdatasync => "phys-fdatasync",
            Workload::W1 => "w1",
            Workload::W1Concurrent => "w1-4",
            Workload::W2 => "w2",
            Workload::W3 => "w3",
            Workload::W4 => "w4",
            Workload::W5 => "w5",
            Workload::W5Large => "w5-1m",
            Workload::W7 => "w7",
            Workload::W7NoIndex => "w7-noindex",
            Workload::ObjW1 => "obj-w1",
            Workload::ObjW2 => "obj-w2",
            Workload::BTree => "btree",
            Workload::BTreeConcurrent => "btree-4",
            Workload::W6Processes => "w6-4p",
            Workload::Job(job) => job.name(),
            Workload::Load(_) => crate::load::NAME,
        }
    }

    /// The job workloads, in the order `jobs` runs them (after `phys-fdatasync`, the
    /// disk's floor measured in the same run).
    pub const JOBS: [Workload; 11] = [
        Workload::PhysFdatasync,
        Workload::Job(JobWorkload::J1),
        Workload::Job(JobWorkload::J2),
        Workload::Job(JobWorkload::J3),
        Workload::Job(JobWorkload::J3Priorities),
        Workload::Job(JobWorkload::J3PrioritiesUnique),
        Workload::Job(JobWorkload::J3Single),
        Workload::Job(JobWorkload::J4),
        Workload::Job(JobWorkload::J5),
        Workload::Job(JobWorkload::J6),
        Workload::Job(JobWorkload::J3Mix),
    ];

    /// Why the workload cannot run against `kind`, if it cannot.
    pub fn skip_reason(self, kind: crate::target::StoreKind) -> Option<&'static str> {
        use crate::target::StoreKind;
        match (self, kind) {
            (Workload::Job(_), StoreKind::Remote(_)) => Some(
                "the job workloads need a store of their own (their execution ids would \
                 meet other runs' jobs): use --store file, memory or server",
            ),
            (Workload::Job(job), _) => job.skip_reason(kind),
            (
                Workload::W5 | Workload::W5Large | Workload::W6Processes | Workload::W7NoIndex,
                StoreKind::Postgres(_),
            ) => Some(
                "this workload measures the file store (pack, its index, serving it): use \
                 --store file",
            ),
            (Workload::Load(_), StoreKind::File) => None,
            (Workload::Load(_), _) => Some(
                "load100 serves a file store of its own with a `zodiac server` process: use \
                 --store file",
            ),
            (
                Workload::PhysFdatasync
                | Workload::W1
                | Workload::W1Concurrent
                | Workload::W2
                | Workload::W3
                | Workload::W4,
                StoreKind::Remote(_),
            ) => None,
            (_, StoreKind::Remote(_)) => Some(
                "an existing server runs only the workloads that add objects \
                 (w1, w1-4, w2, w3, w4)",
            ),
            _ => None,
        }
    }

    /// The object-level workloads, in the order `objects` runs them.
    pub const OBJECTS: [Workload; 4] = [
        Workload::ObjW1,
        Workload::ObjW2,
        Workload::BTree,
        Workload::BTreeConcurrent,
    ];

    /// The workloads a command-line name selects (`storage` and `objects` select
    /// their groups).
    pub fn select(name: &str) -> Option<Vec<Workload>> {
        match name {
            "storage" => return Some(Workload::ALL.to_vec()),
            "objects" => return Some(Workload::OBJECTS.to_vec()),
            "jobs" => return Some(Workload::JOBS.to_vec()),
            // Plain and mixed-priority J3 side by side, on one machine in one run.
            "j3-compare" => {
                return Some(vec![
                    Workload::Job(JobWorkload::J3),
                    Workload::Job(JobWorkload::J3Priorities),
                    Workload::Job(JobWorkload::J3PrioritiesUnique),
                ]);
            }
            _ => {}
        }
        Workload::ALL
            .into_iter()
            .chain(Workload::OBJECTS)
            .chain([Workload::W5Large])
            .chain([Workload::W6Processes])
            .chain([Workload::Load(LoadShape::default())])
            .chain(Workload::JOBS)
            .find(|w| w.name() == name)
            .map(|w| vec![w])
    }

    /// Whether the workload runs against a store (the physical probe does not).
    pub fn uses_store(self) -> bool {
        self != Workload::PhysFdatasync
    }

    /// Runs a store workload once against the fresh store `store`.
    pub fn run(self, store: &mut StoreUnderTest) -> Result<Measurement> {
        match self {
            Workload::PhysFdatasync => Err("phys-fdatasync does not run against a store".into()),
            Workload::W1 => w1(store, 1),
            Workload::W1Concurrent => w1(store, W1_WRITERS_CONCURRENT),
            Workload::W2 => w2(store),
            Workload::W3 => w3(store),
            Workload::W4 => w4(store),
            Workload::W5 => w5(store),
            Workload::W5Large => w5_large(store),
            Workload::W7 => w7(store, true),
            Workload::W7NoIndex => w7(store, false),
            Workload::ObjW1 => crate::objects::obj_w1(store),
            Workload::ObjW2 => crate::objects::obj_w2(store),
            Workload::BTree => crate::objects::btree(store),
            Workload::BTreeConcurrent => crate::objects::btree_concurrent(store),
            Workload::W6Processes => w6_processes(store),
            Workload::Load(shape) => crate::load::run(shape, &store.create_path()?),
            Workload::Job(job) => {
                Err(format!("{} runs through JobWorkload::run", job.name()).into())
            }
        }
    }
}

/// One durable transaction storing each `(oid, base_tid, data)`.
fn commit(storage: &dyn Storage, stores: Vec<(Oid, Tid, Vec<u8>)>) -> Result<Tid> {
    let mut txn = storage.begin(TransactionMeta::default())?;
    for (oid, base_tid, data) in stores {
        txn.store(oid, base_tid, data)?;
    }
    Ok(txn.finish()?)
}

/// W2-style load of `n` new objects in transactions of 1,000. Returns the oid of each
/// object index and the tid of its revision.
fn bulk_load(storage: &dyn Storage, n: u64) -> Result<(Vec<Oid>, Vec<Tid>)> {
    let mut oids = Vec::with_capacity(n as usize);
    let mut tids = Vec::with_capacity(n as usize);
    let mut start = 0;
    while start < n {
        let end = (start + W2_OBJECTS_PER_TRANSACTION).min(n);
        let mut txn = storage.begin(TransactionMeta::default())?;
        for i in start..end {
            let oid = storage.new_oid()?;
            txn.store(oid, Tid::ZERO, val(i, 0))?;
            oids.push(oid);
        }
        let tid = txn.finish()?;
        tids.resize(end as usize, tid);
        start = end;
    }
    Ok((oids, tids))
}

/// W1: 10,000 transactions of one new object each, by `writers` threads sharing the
/// store (each its own transactions); commits/s over the whole run, latency per
/// commit (new oid, begin, store, finish).
fn w1(store: &mut StoreUnderTest, writers: u64) -> Result<Measurement> {
    assert!(writers > 0 && W1_COMMITS.is_multiple_of(writers));
    let storage = store.create()?;
    let per_writer = W1_COMMITS / writers;
    let (elapsed, latencies) = if writers == 1 {
        let start = Instant::now();
        let latencies = w1_writer(storage.as_ref(), 0..per_writer)?;
        (start.elapsed(), latencies)
    } else {
        w1_concurrent(&storage, writers, per_writer)?
    };
    debug_assert_eq!(latencies.len() as u64, W1_COMMITS);
    store.close(storage)?;
    let name = if writers == 1 {
        Workload::W1
    } else {
        Workload::W1Concurrent
    }
    .name();
    let mut m = Measurement::new(name, elapsed.as_secs_f64(), W1_COMMITS, "commits/s");
    m.set("writers", Value::Int(writers));
    set_latencies(&mut m, &latencies);
    set_file_sizes(&mut m, store);
    Ok(m)
}

/// The writer threads of W1: they start together at a barrier, and the clock runs from
/// the barrier until the last one is done.
fn w1_concurrent(
    storage: &Arc<dyn Storage>,
    writers: u64,
    per_writer: u64,
) -> Result<(Duration, Latencies)> {
    let barrier = Arc::new(Barrier::new(writers as usize + 1));
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let storage = Arc::clone(storage);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                w1_writer(storage.as_ref(), w * per_writer..(w + 1) * per_writer)
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut latencies = Latencies::with_capacity(W1_COMMITS as usize);
    let mut failure = None;
    for thread in threads {
        match thread.join() {
            Ok(Ok(l)) => latencies.extend(l),
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some("a writer thread panicked".to_string()),
        }
    }
    let elapsed = start.elapsed();
    match failure {
        Some(e) => Err(e.into()),
        None => Ok((elapsed, latencies)),
    }
}

/// Commits one new object per transaction for each index in `indices`.
fn w1_writer(storage: &dyn Storage, indices: std::ops::Range<u64>) -> Result<Latencies> {
    let mut latencies = Latencies::with_capacity((indices.end - indices.start) as usize);
    for i in indices {
        let t0 = Instant::now();
        let oid = storage.new_oid()?;
        commit(storage, vec![(oid, Tid::ZERO, val(i, 0))])?;
        latencies.record(t0.elapsed());
    }
    Ok(latencies)
}

/// W6 (4 clients): W1's 10,000 commits by 4 client processes, each with its own
/// connection to the file store served on 127.0.0.1; aggregate commits/s.
fn w6_processes(store: &mut StoreUnderTest) -> Result<Measurement> {
    if store.kind() != crate::target::StoreKind::File {
        return Err("w6-4p serves the file store itself: run it with --store file".into());
    }
    let storage = store.create()?;
    let elapsed = crate::served::w1_client_processes(
        Arc::clone(&storage),
        W1_WRITERS_CONCURRENT,
        W1_COMMITS / W1_WRITERS_CONCURRENT,
    )?;
    store.close(storage)?;
    let mut m = Measurement::new(
        Workload::W6Processes.name(),
        elapsed,
        W1_COMMITS,
        "commits/s",
    );
    m.set("clients", Value::Int(W1_WRITERS_CONCURRENT));
    set_file_sizes(&mut m, store);
    Ok(m)
}

/// W2: 100 transactions of 1,000 new objects; objects/s.
fn w2(store: &mut StoreUnderTest) -> Result<Measurement> {
    let storage = store.create()?;
    let n = W2_TRANSACTIONS * W2_OBJECTS_PER_TRANSACTION;
    let start = Instant::now();
    let (oids, _) = bulk_load(storage.as_ref(), n)?;
    let elapsed = start.elapsed();
    assert_eq!(oids.len() as u64, n);
    store.close(storage)?;
    let mut m = Measurement::new(Workload::W2.name(), elapsed.as_secs_f64(), n, "objects/s");
    set_file_sizes(&mut m, store);
    Ok(m)
}

/// W3: 100,000 objects loaded and the store closed (untimed); reopened, then 100,000
/// loads of the latest revision of uniformly chosen objects (seed 42), one thread.
fn w3(store: &mut StoreUnderTest) -> Result<Measurement> {
    let storage = store.create()?;
    let (oids, _) = bulk_load(storage.as_ref(), W3_OBJECTS)?;
    store.close(storage)?;

    let mut rng = SplitMix64::new(W3_SEED);
    let picks: Vec<u64> = (0..W3_LOADS).map(|_| rng.below(W3_OBJECTS)).collect();
    let pick_oids: Vec<Oid> = picks.iter().map(|&i| oids[i as usize]).collect();
    let distinct = picks.iter().collect::<HashSet<_>>().len();

    let storage = store.reopen()?;
    let start = Instant::now();
    let mut bytes = 0usize;
    for &oid in &pick_oids {
        bytes += storage.load(oid, Tid::MAX)?.data.len();
    }
    let elapsed = start.elapsed();

    assert_eq!(
        bytes,
        W3_LOADS as usize * VALUE_BYTES,
        "bytes read by the W3 loads"
    );
    for (&i, &oid) in picks.iter().zip(&pick_oids).take(W3_CHECKED_LOADS) {
        let data = storage.load(oid, Tid::MAX)?.data;
        if index_of(&data) != Some(i) {
            return Err(format!("W3: object {i} (oid {oid}) loaded the wrong value").into());
        }
    }
    store.close(storage)?;

    let mut m = Measurement::new(
        Workload::W3.name(),
        elapsed.as_secs_f64(),
        W3_LOADS,
        "loads/s",
    );
    m.set("distinct_oids", Value::Int(distinct as u64));
    set_file_sizes(&mut m, store);
    Ok(m)
}

/// W4: 1,000 objects in one transaction (untimed); then 10,000 transactions each
/// updating one object chosen uniformly (seed 7) from its current revision.
fn w4(store: &mut StoreUnderTest) -> Result<Measurement> {
    let storage = store.create()?;
    let mut oids = Vec::with_capacity(W4_OBJECTS as usize);
    let mut txn = storage.begin(TransactionMeta::default())?;
    for i in 0..W4_OBJECTS {
        let oid = storage.new_oid()?;
        txn.store(oid, Tid::ZERO, val(i, 0))?;
        oids.push(oid);
    }
    let first_tid = txn.finish()?;
    let mut tids = vec![first_tid; W4_OBJECTS as usize];

    let mut rng = SplitMix64::new(W4_SEED);
    let mut latencies = Latencies::with_capacity(W4_COMMITS as usize);
    let start = Instant::now();
    for r in 0..W4_COMMITS {
        let k = rng.below(W4_OBJECTS) as usize;
        let t0 = Instant::now();
        tids[k] = commit(
            storage.as_ref(),
            vec![(oids[k], tids[k], val(k as u64, r + 1))],
        )?;
        latencies.record(t0.elapsed());
    }
    let elapsed = start.elapsed();

    let (k, oid) = (W4_OBJECTS as usize - 1, oids[W4_OBJECTS as usize - 1]);
    let newest = storage.load(oid, Tid::MAX)?;
    if newest.tid != tids[k] || index_of(&newest.data) != Some(k as u64) {
        return Err(format!("W4: object {k} (oid {oid}) is not at its last revision").into());
    }
    store.close(storage)?;

    let mut m = Measurement::new(
        Workload::W4.name(),
        elapsed.as_secs_f64(),
        W4_COMMITS,
        "commits/s",
    );
    m.set("writers", Value::Int(1));
    set_latencies(&mut m, &latencies);
    set_file_sizes(&mut m, store);
    Ok(m)
}

/// Objects of W5, and their revisions.
const W5_OBJECTS: u64 = 10_000;
const W5_REVISIONS: u64 = 10;
/// The W5 root's data: this prefix, then the oids it refers to (u64 LE each).
const W5_ROOT_PREFIX: &[u8] = b"root:";

/// W5's reference extractor: the root lists oids; the objects refer to nothing.
fn w5_references(data: &[u8]) -> std::result::Result<Vec<Oid>, String> {
    match data.strip_prefix(W5_ROOT_PREFIX) {
        None => Ok(Vec::new()),
        Some(list) => Ok(list
            .chunks_exact(8)
            .map(|c| Oid(u64::from_le_bytes(c.try_into().expect("8 bytes"))))
            .collect()),
    }
}

/// W5: (untimed) 10,000 objects x 10 revisions, written revision by revision in
/// transactions of 1,000 objects, plus a root referring to all of them; timed: a pack
/// to now with garbage collection.
fn w5(store: &mut StoreUnderTest) -> Result<Measurement> {
    pack_workload(store, Workload::W5, W5_OBJECTS, W5_REVISIONS)
}

/// Objects and revisions of the large pack (issue: a 1,000,000-object pack reporting
/// time and peak memory).
const W5_LARGE_OBJECTS: u64 = 1_000_000;
const W5_LARGE_REVISIONS: u64 = 2;

/// W5 at 1,000,000 objects x 2 revisions, reporting the pack's memory too.
fn w5_large(store: &mut StoreUnderTest) -> Result<Measurement> {
    pack_workload(
        store,
        Workload::W5Large,
        W5_LARGE_OBJECTS,
        W5_LARGE_REVISIONS,
    )
}

/// W5's shape with `objects` x `revisions`; timed: a pack to now with GC. Reports the
/// most memory the pack's tables took (its own accounting: the process's RSS also
/// counts the mapped data file's pages, which are page cache).
fn pack_workload(
    store: &mut StoreUnderTest,
    workload: Workload,
    objects: u64,
    revisions: u64,
) -> Result<Measurement> {
    let storage = store.create_file()?;
    let oids: Vec<Oid> = (0..objects)
        .map(|_| storage.new_oid())
        .collect::<std::result::Result<_, _>>()?;
    let mut root = W5_ROOT_PREFIX.to_vec();
    for oid in &oids {
        root.extend_from_slice(&oid.0.to_le_bytes());
    }
    commit(&storage, vec![(Oid::ROOT, Tid::ZERO, root)])?;
    let mut bases = vec![Tid::ZERO; oids.len()];
    for rev in 0..revisions {
        for chunk in (0..objects)
            .collect::<Vec<_>>()
            .chunks(W2_OBJECTS_PER_TRANSACTION as usize)
        {
            let stores = chunk
                .iter()
                .map(|&i| (oids[i as usize], bases[i as usize], val(i, rev)))
                .collect();
            let tid = commit(&storage, stores)?;
            for &i in chunk {
                bases[i as usize] = tid;
            }
        }
    }
    let size_before = storage.data_end();
    let start = Instant::now();
    let report = storage.pack(Tid::MAX, Some(&w5_references))?;
    let elapsed = start.elapsed();
    let last = objects - 1;
    let newest = storage.load(oids[last as usize], Tid::MAX)?;
    if index_of(&newest.data) != Some(last) || storage.history(oids[last as usize], 100)?.len() != 1
    {
        return Err("W5: the pack did not keep exactly the newest revision".into());
    }
    if report.objects_removed != 0 {
        return Err(format!(
            "W5: the pack removed {} reachable objects",
            report.objects_removed
        )
        .into());
    }
    storage.close()?;
    let mut m = Measurement::new(workload.name(), elapsed.as_secs_f64(), 1, "packs/s");
    m.set("objects", Value::Int(objects));
    m.set("pack_table_bytes", Value::Int(report.table_bytes_max));
    m.set("size_before", Value::Int(size_before));
    m.set("size_after", Value::Int(report.bytes_after));
    m.set("revisions_before", Value::Int(report.revisions_before));
    m.set("revisions_after", Value::Int(report.revisions_after));
    Ok(m)
}

/// W7: 100,000 objects loaded and the store closed (untimed); then the open of the
/// store plus the first load (of the 100,000th object), with the saved index or after
/// deleting it.
fn w7(store: &mut StoreUnderTest, with_index: bool) -> Result<Measurement> {
    let storage = store.create()?;
    let (oids, _) = bulk_load(storage.as_ref(), W7_OBJECTS)?;
    store.close(storage)?;
    let index_file_bytes = store.index_file_bytes();
    let is_file = store.kind() == crate::target::StoreKind::File;
    if is_file && with_index && index_file_bytes.is_none() {
        eprintln!("warning: w7: no saved index after close; the open will rebuild it");
    }
    if !with_index {
        store.remove_saved_index()?;
    }
    let last = W7_OBJECTS - 1;
    let last_oid = oids[last as usize];

    let rss_before = system::rss_bytes();
    let start = Instant::now();
    let storage = store.reopen()?;
    let first = storage.load(last_oid, Tid::MAX)?;
    let elapsed = start.elapsed();
    let rss_after = system::rss_bytes();

    if index_of(&first.data) != Some(last) {
        return Err(format!("W7: object {last} (oid {last_oid}) loaded the wrong value").into());
    }
    store.close(storage)?;

    let name = if with_index {
        Workload::W7
    } else {
        Workload::W7NoIndex
    }
    .name();
    let mut m = Measurement::new(name, elapsed.as_secs_f64(), 1, "opens/s");
    if is_file {
        let (index_bytes, objects) = store.index_memory()?;
        m.set(
            "index_bytes_per_object",
            Value::Float(index_bytes as f64 / objects.max(1) as f64, 1),
        );
        if let (Some(before), Some(after)) = (rss_before, rss_after) {
            let per_object = after.saturating_sub(before) as f64 / W7_OBJECTS as f64;
            m.set("rss_growth_per_object", Value::Float(per_object, 1));
        }
        if let Some(bytes) = index_file_bytes {
            m.set("index_file_bytes", Value::Int(bytes));
        }
    }
    set_file_sizes(&mut m, store);
    Ok(m)
}

pub fn set_latencies(m: &mut Measurement, latencies: &Latencies) {
    if let Some((p50, p99)) = latencies.p50_p99() {
        m.set("p50_us", Value::Float(p50, 1));
        m.set("p99_us", Value::Float(p99, 1));
    }
}

/// The data file's size after the run (file store only).
fn set_file_sizes(m: &mut Measurement, store: &StoreUnderTest) {
    if let Some(bytes) = store.data_file_bytes() {
        m.set("file_size", Value::Int(bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::StoreKind;
    use std::path::Path;

    fn memory_store() -> StoreUnderTest {
        StoreUnderTest::new(StoreKind::Memory, Path::new("/nonexistent"))
    }

    #[test]
    fn storage_selects_every_workload_in_order() {
        let names: Vec<_> = Workload::select("storage")
            .expect("known")
            .iter()
            .map(|w| w.name())
            .collect();
        assert_eq!(
            names,
            [
                "phys-fdatasync",
                "w1",
                "w1-4",
                "w2",
                "w3",
                "w4",
                "w5",
                "w7",
                "w7-noindex"
            ]
        );
        assert_eq!(Workload::select("w1-4"), Some(vec![Workload::W1Concurrent]));
        assert_eq!(Workload::select("w5"), Some(vec![Workload::W5]));
        assert_eq!(Workload::select("w6"), None);
    }

    #[test]
    fn an_existing_server_runs_w2_through_a_client() -> Result<()> {
        use zodiac_storage::{MemoryStorage, Server, ServerOptions};
        let served: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let server = Server::start(served, "127.0.0.1:0", ServerOptions::new())?;
        let address = format!("tcp://{}", server.local_addr());
        let kind = StoreKind::parse(&address).expect("an address");
        let mut store = StoreUnderTest::new(kind, Path::new("/nonexistent"));
        let m = Workload::W2.run(&mut store)?;
        assert_eq!(m.ops, W2_TRANSACTIONS * W2_OBJECTS_PER_TRANSACTION);
        assert!(
            store.create_unserved().is_err(),
            "jobs need their own store"
        );
        server.shutdown();
        Ok(())
    }

    #[test]
    fn bulk_load_maps_indices_to_allocated_oids() -> Result<()> {
        let mut store = memory_store();
        let storage = store.create()?;
        let (oids, tids) = bulk_load(storage.as_ref(), 2_500)?;
        assert_eq!((oids.len(), tids.len()), (2_500, 2_500));
        assert_eq!(
            tids.iter().collect::<HashSet<_>>().len(),
            3,
            "three transactions"
        );
        for i in [0usize, 999, 1_000, 2_499] {
            let newest = storage.load(oids[i], Tid::MAX)?;
            assert_eq!(index_of(&newest.data), Some(i as u64));
            assert_eq!(newest.tid, tids[i]);
        }
        Ok(())
    }

    #[test]
    fn concurrent_w1_commits_every_object_once() -> Result<()> {
        let mut store = memory_store();
        let m = w1(&mut store, W1_WRITERS_CONCURRENT)?;
        assert_eq!(m.ops, W1_COMMITS);
        assert_eq!(m.get("writers"), Some(&Value::Int(4)));
        assert!(m.get("p99_us").is_some());
        let storage = store.reopen()?;
        let mut seen = HashSet::new();
        for oid in 1..=W1_COMMITS {
            let data = storage.load(Oid(oid), Tid::MAX)?.data;
            assert!(
                seen.insert(index_of(&data).expect("a value")),
                "duplicate index"
            );
        }
        assert_eq!(seen.len() as u64, W1_COMMITS);
        Ok(())
    }
}
