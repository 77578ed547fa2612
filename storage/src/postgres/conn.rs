//! Connections: opening one (with the schema's `search_path`), a small pool of
//! read connections, and turning PostgreSQL errors into storage errors.
//!
//! Invariants:
//! - Every connection has `search_path` set to the storage's schema and an
//!   `application_name` naming it, before any other statement.
//! - A connection found closed is dropped, never returned to the pool.
//! - A read that fails because its connection was cut is retried once on a new
//!   connection (reads have no effect); a write is never retried here.

use parking_lot::Mutex;
use postgres::error::SqlState;
use postgres::{Client, NoTls};

use super::{PgOptions, Shared};
use crate::error::{Error, Result};

/// Read connections kept between calls.
const POOL_IDLE_MAX: usize = 8;

/// What `describe()` says: the URL without its password, and the schema.
pub(crate) fn describe(options: &PgOptions) -> String {
    let url = &options.url;
    let shown = match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.clone(),
            }
        }
        _ => url.clone(),
    };
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
    let mut client = config.connect(NoTls).map_err(|e| Error::Postgres {
        target: describe.to_string(),
        what: format!(
            "cannot connect ({}); check that PostgreSQL runs there and accepts this user",
            source_text(&e)
        ),
    })?;
    client
        .batch_execute(&format!("SET search_path TO {}", options.schema))
        .map_err(|e| Error::Postgres {
            target: describe.to_string(),
            what: format!("cannot select the schema: {}", source_text(&e)),
        })?;
    Ok(client)
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
        || matches!(
            e.code(),
            Some(c) if *c == SqlState::ADMIN_SHUTDOWN || *c == SqlState::CRASH_SHUTDOWN
        )
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
            }
            Err(e) => {
                let cut = is_cut(&e, &client);
                if !cut {
                    shared.pool.put(client);
                }
                return Err(shared.error(format!("{what} failed: {}", source_text(&e))));
            }
        }
    }
    unreachable!("the second attempt returns")
}
