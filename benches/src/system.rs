//! What the process and the machine report about themselves (Linux `/proc`): resident
//! memory, its peak, the CPU, and the file system a directory lives on.
//!
//! Everything here is best effort: on a system without these files the values are
//! `None` and the harness leaves the fields out rather than failing the run.

use std::fs;
use std::path::Path;

/// Resident memory now (`VmRSS`), in bytes.
pub fn rss_bytes() -> Option<u64> {
    status_kib("VmRSS:").map(|kib| kib * 1024)
}

/// Peak resident memory (`VmHWM`) since the start or the last [`reset_peak_rss`], in
/// bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    status_kib("VmHWM:").map(|kib| kib * 1024)
}

/// Restarts the peak-RSS count at the current RSS, so the next [`peak_rss_bytes`]
/// covers one workload run only. Writing `5` to `clear_refs` does this (Linux 4.0+);
/// without it the peak covers the whole process so far.
pub fn reset_peak_rss() -> bool {
    fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Peak resident memory (`VmHWM`) of process `pid`, in bytes; `None` once it ended.
pub fn peak_rss_bytes_of(pid: u32) -> Option<u64> {
    status_kib_in(&format!("/proc/{pid}/status"), "VmHWM:").map(|kib| kib * 1024)
}

fn status_kib(field: &str) -> Option<u64> {
    status_kib_in("/proc/self/status", field)
}

fn status_kib_in(path: &str, field: &str) -> Option<u64> {
    let status = fs::read_to_string(path).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

/// CPU time this process has used so far, user and system, in seconds (from
/// `/proc/self/stat`, in clock ticks of 1/100 s: Linux's `USER_HZ` on every
/// architecture it runs on).
pub fn cpu_seconds() -> Option<(f64, f64)> {
    cpu_seconds_in("/proc/self/stat")
}

/// CPU time process `pid` has used so far, as [`cpu_seconds`]; `None` once it
/// has ended.
pub fn cpu_seconds_of(pid: u32) -> Option<(f64, f64)> {
    cpu_seconds_in(&format!("/proc/{pid}/stat"))
}

fn cpu_seconds_in(stat_path: &str) -> Option<(f64, f64)> {
    let stat = fs::read_to_string(stat_path).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count
    // fields after its closing parenthesis. utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let ticks = |f: Option<&str>| f?.parse::<u64>().ok();
    let user = ticks(fields.next())?;
    let system = ticks(fields.next())?;
    Some((user as f64 / 100.0, system as f64 / 100.0))
}

/// The machine in a few words: CPU model, logical CPUs and kernel release.
pub fn machine() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, v)| v.trim());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{model}, {cpus} CPUs, Linux {}", kernel.trim())
}

/// The type of the file system holding `dir` (e.g. `ext4`, `tmpfs`), from the mount
/// table: the mount with the longest mount point that contains the directory.
pub fn file_system_type(dir: &Path) -> Option<String> {
    let dir = fs::canonicalize(dir).ok()?;
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let _device = fields.next()?;
            let mount_point = unescape_mount_field(fields.next()?);
            let fs_type = fields.next()?;
            dir.starts_with(&mount_point)
                .then(|| (mount_point.len(), fs_type.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fs_type)| fs_type)
}

/// The mount table writes space, tab, newline and backslash as octal escapes.
fn unescape_mount_field(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_figures_are_read_and_consistent() {
        let rss = rss_bytes().expect("VmRSS on Linux");
        let peak = peak_rss_bytes().expect("VmHWM on Linux");
        assert!(rss > 0);
        assert!(peak >= rss, "peak {peak} below current {rss}");
    }

    #[test]
    fn cpu_time_grows_with_work() {
        let (user0, system0) = cpu_seconds().expect("/proc/self/stat on Linux");
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let (user1, system1) = cpu_seconds().expect("/proc/self/stat on Linux");
        assert!(
            user1 + system1 > user0 + system0,
            "no CPU time counted for 50 ms of work"
        );
    }

    #[test]
    fn root_has_a_file_system_type() {
        let fs_type = file_system_type(Path::new("/")).expect("a mount for /");
        assert!(!fs_type.is_empty());
    }

    #[test]
    fn mount_escapes_are_undone() {
        assert_eq!(unescape_mount_field("/mnt/a\\040b"), "/mnt/a b");
    }
}
