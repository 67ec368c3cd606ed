//! maps: the five instant-copy metadata schemes of seed 000/001 FIG. 17
//! ("INSTANT COPY META-DATA TYPE"), each a [`TrackMap`].
//!
//! ```text
//!   scheme              file                memory held               slot of track t
//!   full-pointer        full_pointer.rs     16 B x tracks (lazy)      any (pointer)
//!   changed-pointer     changed_pointer.rs  ~34 B x entries           any (pointer)
//!   bitmap              bitmap.rs           1 bit x tracks            load_point + t
//!   multilevel-bitmap   multilevel.rs       1.5 bit x region of 512   load_point + t
//!                                           + 68 B x touched region
//!   partial-bitmap      partial.rs          ~24 B x touched extent    area.load_point + (t - area.first)
//!                                           of 64 tracks
//!   load-point schemes add ~34 B per entry that is zeroed or has a
//!   partial mask (the side table).
//!
//!   load-point schemes share loadpoint.rs: "has an entry" bits from the
//!   scheme, plus a side table (sparse.rs) of the entries that are not
//!   {own position, whole-track mask}: zeroed tracks and partial masks.
//! ```
//!
//! [`new_map`] makes an empty map (the full and multi-level bitmaps reserve
//! their whole area here); [`restore_map`] rebuilds one after a restart
//! from its persisted areas and entries (pages: [`crate::copy::page`]).
//!
//! Rules every scheme follows:
//! - A track beyond the map is never an error to look up (`get` is `None`)
//!   but `place` refuses it with [`ErrorKind::OutOfRange`].
//! - A `set` the map does not [`TrackMap::accepts`], or with an empty
//!   mask, is a caller bug: it panics in debug builds and is ignored (the
//!   map unchanged) in release builds.
//! - `areas()` is sorted by first slot; `entries()` by track.
//! - `memory_bytes()` counts the capacity of every heap block the map owns,
//!   not the allocator's own overhead.

#![forbid(unsafe_code)]

mod bitmap;
mod changed_pointer;
mod full_pointer;
mod loadpoint;
mod multilevel;
mod partial;
mod sparse;

#[cfg(test)]
mod tests;

pub use sparse::SparseTable;

use super::map::{Area, Entry, Scheme, SlotSource, TrackMap, ZERO_SLOT};
use crate::error::{Error, ErrorKind, Result};

/// The largest slot a map can hold: the persisted page encoding stores
/// `slot + 1` and keeps `u64::MAX` for [`ZERO_SLOT`], so `u64::MAX - 1`
/// cannot be written down.
pub const MAX_SLOT: u64 = u64::MAX - 2;

/// An empty map of `scheme` over `tracks` tracks. The full and multi-level
/// bitmaps reserve their area of `tracks` slots from `src` here; if that
/// fails, the error is `src`'s and nothing is held.
pub fn new_map(scheme: Scheme, tracks: u64, src: &mut dyn SlotSource) -> Result<Box<dyn TrackMap>> {
    check_tracks(tracks)?;
    let mut map: Box<dyn TrackMap> = match scheme {
        Scheme::FullPointer => Box::new(full_pointer::FullPointer::new(tracks)?),
        Scheme::ChangedPointer => Box::new(changed_pointer::ChangedPointer::new(tracks)),
        Scheme::Bitmap => Box::new(bitmap::new(tracks, src)?),
        Scheme::MultilevelBitmap => Box::new(multilevel::new(tracks, src)?),
        Scheme::PartialBitmap => Box::new(partial::new(tracks)),
    };
    // A whole-map area is reserved now: the first save stores it.
    map.log_all_areas();
    Ok(map)
}

/// Rebuilds a map of `scheme` over `tracks` tracks from the `areas` it had
/// reserved and its `entries` (any order). Anything inconsistent (no
/// tracks, a track beyond the map or listed twice, an empty mask, a
/// load-point slot off its position or outside the listed areas, areas
/// that overlap, hold unstorable slots or fit no part of the map) is
/// [`ErrorKind::Corrupt`] with a message naming it; a map too large for
/// memory is [`ErrorKind::NoSpace`], as from [`new_map`].
pub fn restore_map(
    scheme: Scheme,
    tracks: u64,
    areas: &[Area],
    entries: impl IntoIterator<Item = (u64, Entry)>,
) -> Result<Box<dyn TrackMap>> {
    check_tracks(tracks).map_err(|e| Error::corrupt(e.message()))?;
    let areas = check_areas(areas)?;
    if scheme == Scheme::PartialBitmap {
        let mut map = partial::restore(tracks, &areas)?;
        fill(&mut map, entries, |m, t, e| m.pos.adopt(t, e.slot))?;
        // A single slot of a packed extent must lie outside every area the
        // map lists (each track's look sees only its own extent's area).
        for (t, e) in map.entries() {
            let single = e.slot != ZERO_SLOT && map.position(t).map(|p| p.0) != Some(e.slot);
            let i = areas.partition_point(|&(a, _)| a <= e.slot);
            if single && i > 0 && e.slot < areas[i - 1].0 + areas[i - 1].1 {
                return Err(Error::corrupt(format!(
                    "partial-bitmap map: single slot {} of track {t} lies in the area at {}",
                    e.slot,
                    areas[i - 1].0
                )));
            }
        }
        return Ok(Box::new(map));
    }
    let mut map = restore_empty(scheme, tracks, &areas)?;
    fill(map.as_mut(), entries, |_, _, _| ())?;
    Ok(map)
}

/// Checks and sets each entry; `adopt` first lets the map tie a listed
/// area to the entry's track.
fn fill<M: TrackMap + ?Sized>(
    map: &mut M,
    entries: impl IntoIterator<Item = (u64, Entry)>,
    mut adopt: impl FnMut(&mut M, u64, Entry),
) -> Result<()> {
    for (t, e) in entries {
        adopt(map, t, e);
        check_entry(map, t, e)?;
        map.set(t, e);
    }
    Ok(())
}

/// The empty map a restore fills in, holding the validated `areas`.
fn restore_empty(scheme: Scheme, tracks: u64, areas: &[Area]) -> Result<Box<dyn TrackMap>> {
    if !scheme.load_point() && !areas.is_empty() {
        return Err(Error::corrupt(format!(
            "a {scheme} map reserves no areas, but {} are listed",
            areas.len()
        )));
    }
    match scheme {
        Scheme::FullPointer => Ok(Box::new(full_pointer::FullPointer::new(tracks)?)),
        Scheme::ChangedPointer => Ok(Box::new(changed_pointer::ChangedPointer::new(tracks))),
        Scheme::Bitmap => Ok(Box::new(bitmap::restore(
            tracks,
            whole_area(scheme, tracks, areas)?,
        )?)),
        Scheme::MultilevelBitmap => Ok(Box::new(multilevel::restore(
            tracks,
            whole_area(scheme, tracks, areas)?,
        )?)),
        Scheme::PartialBitmap => Ok(Box::new(partial::restore(tracks, areas)?)),
    }
}

/// The one area of `tracks` slots a whole-range bitmap must have listed.
fn whole_area(scheme: Scheme, tracks: u64, areas: &[Area]) -> Result<u64> {
    match areas {
        [(first, n)] if *n == tracks => Ok(*first),
        _ => Err(Error::corrupt(format!(
            "a {scheme} map of {tracks} tracks reserves one area of {tracks} slots, but {areas:?} is listed"
        ))),
    }
}

/// Checks one restored entry against the map being rebuilt.
fn check_entry<M: TrackMap + ?Sized>(map: &M, t: u64, e: Entry) -> Result<()> {
    let scheme = map.scheme();
    if t >= map.tracks() {
        return Err(Error::corrupt(format!(
            "{scheme} map: entry for track {t}, beyond the map's {} tracks",
            map.tracks()
        )));
    }
    if e.valid == 0 {
        return Err(Error::corrupt(format!(
            "{scheme} map: entry for track {t} has no valid granules"
        )));
    }
    if map.get(t).is_some() {
        return Err(Error::corrupt(format!(
            "{scheme} map: track {t} is listed twice"
        )));
    }
    if !map.accepts(t, e.slot) && !map.accepts_pointer(t, e.slot) {
        return Err(Error::corrupt(format!(
            "{scheme} map: slot {} of track {t} is not the track's position in a listed area",
            e.slot
        )));
    }
    Ok(())
}

/// Maps cover at least one track.
fn check_tracks(tracks: u64) -> Result<()> {
    match tracks {
        0 => Err(Error::invalid("a track map needs at least one track")),
        _ => Ok(()),
    }
}

/// Sorts `areas` and checks each is nonempty, holds storable slots and
/// overlaps no other.
fn check_areas(areas: &[Area]) -> Result<Vec<Area>> {
    let mut sorted = areas.to_vec();
    sorted.sort_unstable();
    let mut free_from = 0u64;
    for &(first, n) in &sorted {
        let end = area_end(first, n).ok_or_else(|| {
            Error::corrupt(format!(
                "area of {n} slots at {first} is empty or beyond the last slot"
            ))
        })?;
        if first < free_from {
            return Err(Error::corrupt(format!(
                "area of {n} slots at {first} overlaps the area before it"
            )));
        }
        free_from = end;
    }
    Ok(sorted)
}

/// One past the last slot of a nonempty area whose slots are all at most
/// [`MAX_SLOT`].
fn area_end(first: u64, n: u64) -> Option<u64> {
    let end = first.checked_add(n)?;
    (n > 0 && end - 1 <= MAX_SLOT).then_some(end)
}

/// Checks an area handed out by a [`SlotSource`].
fn check_new_area(first: u64, n: u64) -> Result<u64> {
    area_end(first, n).map(|_| first).ok_or_else(|| {
        Error::corrupt(format!(
            "the slot source returned an area of {n} slots at {first}, beyond the last slot"
        ))
    })
}

/// The error for a track beyond the map.
fn beyond(scheme: Scheme, t: u64, tracks: u64) -> Error {
    Error::new(
        ErrorKind::OutOfRange,
        format!("track {t} is beyond the {scheme} map's {tracks} tracks"),
    )
}

/// A caller bug: a `set` the map refuses. Panics in debug builds.
fn refused(scheme: Scheme, t: u64, e: Entry) {
    debug_assert!(false, "{scheme} map refuses set({t}, {e:?})");
}

/// Bit `i` of a word-packed bitmap (false beyond it).
fn bit(words: &[u64], i: u64) -> bool {
    word_index(i)
        .and_then(|w| words.get(w))
        .is_some_and(|w| w & (1 << (i % 64)) != 0)
}

/// Sets (`on`) or clears bit `i`; whether it changed. Beyond the bitmap:
/// false, nothing changed.
fn put_bit(words: &mut [u64], i: u64, on: bool) -> bool {
    let Some(w) = word_index(i).and_then(|w| words.get_mut(w)) else {
        return false;
    };
    let old = *w;
    let m = 1u64 << (i % 64);
    *w = if on { old | m } else { old & !m };
    *w != old
}

fn word_index(i: u64) -> Option<usize> {
    usize::try_from(i / 64).ok()
}

/// The set bits of `words`, ascending, numbered from `base`.
fn ones(words: &[u64], base: u64) -> impl Iterator<Item = u64> + '_ {
    (0u64..).zip(words).flat_map(move |(i, &w)| WordBits {
        w,
        base: base + i * 64,
    })
}

/// The set bits of one word.
struct WordBits {
    w: u64,
    base: u64,
}

impl Iterator for WordBits {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        if self.w == 0 {
            return None;
        }
        let b = u64::from(self.w.trailing_zeros());
        self.w &= self.w - 1;
        Some(self.base + b)
    }
}

/// A zeroed bitmap of `bits` bits.
fn bitmap_words(bits: u64) -> Result<Vec<u64>> {
    let words = usize::try_from(bits.div_ceil(64)).unwrap_or(usize::MAX);
    zeroed(words, 0)
}

/// `n` copies of `zero` (an all-zero value), allocated zeroed: the
/// allocator hands out fresh zero pages for a large vector, so this is
/// O(1) in time and the pages become resident as they are written. An
/// allocation that cannot be had is first probed for with `try_reserve`
/// (which, unlike `vec!`, fails instead of aborting the process):
/// [`ErrorKind::NoSpace`].
fn zeroed<T: Clone>(n: usize, zero: T) -> Result<Vec<T>> {
    Vec::<T>::new().try_reserve_exact(n).map_err(|_| {
        Error::new(
            ErrorKind::NoSpace,
            format!(
                "cannot allocate {} of map metadata ({n} entries): use a smaller volume or another scheme",
                crate::units::format_size(
                    u64::try_from(n.saturating_mul(std::mem::size_of::<T>())).unwrap_or(u64::MAX)
                )
            ),
        )
    })?;
    Ok(vec![zero; n])
}

/// Heap bytes of a vector's capacity.
fn cap_bytes<T>(v: &Vec<T>) -> usize {
    v.capacity().saturating_mul(std::mem::size_of::<T>())
}

/// The entry a map stores for `t` in release builds, for schemes whose
/// checks all live in `accepts`.
fn storable<M: TrackMap + ?Sized>(map: &M, t: u64, e: Entry) -> bool {
    let ok = e.valid != 0 && map.accepts(t, e.slot);
    if !ok {
        refused(map.scheme(), t, e);
    }
    ok
}

/// Slots of pointer schemes: any the page encoding can hold.
fn pointer_slot_ok(slot: u64) -> bool {
    slot <= MAX_SLOT || slot == ZERO_SLOT
}
