//! How a client storage connects and behaves: [`ClientOptions`], with a named
//! limit and a default for everything that can grow or wait.

use std::time::Duration;

use crate::net::tls::ClientTls;

/// How a client storage connects and behaves. Every limit is named and has a default.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub(crate) wait_timeout: Duration,
    pub(crate) cache_bytes_max: usize,
    pub(crate) read_only: bool,
    pub(crate) token: Option<Vec<u8>>,
    pub(crate) connect_timeout: Duration,
    pub(crate) reconnect_delay_min: Duration,
    pub(crate) reconnect_delay_max: Duration,
    pub(crate) ping_interval: Duration,
    pub(crate) ping_timeout: Duration,
    pub(crate) cache_file: Option<std::path::PathBuf>,
    pub(crate) tls: Option<ClientTls>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            wait_timeout: Duration::from_secs(30),
            cache_bytes_max: 64 << 20,
            read_only: false,
            token: None,
            connect_timeout: Duration::from_secs(5),
            reconnect_delay_min: Duration::from_millis(50),
            reconnect_delay_max: Duration::from_secs(5),
            ping_interval: Duration::from_secs(5),
            ping_timeout: Duration::from_secs(30),
            cache_file: None,
            tls: None,
        }
    }
}

impl ClientOptions {
    /// The defaults: writable, no token, no cache file, every limit at its
    /// documented default.
    pub fn new() -> Self {
        Self::default()
    }
    /// How long a call waits for a connection when there is none, and how long
    /// `connect` tries before giving up (default: 30 s).
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = timeout;
        self
    }
    /// Bytes of object data the cache may hold (default: 64 MiB).
    pub fn cache_bytes_max(mut self, bytes: usize) -> Self {
        self.cache_bytes_max = bytes;
        self
    }
    /// Never commit; the server refuses this connection's commits too (default: false).
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }
    /// The shared secret of a server that requires one (default: none).
    pub fn token(mut self, token: Option<Vec<u8>>) -> Self {
        self.token = token;
        self
    }
    /// Longest wait for one TCP connect and handshake (default: 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
    /// After `interval` without a frame from the server the client pings it; after
    /// `timeout` without one it counts the connection as lost (a server that vanished
    /// without closing it) and reconnects. Writes that block for `timeout` fail too.
    /// Defaults: 5 s and 30 s.
    pub fn ping(mut self, interval: Duration, timeout: Duration) -> Self {
        self.ping_interval = interval;
        self.ping_timeout = timeout.max(interval);
        self
    }
    /// Keeps the object cache in this file between runs (default: none): loaded at
    /// connect and used when the server still serves the same data (its identity
    /// matches and the catch-up from the file's tid works), saved at close. One file
    /// per client process; see docs/protocol.md, "The persistent cache file".
    pub fn cache_file(mut self, path: Option<std::path::PathBuf>) -> Self {
        self.cache_file = path;
        self
    }
    /// Connect over TLS, checking the server this way (default: none: plain TCP,
    /// or what a `tls://HOST:PORT?ca=FILE` / `?fingerprint=SHA256` address says,
    /// which takes precedence).
    pub fn tls(mut self, tls: Option<ClientTls>) -> Self {
        self.tls = tls;
        self
    }
    /// First and longest pause between reconnect attempts (defaults: 50 ms, 5 s).
    pub fn reconnect_delay(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_delay_min = min;
        self.reconnect_delay_max = max.max(min);
        self
    }
}
