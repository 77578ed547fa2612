//! `phys-fdatasync`: the disk's floor for one small durable commit.
//!
//! 3,000 times: write 256 bytes at the next offset of a file that was written in full
//! and fsynced beforehand (so its size never changes and fdatasync has no metadata to
//! flush), then fdatasync. Reports writes/s and the p50/p99 latency of one write plus
//! its fdatasync.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use crate::Result;
use crate::report::{Measurement, Value};
use crate::stats::Latencies;

const WRITES: usize = 3_000;
const WRITE_BYTES: usize = 256;
/// The preallocated file is written in chunks of this size.
const FILL_CHUNK_BYTES: usize = 1 << 20;

/// Runs the probe in `dir` (which must exist) and removes its file afterwards.
pub fn fdatasync(dir: &Path) -> Result<Measurement> {
    let path = dir.join("fdatasync.dat");
    let result = run(&path);
    let _ = fs::remove_file(&path);
    result
}

fn run(path: &Path) -> Result<Measurement> {
    let size = (WRITES * WRITE_BYTES).div_ceil(FILL_CHUNK_BYTES) * FILL_CHUNK_BYTES;
    {
        let mut file = File::create(path)?;
        let zeros = vec![0u8; FILL_CHUNK_BYTES];
        for _ in 0..size / FILL_CHUNK_BYTES {
            file.write_all(&zeros)?;
        }
        file.sync_all()?;
    }
    let file = OpenOptions::new().write(true).open(path)?;
    let buf = [7u8; WRITE_BYTES];
    let mut latencies = Latencies::with_capacity(WRITES);
    let start = Instant::now();
    for i in 0..WRITES {
        let t0 = Instant::now();
        file.write_all_at(&buf, (i * WRITE_BYTES) as u64)?;
        file.sync_data()?;
        latencies.record(t0.elapsed());
    }
    let elapsed = start.elapsed();
    assert_eq!(
        file.metadata()?.len(),
        size as u64,
        "the file must not grow"
    );

    let mut m = Measurement::new(
        "phys-fdatasync",
        elapsed.as_secs_f64(),
        WRITES as u64,
        "writes/s",
    );
    m.set("write_bytes", Value::Int(WRITE_BYTES as u64));
    if let Some((p50, p99)) = latencies.p50_p99() {
        m.set("p50_us", Value::Float(p50, 1));
        m.set("p99_us", Value::Float(p99, 1));
    }
    Ok(m)
}
