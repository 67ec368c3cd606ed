//! Multi-level bit maps: seed 000/001 FIG. 17, row "LOAD POINT & OFFSET /
//! MULTI-LEVEL BIT MAPS" (SEED-SPECS A.b.4 item 4): a top-level bit per
//! region of [`REGION_TRACKS`] tracks says "some track here diverged";
//! a lower-level page of one bit per track exists only for regions whose
//! top bit is set. The whole area is reserved at creation, as for the full
//! bit map: the slot of track t is `load_point + t`.
//!
//! ```text
//!   top:   [u64; regions / 64]    bit r = region r has a page
//!   rank:  [u32; regions / 64]    set top bits before each top word
//!   order: [u32; set top bits]    arena index of each page, in region order
//!   arena: [[u64; 8]; ..]         pages: 512 bits, one per track (+ free list)
//!   area:  load_point .. load_point + tracks
//!
//!   page of region r = arena[order[rank[r / 64] + ones of top below r]]
//! ```
//!
//! A lookup is O(levels): a bit test, and for a set bit a rank and two
//! indexed loads. An untouched region costs its top bit and half a bit of
//! rank; a touched one 68 bytes. A page is freed (its top bit cleared)
//! when its last track is removed; the arena keeps its capacity and reuses
//! freed pages. Setting or clearing a top bit shifts `order` and updates
//! `rank` after it: O(regions) at worst, once per region.

#![forbid(unsafe_code)]

use super::loadpoint::{LoadPointMap, Positions};
use super::{beyond, bit, bitmap_words, cap_bytes, check_new_area, ones, put_bit, zeroed};
use crate::copy::map::{Area, Scheme, SlotSource};
use crate::error::{Error, Result};

/// log2 of [`REGION_TRACKS`].
const REGION_SHIFT: u32 = 9;

/// Tracks per region of the top level: one lower page is 64 bytes, a
/// cache line.
pub const REGION_TRACKS: u64 = 1 << REGION_SHIFT;

/// Words of one lower page.
const PAGE_WORDS: usize = 8;

type Page = [u64; PAGE_WORDS];

/// The multi-level bitmap scheme's map.
pub(super) type Multilevel = LoadPointMap<TwoLevel>;

/// A new multi-level map, its area reserved from `src`.
pub(super) fn new(tracks: u64, src: &mut dyn SlotSource) -> Result<Multilevel> {
    let levels = TwoLevel::new(tracks, 0)?;
    let load_point = check_new_area(src.alloc_area(tracks)?, tracks)?;
    Ok(LoadPointMap::new(TwoLevel {
        load_point,
        ..levels
    }))
}

/// An empty multi-level map over an area already reserved (a restart).
pub(super) fn restore(tracks: u64, load_point: u64) -> Result<Multilevel> {
    Ok(LoadPointMap::new(TwoLevel::new(tracks, load_point)?))
}

/// The two levels of bits.
#[derive(Debug)]
pub(super) struct TwoLevel {
    top: Vec<u64>,
    rank: Vec<u32>,
    order: Vec<u32>,
    arena: Vec<Page>,
    free: Vec<u32>,
    tracks: u64,
    load_point: u64,
}

impl TwoLevel {
    fn new(tracks: u64, load_point: u64) -> Result<TwoLevel> {
        let regions = tracks.div_ceil(REGION_TRACKS);
        if u32::try_from(regions).is_err() {
            return Err(Error::invalid(format!(
                "a multilevel-bitmap map of {tracks} tracks has too many regions: use another scheme"
            )));
        }
        let top = bitmap_words(regions)?;
        Ok(TwoLevel {
            rank: zeroed(top.len(), 0)?,
            top,
            order: Vec::new(),
            arena: Vec::new(),
            free: Vec::new(),
            tracks,
            load_point,
        })
    }

    /// Position of region `r`'s page in `order`, if its top bit is set.
    fn index(&self, r: u64) -> Option<usize> {
        let w = usize::try_from(r / 64).ok()?;
        let word = *self.top.get(w)?;
        let below = word & ((1u64 << (r % 64)) - 1);
        let rank = usize::try_from(*self.rank.get(w)?).ok()?;
        (word & (1u64 << (r % 64)) != 0).then(|| rank + below.count_ones() as usize)
    }

    fn page(&self, r: u64) -> Option<&Page> {
        let a = *self.order.get(self.index(r)?)?;
        self.arena.get(usize::try_from(a).ok()?)
    }

    fn page_mut(&mut self, r: u64) -> Option<&mut Page> {
        let a = *self.order.get(self.index(r)?)?;
        self.arena.get_mut(usize::try_from(a).ok()?)
    }

    /// Adds one to (`up`) or takes one from the rank of every top word
    /// after the one holding region `r`.
    fn shift_rank(&mut self, r: u64, up: bool) {
        let from = usize::try_from(r / 64 + 1).unwrap_or(usize::MAX);
        for x in self.rank.iter_mut().skip(from) {
            *x = if up {
                x.wrapping_add(1)
            } else {
                x.wrapping_sub(1)
            };
        }
    }

    /// Gives region `r` a zeroed page (its top bit is clear).
    fn add_page(&mut self, r: u64) {
        let a = match self.free.pop() {
            Some(a) => a,
            None => {
                self.arena.push([0; PAGE_WORDS]);
                u32::try_from(self.arena.len() - 1).unwrap_or(u32::MAX)
            }
        };
        if let Some(p) = usize::try_from(a).ok().and_then(|a| self.arena.get_mut(a)) {
            *p = [0; PAGE_WORDS];
        }
        put_bit(&mut self.top, r, true);
        self.shift_rank(r, true);
        if let Some(i) = self.index(r).filter(|&i| i <= self.order.len()) {
            self.order.insert(i, a);
        }
    }

    /// Frees region `r`'s page (its top bit is set).
    fn drop_page(&mut self, r: u64) {
        if let Some(i) = self.index(r).filter(|&i| i < self.order.len()) {
            self.free.push(self.order.remove(i));
        }
        put_bit(&mut self.top, r, false);
        self.shift_rank(r, false);
    }

    fn set(&mut self, t: u64) -> bool {
        let r = t >> REGION_SHIFT;
        if !bit(&self.top, r) {
            self.add_page(r);
        }
        (self.page_mut(r)).is_some_and(|p| put_bit(p, t % REGION_TRACKS, true))
    }

    fn clear(&mut self, t: u64) -> bool {
        let r = t >> REGION_SHIFT;
        let Some(p) = self.page_mut(r) else {
            return false;
        };
        let changed = put_bit(p, t % REGION_TRACKS, false);
        if p.iter().all(|&w| w == 0) {
            self.drop_page(r);
        }
        changed
    }
}

impl Positions for TwoLevel {
    fn scheme(&self) -> Scheme {
        Scheme::MultilevelBitmap
    }

    fn tracks(&self) -> u64 {
        self.tracks
    }

    fn test(&self, t: u64) -> bool {
        let r = t >> REGION_SHIFT;
        (self.page(r)).is_some_and(|p| bit(p, t % REGION_TRACKS))
    }

    fn put(&mut self, t: u64, on: bool) -> bool {
        match (t < self.tracks, on) {
            (false, _) => false,
            (true, true) => self.set(t),
            (true, false) => self.clear(t),
        }
    }

    fn ones(&self) -> Box<dyn Iterator<Item = u64> + '_> {
        Box::new(ones(&self.top, 0).flat_map(|r| {
            let page = self.page(r).map_or(&[][..], |p| &p[..]);
            ones(page, r << REGION_SHIFT)
        }))
    }

    fn position(&self, t: u64) -> Option<u64> {
        (t < self.tracks).then(|| self.load_point + t)
    }

    fn reserve(&mut self, t: u64, _src: &mut dyn SlotSource) -> Result<u64> {
        self.position(t)
            .ok_or_else(|| beyond(Scheme::MultilevelBitmap, t, self.tracks))
    }

    fn area_of(&self, t: u64) -> Option<Area> {
        (t < self.tracks).then_some((self.load_point, self.tracks))
    }

    fn areas(&self) -> Vec<Area> {
        vec![(self.load_point, self.tracks)]
    }

    fn memory_bytes(&self) -> usize {
        let index = cap_bytes(&self.top) + cap_bytes(&self.rank) + cap_bytes(&self.order);
        index + cap_bytes(&self.arena) + cap_bytes(&self.free)
    }
}
