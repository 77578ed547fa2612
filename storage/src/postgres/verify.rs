//! `verify`: checks the schema's invariants at one snapshot (a read-only
//! REPEATABLE READ transaction): `head` is the greatest tid, `current` names
//! every object's newest revision, each revision's `prev_tid` is the revision
//! before it (0 for the oldest kept), every revision belongs to a transaction,
//! and no computed reference names a missing object.

use postgres::IsolationLevel;

use super::Shared;
use super::conn::{self, source_text};
use crate::error::Result;

/// What [`PgStorage::verify`](super::PgStorage::verify) found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Transactions in the schema.
    pub transactions: u64,
    /// Object revisions in the schema.
    pub revisions: u64,
    /// Objects (rows of `current`).
    pub objects: u64,
    /// Each broken invariant, described; empty when the schema is sound.
    pub problems: Vec<String>,
}

/// Each check: the problem it names and a query counting its offending rows.
const CHECKS: &[(&str, &str)] = &[
    (
        "the head row is not the greatest transaction tid",
        "SELECT count(*) FROM head WHERE tid <> coalesce((SELECT max(tid) FROM transactions), 0)",
    ),
    (
        "objects whose current row does not name their newest revision",
        "SELECT count(*) FROM current c FULL JOIN \
         (SELECT oid, max(tid) AS tid FROM revisions GROUP BY oid) r ON r.oid = c.oid \
         WHERE c.tid IS DISTINCT FROM r.tid",
    ),
    (
        "revisions whose prev_tid is not the revision before them",
        "SELECT count(*) FROM (SELECT prev_tid, \
         lag(tid, 1, 0::int8) OVER (PARTITION BY oid ORDER BY tid) AS before FROM revisions) x \
         WHERE prev_tid <> before",
    ),
    (
        "revisions of no transaction",
        "SELECT count(*) FROM revisions r WHERE NOT EXISTS \
         (SELECT 1 FROM transactions t WHERE t.tid = r.tid)",
    ),
    (
        "references to objects that do not exist",
        "SELECT count(*) FROM (SELECT DISTINCT unnest(refs) AS oid FROM revisions \
         WHERE refs IS NOT NULL) x WHERE NOT EXISTS (SELECT 1 FROM current c WHERE c.oid = x.oid)",
    ),
    (
        "schema rows other than exactly one",
        "SELECT abs(count(*) - 1) FROM zodiac_schema",
    ),
];

pub(crate) fn verify(shared: &Shared) -> Result<VerifyReport> {
    let mut client = conn::connect(&shared.options, &shared.describe)?;
    let fail = |e: postgres::Error| shared.error(format!("verify failed: {}", source_text(&e)));
    let mut txn = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(fail)?;
    let counts = txn
        .query_one(
            "SELECT (SELECT count(*) FROM transactions), (SELECT count(*) FROM revisions), \
             (SELECT count(*) FROM current)",
            &[],
        )
        .map_err(fail)?;
    let mut report = VerifyReport {
        transactions: counts.get::<_, i64>(0) as u64,
        revisions: counts.get::<_, i64>(1) as u64,
        objects: counts.get::<_, i64>(2) as u64,
        problems: Vec::new(),
    };
    for (problem, query) in CHECKS {
        let bad: i64 = txn.query_one(*query, &[]).map_err(fail)?.get(0);
        if bad != 0 {
            report.problems.push(format!("{problem}: {bad}"));
        }
    }
    txn.commit().map_err(fail)?;
    Ok(report)
}
