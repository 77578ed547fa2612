//! A persistent sorted map (a B+ tree) whose nodes and buckets are separate
//! persistent objects, so a change rewrites one bucket (plus the nodes above it on a
//! split), and concurrent changes to different keys of one bucket merge.
//!
//! Shape: the [`BTree`] handle object points at the root [`Node`]; a node at level 0
//! has [`Bucket`]s as children, a node at level `l > 0` has nodes of level `l - 1`.
//! A node with separator keys `s[0..n]` has `n + 1` children; child `i` holds the keys
//! `k` with `s[i-1] <= k < s[i]`.
//!
//! Invariants:
//! - Entries in a bucket and separators in a node are strictly ascending; every
//!   bucket holds at most its `capacity` entries after a commit that wrote it, every
//!   node at most `node_capacity` children.
//! - A bucket's `high` is the exclusive upper bound of the keys it held when it was
//!   made (the separator after it, `None` for the last), set when it splits.
//!   Conflict resolution merges two changes to a bucket only when neither split nor
//!   detached it (`high` unchanged in all three states), no key was changed by
//!   both (even the same way: two removals of one key conflict, so of two takers
//!   of an entry exactly one succeeds), and the result fits.
//! - A removal that empties a bucket detaches it from the lowest node on its path
//!   that has another child (with every node below that holds only it), so a queue
//!   that takes from the front does not keep reading emptied buckets; the last
//!   bucket of the tree stays. The emptied bucket is written with a new `high`, so
//!   any concurrent change to it conflicts instead of merging into a detached
//!   bucket; the nodes it is detached from are written too (nodes never merge).
//!   There is no other rebalancing (like ZODB's BTrees).
//! - A bucket's `high` is only compared for equality (to detect splits and
//!   detaches); after a neighbour is detached it may be lower than the bucket's
//!   real upper bound.
//! - All instantiations share the type names below: the key and value types are not
//!   recorded, so a tree must be read with the types it was written with.

use std::borrow::Borrow;
use std::ops::{Bound, RangeBounds};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zodiac_storage::Oid;

use crate::counter::Counter;
use crate::error::Result;
use crate::persistent::Persistent;
use crate::pref::PRef;
use crate::transaction::Transaction;

/// Most entries per bucket of a tree made with [`BTree::create`].
pub const BUCKET_ENTRIES_MAX: u32 = 64;
/// Most children per node of a tree made with [`BTree::create`].
pub const NODE_CHILDREN_MAX: u32 = 64;

/// What a key must be.
pub trait BTreeKey:
    Ord + Clone + Serialize + DeserializeOwned + Send + Sync + std::fmt::Debug + 'static
{
}
impl<K> BTreeKey for K where
    K: Ord + Clone + Serialize + DeserializeOwned + Send + Sync + std::fmt::Debug + 'static
{
}

/// What a value must be (`PartialEq` so conflict resolution can compare changes).
pub trait BTreeValue:
    PartialEq + Clone + Serialize + DeserializeOwned + Send + Sync + 'static
{
}
impl<V> BTreeValue for V where
    V: PartialEq + Clone + Serialize + DeserializeOwned + Send + Sync + 'static
{
}

/// The handle of a tree: where its root is and how large its parts grow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct BTree<K, V> {
    root: PRef<Node<K, V>>,
    bucket_capacity: u32,
    node_capacity: u32,
    /// The number of entries, in a conflict-free counter of its own: concurrent
    /// inserts into different buckets merge their increments instead of conflicting
    /// on one hot object.
    len: PRef<Counter>,
}

/// An inner node of a tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(serialize = "K: Serialize", deserialize = "K: DeserializeOwned"))]
pub struct Node<K, V> {
    /// 0: children are buckets; otherwise nodes one level lower.
    level: u32,
    separators: Vec<K>,
    children: Vec<PRef<()>>,
    #[serde(skip)]
    _values: std::marker::PhantomData<fn() -> V>,
}

/// A leaf of a tree: sorted entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(
    serialize = "K: Serialize, V: Serialize",
    deserialize = "K: DeserializeOwned, V: DeserializeOwned"
))]
pub struct Bucket<K, V> {
    entries: Vec<(K, V)>,
    high: Option<K>,
    capacity: u32,
}

impl<K: BTreeKey, V: BTreeValue> Persistent for BTree<K, V> {
    const TYPE_NAME: &'static str = "zodiac.BTree";
}

impl<K: BTreeKey, V: BTreeValue> Persistent for Node<K, V> {
    const TYPE_NAME: &'static str = "zodiac.BTreeNode";
}

impl<K: BTreeKey, V: BTreeValue> Persistent for Bucket<K, V> {
    const TYPE_NAME: &'static str = "zodiac.BTreeBucket";
    const MERGES: bool = true;

    fn resolve_conflict(old: &Self, committed: &Self, mine: &Self) -> Option<Self> {
        if committed.high != old.high || mine.high != old.high {
            return None; // a split moved keys to another bucket
        }
        let mut keys: Vec<&K> = old
            .entries
            .iter()
            .chain(&committed.entries)
            .chain(&mine.entries)
            .map(|(k, _)| k)
            .collect();
        keys.sort();
        keys.dedup();
        let mut entries = Vec::with_capacity(keys.len());
        for key in keys {
            let (o, c, m) = (old.get(key), committed.get(key), mine.get(key));
            let merged = if c == o {
                m
            } else if m == o {
                c
            } else {
                // Both changed this key, even the same way: two removals of one
                // key must conflict, or two takers of the same entry would both
                // succeed (as ZODB's buckets refuse too).
                return None;
            };
            if let Some(v) = merged {
                entries.push((key.clone(), v.clone()));
            }
        }
        if entries.len() > old.capacity as usize {
            return None; // needs a split: let the retry do it
        }
        Some(Bucket {
            entries,
            high: old.high.clone(),
            capacity: old.capacity,
        })
    }
}

impl<K: Ord, V> Bucket<K, V> {
    fn search<Q: Ord + ?Sized>(&self, key: &Q) -> std::result::Result<usize, usize>
    where
        K: Borrow<Q>,
    {
        self.entries.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }

    fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.search(key).ok().map(|i| &self.entries[i].1)
    }

    /// Entries in the bucket.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the bucket holds no entries (an emptied bucket is detached from its
    /// node, except the last one of the tree).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<K, V> Node<K, V> {
    fn child_index<Q: Ord + ?Sized>(&self, key: &Q) -> usize
    where
        K: Borrow<Q>,
    {
        self.separators.partition_point(|s| s.borrow() <= key)
    }
}

/// The nodes from the root down, each with the index of the child taken.
type Path<K, V> = Vec<(PRef<Node<K, V>>, usize)>;

/// Where a key belongs: the path to its bucket, and the bucket.
struct Found<K, V> {
    path: Path<K, V>,
    bucket: PRef<Bucket<K, V>>,
}

/// What a split hands to the parent: the first key of the new right sibling and the
/// sibling itself.
struct Split<K> {
    separator: K,
    right: PRef<()>,
}

impl<K: BTreeKey, V: BTreeValue> BTree<K, V> {
    /// Creates an empty tree with the default capacities.
    pub fn create(tx: &mut Transaction<'_>) -> Result<PRef<BTree<K, V>>> {
        Self::create_with(tx, BUCKET_ENTRIES_MAX, NODE_CHILDREN_MAX)
    }

    /// Creates an empty tree; buckets hold up to `bucket_capacity` entries (>= 2),
    /// nodes up to `node_capacity` children (>= 3).
    pub fn create_with(
        tx: &mut Transaction<'_>,
        bucket_capacity: u32,
        node_capacity: u32,
    ) -> Result<PRef<BTree<K, V>>> {
        assert!(
            bucket_capacity >= 2 && node_capacity >= 3,
            "capacities too small"
        );
        let bucket = tx.add(Bucket::<K, V> {
            entries: Vec::new(),
            high: None,
            capacity: bucket_capacity,
        })?;
        let root = tx.add(Node::<K, V> {
            level: 0,
            separators: Vec::new(),
            children: vec![bucket.cast()],
            _values: std::marker::PhantomData,
        })?;
        let len = tx.add(Counter::new(0))?;
        tx.add(BTree {
            root,
            bucket_capacity,
            node_capacity,
            len,
        })
    }

    /// The nodes from the root down to the bucket that holds `key`, each with the
    /// index of the child taken, and that bucket.
    fn descend<Q: Ord + ?Sized>(
        tx: &mut Transaction<'_>,
        tree: &PRef<BTree<K, V>>,
        key: &Q,
    ) -> Result<Found<K, V>>
    where
        K: Borrow<Q>,
    {
        let mut node_ref = tx.get(tree)?.root;
        let mut path = Vec::new();
        loop {
            let node = tx.get(&node_ref)?;
            let index = node.child_index(key);
            path.push((node_ref, index));
            let child = node.children[index];
            if node.level == 0 {
                return Ok(Found {
                    path,
                    bucket: child.cast(),
                });
            }
            node_ref = child.cast();
        }
    }

    /// The value for `key`.
    pub fn get<Q: Ord + ?Sized>(
        tx: &mut Transaction<'_>,
        tree: &PRef<BTree<K, V>>,
        key: &Q,
    ) -> Result<Option<V>>
    where
        K: Borrow<Q>,
    {
        let bucket = Self::descend(tx, tree, key)?.bucket;
        Ok(tx.get(&bucket)?.get(key).cloned())
    }

    /// Sets `key` to `value`; returns the value it replaced.
    pub fn insert(
        tx: &mut Transaction<'_>,
        tree: &PRef<BTree<K, V>>,
        key: K,
        value: V,
    ) -> Result<Option<V>> {
        let Found {
            path,
            bucket: bucket_ref,
        } = Self::descend(tx, tree, &key)?;
        if tx.get(&bucket_ref)?.get(&key) == Some(&value) {
            return Ok(Some(value)); // unchanged: write nothing
        }
        let (previous, split) = tx.modify(&bucket_ref, |b| {
            let previous = match b.search(&key) {
                Ok(i) => Some(std::mem::replace(&mut b.entries[i].1, value)),
                Err(i) => {
                    b.entries.insert(i, (key, value));
                    None
                }
            };
            if b.entries.len() <= b.capacity as usize {
                return (previous, None);
            }
            let right = b.entries.split_off(b.entries.len() / 2);
            let separator = right[0].0.clone();
            let high = b.high.replace(separator.clone());
            (previous, Some((separator, right, high)))
        })?;
        if previous.is_none() {
            let len = tx.get(tree)?.len;
            tx.modify(&len, |c| c.add(1))?;
        }
        let Some((separator, entries, high)) = split else {
            return Ok(previous);
        };
        let capacity = tx.get(tree)?.bucket_capacity;
        let right = tx.add(Bucket {
            entries,
            high,
            capacity,
        })?;
        Self::insert_up(
            tx,
            tree,
            path,
            Split {
                separator,
                right: right.cast(),
            },
        )?;
        Ok(previous)
    }

    /// Adds a split child to the nodes on `path`, bottom up, splitting full nodes and
    /// growing a new root when the old one splits.
    fn insert_up(
        tx: &mut Transaction<'_>,
        tree: &PRef<BTree<K, V>>,
        mut path: Path<K, V>,
        mut split: Split<K>,
    ) -> Result<()> {
        let node_capacity = tx.get(tree)?.node_capacity as usize;
        while let Some((node_ref, index)) = path.pop() {
            let up = tx.modify(&node_ref, |n| {
                n.separators.insert(index, split.separator.clone());
                n.children.insert(index + 1, split.right);
                if n.children.len() <= node_capacity {
                    return None;
                }
                let mid = n.children.len() / 2;
                let children = n.children.split_off(mid);
                let mut separators = n.separators.split_off(mid - 1);
                let up = separators.remove(0);
                Some((up, separators, children, n.level))
            })?;
            let Some((separator, separators, children, level)) = up else {
                return Ok(());
            };
            let right = tx.add(Node::<K, V> {
                level,
                separators,
                children,
                _values: std::marker::PhantomData,
            })?;
            split = Split {
                separator,
                right: right.cast(),
            };
            if path.is_empty() {
                let level = level + 1;
                let new_root = tx.add(Node::<K, V> {
                    level,
                    separators: vec![split.separator],
                    children: vec![node_ref.cast(), split.right],
                    _values: std::marker::PhantomData,
                })?;
                tx.modify(tree, |t| t.root = new_root)?;
                return Ok(());
            }
        }
        Ok(())
    }

    /// Removes `key`; returns its value.
    pub fn remove<Q: Ord + ?Sized>(
        tx: &mut Transaction<'_>,
        tree: &PRef<BTree<K, V>>,
        key: &Q,
    ) -> Result<Option<V>>
    where
        K: Borrow<Q>,
    {
        let Found { path, bucket } = Self::descend(tx, tree, key)?;
        if tx.get(&bucket)?.get(key).is_none() {
            return Ok(None);
        }
        let detach = Self::detach_point(tx, &path)?;
        let removed = tx.modify(&bucket, |b| match b.search(key) {
            Ok(i) => {
                let (k, v) = b.entries.remove(i);
                if b.entries.is_empty() && detach.is_some() {
                    // Any concurrent change to this bucket now conflicts (the
                    // removed key is below any `high` it had).
                    b.high = Some(k);
                }
                Some(v)
            }
            Err(_) => None,
        })?;
        if removed.is_some() {
            let len = tx.get(tree)?.len;
            tx.modify(&len, |c| c.add(-1))?;
        }
        if tx.get(&bucket)?.is_empty()
            && let Some(depth) = detach
        {
            Self::detach(tx, &path, depth)?;
        }
        Ok(removed)
    }

    /// The depth on `path` of the lowest node with more than one child: where the
    /// bucket at the end of `path` is cut off if it empties. `None` when every node
    /// on the path has one child (the bucket is the tree's last one).
    fn detach_point(tx: &mut Transaction<'_>, path: &Path<K, V>) -> Result<Option<usize>> {
        for depth in (0..path.len()).rev() {
            if tx.get(&path[depth].0)?.children.len() > 1 {
                return Ok(Some(depth));
            }
        }
        Ok(None)
    }

    /// Cuts the child taken at `path[depth]` (an emptied bucket, or a chain of
    /// nodes holding only it) out of that node; its key range joins a neighbour's.
    /// The nodes of the cut chain are written too, so a concurrent split inside it
    /// conflicts.
    fn detach(tx: &mut Transaction<'_>, path: &Path<K, V>, depth: usize) -> Result<()> {
        let (node_ref, index) = path[depth];
        tx.modify(&node_ref, |n| {
            n.children.remove(index);
            // Child i holds [s[i-1], s[i]): dropping s[i-1] gives its range to the
            // left neighbour; for the first child, dropping s[0] gives it to the
            // right one.
            n.separators.remove(index.saturating_sub(1));
        })?;
        for (below, _) in &path[depth + 1..] {
            tx.modify(below, |n| n.children.clear())?;
        }
        Ok(())
    }

    /// The number of entries, read from the tree's counter (no bucket is loaded).
    pub fn len(tx: &mut Transaction<'_>, tree: &PRef<BTree<K, V>>) -> Result<u64> {
        let len = tx.get(tree)?.len;
        Ok(tx.get(&len)?.value().max(0) as u64)
    }

    /// The object of the tree's entry counter: every insert of a new key and every
    /// removal writes it (and nothing else of the tree is written by all of them),
    /// so a commit naming it tells a watcher the tree's keys changed.
    pub fn len_oid(tx: &mut Transaction<'_>, tree: &PRef<BTree<K, V>>) -> Result<Oid> {
        Ok(tx.get(tree)?.len.oid())
    }

    /// Every entry, in key order (loads the whole tree).
    pub fn entries(tx: &mut Transaction<'_>, tree: &PRef<BTree<K, V>>) -> Result<Vec<(K, V)>> {
        Self::range(tx, tree, .., usize::MAX)
    }

    /// Up to `limit` entries with keys in `range`, in key order. Loads only the
    /// nodes and buckets whose key ranges meet `range`.
    pub fn range(
        tx: &mut Transaction<'_>,
        tree: &PRef<BTree<K, V>>,
        range: impl RangeBounds<K>,
        limit: usize,
    ) -> Result<Vec<(K, V)>> {
        let mut out = Vec::new();
        let root = tx.get(tree)?.root;
        Self::collect(tx, root, &range, limit, &mut out)?;
        Ok(out)
    }

    fn collect(
        tx: &mut Transaction<'_>,
        node_ref: PRef<Node<K, V>>,
        range: &impl RangeBounds<K>,
        limit: usize,
        out: &mut Vec<(K, V)>,
    ) -> Result<()> {
        let node = tx.get(&node_ref)?;
        for (i, child) in node.children.iter().enumerate() {
            if out.len() >= limit {
                break;
            }
            // Child i holds keys in [separators[i-1], separators[i]).
            let low = i.checked_sub(1).map(|j| &node.separators[j]);
            let high = node.separators.get(i);
            let below = high.is_some_and(|h| match range.start_bound() {
                Bound::Included(a) | Bound::Excluded(a) => h <= a,
                Bound::Unbounded => false,
            });
            let above = low.is_some_and(|l| match range.end_bound() {
                Bound::Included(b) => l > b,
                Bound::Excluded(b) => l >= b,
                Bound::Unbounded => false,
            });
            if below {
                continue;
            }
            if above {
                break;
            }
            if node.level == 0 {
                let bucket = tx.get(&child.cast::<Bucket<K, V>>())?;
                let wanted = bucket.entries.iter().filter(|(k, _)| range.contains(k));
                let room = limit - out.len();
                out.extend(wanted.take(room).cloned());
            } else {
                Self::collect(tx, child.cast(), range, limit, out)?;
            }
        }
        Ok(())
    }

    /// Levels of nodes above the buckets (1 for a tree whose root has buckets).
    pub fn depth(tx: &mut Transaction<'_>, tree: &PRef<BTree<K, V>>) -> Result<u32> {
        let root = tx.get(tree)?.root;
        Ok(tx.get(&root)?.level + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(keys: &[u64]) -> Bucket<u64, u64> {
        Bucket {
            entries: keys.iter().map(|&k| (k, k)).collect(),
            high: None,
            capacity: 8,
        }
    }

    fn keys(b: &Bucket<u64, u64>) -> Vec<u64> {
        b.entries.iter().map(|(k, _)| *k).collect()
    }

    #[test]
    fn changes_to_different_keys_merge() {
        let old = bucket(&[1, 2, 3]);
        let merged = Bucket::resolve_conflict(&old, &bucket(&[2, 3]), &bucket(&[1, 2, 3, 4]));
        assert_eq!(keys(&merged.unwrap()), [2, 3, 4]);
    }

    #[test]
    fn the_same_change_twice_conflicts() {
        let old = bucket(&[1, 2, 3]);
        // Two takers of key 1: exactly one may succeed.
        assert_eq!(
            Bucket::resolve_conflict(&old, &bucket(&[2, 3]), &bucket(&[2, 3])),
            None
        );
        // Two inserts of one key.
        assert_eq!(
            Bucket::resolve_conflict(&old, &bucket(&[1, 2, 3, 4]), &bucket(&[1, 2, 3, 4])),
            None
        );
    }
}
