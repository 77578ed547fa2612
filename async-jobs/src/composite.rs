//! Composite jobs: `serial` and `parallel` parts followed by a postprocess job.
//!
//! A [`Composite`] object names the parts, the postprocess job and the queue.
//! Every part carries a join callback (handler [`JOIN_HANDLER`]); parts are
//! ordinary queue jobs and join callbacks ordinary callbacks, so both survive
//! interruptions through their retry policies, and a finished part is never run
//! again.
//!
//! Invariants:
//! - `parallel`: all parts are put at once; the join that finds every part with a
//!   result, and the composite not yet `done`, sets `done` and puts the
//!   postprocess job. Concurrent joins all write the composite, so they conflict
//!   and retry: the postprocess job is put exactly once.
//! - `serial`: part `i + 1` is put by the join of part `i` (`next` counts the parts
//!   put); after the last part, the postprocess job is put, once.
//! - The composite is reachable (pack and GC keep it) through the `subject`
//!   reference of the postprocess job and of every join callback; the oid in their
//!   arguments and annotation is only how the handlers find it.

use serde::{Deserialize, Serialize};
use zodiac_objects::{PRef, Persistent, Transaction};
use zodiac_storage::Oid;

use crate::callbacks::add_callback;
use crate::error::Result;
use crate::model::job::{Job, Location, Outcome};
use crate::model::queue::Queue;
use crate::queue::PutOptions;

/// The handler name of the callbacks that advance a composite.
pub const JOIN_HANDLER: &str = "zodiac.async.join";
/// The annotation of a postprocess job naming its composite (the oid, 8 bytes LE).
pub const COMPOSITE_ANNOTATION: &str = "zodiac.async.composite";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Mode {
    Serial,
    Parallel,
}

/// Parts and postprocess of a composite job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Composite {
    mode: Mode,
    queue: String,
    parts: Vec<PRef<Job>>,
    postprocess: PRef<Job>,
    /// Parts put so far (serial).
    next: usize,
    /// Whether the postprocess job was put.
    done: bool,
}

impl Persistent for Composite {
    const TYPE_NAME: &'static str = "zodiac.async.Composite";
}

impl Composite {
    /// The part jobs, in order.
    pub fn parts(&self) -> &[PRef<Job>] {
        &self.parts
    }
    /// The job that runs once with the parts' results.
    pub fn postprocess(&self) -> PRef<Job> {
        self.postprocess
    }
    /// Whether every part has a result.
    pub fn is_done(&self) -> bool {
        self.done
    }
}

fn build(
    tx: &mut Transaction<'_>,
    queue: &PRef<Queue>,
    mode: Mode,
    parts: Vec<Job>,
    mut postprocess: Job,
) -> Result<(PRef<Composite>, PRef<Job>)> {
    let queue_name = tx.get(queue)?.name().to_string();
    let post_oid = tx.add(Job::new("placeholder", Vec::new())?)?;
    let mut refs = Vec::with_capacity(parts.len());
    for part in parts {
        refs.push(tx.add(part)?);
    }
    let composite = tx.add(Composite {
        mode,
        queue: queue_name,
        parts: refs.clone(),
        postprocess: post_oid,
        next: 0,
        done: false,
    })?;
    postprocess.annotate(
        COMPOSITE_ANNOTATION,
        composite.oid().0.to_le_bytes().to_vec(),
    )?;
    // The references that keep the composite: nothing else points at it.
    postprocess.set_subject(composite);
    tx.set(&post_oid, postprocess)?;
    for part in &refs {
        let mut join = Job::with_arguments(JOIN_HANDLER, &composite.oid().0)?;
        join.set_subject(composite);
        add_callback(tx, part, join)?;
    }
    Ok((composite, post_oid))
}

/// Puts `parts` in `queue` at once; when every part has a result, `postprocess`
/// is put in `queue` (once). Returns the postprocess job; its handler reads the
/// parts' results with [`part_results`].
pub fn parallel(
    tx: &mut Transaction<'_>,
    queue: &PRef<Queue>,
    parts: Vec<Job>,
    postprocess: Job,
) -> Result<PRef<Job>> {
    let (composite, post) = build(tx, queue, Mode::Parallel, parts, postprocess)?;
    let c = tx.get(&composite)?;
    for part in c.parts() {
        Queue::put(tx, queue, part, PutOptions::new())?;
    }
    tx.modify(&composite, |c| c.next = c.parts.len())?;
    if c.parts.is_empty() {
        advance(tx, &composite)?;
    }
    Ok(post)
}

/// Puts the first of `parts` in `queue`; each part's completion puts the next,
/// and the last one's puts `postprocess` (once). Returns the postprocess job.
pub fn serial(
    tx: &mut Transaction<'_>,
    queue: &PRef<Queue>,
    parts: Vec<Job>,
    postprocess: Job,
) -> Result<PRef<Job>> {
    let (composite, post) = build(tx, queue, Mode::Serial, parts, postprocess)?;
    advance(tx, &composite)?;
    Ok(post)
}

/// Puts what is due: the next serial part, or the postprocess job once every
/// part has a result.
fn advance(tx: &mut Transaction<'_>, composite: &PRef<Composite>) -> Result<()> {
    let c = tx.get(composite)?;
    if c.done {
        return Ok(());
    }
    let queue = Queue::get_or_create(tx, &c.queue)?;
    let mut finished = 0;
    for part in &c.parts {
        if tx.get(part)?.result().is_some() {
            finished += 1;
        }
    }
    if c.mode == Mode::Serial && c.next < c.parts.len() {
        if finished == c.next {
            Queue::put(tx, &queue, &c.parts[c.next], PutOptions::new())?;
            tx.modify(composite, |c| c.next += 1)?;
        }
        return Ok(());
    }
    if finished == c.parts.len() {
        Queue::put(tx, &queue, &c.postprocess, PutOptions::new())?;
        tx.modify(composite, |c| c.done = true)?;
    }
    Ok(())
}

/// Runs a join callback (`callback` is the running callback job).
pub(crate) fn join(tx: &mut Transaction<'_>, callback: &Job, id: Oid) -> Result<()> {
    debug_assert!(matches!(callback.location(), Location::CallbackOf { .. }));
    let composite = PRef::<Composite>::from_oid(Oid(callback.arguments::<u64>(id)?));
    // The part whose callback this is has its result; so may others by now.
    tx.modify(&composite, |_| ())?; // write it: concurrent joins conflict
    advance(tx, &composite)
}

/// The results of the parts of the composite whose postprocess job is `post`, in
/// part order (`None` for a part without a result), or `None` if `post` is not a
/// postprocess job.
pub fn part_results(
    tx: &mut Transaction<'_>,
    post: &PRef<Job>,
) -> Result<Option<Vec<Option<Outcome>>>> {
    let p = tx.get(post)?;
    let Some(bytes) = p.annotations().get(COMPOSITE_ANNOTATION) else {
        return Ok(None);
    };
    let Ok(oid) = <[u8; 8]>::try_from(bytes.as_slice()) else {
        return Ok(None);
    };
    let composite = PRef::<Composite>::from_oid(Oid(u64::from_le_bytes(oid)));
    let parts = tx.get(&composite)?.parts.clone();
    let mut out = Vec::with_capacity(parts.len());
    for part in &parts {
        out.push(tx.get(part)?.result().cloned());
    }
    Ok(Some(out))
}
