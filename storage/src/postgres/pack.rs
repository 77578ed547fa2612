//! `pack`: drops the history before the pack time and, with a reference reader,
//! the objects unreachable from the root, in batches, taking the commit lock
//! (the `head` row) only for the final rescue-and-delete step.
//!
//! Steps:
//! 1. History: for each oid range, delete every revision older than the
//!    object's newest revision at the pack tid; that one's `prev_tid` becomes 0.
//! 2. References (GC only): fill `refs` of every revision left without them,
//!    through the reader, a batch at a time (references are only known above the
//!    storage, so commits store NULL and the pack computes them).
//! 3. Reachability (GC only), in SQL: from the root, every object with a
//!    revision after the pack tid, along `refs`; the others are candidates.
//! 4. Under the `head` row lock: references of revisions committed since step 3
//!    rescue candidates (transitively); the rest are deleted with their rows in
//!    `current`.
//! 5. Transactions before the pack tid that no revision names are deleted.
//!
//! Invariant: an advisory session lock makes packs of one schema exclusive.
//! Limit (documented): a commit after step 4 that refers to an object found
//! unreachable, from a snapshot taken before the pack, refers to a deleted object.

use postgres::Client;

use super::conn::{self, source_text};
use super::{Shared, encode};
use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::reports::{PackReport, References};

/// Oids one history batch covers.
const OID_RANGE: i64 = 10_000;
/// Revisions whose references one batch computes.
const REFS_BATCH: i64 = 500;

type PgResult<T> = std::result::Result<T, postgres::Error>;

pub(crate) fn pack(
    shared: &Shared,
    pack_time: Tid,
    references: Option<References<'_>>,
) -> Result<PackReport> {
    let mut client = conn::connect(&shared.options, &shared.describe)?;
    let fail = |e: postgres::Error| {
        shared.error(format!(
            "pack failed: {}; nothing committed was lost, pack again",
            source_text(&e)
        ))
    };
    let key = super::transaction::lock_key(&shared.options.schema, Oid(u64::MAX >> 1));
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .map_err(fail)?
        .get(0);
    if !locked {
        return Err(shared.error("a pack is already running; wait for it to finish"));
    }
    let result = run(shared, &mut client, pack_time, references);
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&key]);
    match result {
        Ok(Ok(report)) => Ok(report),
        Ok(Err(e)) => Err(e),
        Err(e) => Err(fail(e)),
    }
}

fn totals(client: &mut Client) -> PgResult<(u64, u64, u64)> {
    let row = client.query_one(
        "SELECT (SELECT count(*) FROM transactions), count(*), coalesce(sum(length(data)), 0)::int8 FROM revisions",
        &[],
    )?;
    Ok((
        row.get::<_, i64>(0) as u64,
        row.get::<_, i64>(1) as u64,
        row.get::<_, i64>(2) as u64,
    ))
}

fn run(
    shared: &Shared,
    client: &mut Client,
    pack_time: Tid,
    references: Option<References<'_>>,
) -> PgResult<Result<PackReport>> {
    let pack_tid = pack_time.min(shared.last_tid());
    let p = encode::tid(pack_tid);
    let (transactions_before, revisions_before, bytes_before) = totals(client)?;
    prune_history(client, p)?;
    let mut objects_removed = 0;
    if let Some(references) = references {
        if let Err(e) = fill_refs(client, references, None)? {
            return Ok(Err(e));
        }
        match collect(client, p, references)? {
            Ok(removed) => objects_removed = removed,
            Err(e) => return Ok(Err(e)),
        }
    }
    client.execute(
        "DELETE FROM transactions t WHERE t.tid < $1 AND NOT EXISTS (SELECT 1 FROM revisions r WHERE r.tid = t.tid)",
        &[&p],
    )?;
    let (transactions_after, revisions_after, bytes_after) = totals(client)?;
    log::info!(
        "{}: packed to {pack_tid}: {revisions_before} revisions to {revisions_after}, {objects_removed} objects removed",
        shared.describe
    );
    Ok(Ok(PackReport {
        pack_tid,
        bytes_before,
        bytes_after,
        transactions_before,
        transactions_after,
        revisions_before,
        revisions_after,
        objects_removed,
        ..PackReport::default()
    }))
}

/// Step 1, an oid range per statement (each its own autocommit transaction).
fn prune_history(client: &mut Client, p: i64) -> PgResult<()> {
    let row = client.query_one("SELECT min(oid), max(oid) FROM revisions", &[])?;
    let (Some(lo), Some(hi)) = (row.get::<_, Option<i64>>(0), row.get::<_, Option<i64>>(1)) else {
        return Ok(());
    };
    let mut start = lo;
    while start <= hi {
        let end = start.saturating_add(OID_RANGE);
        client.batch_execute("BEGIN")?;
        client.execute(
            "WITH k AS (SELECT oid, max(tid) AS keep FROM revisions \
             WHERE oid >= $1 AND oid < $2 AND tid <= $3 GROUP BY oid) \
             DELETE FROM revisions r USING k WHERE r.oid = k.oid AND r.tid < k.keep",
            &[&start, &end, &p],
        )?;
        client.execute(
            "UPDATE revisions r SET prev_tid = 0 FROM (SELECT oid, min(tid) AS first FROM revisions \
             WHERE oid >= $1 AND oid < $2 GROUP BY oid) f \
             WHERE r.oid = f.oid AND r.tid = f.first AND r.prev_tid <> 0",
            &[&start, &end],
        )?;
        client.batch_execute("COMMIT")?;
        start = end;
    }
    Ok(())
}

/// Step 2: computes `refs` where it is NULL (only for tids above `after` when given).
fn fill_refs(
    client: &mut Client,
    references: References<'_>,
    after: Option<i64>,
) -> PgResult<Result<()>> {
    let after = after.unwrap_or(i64::MIN);
    loop {
        let rows = client.query(
            "SELECT oid, tid, data FROM revisions WHERE refs IS NULL AND tid > $1 ORDER BY oid, tid LIMIT $2",
            &[&after, &REFS_BATCH],
        )?;
        if rows.is_empty() {
            return Ok(Ok(()));
        }
        let (mut oids, mut tids, mut refs) = (Vec::new(), Vec::new(), Vec::new());
        for row in &rows {
            let oid: i64 = row.get(0);
            let found = match references(row.get(2)) {
                Ok(found) => found,
                Err(what) => {
                    return Ok(Err(Error::PackReferences {
                        oid: Oid(oid as u64),
                        what,
                    }));
                }
            };
            let list: Vec<i64> = found.into_iter().filter_map(encode::oid).collect();
            oids.push(oid);
            tids.push(row.get::<_, i64>(1));
            refs.push(format!(
                "{{{}}}",
                list.iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        }
        client.execute(
            "UPDATE revisions r SET refs = u.refs::int8[] FROM unnest($1::int8[], $2::int8[], $3::text[]) \
             AS u(oid, tid, refs) WHERE r.oid = u.oid AND r.tid = u.tid",
            &[&oids, &tids, &refs],
        )?;
    }
}

/// Steps 3 and 4: the number of objects removed.
fn collect(client: &mut Client, p: i64, references: References<'_>) -> PgResult<Result<u64>> {
    client.batch_execute(
        "CREATE TEMP TABLE IF NOT EXISTS zodiac_garbage (oid int8 PRIMARY KEY); TRUNCATE zodiac_garbage",
    )?;
    let seen: i64 = client.query_one("SELECT tid FROM head", &[])?.get(0);
    client.execute(
        "WITH RECURSIVE reach(oid) AS ( \
             SELECT 0::int8 UNION SELECT DISTINCT oid FROM revisions WHERE tid > $1 \
             UNION SELECT unnest(r.refs) FROM reach JOIN revisions r ON r.oid = reach.oid) \
         INSERT INTO zodiac_garbage SELECT c.oid FROM current c \
         WHERE NOT EXISTS (SELECT 1 FROM reach WHERE reach.oid = c.oid)",
        &[&p],
    )?;
    client.batch_execute("BEGIN")?;
    client.query("SELECT tid FROM head FOR UPDATE", &[])?;
    if let Err(e) = fill_refs(client, references, Some(seen))? {
        client.batch_execute("ROLLBACK")?;
        return Ok(Err(e));
    }
    client.execute(
        "WITH RECURSIVE rescued(oid) AS ( \
             SELECT DISTINCT unnest(refs) FROM revisions WHERE tid > $1 \
             UNION SELECT DISTINCT oid FROM revisions WHERE tid > $1 \
             UNION SELECT unnest(r.refs) FROM rescued JOIN revisions r ON r.oid = rescued.oid \
                 JOIN zodiac_garbage g ON g.oid = r.oid) \
         DELETE FROM zodiac_garbage g USING rescued WHERE g.oid = rescued.oid",
        &[&seen],
    )?;
    client.execute(
        "DELETE FROM revisions r USING zodiac_garbage g WHERE r.oid = g.oid",
        &[],
    )?;
    let removed = client.execute(
        "DELETE FROM current c USING zodiac_garbage g WHERE c.oid = g.oid",
        &[],
    )?;
    client.batch_execute("COMMIT")?;
    Ok(Ok(removed))
}
