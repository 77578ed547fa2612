//! `zodiac dump`, `zodiac tail` and `zodiac history`: read-only views of a store.
//!
//! `dump` and `tail` name each object revision's type, read from its record's
//! envelope (docs/objects-format.md), as ZODB's fsdump does.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use serde_json::json;
use zodiac_objects::record;
use zodiac_storage::{FileOptions, Oid, Storage, Tid, TransactionInfo};

/// The type shown for a revision whose record is not an object envelope.
const NOT_AN_OBJECT: &str = "(not an object record)";
/// The type shown for a revision that could not be read.
const UNREADABLE: &str = "(unreadable)";

/// The type name in revision `tid` of `oid`, or why there is none.
fn type_of(storage: &dyn Storage, oid: Oid, tid: Tid) -> String {
    match storage.load_revision(oid, tid) {
        Ok(data) => record::type_name(&data)
            .unwrap_or(NOT_AN_OBJECT)
            .to_string(),
        Err(_) => UNREADABLE.to_string(),
    }
}

/// Parses a tid given as a number or as an RFC 3339 time.
pub fn parse_tid(text: &str) -> Result<Tid, String> {
    if let Ok(n) = text.parse::<u64>() {
        return Ok(Tid(n));
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(Tid::from_time)
        .map_err(|_| format!("{text:?} is neither a tid (a number) nor an RFC 3339 time"))
}

/// Parses a duration with a unit: `200ms`, `30s`, `5m`, `2h`, `7d`.
///
/// A leading `-` is refused with its own message: a duration is a length of
/// time (a TIME such as `--before -7d` is what may lie in the past). The command
/// line lets such a value reach this parser so that the user reads this, not
/// clap's hint to pass it after `--` (which would make it another argument).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    if let Some(rest) = text.strip_prefix('-') {
        return Err(if rest.starts_with(|c: char| c.is_ascii_digit()) {
            format!("{text:?}: a duration cannot be negative; give a length of time such as 30s")
        } else {
            format!("a duration (e.g. 30s) is expected here, not the option {text:?}")
        });
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 200ms, 30s, 5m, 2h, 7d)"))?;
    let millis = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{text:?} has no unit: use ms, s, m, h or d")),
    };
    Ok(std::time::Duration::from_millis(n.saturating_mul(millis)))
}

/// Parses a TIME: RFC 3339, or relative to now (`+30s`, `-7d`).
pub fn parse_time(text: &str) -> Result<Tid, String> {
    if text.starts_with("--") {
        return Err(format!(
            "a time (RFC 3339, or relative like -7d, +2h) is expected here, not the option {text:?}"
        ));
    }
    if let Some(rest) = text.strip_prefix('-') {
        let d = parse_duration(rest)?;
        return Ok(Tid(Tid::now().0.saturating_sub(d.as_micros() as u64)));
    }
    if let Some(rest) = text.strip_prefix('+') {
        let d = parse_duration(rest)?;
        return Ok(Tid(Tid::now().0.saturating_add(d.as_micros() as u64)));
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(Tid::from_time)
        .map_err(|_| format!("{text:?} is not a time (RFC 3339, or relative like -7d, +2h)"))
}

/// Parses an oid given in decimal or as 0x-prefixed hex.
pub fn parse_oid(text: &str) -> Result<Oid, String> {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed
        .map(Oid)
        .map_err(|_| format!("{text:?} is not an oid (decimal, or hex with 0x)"))
}

/// STORE opened for reading: a data file (without its writer lock), a server or
/// a PostgreSQL database.
fn open_any(store: &str) -> Result<Arc<dyn Storage>> {
    crate::store::open_store_read_only(store, &crate::store::Connect::default())
}

fn transaction_json(t: &TransactionInfo, types: &[String]) -> serde_json::Value {
    let extension: serde_json::Map<String, serde_json::Value> = t
        .meta
        .extension
        .iter()
        .map(|(k, v)| (k.clone(), json!(String::from_utf8_lossy(v))))
        .collect();
    json!({
        "tid": t.tid.0,
        "time": t.tid.to_rfc3339(),
        "user": t.meta.user,
        "description": t.meta.description,
        "extension": extension,
        "objects": t.changes.iter().zip(types).map(|(c, type_name)| {
            json!({"oid": c.oid.0, "type": type_name, "size": c.size})
        }).collect::<Vec<_>>(),
    })
}

fn print_transaction(t: &TransactionInfo, types: &[String]) {
    print!(
        "tid {} {}  user {:?}  {:?}",
        t.tid,
        t.tid.to_rfc3339(),
        t.meta.user,
        t.meta.description
    );
    for (k, v) in &t.meta.extension {
        print!("  {k}={:?}", String::from_utf8_lossy(v));
    }
    println!();
    for (c, type_name) in t.changes.iter().zip(types) {
        println!("    {}  {} bytes  {type_name}", c.oid, c.size);
    }
}

fn print_all(
    storage: &dyn Storage,
    transactions: impl Iterator<Item = Result<TransactionInfo>>,
    as_json: bool,
) -> Result<()> {
    for t in transactions {
        let t = t?;
        let types: Vec<String> = t
            .changes
            .iter()
            .map(|c| type_of(storage, c.oid, t.tid))
            .collect();
        if as_json {
            println!("{}", transaction_json(&t, &types));
        } else {
            print_transaction(&t, &types);
        }
    }
    Ok(())
}

/// Every transaction with `from <= tid <= to`: one JSON line each with `--json`.
pub fn dump(store: &str, from: Option<Tid>, to: Option<Tid>, as_json: bool) -> Result<()> {
    let storage = open_any(store)?;
    let walk = storage.transactions(from.unwrap_or(Tid::ZERO), to.unwrap_or(Tid::MAX))?;
    print_all(
        storage.as_ref(),
        walk.map(|t| t.map_err(anyhow::Error::from)),
        as_json,
    )
}

/// The last `n` transactions, oldest first.
pub fn tail(store: &str, n: usize, as_json: bool) -> Result<()> {
    if crate::store::is_server(store) || crate::store::is_postgres(store) {
        let storage = open_any(store)?;
        let last = last_transactions(storage.as_ref(), n)?;
        return print_all(storage.as_ref(), last.into_iter().map(Ok), as_json);
    }
    // A data file reads its last transactions backwards from the end.
    let path = Path::new(store);
    let storage = crate::store::open(path, FileOptions::new().read_only(true))?;
    let last = storage.last_transactions(n)?;
    print_all(&storage, last.into_iter().map(Ok), as_json)
}

/// The last `n` transactions of any storage, oldest first, by walking them all
/// and keeping the last `n`.
fn last_transactions(storage: &dyn Storage, n: usize) -> Result<Vec<TransactionInfo>> {
    let mut last = std::collections::VecDeque::with_capacity(n.min(1024));
    if n == 0 {
        return Ok(Vec::new());
    }
    for t in storage.transactions(Tid::ZERO, Tid::MAX)? {
        if last.len() == n {
            last.pop_front();
        }
        last.push_back(t?);
    }
    Ok(last.into())
}

/// The revisions of one object, newest first; STORE is a data file or a server.
pub fn history(
    store: &str,
    oid: Oid,
    as_json: bool,
    connect: &crate::store::Connect,
) -> Result<()> {
    let storage = crate::store::open_store_read_only(store, connect)?;
    let revisions = storage.history(oid, usize::MAX)?;
    if as_json {
        let list: Vec<_> = revisions
            .iter()
            .map(|r| json!({"tid": r.tid.0, "time": r.tid.to_rfc3339(), "size": r.size}))
            .collect();
        println!("{}", json!({"oid": oid.0, "revisions": list}));
    } else {
        println!("object {oid}: {} revisions", revisions.len());
        for r in &revisions {
            println!("  tid {} {}  {} bytes", r.tid, r.tid.to_rfc3339(), r.size);
        }
    }
    Ok(())
}
