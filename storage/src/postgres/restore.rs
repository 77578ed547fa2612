//! `restore`: a transaction copied from another storage, written with its own
//! tid through the commit path's staging and write steps, without a conflict
//! check, and its oids counted as allocated.

use std::sync::Arc;

use super::schema::OID_BLOCK;
use super::transaction::{
    begin_locked, commit, commit_connection, end_failed, pg_error, stage_records, write_staged,
};
use super::{Shared, encode, notify};
use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::meta::TransactionMeta;

pub(crate) fn restore(
    shared: &Arc<Shared>,
    tid: Tid,
    meta: &TransactionMeta,
    records: &[(Oid, Vec<u8>)],
) -> Result<()> {
    let mut keyed = Vec::with_capacity(records.len());
    for (oid, data) in records {
        let key = encode::oid(*oid).ok_or(Error::UnallocatedOid { oid: *oid })?;
        keyed.push((key, data.as_slice()));
    }
    // A record of an oid given twice keeps the last, as a store does.
    let mut seen = std::collections::HashSet::new();
    let mut unique: Vec<(i64, &[u8])> = keyed
        .into_iter()
        .rev()
        .filter(|(k, _)| seen.insert(*k))
        .collect();
    unique.reverse();
    let mut guard = commit_connection(shared)?;
    let gate = shared.gate.read();
    shared.check_open()?;
    let client = guard.as_mut().expect("connected above");
    let locks: Vec<(Oid, bool)> = unique.iter().map(|&(k, _)| (Oid(k as u64), true)).collect();
    let written = begin_locked(shared, client, &locks)
        .and_then(|()| stage_records(shared, client, &unique))
        .and_then(|()| allocate_through(shared, client, unique.iter().map(|r| r.0).max()))
        .and_then(|()| write_staged(shared, client, tid, meta));
    let (previous, written_tid, xid) = match written {
        Ok(w) if w.1 == tid => w,
        Ok((previous, ..)) => {
            end_failed(shared, &mut guard);
            return Err(Error::TidNotIncreasing {
                tid,
                last: previous,
            });
        }
        Err(e) => {
            end_failed(shared, &mut guard);
            return Err(e);
        }
    };
    commit(shared, &mut guard, xid)?;
    drop(guard);
    skip_cached_oids_through(shared, unique.iter().map(|r| r.0 as u64).max());
    let oids = unique.iter().map(|&(k, _)| Oid(k as u64)).collect();
    if let Err(e) = notify::publish_commit(shared, previous, written_tid, oids) {
        log::warn!("{e}; restored transaction {tid} is durable and the poller will report it");
    }
    drop(gate);
    Ok(())
}

/// Moves this storage's cached block of oids past `max`: the sequence was
/// moved past it, but a block fetched before the restore may still hold
/// restored oids. (Another process's cached block is not reached; a create
/// there of a restored oid fails as a conflict, never overwriting it.)
fn skip_cached_oids_through(shared: &Shared, max: Option<u64>) {
    let Some(max) = max else { return };
    let mut oids = shared.oids.lock();
    if oids.0 <= max {
        oids.0 = (max + 1).min(oids.1);
    }
}

/// Moves `oid_seq` past `max` so no `new_oid` hands out a restored oid.
fn allocate_through(
    shared: &Shared,
    client: &mut postgres::Client,
    max: Option<i64>,
) -> Result<()> {
    let Some(max) = max.filter(|&m| m > 0) else {
        return Ok(());
    };
    client
        .query(
            "SELECT setval('oid_seq', $1::int8 + 1, false) FROM oid_seq \
             WHERE (CASE WHEN is_called THEN last_value + $2 ELSE last_value END) <= $1::int8",
            &[&max, &OID_BLOCK],
        )
        .map_err(|e| pg_error(shared, "allocating the copied object ids", &e))?;
    Ok(())
}
