//! `zodiac server --tls-cert F --tls-key F` with a certificate made by rcgen:
//! clients check it by CA file or pinned fingerprint and commit over TLS; a
//! `zodiac worker` runs a job `zodiac jobs put` put there.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use zodiac_storage::{ClientOptions, ClientStorage, Storage, Tid, TransactionMeta};

/// `zodiac server --tls-cert F --tls-key F`: a client connecting to
/// `tls://HOST:PORT?ca=F` commits; the server logs the fingerprint a client may
/// pin instead, and pinning it works too.
#[test]
fn zodiac_server_serves_over_tls_with_the_given_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    let log = dir.path().join("server.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_zodiac"))
        .arg("server")
        .arg(dir.path().join("data.zdc"))
        .args(["--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
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
    let fingerprint = zodiac_storage::certificate_fingerprint(made.cert.der());
    for address in [
        format!("tls://{addr}?ca={}", cert.display()),
        format!("tls://{addr}?fingerprint={fingerprint}"),
    ] {
        let c = ClientStorage::connect(
            &address,
            ClientOptions::new().wait_timeout(Duration::from_secs(5)),
        )
        .unwrap_or_else(|e| panic!("{address}: {e}"));
        let oid = c.new_oid().unwrap();
        let mut t = c.begin(TransactionMeta::default()).unwrap();
        t.store(oid, Tid::ZERO, b"over TLS".to_vec()).unwrap();
        let tid = t.finish().unwrap();
        assert_eq!(c.load(oid, tid).unwrap().data, b"over TLS");
        c.close().unwrap();
        // The command line takes the same address where it takes a server store.
        let history = Command::new(env!("CARGO_BIN_EXE_zodiac"))
            .args(["history", &address, &oid.0.to_string()])
            .output()
            .unwrap();
        assert!(
            history.status.success(),
            "{}",
            String::from_utf8_lossy(&history.stderr)
        );
        let out = String::from_utf8_lossy(&history.stdout);
        assert!(
            out.contains(&tid.0.to_string()) || out.contains(&tid.to_string()),
            "{out}"
        );
    }

    // A worker and the jobs commands over TLS: a job put there runs and completes.
    let store = format!("tls://{addr}?ca={}", cert.display());
    let mut worker = Command::new(env!("CARGO_BIN_EXE_zodiac"))
        .args(["worker", &store, "--poll-interval", "100ms", "--uuid-file"])
        .arg(dir.path().join("w.uuid"))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("worker.log")).unwrap())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(worker.stdout.as_mut().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert!(ready.trim().ends_with(" ready"), "{ready:?}");
    let zodiac = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_zodiac"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "zodiac {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let id = zodiac(&["jobs", "put", &store, "echo", r#"{"value": 7}"#]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let shown = zodiac(&["jobs", "show", &store, &id, "--json"]);
        let doc: serde_json::Value = serde_json::from_str(&shown).unwrap();
        if doc["status"] == "COMPLETED" {
            assert_eq!(doc["result"], 7, "{doc}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not run over TLS: {doc}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = worker.kill();
    let _ = worker.wait();

    let _ = child.kill();
    let _ = child.wait();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains(&fingerprint), "{logged}");
}
