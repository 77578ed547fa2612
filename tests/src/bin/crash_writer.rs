//! A process for the multi-process tests to kill.
//!
//! `crash_writer PATH START_SEQ ROUND` opens the data file (durable commits) and
//! commits in a loop until killed. Transaction `seq` (from START_SEQ up) writes two new
//! objects and a new revision of the root, each holding `crash_record(ROUND, seq, oid)`;
//! after `finish` returns it prints `ack <tid> <seq> <oid1> <oid2> <oid3>` and flushes.
//!
//! `crash_writer hold PATH` opens the data file, prints `held <pid>` and sleeps until
//! killed, keeping the writer lock.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use zodiac_storage::{Error, FileOptions, Oid, Storage, Tid, TransactionMeta};
use zodiac_tests::{Ack, CRASH_WRITER_USER, crash_description, crash_record, open_file};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["hold", path] => hold(Path::new(path)),
        [path, start_seq, round] => match (start_seq.parse(), round.parse()) {
            (Ok(start_seq), Ok(round)) => write_until_killed(Path::new(path), start_seq, round),
            _ => Err("START_SEQ and ROUND must be numbers".to_string()),
        },
        _ => Err("usage: crash_writer PATH START_SEQ ROUND | crash_writer hold PATH".to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(cause) => {
            eprintln!("error: {cause}");
            ExitCode::FAILURE
        }
    }
}

fn hold(path: &Path) -> Result<(), String> {
    let _storage = open_file(path, FileOptions::new()).map_err(|e| e.to_string())?;
    println!("held {}", std::process::id());
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn write_until_killed(path: &Path, start_seq: u64, round: u64) -> Result<(), String> {
    let storage = open_file(path, FileOptions::new()).map_err(|e| e.to_string())?;
    let mut root_tid = match storage.load(Oid::ROOT, Tid::MAX) {
        Ok(revision) => revision.tid,
        Err(Error::NoSuchObject { .. }) => Tid::ZERO,
        Err(e) => return Err(e.to_string()),
    };
    let mut stdout = std::io::stdout().lock();
    for seq in start_seq.. {
        let ack = commit(&*storage, round, seq, root_tid).map_err(|e| e.to_string())?;
        root_tid = ack.tid;
        // A closed pipe means the test is gone: stop.
        writeln!(stdout, "{}", ack.to_line())
            .and_then(|()| stdout.flush())
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn commit(
    storage: &dyn Storage,
    round: u64,
    seq: u64,
    root_tid: Tid,
) -> zodiac_storage::Result<Ack> {
    let oids = [storage.new_oid()?, storage.new_oid()?, Oid::ROOT];
    let mut meta = TransactionMeta::described(crash_description(seq));
    meta.user = CRASH_WRITER_USER.to_string();
    meta.extension
        .insert("round".to_string(), round.to_string().into_bytes());
    let mut txn = storage.begin(meta)?;
    for oid in oids {
        let base = if oid == Oid::ROOT {
            root_tid
        } else {
            Tid::ZERO
        };
        txn.store(oid, base, crash_record(round, seq, oid))?;
    }
    let tid = txn.finish()?;
    Ok(Ack { tid, seq, oids })
}
