//! The command line as a new user meets it: each test runs the real `zodiac`
//! binary the way that user did when the behaviour was found wrong (a negative
//! relative time, output piped into `head`, a large argument file, a trailing `/`,
//! a forgotten worker, a busy writer lock) and checks what they see now.

mod common;
use common::*;

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Runs `zodiac ARGS`, which must exit within 10 s (a worker or server that was
/// wrongly accepted would run until killed: then the test fails instead of hanging).
fn exits_within(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_zodiac"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run zodiac");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("zodiac {args:?} was accepted and kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn data_file(dir: &tempfile::TempDir) -> String {
    dir.path().join("jobs.zdb").to_str().unwrap().to_string()
}

/// `pack P --before -7d` and `jobs put ... --begin-after -1m` were refused by the
/// parser ("unexpected argument '-7' found") although cli.md gives them a meaning:
/// a time that long before now.
#[test]
fn negative_relative_times_are_times_before_now() {
    let dir = tempfile::tempdir().unwrap();
    let store = data_file(&dir);
    let before = time_now_micros();
    let id = put(&store, &["echo", "{}", "--begin-after", "-1m"]);
    let begin_after = show(&store, id)["begin_after"]
        .as_str()
        .unwrap()
        .to_string();
    let begin_after =
        time::OffsetDateTime::parse(&begin_after, &time::format_description::well_known::Rfc3339)
            .unwrap();
    let micros = begin_after.unix_timestamp_nanos() / 1000;
    let minute = 60_000_000_i128;
    assert!(
        (micros - (before - minute)).abs() < 10_000_000,
        "begin_after {begin_after} is not a minute before now"
    );
    let pack = zodiac(&["pack", &store, "--before", "-7d"]);
    assert!(pack.status.success(), "{}", stderr(&pack));
    assert!(Path::new(&format!("{store}.old")).exists());
    assert_eq!(show(&store, id)["status"], "PENDING");
}

fn time_now_micros() -> i128 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000
}

/// Runs `zodiac ARGS` with its stdout a real pipe whose reader has already gone
/// (as `head -1` has, once it read its line); returns zodiac's exit status and
/// stderr.
fn into_closed_pipe(args: &[&str]) -> (std::process::ExitStatus, String) {
    // The reader is closed before zodiac starts, so no write of it can land in
    // the pipe's buffer first: every write fails with EPIPE.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = Command::new(env!("CARGO_BIN_EXE_zodiac"))
        .args(args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (child.wait().unwrap(), err)
}

/// `zodiac dump FILE | head -1` (and `jobs status | head`, `jobs put | head`)
/// panicked with "failed printing to stdout: Broken pipe" (exit 101). Now each
/// ends as `cat` does: killed by SIGPIPE, silently.
#[test]
fn output_into_a_closed_pipe_ends_quietly_by_sigpipe() {
    let dir = tempfile::tempdir().unwrap();
    let store = data_file(&dir);
    put(&store, &["echo", "{}"]);
    for args in [
        vec!["dump", store.as_str()],
        vec!["jobs", "status", store.as_str()],
        vec!["jobs", "put", store.as_str(), "echo"],
    ] {
        let (status, err) = into_closed_pipe(&args);
        assert_eq!(
            status.signal(),
            Some(13),
            "zodiac {args:?}: {status:?}: {err}"
        );
        assert_eq!(err, "", "zodiac {args:?} printed to stderr");
    }
    // The put committed before its output was cut: the job is there.
    let listed = ok(&["jobs", "list", &store, "--json"]);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);
}

/// A 300 KB argument failed with "Argument list too long": `@FILE` and `-` read it
/// from a file or from standard input; a missing file or bad JSON names the file.
#[test]
fn arguments_from_a_file_or_standard_input() {
    let dir = tempfile::tempdir().unwrap();
    let store = data_file(&dir);
    let big = "y".repeat(300 * 1024);
    let file = dir.path().join("args.json");
    std::fs::write(&file, format!(r#"{{"value": "{big}"}}"#)).unwrap();
    let at_file = format!("@{}", file.display());
    let id = put(&store, &["echo", &at_file]);
    assert_eq!(
        show(&store, id)["args"]["value"].as_str().unwrap().len(),
        big.len()
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_zodiac"))
        .args(["jobs", "put", &store, "echo", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"value": "from stdin"}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let id: u64 = stdout(&out).trim().parse().unwrap();
    assert_eq!(show(&store, id)["args"]["value"], "from stdin");

    let missing = dir.path().join("missing.json");
    let o = zodiac(&[
        "jobs",
        "put",
        &store,
        "echo",
        &format!("@{}", missing.display()),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(&format!(
            "cannot read the arguments file {}",
            missing.display()
        )),
        "{}",
        stderr(&o)
    );
    std::fs::write(&file, format!("{{\"value\": \"{big}")).unwrap();
    let o = zodiac(&["jobs", "put", &store, "echo", &at_file]);
    assert_eq!(o.status.code(), Some(2));
    let message = stderr(&o);
    assert!(
        message.contains(&format!(
            "the arguments in the arguments file {} are not JSON",
            file.display()
        )),
        "{message}"
    );
    assert!(
        message.len() < 1000,
        "the error quotes the whole file: {} bytes",
        message.len()
    );
}

/// `tcp://HOST:PORT/` was refused; `worker --batch 9 --size 3` and `server
/// --max-connections 0` were accepted (the batch silently cut to 3, a server that
/// refuses every client).
#[test]
fn a_trailing_slash_is_accepted_and_impossible_sizes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("served.zdb");
    let (_server, url) = start_server(&path, dir.path());
    let id = put(&format!("{url}/"), &["echo", r#"{"value": 7}"#]);
    assert_eq!(show(&format!("{url}/"), id)["status"], "PENDING");
    let o = zodiac(&["jobs", "status", &format!("{url}/db")]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("needs a port"), "{}", stderr(&o));

    let store = data_file(&dir);
    let o = exits_within(&["worker", &store, "--batch", "9", "--size", "3"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--batch 9 is larger than --size 3"),
        "{}",
        stderr(&o)
    );
    let other = dir.path().join("other.zdb");
    let o = exits_within(&["server", other.to_str().unwrap(), "--max-connections", "0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--max-connections"), "{}", stderr(&o));
    assert!(!other.exists(), "a refused server created its file");
}

/// `incr` by i64::MAX twice wrapped the counter to -2 and succeeded.
#[test]
fn incr_fails_the_job_instead_of_overflowing() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = start_server(&dir.path().join("served.zdb"), dir.path());
    let _worker = start_worker(&url, dir.path(), &[]);
    let by_max = format!(r#"{{"counter": "c", "by": {}}}"#, i64::MAX);
    let first = put(&url, &["incr", &by_max]);
    let first = wait_completed(&url, first);
    assert_eq!(first["result"], serde_json::json!(i64::MAX), "{first}");
    let second = put(&url, &["incr", &by_max, "--retry", "never"]);
    let second = wait_completed(&url, second);
    let message = second["failure"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("counter \"c\" is {}", i64::MAX))
            && message.contains("would overflow"),
        "{second}"
    );
    let read = put(&url, &["incr", r#"{"counter": "c", "by": 0}"#]);
    assert_eq!(
        wait_completed(&url, read)["result"],
        serde_json::json!(i64::MAX)
    );
}

/// `jobs put --wait` with no worker waited forever, saying nothing.
#[test]
fn put_wait_without_a_worker_says_so_once_and_keeps_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let store = data_file(&dir);
    let o = zodiac(&[
        "jobs",
        "put",
        &store,
        "echo",
        "{}",
        "--queue",
        "mail",
        "--wait",
        "--timeout",
        "5s",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let err = stderr(&o);
    let hints: Vec<&str> = err.lines().filter(|l| l.starts_with("hint: ")).collect();
    assert_eq!(hints.len(), 1, "{err}");
    assert!(
        hints[0].contains("no worker is running on queue \"mail\"")
            && hints[0].contains(&format!("zodiac worker {store} --queue mail")),
        "{err}"
    );

    // The hint's command names the token file the put was given.
    let token = dir.path().join("token");
    std::fs::write(&token, "secret-of-the-test\n").unwrap();
    let token = token.to_str().unwrap();
    let served = dir.path().join("tokened.zdb");
    let (_tokened, line) = Process::start(
        &[
            "server",
            served.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            token,
        ],
        &dir.path().join("tokened.log"),
    );
    let tokened = format!("tcp://{}", line.strip_prefix("listening on ").unwrap());
    let o = zodiac(&[
        "jobs",
        "put",
        &tokened,
        "echo",
        "--token-file",
        token,
        "--wait",
        "--timeout",
        "3s",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("zodiac worker {tokened} --token-file {token}`")),
        "{}",
        stderr(&o)
    );

    // With a worker on the queue, no hint (here through a server, the other way
    // `--wait` watches): the job is PENDING only until its time comes.
    let (_server, url) = start_server(&dir.path().join("served.zdb"), dir.path());
    let later = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let later = later
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let _worker = start_worker(&url, dir.path(), &["--queue", "mail"]);
    let o = zodiac(&[
        "jobs",
        "put",
        &url,
        "echo",
        "{}",
        "--queue",
        "mail",
        "--begin-after",
        &later,
        "--wait",
        "--timeout",
        "5s",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(!stderr(&o).contains("hint:"), "{}", stderr(&o));
}

/// `dump` showed oids and sizes but not what the objects are.
#[test]
fn dump_names_each_object_type() {
    let dir = tempfile::tempdir().unwrap();
    let store = data_file(&dir);
    put(&store, &["echo", "{}"]);
    let text = ok(&["dump", &store]);
    assert!(text.contains("  zodiac.async.Job"), "{text}");
    let types: Vec<String> = ok(&["dump", &store, "--json"])
        .lines()
        .flat_map(|l| {
            let t: Value = serde_json::from_str(l).unwrap();
            t["objects"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["type"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(types.iter().any(|t| t == "zodiac.async.Job"), "{types:?}");
    assert!(!types.iter().any(|t| t.starts_with('(')), "{types:?}");
}

/// Several embedded producers failed at once with "locked by process N".
#[test]
fn wait_lock_retries_the_open_until_the_writer_lock_is_free() {
    let dir = tempfile::tempdir().unwrap();
    let store = data_file(&dir);
    let id = put(&store, &["echo", "{}", "--begin-after", "+1h"]);
    let holder = start_worker(&store, dir.path(), &[]);

    let started = Instant::now();
    let o = zodiac(&[
        "jobs",
        "cancel",
        &store,
        &id.to_string(),
        "--wait-lock",
        "1s",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("is locked by process"),
        "{}",
        stderr(&o)
    );
    assert!(started.elapsed() >= Duration::from_secs(1), "gave up early");

    let waiting = Command::new(env!("CARGO_BIN_EXE_zodiac"))
        .args(["jobs", "put", &store, "echo", "{}", "--wait-lock", "30s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    holder.stop();
    let out = waiting.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let new_id: u64 = stdout(&out).trim().parse().unwrap();
    assert_eq!(show(&store, new_id)["status"], "PENDING");
    ok(&[
        "jobs",
        "cancel",
        &store,
        &id.to_string(),
        "--wait-lock",
        "1s",
    ]);
}

/// `--wait-lock` was offered only by the `jobs` commands: `pack`, `copy` into a
/// data file, `worker` and `server` on a file another process was writing failed
/// at once with "locked by process N". Each now waits its turn when asked.
#[test]
fn pack_and_server_wait_for_the_writer_lock_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let store = data_file(&dir);
    put(&store, &["echo", "{}"]);
    let holder = start_worker(&store, dir.path(), &[]);

    let started = Instant::now();
    let o = zodiac(&["pack", &store, "--wait-lock", "1s"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is locked by process"),
        "{}",
        stderr(&o)
    );
    assert!(started.elapsed() >= Duration::from_secs(1), "gave up early");
    assert!(
        stderr(&o).contains("still held after --wait-lock 1s"),
        "{}",
        stderr(&o)
    );
    // Without the flag the error says what it would do.
    for args in [
        vec!["pack", store.as_str()],
        vec!["jobs", "put", store.as_str(), "echo"],
    ] {
        let o = zodiac(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("is locked by process")
                && stderr(&o).contains("wait its turn with --wait-lock DUR"),
            "{args:?}: {}",
            stderr(&o)
        );
    }

    let pack = Command::new(env!("CARGO_BIN_EXE_zodiac"))
        .args(["pack", &store, "--wait-lock", "30s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    holder.stop();
    let out = pack.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("packed "), "{}", stdout(&out));

    // A server started while a worker holds the file opens it once the worker stops.
    let holder = start_worker(&store, dir.path(), &[]);
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        holder.stop();
    });
    let (server, line) = Process::start(
        &[
            "server",
            &store,
            "--listen",
            "127.0.0.1:0",
            "--wait-lock",
            "30s",
        ],
        &dir.path().join("server.log"),
    );
    stopper.join().unwrap();
    assert!(line.starts_with("listening on "), "{line:?}");
    server.stop();
}

/// A worker whose start failed (the data file locked by another worker) left the
/// UUID file it had just created, naming a dispatcher that never existed. Now a
/// failed start removes the UUID file it created, and only that one.
#[test]
fn a_worker_that_cannot_start_leaves_no_new_uuid_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = data_file(&dir);
    put(&store, &["echo", "{}"]);
    let holder = start_worker(&store, dir.path(), &[]);

    let uuid = dir.path().join("second.uuid");
    let uuid = uuid.to_str().unwrap();
    let o = exits_within(&["worker", &store, "--uuid-file", uuid]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is locked by process"),
        "{}",
        stderr(&o)
    );
    assert!(!Path::new(uuid).exists(), "the failed start left {uuid}");

    // A UUID file that was there before the failed start is the user's: kept as is.
    let own = "0b6e7a52-8f0c-4c57-9a4e-1d2c3b4a5f60\n";
    std::fs::write(uuid, own).unwrap();
    let o = exits_within(&["worker", &store, "--uuid-file", uuid]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(uuid).unwrap(), own);
    holder.stop();
}

/// `jobs put ... --wait --timeout -5s` (and any other negative DUR) was refused
/// by the parser with "unexpected argument '-5' found" and the hint "to pass '-5'
/// as a value, use '-- -5'", which would make it another argument. Now the value
/// reaches the duration parser, which says what is wrong; a forgotten value
/// followed by an option names that option. All are usage errors that touch nothing.
#[test]
fn a_negative_duration_is_refused_for_what_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let store = data_file(&dir);
    for args in [
        vec!["jobs", "put", &store, "echo", "--wait", "--timeout", "-5s"],
        vec!["jobs", "put", &store, "echo", "--begin-by", "-1s"],
        vec!["worker", &store, "--poll-interval", "-1s"],
        vec!["pack", &store, "--wait-lock", "-2s"],
    ] {
        let o = zodiac(&args);
        assert_eq!(o.status.code(), Some(2), "zodiac {args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("a duration cannot be negative"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("use '--"), "{args:?}: {err}");
    }
    let o = zodiac(&["jobs", "put", &store, "echo", "--begin-by", "--wait"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not the option \"--wait\""),
        "{}",
        stderr(&o)
    );
    let o = zodiac(&["pack", &store, "--before", "--no-gc"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not the option \"--no-gc\""),
        "{}",
        stderr(&o)
    );
    assert!(!Path::new(&store).exists(), "a usage error created {store}");
}

/// `zodiac demo | head -1` left its "temporary" directory (a 5 MiB data file in
/// $TMPDIR/zodiac-demo-*): the broken pipe killed the process at once, before the
/// destructors that remove it (and stop the demo's worker processes) could run.
/// Now the command unwinds first, then ends by SIGPIPE as before.
#[test]
fn output_cut_short_still_cleans_up_before_the_sigpipe() {
    let tmp = tempfile::tempdir().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_zodiac"))
        .arg("demo")
        .env("TMPDIR", tmp.path())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(13), "{out:?}");
    assert_eq!(stderr(&out), "");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "the demo left {left:?}");
}

/// `tail P -n -1` and `worker S --size -1` were refused with "unexpected argument
/// '-1' found" and clap's hint to write `-- -1`, which makes it another argument.
/// Now the number reaches its parser, which says why it is refused.
#[test]
fn a_negative_count_is_refused_as_an_invalid_value() {
    let dir = tempfile::tempdir().unwrap();
    let store = data_file(&dir);
    for args in [
        vec!["tail", &store, "-n", "-1"],
        vec!["jobs", "list", &store, "--limit", "-1"],
        vec!["worker", &store, "--size", "-1"],
        vec!["worker", &store, "--batch", "-1"],
        vec!["server", &store, "--max-connections", "-1"],
    ] {
        let o = zodiac(&args);
        assert_eq!(o.status.code(), Some(2), "zodiac {args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains("invalid value '-1'"), "{args:?}: {err}");
        assert!(!err.contains("use '--"), "{args:?}: {err}");
    }
    assert!(!Path::new(&store).exists(), "a usage error created {store}");
}

/// `zodiac pack nope.zodiac` said "error: opening nope.zodiac: nope.zodiac:
/// opening the data file failed: no such file": the command's context repeated
/// what the storage's error already says. Each open's error now names the file,
/// and says "opening", once.
#[test]
fn a_failed_open_names_the_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.zdb");
    let missing = missing.to_str().unwrap();
    let garbage = dir.path().join("garbage.zdb");
    std::fs::write(&garbage, "not a data file").unwrap();
    let garbage = garbage.to_str().unwrap();
    for (args, file) in [
        (vec!["pack", missing], missing),
        (vec!["dump", missing], missing),
        (vec!["tail", missing], missing),
        (vec!["jobs", "put", garbage, "echo"], garbage),
        (vec!["jobs", "list", garbage], garbage),
        (vec!["history", garbage, "1"], garbage),
    ] {
        let o = zodiac(&args);
        assert_eq!(o.status.code(), Some(1), "zodiac {args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.matches(file).count(), 1, "{args:?}: {err}");
        assert!(err.matches("opening").count() <= 1, "{args:?}: {err}");
    }
}

/// `jobs put --wait` into a paused queue waited silently while a worker ran on
/// that queue: the no-worker hint saw a live dispatcher and said nothing, and
/// nothing ever claimed the job. The hint now says the queue is paused and how
/// to resume it.
#[test]
fn put_wait_into_a_paused_queue_says_it_is_paused() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = start_server(&dir.path().join("served.zdb"), dir.path());
    put(&url, &["echo", "{}", "--queue", "mail"]);
    ok(&["jobs", "pause", &url, "mail"]);
    let _worker = start_worker(&url, dir.path(), &["--queue", "mail"]);
    let o = zodiac(&[
        "jobs",
        "put",
        &url,
        "echo",
        "{}",
        "--queue",
        "mail",
        "--wait",
        "--timeout",
        "5s",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let err = stderr(&o);
    let hints: Vec<&str> = err.lines().filter(|l| l.starts_with("hint: ")).collect();
    assert_eq!(hints.len(), 1, "{err}");
    assert!(
        hints[0].contains("queue \"mail\" is paused")
            && hints[0].contains(&format!("zodiac jobs resume {url} \"mail\"")),
        "{err}"
    );
}

/// A worker started before its server waited 30 s without a word, then exited
/// with "cannot reach": a user who forgot the server saw nothing, and a worker
/// started first by a service manager died. Now it says at once that it waits,
/// and starts when the server comes.
#[test]
fn a_worker_started_before_its_server_says_it_waits_and_starts_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("tcp://127.0.0.1:{port}");
    let log = dir.path().join("worker.log");
    let uuid = dir.path().join("worker.uuid");
    let mut child = Command::new(env!("CARGO_BIN_EXE_zodiac"))
        .args(["worker", &url, "--uuid-file", uuid.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let worker = Process {
        child,
        log: log.clone(),
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("keeps trying until the server answers")
    {
        assert!(
            Instant::now() < deadline,
            "the worker did not say it waits: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let listen = format!("127.0.0.1:{port}");
    let (server, _) = Process::start(
        &[
            "server",
            dir.path().join("served.zdb").to_str().unwrap(),
            "--listen",
            &listen,
        ],
        &dir.path().join("server.log"),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    assert!(line.trim().ends_with(" ready"), "{line:?}");
    let id = put(&url, &["echo", r#"{"value": 7}"#]);
    assert_eq!(wait_completed(&url, id)["status"], "COMPLETED");
    worker.stop();
    server.stop();
}

/// `zodiac jobs put … --wait 2>&1 | head -1` read the id and went: the hint the
/// wait then printed to stderr panicked ("failed printing to stderr: Broken
/// pipe"), and the process exited 101. Now stderr cut short ends it as stdout
/// cut short does: by SIGPIPE.
#[test]
fn stderr_into_a_closed_pipe_ends_quietly_by_sigpipe() {
    let dir = tempfile::tempdir().unwrap();
    let store = data_file(&dir);
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_zodiac"))
        .args(["jobs", "put", &store, "echo", "--wait", "--timeout", "20s"])
        .stdout(Stdio::piped())
        .stderr(writer)
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(13), "{out:?}");
    let id: u64 = stdout(&out).trim().parse().unwrap();
    assert_eq!(show(&store, id)["status"], "PENDING");
}

/// `jobs put NEW.zdb HANDLER` with a handler or queue name over the job layer's
/// 255-byte limit failed after creating NEW.zdb (and its index and lock files);
/// an empty handler name was accepted for a job nothing can run; `worker --queue
/// LONG` printed "ready" and then failed every poll. Each is now a usage error
/// that touches nothing.
#[test]
fn names_over_their_limits_are_refused_before_anything_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    let store = data_file(&dir);
    let long_handler = "h".repeat(256);
    let long_queue = "q".repeat(256);
    let uuid = dir.path().join("worker.uuid");
    for (args, says) in [
        (vec!["jobs", "put", &store, ""], "the handler name is empty"),
        (
            vec!["jobs", "put", &store, &long_handler],
            "256 bytes, over the limit of 255",
        ),
        (
            vec!["jobs", "put", &store, "echo", "--queue", &long_queue],
            "256 bytes, over the limit of 255",
        ),
        (
            vec![
                "worker",
                &store,
                "--uuid-file",
                uuid.to_str().unwrap(),
                "--queue",
                &long_queue,
            ],
            "256 bytes, over the limit of 255",
        ),
    ] {
        let o = exits_within(&args);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains(says), "{}", stderr(&o));
    }
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "refused commands left {left:?}");
    // At the limit, accepted.
    let at_limit = "q".repeat(255);
    let id = put(&store, &["echo", "{}", "--queue", &at_limit]);
    assert_eq!(show(&store, id)["status"], "PENDING");
}
