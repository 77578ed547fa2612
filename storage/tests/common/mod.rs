//! What the storage test suites share: the storage under test, the factories that
//! make one per test, and small commit helpers.
//!
//! Every suite is written once against `dyn Storage` and instantiated per backend
//! with a factory `fn() -> Subject`; a backend that needs files keeps its temporary
//! directory inside the `Subject`, so the directory lives exactly as long as the test.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::ops::Deref;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use zodiac_storage::{
    ConflictError, Error, MemoryStorage, Oid, Result, Storage, Tid, TransactionMeta,
};

/// The storage under test, plus whatever must outlive it (a temporary directory).
pub struct Subject {
    // Declared before `_keep` so the storage is dropped (closed) before its directory.
    storage: Arc<dyn Storage>,
    /// Dropped after the storage: a PostgreSQL schema to drop, for one.
    _guard: Option<Box<dyn Send + Sync>>,
    _keep: Option<tempfile::TempDir>,
}

impl Subject {
    pub fn new(storage: impl Storage + 'static) -> Subject {
        Subject {
            storage: Arc::new(storage),
            _guard: None,
            _keep: None,
        }
    }

    pub fn in_dir(storage: impl Storage + 'static, dir: tempfile::TempDir) -> Subject {
        Subject {
            storage: Arc::new(storage),
            _guard: None,
            _keep: Some(dir),
        }
    }

    /// A storage with something to drop after it (a PostgreSQL schema).
    pub fn guarded(storage: impl Storage + 'static, guard: Box<dyn Send + Sync>) -> Subject {
        Subject {
            storage: Arc::new(storage),
            _guard: Some(guard),
            _keep: None,
        }
    }

    /// A handle for threads that may outlive a failing test (timeouts).
    pub fn shared(&self) -> Arc<dyn Storage> {
        Arc::clone(&self.storage)
    }
}

impl Deref for Subject {
    type Target = dyn Storage;

    fn deref(&self) -> &(dyn Storage + 'static) {
        &*self.storage
    }
}

/// A fresh, empty in-memory storage.
pub fn memory() -> Subject {
    Subject::new(MemoryStorage::new())
}

/// Metadata with only a description.
pub fn meta(description: &str) -> TransactionMeta {
    TransactionMeta::described(description)
}

/// Stores every `(oid, base_tid, data)` in one transaction and finishes it.
pub fn try_commit(storage: &dyn Storage, writes: &[(Oid, Tid, &[u8])]) -> Result<Tid> {
    let mut txn = storage.begin(meta("test commit"))?;
    for &(oid, base, data) in writes {
        txn.store(oid, base, data.to_vec())?;
    }
    txn.finish()
}

/// Like [`try_commit`], panicking on failure.
pub fn commit(storage: &dyn Storage, writes: &[(Oid, Tid, &[u8])]) -> Tid {
    try_commit(storage, writes).unwrap_or_else(|e| panic!("commit of {writes:?} failed: {e}"))
}

/// Allocates an oid and commits `data` as its first revision.
pub fn create(storage: &dyn Storage, data: &[u8]) -> (Oid, Tid) {
    let oid = storage.new_oid().expect("new_oid");
    let tid = commit(storage, &[(oid, Tid::ZERO, data)]);
    (oid, tid)
}

/// The conflict inside `result`, panicking on anything else.
pub fn expect_conflict<T: std::fmt::Debug>(result: Result<T>) -> ConflictError {
    match result {
        Err(Error::Conflict(c)) => c,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

/// The oids sorted, for comparing sets whose order the contract does not fix.
pub fn sorted(oids: impl IntoIterator<Item = Oid>) -> Vec<Oid> {
    let mut v: Vec<Oid> = oids.into_iter().collect();
    v.sort();
    v
}

/// Runs `f` on its own thread and waits at most `timeout` for it: a commit that
/// waits for a commit lock nobody releases fails the test instead of hanging it.
pub fn within<T: Send + 'static>(
    timeout: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(f());
    });
    match receiver.recv_timeout(timeout) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what} did not complete within {timeout:?}")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what} panicked"),
    }
}

// ---------------------------------------------------------------------------------
// The file storage.
// ---------------------------------------------------------------------------------

#[cfg(feature = "postgres")]
pub mod pg;

pub mod net {
    use std::sync::Arc;

    use zodiac_storage::{
        ClientOptions, ClientStorage, Durability, FileOptions, FileStorage, Server, ServerOptions,
        Storage,
    };

    /// A client storage connected to a server on 127.0.0.1 (a free port) serving a
    /// fresh file storage in a temporary directory. The server and the file storage
    /// live as long as the client.
    pub struct Served {
        client: ClientStorage,
        server: Option<Server>,
        file: Arc<FileStorage>,
    }

    impl Served {
        pub fn start(durability: Durability) -> (Served, tempfile::TempDir) {
            let dir = tempfile::tempdir().expect("temporary directory");
            let file = Arc::new(
                FileStorage::open(
                    dir.path().join("data.zdb"),
                    FileOptions::new().durability(durability),
                )
                .expect("open a new data file"),
            );
            let server = Server::start(
                Arc::clone(&file) as Arc<dyn Storage>,
                "127.0.0.1:0",
                ServerOptions::new(),
            )
            .expect("start a server");
            let client =
                ClientStorage::connect(&server.local_addr().to_string(), ClientOptions::new())
                    .expect("connect to the server");
            (
                Served {
                    client,
                    server: Some(server),
                    file,
                },
                dir,
            )
        }
    }

    impl Drop for Served {
        fn drop(&mut self) {
            let _ = self.client.close();
            if let Some(server) = self.server.take() {
                server.shutdown();
            }
            let _ = self.file.close();
        }
    }

    impl Storage for Served {
        fn describe(&self) -> String {
            self.client.describe()
        }
        fn last_tid(&self) -> zodiac_storage::Tid {
            self.client.last_tid()
        }
        fn new_oid(&self) -> zodiac_storage::Result<zodiac_storage::Oid> {
            self.client.new_oid()
        }
        fn load(
            &self,
            oid: zodiac_storage::Oid,
            snapshot: zodiac_storage::Tid,
        ) -> zodiac_storage::Result<zodiac_storage::Revision> {
            self.client.load(oid, snapshot)
        }
        fn load_revision(
            &self,
            oid: zodiac_storage::Oid,
            tid: zodiac_storage::Tid,
        ) -> zodiac_storage::Result<Vec<u8>> {
            self.client.load_revision(oid, tid)
        }
        fn history(
            &self,
            oid: zodiac_storage::Oid,
            limit: usize,
        ) -> zodiac_storage::Result<Vec<zodiac_storage::RevisionInfo>> {
            self.client.history(oid, limit)
        }
        fn transactions(
            &self,
            from: zodiac_storage::Tid,
            to: zodiac_storage::Tid,
        ) -> zodiac_storage::Result<zodiac_storage::TransactionIter<'_>> {
            self.client.transactions(from, to)
        }
        fn begin(
            &self,
            meta: zodiac_storage::TransactionMeta,
        ) -> zodiac_storage::Result<Box<dyn zodiac_storage::StorageTransaction>> {
            self.client.begin(meta)
        }
        fn subscribe(&self) -> zodiac_storage::CommitSubscription {
            self.client.subscribe()
        }
        fn restore(
            &self,
            tid: zodiac_storage::Tid,
            meta: &zodiac_storage::TransactionMeta,
            records: &[(zodiac_storage::Oid, Vec<u8>)],
        ) -> zodiac_storage::Result<()> {
            self.client.restore(tid, meta, records)
        }
        fn close(&self) -> zodiac_storage::Result<()> {
            self.client.close()
        }
    }

    /// A client storage over a served file storage, as a test subject.
    pub fn client(durability: Durability) -> super::Subject {
        let (served, dir) = Served::start(durability);
        super::Subject::in_dir(served, dir)
    }
}

pub mod files {
    /// A fresh, empty file storage in its own temporary directory.
    pub fn file(durability: zodiac_storage::Durability) -> super::Subject {
        use zodiac_storage::{FileOptions, FileStorage};
        let dir = tempfile::tempdir().expect("temporary directory");
        let storage = FileStorage::open(
            dir.path().join("data.zdb"),
            FileOptions::new().durability(durability),
        )
        .expect("open a new data file");
        super::Subject::in_dir(storage, dir)
    }
}

/// A hand-written server's side of the handshake on `s`, for tests that send the
/// client frames a real server would not: reads `Hello` and `Auth`, answers with
/// no authentication and a `Welcome` at `last_tid`. Reads on `s` time out after
/// 10 s, so a frame the client never sends fails the test instead of hanging it.
pub fn fake_server_handshake(s: &mut std::net::TcpStream, last_tid: u64) {
    use std::io::Write;
    use zodiac_storage::protocol::{self, CatchUp, ClientMessage, ServerMessage};

    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(matches!(fake_server_read(s), ClientMessage::Hello { .. }));
    let challenge = ServerMessage::Challenge {
        nonce: [0; protocol::NONCE_BYTES],
        auth_required: false,
    };
    s.write_all(&protocol::encode(&challenge)).unwrap();
    assert!(matches!(fake_server_read(s), ClientMessage::Auth { .. }));
    let welcome = ServerMessage::Welcome {
        last_tid,
        read_only: false,
        catch_up: CatchUp::Fresh,
        identity: 0,
    };
    s.write_all(&protocol::encode(&welcome)).unwrap();
}

/// The next message a client sent to a hand-written server.
pub fn fake_server_read(s: &mut std::net::TcpStream) -> zodiac_storage::protocol::ClientMessage {
    use zodiac_storage::protocol::{self, FRAME_BYTES_MAX};
    let payload = protocol::read_frame(s, FRAME_BYTES_MAX).unwrap();
    protocol::decode(&payload).unwrap()
}
