//! The file-I/O seam: every byte the file storage reads or writes goes through
//! [`FileIoFactory`] and [`FileIo`], so tests can fail the Nth write or sync and
//! can produce the file a power cut would leave behind.
//!
//! This module holds the crate's only `unsafe`: memory-mapping the data file.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use parking_lot::Mutex;

/// Opens files and does the directory operations the storage needs.
pub trait FileIoFactory: Send + Sync {
    /// Opens `path` for reading, and for writing when `writable`; creates it when
    /// `create` (which implies writable).
    fn open(&self, path: &Path, writable: bool, create: bool) -> io::Result<Arc<dyn FileIo>>;
    /// Renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory entries of `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes `link` a second name of the file at `original`.
    fn hard_link(&self, original: &Path, link: &Path) -> io::Result<()>;
}

/// One open file.
#[allow(clippy::len_without_is_empty)]
pub trait FileIo: Send + Sync {
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// The file's length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Sets the file's length (truncating or extending with zeros).
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// fdatasync: written data (and the length, if it changed) reach stable storage.
    fn sync_data(&self) -> io::Result<()>;
    /// A read-only map of the file's current length.
    fn map(&self) -> io::Result<Mmap>;
    /// A read-only map of the file's first `len` bytes (at most its length): for a
    /// file whose end is a hole, which must never be touched through a map.
    fn map_prefix(&self, len: u64) -> io::Result<Mmap>;
    /// Allocates storage for the `len` bytes at `offset`, extending the file when
    /// they reach past its end, so that the range is never a hole (see [`Hole`]).
    /// The range must hold no data (a hole, or beyond the end): where the file
    /// system cannot allocate without writing, zeros are written over it. An
    /// ENOSPC means the disk is full; nothing is left half-allocated as a hole.
    fn allocate(&self, offset: u64, len: u64) -> io::Result<()>;
    /// The first hole of the file at or after `from` and before its end, if any.
    fn find_hole(&self, from: u64) -> io::Result<Option<Hole>>;
    /// (device, inode) of the open file, to detect the path being replaced.
    fn identity(&self) -> io::Result<(u64, u64)>;
}

/// A range of a file that reads as zeros but may have no storage allocated, as
/// `lseek(SEEK_HOLE)` reports it (a hole, or space allocated but never written).
/// `pread` of a hole returns zeros, but touching a true hole through a map makes
/// the kernel allocate a page, and on a full tmpfs that kills the process with
/// SIGBUS: no map ever covers a hole (see `file::holes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hole {
    /// Where the hole starts.
    pub start: u64,
    /// Where data resumes after the hole; `None`: the hole runs to the end of the file.
    pub data_at: Option<u64>,
}

/// Bytes of zeros written at a time where a file system cannot allocate space
/// without writing it.
const ZERO_FILL_CHUNK_BYTES: usize = 1 << 20;

/// Writes zeros over `len` bytes at `offset` of `file`.
fn write_zeros(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let zeros = vec![0u8; ZERO_FILL_CHUNK_BYTES.min(len as usize)];
    let mut at = offset;
    let end = offset + len;
    while at < end {
        let n = (end - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// (device, inode, size) of the file at `path`, by a `statx` that asks for nothing
/// else. Asking for timestamps (as `std::fs::metadata` does) marks them as queried on
/// current Linux kernels, which makes the next write store a fine-grained time and
/// the next fdatasync slower: measured at 90 → 160 µs per commit on ext4.
pub fn path_identity(path: &Path) -> io::Result<(u64, u64, u64)> {
    use rustix::fs::{AtFlags, CWD, StatxFlags, statx};
    let st = statx(
        CWD,
        path,
        AtFlags::empty(),
        StatxFlags::INO | StatxFlags::SIZE,
    )?;
    Ok((
        (u64::from(st.stx_dev_major) << 32) | u64::from(st.stx_dev_minor),
        st.stx_ino,
        st.stx_size,
    ))
}

fn file_identity(file: &File) -> io::Result<(u64, u64)> {
    use rustix::fs::{AtFlags, StatxFlags, statx};
    let st = statx(file, "", AtFlags::EMPTY_PATH, StatxFlags::INO)?;
    Ok((
        (u64::from(st.stx_dev_major) << 32) | u64::from(st.stx_dev_minor),
        st.stx_ino,
    ))
}

/// The operating system's files.
pub struct StdFileIoFactory;

struct StdFileIo {
    file: File,
}

impl FileIoFactory for StdFileIoFactory {
    fn open(&self, path: &Path, writable: bool, create: bool) -> io::Result<Arc<dyn FileIo>> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable || create)
            .create(create)
            .open(path)?;
        Ok(Arc::new(StdFileIo { file }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn hard_link(&self, original: &Path, link: &Path) -> io::Result<()> {
        std::fs::hard_link(original, link)
    }
}

impl FileIo for StdFileIo {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }
    #[allow(unsafe_code)]
    fn map(&self) -> io::Result<Mmap> {
        // SAFETY: the map is read-only and only bytes below the storage's logical end
        // are read through it. Those bytes are never rewritten while mapped (the file is
        // append-only and the writer lock keeps other writers out); the file is only
        // truncated by the storage itself after dropping every map. A file truncated by
        // another program behind the lock's back would fault on access: the storage
        // checks the file's identity and length at every commit to stop early.
        unsafe { Mmap::map(&self.file) }
    }
    #[allow(unsafe_code)]
    fn map_prefix(&self, len: u64) -> io::Result<Mmap> {
        let len = usize::try_from(len.min(self.len()?))
            .map_err(|_| io::Error::other("the file is larger than the address space"))?;
        // SAFETY: as for `map`; the map covers only the first `len` bytes, which the
        // caller has checked hold no hole.
        unsafe { memmap2::MmapOptions::new().len(len).map(&self.file) }
    }
    fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        use rustix::fs::{FallocateFlags, fallocate};
        use rustix::io::Errno;
        if len == 0 {
            return Ok(());
        }
        match fallocate(&self.file, FallocateFlags::empty(), offset, len) {
            Ok(()) => Ok(()),
            // A file system without fallocate (some network and FUSE ones).
            Err(Errno::OPNOTSUPP | Errno::NOSYS) => write_zeros(&self.file, offset, len),
            Err(e) => Err(e.into()),
        }
    }
    fn find_hole(&self, from: u64) -> io::Result<Option<Hole>> {
        use rustix::fs::{SeekFrom, seek};
        use rustix::io::Errno;
        let len = self.len()?;
        if from >= len {
            return Ok(None);
        }
        let start = match seek(&self.file, SeekFrom::Hole(from)) {
            Ok(at) => at,
            // ENXIO: `from` lies at or past the end (the file shrank meanwhile).
            // EINVAL: a file system that cannot say; it then has no holes to report.
            Err(Errno::NXIO | Errno::INVAL) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if start >= len {
            return Ok(None);
        }
        let data_at = match seek(&self.file, SeekFrom::Data(start)) {
            Ok(at) if at < len => Some(at),
            Ok(_) | Err(Errno::NXIO) => None,
            Err(e) => return Err(e.into()),
        };
        Ok(Some(Hole { start, data_at }))
    }
    fn identity(&self) -> io::Result<(u64, u64)> {
        file_identity(&self.file)
    }
}

/// Which operation a [`FaultyIoFactory`] fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultPoint {
    /// The Nth `write_at` (counting from 1) over all files opened by the factory
    /// whose name ends with the plan's suffix.
    Write(u64),
    /// The Nth `sync_data`, counted the same way.
    Sync(u64),
}

/// A planned failure: where, which error (e.g. `libc::EIO` = 5, `ENOSPC` = 28),
/// and on which files (by file-name suffix, e.g. ".zdb").
#[derive(Clone, Debug)]
pub struct FaultPlan {
    /// Which operation fails.
    pub point: FaultPoint,
    /// The error it fails with.
    pub errno: i32,
    /// The file-name suffix of the files it fails on.
    pub file_suffix: String,
    /// For a failed write: how many of its bytes reach the file before the error.
    pub torn_bytes: usize,
}

/// The page size of the power-cut model: a power cut keeps or loses each page
/// written since the last sync as a whole (the kernel writes dirty pages back in
/// any order, each one at once).
pub const POWER_CUT_PAGE_BYTES: u64 = 4096;

/// A [`FileIoFactory`] over real files that fails as planned and records every
/// write not yet synced, so [`FaultyIoFactory::power_cut`] can rewind a file to
/// what a power cut would leave: the synced bytes plus a torn part of the last write.
///
/// For simulation tests it can also:
/// - lose an arbitrary subset of the pages written since the last sync
///   ([`power_cut_pages`](Self::power_cut_pages));
/// - stand for a process that died ([`crash`](Self::crash)): nothing more reaches
///   any file until [`restart`](Self::restart), so dropping the storage afterwards
///   persists nothing (a crash, not a clean close);
/// - skip the real fdatasync while still tracking what a sync would have made
///   durable ([`set_simulated_sync`](Self::set_simulated_sync)), since the power
///   cuts it models are the only ones the test cares about.
///
/// Invariants: the unsynced-write log of a path holds exactly the writes to the
/// file now at that path since its last successful sync, oldest first (a rename
/// moves the log with the file); a crashed factory changes no file.
pub struct FaultyIoFactory {
    state: Arc<Mutex<FaultState>>,
}

#[derive(Default)]
struct FaultState {
    plan: Option<FaultPlan>,
    writes: u64,
    syncs: u64,
    /// Every successful `sync_data`, whatever the plan.
    syncs_done: u64,
    sync_delay: std::time::Duration,
    /// Per path: writes since the last sync, with the bytes they replaced.
    unsynced: Vec<(PathBuf, UnsyncedWrite)>,
    /// Per path: the file length at its last sync (or open).
    synced_len: Vec<(PathBuf, u64)>,
    /// The process "died": every change to a file fails until `restart`.
    crashed: bool,
    /// `sync_data` and `sync_dir` skip the real system call.
    simulated_sync: bool,
    /// The process dies right after a rename onto this path (None: never).
    crash_after_rename_to: Option<PathBuf>,
}

/// The error every changing operation of a crashed factory returns.
fn crashed_error() -> io::Error {
    io::Error::other("the simulated process has crashed: nothing more reaches the disk")
}

#[derive(Clone)]
struct UnsyncedWrite {
    offset: u64,
    old: Vec<u8>,
    new_len: usize,
}

impl UnsyncedWrite {
    /// The power-cut pages the written bytes touch.
    fn pages(&self) -> std::ops::Range<u64> {
        if self.new_len == 0 {
            return 0..0;
        }
        let first = self.offset / POWER_CUT_PAGE_BYTES;
        let last = (self.offset + self.new_len as u64 - 1) / POWER_CUT_PAGE_BYTES;
        first..last + 1
    }
}

impl Default for FaultyIoFactory {
    fn default() -> Self {
        Self::new()
    }
}

impl FaultyIoFactory {
    /// A factory that fails nothing until a failure is armed.
    pub fn new() -> Self {
        FaultyIoFactory {
            state: Arc::new(Mutex::new(FaultState::default())),
        }
    }

    /// Arms a failure (replacing any armed one) and resets the counters.
    pub fn arm(&self, plan: FaultPlan) {
        let mut st = self.state.lock();
        st.plan = Some(plan);
        st.writes = 0;
        st.syncs = 0;
    }

    /// Makes every `sync_data` take at least `delay` (a slow disk).
    pub fn set_sync_delay(&self, delay: std::time::Duration) {
        self.state.lock().sync_delay = delay;
    }

    /// Number of successful `sync_data` calls so far, on any file.
    pub fn syncs_done(&self) -> u64 {
        self.state.lock().syncs_done
    }

    /// Disarms the failure.
    pub fn disarm(&self) {
        self.state.lock().plan = None;
    }

    /// The armed failure has not struck yet (false when none is armed).
    pub fn armed(&self) -> bool {
        let st = self.state.lock();
        match st.plan.as_ref().map(|p| p.point) {
            Some(FaultPoint::Write(n)) => st.writes < n,
            Some(FaultPoint::Sync(n)) => st.syncs < n,
            None => false,
        }
    }

    /// The process dies right after the next rename onto `to`: that rename takes
    /// effect, and then everything [`crash`](Self::crash) stops fails. Models a
    /// kill between two steps of a file swap.
    pub fn crash_after_rename_to(&self, to: &Path) {
        self.state.lock().crash_after_rename_to = Some(to.to_path_buf());
    }

    /// The process dies now: from here on every write, length change, sync,
    /// rename, removal, link and writable open fails, so whatever the storage does
    /// when it is dropped reaches no file. Reads still work.
    pub fn crash(&self) {
        self.state.lock().crashed = true;
    }

    /// A new process starts: files can be changed again (see [`crash`](Self::crash)).
    pub fn restart(&self) {
        self.state.lock().crashed = false;
    }

    /// When `simulated`, `sync_data` and `sync_dir` do everything but the real
    /// system call: what they would have made durable is tracked as usual, and only
    /// the power cuts of this factory lose data. Saves milliseconds per commit in
    /// simulation tests.
    pub fn set_simulated_sync(&self, simulated: bool) {
        self.state.lock().simulated_sync = simulated;
    }

    /// The pages (offset / [`POWER_CUT_PAGE_BYTES`]) of `path` written since its
    /// last sync, in ascending order.
    pub fn unsynced_pages(&self, path: &Path) -> Vec<u64> {
        let st = self.state.lock();
        let mut pages: Vec<u64> = st
            .unsynced
            .iter()
            .filter(|(p, _)| p == path)
            .flat_map(|(_, w)| w.pages())
            .collect();
        pages.sort_unstable();
        pages.dedup();
        pages
    }

    /// Rewinds `path` to what a power cut right now could leave on disk: each page
    /// written since the file's last sync keeps its new content when `keep(page)`
    /// says so and its content as of the last sync otherwise; the file keeps its
    /// synced length, extended only as far as kept pages reach. Returns the pages
    /// lost. Call it after the storage has been dropped (or crashed).
    pub fn power_cut_pages(
        &self,
        path: &Path,
        mut keep: impl FnMut(u64) -> bool,
    ) -> io::Result<Vec<u64>> {
        let mut st = self.state.lock();
        let writes: Vec<UnsyncedWrite> = st
            .unsynced
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, w)| w.clone())
            .collect();
        st.unsynced.retain(|(p, _)| p != path);
        let synced_len = st
            .synced_len
            .iter()
            .find(|(p, _)| p == path)
            .map_or(0, |(_, l)| *l);
        drop(st);
        let mut pages: Vec<u64> = writes.iter().flat_map(UnsyncedWrite::pages).collect();
        pages.sort_unstable();
        pages.dedup();
        let lost: std::collections::BTreeSet<u64> =
            pages.into_iter().filter(|&page| !keep(page)).collect();
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let mut final_len = synced_len;
        // Newest first, so each lost byte ends up as it was before the oldest
        // unsynced write to it.
        for w in writes.iter().rev() {
            for page in w.pages() {
                let page_start = page * POWER_CUT_PAGE_BYTES;
                let from = w.offset.max(page_start);
                let to = (w.offset + w.new_len as u64).min(page_start + POWER_CUT_PAGE_BYTES);
                if lost.contains(&page) {
                    let old = &w.old[(from - w.offset) as usize..(to - w.offset) as usize];
                    file.write_all_at(old, from)?;
                } else {
                    final_len = final_len.max(to);
                }
            }
        }
        if file.metadata()?.len() > final_len {
            file.set_len(final_len)?;
        }
        Ok(lost.into_iter().collect())
    }

    /// Rewinds `path` to what a power cut right now would leave on disk: every write
    /// since the file's last sync is undone, except the first `keep_of_last` bytes of
    /// the last one (a torn write). Call it after the storage has been dropped.
    pub fn power_cut(&self, path: &Path, keep_of_last: usize) -> io::Result<()> {
        let mut st = self.state.lock();
        let writes: Vec<UnsyncedWrite> = st
            .unsynced
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, w)| w.clone())
            .collect();
        st.unsynced.retain(|(p, _)| p != path);
        let synced_len = st
            .synced_len
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, l)| *l);
        drop(st);
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let count = writes.len();
        let mut final_len = synced_len.unwrap_or(0);
        for (i, w) in writes.iter().enumerate().rev() {
            let keep = if i + 1 == count {
                keep_of_last.min(w.new_len)
            } else {
                0
            };
            let restore_from = keep.min(w.old.len());
            file.write_all_at(&w.old[restore_from..], w.offset + restore_from as u64)?;
            if keep > 0 {
                final_len = final_len.max(w.offset + keep as u64);
            }
        }
        if let Some(len) = synced_len {
            let current = file.metadata()?.len();
            if current > final_len.max(len) {
                file.set_len(final_len.max(len))?;
            }
        }
        file.sync_all()
    }

    fn fails(&self, path: &Path, is_write: bool) -> Option<(io::Error, usize)> {
        let mut st = self.state.lock();
        let plan = st.plan.clone()?;
        if !path.to_string_lossy().ends_with(&plan.file_suffix) {
            return None;
        }
        let hit = match plan.point {
            FaultPoint::Write(n) if is_write => {
                st.writes += 1;
                st.writes == n
            }
            FaultPoint::Sync(n) if !is_write => {
                st.syncs += 1;
                st.syncs == n
            }
            _ => false,
        };
        hit.then(|| (io::Error::from_raw_os_error(plan.errno), plan.torn_bytes))
    }
}

struct FaultyFileIo {
    path: PathBuf,
    inner: Arc<dyn FileIo>,
    factory_state: Arc<Mutex<FaultState>>,
    factory: Arc<FaultyIoFactory>,
}

impl FaultyIoFactory {
    fn check_alive(&self) -> io::Result<()> {
        if self.state.lock().crashed {
            return Err(crashed_error());
        }
        Ok(())
    }
}

impl FileIoFactory for FaultyIoFactory {
    fn open(&self, path: &Path, writable: bool, create: bool) -> io::Result<Arc<dyn FileIo>> {
        if writable || create {
            self.check_alive()?;
        }
        let inner = StdFileIoFactory.open(path, writable, create)?;
        let len = inner.len()?;
        let mut st = self.state.lock();
        st.synced_len.retain(|(p, _)| p != path);
        st.synced_len.push((path.to_path_buf(), len));
        drop(st);
        Ok(Arc::new(FaultyFileIo {
            path: path.to_path_buf(),
            inner,
            factory_state: Arc::clone(&self.state),
            factory: Arc::new(FaultyIoFactory {
                state: Arc::clone(&self.state),
            }),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check_alive()?;
        StdFileIoFactory.rename(from, to)?;
        // The unsynced writes belong to the file, which now has the name `to`.
        let mut st = self.state.lock();
        if st.crash_after_rename_to.as_deref() == Some(to) {
            st.crash_after_rename_to = None;
            st.crashed = true;
        }
        st.unsynced.retain(|(p, _)| p != to);
        st.synced_len.retain(|(p, _)| p != to);
        let st = &mut *st;
        let names = st.unsynced.iter_mut().map(|(p, _)| p);
        for p in names.chain(st.synced_len.iter_mut().map(|(p, _)| p)) {
            if p == from {
                *p = to.to_path_buf();
            }
        }
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.check_alive()?;
        if self.state.lock().simulated_sync {
            return Ok(());
        }
        StdFileIoFactory.sync_dir(dir)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.check_alive()?;
        StdFileIoFactory.remove(path)?;
        let mut st = self.state.lock();
        st.unsynced.retain(|(p, _)| p != path);
        st.synced_len.retain(|(p, _)| p != path);
        Ok(())
    }
    fn hard_link(&self, original: &Path, link: &Path) -> io::Result<()> {
        self.check_alive()?;
        StdFileIoFactory.hard_link(original, link)
    }
}

impl FileIo for FaultyFileIo {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.factory.check_alive()?;
        let failure = self.factory.fails(&self.path, true);
        let len = self.inner.len()?;
        let mut old = vec![0u8; buf.len()];
        let readable = len.saturating_sub(offset).min(buf.len() as u64) as usize;
        if readable > 0 {
            self.inner.read_at(&mut old[..readable], offset)?;
        }
        let written = match &failure {
            Some((_, torn)) => &buf[..(*torn).min(buf.len())],
            None => buf,
        };
        self.factory_state.lock().unsynced.push((
            self.path.clone(),
            UnsyncedWrite {
                offset,
                old,
                new_len: written.len(),
            },
        ));
        self.inner.write_at(written, offset)?;
        match failure {
            Some((err, _)) => Err(err),
            None => Ok(()),
        }
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.factory.check_alive()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.factory.check_alive()?;
        // A slow disk is slow to fail too.
        let (delay, simulated) = {
            let st = self.factory_state.lock();
            (st.sync_delay, st.simulated_sync)
        };
        std::thread::sleep(delay);
        if let Some((err, _)) = self.factory.fails(&self.path, false) {
            return Err(err);
        }
        if !simulated {
            self.inner.sync_data()?;
        }
        let len = self.inner.len()?;
        let mut st = self.factory_state.lock();
        st.syncs_done += 1;
        st.unsynced.retain(|(p, _)| p != &self.path);
        st.synced_len.retain(|(p, _)| p != &self.path);
        st.synced_len.push((self.path.clone(), len));
        Ok(())
    }
    fn map(&self) -> io::Result<Mmap> {
        self.inner.map()
    }
    fn map_prefix(&self, len: u64) -> io::Result<Mmap> {
        self.inner.map_prefix(len)
    }
    fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        self.factory.check_alive()?;
        self.inner.allocate(offset, len)
    }
    fn find_hole(&self, from: u64) -> io::Result<Option<Hole>> {
        self.inner.find_hole(from)
    }
    fn identity(&self) -> io::Result<(u64, u64)> {
        self.inner.identity()
    }
}
