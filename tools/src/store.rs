//! Opening a store named on the command line: a data file path (embedded),
//! `tcp://HOST:PORT` (a running `zodiac server`; a trailing `/` is allowed), or
//! `postgres://URL` (a PostgreSQL database, schema `zodiac` or `?schema=NAME`).
//!
//! Invariant: a data file opened for writing is opened once; while another
//! process holds its writer lock, the open is retried only for as long as
//! `--wait-lock` asked ([`Connect::lock_wait`]), then fails with the lock's error.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use zodiac_storage::{ClientOptions, ClientStorage, FileOptions, FileStorage, Storage};

/// Opens the data file at `path`.
pub fn open(path: &Path, options: FileOptions) -> Result<FileStorage> {
    naming(open_waiting_for_lock(path, options, None), path)
}

/// Opens the data file at `path` for a command that takes `--wait-lock`: while
/// another process holds its writer lock, tries again until `lock_wait` has
/// passed. A lock still held then is reported with what the flag can do.
pub fn open_waiting(
    path: &Path,
    options: FileOptions,
    lock_wait: Option<Duration>,
) -> Result<FileStorage> {
    match open_waiting_for_lock(path, options, lock_wait) {
        Err(e @ zodiac_storage::Error::Locked { .. }) => Err(anyhow::Error::new(LockHeld {
            locked: e,
            lock_wait,
        })),
        result => naming(result, path),
    }
}

/// Another process held the data file's writer lock, through `--wait-lock` if
/// one was given: the open's error, with what the flag can do.
#[derive(Debug)]
pub struct LockHeld {
    locked: zodiac_storage::Error,
    lock_wait: Option<Duration>,
}

impl std::fmt::Display for LockHeld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.lock_wait {
            None => write!(
                f,
                "{}; or let this command wait its turn with --wait-lock DUR (e.g. 10s)",
                self.locked
            ),
            Some(wait) => write!(f, "{} (still held after --wait-lock {wait:?})", self.locked),
        }
    }
}

impl std::error::Error for LockHeld {}

/// `result`'s error, led by `path` unless its text names the path already (an
/// open's errors do: "P: opening the data file failed: ..."), so that the error
/// line names the file once.
pub fn naming<T>(result: zodiac_storage::Result<T>, path: &Path) -> Result<T> {
    result.map_err(|e| {
        let shown = path.display().to_string();
        if e.to_string().contains(&shown) {
            anyhow::Error::new(e)
        } else {
            anyhow::Error::new(e).context(shown)
        }
    })
}

/// How a command reaches the server, when STORE names one.
#[derive(Clone, Debug, Default)]
pub struct Connect {
    /// The file holding the shared secret (`--token-file`).
    pub token_file: Option<PathBuf>,
    /// How long to keep trying to reach the server, at connect and after a drop.
    pub wait_timeout: Option<Duration>,
    /// How long to retry opening a data file whose writer lock another process
    /// holds (`--wait-lock`); `None`: fail at once.
    pub lock_wait: Option<Duration>,
}

/// How often an open waiting for a writer lock tries again.
const LOCK_RETRY_INTERVAL: Duration = Duration::from_millis(50);

/// Reads a token file: its content without surrounding whitespace, never empty.
pub fn read_token(file: &Path) -> Result<Vec<u8>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the token file {}", file.display()))?;
    let token = text.trim();
    if token.is_empty() {
        bail!("the token file {} is empty", file.display());
    }
    Ok(token.as_bytes().to_vec())
}

/// Whether STORE names a server.
pub fn is_server(store: &str) -> bool {
    store.starts_with("tcp://") || store.starts_with("tls://")
}

/// Whether STORE names a PostgreSQL database.
pub fn is_postgres(store: &str) -> bool {
    store.starts_with("postgres://") || store.starts_with("postgresql://")
}

/// A server store's name without its optional trailing `/` (`tcp://h:1/` is
/// `tcp://h:1`); any other store name unchanged.
fn server_name(store: &str) -> &str {
    match store.strip_suffix('/') {
        Some(name) if is_server(store) => name,
        _ => store,
    }
}

/// Checks the form of a store name: `tcp://HOST:PORT` (optionally ending in `/`),
/// or a path (anything without `://`).
fn check_store_name(store: &str) -> Result<()> {
    const FORMS: &str =
        "a data file path, tcp://HOST:PORT of a `zodiac server`, or postgres://USER@HOST/DB";
    match server_name(store).split_once("://") {
        None => Ok(()),
        Some(("postgres" | "postgresql", _)) => Ok(()),
        Some(("tcp" | "tls", address)) => {
            // tls://HOST:PORT?ca=FILE or ?fingerprint=SHA256: the client checks the rest.
            let address = address.split('?').next().unwrap_or(address);
            let address = address.strip_suffix('/').unwrap_or(address);
            let port = address.rsplit_once(':').map(|(_, port)| port);
            if port.is_none_or(|p| p.parse::<u16>().is_err()) {
                bail!(
                    "{store}: a server store needs a port: tcp://HOST:PORT (e.g. tcp://127.0.0.1:8100)"
                );
            }
            Ok(())
        }
        Some((scheme, _)) => bail!(
            "{}: unknown store kind {scheme:?}; name {FORMS}",
            zodiac_storage::url_without_password(store)
        ),
    }
}

/// Connects to the server STORE names, with `connect`'s token and wait.
pub fn connect_to(store: &str, connect: &Connect) -> Result<ClientStorage> {
    check_store_name(store)?;
    let store = server_name(store);
    let mut options = ClientOptions::new();
    if let Some(file) = &connect.token_file {
        options = options.token(Some(read_token(file)?));
    }
    if let Some(wait) = connect.wait_timeout {
        options = options.wait_timeout(wait);
    }
    client(store, options)
}

fn client(store: &str, options: ClientOptions) -> Result<ClientStorage> {
    ClientStorage::connect(store, options).map_err(|e| match e {
        zodiac_storage::Error::Disconnected { reason, .. } => anyhow::Error::new(Unreachable {
            store: store.to_string(),
            reason,
        }),
        e => anyhow::Error::new(e).context(format!("connecting to {store}")),
    })
}

/// No server answered at a server store's address within the wait: the one
/// connect failure that trying again later can cure (a refusal cannot).
#[derive(Debug)]
pub struct Unreachable {
    store: String,
    reason: String,
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot reach {}: {} (is `zodiac server` running there?)",
            self.store, self.reason
        )
    }
}

impl std::error::Error for Unreachable {}

/// The data file STORE names, which must exist.
fn must_exist(store: &str) -> Result<&Path> {
    let path = Path::new(store);
    if !path.exists() {
        bail!(
            "{store}: no such data file (name an existing data file, or tcp://HOST:PORT of a \
             running `zodiac server`)"
        );
    }
    Ok(path)
}

/// Opens STORE for reading and writing: the data file (taking its writer lock,
/// created if `create`), or a client storage connected to the server.
pub fn open_store(store: &str, connect: &Connect, create: bool) -> Result<Arc<dyn Storage>> {
    check_store_name(store)?;
    if is_server(store) {
        return Ok(Arc::new(connect_to(store, connect)?));
    }
    if is_postgres(store) {
        return crate::pg::open(store, create);
    }
    if connect.token_file.is_some() {
        bail!("--token-file is for server stores (tcp://HOST:PORT); {store} is a data file");
    }
    let path = Path::new(store);
    if !create {
        must_exist(store)?;
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = parent.filter(|d| !d.is_dir()) {
        bail!("{store}: the directory {} does not exist", dir.display());
    }
    let file = open_waiting(path, FileOptions::new().create(create), connect.lock_wait)?;
    Ok(Arc::new(file))
}

/// Opens the data file for writing; while another process holds its writer lock,
/// tries again until `lock_wait` has passed (then returns the lock's error).
fn open_waiting_for_lock(
    path: &Path,
    options: FileOptions,
    lock_wait: Option<Duration>,
) -> zodiac_storage::Result<FileStorage> {
    let deadline = lock_wait.map(|d| Instant::now() + d);
    loop {
        match FileStorage::open(path, options.clone()) {
            Err(zodiac_storage::Error::Locked { .. })
                if deadline.is_some_and(|d| Instant::now() < d) =>
            {
                std::thread::sleep(LOCK_RETRY_INTERVAL);
            }
            result => return result,
        }
    }
}

/// Opens a data file for reading only (no writer lock: a worker or server may hold
/// it), or connects to the server.
pub fn open_store_read_only(store: &str, connect: &Connect) -> Result<Arc<dyn Storage>> {
    check_store_name(store)?;
    if is_server(store) || is_postgres(store) {
        return open_store(store, connect, false);
    }
    let path = must_exist(store)?;
    let file = open(path, FileOptions::new().read_only(true))?;
    Ok(Arc::new(file))
}
