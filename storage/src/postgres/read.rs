//! Reads: each one autocommit statement at a snapshot tid (no PostgreSQL
//! transaction held open), clamped to `last_tid()` so nothing not yet published
//! is visible; and oid allocation in blocks from `oid_seq`.

use super::Shared;
use super::conn::with_read;
use super::encode;
use postgres::types::Type;

use super::schema::OID_BLOCK;
use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::meta::{ChangeInfo, Revision, RevisionInfo, TransactionInfo, TransactionMeta};
use crate::storage::TransactionIter;

/// Transactions one page of `transactions()` reads.
const TRANSACTIONS_PAGE: i64 = 500;

/// The next oid: from the local block, taking a new block when it is used up.
pub(crate) fn new_oid(shared: &Shared) -> Result<Oid> {
    let mut oids = shared.oids.lock();
    if oids.0 >= oids.1 {
        let start: i64 = with_read(shared, "allocating object ids", |c| {
            c.query_one("SELECT nextval('oid_seq')", &[])
                .map(|r| r.get(0))
        })?;
        if start <= 0 || start > i64::MAX - OID_BLOCK {
            return Err(Error::OidsExhausted);
        }
        *oids = (start as u64, (start + OID_BLOCK) as u64);
    }
    let oid = Oid(oids.0);
    oids.0 += 1;
    Ok(oid)
}

pub(crate) fn load(shared: &Shared, oid: Oid, snapshot: Tid) -> Result<Revision> {
    let last = shared.last_tid();
    let snapshot = snapshot.min(last);
    let Some(key) = encode::oid(oid) else {
        return Err(Error::NoSuchObject { oid });
    };
    let epoch = {
        let mut cache = shared.cache.lock();
        if snapshot <= cache.last_tid
            && let Some(revision) = cache.get(oid, snapshot)
        {
            return Ok(revision);
        }
        cache.epoch
    };
    let found = with_read(shared, "loading an object", |c| {
        // Typed parameters: one round trip, no separate prepare.
        let rows = c.query_typed(
            "SELECT tid, data, (SELECT min(tid) FROM revisions WHERE oid = $1) \
             FROM (SELECT 1) one LEFT JOIN LATERAL (SELECT tid, data FROM revisions \
             WHERE oid = $1 AND tid <= $2 ORDER BY tid DESC LIMIT 1) r ON true",
            &[(&key, Type::INT8), (&encode::tid(snapshot), Type::INT8)],
        )?;
        Ok(rows.first().map(|r| {
            (
                r.get::<_, Option<i64>>(0),
                r.get::<_, Option<Vec<u8>>>(1),
                r.get::<_, Option<i64>>(2),
            )
        }))
    })?;
    match found {
        Some((Some(tid), Some(data), _)) => {
            let revision = Revision {
                tid: Tid(tid as u64),
                data,
            };
            shared
                .cache
                .lock()
                .insert_loaded(oid, snapshot, epoch, &revision);
            Ok(revision)
        }
        Some((_, _, Some(first))) if (first as u64) <= last.0 => {
            Err(Error::NotFoundAtSnapshot { oid, snapshot })
        }
        _ => Err(Error::NoSuchObject { oid }),
    }
}

pub(crate) fn load_revision(shared: &Shared, oid: Oid, tid: Tid) -> Result<Vec<u8>> {
    let last = shared.last_tid();
    let Some(key) = encode::oid(oid) else {
        return Err(Error::NoSuchObject { oid });
    };
    let (data, exists) = with_read(shared, "loading a revision", |c| {
        let row = c.query_one(
            "SELECT (SELECT data FROM revisions WHERE oid = $1 AND tid = $2 AND tid <= $3), \
             EXISTS (SELECT 1 FROM revisions WHERE oid = $1 AND tid <= $3)",
            &[&key, &encode::tid(tid), &encode::tid(last)],
        )?;
        Ok((row.get::<_, Option<Vec<u8>>>(0), row.get::<_, bool>(1)))
    })?;
    match (data, exists) {
        (Some(data), _) => Ok(data),
        (None, true) => Err(Error::NoSuchRevision { oid, tid }),
        (None, false) => Err(Error::NoSuchObject { oid }),
    }
}

pub(crate) fn history(shared: &Shared, oid: Oid, limit: usize) -> Result<Vec<RevisionInfo>> {
    let last = shared.last_tid();
    let Some(key) = encode::oid(oid) else {
        return Err(Error::NoSuchObject { oid });
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let (revisions, exists) = with_read(shared, "reading an object's history", |c| {
        let rows = c.query(
            "SELECT tid, length(data)::int8 FROM revisions WHERE oid = $1 AND tid <= $2 \
             ORDER BY tid DESC LIMIT $3",
            &[&key, &encode::tid(last), &limit],
        )?;
        let revisions: Vec<RevisionInfo> = rows
            .iter()
            .map(|r| RevisionInfo {
                tid: Tid(r.get::<_, i64>(0) as u64),
                size: r.get::<_, i64>(1) as u64,
            })
            .collect();
        let exists = !revisions.is_empty()
            || c.query_one(
                "SELECT EXISTS (SELECT 1 FROM revisions WHERE oid = $1 AND tid <= $2)",
                &[&key, &encode::tid(last)],
            )?
            .get::<_, bool>(0);
        Ok((revisions, exists))
    })?;
    if exists {
        Ok(revisions)
    } else {
        Err(Error::NoSuchObject { oid })
    }
}

/// Committed transactions `from..=to` (clamped to `last_tid()`), read a page at a
/// time as the iterator advances.
pub(crate) fn transactions<'a>(
    shared: &'a Shared,
    from: Tid,
    to: Tid,
) -> Result<TransactionIter<'a>> {
    let to = to.min(shared.last_tid());
    let mut next = from;
    let mut page: std::vec::IntoIter<TransactionInfo> = Vec::new().into_iter();
    let mut done = from > to;
    Ok(Box::new(std::iter::from_fn(move || {
        loop {
            if let Some(t) = page.next() {
                return Some(Ok(t));
            }
            if done {
                return None;
            }
            match transactions_page(shared, next, to) {
                Ok(txns) => {
                    done = (txns.len() as i64) < TRANSACTIONS_PAGE;
                    match txns.last() {
                        Some(t) if t.tid < to => next = Tid(t.tid.0 + 1),
                        _ => done = true,
                    }
                    page = txns.into_iter();
                }
                Err(e) => {
                    done = true;
                    return Some(Err(e));
                }
            }
        }
    })))
}

fn transactions_page(shared: &Shared, from: Tid, to: Tid) -> Result<Vec<TransactionInfo>> {
    let rows = with_read(shared, "reading transactions", |c| {
        c.query(
            "SELECT t.tid, t.username, t.description, t.extension, \
             coalesce(array_agg(r.oid ORDER BY r.oid) FILTER (WHERE r.oid IS NOT NULL), '{}'), \
             coalesce(array_agg(length(r.data)::int8 ORDER BY r.oid) FILTER (WHERE r.oid IS NOT NULL), '{}') \
             FROM transactions t LEFT JOIN revisions r ON r.tid = t.tid \
             WHERE t.tid >= $1 AND t.tid <= $2 GROUP BY t.tid ORDER BY t.tid LIMIT $3",
            &[&encode::tid(from), &encode::tid(to), &TRANSACTIONS_PAGE],
        )
    })?;
    rows.iter()
        .map(|r| {
            let tid = Tid(r.get::<_, i64>(0) as u64);
            let extension = encode::decode_extension(r.get(3)).map_err(|what| {
                shared.error(format!("transaction {tid} has a damaged extension: {what}"))
            })?;
            let oids: Vec<i64> = r.get(4);
            let sizes: Vec<i64> = r.get(5);
            Ok(TransactionInfo {
                tid,
                meta: TransactionMeta {
                    user: r.get(1),
                    description: r.get(2),
                    extension,
                },
                changes: oids
                    .iter()
                    .zip(&sizes)
                    .map(|(&oid, &size)| ChangeInfo {
                        oid: Oid(oid as u64),
                        size: size as u64,
                    })
                    .collect(),
            })
        })
        .collect()
}
