//! The wire protocol's frame reader and message decoders (storage/src/net/protocol/):
//! frames read one after another from the bytes under the handshake or the normal
//! limit, each payload decoded as a client and as a server message, checked against
//! the named limits, and the wire values converted to the storage's own. Any bytes:
//! a message or a clear error, never a panic; what decodes encodes back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zodiac_storage::protocol::{
    self, ClientMessage, FRAME_BYTES_MAX, HANDSHAKE_FRAME_BYTES_MAX, Response, ServerMessage,
};
use zodiac_storage::{Error, TransactionInfo, TransactionMeta};

/// Most frames read from one input.
const FRAMES_MAX: usize = 32;

fuzz_target!(|input: &[u8]| {
    let (flags, body) = zodiac_fuzz::split(input);
    if flags & 1 != 0 {
        // The bytes as one payload, without the frame's length prefix.
        payload(body);
        return;
    }
    let max = if flags & 2 != 0 {
        HANDSHAKE_FRAME_BYTES_MAX
    } else {
        FRAME_BYTES_MAX
    };
    let mut reader = body;
    for _ in 0..FRAMES_MAX {
        let before = reader.len();
        match protocol::read_frame(&mut reader, max) {
            Ok(p) => {
                assert!(p.len() <= max);
                assert_eq!(before - reader.len(), p.len() + 4, "read past its frame");
                payload(&p);
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                break;
            }
        }
    }
});

fn payload(p: &[u8]) {
    if let Ok(m) = protocol::decode::<ClientMessage>(p) {
        let _ = m.check();
        let again = protocol::encode(&m);
        assert_eq!(
            protocol::decode::<ClientMessage>(&again[4..]).ok(),
            Some(m.clone())
        );
        if let ClientMessage::Begin { meta, .. } = m {
            let _ = TransactionMeta::from(meta);
        }
    }
    if let Ok(m) = protocol::decode::<ServerMessage>(p) {
        let _ = m.check();
        let again = protocol::encode(&m);
        assert_eq!(
            protocol::decode::<ServerMessage>(&again[4..]).ok(),
            Some(m.clone())
        );
        if let ServerMessage::Reply { result, .. } = m {
            convert(result);
        }
    }
}

/// What a client makes of a reply's values.
fn convert(result: Result<Response, protocol::WireError>) {
    match result {
        Err(e) => assert!(!Error::from(e).to_string().is_empty()),
        Ok(Response::Transactions { page, .. }) => {
            for t in page {
                let _ = TransactionInfo::from(t);
            }
        }
        Ok(Response::Packed(report)) => {
            let _ = zodiac_storage::PackReport::from(report);
        }
        Ok(_) => {}
    }
}
