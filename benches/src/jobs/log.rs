//! The execution log: every job body appends `S <id> <tag> <ns>` when it starts and
//! `E <id> <tag> <ns>` when it returns; the harness tails the file.
//!
//! Invariants:
//! - One `write()` of a whole line per record on an `O_APPEND` descriptor, so lines
//!   from several processes never interleave.
//! - The reader keeps a partial last line until its newline arrives.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use zodiac_async::Handlers;

use crate::Result;

use super::{DRAIN_TAIL_INTERVAL, NOOP, SLEEP};

/// Wall-clock nanoseconds since the epoch: the execution log's time base.
pub(super) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

// ---------------------------------------------------------------- the execution log

/// Appends a job body's records to the execution log, one `write()` each.
pub(super) struct Recorder {
    file: File,
    tag: String,
}

impl Recorder {
    pub(super) fn open(path: &Path, tag: &str) -> std::io::Result<Recorder> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Recorder {
            file,
            tag: tag.to_string(),
        })
    }

    pub(super) fn record(&self, kind: char, id: u64) {
        let line = format!("{kind} {id} {} {}\n", self.tag, now_ns());
        // One write of a short line on an O_APPEND descriptor: whole and in order.
        if let Err(e) = (&self.file).write_all(line.as_bytes()) {
            eprintln!("zodiac-benches: cannot append to the execution log: {e}");
        }
    }
}

/// The bench handlers, recording into `recorder`: a no-op job, and a job sleeping
/// for its second argument in milliseconds.
pub(super) fn bench_handlers(recorder: Arc<Recorder>) -> Handlers {
    let mut h = Handlers::new();
    let r = Arc::clone(&recorder);
    h.register(NOOP, move |_ctx, id: u64| {
        r.record('S', id);
        r.record('E', id);
        Ok(())
    });
    h.register(SLEEP, move |_ctx, (id, ms): (u64, u64)| {
        recorder.record('S', id);
        std::thread::sleep(Duration::from_millis(ms));
        recorder.record('E', id);
        Ok(())
    });
    h
}

/// What the harness read from the execution log so far.
pub(super) struct LogReader {
    pub(super) file: File,
    pub(super) partial: Vec<u8>,
    /// Start and end records per id: (worker tag, ns).
    pub(super) starts: HashMap<u64, Vec<(String, u64)>>,
    pub(super) ends: HashMap<u64, Vec<(String, u64)>>,
    /// (id, tag) started and not ended by that tag.
    pub(super) open: HashSet<(u64, String)>,
    pub(super) first_start: Option<u64>,
    pub(super) last_end: Option<u64>,
    pub(super) last_progress: Instant,
}

impl LogReader {
    pub(super) fn new(path: &Path) -> Result<LogReader> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)?;
        Ok(LogReader {
            file,
            partial: Vec::new(),
            starts: HashMap::new(),
            ends: HashMap::new(),
            open: HashSet::new(),
            first_start: None,
            last_end: None,
            last_progress: Instant::now(),
        })
    }

    /// Reads what was appended since the last call; returns whether there was any.
    pub(super) fn poll(&mut self) -> Result<bool> {
        let mut fresh = Vec::new();
        self.file.read_to_end(&mut fresh)?;
        if fresh.is_empty() {
            return Ok(false);
        }
        self.last_progress = Instant::now();
        self.partial.extend_from_slice(&fresh);
        let complete = match self.partial.iter().rposition(|&b| b == b'\n') {
            Some(at) => at + 1,
            None => return Ok(true),
        };
        let lines: Vec<u8> = self.partial.drain(..complete).collect();
        for line in lines.lines() {
            let line = line?;
            let mut parts = line.split(' ');
            let (Some(kind), Some(id), Some(tag), Some(ns), None) = (
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
            ) else {
                return Err(format!("bad execution log line {line:?}").into());
            };
            let id: u64 = id.parse()?;
            let ns: u64 = ns.parse()?;
            match kind {
                "S" => {
                    self.starts.entry(id).or_default().push((tag.into(), ns));
                    self.open.insert((id, tag.into()));
                    self.first_start = Some(self.first_start.map_or(ns, |f| f.min(ns)));
                }
                "E" => {
                    self.ends.entry(id).or_default().push((tag.into(), ns));
                    self.open.remove(&(id, tag.to_string()));
                    self.last_end = Some(self.last_end.map_or(ns, |l| l.max(ns)));
                }
                _ => return Err(format!("bad execution log line {line:?}").into()),
            }
        }
        Ok(true)
    }

    /// Waits until `n` distinct ids have ended; fails after `stall` without a record.
    pub(super) fn wait_ended(&mut self, n: usize, stall: Duration) -> Result<()> {
        self.last_progress = Instant::now();
        loop {
            self.poll()?;
            if self.ends.len() >= n {
                return Ok(());
            }
            if self.last_progress.elapsed() > stall {
                return Err(format!(
                    "only {} of {n} jobs ended, and nothing happened for {stall:?}",
                    self.ends.len()
                )
                .into());
            }
            std::thread::sleep(DRAIN_TAIL_INTERVAL);
        }
    }

    pub(super) fn ran_twice(&self) -> u64 {
        self.ends.values().filter(|v| v.len() > 1).count() as u64
    }

    pub(super) fn started_twice(&self) -> u64 {
        self.starts.values().filter(|v| v.len() > 1).count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Result;

    #[test]
    fn the_log_reader_counts_starts_ends_and_open_bodies() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("zodiac-jobs-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("log");
        let mut reader = LogReader::new(&path)?;
        let a = Recorder::open(&path, "w0")?;
        let b = Recorder::open(&path, "w1")?;
        a.record('S', 1);
        a.record('E', 1);
        b.record('S', 1);
        b.record('E', 1);
        a.record('S', 2);
        assert!(reader.poll()?);
        assert_eq!(reader.ends.len(), 1);
        assert_eq!(reader.ran_twice(), 1);
        assert_eq!(reader.started_twice(), 1);
        assert!(reader.open.contains(&(2, "w0".to_string())));
        assert!(!reader.poll()?);
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
