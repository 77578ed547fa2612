//! The client's handling of what a server sends (storage/src/net/client/ and the
//! client's half of the handshake): a `ClientStorage` connects to a fake server on
//! 127.0.0.1 that answers `Hello` with a `Challenge` and then sends the input's
//! bytes: in place of the catch-up and `Welcome` (flags bit 0 set), or after a
//! valid `Welcome` once the client's first request arrived (bit 0 clear), while the
//! client runs one operation chosen by the other flags. Then the fake server closes
//! the connection. The client must return a value or an error, never panic (the
//! fuzzer's panic hook aborts on a panic in any of its threads) nor hang.
#![no_main]

use std::io::{BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use zodiac_storage::protocol::{
    self, CatchUp, ClientMessage, HANDSHAKE_FRAME_BYTES_MAX, NONCE_BYTES, ServerMessage,
};
use zodiac_storage::{ClientOptions, ClientStorage, Oid, Storage, Tid, TransactionMeta};

/// How long the fake server waits for the client's frames.
const READ_WAIT: Duration = Duration::from_secs(5);

fuzz_target!(|input: &[u8]| {
    let (flags, body) = zodiac_fuzz::split(input);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let catch_up = flags & 1 != 0;
    let body = body.to_vec();
    let server = thread::spawn(move || fake_server(listener, catch_up, &body));
    let options = ClientOptions::new()
        .wait_timeout(Duration::from_millis(50))
        .connect_timeout(Duration::from_secs(2))
        .reconnect_delay(Duration::from_millis(1), Duration::from_millis(5));
    if let Ok(client) = ClientStorage::connect(&address, options) {
        operation(&client, flags >> 1);
        let _ = client.close();
    }
    let _ = server.join();
});

/// One operation of the client, each one a different reply it waits for.
fn operation(client: &ClientStorage, which: u8) {
    match which % 8 {
        0 => drop(client.load(Oid(1), Tid::MAX)),
        1 => drop(client.load_revision(Oid(1), Tid(5))),
        2 => drop(client.history(Oid(1), 10)),
        3 => {
            if let Ok(iter) = client.transactions(Tid(1), Tid::MAX) {
                for t in iter.take(1000) {
                    drop(t);
                }
            }
        }
        4 => drop(client.new_oid()),
        5 => {
            let commit = client
                .begin(TransactionMeta::described("fuzz"))
                .and_then(|mut t| {
                    t.store(Oid(1), Tid::ZERO, b"data".to_vec())?;
                    t.finish()
                });
            drop(commit);
        }
        6 => drop(client.pack(Tid::MAX, false)),
        _ => {
            // Invalidations only: the client waits for nothing but must follow them.
            thread::sleep(Duration::from_millis(2));
            drop(client.load(Oid(2), Tid(3)));
        }
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
    let _ = stream.set_read_timeout(Some(READ_WAIT));
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
    let welcome = ServerMessage::Welcome {
        last_tid: 0,
        read_only: false,
        catch_up: CatchUp::Fresh,
        identity: 1,
    };
    writer.write_all(&protocol::encode(&welcome)).ok()?;
    loop {
        if let ClientMessage::Request { .. } = read(reader, protocol::FRAME_BYTES_MAX)? {
            return Some(());
        }
    }
}
