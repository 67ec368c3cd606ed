//! Free-space collection of a copy family (seed 000 FIG. 13, "free space
//! collection"; issue 18): a frozen node with one child holds what only
//! that child's readers can reach, so the two can become one node. The
//! child's entries move into the frozen node track by track, and then the
//! frozen node takes the child's place: one area per extent instead of one
//! per copy generation, and the child's areas go back to the store.
//!
//! ```text
//!   before               during (child C's entries move into F)    after
//!   P <- F <- C(leaf)    P <- F <- C    host writes to C's image    P <- F(leaf, C's image)
//!                                       go to F once C's entry      C's areas freed
//!                                       for the track moved
//! ```
//!
//! Why moving C into F is sound: F has one child, so every read that
//! reaches F has passed C first; F's granules that C holds are dead, and
//! may be overwritten with C's data before the commit that records the
//! move (a crash before it reads them from C still). Data moves for the
//! young side only (C: what was written since the last copy point), and
//! a host write to a track whose entry moved goes straight to F, so C
//! gains nothing while the pass runs.
//!
//! Rules: `State::merging` is set and cleared with the family's gates
//! closed (no host write in flight); while it is set, host writes of the
//! child take the family's track locks (`Family::write_leaf`) and the job
//! takes the same lock per track, so a track never moves while it is
//! written. Every change of the tree clears `merging` (the job starts the
//! pair again if it is still one), and no collapse runs while it is set.

#![forbid(unsafe_code)]

use std::sync::Arc;

use futures::StreamExt;

use super::family::{NodeId, Src, State, runs};
use super::image::{Family, us};
use super::map::{Entry, PARTIAL_AREA_TRACKS, ZERO_SLOT};
use crate::buf::IoBuf;
use crate::error::{Error, Result};
use crate::meta::model::CopyMode;
use crate::meta::model::copy::Head;

/// The data one track's merge must move: `pieces` (granule mask, source)
/// into slot `dst` of the frozen node.
#[derive(Debug, Clone)]
pub struct TrackMove {
    pub dst: u64,
    /// `dst` was placed for this move (not the frozen node's entry slot).
    pub fresh: bool,
    pub pieces: Vec<(u64, Src)>,
    /// The entries the move was planned from (checked again before it is
    /// applied).
    pub child: Entry,
    pub frozen: Option<Entry>,
}

impl State {
    /// The next pair to merge: a frozen node of a row family with exactly
    /// one child, the topmost of its line (its parent is not such a node
    /// with it as only child), lowest id first. None during a restore.
    pub fn merge_pair(&self) -> Option<(NodeId, NodeId)> {
        if self.mode != CopyMode::Row {
            return None;
        }
        let kids = self.child_lists();
        let sole = |id: NodeId| self.sole_child(id, &kids);
        self.nodes
            .keys()
            .filter_map(|&f| sole(f).map(|c| (f, c)))
            .filter(|&(f, _)| {
                let parent = self.nodes.get(&f).and_then(|n| n.parent);
                parent.and_then(sole) != Some(f)
            })
            .min()
    }

    /// Clears `merging` if its pair is no longer a frozen node with that
    /// child as its only child (after a change of the tree; called with
    /// the gates closed).
    pub fn check_merging(&mut self) {
        let Some((f, c)) = self.merging else { return };
        let ok = self.mode == CopyMode::Row && self.sole_child(f, &self.child_lists()) == Some(c);
        if !ok {
            self.clear_merging();
        }
    }

    /// How many pairs a collection has ahead of it (each a pass).
    pub fn merge_pairs(&self) -> u64 {
        if self.mode != CopyMode::Row {
            return 0;
        }
        let kids = self.child_lists();
        (self.nodes.keys())
            .filter(|&&f| self.sole_child(f, &kids).is_some())
            .count() as u64
    }

    /// Plans merging child `c`'s entry of track `t` into frozen node `f`.
    /// A move that needs no data (the frozen node can take the child's
    /// slot as it is, or with `extent` — the caller holds the locks of
    /// every track of `t`'s 64-track extent — the child's whole partial
    /// area) is done here; otherwise the data to move is returned, for
    /// [`State::apply_move`] after it moved.
    pub fn plan_move(
        &mut self,
        f: NodeId,
        c: NodeId,
        t: u64,
        extent: bool,
    ) -> Result<Option<TrackMove>> {
        let Some(ec) = self.nodes.get(&c).and_then(|n| n.map.get(t)) else {
            return Ok(None);
        };
        if extent && self.pass_area(f, c, t, ec) {
            return Ok(None);
        }
        let ef = self.nodes.get(&f).and_then(|n| n.map.get(t));
        let f_left = ef.map_or(0, |e| e.valid & !ec.valid);
        // A slot in an area only the child holds would go with the area.
        let c_only = self.in_area(c, t, ec.slot) && !self.in_area(f, t, ec.slot);
        let takes = !c_only
            && self
                .nodes
                .get(&f)
                .is_some_and(|n| n.map.accepts(t, ec.slot));
        if f_left == 0 && takes {
            // The frozen node's entry becomes the child's, slot and all.
            if let Some(n) = self.nodes.get_mut(&f) {
                n.map.set(t, ec);
            }
            if let Some(e) = ef.filter(|e| e.slot != ec.slot) {
                self.free_entry_slot(f, t, e);
            }
            self.drop_child_entry(c, t, None);
            self.touch(f, t);
            return Ok(None);
        }
        let (dst, fresh) = match ef {
            Some(e) if e.slot != ZERO_SLOT => (e.slot, false),
            _ => {
                let State { nodes, store, .. } = self;
                let n = nodes
                    .get_mut(&f)
                    .ok_or_else(|| Error::corrupt("collection: the frozen node vanished"))?;
                (n.map.place(t, store)?, true)
            }
        };
        let src = if ec.slot == ZERO_SLOT {
            Src::Zero
        } else {
            Src::Slot(ec.slot)
        };
        let mut pieces = vec![(ec.valid, src)];
        if let Some(e) = ef.filter(|e| e.slot == ZERO_SLOT && f_left != 0) {
            // A zeroed entry of the frozen node gets a slot: its granules
            // the child does not cover are written as zeroes.
            pieces.push((e.valid & !ec.valid, Src::Zero));
        }
        Ok(Some(TrackMove {
            dst,
            fresh,
            pieces,
            child: ec,
            frozen: ef,
        }))
    }

    /// `pass_area` for the child's entry of track `t`, alone:
    /// whether the area passed (the caller holds the extent's locks).
    pub fn pass_whole_area(&mut self, f: NodeId, c: NodeId, t: u64) -> bool {
        let Some(ec) = self.nodes.get(&c).and_then(|n| n.map.get(t)) else {
            return false;
        };
        self.pass_area(f, c, t, ec)
    }

    /// Hands the child's partial area holding track `t`'s slot to the
    /// frozen node with every entry of the child in that extent, if the
    /// frozen node has no area there and none of its entries there needs
    /// a granule the child's entry does not cover: no data moves, and the
    /// area is listed by one node before and after. Whether it did.
    fn pass_area(&mut self, f: NodeId, c: NodeId, t: u64, ec: Entry) -> bool {
        let Some((first, n)) = self.area_holding(c, t, ec.slot) else {
            return false;
        };
        let Some(e0) = t.checked_sub(ec.slot - first) else {
            return false;
        };
        let (Some(cn), Some(fnode)) = (self.nodes.get(&c), self.nodes.get(&f)) else {
            return false;
        };
        if cn.map.scheme() != crate::copy::map::Scheme::PartialBitmap
            || fnode.map.scheme() != crate::copy::map::Scheme::PartialBitmap
            || e0 % crate::copy::map::PARTIAL_AREA_TRACKS != 0
        {
            return false;
        }
        let mut moving = Vec::new();
        for u in e0..e0 + n {
            let ef = fnode.map.get(u);
            let Some(e) = cn.map.get(u) else {
                if ef.is_some_and(|e| e.slot != ZERO_SLOT) {
                    return false;
                }
                continue;
            };
            let own = e.slot == ZERO_SLOT || e.slot == first + (u - e0);
            let covered = ef.is_none_or(|x| x.slot == ZERO_SLOT && x.valid & !e.valid == 0);
            if !own || !covered {
                return false;
            }
            moving.push((u, e));
        }
        let taken = self
            .nodes
            .get_mut(&f)
            .is_some_and(|x| x.map.take_area(t, (first, n)));
        if !taken {
            return false;
        }
        for (u, e) in moving {
            if let Some(x) = self.nodes.get_mut(&f) {
                x.map.set(u, e);
            }
            // The child gives the area up with its last entry; the frozen
            // node lists it, so it is not freed.
            self.drop_child_entry(c, u, None);
            self.touch(f, u);
        }
        self.record_dirty = true;
        true
    }

    /// Records a track move whose data is in place: the frozen node's
    /// entry covers the child's granules, the child's entry goes. If
    /// either entry changed meanwhile, nothing is recorded (the track is
    /// merged again later) and a freshly placed slot goes back.
    pub fn apply_move(&mut self, f: NodeId, c: NodeId, t: u64, m: &TrackMove) -> bool {
        let now_c = self.nodes.get(&c).and_then(|n| n.map.get(t));
        let now_f = self.nodes.get(&f).and_then(|n| n.map.get(t));
        if now_c != Some(m.child) || now_f != m.frozen {
            if m.fresh {
                self.free_entry_slot(
                    f,
                    t,
                    Entry {
                        slot: m.dst,
                        valid: 1,
                    },
                );
            }
            return false;
        }
        let valid = m.frozen.map_or(0, |e| e.valid) | m.child.valid;
        if let Some(n) = self.nodes.get_mut(&f) {
            n.map.set(t, Entry { slot: m.dst, valid });
        }
        self.drop_child_entry(c, t, Some(m.child));
        self.touch(f, t);
        true
    }

    /// Removes the child's entry of `t` (its slot freed after the next
    /// commit unless `freed` is None: the frozen node took it), and a
    /// partial area of the child that no entry uses any longer.
    fn drop_child_entry(&mut self, c: NodeId, t: u64, freed: Option<Entry>) {
        if let Some(e) = freed {
            self.free_entry_slot(c, t, e);
        }
        let Some(n) = self.nodes.get_mut(&c) else {
            return;
        };
        n.map.remove(t);
        let shed = if n.map.scheme().load_point() {
            n.map.shed(t)
        } else {
            None
        };
        if let Some((a, k)) = shed {
            // Given up by the child; freed unless it passed to another node.
            if !self.area_listed_elsewhere(c, t, a) {
                self.store.free_area_later(a, k);
            }
            self.record_dirty = true;
        }
        self.touch(c, t);
    }

    /// Whether `slot` lies in one of node `id`'s reserved areas.
    pub(super) fn in_area(&self, id: NodeId, t: u64, slot: u64) -> bool {
        self.area_holding(id, t, slot).is_some()
    }

    /// Node `id`'s reserved area holding `slot`, an entry's slot of track
    /// `t` (see [`crate::copy::map::TrackMap::area_with`]).
    fn area_holding(&self, id: NodeId, t: u64, slot: u64) -> Option<(u64, u64)> {
        if slot == ZERO_SLOT {
            return None;
        }
        self.nodes.get(&id)?.map.area_with(t, slot)
    }

    /// Whether a node other than `id` lists the area starting at `first`,
    /// which holds track `t`'s position (an area a collection handed over
    /// is listed by both until the child gives it up).
    pub(super) fn area_listed_elsewhere(&self, id: NodeId, t: u64, first: u64) -> bool {
        (self.nodes.values())
            .filter(|n| n.id != id)
            .any(|n| n.map.lists_area(t, first))
    }

    /// Ends merging `c` into `f` (call with the gates closed, `c` empty):
    /// `f` takes `c`'s place — its kind, its children, the images whose
    /// head it was — and `c` leaves the tree.
    pub fn finish_merge(&mut self, f: NodeId, c: NodeId) -> Result<()> {
        let (kind, empty) = match self.nodes.get(&c) {
            Some(n) => (n.kind, n.map.is_empty()),
            None => return Err(Error::corrupt("collection: the child node vanished")),
        };
        if !empty {
            return Err(Error::corrupt(format!(
                "collection: node {c} still has entries when its merge into {f} ends"
            )));
        }
        for n in self.nodes.values_mut() {
            if n.parent == Some(c) {
                n.parent = Some(f);
            }
        }
        if let Some(n) = self.nodes.get_mut(&f) {
            n.kind = kind;
        }
        for i in self.images.values_mut() {
            if i.head == Head::Leaf(c) {
                i.head = Head::Leaf(f);
            }
        }
        if self.newest_view == Some(c) {
            self.newest_view = Some(f);
        }
        self.remove_node(c);
        self.clear_merging();
        self.record_dirty = true;
        Ok(())
    }
}

impl Family {
    /// Starts merging the next pair, if there is one and none is being
    /// merged. Call with the family's gates closed.
    pub fn begin_merge(&self) -> Option<(NodeId, NodeId)> {
        let mut st = self.write_state();
        if st.merging.is_none() {
            st.merging = st.merge_pair();
        }
        st.merging
    }

    /// Whether a pair could be merged (no gates needed to ask).
    pub fn has_merge_pair(&self) -> bool {
        let st = self.read_state();
        st.merging.is_some() || st.merge_pair().is_some()
    }

    /// Merges tracks `t0..t1` of the pair being merged, an extent at a
    /// time under the extent's track lock (host writes there wait; the
    /// rest of the volume goes on): up to `extents` extents at once, up
    /// to `depth` tracks of each moving at once. An extent's moves are
    /// few and short, so keeping the disk busy takes several extents.
    pub async fn merge_tracks(&self, t0: u64, t1: u64, depth: usize, extents: usize) -> Result<()> {
        let first = t0 - t0 % PARTIAL_AREA_TRACKS;
        let merges = futures::stream::iter((first..t1).step_by(us(PARTIAL_AREA_TRACKS)))
            .map(|e0| self.merge_extent(e0, t0.max(e0), t1.min(e0 + PARTIAL_AREA_TRACKS), depth))
            .buffer_unordered(extents.max(1));
        all_done(merges).await
    }

    /// Merges tracks `a..b` of the extent from `e0`.
    async fn merge_extent(&self, e0: u64, a: u64, b: u64, depth: usize) -> Result<()> {
        let (f, c, tracks, todo) = {
            let st = self.read_state();
            let Some((f, c)) = st.merging else {
                return Ok(());
            };
            // The child gains no entry while it is merged (its writes go
            // to the frozen node): a track it lacks is skipped.
            let todo: Vec<u64> = match st.nodes.get(&c) {
                Some(n) => (a..b).filter(|&t| n.map.get(t).is_some()).collect(),
                None => Vec::new(),
            };
            (f, c, st.tracks, todo)
        };
        let Some((&first, rest)) = todo.split_first() else {
            return Ok(());
        };
        let _l = (self.base_locks())
            .lock(e0, (e0 + PARTIAL_AREA_TRACKS).min(tracks))
            .await;
        // The child's whole area may pass over (no data moves, nothing is
        // left to move); if not, none of the extent's tracks can, and they
        // all move at once (the first alone would stall every extent for
        // one move).
        if self.write_state().pass_whole_area(f, c, first) {
            self.room_freed();
            return Ok(());
        }
        let moves = futures::stream::iter(std::iter::once(&first).chain(rest.iter()))
            .map(|&t| self.merge_track(f, c, t, false))
            .buffer_unordered(depth.max(1));
        all_done(moves).await
    }

    /// Merges track `t` of child `c` into frozen node `f` (the caller holds
    /// the track's lock, with `extent` its extent's, or the gates are
    /// closed). Fails rather than leave the child holding the track.
    pub(super) async fn merge_track(
        &self,
        f: NodeId,
        c: NodeId,
        t: u64,
        extent: bool,
    ) -> Result<()> {
        for _ in 0..3 {
            let planned = self.write_state().plan_move(f, c, t, extent)?;
            let Some(m) = planned else {
                // Nothing to copy (none left, or slots adopted or an area
                // handed over): what the child gave up may be free.
                self.room_freed();
                return Ok(());
            };
            let moved = self.move_data(&m).await;
            if let Err(e) = moved {
                if m.fresh {
                    let mut st = self.write_state();
                    st.free_entry_slot(
                        f,
                        t,
                        Entry {
                            slot: m.dst,
                            valid: 1,
                        },
                    );
                }
                return Err(e);
            }
            if self.write_state().apply_move(f, c, t, &m) {
                self.room_freed();
                return Ok(());
            }
        }
        Err(Error::new(
            crate::error::ErrorKind::Io,
            format!("copy collection: track {t} kept changing while it was moved"),
        ))
    }

    /// Copies the data of a planned track move into its slot.
    pub(super) async fn move_data(&self, m: &TrackMove) -> Result<()> {
        let (g, dst_off, srcs, _reading) = {
            let st = self.read_state();
            let reading = self.reading(&st);
            let mut srcs = Vec::with_capacity(m.pieces.len());
            for &(mask, src) in &m.pieces {
                let off = match src {
                    Src::Slot(s) => Some(st.store.offset(s)?),
                    _ => None,
                };
                srcs.push((mask, off));
            }
            (st.granule, st.store.offset(m.dst)?, srcs, reading)
        };
        for (mask, src_off) in srcs {
            for (gs, gn) in runs(mask) {
                let piece = match src_off {
                    Some(o) => {
                        // Read over whole: a recycled buffer, not zeroed.
                        let piece = crate::buf::pool::take(us(gn * g));
                        let (p, r) = self.group().read(o + gs * g, piece).await;
                        r?;
                        p
                    }
                    None => IoBuf::new(us(gn * g)),
                };
                let (p, r) = self.group().write(dst_off + gs * g, piece, false).await;
                crate::buf::pool::give(p);
                r?;
            }
        }
        Ok(())
    }

    /// Ends the pair being merged (or, if none is set, the next pair):
    /// moves what the child still holds, makes it durable, and the frozen
    /// node takes the child's place. Call with the family's gates closed;
    /// the caller saves. Whether a pair ended.
    pub async fn end_merge(self: &Arc<Self>) -> Result<bool> {
        let Some((f, c)) = self.begin_merge() else {
            return Ok(false);
        };
        let left: Vec<u64> = {
            let st = self.read_state();
            st.nodes
                .get(&c)
                .map(|n| n.map.entries().map(|(t, _)| t).collect())
                .unwrap_or_default()
        };
        for t in left {
            self.merge_track(f, c, t, true).await?;
        }
        // The moved data is durable, and the child's emptied map saved,
        // before the tree changes.
        self.commit().await?;
        self.write_state().finish_merge(f, c)?;
        self.room_freed();
        Ok(true)
    }
}

/// Runs every operation of `ops` to its end (none is dropped half done:
/// a move dropped between its plan and its apply would keep the slot it
/// was given), then returns the first error.
pub(super) async fn all_done(ops: impl futures::Stream<Item = Result<()>>) -> Result<()> {
    let mut ops = std::pin::pin!(ops);
    let mut failed = None;
    while let Some(r) = ops.next().await {
        if let (Err(e), None) = (r, &failed) {
            failed = Some(e);
        }
    }
    failed.map_or(Ok(()), Err)
}
