//! The `server` store: a file store served on 127.0.0.1 by an in-process
//! `zodiac_storage::Server`, used through a `ClientStorage` (workloads.md's W6).
//!
//! Invariant: closing the served store closes the client, stops the server and closes
//! the file store, in that order; reopening starts all three again, so the client's
//! cache is cold after a reopen.

use std::sync::{Arc, Mutex};

use zodiac_storage::{
    ClientOptions, ClientStorage, CommitSubscription, Oid, Result, Revision, RevisionInfo, Server,
    ServerOptions, Storage, StorageTransaction, Tid, TransactionIter, TransactionMeta,
};

pub struct Served {
    client: ClientStorage,
    /// Taken by close.
    server: Mutex<Option<Server>>,
    file: Arc<dyn Storage>,
}

impl Served {
    /// Serves `file` on a free port of 127.0.0.1 and connects one client to it.
    pub fn start(file: Arc<dyn Storage>) -> Result<Served> {
        let server = Server::start(Arc::clone(&file), "127.0.0.1:0", ServerOptions::new())?;
        let client =
            ClientStorage::connect(&server.local_addr().to_string(), ClientOptions::new())?;
        Ok(Served {
            client,
            server: Mutex::new(Some(server)),
            file,
        })
    }
}

impl Storage for Served {
    fn describe(&self) -> String {
        self.client.describe()
    }
    fn last_tid(&self) -> Tid {
        self.client.last_tid()
    }
    fn new_oid(&self) -> Result<Oid> {
        self.client.new_oid()
    }
    fn load(&self, oid: Oid, snapshot: Tid) -> Result<Revision> {
        self.client.load(oid, snapshot)
    }
    fn load_revision(&self, oid: Oid, tid: Tid) -> Result<Vec<u8>> {
        self.client.load_revision(oid, tid)
    }
    fn history(&self, oid: Oid, limit: usize) -> Result<Vec<RevisionInfo>> {
        self.client.history(oid, limit)
    }
    fn transactions(&self, from: Tid, to: Tid) -> Result<TransactionIter<'_>> {
        self.client.transactions(from, to)
    }
    fn begin(&self, meta: TransactionMeta) -> Result<Box<dyn StorageTransaction>> {
        self.client.begin(meta)
    }
    fn subscribe(&self) -> CommitSubscription {
        self.client.subscribe()
    }
    fn close(&self) -> Result<()> {
        self.client.close()?;
        let server = self.server.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(server) = server {
            server.shutdown();
        }
        self.file.close()
    }
}

/// W6 with client processes: the file store `file` is served on 127.0.0.1 and
/// `clients` processes (the harness binary, in client mode) each commit `per_client` W1
/// transactions through their own client storage. They connect first, then start
/// together; the clock runs from the start signal until the last one is done.
/// Returns the elapsed seconds.
pub fn w1_client_processes(file: Arc<dyn Storage>, clients: u64, per_client: u64) -> Result<f64> {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};

    let server = Server::start(Arc::clone(&file), "127.0.0.1:0", ServerOptions::new())?;
    let exe = crate::helpers::program().map_err(|e| zodiac_storage::Error::Server {
        message: e.to_string(),
    })?;
    let io_error = |e: std::io::Error| zodiac_storage::Error::Server {
        message: format!("client process: {e}"),
    };
    let mut children = Vec::new();
    for c in 0..clients {
        let mut child = Command::new(&exe)
            .args([
                CLIENT_MODE,
                &server.local_addr().to_string(),
                &(c * per_client).to_string(),
                &per_client.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(io_error)?;
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        out.read_line(&mut line).map_err(io_error)?;
        if line.trim() != "ready" {
            return Err(zodiac_storage::Error::Server {
                message: format!("client process said {line:?}"),
            });
        }
        children.push((child, out));
    }
    let start = std::time::Instant::now();
    for (child, _) in &mut children {
        writeln!(child.stdin.as_mut().expect("piped"), "go").map_err(io_error)?;
    }
    for (child, out) in &mut children {
        let mut line = String::new();
        out.read_line(&mut line).map_err(io_error)?;
        let status = child.wait().map_err(io_error)?;
        if line.trim() != "done" || !status.success() {
            return Err(zodiac_storage::Error::Server {
                message: format!("a client process failed ({status}): {line:?}"),
            });
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    server.shutdown();
    Ok(elapsed)
}

/// The first argument that runs this binary as one W6 client process.
pub const CLIENT_MODE: &str = "w6-client-process";

/// Client mode: `CLIENT_MODE ADDR FIRST COUNT` connects, prints `ready`, waits for a
/// line on standard input, commits W1 transactions FIRST..FIRST+COUNT, prints `done`.
pub fn client_process(args: &[String]) -> std::result::Result<(), String> {
    use std::io::BufRead;

    let [addr, first, count] = args else {
        return Err(format!("usage: {CLIENT_MODE} ADDR FIRST COUNT"));
    };
    let number = |s: &String| s.parse::<u64>().map_err(|e| format!("{s}: {e}"));
    let (first, count) = (number(first)?, number(count)?);
    let client = ClientStorage::connect(addr, ClientOptions::new()).map_err(|e| e.to_string())?;
    println!("ready");
    let mut go = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut go)
        .map_err(|e| e.to_string())?;
    for i in first..first + count {
        let oid = client.new_oid().map_err(|e| e.to_string())?;
        let mut txn = client
            .begin(TransactionMeta::default())
            .map_err(|e| e.to_string())?;
        txn.store(oid, Tid::ZERO, crate::rng::val(i, 0))
            .map_err(|e| e.to_string())?;
        txn.finish().map_err(|e| e.to_string())?;
    }
    println!("done");
    client.close().map_err(|e| e.to_string())
}
