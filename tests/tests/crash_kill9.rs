//! Catastrophe S1: a process committing in a loop is killed with SIGKILL, again and
//! again, on the same file. After every kill the file must open, every acknowledged
//! commit must be there with exactly its data, and no partial transaction may be
//! visible.
//!
//! `ZODIAC_CRASH_ROUNDS=N` runs N rounds (default 20); `ZODIAC_CRASH_SEED=S` repeats a
//! run (the seed is printed; run with `--nocapture` to see it on success).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use zodiac_storage::{FileOptions, Oid, Storage, Tid, TransactionInfo};
use zodiac_tests::{
    Ack, CRASH_WRITER_USER, KillOnDrop, OBJECTS_PER_TRANSACTION, SplitMix64, crash_description,
    crash_record, open_file, parse_crash_record,
};

const RUN_MS_MIN: u64 = 20;
const RUN_MS_MAX: u64 = 150;

#[test]
fn kill9_never_loses_an_acknowledged_commit_nor_shows_a_partial_transaction() {
    let rounds = env_u64("ZODIAC_CRASH_ROUNDS").unwrap_or(20);
    let seed = env_u64("ZODIAC_CRASH_SEED").unwrap_or_else(|| Tid::now().0);
    println!("crash_kill9: {rounds} rounds, seed {seed} (repeat with ZODIAC_CRASH_SEED={seed})");
    let mut rng = SplitMix64::new(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("crash.zodiac");
    let started = Instant::now();

    // Every acknowledged commit so far, with the round that made it.
    let mut acked: Vec<(u64, Ack)> = Vec::new();
    let mut next_seq = 0;
    for round in 0..rounds {
        let run = Duration::from_millis(rng.in_range(RUN_MS_MIN, RUN_MS_MAX));
        let acks = run_writer_and_kill(&path, next_seq, round, run);
        acked.extend(acks.iter().map(|ack| (round, ack.clone())));

        let storage = open_file(&path, FileOptions::new())
            .unwrap_or_else(|e| panic!("round {round}: reopening after kill -9 failed: {e}"));
        let transactions = check_every_transaction(&*storage, round);
        check_acknowledged(&*storage, &transactions, &acked, round);
        next_seq = transactions.len() as u64;
        storage
            .close()
            .unwrap_or_else(|e| panic!("round {round}: close failed: {e}"));
    }

    let tails = std::fs::read_dir(dir.path())
        .expect("list temp dir")
        .filter(|entry| {
            let name = entry.as_ref().expect("dir entry").file_name();
            name.to_string_lossy().starts_with("crash.zodiac.tail-")
        })
        .count();
    println!(
        "crash_kill9: {rounds} kills, {} acknowledged commits all present, {next_seq} \
         transactions in the file, {tails} torn tails cut, {:.1} s",
        acked.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        !acked.is_empty(),
        "no round acknowledged a commit: the test checked nothing"
    );
}

/// Runs `crash_writer` for about `run`, kills it with SIGKILL and returns what it acknowledged.
fn run_writer_and_kill(path: &Path, start_seq: u64, round: u64, run: Duration) -> Vec<Ack> {
    let started = Instant::now();
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_crash_writer"))
            .arg(path)
            .arg(start_seq.to_string())
            .arg(round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn crash_writer"),
    );
    let stdout = child.0.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map(|line| {
                let line = line.expect("read crash_writer's stdout");
                Ack::parse(&line).unwrap_or_else(|| panic!("unexpected line {line:?}"))
            })
            .collect::<Vec<Ack>>()
    });
    std::thread::sleep(run.saturating_sub(started.elapsed()));
    child.0.kill().expect("kill -9 crash_writer");
    let status = child.0.wait().expect("wait for crash_writer");
    let acks = reader.join().expect("stdout reader");
    if std::os::unix::process::ExitStatusExt::signal(&status) != Some(9) {
        let mut stderr = String::new();
        let _ = std::io::Read::read_to_string(
            child.0.stderr.as_mut().expect("piped stderr"),
            &mut stderr,
        );
        panic!("round {round}: crash_writer ended by itself ({status}) before the kill: {stderr}");
    }
    acks
}

/// Checks the whole file as the storage presents it: tids strictly increase, sequence
/// numbers run 0, 1, 2, ... without a gap, and every transaction has all its objects,
/// each holding exactly that transaction's data. Returns the transactions.
///
/// The root is rewritten by every transaction, so reading one of its old revisions
/// walks its whole chain: its revisions are checked against one walk of its history,
/// and its bytes only for this round's transactions (older rounds were checked then).
fn check_every_transaction(storage: &dyn Storage, round: u64) -> Vec<TransactionInfo> {
    // A kill before the first commit (a slow start on a loaded machine) leaves an
    // empty file: no root yet, and nothing to check but that no transaction shows.
    let root_history: BTreeMap<Tid, u64> = if storage.last_tid() == Tid::ZERO {
        BTreeMap::new()
    } else {
        storage
            .history(Oid::ROOT, usize::MAX)
            .unwrap_or_else(|e| panic!("round {round}: history of the root failed: {e}"))
            .into_iter()
            .map(|r| (r.tid, r.size))
            .collect()
    };
    let transactions: Vec<TransactionInfo> = storage
        .transactions(Tid::ZERO, Tid::MAX)
        .unwrap_or_else(|e| panic!("round {round}: listing transactions failed: {e}"))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("round {round}: reading a transaction failed: {e}"));
    let mut previous = Tid::ZERO;
    for (seq, txn) in (0u64..).zip(&transactions) {
        let at = format!("round {round}: transaction {} (seq {seq})", txn.tid);
        assert!(
            txn.tid > previous,
            "{at}: tid not above the previous {previous}"
        );
        previous = txn.tid;
        assert_eq!(txn.meta.user, CRASH_WRITER_USER, "{at}: user");
        assert_eq!(
            txn.meta.description,
            crash_description(seq),
            "{at}: description"
        );
        let txn_round: u64 = txn
            .meta
            .extension
            .get("round")
            .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
            .unwrap_or_else(|| panic!("{at}: no readable round in {:?}", txn.meta.extension));
        let oids: BTreeSet<Oid> = txn.changes.iter().map(|c| c.oid).collect();
        assert_eq!(
            oids.len(),
            OBJECTS_PER_TRANSACTION,
            "{at}: changes {:?}",
            txn.changes
        );
        assert!(
            oids.contains(&Oid::ROOT),
            "{at}: the root is not among {oids:?}"
        );
        assert_eq!(
            root_history.get(&txn.tid).copied(),
            txn.changes
                .iter()
                .find(|c| c.oid == Oid::ROOT)
                .map(|c| c.size),
            "{at}: the root's history does not list this revision with its size"
        );
        for change in &txn.changes {
            if change.oid == Oid::ROOT && txn_round != round {
                continue;
            }
            let data = storage
                .load_revision(change.oid, txn.tid)
                .unwrap_or_else(|e| panic!("{at}: object {} is missing: {e}", change.oid));
            assert_eq!(
                parse_crash_record(&data),
                Some((txn_round, seq, change.oid)),
                "{at}: object {} holds other data ({} bytes)",
                change.oid,
                data.len()
            );
            assert_eq!(
                change.size,
                data.len() as u64,
                "{at}: size of object {}",
                change.oid
            );
            let seen = storage
                .load(change.oid, txn.tid)
                .unwrap_or_else(|e| panic!("{at}: load of {} at its tid: {e}", change.oid));
            assert_eq!(seen.tid, txn.tid, "{at}: snapshot read of {}", change.oid);
        }
    }
    assert_eq!(storage.last_tid(), previous, "round {round}: last_tid");
    assert_eq!(
        root_history.len(),
        transactions.len(),
        "round {round}: root revisions"
    );
    transactions
}

/// Checks that every acknowledged commit is the transaction of its sequence number,
/// with exactly its objects and data.
fn check_acknowledged(
    storage: &dyn Storage,
    transactions: &[TransactionInfo],
    acked: &[(u64, Ack)],
    round: u64,
) {
    for (ack_round, ack) in acked {
        let at = format!(
            "round {round}: acknowledged commit {} (seq {})",
            ack.tid, ack.seq
        );
        let txn = usize::try_from(ack.seq)
            .ok()
            .and_then(|i| transactions.get(i))
            .unwrap_or_else(|| {
                panic!(
                    "{at} is lost: the file has {} transactions",
                    transactions.len()
                )
            });
        assert_eq!(
            txn.tid, ack.tid,
            "{at}: the file has another tid at this seq"
        );
        let oids: BTreeSet<Oid> = txn.changes.iter().map(|c| c.oid).collect();
        assert_eq!(oids, ack.oids.into_iter().collect(), "{at}: objects");
        for oid in ack.oids {
            // Old root revisions: see check_every_transaction.
            if oid == Oid::ROOT && *ack_round != round {
                continue;
            }
            let data = storage
                .load_revision(oid, ack.tid)
                .unwrap_or_else(|e| panic!("{at}: object {oid} is missing: {e}"));
            assert!(
                data == crash_record(*ack_round, ack.seq, oid),
                "{at}: object {oid} data"
            );
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}
