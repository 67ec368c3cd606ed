//! The persistent write-intent log of a redundant group (DESIGN rule 2).
//!
//! One bit per region of the group's address space (`region` bytes, 4 MiB by
//! default), kept in memory and stored as pages of the pool database.
//!
//! ```text
//!  begin(off,len) ─> regions all committed? ──yes──> write goes ahead
//!                         │ no
//!                         v
//!              set desired bits, join the next commit ──> group commit
//!              (one redb transaction + fsync for every writer waiting)
//!
//!  every few seconds: regions idle since the last pass ─> flush members
//!              ─> clear their bits (lazily; a lost clear only costs a resync)
//! ```
//!
//! Invariant: a region's *committed* bit is set only after a commit that
//! stored it set, and is cleared in memory before the commit that stores it
//! clear; a writer proceeds only on committed bits. So at any crash, every
//! region with a write in flight is marked in the database.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::Meta;
use super::bits::{Bits, Committer, get, set, spawn_commit};
use crate::blockdev::{DevFuture, EndWrite, IntentGuard, WriteIntent};
use crate::error::Result;

/// Default bytes of group address space per bit.
pub const DEFAULT_REGION: u64 = 4 << 20;
/// The largest group address space a write-intent log covers (1 PiB).
const MAX_SPACE: u64 = 1 << 50;

#[derive(Default)]
struct Region {
    in_flight: u32,
    /// Value of `St::generation` at the last begin in this region.
    touched: u64,
}

#[derive(Default)]
struct St {
    /// One bit per region, stored.
    bits: Bits,
    /// Regions that must stay marked until released (pending resync).
    held: Vec<u64>,
    active: HashMap<u64, Region>,
    generation: u64,
    /// `generation` at the previous idle pass.
    last_pass_gen: u64,
}

/// Byte ranges as (offset, length).
pub type Ranges = Vec<(u64, u64)>;

/// The write-intent log of one group.
pub struct PersistentIntent {
    region: u64,
    st: Mutex<St>,
    commits: Committer,
}

impl PersistentIntent {
    /// Loads the log of `object`; the regions found marked are returned as
    /// (offset, length) ranges — the ranges to resync — and stay held until
    /// [`PersistentIntent::release`].
    pub fn load(meta: Arc<Meta>, object: u64, region: u64) -> Result<(Arc<Self>, Ranges)> {
        let region = region.max(4096);
        // Bits past 1 PiB of address space cannot be a group's: a page key
        // that points there is damage, not a region to resync (and would
        // grow the bitmaps without bound).
        let bits = Bits::load(&meta, object, MAX_SPACE / region, "write-intent log")?;
        let held = bits.committed.clone();
        let ranges = ranges_of(&bits.committed, region);
        let st = St {
            bits,
            held,
            ..St::default()
        };
        Ok((
            Arc::new(PersistentIntent {
                region,
                st: Mutex::new(st),
                commits: Committer::new(meta, object, "write-intent log"),
            }),
            ranges,
        ))
    }

    pub fn region(&self) -> u64 {
        self.region
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, St> {
        crate::blockdev::probe::shared_lock(1);
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Regions marked in the database now, as (offset, length) ranges.
    pub fn marked(&self) -> Vec<(u64, u64)> {
        ranges_of(&self.lock().bits.committed, self.region)
    }

    /// Lets held regions within `off..off+len` be cleared (their resync is
    /// done).
    pub fn release(&self, off: u64, len: u64) {
        let mut st = self.lock();
        let first = off / self.region;
        let last = (off + len.max(1) - 1) / self.region;
        for r in first..=last {
            set(&mut st.held, r, false);
        }
    }

    /// Clears the bits of regions with no write since the previous pass.
    /// `flush` must make every completed write of the group durable; it runs
    /// between choosing the regions and clearing them.
    pub async fn clear_idle(self: &Arc<Self>, flush: DevFuture<'_, Result<()>>) -> Result<usize> {
        let (cands, pass_gen) = {
            let st = self.lock();
            let mut cands = Vec::new();
            for (w, &word) in st.bits.committed.iter().enumerate() {
                if word == 0 {
                    continue;
                }
                for b in 0..64 {
                    let r = (w as u64) * 64 + b;
                    if word & (1 << b) == 0 || get(&st.held, r) {
                        continue;
                    }
                    let idle = st
                        .active
                        .get(&r)
                        .is_none_or(|a| a.in_flight == 0 && a.touched <= st.last_pass_gen);
                    if idle {
                        cands.push(r);
                    }
                }
            }
            (cands, st.generation)
        };
        if cands.is_empty() {
            self.lock().last_pass_gen = pass_gen;
            return Ok(0);
        }
        flush.await?;
        let mut cleared = 0;
        {
            let mut st = self.lock();
            let last = st.last_pass_gen;
            for r in cands {
                let still_idle = st
                    .active
                    .get(&r)
                    .is_none_or(|a| a.in_flight == 0 && a.touched <= last);
                if still_idle && !get(&st.held, r) {
                    st.bits.clear(r);
                    st.active.remove(&r);
                    cleared += 1;
                }
            }
            st.last_pass_gen = pass_gen;
            if cleared > 0 {
                self.start_commit(&mut st);
            }
        }
        Ok(cleared)
    }

    /// Clears every mark that no write holds and no resync waits for, and
    /// waits until that is stored: a clean stop, once every host request
    /// has ended, so the next start resyncs nothing. `flush` must make
    /// every completed write of the group durable; a region written after
    /// the marks were chosen (by a background job still running) keeps its
    /// mark. Returns the regions cleared.
    pub async fn clear_quiesced(
        self: &Arc<Self>,
        flush: DevFuture<'_, Result<()>>,
    ) -> Result<usize> {
        let (cands, chosen_at) = {
            let st = self.lock();
            let mut cands = Vec::new();
            for (w, &word) in st.bits.committed.iter().enumerate() {
                for b in (0..64).filter(|b| word & (1 << b) != 0) {
                    let r = (w as u64) * 64 + b;
                    let busy = st.active.get(&r).is_some_and(|a| a.in_flight > 0);
                    if !busy && !get(&st.held, r) {
                        cands.push(r);
                    }
                }
            }
            (cands, st.generation)
        };
        flush.await?;
        if cands.is_empty() {
            return Ok(0);
        }
        let (need, cleared) = {
            let mut st = self.lock();
            let mut cleared = 0;
            for r in cands {
                let quiet = st
                    .active
                    .get(&r)
                    .is_none_or(|a| a.in_flight == 0 && a.touched <= chosen_at);
                if quiet && !get(&st.held, r) {
                    st.bits.clear(r);
                    st.active.remove(&r);
                    cleared += 1;
                }
            }
            if cleared == 0 {
                return Ok(0);
            }
            let need = self.start_commit(&mut st);
            (need, cleared)
        };
        self.commits.wait(need).await?;
        Ok(cleared)
    }

    /// Starts the commit thread unless it runs; the sequence number of
    /// the commit that will store what is dirty now.
    fn start_commit(self: &Arc<Self>, st: &mut St) -> u64 {
        let (need, start) = st.bits.schedule();
        if start {
            let me = Arc::clone(self);
            spawn_commit(move || me.commits.run(|| me.lock(), |st: &mut St| &mut st.bits));
        }
        need
    }
}

fn ranges_of(bits: &[u64], region: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (w, &word) in bits.iter().enumerate() {
        for b in 0..64 {
            if word & (1 << b) == 0 {
                continue;
            }
            let off = ((w as u64) * 64 + b) * region;
            match out.last_mut() {
                Some(last) if last.0 + last.1 == off => last.1 += region,
                _ => out.push((off, region)),
            }
        }
    }
    out
}

impl PersistentIntent {
    /// The regions `off..off+len` touches.
    fn regions(&self, off: u64, len: u64) -> std::ops::RangeInclusive<u64> {
        off / self.region..=(off + len.max(1) - 1) / self.region
    }

    /// Counts a write in regions `rs` (touched in a new generation).
    fn note_begin(st: &mut St, rs: std::ops::RangeInclusive<u64>) {
        st.generation += 1;
        let generation = st.generation;
        for r in rs {
            let a = st.active.entry(r).or_default();
            a.in_flight += 1;
            a.touched = generation;
        }
    }
}

impl EndWrite for PersistentIntent {
    fn end_write(&self, off: u64, len: u64) {
        let mut st = self.lock();
        for r in self.regions(off, len) {
            if let Some(a) = st.active.get_mut(&r) {
                a.in_flight = a.in_flight.saturating_sub(1);
            }
        }
    }
}

/// A `WriteIntent` handle on a shared [`PersistentIntent`].
pub struct IntentHandle(pub Arc<PersistentIntent>);

impl WriteIntent for IntentHandle {
    fn begin_now(&self, off: u64, len: u64) -> Option<IntentGuard> {
        let me = &self.0;
        let rs = me.regions(off, len);
        let mut st = me.lock();
        if !rs.clone().all(|r| st.bits.committed(r)) {
            return None;
        }
        PersistentIntent::note_begin(&mut st, rs);
        drop(st);
        let log: Arc<dyn EndWrite> = Arc::clone(me) as Arc<dyn EndWrite>;
        Some(IntentGuard::range(log, off, len))
    }

    fn begin(&self, off: u64, len: u64) -> DevFuture<'_, Result<IntentGuard>> {
        let me = &self.0;
        let (first, last) = (off / me.region, (off + len.max(1) - 1) / me.region);
        let need = {
            let mut st = me.lock();
            PersistentIntent::note_begin(&mut st, first..=last);
            let mut need_commit = false;
            for r in first..=last {
                need_commit |= st.bits.want(r);
            }
            need_commit.then(|| me.start_commit(&mut st))
        };
        let guard = IntentGuard::range(Arc::clone(me) as Arc<dyn EndWrite>, off, len);
        let me = Arc::clone(me);
        Box::pin(async move {
            if let Some(need) = need {
                me.commits.wait(need).await?;
            }
            Ok(guard)
        })
    }
}
