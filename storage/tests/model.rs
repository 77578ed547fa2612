//! Property tests of the storage against a trivially correct model: a map from oid
//! to its revisions `(tid, data)`, oldest first.
//!
//! - `sequential`: random operations (new objects, updates from the current or a
//!   stale base, `check_current`, two interleaved transactions, abort and drop, loads
//!   at past snapshots, exact revisions, history, transaction ranges), each checked
//!   against the model as it runs: every read and every conflict decision must match.
//! - `concurrent`: threads run random transactions (read at their snapshot, write
//!   from what they read, check what they only read) and log what they saw; the log
//!   is then checked against the model rebuilt from the committed transactions in
//!   tid order.
//!
//! Runs are seeded and reproducible (`SEED`). A failure prints the shrunk case; keep it
//! as a named `#[test]` that passes it to `sequential::replay` (or, for a concurrent
//! case, turn it into a contract case). `model_suite!(name, factory)` makes one
//! `#[test]` per property for a backend, as `contract_suite!` does in `contract.rs`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

use common::{Subject, sorted};
use zodiac_storage::{
    ChangeInfo, ConflictError, Error, Oid, Result, Revision, RevisionInfo, Storage,
    StorageTransaction, Tid, TransactionInfo, TransactionMeta,
};

/// The seed of every run: the same cases on every machine, every time.
const SEED: [u8; 32] = *b"zodiac storage model, seed no. 1";
const SEQUENTIAL_CASES: u32 = 64;
const CONCURRENT_CASES: u32 = 24;

/// A runner with the fixed seed and no failure files: a failure prints the shrunk
/// case, which then becomes a named regression test in this file.
fn runner(cases: u32) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &SEED))
}

fn run<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: Debug,
{
    if let Err(failure) = runner(cases).run(&strategy, test) {
        panic!("{failure}");
    }
}

/// One `#[test]` per property in a module named `$name`, each case on a fresh
/// storage from `$factory` (a `fn() -> Subject` or a closure that coerces to one).
macro_rules! model_suite {
    ($name:ident, $factory:expr) => {
        mod $name {
            #[test]
            fn sequential_operations_match_the_model() {
                let factory: fn() -> $crate::common::Subject = $factory;
                $crate::sequential::check(factory);
            }

            #[test]
            fn concurrent_transactions_match_the_model() {
                let factory: fn() -> $crate::common::Subject = $factory;
                $crate::concurrent::check(factory);
            }
        }
    };
}

model_suite!(memory, crate::common::memory);

// ---------------------------------------------------------------------------------
// The model and what reads look like
// ---------------------------------------------------------------------------------

/// The outcome of a read, comparable between the storage and the model.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Read {
    Found(Revision),
    NoSuchObject(Oid),
    NotFoundAtSnapshot(Oid, Tid),
    NoSuchRevision(Oid, Tid),
    Other(String),
}

impl Read {
    fn of(result: Result<Revision>) -> Read {
        match result {
            Ok(revision) => Read::Found(revision),
            Err(Error::NoSuchObject { oid }) => Read::NoSuchObject(oid),
            Err(Error::NotFoundAtSnapshot { oid, snapshot }) => {
                Read::NotFoundAtSnapshot(oid, snapshot)
            }
            Err(Error::NoSuchRevision { oid, tid }) => Read::NoSuchRevision(oid, tid),
            Err(e) => Read::Other(e.to_string()),
        }
    }

    /// The revision tid a writer starting from this read uses as its base.
    fn base(&self) -> Option<Tid> {
        match self {
            Read::Found(revision) => Some(revision.tid),
            Read::NoSuchObject(_) | Read::NotFoundAtSnapshot(..) => Some(Tid::ZERO),
            Read::NoSuchRevision(..) | Read::Other(_) => None,
        }
    }
}

/// The trivially correct storage.
#[derive(Default, Debug)]
struct Model {
    objects: BTreeMap<Oid, Vec<(Tid, Vec<u8>)>>,
    transactions: Vec<TransactionInfo>,
    last: Tid,
}

impl Model {
    fn newest(&self, oid: Oid) -> Tid {
        self.objects
            .get(&oid)
            .and_then(|revs| revs.last())
            .map_or(Tid::ZERO, |(tid, _)| *tid)
    }

    /// A load at `snapshot`, read as `min(snapshot, last)`.
    fn load(&self, oid: Oid, snapshot: Tid) -> Read {
        let Some(revs) = self.objects.get(&oid) else {
            return Read::NoSuchObject(oid);
        };
        let visible = snapshot.min(self.last);
        match revs.iter().rev().find(|(tid, _)| *tid <= visible) {
            Some((tid, data)) => Read::Found(Revision {
                tid: *tid,
                data: data.clone(),
            }),
            None => Read::NotFoundAtSnapshot(oid, snapshot),
        }
    }

    fn load_revision(&self, oid: Oid, tid: Tid) -> Read {
        let Some(revs) = self.objects.get(&oid) else {
            return Read::NoSuchObject(oid);
        };
        match revs.iter().find(|(t, _)| *t == tid) {
            Some((tid, data)) => Read::Found(Revision {
                tid: *tid,
                data: data.clone(),
            }),
            None => Read::NoSuchRevision(oid, tid),
        }
    }

    fn history(&self, oid: Oid, limit: usize) -> Option<Vec<RevisionInfo>> {
        self.objects.get(&oid).map(|revs| {
            revs.iter()
                .rev()
                .take(limit)
                .map(|(tid, data)| RevisionInfo {
                    tid: *tid,
                    size: data.len() as u64,
                })
                .collect()
        })
    }

    /// Every (oid, base, current) at which `stores` and `checks` fail validation now.
    fn conflicts(
        &self,
        stores: &[(Oid, Tid, Vec<u8>)],
        checks: &[(Oid, Tid)],
    ) -> Vec<ConflictError> {
        stores
            .iter()
            .map(|(oid, base, _)| (*oid, *base))
            .chain(checks.iter().copied())
            .filter_map(|(oid, base_tid)| {
                let current_tid = self.newest(oid);
                (current_tid != base_tid).then_some(ConflictError {
                    oid,
                    base_tid,
                    current_tid,
                })
            })
            .collect()
    }

    fn apply(&mut self, tid: Tid, meta: TransactionMeta, stores: &[(Oid, Tid, Vec<u8>)]) {
        assert!(tid > self.last, "model: tid {tid} not after {}", self.last);
        for (oid, _, data) in stores {
            self.objects
                .entry(*oid)
                .or_default()
                .push((tid, data.clone()));
        }
        let mut changes: Vec<ChangeInfo> = stores
            .iter()
            .map(|(oid, _, data)| ChangeInfo {
                oid: *oid,
                size: data.len() as u64,
            })
            .collect();
        changes.sort_by_key(|c| c.oid);
        self.transactions
            .push(TransactionInfo { tid, meta, changes });
        self.last = tid;
    }

    fn transactions(&self, from: Tid, to: Tid) -> Vec<TransactionInfo> {
        self.transactions
            .iter()
            .filter(|t| from <= t.tid && t.tid <= to)
            .cloned()
            .collect()
    }
}

fn storage_transactions(s: &dyn Storage, from: Tid, to: Tid) -> Result<Vec<TransactionInfo>> {
    let mut txns: Vec<TransactionInfo> = s.transactions(from, to)?.collect::<Result<_>>()?;
    // The contract fixes the order of transactions, not of changes within one.
    for t in &mut txns {
        t.changes.sort_by_key(|c| c.oid);
    }
    Ok(txns)
}

/// Every revision of every object equals the model's, exactly.
fn check_final_state(s: &dyn Storage, model: &Model, oids: &[Oid]) -> Result<(), TestCaseError> {
    prop_assert_eq!(s.last_tid(), model.last);
    for &oid in oids {
        match model.history(oid, usize::MAX) {
            Some(expected) => {
                prop_assert_eq!(
                    s.history(oid, usize::MAX).ok(),
                    Some(expected.clone()),
                    "{}",
                    oid
                );
                for info in expected {
                    prop_assert_eq!(
                        Read::of(s.load_revision(oid, info.tid).map(|data| Revision {
                            tid: info.tid,
                            data
                        })),
                        model.load_revision(oid, info.tid)
                    );
                }
            }
            None => prop_assert!(
                matches!(s.history(oid, usize::MAX), Err(Error::NoSuchObject { oid: o }) if o == oid),
                "history of never-committed {}",
                oid
            ),
        }
        prop_assert_eq!(Read::of(s.load(oid, Tid::MAX)), model.load(oid, Tid::MAX));
    }
    prop_assert_eq!(
        storage_transactions(s, Tid::ZERO, Tid::MAX).ok(),
        Some(model.transactions.clone())
    );
    Ok(())
}

// ---------------------------------------------------------------------------------
// Sequential operations
// ---------------------------------------------------------------------------------

mod sequential {
    use super::*;

    /// Which revision a write or check names as its base.
    /// The element a generated `pick` chooses among `len` (which is not zero).
    fn at(pick: u16, len: usize) -> usize {
        usize::from(pick) % len
    }

    #[derive(Clone, Debug)]
    pub enum Base {
        /// The newest revision: valid.
        Current,
        /// An older revision (or `ZERO` when there is none): stale.
        Older(u16),
        /// `ZERO`, as if creating an object that exists: stale.
        Zero,
        /// A tid after the newest revision: not a revision at all.
        Future(u8),
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Ending {
        Finish,
        VoteFinish,
        Abort,
        VoteAbort,
        Drop,
        VoteDrop,
    }

    impl Ending {
        fn votes(self) -> bool {
            matches!(
                self,
                Ending::VoteFinish | Ending::VoteAbort | Ending::VoteDrop
            )
        }
        fn finishes(self) -> bool {
            matches!(self, Ending::Finish | Ending::VoteFinish)
        }
    }

    #[derive(Clone, Debug)]
    pub struct TxnSpec {
        /// Data of new objects.
        pub creates: Vec<Vec<u8>>,
        /// Existing objects (index into them) to update.
        pub updates: Vec<(u16, Base, Vec<u8>)>,
        /// Existing objects to `check_current`.
        pub checks: Vec<(u16, Base)>,
        pub ending: Ending,
        /// In a pair, the second transaction also creates the first one's new objects.
        pub steal_creates: bool,
    }

    /// A snapshot to read at, relative to the commits made so far.
    #[derive(Clone, Debug)]
    pub enum Snap {
        Commit(u16),
        Before(u16),
        After(u16),
        Zero,
        Max,
        BeyondLast,
    }

    #[derive(Clone, Debug)]
    pub enum Op {
        Txn(TxnSpec),
        /// Two transactions begun together: the first ends, then the second.
        Pair(TxnSpec, TxnSpec),
        Load(u16, Snap),
        LoadRevision(u16, u16, bool),
        History(u16, usize),
        Transactions(Snap, Snap),
        NewOid,
    }

    fn data() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(any::<u8>(), 0..12)
    }

    fn base() -> impl Strategy<Value = Base> {
        prop_oneof![
            14 => Just(Base::Current),
            2 => any::<u16>().prop_map(Base::Older),
            1 => Just(Base::Zero),
            1 => (0u8..3).prop_map(Base::Future),
        ]
    }

    fn ending() -> impl Strategy<Value = Ending> {
        prop_oneof![
            5 => Just(Ending::Finish),
            3 => Just(Ending::VoteFinish),
            1 => Just(Ending::Abort),
            1 => Just(Ending::VoteAbort),
            1 => Just(Ending::Drop),
            1 => Just(Ending::VoteDrop),
        ]
    }

    fn txn_spec() -> impl Strategy<Value = TxnSpec> {
        (
            prop::collection::vec(data(), 0..2),
            prop::collection::vec((any::<u16>(), base(), data()), 0..3),
            prop::collection::vec((any::<u16>(), base()), 0..2),
            ending(),
            any::<bool>(),
        )
            .prop_map(
                |(creates, updates, checks, ending, steal_creates)| TxnSpec {
                    creates,
                    updates,
                    checks,
                    ending,
                    steal_creates,
                },
            )
    }

    fn snap() -> impl Strategy<Value = Snap> {
        prop_oneof![
            3 => any::<u16>().prop_map(Snap::Commit),
            2 => any::<u16>().prop_map(Snap::Before),
            2 => any::<u16>().prop_map(Snap::After),
            1 => Just(Snap::Zero),
            1 => Just(Snap::Max),
            1 => Just(Snap::BeyondLast),
        ]
    }

    pub fn ops() -> impl Strategy<Value = Vec<Op>> {
        let op = prop_oneof![
            5 => txn_spec().prop_map(Op::Txn),
            2 => (txn_spec(), txn_spec()).prop_map(|(a, b)| Op::Pair(a, b)),
            4 => (any::<u16>(), snap()).prop_map(|(o, s)| Op::Load(o, s)),
            2 => (any::<u16>(), any::<u16>(), any::<bool>())
                .prop_map(|(o, r, e)| Op::LoadRevision(o, r, e)),
            1 => (any::<u16>(), prop_oneof![0usize..6, Just(usize::MAX)])
                .prop_map(|(o, l)| Op::History(o, l)),
            1 => (snap(), snap()).prop_map(|(a, b)| Op::Transactions(a, b)),
            1 => Just(Op::NewOid),
        ];
        prop::collection::vec(op, 1..60)
    }

    /// A transaction resolved against the model: concrete oids, bases and data.
    struct Plan {
        meta: TransactionMeta,
        stores: Vec<(Oid, Tid, Vec<u8>)>,
        checks: Vec<(Oid, Tid)>,
        ending: Ending,
        created: Vec<Oid>,
    }

    /// How often the interesting outcomes happened, to show the cases reach them.
    #[derive(Default, Debug)]
    pub struct Seen {
        commits: usize,
        conflicts: usize,
        new_object_conflicts: usize,
        not_found_at_snapshot: usize,
        old_revisions: usize,
    }

    impl Seen {
        fn add(&mut self, other: &Seen) {
            self.commits += other.commits;
            self.conflicts += other.conflicts;
            self.new_object_conflicts += other.new_object_conflicts;
            self.not_found_at_snapshot += other.not_found_at_snapshot;
            self.old_revisions += other.old_revisions;
        }
    }

    /// The state of one run: the storage, the model, and every oid handed out.
    struct Run {
        subject: Subject,
        model: Model,
        /// Every oid allocated so far, plus the root (never written here).
        allocated: Vec<Oid>,
        step: usize,
        seen: Seen,
    }

    impl Run {
        fn new(subject: Subject) -> Run {
            Run {
                subject,
                model: Model::default(),
                allocated: vec![Oid::ROOT],
                step: 0,
                seen: Seen::default(),
            }
        }

        fn existing(&self) -> Vec<Oid> {
            self.model.objects.keys().copied().collect()
        }

        fn resolve_base(&self, oid: Oid, base: &Base) -> Tid {
            let revs = &self.model.objects[&oid];
            let newest = revs.last().expect("existing object").0;
            match base {
                Base::Current => newest,
                Base::Older(i) if revs.len() > 1 => revs[at(*i, revs.len() - 1)].0,
                Base::Older(_) | Base::Zero => Tid::ZERO,
                Base::Future(k) => Tid(newest.0 + 1 + u64::from(*k)),
            }
        }

        fn new_oid(&mut self) -> Result<Oid, TestCaseError> {
            let oid = self
                .subject
                .new_oid()
                .map_err(|e| TestCaseError::fail(format!("new_oid: {e}")))?;
            let previous = *self.allocated.last().expect("root");
            prop_assert!(oid > previous, "oid {} after {}", oid, previous);
            self.allocated.push(oid);
            Ok(oid)
        }

        fn plan(&mut self, spec: &TxnSpec, stolen: &[Oid]) -> Result<Plan, TestCaseError> {
            let existing = self.existing();
            let mut stores: Vec<(Oid, Tid, Vec<u8>)> = Vec::new();
            let mut created = Vec::new();
            let mut creates = spec.creates.clone();
            if creates.is_empty() && (existing.is_empty() || spec.updates.is_empty()) {
                // Every transaction writes something: empty commits are not the
                // subject here.
                creates.push(b"filler".to_vec());
            }
            for data in creates {
                let oid = self.new_oid()?;
                created.push(oid);
                stores.push((oid, Tid::ZERO, data));
            }
            for &oid in stolen {
                stores.push((oid, Tid::ZERO, b"stolen".to_vec()));
            }
            if !existing.is_empty() {
                for (i, base, data) in &spec.updates {
                    let oid = existing[at(*i, existing.len())];
                    // One store per oid: a repeated store is a contract case of its own.
                    if stores.iter().all(|(o, _, _)| *o != oid) {
                        stores.push((oid, self.resolve_base(oid, base), data.clone()));
                    }
                }
            }
            let checks = if existing.is_empty() {
                Vec::new()
            } else {
                spec.checks
                    .iter()
                    .map(|(i, base)| {
                        let oid = existing[at(*i, existing.len())];
                        (oid, self.resolve_base(oid, base))
                    })
                    .collect()
            };
            self.step += 1;
            let meta = TransactionMeta {
                user: "model".into(),
                description: format!("step {}", self.step),
                extension: BTreeMap::from([("step".to_string(), self.step.to_le_bytes().to_vec())]),
            };
            Ok(Plan {
                meta,
                stores,
                checks,
                ending: spec.ending,
                created,
            })
        }

        fn begin(&self, plan: &Plan) -> Result<Box<dyn StorageTransaction>, TestCaseError> {
            let fail = |e: Error| TestCaseError::fail(format!("before vote: {e}"));
            let mut txn = self.subject.begin(plan.meta.clone()).map_err(fail)?;
            for (oid, base, data) in &plan.stores {
                txn.store(*oid, *base, data.clone()).map_err(fail)?;
            }
            for (oid, tid) in &plan.checks {
                txn.check_current(*oid, *tid).map_err(fail)?;
            }
            Ok(txn)
        }

        /// Ends `txn` as planned and checks the outcome against the model, which it
        /// then updates.
        fn end(
            &mut self,
            mut txn: Box<dyn StorageTransaction>,
            plan: Plan,
        ) -> Result<(), TestCaseError> {
            let conflicts = self.model.conflicts(&plan.stores, &plan.checks);
            let mut refused = None;
            let mut expect_refusal =
                |result: Result<()>, step: &str| -> Result<(), TestCaseError> {
                    match (result, conflicts.is_empty()) {
                        (Ok(()), true) => Ok(()),
                        (Err(Error::Conflict(c)), false) if conflicts.contains(&c) => {
                            refused = Some(c);
                            Ok(())
                        }
                        (result, _) => Err(TestCaseError::fail(format!(
                            "{step}: expected {}, got {result:?}",
                            if conflicts.is_empty() {
                                "success".to_string()
                            } else {
                                format!("one of the conflicts {conflicts:?}")
                            }
                        ))),
                    }
                };
            let before = self.model.last;
            let mut voted_ok = true;
            if plan.ending.votes() {
                let vote = txn.vote();
                voted_ok = vote.is_ok();
                expect_refusal(vote, "vote")?;
            }
            let committed = if plan.ending.finishes() && voted_ok {
                match txn.finish() {
                    Ok(tid) => {
                        expect_refusal(Ok(()), "finish")?;
                        prop_assert!(tid > before, "tid {} not after {}", tid, before);
                        Some(tid)
                    }
                    Err(e) => {
                        expect_refusal(Err(e), "finish")?;
                        None
                    }
                }
            } else {
                match plan.ending {
                    Ending::Drop | Ending::VoteDrop => drop(txn),
                    _ => txn.abort(),
                }
                None
            };
            if let Some(c) = refused {
                self.seen.conflicts += 1;
                if c.base_tid == Tid::ZERO && c.current_tid != Tid::ZERO {
                    self.seen.new_object_conflicts += 1;
                }
            }
            if let Some(tid) = committed {
                self.seen.commits += 1;
                self.model.apply(tid, plan.meta, &plan.stores);
            }
            prop_assert_eq!(self.subject.last_tid(), self.model.last);
            Ok(())
        }

        fn snapshot(&self, snap: &Snap) -> Tid {
            let tids: Vec<Tid> = self.model.transactions.iter().map(|t| t.tid).collect();
            let pick = |i: &u16| {
                if tids.is_empty() {
                    Tid::ZERO
                } else {
                    tids[at(*i, tids.len())]
                }
            };
            match snap {
                Snap::Commit(i) => pick(i),
                Snap::Before(i) => Tid(pick(i).0.saturating_sub(1)),
                Snap::After(i) => Tid(pick(i).0 + 1),
                Snap::Zero => Tid::ZERO,
                Snap::Max => Tid::MAX,
                Snap::BeyondLast => Tid(self.model.last.0 + 1_000_000),
            }
        }

        fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
            match op {
                Op::Txn(spec) => {
                    let plan = self.plan(spec, &[])?;
                    let txn = self.begin(&plan)?;
                    self.end(txn, plan)?;
                }
                Op::Pair(first, second) => {
                    let first = self.plan(first, &[])?;
                    let stolen = if second.steal_creates {
                        first.created.clone()
                    } else {
                        Vec::new()
                    };
                    let second = self.plan(second, &stolen)?;
                    let first_txn = self.begin(&first)?;
                    let second_txn = self.begin(&second)?;
                    self.end(first_txn, first)?;
                    self.end(second_txn, second)?;
                }
                Op::Load(i, snap) => {
                    let oid = self.allocated[at(*i, self.allocated.len())];
                    let snapshot = self.snapshot(snap);
                    let expected = self.model.load(oid, snapshot);
                    prop_assert_eq!(
                        Read::of(self.subject.load(oid, snapshot)),
                        expected.clone(),
                        "load of {} at {}",
                        oid,
                        snapshot
                    );
                    match expected {
                        Read::NotFoundAtSnapshot(..) => self.seen.not_found_at_snapshot += 1,
                        Read::Found(r) if r.tid != self.model.newest(oid) => {
                            self.seen.old_revisions += 1
                        }
                        _ => {}
                    }
                }
                Op::LoadRevision(i, r, exists) => {
                    let existing = self.existing();
                    if existing.is_empty() {
                        return Ok(());
                    }
                    let oid = existing[at(*i, existing.len())];
                    let revs = &self.model.objects[&oid];
                    let mut tid = revs[at(*r, revs.len())].0;
                    if !exists {
                        while revs.iter().any(|(t, _)| *t == tid) {
                            tid = Tid(tid.0 + 1);
                        }
                    }
                    let read = self
                        .subject
                        .load_revision(oid, tid)
                        .map(|data| Revision { tid, data });
                    prop_assert_eq!(Read::of(read), self.model.load_revision(oid, tid));
                }
                Op::History(i, limit) => {
                    let existing = self.existing();
                    if existing.is_empty() {
                        return Ok(());
                    }
                    let oid = existing[at(*i, existing.len())];
                    prop_assert_eq!(
                        self.subject.history(oid, *limit).ok(),
                        self.model.history(oid, *limit)
                    );
                }
                Op::Transactions(from, to) => {
                    let (from, to) = (self.snapshot(from), self.snapshot(to));
                    prop_assert_eq!(
                        storage_transactions(&*self.subject, from, to).ok(),
                        Some(self.model.transactions(from, to))
                    );
                }
                Op::NewOid => {
                    let oid = self.new_oid()?;
                    prop_assert_eq!(
                        Read::of(self.subject.load(oid, Tid::MAX)),
                        Read::NoSuchObject(oid)
                    );
                }
            }
            prop_assert_eq!(self.subject.last_tid(), self.model.last);
            Ok(())
        }

        fn finish(&self) -> Result<(), TestCaseError> {
            check_final_state(&*self.subject, &self.model, &self.allocated)
        }
    }

    /// Runs `ops` on a fresh storage, checking each against the model. A shrunk
    /// failing case pasted into a `#[test]` that calls this is its regression test.
    pub fn replay(subject: Subject, ops: &[Op]) -> Result<Seen, TestCaseError> {
        let mut run = Run::new(subject);
        for op in ops {
            run.apply(op)?;
        }
        run.finish()?;
        Ok(run.seen)
    }

    pub fn check(factory: fn() -> Subject) {
        let seen = std::sync::Mutex::new(Seen::default());
        run(SEQUENTIAL_CASES, ops(), |ops| {
            let case = replay(factory(), &ops)?;
            seen.lock().unwrap().add(&case);
            Ok(())
        });
        // The generated cases reach every kind of outcome, so the checks above ran.
        let seen = seen.into_inner().unwrap();
        assert!(seen.commits > 300, "{seen:?}");
        assert!(seen.conflicts > 100, "{seen:?}");
        assert!(seen.new_object_conflicts > 30, "{seen:?}");
        assert!(seen.not_found_at_snapshot > 30, "{seen:?}");
        assert!(seen.old_revisions > 10, "{seen:?}");
    }
}

// ---------------------------------------------------------------------------------
// Concurrent transactions
// ---------------------------------------------------------------------------------

mod concurrent {
    use super::*;

    /// How many objects the threads fight over; the first `CREATED` exist from the
    /// start, the others are created by whichever thread writes them first.
    const OBJECTS: usize = 5;
    const CREATED: usize = 3;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Access {
        Read,
        Write,
        Check,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Ending {
        Finish,
        Abort,
        Drop,
    }

    #[derive(Clone, Debug)]
    pub struct TxnPlan {
        accesses: Vec<(usize, Access)>,
        /// Yield between reading and finishing, so others commit in between.
        pause: bool,
        ending: Ending,
    }

    fn txn_plan() -> impl Strategy<Value = TxnPlan> {
        let access = prop_oneof![
            2 => Just(Access::Read),
            3 => Just(Access::Write),
            1 => Just(Access::Check),
        ];
        let ending = prop_oneof![8 => Just(Ending::Finish), 1 => Just(Ending::Abort), 1 => Just(Ending::Drop)];
        (
            prop::collection::vec((0..OBJECTS, access), 1..4),
            any::<bool>(),
            ending,
        )
            .prop_map(|(accesses, pause, ending)| TxnPlan {
                accesses,
                pause,
                ending,
            })
    }

    pub fn plans() -> impl Strategy<Value = Vec<Vec<TxnPlan>>> {
        (3usize..=4).prop_flat_map(|threads| {
            prop::collection::vec(prop::collection::vec(txn_plan(), 1..12), threads)
        })
    }

    #[derive(Debug)]
    enum Outcome {
        Committed(Tid),
        Conflict(ConflictError),
        Abandoned,
        Failed(String),
    }

    /// What one transaction saw and did.
    #[derive(Debug)]
    struct Logged {
        who: String,
        snapshot: Tid,
        reads: Vec<(Oid, Read)>,
        stores: Vec<(Oid, Tid, Vec<u8>)>,
        checks: Vec<(Oid, Tid)>,
        outcome: Outcome,
    }

    fn execute(
        s: &dyn Storage,
        oids: &[Oid],
        thread: usize,
        index: usize,
        plan: &TxnPlan,
    ) -> Logged {
        let who = format!("thread {thread} transaction {index}");
        let snapshot = s.last_tid();
        let mut log = Logged {
            who: who.clone(),
            snapshot,
            reads: Vec::new(),
            stores: Vec::new(),
            checks: Vec::new(),
            outcome: Outcome::Abandoned,
        };
        let mut txn = match s.begin(TransactionMeta::described(who.clone())) {
            Ok(txn) => txn,
            Err(e) => {
                log.outcome = Outcome::Failed(format!("begin: {e}"));
                return log;
            }
        };
        for &(i, access) in &plan.accesses {
            let oid = oids[i];
            let read = match log.reads.iter().find(|(o, _)| *o == oid) {
                Some((_, read)) => read.clone(),
                None => {
                    let read = Read::of(s.load(oid, snapshot));
                    log.reads.push((oid, read.clone()));
                    read
                }
            };
            let Some(base) = read.base() else {
                log.outcome = Outcome::Failed(format!("load of {oid}: {read:?}"));
                return log;
            };
            let result = match access {
                Access::Read => Ok(()),
                Access::Write if log.stores.iter().any(|(o, _, _)| *o == oid) => Ok(()),
                Access::Write => {
                    let data = format!("{who} wrote {oid}").into_bytes();
                    log.stores.push((oid, base, data.clone()));
                    txn.store(oid, base, data)
                }
                // Checking an object that does not exist yet is no case of the contract.
                Access::Check if base == Tid::ZERO => Ok(()),
                Access::Check => {
                    log.checks.push((oid, base));
                    txn.check_current(oid, base)
                }
            };
            if let Err(e) = result {
                log.outcome = Outcome::Failed(format!("{access:?} of {oid}: {e}"));
                return log;
            }
        }
        if plan.pause {
            std::thread::sleep(Duration::from_micros(200));
        }
        log.outcome = match plan.ending {
            // A transaction that wrote nothing is not committed: empty commits are
            // not the subject here.
            Ending::Finish if !log.stores.is_empty() => match txn.finish() {
                Ok(tid) => Outcome::Committed(tid),
                Err(Error::Conflict(c)) => Outcome::Conflict(c),
                Err(e) => Outcome::Failed(format!("finish: {e}")),
            },
            Ending::Drop => {
                drop(txn);
                Outcome::Abandoned
            }
            _ => {
                txn.abort();
                Outcome::Abandoned
            }
        };
        log
    }

    pub fn check(factory: fn() -> Subject) {
        // (committed, conflicts) over all cases: the threads do get in each other's way.
        let seen = std::sync::Mutex::new((0usize, 0usize));
        run(CONCURRENT_CASES, plans(), |plans| {
            let s = factory();
            let oids: Vec<Oid> = (0..OBJECTS)
                .map(|_| s.new_oid().expect("new_oid"))
                .collect();
            let mut setup = s.begin(TransactionMeta::described("setup")).expect("begin");
            let initial: Vec<(Oid, Tid, Vec<u8>)> = oids[..CREATED]
                .iter()
                .map(|&oid| (oid, Tid::ZERO, format!("setup wrote {oid}").into_bytes()))
                .collect();
            for (oid, base, data) in &initial {
                setup.store(*oid, *base, data.clone()).expect("store");
            }
            let setup_tid = setup.finish().expect("setup commit");
            let subscription = s.subscribe();

            let logs: Vec<Logged> = std::thread::scope(|scope| {
                let handles: Vec<_> = plans
                    .iter()
                    .enumerate()
                    .map(|(thread, plan)| {
                        let (s, oids) = (&s, &oids);
                        scope.spawn(move || {
                            plan.iter()
                                .enumerate()
                                .map(|(index, txn)| execute(&**s, oids, thread, index, txn))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().expect("thread"))
                    .collect()
            });
            verify(&*s, &oids, setup_tid, &initial, &logs, &subscription)?;
            let mut seen = seen.lock().unwrap();
            for log in &logs {
                match log.outcome {
                    Outcome::Committed(_) => seen.0 += 1,
                    Outcome::Conflict(_) => seen.1 += 1,
                    _ => {}
                }
            }
            Ok(())
        });
        let (committed, conflicts) = seen.into_inner().unwrap();
        assert!(committed > 50, "only {committed} transactions committed");
        assert!(conflicts > 0, "no transaction conflicted");
    }

    fn verify(
        s: &dyn Storage,
        oids: &[Oid],
        setup_tid: Tid,
        initial: &[(Oid, Tid, Vec<u8>)],
        logs: &[Logged],
        subscription: &zodiac_storage::CommitSubscription,
    ) -> Result<(), TestCaseError> {
        for log in logs {
            if let Outcome::Failed(why) = &log.outcome {
                return Err(TestCaseError::fail(format!("{}: {why}", log.who)));
            }
        }
        // The model, rebuilt from the committed transactions in tid order. Each
        // stored base and checked tid must be the newest revision before the
        // transaction: the first committer won.
        let mut committed: Vec<(Tid, &Logged)> = logs
            .iter()
            .filter_map(|log| match log.outcome {
                Outcome::Committed(tid) => Some((tid, log)),
                _ => None,
            })
            .collect();
        committed.sort_by_key(|(tid, _)| *tid);
        let mut model = Model::default();
        model.apply(setup_tid, TransactionMeta::described("setup"), initial);
        for &(tid, log) in &committed {
            prop_assert!(
                tid > model.last,
                "{} committed at {} after {}",
                log.who,
                tid,
                model.last
            );
            prop_assert!(
                tid > log.snapshot,
                "{} committed at {} before its snapshot",
                log.who,
                tid
            );
            let conflicts = model.conflicts(&log.stores, &log.checks);
            prop_assert!(
                conflicts.is_empty(),
                "{} committed over {:?}",
                log.who,
                conflicts
            );
            model.apply(
                tid,
                TransactionMeta::described(log.who.clone()),
                &log.stores,
            );
        }

        for log in logs {
            // Every read at snapshot S is the model at S.
            prop_assert!(log.snapshot <= model.last);
            for (oid, read) in &log.reads {
                let expected = model.load(*oid, log.snapshot);
                let absent_either_way = matches!(
                    (read, &expected),
                    (Read::NoSuchObject(o), Read::NotFoundAtSnapshot(e, _)) if o == e
                );
                // "Not found at S" and "no such object" differ only by whether the
                // object was created after S by the time of the read.
                if !absent_either_way {
                    prop_assert_eq!(
                        read,
                        &expected,
                        "{} read {} at {}",
                        &log.who,
                        oid,
                        log.snapshot
                    );
                }
            }
            // Every conflict names an oid the transaction wrote or checked, the
            // base it used, and a real revision committed after its snapshot.
            if let Outcome::Conflict(c) = &log.outcome {
                let used = log
                    .stores
                    .iter()
                    .map(|(oid, base, _)| (*oid, *base))
                    .chain(log.checks.iter().copied())
                    .any(|(oid, base)| oid == c.oid && base == c.base_tid);
                prop_assert!(
                    used,
                    "{}: conflict {:?} names no store or check of it",
                    log.who,
                    c
                );
                let real = model
                    .objects
                    .get(&c.oid)
                    .is_some_and(|revs| revs.iter().any(|(t, _)| *t == c.current_tid));
                prop_assert!(
                    real,
                    "{}: conflict {:?} names no committed revision",
                    log.who,
                    c
                );
                prop_assert!(
                    c.current_tid > log.snapshot,
                    "{}: conflict {:?} names a revision its snapshot {} saw",
                    log.who,
                    c,
                    log.snapshot
                );
            }
        }

        // Nothing of a failed or abandoned transaction is stored.
        let lost: BTreeSet<&[u8]> = logs
            .iter()
            .filter(|log| !matches!(log.outcome, Outcome::Committed(_)))
            .flat_map(|log| log.stores.iter().map(|(_, _, data)| data.as_slice()))
            .collect();
        for &oid in oids {
            if let Ok(history) = s.history(oid, usize::MAX) {
                for info in history {
                    let data = s.load_revision(oid, info.tid);
                    prop_assert!(
                        data.as_ref().is_ok_and(|d| !lost.contains(d.as_slice())),
                        "revision {} of {}: {:?}",
                        info.tid,
                        oid,
                        data
                    );
                }
            }
        }
        check_final_state(s, &model, oids)?;

        // Every commit was notified once, in commit order, with its oids.
        let events: Vec<(Tid, Vec<Oid>)> = subscription
            .drain()
            .into_iter()
            .map(|e| (e.tid, sorted(e.oids.iter().copied())))
            .collect();
        let expected: Vec<(Tid, Vec<Oid>)> = committed
            .iter()
            .map(|(tid, log)| (*tid, sorted(log.stores.iter().map(|(oid, _, _)| *oid))))
            .collect();
        prop_assert_eq!(events, expected);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// The file storage.
// ---------------------------------------------------------------------------------

mod file_storage {
    model_suite!(file_fsync, || crate::common::files::file(
        zodiac_storage::Durability::Fsync
    ));
    model_suite!(file_nodurability, || crate::common::files::file(
        zodiac_storage::Durability::Off
    ));
}

// ---------------------------------------------------------------------------------
// The PostgreSQL storage, a fresh schema per case (ZODIAC_TEST_POSTGRES).
// ---------------------------------------------------------------------------------

#[cfg(feature = "postgres")]
mod postgres_storage {
    fn storage() -> crate::common::Subject {
        crate::common::pg::storage().expect("checked by available()")
    }

    /// Whether the test database is configured (printing that it skipped if not).
    fn available() -> bool {
        std::env::var(crate::common::pg::VARIABLE).is_ok() || crate::common::pg::storage().is_some()
    }

    #[test]
    fn sequential_operations_match_the_model() {
        if available() {
            crate::sequential::check(storage);
        }
    }

    #[test]
    fn concurrent_transactions_match_the_model() {
        if available() {
            crate::concurrent::check(storage);
        }
    }
}
