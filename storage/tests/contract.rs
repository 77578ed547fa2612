//! The storage contract: what every `Storage` backend must do, written once and run
//! against each backend.
//!
//! Each case in `cases` takes a fresh storage (a [`Subject`]) and asserts exact values.
//! `contract_suite!(name, factory)` turns every case into a `#[test]` of module `name`;
//! adding a backend is one `contract_suite!` line with a factory `fn() -> Subject`.
//!
//! Where the contract leaves the moment of an error open (a client storage may only
//! learn at vote what an embedded one sees at `store`), the cases accept the error at
//! any step up to `finish`, but always require the exact error.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use common::{Subject, commit, create, expect_conflict, meta, sorted, try_commit, within};
use zodiac_storage::{
    ChangeInfo, ConflictError, DESCRIPTION_BYTES_MAX, EXTENSION_BYTES_MAX, EXTENSION_KEY_BYTES_MAX,
    Error, Oid, RECORD_BYTES_MAX, Result, Revision, RevisionInfo, Storage, Tid, TransactionInfo,
    TransactionMeta, USER_BYTES_MAX,
};

/// How long a commit may take before the test decides it waits for a lock forever.
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for a notification that must already be on its way.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Asserts that `result` is an error matching `pattern` (and the optional guard).
macro_rules! assert_err {
    ($result:expr, $pattern:pat $(if $guard:expr)?) => {
        match $result {
            Err($pattern) $(if $guard)? => {}
            other => panic!(
                "expected Err({}), got {:?}",
                stringify!($pattern $(if $guard)?),
                other
            ),
        }
    };
}

/// One `#[test]` per contract case, in a module named `$name`, each on a fresh
/// storage from `$factory` (a `fn() -> Subject` or a closure that coerces to one).
macro_rules! contract_suite {
    ($name:ident, $factory:expr) => {
        contract_suite!(@list $name, {
            let factory: fn() -> $crate::common::Subject = $factory;
            Some(factory())
        });
    };
    // A backend that needs a service the environment may not provide: the factory
    // returns `None` (having said what it skipped) and the cases pass.
    (optional $name:ident, $factory:expr) => {
        contract_suite!(@list $name, {
            let factory: fn() -> Option<$crate::common::Subject> = $factory;
            factory()
        });
    };
    (@list $name:ident, $make:expr) => {
        contract_suite!(
            @cases $name, $make,
            empty_store_has_no_transactions_and_no_objects,
            new_oids_increase_and_are_never_the_root,
            new_oids_are_unique_across_threads,
            store_finish_load_round_trip,
            old_snapshots_read_old_revisions,
            load_before_creation_is_not_found_at_snapshot,
            snapshot_beyond_last_tid_is_clamped,
            voted_transaction_is_invisible_until_finished,
            load_revision_is_exact,
            history_is_newest_first_with_sizes_and_limit,
            transactions_report_metadata_and_changes_in_commit_order,
            transactions_range_bounds_are_inclusive,
            stale_base_conflict_names_oid_base_and_current,
            conflicting_transaction_leaves_no_trace,
            failed_vote_releases_the_commit_lock,
            a_merging_vote_merges_stale_stores_and_reports_what_does_not_merge,
            two_creators_of_one_oid_conflict,
            check_current_conflicts_when_stale,
            check_current_passes_when_current,
            abort_leaves_no_trace_and_releases_the_commit_lock,
            drop_without_finish_leaves_no_trace_and_releases_the_commit_lock,
            calls_after_vote_are_refused,
            storing_an_oid_twice_keeps_the_last_data,
            storing_an_unallocated_oid_is_refused,
            root_oid_can_be_stored_without_allocation,
            tids_strictly_increase_and_follow_wall_time,
            subscribers_receive_commits_in_order_with_exact_oids,
            notification_is_delivered_before_last_tid_reports_it,
            metadata_limits_hold_at_their_boundaries,
            concurrent_committers_on_disjoint_oids_all_succeed,
            concurrent_committers_on_one_oid_first_committer_wins,
            record_size_limit_is_enforced,
            closed_storage_refuses_calls,
            close_ends_subscriptions,
            transaction_voted_before_close_does_not_commit_after_it,
            restore_keeps_tid_metadata_and_data,
            restore_refuses_a_tid_not_after_the_last_tid,
            restored_oids_are_never_handed_out_by_new_oid,
            subscribers_see_restored_transactions,
        );
    };
    (@cases $name:ident, $make:expr, $($case:ident),+ $(,)?) => {
        mod $name {
            $(
                #[test]
                fn $case() {
                    if let Some(subject) = $make {
                        $crate::cases::$case(subject);
                    }
                }
            )+
        }
    };
}

contract_suite!(memory, crate::common::memory);

mod cases {
    use super::*;

    // The cases of `Storage::restore`, in tests/cases/restore.rs.
    mod restore;
    pub use restore::*;

    fn rev(tid: Tid, data: &[u8]) -> Revision {
        Revision {
            tid,
            data: data.to_vec(),
        }
    }

    fn all_transactions(s: &dyn Storage, from: Tid, to: Tid) -> Vec<TransactionInfo> {
        let mut txns: Vec<TransactionInfo> = s
            .transactions(from, to)
            .expect("transactions")
            .collect::<Result<_>>()
            .expect("transaction iteration");
        // The contract fixes the order of transactions, not of changes within one.
        for t in &mut txns {
            t.changes.sort_by_key(|c| c.oid);
        }
        txns
    }

    fn tids_of(txns: &[TransactionInfo]) -> Vec<Tid> {
        txns.iter().map(|t| t.tid).collect()
    }

    fn event_of(s: &zodiac_storage::CommitSubscription) -> (Tid, Vec<Oid>) {
        let event = s
            .recv_timeout(EVENT_TIMEOUT)
            .expect("a commit notification within the timeout");
        (event.tid, sorted(event.oids.iter().copied()))
    }

    /// A committed object reads the same whether or not the storage is closed; a
    /// closed storage may instead refuse with `Closed`.
    fn closed_or<T: PartialEq + std::fmt::Debug>(result: Result<T>, expected: T, what: &str) {
        match result {
            Ok(value) => assert_eq!(value, expected, "{what} after close"),
            Err(Error::Closed) => {}
            Err(e) => panic!("{what} after close: expected the committed value or Closed, got {e}"),
        }
    }

    pub fn empty_store_has_no_transactions_and_no_objects(s: Subject) {
        assert_eq!(s.last_tid(), Tid::ZERO);
        for oid in [Oid::ROOT, Oid(1), Oid(u64::MAX)] {
            for snapshot in [Tid::ZERO, Tid(1), Tid::now(), Tid::MAX] {
                assert_err!(s.load(oid, snapshot), Error::NoSuchObject { oid: o } if o == oid);
            }
            assert_err!(s.load_revision(oid, Tid(1)), Error::NoSuchObject { oid: o } if o == oid);
            assert_err!(s.history(oid, 10), Error::NoSuchObject { oid: o } if o == oid);
        }
        assert_eq!(all_transactions(&*s, Tid::ZERO, Tid::MAX), vec![]);
        assert_eq!(s.last_tid(), Tid::ZERO);
    }

    pub fn new_oids_increase_and_are_never_the_root(s: Subject) {
        let oids: Vec<Oid> = (0..1000).map(|_| s.new_oid().expect("new_oid")).collect();
        assert!(oids[0] > Oid::ROOT, "first oid {:?}", oids[0]);
        for pair in oids.windows(2) {
            assert!(pair[1] > pair[0], "oids not increasing: {pair:?}");
        }
        // Committing does not restart or reuse the sequence.
        commit(&*s, &[(oids[999], Tid::ZERO, b"x")]);
        let after = s.new_oid().expect("new_oid");
        assert!(after > oids[999], "{after:?} after {:?}", oids[999]);
    }

    pub fn new_oids_are_unique_across_threads(s: Subject) {
        const THREADS: usize = 4;
        const PER_THREAD: usize = 500;
        let per_thread: Vec<Vec<Oid>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    scope.spawn(|| {
                        (0..PER_THREAD)
                            .map(|_| s.new_oid().expect("new_oid"))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        for oids in &per_thread {
            for pair in oids.windows(2) {
                assert!(
                    pair[1] > pair[0],
                    "oids not increasing within a thread: {pair:?}"
                );
            }
        }
        let all = sorted(per_thread.into_iter().flatten());
        assert_eq!(all.len(), THREADS * PER_THREAD);
        assert!(all[0] > Oid::ROOT);
        for pair in all.windows(2) {
            assert_ne!(pair[0], pair[1], "oid handed out twice");
        }
    }

    pub fn store_finish_load_round_trip(s: Subject) {
        let (a, b, c) = (
            s.new_oid().unwrap(),
            s.new_oid().unwrap(),
            s.new_oid().unwrap(),
        );
        let big: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 % 251) as u8).collect();
        let mut txn = s.begin(meta("round trip")).unwrap();
        txn.store(a, Tid::ZERO, b"alpha".to_vec()).unwrap();
        txn.store(b, Tid::ZERO, Vec::new()).unwrap();
        txn.store(c, Tid::ZERO, big.clone()).unwrap();
        txn.vote().unwrap();
        let tid = txn.finish().unwrap();
        assert!(tid > Tid::ZERO);
        assert_eq!(s.last_tid(), tid);
        for snapshot in [tid, s.last_tid(), Tid::MAX] {
            assert_eq!(s.load(a, snapshot).unwrap(), rev(tid, b"alpha"));
            assert_eq!(s.load(b, snapshot).unwrap(), rev(tid, b""));
            assert_eq!(s.load(c, snapshot).unwrap(), rev(tid, &big));
        }
        // finish without an explicit vote votes first.
        let tid2 = commit(&*s, &[(a, tid, b"beta")]);
        assert!(tid2 > tid);
        assert_eq!(s.load(a, Tid::MAX).unwrap(), rev(tid2, b"beta"));
        assert_eq!(s.load(c, Tid::MAX).unwrap(), rev(tid, &big));
    }

    pub fn old_snapshots_read_old_revisions(s: Subject) {
        let (oid, t1) = create(&*s, b"one");
        let t2 = commit(&*s, &[(oid, t1, b"two")]);
        let (_, t_other) = create(&*s, b"unrelated");
        let t3 = commit(&*s, &[(oid, t2, b"three")]);
        assert!(t1 < t2 && t2 < t_other && t_other < t3);
        assert_eq!(s.load(oid, t1).unwrap(), rev(t1, b"one"));
        assert_eq!(s.load(oid, Tid(t2.0 - 1)).unwrap(), rev(t1, b"one"));
        assert_eq!(s.load(oid, t2).unwrap(), rev(t2, b"two"));
        assert_eq!(s.load(oid, t_other).unwrap(), rev(t2, b"two"));
        assert_eq!(s.load(oid, Tid(t3.0 - 1)).unwrap(), rev(t2, b"two"));
        assert_eq!(s.load(oid, t3).unwrap(), rev(t3, b"three"));
        assert_eq!(s.load(oid, Tid::MAX).unwrap(), rev(t3, b"three"));
    }

    pub fn load_before_creation_is_not_found_at_snapshot(s: Subject) {
        let (first, t1) = create(&*s, b"first");
        let (later, t2) = create(&*s, b"later");
        assert_err!(
            s.load(later, t1),
            Error::NotFoundAtSnapshot { oid, snapshot } if oid == later && snapshot == t1
        );
        let before = Tid(t2.0 - 1);
        assert_err!(
            s.load(later, before),
            Error::NotFoundAtSnapshot { oid, snapshot } if oid == later && snapshot == before
        );
        let before = Tid(t1.0 - 1);
        assert_err!(
            s.load(first, before),
            Error::NotFoundAtSnapshot { oid, snapshot } if oid == first && snapshot == before
        );
        assert_err!(
            s.load(first, Tid::ZERO),
            Error::NotFoundAtSnapshot { oid, snapshot } if oid == first && snapshot == Tid::ZERO
        );
        // An allocated oid that was never committed does not exist at all.
        let unused = s.new_oid().unwrap();
        assert_err!(s.load(unused, Tid::MAX), Error::NoSuchObject { oid } if oid == unused);
        assert_eq!(s.load(later, t2).unwrap(), rev(t2, b"later"));
    }

    pub fn snapshot_beyond_last_tid_is_clamped(s: Subject) {
        let (oid, t1) = create(&*s, b"committed");
        let beyond = Tid(t1.0 + 3_600_000_000);
        assert_eq!(s.load(oid, beyond).unwrap(), rev(t1, b"committed"));
        assert_eq!(s.load(oid, Tid::MAX).unwrap(), rev(t1, b"committed"));
        assert_err!(s.load_revision(oid, beyond), Error::NoSuchRevision { oid: o, tid } if o == oid && tid == beyond);
        assert_eq!(tids_of(&all_transactions(&*s, Tid::ZERO, beyond)), vec![t1]);
        // The next commit gets a tid near now, below `beyond`, and a load at `beyond`
        // sees it: the snapshot is read as last_tid at the time of the call.
        let t2 = commit(&*s, &[(oid, t1, b"next")]);
        assert!(t2 < beyond);
        assert_eq!(s.load(oid, beyond).unwrap(), rev(t2, b"next"));
    }

    pub fn voted_transaction_is_invisible_until_finished(s: Subject) {
        let (oid, t1) = create(&*s, b"committed");
        let fresh = s.new_oid().unwrap();
        let sub = s.subscribe();
        let mut txn = s.begin(meta("pending")).unwrap();
        txn.store(oid, t1, b"pending".to_vec()).unwrap();
        txn.store(fresh, Tid::ZERO, b"pending new".to_vec())
            .unwrap();
        txn.vote().unwrap();
        assert_eq!(s.last_tid(), t1);
        assert_eq!(s.load(oid, Tid::MAX).unwrap(), rev(t1, b"committed"));
        assert_eq!(
            s.history(oid, 10).unwrap(),
            vec![RevisionInfo { tid: t1, size: 9 }]
        );
        match s.load(fresh, Tid::MAX) {
            Err(Error::NoSuchObject { oid }) | Err(Error::NotFoundAtSnapshot { oid, .. })
                if oid == fresh => {}
            other => panic!("object of a voted transaction is visible: {other:?}"),
        }
        assert_eq!(
            tids_of(&all_transactions(&*s, Tid::ZERO, Tid::MAX)),
            vec![t1]
        );
        assert!(sub.try_recv().is_none(), "notification before finish");
        let t2 = txn.finish().unwrap();
        assert!(t2 > t1);
        assert_eq!(s.last_tid(), t2);
        assert_eq!(s.load(oid, Tid::MAX).unwrap(), rev(t2, b"pending"));
        assert_eq!(s.load(fresh, Tid::MAX).unwrap(), rev(t2, b"pending new"));
        assert_eq!(event_of(&sub), (t2, sorted([oid, fresh])));
    }

    pub fn load_revision_is_exact(s: Subject) {
        let (oid, t1) = create(&*s, b"v1");
        let t2 = commit(&*s, &[(oid, t1, b"v2")]);
        let (other, t3) = create(&*s, b"other");
        assert_eq!(s.load_revision(oid, t1).unwrap(), b"v1");
        assert_eq!(s.load_revision(oid, t2).unwrap(), b"v2");
        assert_eq!(s.load_revision(other, t3).unwrap(), b"other");
        for missing in [Tid::ZERO, t3, Tid(t3.0 + 1), Tid::MAX] {
            assert_err!(
                s.load_revision(oid, missing),
                Error::NoSuchRevision { oid: o, tid } if o == oid && tid == missing
            );
        }
        assert_err!(
            s.load_revision(other, t1),
            Error::NoSuchRevision { oid: o, tid } if o == other && tid == t1
        );
        let unused = s.new_oid().unwrap();
        assert_err!(s.load_revision(unused, t1), Error::NoSuchObject { oid } if oid == unused);
    }

    pub fn history_is_newest_first_with_sizes_and_limit(s: Subject) {
        let oid = s.new_oid().unwrap();
        let other = s.new_oid().unwrap();
        let sizes = [0usize, 3, 10, 1, 7];
        let mut expected = Vec::new();
        let mut base = Tid::ZERO;
        let mut other_base = Tid::ZERO;
        for (i, &size) in sizes.iter().enumerate() {
            base = commit(&*s, &[(oid, base, &vec![i as u8; size])]);
            expected.push(RevisionInfo {
                tid: base,
                size: size as u64,
            });
            // Revisions of another object in between do not show up.
            other_base = commit(&*s, &[(other, other_base, b"noise")]);
        }
        expected.reverse();
        assert_eq!(s.history(oid, 100).unwrap(), expected);
        assert_eq!(s.history(oid, usize::MAX).unwrap(), expected);
        assert_eq!(s.history(oid, 5).unwrap(), expected);
        assert_eq!(s.history(oid, 2).unwrap(), expected[..2].to_vec());
        assert_eq!(s.history(oid, 1).unwrap(), expected[..1].to_vec());
        assert_eq!(s.history(oid, 0).unwrap(), vec![]);
        assert_eq!(s.history(other, 100).unwrap().len(), sizes.len());
    }

    pub fn transactions_report_metadata_and_changes_in_commit_order(s: Subject) {
        let (a, b, c) = (
            s.new_oid().unwrap(),
            s.new_oid().unwrap(),
            s.new_oid().unwrap(),
        );
        let first = TransactionMeta {
            user: "alice".into(),
            description: "first".into(),
            extension: BTreeMap::from([
                ("app".to_string(), b"x".to_vec()),
                ("empty".to_string(), Vec::new()),
            ]),
        };
        let second = TransactionMeta::default();
        let third = TransactionMeta {
            user: "zoë /admin".into(),
            description: "multi\nline: ∑".into(),
            extension: BTreeMap::from([("bytes".to_string(), vec![0, 255, 10, 13])]),
        };
        let run = |meta: &TransactionMeta, writes: &[(Oid, Tid, &[u8])]| {
            let mut txn = s.begin(meta.clone()).unwrap();
            for &(oid, base, data) in writes {
                txn.store(oid, base, data.to_vec()).unwrap();
            }
            txn.finish().unwrap()
        };
        let t1 = run(&first, &[(b, Tid::ZERO, b""), (a, Tid::ZERO, b"abc")]);
        let t2 = run(&second, &[(c, Tid::ZERO, b"0123456789")]);
        let t3 = run(&third, &[(c, t2, b"c2"), (a, t1, b"a-second")]);
        let change = |oid, size| ChangeInfo { oid, size };
        let expected = vec![
            TransactionInfo {
                tid: t1,
                meta: first,
                changes: vec![change(a, 3), change(b, 0)],
            },
            TransactionInfo {
                tid: t2,
                meta: second,
                changes: vec![change(c, 10)],
            },
            TransactionInfo {
                tid: t3,
                meta: third,
                changes: vec![change(a, 8), change(c, 2)],
            },
        ];
        assert!(a < b && b < c, "oids allocated in order");
        assert_eq!(all_transactions(&*s, Tid::ZERO, Tid::MAX), expected);
        assert_eq!(all_transactions(&*s, t1, t3), expected);
    }

    pub fn transactions_range_bounds_are_inclusive(s: Subject) {
        let (oid, t1) = create(&*s, b"1");
        let t2 = commit(&*s, &[(oid, t1, b"2")]);
        let t3 = commit(&*s, &[(oid, t2, b"3")]);
        let t4 = commit(&*s, &[(oid, t3, b"4")]);
        let range = |from, to| tids_of(&all_transactions(&*s, from, to));
        assert_eq!(range(Tid::ZERO, Tid::MAX), vec![t1, t2, t3, t4]);
        assert_eq!(range(t2, t3), vec![t2, t3]);
        assert_eq!(range(t1, t1), vec![t1]);
        assert_eq!(range(t4, t4), vec![t4]);
        assert_eq!(range(Tid::ZERO, t1), vec![t1]);
        assert_eq!(range(t4, Tid::MAX), vec![t4]);
        assert_eq!(range(Tid(t1.0 + 1), Tid(t4.0 - 1)), vec![t2, t3]);
        assert_eq!(range(Tid(t2.0 + 1), Tid(t3.0 - 1)), vec![]);
        assert_eq!(range(Tid::ZERO, Tid(t1.0 - 1)), vec![]);
        assert_eq!(range(Tid(t4.0 + 1), Tid::MAX), vec![]);
        assert_eq!(range(t3, t2), vec![]);
    }

    pub fn stale_base_conflict_names_oid_base_and_current(s: Subject) {
        let (x, t1) = create(&*s, b"x1");
        let t2 = commit(&*s, &[(x, t1, b"x2")]);
        // Found at an explicit vote ...
        let mut txn = s.begin(meta("stale")).unwrap();
        txn.store(x, t1, b"mine".to_vec()).unwrap();
        let conflict = expect_conflict(txn.vote());
        assert_eq!(
            conflict,
            ConflictError {
                oid: x,
                base_tid: t1,
                current_tid: t2
            }
        );
        txn.abort();
        // ... and by finish, which votes.
        let conflict = expect_conflict(try_commit(&*s, &[(x, t1, b"mine")]));
        assert_eq!(
            conflict,
            ConflictError {
                oid: x,
                base_tid: t1,
                current_tid: t2
            }
        );
        let err = try_commit(&*s, &[(x, t1, b"mine")]).unwrap_err();
        assert_eq!(
            err.as_conflict(),
            Some(&ConflictError {
                oid: x,
                base_tid: t1,
                current_tid: t2
            })
        );
        // A base newer than the current revision is just as wrong.
        let future = Tid(t2.0 + 5);
        let conflict = expect_conflict(try_commit(&*s, &[(x, future, b"mine")]));
        assert_eq!(
            conflict,
            ConflictError {
                oid: x,
                base_tid: future,
                current_tid: t2
            }
        );
        // A retry from the current revision succeeds.
        let t3 = commit(&*s, &[(x, t2, b"mine")]);
        assert_eq!(s.load(x, Tid::MAX).unwrap(), rev(t3, b"mine"));
    }

    pub fn conflicting_transaction_leaves_no_trace(s: Subject) {
        let (x, t1) = create(&*s, b"x1");
        let t2 = commit(&*s, &[(x, t1, b"x2")]);
        let y = s.new_oid().unwrap();
        let sub = s.subscribe();
        let mut txn = s.begin(meta("loses")).unwrap();
        txn.store(y, Tid::ZERO, b"new object of the loser".to_vec())
            .unwrap();
        txn.store(x, t1, b"stale write".to_vec()).unwrap();
        let conflict = expect_conflict(txn.finish());
        assert_eq!(
            conflict,
            ConflictError {
                oid: x,
                base_tid: t1,
                current_tid: t2
            }
        );
        assert_eq!(s.last_tid(), t2);
        assert_eq!(s.load(x, Tid::MAX).unwrap(), rev(t2, b"x2"));
        assert_err!(s.load(y, Tid::MAX), Error::NoSuchObject { oid } if oid == y);
        assert_err!(s.history(y, 10), Error::NoSuchObject { oid } if oid == y);
        assert_eq!(s.history(x, 10).unwrap().len(), 2);
        assert_eq!(
            tids_of(&all_transactions(&*s, Tid::ZERO, Tid::MAX)),
            vec![t1, t2]
        );
        let t3 = commit(&*s, &[(y, Tid::ZERO, b"winner")]);
        assert_eq!(
            event_of(&sub),
            (t3, vec![y]),
            "the failed transaction was notified"
        );
        assert!(sub.try_recv().is_none());
    }

    pub fn failed_vote_releases_the_commit_lock(s: Subject) {
        let (x, t1) = create(&*s, b"x1");
        let t2 = commit(&*s, &[(x, t1, b"x2")]);
        let mut txn = s.begin(meta("stale")).unwrap();
        txn.store(x, t1, b"stale".to_vec()).unwrap();
        expect_conflict(txn.vote());
        txn.abort();
        let shared = s.shared();
        let t3 = within(LOCK_TIMEOUT, "a commit after a failed vote", move || {
            try_commit(&*shared, &[(x, t2, b"x3")])
        })
        .unwrap();
        // A failed finish (which votes) releases it too.
        expect_conflict(try_commit(&*s, &[(x, t2, b"stale again")]));
        let shared = s.shared();
        let t4 = within(LOCK_TIMEOUT, "a commit after a failed finish", move || {
            try_commit(&*shared, &[(x, t3, b"x4")])
        })
        .unwrap();
        assert_eq!(s.load(x, Tid::MAX).unwrap(), rev(t4, b"x4"));
    }

    /// `vote_resolving`: a storage that merges replaces each stale store by the
    /// resolver's merge of (the store's base revision, the newest one) and names
    /// it; a conflict the resolver refuses, or a stale `check_current`, is
    /// reported. One that does not merge reports the first conflict.
    pub fn a_merging_vote_merges_stale_stores_and_reports_what_does_not_merge(s: Subject) {
        // Data: "<value>"; the merge applies mine - old on top of committed
        // (mine is "11": the resolver gets only old and committed).
        let counter = |old: &[u8], committed: &[u8]| -> Option<Vec<u8>> {
            let n = |b: &[u8]| std::str::from_utf8(b).ok()?.parse::<i64>().ok();
            Some((n(committed)? + 11 - n(old)?).to_string().into_bytes())
        };
        let (x, t1) = create(&*s, b"10");
        let (y, _) = create(&*s, b"y");
        let t2 = commit(&*s, &[(x, t1, b"15")]);
        let mut txn = s.begin(meta("merged")).unwrap();
        txn.store(x, t1, b"11".to_vec()).unwrap();
        let merges = txn.merges_conflicts();
        let resolver = |oid: Oid, old: &[u8], committed: &[u8]| {
            assert_eq!(oid, x);
            counter(old, committed)
        };
        if !merges {
            expect_conflict(txn.vote_resolving(&resolver));
            txn.abort();
            return;
        }
        assert_eq!(txn.vote_resolving(&resolver).unwrap(), Some(vec![x]));
        let t3 = txn.finish().unwrap();
        assert_eq!(s.load(x, Tid::MAX).unwrap(), rev(t3, b"16"));
        // A refused merge, and a stale check, are reported; nothing commits.
        let mut txn = s.begin(meta("refused")).unwrap();
        txn.store(x, t2, b"11".to_vec()).unwrap();
        let refuse = |_: Oid, _: &[u8], _: &[u8]| -> Option<Vec<u8>> { None };
        let c = expect_conflict(txn.vote_resolving(&refuse));
        assert_eq!((c.oid, c.base_tid, c.current_tid), (x, t2, t3));
        txn.abort();
        let mut txn = s.begin(meta("stale check")).unwrap();
        txn.store(y, s.load(y, Tid::MAX).unwrap().tid, b"y2".to_vec())
            .unwrap();
        txn.check_current(x, t2).unwrap();
        let c = expect_conflict(txn.vote_resolving(&resolver));
        assert_eq!(c.oid, x);
        txn.abort();
        assert_eq!(s.load(x, Tid::MAX).unwrap(), rev(t3, b"16"));
    }

    pub fn two_creators_of_one_oid_conflict(s: Subject) {
        let oid = s.new_oid().unwrap();
        let mut first = s.begin(meta("first creator")).unwrap();
        let mut second = s.begin(meta("second creator")).unwrap();
        first.store(oid, Tid::ZERO, b"first".to_vec()).unwrap();
        second.store(oid, Tid::ZERO, b"second".to_vec()).unwrap();
        let t1 = first.finish().unwrap();
        let conflict = expect_conflict(second.finish());
        assert_eq!(
            conflict,
            ConflictError {
                oid,
                base_tid: Tid::ZERO,
                current_tid: t1
            }
        );
        assert_eq!(s.load(oid, Tid::MAX).unwrap(), rev(t1, b"first"));
        assert_eq!(
            s.history(oid, 10).unwrap(),
            vec![RevisionInfo { tid: t1, size: 5 }]
        );
        assert_eq!(s.last_tid(), t1);
    }

    pub fn check_current_conflicts_when_stale(s: Subject) {
        let (x, t1) = create(&*s, b"read only");
        let (y, ty) = create(&*s, b"written");
        let mut txn = s.begin(meta("read x, write y")).unwrap();
        txn.check_current(x, t1).unwrap();
        txn.store(y, ty, b"y2".to_vec()).unwrap();
        let t2 = commit(&*s, &[(x, t1, b"x changed")]);
        let conflict = expect_conflict(txn.finish());
        assert_eq!(
            conflict,
            ConflictError {
                oid: x,
                base_tid: t1,
                current_tid: t2
            }
        );
        assert_eq!(s.load(y, Tid::MAX).unwrap(), rev(ty, b"written"));
        assert_eq!(s.last_tid(), t2);
    }

    pub fn check_current_passes_when_current(s: Subject) {
        let (x, t1) = create(&*s, b"read only");
        let (y, ty) = create(&*s, b"written");
        let sub = s.subscribe();
        let mut txn = s.begin(meta("read x, write y")).unwrap();
        txn.check_current(x, t1).unwrap();
        txn.store(y, ty, b"y2".to_vec()).unwrap();
        let t2 = txn.finish().unwrap();
        assert_eq!(s.load(y, Tid::MAX).unwrap(), rev(t2, b"y2"));
        // A checked oid is validated, not written.
        assert_eq!(
            s.history(x, 10).unwrap(),
            vec![RevisionInfo { tid: t1, size: 9 }]
        );
        let txns = all_transactions(&*s, t2, t2);
        assert_eq!(txns.len(), 1);
        assert_eq!(txns[0].changes, vec![ChangeInfo { oid: y, size: 2 }]);
        assert_eq!(event_of(&sub), (t2, vec![y]));
    }

    /// How a transaction ends without finishing.
    #[derive(Clone, Copy, Debug)]
    enum Ending {
        Abort,
        Drop,
    }

    fn unfinished_transactions_leave_no_trace(s: Subject, ending: Ending) {
        let (x, t1) = create(&*s, b"kept");
        let fresh = s.new_oid().unwrap();
        let sub = s.subscribe();
        let mut current = t1;
        for vote in [false, true] {
            let mut txn = s.begin(meta("never finished")).unwrap();
            txn.store(x, current, b"discarded".to_vec()).unwrap();
            txn.store(fresh, Tid::ZERO, b"discarded".to_vec()).unwrap();
            if vote {
                txn.vote().unwrap();
            }
            match ending {
                Ending::Abort => txn.abort(),
                Ending::Drop => drop(txn),
            }
            let what = format!("{ending:?} (voted: {vote})");
            assert_eq!(s.last_tid(), current, "{what}");
            assert_eq!(s.load(x, Tid::MAX).unwrap().tid, current, "{what}");
            assert_ne!(s.load(x, Tid::MAX).unwrap().data, b"discarded", "{what}");
            assert_err!(s.load(fresh, Tid::MAX), Error::NoSuchObject { oid } if oid == fresh);
            // The commit lock is free: a commit from another thread goes through.
            let shared = s.shared();
            let next = within(LOCK_TIMEOUT, &format!("a commit after {what}"), move || {
                try_commit(&*shared, &[(x, current, b"next")])
            })
            .unwrap();
            assert_eq!(event_of(&sub), (next, vec![x]), "{what}");
            current = next;
        }
        assert!(sub.try_recv().is_none());
        assert_eq!(s.history(x, 10).unwrap().len(), 3);
        let txns = all_transactions(&*s, Tid::ZERO, Tid::MAX);
        assert_eq!(txns.len(), 3);
        assert!(txns.iter().all(|t| t.meta.description != "never finished"));
    }

    pub fn abort_leaves_no_trace_and_releases_the_commit_lock(s: Subject) {
        unfinished_transactions_leave_no_trace(s, Ending::Abort);
    }

    pub fn drop_without_finish_leaves_no_trace_and_releases_the_commit_lock(s: Subject) {
        unfinished_transactions_leave_no_trace(s, Ending::Drop);
    }

    pub fn calls_after_vote_are_refused(s: Subject) {
        let (x, t1) = create(&*s, b"x");
        let y = s.new_oid().unwrap();
        let mut txn = s.begin(meta("voted")).unwrap();
        txn.store(x, t1, b"voted".to_vec()).unwrap();
        txn.vote().unwrap();
        assert_err!(
            txn.store(y, Tid::ZERO, b"late".to_vec()),
            Error::AlreadyVoted
        );
        assert_err!(txn.store(x, t1, b"late".to_vec()), Error::AlreadyVoted);
        assert_err!(txn.check_current(x, t1), Error::AlreadyVoted);
        assert_err!(txn.vote(), Error::AlreadyVoted);
        let t2 = txn.finish().unwrap();
        assert_eq!(s.load(x, Tid::MAX).unwrap(), rev(t2, b"voted"));
        assert_err!(s.load(y, Tid::MAX), Error::NoSuchObject { oid } if oid == y);
    }

    pub fn storing_an_oid_twice_keeps_the_last_data(s: Subject) {
        let oid = s.new_oid().unwrap();
        let sub = s.subscribe();
        let mut txn = s.begin(meta("twice")).unwrap();
        txn.store(oid, Tid::ZERO, b"first".to_vec()).unwrap();
        txn.store(oid, Tid::ZERO, b"second, longer".to_vec())
            .unwrap();
        let tid = txn.finish().unwrap();
        assert_eq!(s.load(oid, Tid::MAX).unwrap(), rev(tid, b"second, longer"));
        assert_eq!(
            s.history(oid, 10).unwrap(),
            vec![RevisionInfo { tid, size: 14 }]
        );
        let txns = all_transactions(&*s, tid, tid);
        assert_eq!(txns[0].changes, vec![ChangeInfo { oid, size: 14 }]);
        assert_eq!(event_of(&sub), (tid, vec![oid]));
    }

    pub fn storing_an_unallocated_oid_is_refused(s: Subject) {
        let allocated = s.new_oid().unwrap();
        // The oid right after the newest one handed out is the first never allocated,
        // except where oids are handed out in blocks (spec: "may be"): a client storage
        // takes 32 at a time from its server.
        let mut bogus_oids = vec![Oid(allocated.0 + 1000), Oid(u64::MAX)];
        if !s.describe().starts_with("tcp://") {
            bogus_oids.insert(0, Oid(allocated.0 + 1));
        }
        for bogus in bogus_oids {
            let result = (|| {
                let mut txn = s.begin(meta("bogus oid"))?;
                txn.store(allocated, Tid::ZERO, b"fine".to_vec())?;
                txn.store(bogus, Tid::ZERO, b"bogus".to_vec())?;
                txn.finish()
            })();
            assert_err!(result, Error::UnallocatedOid { oid } if oid == bogus);
            assert_eq!(s.last_tid(), Tid::ZERO);
            assert_err!(s.load(allocated, Tid::MAX), Error::NoSuchObject { oid } if oid == allocated);
            assert_err!(s.load(bogus, Tid::MAX), Error::NoSuchObject { oid } if oid == bogus);
        }
        let tid = commit(&*s, &[(allocated, Tid::ZERO, b"fine")]);
        assert_eq!(s.load(allocated, Tid::MAX).unwrap(), rev(tid, b"fine"));
    }

    pub fn root_oid_can_be_stored_without_allocation(s: Subject) {
        let t1 = commit(&*s, &[(Oid::ROOT, Tid::ZERO, b"root")]);
        assert_eq!(s.load(Oid::ROOT, Tid::MAX).unwrap(), rev(t1, b"root"));
        let t2 = commit(&*s, &[(Oid::ROOT, t1, b"root 2")]);
        assert_eq!(s.load(Oid::ROOT, Tid::MAX).unwrap(), rev(t2, b"root 2"));
        let conflict = expect_conflict(try_commit(&*s, &[(Oid::ROOT, Tid::ZERO, b"again")]));
        assert_eq!(
            conflict,
            ConflictError {
                oid: Oid::ROOT,
                base_tid: Tid::ZERO,
                current_tid: t2
            }
        );
        assert!(s.new_oid().unwrap() > Oid::ROOT);
    }

    pub fn tids_strictly_increase_and_follow_wall_time(s: Subject) {
        let oid = s.new_oid().unwrap();
        let mut last = Tid::ZERO;
        for i in 0..50u8 {
            let before = Tid::now();
            let tid = commit(&*s, &[(oid, last, &[i])]);
            let after = Tid::now();
            assert!(tid > last, "tid {tid} after {last}");
            assert!(
                tid >= before,
                "tid {tid} is before the commit started ({before})"
            );
            // Ahead of the clock only by the `last + 1` rule: far less than a second.
            assert!(
                tid.0 <= after.0 + 1_000_000,
                "tid {tid} is ahead of the clock ({after})"
            );
            assert_eq!(s.last_tid(), tid);
            last = tid;
        }
    }

    pub fn subscribers_receive_commits_in_order_with_exact_oids(s: Subject) {
        let sub = s.subscribe();
        let (a, b, c) = (
            s.new_oid().unwrap(),
            s.new_oid().unwrap(),
            s.new_oid().unwrap(),
        );
        let t1 = commit(&*s, &[(b, Tid::ZERO, b"b"), (a, Tid::ZERO, b"a")]);
        let t2 = commit(&*s, &[(c, Tid::ZERO, b"c")]);
        let t3 = commit(&*s, &[(c, t2, b"c2"), (a, t1, b"a2")]);
        assert_eq!(event_of(&sub), (t1, vec![a, b]));
        assert_eq!(event_of(&sub), (t2, vec![c]));
        assert_eq!(event_of(&sub), (t3, vec![a, c]));
        assert!(sub.try_recv().is_none());
        // A subscription sees only what becomes visible after it was taken.
        let late = s.subscribe();
        assert!(late.try_recv().is_none());
        let t4 = commit(&*s, &[(b, t1, b"b2")]);
        assert_eq!(event_of(&sub), (t4, vec![b]));
        assert_eq!(event_of(&late), (t4, vec![b]));
        assert!(sub.try_recv().is_none());
        assert!(late.try_recv().is_none());
    }

    /// The ordering contract: a commit's notification is delivered before
    /// `last_tid()` reports its tid. A reader that sees `last_tid() >= T` and then
    /// drains its subscription must find the event of every commit up to T.
    pub fn notification_is_delivered_before_last_tid_reports_it(s: Subject) {
        const COMMITTERS: usize = 2;
        const COMMITS: usize = 150;
        let sub = s.subscribe();
        let oids: Vec<Oid> = (0..COMMITTERS).map(|_| s.new_oid().unwrap()).collect();
        let running = AtomicBool::new(true);
        let done = Mutex::new(0usize);
        let mut drained: Vec<(Tid, Vec<Oid>)> = Vec::new();
        // (last_tid read, events drained by the end of the drain that followed it)
        let mut observations: Vec<(Tid, usize)> = Vec::new();
        let committed: Vec<(Tid, Vec<Oid>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = oids
                .iter()
                .map(|&oid| {
                    let (s, running, done) = (&s, &running, &done);
                    scope.spawn(move || {
                        let mut mine = Vec::with_capacity(COMMITS);
                        let mut base = Tid::ZERO;
                        for i in 0..COMMITS {
                            base = commit(&**s, &[(oid, base, &i.to_le_bytes())]);
                            mine.push((base, vec![oid]));
                        }
                        let mut done = done.lock().unwrap();
                        *done += 1;
                        if *done == COMMITTERS {
                            running.store(false, Ordering::Release);
                        }
                        mine
                    })
                })
                .collect();
            let mut previous = Tid::ZERO;
            loop {
                let finished = !running.load(Ordering::Acquire);
                let seen = s.last_tid();
                assert!(
                    seen >= previous,
                    "last_tid went back from {previous} to {seen}"
                );
                previous = seen;
                for event in sub.drain() {
                    drained.push((event.tid, sorted(event.oids.iter().copied())));
                }
                observations.push((seen, drained.len()));
                if seen != Tid::ZERO {
                    assert!(
                        drained.iter().any(|(tid, _)| *tid == seen),
                        "last_tid reported {seen} before its notification was delivered"
                    );
                }
                if finished {
                    break;
                }
                std::thread::yield_now();
            }
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("committer"))
                .collect()
        });
        let mut committed = committed;
        committed.sort();
        assert_eq!(committed.len(), COMMITTERS * COMMITS);
        assert_eq!(
            drained, committed,
            "events differ from the commits, or are out of order"
        );
        for (seen, delivered) in observations {
            let due = committed.partition_point(|(tid, _)| *tid <= seen);
            assert!(
                due <= delivered,
                "last_tid was {seen} ({due} commits) when only {delivered} events were delivered"
            );
        }
        assert!(sub.try_recv().is_none());
    }

    pub fn metadata_limits_hold_at_their_boundaries(s: Subject) {
        let commit_with = |meta: TransactionMeta| -> Result<Tid> {
            let oid = s.new_oid()?;
            let mut txn = s.begin(meta)?;
            txn.store(oid, Tid::ZERO, b"x".to_vec())?;
            txn.finish()
        };
        let meta_of = |tid| all_transactions(&*s, tid, tid).remove(0).meta;

        let at_limit = TransactionMeta {
            user: "u".repeat(USER_BYTES_MAX),
            description: "d".repeat(DESCRIPTION_BYTES_MAX),
            extension: BTreeMap::from([("k".to_string(), vec![7; EXTENSION_BYTES_MAX - 7])]),
        };
        assert_eq!(at_limit.extension_encoded_len(), EXTENSION_BYTES_MAX);
        let tid = commit_with(at_limit.clone()).unwrap();
        assert_eq!(meta_of(tid), at_limit);
        let last = s.last_tid();

        let too_long =
            |what: &str, len: usize, max: usize, meta: TransactionMeta| match commit_with(meta) {
                Err(Error::LimitExceeded {
                    what: w,
                    len: l,
                    max: m,
                }) if w.contains(what) && l == len as u64 && m == max as u64 => {}
                other => panic!("{what} of {len} bytes: expected LimitExceeded, got {other:?}"),
            };
        too_long(
            "user",
            USER_BYTES_MAX + 1,
            USER_BYTES_MAX,
            TransactionMeta {
                user: "u".repeat(USER_BYTES_MAX + 1),
                ..Default::default()
            },
        );
        // Bytes count, not characters: 32768 two-byte characters are one byte too many.
        too_long(
            "user",
            USER_BYTES_MAX + 1,
            USER_BYTES_MAX,
            TransactionMeta {
                user: "é".repeat(USER_BYTES_MAX.div_ceil(2)),
                ..Default::default()
            },
        );
        too_long(
            "description",
            DESCRIPTION_BYTES_MAX + 1,
            DESCRIPTION_BYTES_MAX,
            TransactionMeta::described("d".repeat(DESCRIPTION_BYTES_MAX + 1)),
        );
        too_long(
            "key",
            EXTENSION_KEY_BYTES_MAX + 1,
            EXTENSION_KEY_BYTES_MAX,
            TransactionMeta {
                extension: BTreeMap::from([("k".repeat(EXTENSION_KEY_BYTES_MAX + 1), Vec::new())]),
                ..Default::default()
            },
        );
        too_long(
            "extension",
            EXTENSION_BYTES_MAX + 1,
            EXTENSION_BYTES_MAX,
            TransactionMeta {
                extension: BTreeMap::from([("k".to_string(), vec![7; EXTENSION_BYTES_MAX - 6])]),
                ..Default::default()
            },
        );
        assert_eq!(s.last_tid(), last, "a refused transaction was committed");
    }

    pub fn concurrent_committers_on_disjoint_oids_all_succeed(s: Subject) {
        const THREADS: usize = 4;
        const COMMITS: usize = 25;
        let per_thread: Vec<(Oid, Vec<Tid>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let s = &s;
                    scope.spawn(move || {
                        let oid = s.new_oid().unwrap();
                        let mut tids = Vec::new();
                        let mut base = Tid::ZERO;
                        for i in 0..COMMITS {
                            base = commit(&**s, &[(oid, base, format!("{t}:{i}").as_bytes())]);
                            tids.push(base);
                        }
                        (oid, tids)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("committer"))
                .collect()
        });
        let mut all_tids = Vec::new();
        for (t, (oid, tids)) in per_thread.iter().enumerate() {
            let history: Vec<Tid> = s
                .history(*oid, usize::MAX)
                .unwrap()
                .iter()
                .map(|r| r.tid)
                .collect();
            let mut expected = tids.clone();
            expected.reverse();
            assert_eq!(history, expected);
            let last = format!("{t}:{}", COMMITS - 1);
            assert_eq!(
                s.load(*oid, Tid::MAX).unwrap(),
                rev(tids[COMMITS - 1], last.as_bytes())
            );
            all_tids.extend_from_slice(tids);
        }
        all_tids.sort();
        assert_eq!(
            tids_of(&all_transactions(&*s, Tid::ZERO, Tid::MAX)),
            all_tids
        );
        assert_eq!(s.last_tid(), *all_tids.last().unwrap());
        all_tids.dedup();
        assert_eq!(
            all_tids.len(),
            THREADS * COMMITS,
            "two commits got the same tid"
        );
    }

    pub fn concurrent_committers_on_one_oid_first_committer_wins(s: Subject) {
        const THREADS: usize = 4;
        const ROUNDS: usize = 10;
        let (oid, t0) = create(&*s, b"start");
        let barrier = Barrier::new(THREADS);
        // Per thread, per round: the base it read and what its commit returned.
        let per_thread: Vec<Vec<(Tid, Result<Tid>)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (s, barrier) = (&s, &barrier);
                    scope.spawn(move || {
                        let mut rounds = Vec::new();
                        for round in 0..ROUNDS {
                            barrier.wait();
                            let base = s.load(oid, s.last_tid()).unwrap().tid;
                            // Everyone has read before anyone commits.
                            barrier.wait();
                            let data = format!("round {round} thread {t}");
                            rounds.push((base, try_commit(&**s, &[(oid, base, data.as_bytes())])));
                        }
                        rounds
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("committer"))
                .collect()
        });
        let mut base = t0;
        let mut winners = Vec::new();
        for round in 0..ROUNDS {
            let results: Vec<&(Tid, Result<Tid>)> = per_thread.iter().map(|r| &r[round]).collect();
            assert!(
                results.iter().all(|(b, _)| *b == base),
                "round {round} read another base"
            );
            let won: Vec<(usize, Tid)> = results
                .iter()
                .enumerate()
                .filter_map(|(t, (_, r))| r.as_ref().ok().map(|tid| (t, *tid)))
                .collect();
            assert_eq!(won.len(), 1, "round {round}: winners {won:?}");
            let (winner, tid) = won[0];
            for (t, (_, result)) in results.iter().enumerate() {
                if t != winner {
                    match result {
                        Err(Error::Conflict(c)) => assert_eq!(
                            *c,
                            ConflictError {
                                oid,
                                base_tid: base,
                                current_tid: tid
                            },
                            "round {round} thread {t}"
                        ),
                        other => {
                            panic!("round {round} thread {t}: expected a conflict, got {other:?}")
                        }
                    }
                }
            }
            let data = format!("round {round} thread {winner}");
            assert_eq!(s.load_revision(oid, tid).unwrap(), data.as_bytes());
            winners.push(tid);
            base = tid;
        }
        let mut expected: Vec<Tid> = winners.into_iter().rev().collect();
        expected.push(t0);
        let history: Vec<Tid> = s
            .history(oid, usize::MAX)
            .unwrap()
            .iter()
            .map(|r| r.tid)
            .collect();
        assert_eq!(history, expected);
    }

    pub fn record_size_limit_is_enforced(s: Subject) {
        let oid = s.new_oid().unwrap();
        // Zeroed pages are not touched until written, so this costs no real memory.
        let too_large = vec![0u8; RECORD_BYTES_MAX + 1];
        let result = (|| {
            let mut txn = s.begin(meta("too large"))?;
            txn.store(oid, Tid::ZERO, too_large)?;
            txn.finish()
        })();
        match result {
            Err(Error::LimitExceeded { len, max, .. })
                if len == RECORD_BYTES_MAX as u64 + 1 && max == RECORD_BYTES_MAX as u64 => {}
            other => panic!("expected LimitExceeded for the revision, got {other:?}"),
        }
        assert_eq!(s.last_tid(), Tid::ZERO);
        assert_err!(s.load(oid, Tid::MAX), Error::NoSuchObject { oid: o } if o == oid);
    }

    pub fn closed_storage_refuses_calls(s: Subject) {
        let (x, t1) = create(&*s, b"before close");
        let mut open_txn = s.begin(meta("open across close")).unwrap();
        s.close().unwrap();
        assert_eq!(s.last_tid(), t1);
        assert_err!(s.new_oid(), Error::Closed);
        assert_err!(s.begin(meta("after close")).map(|_| ()), Error::Closed);
        match open_txn.store(x, t1, b"after close".to_vec()) {
            Ok(()) | Err(Error::Closed) => {}
            Err(e) => panic!("store after close: expected Ok or Closed, got {e}"),
        }
        assert_err!(open_txn.finish(), Error::Closed);
        closed_or(s.load(x, Tid::MAX), rev(t1, b"before close"), "load");
        closed_or(
            s.load_revision(x, t1),
            b"before close".to_vec(),
            "load_revision",
        );
        closed_or(
            s.history(x, 10),
            vec![RevisionInfo { tid: t1, size: 12 }],
            "history",
        );
        closed_or(
            s.transactions(Tid::ZERO, Tid::MAX)
                .and_then(|txns| txns.map(|t| t.map(|t| t.tid)).collect::<Result<Vec<_>>>()),
            vec![t1],
            "transactions",
        );
        assert_eq!(s.last_tid(), t1);
    }

    pub fn close_ends_subscriptions(s: Subject) {
        let sub = s.subscribe();
        let (oid, t1) = create(&*s, b"x");
        s.close().unwrap();
        // What was delivered before close stays readable; then the stream ends.
        assert_eq!(event_of(&sub), (t1, vec![oid]));
        let started = Instant::now();
        assert!(sub.recv_timeout(EVENT_TIMEOUT).is_none());
        assert!(
            started.elapsed() < EVENT_TIMEOUT,
            "the subscription did not end at close"
        );
        let late = s.subscribe();
        let started = Instant::now();
        assert!(late.recv_timeout(EVENT_TIMEOUT).is_none());
        assert!(
            started.elapsed() < EVENT_TIMEOUT,
            "a subscription after close did not end"
        );
    }

    /// A transaction voted before `close` and finished after it: once `close` has
    /// returned, nothing may commit. A `close` that waits for the voted transaction
    /// to end is fine; then that transaction may still commit, before `close` returns.
    pub fn transaction_voted_before_close_does_not_commit_after_it(s: Subject) {
        let (x, t1) = create(&*s, b"before close");
        let mut txn = s.begin(meta("voted across close")).unwrap();
        txn.store(x, t1, b"after close".to_vec()).unwrap();
        txn.vote().unwrap();
        let (closed_sender, closed) = std::sync::mpsc::channel();
        let shared = s.shared();
        std::thread::spawn(move || {
            let _ = closed_sender.send(shared.close());
        });
        match closed.recv_timeout(Duration::from_millis(500)) {
            Ok(result) => {
                result.unwrap();
                assert_err!(txn.finish(), Error::Closed);
                assert_eq!(
                    s.last_tid(),
                    t1,
                    "a transaction committed after close returned"
                );
            }
            Err(_) => {
                // close waits for the voted transaction: it may commit first.
                match txn.finish() {
                    Ok(tid) => assert_eq!(s.last_tid(), tid),
                    Err(Error::Closed) => assert_eq!(s.last_tid(), t1),
                    Err(e) => panic!("finish while close waits: {e}"),
                }
                closed
                    .recv_timeout(LOCK_TIMEOUT)
                    .expect("close returns once the voted transaction ended")
                    .unwrap();
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// The file storage, with and without fsync.
// ---------------------------------------------------------------------------------

mod file_storage {
    contract_suite!(file_fsync, || crate::common::files::file(
        zodiac_storage::Durability::Fsync
    ));
    contract_suite!(file_nodurability, || crate::common::files::file(
        zodiac_storage::Durability::Off
    ));
}

// ---------------------------------------------------------------------------------
// The client storage, over a server on 127.0.0.1 serving a file storage.
// ---------------------------------------------------------------------------------

mod client_storage {
    contract_suite!(client_file_fsync, || crate::common::net::client(
        zodiac_storage::Durability::Fsync
    ));
    contract_suite!(client_file_nodurability, || crate::common::net::client(
        zodiac_storage::Durability::Off
    ));
}

// ---------------------------------------------------------------------------------
// The PostgreSQL storage, a fresh schema per test (ZODIAC_TEST_POSTGRES).
// ---------------------------------------------------------------------------------

#[cfg(feature = "postgres")]
mod postgres_storage {
    contract_suite!(optional postgres, crate::common::pg::storage);
}
