//! The storage simulation's model: every acknowledged revision, and what a pack
//! with garbage collection must keep.
//!
//! Invariants: tids in the model only increase (`apply` asserts it); an oid's
//! revisions are kept oldest first and are never dropped (a load before the pack
//! time may find fewer in the storage, never other ones).

use std::collections::{BTreeMap, BTreeSet};

use zodiac_storage::{Error, Oid, Tid};

/// What the storage must hold: every acknowledged revision, by oid, oldest first.
#[derive(Default)]
pub struct Model {
    pub objects: BTreeMap<Oid, Vec<(Tid, Vec<u8>)>>,
    /// Each acknowledged transaction's oids, by tid.
    pub transactions: BTreeMap<Tid, BTreeSet<Oid>>,
    /// Objects a pack with GC removed (never written again).
    pub removed: BTreeSet<Oid>,
    pub last: Tid,
    /// The newest pack time: loads at earlier snapshots may find older revisions
    /// gone.
    pub pack_tid: Tid,
    /// The highest oid `new_oid` returned.
    pub oid_handed_max: u64,
    /// Commits whose `finish` failed but that a reopen showed: visible since, so
    /// as binding as acknowledged ones.
    pub surfaced: BTreeSet<Tid>,
}

impl Model {
    pub fn newest(&self, oid: Oid) -> Option<&(Tid, Vec<u8>)> {
        self.objects.get(&oid).and_then(|revs| revs.last())
    }

    pub fn newest_tid(&self, oid: Oid) -> Tid {
        self.newest(oid).map_or(Tid::ZERO, |(tid, _)| *tid)
    }

    pub fn live(&self) -> Vec<Oid> {
        self.objects
            .keys()
            .copied()
            .filter(|o| !self.removed.contains(o))
            .collect()
    }

    /// Every revision's tid and references, for a failure message.
    pub fn describe_revisions(&self) -> String {
        let mut out = Vec::new();
        for (oid, revs) in &self.objects {
            for (tid, data) in revs {
                let refs: Vec<String> = references(data)
                    .unwrap_or_default()
                    .iter()
                    .map(|r| r.to_string())
                    .collect();
                out.push(format!("{oid}@{tid}->[{}]", refs.join(",")));
            }
        }
        out.join(" ")
    }

    pub fn oid_committed_max(&self) -> u64 {
        self.objects.keys().next_back().map_or(0, |o| o.0)
    }

    pub fn load(&self, oid: Oid, snapshot: Tid) -> Option<(Tid, &[u8])> {
        let revs = self.objects.get(&oid)?;
        revs.iter()
            .rev()
            .find(|(tid, _)| *tid <= snapshot)
            .map(|(tid, data)| (*tid, data.as_slice()))
    }

    pub fn apply(&mut self, tid: Tid, writes: &[(Oid, Vec<u8>)]) {
        assert!(
            tid > self.last,
            "model: tid {tid} is not after {}",
            self.last
        );
        for (oid, data) in writes {
            self.objects
                .entry(*oid)
                .or_default()
                .push((tid, data.clone()));
        }
        self.transactions
            .insert(tid, writes.iter().map(|(o, _)| *o).collect());
        self.last = tid;
    }

    /// Every object a pack at `pack_tid` with GC must keep: the root, everything
    /// written or referred to after the pack time, and what these refer to,
    /// through every revision at or after the one current at the pack time. Each
    /// with the oid it was reached from (itself for a root), to explain a failure.
    pub fn reachable(&self, pack_tid: Tid) -> BTreeMap<Oid, Oid> {
        let mut stack = vec![(Oid::ROOT, Oid::ROOT)];
        for (oid, revs) in &self.objects {
            for (tid, data) in revs {
                if *tid > pack_tid {
                    stack.push((*oid, *oid));
                    stack.extend(
                        references(data)
                            .unwrap_or_default()
                            .into_iter()
                            .map(|r| (r, r)),
                    );
                }
            }
        }
        let mut seen = BTreeMap::new();
        while let Some((oid, from)) = stack.pop() {
            if seen.contains_key(&oid) {
                continue;
            }
            seen.insert(oid, from);
            let Some(revs) = self.objects.get(&oid) else {
                continue;
            };
            let first = revs.iter().rposition(|(t, _)| *t <= pack_tid).unwrap_or(0);
            for (_, data) in &revs[first..] {
                stack.extend(
                    references(data)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|r| (r, oid)),
                );
            }
        }
        seen
    }

    /// How `oid` was reached, root first, as `reachable` found it.
    pub fn path_to(reachable: &BTreeMap<Oid, Oid>, oid: Oid) -> String {
        let mut path = vec![oid];
        let mut at = oid;
        while let Some(&from) = reachable.get(&at) {
            if from == at || path.len() > reachable.len() {
                break;
            }
            path.push(from);
            at = from;
        }
        let names: Vec<String> = path.iter().rev().map(|o| o.to_string()).collect();
        names.join(" -> ")
    }
}

/// Object data: `refs:A,B;payload`, so GC can follow references.
pub fn data(refs: &[Oid], payload: &str) -> Vec<u8> {
    let list: Vec<String> = refs.iter().map(|o| o.0.to_string()).collect();
    format!("refs:{};{payload}", list.join(",")).into_bytes()
}

pub fn references(bytes: &[u8]) -> Result<Vec<Oid>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
    let list = text
        .strip_prefix("refs:")
        .and_then(|rest| rest.split(';').next())
        .ok_or_else(|| format!("no reference list in {text:?}"))?;
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map(Oid).map_err(|e| format!("{e}")))
        .collect()
}

pub fn short(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    match text.char_indices().nth(40) {
        Some((i, _)) => format!("{}…({} bytes)", &text[..i], bytes.len()),
        None => text.into_owned(),
    }
}

/// Whether `e` says an object or revision is not there.
pub fn is_not_found(e: &Error) -> bool {
    matches!(
        e,
        Error::NoSuchObject { .. }
            | Error::NotFoundAtSnapshot { .. }
            | Error::NoSuchRevision { .. }
    )
}
