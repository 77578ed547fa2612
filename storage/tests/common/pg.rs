//! PostgreSQL test schemas: each test gets a fresh schema in the database named
//! by ZODIAC_TEST_POSTGRES, dropped when the test ends. Without the variable the
//! factories say they skipped and return `None`.

use std::sync::atomic::{AtomicU64, Ordering};

use zodiac_storage::{PgOptions, PgStorage};

use super::Subject;

/// The variable naming the test database.
pub const VARIABLE: &str = "ZODIAC_TEST_POSTGRES";

/// A schema that exists for one test; dropping it drops the schema and its tables.
pub struct TempSchema {
    pub url: String,
    pub name: String,
}

impl TempSchema {
    /// A fresh, not yet created, schema name, or `None` (printed) without the variable.
    pub fn new() -> Option<TempSchema> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let Ok(url) = std::env::var(VARIABLE) else {
            eprintln!("skipped PostgreSQL: set {VARIABLE}");
            return None;
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "zt_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            nanos % 1_000_000
        );
        Some(TempSchema { url, name })
    }

    /// Options for this schema, with a short poll interval.
    pub fn options(&self) -> PgOptions {
        let mut options = PgOptions::new(self.url.clone()).schema(self.name.clone());
        options.poll_interval = std::time::Duration::from_millis(200);
        options
    }

    /// Opens (creating on first open) a storage on this schema.
    pub fn open(&self) -> PgStorage {
        PgStorage::open(self.options())
            .unwrap_or_else(|e| panic!("opening PostgreSQL schema {}: {e}", self.name))
    }

    /// A direct connection to the test database, for inspecting or sabotaging.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls)
            .expect("connecting to the test database")
    }
}

impl Drop for TempSchema {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(&self.url, postgres::NoTls) {
            let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
        }
    }
}

/// A fresh PostgreSQL storage in its own schema, or `None` without the variable.
pub fn storage() -> Option<Subject> {
    let schema = TempSchema::new()?;
    let storage = schema.open();
    Some(Subject::guarded(storage, Box::new(schema)))
}
