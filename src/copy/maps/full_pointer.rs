//! Full pointer table: seed 000/001 FIG. 17, row "FULL POINTER SCHEME /
//! FULL POINTER TABLE" (SEED-SPECS A.b.4 item 1): one entry per track,
//! dense, pointing at any slot.
//!
//! ```text
//!   table: [ [slot, valid] ; tracks ]     valid == 0 means "no entry"
//! ```
//!
//! Stored entries never have an empty mask, so `valid == 0` marks an
//! absent one and any slot (even [`ZERO_SLOT`]) needs no encoding. The
//! table is allocated zeroed (fresh zero pages from the allocator), so
//! creating a 1 TiB map (16 Mi tracks, 256 MiB) is O(1) in time and the
//! pages become resident only as tracks are written; a table the machine
//! cannot hold is [`crate::ErrorKind::NoSpace`], not an abort. [`TrackMap::memory_bytes`]
//! counts the whole allocation all the same: that is what the scheme
//! commits to.

#![forbid(unsafe_code)]

use super::{beyond, cap_bytes, pointer_slot_ok, storable, zeroed};
use crate::copy::map::{Area, Entry, Scheme, SlotSource, TrackMap};
use crate::error::{Error, Result};

/// The dense table.
#[derive(Debug)]
pub(super) struct FullPointer {
    table: Vec<[u64; 2]>,
    tracks: u64,
    count: u64,
}

impl FullPointer {
    pub(super) fn new(tracks: u64) -> Result<FullPointer> {
        let n = usize::try_from(tracks).unwrap_or(usize::MAX);
        Ok(FullPointer {
            table: zeroed(n, [0; 2])?,
            tracks,
            count: 0,
        })
    }

    fn cell(&self, t: u64) -> Option<&[u64; 2]> {
        self.table.get(usize::try_from(t).ok()?)
    }

    fn cell_mut(&mut self, t: u64) -> Option<&mut [u64; 2]> {
        self.table.get_mut(usize::try_from(t).ok()?)
    }
}

impl TrackMap for FullPointer {
    fn scheme(&self) -> Scheme {
        Scheme::FullPointer
    }

    fn tracks(&self) -> u64 {
        self.tracks
    }

    fn get(&self, t: u64) -> Option<Entry> {
        match self.cell(t)? {
            [_, 0] => None,
            &[slot, valid] => Some(Entry { slot, valid }),
        }
    }

    fn place(&mut self, t: u64, src: &mut dyn SlotSource) -> Result<u64> {
        pointer_place(self, t, src)
    }

    fn set(&mut self, t: u64, e: Entry) {
        if !storable(self, t, e) {
            return;
        }
        let Some(c) = self.cell_mut(t) else {
            return;
        };
        let was_empty = c[1] == 0;
        *c = [e.slot, e.valid];
        self.count += u64::from(was_empty);
    }

    fn remove(&mut self, t: u64) -> Option<Entry> {
        let e = self.get(t)?;
        if let Some(c) = self.cell_mut(t) {
            *c = [0; 2];
        }
        self.count -= 1;
        Some(e)
    }

    fn accepts(&self, t: u64, slot: u64) -> bool {
        t < self.tracks && pointer_slot_ok(slot)
    }

    fn len(&self) -> u64 {
        self.count
    }

    fn entries(&self) -> Box<dyn Iterator<Item = (u64, Entry)> + '_> {
        Box::new(
            (0u64..)
                .zip(&self.table)
                .filter(|(_, c)| c[1] != 0)
                .map(|(t, &[slot, valid])| (t, Entry { slot, valid })),
        )
    }

    fn areas(&self) -> Vec<Area> {
        Vec::new()
    }

    /// The whole table, resident or not.
    fn memory_bytes(&self) -> usize {
        cap_bytes(&self.table)
    }
}

/// `place` of the pointer schemes: a fresh slot from `src` for a track of
/// the map.
pub(super) fn pointer_place(map: &dyn TrackMap, t: u64, src: &mut dyn SlotSource) -> Result<u64> {
    if t >= map.tracks() {
        return Err(beyond(map.scheme(), t, map.tracks()));
    }
    let slot = src.alloc_slot()?;
    if !pointer_slot_ok(slot) {
        return Err(Error::corrupt(format!(
            "the slot source returned slot {slot}, beyond the last slot"
        )));
    }
    Ok(slot)
}
