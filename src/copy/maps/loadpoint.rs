//! The part the three load-point schemes of FIG. 17 ("LOAD POINT &
//! OFFSET": full bit map for copied area, multi-level bit maps, partial
//! area bit maps) share: each scheme keeps one bit per track ("this track
//! diverged") and knows each track's fixed slot; [`LoadPointMap`] adds the
//! entries' masks and zeroes.
//!
//! ```text
//!   get(t) = None                             bit t clear
//!          = odd[t]                           bit t set, t in the side table
//!          = { slot: position(t), valid: whole }   otherwise
//! ```
//!
//! A packed extent of the partial-area scheme (`copy/pack.rs`) keeps its
//! tracks in the side table with single slots outside every area
//! ([`TrackMap::accepts_pointer`]).
//!
//! `whole` is the union of every mask the map has been given: a whole
//! track's mask as soon as one whole track was written (the map is not
//! told how many granules a track has). The side table `odd` holds only
//! the entries that differ from the implicit one (zeroed tracks, partial
//! masks), so a map of whole-track entries costs its bits and no more.
//! When a new mask widens `whole`, the tracks that relied on the old one
//! move into `odd` first; that happens at most 64 times in a map's life.

#![forbid(unsafe_code)]

use super::sparse::SparseTable;
use super::{MAX_SLOT, storable};
use crate::copy::map::{Area, ChangeLog, Entry, Scheme, SlotSource, TrackMap, ZERO_SLOT};
use crate::error::{Error, Result};

/// What a load-point scheme provides: the diverged bits and positions.
pub(super) trait Positions: Send + Sync {
    fn scheme(&self) -> Scheme;
    fn tracks(&self) -> u64;
    /// Whether bit `t` is set.
    fn test(&self, t: u64) -> bool;
    /// Sets (`on`) or clears bit `t` (`t` in range); whether it changed.
    fn put(&mut self, t: u64, on: bool) -> bool;
    /// The set bits, ascending.
    fn ones(&self) -> Box<dyn Iterator<Item = u64> + '_>;
    /// The fixed slot of `t`, if its area is reserved.
    fn position(&self, t: u64) -> Option<u64>;
    /// `Some(position(t))` if bit `t` is set, else `None`: the two looks
    /// of every read and write in one.
    fn probe(&self, t: u64) -> Option<Option<u64>> {
        self.test(t).then(|| self.position(t))
    }
    /// The fixed slot of `t`, reserving its area from `src` if need be.
    fn reserve(&mut self, t: u64, src: &mut dyn SlotSource) -> Result<u64>;
    /// The reserved area holding `t`'s position.
    fn area_of(&self, t: u64) -> Option<Area>;
    fn areas(&self) -> Vec<Area>;
    /// See [`TrackMap::area_tracks`] (a whole-range area holds track 0's
    /// position).
    fn area_tracks(&self) -> Vec<(Area, u64)> {
        self.areas().into_iter().map(|a| (a, 0)).collect()
    }
    /// See [`TrackMap::area_with`].
    fn area_with(&self, _t: u64, slot: u64) -> Option<Area> {
        self.areas()
            .into_iter()
            .find(|&(a, k)| slot >= a && slot < a + k)
    }
    fn memory_bytes(&self) -> usize;
    /// See [`TrackMap::shed`].
    fn shed(&mut self, _t: u64) -> Option<Area> {
        None
    }
    /// See [`TrackMap::take_area`].
    fn tie_area(&mut self, _t: u64, _area: Area) -> bool {
        false
    }
    /// Whether the scheme may hold single (pointer) slots in packed
    /// extents.
    fn pointers(&self) -> bool {
        false
    }
    /// Whether `t`'s extent is packed: no area, its tracks in single slots.
    fn packed(&self, _t: u64) -> bool {
        false
    }
    /// Notes that `t` holds a single slot (its extent is packed).
    fn mark_single(&mut self, _t: u64) {}
    /// See [`TrackMap::release_area`].
    fn release(&mut self, _t: u64) -> Option<Area> {
        None
    }
    /// See [`TrackMap::area_counts`].
    fn area_counts(&self) -> Vec<(Area, u64, u64)> {
        Vec::new()
    }
}

/// A load-point track map over the positions `P`.
#[derive(Debug)]
pub(super) struct LoadPointMap<P> {
    pub(super) pos: P,
    odd: SparseTable<Entry>,
    whole: u64,
    count: u64,
    /// Areas reserved (`Some(slots)`) or shed (`None`) since the last save
    /// took them, by first slot.
    log: ChangeLog<u64>,
}

impl<P: Positions> LoadPointMap<P> {
    pub(super) fn new(pos: P) -> LoadPointMap<P> {
        LoadPointMap {
            pos,
            odd: SparseTable::new(),
            whole: 0,
            count: 0,
            log: ChangeLog::default(),
        }
    }

    /// Widens the implicit mask to cover `valid`, moving the tracks that
    /// used the old one into the side table.
    fn widen(&mut self, valid: u64) {
        if valid & !self.whole == 0 {
            return;
        }
        let old = self.whole;
        let implicit: Vec<(u64, u64)> = (self.pos.ones())
            .filter(|&t| self.odd.get(t).is_none())
            .filter_map(|t| self.pos.position(t).map(|slot| (t, slot)))
            .collect();
        for (t, slot) in implicit {
            self.odd.insert(t, Entry { slot, valid: old });
        }
        self.whole |= valid;
    }
}

impl<P: Positions> TrackMap for LoadPointMap<P> {
    fn scheme(&self) -> Scheme {
        self.pos.scheme()
    }

    fn tracks(&self) -> u64 {
        self.pos.tracks()
    }

    fn get(&self, t: u64) -> Option<Entry> {
        let position = self.pos.probe(t)?;
        if let Some(e) = self.odd.get(t) {
            return Some(*e);
        }
        position.map(|slot| Entry {
            slot,
            valid: self.whole,
        })
    }

    fn place(&mut self, t: u64, src: &mut dyn SlotSource) -> Result<u64> {
        let new_area = self.pos.position(t).is_none();
        if new_area && t < self.tracks() && self.pos.packed(t) {
            let slot = src.alloc_slot()?;
            if slot > MAX_SLOT {
                return Err(Error::corrupt(format!(
                    "the slot source returned slot {slot}, beyond the last slot"
                )));
            }
            return Ok(slot);
        }
        let slot = self.pos.reserve(t, src)?;
        if let Some((first, n)) = self.pos.area_of(t).filter(|_| new_area) {
            self.log.note(first, Some(n));
        }
        Ok(slot)
    }

    fn set(&mut self, t: u64, e: Entry) {
        let single = e.valid != 0 && !self.accepts(t, e.slot) && self.accepts_pointer(t, e.slot);
        if !single && !storable(self, t, e) {
            return;
        }
        self.widen(e.valid);
        if single {
            self.odd.insert(t, e);
        } else if e.slot != ZERO_SLOT && e.valid == self.whole {
            self.odd.remove(t);
        } else {
            self.odd.insert(t, e);
        }
        if self.pos.put(t, true) {
            self.count += 1;
        }
        // After `put`: the extent's record exists (a restart's first
        // entry of a packed extent makes it).
        if single {
            self.pos.mark_single(t);
        }
    }

    fn remove(&mut self, t: u64) -> Option<Entry> {
        let e = self.get(t)?;
        self.odd.remove(t);
        if self.pos.put(t, false) {
            self.count -= 1;
        }
        Some(e)
    }

    fn accepts(&self, t: u64, slot: u64) -> bool {
        t < self.tracks() && (slot == ZERO_SLOT || self.pos.position(t) == Some(slot))
    }

    fn accepts_pointer(&self, t: u64, slot: u64) -> bool {
        self.pos.pointers()
            && t < self.tracks()
            && slot <= MAX_SLOT
            && self.pos.area_with(t, slot).is_none()
    }

    fn release_area(&mut self, t: u64) -> Option<Area> {
        let a = self.pos.release(t)?;
        self.log.note(a.0, None);
        Some(a)
    }

    fn area_counts(&self) -> Vec<(Area, u64, u64)> {
        self.pos.area_counts()
    }

    fn len(&self) -> u64 {
        self.count
    }

    fn entries(&self) -> Box<dyn Iterator<Item = (u64, Entry)> + '_> {
        Box::new(self.pos.ones().filter_map(|t| self.get(t).map(|e| (t, e))))
    }

    fn areas(&self) -> Vec<Area> {
        let mut a = self.pos.areas();
        a.sort_unstable();
        a
    }

    fn area_with(&self, t: u64, slot: u64) -> Option<Area> {
        self.pos.area_with(t, slot)
    }

    fn area_tracks(&self) -> Vec<(Area, u64)> {
        self.pos.area_tracks()
    }

    fn position(&self, t: u64) -> Option<(u64, Area)> {
        Some((self.pos.position(t)?, self.pos.area_of(t)?))
    }

    fn memory_bytes(&self) -> usize {
        self.pos.memory_bytes() + self.odd.memory_bytes()
    }

    fn shed(&mut self, t: u64) -> Option<Area> {
        let a = self.pos.shed(t)?;
        self.log.note(a.0, None);
        Some(a)
    }

    fn take_area(&mut self, t: u64, area: Area) -> bool {
        if !self.pos.tie_area(t, area) {
            return false;
        }
        self.log.note(area.0, Some(area.1));
        true
    }

    fn take_area_changes(&mut self) -> Vec<(u64, Option<u64>)> {
        self.log.take()
    }

    fn keep_area_changes(&mut self, changes: Vec<(u64, Option<u64>)>) {
        self.log.keep(changes);
    }

    fn log_all_areas(&mut self) {
        for (first, n) in self.pos.areas() {
            self.log.note(first, Some(n));
        }
    }

    fn areas_changed(&self) -> bool {
        !self.log.is_empty()
    }
}
