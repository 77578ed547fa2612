//! kill -9 of a process in the middle of packing, repeatedly: the data file always
//! opens, verifies healthy, and holds every acknowledged write.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use zodiac_storage::offline::verify;
use zodiac_storage::{Durability, FileOptions, FileStorage, Oid, Storage, Tid, TransactionMeta};

const OBJECTS: u64 = 20_000;

fn seq_of(data: &[u8]) -> u64 {
    let text = std::str::from_utf8(data).expect("utf-8");
    text.strip_prefix("seq=")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unexpected data {text:?}"))
}

#[test]
fn kill9_during_pack_leaves_a_usable_file_with_every_acknowledged_write() {
    let rounds: u64 = std::env::var("ZODIAC_PACK_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pack.zdb");
    // A file big enough that a pack takes milliseconds: 20,000 objects, 3 revisions.
    {
        let s = FileStorage::open(&path, FileOptions::new().durability(Durability::Off)).unwrap();
        let oids: Vec<Oid> = (0..OBJECTS).map(|_| s.new_oid().unwrap()).collect();
        assert_eq!(oids[0], Oid(1));
        let mut bases = vec![Tid::ZERO; oids.len()];
        for _ in 0..3 {
            let mut t = s.begin(TransactionMeta::described("load")).unwrap();
            for (oid, base) in oids.iter().zip(&bases) {
                t.store(*oid, *base, b"seq=0".to_vec()).unwrap();
            }
            let tid = t.finish().unwrap();
            bases.fill(tid);
        }
        s.sync().unwrap();
    }
    let mut acked: HashMap<u64, u64> = HashMap::new();
    let mut next_seq = 1;
    let mut packs = 0;
    for round in 0..rounds {
        let mut child = Command::new(env!("CARGO_BIN_EXE_packer"))
            .args([
                path.to_str().unwrap(),
                &OBJECTS.to_string(),
                &next_seq.to_string(),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn packer");
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map(|l| l.unwrap())
                .collect::<Vec<String>>()
        });
        // Different moments of the pack loop in different rounds.
        std::thread::sleep(Duration::from_millis(40 + round * 17 % 90));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "round {round}: the packer ended by itself"
        );
        for line in reader.join().unwrap() {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts.as_slice() {
                ["ack", seq, _tid, a, b, c] => {
                    let seq: u64 = seq.parse().unwrap();
                    for oid in [a, b, c] {
                        acked.insert(oid.parse().unwrap(), seq);
                    }
                    next_seq = seq + 1;
                }
                ["packed"] => packs += 1,
                _ => panic!("round {round}: unexpected line {line:?}"),
            }
        }
        let report = verify(&path).unwrap();
        assert!(
            report.is_healthy(),
            "round {round}: damage {:?}, index {:?}",
            report.damage,
            report.index
        );
        let s = FileStorage::open(&path, FileOptions::new())
            .unwrap_or_else(|e| panic!("round {round}: reopening failed: {e}"));
        for (oid, seq) in &acked {
            let data = s.load(Oid(*oid), Tid::MAX).unwrap().data;
            // A commit durable but killed before its ack was printed may be newer.
            assert!(
                seq_of(&data) >= *seq,
                "round {round}: object {oid} lost acknowledged seq {seq}"
            );
        }
        assert_eq!(s.object_count(), OBJECTS, "round {round}: objects lost");
        drop(s);
    }
    assert!(
        packs > 0,
        "no pack completed: the test checked nothing about packing"
    );
    println!(
        "pack_kill9: {rounds} kills, {packs} packs completed, {} objects written",
        acked.len()
    );
}
