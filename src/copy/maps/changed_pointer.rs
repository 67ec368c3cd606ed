//! Pointers for changed tracks only: seed 000/001 FIG. 17, row "FULL
//! POINTER SCHEME / POINTER FOR CHANGED BLOCKS ONLY" (SEED-SPECS A.b.4
//! item 2): entries only for the tracks that diverged, pointing at any
//! slot; every other track resolves further up the copy tree.
//!
//! ```text
//!   SparseTable<Entry>: track -> { slot, valid }, sorted by track
//! ```
//!
//! The store is the chunked sorted table of `sparse.rs` rather than a
//! `BTreeMap`: `bench/copy_meta.rs` measures the two on random tracks
//! with lookups and inserts within the (shared) machine's noise of each
//! other, the table ~10% smaller resident, and its memory is counted
//! exactly rather than estimated. Lookup is O(log changed), as SEED-SPECS
//! A.d expects.

#![forbid(unsafe_code)]

use super::full_pointer::pointer_place;
use super::sparse::SparseTable;
use super::{pointer_slot_ok, storable};
use crate::copy::map::{Area, Entry, Scheme, SlotSource, TrackMap};
use crate::error::Result;

/// The sparse pointer map.
#[derive(Debug)]
pub(super) struct ChangedPointer {
    table: SparseTable<Entry>,
    tracks: u64,
}

impl ChangedPointer {
    pub(super) fn new(tracks: u64) -> ChangedPointer {
        ChangedPointer {
            table: SparseTable::new(),
            tracks,
        }
    }
}

impl TrackMap for ChangedPointer {
    fn scheme(&self) -> Scheme {
        Scheme::ChangedPointer
    }

    fn tracks(&self) -> u64 {
        self.tracks
    }

    fn get(&self, t: u64) -> Option<Entry> {
        self.table.get(t).copied()
    }

    fn place(&mut self, t: u64, src: &mut dyn SlotSource) -> Result<u64> {
        pointer_place(self, t, src)
    }

    fn set(&mut self, t: u64, e: Entry) {
        if storable(self, t, e) {
            self.table.insert(t, e);
        }
    }

    fn remove(&mut self, t: u64) -> Option<Entry> {
        self.table.remove(t)
    }

    fn accepts(&self, t: u64, slot: u64) -> bool {
        t < self.tracks && pointer_slot_ok(slot)
    }

    fn len(&self) -> u64 {
        u64::try_from(self.table.len()).unwrap_or(u64::MAX)
    }

    fn entries(&self) -> Box<dyn Iterator<Item = (u64, Entry)> + '_> {
        Box::new(self.table.iter())
    }

    fn areas(&self) -> Vec<Area> {
        Vec::new()
    }

    fn memory_bytes(&self) -> usize {
        self.table.memory_bytes()
    }
}
