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
