//! The end of the data is decided by what was durably written: an open tells the
//! torn last group of a crash (cut, its bytes saved) from damage to bytes that had
//! been durable (refused, nothing changed), by the durable marks of the records
//! after the damage and by what the saved index vouches for; oids are never handed
//! out twice; and the log line of a cut claims no more than is known.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use zodiac_storage::offline::index_path;
use zodiac_storage::{
    Durability, Error, FileOptions, FileStorage, Oid, Storage, Tid, TransactionMeta,
};

fn write(s: &dyn Storage, oid: Oid, bytes: &[u8]) -> Tid {
    let mut t = s.begin(TransactionMeta::described("test")).unwrap();
    let base = s.load(oid, Tid::MAX).map(|r| r.tid).unwrap_or(Tid::ZERO);
    t.store(oid, base, bytes.to_vec()).unwrap();
    t.finish().unwrap()
}

/// Commits `n` transactions, each a new object of `size` bytes; returns the offset
/// each starts at and its tid.
fn commit_new_objects(s: &FileStorage, n: usize, size: usize) -> Vec<(u64, Tid, Oid)> {
    (0..n)
        .map(|i| {
            let at = s.data_end();
            let oid = s.new_oid().unwrap();
            (at, write(s, oid, &vec![i as u8 + 1; size]), oid)
        })
        .collect()
}

fn tail_files(path: &Path) -> Vec<PathBuf> {
    let prefix = format!("{}.tail-", path.file_name().unwrap().to_string_lossy());
    let mut v: Vec<PathBuf> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&prefix)
        })
        .collect();
    v.sort();
    v
}

fn zero(path: &Path, from: u64, len: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&vec![0u8; len as usize], from).unwrap();
}

/// The durable lag (header offset 44) of the record at `pos`.
fn durable_lag_at(bytes: &[u8], pos: u64) -> u64 {
    let at = pos as usize + 44;
    u64::from(u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()))
}

/// Every log line of this test binary, for the tests of what is logged.
static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        LOG.lock().unwrap().push(record.args().to_string());
    }
    fn flush(&self) {}
}

fn capture_log() {
    static LOGGER: Capture = Capture;
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Warn);
}

fn logged_about(path: &Path) -> Vec<String> {
    let name = path.display().to_string();
    LOG.lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with(&name))
        .cloned()
        .collect()
}

/// Review found that a run of zeros of 64 KiB or more starting at a transaction
/// boundary was taken by every open as the end of the data: the transactions after
/// it vanished without a word (`jobs status` showed 59 of 120 pending jobs), and
/// the next commit reused their oids and wrote over them. The records after the
/// zeros were written when the bytes at the zeros had long been durable (their
/// durable marks lie beyond the zeros): that is damage, and every open refuses it
/// without changing a byte.
#[test]
fn zeros_at_a_transaction_boundary_in_the_middle_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let s = FileStorage::open(&path, FileOptions::new()).unwrap();
    let txns = commit_new_objects(&s, 24, 8 << 10);
    drop(s);
    // The index is gone too (or this open would refuse on its word alone).
    std::fs::remove_file(index_path(&path)).unwrap();
    let damage_at = txns[4].0;
    zero(&path, damage_at, 80 << 10);
    let before = std::fs::read(&path).unwrap();
    for read_only in [false, true] {
        let err = FileStorage::open(&path, FileOptions::new().read_only(read_only))
            .err()
            .unwrap_or_else(|| panic!("read-only {read_only}: a file with damage opened"));
        let Error::Corrupted { offset, what, .. } = &err else {
            panic!("expected Corrupted, got {err}");
        };
        assert_eq!(*offset, damage_at, "{what}");
        let text = err.to_string();
        assert!(
            text.contains("zodiac verify") && text.contains("zodiac recover"),
            "{text}"
        );
        // The first intact transaction after the zeros is named.
        let next = txns.iter().find(|t| t.0 >= damage_at + (80 << 10)).unwrap();
        assert!(
            what.contains(&format!("a valid transaction follows at offset {}", next.0)),
            "{what}"
        );
    }
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the file was changed"
    );
    assert!(tail_files(&path).is_empty());
}

/// The same run of zeros at the start of the last group, which was written but
/// never made durable (a power cut lost its first pages): nothing after the zeros
/// was acknowledged as durable, so the open cuts the group, saves its bytes, and
/// hands out none of its oids again.
#[test]
fn the_same_zeros_in_the_unsynced_last_group_are_cut() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let s = FileStorage::open(&path, FileOptions::new()).unwrap();
    let acknowledged = commit_new_objects(&s, 3, 100);
    drop(s);
    // With durability off nothing written after the open is known durable: the
    // durable mark of each of these records is the end at the open.
    let s = FileStorage::open(&path, FileOptions::new().durability(Durability::Off)).unwrap();
    let group_start = s.data_end();
    let group = commit_new_objects(&s, 12, 8 << 10);
    let group_end = s.data_end();
    drop(s);
    std::fs::remove_file(index_path(&path)).unwrap();
    zero(&path, group_start, 80 << 10);
    let bytes = std::fs::read(&path).unwrap();
    let s = FileStorage::open(&path, FileOptions::new()).unwrap();
    assert_eq!(s.last_tid(), acknowledged[2].1);
    assert_eq!(s.data_end(), group_start);
    for (_, tid, oid) in &acknowledged {
        assert_eq!(s.load(*oid, Tid::MAX).unwrap().tid, *tid);
    }
    let tails = tail_files(&path);
    assert_eq!(tails.len(), 1);
    assert_eq!(
        tails[0].file_name().unwrap().to_string_lossy(),
        format!("data.zdb.tail-{group_start}")
    );
    assert_eq!(
        std::fs::read(&tails[0]).unwrap(),
        bytes[group_start as usize..group_end as usize]
    );
    let last_group_oid = group.last().unwrap().2;
    assert!(
        s.new_oid().unwrap() > last_group_oid,
        "an oid of the cut group was handed out again"
    );
}

/// A saved index is written only once the data it covers is durable: an index
/// (checksum right, this file's) that covers more than the file now holds proves
/// that acknowledged transactions were removed, by a truncation at a record
/// boundary (which leaves no torn bytes to see) or inside a record. The open used to
/// distrust the index, rebuild it from the shorter file and carry on.
#[test]
fn a_truncation_below_what_the_saved_index_covers_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let s = FileStorage::open(&path, FileOptions::new()).unwrap();
    let txns = commit_new_objects(&s, 5, 100);
    s.close().unwrap();
    drop(s);
    let full = std::fs::read(&path).unwrap();
    for cut in [txns[3].0, txns[3].0 + 60] {
        std::fs::write(&path, &full[..cut as usize]).unwrap();
        let err = FileStorage::open(&path, FileOptions::new())
            .err()
            .unwrap_or_else(|| panic!("cut at {cut}: a truncated file opened"));
        let Error::Corrupted { offset, what, .. } = &err else {
            panic!("expected Corrupted, got {err}");
        };
        assert_eq!(*offset, txns[3].0, "{what}");
        assert!(
            what.contains("acknowledged transactions are missing"),
            "{what}"
        );
        assert!(err.to_string().contains("zodiac recover"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), &full[..cut as usize]);
        assert!(tail_files(&path).is_empty(), "cut at {cut}");
    }
}

/// Oids were handed out again after a cut: the allocator took only the marks of the
/// records that survived, not the mark in the header of the cut one (whose objects
/// a client may still refer to). It takes the largest mark it can read.
#[test]
fn oids_of_a_cut_transaction_are_not_handed_out_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let s = FileStorage::open(&path, FileOptions::new()).unwrap();
    write(&s, s.new_oid().unwrap(), b"first");
    let last_start = s.data_end();
    let oids: Vec<Oid> = (0..5).map(|_| s.new_oid().unwrap()).collect();
    let mut t = s.begin(TransactionMeta::described("torn")).unwrap();
    for oid in &oids {
        t.store(*oid, Tid::ZERO, vec![7; 200]).unwrap();
    }
    t.finish().unwrap();
    let end = s.data_end();
    drop(s);
    // A crash mid-write: the last record torn, no index covering it.
    std::fs::remove_file(index_path(&path)).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..(end - 100) as usize]).unwrap();
    let s = FileStorage::open(&path, FileOptions::new()).unwrap();
    assert_eq!(s.data_end(), last_start);
    let next = s.new_oid().unwrap();
    assert!(next > *oids.last().unwrap(), "oid {next} handed out again");
}

/// The cut used to be logged with "no acknowledged commit is lost", which nothing
/// proves: damage to the last acknowledged transaction looks the same as the torn
/// write of a crash. The line says what is known.
#[test]
fn the_log_line_of_a_cut_says_what_is_known() {
    capture_log();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let s = FileStorage::open(&path, FileOptions::new()).unwrap();
    commit_new_objects(&s, 2, 100);
    let last_start = s.data_end();
    let (_, last_tid, _) = commit_new_objects(&s, 1, 100)[0];
    let end = s.data_end();
    drop(s);
    std::fs::remove_file(index_path(&path)).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[(end - 30) as usize] ^= 0x08;
    std::fs::write(&path, &bytes).unwrap();
    drop(FileStorage::open(&path, FileOptions::new()).unwrap());
    let lines = logged_about(&path);
    let cut: Vec<&String> = lines.iter().filter(|l| l.contains(": cut ")).collect();
    assert_eq!(cut.len(), 1, "{lines:?}");
    let line = cut[0];
    let saved = format!("{}.tail-{last_start}", path.display());
    // The zero bytes that end the trailer's length are not told from the zeros after it.
    let saved_len = std::fs::metadata(&saved).unwrap().len();
    assert_eq!(saved_len, end - last_start - 7);
    assert_eq!(
        line.as_str(),
        format!(
            "{}: cut an incomplete or damaged last transaction at offset {last_start} \
             (transaction checksum mismatch (damaged bytes), tid {last_tid}); a crash during its \
             write leaves this, and such a transaction was never acknowledged; damage to the last \
             acknowledged transaction looks the same; its {} bytes are in {saved}",
            path.display(),
            saved_len
        )
    );
    assert!(!line.contains("no acknowledged commit is lost"));
}

/// Each record's durable mark: with fdatasync, the start of the group it was
/// written in (every byte before it was durable); with durability off, the end at
/// the open (nothing later is known durable).
#[test]
fn records_carry_the_durable_mark_they_were_written_with() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let s = FileStorage::open(&path, FileOptions::new()).unwrap();
    let durable = commit_new_objects(&s, 3, 100);
    drop(s);
    let s = FileStorage::open(&path, FileOptions::new().durability(Durability::Off)).unwrap();
    let floor = s.data_end();
    let off = commit_new_objects(&s, 3, 100);
    drop(s);
    let bytes = std::fs::read(&path).unwrap();
    for (pos, _, _) in &durable {
        assert_eq!(durable_lag_at(&bytes, *pos), 0, "durable record at {pos}");
    }
    for (pos, _, _) in &off {
        assert_eq!(
            durable_lag_at(&bytes, *pos),
            pos - floor,
            "record at {pos} written with durability off"
        );
    }
}

/// A read-only open beside a live writer: while the open examined the rest of the
/// file after the end its scan had reached, the writer committed more, and those
/// records' durable marks lie beyond that end. Taken for damage in the middle, it
/// refused the open; the record at that end is valid by then, which damage never
/// is, so the open sees the file as it was when its scan passed there.
#[test]
fn a_read_only_open_beside_a_live_writer_is_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.zdb");
    let writer = FileStorage::open(&path, FileOptions::new()).unwrap();
    let oid = writer.new_oid().unwrap();
    let first = write(&writer, oid, b"first");
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            // Bounded: on a file system where fdatasync costs nothing the file would
            // otherwise grow by gigabytes.
            for _ in 0..20_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                write(&writer, oid, &[5; 300]);
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
        });
        let started = Instant::now();
        let mut opens = 0;
        while opens < 300 && started.elapsed() < std::time::Duration::from_secs(3) {
            let reader = FileStorage::open(&path, FileOptions::new().read_only(true));
            let reader = reader.unwrap_or_else(|e| {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                panic!("read-only open {opens} beside a live writer: {e}")
            });
            assert!(reader.last_tid() >= first, "open {opens}");
            assert_eq!(reader.load(oid, Tid::MAX).unwrap().tid, reader.last_tid());
            opens += 1;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}

/// Every pack used to warn "durability is off ... use this only for tests" about
/// its own new file, which it writes without per-commit syncs and syncs at the end:
/// an alarm about nothing the operator chose. The warning stays for a user's open.
#[test]
fn durability_off_warns_for_a_users_open_but_not_for_a_packs_own_file() {
    capture_log();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chosen.zdb");
    let warned = |path: &Path| {
        logged_about(path)
            .iter()
            .any(|l| l.contains("durability is off"))
    };
    let s = FileStorage::open(&path, FileOptions::new().durability(Durability::Off)).unwrap();
    assert!(warned(&path), "{:?}", logged_about(&path));
    s.close().unwrap();
    let packed = dir.path().join("packed.zdb");
    let s = FileStorage::open(&packed, FileOptions::new()).unwrap();
    commit_new_objects(&s, 3, 100);
    s.pack(Tid::MAX, None).unwrap();
    s.close().unwrap();
    assert!(!warned(&packed), "{:?}", logged_about(&packed));
}

/// `recover` (salvage) wrote its copy the same way as pack, and warned the same way.
#[test]
fn durability_off_does_not_warn_for_a_salvaged_copy() {
    capture_log();
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.zdb");
    let s = FileStorage::open(&source, FileOptions::new()).unwrap();
    commit_new_objects(&s, 3, 100);
    s.close().unwrap();
    let salvaged = dir.path().join("salvaged.zdb");
    zodiac_storage::offline::recover(&source, &salvaged).unwrap();
    assert!(salvaged.exists());
    let lines = logged_about(&salvaged);
    assert!(
        !lines.iter().any(|l| l.contains("durability is off")),
        "{lines:?}"
    );
}
