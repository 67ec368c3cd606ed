//! A sorted map from `u64` keys to small `Copy` values, held as sorted
//! chunks in groups: the store of the changed-pointer scheme (FIG. 17
//! "pointers for changed blocks only") and of the other maps' side tables.
//!
//! ```text
//!   group_firsts: [ 3          | 70000        ]   first key of each group
//!   groups:       [ firsts: [3 | 900 | 4100]  ] [ firsts: [70000 | ..] ]
//!                 [ chunks: [(3,v) (7,v) ..] [(900,v) ..] [(4100,v) ..] ]
//! ```
//!
//! A lookup is three binary searches (groups, chunks of the group, the
//! chunk). An insert shifts at most one chunk; a chunk that reaches
//! `CHUNK` entries splits in two inside its group, and a group that
//! reaches `GROUP` chunks splits in two, so no insert moves more than a
//! chunk, a group's index and the (short) list of groups. A chunk filled
//! by appending (ascending keys) keeps all but its last entry, so
//! ascending runs leave full chunks behind rather than half-full ones.
//! Removes drop chunks and groups once empty; they never merge them.
//! First keys are kept exact, though a lookup only needs each to separate
//! its chunk (group) from the one before.
//!
//! Unlike `BTreeMap`, every heap block is a `Vec` whose capacity can be
//! counted, so [`SparseTable::memory_bytes`] is exact (allocator overhead
//! aside), and no chunk's capacity exceeds `CHUNK`.

#![forbid(unsafe_code)]

use super::cap_bytes;

/// A chunk: sorted (key, value) pairs.
type Chunk<V> = Vec<(u64, V)>;

/// Up to `GROUP` chunks and their first keys.
#[derive(Debug, Clone)]
struct Group<V> {
    firsts: Vec<u64>,
    chunks: Vec<Chunk<V>>,
}

/// The chunked sorted map; `CHUNK` entries per chunk and `GROUP` chunks
/// per group at most.
#[derive(Debug, Clone)]
pub struct SparseTable<V, const CHUNK: usize = 128, const GROUP: usize = 64> {
    firsts: Vec<u64>,
    groups: Vec<Group<V>>,
    len: usize,
}

/// Where a key is or would go: (group, chunk in the group).
type Spot = (usize, usize);

/// The last of `firsts` at or before `k`, else the first.
fn last_at_or_before(firsts: &[u64], k: u64) -> usize {
    firsts.partition_point(|&f| f <= k).saturating_sub(1)
}

impl<V: Copy, const CHUNK: usize, const GROUP: usize> Default for SparseTable<V, CHUNK, GROUP> {
    fn default() -> Self {
        SparseTable {
            firsts: Vec::new(),
            groups: Vec::new(),
            len: 0,
        }
    }
}

impl<V: Copy, const CHUNK: usize, const GROUP: usize> SparseTable<V, CHUNK, GROUP> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn spot(&self, k: u64) -> Spot {
        let g = last_at_or_before(&self.firsts, k);
        let c = self
            .groups
            .get(g)
            .map_or(0, |gr| last_at_or_before(&gr.firsts, k));
        (g, c)
    }

    fn chunk(&self, (g, c): Spot) -> Option<&Chunk<V>> {
        self.groups.get(g)?.chunks.get(c)
    }

    fn chunk_mut(&mut self, (g, c): Spot) -> Option<&mut Chunk<V>> {
        self.groups.get_mut(g)?.chunks.get_mut(c)
    }

    pub fn get(&self, k: u64) -> Option<&V> {
        let c = self.chunk(self.spot(k))?;
        let i = c.binary_search_by_key(&k, |e| e.0).ok()?;
        c.get(i).map(|e| &e.1)
    }

    pub fn get_mut(&mut self, k: u64) -> Option<&mut V> {
        let c = self.chunk_mut(self.spot(k))?;
        let i = c.binary_search_by_key(&k, |e| e.0).ok()?;
        c.get_mut(i).map(|e| &mut e.1)
    }

    /// Inserts or replaces; the old value.
    pub fn insert(&mut self, k: u64, v: V) -> Option<V> {
        let spot = self.spot(k);
        let Some(c) = self.chunk_mut(spot) else {
            self.firsts.push(k);
            self.groups.push(Group {
                firsts: vec![k],
                chunks: vec![vec![(k, v)]],
            });
            self.len += 1;
            return None;
        };
        match c.binary_search_by_key(&k, |e| e.0) {
            Ok(i) => c.get_mut(i).map(|e| std::mem::replace(&mut e.1, v)),
            Err(i) => {
                c.insert(i, (k, v));
                let appended = i + 1 == c.len();
                self.len += 1;
                self.settle(spot, appended);
                None
            }
        }
    }

    pub fn remove(&mut self, k: u64) -> Option<V> {
        let spot = self.spot(k);
        let c = self.chunk_mut(spot)?;
        let i = c.binary_search_by_key(&k, |e| e.0).ok()?;
        let (_, v) = c.remove(i);
        self.len -= 1;
        self.settle(spot, false);
        Some(v)
    }

    /// After the chunk at `spot` changed: splits or drops it and its
    /// group as need be, and refreshes the first keys.
    fn settle(&mut self, (g, c): Spot, appended: bool) {
        let Some(group) = self.groups.get_mut(g) else {
            return;
        };
        group.settle_chunk::<CHUNK>(c, appended);
        if group.chunks.len() >= GROUP.max(2) {
            let tail = group.split_off(group.chunks.len() / 2);
            let tail_first = tail.firsts.first().copied();
            self.groups.insert(g + 1, tail);
            self.firsts.insert(g + 1, tail_first.unwrap_or_default());
        }
        self.refresh_group(g);
    }

    /// Drops group `g` if empty, else refreshes its first key.
    fn refresh_group(&mut self, g: usize) {
        match self.groups.get(g).map(|gr| gr.firsts.first().copied()) {
            None => {}
            Some(None) => {
                self.groups.remove(g);
                self.firsts.remove(g);
            }
            Some(Some(k)) => {
                if let Some(f) = self.firsts.get_mut(g) {
                    *f = k;
                }
            }
        }
    }

    /// Every entry, ascending by key.
    pub fn iter(&self) -> impl Iterator<Item = (u64, V)> + '_ {
        self.iter_ref().copied()
    }

    /// Every entry by reference, ascending by key.
    pub fn iter_ref(&self) -> impl Iterator<Item = &(u64, V)> + '_ {
        self.groups.iter().flat_map(|g| g.chunks.iter().flatten())
    }

    /// Heap bytes: the capacities of every index, list and chunk.
    pub fn memory_bytes(&self) -> usize {
        let groups: usize = self.groups.iter().map(Group::memory_bytes).sum();
        cap_bytes(&self.firsts) + cap_bytes(&self.groups) + groups
    }
}

impl<V: Copy> Group<V> {
    /// After chunk `c` changed: refreshes its first key, splits it when it
    /// holds `chunk` entries, drops it when empty.
    fn settle_chunk<const CHUNK: usize>(&mut self, c: usize, appended: bool) {
        let Some(chunk) = self.chunks.get_mut(c) else {
            return;
        };
        let Some(&(k, _)) = chunk.first() else {
            self.chunks.remove(c);
            self.firsts.remove(c);
            return;
        };
        if let Some(f) = self.firsts.get_mut(c) {
            *f = k;
        }
        if chunk.len() >= CHUNK.max(2) {
            let at = if appended {
                chunk.len() - 1
            } else {
                chunk.len() / 2
            };
            let tail = chunk.split_off(at);
            let tail_first = tail.first().map_or(k, |e| e.0);
            self.chunks.insert(c + 1, tail);
            self.firsts.insert(c + 1, tail_first);
        }
    }

    /// The chunks from `at` on, as a new group.
    fn split_off(&mut self, at: usize) -> Group<V> {
        Group {
            firsts: self.firsts.split_off(at),
            chunks: self.chunks.split_off(at),
        }
    }

    fn memory_bytes(&self) -> usize {
        let chunks: usize = self.chunks.iter().map(cap_bytes).sum();
        cap_bytes(&self.firsts) + cap_bytes(&self.chunks) + chunks
    }
}
