//! Zodiac's storage: an append-only, crash-safe store of object revisions with
//! MVCC snapshots, per-object write-conflict detection and CRC-checked records.
//!
//! The [`Storage`] trait is the contract; [`FileStorage`] keeps revisions in one
//! append-only file (format in `docs/format.md`), [`MemoryStorage`] in memory, and
//! [`ClientStorage`] talks to a [`Server`] that serves one of them over TCP
//! (protocol in `docs/protocol.md`).
//!
//! ```
//! use zodiac_storage::{MemoryStorage, Storage, Tid, TransactionMeta};
//!
//! let storage = MemoryStorage::new();
//! let oid = storage.new_oid()?;
//! let mut txn = storage.begin(TransactionMeta::described("first"))?;
//! txn.store(oid, Tid::ZERO, b"hello".to_vec())?;
//! let tid = txn.finish()?;
//! assert_eq!(storage.load(oid, tid)?.data, b"hello");
//! # Ok::<(), zodiac_storage::Error>(())
//! ```

#![warn(missing_docs)]

mod backoff;
mod conflicts;
mod error;
mod file;
#[doc(hidden)]
pub mod fuzzing;
mod ids;
pub mod io;
mod memory;
mod meta;
mod net;
mod notify;
pub mod offline;
mod pending;
mod pool;
#[cfg(feature = "postgres")]
mod postgres;
mod redact;
mod reports;
mod storage;

pub use backoff::{Backoff, jittered};
pub use error::{ConflictError, Error, Result};
pub use file::{Durability, FileOptions, FileStorage, format};
pub use ids::{Oid, OidHasher, OidMap, Tid};
pub use memory::MemoryStorage;
pub use meta::{
    ChangeInfo, CommitEvent, CopiedTransaction, DESCRIPTION_BYTES_MAX, EXTENSION_BYTES_MAX,
    EXTENSION_KEY_BYTES_MAX, Revision, RevisionInfo, TransactionInfo, TransactionMeta,
    USER_BYTES_MAX,
};
pub use net::{
    ClientOptions, ClientStorage, ClientTls, MergeFn, PREFETCHES_IN_FLIGHT_MAX, ReferenceReader,
    Server, ServerOptions, ServerTls, certificate_fingerprint, protocol,
};
pub use notify::{CommitSubscription, SUBSCRIPTION_EVENTS_MAX};
pub use pending::{RECORD_BYTES_MAX, TRANSACTION_OBJECTS_MAX};
pub use pool::{PoolTask, ThreadPool};
#[cfg(feature = "postgres")]
pub use postgres::{
    PgOptions, PgStorage, SCHEMA_VERSION as PG_SCHEMA_VERSION, VerifyReport as PgVerifyReport,
    init as pg_init,
};
pub use redact::url_without_password;
pub use reports::{PackReport, References};
pub use storage::{Resolver, Storage, StorageTransaction, TransactionIter};
