//! Free-space collection by active counts (seed 000 FIG. 13: each stripe
//! keeps an active count of the units still pointed to, and the
//! collection moves the live units of the stripes with the lowest counts
//! and frees those stripes; issue 18 item 2).
//!
//! A partial-bitmap node reserves a partial area (64 tracks) the first
//! time a write touches its extent; a node written sparsely, or one whose
//! entries the nodes below made dead, holds whole areas for a few live
//! tracks. Packing an area moves each live track of it into a single slot
//! of the store, points the node's entry there, and gives the area back:
//! the extent is *packed* from then on, and the node's new tracks there
//! take single slots too (`maps/partial.rs`), so the node holds what it
//! reads, not what it once touched.
//!
//! ```text
//!   node X, extent e (64 tracks)         after packing
//!   area A: [t3][  ][  ][t17][  ]...     single slots q3, q17 (anywhere in
//!   active count 2 of 64                 the store); A freed; e packed
//! ```
//!
//! Which areas: [`State::pack_plan`] runs when the store holds more than
//! [`HELD_OVER_LIVE`] times the slots images read (plus one area per
//! leaf, what a node being written may hold open), and picks areas lowest
//! active count first until the store would hold [`PACK_TO`] times what is
//! read.
//!
//! Rules: `State::packing` is set and cleared with the family's gates
//! closed; while it is set, host writes take the family's track locks
//! (`Family::write_leaf`), and [`Family::pack_area`] holds the locks of
//! the area's extent while it moves its tracks, so no write lands in an
//! area being emptied. A track whose entry changed while it moved (a dead
//! entry dropped by a commit) keeps its old place, and then so does the
//! area. Reads planned on a position before the move are covered by the
//! read fence (`fence.rs`): the area's slots are reused only once they
//! ended.

#![forbid(unsafe_code)]

use std::sync::atomic::Ordering;

use futures::StreamExt;

use super::collect::{TrackMove, all_done};
use super::family::{NodeId, NodeKind, Src, State};
use super::image::Family;
use super::map::{Area, Entry, PARTIAL_AREA_TRACKS, SlotSource, ZERO_SLOT};
use crate::error::{ErrorKind, Result};
use crate::meta::model::CopyMode;

/// The store may hold this much more than images read, as (numerator,
/// denominator), before areas are packed: the held-space bound of issue 18.
pub const HELD_OVER_LIVE: (u64, u64) = (5, 4);

/// What packing brings the store down to, as a share of what is read.
pub const PACK_TO: (u64, u64) = (9, 8);

/// Slots the store must grow by before the periodic check plans again
/// after an empty plan (16 areas): a family nothing can be packed in is
/// not scanned every few seconds.
const PACK_RECHECK: u64 = 16 * PARTIAL_AREA_TRACKS;

/// One area to pack: the node, the first track of its extent, the area.
pub type PackArea = (NodeId, u64, Area);

impl State {
    /// Store slots that hold data an image reads (entries with a slot).
    pub fn live_slots(&self) -> u64 {
        (self.nodes.values())
            .map(|n| {
                let zeroed = (n.map.entries()).filter(|(_, e)| e.slot == ZERO_SLOT);
                n.map.len() - zeroed.count() as u64
            })
            .sum()
    }

    /// Slots the store may hold for `live` read ones before packing is
    /// due: [`HELD_OVER_LIVE`] of them plus one open area per leaf.
    pub fn held_allowed(&self, live: u64) -> u64 {
        let leaves = (self.nodes.values())
            .filter(|n| n.kind == NodeKind::Leaf)
            .count() as u64;
        live * HELD_OVER_LIVE.0 / HELD_OVER_LIVE.1 + leaves * PARTIAL_AREA_TRACKS
    }

    /// Whether packing may be due, from figures kept as they change (no
    /// pass over the entries; zeroed entries count as read, so this errs
    /// towards not packing): what the pool's periodic check asks.
    pub fn pack_due(&self) -> bool {
        let entries: u64 = self.nodes.values().map(|n| n.map.len()).sum();
        self.packable() && self.store.used_slots() > self.held_allowed(entries)
    }

    /// Whether the family's areas may be packed now: a row family (as
    /// merges) with no restore moving data into its nodes.
    fn packable(&self) -> bool {
        self.mode == CopyMode::Row && self.restore.is_none()
    }

    /// The areas to pack, lowest active count first (see the module):
    /// empty unless the store holds more than it may.
    pub fn pack_plan(&self) -> Vec<PackArea> {
        if !self.packable() {
            return Vec::new();
        }
        let live = self.live_slots();
        let mut held = self.store.used_slots();
        if held <= self.held_allowed(live) {
            return Vec::new();
        }
        let target = live * PACK_TO.0 / PACK_TO.1;
        // Packing a dense area frees little for all it moves.
        let found =
            self.pack_candidates(|count, k| count * HELD_OVER_LIVE.0 < k * HELD_OVER_LIVE.1);
        let mut plan = Vec::new();
        for (count, id, e0, area) in found {
            if held <= target {
                break;
            }
            held = held.saturating_sub(area.1.saturating_sub(count));
            plan.push((id, e0, area));
        }
        plan
    }

    /// The areas `keep(active count, slots)` accepts that no other node
    /// lists, as (active count, node, extent's first track, area), lowest
    /// count first.
    pub fn pack_candidates(
        &self,
        keep: impl Fn(u64, u64) -> bool,
    ) -> Vec<(u64, NodeId, u64, Area)> {
        let mut found = Vec::new();
        for n in self.nodes.values() {
            for (area, e0, count) in n.map.area_counts() {
                if keep(count, area.1) && !self.area_listed_elsewhere(n.id, e0, area.0) {
                    found.push((count, n.id, e0, area));
                }
            }
        }
        found.sort_unstable();
        found
    }

    /// The moves that empty `area` of node `id` (extent from `e0`): each
    /// track whose entry lies at its position gets a single slot. None if
    /// the area is no longer the node's there, or another node lists it.
    fn plan_pack(&mut self, (id, e0, area): PackArea) -> Result<Option<Vec<(u64, TrackMove)>>> {
        if !self.packable() {
            return Ok(None);
        }
        let Some(n) = self.nodes.get(&id) else {
            return Ok(None);
        };
        if n.map.position(e0).map(|p| p.1) != Some(area)
            || self.area_listed_elsewhere(id, e0, area.0)
        {
            return Ok(None);
        }
        let tracks: Vec<(u64, Entry)> = (e0..e0 + area.1)
            .filter_map(|t| n.map.get(t).map(|e| (t, e)))
            .filter(|(_, e)| e.slot >= area.0 && e.slot < area.0 + area.1)
            .collect();
        let mut moves: Vec<(u64, TrackMove)> = Vec::with_capacity(tracks.len());
        for (t, e) in tracks {
            let dst = match self.store.alloc_slot() {
                Ok(s) => s,
                Err(err) => {
                    for (_, m) in moves {
                        self.store.free_later(m.dst);
                    }
                    // No room to pack this area into: another, with fewer
                    // live tracks, may fit.
                    return match err.kind() {
                        ErrorKind::NoSpace => Ok(None),
                        _ => Err(err),
                    };
                }
            };
            let m = TrackMove {
                dst,
                fresh: true,
                pieces: vec![(e.valid, Src::Slot(e.slot))],
                child: e,
                frozen: None,
            };
            moves.push((t, m));
        }
        Ok(Some(moves))
    }

    /// Points node `id`'s entries at the single slots their data moved to
    /// (a track whose entry changed meanwhile keeps its place; its new
    /// slot goes back), then gives `area` back if no entry uses it any
    /// longer. Whether the area was given back.
    fn apply_pack(&mut self, (id, e0, area): PackArea, moves: &[(u64, TrackMove)]) -> bool {
        for (t, m) in moves {
            let now = self.nodes.get(&id).and_then(|n| n.map.get(*t));
            if now != Some(m.child) {
                self.store.free_later(m.dst);
                continue;
            }
            let e = Entry {
                slot: m.dst,
                valid: m.child.valid,
            };
            if let Some(n) = self.nodes.get_mut(&id) {
                n.map.set(*t, e);
            }
            self.touch(id, *t);
        }
        let Some(n) = self.nodes.get_mut(&id) else {
            return false;
        };
        let used = (e0..e0 + area.1)
            .filter_map(|t| n.map.get(t))
            .any(|e| e.slot >= area.0 && e.slot < area.0 + area.1);
        if used || n.map.position(e0).map(|p| p.1) != Some(area) {
            return false;
        }
        if n.map.release_area(e0).is_none() {
            return false;
        }
        self.store.free_area_later(area.0, area.1);
        self.record_dirty = true;
        true
    }
}

impl Family {
    /// Plans the areas to pack (see [`State::pack_plan`]).
    pub fn pack_plan(&self) -> Vec<PackArea> {
        let st = self.read_state();
        let plan = st.pack_plan();
        if plan.is_empty() {
            self.pack_quiet
                .store(st.store.used_slots(), Ordering::Relaxed);
            // A write waiting for room on packing to come asks again (and
            // fails at once if nothing else frees any).
            self.room_freed();
        }
        plan
    }

    /// A packing pass gave no area back (no room for the single slots its
    /// tracks need): the periodic check waits for the store to grow, and
    /// writes waiting for room on it ask again (and fail at once if
    /// nothing else frees any).
    pub fn pack_stalled(&self) {
        let held = self.read_state().store.used_slots();
        self.pack_quiet.store(held, Ordering::Relaxed);
        self.room_freed();
    }

    /// Whether packing may be due (see [`State::pack_due`]), and the store
    /// grew by `PACK_RECHECK` slots since a plan last came out empty.
    pub fn pack_due(&self) -> bool {
        let st = self.read_state();
        let quiet = self.pack_quiet.load(Ordering::Relaxed);
        st.store.used_slots() > quiet.saturating_add(PACK_RECHECK) && st.pack_due()
    }

    /// Sets or clears `packing` (call with the family's gates closed).
    pub fn set_packing(&self, on: bool) {
        self.write_state().packing = on;
    }

    /// Packs one area: its extent's track locks held, its live tracks move
    /// into single slots, up to `depth` at once, and the area goes back
    /// (freed with the next commit). Whether it was given back.
    pub async fn pack_area(&self, pa: PackArea, depth: usize) -> Result<bool> {
        let (_, e0, area) = pa;
        let tracks = self.read_state().tracks;
        let _l = (self.base_locks())
            .lock(e0, (e0 + area.1).min(tracks))
            .await;
        let Some(moves) = self.write_state().plan_pack(pa)? else {
            return Ok(false);
        };
        let copies = futures::stream::iter(moves.iter())
            .map(|(_, m)| self.move_data(m))
            .buffer_unordered(depth.max(1));
        let copied = all_done(copies).await;
        let mut st = self.write_state();
        if let Err(e) = copied {
            for (_, m) in &moves {
                st.store.free_later(m.dst);
            }
            return Err(e);
        }
        Ok(st.apply_pack(pa, &moves))
    }
}
