//! Dead entries of frozen nodes: seed 000 FIG. 13's active count at the
//! granularity the copy tree maps — an entry no image can read any more
//! is dropped and its slot freed (after the next commit and once no read
//! in flight holds it, `fence.rs`), at once, not at the next fold or
//! collection.
//!
//! A frozen node is read only through its children (it is no image's
//! head). A read through child k finds a granule of track t before
//! reaching the node if k's subtree *covers* it:
//!
//! ```text
//!   cover(k, t) = granules of k's entry for t
//!                 | ∩ cover(j, t) over k's children j   (k frozen, no head)
//!   entry (F, t) is dead  ⇔  its granules ⊆ ∩ cover(k, t) over F's children k
//! ```
//!
//! With one child this is the old "reader line" rule (the line's entries
//! OR-ed); with several, every branch must cover the granules (the
//! original and a copy both rewrote what their copy point froze). Views
//! (A1) are never dropped and count only their own entries; nothing is
//! dropped while a restore runs (its reads start inside the tree), and
//! nothing of the frozen node of a pair a collection merges (its entries
//! are being rewritten with its child's data) until the pair ends or is
//! given up (`State::clear_merging`).
//!
//! It runs over the tracks the leaves wrote before every commit
//! ([`State::collapse_written`]: walking up from the leaf while the
//! covers say something may be dead), and over a whole node and its
//! ancestors when a deletion takes one of its readers away
//! (`State::drop_dead_from`). A frozen node emptied with one child
//! leaves the tree (its child takes its parent); one with several stays
//! as an empty branch point (it holds no space). A leaf's cover only
//! grows, so what was dead stays dead.

#![forbid(unsafe_code)]

use std::collections::{BTreeSet, HashMap, HashSet};

use super::family::{NodeId, NodeKind, State};
use super::map::{PAGE_ENTRIES, ZERO_SLOT};
use crate::meta::model::copy::Head;

type Kids = HashMap<NodeId, Vec<NodeId>>;

/// The tree as the covers need it, taken once per sweep.
struct Tree {
    kids: Kids,
    heads: HashSet<NodeId>,
}

impl State {
    fn tree(&self) -> Tree {
        let heads = (self.images.values())
            .filter_map(|i| match i.head {
                Head::Leaf(id) => Some(id),
                Head::Base => None,
            })
            .collect();
        Tree {
            kids: self.child_lists(),
            heads,
        }
    }

    /// Granules of `t` every read entering node `id` finds at it or below.
    fn cover(&self, id: NodeId, t: u64, tree: &Tree) -> u64 {
        let Some(n) = self.nodes.get(&id) else {
            return 0;
        };
        let own = n.map.get(t).map_or(0, |e| e.valid);
        if n.kind != NodeKind::Frozen || tree.heads.contains(&id) {
            return own;
        }
        own | self.children_cover(id, t, tree, None)
    }

    /// Granules of `t` every read through frozen node `id` finds before
    /// it: its children's covers, intersected (`known`: one child's cover,
    /// already computed).
    fn children_cover(&self, id: NodeId, t: u64, tree: &Tree, known: Option<(NodeId, u64)>) -> u64 {
        let mut c = known.map_or(u64::MAX, |k| k.1);
        for &k in tree.kids.get(&id).map(Vec::as_slice).unwrap_or(&[]) {
            if c == 0 {
                break;
            }
            if known.is_none_or(|(j, _)| j != k) {
                c &= self.cover(k, t, tree);
            }
        }
        c
    }

    /// Whether `id` is read only through its children: a frozen node that
    /// is no image's head.
    fn read_through(&self, id: NodeId, tree: &Tree) -> bool {
        self.nodes
            .get(&id)
            .is_some_and(|n| n.kind == NodeKind::Frozen)
            && !tree.heads.contains(&id)
            && tree.kids.get(&id).is_some_and(|k| !k.is_empty())
    }

    /// Whether entries of `id` may be dropped when no read reaches them:
    /// not the frozen node of a pair being collected (its entries are
    /// being rewritten with its child's data).
    fn may_drop(&self, id: NodeId, tree: &Tree) -> bool {
        self.read_through(id, tree) && self.merging.is_none_or(|(f, _)| f != id)
    }

    /// Stops merging the pair being collected (if any, given up or ended)
    /// and drops what it held back: in its frozen node and above it, or,
    /// once the node took its child's place, above it.
    pub(super) fn clear_merging(&mut self) {
        let Some((f, _)) = self.merging.take() else {
            return;
        };
        let from = match self.nodes.get(&f) {
            Some(n) if n.kind == NodeKind::Frozen => Some(f),
            n => n.and_then(|n| n.parent),
        };
        if let Some(x) = from {
            self.drop_dead_from(x);
        }
    }

    /// Walks up from node `x`, whose subtree covers `below` of track `t`,
    /// dropping every ancestor's entry of `t` its children all cover;
    /// emptied nodes go into `emptied`.
    fn drop_dead_above(
        &mut self,
        mut x: NodeId,
        t: u64,
        mut below: u64,
        tree: &Tree,
        emptied: &mut BTreeSet<NodeId>,
    ) {
        while below != 0 {
            let Some(p) = self.nodes.get(&x).and_then(|n| n.parent) else {
                return;
            };
            if !self.read_through(p, tree) {
                return;
            }
            let c = self.children_cover(p, t, tree, Some((x, below)));
            below = c | if self.may_drop(p, tree) {
                self.drop_or_keep(p, t, c, emptied)
            } else {
                let e = self.nodes.get(&p).and_then(|n| n.map.get(t));
                e.map_or(0, |e| e.valid)
            };
            x = p;
        }
    }

    /// Drops frozen node `id`'s entry of `t` if `cover` holds all of it;
    /// else returns its granules (what it adds to its subtree's cover).
    fn drop_or_keep(
        &mut self,
        id: NodeId,
        t: u64,
        cover: u64,
        emptied: &mut BTreeSet<NodeId>,
    ) -> u64 {
        let Some(e) = self.nodes.get(&id).and_then(|n| n.map.get(t)) else {
            return 0;
        };
        if !self.drop_covered(id, t, cover) {
            return e.valid;
        }
        if self.nodes.get(&id).is_some_and(|n| n.map.is_empty()) {
            emptied.insert(id);
        }
        0
    }

    /// A deletion took a reader of frozen node `id` away: drops the
    /// entries of `id` and of its frozen ancestors no read reaches now.
    pub(super) fn drop_dead_from(&mut self, id: NodeId) {
        if self.restore.is_some() {
            return;
        }
        let tree = self.tree();
        if !self.may_drop(id, &tree) {
            return;
        }
        let mut tracks = BTreeSet::new();
        let mut at = Some(id);
        while let Some(a) = at.filter(|&a| a == id || self.may_drop(a, &tree)) {
            let Some(n) = self.nodes.get(&a) else { break };
            tracks.extend(n.map.entries().map(|(t, _)| t));
            at = n.parent;
        }
        let mut emptied = BTreeSet::new();
        for t in tracks {
            let c = self.children_cover(id, t, &tree, None);
            let below = c | self.drop_or_keep(id, t, c, &mut emptied);
            self.drop_dead_above(id, t, below, &tree, &mut emptied);
        }
        self.splice_emptied(emptied);
    }

    /// After a restart: a pair a collection was merging (that is not
    /// saved; the job begins it again) may have left entries of its
    /// frozen node that its child covers; drops them.
    pub(super) fn drop_dead_of_pairs(&mut self) {
        let kids = self.child_lists();
        let pairs: Vec<NodeId> = (self.nodes.keys().copied())
            .filter(|&id| self.sole_child(id, &kids).is_some())
            .collect();
        for f in pairs {
            self.drop_dead_from(f);
        }
    }

    /// Drops every dead entry of the tree: a restore ended, and the writes
    /// made while it ran were not looked at.
    pub(super) fn drop_all_dead(&mut self) {
        if self.restore.is_some() {
            return;
        }
        let tree = self.tree();
        let ids: Vec<NodeId> = (self.nodes.keys().copied())
            .filter(|&id| self.may_drop(id, &tree))
            .collect();
        let mut emptied = BTreeSet::new();
        for id in ids {
            let tracks: Vec<u64> = (self.nodes.get(&id).into_iter())
                .flat_map(|n| n.map.entries().map(|(t, _)| t))
                .collect();
            for t in tracks {
                // A dead entry adds nothing to its node's cover: the order
                // of the nodes does not matter.
                let c = self.children_cover(id, t, &tree, None);
                self.drop_or_keep(id, t, c, &mut emptied);
            }
        }
        self.splice_emptied(emptied);
    }

    /// Before a commit: the tracks newly written in leaves (their dirty
    /// pages) may have made entries of the frozen nodes above them dead;
    /// drops those, in the same save as the entries that cover them, so
    /// a source that keeps rewriting what an old copy point froze gives
    /// the space back while it runs.
    pub fn collapse_written(&mut self) {
        if self.restore.is_some() || self.dirty.is_empty() {
            return;
        }
        if !self.nodes.values().any(|n| n.kind == NodeKind::Frozen) {
            return;
        }
        let tree = self.tree();
        // Host writes go to leaves, and while a pair is collected, to its
        // frozen node in place.
        let merged = self.merging.map(|(f, _)| f);
        let pages: Vec<(NodeId, u64)> = (self.dirty.iter().copied())
            .filter(|&(id, _)| {
                let n = self.nodes.get(&id);
                let written = n.is_some_and(|n| n.kind == NodeKind::Leaf) || merged == Some(id);
                written && n.is_some_and(|n| n.parent.is_some())
            })
            .collect();
        let mut emptied = BTreeSet::new();
        let mut chains: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
        for (node, page) in pages {
            let chain = chains
                .entry(node)
                .or_insert_with(|| self.read_through_above(node, &tree))
                .clone();
            let t0 = page * PAGE_ENTRIES;
            for t in t0..(t0 + PAGE_ENTRIES).min(self.tracks) {
                // Cheap first: most written tracks have nothing above them
                // to drop (a page holds hundreds of tracks, one written).
                if !self.held_above(node, t, &chain) {
                    continue;
                }
                let below = self.cover(node, t, &tree);
                self.drop_dead_above(node, t, below, &tree, &mut emptied);
            }
        }
        self.splice_emptied(emptied);
    }

    /// The ancestors of `id` a walk up from it may reach: each read only
    /// through its children, up to the first that is not.
    fn read_through_above(&self, id: NodeId, tree: &Tree) -> Vec<NodeId> {
        let mut chain = Vec::new();
        let mut at = self.nodes.get(&id).and_then(|n| n.parent);
        while let Some(p) = at.filter(|&p| self.read_through(p, tree)) {
            chain.push(p);
            at = self.nodes.get(&p).and_then(|n| n.parent);
        }
        chain
    }

    /// Whether some node of `chain` (the read-through ancestors of `id`)
    /// maps track `t`, and `id` does too if it is a leaf (its cover is its
    /// own entry): only then can a walk up from `id` find a dead entry.
    fn held_above(&self, id: NodeId, t: u64, chain: &[NodeId]) -> bool {
        let has = |x: &NodeId| (self.nodes.get(x)).is_some_and(|n| n.map.get(t).is_some());
        let leaf = (self.nodes.get(&id)).is_some_and(|n| n.kind == NodeKind::Leaf);
        (!leaf || has(&id)) && chain.iter().any(has)
    }

    /// Entries of frozen nodes no read reaches (node, track): none once
    /// the sweeps ran, unless a restore or a collection holds them back.
    pub fn dead_entries(&self) -> Vec<(NodeId, u64)> {
        let tree = self.tree();
        let mut dead = Vec::new();
        for (&id, n) in &self.nodes {
            if !self.may_drop(id, &tree) {
                continue;
            }
            for (t, e) in n.map.entries() {
                if e.valid & !self.children_cover(id, t, &tree, None) == 0 {
                    dead.push((id, t));
                }
            }
        }
        dead.sort_unstable();
        dead
    }

    /// Drops the entry of frozen node `id` for track `t` if `cover` (the
    /// granules every read through it finds first) includes all of it: no
    /// read can reach it. Its slot (or its partial area, once the area's
    /// last entry went) is freed after the next commit.
    pub(super) fn drop_covered(&mut self, id: NodeId, t: u64, cover: u64) -> bool {
        let Some(n) = self.nodes.get_mut(&id) else {
            return false;
        };
        let Some(e) = n.map.get(t) else { return false };
        if e.valid & !cover != 0 {
            return false;
        }
        // A slot outside the node's areas (a pointer scheme's, or a packed
        // extent's single slot) goes now; a position, with its area.
        let single = e.slot != ZERO_SLOT && !self.in_area(id, t, e.slot);
        let Some(n) = self.nodes.get_mut(&id) else {
            return false;
        };
        n.map.remove(t);
        if single {
            self.store.free_later(e.slot);
        }
        if n.map.scheme().load_point()
            && let Some((a, c)) = n.map.shed(t)
        {
            // Not an area a collection handed to another node.
            if !self.area_listed_elsewhere(id, t, a) {
                self.store.free_area_later(a, c);
            }
            self.record_dirty = true;
        }
        self.touch(id, t);
        true
    }

    /// Takes each emptied frozen node with one child out of the tree (the
    /// child takes its parent), each against the tree as it is then.
    fn splice_emptied(&mut self, emptied: BTreeSet<NodeId>) {
        for p in emptied {
            let kids = self.child_lists();
            let empty = self.nodes.get(&p).is_some_and(|n| n.map.is_empty());
            if let (true, Some(child)) = (empty, self.sole_child(p, &kids)) {
                let parent = self.nodes.get(&p).and_then(|n| n.parent);
                if let Some(c) = self.nodes.get_mut(&child) {
                    c.parent = parent;
                }
                self.remove_node(p);
            }
        }
    }
}
