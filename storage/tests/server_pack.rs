//! Pack through the server (`ClientStorage::pack`, protocol request `Pack`): with and
//! without garbage collection, and the refusals (read-only server or client, GC
//! without a reference reader, a storage that cannot pack).
//!
//! Object data here is `refs:A,B;payload`, as in `pack.rs`.

use std::sync::Arc;
use std::time::Duration;

use zodiac_storage::offline::old_path;
use zodiac_storage::{
    ClientOptions, ClientStorage, Durability, Error, FileOptions, FileStorage, MemoryStorage, Oid,
    ReferenceReader, Server, ServerOptions, Storage, Tid, TransactionMeta,
};

fn data(refs: &[Oid], payload: &str) -> Vec<u8> {
    let list: Vec<String> = refs.iter().map(|o| o.0.to_string()).collect();
    format!("refs:{};{payload}", list.join(",")).into_bytes()
}

fn references(bytes: &[u8]) -> Result<Vec<Oid>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
    let list = text
        .strip_prefix("refs:")
        .and_then(|rest| rest.split(';').next())
        .ok_or_else(|| format!("no reference list in {text:?}"))?;
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map(Oid).map_err(|e| format!("{e}")))
        .collect()
}

fn write(s: &dyn Storage, writes: &[(Oid, Vec<u8>)]) -> Tid {
    let mut t = s.begin(TransactionMeta::described("test")).unwrap();
    for (oid, bytes) in writes {
        let base = s.load(*oid, Tid::MAX).map(|r| r.tid).unwrap_or(Tid::ZERO);
        t.store(*oid, base, bytes.clone()).unwrap();
    }
    t.finish().unwrap()
}

struct Setup {
    dir: tempfile::TempDir,
    file: Arc<FileStorage>,
    server: Server,
}

fn serve(options: ServerOptions) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let file = Arc::new(
        FileStorage::open(
            dir.path().join("data.zdb"),
            FileOptions::new().durability(Durability::Off),
        )
        .unwrap(),
    );
    let server = Server::start(
        Arc::clone(&file) as Arc<dyn Storage>,
        "127.0.0.1:0",
        options,
    )
    .expect("start a server");
    Setup { dir, file, server }
}

fn connect(server: &Server, options: ClientOptions) -> ClientStorage {
    ClientStorage::connect(
        &format!("tcp://{}", server.local_addr()),
        options.wait_timeout(Duration::from_secs(10)),
    )
    .expect("connect")
}

/// Waits until `client` has applied the invalidations up to `tid`.
fn wait_until(client: &ClientStorage, tid: Tid) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while client.last_tid() < tid {
        assert!(
            std::time::Instant::now() < deadline,
            "no invalidation of {tid}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn reader() -> ReferenceReader {
    Arc::new(references)
}

#[test]
fn a_client_packs_the_served_file_with_and_without_garbage_collection() {
    let setup = serve(ServerOptions::new().references(Some(reader())));
    let client = connect(&setup.server, ClientOptions::new());
    let other = connect(&setup.server, ClientOptions::new());
    let a = client.new_oid().unwrap();
    let garbage = client.new_oid().unwrap();
    write(
        &client,
        &[
            (Oid::ROOT, data(&[a], "root")),
            (a, data(&[], "a1")),
            (garbage, data(&[], "unreachable")),
        ],
    );
    write(&client, &[(a, data(&[], "a2"))]);
    let last = write(&client, &[(a, data(&[], "a3"))]);
    wait_until(&other, last);
    assert_eq!(other.load(a, Tid::MAX).unwrap().tid, last);

    let report = client.pack(Tid::MAX, false).unwrap();
    assert_eq!(report.pack_tid, last);
    assert_eq!(report.revisions_before, 5);
    assert_eq!(
        report.revisions_after, 3,
        "only the newest revision of a stays"
    );
    assert_eq!(report.objects_removed, 0);
    assert!(report.bytes_after < report.bytes_before);
    assert!(old_path(&setup.dir.path().join("data.zdb")).exists());
    assert!(client.load(garbage, Tid::MAX).is_ok(), "no GC asked");

    let report = client.pack(Tid::MAX, true).unwrap();
    assert_eq!(report.objects_removed, 1);
    assert_eq!(report.revisions_after, 2);
    assert!(setup.file.load(garbage, Tid::MAX).is_err());
    assert_eq!(
        other.load(a, Tid::MAX).unwrap().data,
        data(&[], "a3"),
        "reachable objects keep their newest revision"
    );

    // Commits and invalidations go on after a pack.
    let after = write(&client, &[(a, data(&[], "a4"))]);
    assert!(after > last);
    wait_until(&other, after);
    assert_eq!(other.load(a, Tid::MAX).unwrap().data, data(&[], "a4"));

    // Through the Storage trait too: `references` only says whether to collect.
    let report = Storage::pack(&client, Tid::MAX, Some(&references)).unwrap();
    assert_eq!(report.pack_tid, after);
}

#[test]
fn garbage_collection_without_a_reference_reader_is_refused_and_plain_pack_works() {
    let setup = serve(ServerOptions::new());
    let client = connect(&setup.server, ClientOptions::new());
    let a = client.new_oid().unwrap();
    write(&client, &[(a, data(&[], "a1"))]);
    write(&client, &[(a, data(&[], "a2"))]);
    match client.pack(Tid::MAX, true) {
        Err(Error::Server { message }) => {
            assert!(message.contains("reference reader"), "{message}");
            assert!(message.contains("ServerOptions::references"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let report = client.pack(Tid::MAX, false).unwrap();
    assert_eq!(report.revisions_after, 1);
    assert!(client.is_connected(), "a refusal keeps the connection");
}

#[test]
fn a_read_only_server_or_client_cannot_pack() {
    let setup = serve(
        ServerOptions::new()
            .read_only(true)
            .references(Some(reader())),
    );
    let client = connect(&setup.server, ClientOptions::new());
    assert!(matches!(client.pack(Tid::MAX, false), Err(Error::ReadOnly)));
    assert!(matches!(client.pack(Tid::MAX, true), Err(Error::ReadOnly)));

    let setup = serve(ServerOptions::new().references(Some(reader())));
    let read_only = connect(&setup.server, ClientOptions::new().read_only(true));
    assert!(matches!(
        read_only.pack(Tid::MAX, false),
        Err(Error::ReadOnly)
    ));
    let _ = &setup.file;
}

#[test]
fn a_storage_that_cannot_pack_says_so() {
    let memory: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let server = Server::start(memory, "127.0.0.1:0", ServerOptions::new()).unwrap();
    let client = connect(&server, ClientOptions::new());
    match client.pack(Tid::MAX, false) {
        Err(Error::Server { message }) => assert!(message.contains("cannot be packed")),
        other => panic!("expected a refusal, got {other:?}"),
    }
}
