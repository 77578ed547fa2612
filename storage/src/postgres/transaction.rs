//! The commit path: stores are buffered here, then vote and finish each take
//! about one round trip per step on the commit connection (`docs/postgres.md`).
//!
//! - vote: `BEGIN`; the advisory locks of every oid, sorted by key (exclusive on
//!   stores, shared on `check_current`s), under `lock_timeout`; one query giving
//!   each expectation's current tid, with the committed and base data of every
//!   stale store when merging; the merges; the data sent in bulk (arrays) into
//!   the connection's temporary `zodiac_stage` table.
//! - finish: one statement taking the `head` row lock, choosing the tid, writing
//!   `transactions`, `revisions`, `current` and `head`, and NOTIFYing; `COMMIT`.
//!
//! Invariants:
//! - A transaction holds its commit connection's mutex from vote to finish or
//!   abort (one transaction per connection); one dropped after vote rolls back
//!   before releasing it.
//! - The advisory locks of a transaction's oids are held from its vote to its
//!   commit, so the current revisions it validated stay current.
//! - A `COMMIT` whose reply was lost is resolved by asking the server for the
//!   transaction's status on a new connection: a durable commit is never
//!   reported as a failure.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use std::collections::HashMap;

use parking_lot::{ArcMutexGuard, RawMutex};
use postgres::error::SqlState;
use postgres::{Client, Statement};

use super::conn::{self, is_cut, source_text};
use super::schema::OID_BLOCK;
use super::{Shared, encode, notify};
use crate::conflicts;
use crate::error::{ConflictError, Error, Result};
use crate::ids::{Oid, OidMap, Tid};
use crate::meta::TransactionMeta;
use crate::pending::PendingWrites;
use crate::storage::{Resolver, StorageTransaction};

/// Connections one storage commits on at once: transactions of different
/// threads vote and finish in parallel, up to PostgreSQL's `head` lock.
pub(crate) const COMMIT_CONNECTIONS: usize = 4;
/// Most data bytes one staging statement sends.
const STAGE_BYTES_MAX: usize = 64 << 20;
/// How long to wait for a cut connection's transaction to be resolved.
const RESOLVE_WAIT: Duration = Duration::from_secs(30);
/// How long a COMMIT whose connection was cut waits for PostgreSQL to answer
/// whether it landed (a restart lasts seconds): reported as unknown only after.
const UNREACHABLE_WAIT: Duration = Duration::from_secs(300);
/// The longest pause between two attempts to ask.
const ASK_PAUSE_MAX: Duration = Duration::from_secs(2);

/// The commit connection, held from vote to finish or abort.
pub(crate) type CommitGuard = ArcMutexGuard<RawMutex, Option<CommitConnection>>;

/// The connection commits go through, with the statements of the commit path
/// prepared on it once: each step is then one round trip (a statement given as
/// text would first be prepared, in a round trip of its own).
pub(crate) struct CommitConnection {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

impl CommitConnection {
    /// `sql` prepared on this connection (the first time it is asked for).
    fn prepared(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql)?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }
}

impl std::ops::Deref for CommitConnection {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for CommitConnection {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

pub(crate) struct PgTransaction {
    shared: Arc<Shared>,
    meta: TransactionMeta,
    writes: PendingWrites,
    voted: Option<CommitGuard>,
}

impl PgTransaction {
    pub fn new(shared: Arc<Shared>, meta: TransactionMeta) -> PgTransaction {
        PgTransaction {
            shared,
            meta,
            writes: PendingWrites::default(),
            voted: None,
        }
    }

    fn vote_with(&mut self, resolver: Option<Resolver<'_>>) -> Result<Vec<Oid>> {
        if self.voted.is_some() {
            return Err(Error::AlreadyVoted);
        }
        self.shared.check_open()?;
        check_allocated(&self.shared, &self.writes)?;
        let mut guard = commit_connection(&self.shared)?;
        let client = guard.as_mut().expect("connected above");
        match vote_sql(&self.shared, client, &mut self.writes, resolver) {
            Ok(merged) => {
                self.voted = Some(guard);
                Ok(merged)
            }
            Err(e) => {
                end_failed(&self.shared, &mut guard);
                Err(e)
            }
        }
    }
}

/// A commit connection for one transaction: the first idle one of the
/// storage's [`COMMIT_CONNECTIONS`] (opened, with its staging table, when first
/// needed), else the next in turn once it is free.
pub(crate) fn commit_connection(shared: &Shared) -> Result<CommitGuard> {
    let mut guard = match shared.commit.iter().find_map(|c| c.try_lock_arc()) {
        Some(idle) => idle,
        None => {
            let turn = shared.commit_turn.fetch_add(1, Ordering::Relaxed);
            shared.commit[turn % shared.commit.len()].lock_arc()
        }
    };
    if guard.as_ref().is_none_or(|c| c.is_closed()) {
        let mut client = conn::connect(&shared.options, &shared.describe)?;
        // The lock timeout of every commit on this connection, set once.
        let ms = shared.options.lock_timeout.as_millis().max(1);
        client
            .batch_execute(&format!(
                "SET lock_timeout = '{ms}ms'; \
                 CREATE TEMP TABLE zodiac_stage (oid int8 PRIMARY KEY, data bytea NOT NULL) \
                 ON COMMIT DELETE ROWS"
            ))
            .map_err(|e| conn::failure(&shared.describe, "cannot create the staging table", &e))?;
        *guard = Some(CommitConnection {
            client,
            statements: HashMap::new(),
        });
    }
    Ok(guard)
}

/// Rolls back after a failure, or forgets the connection when it was cut.
pub(crate) fn end_failed(shared: &Shared, guard: &mut CommitGuard) {
    if let Some(client) = guard.as_mut()
        && (client.is_closed() || client.batch_execute("ROLLBACK").is_err())
    {
        log::warn!(
            "{}: the commit connection is gone; the next commit reconnects",
            shared.describe
        );
        **guard = None;
    }
}

/// Refuses oids no `new_oid` of any process handed out.
fn check_allocated(shared: &Shared, writes: &PendingWrites) -> Result<()> {
    let Some(max) = writes
        .stores
        .iter()
        .map(|s| s.oid)
        .filter(|o| *o != Oid::ROOT)
        .max()
    else {
        return Ok(());
    };
    if encode::oid(max).is_none() {
        return Err(Error::UnallocatedOid { oid: max });
    }
    if max.0 < shared.oids.lock().1 {
        return Ok(());
    }
    let high: i64 = conn::with_read(shared, "checking object ids", |c| {
        c.query_one(
            "SELECT CASE WHEN is_called THEN last_value + $1 ELSE last_value END FROM oid_seq",
            &[&OID_BLOCK],
        )
        .map(|r| r.get(0))
    })?;
    match writes
        .stores
        .iter()
        .find(|s| s.oid != Oid::ROOT && s.oid.0 >= high as u64)
    {
        Some(s) => Err(Error::UnallocatedOid { oid: s.oid }),
        None => Ok(()),
    }
}

/// The advisory lock key of `oid` in `schema`: schemas in one database share the
/// key space, so the schema's hash is mixed in (a collision only makes two
/// commits wait for each other).
pub(crate) fn lock_key(schema: &str, oid: Oid) -> i64 {
    let hash = schema.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (oid.0 ^ (hash << 40)) as i64
}

/// The advisory lock requests `(key, exclusive)` in the order they are taken:
/// sorted by key, one request per key, exclusive where any request of the key
/// is. Every committer takes its locks in this one order, so no two wait on
/// each other; a key both stored and checked is locked exclusively once
/// (shared, then exclusive, would deadlock two such transactions).
fn lock_order(mut keys: Vec<(i64, bool)>) -> Vec<(i64, bool)> {
    keys.sort_unstable_by_key(|&(k, exclusive)| (k, !exclusive));
    keys.dedup_by_key(|&mut (k, _)| k);
    keys
}

/// `BEGIN` and the sorted advisory locks: `(oid, exclusive)`.
pub(crate) fn begin_locked(
    shared: &Shared,
    client: &mut CommitConnection,
    oids: &[(Oid, bool)],
) -> Result<()> {
    client
        .batch_execute("BEGIN")
        .map_err(|e| pg_error(shared, "beginning the commit", &e))?;
    let keys = lock_order(
        oids.iter()
            .map(|&(o, x)| (lock_key(&shared.options.schema, o), x))
            .collect(),
    );
    let (keys, exclusive): (Vec<i64>, Vec<bool>) = keys.into_iter().unzip();
    client
        .prepared(
            "SELECT count(CASE WHEN x THEN pg_advisory_xact_lock(k)::text \
             ELSE pg_advisory_xact_lock_shared(k)::text END) FROM unnest($1::int8[], $2::bool[]) AS l(k, x)",
        )
        .and_then(|lock| client.execute(&lock, &[&keys, &exclusive]))
        .map_err(|e| pg_error(shared, "locking the transaction's objects", &e))?;
    Ok(())
}

/// A PostgreSQL failure of the commit path as the caller sees it.
pub(crate) fn pg_error(shared: &Shared, step: &str, e: &postgres::Error) -> Error {
    let what = match e.code() {
        Some(c) if *c == SqlState::LOCK_NOT_AVAILABLE => format!(
            "{step}: timed out after {:?} waiting for objects another process is committing; \
             nothing was committed: retry the transaction",
            shared.options.lock_timeout
        ),
        Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED => {
            format!("{step}: deadlock detected; nothing was committed: retry the transaction")
        }
        _ if conn::is_cut_error(e) => {
            return shared.disconnected(format!(
                "{step}: the connection was cut ({}); nothing was committed: retry the transaction",
                source_text(e)
            ));
        }
        _ => format!("{step} failed: {}; nothing was committed", source_text(e)),
    };
    shared.error(what)
}

/// The vote on `client`: locks, the conflict check with merges, the staging.
fn vote_sql(
    shared: &Shared,
    client: &mut CommitConnection,
    writes: &mut PendingWrites,
    resolver: Option<Resolver<'_>>,
) -> Result<Vec<Oid>> {
    let mut lock_list: Vec<(Oid, bool)> = writes.stores.iter().map(|s| (s.oid, true)).collect();
    lock_list.extend(writes.checks.iter().map(|&(o, _)| (o, false)));
    begin_locked(shared, client, &lock_list)?;
    let rows = current_of(shared, client, writes, resolver.is_some())?;
    let found = conflicts::find(writes, resolver.is_some(), |oid| Ok((rows[&oid].0, oid)))?;
    let merged = conflicts::merge_all(found, |c| {
        let ConflictError { oid, base_tid, .. } = c.conflict;
        Ok(match resolver {
            Some(resolver) if c.stored => {
                let (_, old, committed) = &rows[&oid];
                match (old, committed) {
                    (Some(old), Some(committed)) if base_tid != Tid::ZERO => {
                        resolver(oid, old, committed)
                    }
                    _ => None,
                }
            }
            _ => None,
        })
    })?
    .map_err(Error::from)?;
    let resolved = writes.apply_merges(merged);
    stage(shared, client, writes)?;
    Ok(resolved)
}

/// Each expected oid's current tid, with (base data, committed data) of the
/// stale stores when `with_data`.
type Current = OidMap<(Tid, Option<Vec<u8>>, Option<Vec<u8>>)>;

fn current_of(
    shared: &Shared,
    client: &mut CommitConnection,
    writes: &PendingWrites,
    with_data: bool,
) -> Result<Current> {
    let stores = writes.stores.len();
    let (mut oids, mut expected, mut stored) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (oid, tid)) in writes.expectations().enumerate() {
        oids.push(encode::oid(oid).unwrap_or(-1));
        expected.push(encode::tid(tid));
        stored.push(i < stores);
    }
    let rows = client
        .prepared(
            "SELECT e.oid, coalesce(c.tid, 0), old.data, cur.data \
             FROM unnest($1::int8[], $2::int8[], $3::bool[]) AS e(oid, expected, s) \
             LEFT JOIN current c ON c.oid = e.oid \
             LEFT JOIN revisions old ON $4 AND e.s AND coalesce(c.tid, 0) <> e.expected \
                 AND old.oid = e.oid AND old.tid = e.expected \
             LEFT JOIN revisions cur ON $4 AND e.s AND coalesce(c.tid, 0) <> e.expected \
                 AND cur.oid = e.oid AND cur.tid = c.tid",
        )
        .and_then(|current| client.query(&current, &[&oids, &expected, &stored, &with_data]))
        .map_err(|e| pg_error(shared, "checking for conflicts", &e))?;
    let mut current = Current::default();
    for row in rows {
        let oid = Oid(row.get::<_, i64>(0) as u64);
        let tid = Tid(row.get::<_, i64>(1) as u64);
        let entry = current.entry(oid).or_insert((tid, None, None));
        if let (Some(old), Some(cur)) = (
            row.get::<_, Option<Vec<u8>>>(2),
            row.get::<_, Option<Vec<u8>>>(3),
        ) {
            entry.1 = Some(old);
            entry.2 = Some(cur);
        }
    }
    Ok(current)
}

/// Sends every store's data into `zodiac_stage`, in statements of at most
/// [`STAGE_BYTES_MAX`] bytes.
pub(crate) fn stage(
    shared: &Shared,
    client: &mut CommitConnection,
    writes: &PendingWrites,
) -> Result<()> {
    let records: Vec<(i64, &[u8])> = writes
        .stores
        .iter()
        .map(|s| (encode::oid(s.oid).unwrap_or(-1), s.data.as_slice()))
        .collect();
    stage_records(shared, client, &records)
}

pub(crate) fn stage_records(
    shared: &Shared,
    client: &mut CommitConnection,
    records: &[(i64, &[u8])],
) -> Result<()> {
    let mut start = 0;
    while start < records.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < records.len()
            && (end == start || bytes + records[end].1.len() <= STAGE_BYTES_MAX)
        {
            bytes += records[end].1.len();
            end += 1;
        }
        let (oids, data): (Vec<i64>, Vec<&[u8]>) = records[start..end].iter().copied().unzip();
        client
            .prepared(
                "INSERT INTO zodiac_stage (oid, data) SELECT * FROM unnest($1::int8[], $2::bytea[])",
            )
            .and_then(|insert| client.execute(&insert, &[&oids, &data]))
            .map_err(|e| pg_error(shared, "sending the transaction's data", &e))?;
        start = end;
    }
    Ok(())
}

/// Writes the staged transaction with the tid `greatest(head + 1, at)`; returns
/// (the previous head, the tid, the PostgreSQL transaction id).
pub(crate) fn write_staged(
    shared: &Shared,
    client: &mut CommitConnection,
    at: Tid,
    meta: &TransactionMeta,
) -> Result<(Tid, Tid, i64)> {
    let row = client
        .prepared(
            "WITH n AS (SELECT tid AS old, greatest(tid + 1, $1) AS tid FROM head FOR UPDATE), \
             t AS (INSERT INTO transactions (tid, username, description, extension) \
                   SELECT n.tid, $2, $3, $4 FROM n), \
             r AS (INSERT INTO revisions (oid, tid, prev_tid, data) \
                   SELECT s.oid, n.tid, coalesce(c.tid, 0), s.data FROM zodiac_stage s CROSS JOIN n \
                   LEFT JOIN current c ON c.oid = s.oid), \
             c AS (INSERT INTO current (oid, tid) SELECT s.oid, n.tid FROM zodiac_stage s CROSS JOIN n \
                   ON CONFLICT (oid) DO UPDATE SET tid = excluded.tid), \
             h AS (UPDATE head SET tid = n.tid FROM n) \
             SELECT n.old, n.tid, txid_current(), pg_notify($5, n.tid::text) FROM n",
        )
        .and_then(|write| {
            client.query_one(
                &write,
                &[
                    &encode::tid(at),
                    &meta.user,
                    &meta.description,
                    &encode::extension(&meta.extension),
                    &notify::channel(&shared.options.schema),
                ],
            )
        })
        .map_err(|e| pg_error(shared, "writing the transaction", &e))?;
    Ok((
        Tid(row.get::<_, i64>(0) as u64),
        Tid(row.get::<_, i64>(1) as u64),
        row.get(2),
    ))
}

/// `COMMIT`; when the reply is lost, whether the transaction `xid` committed,
/// asked on a new connection.
pub(crate) fn commit(shared: &Shared, guard: &mut CommitGuard, xid: i64) -> Result<()> {
    let client = guard.as_mut().expect("voted on a connection");
    let Err(e) = client.batch_execute("COMMIT") else {
        return Ok(());
    };
    if !is_cut(&e, client) {
        end_failed(shared, guard);
        return Err(pg_error(shared, "committing", &e));
    }
    **guard = None;
    log::warn!(
        "{}: the connection was cut during COMMIT ({}); asking whether it landed",
        shared.describe,
        source_text(&e)
    );
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        let asked = conn::with_read(shared, "asking whether the commit landed", |c| {
            c.query_one("SELECT txid_status($1)", &[&xid])
                .map(|r| r.get(0))
        });
        // PostgreSQL restarting, or out of reach for a moment: its answer is
        // waited for, so that a commit that landed is reported as one (a claim
        // reported failed when it landed leaves its job held by no one).
        let status: Option<String> = match asked {
            Ok(status) => status,
            Err(ask) if ask.is_disconnected() && started.elapsed() < UNREACHABLE_WAIT => {
                if pause == Duration::from_millis(100) {
                    log::warn!(
                        "{}: PostgreSQL does not answer ({ask}); waiting to learn whether the \
                         commit landed",
                        shared.describe
                    );
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(ASK_PAUSE_MAX);
                continue;
            }
            Err(_) => return Err(cut_unknown(shared, &e)),
        };
        match status.as_deref() {
            Some("committed") => return Ok(()),
            Some("in progress") if started.elapsed() < RESOLVE_WAIT => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Some("aborted") | None => return Err(pg_error(shared, "committing", &e)),
            _ => return Err(cut_unknown(shared, &e)),
        }
    }
}

fn cut_unknown(shared: &Shared, e: &postgres::Error) -> Error {
    shared.disconnected(format!(
        "the connection was cut during COMMIT ({}) and PostgreSQL could not be asked whether it \
         landed; the transaction may or may not have committed: check the object's history",
        source_text(e)
    ))
}

impl StorageTransaction for PgTransaction {
    fn store(&mut self, oid: Oid, base_tid: Tid, data: Vec<u8>) -> Result<()> {
        if self.voted.is_some() {
            return Err(Error::AlreadyVoted);
        }
        let (next, end) = *self.shared.oids.lock();
        if oid != Oid::ROOT && (encode::oid(oid).is_none() || (oid.0 >= next && oid.0 < end)) {
            return Err(Error::UnallocatedOid { oid });
        }
        self.writes.store(oid, base_tid, data)
    }

    fn check_current(&mut self, oid: Oid, tid: Tid) -> Result<()> {
        if self.voted.is_some() {
            return Err(Error::AlreadyVoted);
        }
        self.writes.check_current(oid, tid);
        Ok(())
    }

    fn vote(&mut self) -> Result<()> {
        self.vote_with(None).map(drop)
    }

    fn vote_resolving(&mut self, resolver: Resolver<'_>) -> Result<Option<Vec<Oid>>> {
        self.vote_with(Some(resolver)).map(Some)
    }

    fn merges_conflicts(&self) -> bool {
        true
    }

    fn finish(mut self: Box<Self>) -> Result<Tid> {
        if self.voted.is_none() {
            self.vote()?;
        }
        let mut guard = self.voted.take().expect("voted above");
        let shared = Arc::clone(&self.shared);
        let gate = shared.gate.read();
        if let Err(e) = shared.check_open() {
            end_failed(&shared, &mut guard);
            return Err(e);
        }
        let client = guard.as_mut().expect("voted on a connection");
        let (previous, tid, xid) = match write_staged(&shared, client, Tid::now(), &self.meta) {
            Ok(written) => written,
            Err(e) => {
                end_failed(&shared, &mut guard);
                return Err(e);
            }
        };
        commit(&shared, &mut guard, xid)?;
        drop(guard);
        // Durable now: a failure to publish is not a failure of the commit (the
        // poller publishes it shortly).
        if let Err(e) = notify::publish_commit(&shared, previous, tid, self.writes.oids()) {
            log::warn!("{e}; commit {tid} is durable and the poller will report it");
        }
        drop(gate);
        Ok(tid)
    }

    fn abort(self: Box<Self>) {}
}

impl Drop for PgTransaction {
    fn drop(&mut self) {
        if let Some(mut guard) = self.voted.take() {
            end_failed(&self.shared, &mut guard);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::lock_order;

    #[test]
    fn lock_order_takes_each_key_once_exclusive_where_any_request_is() {
        let got = lock_order(vec![
            (5, false),
            (3, true),
            (5, true),
            (1, false),
            (3, false),
            (1, false),
            (5, false),
        ]);
        assert_eq!(got, vec![(1, false), (3, true), (5, true)]);
    }
}
