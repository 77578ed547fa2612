//! The client's persistent cache file: a restarted client starts warm, catches up
//! what changed meanwhile, and never serves a cache saved from other data (another
//! database, or a damaged file).

use std::path::Path;
use std::sync::Arc;

use zodiac_storage::{
    ClientOptions, ClientStorage, FileOptions, FileStorage, MemoryStorage, Oid, Server,
    ServerOptions, Storage, Tid, TransactionMeta,
};

fn serve(path: &Path) -> (Server, Arc<FileStorage>) {
    let file = Arc::new(FileStorage::open(path, FileOptions::new()).unwrap());
    let server = Server::start(
        Arc::clone(&file) as Arc<dyn Storage>,
        "127.0.0.1:0",
        ServerOptions::new(),
    )
    .unwrap();
    (server, file)
}

fn client(server: &Server, cache_file: &Path) -> ClientStorage {
    ClientStorage::connect(
        &server.local_addr().to_string(),
        ClientOptions::new().cache_file(Some(cache_file.to_path_buf())),
    )
    .unwrap()
}

/// Commits `data` as the new revision of each of `oids`.
fn commit(storage: &dyn Storage, oids: &[Oid], data: &[u8]) -> Tid {
    let mut txn = storage.begin(TransactionMeta::default()).unwrap();
    for &oid in oids {
        let base = storage.load(oid, Tid::MAX).map_or(Tid::ZERO, |r| r.tid);
        txn.store(oid, base, data.to_vec()).unwrap();
    }
    txn.finish().unwrap()
}

#[test]
fn a_restarted_client_starts_warm_and_sees_what_changed_while_it_was_away() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("client.cache");
    let (server, _file) = serve(&dir.path().join("data.zdb"));

    let first = client(&server, &cache);
    let oids: Vec<Oid> = (0..50).map(|_| first.new_oid().unwrap()).collect();
    commit(&first, &oids, b"v1");
    for &oid in &oids {
        assert_eq!(first.load(oid, first.last_tid()).unwrap().data, b"v1");
    }
    assert_eq!(first.cache_usage().0, 50);
    first.close().unwrap();
    assert!(cache.exists(), "saved at close");

    // Meanwhile another client changes two objects.
    let other =
        ClientStorage::connect(&server.local_addr().to_string(), ClientOptions::new()).unwrap();
    let changed = commit(&other, &oids[3..5], b"v2");

    let again = client(&server, &cache);
    assert_eq!(again.last_tid(), changed, "caught up at connect");
    assert_eq!(
        again.cache_usage().0,
        48,
        "warm: every object but the two invalidated ones"
    );
    for (i, &oid) in oids.iter().enumerate() {
        let want: &[u8] = if (3..5).contains(&i) { b"v2" } else { b"v1" };
        assert_eq!(
            again.load(oid, again.last_tid()).unwrap().data,
            want,
            "object {i}"
        );
    }
    // And it keeps following commits.
    let later = commit(&other, &oids[..1], b"v3");
    while again.last_tid() < later {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert_eq!(again.load(oids[0], later).unwrap().data, b"v3");
    again.close().unwrap();
    other.close().unwrap();
    server.shutdown();
}

/// The catch-up alone cannot tell: database B's revision of the object is older
/// than the cache file's tid, and B's commits since touch other objects. Only the
/// identity check keeps the client from serving A's data from B.
#[test]
fn a_cache_file_from_other_data_is_never_used() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("client.cache");
    let (server_a, _a) = serve(&dir.path().join("a.zdb"));
    let (server_b, _b) = serve(&dir.path().join("b.zdb"));
    let writer_b =
        ClientStorage::connect(&server_b.local_addr().to_string(), ClientOptions::new()).unwrap();
    let oid = writer_b.new_oid().unwrap();
    commit(&writer_b, &[oid], b"from b");

    let a = client(&server_a, &cache);
    assert_eq!(a.new_oid().unwrap(), oid, "the same oid in both databases");
    commit(&a, &[oid], b"from a");
    assert_eq!(a.load(oid, a.last_tid()).unwrap().data, b"from a");
    a.close().unwrap();

    let other = writer_b.new_oid().unwrap();
    let latest = commit(&writer_b, &[other], b"unrelated");
    let b = client(&server_b, &cache);
    assert_eq!(b.last_tid(), latest);
    assert_eq!(b.cache_usage().0, 0, "another database's cache is dropped");
    assert_eq!(b.load(oid, b.last_tid()).unwrap().data, b"from b");
    b.close().unwrap();
    writer_b.close().unwrap();
    server_a.shutdown();
    server_b.shutdown();
}

#[test]
fn a_damaged_cache_file_costs_a_cold_start_only() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("client.cache");
    let (server, _file) = serve(&dir.path().join("data.zdb"));
    let c = client(&server, &cache);
    let oid = c.new_oid().unwrap();
    commit(&c, &[oid], b"data");
    c.load(oid, c.last_tid()).unwrap();
    c.close().unwrap();
    let mut bytes = std::fs::read(&cache).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&cache, &bytes).unwrap();
    let c = client(&server, &cache);
    assert_eq!(c.cache_usage().0, 0);
    assert_eq!(c.load(oid, c.last_tid()).unwrap().data, b"data");
    c.close().unwrap();
    // Rewritten whole at close: valid again.
    let c = client(&server, &cache);
    assert_eq!(c.cache_usage().0, 1);
    c.close().unwrap();
    server.shutdown();
}

#[test]
fn a_server_whose_storage_has_no_identity_gets_no_cache_file() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("client.cache");
    let server = Server::start(
        Arc::new(MemoryStorage::new()) as Arc<dyn Storage>,
        "127.0.0.1:0",
        ServerOptions::new(),
    )
    .unwrap();
    let c = client(&server, &cache);
    let oid = c.new_oid().unwrap();
    commit(&c, &[oid], b"x");
    c.load(oid, c.last_tid()).unwrap();
    c.close().unwrap();
    assert!(!cache.exists());
    server.shutdown();
}
