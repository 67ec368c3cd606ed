//! The per-node track map of an instant copy: the five metadata schemes of
//! seed 000/001 FIG. 17 behind one interface.
//!
//! ```text
//!   FIG. 17 "INSTANT COPY META-DATA TYPE"
//!   original mapping      scheme                      where a track's data is
//!   full pointer scheme   full pointer table          any slot (one entry per track)
//!                         pointers for changed only   any slot (entries for changed tracks)
//!   load point & offset   full bit map, copied area   area load point + offset
//!                         multi-level bit maps        area load point + offset
//!                         partial area bit maps       partial area's load point + offset
//! ```
//!
//! A map answers, per track, "unchanged" (`None`: look further up the copy
//! tree) or "here" (an [`Entry`]: the store slot holding this node's data
//! for the track, with a mask of the valid granules — sub-track valid bits,
//! so a 4 KiB write into a 64 KiB track neither copies nor redirects more
//! than it must: US 6,779,095 claim 8, "portions of different sizes").
//!
//! Pointer schemes accept any slot; load-point schemes place each track at
//! a fixed position of an area they reserve (whole at creation for the full
//! and multi-level bitmaps, per partial area on first touch for the
//! partial-area bitmaps) and so never share or adopt another node's slot;
//! a partial area the free-space collection packed gives its extent's
//! tracks single slots of their own (`copy/pack.rs`).

#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use crate::error::Result;
pub use crate::meta::model::copy::{Area, Scheme};

/// `Entry::slot` value meaning "reads as zeroes, no slot" (a zeroed or
/// discarded track).
pub const ZERO_SLOT: u64 = u64::MAX;

/// Entries per persisted page (16 bytes each: 4 KiB pages).
pub const PAGE_ENTRIES: u64 = 256;

/// A node's data for one track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Store slot holding the track's data, or [`ZERO_SLOT`].
    pub slot: u64,
    /// Granules of the track valid in this entry (bit g = granule g);
    /// never zero in a stored entry.
    pub valid: u64,
}

/// Where maps get store slots from.
pub trait SlotSource {
    /// One free slot, anywhere.
    fn alloc_slot(&mut self) -> Result<u64>;
    /// A run of `n` contiguous free slots; returns the first.
    fn alloc_area(&mut self, n: u64) -> Result<u64>;
}

/// One node's track map.
pub trait TrackMap: Send + Sync {
    fn scheme(&self) -> Scheme;

    /// Tracks the map covers.
    fn tracks(&self) -> u64;

    /// The entry of track `t`, if this node holds data for it.
    fn get(&self, t: u64) -> Option<Entry>;

    /// The slot a new entry for `t` must use. Load-point schemes return
    /// their fixed position (reserving the partial area on first touch);
    /// pointer schemes take a fresh slot from `src`.
    fn place(&mut self, t: u64, src: &mut dyn SlotSource) -> Result<u64>;

    /// Sets (or replaces) the entry of `t`. Load-point schemes accept only
    /// the slot `place` gave for `t`, or [`ZERO_SLOT`]; see
    /// [`TrackMap::accepts`].
    fn set(&mut self, t: u64, e: Entry);

    /// Removes the entry of `t`.
    fn remove(&mut self, t: u64) -> Option<Entry>;

    /// Whether `set(t, Entry { slot, .. })` is allowed: always for pointer
    /// schemes, only for the track's own position (or zero) for load-point
    /// schemes.
    fn accepts(&self, t: u64, slot: u64) -> bool;

    /// Tracks with an entry ("tracks diverged").
    fn len(&self) -> u64;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry, in ascending track order.
    fn entries(&self) -> Box<dyn Iterator<Item = (u64, Entry)> + '_>;

    /// Areas the map has reserved (load-point schemes); their slots belong
    /// to the map whether or not an entry uses them.
    fn areas(&self) -> Vec<Area>;

    /// The reserved area holding `slot`, which is the slot of an entry of
    /// track `t` (of this map or another node's): load-point schemes place
    /// a track only at its own position, so the area of `t`'s extent is
    /// the one to look at first (a scan of every area per track made a
    /// collection CPU-bound).
    fn area_with(&self, _t: u64, slot: u64) -> Option<Area> {
        self.areas()
            .into_iter()
            .find(|&(a, k)| slot >= a && slot < a + k)
    }

    /// Each reserved area with a track whose position it holds (any track
    /// for an area tied to no extent yet): what [`TrackMap::lists_area`]
    /// wants.
    fn area_tracks(&self) -> Vec<(Area, u64)> {
        self.areas().into_iter().map(|a| (a, 0)).collect()
    }

    /// Track `t`'s fixed slot and the area holding it, if the map has
    /// reserved one for it (load-point schemes), entry or not.
    fn position(&self, _t: u64) -> Option<(u64, Area)> {
        None
    }

    /// Heap bytes the map's metadata occupies.
    fn memory_bytes(&self) -> usize;

    /// Store slots the map holds: its areas, and its pointer slots outside
    /// them.
    fn held_slots(&self) -> u64 {
        let areas: u64 = self.areas().iter().map(|a| a.1).sum();
        areas + self.singles().count() as u64
    }

    /// The entries' slots outside the map's areas (pointer slots), by
    /// track: one look at the track's area each (`area_with`), so a pass
    /// costs the entries, not entries times areas.
    fn singles(&self) -> Box<dyn Iterator<Item = (u64, u64)> + '_> {
        Box::new(
            (self.entries())
                .filter(|&(t, e)| e.slot != ZERO_SLOT && self.area_with(t, e.slot).is_none())
                .map(|(t, e)| (t, e.slot)),
        )
    }

    /// Whether the map lists the area starting at slot `first`, which
    /// holds a position of track `t` (an area is only ever handed over
    /// within its extent, so one look at `t`'s area).
    fn lists_area(&self, t: u64, first: u64) -> bool {
        self.area_with(t, first).is_some_and(|(a, _)| a == first)
    }

    /// Gives up the reserved area holding track `t`'s position if no entry
    /// uses it any longer, and returns it for the caller to free. Only for
    /// a map that will not `place` again (a frozen node losing entries the
    /// nodes below it cover). Only the partial-area scheme reserves per
    /// extent; a whole-map area goes with its node.
    fn shed(&mut self, _t: u64) -> Option<Area> {
        None
    }

    /// Whether `set(t, Entry { slot, .. })` may store `slot` as a pointer
    /// although it is not the track's position: a partial-bitmap map whose
    /// extent was packed by the free-space collection (`copy/compact.rs`)
    /// holds its tracks in single slots outside its areas. Pointer schemes
    /// say so through [`TrackMap::accepts`] already.
    fn accepts_pointer(&self, _t: u64, _slot: u64) -> bool {
        false
    }

    /// Gives up the area holding track `t`'s position although entries of
    /// its extent remain (the collection moved every one of them into
    /// single slots first): the extent is packed from then on, and `place`
    /// gives its new tracks single slots. The area, for the caller to free.
    fn release_area(&mut self, _t: u64) -> Option<Area> {
        None
    }

    /// Each reserved area tied to an extent, with the extent's first track
    /// and how many of its tracks have an entry (zeroed ones included): the
    /// active counts the free-space collection picks areas by. Only the
    /// partial-area scheme reports any.
    fn area_counts(&self) -> Vec<(Area, u64, u64)> {
        Vec::new()
    }

    /// Ties `area`, another node's area holding track `t`'s extent at the
    /// same offsets, to `t`'s extent, if this map has no area there: a
    /// collection hands an area over with its data instead of copying it.
    /// Whether it did; only the partial-area scheme can.
    fn take_area(&mut self, _t: u64, _area: Area) -> bool {
        false
    }

    /// Areas reserved (`Some(slots)`) or given back (`None`) since the last
    /// call, by first slot: what the next save stores. Pointer schemes
    /// reserve none.
    fn take_area_changes(&mut self) -> Vec<(u64, Option<u64>)> {
        Vec::new()
    }

    /// A save of `changes` failed: they are still to store (behind any
    /// newer change of the same area).
    fn keep_area_changes(&mut self, _changes: Vec<(u64, Option<u64>)>) {}

    /// Logs every area as reserved: a new map, or one rebuilt from a record
    /// that held its areas inline (pool format 1).
    fn log_all_areas(&mut self) {}

    /// Whether area changes wait for a save.
    fn areas_changed(&self) -> bool {
        false
    }
}

/// Tracks per partial area of [`Scheme::PartialBitmap`].
pub const PARTIAL_AREA_TRACKS: u64 = 64;

/// Rows added or changed (`Some`) or removed (`None`) since the last save
/// took them, by key (a first slot): what the next save stores of a store's
/// chunks or a map's areas. The newest change of a key wins.
#[derive(Debug)]
pub struct ChangeLog<V>(BTreeMap<u64, Option<V>>);

impl<V> Default for ChangeLog<V> {
    fn default() -> Self {
        ChangeLog(BTreeMap::new())
    }
}

impl<V> ChangeLog<V> {
    pub fn note(&mut self, key: u64, v: Option<V>) {
        self.0.insert(key, v);
    }

    /// The changes, for a save; the log starts empty again.
    pub fn take(&mut self) -> Vec<(u64, Option<V>)> {
        std::mem::take(&mut self.0).into_iter().collect()
    }

    /// A save of `changes` failed: they are still to store, behind any
    /// newer change of the same key.
    pub fn keep(&mut self, changes: Vec<(u64, Option<V>)>) {
        for (k, v) in changes {
            self.0.entry(k).or_insert(v);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
