//! The additional physical storage area of a copy family (SEED-SPECS A.b.5,
//! "new memory space"): slots of one track each, in chunks of a RAID
//! group's address space.
//!
//! ```text
//!   chunk (group offset, n slots)   slot ids first..first+n, numbered
//!   ┌────┬────┬────┬────┬─ ─ ─┐    across chunks in the order they came;
//!   │ s0 │ s1 │ s2 │ s3 │ ... │    a chunk that empties goes back to the
//!   └────┴────┴────┴────┴─ ─ ─┘    group (its space is discarded)
//! ```
//!
//! Every chunk begins with its label (`label.rs`): a head block and one
//! descriptor per slot, in whole tracks before the first slot.
//!
//! Single slots (pointer schemes) come from any chunk with room, else from
//! a new chunk of [`CHUNK_SLOTS`]; an area (load-point schemes) is a chunk
//! of its own. Freed slots are *pending* until the next metadata commit —
//! a slot may not be reused while the committed metadata still points at it
//! — and then *retired* until no read that could have been planned on them
//! is in flight (`fence.rs`): only then are they free.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use crate::copy::map::{ChangeLog, SlotSource};
use crate::error::{Error, ErrorKind, Result};
pub use crate::meta::model::copy::Chunk;

/// Slots per chunk for single-slot allocation (64 MiB at 64 KiB tracks).
pub const CHUNK_SLOTS: u64 = 1024;

/// Gets space from the group: returns the group offset of `bytes` new
/// bytes, or `ErrorKind::NoSpace`.
pub type Grow = Box<dyn FnMut(u64) -> Result<u64> + Send + Sync>;

struct ChunkState {
    chunk: Chunk,
    /// One bit per slot: in use (or pending free).
    used: Vec<u64>,
    in_use: u64,
    /// Whether single slots may be taken from it (not an area chunk).
    shared: bool,
}

impl ChunkState {
    fn set(&mut self, i: u64, v: bool) {
        let w = usize::try_from(i / 64).unwrap_or(usize::MAX);
        if let Some(x) = self.used.get_mut(w) {
            let was = *x & (1 << (i % 64)) != 0;
            if v {
                *x |= 1 << (i % 64);
            } else {
                *x &= !(1 << (i % 64));
            }
            match (was, v) {
                (false, true) => self.in_use += 1,
                (true, false) => self.in_use -= 1,
                _ => {}
            }
        }
    }

    fn first_free(&self) -> Option<u64> {
        for (w, &x) in self.used.iter().enumerate() {
            if x != u64::MAX {
                let i = (w as u64) * 64 + u64::from((!x).trailing_zeros());
                if i < self.chunk.slots {
                    return Some(i);
                }
            }
        }
        None
    }
}

/// The store of one family.
pub struct Store {
    track: u64,
    chunks: BTreeMap<u64, ChunkState>,
    next_slot: u64,
    /// Slots freed since the last commit, retired at the next one.
    pending: Vec<u64>,
    /// Slots the committed metadata no longer uses, by the read epoch
    /// they were retired in (`fence.rs`), not yet reusable.
    retired: Vec<(u64, Vec<u64>)>,
    /// The read epoch reads count themselves in (starts at 1).
    epoch: u64,
    grow: Grow,
    /// Chunks emptied and not yet handed back (group offset, bytes): only
    /// once the save that removes their rows is durable, or a crash could
    /// find the database still listing a chunk whose space the group gave
    /// to someone else.
    released: Vec<(u64, u64)>,
    /// Chunks emptied whose removal is not saved yet: first slot -> (group
    /// offset of the label, bytes, whether it has a label).
    unsaved_release: std::collections::BTreeMap<u64, (u64, u64, bool)>,
    /// Slots of a chunk for single slots.
    chunk_slots: u64,
    /// Every shared chunk below this key has no free slot, and below
    /// `area_hint` no free word: the searches start there, so taking a slot
    /// does not scan every chunk of a store that has thousands, and the
    /// lowest chunk with room is still the one used (freed slots are
    /// reused first, so high chunks can empty and go back).
    hint: u64,
    area_hint: u64,
    /// Chunks added (`Some`) or removed (`None`) since the last save took
    /// them, by first slot: what the next save stores.
    log: ChangeLog<Chunk>,
    /// Whether new chunks get a label (tests of the placement turn it off).
    labels: bool,
}

impl Store {
    /// A store over `chunks` (from the family record), with every slot free;
    /// the caller marks used slots with [`Store::mark_used`].
    pub fn new(track: u64, chunks: Vec<Chunk>, grow: Grow) -> Store {
        let next_slot = chunks
            .iter()
            .map(|c| c.first_slot + c.slots)
            .max()
            .unwrap_or(0);
        let chunks = chunks
            .into_iter()
            .map(|c| {
                let words = usize::try_from(c.slots.div_ceil(64)).unwrap_or(0);
                (
                    c.first_slot,
                    ChunkState {
                        shared: true,
                        chunk: c,
                        used: vec![0; words],
                        in_use: 0,
                    },
                )
            })
            .collect();
        Store {
            track,
            chunks,
            next_slot,
            pending: Vec::new(),
            retired: Vec::new(),
            epoch: 1,
            grow,
            released: Vec::new(),
            unsaved_release: Default::default(),
            chunk_slots: CHUNK_SLOTS,
            hint: 0,
            area_hint: 0,
            log: ChangeLog::default(),
            labels: true,
        }
    }

    /// New chunks get no label (a test's group offsets stay simple).
    pub fn without_labels(mut self) -> Store {
        self.labels = false;
        self
    }

    /// Where slot `slot`'s descriptor lives: the chunk (its label's group
    /// offset and first slot), and the slot's index in it; None for a slot
    /// of no chunk or of an unlabelled one.
    pub fn label_of(&self, slot: u64) -> Option<(u64, u64, u64)> {
        let c = self.chunk_of(slot).filter(|c| c.chunk.head > 0)?;
        Some((
            c.chunk.group_off - c.chunk.head,
            c.chunk.first_slot,
            slot - c.chunk.first_slot,
        ))
    }

    /// Uses chunks of `n` slots for single slots (tests use small ones).
    pub fn with_chunk_slots(mut self, n: u64) -> Store {
        self.chunk_slots = n.max(1);
        self
    }

    pub fn track(&self) -> u64 {
        self.track
    }

    fn chunk_of(&self, slot: u64) -> Option<&ChunkState> {
        self.chunks
            .range(..=slot)
            .next_back()
            .map(|(_, c)| c)
            .filter(|c| slot < c.chunk.first_slot + c.chunk.slots)
    }

    fn chunk_of_mut(&mut self, slot: u64) -> Option<&mut ChunkState> {
        self.chunks
            .range_mut(..=slot)
            .next_back()
            .map(|(_, c)| c)
            .filter(|c| slot < c.chunk.first_slot + c.chunk.slots)
    }

    /// Group offset of a slot.
    pub fn offset(&self, slot: u64) -> Result<u64> {
        let c = self.chunk_of(slot).ok_or_else(|| {
            Error::corrupt(format!(
                "copy metadata points at slot {slot}, which no chunk holds"
            ))
        })?;
        Ok(c.chunk.group_off + (slot - c.chunk.first_slot) * self.track)
    }

    /// The first slot after `slot`'s chunk (slots up to it lie at
    /// consecutive group offsets).
    pub fn chunk_end(&self, slot: u64) -> Option<u64> {
        self.chunk_of(slot)
            .map(|c| c.chunk.first_slot + c.chunk.slots)
    }

    /// Marks a slot used (loading metadata, or an area's slots).
    pub fn mark_used(&mut self, slot: u64) -> Result<()> {
        let c = self
            .chunk_of_mut(slot)
            .ok_or_else(|| Error::corrupt(format!("slot {slot} lies in no chunk of the store")))?;
        let i = slot - c.chunk.first_slot;
        c.set(i, true);
        Ok(())
    }

    /// Marks a run as an area: used, and never handed out as single slots.
    pub fn mark_area(&mut self, first: u64, n: u64) -> Result<()> {
        let c = self
            .chunk_of_mut(first)
            .filter(|c| first + n <= c.chunk.first_slot + c.chunk.slots)
            .ok_or_else(|| {
                Error::corrupt(format!(
                    "area of {n} slots at {first} lies in no chunk of the store"
                ))
            })?;
        // Whole words at once: a full-bitmap area has a slot per track.
        let (mut i, end) = (first - c.chunk.first_slot, first - c.chunk.first_slot + n);
        while i < end {
            if i % 64 == 0 && end - i >= 64 {
                let w = usize::try_from(i / 64).unwrap_or(usize::MAX);
                if let Some(x) = c.used.get_mut(w) {
                    c.in_use += u64::from((!*x).count_ones());
                    *x = u64::MAX;
                }
                i += 64;
            } else {
                c.set(i, true);
                i += 1;
            }
        }
        Ok(())
    }

    /// Frees a slot once the metadata that no longer uses it is committed.
    pub fn free_later(&mut self, slot: u64) {
        self.pending.push(slot);
    }

    /// Frees an area once committed.
    pub fn free_area_later(&mut self, first: u64, n: u64) {
        self.pending.extend(first..first + n);
    }

    /// Number of slots freed and waiting for a commit.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Slots freed and waiting for a commit.
    pub fn take_pending(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.pending)
    }

    /// Whether a chunk begins at slot `first`.
    pub fn has_chunk(&self, first: u64) -> bool {
        self.chunks.contains_key(&first)
    }

    /// The read epoch: a read counts itself in the epoch it began in
    /// (`fence.rs`).
    pub fn read_epoch(&self) -> u64 {
        self.epoch
    }

    /// Slots whose freeing is now committed: reusable once every read
    /// that began in this epoch or before ended ([`Store::reuse_retired`]).
    pub fn retire(&mut self, slots: Vec<u64>) {
        if !slots.is_empty() {
            self.retired.push((self.epoch, slots));
        }
    }

    /// Slots retired and not yet reusable.
    pub fn retired_len(&self) -> usize {
        self.retired.iter().map(|(_, s)| s.len()).sum()
    }

    /// Releases the retired slots no read in flight can have planned on,
    /// `ended(e)` telling whether every read that began in epoch `e` ended
    /// (asked under the state's write lock: no read begins meanwhile), and
    /// advances the epoch past each such one. Whether any slot came free.
    pub fn reuse_retired(&mut self, ended: impl Fn(u64) -> bool) -> bool {
        let mut any = false;
        // Epoch - 1, then the epoch itself: with no read in flight, what
        // this epoch retired is reusable at once.
        for _ in 0..2 {
            let prev = self.epoch - 1;
            if !ended(prev) {
                break;
            }
            let (ready, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retired)
                .into_iter()
                .partition(|&(e, _)| e <= prev);
            self.retired = wait;
            for (_, slots) in ready {
                any = true;
                self.release(slots);
            }
            self.epoch += 1;
        }
        any
    }

    /// Releases slots no committed metadata and no read in flight uses;
    /// chunks that empty go back to the group (see
    /// [`Store::take_released`]).
    pub fn release(&mut self, slots: Vec<u64>) {
        for s in slots {
            if let Some(c) = self.chunk_of_mut(s) {
                let i = s - c.chunk.first_slot;
                c.set(i, false);
                let k = c.chunk.first_slot;
                self.hint = self.hint.min(k);
                self.area_hint = self.area_hint.min(k);
            }
        }
        let empty: Vec<u64> = self
            .chunks
            .iter()
            .filter(|(_, c)| c.in_use == 0)
            .map(|(&k, _)| k)
            .collect();
        for k in empty {
            if let Some(c) = self.chunks.remove(&k) {
                let space = (
                    c.chunk.group_off - c.chunk.head,
                    c.chunk.slots * self.track + c.chunk.head,
                    c.chunk.head > 0,
                );
                self.unsaved_release.insert(k, space);
                self.log.note(k, None);
            }
        }
    }

    /// A save of the chunk `changes` is durable: the chunks it removed go
    /// back to the group ([`Store::take_released`]).
    pub fn chunks_saved(&mut self, changes: &[(u64, Option<Chunk>)]) {
        for (k, c) in changes {
            if let (None, Some((at, bytes, _))) = (c, self.unsaved_release.remove(k)) {
                self.released.push((at, bytes));
            }
        }
    }

    /// Where the label of chunk `first`, emptied and removed by the save
    /// being made, lies, if it has one (the save clears it with the row).
    pub fn removed_label(&self, first: u64) -> Option<u64> {
        (self.unsaved_release.get(&first)).and_then(|&(at, _, labelled)| labelled.then_some(at))
    }

    /// Chunks handed back to the group since the last call (their removal
    /// saved).
    pub fn take_released(&mut self) -> Vec<(u64, u64)> {
        std::mem::take(&mut self.released)
    }

    /// Chunks added (`Some`) or removed (`None`) since the last call, by
    /// first slot.
    pub fn take_chunk_changes(&mut self) -> Vec<(u64, Option<Chunk>)> {
        self.log.take()
    }

    /// A save of `changes` failed: they are still to store (behind any
    /// newer change of the same chunk).
    pub fn keep_chunk_changes(&mut self, changes: Vec<(u64, Option<Chunk>)>) {
        self.log.keep(changes);
    }

    /// Logs every chunk as added: the chunks came from a record that held
    /// them inline (pool format 1) and must get rows of their own.
    pub fn log_all_chunks(&mut self) {
        for (&k, c) in &self.chunks {
            self.log.note(k, Some(c.chunk.clone()));
        }
    }

    /// Whether chunk changes wait for a save.
    pub fn chunks_changed(&self) -> bool {
        !self.log.is_empty()
    }

    /// The chunks.
    pub fn chunks(&self) -> Vec<Chunk> {
        self.chunks.values().map(|c| c.chunk.clone()).collect()
    }

    /// Slots in use (pending frees included).
    pub fn used_slots(&self) -> u64 {
        self.chunks.values().map(|c| c.in_use).sum()
    }

    /// Bytes of group space the store holds (labels included).
    pub fn bytes(&self) -> u64 {
        self.chunks
            .values()
            .map(|c| c.chunk.slots * self.track + c.chunk.head)
            .sum()
    }

    fn add_chunk(&mut self, slots: u64, shared: bool) -> Result<u64> {
        let head = if self.labels {
            super::label::head_bytes(slots, self.track)
        } else {
            0
        };
        let bytes = slots
            .checked_mul(self.track)
            .and_then(|b| b.checked_add(head))
            .ok_or_else(|| Error::new(ErrorKind::NoSpace, "copy space request overflows"))?;
        let group_off = (self.grow)(bytes)? + head;
        let first = self.next_slot;
        self.next_slot += slots;
        let words = usize::try_from(slots.div_ceil(64)).unwrap_or(0);
        let chunk = Chunk {
            first_slot: first,
            group_off,
            slots,
            head,
        };
        self.log.note(first, Some(chunk.clone()));
        self.chunks.insert(
            first,
            ChunkState {
                chunk,
                used: vec![0; words],
                in_use: 0,
                shared,
            },
        );
        Ok(first)
    }
}

impl SlotSource for Store {
    fn alloc_slot(&mut self) -> Result<u64> {
        let free = |c: &ChunkState| {
            (c.shared && c.in_use < c.chunk.slots)
                .then(|| c.first_free().map(|i| c.chunk.first_slot + i))
                .flatten()
        };
        let found = self.chunks.range(self.hint..).find_map(|(_, c)| free(c));
        let slot = match found {
            Some(s) => s,
            None => {
                // A smaller chunk when the group has no room for a whole one.
                let mut n = self.chunk_slots;
                loop {
                    match self.add_chunk(n, true) {
                        Ok(s) => break s,
                        Err(e) if e.kind() == ErrorKind::NoSpace && n > 1 => n /= 2,
                        Err(e) => return Err(e),
                    }
                }
            }
        };
        self.mark_used(slot)?;
        if let Some(c) = self.chunk_of(slot) {
            self.hint = c.chunk.first_slot;
        }
        Ok(slot)
    }

    fn alloc_area(&mut self, n: u64) -> Result<u64> {
        let n = n.max(1);
        // Small areas (partial-bitmap extents) are carved out of shared
        // chunks, whole words at a time: few chunks, few group allocations.
        if n.is_multiple_of(64) && n <= self.chunk_slots {
            let words = usize::try_from(n / 64).unwrap_or(usize::MAX);
            let run_in = |c: &ChunkState| {
                if !c.shared || c.chunk.slots - c.in_use < n {
                    return None;
                }
                let full = usize::try_from(c.chunk.slots / 64).unwrap_or(0);
                let mut run = 0;
                for w in 0..full {
                    run = if c.used.get(w) == Some(&0) {
                        run + 1
                    } else {
                        0
                    };
                    if run == words {
                        return Some(c.chunk.first_slot + (w + 1 - words) as u64 * 64);
                    }
                }
                None
            };
            let found = self
                .chunks
                .range(self.area_hint..)
                .find_map(|(_, c)| run_in(c));
            let first = match found {
                Some(f) => Some(f),
                None => match self.add_chunk(self.chunk_slots, true) {
                    Ok(f) => Some(f),
                    Err(e) if e.kind() == ErrorKind::NoSpace => None,
                    Err(e) => return Err(e),
                },
            };
            if let Some(first) = first {
                self.mark_area(first, n)?;
                if let Some(c) = self.chunk_of(first) {
                    self.area_hint = c.chunk.first_slot;
                }
                return Ok(first);
            }
        }
        let first = self.add_chunk(n, false)?;
        self.mark_area(first, n)?;
        if let Some(c) = self.chunk_of_mut(first) {
            c.shared = false;
        }
        Ok(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    type Given = Arc<Mutex<Vec<(u64, u64)>>>;

    fn store(limit: u64) -> (Store, Given) {
        let given = Arc::new(Mutex::new(Vec::<(u64, u64)>::new()));
        let g = Arc::clone(&given);
        let mut next = 1 << 30;
        let grow: Grow = Box::new(move |bytes| {
            let mut gv = g.lock().unwrap();
            let total: u64 = gv.iter().map(|x| x.1).sum();
            if total + bytes > limit {
                return Err(Error::new(ErrorKind::NoSpace, "group full"));
            }
            gv.push((next, bytes));
            let off = next;
            next += bytes;
            Ok(off)
        });
        (Store::new(65536, Vec::new(), grow).without_labels(), given)
    }

    #[test]
    fn slots_areas_release_and_space_limits() {
        let (mut s, given) = store(3 * CHUNK_SLOTS * 65536);
        let a = s.alloc_slot().unwrap();
        let b = s.alloc_slot().unwrap();
        assert_ne!(a, b);
        assert_eq!(s.offset(b).unwrap() - s.offset(a).unwrap(), 65536);
        let area = s.alloc_area(10).unwrap();
        // Single slots never come from an area chunk.
        for _ in 0..CHUNK_SLOTS - 2 {
            let x = s.alloc_slot().unwrap();
            assert!(!(area..area + 10).contains(&x));
        }
        assert_eq!(s.used_slots(), CHUNK_SLOTS + 10);
        // Freed slots are not reused before their commit.
        s.free_later(a);
        let c = s.alloc_slot().unwrap();
        assert_ne!(c, a);
        let pending = s.take_pending();
        s.release(pending);
        assert_eq!(s.alloc_slot().unwrap(), a);
        // A chunk that empties goes back to the group.
        s.free_area_later(area, 10);
        let pending = s.take_pending();
        s.release(pending);
        assert_eq!(s.take_released(), vec![], "not before its removal is saved");
        let changes = s.take_chunk_changes();
        s.chunks_saved(&changes);
        assert_eq!(
            s.take_released(),
            vec![(given.lock().unwrap()[1].0, 10 * 65536)]
        );
        // 64-slot areas are carved from shared chunks, side by side, and
        // given back slot by slot.
        let before = s.chunks().len();
        let a1 = s.alloc_area(64).unwrap();
        let a2 = s.alloc_area(64).unwrap();
        assert_ne!(a1, a2);
        assert!(s.chunks().len() <= before + 1, "{:?}", s.chunks());
        for x in [s.alloc_slot().unwrap(), s.alloc_slot().unwrap()] {
            assert!(!(a1..a1 + 64).contains(&x) && !(a2..a2 + 64).contains(&x));
        }
        s.free_area_later(a1, 64);
        s.free_area_later(a2, 64);
        let pending = s.take_pending();
        s.release(pending);
        // The group runs out: NoSpace, and nothing is half-allocated.
        let used = s.used_slots();
        let e = s.alloc_area(3 * CHUNK_SLOTS).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NoSpace);
        assert_eq!(s.used_slots(), used);
    }

    /// Retired slots come free only once the reads of their epoch and
    /// every earlier one ended (`fence.rs`).
    #[test]
    fn retired_slots_wait_for_the_reads_of_their_epoch() {
        let (mut s, _) = store(CHUNK_SLOTS * 65536);
        let a = s.alloc_slot().unwrap();
        let b = s.alloc_slot().unwrap();
        let readers = crate::copy::fence::Readers::default();
        let early = readers.enter(s.read_epoch());
        s.free_later(a);
        let p = s.take_pending();
        s.retire(p);
        assert!(
            !s.reuse_retired(|e| readers.ended(e)),
            "a read is in flight"
        );
        assert_eq!((s.retired_len(), s.used_slots()), (1, 2));
        assert_ne!(s.alloc_slot().unwrap(), a, "not reused under the read");
        drop(early);
        // A read that began later, in a later epoch, does not hold `a`.
        s.free_later(b);
        let p = s.take_pending();
        s.retire(p);
        let late = readers.enter(s.read_epoch());
        assert!(s.reuse_retired(|e| readers.ended(e)));
        assert_eq!(s.retired_len(), 1, "b waits for the later read");
        assert_eq!(s.alloc_slot().unwrap(), a);
        drop(late);
        assert!(s.reuse_retired(|e| readers.ended(e)));
        assert_eq!((s.retired_len(), s.alloc_slot().unwrap()), (0, b));
    }
}
