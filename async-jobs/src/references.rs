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
//!   they ended without a run.
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

#[cfg(test)]
mod audit;
