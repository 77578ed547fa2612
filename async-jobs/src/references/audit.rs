//! The check that no persistent type of the job layer stores an oid outside a
//! reference (see the parent module for the rule and why it is checked this way).
//!
//! Invariant: [`walk`] sees every number and byte string a value serializes, and
//! marks those inside a `PRef` as references; it fails on nothing (any value can
//! be walked). `zodiac refs` uses it too ([`super::named_ids`]), to read the ids a
//! stored value names.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Serialize, ser};
use zodiac_objects::PREF_SERDE_NAME;

/// What walking one value found.
#[derive(Default, Debug)]
pub(super) struct Found {
    /// Numbers outside references, with where they are (`field.field[3]`).
    pub numbers: Vec<(String, u64)>,
    /// Byte strings (arguments, annotations, result values), with where they are.
    pub bytes: Vec<(String, Vec<u8>)>,
    /// The oids of every reference.
    pub references: BTreeSet<u64>,
}

/// Walks `value` as its serialization does.
pub(super) fn walk<T: Serialize + ?Sized>(value: &T) -> Found {
    let mut walk = Walk::default();
    value
        .serialize(&mut walk)
        .expect("walking a value cannot fail");
    // A sequence of `u8`s (e.g. an annotation's `Vec<u8>`) is bytes too.
    walk.found.bytes.extend(walk.u8_runs);
    walk.found
}

#[derive(Default)]
struct Walk {
    path: Vec<String>,
    in_reference: bool,
    found: Found,
    /// The `u8`s of each sequence, by the sequence's path.
    u8_runs: std::collections::BTreeMap<String, Vec<u8>>,
}

#[derive(Debug)]
struct Never(String);
impl fmt::Display for Never {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Never {}
impl ser::Error for Never {
    fn custom<M: fmt::Display>(msg: M) -> Self {
        Never(msg.to_string())
    }
}

impl Walk {
    fn number(&mut self, v: u64) {
        if self.in_reference {
            self.found.references.insert(v);
        } else {
            self.found.numbers.push((self.path.join("."), v));
        }
    }

    fn nested<T: Serialize + ?Sized>(&mut self, at: String, value: &T) -> Result<(), Never> {
        self.path.push(at);
        let r = value.serialize(&mut *self);
        self.path.pop();
        r
    }
}

/// One compound value being walked: its elements get their index or name.
struct Compound<'a> {
    walk: &'a mut Walk,
    index: usize,
}

impl Compound<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Never> {
        let at = format!("[{}]", self.index);
        self.index += 1;
        self.walk.nested(at, value)
    }
}

macro_rules! numbers {
    ($($method:ident: $ty:ty),*) => {
        $(fn $method(self, v: $ty) -> Result<(), Never> {
            // Negative numbers are no oids; everything else is looked at.
            #[allow(irrefutable_let_patterns)]
            if let Ok(v) = u64::try_from(v) {
                self.number(v);
            }
            Ok(())
        })*
    };
}

impl<'a> ser::Serializer for &'a mut Walk {
    type Ok = ();
    type Error = Never;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    numbers!(serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_u16: u16, serialize_u32: u32, serialize_u64: u64);

    fn serialize_u8(self, v: u8) -> Result<(), Never> {
        let sequence = self.path[..self.path.len().saturating_sub(1)].join(".");
        self.u8_runs.entry(sequence).or_default().push(v);
        self.number(u64::from(v));
        Ok(())
    }

    fn serialize_i128(self, v: i128) -> Result<(), Never> {
        if let Ok(v) = u64::try_from(v) {
            self.number(v);
        }
        Ok(())
    }
    fn serialize_u128(self, v: u128) -> Result<(), Never> {
        if let Ok(v) = u64::try_from(v) {
            self.number(v);
        }
        Ok(())
    }
    fn serialize_bool(self, _: bool) -> Result<(), Never> {
        Ok(())
    }
    fn serialize_f32(self, _: f32) -> Result<(), Never> {
        Ok(())
    }
    fn serialize_f64(self, _: f64) -> Result<(), Never> {
        Ok(())
    }
    fn serialize_char(self, _: char) -> Result<(), Never> {
        Ok(())
    }
    fn serialize_str(self, _: &str) -> Result<(), Never> {
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Never> {
        self.found.bytes.push((self.path.join("."), v.to_vec()));
        Ok(())
    }
    fn serialize_none(self) -> Result<(), Never> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Never> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Never> {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Never> {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<(), Never> {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<(), Never> {
        if name == PREF_SERDE_NAME {
            let outer = std::mem::replace(&mut self.in_reference, true);
            let r = value.serialize(&mut *self);
            self.in_reference = outer;
            return r;
        }
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Never> {
        self.nested(variant.to_string(), value)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Compound<'a>, Never> {
        Ok(Compound {
            walk: self,
            index: 0,
        })
    }
    fn serialize_tuple(self, _: usize) -> Result<Compound<'a>, Never> {
        self.serialize_seq(None)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Compound<'a>, Never> {
        self.serialize_seq(None)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Compound<'a>, Never> {
        self.path.push(variant.to_string());
        self.serialize_seq(None)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Compound<'a>, Never> {
        self.serialize_seq(None)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Compound<'a>, Never> {
        self.serialize_seq(None)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Compound<'a>, Never> {
        self.path.push(variant.to_string());
        self.serialize_seq(None)
    }
}

impl ser::SerializeSeq for Compound<'_> {
    type Ok = ();
    type Error = Never;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Never> {
        self.element(value)
    }
    fn end(self) -> Result<(), Never> {
        Ok(())
    }
}

impl ser::SerializeTuple for Compound<'_> {
    type Ok = ();
    type Error = Never;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Never> {
        self.element(value)
    }
    fn end(self) -> Result<(), Never> {
        Ok(())
    }
}

impl ser::SerializeTupleStruct for Compound<'_> {
    type Ok = ();
    type Error = Never;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Never> {
        self.element(value)
    }
    fn end(self) -> Result<(), Never> {
        Ok(())
    }
}

impl ser::SerializeTupleVariant for Compound<'_> {
    type Ok = ();
    type Error = Never;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Never> {
        self.element(value)
    }
    fn end(self) -> Result<(), Never> {
        self.walk.path.pop();
        Ok(())
    }
}

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = Never;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Never> {
        self.element(key)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Never> {
        self.element(value)
    }
    fn end(self) -> Result<(), Never> {
        Ok(())
    }
}

impl ser::SerializeStruct for Compound<'_> {
    type Ok = ();
    type Error = Never;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), Never> {
        self.walk.nested(name.to_string(), value)
    }
    fn end(self) -> Result<(), Never> {
        Ok(())
    }
}

impl ser::SerializeStructVariant for Compound<'_> {
    type Ok = ();
    type Error = Never;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), Never> {
        self.walk.nested(name.to_string(), value)
    }
    fn end(self) -> Result<(), Never> {
        self.walk.path.pop();
        Ok(())
    }
}

/// Whether `bytes` hold `oid` as a postcard varint or as 8 little-endian bytes,
/// at any offset (arguments are postcard; annotations are whatever the writer
/// chose, e.g. the composite's oid as 8 bytes).
#[cfg(test)]
pub(super) fn bytes_hold(bytes: &[u8], oid: u64) -> bool {
    let le = oid.to_le_bytes();
    let varint = postcard::to_stdvec(&oid).expect("a u64 encodes");
    bytes.windows(8).any(|w| w == le) || bytes.windows(varint.len()).any(|w| w == varint)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;

    use serde::Serialize;
    use zodiac_objects::{BTree, Counter, Database, PRef, Persistent, Root, Transaction, record};
    use zodiac_storage::{MemoryStorage, Oid, Storage};

    use super::{Found, bytes_hold, walk};
    use crate::callbacks::add_callback;
    use crate::composite::Composite;
    use crate::dispatcher::Dispatchers;
    use crate::handler::Handlers;
    use crate::model::dispatcher::{Agent, DispatcherRecord};
    use crate::model::ended::Ended;
    use crate::model::failure::{Failure, FailureKind};
    use crate::model::job::Job;
    use crate::model::queue::{Queue, QueueDirectory};
    use crate::model::quota::Quota;
    use crate::model::schedule::{Schedule, ScheduleDirectory};
    use crate::queue::{Claimer, PutOptions};
    use crate::retry::Policies;
    use crate::run::{RunOutcome, Runner};
    use crate::time::Timestamp;
    use crate::transact::transact;

    /// Oids are allocated from here: far above every count, size and attempt
    /// number in the data, far below any timestamp, so a number equal to an oid is
    /// an oid.
    const OID_FLOOR: u64 = 1_000_000;

    fn handlers() -> Handlers {
        let mut h = Handlers::new();
        h.register("ok", |_ctx, n: i64| Ok(n));
        h.register("first", |ctx, n: i64| {
            let side = Queue::get_or_create(ctx.tx(), "side")?;
            let second = Queue::put_job(
                ctx.tx(),
                &side,
                Job::with_arguments("ok", &n)?,
                PutOptions::new(),
            )?;
            ctx.await_job(second);
            Ok(0i64)
        });
        h
    }

    /// The job layer in every state that stores a link (see the parent module).
    fn realistic_state(db: &Database, runner: &Runner) {
        let claimer = Claimer {
            dispatcher: "d1".into(),
            agent: "main".into(),
        };
        let now = Timestamp::now();
        let death = Duration::from_secs(60);
        let put = |job: Job, options: PutOptions| {
            transact(db, |tx| {
                let q = Queue::get_or_create(tx, "")?;
                Queue::put_job(tx, &q, job.clone(), options.clone())
            })
            .unwrap()
        };
        transact(db, |tx| {
            let q = Queue::get_or_create(tx, "")?;
            Queue::set_quota(tx, &q, "q", 2)?;
            Dispatchers::activate(tx, &q, "d1", now, death)?;
            Dispatchers::set_agent(tx, &q, "d1", "main", 8)?;
            let side = Queue::get_or_create(tx, "side")?;
            let parts = vec![Job::with_arguments("ok", &1i64)?];
            crate::composite::parallel(tx, &side, parts, Job::with_arguments("ok", &2i64)?)?;
            Ok(())
        })
        .unwrap();
        // Pending (not due yet) with a unique key: held in the queue's unique index.
        put(
            Job::with_arguments("ok", &9i64).unwrap(),
            PutOptions::new()
                .begin_after(now.plus(Duration::from_secs(3600)))
                .unique(crate::Unique::new("nightly").for_period(death)),
        );
        // Expired before the first claim, which the agent's claim completes.
        let long_ago = Timestamp::from_micros(now.as_micros() - 7_200_000_000);
        let expired = put(
            Job::with_arguments("ok", &7i64).unwrap(),
            PutOptions::new()
                .begin_after(long_ago)
                .begin_by(Duration::from_secs(1)),
        );
        transact(db, |tx| {
            add_callback(tx, &expired, Job::with_arguments("ok", &8i64)?).map(|_| ())
        })
        .unwrap();
        // Cancelled, with and without callbacks; expired in a claim no agent made.
        let cancelled = put(Job::with_arguments("ok", &9i64).unwrap(), PutOptions::new());
        let cancelled_bare = put(
            Job::with_arguments("ok", &10i64).unwrap(),
            PutOptions::new(),
        );
        transact(db, |tx| {
            add_callback(tx, &cancelled, Job::with_arguments("ok", &11i64)?)?;
            let cancel = || Some(Failure::new(FailureKind::Cancelled, "by the test"));
            crate::queue::fail(tx, &cancelled, cancel())?;
            crate::queue::fail(tx, &cancelled_bare, cancel())?;
            let third = Queue::get_or_create(tx, "third")?;
            Queue::put_job(
                tx,
                &third,
                Job::with_arguments("ok", &12i64)?,
                PutOptions::new()
                    .begin_after(long_ago)
                    .begin_by(Duration::from_secs(1)),
            )?;
            let nobody = Claimer {
                dispatcher: "nobody".into(),
                agent: "none".into(),
            };
            let claim = Queue::claim(tx, &third, &nobody)?;
            assert_eq!((claim.job, claim.expired.len()), (None, 1));
            Ok(())
        })
        .unwrap();
        let done = put(Job::with_arguments("ok", &1i64).unwrap(), PutOptions::new());
        let with_callbacks = put(Job::with_arguments("ok", &2i64).unwrap(), PutOptions::new());
        transact(db, |tx| {
            add_callback(tx, &with_callbacks, Job::with_arguments("ok", &3i64)?).map(|_| ())
        })
        .unwrap();
        let first = put(
            Job::with_arguments("first", &4i64).unwrap(),
            PutOptions::new(),
        );
        let assigned = put(
            Job::with_arguments("ok", &5i64).unwrap(),
            PutOptions::new().quota("q"),
        );
        let later = now.plus(Duration::from_secs(3600));
        put(
            Job::with_arguments("ok", &6i64).unwrap(),
            PutOptions::new()
                .begin_after(later)
                .begin_by(Duration::from_secs(60)),
        );
        let claim = || {
            transact(db, |tx| {
                let q = Queue::get(tx, "")?.unwrap();
                Dispatchers::claim_for_agent(tx, &q, "d1", "main", Timestamp::now())
            })
            .unwrap()
        };
        assert_eq!(claim(), Some(done));
        runner.run(&done, Some(&claimer)).unwrap();
        assert_eq!(claim(), Some(with_callbacks));
        runner.run(&with_callbacks, Some(&claimer)).unwrap();
        assert_eq!(claim(), Some(first));
        let awaiting = runner.run(&first, Some(&claimer)).unwrap();
        assert!(matches!(awaiting, RunOutcome::Awaiting(_)), "{awaiting:?}");
        assert_eq!(claim(), Some(assigned));
        // A recurring job's schedule, which put its first tick's job.
        transact(db, |tx| {
            let spec = crate::ScheduleSpec::new("every", "@hourly", "side", "ok", vec![2]);
            let s = crate::add_schedule(tx, &spec, long_ago, false)?;
            let tick = crate::put_due(tx, &s, now)?.expect("a tick is due");
            assert_eq!(tx.get(&s)?.last_job(), Some(tick.job));
            Ok(())
        })
        .unwrap();
        // Every kind of ended job is where the rule says.
        transact(db, |tx| {
            let q = Queue::get(tx, "")?.unwrap();
            let ended = crate::ended::of(tx, &q)?.expect("jobs ended in the queue");
            assert_eq!(
                ended.callbacks_due().iter().copied().collect::<Vec<_>>(),
                [cancelled]
            );
            let bare: Vec<_> = crate::ended::completed(tx, &q, 10)?
                .into_iter()
                .map(|(_, j)| j)
                .collect();
            assert_eq!(bare, [cancelled_bare]);
            let record = Queue::dispatchers(tx, &q)?["d1"];
            let agent = tx.get(&record)?.agents()["main"];
            assert!(
                tx.get(&agent)?.held().contains(&expired),
                "held while its callbacks wait"
            );
            let third = Queue::get(tx, "third")?.unwrap();
            assert_eq!(crate::ended::completed_count(tx, &third)?, 1);
            Ok(())
        })
        .unwrap();
    }

    /// Decodes object `oid` as a `T` and walks it.
    fn walk_as<T: Persistent>(tx: &mut Transaction<'_>, oid: Oid) -> (Arc<T>, Found) {
        let value = tx.get(&PRef::<T>::from_oid(oid)).unwrap();
        let found = walk(&*value);
        (value, found)
    }

    /// The trees of one B-tree type found in the data.
    fn tree_entries<K, V>(tx: &mut Transaction<'_>, tree: PRef<BTree<K, V>>) -> Vec<(Found, Found)>
    where
        K: zodiac_objects::btree::BTreeKey + Serialize,
        V: zodiac_objects::btree::BTreeValue + Serialize,
    {
        BTree::entries(tx, &tree)
            .unwrap()
            .iter()
            .map(|(k, v)| (walk(k), walk(v)))
            .collect()
    }

    /// Every violation of the rule in the data of `db`, as sentences.
    fn violations(db: &Database, storage: &dyn Storage) -> Vec<String> {
        let high = storage.new_oid().unwrap().0;
        let last = storage.last_tid();
        let mut records = BTreeMap::new();
        for oid in std::iter::once(0).chain(OID_FLOOR..high) {
            if let Ok(revision) = storage.load(Oid(oid), last) {
                records.insert(oid, revision.data);
            }
        }
        let existing: Vec<u64> = records.keys().copied().filter(|o| *o != 0).collect();
        let mut out = Vec::new();
        let mut trees_audited = Vec::new();
        let mut trees_stored = Vec::new();
        let check = |what: &str, own: u64, found: &Found, listed: &[Oid], out: &mut Vec<_>| {
            for (path, n) in &found.numbers {
                if *n != own && existing.contains(n) {
                    out.push(format!("{what}: {path} holds oid {n} outside a reference"));
                }
            }
            for (path, bytes) in &found.bytes {
                for oid in &existing {
                    if *oid != own && bytes_hold(bytes, *oid) && !found.references.contains(oid) {
                        out.push(format!(
                            "{what}: the bytes at {path} hold oid {oid}, which it does not reference"
                        ));
                    }
                }
            }
            for r in &found.references {
                if !listed.contains(&Oid(*r)) {
                    out.push(format!("{what}: reference {r} missing from the envelope"));
                }
            }
        };
        let mut connection = db.connection();
        let mut tx = connection.begin();
        for (oid, data) in &records {
            let env = record::decode(data).unwrap();
            let what = format!("object {oid} ({})", env.type_name);
            // What `zodiac refs` reads from the value is what the envelope lists.
            if let Some(named) = super::super::named_ids(data) {
                let named = named.unwrap();
                if !named.iter().all(|id| env.refs.contains(id)) {
                    out.push(format!("{what}: names {named:?}, lists {:?}", env.refs));
                }
            }
            let (own, refs) = (*oid, env.refs.as_slice());
            let found = match env.type_name {
                Root::TYPE_NAME => walk_as::<Root>(&mut tx, Oid(own)).1,
                Counter::TYPE_NAME => walk_as::<Counter>(&mut tx, Oid(own)).1,
                QueueDirectory::TYPE_NAME => walk_as::<QueueDirectory>(&mut tx, Oid(own)).1,
                Queue::TYPE_NAME => {
                    let (q, found) = walk_as::<Queue>(&mut tx, Oid(own));
                    trees_audited.push(q.pending_tree().oid().0);
                    for (k, v) in tree_entries(&mut tx, q.pending_tree()) {
                        key_mirrors_value(&what, &k, &v, &existing, &mut out);
                    }
                    if let Some(unique) = q.unique {
                        trees_audited.push(unique.oid().0);
                        for (k, v) in tree_entries(&mut tx, unique) {
                            key_mirrors_value(&what, &k, &v, &existing, &mut out);
                        }
                    }
                    found
                }
                Quota::TYPE_NAME => walk_as::<Quota>(&mut tx, Oid(own)).1,
                DispatcherRecord::TYPE_NAME => walk_as::<DispatcherRecord>(&mut tx, Oid(own)).1,
                Agent::TYPE_NAME => {
                    let (a, found) = walk_as::<Agent>(&mut tx, Oid(own));
                    trees_audited.push(a.completed_tree().oid().0);
                    for (k, v) in tree_entries(&mut tx, a.completed_tree()) {
                        key_mirrors_value(&what, &k, &v, &existing, &mut out);
                    }
                    found
                }
                Job::TYPE_NAME => walk_as::<Job>(&mut tx, Oid(own)).1,
                Ended::TYPE_NAME => {
                    let (e, found) = walk_as::<Ended>(&mut tx, Oid(own));
                    trees_audited.push(e.completed_tree().oid().0);
                    for (k, v) in tree_entries(&mut tx, e.completed_tree()) {
                        key_mirrors_value(&what, &k, &v, &existing, &mut out);
                    }
                    found
                }
                Composite::TYPE_NAME => walk_as::<Composite>(&mut tx, Oid(own)).1,
                Schedule::TYPE_NAME => walk_as::<Schedule>(&mut tx, Oid(own)).1,
                ScheduleDirectory::TYPE_NAME => walk_as::<ScheduleDirectory>(&mut tx, Oid(own)).1,
                // A tree's handle, nodes and buckets are the objects layer's; the
                // job layer's part, the keys and values, is checked per tree above.
                "zodiac.BTree" => {
                    trees_stored.push(own);
                    continue;
                }
                "zodiac.BTreeNode" | "zodiac.BTreeBucket" => continue,
                other => {
                    out.push(format!(
                        "{what}: type {other} is not known to this check: add it"
                    ));
                    continue;
                }
            };
            check(&what, own, &found, refs, &mut out);
        }
        trees_audited.sort_unstable();
        trees_stored.sort_unstable();
        if trees_audited != trees_stored {
            out.push(format!(
                "B-trees {trees_stored:?} are stored, {trees_audited:?} checked: add the others"
            ));
        }
        out
    }

    /// The ids in a B-tree key only order; the value beside it must reference
    /// each of them, and hold no other id outside a reference.
    fn key_mirrors_value(
        what: &str,
        key: &Found,
        value: &Found,
        existing: &[u64],
        out: &mut Vec<String>,
    ) {
        for (path, n) in &key.numbers {
            if existing.contains(n) && !value.references.contains(n) {
                out.push(format!(
                    "{what}: a tree key holds oid {n} at {path}, its value does not reference it"
                ));
            }
        }
        for (path, n) in &value.numbers {
            if existing.contains(n) {
                out.push(format!(
                    "{what}: a tree value holds oid {n} at {path} outside a reference"
                ));
            }
        }
    }

    /// The story: GC deleted the jobs a worker ran, the job awaiting another and
    /// every composite, because the job layer kept those links as plain numbers
    /// (`BTreeSet<u64>` of held jobs, oids in arguments and annotations). This
    /// check fails for any stored oid outside a reference (see the parent module).
    #[test]
    fn no_persistent_type_stores_an_oid_outside_a_reference() {
        let memory = Arc::new(MemoryStorage::new());
        for _ in 0..OID_FLOOR {
            memory.new_oid().unwrap();
        }
        let storage: Arc<dyn Storage> = memory;
        let db = Database::open(Arc::clone(&storage)).unwrap();
        let runner = Runner::new(db.clone(), handlers(), Policies::new());
        realistic_state(&db, &runner);
        let found = violations(&db, &*storage);
        assert!(found.is_empty(), "{}", found.join("\n"));
    }

    /// The check itself can fail: a value holding an oid as a number, or in bytes
    /// without a reference, is reported; a reference is not.
    #[test]
    fn the_walk_tells_references_from_numbers() {
        #[derive(Serialize)]
        struct Bad {
            held: Vec<u64>,
            job: PRef<Job>,
            #[serde(with = "serde_bytes")]
            arguments: Vec<u8>,
        }
        let bad = Bad {
            held: vec![OID_FLOOR + 7],
            job: PRef::from_oid(Oid(OID_FLOOR + 8)),
            arguments: postcard::to_stdvec(&(OID_FLOOR + 9)).unwrap(),
        };
        let found = walk(&bad);
        assert_eq!(found.numbers, [("held.[0]".to_string(), OID_FLOOR + 7)]);
        assert_eq!(
            found.references.iter().copied().collect::<Vec<_>>(),
            [OID_FLOOR + 8]
        );
        assert!(bytes_hold(&found.bytes[0].1, OID_FLOOR + 9));
        assert!(!bytes_hold(&found.bytes[0].1, OID_FLOOR + 8));
        assert!(bytes_hold(&(OID_FLOOR + 3).to_le_bytes(), OID_FLOOR + 3));
    }
}
