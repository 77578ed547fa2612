//! Handlers: the code a job names, registered by name in each worker process.
//!
//! Invariants:
//! - A handler is called with its arguments decoded from the job's bytes (postcard)
//!   and a [`JobContext`] whose transaction is the one the job's result commits in,
//!   so the handler's writes and the result are one atomic commit.
//! - A registration's value type is encoded with postcard into
//!   [`Outcome::Value`](crate::Outcome::Value); arguments that do not decode are a
//!   user error of the job, never a crash of the worker.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use zodiac_objects::Transaction;
use zodiac_storage::Oid;

use crate::model::job::Outcome;

/// What a handler returns as its error: anything that is an error. Conflicts
/// (a [`zodiac_objects::Error`] or [`crate::Error`] that is one) are recognised and
/// go to the retry policy as conflicts.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a running handler knows and works with.
pub struct JobContext<'a, 'c> {
    /// The job's id.
    pub job: Oid,
    /// The queue it was claimed from, if any.
    pub queue: Option<String>,
    /// The agent and dispatcher running it, if it was claimed.
    pub agent: Option<String>,
    /// The dispatcher running it (`None` outside a worker).
    pub dispatcher: Option<String>,
    /// The attempt (1 for the first run).
    pub attempt: u32,
    /// For a callback: the result of the job it is a callback of.
    pub parent_result: Option<Outcome>,
    awaiting: Option<zodiac_objects::PRef<crate::model::job::Job>>,
    tx: &'a mut Transaction<'c>,
}

impl<'a, 'c> JobContext<'a, 'c> {
    pub(crate) fn new(
        job: Oid,
        queue: Option<String>,
        agent: Option<String>,
        dispatcher: Option<String>,
        attempt: u32,
        parent_result: Option<Outcome>,
        tx: &'a mut Transaction<'c>,
    ) -> Self {
        JobContext {
            job,
            queue,
            agent,
            dispatcher,
            attempt,
            parent_result,
            awaiting: None,
            tx,
        }
    }

    /// Makes this job wait for `job` and take its result instead of the value the
    /// handler returns: the handler's writes commit, the job stays ACTIVE without
    /// holding its agent's slot, and it completes when `job` does.
    pub fn await_job(&mut self, job: zodiac_objects::PRef<crate::model::job::Job>) {
        self.awaiting = Some(job);
    }

    pub(crate) fn awaited(&self) -> Option<zodiac_objects::PRef<crate::model::job::Job>> {
        self.awaiting
    }

    /// The transaction the job's result commits in.
    pub fn tx(&mut self) -> &mut Transaction<'c> {
        self.tx
    }
}

type Erased = dyn Fn(&mut JobContext<'_, '_>, &[u8]) -> Result<Vec<u8>, HandlerError> + Send + Sync;

/// Handlers by name.
#[derive(Clone, Default)]
pub struct Handlers {
    by_name: HashMap<String, Arc<Erased>>,
}

impl Handlers {
    /// No handlers.
    pub fn new() -> Handlers {
        Handlers::default()
    }

    /// Registers `f` as handler `name` (replacing any earlier one). `A` is the
    /// arguments type the producer encoded, `R` the value it returns.
    pub fn register<A, R, F>(&mut self, name: impl Into<String>, f: F)
    where
        A: DeserializeOwned,
        R: Serialize,
        F: Fn(&mut JobContext<'_, '_>, A) -> Result<R, HandlerError> + Send + Sync + 'static,
    {
        let erased = move |ctx: &mut JobContext<'_, '_>, bytes: &[u8]| {
            let args: A = postcard::from_bytes(bytes).map_err(|source| {
                Box::new(crate::Error::Arguments {
                    job: ctx.job,
                    source,
                }) as HandlerError
            })?;
            let value = f(ctx, args)?;
            Ok(postcard::to_stdvec(&value)?)
        };
        self.by_name.insert(name.into(), Arc::new(erased));
    }

    /// Whether a handler is registered as `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    pub(crate) fn get(&self, name: &str) -> Option<Arc<Erased>> {
        self.by_name.get(name).cloned()
    }
}
