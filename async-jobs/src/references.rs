//! Every link the job layer stores is a reference.
//!
//! Pack's garbage collection, `zodiac refs` and anything else that follows links
//! read only the reference list of each record's envelope, which lists exactly the
//! [`PRef`](zodiac_objects::PRef)s the value serialized. An oid kept as a plain
//! number (`u64`, `Oid`, bytes in a job's arguments or annotations) is invisible to
//! them: GC deletes what it names while it is still in use. Review found exactly
//! that: agents and quotas kept their jobs as `BTreeSet<u64>`, and a job awaiting
//! another and every composite were named only in arguments, so `zodiac pack`
//! deleted the jobs a worker was running.
//!
//! Invariants (the rule every persistent type of this crate keeps):
//! - Every object a stored value names is named through a `PRef`: agents' and
//!   quotas' held jobs, queue entries, callbacks and parents, composite parts and
//!   postprocess, dispatcher and agent records, completed-job collections, the
//!   subject of an internal handler (a resume callback's waiting job, a join
//!   callback's and a postprocess job's composite), the jobs a queue keeps after
//!   they ended without a run, the holders of a queue's unique keys.
//! - Two kinds of plain ids are allowed, because they are never followed: an
//!   object's own oid (a job's queue key), and ids inside B-tree *keys*, which only
//!   order entries (`QueueKey::job`, the `(time, job)` keys of completed jobs).
//!   Keys are copied into the tree's separators, which outlive their entries, so a
//!   key must not be a reference (it would keep dropped jobs alive, or dangle);
//!   the entry's value beside the key holds the reference instead.
//! - Internal handlers may also carry the oid in their arguments (that is how they
//!   find it), but only next to the `subject` reference.
//!
//! How the rule is kept: the test below builds the job layer in a realistic state
//! (jobs pending, held by an agent, counted by a quota, with callbacks, awaiting
//! another, in a composite, completed and retained, cancelled, expired), on a
//! storage whose oids are allocated far above any count or size in the data. It
//! then decodes every stored object with its type and walks it with a checking
//! serializer that sees each number and each byte string the value holds, and
//! tells references apart by the newtype name a `PRef` serializes under
//! ([`zodiac_objects::PREF_SERDE_NAME`]). Any number equal to an existing oid
//! outside a reference, any oid encoded in bytes without a reference beside it,
//! and any B-tree key id whose value does not reference it, fails the test; so
//! does a stored type or a B-tree the check does not know, so a new persistent
//! type or tree must be added to it. A structural guard alone (a newtype for ids)
//! could not see oids put in arguments or annotations, which is how two of the
//! found links were lost.

mod audit;

use std::collections::BTreeSet;

use zodiac_objects::{Persistent, decode_value, record};
use zodiac_storage::Oid;

use crate::composite::{COMPOSITE_ANNOTATION, Composite, JOIN_HANDLER};
use crate::model::dispatcher::{Agent, DispatcherRecord};
use crate::model::ended::Ended;
use crate::model::job::Job;
use crate::model::queue::{Queue, QueueDirectory};
use crate::model::quota::Quota;
use crate::model::schedule::{Schedule, ScheduleDirectory};
use crate::run::RESUME_HANDLER;

/// Every oid a stored record of this crate names, read from its value rather than
/// from its envelope's reference list; `None` for a record of another type. For
/// `zodiac refs`: a record written before every link was a reference (an agent's
/// held jobs, a resume or join callback's subject) names objects its envelope does
/// not list, which pack's GC cannot see. An error says why the record does not
/// decode.
pub fn named_ids(stored: &[u8]) -> Option<Result<BTreeSet<Oid>, String>> {
    fn named<T: Persistent>(stored: &[u8]) -> Result<(Option<T>, BTreeSet<Oid>), String> {
        let Some(value) = decode_value::<T>(stored)? else {
            return Ok((None, BTreeSet::new()));
        };
        let ids = audit::walk(&value)
            .references
            .into_iter()
            .map(Oid)
            .collect();
        Ok((Some(value), ids))
    }
    let ids = match record::type_name(stored).ok()? {
        Job::TYPE_NAME => named::<Job>(stored).map(|(job, mut ids)| {
            if let Some(job) = job {
                ids.extend(internal_subject(&job));
            }
            ids
        }),
        Queue::TYPE_NAME => named::<Queue>(stored).map(|(_, ids)| ids),
        QueueDirectory::TYPE_NAME => named::<QueueDirectory>(stored).map(|(_, ids)| ids),
        Quota::TYPE_NAME => named::<Quota>(stored).map(|(_, ids)| ids),
        DispatcherRecord::TYPE_NAME => named::<DispatcherRecord>(stored).map(|(_, ids)| ids),
        Agent::TYPE_NAME => named::<Agent>(stored).map(|(_, ids)| ids),
        Composite::TYPE_NAME => named::<Composite>(stored).map(|(_, ids)| ids),
        Ended::TYPE_NAME => named::<Ended>(stored).map(|(_, ids)| ids),
        Schedule::TYPE_NAME => named::<Schedule>(stored).map(|(_, ids)| ids),
        ScheduleDirectory::TYPE_NAME => named::<ScheduleDirectory>(stored).map(|(_, ids)| ids),
        _ => return None,
    };
    Some(ids)
}

/// The object an internal job names in its arguments or annotation (records
/// written before the `subject` reference existed name it only there).
fn internal_subject(job: &Job) -> Option<Oid> {
    if job.handler() == RESUME_HANDLER || job.handler() == JOIN_HANDLER {
        return postcard::from_bytes::<u64>(job.argument_bytes())
            .ok()
            .map(Oid);
    }
    let bytes = job.annotations().get(COMPOSITE_ANNOTATION)?;
    let bytes: [u8; 8] = bytes.as_slice().try_into().ok()?;
    Some(Oid(u64::from_le_bytes(bytes)))
}
