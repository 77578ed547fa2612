//! A PostgreSQL backend of the [`Storage`] trait: many processes share one
//! history-preserving database through PostgreSQL (schema and commit path in
//! `docs/postgres.md`).
//!
//! Invariants:
//! - Every table lives in one PostgreSQL schema, named by [`PgOptions::schema`];
//!   every connection sets its `search_path` to it, so one database can hold
//!   several Zodiac databases side by side.
//! - A read is one autocommit statement at a snapshot tid: no PostgreSQL
//!   transaction is ever held open between calls.
//! - Commits are serialized by the row lock on `head`, taken at finish: tids are
//!   handed out and made visible in the same order, so a reader polling
//!   `tid > last seen` never skips a commit.
//! - `last_tid()` only reports a tid after its commit event was published (see
//!   `notify.rs`), and only moves forward.
//! - Once `close` has returned, nothing commits through this storage.

mod conn;
mod encode;
mod notify;
mod pack;
mod read;
mod restore;
mod schema;
mod transaction;
mod verify;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::meta::{Revision, RevisionInfo, TransactionMeta};
use crate::notify::{CommitSubscription, Notifier};
use crate::reports::{PackReport, References};
use crate::storage::{Storage, StorageTransaction, TransactionIter};

pub use schema::{SCHEMA_VERSION, init};
pub use verify::VerifyReport;

/// How a [`PgStorage`] connects and behaves.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// A libpq-style connection URL, e.g. `postgres://user@host:5432/dbname`.
    pub url: String,
    /// The PostgreSQL schema holding the tables (lowercase letters, digits and `_`,
    /// starting with a letter or `_`); `zodiac` by default.
    pub schema: String,
    /// Create the schema's tables when they are missing (otherwise opening an
    /// uninitialized schema fails, naming `zodiac pg init`).
    pub create: bool,
    /// Longest wait for the locks of objects another process is committing.
    pub lock_timeout: Duration,
    /// How often the invalidation poller looks for commits when no notification
    /// woke it (a safety net: NOTIFY normally wakes it at once).
    pub poll_interval: Duration,
    /// Bytes of current revisions this process caches (as a client storage does:
    /// every commit, of any process, invalidates its objects before `last_tid`
    /// reports it); 0 caches nothing.
    pub cache_bytes_max: usize,
}

impl PgOptions {
    /// Options for `url` with the defaults: schema `zodiac`, created when missing,
    /// a 10 s lock timeout, polling every second, a 64 MiB object cache.
    pub fn new(url: impl Into<String>) -> PgOptions {
        PgOptions {
            url: url.into(),
            schema: "zodiac".to_string(),
            create: true,
            lock_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            cache_bytes_max: 64 << 20,
        }
    }

    /// Options for a URL that may name its schema in a `schema=NAME` query
    /// parameter (`postgres://u@h/db?schema=shop`), which is taken out of the URL
    /// given to PostgreSQL; other parameters stay. Without it: schema `zodiac`.
    pub fn from_url(url: &str) -> PgOptions {
        let Some((base, query)) = url.split_once('?') else {
            return PgOptions::new(url);
        };
        let mut schema = None;
        let rest: Vec<&str> = query
            .split('&')
            .filter(|p| match p.strip_prefix("schema=") {
                Some(name) => {
                    schema = Some(name.to_string());
                    false
                }
                None => !p.is_empty(),
            })
            .collect();
        let url = if rest.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let options = PgOptions::new(url);
        match schema {
            Some(schema) => options.schema(schema),
            None => options,
        }
    }

    /// These options with another schema.
    pub fn schema(mut self, schema: impl Into<String>) -> PgOptions {
        self.schema = schema.into();
        self
    }
}

/// A storage kept in PostgreSQL tables, shared by every process that opens it.
pub struct PgStorage {
    shared: Arc<Shared>,
    poller: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// What the storage, its transactions and its poller share.
pub(crate) struct Shared {
    pub options: PgOptions,
    pub describe: String,
    pub identity: u64,
    pub pool: conn::Pool,
    /// The commit path's connection, held from vote to finish or abort.
    pub commit: Arc<Mutex<Option<transaction::CommitConnection>>>,
    /// Oids handed out locally: `[next, end)` of the current block.
    pub oids: Mutex<(u64, u64)>,
    /// Current revisions loaded, kept current by the published commits.
    pub cache: Mutex<crate::net::cache::Cache>,
    pub last_tid: AtomicU64,
    /// The newest tid whose event was published; held while publishing.
    pub published: Mutex<Tid>,
    pub notifier: Notifier,
    pub closed: AtomicBool,
    /// Finish holds it shared around COMMIT, close exclusively while closing.
    pub gate: RwLock<()>,
}

impl Shared {
    pub fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    pub fn last_tid(&self) -> Tid {
        Tid(self.last_tid.load(Ordering::Acquire))
    }

    /// A PostgreSQL failure as the storage reports it.
    pub fn error(&self, what: impl std::fmt::Display) -> Error {
        Error::Postgres {
            target: self.describe.clone(),
            what: what.to_string(),
        }
    }

    /// A lost (or impossible) connection to the database, as the storage reports it.
    pub fn disconnected(&self, what: impl std::fmt::Display) -> Error {
        Error::PostgresDisconnected {
            target: self.describe.clone(),
            what: what.to_string(),
        }
    }
}

impl PgStorage {
    /// Opens (creating it first when `options.create` and it is missing) the
    /// Zodiac schema `options.schema` of the database at `options.url`.
    pub fn open(options: PgOptions) -> Result<PgStorage> {
        schema::check_name(&options.schema)?;
        let describe = conn::describe(&options);
        let mut client = conn::connect(&options, &describe)?;
        let info = schema::open(&mut client, &options, &describe)?;
        let mut cache = crate::net::cache::Cache::new(options.cache_bytes_max);
        cache.reset(info.head);
        let shared = Arc::new(Shared {
            describe,
            identity: info.identity,
            pool: conn::Pool::default(),
            commit: Arc::new(Mutex::new(None)),
            oids: Mutex::new((0, 0)),
            cache: Mutex::new(cache),
            last_tid: AtomicU64::new(info.head.0),
            published: Mutex::new(info.head),
            notifier: Notifier::default(),
            closed: AtomicBool::new(false),
            gate: RwLock::new(()),
            options,
        });
        shared.pool.put(client);
        let poller = notify::start(&shared)?;
        Ok(PgStorage {
            shared,
            poller: Mutex::new(Some(poller)),
        })
    }

    /// Objects and bytes in this storage's object cache.
    pub fn cache_usage(&self) -> (usize, usize) {
        let cache = self.shared.cache.lock();
        (cache.len(), cache.bytes())
    }

    /// Checks the schema's invariants (see [`VerifyReport`]).
    pub fn verify(&self) -> Result<VerifyReport> {
        self.shared.check_open()?;
        verify::verify(&self.shared)
    }
}

impl Drop for PgStorage {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

impl Storage for PgStorage {
    fn describe(&self) -> String {
        self.shared.describe.clone()
    }

    fn last_tid(&self) -> Tid {
        self.shared.last_tid()
    }

    fn new_oid(&self) -> Result<Oid> {
        self.shared.check_open()?;
        read::new_oid(&self.shared)
    }

    fn load(&self, oid: Oid, snapshot: Tid) -> Result<Revision> {
        self.shared.check_open()?;
        read::load(&self.shared, oid, snapshot)
    }

    fn load_revision(&self, oid: Oid, tid: Tid) -> Result<Vec<u8>> {
        self.shared.check_open()?;
        read::load_revision(&self.shared, oid, tid)
    }

    fn history(&self, oid: Oid, limit: usize) -> Result<Vec<RevisionInfo>> {
        self.shared.check_open()?;
        read::history(&self.shared, oid, limit)
    }

    fn transactions(&self, from: Tid, to: Tid) -> Result<TransactionIter<'_>> {
        self.shared.check_open()?;
        read::transactions(&self.shared, from, to)
    }

    fn begin(&self, meta: TransactionMeta) -> Result<Box<dyn StorageTransaction>> {
        self.shared.check_open()?;
        meta.validate()?;
        Ok(Box::new(transaction::PgTransaction::new(
            Arc::clone(&self.shared),
            meta,
        )))
    }

    fn subscribe(&self) -> CommitSubscription {
        self.shared.notifier.subscribe()
    }

    fn close(&self) -> Result<()> {
        {
            let _gate = self.shared.gate.write();
            self.shared.closed.store(true, Ordering::Release);
            self.shared.notifier.close();
        }
        if let Some(poller) = self.poller.lock().take() {
            let _ = poller.join();
        }
        self.shared.pool.clear();
        Ok(())
    }

    fn identity(&self) -> u64 {
        self.shared.identity
    }

    fn restore(&self, tid: Tid, meta: &TransactionMeta, records: &[(Oid, Vec<u8>)]) -> Result<()> {
        self.shared.check_open()?;
        meta.validate()?;
        restore::restore(&self.shared, tid, meta, records)
    }

    fn pack(&self, pack_time: Tid, references: Option<References<'_>>) -> Result<PackReport> {
        self.shared.check_open()?;
        let report = pack::pack(&self.shared, pack_time, references);
        // The garbage collection may have deleted cached objects: start afresh.
        // (Other processes' caches keep theirs until a commit writes them; they
        // were unreachable, so only a load by oid finds them.)
        let mut cache = self.shared.cache.lock();
        let last = cache.last_tid;
        cache.reset(last);
        report
    }
}

#[cfg(test)]
mod tests {
    use super::PgOptions;

    #[test]
    fn a_url_names_its_schema_in_a_parameter_taken_out_of_it() {
        let o = PgOptions::from_url("postgres://u@h:5432/db?schema=shop&sslmode=disable");
        assert_eq!(
            (o.url.as_str(), o.schema.as_str()),
            ("postgres://u@h:5432/db?sslmode=disable", "shop")
        );
        let o = PgOptions::from_url("postgres://u@h/db?schema=s1");
        assert_eq!(
            (o.url.as_str(), o.schema.as_str()),
            ("postgres://u@h/db", "s1")
        );
        let o = PgOptions::from_url("postgres://u@h/db");
        assert_eq!(
            (o.url.as_str(), o.schema.as_str()),
            ("postgres://u@h/db", "zodiac")
        );
    }
}
