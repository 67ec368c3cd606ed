//! Writes of a copy's own leaf (A2, US 6,779,094 claims 1-6; seed 001
//! FIG. 17): new data goes to the image's own slot for the track, so
//! rewrites land in place; only the written granules become valid, and a
//! partial granule is filled from the tree first.

#![forbid(unsafe_code)]

use std::sync::Arc;

use super::family::{Head, NodeId, State, mask};
use super::image::{Family, us};
use super::map::{Entry, ZERO_SLOT};
use crate::blockdev::BufResult;
use crate::buf::IoBuf;
use crate::error::{Error, ErrorKind, Result};
use crate::stack::lock::RangeLock;

/// The run of fresh slots placed one after the other (sequential first
/// writes): once it is [`AHEAD_AFTER`] long, the store's space ahead of
/// it is preallocated [`AHEAD_SLOTS`] at a time, so those first writes on
/// a sparse disk file cost what overwrites cost instead of a filesystem
/// allocation each. Scattered first writes preallocate nothing, so the
/// disk file holds only what was written.
#[derive(Default)]
pub(super) struct Ahead {
    last: u64,
    run: u64,
    /// The window of slots preallocated last.
    from: u64,
    until: u64,
}

impl Ahead {
    fn note(&mut self, slot: u64, chunk_end: Option<u64>) -> Option<u64> {
        self.run = if slot == self.last.wrapping_add(1) {
            self.run + 1
        } else {
            0
        };
        self.last = slot;
        if self.run < AHEAD_AFTER || (self.from..self.until).contains(&slot) {
            return None;
        }
        let end = (slot + AHEAD_SLOTS).min(chunk_end.unwrap_or(slot + 1));
        (self.from, self.until) = (slot, end);
        Some(end - slot)
    }
}

/// Fresh slots in sequence before preallocating ahead.
const AHEAD_AFTER: u64 = 8;
/// Slots preallocated at a time (16 MiB of 64 KiB tracks).
const AHEAD_SLOTS: u64 = 256;

/// What a write finds at a track: the entry, where its slot lies (and the
/// end of its chunk), the track and granule sizes.
type TrackAt = (Option<Entry>, Option<(Result<u64>, Option<u64>)>, u64, u64);

impl Family {
    /// Writes `buf` at `off` as image `name` (its own leaf).
    pub async fn write_leaf(
        self: &Arc<Self>,
        locks: &RangeLock,
        name: &str,
        off: u64,
        buf: IoBuf,
        fua: bool,
    ) -> BufResult {
        let len = buf.len() as u64;
        let (t_sz, moves) = {
            let st = self.read_state();
            (
                st.track,
                Self::base_moves(&st) || st.merging.is_some() || st.packing,
            )
        };
        let (t0, t1) = (off / t_sz, (off + len).div_ceil(t_sz));
        let _mine = locks.lock(t0, t1).await;
        let _base = if moves {
            Some(self.base_locks.lock(t0, t1).await)
        } else {
            None
        };
        let (buf, r) = if t1 == t0 + 1 {
            // Within one track (a 4k write): no splitting and joining.
            self.write_track(name, t0, off % t_sz, buf, fua).await
        } else {
            self.write_tracks(name, off, buf, t_sz, fua).await
        };
        if let Err(e) = r {
            return (buf, Err(e));
        }
        if fua && let Err(e) = self.commit().await {
            return (buf, Err(e));
        }
        (buf, Ok(()))
    }

    /// Writes `buf` at `off` of image `name`'s leaf track by track (the
    /// caller holds the tracks' locks); the first error.
    async fn write_tracks(
        &self,
        name: &str,
        off: u64,
        buf: IoBuf,
        t_sz: u64,
        fua: bool,
    ) -> BufResult {
        let len = buf.len() as u64;
        let mut lens = Vec::new();
        let mut pos = off;
        while pos < off + len {
            let n = ((pos / t_sz + 1) * t_sz).min(off + len) - pos;
            lens.push(us(n));
            pos += n;
        }
        let parts = buf.split_many(&lens);
        let mut back = Vec::with_capacity(parts.len());
        let mut first_err = None;
        let mut at = off;
        for p in parts {
            let n = p.len() as u64;
            let (b, r) = self.write_track(name, at / t_sz, at % t_sz, p, fua).await;
            if let (Err(e), None) = (r, &first_err) {
                first_err = Some(e);
            }
            back.push(b);
            at += n;
        }
        let buf = IoBuf::join(back);
        match first_err {
            Some(e) => (buf, Err(e)),
            None => (buf, Ok(())),
        }
    }

    /// Image `name`'s leaf, and the frozen node a collection is merging it
    /// into, if one is: then a write of a track moves the track first (under
    /// the track's locks) and goes to that frozen node.
    pub(super) fn writer_of(st: &State, name: &str) -> Result<(NodeId, Option<NodeId>)> {
        let Head::Leaf(leaf) = st.image(name)?.head else {
            return Err(Error::invalid("the origin of an A1 family has no leaf"));
        };
        Ok((leaf, st.merging.filter(|&(_, c)| c == leaf).map(|(f, _)| f)))
    }

    /// Track `t` of `node` as a write finds it: its entry and, for a slot
    /// the node holds, where it lies (under the caller's lock).
    fn track_at(st: &State, node: NodeId, t: u64) -> TrackAt {
        let entry = st.nodes.get(&node).and_then(|n| n.map.get(t));
        let at_slot = entry
            .filter(|e| e.slot != ZERO_SLOT)
            .map(|e| (st.store.offset(e.slot), st.store.chunk_end(e.slot)));
        (entry, at_slot, st.track, st.granule)
    }

    /// Writes `data` at `at` within track `t` of image `name`'s leaf.
    async fn write_track(&self, name: &str, t: u64, at: u64, data: IoBuf, fua: bool) -> BufResult {
        // One look at the state, unless a collection must move the track
        // first (see `writer_of`).
        let found = {
            let st = self.read_state();
            Self::writer_of(&st, name).map(|(leaf, into)| match into {
                None => (leaf, Ok(Self::track_at(&st, leaf, t))),
                Some(f) => (leaf, Err(f)),
            })
        };
        let (leaf, (entry, at_slot, t_sz, g)) = match found {
            Err(e) => return (data, Err(e)),
            Ok((leaf, Ok(at))) => (leaf, at),
            Ok((leaf, Err(f))) => {
                if let Err(e) = self.merge_track(f, leaf, t, false).await {
                    return (data, Err(e));
                }
                (f, Self::track_at(&self.read_state(), f, t))
            }
        };
        let len = data.len() as u64;
        let (g0, g1) = (at / g, (at + len - 1) / g);
        let gm = mask(g0, g1);
        let (ga, gb) = (g0 * g, (g1 + 1) * g);
        // Edge granules only partly written and not valid here must be
        // filled from the tree first.
        let have = entry.filter(|e| e.slot != ZERO_SLOT).map_or(0, |e| e.valid);
        let mut fill = 0;
        if at > ga && have & mask(g0, g0) == 0 {
            fill |= mask(g0, g0);
        }
        if at + len < gb && have & mask(g1, g1) == 0 {
            fill |= mask(g1, g1);
        }
        let zeroed = entry.is_some_and(|e| e.slot == ZERO_SLOT);
        // The slot: the leaf's own, or a new one.
        let (slot, fresh) = match entry {
            Some(e) if e.slot != ZERO_SLOT => (e.slot, false),
            _ => {
                let mut st = self.write_state();
                let State { nodes, store, .. } = &mut *st;
                let placed = match nodes.get_mut(&leaf) {
                    Some(n) => n.map.place(t, store),
                    None => Err(Error::corrupt("copy leaf vanished")),
                };
                match placed {
                    Ok(s) => (s, true),
                    Err(e) => {
                        let e = if e.kind() == ErrorKind::NoSpace {
                            Error::new(
                                ErrorKind::NoSpace,
                                format!(
                                    "no new space left for the copies of this volume: {}",
                                    e.message()
                                ),
                            )
                        } else {
                            e
                        };
                        return (data, Err(e));
                    }
                }
            }
        };
        let (slot_off, chunk_end) = match at_slot {
            Some(a) if !fresh => a,
            _ => {
                let st = self.read_state();
                (st.store.offset(slot), st.store.chunk_end(slot))
            }
        };
        let slot_off = match slot_off {
            Ok(o) => o,
            Err(e) => return (data, Err(e)),
        };
        if fresh && let Some(span) = self.ahead_of(slot, chunk_end) {
            // Advisory: a failure only leaves the space sparse.
            if let Err(e) = self.group.preallocate(slot_off, span * t_sz).await {
                tracing::debug!("preallocating copy space: {}", e.chain());
            }
        }
        // What to write: the data alone, or the data widened to whole
        // granules (or the whole track over a zeroed entry).
        let (w_at, img, valid) = if zeroed {
            let mut img = IoBuf::new(us(t_sz));
            img.as_mut_slice()[us(at)..us(at + len)].copy_from_slice(data.as_slice());
            (0, Some(img), mask(0, (t_sz / g).min(64) - 1))
        } else if fill != 0 {
            let mut img = IoBuf::new(us(gb - ga));
            let track_buf = IoBuf::new(us(t_sz));
            let (track_buf, r) = self.read_track_from(Some(leaf), t, fill, track_buf).await;
            if let Err(e) = r {
                self.abandon(leaf, t, slot, fresh);
                return (data, Err(e));
            }
            img.as_mut_slice()
                .copy_from_slice(&track_buf.as_slice()[us(ga)..us(gb)]);
            img.as_mut_slice()[us(at - ga)..us(at - ga + len)].copy_from_slice(data.as_slice());
            (ga, Some(img), gm)
        } else {
            (at, None, gm)
        };
        let (data, r) = match img {
            None => self.group.write(slot_off + w_at, data, fua).await,
            Some(img) => {
                let (_, r) = self.group.write(slot_off + w_at, img, fua).await;
                (data, r)
            }
        };
        if let Err(e) = r {
            self.abandon(leaf, t, slot, fresh);
            return (data, Err(e));
        }
        if !fresh && have & valid == valid {
            // A rewrite in place of granules already valid: the entry is
            // unchanged (the track lock keeps it so), nothing to save.
            return (data, Ok(()));
        }
        self.write_state().add_valid(leaf, t, slot, valid);
        (data, Ok(()))
    }

    /// Notes fresh slot `slot`; in a run of sequential first writes,
    /// returns how many slots from it to preallocate (see [`Ahead`]).
    fn ahead_of(&self, slot: u64, chunk_end: Option<u64>) -> Option<u64> {
        crate::blockdev::probe::shared_lock(1);
        self.ahead
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .note(slot, chunk_end)
    }

    /// A write that placed a slot failed: give the slot back.
    fn abandon(&self, leaf: NodeId, t: u64, slot: u64, fresh: bool) {
        if fresh {
            let mut st = self.write_state();
            st.free_entry_slot(leaf, t, Entry { slot, valid: 1 });
        }
    }
}

#[cfg(test)]
mod ahead_tests {
    use super::{AHEAD_AFTER, AHEAD_SLOTS, Ahead};

    #[test]
    fn only_runs_of_sequential_fresh_slots_preallocate_ahead() {
        let mut a = Ahead::default();
        // Scattered first writes: never.
        for s in [500, 3, 77, 1024, 9, 4000, 12, 600, 31, 2] {
            assert_eq!(a.note(s, Some(1 << 20)), None);
        }
        // A run: after AHEAD_AFTER in sequence, one window, then nothing
        // until the run leaves it.
        let mut got = Vec::new();
        for s in 100..100 + AHEAD_AFTER + 2 * AHEAD_SLOTS {
            if let Some(n) = a.note(s, Some(1 << 20)) {
                got.push((s, n));
            }
        }
        let first = 100 + AHEAD_AFTER;
        assert_eq!(
            got,
            vec![(first, AHEAD_SLOTS), (first + AHEAD_SLOTS, AHEAD_SLOTS)]
        );
        // Never past the chunk's end.
        let mut b = Ahead::default();
        let mut last = None;
        for s in 0..=AHEAD_AFTER {
            last = b.note(s, Some(AHEAD_AFTER + 3));
        }
        assert_eq!(last, Some(3));
    }
}
