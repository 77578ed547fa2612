//! Conflicts merged by the server at commit (`ServerOptions::merge`): a store that
//! names a merge identity the server knows merges under the commit lock; the
//! commit's reply names it, with the merged data, so the client never caches its
//! own (stale) copy of that object.

use std::sync::Arc;

use zodiac_storage::{
    ClientOptions, ClientStorage, Durability, Error, FileOptions, FileStorage, MergeFn, Oid,
    Server, ServerOptions, Storage, Tid, TransactionMeta,
};

/// A counter's merge: its data is a u64 (LE); a merge applies mine − old on top
/// of committed. The identity "pad" does the same and pads the result to
/// `PADDED` bytes (a merged record too large for the reply to carry). "panic"
/// panics.
fn merge_fn() -> MergeFn {
    Arc::new(
        |identity: &str, old: &[u8], committed: &[u8], mine: &[u8]| {
            let value = |b: &[u8]| u64::from_le_bytes(b[..8].try_into().unwrap());
            let sum = value(committed)
                .wrapping_add(value(mine))
                .wrapping_sub(value(old));
            match identity {
                "counter" => Some(sum.to_le_bytes().to_vec()),
                "pad" => {
                    let mut data = sum.to_le_bytes().to_vec();
                    data.resize(PADDED, 0);
                    Some(data)
                }
                "panic" => panic!("a merge function that panics"),
                _ => None,
            }
        },
    )
}

const PADDED: usize = (1 << 20) + 1;

struct Setup {
    server: Server,
    _dir: tempfile::TempDir,
}

fn serve(merge: Option<MergeFn>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let file = FileStorage::open(
        dir.path().join("data.zdb"),
        FileOptions::new().durability(Durability::Off),
    )
    .unwrap();
    let server = Server::start(
        Arc::new(file),
        "127.0.0.1:0",
        ServerOptions::new().merge(merge),
    )
    .unwrap();
    Setup { server, _dir: dir }
}

fn client(setup: &Setup) -> ClientStorage {
    ClientStorage::connect(&setup.server.local_addr().to_string(), ClientOptions::new()).unwrap()
}

fn number(n: u64) -> Vec<u8> {
    n.to_le_bytes().to_vec()
}

fn value(data: &[u8]) -> u64 {
    u64::from_le_bytes(data[..8].try_into().unwrap())
}

/// Creates a counter at 10, then another client commits 15 on top of it: the
/// counter's oid and the tid it was created at (the stale base).
fn counter_moved_on(a: &ClientStorage, b: &ClientStorage) -> (Oid, Tid) {
    let oid = a.new_oid().unwrap();
    let mut t = a.begin(TransactionMeta::default()).unwrap();
    t.store(oid, Tid::ZERO, number(10)).unwrap();
    let base = t.finish().unwrap();
    b.sync().unwrap();
    let mut t = b.begin(TransactionMeta::default()).unwrap();
    t.store(oid, base, number(15)).unwrap();
    t.finish().unwrap();
    (oid, base)
}

/// Commits `mine` for `oid` on the stale `base`, naming `identity`.
fn commit_on_stale_base(
    a: &ClientStorage,
    oid: Oid,
    base: Tid,
    mine: u64,
    identity: Option<&str>,
) -> zodiac_storage::Result<(Tid, Vec<Oid>)> {
    let mut t = a.begin(TransactionMeta::default()).unwrap();
    match identity {
        Some(identity) => t
            .store_mergeable(oid, base, number(mine), identity)
            .unwrap(),
        None => t.store(oid, base, number(mine)).unwrap(),
    }
    let no_local_merge = |_: Oid, _: &[u8], _: &[u8]| -> Option<Vec<u8>> { None };
    t.commit_resolving(&no_local_merge)
}

#[test]
fn a_store_naming_a_registered_merge_commits_merged_in_one_round_trip() {
    let setup = serve(Some(merge_fn()));
    let (a, b) = (client(&setup), client(&setup));
    let (oid, base) = counter_moved_on(&a, &b);

    // Mine: 10 → 11 (+1) on the stale base; the other client made it 15 (+5).
    let (tid, merged) = commit_on_stale_base(&a, oid, base, 11, Some("counter")).unwrap();
    assert_eq!(merged, vec![oid]);
    // What committed is the merge, 16: this client serves it (from the reply, not
    // its own stored 11), and so does another.
    assert_eq!(a.load(oid, Tid::MAX).unwrap().data, number(16));
    assert_eq!(a.load(oid, Tid::MAX).unwrap().tid, tid);
    b.sync().unwrap();
    assert_eq!(b.load(oid, Tid::MAX).unwrap().data, number(16));
    setup.server.shutdown();
}

#[test]
fn a_commit_without_conflicts_reports_nothing_merged_and_caches_its_own_data() {
    let setup = serve(Some(merge_fn()));
    let a = client(&setup);
    let oid = a.new_oid().unwrap();
    let mut t = a.begin(TransactionMeta::default()).unwrap();
    t.store_mergeable(oid, Tid::ZERO, number(3), "counter")
        .unwrap();
    let no_local_merge = |_: Oid, _: &[u8], _: &[u8]| -> Option<Vec<u8>> { None };
    let (tid, merged) = t.commit_resolving(&no_local_merge).unwrap();
    assert!(merged.is_empty());
    let rev = a.load(oid, Tid::MAX).unwrap();
    assert_eq!((rev.tid, value(&rev.data)), (tid, 3));
    setup.server.shutdown();
}

#[test]
fn a_merged_record_too_large_for_the_reply_is_loaded_not_taken_from_the_stored_copy() {
    let setup = serve(Some(merge_fn()));
    let (a, b) = (client(&setup), client(&setup));
    let (oid, base) = counter_moved_on(&a, &b);
    let (_, merged) = commit_on_stale_base(&a, oid, base, 11, Some("pad")).unwrap();
    assert_eq!(merged, vec![oid]);
    let data = a.load(oid, Tid::MAX).unwrap().data;
    assert_eq!((data.len(), value(&data)), (PADDED, 16));
    setup.server.shutdown();
}

#[test]
fn conflicts_the_server_cannot_merge_go_back_to_the_client() {
    let setup = serve(Some(merge_fn()));
    let (a, b) = (client(&setup), client(&setup));
    // No identity, an identity the server does not know, a merge that panics.
    for identity in [None, Some("unknown"), Some("panic")] {
        let (oid, base) = counter_moved_on(&a, &b);
        match commit_on_stale_base(&a, oid, base, 11, identity) {
            Err(Error::Conflict(c)) => assert_eq!((c.oid, c.base_tid), (oid, base)),
            other => panic!("{identity:?}: expected a conflict, got {other:?}"),
        }
        // The other client's commit stands.
        assert_eq!(value(&a.load(oid, Tid::MAX).unwrap().data), 15);
    }
    // The server survived the panic and still merges.
    let (oid, base) = counter_moved_on(&a, &b);
    let (_, merged) = commit_on_stale_base(&a, oid, base, 11, Some("counter")).unwrap();
    assert_eq!(merged, vec![oid]);
    setup.server.shutdown();
}

#[test]
fn a_server_without_merge_functions_reports_every_conflict() {
    let setup = serve(None);
    let (a, b) = (client(&setup), client(&setup));
    let (oid, base) = counter_moved_on(&a, &b);
    assert!(matches!(
        commit_on_stale_base(&a, oid, base, 11, Some("counter")),
        Err(Error::Conflict(_))
    ));
    setup.server.shutdown();
}
