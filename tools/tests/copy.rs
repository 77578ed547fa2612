//! `zodiac copy SRC DST` with the real binary: a file copied to a file (and through
//! a real `zodiac server`) dumps the same, tids, metadata and records alike; a
//! second copy takes only what SRC gained; a DST that is not a copy of SRC, the
//! same store twice and bad store names are refused with what to do.

mod common;

use std::path::Path;

use common::{Process, commit_some, ok, stderr, zodiac};
use zodiac_storage::{FileOptions, FileStorage, Oid, Storage, Tid, TransactionInfo};

/// Every transaction of the data file, and each record's bytes, read directly.
fn contents(path: &Path) -> Vec<(TransactionInfo, Vec<Vec<u8>>)> {
    let s = FileStorage::open(path, FileOptions::new().read_only(true)).unwrap();
    let txns: Vec<TransactionInfo> = s
        .transactions(Tid::ZERO, Tid::MAX)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    txns.into_iter()
        .map(|t| {
            let data = t
                .changes
                .iter()
                .map(|c| s.load_revision(c.oid, t.tid).unwrap())
                .collect();
            (t, data)
        })
        .collect()
}

fn dump(path: &str) -> String {
    ok(&["dump", path, "--json"])
}

fn path_in(dir: &tempfile::TempDir, name: &str) -> String {
    dir.path().join(name).to_str().unwrap().to_string()
}

/// Asserts `zodiac copy ARGS` fails; returns its error output.
fn refused(args: &[&str]) -> String {
    let o = zodiac(args);
    assert!(!o.status.success(), "zodiac {args:?} succeeded");
    stderr(&o)
}

#[test]
fn a_file_copied_to_a_new_file_dumps_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (path_in(&dir, "src.zdb"), path_in(&dir, "dst.zdb"));
    commit_some(Path::new(&src), 5);
    let out = ok(&["copy", &src, &dst]);
    assert!(
        out.contains("copied 5 transactions (9 records,") && out.contains("verified"),
        "{out}"
    );
    assert_eq!(dump(&src), dump(&dst));
    assert_eq!(contents(Path::new(&src)), contents(Path::new(&dst)));
    // The copy's oids count as allocated there: a new object gets a fresh one.
    let copy = FileStorage::open(&dst, FileOptions::new()).unwrap();
    assert_eq!(copy.new_oid().unwrap(), Oid(6));
}

#[test]
fn a_second_copy_takes_only_what_the_source_gained() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (path_in(&dir, "src.zdb"), path_in(&dir, "dst.zdb"));
    commit_some(Path::new(&src), 3);
    ok(&["copy", &src, &dst]);
    commit_some(Path::new(&src), 2);
    let out = ok(&["copy", &src, &dst]);
    assert!(out.contains("copied 2 transactions (4 records,"), "{out}");
    assert_eq!(dump(&src), dump(&dst));
    assert_eq!(contents(Path::new(&src)), contents(Path::new(&dst)));
    let again = ok(&["copy", &src, &dst]);
    assert!(
        again.contains("is up to date with") && again.contains("nothing to copy"),
        "{again}"
    );
}

#[test]
fn a_file_copied_through_a_server_and_back_dumps_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (src, served, back) = (
        path_in(&dir, "src.zdb"),
        path_in(&dir, "served.zdb"),
        path_in(&dir, "back.zdb"),
    );
    commit_some(Path::new(&src), 4);
    let (server, line) = Process::start(
        &["server", &served, "--listen", "127.0.0.1:0"],
        &dir.path().join("server.log"),
    );
    let url = format!("tcp://{}", line.strip_prefix("listening on ").unwrap());
    let out = ok(&["copy", &src, &url]);
    assert!(out.contains("copied 4 transactions"), "{out}");
    commit_some(Path::new(&src), 1);
    let out = ok(&["copy", &src, &url]);
    assert!(out.contains("copied 1 transactions"), "{out}");
    let out = ok(&["copy", &url, &back]);
    assert!(out.contains("copied 5 transactions"), "{out}");
    server.stop();
    assert_eq!(dump(&src), dump(&served));
    assert_eq!(dump(&src), dump(&back));
    assert_eq!(contents(Path::new(&src)), contents(Path::new(&back)));
}

#[test]
fn a_read_only_server_refuses_to_take_a_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (src, served) = (path_in(&dir, "src.zdb"), path_in(&dir, "served.zdb"));
    commit_some(Path::new(&src), 1);
    commit_some(Path::new(&served), 0);
    let (server, line) = Process::start(
        &["server", &served, "--listen", "127.0.0.1:0", "--read-only"],
        &dir.path().join("server.log"),
    );
    let url = format!("tcp://{}", line.strip_prefix("listening on ").unwrap());
    let err = refused(&["copy", &src, &url]);
    assert!(err.contains("read-only"), "{err}");
    server.stop();
    assert_eq!(dump(&served), "");
}

#[test]
fn a_destination_that_diverged_from_the_source_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (path_in(&dir, "src.zdb"), path_in(&dir, "dst.zdb"));
    commit_some(Path::new(&src), 2);
    ok(&["copy", &src, &dst]);
    // DST gains a transaction of its own.
    commit_some(Path::new(&dst), 1);
    commit_some(Path::new(&src), 1);
    let before = dump(&dst);
    let err = refused(&["copy", &src, &dst]);
    assert!(
        err.contains("is not a copy of") && err.contains("copy into a new data file"),
        "{err}"
    );
    assert_eq!(dump(&dst), before);
    // A store with other history altogether.
    let other = path_in(&dir, "other.zdb");
    commit_some(Path::new(&other), 1);
    let err = refused(&["copy", &src, &other]);
    assert!(err.contains("is not a copy of"), "{err}");
}

#[test]
fn bad_stores_are_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (path_in(&dir, "src.zdb"), path_in(&dir, "dst.zdb"));
    commit_some(Path::new(&src), 1);
    let same = format!("{}/./src.zdb", dir.path().display());
    let err = refused(&["copy", &src, &same]);
    assert!(err.contains("are the same store"), "{err}");
    let err = refused(&["copy", &path_in(&dir, "missing.zdb"), &dst]);
    assert!(err.contains("no such data file"), "{err}");
    assert!(!Path::new(&dst).exists(), "a failed copy left {dst} behind");
    let err = refused(&["copy", &src, "ftp://host/x"]);
    assert!(err.contains("unknown store kind"), "{err}");
    let err = refused(&["copy", &src, "tcp://127.0.0.1"]);
    assert!(err.contains("needs a port"), "{err}");
    let err = refused(&["copy", &src, &path_in(&dir, "no/such/dir.zdb")]);
    assert!(err.contains("does not exist"), "{err}");
    let err = refused(&["copy", &src]);
    assert!(err.contains("DST"), "{err}");
}
