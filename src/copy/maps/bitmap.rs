//! Full bit map for copied area: seed 000/001 FIG. 17, row "LOAD POINT &
//! OFFSET / FULL BIT MAP FOR COPIED AREA" (SEED-SPECS A.b.4 item 3): one
//! bit per track over the whole range, and one area of `tracks` slots
//! reserved at creation, so the slot of track t is `load_point + t`.
//!
//! ```text
//!   bits:  [u64; tracks / 64]   bit t = track t diverged (allocated zeroed)
//!   area:  load_point .. load_point + tracks
//!   masks and zeroes: the shared side table (loadpoint.rs)
//! ```
//!
//! The bits are allocated zeroed (calloc: fresh zero pages), so creation
//! is O(1) in time; `memory_bytes` counts the whole bitmap, `tracks / 8`
//! bytes.

#![forbid(unsafe_code)]

use super::loadpoint::{LoadPointMap, Positions};
use super::{beyond, bit, bitmap_words, cap_bytes, check_new_area, ones, put_bit};
use crate::copy::map::{Area, Scheme, SlotSource};
use crate::error::Result;

/// The bitmap scheme's map.
pub(super) type Bitmap = LoadPointMap<WholeBits>;

/// A new bitmap map, its area reserved from `src`.
pub(super) fn new(tracks: u64, src: &mut dyn SlotSource) -> Result<Bitmap> {
    let bits = bitmap_words(tracks)?;
    let load_point = check_new_area(src.alloc_area(tracks)?, tracks)?;
    Ok(LoadPointMap::new(WholeBits {
        bits,
        tracks,
        load_point,
    }))
}

/// An empty bitmap map over an area already reserved (a restart).
pub(super) fn restore(tracks: u64, load_point: u64) -> Result<Bitmap> {
    Ok(LoadPointMap::new(WholeBits {
        bits: bitmap_words(tracks)?,
        tracks,
        load_point,
    }))
}

/// One bit per track over the whole range.
#[derive(Debug)]
pub(super) struct WholeBits {
    bits: Vec<u64>,
    tracks: u64,
    load_point: u64,
}

impl Positions for WholeBits {
    fn scheme(&self) -> Scheme {
        Scheme::Bitmap
    }

    fn tracks(&self) -> u64 {
        self.tracks
    }

    fn test(&self, t: u64) -> bool {
        bit(&self.bits, t)
    }

    fn put(&mut self, t: u64, on: bool) -> bool {
        put_bit(&mut self.bits, t, on)
    }

    fn ones(&self) -> Box<dyn Iterator<Item = u64> + '_> {
        Box::new(ones(&self.bits, 0))
    }

    fn position(&self, t: u64) -> Option<u64> {
        (t < self.tracks).then(|| self.load_point + t)
    }

    fn reserve(&mut self, t: u64, _src: &mut dyn SlotSource) -> Result<u64> {
        self.position(t)
            .ok_or_else(|| beyond(Scheme::Bitmap, t, self.tracks))
    }

    fn area_of(&self, t: u64) -> Option<Area> {
        (t < self.tracks).then_some((self.load_point, self.tracks))
    }

    fn areas(&self) -> Vec<Area> {
        vec![(self.load_point, self.tracks)]
    }

    fn memory_bytes(&self) -> usize {
        cap_bytes(&self.bits)
    }
}
