//! Handler errors that carry a backtrace: a handler returns
//! [`TracedError::new`]`(e)` (or `?` on a `Result<_, TracedError>`) and its
//! failure record and error history keep where the error was made.
//!
//! Invariant: the backtrace is captured when the error is made (always, whatever
//! `RUST_BACKTRACE` says: a job's failure is read later, by someone else).

use std::backtrace::Backtrace;
use std::fmt;

use crate::handler::HandlerError;

/// An error with the backtrace of the place it was made.
pub struct TracedError {
    error: HandlerError,
    backtrace: Backtrace,
}

impl TracedError {
    /// `error`, with the backtrace of this call.
    pub fn new(error: impl Into<HandlerError>) -> TracedError {
        TracedError {
            error: error.into(),
            backtrace: Backtrace::force_capture(),
        }
    }

    /// The error it wraps.
    pub fn error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self.error.as_ref()
    }

    /// Where it was made.
    pub fn backtrace(&self) -> &Backtrace {
        &self.backtrace
    }
}

impl fmt::Debug for TracedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracedError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for TracedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for TracedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}
