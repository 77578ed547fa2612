//! The schema: its tables (byte by byte in `docs/postgres.md`), creating them,
//! and refusing a schema that is missing or of a newer version.
//!
//! Invariants:
//! - `zodiac_schema` has exactly one row, naming the version and the identity.
//! - `head` has exactly one row; its tid is the greatest tid in `transactions`
//!   (or 0 when there is none).
//! - Creating takes a transaction-scoped advisory lock, so two processes opening
//!   a fresh schema at once create it once.

use postgres::Client;

use super::PgOptions;
use super::conn::{self, source_text};
use crate::error::{Error, Result};
use crate::ids::Tid;

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i32 = 1;

/// Oids one `nextval` of `oid_seq` hands out (the sequence's increment).
pub(crate) const OID_BLOCK: i64 = 64;

/// The advisory lock key (two-int4 form) serializing schema creation.
const CREATE_LOCK: (i32, i32) = (0x7a6f_6469, 1);

const TABLES: &str = "
CREATE TABLE zodiac_schema (
    version int4 NOT NULL,
    identity int8 NOT NULL,
    created timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE transactions (
    tid int8 PRIMARY KEY,
    username text NOT NULL,
    description text NOT NULL,
    extension bytea NOT NULL
);
CREATE TABLE revisions (
    oid int8 NOT NULL,
    tid int8 NOT NULL,
    prev_tid int8 NOT NULL,
    data bytea NOT NULL,
    refs int8[],
    PRIMARY KEY (oid, tid)
);
CREATE INDEX revisions_tid ON revisions (tid);
CREATE TABLE current (
    oid int8 PRIMARY KEY,
    tid int8 NOT NULL
);
CREATE TABLE head (
    one bool PRIMARY KEY DEFAULT true CHECK (one),
    tid int8 NOT NULL
);
INSERT INTO head (tid) VALUES (0);
";

/// What opening found.
pub(crate) struct SchemaInfo {
    pub identity: u64,
    pub head: Tid,
}

/// Refuses a schema name that is not a plain lowercase identifier.
pub(crate) fn check_name(schema: &str) -> Result<()> {
    let mut chars = schema.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    if first_ok
        && schema.len() <= 50
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        Ok(())
    } else {
        Err(Error::Postgres {
            target: format!("schema {schema:?}"),
            what: "a schema name is 1 to 50 lowercase letters, digits or '_', not starting \
                   with a digit; choose another"
                .to_string(),
        })
    }
}

/// Creates the schema and its tables at `options.url` unless they exist; returns
/// whether it created them. What `zodiac pg init URL` runs.
pub fn init(options: &PgOptions) -> Result<bool> {
    check_name(&options.schema)?;
    let describe = conn::describe(options);
    let mut client = conn::connect(options, &describe)?;
    create(&mut client, options, &describe)
}

fn create(client: &mut Client, options: &PgOptions, describe: &str) -> Result<bool> {
    let fail = |e: postgres::Error| Error::Postgres {
        target: describe.to_string(),
        what: format!("cannot create the schema's tables: {}", source_text(&e)),
    };
    let mut txn = client.transaction().map_err(fail)?;
    txn.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&CREATE_LOCK.0, &CREATE_LOCK.1],
    )
    .map_err(fail)?;
    if has_tables(&mut txn, &options.schema).map_err(fail)? {
        return Ok(false);
    }
    txn.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", options.schema))
        .map_err(fail)?;
    txn.batch_execute(TABLES).map_err(fail)?;
    txn.batch_execute(&format!(
        "CREATE SEQUENCE oid_seq START 1 INCREMENT {OID_BLOCK}"
    ))
    .map_err(fail)?;
    let identity = loop {
        let id = uuid::Uuid::new_v4().as_u64_pair().0 & (i64::MAX as u64);
        if id != 0 {
            break id as i64;
        }
    };
    txn.execute(
        "INSERT INTO zodiac_schema (version, identity) VALUES ($1, $2)",
        &[&SCHEMA_VERSION, &identity],
    )
    .map_err(fail)?;
    txn.commit().map_err(fail)?;
    log::info!("{describe}: created the Zodiac tables (schema version {SCHEMA_VERSION})");
    Ok(true)
}

fn has_tables(
    client: &mut impl postgres::GenericClient,
    schema: &str,
) -> Result<bool, postgres::Error> {
    let row = client.query_one(
        "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = 'zodiac_schema')",
        &[&schema],
    )?;
    Ok(row.get(0))
}

/// Checks (creating when allowed) the schema and reads its identity and head.
pub(crate) fn open(client: &mut Client, options: &PgOptions, describe: &str) -> Result<SchemaInfo> {
    let fail = |e: postgres::Error| Error::Postgres {
        target: describe.to_string(),
        what: format!("cannot read the schema: {}", source_text(&e)),
    };
    if !has_tables(client, &options.schema).map_err(fail)? {
        if !options.create {
            return Err(Error::Postgres {
                target: describe.to_string(),
                what: "holds no Zodiac tables: create them with `zodiac pg init URL`".to_string(),
            });
        }
        create(client, options, describe)?;
    }
    let row = client
        .query_one(
            "SELECT version, identity, (SELECT tid FROM head) FROM zodiac_schema",
            &[],
        )
        .map_err(fail)?;
    let version: i32 = row.get(0);
    if version > SCHEMA_VERSION {
        return Err(Error::Postgres {
            target: describe.to_string(),
            what: format!(
                "was written by a newer Zodiac (schema version {version}; this one reads up to \
                 {SCHEMA_VERSION}): upgrade zodiac"
            ),
        });
    }
    let identity: i64 = row.get(1);
    let head: i64 = row.get(2);
    Ok(SchemaInfo {
        identity: identity as u64,
        head: Tid(head as u64),
    })
}
