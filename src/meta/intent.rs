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

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::{Meta, PAGE_BITS, PAGE_BYTES};
use crate::blockdev::{DevFuture, EndWrite, IntentGuard, WriteIntent};
use crate::error::{Error, ErrorKind, Result};

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
    desired: Vec<u64>,
    committed: Vec<u64>,
    /// Regions that must stay marked until released (pending resync).
    held: Vec<u64>,
    active: HashMap<u64, Region>,
    dirty_pages: BTreeSet<u64>,
    /// Sequence number the next commit will take.
    next_seq: u64,
    committing: bool,
    generation: u64,
    /// `generation` at the previous idle pass.
    last_pass_gen: u64,
}

fn get(bits: &[u64], r: u64) -> bool {
    let w = usize::try_from(r / 64).unwrap_or(usize::MAX);
    bits.get(w).is_some_and(|x| x & (1 << (r % 64)) != 0)
}

fn set(bits: &mut Vec<u64>, r: u64, v: bool) {
    let w = usize::try_from(r / 64).unwrap_or(usize::MAX);
    if w >= bits.len() {
        if !v {
            return;
        }
        bits.resize(w + 1, 0);
    }
    if v {
        bits[w] |= 1 << (r % 64);
    } else {
        bits[w] &= !(1 << (r % 64));
    }
}

/// Byte ranges as (offset, length).
pub type Ranges = Vec<(u64, u64)>;

/// Outcome of the last commit: (sequence number done, error if it failed).
type Done = (u64, Option<Arc<str>>);

/// The write-intent log of one group.
pub struct PersistentIntent {
    meta: Arc<Meta>,
    object: u64,
    region: u64,
    st: Mutex<St>,
    done: watch::Sender<Done>,
}

impl PersistentIntent {
    /// Loads the log of `object`; the regions found marked are returned as
    /// (offset, length) ranges — the ranges to resync — and stay held until
    /// [`PersistentIntent::release`].
    pub fn load(meta: Arc<Meta>, object: u64, region: u64) -> Result<(Arc<Self>, Ranges)> {
        let region = region.max(4096);
        let mut st = St {
            next_seq: 1,
            ..St::default()
        };
        // Bits past 1 PiB of address space cannot be a group's: a page key
        // that points there is damage, not a region to resync (and would
        // grow the bitmaps without bound).
        let limit = MAX_SPACE / region;
        for (page, bytes) in meta.pages(object)? {
            let past = page
                .checked_mul(PAGE_BITS)
                .and_then(|b| b.checked_add(bytes.len() as u64 * 8))
                .is_none_or(|end| end > limit);
            if past {
                return Err(Error::corrupt(format!(
                    "write-intent page {page} of object {object} lies beyond any group's \
                     address space (region {region} bytes): the metadata is damaged"
                )));
            }
            for (i, chunk) in bytes.chunks(8).enumerate() {
                let mut a = [0u8; 8];
                a[..chunk.len()].copy_from_slice(chunk);
                let word = u64::from_le_bytes(a);
                if word == 0 {
                    continue;
                }
                let base = page * PAGE_BITS + (i as u64) * 64;
                for b in 0..64 {
                    if word & (1 << b) != 0 {
                        set(&mut st.desired, base + b, true);
                        set(&mut st.committed, base + b, true);
                        set(&mut st.held, base + b, true);
                    }
                }
            }
        }
        let ranges = ranges_of(&st.committed, region);
        let (done, _) = watch::channel((0, None));
        Ok((
            Arc::new(PersistentIntent {
                meta,
                object,
                region,
                st: Mutex::new(st),
                done,
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
        ranges_of(&self.lock().committed, self.region)
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
            for (w, &word) in st.committed.iter().enumerate() {
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
                    set(&mut st.desired, r, false);
                    set(&mut st.committed, r, false);
                    st.active.remove(&r);
                    st.dirty_pages.insert(r / PAGE_BITS);
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
            for (w, &word) in st.committed.iter().enumerate() {
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
                    set(&mut st.desired, r, false);
                    set(&mut st.committed, r, false);
                    st.active.remove(&r);
                    st.dirty_pages.insert(r / PAGE_BITS);
                    cleared += 1;
                }
            }
            if cleared == 0 {
                return Ok(0);
            }
            let need = st.next_seq;
            self.start_commit(&mut st);
            (need, cleared)
        };
        Arc::clone(self).begin_slow(need).await?;
        Ok(cleared)
    }

    fn start_commit(self: &Arc<Self>, st: &mut St) {
        if st.committing {
            return;
        }
        st.committing = true;
        let me = Arc::clone(self);
        let work = move || me.commit_loop();
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::task::spawn_blocking(work);
        } else {
            std::thread::spawn(work);
        }
    }

    /// Commits dirty pages until none are left; one pass serves every
    /// writer that joined before it took its snapshot.
    fn commit_loop(&self) {
        loop {
            let (seq, pages) = {
                let mut st = self.lock();
                if st.dirty_pages.is_empty() {
                    st.committing = false;
                    return;
                }
                let seq = st.next_seq;
                st.next_seq += 1;
                let pages: Vec<(u64, Vec<u8>)> = std::mem::take(&mut st.dirty_pages)
                    .into_iter()
                    .map(|p| (p, page_bytes(&st.desired, p)))
                    .collect();
                (seq, pages)
            };
            let r = self.meta.write(true, |tx| {
                for (p, bytes) in &pages {
                    tx.put_page(self.object, *p, bytes)?;
                }
                Ok(())
            });
            let mut st = self.lock();
            match r {
                Ok(()) => {
                    for (p, bytes) in &pages {
                        apply_committed(&mut st, *p, bytes);
                    }
                    drop(st);
                    self.done.send_replace((seq, None));
                }
                Err(e) => {
                    tracing::error!("write-intent commit failed: {}", e.chain());
                    for (p, _) in &pages {
                        st.dirty_pages.insert(*p);
                    }
                    st.committing = false;
                    drop(st);
                    self.done.send_replace((seq, Some(Arc::from(e.chain()))));
                    return;
                }
            }
        }
    }

    async fn begin_slow(self: Arc<Self>, need: u64) -> Result<()> {
        let mut rx = self.done.subscribe();
        let r = rx.wait_for(|(seq, _)| *seq >= need).await;
        match r {
            Ok(v) => match &v.1 {
                Some(msg) if v.0 == need => Err(Error::new(
                    ErrorKind::Io,
                    format!("cannot record the write intent: {msg}"),
                )),
                _ => Ok(()),
            },
            Err(_) => Err(Error::new(ErrorKind::Shutdown, "write-intent log closed")),
        }
    }
}

fn page_bytes(bits: &[u64], page: u64) -> Vec<u8> {
    let mut out = vec![0u8; PAGE_BYTES];
    let words_per_page = PAGE_BITS / 64;
    for i in 0..words_per_page {
        let w = usize::try_from(page * words_per_page + i).unwrap_or(usize::MAX);
        if let Some(word) = bits.get(w) {
            let o = usize::try_from(i * 8).unwrap_or(0);
            out[o..o + 8].copy_from_slice(&word.to_le_bytes());
        }
    }
    out
}

/// After `bytes` (a snapshot of desired bits) is durable for `page`: set the
/// committed bits that are in the snapshot and still desired.
fn apply_committed(st: &mut St, page: u64, bytes: &[u8]) {
    let words_per_page = PAGE_BITS / 64;
    for (i, chunk) in bytes.chunks(8).enumerate() {
        let mut a = [0u8; 8];
        a[..chunk.len()].copy_from_slice(chunk);
        let snap = u64::from_le_bytes(a);
        let w = usize::try_from(page * words_per_page + i as u64).unwrap_or(usize::MAX);
        let desired = st.desired.get(w).copied().unwrap_or(0);
        let add = snap & desired;
        if add != 0 {
            if w >= st.committed.len() {
                st.committed.resize(w + 1, 0);
            }
            st.committed[w] |= add;
        }
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
        if !rs.clone().all(|r| get(&st.committed, r)) {
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
                if !get(&st.committed, r) {
                    need_commit = true;
                    if !get(&st.desired, r) {
                        set(&mut st.desired, r, true);
                        st.dirty_pages.insert(r / PAGE_BITS);
                    }
                }
            }
            if need_commit {
                let need = st.next_seq;
                me.start_commit(&mut st);
                Some(need)
            } else {
                None
            }
        };
        let guard = IntentGuard::range(Arc::clone(me) as Arc<dyn EndWrite>, off, len);
        let me = Arc::clone(me);
        Box::pin(async move {
            if let Some(need) = need {
                me.begin_slow(need).await?;
            }
            Ok(guard)
        })
    }
}
