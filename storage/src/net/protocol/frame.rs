//! Framing: every message travels as one frame, a u32 little-endian payload length
//! followed by that many bytes of postcard (docs/protocol.md, "Frames").
//!
//! Invariants:
//! - A frame's length is checked against the limit in force (handshake or normal)
//!   before any byte of its payload is read; the payload buffer grows only with
//!   bytes actually received.
//! - [`read_frame`] returns a payload only whole, and reads nothing past it.
//! - [`read_frame_reserving`] asks for room for every payload byte before
//!   buffering it, at most [`FRAME_CHUNK_BYTES`] at a time (never for the length
//!   the frame announces); refused, it has buffered at most
//!   [`FRAME_PREFIX_BYTES`] of the payload.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::pending::RECORD_BYTES_MAX;

/// Largest frame payload once the handshake is done: one object revision of the
/// largest size plus room for the rest of the message.
pub const FRAME_BYTES_MAX: usize = RECORD_BYTES_MAX + (2 << 20);
/// Largest frame payload during the handshake, before the peer is authenticated.
pub const HANDSHAKE_FRAME_BYTES_MAX: usize = 4096;

/// Bytes of a payload [`read_frame_reserving`] asks room for at a time.
pub const FRAME_CHUNK_BYTES: usize = 64 << 10;
/// Bytes of a payload [`read_frame_reserving`] reads first, before asking for room
/// for them: enough to tell what the frame is (its message's variant and the id or
/// transaction that follows it).
pub const FRAME_PREFIX_BYTES: usize = 16;

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
    let len = read_length(reader, max)?;
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

/// What [`read_frame_reserving`] read.
#[derive(Debug)]
pub enum ReservedFrame {
    /// The whole payload, room for every byte of it granted.
    Payload(Vec<u8>),
    /// Room was refused: the payload's first bytes (at most
    /// [`FRAME_PREFIX_BYTES`]) and how many bytes of it are still unread (for
    /// [`skip_payload`]).
    Refused {
        /// The payload's first bytes, read before room was asked for.
        prefix: Vec<u8>,
        /// Payload bytes not read yet.
        left: usize,
        /// The payload's length, as the frame announced it.
        len: usize,
    },
}

/// Reads one frame's payload as [`read_frame`] does, calling `reserve(n)` before
/// buffering each `n` more bytes (at most [`FRAME_CHUNK_BYTES`] at a time, the first
/// call for the prefix of at most [`FRAME_PREFIX_BYTES`] already read): the
/// reader's memory grows only with bytes that arrived and were granted room.
pub fn read_frame_reserving(
    reader: &mut impl Read,
    max: usize,
    reserve: &mut dyn FnMut(usize) -> bool,
) -> Result<ReservedFrame, FrameError> {
    let len = read_length(reader, max)?;
    let mut payload = vec![0u8; len.min(FRAME_PREFIX_BYTES)];
    read_exactly(reader, &mut payload)?;
    if !reserve(payload.len()) {
        let left = len - payload.len();
        return Ok(ReservedFrame::Refused {
            prefix: payload,
            left,
            len,
        });
    }
    // The whole length's address space at once (its pages are touched only as
    // bytes arrive): growing by doubling would copy the payload, and hold it twice
    // for a moment. Where that much cannot be had, it grows as it goes.
    let _ = payload.try_reserve_exact(len - payload.len());
    while payload.len() < len {
        let chunk = (len - payload.len()).min(FRAME_CHUNK_BYTES);
        if !reserve(chunk) {
            // What was read is gone from the wire: the caller skips the rest.
            let left = len - payload.len();
            payload.truncate(FRAME_PREFIX_BYTES);
            payload.shrink_to_fit();
            return Ok(ReservedFrame::Refused {
                prefix: payload,
                left,
                len,
            });
        }
        let start = payload.len();
        payload.resize(start + chunk, 0);
        read_exactly(reader, &mut payload[start..])?;
    }
    debug_assert_eq!(payload.len(), len);
    Ok(ReservedFrame::Payload(payload))
}

/// Reads and drops `left` bytes (what is left of a refused frame), buffering at
/// most a few KiB at a time.
pub fn skip_payload(reader: &mut impl Read, left: usize) -> Result<(), FrameError> {
    let skipped =
        io::copy(&mut reader.take(left as u64), &mut io::sink()).map_err(FrameError::Io)?;
    if (skipped as usize) < left {
        return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(())
}

/// Reads a frame's length, refusing one over `max`.
fn read_length(reader: &mut impl Read, max: usize) -> Result<usize, FrameError> {
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
    Ok(len)
}

fn read_exactly(reader: &mut impl Read, buf: &mut [u8]) -> Result<(), FrameError> {
    reader.read_exact(buf).map_err(FrameError::Io)
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

    /// A frame read with room reserved asks for every payload byte, in chunks,
    /// never for the announced length; refused, it says how much is left unread,
    /// which skipping consumes exactly.
    #[test]
    fn a_reserving_read_asks_room_for_each_byte_as_it_arrives() {
        let len = FRAME_CHUNK_BYTES * 2 + 100;
        let mut input = (len as u32).to_le_bytes().to_vec();
        input.extend((0..len).map(|i| i as u8));
        input.extend_from_slice(&encode(&ClientMessage::Abort { txn: 1 }));
        let mut asked = Vec::new();
        let mut reader = &input[..];
        let read = read_frame_reserving(&mut reader, usize::MAX, &mut |n| {
            asked.push(n);
            true
        })
        .unwrap();
        let ReservedFrame::Payload(payload) = read else {
            panic!("refused")
        };
        assert_eq!(payload.len(), len);
        assert_eq!(asked.iter().sum::<usize>(), len);
        assert!(asked.iter().all(|&n| n <= FRAME_CHUNK_BYTES));
        // Granted room for the prefix and one chunk only.
        let mut granted = 0;
        let mut reader = &input[..];
        let read = read_frame_reserving(&mut reader, usize::MAX, &mut |_| {
            granted += 1;
            granted <= 2
        })
        .unwrap();
        let ReservedFrame::Refused { prefix, left, .. } = read else {
            panic!("not refused")
        };
        assert_eq!(prefix, input[4..4 + FRAME_PREFIX_BYTES]);
        assert_eq!(left, len - FRAME_PREFIX_BYTES - FRAME_CHUNK_BYTES);
        skip_payload(&mut reader, left).unwrap();
        let next = read_frame(&mut reader, 100).unwrap();
        assert_eq!(
            decode::<ClientMessage>(&next).unwrap(),
            ClientMessage::Abort { txn: 1 }
        );
        // A lying length: refused before anything is buffered past the prefix.
        let lying = [0xff, 0xff, 0xff, 0x0f, 1, 2, 3];
        assert!(matches!(
            read_frame_reserving(&mut &lying[..], usize::MAX, &mut |_| true),
            Err(FrameError::Io(_))
        ));
        assert!(matches!(
            read_frame_reserving(&mut &lying[..], 100, &mut |_| true),
            Err(FrameError::Bad(_))
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
