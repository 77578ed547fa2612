//! `zodiac dump`, `tail` and `history` run as a user would, on a real file.

use std::path::Path;
use std::process::{Command, Output};

use zodiac_storage::{Durability, FileOptions, FileStorage, Oid, Storage, Tid, TransactionMeta};

fn zodiac(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zodiac"))
        .args(args)
        .output()
        .expect("run zodiac")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Four transactions, each rewriting object 1; returns their tids.
fn four_transactions(path: &Path) -> Vec<Tid> {
    let s = FileStorage::open(path, FileOptions::new().durability(Durability::Off)).unwrap();
    let oid = s.new_oid().unwrap();
    let mut base = Tid::ZERO;
    let mut tids = vec![];
    for i in 0..4 {
        let mut meta = TransactionMeta::described(format!("step {i}"));
        meta.user = "alice".into();
        meta.extension
            .insert("ticket".into(), format!("T-{i}").into_bytes());
        let mut t = s.begin(meta).unwrap();
        t.store(oid, base, vec![b'x'; 10 + i]).unwrap();
        base = t.finish().unwrap();
        tids.push(base);
    }
    assert_eq!(oid, Oid(1));
    tids
}

#[test]
fn dump_tail_and_history_show_what_was_committed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let tids = four_transactions(&path);
    let p = path.to_str().unwrap();

    let out = zodiac(&["dump", p]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains(&format!("tid {} ", tids[0])), "{stdout}");
    assert!(
        stdout.contains("user \"alice\"  \"step 3\"  ticket=\"T-3\""),
        "{stdout}"
    );
    assert!(stdout.contains("0x1  13 bytes"), "{stdout}");

    let from = tids[1].0.to_string();
    let to = tids[2].0.to_string();
    let out = zodiac(&["dump", p, "--from", &from, "--to", &to, "--json"]);
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON document per line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["tid"], tids[1].0);
    assert_eq!(lines[1]["description"], "step 2");
    assert_eq!(lines[1]["extension"]["ticket"], "T-2");
    assert_eq!(lines[1]["objects"][0]["oid"], 1);
    assert_eq!(lines[1]["objects"][0]["size"], 12);

    let out = zodiac(&["tail", p, "-n", "2", "--json"]);
    let tail: Vec<u64> = text(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["tid"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(tail, vec![tids[2].0, tids[3].0]);

    let out = zodiac(&["history", p, "0x1", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let history: Vec<u64> = json["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["tid"].as_u64().unwrap())
        .collect();
    assert_eq!(history, tids.iter().rev().map(|t| t.0).collect::<Vec<_>>());
    let out = zodiac(&["history", p, "1"]);
    assert!(
        text(&out.stdout).starts_with("object 0x1: 4 revisions"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn bad_arguments_are_usage_errors_and_unknown_objects_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    four_transactions(&path);
    let p = path.to_str().unwrap();
    let out = zodiac(&["history", p, "zz"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("is not an oid"),
        "{}",
        text(&out.stderr)
    );
    let out = zodiac(&["dump", p, "--from", "yesterday"]);
    assert_eq!(out.status.code(), Some(2));
    let out = zodiac(&["history", p, "0x99"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("error: ") && stderr.contains("object 0x99 does not exist"),
        "{stderr}"
    );
}
