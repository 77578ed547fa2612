//! How a server runs: [`ServerOptions`], with a named limit and a default for
//! everything that can grow, and the two functions the layers above lend it (a
//! reference reader for packs with garbage collection, a merge function for
//! commits).

use std::sync::Arc;
use std::time::Duration;

use crate::ids::Oid;
use crate::net::tls::ServerTls;

/// Reads the oids an object revision refers to, for a pack with garbage collection
/// (the objects layer's `record::referenced_oids`; the storage cannot read records).
pub type ReferenceReader =
    Arc<dyn Fn(&[u8]) -> std::result::Result<Vec<Oid>, String> + Send + Sync>;

/// Merges a conflicting store at commit (the objects layer's registered merge
/// functions): `(identity, old, committed, mine)` → the merged record, or `None`
/// when the changes do not merge. `identity` is what the client named for the
/// store (`StorageTransaction::store_mergeable`); `old` is the revision the store
/// was based on, `committed` the newest one, `mine` the stored data. Called under
/// the storage's commit lock: it must be quick and must not call the storage.
pub type MergeFn = Arc<dyn Fn(&str, &[u8], &[u8], &[u8]) -> Option<Vec<u8>> + Send + Sync>;

/// The default of [`ServerOptions::client_memory_bytes_max`]: 256 MiB.
pub(crate) const CLIENT_MEMORY_BYTES_MAX_DEFAULT: usize = 256 << 20;

/// How a server runs. Every limit is named and has a default.
#[derive(Clone)]
pub struct ServerOptions {
    pub(crate) read_only: bool,
    pub(crate) token: Option<Vec<u8>>,
    pub(crate) read_only_token: Option<Vec<u8>>,
    pub(crate) connections_max: usize,
    pub(crate) handshakes_max: usize,
    pub(crate) handshakes_per_address_max: usize,
    pub(crate) invalidation_history: usize,
    pub(crate) send_queue_bytes_max: usize,
    pub(crate) write_timeout: Duration,
    pub(crate) handshake_timeout: Duration,
    pub(crate) transaction_bytes_max: u64,
    pub(crate) idle_timeout: Duration,
    pub(crate) client_memory_bytes_max: usize,
    pub(crate) client_memory_wait: Duration,
    pub(crate) references: Option<ReferenceReader>,
    pub(crate) merge: Option<MergeFn>,
    pub(crate) tls: Option<ServerTls>,
}

impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("read_only", &self.read_only)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field(
                "read_only_token",
                &self.read_only_token.as_ref().map(|_| "<set>"),
            )
            .field("connections_max", &self.connections_max)
            .field("handshakes_max", &self.handshakes_max)
            .field(
                "handshakes_per_address_max",
                &self.handshakes_per_address_max,
            )
            .field("invalidation_history", &self.invalidation_history)
            .field("send_queue_bytes_max", &self.send_queue_bytes_max)
            .field("write_timeout", &self.write_timeout)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("transaction_bytes_max", &self.transaction_bytes_max)
            .field("idle_timeout", &self.idle_timeout)
            .field("client_memory_bytes_max", &self.client_memory_bytes_max)
            .field("client_memory_wait", &self.client_memory_wait)
            .field("references", &self.references.as_ref().map(|_| "<set>"))
            .field("merge", &self.merge.as_ref().map(|_| "<set>"))
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            read_only: false,
            token: None,
            read_only_token: None,
            connections_max: 1000,
            handshakes_max: 64,
            handshakes_per_address_max: 32,
            invalidation_history: 100,
            send_queue_bytes_max: 64 << 20,
            write_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(2),
            transaction_bytes_max: 1 << 30,
            idle_timeout: Duration::from_secs(120),
            client_memory_bytes_max: CLIENT_MEMORY_BYTES_MAX_DEFAULT,
            client_memory_wait: Duration::from_secs(2),
            references: None,
            merge: None,
            tls: None,
        }
    }
}

impl ServerOptions {
    /// The defaults: writable, no token, every limit at its documented default.
    pub fn new() -> Self {
        Self::default()
    }
    /// Refuse every commit and oid allocation (default: false).
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }
    /// Require clients to prove they know this shared secret (default: none).
    pub fn token(mut self, token: Option<Vec<u8>>) -> Self {
        self.token = token;
        self
    }
    /// A second secret, which lets a client read but not write: its commits,
    /// oid allocations, packs and restores are refused, saying so (default: none).
    /// With it set and no `token`, no client can write.
    pub fn read_only_token(mut self, token: Option<Vec<u8>>) -> Self {
        self.read_only_token = token;
        self
    }
    /// Most authenticated connections served at once; more are refused after
    /// their handshake (default: 1000). Connections still in their handshake do
    /// not count: they have their own limit, `handshakes_max`.
    pub fn connections_max(mut self, n: usize) -> Self {
        self.connections_max = n;
        self
    }
    /// Most connections in their handshake (not yet authenticated) at once
    /// (default: 64); a new one over it closes the one that has waited longest.
    pub fn handshakes_max(mut self, n: usize) -> Self {
        self.handshakes_max = n.max(1);
        self
    }
    /// Most connections in their handshake from one IP address (default: 32); a
    /// new one over it closes that address's that has waited longest.
    pub fn handshakes_per_address_max(mut self, n: usize) -> Self {
        self.handshakes_per_address_max = n.max(1);
        self
    }
    /// Transactions kept for reconnecting clients to catch up (default: 100).
    pub fn invalidation_history(mut self, n: usize) -> Self {
        self.invalidation_history = n;
        self
    }
    /// Bytes queued for one client before it counts as stalled and is disconnected
    /// (default: 64 MiB).
    pub fn send_queue_bytes_max(mut self, bytes: usize) -> Self {
        self.send_queue_bytes_max = bytes;
        self
    }
    /// Longest a write to a client may block before it is disconnected (default: 30 s).
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }
    /// Most bytes of data one transaction may store before its vote; the server holds
    /// them in memory until then (default: 1 GiB).
    pub fn transaction_bytes_max(mut self, bytes: u64) -> Self {
        self.transaction_bytes_max = bytes;
        self
    }
    /// Longest a connection may send nothing before it counts as gone and is closed
    /// (default: 120 s). Client storages ping a silent server every `ping_interval`
    /// (default 5 s), which keeps their connections alive; keep this well above it.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }
    /// How a `Pack` request with garbage collection reads an object revision's
    /// references (default: none, and such packs are refused; packs without garbage
    /// collection work either way).
    pub fn references(mut self, references: Option<ReferenceReader>) -> Self {
        self.references = references;
        self
    }
    /// How a `Commit` merges conflicting stores that name a merge identity (default:
    /// none: every conflict goes back to the client, which merges and retries, one
    /// round trip more each time). With it a hot object (a counter, a queue's
    /// bucket) merges under the commit lock, as an embedded storage does.
    pub fn merge(mut self, merge: Option<MergeFn>) -> Self {
        self.merge = merge;
        self
    }
    /// Most bytes the server holds for all its clients together: partial frames
    /// (counted as their bytes arrive), the stores of transactions not yet finished
    /// and send queues (default: 256 MiB). When it is reached a connection's reader
    /// stops reading (the client's sends wait) for up to `client_memory_wait`; then
    /// the frame is refused: a store fails its transaction, a request gets an
    /// error, and the client is told what to do. Keep it at least twice the
    /// largest record stored, so one such store always fits.
    pub fn client_memory_bytes_max(mut self, bytes: usize) -> Self {
        self.client_memory_bytes_max = bytes;
        self
    }
    /// Longest a connection's reader waits for memory for clients to be freed
    /// before it refuses the frame (default: 2 s).
    pub fn client_memory_wait(mut self, wait: Duration) -> Self {
        self.client_memory_wait = wait;
        self
    }
    /// Serve over TLS with this certificate and key (default: none, plain TCP):
    /// every connection then starts with a TLS handshake, within the handshake
    /// timeout; clients connect with `tls://HOST:PORT`.
    pub fn tls(mut self, tls: Option<ServerTls>) -> Self {
        self.tls = tls;
        self
    }
    /// Longest a new connection may take to finish the handshake (default: 2 s: it
    /// takes two small frames and one round trip).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }
}
