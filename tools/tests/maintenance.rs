//! `zodiac verify` and `zodiac recover` run as a user would, on real files.

use std::path::Path;
use std::process::{Command, Output};

use zodiac_storage::{Durability, FileOptions, FileStorage, Storage, Tid, TransactionMeta};

fn zodiac(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zodiac"))
        .args(args)
        .output()
        .expect("run zodiac")
}

/// A closed file with three one-object transactions; returns the second one's offset.
fn three_transactions(path: &Path) -> u64 {
    let s = FileStorage::open(path, FileOptions::new().durability(Durability::Off)).unwrap();
    let mut second = 0;
    for i in 0..3 {
        if i == 1 {
            second = s.data_end();
        }
        let oid = s.new_oid().unwrap();
        let mut t = s
            .begin(TransactionMeta::described(format!("t{i}")))
            .unwrap();
        t.store(oid, Tid::ZERO, format!("object {i}").into_bytes())
            .unwrap();
        t.finish().unwrap();
    }
    second
}

/// The end of each transaction of the data file at `path` (by its header's length).
fn three_transaction_ends(path: &Path) -> Vec<u64> {
    let bytes = std::fs::read(path).unwrap();
    let mut at = zodiac_storage::format::FILE_HEADER_LEN;
    let mut ends = vec![];
    while let Ok((len, _)) = zodiac_storage::format::peek_transaction(&bytes, at) {
        at += len;
        ends.push(at);
    }
    ends
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn verify_a_healthy_then_a_damaged_file_then_recover_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let p = path.to_str().unwrap();
    let second = three_transactions(&path);

    let out = zodiac(&["verify", p]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("3 transactions"),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stdout).contains("OK: every record is intact"));

    let mut bytes = std::fs::read(&path).unwrap();
    bytes[second as usize + 70] ^= 0x02;
    std::fs::write(&path, &bytes).unwrap();
    let out = zodiac(&["verify", p]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("DAMAGED at offset {second}")),
        "{stdout}"
    );
    assert!(stdout.contains("zodiac recover"), "{stdout}");

    let out = zodiac(&["verify", p, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(json["healthy"], false);
    assert_eq!(json["transactions"], 2);
    assert_eq!(json["damage"][0]["offset"], second);
    assert!(json["damage"][0]["resumes_at"].as_u64().unwrap() > second);

    let recovered = dir.path().join("recovered.zdb");
    let r = recovered.to_str().unwrap();
    // Recover salvages past the damage (it used to stop there and lose the third
    // transaction), naming the skipped bytes and the transaction they held.
    let out = zodiac(&["recover", p, "--output", r]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("copied 2 transactions"), "{stdout}");
    let third = three_transaction_ends(&path)[1];
    assert!(
        stdout.contains(&format!(
            "skipped: offset {second} .. {third} ({} bytes): transaction checksum mismatch",
            third - second
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("lost: 1 transactions there fail their checks (tid "),
        "{stdout}"
    );
    assert!(stdout.contains("zodiac refs"), "{stdout}");
    assert!(zodiac(&["verify", r]).status.success());

    let prefix = dir.path().join("prefix.zdb");
    let out = zodiac(&[
        "recover",
        p,
        "--output",
        prefix.to_str().unwrap(),
        "--stop-at-damage",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("copied 1 transactions"), "{stdout}");
    assert!(
        stdout.contains(
            "not copied (--stop-at-damage): 1 intact transactions after the first damage"
        ),
        "{stdout}"
    );

    let out = zodiac(&["recover", p, "--output", r]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("error: ") && stderr.contains("exists already"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn bad_input_gets_one_line_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.zdb");
    let out = zodiac(&["verify", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("error: ") && stderr.contains("missing.zdb"),
        "{stderr}"
    );
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "hello, this is not a database at all").unwrap();
    let out = zodiac(&["verify", notes.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not a Zodiac data file"),
        "{}",
        text(&out.stderr)
    );
    let out = zodiac(&["recover", notes.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a missing --output is a usage error"
    );
}

#[test]
fn backup_then_restore_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    three_transactions(&path);
    let backups = dir.path().join("backups");
    let (p, b) = (path.to_str().unwrap(), backups.to_str().unwrap());
    let out = zodiac(&["backup", p, b]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("backup point 1: 3 transactions"),
        "{}",
        text(&out.stdout)
    );
    let out = zodiac(&["backup", p, b]);
    assert!(
        text(&out.stdout).contains("nothing new"),
        "{}",
        text(&out.stdout)
    );
    let restored = dir.path().join("restored.zdb");
    let r = restored.to_str().unwrap();
    let out = zodiac(&["restore", b, r]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("as of backup point 1"),
        "{}",
        text(&out.stdout)
    );
    let out = zodiac(&["verify", r, "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["transactions"], 3);
    let out = zodiac(&["restore", b, r]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("exists already"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn verify_tells_hidden_transactions_behind_zeros_and_recover_copies_them() {
    // Zeros at a transaction boundary with valid transactions after them used to
    // read as the end of the data; verify now names them as hidden.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let p = path.to_str().unwrap();
    let s = FileStorage::open(&path, FileOptions::new().durability(Durability::Off)).unwrap();
    let mut starts = vec![];
    let mut tids = vec![];
    for i in 0..4 {
        starts.push(s.data_end());
        let oid = s.new_oid().unwrap();
        let mut t = s.begin(TransactionMeta::default()).unwrap();
        let len = if i == 1 { 80 << 10 } else { 10 };
        t.store(oid, Tid::ZERO, vec![1; len]).unwrap();
        tids.push(t.finish().unwrap());
    }
    starts.push(s.data_end());
    drop(s);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[starts[1] as usize..starts[2] as usize].fill(0);
    std::fs::write(&path, &bytes).unwrap();

    let out = zodiac(&["verify", p]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let zeros = starts[2] - starts[1];
    assert!(
        stdout.contains(&format!(
            "{zeros} bytes of zeros at offset {} followed by 2 valid transactions up to tid {}",
            starts[1], tids[3]
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("acknowledged transactions are hidden; run `zodiac recover"),
        "{stdout}"
    );
    assert!(!stdout.contains("incomplete tail"), "{stdout}");
    let out = zodiac(&["verify", p, "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["damage"][0]["kind"], "zeros");
    assert_eq!(json["damage"][0]["followed_by"], 2);
    assert_eq!(json["transactions_after_damage"], 2);

    let recovered = dir.path().join("recovered.zdb");
    let out = zodiac(&["recover", p, "--output", recovered.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("copied 3 transactions"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "skipped: offset {} .. {} ({zeros} bytes): only zero bytes; no transaction record could be read there",
            starts[1], starts[2]
        )),
        "{stdout}"
    );
}

/// CRC32 (IEEE), as the saved index's checksum (docs/format.md).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn verify_reports_a_stale_saved_index_and_how_to_fix_it() {
    // verify used to ignore PATH.index: an index with a valid checksum whose
    // entry points at an older revision passed as healthy.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let p = path.to_str().unwrap();
    let s = FileStorage::open(&path, FileOptions::new().durability(Durability::Off)).unwrap();
    let oid = s.new_oid().unwrap();
    let mut base = Tid::ZERO;
    for i in 0..2 {
        let mut t = s.begin(TransactionMeta::default()).unwrap();
        t.store(oid, base, format!("revision {i}").into_bytes())
            .unwrap();
        base = t.finish().unwrap();
    }
    drop(s);
    let out = zodiac(&["verify", p]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("agrees with the file"),
        "{}",
        text(&out.stdout)
    );

    // Point the object's entry at its first revision, keeping the CRC valid.
    let ipath = zodiac_storage::offline::index_path(&path);
    let mut b = std::fs::read(&ipath).unwrap();
    let data = std::fs::read(&path).unwrap();
    let first = zodiac_storage::format::transaction_at(&data, 48)
        .unwrap()
        .records[0]
        .0;
    let at = 64 + 8 * oid.0 as usize;
    b[at..at + 8].copy_from_slice(&first.to_le_bytes());
    let body = b.len() - 4;
    let crc = crc32(&b[..body]);
    b[body..].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&ipath, &b).unwrap();

    let out = zodiac(&["verify", p]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let i = ipath.display();
    assert!(
        stdout.contains(&format!(
            "INDEX {i}: object {oid}: the index points at offset {first}"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "fix the index: delete {i}; the next writable open rebuilds it"
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("DAMAGED"), "{stdout}");
    let out = zodiac(&["verify", p, "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["healthy"], false);
    assert_eq!(json["index"]["problems"].as_array().unwrap().len(), 1);
}

#[test]
fn verify_keeps_a_saved_index_that_proves_transactions_missing() {
    // A truncated file: its saved index covers transactions it no longer holds.
    // Deleting the index would hide that, so verify names it as the evidence.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let p = path.to_str().unwrap();
    let second = three_transactions(&path);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..second as usize]).unwrap();
    let out = zodiac(&["verify", p]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "the data file's valid transactions end at offset {second}: acknowledged transactions are missing"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("it is the evidence"), "{stdout}");
    assert!(!stdout.contains("delete"), "{stdout}");
}

/// The names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A failed command leaves nothing it created. Packing a missing file used to leave
/// `nope.zodiac.lock` behind, a backup of a missing file an empty backup directory,
/// and a restore from a damaged increment its half-written `OUTPUT.restoring`.
#[test]
fn failed_commands_leave_no_files_behind() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.zodiac");
    let m = missing.to_str().unwrap();
    let out = zodiac(&["pack", m]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("nope.zodiac"),
        "{}",
        text(&out.stderr)
    );
    let bk0 = dir.path().join("bk0");
    let out = zodiac(&["backup", m, bk0.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("nope.zodiac"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(listing(dir.path()), Vec::<String>::new());

    let path = dir.path().join("data.zdb");
    three_transactions(&path);
    let backups = dir.path().join("backups");
    let b = backups.to_str().unwrap();
    assert!(
        zodiac(&["backup", path.to_str().unwrap(), b])
            .status
            .success()
    );
    let increment = backups.join("increment-000001");
    let mut bytes = std::fs::read(&increment).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&increment, bytes).unwrap();
    let before = listing(dir.path());
    let restored = dir.path().join("restored.zdb");
    let out = zodiac(&["restore", b, restored.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("CRC"), "{}", text(&out.stderr));
    assert_eq!(listing(dir.path()), before);
}

/// `zodiac pack` used to warn "durability is off … use this only for tests" about
/// the copy it writes itself (synced once at the end).
#[test]
fn pack_does_not_warn_about_its_own_copy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    three_transactions(&path);
    let out = zodiac(&["pack", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("packed "),
        "{}",
        text(&out.stdout)
    );
    assert!(
        !text(&out.stderr).contains("durability is off"),
        "{}",
        text(&out.stderr)
    );
}

/// An error printed its cause twice: "...: opening the data file failed: No such
/// file or directory (os error 2): No such file or directory (os error 2)", the
/// storage error showing the OS error and also returning it as its source.
#[test]
fn an_error_prints_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.zdb");
    let m = missing.to_str().unwrap();
    let backups = dir.path().join("bk");
    for args in [
        vec!["verify", m],
        vec!["backup", m, backups.to_str().unwrap()],
        vec!["recover", m, "--output", "never.zdb"],
    ] {
        let out = zodiac(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = text(&out.stderr);
        assert_eq!(
            stderr.matches("(os error 2)").count(),
            1,
            "{args:?}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}
