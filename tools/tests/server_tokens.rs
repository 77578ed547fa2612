//! `zodiac server --token-file RW --read-only-token-file RO`: a client with the
//! read-only token loads but its commit is refused saying why; the same secret in
//! both files is refused at start.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use zodiac_storage::{ClientOptions, ClientStorage, Storage, Tid, TransactionMeta};

#[test]
fn a_read_only_token_file_gives_clients_that_load_but_cannot_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (rw, ro) = (dir.path().join("rw"), dir.path().join("ro"));
    std::fs::write(&rw, "writer-secret\n").unwrap();
    std::fs::write(&ro, "reader-secret\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_zodiac"))
        .arg("server")
        .arg(dir.path().join("data.zdc"))
        .args(["--listen", "127.0.0.1:0", "--token-file"])
        .arg(&rw)
        .arg("--read-only-token-file")
        .arg(&ro)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    let connect = |token: &[u8]| {
        ClientStorage::connect(
            &addr,
            ClientOptions::new()
                .token(Some(token.to_vec()))
                .wait_timeout(Duration::from_secs(5)),
        )
        .unwrap()
    };
    let writer = connect(b"writer-secret");
    let oid = writer.new_oid().unwrap();
    let mut t = writer.begin(TransactionMeta::default()).unwrap();
    t.store(oid, Tid::ZERO, b"by the writer".to_vec()).unwrap();
    let tid = t.finish().unwrap();
    let reader = connect(b"reader-secret");
    assert_eq!(reader.load(oid, Tid::MAX).unwrap().data, b"by the writer");
    let mut t = reader.begin(TransactionMeta::default()).unwrap();
    t.store(oid, tid, b"by the reader".to_vec()).unwrap();
    let refused = t.finish().unwrap_err().to_string();
    assert!(refused.contains("read-only token"), "{refused}");
    let _ = child.kill();
    let _ = child.wait();

    // One secret in both files would let read-only clients write.
    let same = Command::new(env!("CARGO_BIN_EXE_zodiac"))
        .arg("server")
        .arg(dir.path().join("other.zdc"))
        .args(["--listen", "127.0.0.1:0", "--token-file"])
        .arg(&rw)
        .arg("--read-only-token-file")
        .arg(&rw)
        .output()
        .unwrap();
    assert!(!same.status.success());
    let err = String::from_utf8_lossy(&same.stderr);
    assert!(err.contains("same secret"), "{err}");
}
