//! Helper for the kill -9 during pack test: commits and packs in a loop until killed.
//!
//! `packer PATH OBJECTS START_SEQ`: the file holds objects with oids 1..=OBJECTS.
//! Each round updates three of them (data `seq=N`, chosen from N) and prints
//! `ack SEQ TID OID OID OID` once the commit is durable, then packs the file to now
//! (no GC) and prints `packed`.

use std::io::Write;

use zodiac_storage::{FileOptions, FileStorage, Oid, Storage, Tid, TransactionMeta};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, path, objects, start] = args.as_slice() else {
        eprintln!("usage: packer PATH OBJECTS START_SEQ");
        std::process::exit(2);
    };
    let objects: u64 = objects.parse().expect("OBJECTS");
    let mut seq: u64 = start.parse().expect("START_SEQ");
    let storage = FileStorage::open(path, FileOptions::new()).expect("open the data file");
    let mut out = std::io::stdout().lock();
    loop {
        let oids: Vec<Oid> = (0..3)
            .map(|k| Oid(1 + (seq * 7919 + k * 104_729) % objects))
            .collect();
        let mut txn = storage
            .begin(TransactionMeta::described(format!("seq {seq}")))
            .expect("begin");
        for oid in &oids {
            let base = storage.load(*oid, Tid::MAX).expect("load").tid;
            txn.store(*oid, base, format!("seq={seq}").into_bytes())
                .expect("store");
        }
        let tid = txn.finish().expect("commit");
        writeln!(
            out,
            "ack {seq} {} {} {} {}",
            tid.0, oids[0].0, oids[1].0, oids[2].0
        )
        .expect("stdout");
        out.flush().expect("stdout");
        storage.pack(Tid::MAX, None).expect("pack");
        writeln!(out, "packed").expect("stdout");
        out.flush().expect("stdout");
        seq += 1;
    }
}
