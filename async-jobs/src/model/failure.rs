//! Failure records: what a failed job keeps as its result.
//!
//! Invariant: the text of a record (message, cause chain, backtrace, context) is at
//! most [`FAILURE_TEXT_CHARS_MAX`] characters; [`Failure::capped`] cuts what is over
//! and sets `truncated`. Every constructor returns a capped record.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Most characters of text one failure record keeps.
pub const FAILURE_TEXT_CHARS_MAX: usize = 10_000;

/// What kind of failure ended (an attempt of) a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FailureKind {
    /// The handler returned an error.
    UserError,
    /// A write conflict (in the handler or at commit).
    Conflict,
    /// The storage connection dropped.
    Disconnected,
    /// The job's deadline (`begin_after + begin_by`) passed, or `fail()` without a cause.
    Timeout,
    /// The retry policy gave up on an interrupted job.
    Aborted,
    /// The job was taken over by another dispatcher.
    Reassigned,
    /// The job was in a status that does not allow the operation.
    BadStatus,
    /// No handler is registered under the job's handler name.
    UnknownHandler,
    /// The handler panicked.
    Panic,
    /// A storage error other than a conflict or a disconnect (e.g. a storage that
    /// stopped accepting commits).
    Storage,
    /// An operator cancelled the job before it started (`zodiac jobs cancel`).
    /// Last, so records written before it existed decode unchanged.
    Cancelled,
}

impl FailureKind {
    /// The kind's stable name.
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::UserError => "user error",
            FailureKind::Conflict => "conflict",
            FailureKind::Disconnected => "disconnected",
            FailureKind::Timeout => "timeout",
            FailureKind::Aborted => "aborted",
            FailureKind::Reassigned => "reassigned",
            FailureKind::BadStatus => "bad status",
            FailureKind::UnknownHandler => "unknown handler",
            FailureKind::Panic => "panic",
            FailureKind::Storage => "storage",
            FailureKind::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A failure: kind, message, cause chain, backtrace when known, and context.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// What failed.
    pub kind: FailureKind,
    /// What happened, bounded in length.
    pub message: String,
    /// The causes, outermost first (an error's `source()` chain).
    pub chain: Vec<String>,
    /// Where, when known.
    pub backtrace: Option<String>,
    /// Details by name (e.g. `phase`).
    pub context: BTreeMap<String, String>,
    /// Whether text was cut to fit [`FAILURE_TEXT_CHARS_MAX`].
    pub truncated: bool,
}

impl Failure {
    /// A failure of `kind` saying `message` (cut to the text limit).
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
            chain: Vec::new(),
            backtrace: None,
            context: BTreeMap::new(),
            truncated: false,
        }
        .capped()
    }

    /// A failure from an error: its `Display` is the message, its sources the chain.
    /// A source whose text the message before it already shows (a storage error
    /// around an `io::Error` shows it and returns it as its source) is left out,
    /// so each cause appears once.
    pub fn from_error(kind: FailureKind, error: &(dyn std::error::Error + 'static)) -> Failure {
        let mut chain: Vec<String> = Vec::new();
        let mut shown = error.to_string();
        let mut source = error.source();
        while let Some(e) = source {
            let text = e.to_string();
            if !shown.contains(&text) {
                shown.clone_from(&text);
                chain.push(text);
            }
            source = e.source();
        }
        Failure {
            chain,
            ..Failure::new(kind, error.to_string())
        }
        .capped()
    }

    /// The failure `fail()` records when given no error: a timeout.
    pub fn timeout(message: impl Into<String>) -> Failure {
        Failure::new(FailureKind::Timeout, message)
    }

    /// This failure with `backtrace`.
    pub fn with_backtrace(mut self, backtrace: impl Into<String>) -> Failure {
        self.backtrace = Some(backtrace.into());
        self.capped()
    }

    /// This failure with context `key` = `value`.
    pub fn with_context(mut self, key: impl Into<String>, value: impl Into<String>) -> Failure {
        self.context.insert(key.into(), value.into());
        self.capped()
    }

    /// One line: `kind: message`.
    pub fn summary(&self) -> String {
        format!("{}: {}", self.kind, self.message)
    }

    /// Cuts the text to [`FAILURE_TEXT_CHARS_MAX`] characters, in the order message,
    /// chain, backtrace, context; marks the record truncated when anything was cut.
    pub fn capped(mut self) -> Failure {
        let mut room = FAILURE_TEXT_CHARS_MAX;
        let mut cut = false;
        let mut fit = |s: &mut String, room: &mut usize| {
            let chars = s.chars().count();
            if chars > *room {
                let end = s.char_indices().nth(*room).map_or(s.len(), |(i, _)| i);
                s.truncate(end);
                cut = true;
                *room = 0;
            } else {
                *room -= chars;
            }
        };
        fit(&mut self.message, &mut room);
        for c in &mut self.chain {
            fit(c, &mut room);
        }
        self.chain.retain(|c| !c.is_empty());
        if let Some(b) = &mut self.backtrace {
            fit(b, &mut room);
        }
        let mut context = BTreeMap::new();
        for (mut k, mut v) in std::mem::take(&mut self.context) {
            fit(&mut k, &mut room);
            fit(&mut v, &mut room);
            if !k.is_empty() {
                context.insert(k, v);
            }
        }
        self.context = context;
        self.truncated |= cut;
        self
    }

    /// Characters of text in the record.
    pub fn text_chars(&self) -> usize {
        self.message.chars().count()
            + self.chain.iter().map(|c| c.chars().count()).sum::<usize>()
            + self.backtrace.as_ref().map_or(0, |b| b.chars().count())
            + self
                .context
                .iter()
                .map(|(k, v)| k.chars().count() + v.chars().count())
                .sum::<usize>()
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)?;
        for c in &self.chain {
            write!(f, ": {c}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Inner);
    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner;

    #[test]
    fn from_error_keeps_the_source_chain() {
        let f = Failure::from_error(FailureKind::UserError, &Outer(Inner));
        assert_eq!(f.message, "outer");
        assert_eq!(f.chain, ["inner"]);
        assert_eq!(f.to_string(), "user error: outer: inner");
        assert!(!f.truncated);
    }

    #[derive(Debug, thiserror::Error)]
    #[error("data.zdb: opening failed: {0}")]
    struct Showing(#[source] std::io::Error);

    /// A job failing with a storage error around an `io::Error` recorded the OS
    /// error twice: in the message, and again as the chain's first entry.
    #[test]
    fn from_error_leaves_out_a_source_the_message_shows() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let text = io.to_string();
        let f = Failure::from_error(FailureKind::Storage, &Showing(io));
        assert_eq!(f.message, format!("data.zdb: opening failed: {text}"));
        assert!(f.chain.is_empty(), "{:?}", f.chain);
        assert_eq!(f.to_string().matches(&text).count(), 1, "{f}");
    }

    #[test]
    fn text_is_capped_at_the_limit_and_marked() {
        let exact = Failure::new(FailureKind::Panic, "é".repeat(FAILURE_TEXT_CHARS_MAX));
        assert!(!exact.truncated);
        assert_eq!(exact.text_chars(), FAILURE_TEXT_CHARS_MAX);
        let over = Failure::new(FailureKind::Panic, "x".repeat(FAILURE_TEXT_CHARS_MAX - 3))
            .with_backtrace("0123456789")
            .with_context("k", "v");
        assert!(over.truncated);
        assert_eq!(over.backtrace.as_deref(), Some("012"));
        assert!(over.context.is_empty());
        assert_eq!(over.text_chars(), FAILURE_TEXT_CHARS_MAX);
    }
}
