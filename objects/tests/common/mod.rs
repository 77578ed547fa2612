//! Storages and types the objects tests share.
#![allow(dead_code)]

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zodiac_objects::{Database, DatabaseOptions, PRef, Persistent};
use zodiac_storage::{Durability, FileOptions, FileStorage, MemoryStorage, Storage};

/// Runs `check` against a memory storage and a file storage in a fresh directory.
/// The file storage runs without fsync: durability is the storage's own tests' job.
pub fn each_storage(check: impl Fn(Arc<dyn Storage>)) {
    check(Arc::new(MemoryStorage::new()));
    let dir = tempfile::tempdir().unwrap();
    let file = FileStorage::open(
        dir.path().join("data.zdc"),
        FileOptions::new().durability(Durability::Off),
    )
    .unwrap();
    check(Arc::new(file));
}

pub fn open(storage: Arc<dyn Storage>) -> Database {
    Database::open(storage).unwrap()
}

pub fn open_with(storage: Arc<dyn Storage>, edit: impl FnOnce(&mut DatabaseOptions)) -> Database {
    let mut options = DatabaseOptions::default();
    edit(&mut options);
    Database::open_with(storage, options).unwrap()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub owner: String,
    pub balance: i64,
}
zodiac_objects::persistent!(Account = "bank.Account");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bank {
    pub name: String,
    pub accounts: Vec<PRef<Account>>,
}
zodiac_objects::persistent!(Bank = "bank.Bank");

/// A tally whose concurrent increments merge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub count: i64,
}
impl Persistent for Tally {
    const TYPE_NAME: &'static str = "test.Tally";
    fn resolve_conflict(old: &Self, committed: &Self, mine: &Self) -> Option<Self> {
        Some(Tally {
            count: committed.count + mine.count - old.count,
        })
    }
}

/// A register whose concurrent changes merge only when one side left it alone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Register {
    pub value: String,
}
impl Persistent for Register {
    const TYPE_NAME: &'static str = "test.Register";
    fn resolve_conflict(old: &Self, committed: &Self, mine: &Self) -> Option<Self> {
        if mine == old {
            Some(committed.clone())
        } else if committed == old {
            Some(mine.clone())
        } else {
            None
        }
    }
}

/// Adds an account named in the root as `name`.
pub fn add_account(db: &Database, name: &str, balance: i64) -> PRef<Account> {
    db.transact(|tx| {
        let acct = tx.add(Account {
            owner: name.into(),
            balance,
        })?;
        tx.set_root_entry(name, acct)?;
        Ok(acct)
    })
    .unwrap()
}

pub fn balance(db: &Database, acct: PRef<Account>) -> i64 {
    db.transact(|tx| Ok(tx.get(&acct)?.balance)).unwrap()
}
