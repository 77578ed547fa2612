//! TLS between client storages and a server (`ServerOptions::tls`,
//! `tls://HOST:PORT?ca=FILE` or `?fingerprint=SHA256`), with a certificate
//! made here by rcgen: commits, invalidations and large records travel over
//! it; a client checks the server by its CA or its pinned fingerprint and
//! refuses any other; a plain client cannot talk to a TLS server.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zodiac_storage::{
    ClientOptions, ClientStorage, Error, MemoryStorage, Oid, Server, ServerOptions, ServerTls,
    Storage, Tid, TransactionMeta, certificate_fingerprint,
};

struct Certificate {
    dir: tempfile::TempDir,
    fingerprint: String,
}

impl Certificate {
    fn new() -> Certificate {
        let made = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cert.pem"), made.cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), made.key_pair.serialize_pem()).unwrap();
        Certificate {
            fingerprint: certificate_fingerprint(made.cert.der()),
            dir,
        }
    }

    fn cert(&self) -> std::path::PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn server(&self, options: ServerOptions) -> Server {
        let tls =
            ServerTls::from_pem_files(&self.cert(), &self.dir.path().join("key.pem")).unwrap();
        Server::start(
            Arc::new(MemoryStorage::new()),
            "127.0.0.1:0",
            options.tls(Some(tls)),
        )
        .unwrap()
    }
}

fn connect(address: &str) -> zodiac_storage::Result<ClientStorage> {
    ClientStorage::connect(
        address,
        ClientOptions::new()
            .token(Some(b"t".to_vec()))
            .wait_timeout(Duration::from_secs(3)),
    )
}

fn ca_address(server: &Server, cert: &Path) -> String {
    format!("tls://{}?ca={}", server.local_addr(), cert.display())
}

#[test]
fn clients_commit_and_see_each_others_commits_over_tls() {
    let certificate = Certificate::new();
    let server = certificate.server(ServerOptions::new().token(Some(b"t".to_vec())));
    let a = connect(&ca_address(&server, &certificate.cert())).unwrap();
    let pinned = format!(
        "tls://{}?fingerprint={}",
        server.local_addr(),
        certificate.fingerprint
    );
    let b = connect(&pinned).unwrap();
    let oids: Vec<Oid> = (0..4).map(|_| a.new_oid().unwrap()).collect();
    // A record much larger than a TLS record, and many small commits.
    let big: Vec<u8> = (0..(3 << 20)).map(|i| (i % 253) as u8).collect();
    let mut t = a.begin(TransactionMeta::default()).unwrap();
    t.store(oids[0], Tid::ZERO, big.clone()).unwrap();
    let mut tid = t.finish().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.last_tid() < tid {
        assert!(Instant::now() < deadline, "b never saw a's commit");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(b.load(oids[0], Tid::MAX).unwrap().data, big);
    // Both commit at once, loading as they go.
    let writers: Vec<_> = [(a, oids[1]), (b, oids[2])]
        .into_iter()
        .map(|(c, oid)| {
            std::thread::spawn(move || {
                let mut base = Tid::ZERO;
                for i in 0..100u32 {
                    let mut t = c.begin(TransactionMeta::default()).unwrap();
                    t.store(oid, base, i.to_le_bytes().to_vec()).unwrap();
                    base = t.finish().unwrap();
                    assert_eq!(c.load(oid, base).unwrap().data, i.to_le_bytes());
                }
                c
            })
        })
        .collect();
    let clients: Vec<ClientStorage> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    for c in &clients {
        c.sync().unwrap();
        assert_eq!(c.load(oids[1], Tid::MAX).unwrap().data, 99u32.to_le_bytes());
        assert_eq!(c.load(oids[2], Tid::MAX).unwrap().data, 99u32.to_le_bytes());
        tid = tid.max(c.last_tid());
    }
    assert!(tid > Tid::ZERO);
    for c in clients {
        c.close().unwrap();
    }
    server.shutdown();
}

#[test]
fn a_client_refuses_a_server_it_cannot_check_and_a_plain_client_gets_nowhere() {
    let certificate = Certificate::new();
    let server = certificate.server(ServerOptions::new().token(Some(b"t".to_vec())));
    let addr = server.local_addr();
    // Another certificate's fingerprint: refused at once, naming what was seen.
    let other = Certificate::new();
    let started = Instant::now();
    match connect(&format!("tls://{addr}?fingerprint={}", other.fingerprint)) {
        Err(e @ Error::Protocol { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("TLS") && text.contains(&certificate.fingerprint),
                "{text}"
            );
        }
        other => panic!("not refused: {:?}", other.map(|_| ())),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "returned at once"
    );
    // Another CA: refused.
    match connect(&ca_address(&server, &other.cert())) {
        Err(Error::Protocol { what, .. }) => assert!(what.contains("TLS"), "{what}"),
        other => panic!("not refused: {:?}", other.map(|_| ())),
    }
    // tls:// without a way to check the server.
    match connect(&format!("tls://{addr}")) {
        Err(e @ Error::Format { .. }) => {
            assert!(e.to_string().contains("?ca=FILE"), "{e}")
        }
        other => panic!("not refused: {:?}", other.map(|_| ())),
    }
    // A plain client cannot talk to it.
    assert!(connect(&addr.to_string()).is_err());
    // The server still serves TLS clients.
    let c = connect(&ca_address(&server, &certificate.cert())).unwrap();
    assert!(c.new_oid().is_ok());
    c.close().unwrap();
    server.shutdown();
}
