//! The handshake that opens every connection (docs/protocol.md, "Handshake"), both
//! halves: the client sends `Hello`, the server answers with a `Challenge`, the
//! client proves it knows the shared token in `Auth`, and the server sends the
//! invalidations the client missed and `Welcome` (or `Refused`, with why, at any
//! step). The shared pieces: the token proof and the version check.
//!
//! Invariants:
//! - Until the client is authenticated every frame is read under
//!   [`HANDSHAKE_FRAME_BYTES_MAX`]; the catch-up and `Welcome` that follow `Auth`
//!   come under [`FRAME_BYTES_MAX`].
//! - The server's half reads the whole handshake before one deadline, however
//!   slowly the bytes trickle in.
//! - A server may have two tokens: a client that proves the read-write one may
//!   commit, one that proves the read-only one may only read.
//! - The token never crosses the wire: the client answers a fresh random nonce
//!   with its HMAC-SHA-256 under the token, which the server compares in time
//!   independent of where the MACs differ.

use std::io::{self, BufReader, Read, Write};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::protocol::{
    self, CatchUp, ClientMessage, FRAME_BYTES_MAX, FrameError, HANDSHAKE_FRAME_BYTES_MAX, MAGIC,
    NONCE_BYTES, PROTOCOL_VERSION, PROTOCOL_VERSION_MIN, ServerMessage,
};
use super::transport::ReadHalf;
use crate::ids::Tid;

/// What a client says in `Hello`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hello {
    /// The protocol version the client speaks ([`PROTOCOL_VERSION`] for this build).
    pub(crate) version: u32,
    pub(crate) read_only: bool,
    /// The client has no cache and no snapshot yet: nothing to catch up.
    pub(crate) fresh: bool,
    /// The last tid the client has processed (its cache is current as of it).
    pub(crate) last_tid: Tid,
    /// The client proved the server's read-only token (the server's side only).
    pub(crate) token_read_only: bool,
}

/// The tokens a server checks `Auth` against.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Tokens<'a> {
    /// Proving it lets a client commit.
    pub(crate) read_write: Option<&'a [u8]>,
    /// Proving it lets a client only read.
    pub(crate) read_only: Option<&'a [u8]>,
}

impl Tokens<'_> {
    fn any(&self) -> bool {
        self.read_write.is_some() || self.read_only.is_some()
    }
}

impl Hello {
    /// A hello in this build's protocol version.
    #[cfg(test)]
    pub(crate) fn new(read_only: bool, fresh: bool, last_tid: Tid) -> Hello {
        Hello::speaking(PROTOCOL_VERSION, read_only, fresh, last_tid)
    }

    /// A hello in protocol `version` (an older one, to a server that refused this
    /// build's: see [`older_version_spoken`]).
    pub(crate) fn speaking(version: u32, read_only: bool, fresh: bool, last_tid: Tid) -> Hello {
        Hello {
            version,
            read_only,
            fresh,
            last_tid,
            token_read_only: false,
        }
    }

    fn message(&self) -> ClientMessage {
        ClientMessage::Hello {
            magic: MAGIC,
            version: self.version,
            read_only: self.read_only,
            fresh: self.fresh,
            last_tid: self.last_tid.0,
        }
    }
}

/// What the server's `Welcome` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Welcome {
    /// The newest tid whose invalidations the connection has been sent.
    pub(crate) last_tid: Tid,
    pub(crate) read_only: bool,
    pub(crate) catch_up: CatchUp,
    /// The served storage's identity (0: unknown).
    pub(crate) identity: u64,
}

impl Welcome {
    /// The message the server sends.
    pub(crate) fn message(&self) -> ServerMessage {
        ServerMessage::Welcome {
            last_tid: self.last_tid.0,
            read_only: self.read_only,
            catch_up: self.catch_up,
            identity: self.identity,
        }
    }
}

/// Why the client's half failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ClientFailure {
    /// Reading or writing failed: the connection, not what the server said.
    Io(String),
    /// The server sent something malformed or unexpected.
    Protocol(String),
    /// The server refused the connection, with its reason.
    Refused(String),
}

/// One invalidation frame of the catch-up: `(tid, oids, complete, data)`, as in
/// `ServerMessage::Invalidation`.
pub(crate) type CatchUpFrame = (Tid, Vec<u64>, bool, Vec<(u64, Vec<u8>)>);

/// The client's half: sends `hello`, answers the challenge with `token`, and
/// reads until `Welcome`, handing each catch-up invalidation before it to
/// `on_invalidation` (whose error is a protocol error).
pub(crate) fn client(
    reader: &mut impl Read,
    writer: &mut impl Write,
    hello: &Hello,
    token: Option<&[u8]>,
    on_invalidation: impl FnMut(CatchUpFrame) -> Result<(), String>,
) -> Result<Welcome, ClientFailure> {
    send_hello(writer, hello).map_err(|e| ClientFailure::Io(e.to_string()))?;
    answer_challenge(reader, writer, token)?;
    read_welcome(reader, on_invalidation)
}

/// Sends `hello`, the first frame of every connection.
pub(crate) fn send_hello(writer: &mut impl Write, hello: &Hello) -> io::Result<()> {
    protocol::write_frame(writer, &protocol::encode(&hello.message()))
}

/// Reads the server's `Challenge` and answers it with `Auth` (a MAC when the client
/// has a token).
fn answer_challenge(
    reader: &mut impl Read,
    writer: &mut impl Write,
    token: Option<&[u8]>,
) -> Result<(), ClientFailure> {
    let nonce = match read_server_message(reader, HANDSHAKE_FRAME_BYTES_MAX)? {
        ServerMessage::Challenge { nonce, .. } => nonce,
        ServerMessage::Refused { reason } => return Err(ClientFailure::Refused(reason)),
        other => return Err(unexpected(&other)),
    };
    let mac = token.map(|token| auth_mac(token, &nonce));
    protocol::write_frame(writer, &protocol::encode(&ClientMessage::Auth { mac }))
        .map_err(|e| ClientFailure::Io(e.to_string()))
}

/// Reads the catch-up invalidations and the `Welcome` that ends them.
fn read_welcome(
    reader: &mut impl Read,
    mut on_invalidation: impl FnMut(CatchUpFrame) -> Result<(), String>,
) -> Result<Welcome, ClientFailure> {
    loop {
        match read_server_message(reader, FRAME_BYTES_MAX)? {
            ServerMessage::Invalidation {
                tid,
                oids,
                complete,
                data,
            } => on_invalidation((Tid(tid), oids, complete, data))
                .map_err(ClientFailure::Protocol)?,
            ServerMessage::Welcome {
                last_tid,
                read_only,
                catch_up,
                identity,
            } => {
                return Ok(Welcome {
                    last_tid: Tid(last_tid),
                    read_only,
                    catch_up,
                    identity,
                });
            }
            ServerMessage::Refused { reason } => return Err(ClientFailure::Refused(reason)),
            other => return Err(unexpected(&other)),
        }
    }
}

/// One checked server message, the frame under `max`.
fn read_server_message(reader: &mut impl Read, max: usize) -> Result<ServerMessage, ClientFailure> {
    let payload =
        protocol::read_frame(reader, max).map_err(|e| ClientFailure::Io(e.to_string()))?;
    let message: ServerMessage =
        protocol::decode(&payload).map_err(|e| ClientFailure::Protocol(e.to_string()))?;
    message.check().map_err(ClientFailure::Protocol)?;
    Ok(message)
}

fn unexpected(message: &ServerMessage) -> ClientFailure {
    ClientFailure::Protocol(format!(
        "unexpected message during the handshake: {message:?}"
    ))
}

/// Why the server's half of a handshake failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ServeFailure {
    /// The client did not send its handshake in time (a port scanner, a stuck or
    /// hostile client): what it sent, worded to follow "client PEER", e.g. "sent no
    /// handshake within 2 s".
    Late(String),
    /// Anything else: the reason to log (the client was told it, when it could be).
    Refused(String),
}

/// The server's half up to the catch-up: reads `Hello`, checks its magic and
/// version, challenges and verifies the `Auth` against `tokens` (when the server
/// has any), all within `timeout`. Refusals go out through `send`, and come back
/// as `Err` with the reason to log. `Ok(None)`: the peer left before its `Hello`.
pub(crate) fn serve(
    reader: &mut BufReader<ReadHalf>,
    timeout: Duration,
    tokens: Tokens<'_>,
    send: &mut dyn FnMut(&ServerMessage),
) -> Result<Option<Hello>, ServeFailure> {
    let mut reader = DeadlineReader {
        inner: reader,
        deadline: Instant::now() + timeout,
    };
    let seconds = timeout.as_secs_f64();
    // A read timeout surfaces as EAGAIN ("os error 11") or TimedOut: said as such.
    let failed = |e: FrameError, late: String| match e {
        FrameError::Io(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            ServeFailure::Late(late)
        }
        e => ServeFailure::Refused(format!("during the handshake: {e}")),
    };
    let hello = match read_client_message(&mut reader) {
        Ok(m) => m,
        Err(FrameError::Closed) => return Ok(None),
        Err(e) => {
            return Err(failed(e, format!("sent no handshake within {seconds} s")));
        }
    };
    let ClientMessage::Hello {
        magic,
        version,
        read_only,
        fresh,
        last_tid,
    } = hello
    else {
        return Err(ServeFailure::Refused(refuse(
            send,
            "the first message must be Hello".into(),
        )));
    };
    if magic != MAGIC {
        return Err(ServeFailure::Refused(
            "not a Zodiac client (wrong magic number)".into(),
        ));
    }
    check_version(version).map_err(|reason| ServeFailure::Refused(refuse(send, reason)))?;
    let nonce = random_nonce();
    send(&ServerMessage::Challenge {
        nonce,
        auth_required: tokens.any(),
    });
    let auth = read_client_message(&mut reader).map_err(|e| {
        failed(
            e,
            format!("sent Hello but no Auth within {seconds} s (the handshake timeout)"),
        )
    })?;
    let ClientMessage::Auth { mac } = auth else {
        return Err(ServeFailure::Refused(refuse(
            send,
            "the second message must be Auth".into(),
        )));
    };
    let token_read_only = verify(tokens, &nonce, mac)
        .map_err(|reason| ServeFailure::Refused(refuse(send, reason)))?;
    Ok(Some(Hello {
        version,
        read_only,
        fresh,
        last_tid: Tid(last_tid),
        token_read_only,
    }))
}

/// Tells the client why it is refused; the reason, to log.
fn refuse(send: &mut dyn FnMut(&ServerMessage), reason: String) -> String {
    send(&ServerMessage::Refused {
        reason: reason.clone(),
    });
    reason
}

fn read_client_message(reader: &mut impl Read) -> Result<ClientMessage, FrameError> {
    let payload = protocol::read_frame(reader, HANDSHAKE_FRAME_BYTES_MAX)?;
    protocol::decode(&payload)
}

/// Refuses a client of a protocol version this build does not speak, naming both.
/// Versions [`PROTOCOL_VERSION_MIN`] to [`PROTOCOL_VERSION`] are served. The
/// reason's wording, "(this server speaks version N)", is what every server since
/// version 1 sends, and what [`older_version_spoken`] reads.
pub(crate) fn check_version(version: u32) -> Result<(), String> {
    if (PROTOCOL_VERSION_MIN..=PROTOCOL_VERSION).contains(&version) {
        return Ok(());
    }
    Err(format!(
        "protocol version {version} is not supported (this server speaks version \
         {PROTOCOL_VERSION}); upgrade the older side"
    ))
}

/// The version a server that refused this build's version speaks, when this build
/// speaks it too (an older one, from [`PROTOCOL_VERSION_MIN`]): the client then
/// connects again in that version. Read from the refusal's reason, the only place
/// servers of those versions name it.
pub(crate) fn older_version_spoken(reason: &str) -> Option<u32> {
    let (_, after) = reason.split_once("(this server speaks version ")?;
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    let version: u32 = digits.parse().ok()?;
    (PROTOCOL_VERSION_MIN..PROTOCOL_VERSION)
        .contains(&version)
        .then_some(version)
}

/// Whether `mac` proves the client knows one of `tokens` (anything does when the
/// server has none): `Ok(true)` for the read-only token, `Ok(false)` for the
/// read-write one (or no token at all).
fn verify(
    tokens: Tokens<'_>,
    nonce: &[u8; NONCE_BYTES],
    mac: Option<[u8; NONCE_BYTES]>,
) -> Result<bool, String> {
    if !tokens.any() {
        return Ok(false);
    }
    let Some(mac) = mac else {
        return Err(concat!(
            "authentication failed: this server requires a token and the client gave none; ",
            "give the server's token file with `--token-file FILE`"
        )
        .into());
    };
    // Both compared, whichever matches, so the time taken does not tell which.
    let proves =
        |token: Option<&[u8]>| token.is_some_and(|t| macs_equal(&mac, &auth_mac(t, nonce)));
    let (read_write, read_only) = (proves(tokens.read_write), proves(tokens.read_only));
    if read_write {
        Ok(false)
    } else if read_only {
        Ok(true)
    } else {
        Err(concat!(
            "authentication failed: the client's token does not match the server's; ",
            "give the file the server was started with (`--token-file FILE`)"
        )
        .into())
    }
}

/// Reads with a read timeout of whatever is left before `deadline`.
struct DeadlineReader<'a> {
    inner: &'a mut BufReader<ReadHalf>,
    deadline: Instant,
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the handshake timeout passed",
            ));
        }
        self.inner.get_ref().socket().set_read_timeout(Some(left))?;
        self.inner.read(buf)
    }
}

/// HMAC-SHA-256 (RFC 2104) of `message` under `key`.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

/// The MAC a client answers a challenge with.
fn auth_mac(token: &[u8], nonce: &[u8; NONCE_BYTES]) -> [u8; 32] {
    let mut message = b"zodiac auth v1\0".to_vec();
    message.extend_from_slice(nonce);
    hmac_sha256(token, &message)
}

/// Compares two MACs in time independent of where they differ.
fn macs_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh random nonce.
fn random_nonce() -> [u8; NONCE_BYTES] {
    let mut nonce = [0u8; NONCE_BYTES];
    nonce[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    nonce[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    nonce
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;
    use std::sync::Arc;

    use super::*;
    use crate::memory::MemoryStorage;
    use crate::net::{Server, ServerOptions};

    /// A client of a version older than the oldest this build speaks is refused at
    /// the handshake, with a reason naming both versions; one of the oldest spoken
    /// is served (version 5 only added a request).
    #[test]
    fn a_client_of_another_protocol_version_is_refused_naming_both() {
        let server = Server::start(
            Arc::new(MemoryStorage::new()),
            "127.0.0.1:0",
            ServerOptions::new(),
        )
        .unwrap();
        let handshake = |version: u32| {
            let mut stream = TcpStream::connect(server.local_addr()).unwrap();
            let hello = Hello::speaking(version, false, true, Tid::ZERO);
            let mut reader = stream.try_clone().unwrap();
            client(&mut reader, &mut stream, &hello, None, |_| Ok(()))
        };
        let too_old = PROTOCOL_VERSION_MIN - 1;
        let refused = handshake(too_old);
        let Err(ClientFailure::Refused(reason)) = refused else {
            panic!("not refused: {refused:?}");
        };
        assert!(
            reason.contains(&format!("protocol version {too_old} "))
                && reason.contains(&format!("speaks version {PROTOCOL_VERSION})")),
            "{reason}"
        );
        let welcome = handshake(PROTOCOL_VERSION_MIN).unwrap();
        assert_eq!(welcome.catch_up, CatchUp::Fresh);
        server.shutdown();
    }

    /// A client learns the version of a server that refused its own from the
    /// refusal, as every server since version 1 words it, and speaks it when it can.
    #[test]
    fn an_older_servers_version_is_read_from_its_refusal() {
        let refusal = |v: u32| {
            format!(
                "protocol version {PROTOCOL_VERSION} is not supported (this server speaks \
                 version {v}); upgrade the older side"
            )
        };
        assert_eq!(
            older_version_spoken(&refusal(PROTOCOL_VERSION_MIN)),
            Some(PROTOCOL_VERSION_MIN)
        );
        assert_eq!(
            older_version_spoken(&refusal(PROTOCOL_VERSION_MIN - 1)),
            None
        );
        assert_eq!(older_version_spoken(&refusal(PROTOCOL_VERSION)), None);
        assert_eq!(older_version_spoken("authentication failed"), None);
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
    /// The client's half against the server's: the right token gets a `Welcome`
    /// for a fresh client, a wrong or missing one is refused with the reason.
    #[test]
    fn the_halves_agree_on_the_token_proof() {
        let server = Server::start(
            Arc::new(MemoryStorage::new()),
            "127.0.0.1:0",
            ServerOptions::new().token(Some(b"secret".to_vec())),
        )
        .unwrap();
        let handshake = |token: Option<&[u8]>| {
            let mut stream = TcpStream::connect(server.local_addr()).unwrap();
            let mut reader = stream.try_clone().unwrap();
            let hello = Hello::new(false, true, Tid::ZERO);
            client(&mut reader, &mut stream, &hello, token, |_| Ok(()))
        };
        let welcome = handshake(Some(b"secret")).unwrap();
        assert_eq!(welcome.catch_up, CatchUp::Fresh);
        assert_eq!(welcome.last_tid, Tid::ZERO);
        // A missing token is told apart from a wrong one: it used to be told that
        // its token "does not match", which it never sent.
        for (wrong, says) in [
            (Some(&b"guess"[..]), "does not match"),
            (None, "requires a token and the client gave none"),
        ] {
            let Err(ClientFailure::Refused(reason)) = handshake(wrong) else {
                panic!("not refused with {wrong:?}");
            };
            assert!(reason.contains("authentication failed"), "{reason}");
            assert!(
                reason.contains(says) && reason.contains("--token-file"),
                "{reason}"
            );
        }
        server.shutdown();
    }

    /// The handshake timeout used to be logged as "Resource temporarily unavailable
    /// (os error 11)", the EAGAIN of the socket's read timeout.
    #[test]
    fn a_handshake_timeout_is_reported_as_such() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(crate::net::transport::plain_halves(stream).unwrap().0);
        let timeout = Duration::from_millis(200);
        let failed = serve(&mut reader, timeout, Tokens::default(), &mut |_| {}).unwrap_err();
        assert_eq!(
            failed,
            ServeFailure::Late("sent no handshake within 0.2 s".into())
        );
        // A Hello sent, the Auth never.
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, _) = listener.accept().unwrap();
        send_hello(&mut client, &Hello::new(false, true, Tid::ZERO)).unwrap();
        let mut reader = BufReader::new(crate::net::transport::plain_halves(stream).unwrap().0);
        let failed = serve(&mut reader, timeout, Tokens::default(), &mut |_| {}).unwrap_err();
        assert_eq!(
            failed,
            ServeFailure::Late(
                "sent Hello but no Auth within 0.2 s (the handshake timeout)".into()
            )
        );
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first.
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }
}
