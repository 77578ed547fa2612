//! A connection held idle while more commits happen than its subscription keeps:
//! its cache must not serve a revision that changed while it was cut off.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zodiac_objects::{Database, PRef, Persistent};
use zodiac_storage::{MemoryStorage, SUBSCRIPTION_EVENTS_MAX, Storage, Tid, TransactionMeta};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Value {
    n: u64,
}
impl Persistent for Value {
    const TYPE_NAME: &'static str = "test.Value";
}

#[test]
fn an_idle_connection_cut_off_from_commits_drops_its_cache() {
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let db = Database::open(Arc::clone(&storage)).unwrap();
    let mut idle = db.connection();
    let x: PRef<Value> = idle.transact(|tx| tx.add(Value { n: 0 })).unwrap();
    // The idle connection caches x.
    assert_eq!(idle.transact(|tx| Ok(tx.get(&x)?.n)).unwrap(), 0);

    // More commits than a subscription keeps (written straight to the storage, for
    // speed), then a change of x: its event is among those the idle connection misses.
    let filler = storage.new_oid().unwrap();
    let mut base = Tid::ZERO;
    for i in 0..SUBSCRIPTION_EVENTS_MAX as u64 {
        let mut t = storage.begin(TransactionMeta::default()).unwrap();
        t.store(filler, base, i.to_le_bytes().to_vec()).unwrap();
        base = t.finish().unwrap();
    }
    let mut other = db.connection();
    other.transact(|tx| tx.modify(&x, |v| v.n = 42)).unwrap();

    let before = idle.cache_stats().invalidations;
    assert_eq!(
        idle.transact(|tx| Ok(tx.get(&x)?.n)).unwrap(),
        42,
        "a stale x was served"
    );
    assert!(
        idle.cache_stats().invalidations > before,
        "the cache was not dropped"
    );
    // And the connection follows later commits again.
    other.transact(|tx| tx.modify(&x, |v| v.n = 43)).unwrap();
    assert_eq!(idle.transact(|tx| Ok(tx.get(&x)?.n)).unwrap(), 43);
}
