//! What a pack keeps: for each object the revision current at the pack time, and,
//! with garbage collection, only the objects reachable from the GC roots.
//!
//! Invariants:
//! - GC roots are the root object and every object written, or referred to, by a
//!   revision after the pack time: a later revision may refer to an object that was
//!   unreachable at the pack time, and it must not dangle.
//! - Every chain and every reference is read from the snapshot the pack started
//!   from, and checked like a load checks it (`Corrupted`, never a panic or a loop).
//! - Memory: two oid → position tables (8–12 bytes per object each), a reachability
//!   bit per object and a stack of at most one oid per object: about 30 bytes per
//!   object in the worst case, 300 MB for 10 million objects.

use crate::error::{Error, Result};
use crate::ids::{Oid, Tid};
use crate::reports::{PackReport, References};

use super::super::Shared;
use super::super::format::{self, TxnView};
use super::super::index::Index;

/// What the pack keeps, decided from the snapshot it started from.
pub(super) struct Keep {
    pack_tid: Tid,
    /// For each object, its newest revision with tid <= `pack_tid`.
    current: Index,
    /// With garbage collection: the objects reachable from the GC roots.
    reachable: Option<OidSet>,
}

impl Keep {
    /// Decides what to keep of the transactions at `span` of the snapshot `map`
    /// indexed by `index`; records the tables' memory and the objects removed in
    /// `report`.
    pub(super) fn decide(
        shared: &Shared,
        map: &[u8],
        index: Index,
        span: std::ops::Range<u64>,
        pack_tid: Tid,
        references: Option<References<'_>>,
        report: &mut PackReport,
    ) -> Result<Keep> {
        let current = revisions_current_at(shared, map, &index, pack_tid)?;
        let both_tables = index.memory_bytes() + current.memory_bytes();
        drop(index);
        let (reachable, gc_bytes) = match references {
            Some(refs) => {
                let (reached, stack_bytes) = reachable_from_root(
                    shared, map, &current, span.start, span.end, pack_tid, refs,
                )?;
                let bytes = current.memory_bytes() + reached.memory_bytes() + stack_bytes;
                (Some(reached), bytes)
            }
            None => (None, 0),
        };
        report.table_bytes_max = both_tables.max(gc_bytes) as u64;
        if let Some(reached) = &reachable {
            report.objects_removed = current
                .entries()
                .filter(|(oid, _)| !reached.contains(*oid))
                .count() as u64;
        }
        Ok(Keep {
            pack_tid,
            current,
            reachable,
        })
    }

    /// Whether the record of `oid` at `rpos` in transaction `t` is kept.
    pub(super) fn keeps(&self, t: &TxnView<'_>, rpos: u64, oid: Oid) -> bool {
        t.tid > self.pack_tid
            || (self.current.get(oid) == Some(rpos)
                && self.reachable.as_ref().is_none_or(|r| r.contains(oid)))
    }

    /// An object a record of `t` (committed during the pack) refers to that the
    /// GC drops, if any: the pack cannot keep it, its pre-pack revisions are
    /// already left behind.
    pub(super) fn dropped_referent(
        &self,
        t: &TxnView<'_>,
        references: Option<References<'_>>,
    ) -> Result<Option<Oid>> {
        let (Some(reached), Some(refs)) = (&self.reachable, references) else {
            return Ok(None);
        };
        for (_, r) in &t.records {
            let children =
                refs(r.data).map_err(|what| Error::PackReferences { oid: r.oid, what })?;
            if let Some(child) = children
                .into_iter()
                .find(|c| !reached.contains(*c) && self.current.get(*c).is_some())
            {
                return Ok(Some(child));
            }
        }
        Ok(None)
    }
}

/// How far past the bit vector's end (in 64-bit words) an oid may lie and still
/// extend it; farther oids (only through damaged references) go to the hash set, so
/// they cannot make the set allocate memory in proportion to their value.
const DENSE_WORDS_SLACK: u64 = 1 << 14;

/// A set of oids, one bit each (oids are dense), with a hash set for outliers.
#[derive(Default)]
struct OidSet {
    dense: Vec<u64>,
    sparse: std::collections::HashSet<u64>,
}

impl OidSet {
    /// Bytes of memory the set takes.
    fn memory_bytes(&self) -> usize {
        self.dense.capacity() * 8 + self.sparse.capacity() * 9
    }

    /// Adds `oid`; returns whether it was new.
    fn insert(&mut self, oid: Oid) -> bool {
        if self.contains(oid) {
            return false;
        }
        let (word, bit) = (oid.0 / 64, oid.0 % 64);
        if word <= 2 * self.dense.len() as u64 + DENSE_WORDS_SLACK {
            let word = word as usize;
            if word >= self.dense.len() {
                self.dense.resize(word + 1, 0);
            }
            self.dense[word] |= 1 << bit;
        } else {
            self.sparse.insert(oid.0);
        }
        true
    }

    fn contains(&self, oid: Oid) -> bool {
        let (word, bit) = ((oid.0 / 64) as usize, oid.0 % 64);
        self.dense.get(word).is_some_and(|w| w & (1 << bit) != 0) || self.sparse.contains(&oid.0)
    }
}

/// For each object, the position of its newest revision with tid <= `pack_tid`.
fn revisions_current_at(
    shared: &Shared,
    map: &[u8],
    index: &Index,
    pack_tid: Tid,
) -> Result<Index> {
    let mut current = Index::default();
    for (oid, newest) in index.entries() {
        let mut pos = newest;
        loop {
            let (r, _) = format::data_header_at(map, pos).map_err(|w| shared.corrupted(pos, w))?;
            if r.oid != oid {
                return Err(shared.corrupted(
                    pos,
                    format!("index entry for object {oid} points at object {}", r.oid),
                ));
            }
            if r.tid <= pack_tid {
                current.set(oid, pos);
                break;
            }
            if r.prev == 0 {
                break;
            }
            if r.prev >= pos {
                return Err(shared.corrupted(
                    pos,
                    format!("back-pointer {} does not point backwards", r.prev),
                ));
            }
            pos = r.prev;
        }
    }
    Ok(current)
}

/// Objects reachable from the GC roots (see the module docs) through the revisions
/// current at the pack time.
fn reachable_from_root(
    shared: &Shared,
    map: &[u8],
    current: &Index,
    data_start: u64,
    end: u64,
    pack_tid: Tid,
    refs: References<'_>,
) -> Result<(OidSet, usize)> {
    let mut reached = OidSet::default();
    let mut stack = vec![Oid::ROOT];
    reached.insert(Oid::ROOT);
    let references_of =
        |oid: Oid, data: &[u8]| refs(data).map_err(|what| Error::PackReferences { oid, what });
    let mut pos = data_start;
    while pos < end {
        let (len, tid) =
            format::peek_transaction(map, pos).map_err(|p| shared.corrupted(pos, p.describe()))?;
        if tid > pack_tid {
            let t = format::transaction_at(map, pos)
                .map_err(|p| shared.corrupted(pos, p.describe()))?;
            for (_, r) in &t.records {
                if reached.insert(r.oid) {
                    stack.push(r.oid);
                }
                for child in references_of(r.oid, r.data)? {
                    if reached.insert(child) {
                        stack.push(child);
                    }
                }
            }
        }
        pos += len;
    }
    let mut stack_bytes = stack.capacity() * 8;
    while let Some(oid) = stack.pop() {
        let Some(pos) = current.get(oid) else {
            continue;
        };
        let r = format::data_record_at(map, pos).map_err(|w| shared.corrupted(pos, w))?;
        for child in references_of(oid, r.data)? {
            if reached.insert(child) {
                stack.push(child);
            }
        }
    }
    stack_bytes = stack_bytes.max(stack.capacity() * 8);
    Ok((reached, stack_bytes))
}
