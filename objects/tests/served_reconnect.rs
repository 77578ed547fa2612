//! A database over a client storage whose connection to the server was lost for
//! longer than the server's invalidation history: on reconnect the client storage
//! drops its cache and cuts off its subscribers, so the objects layer's connection
//! caches are dropped too and never serve a revision that changed meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use zodiac_objects::{Database, PRef, Persistent};
use zodiac_storage::{ClientOptions, ClientStorage, MemoryStorage, Server, ServerOptions, Storage};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Value {
    n: u64,
}
impl Persistent for Value {
    const TYPE_NAME: &'static str = "test.Value";
}

#[test]
fn a_reconnect_too_far_behind_drops_the_connection_caches() {
    let memory = Arc::new(MemoryStorage::new());
    let options = ServerOptions::new().invalidation_history(2);
    let server = Server::start(
        Arc::clone(&memory) as Arc<dyn Storage>,
        "127.0.0.1:0",
        options.clone(),
    )
    .unwrap();
    let address = server.local_addr();
    let client = Arc::new(
        ClientStorage::connect(
            &address.to_string(),
            ClientOptions::new()
                .reconnect_delay(Duration::from_millis(5), Duration::from_millis(50))
                .wait_timeout(Duration::from_secs(20)),
        )
        .unwrap(),
    );
    let db = Database::open(Arc::clone(&client) as Arc<dyn Storage>).unwrap();
    let mut idle = db.connection();
    let x: PRef<Value> = idle.transact(|tx| tx.add(Value { n: 0 })).unwrap();
    assert_eq!(idle.transact(|tx| Ok(tx.get(&x)?.n)).unwrap(), 0);

    // While the client is cut off from the server, x changes more times than the
    // server's history keeps (through a database on the served storage itself).
    server.shutdown();
    let direct = Database::open(Arc::clone(&memory) as Arc<dyn Storage>).unwrap();
    for n in 1..=5 {
        direct
            .connection()
            .transact(|tx| tx.modify(&x, |v| v.n = n))
            .unwrap();
    }
    let last = memory.last_tid();
    let server = Server::start(Arc::clone(&memory) as Arc<dyn Storage>, address, options).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(client.is_connected() && client.last_tid() == last) {
        assert!(Instant::now() < deadline, "the client did not reconnect");
        std::thread::sleep(Duration::from_millis(5));
    }

    assert_eq!(
        idle.transact(|tx| Ok(tx.get(&x)?.n)).unwrap(),
        5,
        "a stale x was served from the connection's cache"
    );
    // And the connection follows later commits again.
    db.connection()
        .transact(|tx| tx.modify(&x, |v| v.n = 6))
        .unwrap();
    assert_eq!(idle.transact(|tx| Ok(tx.get(&x)?.n)).unwrap(), 6);
    drop(idle);
    drop(db);
    client.close().unwrap();
    server.shutdown();
}
