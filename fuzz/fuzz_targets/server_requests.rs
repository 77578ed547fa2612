//! The server's handling of what a client sends (storage/src/net/server/ and the
//! server's half of the handshake): the bytes go over a real TCP connection to a
//! `Server` serving a memory storage, after a valid `Hello` and `Auth` (flags bit 0
//! clear) or instead of them (bit 0 set). The server must answer or close the
//! connection with a log line, never panic (the fuzzer's panic hook aborts on a
//! panic in any of its threads), and close the connection once the client has
//! finished sending and every reply is written.
#![no_main]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use zodiac_storage::protocol::{self, ClientMessage, MAGIC, PROTOCOL_VERSION};
use zodiac_storage::{MemoryStorage, Server, ServerOptions, Storage};

/// Inputs served by one server before it is replaced by a fresh one (the memory
/// storage keeps every revision the inputs commit).
const INPUTS_PER_SERVER: u64 = 2000;

/// How long the server may take to close the connection after the input ended.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

struct Served {
    server: Server,
    inputs: u64,
}

static SERVED: Mutex<Option<Served>> = Mutex::new(None);

fn address() -> String {
    let mut served = SERVED.lock().unwrap_or_else(|e| e.into_inner());
    if served
        .as_ref()
        .is_some_and(|s| s.inputs >= INPUTS_PER_SERVER)
        && let Some(old) = served.take()
    {
        old.server.shutdown();
    }
    let s = served.get_or_insert_with(|| {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let options = ServerOptions::new().handshake_timeout(Duration::from_secs(2));
        Served {
            server: Server::start(storage, "127.0.0.1:0", options).expect("start the server"),
            inputs: 0,
        }
    });
    s.inputs += 1;
    s.server.local_addr().to_string()
}

fn handshake() -> Vec<u8> {
    let mut bytes = protocol::encode(&ClientMessage::Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        read_only: false,
        fresh: true,
        last_tid: 0,
    });
    bytes.extend(protocol::encode(&ClientMessage::Auth { mac: None }));
    bytes
}

fuzz_target!(|input: &[u8]| {
    let (flags, body) = zodiac_fuzz::split(input);
    let mut stream = TcpStream::connect(address()).expect("connect to the server");
    stream.set_read_timeout(Some(CLOSE_WAIT)).expect("timeout");
    let mut bytes = if flags & 1 == 0 {
        handshake()
    } else {
        Vec::new()
    };
    bytes.extend_from_slice(body);
    // The server may close early (a bad frame): a failed write is an answer too.
    let _ = stream.write_all(&bytes);
    let _ = stream.shutdown(Shutdown::Write);
    let mut replies = Vec::new();
    match stream.read_to_end(&mut replies) {
        Ok(_) => {}
        // Closed with input unread (a bad frame): what it wrote may be lost.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
        Err(e) => panic!("the server did not close the connection after the input: {e}"),
    }
    // What it answered is well-formed frames.
    let mut reader = &replies[..];
    while !reader.is_empty() {
        let payload = protocol::read_frame(&mut reader, protocol::FRAME_BYTES_MAX)
            .expect("the server writes whole frames");
        protocol::decode::<protocol::ServerMessage>(&payload).expect("the server writes messages");
    }
});
