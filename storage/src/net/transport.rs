//! A connection's two halves, plain TCP or TLS (rustls, sync API): the reading
//! half one thread reads, the writing half any thread writes, at the same time,
//! as with a cloned `TcpStream`.
//!
//! Invariants:
//! - The TLS handshake is complete before the halves exist ([`tls_halves`]);
//!   after it, reads and writes only move application data (and the records
//!   rustls answers with).
//! - TLS records leave in the order rustls made them: whoever writes them to the
//!   socket holds `sending`, taken before the session lock is released.
//! - Nobody blocks on the socket while holding the session lock, and nobody waits
//!   for `sending` while holding it (the reader only tries it): a peer that stops
//!   reading can stall this side's writer, never its reader.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, MutexGuard};

/// Bytes read from the socket at a time by a TLS reading half.
const TLS_READ_BYTES: usize = 64 << 10;

/// One TLS session shared by both halves.
struct Session {
    conn: Mutex<rustls::Connection>,
    /// Held by whoever writes records taken from `conn` to the socket.
    sending: Mutex<()>,
}

/// The reading half of a connection.
pub(crate) struct ReadHalf {
    socket: TcpStream,
    tls: Option<TlsReading>,
}

/// A TLS reading half's state: records read from the socket, not yet fed.
struct TlsReading {
    session: Arc<Session>,
    raw: Vec<u8>,
    fed: usize,
}

/// The writing half of a connection; `&WriteHalf` writes too, from any thread.
pub(crate) struct WriteHalf {
    socket: TcpStream,
    tls: Option<Arc<Session>>,
}

/// The halves of a plain TCP connection.
pub(crate) fn plain_halves(stream: TcpStream) -> io::Result<(ReadHalf, WriteHalf)> {
    let writer = stream.try_clone()?;
    Ok((
        ReadHalf {
            socket: stream,
            tls: None,
        },
        WriteHalf {
            socket: writer,
            tls: None,
        },
    ))
}

/// Runs the TLS handshake of `conn` over `stream` before `deadline` (however
/// slowly the peer's bytes come), then returns the halves.
pub(crate) fn tls_halves(
    stream: TcpStream,
    mut conn: rustls::Connection,
    deadline: Instant,
) -> io::Result<(ReadHalf, WriteHalf)> {
    let mut timed = Timed {
        socket: &stream,
        deadline,
    };
    while conn.is_handshaking() {
        conn.complete_io(&mut timed)?;
    }
    // What the handshake left to send (a server's session tickets).
    while conn.wants_write() {
        conn.write_tls(&mut timed)?;
    }
    stream.set_read_timeout(None)?;
    let session = Arc::new(Session {
        conn: Mutex::new(conn),
        sending: Mutex::new(()),
    });
    let writer = stream.try_clone()?;
    Ok((
        ReadHalf {
            socket: stream,
            tls: Some(TlsReading {
                session: Arc::clone(&session),
                raw: Vec::new(),
                fed: 0,
            }),
        },
        WriteHalf {
            socket: writer,
            tls: Some(session),
        },
    ))
}

impl ReadHalf {
    /// The socket, for timeouts.
    pub(crate) fn socket(&self) -> &TcpStream {
        &self.socket
    }
}

impl WriteHalf {
    /// Closes both directions of the connection at once (no TLS close_notify:
    /// this is how the server cuts a connection).
    pub(crate) fn shutdown(&self) {
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

impl Read for ReadHalf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = &mut self.tls else {
            return self.socket.read(buf);
        };
        loop {
            {
                let mut conn = tls.session.conn.lock();
                match conn.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if tls.fed < tls.raw.len() {
                    let n = conn.read_tls(&mut &tls.raw[tls.fed..])?;
                    tls.fed += n;
                    let processed = conn.process_new_packets();
                    // Answers (alerts, key updates) go out now, or with the writer.
                    send_pending(&tls.session, &self.socket, conn)?;
                    processed.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    continue;
                }
            }
            tls.raw.resize(TLS_READ_BYTES, 0);
            tls.fed = 0;
            let n = match self.socket.read(&mut tls.raw) {
                Ok(n) => n,
                Err(e) => {
                    tls.raw.clear();
                    return Err(e);
                }
            };
            tls.raw.truncate(n);
            if n == 0 {
                // The peer closed: rustls says whether it did so cleanly.
                let mut conn = tls.session.conn.lock();
                conn.read_tls(&mut &[][..])?;
                conn.process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                return match conn.reader().read(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                    other => other,
                };
            }
        }
    }
}

impl Write for &WriteHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(session) = &self.tls else {
            return (&self.socket).write(buf);
        };
        if buf.is_empty() {
            return Ok(0);
        }
        let sending = session.sending.lock();
        let mut conn = session.conn.lock();
        let n = conn.writer().write(buf)?;
        drain(&self.socket, conn, sending, session)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &self.tls {
            None => (&self.socket).flush(),
            Some(_) => Ok(()),
        }
    }
}

impl Write for WriteHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self).flush()
    }
}

/// The reader's turn to send what `conn` has to (answers to what it read): only
/// if no one is sending, as whoever is sends these too before letting go.
fn send_pending<'a>(
    session: &'a Session,
    socket: &TcpStream,
    conn: MutexGuard<'a, rustls::Connection>,
) -> io::Result<()> {
    if !conn.wants_write() {
        return Ok(());
    }
    match session.sending.try_lock() {
        Some(sending) => drain(socket, conn, sending, session),
        None => Ok(()),
    }
}

/// Writes every record `conn` has to send, holding `sending`, with `conn` let go
/// while the socket takes them.
fn drain<'a>(
    socket: &TcpStream,
    mut conn: MutexGuard<'a, rustls::Connection>,
    sending: MutexGuard<'a, ()>,
    session: &'a Session,
) -> io::Result<()> {
    let mut records = Vec::new();
    loop {
        records.clear();
        while conn.wants_write() {
            conn.write_tls(&mut records)?;
        }
        if records.is_empty() {
            // Let go of `sending` under `conn`: a reader that found it taken
            // queued its records before this check, which then saw them.
            drop(sending);
            return Ok(());
        }
        drop(conn);
        let written = (&*socket).write_all(&records);
        conn = session.conn.lock();
        written?;
    }
}

/// The socket with a read timeout of whatever is left before a deadline.
struct Timed<'a> {
    socket: &'a TcpStream,
    deadline: Instant,
}

impl Read for Timed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the TLS handshake did not complete in time",
            ));
        }
        self.socket.set_read_timeout(Some(left))?;
        (&*self.socket).read(buf)
    }
}

impl Write for Timed<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.socket).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
