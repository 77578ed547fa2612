//! What the job simulation observes beside the stored jobs: the job layer's
//! success lines (read from its log) and, on each thread, whether the last
//! commit was acknowledged (through [`Recording`], the storage under test).
//!
//! Invariants:
//! - A success line is kept with the seed running when it was logged, and
//!   [`completions_of`] hands each seed only its own.
//! - A success line logged on a thread whose last commit did not return a tid
//!   is kept apart ([`unacknowledged_of`]): the job layer logs a success on the
//!   thread that committed it, right after the commit.
//! - [`Recording`] changes nothing: every call goes to the file storage as is.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};

use zodiac_storage::{
    CommitSubscription, FileStorage, Oid, Resolver, Revision, RevisionInfo, Storage,
    StorageTransaction, Tid, TransactionIter, TransactionMeta,
};
use zodiac_storage::{PackReport, References};

/// The seed being run: a completion is recorded with it, so that a straggling
/// thread of an earlier seed's dead process cannot be taken for this seed's.
pub static SEED_RUNNING: AtomicU64 = AtomicU64::new(0);
/// Runs the job layer logged as completed: (seed, job or callback, attempt).
static COMPLETIONS: Mutex<Vec<(u64, Oid, u32)>> = Mutex::new(Vec::new());

/// Reads what the job layer reports as a success: its trace line "job J
/// (handler) completed on attempt A", logged once the commit storing the result
/// returned its tid.
struct CompletionLog;

/// The target and the words of the job layer's success line.
pub const TRACE_TARGET: &str = "zodiac_async::trace";
const COMPLETED_WORDS: &str = ") completed on attempt ";

impl log::Log for CompletionLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.target() == TRACE_TARGET && metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        if let Some((oid, attempt)) = parse_completion(&record.args().to_string()) {
            let seed = SEED_RUNNING.load(Ordering::SeqCst);
            let last = LAST_COMMIT_ACKNOWLEDGED.with(Cell::get);
            if last != Some(true) {
                UNACKNOWLEDGED_SUCCESSES
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((seed, oid, attempt, last));
            }
            COMPLETIONS
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((seed, oid, attempt));
        }
    }

    fn flush(&self) {}
}

/// `(J, A)` of "job J (handler) completed on attempt A", J in decimal as the
/// command line prints job ids.
pub fn parse_completion(line: &str) -> Option<(Oid, u32)> {
    let rest = line.strip_prefix("job ")?;
    let (id, rest) = rest.split_once(' ')?;
    let (_, attempt) = rest.split_once(COMPLETED_WORDS)?;
    let attempt = attempt.split_whitespace().next()?.parse().ok()?;
    Some((Oid(id.parse().ok()?), attempt))
}

#[test]
fn the_job_layers_success_line_is_read() {
    assert_eq!(
        parse_completion("job 31 (inc) completed on attempt 3"),
        Some((Oid(31), 3))
    );
    assert_eq!(
        parse_completion("job 10 (cb) completed on attempt 1 in a batch"),
        Some((Oid(10), 1))
    );
    assert_eq!(parse_completion("job 10: attempt failed: conflict"), None);
    assert_eq!(
        parse_completion("job 0x1f (inc) completed on attempt 3"),
        None
    );
}

pub fn capture_completions() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        log::set_logger(&CompletionLog).expect("the only logger of this test binary");
        log::set_max_level(log::LevelFilter::Info);
    });
}

/// The completions the job layer logged during `seed`.
pub fn completions_of(seed: u64) -> Vec<(Oid, u32)> {
    let mut all = COMPLETIONS.lock().unwrap_or_else(|p| p.into_inner());
    let mine = all
        .iter()
        .filter(|c| c.0 == seed)
        .map(|c| (c.1, c.2))
        .collect();
    all.retain(|c| c.0 != seed);
    mine
}

thread_local! {
    /// Whether this thread's last commit was acknowledged (`finish` returned its
    /// tid); `None` before its first.
    static LAST_COMMIT_ACKNOWLEDGED: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Success lines the job layer logged on a thread whose last commit had failed
/// (or that had committed nothing): (seed, job, attempt, that commit's outcome).
static UNACKNOWLEDGED_SUCCESSES: Mutex<Vec<UnacknowledgedSuccess>> = Mutex::new(Vec::new());

/// (seed, job, attempt, the outcome of its thread's last commit).
type UnacknowledgedSuccess = (u64, Oid, u32, Option<bool>);

/// The file storage under test, noting on each thread whether its last commit
/// was acknowledged: the job layer logs a success right after the commit that
/// stores it, on the same thread, so that commit must have been acknowledged.
pub struct Recording {
    pub inner: Arc<FileStorage>,
}

struct RecordingTransaction {
    inner: Box<dyn StorageTransaction>,
}

fn note_commit<T>(result: zodiac_storage::Result<T>) -> zodiac_storage::Result<T> {
    LAST_COMMIT_ACKNOWLEDGED.with(|c| c.set(Some(result.is_ok())));
    result
}

impl Storage for Recording {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn last_tid(&self) -> Tid {
        self.inner.last_tid()
    }
    fn new_oid(&self) -> zodiac_storage::Result<Oid> {
        self.inner.new_oid()
    }
    fn load(&self, oid: Oid, snapshot: Tid) -> zodiac_storage::Result<Revision> {
        self.inner.load(oid, snapshot)
    }
    fn load_revision(&self, oid: Oid, tid: Tid) -> zodiac_storage::Result<Vec<u8>> {
        self.inner.load_revision(oid, tid)
    }
    fn history(&self, oid: Oid, limit: usize) -> zodiac_storage::Result<Vec<RevisionInfo>> {
        self.inner.history(oid, limit)
    }
    fn transactions(&self, from: Tid, to: Tid) -> zodiac_storage::Result<TransactionIter<'_>> {
        self.inner.transactions(from, to)
    }
    fn begin(&self, meta: TransactionMeta) -> zodiac_storage::Result<Box<dyn StorageTransaction>> {
        let inner = self.inner.begin(meta)?;
        Ok(Box::new(RecordingTransaction { inner }))
    }
    fn subscribe(&self) -> CommitSubscription {
        self.inner.subscribe()
    }
    fn close(&self) -> zodiac_storage::Result<()> {
        self.inner.close()
    }
    fn known_newer_revision(&self, oid: Oid, than: Tid) -> Option<Tid> {
        self.inner.known_newer_revision(oid, than)
    }
    fn prefetch(&self, oids: &[Oid], snapshot: Tid) {
        self.inner.prefetch(oids, snapshot)
    }
    fn identity(&self) -> u64 {
        self.inner.identity()
    }
    fn pack(
        &self,
        pack_time: Tid,
        references: Option<References<'_>>,
    ) -> zodiac_storage::Result<PackReport> {
        Storage::pack(&*self.inner, pack_time, references)
    }
}

impl StorageTransaction for RecordingTransaction {
    fn store(&mut self, oid: Oid, base_tid: Tid, data: Vec<u8>) -> zodiac_storage::Result<()> {
        self.inner.store(oid, base_tid, data)
    }
    fn check_current(&mut self, oid: Oid, tid: Tid) -> zodiac_storage::Result<()> {
        self.inner.check_current(oid, tid)
    }
    fn vote(&mut self) -> zodiac_storage::Result<()> {
        self.inner.vote()
    }
    fn vote_resolving(
        &mut self,
        resolver: Resolver<'_>,
    ) -> zodiac_storage::Result<Option<Vec<Oid>>> {
        self.inner.vote_resolving(resolver)
    }
    fn merges_conflicts(&self) -> bool {
        self.inner.merges_conflicts()
    }
    fn store_mergeable(
        &mut self,
        oid: Oid,
        base_tid: Tid,
        data: Vec<u8>,
        merge: &str,
    ) -> zodiac_storage::Result<()> {
        self.inner.store_mergeable(oid, base_tid, data, merge)
    }
    fn commit_resolving(
        self: Box<Self>,
        resolver: Resolver<'_>,
    ) -> zodiac_storage::Result<(Tid, Vec<Oid>)> {
        note_commit(self.inner.commit_resolving(resolver))
    }
    fn finish(self: Box<Self>) -> zodiac_storage::Result<Tid> {
        note_commit(self.inner.finish())
    }
    fn abort(self: Box<Self>) {
        self.inner.abort()
    }
}

/// The success lines of `seed` logged after a commit that was not acknowledged.
pub fn unacknowledged_of(seed: u64) -> Vec<String> {
    let mut all = UNACKNOWLEDGED_SUCCESSES
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let mine = all
        .iter()
        .filter(|u| u.0 == seed)
        .map(|u| format!("job {} on attempt {} (its commit: {:?})", u.1, u.2, u.3))
        .collect();
    all.retain(|u| u.0 != seed);
    mine
}
