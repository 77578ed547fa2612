//! Client/server: a [`Server`] serves one storage over TCP to many
//! [`ClientStorage`]s, which implement the same `Storage` trait. The protocol, the
//! client cache's ordering contract and the disconnect semantics are specified in
//! `docs/protocol.md`.
//!
//! The layers, each using only those below it: [`protocol`] (frames, messages and
//! the wire forms of values), `transport` (a connection's halves, plain or TLS)
//! with `tls` (its configuration), `handshake` (both halves of a connection's
//! opening), then `server` and `client` (with the client's `cache`, `cache_file` and
//! `revisions` beside it).
//!
//! ```
//! use std::sync::Arc;
//! use zodiac_storage::{
//!     ClientOptions, ClientStorage, MemoryStorage, Server, ServerOptions, Storage, Tid,
//!     TransactionMeta,
//! };
//!
//! let served: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
//! let server = Server::start(served, "127.0.0.1:0", ServerOptions::new())?;
//! let client = ClientStorage::connect(&server.local_addr().to_string(), ClientOptions::new())?;
//! let oid = client.new_oid()?;
//! let mut txn = client.begin(TransactionMeta::described("over the wire"))?;
//! txn.store(oid, Tid::ZERO, b"hello".to_vec())?;
//! let tid = txn.finish()?;
//! // finish returns once this client applied its own commit's invalidation.
//! assert_eq!(client.last_tid(), tid);
//! assert_eq!(client.load(oid, tid)?.data, b"hello");
//! client.close()?;
//! server.shutdown();
//! # Ok::<(), zodiac_storage::Error>(())
//! ```

pub(crate) mod cache;
pub mod cache_file;
mod client;
mod handshake;
pub mod protocol;
mod revisions;
mod server;
mod tls;
mod transport;

pub use client::{ClientOptions, ClientStorage, PREFETCHES_IN_FLIGHT_MAX};
pub use server::{MergeFn, ReferenceReader, Server, ServerOptions};
pub use tls::{ClientTls, ServerTls, certificate_fingerprint};
