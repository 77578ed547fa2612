use super::*;
use crate::memory::MemoryStorage;
use crate::meta::TransactionMeta;
use crate::net::{ClientOptions, ClientStorage, Server, ServerOptions};
use crate::storage::Storage;

/// A vote's conflict carries, for every stored object found stale, its newest
/// revision and the one it was stored on: the client merges them without a
/// load (here with the server gone) and knows every stale object at once.
#[test]
fn a_conflict_reply_carries_the_revisions_to_merge_every_stale_object() {
    let server = Server::start(
        Arc::new(MemoryStorage::new()),
        "127.0.0.1:0",
        ServerOptions::new(),
    )
    .unwrap();
    let address = server.local_addr().to_string();
    let (a, b) = (
        ClientStorage::connect(&address, ClientOptions::new()).unwrap(),
        ClientStorage::connect(&address, ClientOptions::new()).unwrap(),
    );
    let (x, y, fresh) = (
        a.new_oid().unwrap(),
        a.new_oid().unwrap(),
        a.new_oid().unwrap(),
    );
    // Over the size a reply carries: left out (a merge loads it).
    let (big, big_data) = (
        a.new_oid().unwrap(),
        vec![7; CONFLICT_REVISION_BYTES_MAX + 1],
    );
    let mut t = a.begin(TransactionMeta::default()).unwrap();
    t.store(x, Tid::ZERO, b"x0".to_vec()).unwrap();
    t.store(y, Tid::ZERO, b"y0".to_vec()).unwrap();
    t.store(big, Tid::ZERO, big_data.clone()).unwrap();
    let base = t.finish().unwrap();
    let mut t = a.begin(TransactionMeta::default()).unwrap();
    t.store(x, base, b"x1".to_vec()).unwrap();
    t.store(y, base, b"y1".to_vec()).unwrap();
    t.store(big, base, big_data.clone()).unwrap();
    let newer = t.finish().unwrap();
    assert_eq!(b.known_newer_revision(x, base), None);
    let mut t = b.begin(TransactionMeta::default()).unwrap();
    t.store(fresh, Tid::ZERO, b"new".to_vec()).unwrap();
    t.store(x, base, b"x-mine".to_vec()).unwrap();
    t.store(y, base, b"y-mine".to_vec()).unwrap();
    t.store(big, base, big_data).unwrap();
    let e = t.finish().unwrap_err();
    let c = *e.as_conflict().expect("a conflict");
    assert_eq!((c.base_tid, c.current_tid), (base, newer));
    for (oid, old, committed) in [(x, b"x0", b"x1"), (y, b"y0", b"y1")] {
        assert_eq!(b.known_newer_revision(oid, base), Some(newer));
        assert_eq!(b.known_newer_revision(oid, newer), None);
        assert_eq!(b.load_revision(oid, base).unwrap(), old);
        assert_eq!(b.load_revision(oid, newer).unwrap(), committed);
    }
    assert_eq!(b.known_newer_revision(fresh, Tid::ZERO), None, "not stale");
    assert_eq!(
        b.known_newer_revision(big, base),
        None,
        "too large to carry"
    );
    a.close().unwrap();
    server.shutdown();
    // The merge needs no round trip: the revisions are at hand.
    assert_eq!(b.load_revision(x, base).unwrap(), b"x0");
    assert_eq!(b.load_revision(y, newer).unwrap(), b"y1");
    b.close().unwrap();
}
