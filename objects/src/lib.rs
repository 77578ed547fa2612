//! Zodiac's persistence layer: typed persistent objects, connections and
//! transactions over any [`zodiac_storage::Storage`].
//!
//! - A [`Database`] wraps a storage and pools [`Connection`]s; each connection has its
//!   own object cache and runs one [`Transaction`] at a time. A transaction reads one
//!   snapshot from begin to commit; other committers' changes reach a connection's
//!   cache only when its next transaction begins.
//! - A persistent type is a plain serde type with a stable name ([`Persistent`],
//!   or the [`persistent!`] macro). Objects refer to each other with [`PRef<T>`],
//!   stored as an oid and loaded lazily. The root object (oid 0) is a [`Root`] of
//!   named entries.
//! - Records are postcard inside an envelope that names the type and lists the
//!   referenced oids ([`record`], specified in `docs/objects-format.md`), so pack/GC
//!   and tools read references with [`record::referenced_oids`] alone.
//! - Only changed objects are written, each with the revision it was read at, so the
//!   storage detects conflicts per object. [`Connection::transact`] retries conflicts;
//!   a type may merge concurrent changes ([`Persistent::resolve_conflict`], with
//!   [`Persistent::MERGES`] set), as the built-in [`Counter`] and [`Root`] do. The
//!   storage merges them in its vote; over a server, the server merges the types
//!   it registered ([`Merges`]) and the committer merges the rest.
//! - Large collections: [`BTree`] is a sorted map whose nodes and buckets are
//!   separate objects, so a change writes one bucket and concurrent changes to
//!   different keys of one bucket merge.
//!
//! # Limits
//!
//! Per connection, the cache holds at most [`DatabaseOptions::cache_objects_max`]
//! objects and [`DatabaseOptions::cache_bytes_max`] record bytes; the pool keeps at
//! most [`DatabaseOptions::pool_size_max`] idle connections; `transact` makes at most
//! [`RetryPolicy::attempts_max`] attempts; one commit resolves at most
//! [`RESOLVE_ROUNDS_MAX`] conflicts; a type name is at most
//! [`record::TYPE_NAME_BYTES_MAX`] bytes.
//!
//! # Schema evolution
//!
//! postcard stores a struct as its fields in order, without names. The rule that
//! works: **add new fields only at the end of the persistent type's own struct, each
//! with `#[serde(default)]`**; old records then read with the defaults. Do not
//! remove, reorder or change the type of fields, and do not add fields to structs
//! nested inside it (only the top level may end early); add enum variants only at the
//! end. A record written by a newer version of a type (more fields) is refused by an
//! older reader rather than silently losing the fields. For anything else, use a new
//! `TYPE_NAME` and migrate.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use serde::{Deserialize, Serialize};
//! use zodiac_objects::{Database, PRef, Persistent};
//! use zodiac_storage::MemoryStorage;
//!
//! #[derive(Clone, Debug, Serialize, Deserialize)]
//! struct Account {
//!     owner: String,
//!     balance: i64,
//! }
//! impl Persistent for Account {
//!     const TYPE_NAME: &'static str = "bank.Account";
//! }
//!
//! let db = Database::open(Arc::new(MemoryStorage::new()))?;
//! let mut conn = db.connection();
//!
//! // Create an account and name it in the root.
//! conn.transact(|tx| {
//!     let acct = tx.add(Account { owner: "ann".into(), balance: 10 })?;
//!     tx.set_root_entry("ann", acct)
//! })?;
//!
//! // Change it; `transact` retries if another committer got there first.
//! let balance = conn.transact(|tx| {
//!     let acct: PRef<Account> = tx.root_entry("ann")?.expect("created above");
//!     tx.modify(&acct, |a| a.balance += 5)?;
//!     Ok(tx.get(&acct)?.balance)
//! })?;
//! assert_eq!(balance, 15);
//! # Ok::<(), zodiac_objects::Error>(())
//! ```

#![warn(missing_docs)]

pub mod btree;
mod cache;
mod codec;
mod connection;
mod counter;
mod database;
mod error;
mod merge;
mod persistent;
mod pref;
pub mod record;
mod transaction;

pub use btree::BTree;
pub use cache::CacheStats;
pub use codec::{DecodeError, decode_value};
pub use connection::{Connection, TransactError};
pub use counter::Counter;
pub use database::{CommitStats, Database, DatabaseOptions, RetryPolicy};
pub use error::{Error, Result};
pub use merge::{Merges, merge_identity};
pub use persistent::{Persistent, Root};
pub use pref::{PREF_SERDE_NAME, PRef};
pub use transaction::{CONFLICT_VISIBLE_WAIT_MS_MAX, RESOLVE_ROUNDS_MAX, Savepoint, Transaction};
