//! Read-write and read-only tokens (`ServerOptions::token`, `read_only_token`):
//! a client proving the read-only one loads but every write is refused with an
//! error saying why and what to do; the read-write one commits; anything else is
//! refused at the handshake.

use std::sync::Arc;
use std::time::Duration;

use zodiac_storage::{
    ClientOptions, ClientStorage, Error, MemoryStorage, Server, ServerOptions, Storage, Tid,
    TransactionMeta,
};

fn client(server: &Server, token: &[u8]) -> zodiac_storage::Result<ClientStorage> {
    ClientStorage::connect(
        &server.local_addr().to_string(),
        ClientOptions::new()
            .token(Some(token.to_vec()))
            .wait_timeout(Duration::from_secs(5)),
    )
}

fn says_read_only_token(e: &Error) -> bool {
    let text = e.to_string();
    text.contains("read-only token") && text.contains("--token-file")
}

#[test]
fn a_read_only_token_loads_and_every_write_is_refused_saying_why() {
    let server = Server::start(
        Arc::new(MemoryStorage::new()),
        "127.0.0.1:0",
        ServerOptions::new()
            .token(Some(b"writer".to_vec()))
            .read_only_token(Some(b"reader".to_vec())),
    )
    .unwrap();
    let writer = client(&server, b"writer").unwrap();
    assert!(!writer.server_is_read_only());
    let oid = writer.new_oid().unwrap();
    let mut t = writer.begin(TransactionMeta::default()).unwrap();
    t.store(oid, Tid::ZERO, b"written".to_vec()).unwrap();
    let tid = t.finish().unwrap();

    let reader = client(&server, b"reader").unwrap();
    assert_eq!(reader.load(oid, Tid::MAX).unwrap().data, b"written");
    let mut t = reader.begin(TransactionMeta::default()).unwrap();
    t.store(oid, tid, b"not allowed".to_vec()).unwrap();
    let refused = t.finish().unwrap_err();
    assert!(says_read_only_token(&refused), "{refused}");
    let refused = reader.new_oid().unwrap_err();
    assert!(says_read_only_token(&refused), "{refused}");
    let refused = reader.pack(Tid::MAX, false).unwrap_err();
    assert!(says_read_only_token(&refused), "{refused}");
    // Nothing changed; the writer still writes.
    assert_eq!(writer.load(oid, Tid::MAX).unwrap().data, b"written");
    let mut t = writer.begin(TransactionMeta::default()).unwrap();
    t.store(oid, tid, b"again".to_vec()).unwrap();
    t.finish().unwrap();

    match client(&server, b"guess") {
        Err(Error::Refused { reason, .. }) => {
            assert!(reason.contains("does not match"), "{reason}")
        }
        other => panic!("a wrong token: {:?}", other.map(|_| ())),
    }
    reader.close().unwrap();
    writer.close().unwrap();
    server.shutdown();
}
