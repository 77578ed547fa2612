//! The two ends of a connection over real TCP on 127.0.0.1: the server's handling
//! of what a client sends (storage/src/net/server/, the server's half of the
//! handshake) and the client's handling of what a server sends
//! (storage/src/net/client/, the client's half). Neither may panic (a fuzzer's panic
//! hook aborts on a panic in any thread) nor hang.

use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use zodiac_storage::protocol::{
    self, CatchUp, ClientMessage, HANDSHAKE_FRAME_BYTES_MAX, NONCE_BYTES, Response, ServerMessage,
    WirePackReport,
};
use zodiac_storage::{
    ClientOptions, ClientStorage, MemoryStorage, Oid, Server, ServerOptions, Storage, Tid,
    TransactionMeta,
};

use super::file::with_flags;
use super::net::{client_frames, invalidation, transaction, welcome};

/// Inputs served by one server before a fresh one replaces it (its memory storage
/// keeps every revision the inputs commit).
const INPUTS_PER_SERVER: u64 = 2000;

/// How long a server may take to close a connection after its input ended, and a
/// fake server waits for the client's frames.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

struct Served {
    server: Server,
    inputs: u64,
}

static SERVED: Mutex<Option<Served>> = Mutex::new(None);

/// The address of the server of a memory storage the inputs go to, and how to ask
/// it how many connections it serves.
fn server_address() -> (String, impl Fn() -> usize) {
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
    let connections = || {
        let served = SERVED.lock().unwrap_or_else(|e| e.into_inner());
        served.as_ref().map_or(0, |s| s.server.connection_count())
    };
    (s.server.local_addr().to_string(), connections)
}

/// The bytes go to the server after a valid `Hello` and `Auth` (`flags` bit 0
/// clear) or in place of them (bit 0 set). The server answers with whole frames of
/// server messages and closes the connection once the input ended and every reply
/// is written (or at once, with a log line, on a bad frame).
pub fn server_requests(flags: u8, body: &[u8]) {
    let (address, connections) = server_address();
    let mut stream = TcpStream::connect(address).expect("connect to the server");
    stream.set_read_timeout(Some(CLOSE_WAIT)).expect("timeout");
    let mut bytes = if flags & 1 == 0 {
        client_frames()[..2].concat()
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
    let mut reader = &replies[..];
    while !reader.is_empty() {
        let payload = protocol::read_frame(&mut reader, protocol::FRAME_BYTES_MAX)
            .expect("the server writes whole frames");
        protocol::decode::<ServerMessage>(&payload).expect("the server writes messages");
    }
    // A closed connection is let go: its transactions aborted, its threads done.
    let deadline = std::time::Instant::now() + CLOSE_WAIT;
    while connections() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the server still counts a connection that ended"
        );
        thread::sleep(Duration::from_micros(100));
    }
}

/// A client storage connects to a fake server that answers `Hello` with a
/// `Challenge` and then sends the bytes: in place of the catch-up and `Welcome`
/// (`flags` bit 0 set), or after a `Welcome` once the client's first request came
/// (bit 0 clear), while the client runs the operation `flags >> 1` names. Then the
/// fake server closes the connection. The client returns a value or an error.
pub fn client_replies(flags: u8, body: &[u8]) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let catch_up = flags & 1 != 0;
    let body = body.to_vec();
    let server = thread::spawn(move || fake_server(listener, catch_up, &body));
    let options = ClientOptions::new()
        .wait_timeout(Duration::from_millis(5))
        .connect_timeout(Duration::from_secs(2))
        .reconnect_delay(Duration::from_millis(1), Duration::from_millis(5));
    if let Ok(client) = ClientStorage::connect(&address, options) {
        operation(&client, flags >> 1);
        let _ = client.close();
    }
    server.join().expect("the fake server ends");
}

/// One operation of the client, each waiting for a different reply.
fn operation(client: &ClientStorage, which: u8) {
    match which % 8 {
        0 => drop(client.load(Oid(1), Tid::MAX)),
        1 => drop(client.load_revision(Oid(1), Tid(5))),
        2 => drop(client.history(Oid(1), 10)),
        3 => {
            if let Ok(iter) = client.transactions(Tid(1), Tid::MAX) {
                iter.take(1000).for_each(drop);
            }
        }
        4 => drop(client.new_oid()),
        5 => {
            let meta = TransactionMeta::described("fuzz");
            let commit = client.begin(meta).and_then(|mut t| {
                t.store(Oid(1), Tid::ZERO, b"data".to_vec())?;
                t.finish()
            });
            drop(commit);
        }
        6 => drop(client.pack(Tid::MAX, false)),
        // Invalidations before a load at an older snapshot.
        _ => drop(client.load(Oid(2), Tid(3))),
    }
}

/// Accepts one connection, does the server's half of the handshake up to where the
/// input takes over, sends the input and closes.
fn fake_server(listener: TcpListener, catch_up: bool, body: &[u8]) {
    let Ok((stream, _)) = listener.accept() else {
        return;
    };
    // Reconnects find nobody listening.
    drop(listener);
    let _ = stream.set_read_timeout(Some(CLOSE_WAIT));
    let Ok(reading) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(reading);
    let mut writer = stream;
    if serve_until_input(&mut reader, &mut writer, catch_up).is_some() {
        let _ = writer.write_all(body);
    }
    let _ = writer.shutdown(Shutdown::Write);
    // Reads what the client still sends, so that closing does not reset the
    // connection before the client read the input.
    while protocol::read_frame(&mut reader, protocol::FRAME_BYTES_MAX).is_ok() {}
}

/// The handshake and, unless the input is the catch-up, a `Welcome` and the wait for
/// the client's first request. `None` when the client went away.
fn serve_until_input(
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
    catch_up: bool,
) -> Option<()> {
    let read = |reader: &mut BufReader<TcpStream>, max| {
        protocol::read_frame(reader, max)
            .ok()
            .and_then(|p| protocol::decode::<ClientMessage>(&p).ok())
    };
    read(reader, HANDSHAKE_FRAME_BYTES_MAX)?;
    let challenge = ServerMessage::Challenge {
        nonce: [7; NONCE_BYTES],
        auth_required: false,
    };
    writer.write_all(&protocol::encode(&challenge)).ok()?;
    read(reader, HANDSHAKE_FRAME_BYTES_MAX)?;
    if catch_up {
        return Some(());
    }
    let fresh = ServerMessage::Welcome {
        last_tid: 0,
        read_only: false,
        catch_up: CatchUp::Fresh,
        identity: 1,
    };
    writer.write_all(&protocol::encode(&fresh)).ok()?;
    loop {
        if let ClientMessage::Request { .. } = read(reader, protocol::FRAME_BYTES_MAX)? {
            return Some(());
        }
    }
}

/// Seeds of `server_requests`: every client message after the handshake.
pub fn server_seeds() -> Vec<Vec<u8>> {
    vec![with_flags(0, &client_frames()[2..].concat())]
}

/// Seeds of `client_replies`: per operation, an invalidation and the reply it waits
/// for; and a catch-up ending in a `Welcome`.
pub fn client_seeds() -> Vec<Vec<u8>> {
    let reply = |id, response| {
        protocol::encode(&ServerMessage::Reply {
            id,
            result: Ok(response),
        })
    };
    let answers = [
        reply(
            1,
            Response::Revision {
                tid: 4,
                data: b"r".to_vec(),
            },
        ),
        reply(1, Response::Data(b"d".to_vec())),
        reply(1, Response::History(vec![(4, 10)])),
        reply(
            1,
            Response::Transactions {
                page: vec![transaction()],
                more: false,
            },
        ),
        reply(1, Response::Oids(vec![1, 2, 3])),
        reply(
            2,
            Response::Finished {
                tid: 9,
                merged: vec![],
            },
        ),
        reply(1, Response::Packed(WirePackReport::default())),
        reply(
            1,
            Response::Revision {
                tid: 3,
                data: b"r".to_vec(),
            },
        ),
    ];
    let mut seeds: Vec<Vec<u8>> = answers
        .iter()
        .enumerate()
        .map(|(op, answer)| {
            let mut body = protocol::encode(&invalidation(2));
            body.extend_from_slice(answer);
            with_flags((op as u8) << 1, &body)
        })
        .collect();
    let mut catch_up = protocol::encode(&invalidation(3));
    catch_up.extend(protocol::encode(&welcome(4)));
    seeds.push(with_flags(1, &catch_up));
    seeds
}
