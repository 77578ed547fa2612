//! PostgreSQL stores: opening `postgres://URL` (schema from `?schema=NAME`,
//! default `zodiac`) and `zodiac pg init URL` / `zodiac pg verify URL`.
//! Without the `postgres` feature every such command says how to get it.

use std::sync::Arc;

use anyhow::Result;
use zodiac_storage::Storage;

#[cfg(feature = "postgres")]
mod enabled {
    use super::*;
    use anyhow::{Context, bail};
    use zodiac_storage::{PgOptions, PgStorage, url_without_password as shown};

    /// Opens the PostgreSQL store; its tables are created only when `create`.
    pub fn open(store: &str, create: bool) -> Result<Arc<dyn Storage>> {
        let mut options = PgOptions::from_url(store);
        options.create = create;
        let storage =
            PgStorage::open(options).with_context(|| format!("opening {}", shown(store)))?;
        Ok(Arc::new(storage))
    }

    /// `zodiac pg init URL`: creates the schema's tables unless they exist.
    pub fn init(url: &str) -> Result<()> {
        let options = PgOptions::from_url(url);
        if zodiac_storage::pg_init(&options)? {
            println!(
                "created the Zodiac tables in schema {} (schema version {})",
                options.schema,
                zodiac_storage::PG_SCHEMA_VERSION
            );
        } else {
            println!(
                "schema {} already holds the Zodiac tables; nothing changed",
                options.schema
            );
        }
        Ok(())
    }

    /// `zodiac pg verify URL`: checks the schema's invariants; fails on any problem.
    pub fn verify(url: &str) -> Result<()> {
        let mut options = PgOptions::from_url(url);
        options.create = false;
        let storage = PgStorage::open(options)?;
        let report = storage.verify()?;
        println!(
            "{} transactions, {} revisions, {} objects",
            report.transactions, report.revisions, report.objects
        );
        for problem in &report.problems {
            println!("problem: {problem}");
        }
        if !report.problems.is_empty() {
            bail!(
                "{} invariants broken; restore the database from a backup (pg_dump)",
                report.problems.len()
            );
        }
        println!("ok");
        Ok(())
    }
}

#[cfg(feature = "postgres")]
pub use enabled::{init, open, verify};

#[cfg(not(feature = "postgres"))]
mod disabled {
    use super::*;

    const UNAVAILABLE: &str =
        "this zodiac was built without PostgreSQL support: rebuild it with `--features postgres`";

    pub fn open(_store: &str, _create: bool) -> Result<Arc<dyn Storage>> {
        anyhow::bail!(UNAVAILABLE)
    }

    pub fn init(_url: &str) -> Result<()> {
        anyhow::bail!(UNAVAILABLE)
    }

    pub fn verify(_url: &str) -> Result<()> {
        anyhow::bail!(UNAVAILABLE)
    }
}

#[cfg(not(feature = "postgres"))]
pub use disabled::{init, open, verify};
