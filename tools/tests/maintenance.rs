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
    let out = zodiac(&["recover", p, "--output", r]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("copied 1 transactions"), "{stdout}");
    assert!(
        stdout.contains(&format!("lost: the damaged region at offset {second}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("lost: 1 intact transactions after the damage"),
        "{stdout}"
    );
    assert!(zodiac(&["verify", r]).status.success());

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
