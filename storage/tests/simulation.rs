//! Deterministic fault simulation of the file storage, after TigerBeetle's VOPR:
//! for each seed, a random workload runs over `FileStorage` opened with a
//! `FaultyIoFactory`, with injected faults, crashes, power cuts and reopens, and
//! every outcome is checked against a model of what was acknowledged.
//!
//! The workload: commits of several objects at once (new ones and updates, some
//! from a stale base, so they must conflict), loads at past snapshots, pack with
//! and without garbage collection, clean reopens, crashes (the process dies: the
//! storage is dropped with nothing more reaching the disk), saved-index saves.
//! The faults: EIO or ENOSPC on the Nth write or sync of the data file, of the
//! saved index or of the packed file, with a torn prefix of a failed write; a
//! power cut after a crash that keeps an arbitrary subset of the pages written
//! since the last sync; zeroed pages of durable data or of the saved index.
//!
//! What every seed must show (the model):
//! - every acknowledged commit (`finish` returned its tid) is present after any
//!   crash, power cut or reopen, with its data at its tid; tids increase;
//! - a commit whose `finish` failed is "maybe": after reopen it is present whole
//!   or absent whole, never in part, and never present when the power cut kept
//!   no unsynced page (it was durable, so reporting it failed was wrong);
//! - after a failed commit the storage refuses commits (`Poisoned`, saying to
//!   reopen) until reopened, while reads still see exactly the acknowledged data;
//! - a commit from a stale base fails with the conflict the model predicts, and a
//!   fresh one never does; nothing fails without an injected fault;
//! - `last_tid` never goes below the newest acknowledged tid, and never names a
//!   transaction the model does not know;
//! - `new_oid` is above every oid committed (and, after a clean close, above every
//!   oid handed out);
//! - pack keeps every object reachable from the root (and all revisions the pack
//!   time needs); loads at snapshots after the pack time are exact;
//! - damage to durable data ends in an error that names it (`Corrupted`, at open
//!   or at a load) or in intact data, never in missing or wrong data; damage to
//!   the saved index is invisible.
//!
//! `ZODIAC_SIM_SEEDS=N` runs seeds 1..=N; `ZODIAC_SIM_SEED=S` replays seed S. A
//! failing seed prints its number, the replay command and its step log. Runs are
//! single-threaded, so a seed replays exactly (tids differ, being time-derived, but
//! no choice depends on their values).

#[macro_use]
mod sim;
#[path = "simulation/model.rs"]
mod model;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use model::{Model, data, is_not_found, references, short};
use sim::{Log, Outcome, Rng};
use zodiac_storage::References;
use zodiac_storage::io::{FaultPlan, FaultPoint, FaultyIoFactory, POWER_CUT_PAGE_BYTES};
use zodiac_storage::offline::index_path;
use zodiac_storage::{Error, FileOptions, FileStorage, Oid, Storage, Tid, TransactionMeta};

/// Seeds of the default `cargo test` run.
const DEFAULT_SEEDS: u64 = 300;
/// Workload steps per seed.
const STEPS_MAX: u64 = 60;
/// Objects one transaction writes, at most.
const WRITES_PER_TXN_MAX: u64 = 4;
/// Length of the file header: nothing before it is transaction data.
const HEADER_BYTES: u64 = 48;

const EIO: i32 = 5;
const ENOSPC: i32 = 28;

#[test]
fn random_workloads_over_faulty_io_keep_every_acknowledged_commit() {
    sim::run(
        "cargo test -p zodiac-storage --test simulation",
        DEFAULT_SEEDS,
        |seed, log| World::new(seed, log)?.run(log),
    );
}

/// The harness itself must be able to fail: a model that expects a commit that
/// was never acknowledged is caught, with the seed and its step log.
#[test]
fn the_harness_catches_an_expected_commit_that_never_happened() {
    let outcome = std::panic::catch_unwind(|| {
        sim::run("(self-test)", 1, |seed, log| {
            let mut world = World::new(seed, log)?;
            for step in 0..5 {
                world.commit(log, step)?;
            }
            let ghost = world.storage().new_oid().map_err(|e| e.to_string())?;
            let tid = Tid(world.model.last.0 + 1);
            world
                .model
                .apply(tid, &[(ghost, b"refs:;never committed".to_vec())]);
            world.check_all("a ghost commit")
        })
    });
    let message = match outcome {
        Ok(()) => panic!("a ghost commit in the model went unnoticed"),
        Err(panic) => panic.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    assert!(
        message.contains("seed(s) 1") && message.contains("ZODIAC_SIM_SEED=1"),
        "{message}"
    );
    assert!(
        message.contains("the last acknowledged commit is"),
        "{message}"
    );
}

// ---------------------------------------------------------------------------------
// The world: the storage under test, its faults and the model
// ---------------------------------------------------------------------------------

/// One store of a transaction: oid, base tid, data.
type Write = (Oid, Tid, Vec<u8>);

/// A commit whose `finish` failed: present whole or absent whole after reopen.
struct Maybe {
    writes: Vec<(Oid, Vec<u8>)>,
}

/// How the last crash left the unsynced pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cut {
    /// No power cut: the page cache survived the process.
    None,
    /// Every unsynced page lost.
    All,
    /// A random subset lost.
    Some,
    /// The first unsynced page lost, the others kept (the kernel wrote back all
    /// but the start of what was written).
    FirstLost,
}

struct World {
    seed: u64,
    rng: Rng,
    _dir: tempfile::TempDir,
    path: PathBuf,
    faults: Arc<FaultyIoFactory>,
    options: FileOptions,
    storage: Option<FileStorage>,
    model: Model,
    maybe: Option<Maybe>,
    /// A commit failed: every commit is refused until reopen.
    poisoned: bool,
    /// `data_end()` after each acknowledged commit since the file was last
    /// rewritten by a pack: where durable transactions end.
    commit_ends: Vec<u64>,
    /// The last close saved the oid allocator (a clean close that succeeded).
    closed_cleanly: bool,
    /// An injected fault struck since the storage was opened (in any step).
    fault_struck: bool,
}

impl World {
    fn new(seed: u64, log: &mut Log) -> Result<World, String> {
        let mut rng = Rng::new(seed);
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("data.zdb");
        let faults = Arc::new(FaultyIoFactory::new());
        faults.set_simulated_sync(true);
        // Small index-save intervals make commits save the index now and then.
        let interval = *rng.pick(&[512u64, 4096, 64 << 10, 64 << 20]);
        let options = FileOptions::new()
            .io(faults.clone())
            .group_commit_wait(std::time::Duration::ZERO)
            .index_save_interval_bytes(interval);
        log.step(format!("seed {seed}: index saved every {interval} bytes"));
        let storage = FileStorage::open(&path, options.clone()).map_err(|e| e.to_string())?;
        Ok(World {
            seed,
            rng,
            _dir: dir,
            path,
            faults,
            options,
            storage: Some(storage),
            model: Model::default(),
            maybe: None,
            poisoned: false,
            commit_ends: Vec::new(),
            closed_cleanly: false,
            fault_struck: false,
        })
    }

    fn storage(&self) -> &FileStorage {
        self.storage.as_ref().expect("the storage is open")
    }

    fn run(&mut self, log: &mut Log) -> Outcome {
        let steps = self.rng.range(10, STEPS_MAX);
        for step in 0..steps {
            // A poisoned storage is reopened soon: there is little else to do with it.
            let weights: [u64; 8] = if self.poisoned {
                [3, 3, 0, 3, 3, 6, 0, 0]
            } else {
                [50, 14, 5, 4, 5, 5, 3, 8]
            };
            match self.rng.weighted(&weights) {
                0 => self.commit(log, step)?,
                1 => self.load_past(log)?,
                2 => self.pack(log)?,
                3 => self.reopen(log)?,
                4 => self.crash(log, false)?,
                5 => self.crash(log, true)?,
                6 => self.save_index(log)?,
                _ => self.arm(log),
            }
        }
        if self.rng.chance(20) {
            return self.damage(log);
        }
        self.reopen(log)
    }

    // --- workload steps ----------------------------------------------------------

    /// The stores of a random transaction (oid, base, data), and the oids among
    /// them stored from a stale base (so the vote must fail).
    fn plan_writes(&mut self, step: u64) -> Result<(Vec<Write>, Vec<Oid>), String> {
        let live = self.model.live();
        let mut writes: Vec<Write> = Vec::new();
        let mut stale = Vec::new();
        let count = self.rng.range(1, WRITES_PER_TXN_MAX);
        for i in 0..count {
            let oid = if self.model.newest(Oid::ROOT).is_none() && i == 0 {
                Oid::ROOT
            } else if live.is_empty() || self.rng.chance(40) {
                self.new_oid()?
            } else {
                *self.rng.pick(&live)
            };
            if writes.iter().any(|w| w.0 == oid) {
                continue;
            }
            let newest = self.model.newest_tid(oid);
            let base = if newest != Tid::ZERO && self.rng.chance(8) {
                // A stale base: an older revision, or "new".
                let revs = &self.model.objects[&oid];
                let older = revs.len().saturating_sub(1);
                stale.push(oid);
                if older > 0 && self.rng.chance(50) {
                    revs[self.rng.below(older as u64) as usize].0
                } else {
                    Tid::ZERO
                }
            } else {
                newest
            };
            let mut refs = Vec::new();
            for _ in 0..self.rng.below(3) {
                if !live.is_empty() {
                    refs.push(*self.rng.pick(&live));
                }
            }
            if oid == Oid::ROOT && !refs.is_empty() && self.rng.chance(30) {
                // A root with fewer references leaves more objects to collect.
                refs.truncate(1);
            }
            let size = if self.rng.chance(10) {
                self.rng.range(3000, 9000)
            } else {
                self.rng.below(200)
            };
            let payload = format!("s{}-{step}-{oid}-{}", self.seed, "x".repeat(size as usize));
            writes.push((oid, base, data(&refs, &payload)));
        }
        Ok((writes, stale))
    }

    /// A new oid, which must be above every one handed out before.
    fn new_oid(&mut self) -> Result<Oid, String> {
        let oid = self
            .storage()
            .new_oid()
            .map_err(|e| format!("new_oid failed: {e}"))?;
        ensure!(
            oid.0 > self.model.oid_handed_max,
            "new_oid returned {oid}, not above {} handed out before",
            Oid(self.model.oid_handed_max)
        );
        self.model.oid_handed_max = oid.0;
        Ok(oid)
    }

    fn commit(&mut self, log: &mut Log, step: u64) -> Outcome {
        let (writes, stale) = self.plan_writes(step)?;
        let summary: Vec<String> = writes
            .iter()
            .map(|(o, b, d)| format!("{o}@{b}({}B)", d.len()))
            .collect();
        let armed_before = self.faults.armed();
        let result = (|| {
            let mut txn = self.storage().begin(TransactionMeta::described("sim"))?;
            for (oid, base, bytes) in &writes {
                txn.store(*oid, *base, bytes.clone())?;
            }
            txn.finish()
        })();
        let fired = armed_before && !self.faults.armed();
        self.fault_struck |= fired;
        let stored: Vec<(Oid, Vec<u8>)> = writes.iter().map(|(o, _, d)| (*o, d.clone())).collect();
        match result {
            Ok(tid) => {
                log.step(format!("commit {} -> {tid}", summary.join(" ")));
                ensure!(
                    !self.poisoned,
                    "a poisoned storage acknowledged commit {tid}"
                );
                ensure!(
                    stale.is_empty(),
                    "commit {tid} from stale bases of {stale:?} was acknowledged"
                );
                ensure!(
                    tid > self.model.last,
                    "tid {tid} is not after the last acknowledged {}",
                    self.model.last
                );
                ensure!(
                    self.storage().last_tid() == tid,
                    "last_tid is {} right after commit {tid}",
                    self.storage().last_tid()
                );
                self.model.apply(tid, &stored);
                self.commit_ends.push(self.storage().data_end());
            }
            Err(Error::Conflict(c)) => {
                log.step(format!("commit {} -> conflict {c}", summary.join(" ")));
                ensure!(
                    stale.contains(&c.oid) && c.current_tid == self.model.newest_tid(c.oid),
                    "unexpected conflict {c}: stale bases were {stale:?}"
                );
            }
            Err(e) if self.poisoned => {
                log.step(format!("commit {} -> refused: {e}", summary.join(" ")));
                ensure!(
                    matches!(e, Error::Poisoned { .. }) && e.to_string().contains("reopen"),
                    "a poisoned storage refused a commit with {e:?}, not Poisoned"
                );
            }
            Err(e) => {
                log.step(format!("commit {} -> failed: {e}", summary.join(" ")));
                ensure!(
                    self.fault_struck,
                    "a commit failed with no injected fault: {e}"
                );
                self.poisoned = true;
                self.maybe = Some(Maybe { writes: stored });
                self.check_reads_see_only_acknowledged()?;
            }
        }
        Ok(())
    }

    /// After a failed commit, reads still work and see only acknowledged data.
    fn check_reads_see_only_acknowledged(&mut self) -> Outcome {
        let last = self.storage().last_tid();
        ensure!(
            last == self.model.last,
            "after a failed commit last_tid is {last}, the last acknowledged is {}",
            self.model.last
        );
        let Some(maybe) = &self.maybe else {
            return Ok(());
        };
        for (oid, _) in &maybe.writes {
            self.check_load(*oid, Tid::MAX, "after a failed commit")?;
        }
        Ok(())
    }

    fn load_past(&mut self, log: &mut Log) -> Outcome {
        let live: Vec<Oid> = self.model.objects.keys().copied().collect();
        if live.is_empty() {
            return Ok(());
        }
        let oid = *self.rng.pick(&live);
        let tids: Vec<Tid> = self.model.transactions.keys().copied().collect();
        let snapshot = if self.rng.chance(20) {
            Tid::MAX
        } else {
            *self.rng.pick(&tids)
        };
        log.step(format!("load {oid} at {snapshot}"));
        self.check_load(oid, snapshot, "a load")
    }

    /// Loads `oid` at `snapshot` and compares with the model. Before the pack
    /// time a revision the pack dropped may be "not found"; otherwise exact.
    fn check_load(&self, oid: Oid, snapshot: Tid, when: &str) -> Outcome {
        let got = self.storage().load(oid, snapshot);
        let removed = self.model.removed.contains(&oid);
        let expected = self.model.load(oid, snapshot);
        let may_be_packed_away = snapshot < self.model.pack_tid;
        match (&got, expected) {
            (Ok(r), Some((tid, bytes))) if !removed => {
                ensure!(
                    r.tid == tid && r.data == bytes,
                    "{when}: load({oid}, {snapshot}) gave revision {} {:?}, the model has {tid} {:?}",
                    r.tid,
                    short(&r.data),
                    short(bytes)
                );
            }
            (Err(e), None) if is_not_found(e) => {}
            (Err(e), _) if is_not_found(e) && (removed || may_be_packed_away) => {}
            (Err(e), Some((tid, _))) if !removed => {
                return Err(format!(
                    "{when}: load({oid}, {snapshot}) failed ({e}) but revision {tid} was acknowledged"
                ));
            }
            (got, expected) => {
                return Err(format!(
                    "{when}: load({oid}, {snapshot}) gave {:?}, the model has {:?} (removed by GC: {removed})",
                    got.as_ref().map(|r| (r.tid, short(&r.data))),
                    expected.map(|(t, d)| (t, short(d)))
                ));
            }
        }
        Ok(())
    }

    fn pack(&mut self, log: &mut Log) -> Outcome {
        if self.model.transactions.is_empty() {
            return Ok(());
        }
        // Never before an earlier pack time: that pack dropped the revisions an
        // earlier pack time would need.
        let tids: Vec<Tid> = self
            .model
            .transactions
            .keys()
            .copied()
            .filter(|t| *t >= self.model.pack_tid)
            .collect();
        let pack_time = if tids.is_empty() || self.rng.chance(40) {
            Tid::MAX
        } else {
            *self.rng.pick(&tids)
        };
        let gc = self.rng.chance(60);
        let armed_before = self.faults.armed();
        let refs: References<'_> = &references;
        let result = self.storage().pack(pack_time, gc.then_some(refs));
        let fired = armed_before && !self.faults.armed();
        self.fault_struck |= fired;
        let report = match result {
            Ok(report) => report,
            Err(e) => {
                log.step(format!("pack to {pack_time} gc={gc} -> failed: {e}"));
                ensure!(fired, "pack failed with no injected fault: {e}");
                // The original file stays in use with everything acknowledged; a
                // reopen then starts the next steps from a known state.
                self.check_all("after a failed pack")?;
                return self.reopen(log);
            }
        };
        log.step(format!(
            "pack to {pack_time} gc={gc} -> pack tid {}, {} objects removed",
            report.pack_tid, report.objects_removed
        ));
        let pack_tid = report.pack_tid;
        ensure!(
            pack_tid <= self.model.last,
            "pack tid {pack_tid} after the last commit {}",
            self.model.last
        );
        self.model.pack_tid = self.model.pack_tid.max(pack_tid);
        if gc {
            let reachable = self.model.reachable(pack_tid);
            for oid in self.model.live() {
                match self.storage().load(oid, Tid::MAX) {
                    Err(e) if is_not_found(&e) => {
                        ensure!(
                            !reachable.contains_key(&oid),
                            "pack with GC to {pack_tid} removed object {oid}, reachable at the \
                             pack time through {} (revisions by tid: {})",
                            Model::path_to(&reachable, oid),
                            self.model.describe_revisions()
                        );
                        self.model.removed.insert(oid);
                    }
                    _ => {}
                }
            }
        }
        self.commit_ends.clear();
        self.check_all("after pack")
    }

    fn save_index(&mut self, log: &mut Log) -> Outcome {
        let armed_before = self.faults.armed();
        let result = self.storage().save_index();
        let fired = armed_before && !self.faults.armed();
        self.fault_struck |= fired;
        log.step(format!("save index -> {result:?}"));
        if let Err(e) = result {
            ensure!(fired, "saving the index failed with no injected fault: {e}");
        }
        Ok(())
    }

    fn arm(&mut self, log: &mut Log) {
        if self.faults.armed() {
            return;
        }
        let point = if self.rng.chance(50) {
            FaultPoint::Write(self.rng.range(1, 4))
        } else {
            FaultPoint::Sync(self.rng.range(1, 3))
        };
        let errno = *self.rng.pick(&[EIO, ENOSPC]);
        let file_suffix = match self.rng.weighted(&[70, 20, 10]) {
            0 => ".zdb",
            1 => "index-tmp",
            _ => ".pack",
        };
        let torn_bytes = self.rng.below(300) as usize;
        log.step(format!(
            "arm {point:?} errno {errno} on *{file_suffix}, torn {torn_bytes}"
        ));
        self.faults.arm(FaultPlan {
            point,
            errno,
            file_suffix: file_suffix.into(),
            torn_bytes,
        });
    }

    // --- restarts ----------------------------------------------------------------

    fn reopen(&mut self, log: &mut Log) -> Outcome {
        let armed_before = self.faults.armed();
        let closed = self.storage().close();
        let fired = armed_before && !self.faults.armed();
        self.fault_struck |= fired;
        log.step(format!("close -> {closed:?}"));
        if let Err(e) = &closed {
            ensure!(
                self.fault_struck || self.poisoned,
                "close failed with no injected fault: {e}"
            );
        }
        // Only a close that saved the index saved the allocator's mark: without
        // it the open recovers the mark from the data (the oids handed out but
        // never committed leave no trace there), as the spec allows.
        self.closed_cleanly = closed.is_ok() && !self.poisoned && !self.fault_struck;
        self.storage = None;
        self.open(log, Cut::None)
    }

    /// The process dies: nothing more reaches the disk; with `power`, the power
    /// goes too and takes some of the pages written since the last sync.
    fn crash(&mut self, log: &mut Log, power: bool) -> Outcome {
        self.faults.crash();
        self.storage = None;
        self.faults.restart();
        self.closed_cleanly = false;
        let cut = if !power {
            Cut::None
        } else {
            match self.rng.below(4) {
                0 => Cut::All,
                1 => Cut::Some,
                2 => Cut::FirstLost,
                _ => Cut::None,
            }
        };
        let mut lost = Vec::new();
        if cut != Cut::None {
            let first = self.faults.unsynced_pages(&self.path).first().copied();
            let rng = &mut self.rng;
            lost = self
                .faults
                .power_cut_pages(&self.path, |page| match cut {
                    Cut::Some => rng.chance(50),
                    Cut::FirstLost => Some(page) != first,
                    Cut::All | Cut::None => false,
                })
                .map_err(|e| format!("power cut: {e}"))?;
        }
        log.step(format!("crash, power cut {cut:?}, pages lost {lost:?}"));
        self.open(log, cut)
    }

    fn open(&mut self, log: &mut Log, cut: Cut) -> Outcome {
        let armed_before = self.faults.armed();
        let storage = match FileStorage::open(&self.path, self.options.clone()) {
            Ok(s) => s,
            Err(e) if armed_before => {
                // The open itself may write (a cut tail, a saved index) and meet the
                // armed fault; a second open without faults must succeed.
                log.step(format!("open -> {e}; again without faults"));
                self.faults.disarm();
                FileStorage::open(&self.path, self.options.clone())
                    .map_err(|e| format!("reopen failed: {e}"))?
            }
            Err(e) => return Err(format!("reopen failed: {e}")),
        };
        self.faults.disarm();
        self.storage = Some(storage);
        self.poisoned = false;
        self.fault_struck = false;
        self.commit_ends.clear();
        self.resolve_maybe(log, cut)?;
        self.check_all("after reopen")?;
        let oid = self.storage().new_oid().map_err(|e| e.to_string())?;
        let floor = if self.closed_cleanly {
            self.model.oid_handed_max
        } else {
            self.model.oid_committed_max()
        };
        ensure!(
            oid.0 > floor,
            "after reopen new_oid gave {oid}, not above {} (clean close: {})",
            Oid(floor),
            self.closed_cleanly
        );
        // After a crash, oids handed out but never committed may be handed out again.
        self.model.oid_handed_max = oid.0;
        log.step(format!("open -> last tid {}", self.storage().last_tid()));
        Ok(())
    }

    /// Decides from the reopened storage whether the failed commit is present:
    /// whole or not at all, and never when the power cut kept no unsynced page.
    fn resolve_maybe(&mut self, log: &mut Log, cut: Cut) -> Outcome {
        let Some(maybe) = self.maybe.take() else {
            return Ok(());
        };
        let mut present = Vec::new();
        let mut tids = BTreeSet::new();
        for (oid, bytes) in &maybe.writes {
            match self.storage().load(*oid, Tid::MAX) {
                Ok(r) if r.data == *bytes => {
                    present.push(*oid);
                    tids.insert(r.tid);
                }
                _ => {}
            }
        }
        log.step(format!(
            "the failed commit: {} of {} objects present",
            present.len(),
            maybe.writes.len()
        ));
        if present.is_empty() {
            return Ok(());
        }
        ensure!(
            present.len() == maybe.writes.len() && tids.len() == 1,
            "a partial transaction is visible: {present:?} of {:?} at {tids:?}",
            maybe.writes.iter().map(|w| w.0).collect::<Vec<_>>()
        );
        ensure!(
            cut != Cut::All,
            "a commit reported as failed survived a power cut that lost every unsynced \
             page: it was durable"
        );
        let tid = *tids.first().expect("one tid");
        ensure!(
            tid > self.model.last,
            "the failed commit appeared at {tid}, not after {}",
            self.model.last
        );
        self.model.apply(tid, &maybe.writes);
        self.model.surfaced.insert(tid);
        Ok(())
    }

    /// Everything the model holds, as the storage shows it now.
    fn check_all(&mut self, when: &str) -> Outcome {
        let last = self.storage().last_tid();
        let lost: Vec<Tid> = self
            .model
            .transactions
            .range(Tid(last.0 + 1)..)
            .map(|t| *t.0)
            .collect();
        ensure!(
            lost.is_empty() || lost.iter().any(|t| !self.model.surfaced.contains(t)),
            "{when}: transaction(s) {}, whose finish had failed but which an earlier \
             reopen showed as committed, are gone: that open kept them without making them \
             durable, and a later power cut took them",
            lost.iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        ensure!(
            last == self.model.last,
            "{when}: last_tid is {last}, the last acknowledged commit is {}",
            self.model.last
        );
        let listed: Vec<(Tid, BTreeSet<Oid>)> = self
            .storage()
            .transactions(Tid::ZERO, Tid::MAX)
            .map_err(|e| format!("{when}: transactions: {e}"))?
            .map(|t| t.map(|t| (t.tid, t.changes.iter().map(|c| c.oid).collect())))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{when}: transactions: {e}"))?;
        ensure!(
            listed.windows(2).all(|w| w[0].0 < w[1].0),
            "{when}: transaction tids do not increase"
        );
        let listed_tids: BTreeSet<Tid> = listed.iter().map(|t| t.0).collect();
        for (tid, oids) in &listed {
            let Some(expected) = self.model.transactions.get(tid) else {
                return Err(format!("{when}: transaction {tid} was never acknowledged"));
            };
            ensure!(
                oids.is_subset(expected),
                "{when}: transaction {tid} lists {oids:?}, it wrote {expected:?}"
            );
            if *tid > self.model.pack_tid {
                ensure!(
                    oids == expected,
                    "{when}: transaction {tid} lists {oids:?}, it wrote {expected:?}"
                );
            }
        }
        for tid in self.model.transactions.keys() {
            ensure!(
                *tid <= self.model.pack_tid || listed_tids.contains(tid),
                "{when}: acknowledged transaction {tid} is missing"
            );
        }
        let oids: Vec<Oid> = self.model.objects.keys().copied().collect();
        for oid in oids {
            self.check_load(oid, Tid::MAX, when)?;
            let revs = &self.model.objects[&oid];
            let (tid, _) = revs[self.rng.below(revs.len() as u64) as usize];
            self.check_load(oid, tid, when)?;
        }
        Ok(())
    }

    // --- damage ------------------------------------------------------------------

    /// Zeroes a page of durable data (or of the saved index) and reopens: the
    /// storage must name the damage or show intact data.
    fn damage(&mut self, log: &mut Log) -> Outcome {
        let index = self.rng.chance(30);
        let durable_end = if self.commit_ends.len() >= 2 {
            self.commit_ends[self.commit_ends.len() - 2]
        } else {
            0
        };
        // Where transactions before the last one start: each commit's end is
        // where the next one starts.
        let starts: Vec<u64> =
            self.commit_ends[..self.commit_ends.len().saturating_sub(2)].to_vec();
        // A clean close first: the file then holds exactly the acknowledged data
        // and a saved index for it.
        self.reopen(log)?;
        self.storage = None;
        if index {
            let ipath = index_path(&self.path);
            let len = std::fs::metadata(&ipath).map(|m| m.len()).unwrap_or(0);
            if len == 0 {
                return Ok(());
            }
            let page = self.rng.below(len.div_ceil(POWER_CUT_PAGE_BYTES));
            let at = page * POWER_CUT_PAGE_BYTES;
            zero(&ipath, at, len)?;
            log.step(format!("zeroed page {page} of the saved index"));
            // The allocator's mark was in the index: the open recovers it from the
            // data, where oids handed out but never committed leave no trace.
            self.closed_cleanly = false;
            // The index is redundant: the open must show every acknowledged commit.
            return self.open(log, Cut::None);
        }
        // Only transactions before the last one: damage to the last one may be
        // taken for a torn write and cut (saved aside), which the spec allows.
        if durable_end <= HEADER_BYTES {
            return Ok(());
        }
        let from = if self.rng.chance(50) && !starts.is_empty() {
            // From the start of a transaction: zeros where a header should be
            // look like the preallocated end of the data.
            *self.rng.pick(&starts)
        } else {
            let first_page = HEADER_BYTES / POWER_CUT_PAGE_BYTES;
            let page = self
                .rng
                .range(first_page, (durable_end - 1) / POWER_CUT_PAGE_BYTES);
            (page * POWER_CUT_PAGE_BYTES).max(HEADER_BYTES)
        };
        let to = zero(&self.path, from, durable_end)?;
        log.step(format!("zeroed bytes {from}..{to} of durable data"));
        // Without a saved index the open must scan the damaged region.
        let scan = self.rng.chance(50);
        if scan {
            let _ = std::fs::remove_file(index_path(&self.path));
        }
        let storage = match FileStorage::open(&self.path, self.options.clone()) {
            Ok(s) => s,
            Err(Error::Corrupted { offset, .. }) => {
                log.step(format!("open -> corrupted at {offset}"));
                return Ok(());
            }
            Err(e) => return Err(format!("open of a damaged file failed with {e:?}")),
        };
        log.step(format!("open (index removed: {scan}) -> opened"));
        self.storage = Some(storage);
        let last = self.storage().last_tid();
        ensure!(
            last == self.model.last,
            "a damaged file opened with last tid {last}, the last acknowledged is {}",
            self.model.last
        );
        for oid in self.model.live() {
            match self.storage().load(oid, Tid::MAX) {
                Err(Error::Corrupted { .. }) => {}
                _ => self.check_load(oid, Tid::MAX, "a damaged file")?,
            }
        }
        Ok(())
    }
}

/// Zeroes `path` from `from` to the end of its page, but not past `end`; returns
/// where the zeros end.
fn zero(path: &Path, from: u64, end: u64) -> Result<u64, String> {
    use std::os::unix::fs::FileExt;
    let to = ((from / POWER_CUT_PAGE_BYTES + 1) * POWER_CUT_PAGE_BYTES).min(end);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| e.to_string())?;
    file.write_all_at(&vec![0u8; (to - from) as usize], from)
        .map_err(|e| e.to_string())?;
    Ok(to)
}
