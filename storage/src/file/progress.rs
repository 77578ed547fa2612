//! Progress of a pass over a file's bytes, for the callbacks of pack, verify and
//! recover: reported as (done, total) bytes at most once per
//! [`PROGRESS_STEP_BYTES`] of the pass, so a callback costs nothing per record.

/// Bytes of a pass between two progress reports.
pub(crate) const PROGRESS_STEP_BYTES: u64 = 1 << 20;

/// Reports a pass's progress to a callback.
pub(crate) struct Progress<F> {
    report: F,
    total: u64,
    /// Added to a pass's offsets: the bytes of the passes before it.
    base: u64,
    /// The offset from which the next report is due.
    next: u64,
}

impl<F: FnMut(u64, u64)> Progress<F> {
    /// Progress of passes that add up to `total` bytes.
    pub(crate) fn new(report: F, total: u64) -> Progress<F> {
        Progress {
            report,
            total,
            base: 0,
            next: 0,
        }
    }

    /// The pass reached offset `pos`.
    pub(crate) fn at(&mut self, pos: u64) {
        if pos >= self.next {
            (self.report)(self.base + pos, self.total);
            self.next = pos + PROGRESS_STEP_BYTES;
        }
    }

    /// A new pass starts, after `base` bytes of passes before it.
    pub(crate) fn next_pass(&mut self, base: u64) {
        self.base = base;
        self.next = 0;
    }

    /// Everything is done.
    pub(crate) fn done(&mut self) {
        (self.report)(self.total, self.total);
    }
}
