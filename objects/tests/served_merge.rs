//! A server with the objects' merge functions (`Merges`) merges a conflicting
//! commit under its commit lock: the client's commit succeeds in its first
//! round trip, the client never runs the merge itself, and what it reads next is
//! the merged state, not the state it stored.

use std::cell::Cell;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zodiac_objects::{Database, Merges, PRef, Persistent};
use zodiac_storage::{
    ClientOptions, ClientStorage, MemoryStorage, MergeFn, Server, ServerOptions, Storage,
};

/// A counter whose merges on this thread (the test's, where the clients run) are
/// counted; the server merges on its own threads.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Hits {
    n: i64,
}

thread_local! {
    static MERGES_HERE: Cell<u32> = const { Cell::new(0) };
}

impl Persistent for Hits {
    const TYPE_NAME: &'static str = "test.Hits";
    const MERGES: bool = true;

    fn resolve_conflict(old: &Self, committed: &Self, mine: &Self) -> Option<Self> {
        MERGES_HERE.with(|m| m.set(m.get() + 1));
        Some(Hits {
            n: committed.n + (mine.n - old.n),
        })
    }
}

fn merges_here() -> u32 {
    MERGES_HERE.with(Cell::get)
}

struct Served {
    server: Server,
    a: Database,
    b: Database,
    b_client: Arc<ClientStorage>,
}

fn serve(merge: Option<MergeFn>) -> Served {
    let server = Server::start(
        Arc::new(MemoryStorage::new()),
        "127.0.0.1:0",
        ServerOptions::new().merge(merge),
    )
    .unwrap();
    let db = || {
        let client = Arc::new(
            ClientStorage::connect(&server.local_addr().to_string(), ClientOptions::new()).unwrap(),
        );
        let db = Database::open(Arc::clone(&client) as Arc<dyn Storage>).unwrap();
        (db, client)
    };
    let ((a, _), (b, b_client)) = (db(), db());
    Served {
        server,
        a,
        b,
        b_client,
    }
}

/// `a` adds 1 to a counter at 10 while `b` commits +5 in between: the value `a`
/// reads afterwards, and `a`'s commit stats.
fn conflicting_increments(s: &Served) -> (i64, zodiac_objects::CommitStats) {
    let mut a = s.a.connection();
    let hits: PRef<Hits> = a.transact(|tx| tx.add(Hits { n: 10 })).unwrap();
    s.b_client.sync().unwrap();
    let before = s.a.commit_stats();
    let mut first_attempt = true;
    a.transact(|tx| {
        tx.modify(&hits, |h| h.n += 1)?;
        if std::mem::take(&mut first_attempt) {
            s.b.connection()
                .transact(|tx| tx.modify(&hits, |h| h.n += 5))
                .unwrap();
        }
        Ok(())
    })
    .unwrap();
    let after = s.a.commit_stats();
    let n = a.transact(|tx| Ok(tx.get(&hits)?.n)).unwrap();
    let stats = zodiac_objects::CommitStats {
        commits: after.commits - before.commits,
        conflicts_resolved: after.conflicts_resolved - before.conflicts_resolved,
        conflicts_unresolved: after.conflicts_unresolved - before.conflicts_unresolved,
    };
    (n, stats)
}

#[test]
fn a_server_with_the_types_merges_merges_the_conflict_in_the_first_commit() {
    let mut merges = Merges::new();
    merges.register::<Hits>();
    let s = serve(Some(merges.into_merge_fn()));
    let here = merges_here();
    let (n, stats) = conflicting_increments(&s);
    assert_eq!(n, 16, "the merged state, not the stored 11");
    assert_eq!(merges_here(), here, "the client merged it itself");
    assert_eq!(
        (
            stats.commits,
            stats.conflicts_resolved,
            stats.conflicts_unresolved
        ),
        (1, 1, 0)
    );
    s.server.shutdown();
}

#[test]
fn without_the_servers_merges_the_client_merges_and_commits_again() {
    let s = serve(None);
    let here = merges_here();
    let (n, stats) = conflicting_increments(&s);
    assert_eq!(n, 16);
    assert_eq!(merges_here(), here + 1);
    assert_eq!(
        (
            stats.commits,
            stats.conflicts_resolved,
            stats.conflicts_unresolved
        ),
        (1, 1, 0)
    );
    s.server.shutdown();
}

/// A server whose registry lacks the type (another build, another version of the
/// type) leaves the conflict to the client, which merges it.
#[test]
fn a_type_the_server_does_not_know_is_merged_by_the_client() {
    let s = serve(Some(Merges::new().into_merge_fn()));
    let here = merges_here();
    let (n, _) = conflicting_increments(&s);
    assert_eq!(n, 16);
    assert_eq!(merges_here(), here + 1);
    s.server.shutdown();
}
