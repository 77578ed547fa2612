//! Connections: opening one (with the schema's `search_path`), a small pool of
//! read connections, and turning PostgreSQL errors into storage errors.
//!
//! Invariants:
//! - Every connection has `search_path` set to the storage's schema, JIT
//!   compilation off, and an `application_name` naming it, before any other
//!   statement.
//! - A connection found closed is dropped, never returned to the pool.
//! - A read that fails because its connection was cut is retried once on a new
//!   connection (reads have no effect), after dropping the idle connections (cut
//!   by the same event, most likely); a write is never retried here.

use parking_lot::Mutex;
use postgres::error::SqlState;
use postgres::{Client, NoTls};

use super::{PgOptions, Shared};
use crate::error::{Error, Result};

/// Read connections kept between calls.
const POOL_IDLE_MAX: usize = 8;

/// What `describe()` says: the URL without its password, and the schema.
pub(crate) fn describe(options: &PgOptions) -> String {
    let shown = crate::url_without_password(&options.url);
    format!("{shown} (schema {})", options.schema)
}

/// A new connection to `options.url`, its `search_path` set to the schema.
pub(crate) fn connect(options: &PgOptions, describe: &str) -> Result<Client> {
    let mut config: postgres::Config = options.url.parse().map_err(|e| Error::Postgres {
        target: describe.to_string(),
        what: format!(
            "not a PostgreSQL connection URL ({e}); write postgres://USER@HOST:PORT/DBNAME"
        ),
    })?;
    config.application_name(&format!("zodiac {}", options.schema));
    let mut client = config.connect(NoTls).map_err(|e| {
        let what = format!(
            "cannot connect ({}); check that PostgreSQL runs there and accepts this user",
            source_text(&e)
        );
        let target = describe.to_string();
        // The server's own refusal (authentication, no such database) stays
        // until someone fixes it; no answer at all, or a server starting up,
        // shutting down or full, is an outage to wait out.
        if e.as_db_error().is_some() && !e.code().is_some_and(is_outage_code) {
            Error::Postgres { target, what }
        } else {
            Error::PostgresDisconnected { target, what }
        }
    })?;
    client
        // JIT compilation costs milliseconds per statement and pays off only for
        // long analytic queries: the planner's guesses about the staging table
        // made it compile the commit's write statement every time (8 ms of 9).
        .batch_execute(&format!(
            "SET search_path TO {}; SET jit = off",
            options.schema
        ))
        .map_err(|e| failure(describe, "cannot select the schema", &e))?;
    Ok(client)
}

/// `e` as the storage reports it: [`Error::PostgresDisconnected`] when the
/// connection is gone (the caller retries later), else [`Error::Postgres`].
pub(crate) fn failure(describe: &str, step: &str, e: &postgres::Error) -> Error {
    let (target, what) = (describe.to_string(), format!("{step}: {}", source_text(e)));
    if is_cut_error(e) {
        Error::PostgresDisconnected { target, what }
    } else {
        Error::Postgres { target, what }
    }
}

/// The error's own text, with the server's message when there is one.
pub(crate) fn source_text(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut text = e.to_string();
            if let Some(source) = std::error::Error::source(e) {
                text = format!("{text}: {source}");
            }
            text
        }
    }
}

/// Whether `e` says the connection is gone (cut, terminated, server shut down).
pub(crate) fn is_cut(e: &postgres::Error, client: &Client) -> bool {
    client.is_closed() || is_cut_error(e)
}

/// Whether `e` itself says the connection is gone: closed, an I/O error, or the
/// server ending the session.
pub(crate) fn is_cut_error(e: &postgres::Error) -> bool {
    e.is_closed()
        || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
        || e.code().is_some_and(is_outage_code)
}

/// Whether the server's error `code` says it is going away or cannot take the
/// session yet: an administrator's or a crash's shutdown, a start-up or
/// shutdown in progress ("the database system is shutting down"), no free
/// connection slot. Each passes; the caller waits and retries.
fn is_outage_code(code: &SqlState) -> bool {
    [
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::TOO_MANY_CONNECTIONS,
    ]
    .contains(code)
}

/// Idle read connections.
#[derive(Default)]
pub(crate) struct Pool {
    idle: Mutex<Vec<Client>>,
}

impl Pool {
    pub fn put(&self, client: Client) {
        let mut idle = self.idle.lock();
        if !client.is_closed() && idle.len() < POOL_IDLE_MAX {
            idle.push(client);
        }
    }

    pub fn clear(&self) {
        self.idle.lock().clear();
    }

    fn take(&self, shared: &Shared) -> Result<Client> {
        let idle = self.idle.lock().pop();
        match idle {
            Some(client) if !client.is_closed() => Ok(client),
            _ => connect(&shared.options, &shared.describe),
        }
    }
}

/// Runs `read` on a pooled connection; retries it once on a fresh connection
/// when the first one turns out cut. `read`'s PostgreSQL errors become
/// [`Error::Postgres`] naming `what`.
pub(crate) fn with_read<T>(
    shared: &Shared,
    what: &str,
    mut read: impl FnMut(&mut Client) -> std::result::Result<T, postgres::Error>,
) -> Result<T> {
    for attempt in 0..2 {
        let mut client = shared.pool.take(shared)?;
        match read(&mut client) {
            Ok(value) => {
                shared.pool.put(client);
                return Ok(value);
            }
            Err(e) if attempt == 0 && is_cut(&e, &client) => {
                log::warn!(
                    "{}: a read connection was cut ({}); reconnecting",
                    shared.describe,
                    source_text(&e)
                );
                // Whatever cut it (a restart, a failover, the network, an
                // administrator) most likely cut the idle ones too: the retry
                // takes a new connection, not the next idle one.
                shared.pool.clear();
            }
            Err(e) => {
                let cut = is_cut(&e, &client);
                if !cut {
                    shared.pool.put(client);
                }
                let text = format!("{what} failed: {}", source_text(&e));
                return Err(if cut {
                    shared.disconnected(text)
                } else {
                    shared.error(text)
                });
            }
        }
    }
    unreachable!("the second attempt returns")
}
