//! Framing: every message travels as one frame, a u32 little-endian payload length
//! followed by that many bytes of postcard (docs/protocol.md, "Frames").
//!
//! Invariants:
//! - A frame's length is checked against the limit in force (handshake or normal)
//!   before any byte of its payload is read; the payload buffer grows only with
//!   bytes actually received.
//! - [`read_frame`] returns a payload only whole, and reads nothing past it.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::pending::RECORD_BYTES_MAX;

/// Largest frame payload once the handshake is done: one object revision of the
/// largest size plus room for the rest of the message.
pub const FRAME_BYTES_MAX: usize = RECORD_BYTES_MAX + (2 << 20);
/// Largest frame payload during the handshake, before the peer is authenticated.
pub const HANDSHAKE_FRAME_BYTES_MAX: usize = 4096;

/// Encodes `message` as one frame: u32 LE payload length, then the payload.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let mut frame = vec![0u8; 4];
    let mut frame = postcard::to_extend(message, std::mem::take(&mut frame))
        .expect("encoding to a Vec cannot fail");
    let len = u32::try_from(frame.len() - 4).expect("frames are far below 4 GiB");
    frame[..4].copy_from_slice(&len.to_le_bytes());
    frame
}

/// Why reading a frame failed.
#[derive(Debug)]
pub enum FrameError {
    /// The peer closed the connection at a frame boundary.
    Closed,
    /// Reading failed, or the connection ended inside a frame (`UnexpectedEof`).
    Io(io::Error),
    /// The frame is malformed or over the limit: the connection must be closed.
    Bad(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Closed => write!(f, "connection closed by the peer"),
            FrameError::Io(e) => write!(f, "{e}"),
            FrameError::Bad(what) => write!(f, "{what}"),
        }
    }
}

/// Reads one frame's payload, refusing a length over `max` before reading it.
pub fn read_frame(reader: &mut impl Read, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match reader.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(FrameError::Bad(format!(
            "frame of {len} bytes, over the limit of {max} bytes"
        )));
    }
    // Grows with the bytes that really arrive, so a lying length costs nothing.
    let mut payload = Vec::with_capacity(len.min(64 << 10));
    reader
        .take(len as u64)
        .read_to_end(&mut payload)
        .map_err(FrameError::Io)?;
    if payload.len() < len {
        return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(payload)
}

/// Decodes a payload read by [`read_frame`]: exactly one message, with no byte
/// after it (a frame with bytes left over was not written by a Zodiac peer).
pub fn decode<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, FrameError> {
    let (message, rest) = postcard::take_from_bytes(payload)
        .map_err(|e| FrameError::Bad(format!("undecodable frame: {e}")))?;
    if !rest.is_empty() {
        return Err(FrameError::Bad(format!(
            "undecodable frame: {} bytes after the message (a {}-byte frame)",
            rest.len(),
            payload.len()
        )));
    }
    Ok(message)
}

/// Writes one encoded frame.
pub fn write_frame(writer: &mut impl Write, frame: &[u8]) -> io::Result<()> {
    writer.write_all(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::protocol::{ClientMessage, Request, Response, ServerMessage};

    #[test]
    fn frames_round_trip_and_have_the_documented_layout() {
        let message = ClientMessage::Request {
            id: 7,
            request: Request::Load {
                oid: 1,
                snapshot: 300,
            },
        };
        let frame = encode(&message);
        // Variant 2 (Request), id 7, variant 1 (Load), oid 1, snapshot 300 = ac 02.
        assert_eq!(frame, vec![6, 0, 0, 0, 2, 7, 1, 1, 0xac, 0x02]);
        let payload = read_frame(&mut &frame[..], 100).unwrap();
        assert_eq!(decode::<ClientMessage>(&payload).unwrap(), message);
        // The version 2 requests, as docs/protocol.md shows them.
        let commit = ClientMessage::Request {
            id: 9,
            request: Request::Commit { txn: 5 },
        };
        assert_eq!(encode(&commit), vec![4, 0, 0, 0, 2, 9, 9, 5]);
        let new_oids = ClientMessage::Request {
            id: 3,
            request: Request::NewOids { count: 32 },
        };
        assert_eq!(encode(&new_oids), vec![4, 0, 0, 0, 2, 3, 8, 32]);
        let pack = ClientMessage::Request {
            id: 4,
            request: Request::Pack { tid: 300, gc: true },
        };
        assert_eq!(encode(&pack), vec![6, 0, 0, 0, 2, 4, 10, 0xac, 0x02, 1]);
        let oids = ServerMessage::Reply {
            id: 3,
            result: Ok(Response::Oids(vec![1, 2])),
        };
        assert_eq!(encode(&oids), vec![7, 0, 0, 0, 3, 3, 0, 8, 2, 1, 2]);
    }

    /// Bytes after a valid message in its frame were ignored: the frame is refused,
    /// naming how many bytes were left over.
    #[test]
    fn a_frame_with_bytes_after_its_message_is_refused() {
        let frame = encode(&ClientMessage::Abort { txn: 1 });
        let payload = &frame[4..];
        assert_eq!(
            decode::<ClientMessage>(payload).unwrap(),
            ClientMessage::Abort { txn: 1 }
        );
        for extra in [&[0u8][..], &[1, 2, 3]] {
            let mut longer = payload.to_vec();
            longer.extend_from_slice(extra);
            match decode::<ClientMessage>(&longer) {
                Err(FrameError::Bad(what)) => assert!(
                    what.contains(&format!("{} bytes after the message", extra.len())),
                    "{what}"
                ),
                other => panic!("trailing bytes accepted: {other:?}"),
            }
        }
    }

    #[test]
    fn frame_limit_is_checked_before_reading_at_its_boundary() {
        let frame = encode(&ClientMessage::Abort { txn: 1 });
        let len = frame.len() - 4;
        assert!(read_frame(&mut &frame[..], len).is_ok());
        match read_frame(&mut &frame[..], len - 1) {
            Err(FrameError::Bad(what)) => assert!(what.contains("over the limit"), "{what}"),
            other => panic!("expected an oversized frame, got {other:?}"),
        }
        // A huge announced length with no payload fails without allocating it.
        let lying = [0xff, 0xff, 0xff, 0x0f];
        assert!(matches!(
            read_frame(&mut &lying[..], usize::MAX),
            Err(FrameError::Io(_))
        ));
        assert!(matches!(
            read_frame(&mut &[][..], 10),
            Err(FrameError::Closed)
        ));
    }

    proptest::proptest! {
        // A frame is returned only whole and within the limit; nothing past it is read.
        #[test]
        fn read_frame_takes_exactly_one_frame_within_the_limit(
            len in 0u32..300,
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            max in 0usize..300,
        ) {
            let mut input = len.to_le_bytes().to_vec();
            input.extend_from_slice(&body);
            let mut reader = &input[..];
            match read_frame(&mut reader, max) {
                Ok(payload) => {
                    proptest::prop_assert!(len as usize <= max);
                    proptest::prop_assert_eq!(&payload[..], &body[..len as usize]);
                    proptest::prop_assert_eq!(reader.len(), body.len() - len as usize);
                }
                Err(FrameError::Bad(_)) => proptest::prop_assert!(len as usize > max),
                Err(FrameError::Io(_)) => {
                    proptest::prop_assert!((len as usize) <= max && body.len() < len as usize)
                }
                Err(FrameError::Closed) => proptest::prop_assert!(false, "input was not empty"),
            }
        }
    }
}
