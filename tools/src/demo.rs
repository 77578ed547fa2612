//! `zodiac demo`: a tour of the storage on an embedded file store. Every value it
//! prints was read back from the store; every claim it makes is checked, and a failed
//! check ends the demo with an error.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use zodiac_storage::{Error, FileOptions, FileStorage, Oid, Storage, Tid, TransactionMeta};

use crate::store;

const FILE_NAME: &str = "demo.zodiac";
const SCRATCH_NAME: &str = "demo-scratch.zodiac";
const WRITER_USER: &str = "demo-writer";
/// How long the writer process commits before it is killed, once it has started.
const WRITER_RUN: Duration = Duration::from_millis(300);
/// How long to wait for the writer's first acknowledged commit.
const WRITER_START_WAIT: Duration = Duration::from_secs(30);

/// An acknowledged write: `finish` returned `tid` after storing `data` in `oid`.
struct Acked {
    tid: Tid,
    oid: Oid,
    data: Vec<u8>,
}

struct Demo {
    path: PathBuf,
    acked: Vec<Acked>,
    timings: Vec<(&'static str, Duration)>,
}

pub fn run(dir: Option<&Path>) -> Result<()> {
    let started = Instant::now();
    let temp_dir = match dir {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("zodiac-demo-")
                .tempdir()
                .context("creating a temporary directory")?,
        ),
    };
    let dir = match &temp_dir {
        Some(temp_dir) => temp_dir.path(),
        None => dir.expect("given when no temporary directory"),
    };
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(FILE_NAME);
    if path.exists() {
        bail!(
            "{} already exists: pass --dir with a new or empty directory",
            path.display()
        );
    }
    let mut demo = Demo {
        path,
        acked: Vec::new(),
        timings: Vec::new(),
    };

    println!("Zodiac demo: an embedded store in {}", demo.path.display());
    let storage = demo.create()?;
    let account = demo.commit_transactions(&storage)?;
    demo.read_snapshots(&storage, account)?;
    demo.conflict(&storage, account)?;
    let counter = demo.create_counter(&storage)?;
    storage.close()?;
    drop(storage);
    demo.kill_writer(counter)?;
    demo.torn_write()?;
    let storage = store::open(&demo.path, FileOptions::new())?;
    demo.history(&storage, account)?;
    demo.transaction_log(&storage)?;
    demo.summary(&storage, started)?;
    storage.close()?;
    if temp_dir.is_some() {
        println!("\n(The temporary directory is removed now; pass --dir D to keep the store.)");
    }
    Ok(())
}

impl Demo {
    fn create(&mut self) -> Result<FileStorage> {
        println!("\n1. Create the store");
        let t = Instant::now();
        let storage = store::open(&self.path, FileOptions::new())?;
        self.timings.push(("create", t.elapsed()));
        println!(
            "   created {} in {}; last tid {} (empty)",
            self.path.display(),
            ms(t.elapsed()),
            storage.last_tid()
        );
        println!("   durability: each commit is on disk (fdatasync) before finish returns");
        Ok(storage)
    }

    /// Commits three transactions that open an account and change its balance.
    fn commit_transactions(&mut self, storage: &dyn Storage) -> Result<Oid> {
        println!("\n2. Commit transactions (begin, store, vote, finish)");
        let t = Instant::now();
        let account = storage.new_oid()?;
        let opened = self.commit(
            storage,
            ("alice", "open account"),
            &[
                (Oid::ROOT, Tid::ZERO, format!("accounts: [{account}]")),
                (account, Tid::ZERO, "balance: 100".to_string()),
            ],
        )?;
        let deposit = self.commit(
            storage,
            ("bob", "deposit 50"),
            &[(account, opened, "balance: 150".to_string())],
        )?;
        self.commit(
            storage,
            ("alice", "deposit 25"),
            &[(account, deposit, "balance: 175".to_string())],
        )?;
        self.timings.push(("3 commits", t.elapsed()));
        Ok(account)
    }

    /// Commits `writes` (oid, base tid, data) as `user` with `description`, prints what
    /// reads back at the new tid and remembers it as acknowledged.
    fn commit(
        &mut self,
        storage: &dyn Storage,
        (user, description): (&str, &str),
        writes: &[(Oid, Tid, String)],
    ) -> Result<Tid> {
        let mut txn = storage.begin(meta(user, description))?;
        for (oid, base, data) in writes {
            txn.store(*oid, *base, data.clone().into_bytes())?;
        }
        txn.vote()?;
        let tid = txn.finish()?;
        println!(
            "   tid {tid} ({}) {user}: {description:?}",
            tid.to_rfc3339()
        );
        for (oid, _, _) in writes {
            let revision = storage.load(*oid, tid)?;
            ensure!(
                revision.tid == tid,
                "object {oid} read at {tid} has revision {}",
                revision.tid
            );
            println!("      object {oid} = {}", text(&revision.data));
            self.acked.push(Acked {
                tid,
                oid: *oid,
                data: revision.data,
            });
        }
        Ok(tid)
    }

    fn read_snapshots(&mut self, storage: &dyn Storage, account: Oid) -> Result<()> {
        println!("\n3. Read object {account} at old and new snapshots (MVCC)");
        let history = storage.history(account, usize::MAX)?;
        let (newest, oldest) = match (history.first(), history.last()) {
            (Some(newest), Some(oldest)) => (newest.tid, oldest.tid),
            _ => bail!("object {account} has no history"),
        };
        for (label, snapshot) in [("its first commit", oldest), ("the newest", newest)] {
            let revision = storage.load(account, snapshot)?;
            println!(
                "   at snapshot {snapshot} ({label}): {} (revision {})",
                text(&revision.data),
                revision.tid
            );
        }
        let before = Tid(oldest.0 - 1);
        match storage.load(account, before) {
            Err(error) => println!("   at snapshot {before} (just before): {error}"),
            Ok(revision) => {
                bail!("object {account} is visible before it was created: {revision:?}")
            }
        }
        Ok(())
    }

    /// Two transactions change the same object from the same revision: the first to
    /// finish wins, the second gets a conflict naming the object and both revisions.
    fn conflict(&mut self, storage: &dyn Storage, account: Oid) -> Result<()> {
        println!("\n4. Provoke a write conflict");
        let base = storage.load(account, storage.last_tid())?;
        println!(
            "   transactions A and B both read object {account} at revision {}: {}",
            base.tid,
            text(&base.data)
        );
        let mut a = storage.begin(meta("carol", "A: deposit 25"))?;
        let mut b = storage.begin(meta("dave", "B: withdraw 15"))?;
        a.store(account, base.tid, b"balance: 200".to_vec())?;
        b.store(account, base.tid, b"balance: 160".to_vec())?;
        let a_tid = a.finish()?;
        self.acked.push(Acked {
            tid: a_tid,
            oid: account,
            data: b"balance: 200".to_vec(),
        });
        println!("   A stores \"balance: 200\" and commits: tid {a_tid}");
        println!("   B stores \"balance: 160\" and tries to commit:");
        match b.finish() {
            Err(Error::Conflict(conflict)) => {
                println!("      refused: {conflict}");
                println!(
                    "      (oid {}, base tid {}, current tid {})",
                    conflict.oid, conflict.base_tid, conflict.current_tid
                );
            }
            Err(other) => return Err(other).context("B failed, but not with a conflict"),
            Ok(tid) => bail!("B committed as {tid} although A changed object {account} first"),
        }
        let now = storage.load(account, storage.last_tid())?;
        println!(
            "   object {account} now reads {} (revision {}): nothing of B was written",
            text(&now.data),
            now.tid
        );
        ensure!(
            now.tid == a_tid,
            "object {account} has revision {} instead of A's {a_tid}",
            now.tid
        );
        Ok(())
    }

    fn create_counter(&mut self, storage: &dyn Storage) -> Result<Oid> {
        let counter = storage.new_oid()?;
        let mut txn = storage.begin(meta("demo", "create counter"))?;
        txn.store(counter, Tid::ZERO, b"count: 0".to_vec())?;
        let tid = txn.finish()?;
        self.acked.push(Acked {
            tid,
            oid: counter,
            data: b"count: 0".to_vec(),
        });
        Ok(counter)
    }

    /// Runs a writer process that commits in a loop, kills it with SIGKILL, reopens the
    /// store and checks every commit the writer acknowledged.
    fn kill_writer(&mut self, counter: Oid) -> Result<()> {
        println!("\n5. Crash: kill -9 a process in the middle of committing");
        let mut writer = self.start_writer(counter)?;
        let pid = writer.0.id();
        println!("   started a writer process (pid {pid}): each transaction adds an entry object");
        println!(
            "   and increments a counter (object {counter}), then prints the tid finish returned"
        );
        let stdout = writer.0.stdout.take().expect("piped stdout");
        let (received, reader) = read_acks(stdout);
        let first = match received.recv_timeout(WRITER_START_WAIT) {
            Ok(ack) => ack,
            Err(_) => return Err(writer_failed(writer)),
        };
        let t = Instant::now();
        std::thread::sleep(WRITER_RUN);
        writer.0.kill().context("killing the writer")?;
        writer.0.wait().context("waiting for the writer")?;
        let run = t.elapsed();
        self.timings.push(("writer until kill -9", run));
        reader.join().expect("reader thread")?;
        let acked: Vec<(Tid, u64, Oid)> =
            std::iter::once(first).chain(received.try_iter()).collect();
        let (last_tid, last_count, _) = *acked.last().expect("at least the first");
        println!(
            "   killed it with SIGKILL {} after its first commit: {} commits acknowledged ({:.0} per second, each fsync'd), the last {last_tid}",
            ms(run),
            acked.len(),
            acked.len() as f64 / run.as_secs_f64()
        );
        self.record_acks(&acked, counter);

        let storage = self.reopen("reopen after kill -9")?;
        let count = storage.load(counter, storage.last_tid())?;
        println!(
            "   counter object {counter} reads {} (revision {}); the last acknowledged was count: {last_count}",
            text(&count.data),
            count.tid
        );
        if storage.last_tid() > last_tid {
            println!(
                "   (a commit after the last acknowledged one is durable too: it was on disk before its ack was printed)"
            );
        }
        self.verify(&storage)?;
        storage.close()?;
        Ok(())
    }

    /// Starts the `demo-writer` process on this store, its output piped.
    fn start_writer(&self, counter: Oid) -> Result<KillOnDrop> {
        let exe = std::env::current_exe().context("finding the zodiac executable")?;
        Ok(KillOnDrop(
            Command::new(exe)
                .arg("demo-writer")
                .arg(&self.path)
                .arg("--counter")
                .arg(counter.0.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting the writer process")?,
        ))
    }

    /// Remembers what each acknowledged commit of the writer wrote (an entry and the
    /// counter), for the checks after each reopen.
    fn record_acks(&mut self, acked: &[Ack], counter: Oid) {
        for &(tid, count, entry) in acked {
            self.acked.push(Acked {
                tid,
                oid: entry,
                data: format!("entry {count}").into_bytes(),
            });
            self.acked.push(Acked {
                tid,
                oid: counter,
                data: format!("count: {count}").into_bytes(),
            });
        }
    }

    /// Writes the first half of a transaction's bytes at the end of the data, as a
    /// power cut in the middle of its write would leave it, then reopens. The
    /// transaction is prepared on a copy of the file, so it was never acknowledged on
    /// this one.
    fn torn_write(&mut self) -> Result<()> {
        println!("\n6. Crash: a torn write");
        let scratch = self.path.with_file_name(SCRATCH_NAME);
        let end = store::open(&self.path, FileOptions::new().read_only(true))?.data_end();
        fs::copy(&self.path, &scratch).context("copying the data file")?;
        let record_end = {
            let copy = store::open(&scratch, FileOptions::new())?;
            let oid = copy.new_oid()?;
            let mut txn = copy.begin(TransactionMeta::described("never acknowledged"))?;
            txn.store(oid, Tid::ZERO, vec![b'x'; 8 << 10])?;
            txn.finish()?;
            let record_end = copy.data_end();
            copy.close()?;
            record_end
        };
        let bytes = fs::read(&scratch)?;
        remove_files_starting_with(&scratch)?;
        let record = &bytes[end as usize..record_end as usize];
        let half = &record[..record.len() / 2];
        let file = fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .context("opening the data file")?;
        file.write_all_at(half, end)
            .context("writing to the data file")?;
        println!(
            "   wrote {} of a {}-byte transaction record at the end of the data (offset {end})",
            half.len(),
            record.len()
        );
        let storage = self.reopen("reopen after torn write")?;
        self.verify(&storage)?;
        storage.close()?;
        Ok(())
    }

    /// Opens the store, timing it, and shows any tail the storage cut and saved.
    fn reopen(&mut self, label: &'static str) -> Result<FileStorage> {
        let tails_before = self.tail_files()?;
        let t = Instant::now();
        let storage = store::open(&self.path, FileOptions::new())?;
        self.timings.push((label, t.elapsed()));
        println!(
            "   reopened in {}; last tid {}",
            ms(t.elapsed()),
            storage.last_tid()
        );
        let new_tails: Vec<_> = self
            .tail_files()?
            .into_iter()
            .filter(|tail| !tails_before.contains(tail))
            .collect();
        if new_tails.is_empty() {
            println!("   the file ended on a complete transaction: nothing to cut");
        }
        for tail in new_tails {
            let bytes = fs::metadata(&tail)?.len();
            println!(
                "   the storage cut an incomplete transaction at the end: {bytes} bytes, saved as {}",
                tail.file_name().unwrap_or_default().to_string_lossy()
            );
        }
        Ok(storage)
    }

    /// Checks that every acknowledged write reads back exactly.
    fn verify(&self, storage: &dyn Storage) -> Result<()> {
        let mut tids: Vec<Tid> = self.acked.iter().map(|a| a.tid).collect();
        tids.dedup();
        for acked in &self.acked {
            let data = storage
                .load_revision(acked.oid, acked.tid)
                .with_context(|| format!("acknowledged commit {} is lost", acked.tid))?;
            ensure!(
                data == acked.data,
                "object {} at {} reads {} instead of {}",
                acked.oid,
                acked.tid,
                text(&data),
                text(&acked.data)
            );
        }
        println!(
            "   checked every acknowledged commit ({} commits, {} object revisions): all present, data exact",
            tids.len(),
            self.acked.len()
        );
        Ok(())
    }

    fn tail_files(&self) -> Result<Vec<PathBuf>> {
        let prefix = format!("{FILE_NAME}.tail-");
        let dir = self.path.parent().expect("a file in a directory");
        let mut tails = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                tails.push(entry.path());
            }
        }
        Ok(tails)
    }

    fn history(&self, storage: &dyn Storage, account: Oid) -> Result<()> {
        println!("\n7. History of object {account} (newest first)");
        for revision in storage.history(account, 10)? {
            let data = storage.load_revision(account, revision.tid)?;
            println!(
                "   {} ({})  {} bytes  {}",
                revision.tid,
                revision.tid.to_rfc3339(),
                revision.size,
                text(&data)
            );
        }
        Ok(())
    }

    fn transaction_log(&self, storage: &dyn Storage) -> Result<()> {
        println!("\n8. Transaction log (user, description, objects written)");
        let mut writer_run: Vec<Tid> = Vec::new();
        let flush_run = |run: &mut Vec<Tid>| {
            if let (Some(first), Some(last)) = (run.first(), run.last()) {
                println!(
                    "   {first} .. {last}  {WRITER_USER}: {} transactions \"entry N\"",
                    run.len()
                );
            }
            run.clear();
        };
        for txn in storage.transactions(Tid::ZERO, Tid::MAX)? {
            let txn = txn?;
            if txn.meta.user == WRITER_USER {
                writer_run.push(txn.tid);
                continue;
            }
            flush_run(&mut writer_run);
            let user = if txn.meta.user.is_empty() {
                "-"
            } else {
                &txn.meta.user
            };
            let oids: Vec<String> = txn.changes.iter().map(|c| c.oid.to_string()).collect();
            println!(
                "   {}  {user}: {:?}  wrote {}",
                txn.tid,
                txn.meta.description,
                oids.join(", ")
            );
        }
        flush_run(&mut writer_run);
        Ok(())
    }

    fn summary(&self, storage: &dyn Storage, started: Instant) -> Result<()> {
        println!("\nSummary");
        let transactions = storage.transactions(Tid::ZERO, Tid::MAX)?.count();
        let bytes = fs::metadata(&self.path)?.len();
        println!(
            "   {}: {bytes} bytes, {transactions} transactions, last tid {} ({})",
            self.path.display(),
            storage.last_tid(),
            storage.last_tid().to_rfc3339()
        );
        for (label, took) in &self.timings {
            println!("   {label:<24} {}", ms(*took));
        }
        println!("   {:<24} {}", "whole demo", ms(started.elapsed()));
        Ok(())
    }
}

/// One commit the writer acknowledged: its tid, the counter's new value and the
/// entry object it added.
type Ack = (Tid, u64, Oid);

/// The writer's acknowledgements as they are printed, read on a thread of their own
/// (so the demo can wait for the first with a timeout).
fn read_acks(
    stdout: std::process::ChildStdout,
) -> (mpsc::Receiver<Ack>, std::thread::JoinHandle<Result<()>>) {
    let (acks, received) = mpsc::channel();
    let reader = std::thread::spawn(move || -> Result<()> {
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            let ack = parse_ack(&line).ok_or_else(|| anyhow!("writer printed {line:?}"))?;
            if acks.send(ack).is_err() {
                break;
            }
        }
        Ok(())
    });
    (received, reader)
}

/// Stops a writer that acknowledged nothing; the error carries what it printed on
/// stderr.
fn writer_failed(mut writer: KillOnDrop) -> anyhow::Error {
    let _ = writer.0.kill();
    let _ = writer.0.wait();
    let mut stderr = String::new();
    let _ = writer
        .0
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut stderr);
    anyhow!("the writer process committed nothing: {}", stderr.trim())
}

/// The hidden `demo-writer` command: commits until killed. Transaction N writes a new
/// object `entry N` and sets `counter` to `count: N`, then prints `ack TID N OID`.
pub fn writer(path: &Path, counter: u64) -> Result<()> {
    let storage = store::open(path, FileOptions::new())?;
    let counter = Oid(counter);
    let mut base = storage.load(counter, storage.last_tid())?;
    let start: u64 = std::str::from_utf8(&base.data)
        .ok()
        .and_then(|s| s.strip_prefix("count: ")?.parse().ok())
        .ok_or_else(|| anyhow!("object {counter} is not a counter"))?;
    let mut stdout = std::io::stdout().lock();
    for count in start + 1.. {
        let entry = storage.new_oid()?;
        let mut txn = storage.begin(meta(WRITER_USER, &format!("entry {count}")))?;
        txn.store(entry, Tid::ZERO, format!("entry {count}").into_bytes())?;
        txn.store(counter, base.tid, format!("count: {count}").into_bytes())?;
        base.tid = txn.finish()?;
        writeln!(stdout, "ack {} {count} {}", base.tid.0, entry.0)?;
        stdout.flush()?;
    }
    Ok(())
}

/// Transaction metadata: who and why, plus an extension entry naming the program.
fn meta(user: &str, description: &str) -> TransactionMeta {
    let mut meta = TransactionMeta::described(description);
    meta.user = user.to_string();
    meta.extension
        .insert("program".to_string(), b"zodiac demo".to_vec());
    meta
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut words = line.strip_prefix("ack ")?.split(' ').map(str::parse::<u64>);
    let (tid, count, oid) = (
        words.next()?.ok()?,
        words.next()?.ok()?,
        words.next()?.ok()?,
    );
    Some((Tid(tid), count, Oid(oid)))
}

/// Removes `path` and the files the storage keeps beside it (`PATH.index`, ...).
fn remove_files_starting_with(path: &Path) -> Result<()> {
    let name = path
        .file_name()
        .expect("a file name")
        .to_string_lossy()
        .into_owned();
    for entry in fs::read_dir(path.parent().expect("a directory"))? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(&name) {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Object data as it prints: quoted text, or a byte count when it is not short text.
fn text(data: &[u8]) -> String {
    match std::str::from_utf8(data) {
        Ok(s) if s.len() <= 60 => format!("{s:?}"),
        _ => format!("<{} bytes>", data.len()),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// A child process that is killed and reaped if the demo ends early.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
