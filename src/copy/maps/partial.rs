//! Partial area bit maps: seed 000/001 FIG. 17, row "LOAD POINT & OFFSET /
//! PARTIAL AREA BIT MAPS (WITH EXTENT DEFINITIONS & POINTERS TO PARTIAL
//! AREAS)" (SEED-SPECS A.b.4 item 5): the range is cut into partial areas
//! of [`PARTIAL_AREA_TRACKS`] tracks (the last may be shorter); each
//! touched one has a bitmap and the load point of its own run of slots,
//! reserved on the first `place` into it. The slot of track t is
//! `area.load_point + (t - area.first)`.
//!
//! ```text
//!   areas: SparseTable<PartialArea>   key i: extent [i * 64, +len)
//!          PartialArea { lp: slot or none, bits: [u64; 1], packed }
//!   spare: SparseTable<u64>           reserved runs not yet tied to an
//!                                     extent (after a restart)
//! ```
//!
//! A zeroed track needs no slot, so an extent can have bits before it has
//! a load point. A *packed* extent (its area given back by the free-space
//! collection, `copy/pack.rs`) holds its tracks in single slots, entries
//! of the side table whose slot is not a position, and `place` gives its
//! new tracks single slots too. A live map never gives a reserved run back (the
//! [`SlotSource`] has no free); a frozen one sheds the run of an extent
//! whose last entry the nodes below it made dead
//! ([`crate::copy::map::TrackMap::shed`]; `family.rs`, "collapsing frozen
//! nodes"). A restart that finds a listed run no entry points into keeps
//! it as spare and hands it to the next extent of the same length that
//! needs one.

#![forbid(unsafe_code)]

use super::loadpoint::{LoadPointMap, Positions};
use super::sparse::SparseTable;
use super::{beyond, bit, check_new_area, ones, put_bit};
use crate::copy::map::{Area, PARTIAL_AREA_TRACKS, Scheme, SlotSource, ZERO_SLOT};
use crate::error::{Error, Result};

/// Words of one partial area's bitmap.
const AREA_WORDS: usize = 1;
const _: () = assert!(AREA_WORDS as u64 * 64 == PARTIAL_AREA_TRACKS);

/// The partial-area scheme's map.
pub(super) type Partial = LoadPointMap<Partials>;

/// A new partial-area map: nothing reserved yet.
pub(super) fn new(tracks: u64) -> Partial {
    LoadPointMap::new(Partials {
        areas: SparseTable::new(),
        spare: SparseTable::new(),
        tracks,
    })
}

/// An empty partial-area map holding the (checked, sorted) `areas` it had
/// reserved, to be tied to extents by [`Partials::adopt`].
pub(super) fn restore(tracks: u64, areas: &[Area]) -> Result<Partial> {
    let extents = tracks.div_ceil(PARTIAL_AREA_TRACKS);
    if u64::try_from(areas.len()).map_or(true, |n| n > extents) {
        return Err(Error::corrupt(format!(
            "{} areas listed for a partial-bitmap map of {extents} extents",
            areas.len()
        )));
    }
    let lens = [PARTIAL_AREA_TRACKS, tracks % PARTIAL_AREA_TRACKS];
    if let Some((first, n)) = areas.iter().find(|(_, n)| !lens.contains(n)) {
        return Err(Error::corrupt(format!(
            "area of {n} slots at {first} fits no extent of a partial-bitmap map of {tracks} tracks"
        )));
    }
    let mut map = new(tracks);
    for &(first, n) in areas {
        map.pos.spare.insert(first, n);
    }
    Ok(map)
}

/// [`PartialArea::lp`] of an extent with no area reserved (above every
/// storable slot).
const NO_LOAD_POINT: u64 = u64::MAX;

impl PartialArea {
    fn load_point(&self) -> Option<u64> {
        (self.lp != NO_LOAD_POINT).then_some(self.lp)
    }
}

/// One extent's bits and load point.
#[derive(Debug, Clone, Copy)]
struct PartialArea {
    /// The load point, or [`NO_LOAD_POINT`] (an `Option` would make the
    /// area 8 bytes larger, and maps hold one per touched extent).
    lp: u64,
    bits: [u64; AREA_WORDS],
    /// The extent holds (or held) tracks in single slots: without a load
    /// point, its new tracks take single slots too (`copy/compact.rs`).
    packed: bool,
}

/// The partial areas.
#[derive(Debug)]
pub(super) struct Partials {
    areas: SparseTable<PartialArea>,
    /// Reserved runs tied to no extent: first slot -> slots.
    spare: SparseTable<u64>,
    tracks: u64,
}

impl Partials {
    /// Tracks of extent `i`.
    fn extent_len(&self, i: u64) -> u64 {
        let first = i * PARTIAL_AREA_TRACKS;
        PARTIAL_AREA_TRACKS.min(self.tracks.saturating_sub(first))
    }

    /// Ties the spare run holding `slot` at track `t`'s position to `t`'s
    /// extent (a restart). Anything else is left for the entry check.
    pub(super) fn adopt(&mut self, t: u64, slot: u64) {
        if slot == ZERO_SLOT || t >= self.tracks || self.position(t).is_some() {
            return;
        }
        let i = t / PARTIAL_AREA_TRACKS;
        let Some(lp) = slot.checked_sub(t % PARTIAL_AREA_TRACKS) else {
            return;
        };
        if self.spare.get(lp) == Some(&self.extent_len(i)) {
            self.spare.remove(lp);
            self.tie(i, lp);
        }
    }

    /// Gives extent `i` its load point.
    fn tie(&mut self, i: u64, lp: u64) {
        match self.areas.get_mut(i) {
            Some(a) => a.lp = lp,
            None => {
                let a = PartialArea {
                    lp,
                    bits: [0; AREA_WORDS],
                    packed: false,
                };
                self.areas.insert(i, a);
            }
        }
    }

    /// A run of `n` slots: a spare one, else a new one from `src`.
    fn take_run(&mut self, n: u64, src: &mut dyn SlotSource) -> Result<u64> {
        let spare = self.spare.iter().find(|&(_, c)| c == n);
        match spare {
            Some((first, _)) => {
                self.spare.remove(first);
                Ok(first)
            }
            None => check_new_area(src.alloc_area(n)?, n),
        }
    }

    fn set(&mut self, t: u64) -> bool {
        let i = t / PARTIAL_AREA_TRACKS;
        if self.areas.get(i).is_none() {
            let a = PartialArea {
                lp: NO_LOAD_POINT,
                bits: [0; AREA_WORDS],
                packed: false,
            };
            self.areas.insert(i, a);
        }
        (self.areas.get_mut(i)).is_some_and(|a| put_bit(&mut a.bits, t % PARTIAL_AREA_TRACKS, true))
    }

    fn clear(&mut self, t: u64) -> bool {
        let i = t / PARTIAL_AREA_TRACKS;
        let Some(a) = self.areas.get_mut(i) else {
            return false;
        };
        let changed = put_bit(&mut a.bits, t % PARTIAL_AREA_TRACKS, false);
        if a.load_point().is_none() && a.bits.iter().all(|&w| w == 0) {
            self.areas.remove(i);
        }
        changed
    }
}

impl Positions for Partials {
    fn scheme(&self) -> Scheme {
        Scheme::PartialBitmap
    }

    fn tracks(&self) -> u64 {
        self.tracks
    }

    fn test(&self, t: u64) -> bool {
        (self.areas.get(t / PARTIAL_AREA_TRACKS))
            .is_some_and(|a| bit(&a.bits, t % PARTIAL_AREA_TRACKS))
    }

    fn put(&mut self, t: u64, on: bool) -> bool {
        match (t < self.tracks, on) {
            (false, _) => false,
            (true, true) => self.set(t),
            (true, false) => self.clear(t),
        }
    }

    fn ones(&self) -> Box<dyn Iterator<Item = u64> + '_> {
        Box::new((self.areas.iter_ref()).flat_map(|(i, a)| ones(&a.bits, i * PARTIAL_AREA_TRACKS)))
    }

    fn position(&self, t: u64) -> Option<u64> {
        let a = self.areas.get(t / PARTIAL_AREA_TRACKS)?;
        a.load_point().map(|lp| lp + t % PARTIAL_AREA_TRACKS)
    }

    fn reserve(&mut self, t: u64, src: &mut dyn SlotSource) -> Result<u64> {
        if t >= self.tracks {
            return Err(beyond(Scheme::PartialBitmap, t, self.tracks));
        }
        if let Some(slot) = self.position(t) {
            return Ok(slot);
        }
        let i = t / PARTIAL_AREA_TRACKS;
        let lp = self.take_run(self.extent_len(i), src)?;
        self.tie(i, lp);
        Ok(lp + t % PARTIAL_AREA_TRACKS)
    }

    fn probe(&self, t: u64) -> Option<Option<u64>> {
        let i = t % PARTIAL_AREA_TRACKS;
        let a = self.areas.get(t / PARTIAL_AREA_TRACKS)?;
        bit(&a.bits, i).then(|| a.load_point().map(|lp| lp + i))
    }

    fn area_of(&self, t: u64) -> Option<Area> {
        let i = t / PARTIAL_AREA_TRACKS;
        let lp = self.areas.get(i)?.load_point()?;
        Some((lp, self.extent_len(i)))
    }

    fn area_with(&self, t: u64, slot: u64) -> Option<Area> {
        // An area tied to another extent holds only that extent's
        // positions (a collection hands an area over within its extent);
        // a spare one may hold anything.
        let holds = |&(a, k): &Area| slot >= a && slot < a + k;
        self.area_of(t)
            .filter(holds)
            .or_else(|| self.spare.iter().find(holds))
    }

    fn shed(&mut self, t: u64) -> Option<Area> {
        let i = t / PARTIAL_AREA_TRACKS;
        let a = self.areas.get(i)?;
        if a.bits.iter().any(|&w| w != 0) {
            return None;
        }
        let lp = a.load_point()?;
        self.areas.remove(i);
        Some((lp, self.extent_len(i)))
    }

    fn tie_area(&mut self, t: u64, (first, n): Area) -> bool {
        if t >= self.tracks || self.position(t).is_some() {
            return false;
        }
        let i = t / PARTIAL_AREA_TRACKS;
        if n != self.extent_len(i) {
            return false;
        }
        self.spare.remove(first);
        self.tie(i, first);
        true
    }

    fn pointers(&self) -> bool {
        true
    }

    fn packed(&self, t: u64) -> bool {
        (self.areas.get(t / PARTIAL_AREA_TRACKS))
            .is_some_and(|a| a.packed && a.load_point().is_none())
    }

    fn mark_single(&mut self, t: u64) {
        if let Some(a) = self.areas.get_mut(t / PARTIAL_AREA_TRACKS) {
            a.packed = true;
        }
    }

    fn release(&mut self, t: u64) -> Option<Area> {
        let i = t / PARTIAL_AREA_TRACKS;
        let n = self.extent_len(i);
        let a = self.areas.get_mut(i)?;
        let lp = a.load_point()?;
        a.lp = NO_LOAD_POINT;
        a.packed = true;
        if a.bits.iter().all(|&w| w == 0) {
            self.areas.remove(i);
        }
        Some((lp, n))
    }

    fn area_counts(&self) -> Vec<(Area, u64, u64)> {
        (self.areas.iter_ref())
            .filter_map(|&(i, a)| {
                let n = a.bits.iter().map(|w| u64::from(w.count_ones())).sum();
                a.load_point()
                    .map(|lp| ((lp, self.extent_len(i)), i * PARTIAL_AREA_TRACKS, n))
            })
            .collect()
    }

    fn area_tracks(&self) -> Vec<(Area, u64)> {
        let tied = (self.areas.iter_ref()).filter_map(|&(i, a)| {
            let first = i * PARTIAL_AREA_TRACKS;
            a.load_point().map(|lp| ((lp, self.extent_len(i)), first))
        });
        // A spare run is found by any track's look (`area_with`).
        tied.chain(self.spare.iter().map(|a| (a, 0))).collect()
    }

    fn areas(&self) -> Vec<Area> {
        let tied = (self.areas.iter_ref())
            .filter_map(|&(i, a)| a.load_point().map(|lp| (lp, self.extent_len(i))));
        tied.chain(self.spare.iter()).collect()
    }

    fn memory_bytes(&self) -> usize {
        self.areas.memory_bytes() + self.spare.memory_bytes()
    }
}
