//! A copy family: one initial area (the origin volume's thick extents,
//! "load point & offset") and a tree of nodes holding track maps, from
//! which every image of the family — the origin and all its copies,
//! copies of copies included — reads (seed 000/001 FIG. 17; SEED-SPECS
//! A.b, A.c).
//!
//! ```text
//!   A2 "new data to new space" (row)          A1 "old data to new space" (cow)
//!
//!     leaf(origin)   leaf(copy)                origin ──writes in place──> base
//!           \         /                          leaf(copy1)   leaf(copy2)
//!          frozen node (origin's data             |             |
//!           before the copy point)              view1 ──parent──> view2 ──> base
//!               |                              (old data preserved for copy1
//!             base (never written)              when the origin overwrote it)
//! ```
//!
//! A read of an image walks from its head up the tree; the first node whose
//! map holds the granule wins, and the initial area ("base") answers the
//! rest. Every write of an image goes to its own leaf (new data to new
//! space); under A1 the origin instead writes the base in place after
//! preserving the old granules once, in the newest view — so a write costs
//! the same whatever the number of copies (shared copy-on-write).
//!
//! Taking a copy is O(1): a leaf with data of its own is frozen (it becomes
//! the shared parent of two new leaves), or, under A1, a new view is put at
//! the head of the view chain. No data moves.
//!
//! Collapsing frozen nodes (`dead.rs`): an entry of a frozen node whose
//! granules every read through it finds first (in each of its children's
//! subtrees) can no longer be read and goes, with its space. A deletion
//! runs this over the node it took a reader from ([`State::prune`]);
//! before each commit it runs over the tracks the leaves wrote
//! ([`State::collapse_written`]), so an original that goes on rewriting
//! gives back the old versions no copy reads any more, while the copies
//! taken before and after live on. An emptied node with one child leaves
//! the tree.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::map::{Entry, PAGE_ENTRIES, Scheme, TrackMap, ZERO_SLOT};
use super::restore::MergeCopy;
use super::store::Store;
use crate::error::{Error, ErrorKind, Result};
pub use crate::meta::model::copy::{CopyMode, Head, NodeId, NodeKind};

/// Makes a new map of a scheme from the store (may fail for want of space).
pub type MakeMap<'a> = dyn FnMut(Scheme, &mut Store) -> Result<Box<dyn TrackMap>> + 'a;

/// Hashes node ids (pool object ids, not chosen by any client) with one
/// multiply: every host read and write looks its leaf up, and SipHash's
/// resistance to chosen keys buys nothing here.
pub type NodeIdHash = std::hash::BuildHasherDefault<IdHasher>;

/// See [`NodeIdHash`].
#[derive(Default)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A node of the copy tree.
pub struct Node {
    pub id: NodeId,
    pub parent: Option<NodeId>,
    pub kind: NodeKind,
    pub map: Box<dyn TrackMap>,
    /// A view that could not preserve (out of space): images reading
    /// through it fail.
    pub invalid: bool,
}

/// An image of the family: the origin volume or a copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub name: String,
    pub head: Head,
    /// The image it was copied from (None for the origin).
    pub source: Option<String>,
    pub scheme: Scheme,
    pub created: u64,
}

/// Where one run of granules is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Src {
    Base,
    Slot(u64),
    Zero,
}

/// A restore in progress (A1): the origin shows `from`'s image; tracks in
/// `pending` are still to be copied into the base.
pub struct Restore {
    pub from: NodeId,
    pub pending: BTreeSet<u64>,
    /// The copy restored from, and the job moving the data.
    pub copy: String,
    pub job: u64,
}

/// The state of a family, behind the family's lock.
pub struct State {
    /// How the family works now.
    pub mode: CopyMode,
    /// The mode its copies were made with (what `copy list` shows; a
    /// split changes `mode`, not this).
    pub asked: CopyMode,
    pub track: u64,
    pub tracks: u64,
    pub granule: u64,
    pub nodes: HashMap<NodeId, Node, NodeIdHash>,
    pub images: BTreeMap<String, Image>,
    /// The image holding the initial area.
    pub origin: String,
    /// A1: the view the origin preserves into.
    pub newest_view: Option<NodeId>,
    pub store: Store,
    /// Pages of node maps changed since the last commit.
    pub dirty: BTreeSet<(NodeId, u64)>,
    /// Nodes removed since the last commit (their pages are deleted).
    pub dropped: Vec<NodeId>,
    /// The family record changed since the last commit.
    pub record_dirty: bool,
    pub restore: Option<Restore>,
    /// The record as last saved (None: not saved since the family was
    /// loaded or made), so a commit stores it only when it changed.
    pub saved_rec: Option<super::record::FamilyRecord>,
    /// Free-space collection: the (frozen node, only child) pair whose
    /// child's entries are moving into the frozen node (`copy/collect.rs`).
    /// Set and cleared with the family's gates closed; every change of
    /// the tree clears it.
    pub merging: Option<(NodeId, NodeId)>,
    /// Free-space collection by active counts (`copy/pack.rs`): areas are
    /// being packed, so host writes take the track locks. Set and cleared
    /// with the family's gates closed.
    pub packing: bool,
    /// What the next commit writes of the store's labels (`describe.rs`).
    pub labels: super::describe::Pending,
}

/// Granule size of a track: 1/64 of it, at least 512 bytes.
pub fn granule_of(track: u64) -> u64 {
    (track / 64).max(512)
}

/// Mask of granules `g0..=g1`.
pub fn mask(g0: u64, g1: u64) -> u64 {
    let hi = if g1 >= 63 {
        u64::MAX
    } else {
        (1u64 << (g1 + 1)) - 1
    };
    let lo = if g0 >= 64 { 0 } else { (1u64 << g0) - 1 };
    hi & !lo
}

/// Runs of consecutive set bits of `m`: (first granule, count).
pub fn runs(m: u64) -> impl Iterator<Item = (u64, u64)> {
    let mut rest = m;
    std::iter::from_fn(move || {
        if rest == 0 {
            return None;
        }
        let start = u64::from(rest.trailing_zeros());
        let len = u64::from((rest >> start).trailing_ones());
        rest &= !mask(start, start + len - 1);
        Some((start, len))
    })
}

impl State {
    pub fn new(mode: CopyMode, origin: &str, track: u64, tracks: u64, store: Store) -> State {
        State {
            mode,
            asked: mode,
            track,
            tracks,
            granule: granule_of(track),
            nodes: HashMap::default(),
            images: BTreeMap::new(),
            origin: origin.to_string(),
            newest_view: None,
            store,
            dirty: BTreeSet::new(),
            dropped: Vec::new(),
            record_dirty: true,
            restore: None,
            saved_rec: None,
            merging: None,
            packing: false,
            labels: Default::default(),
        }
    }

    /// Every node the family has or had since its last commit: what a
    /// dissolving family deletes the pages of. Forgets the dropped ones.
    pub fn take_all_nodes(&mut self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        ids.extend(std::mem::take(&mut self.dropped));
        ids
    }

    /// Granules in a track.
    pub fn granules(&self) -> u64 {
        (self.track / self.granule).min(64)
    }

    /// Mask of every granule of a track.
    pub fn full(&self) -> u64 {
        mask(0, self.granules() - 1)
    }

    /// How many copy steps `name` is from the original: a copy of the
    /// original is 1, a copy of that copy 2, and so on (the original and an
    /// unknown name: 0). An image whose source has gone (deleted, or split
    /// away) counts from where its chain of sources ends.
    pub fn cascade_level(&self, name: &str) -> u64 {
        let mut level = 0;
        let mut at = self.images.get(name);
        while let Some(src) = at.and_then(|i| i.source.as_deref()) {
            level += 1;
            if level > self.images.len() as u64 {
                break;
            }
            at = self.images.get(src);
        }
        level
    }

    pub fn image(&self, name: &str) -> Result<&Image> {
        self.images
            .get(name)
            .ok_or_else(|| Error::not_found(format!("{name} is not an image of this copy family")))
    }

    pub(super) fn node(&self, id: NodeId) -> Result<&Node> {
        self.nodes
            .get(&id)
            .ok_or_else(|| Error::corrupt(format!("copy tree node {id} is missing")))
    }

    /// Marks the page of track `t` of node `id` for the next commit.
    /// Granules `valid` of track `t` were written into `slot` of node
    /// `id`: its entry there gains them (a new entry if it had none, or
    /// one at another slot) and the track's page is saved next.
    pub fn add_valid(&mut self, id: NodeId, t: u64, slot: u64, valid: u64) {
        if let Some(n) = self.nodes.get_mut(&id) {
            let old = (n.map.get(t))
                .filter(|e| e.slot == slot)
                .map_or(0, |e| e.valid);
            n.map.set(
                t,
                Entry {
                    slot,
                    valid: old | valid,
                },
            );
        }
        self.touch(id, t);
    }

    pub fn touch(&mut self, id: NodeId, t: u64) {
        self.dirty.insert((id, t / PAGE_ENTRIES));
        self.labels.touch(id, t);
    }

    /// The node where reading `head`'s image starts (a restore in progress
    /// redirects the origin's pending tracks).
    fn start(&self, head: Head, t: u64) -> Option<NodeId> {
        match head {
            Head::Leaf(id) => Some(id),
            Head::Base => match &self.restore {
                Some(r) if r.pending.contains(&t) => Some(r.from),
                _ => None,
            },
        }
    }

    /// Which source holds each of the `need` granules of track `t` of the
    /// image starting at `head`. Fails if the walk meets an invalid view.
    pub fn resolve(&self, head: Head, t: u64, need: u64, out: &mut Vec<(u64, Src)>) -> Result<()> {
        self.resolve_from(self.start(head, t), t, need, out)
    }

    /// As [`State::resolve`], from a given node (None: the base).
    pub fn resolve_from(
        &self,
        mut node: Option<NodeId>,
        t: u64,
        need: u64,
        out: &mut Vec<(u64, Src)>,
    ) -> Result<()> {
        let mut rest = need;
        while rest != 0 {
            let Some(id) = node else { break };
            let n = self.node(id)?;
            if n.invalid {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    "this copy is invalid: its new space ran out while its source was written (A1); delete it",
                ));
            }
            if let Some(e) = n.map.get(t) {
                let hit = rest & e.valid;
                if hit != 0 {
                    let src = if e.slot == ZERO_SLOT {
                        Src::Zero
                    } else {
                        Src::Slot(e.slot)
                    };
                    out.push((hit, src));
                    rest &= !hit;
                }
            }
            node = n.parent;
        }
        if rest != 0 {
            out.push((rest, Src::Base));
        }
        Ok(())
    }

    /// Nodes an image's reads may walk through, head first.
    pub fn chain(&self, head: Head) -> Vec<NodeId> {
        let mut out = Vec::new();
        let mut node = match head {
            Head::Leaf(id) => Some(id),
            Head::Base => None,
        };
        while let Some(id) = node {
            out.push(id);
            node = self.nodes.get(&id).and_then(|n| n.parent);
        }
        out
    }

    /// Nodes used by `name` alone (no other image's chain reaches them).
    pub fn own_nodes(&self, name: &str) -> Vec<NodeId> {
        let Ok(img) = self.image(name) else {
            return Vec::new();
        };
        let mine = self.chain(img.head);
        let others: BTreeSet<NodeId> = self
            .images
            .values()
            .filter(|i| i.name != name)
            .flat_map(|i| self.chain(i.head))
            .collect();
        mine.into_iter().filter(|n| !others.contains(n)).collect()
    }

    /// Children of a node (nodes whose parent it is).
    pub fn children(&self, id: NodeId) -> usize {
        self.nodes.values().filter(|n| n.parent == Some(id)).count()
    }

    fn is_head(&self, id: NodeId) -> bool {
        self.images.values().any(|i| i.head == Head::Leaf(id))
    }

    /// Whether an image's data is "mapped by pointers" (P-755): its chain
    /// holds data of its own, so it is no longer load point & offset.
    pub fn pointer_mapped(&self, name: &str) -> bool {
        self.image(name)
            .map(|i| {
                self.chain(i.head)
                    .iter()
                    .any(|id| self.nodes.get(id).is_some_and(|n| !n.map.is_empty()))
            })
            .unwrap_or(false)
    }

    /// Adds a node.
    pub fn add_node(
        &mut self,
        id: NodeId,
        parent: Option<NodeId>,
        kind: NodeKind,
        map: Box<dyn TrackMap>,
    ) {
        self.nodes.insert(
            id,
            Node {
                id,
                parent,
                kind,
                map,
                invalid: false,
            },
        );
        self.record_dirty = true;
    }

    /// Removes a node and frees its slots (after the next commit), but
    /// not an area another node also lists (handed over by a collection).
    pub fn remove_node(&mut self, id: NodeId) {
        if let Some(n) = self.nodes.remove(&id) {
            // Every other node's areas once (not once per area: a map of
            // a large source has hundreds of thousands).
            let listed: HashSet<u64> = (self.nodes.values())
                .flat_map(|m| m.map.areas().into_iter().map(|(a, _)| a))
                .collect();
            self.free_map_but(n.map.as_ref(), &listed);
            self.dropped.push(id);
            self.dirty.retain(|(d, _)| *d != id);
            self.record_dirty = true;
        }
    }

    fn free_map(&mut self, map: &dyn TrackMap) {
        self.free_map_but(map, &HashSet::new());
    }

    /// Frees a removed map's slots and areas, except the areas starting
    /// at a slot in `keep` (listed by another node).
    fn free_map_but(&mut self, map: &dyn TrackMap, keep: &HashSet<u64>) {
        let singles: Vec<u64> = map.singles().map(|(_, s)| s).collect();
        for s in singles {
            self.store.free_later(s);
        }
        for (a, n) in map.areas() {
            if !keep.contains(&a) {
                self.store.free_area_later(a, n);
            }
        }
    }

    /// Frees one entry's slot (replaced or dropped), unless the map keeps
    /// it reserved as part of an area.
    pub fn free_entry_slot(&mut self, id: NodeId, t: u64, e: Entry) {
        if e.slot == ZERO_SLOT {
            return;
        }
        if !self.in_area(id, t, e.slot) {
            self.store.free_later(e.slot);
        }
    }

    /// Takes a copy of image `src` named `copy` (instant: metadata only).
    /// `maps` makes new maps (it may fail for want of space; then nothing
    /// has changed); `ids` gives fresh node ids. A collection's pair stays
    /// merged if it still is a pair.
    pub fn create_copy(
        &mut self,
        src: &str,
        copy: &str,
        scheme: Scheme,
        created: u64,
        ids: &mut dyn FnMut() -> NodeId,
        maps: &mut MakeMap<'_>,
    ) -> Result<()> {
        if self.images.contains_key(copy) {
            return Err(Error::conflict(format!("{copy} already exists")));
        }
        let head = self.image(src)?.head;
        if let (Head::Base, Some(r)) = (head, &self.restore) {
            return Err(Error::conflict(format!(
                "{src} is being restored from {} (job {}): copy it when that job is done",
                r.copy, r.job
            )));
        }
        match head {
            Head::Base => {
                // A1 copy of the origin: share the newest view if nothing
                // was preserved into it since it was made, else start one.
                let view = match self.newest_view {
                    Some(v)
                        if self
                            .nodes
                            .get(&v)
                            .is_some_and(|n| n.map.is_empty() && !n.invalid) =>
                    {
                        v
                    }
                    old => {
                        let map = maps(scheme, &mut self.store)?;
                        let v = ids();
                        self.add_node(v, None, NodeKind::View, map);
                        if let Some(o) = old
                            && let Some(n) = self.nodes.get_mut(&o)
                        {
                            n.parent = Some(v);
                        }
                        self.newest_view = Some(v);
                        v
                    }
                };
                let map = maps(scheme, &mut self.store)?;
                let leaf = ids();
                self.add_node(leaf, Some(view), NodeKind::Leaf, map);
                self.add_image(copy, Head::Leaf(leaf), src, scheme, created);
            }
            Head::Leaf(l) => {
                let (empty, parent, src_scheme) = {
                    let n = self.node(l)?;
                    (n.map.is_empty(), n.parent, n.map.scheme())
                };
                if empty {
                    // Nothing of its own yet: the copy shares its parent.
                    let map = maps(scheme, &mut self.store)?;
                    let leaf = ids();
                    self.add_node(leaf, parent, NodeKind::Leaf, map);
                    self.add_image(copy, Head::Leaf(leaf), src, scheme, created);
                } else {
                    // Freeze the source's leaf: it becomes the shared
                    // parent of two new leaves.
                    let map_copy = maps(scheme, &mut self.store)?;
                    let map_src = match maps(src_scheme, &mut self.store) {
                        Ok(m) => m,
                        Err(e) => {
                            self.free_map(map_copy.as_ref());
                            return Err(e);
                        }
                    };
                    if let Some(n) = self.nodes.get_mut(&l) {
                        n.kind = NodeKind::Frozen;
                    }
                    let (ls, lc) = (ids(), ids());
                    self.add_node(ls, Some(l), NodeKind::Leaf, map_src);
                    self.add_node(lc, Some(l), NodeKind::Leaf, map_copy);
                    if let Some(img) = self.images.get_mut(src) {
                        img.head = Head::Leaf(ls);
                    }
                    self.add_image(copy, Head::Leaf(lc), src, scheme, created);
                }
            }
        }
        self.record_dirty = true;
        self.check_merging();
        Ok(())
    }

    fn add_image(&mut self, name: &str, head: Head, source: &str, scheme: Scheme, created: u64) {
        self.images.insert(
            name.to_string(),
            Image {
                name: name.to_string(),
                head,
                source: Some(source.to_string()),
                scheme,
                created,
            },
        );
    }

    /// Removes copy `name` and every node no other image needs. Views that
    /// lose their last copy but still serve older copies are merged into
    /// the next older view; the returned plan lists the granules whose data
    /// must be copied for that merge (load-point maps cannot adopt slots).
    /// A collection's pair stays merged if it still is a pair.
    pub fn delete_image(&mut self, name: &str) -> Result<Vec<MergeCopy>> {
        let img = self.image(name)?.clone();
        if name == self.origin {
            return Err(Error::conflict(format!(
                "{name} is the origin of its copies: delete them first, or split one off"
            )));
        }
        self.images.remove(name);
        self.record_dirty = true;
        let node = match img.head {
            Head::Leaf(l) => {
                let p = self.nodes.get(&l).and_then(|n| n.parent);
                self.remove_node(l);
                p
            }
            Head::Base => None,
        };
        let plan = self.prune(node);
        self.check_merging();
        plan
    }

    /// Removes `node` and its ancestors while no image needs them; a view
    /// left serving only an older view is merged into it (the plan lists
    /// the data copies that merge needs).
    pub fn prune(&mut self, mut node: Option<NodeId>) -> Result<Vec<MergeCopy>> {
        let mut plan = Vec::new();
        while let Some(id) = node {
            if self.is_head(id) || self.restore.as_ref().is_some_and(|r| r.from == id) {
                break;
            }
            let (kind, parent) = match self.nodes.get(&id) {
                Some(n) => (n.kind, n.parent),
                None => break,
            };
            let kids: Vec<NodeId> = self
                .nodes
                .values()
                .filter(|n| n.parent == Some(id))
                .map(|n| n.id)
                .collect();
            match (kind, kids.as_slice()) {
                (_, []) => {
                    if self.newest_view == Some(id) {
                        self.newest_view = None;
                    }
                    self.remove_node(id);
                    node = parent;
                }
                (NodeKind::View, [older])
                    if self
                        .nodes
                        .get(older)
                        .is_some_and(|n| n.kind == NodeKind::View) =>
                {
                    // Only an older view reads through it: merge into it.
                    plan.extend(self.merge_view(id, *older)?);
                    break;
                }
                (NodeKind::Frozen, _) => {
                    // A reader fewer: what the rest all cover is dead
                    // here, and maybe in the frozen nodes above (`dead.rs`).
                    self.drop_dead_from(id);
                    break;
                }
                _ => break,
            }
        }
        Ok(plan)
    }

    /// Detaches image `name`'s head so what it shows can no longer change:
    /// a leaf with data becomes a frozen node, an empty leaf is removed.
    /// Returns the node now showing the image (None: the base) and leaves
    /// the image headless (the caller gives it a new head).
    pub(super) fn detach_head(&mut self, name: &str) -> Result<Option<NodeId>> {
        let Head::Leaf(l) = self.image(name)?.head else {
            return Err(Error::invalid(format!("{name} reads the base directly")));
        };
        let (empty, parent) = {
            let n = self.node(l)?;
            (n.map.is_empty(), n.parent)
        };
        if empty {
            self.remove_node(l);
            Ok(parent)
        } else {
            if let Some(n) = self.nodes.get_mut(&l) {
                n.kind = NodeKind::Frozen;
            }
            self.record_dirty = true;
            Ok(Some(l))
        }
    }

    /// Gives image `name` a new empty leaf over `parent`.
    pub(super) fn new_leaf(
        &mut self,
        name: &str,
        parent: Option<NodeId>,
        scheme: Scheme,
        ids: &mut dyn FnMut() -> NodeId,
        maps: &mut MakeMap<'_>,
    ) -> Result<()> {
        let map = maps(scheme, &mut self.store)?;
        let leaf = ids();
        self.add_node(leaf, parent, NodeKind::Leaf, map);
        if let Some(img) = self.images.get_mut(name) {
            img.head = Head::Leaf(leaf);
        }
        Ok(())
    }

    /// Tracks that any node of the chain from `node` holds.
    pub(super) fn chain_tracks(&self, node: Option<NodeId>) -> BTreeSet<u64> {
        let mut out = BTreeSet::new();
        let mut at = node;
        while let Some(id) = at {
            let Some(n) = self.nodes.get(&id) else { break };
            out.extend(n.map.entries().map(|(t, _)| t));
            at = n.parent;
        }
        out
    }

    /// Lists of every node's children.
    pub(super) fn child_lists(&self) -> HashMap<NodeId, Vec<NodeId>> {
        let mut kids: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
        for n in self.nodes.values() {
            if let Some(p) = n.parent {
                kids.entry(p).or_default().push(n.id);
            }
        }
        kids
    }

    /// The only child of frozen node `id`, if it has exactly one and no
    /// restore is in progress (a restore's reads start inside the tree).
    pub(super) fn sole_child(
        &self,
        id: NodeId,
        kids: &HashMap<NodeId, Vec<NodeId>>,
    ) -> Option<NodeId> {
        if self.restore.is_some() || self.nodes.get(&id)?.kind != NodeKind::Frozen {
            return None;
        }
        match kids.get(&id)?.as_slice() {
            [c] => Some(*c),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_runs() {
        assert_eq!(mask(0, 63), u64::MAX);
        assert_eq!(mask(2, 4), 0b11100);
        assert_eq!(mask(63, 63), 1 << 63);
        let r: Vec<(u64, u64)> = runs(0b1110_0110).collect();
        assert_eq!(r, vec![(1, 2), (5, 3)]);
        assert_eq!(runs(u64::MAX).collect::<Vec<_>>(), vec![(0, 64)]);
        assert_eq!(granule_of(65536), 1024);
        assert_eq!(granule_of(4096), 512);
    }
}
