//! Write diversion to a work store while a group is spared (seed 002, US
//! 7,028,216: the "second control unit" that lets backup storage take
//! over the group's write requests while the sparing copy runs, and the
//! "third control unit" that writes the backed-up data back when it is
//! done; second embodiment, work volumes, FIG. 11A/11B and table T4).
//!
//! A [`Divert`] node sits over each volume of the group being spared
//! (main id = the volume's index), all sharing one work store and its
//! slot map. The work store is filled like a log (the
//! slot map, [`crate::meta::slotmap`]): a unit written for the first time
//! gets the slot at the terminal address, a unit written again overwrites
//! its slot (the seed's "mapping hit" choice).
//!
//! | mode | host write | host read | background |
//! |---|---|---|---|
//! | DIVERT | its units' slots (a new unit: the next slot); the group untouched | a mapped unit from its slot, others from the group | none |
//! | DIVERT, store full | mapped units to their slots, new units to the group (an alarm says so) | as above | none |
//! | WRITE-BACK | mapped units to their slots, others to the group | as above | [`Divert::write_back_some`]: slot to group, then the entry removed, stored |
//! | OFF | the group | the group | none |
//!
//! Units are locked while a request uses them (DESIGN rule 5), so a
//! write-back never copies a slot a host is writing, and a read never sees
//! a slot whose first write is still in flight. A write smaller than a
//! unit is merged with the unit's current data (its slot, or the group).
//! The map's entries are stored at the flush that makes their data
//! durable on the store (see the slot map's doc for why not before); a
//! write-back stores an entry's removal before the unit's lock is let go,
//! so a later direct write is never overwritten by a replay after a crash.

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use crate::blockdev::{BlockDev, BufResult, DevFuture, Extent, ZeroFlags};
use crate::buf::IoBuf;
use crate::error::{Error, ErrorKind, Result};
use crate::meta::slotmap::{SlotMap, key};
use crate::stack::lock::RangeLock;

#[cfg(test)]
mod tests;

/// Where host writes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Divert,
    WriteBack,
    Off,
}

fn code(m: Mode) -> u8 {
    match m {
        Mode::Divert => 0,
        Mode::WriteBack => 1,
        Mode::Off => 2,
    }
}

fn mode_of(v: u8) -> Mode {
    match v {
        0 => Mode::Divert,
        1 => Mode::WriteBack,
        _ => Mode::Off,
    }
}

/// What the node counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DivertCounts {
    /// Host writes (units) that went to the work store.
    pub diverted: u64,
    /// Host writes (units) that went to the group while diverting,
    /// because the store was full.
    pub overflowed: u64,
    /// Host reads (units) served from the work store.
    pub from_store: u64,
    /// Units written back to the group.
    pub written_back: u64,
}

#[derive(Default)]
struct Counters {
    diverted: AtomicU64,
    overflowed: AtomicU64,
    from_store: AtomicU64,
    written_back: AtomicU64,
}

/// A run of consecutive units of one request with the same route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Slots `slot..slot+n` of the store; `fresh`: given to their units by
    /// this request (nothing written there yet).
    Store {
        slot: u64,
        fresh: bool,
    },
    Below,
}

/// The diversion node over one volume of a group being spared.
pub struct Divert {
    below: Arc<dyn BlockDev>,
    store: Arc<dyn BlockDev>,
    map: Arc<SlotMap>,
    main: u16,
    unit: u64,
    mode: AtomicU8,
    locks: RangeLock,
    counts: Counters,
}

impl Divert {
    /// A node over `below` that diverts to `store` through `map` (slots of
    /// `unit` bytes), `main` naming `below` in the map, in `mode`.
    pub fn new(
        below: Arc<dyn BlockDev>,
        store: Arc<dyn BlockDev>,
        map: Arc<SlotMap>,
        main: u16,
        unit: u64,
        mode: Mode,
    ) -> Result<Arc<Divert>> {
        let bs = u64::from(below.block_size().max(512));
        if unit == 0 || !unit.is_multiple_of(bs) {
            return Err(Error::invalid(format!(
                "a diversion unit of {unit} bytes is not a multiple of the group's {bs}-byte blocks"
            )));
        }
        if map.slots().saturating_mul(unit) > store.size() {
            return Err(Error::invalid(format!(
                "a work store of {} bytes cannot hold {} slots of {unit} bytes",
                store.size(),
                map.slots()
            )));
        }
        Ok(Arc::new(Divert {
            below,
            store,
            map,
            main,
            unit,
            mode: AtomicU8::new(code(mode)),
            locks: RangeLock::new(),
            counts: Counters::default(),
        }))
    }

    pub fn mode(&self) -> Mode {
        mode_of(self.mode.load(Ordering::Acquire))
    }

    /// Changes the mode. To leave DIVERT, call [`Divert::begin_write_back`].
    pub fn set_mode(&self, m: Mode) {
        self.mode.store(code(m), Ordering::Release);
    }

    pub fn map(&self) -> &Arc<SlotMap> {
        &self.map
    }

    /// Bytes per unit (slot).
    pub fn unit(&self) -> u64 {
        self.unit
    }

    /// Units of this node's main the store holds now.
    pub fn held(&self) -> usize {
        usize::try_from(self.map.held_by(self.main)).unwrap_or(usize::MAX)
    }

    pub fn below(&self) -> &Arc<dyn BlockDev> {
        &self.below
    }

    pub fn counts(&self) -> DivertCounts {
        let c = &self.counts;
        DivertCounts {
            diverted: c.diverted.load(Ordering::Relaxed),
            overflowed: c.overflowed.load(Ordering::Relaxed),
            from_store: c.from_store.load(Ordering::Relaxed),
            written_back: c.written_back.load(Ordering::Relaxed),
        }
    }

    /// Stores every entry whose data is written: flushes the store, then
    /// commits them.
    pub async fn save(&self) -> Result<()> {
        let written = self.map.take_written();
        self.store.flush().await?;
        self.map.persist(written).await
    }

    /// DIVERT to WRITE-BACK: from now on new units go to the group; the
    /// entries made so far are stored first.
    pub async fn begin_write_back(&self) -> Result<()> {
        self.set_mode(Mode::WriteBack);
        self.save().await
    }

    /// Writes back up to `max` mapped units, in unit order: each copied
    /// from its slot to the group under its lock, the group flushed, the
    /// entries' removal stored, then the locks let go. Returns the units
    /// written back (0: none left).
    pub async fn write_back_some(&self, max: usize) -> Result<usize> {
        let mut picked = self.map.some_of(self.main, max.max(1));
        if picked.is_empty() {
            return Ok(0);
        }
        picked.sort_by_key(|&(k, _)| k);
        let mut guards = Vec::with_capacity(picked.len());
        for &(k, _) in &picked {
            let u = crate::meta::slotmap::split_key(k).1;
            guards.push(self.locks.lock(u, u + 1).await);
        }
        let copies = picked.iter().map(|&(k, _)| self.copy_back(k));
        for r in futures::future::join_all(copies).await {
            r?;
        }
        self.below.flush().await?;
        for &(k, _) in &picked {
            self.map.remove(k);
        }
        self.map.commit().await?;
        drop(guards);
        let n = picked.len();
        self.counts
            .written_back
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    /// Copies the slot of `k` (its unit locked) to the group.
    async fn copy_back(&self, k: u64) -> Result<()> {
        let Some(slot) = self.map.lookup(k) else {
            return Ok(());
        };
        let unit = crate::meta::slotmap::split_key(k).1;
        let buf = IoBuf::new(self.unit_len());
        let (buf, r) = self.store.read(slot * self.unit, buf).await;
        r?;
        let (_, r) = self.below.write(unit * self.unit, buf, false).await;
        r
    }

    fn unit_len(&self) -> usize {
        usize::try_from(self.unit).unwrap_or(usize::MAX)
    }

    /// The units `off..off+len` touches.
    fn units_of(&self, off: u64, len: u64) -> std::ops::Range<u64> {
        let first = off / self.unit;
        let end = off.saturating_add(len.max(1) - 1) / self.unit + 1;
        first..end
    }

    /// Runs of units with their route, for a read (`assign` false) or a
    /// write (`assign`: new units get slots in DIVERT).
    fn routes(&self, units: std::ops::Range<u64>, assign: bool) -> Vec<(u64, u64, Route)> {
        let divert = assign && self.mode() == Mode::Divert;
        let mut out: Vec<(u64, u64, Route)> = Vec::new();
        for u in units {
            let k = key(self.main, u);
            let r = match self.map.lookup(k) {
                Some(slot) => Route::Store { slot, fresh: false },
                None if divert => match self.map.assign(k) {
                    Some(slot) => Route::Store { slot, fresh: true },
                    None => Route::Below,
                },
                None => Route::Below,
            };
            if let Some(last) = out.last_mut() {
                let follows = match (last.2, r) {
                    (Route::Below, Route::Below) => true,
                    (Route::Store { slot: a, fresh: fa }, Route::Store { slot: b, fresh: fb }) => {
                        b == a + last.1 && fa == fb
                    }
                    _ => false,
                };
                if follows {
                    last.1 += 1;
                    continue;
                }
            }
            out.push((u, 1, r));
        }
        out
    }

    async fn read_diverted(&self, off: u64, mut buf: IoBuf) -> BufResult {
        let len = buf.len() as u64;
        let units = self.units_of(off, len);
        let _g = self.locks.lock(units.start, units.end).await;
        let routes = self.routes(units, false);
        if routes.iter().all(|r| r.2 == Route::Below) {
            drop(_g);
            return self.below.read(off, buf).await;
        }
        if let [(u, n, Route::Store { slot, .. })] = routes[..] {
            // One run of slots: straight into the caller's buffer.
            self.counts.from_store.fetch_add(n, Ordering::Relaxed);
            return self
                .store
                .read(slot * self.unit + (off - u * self.unit), buf)
                .await;
        }
        for (u, n, route) in routes {
            let start = (u * self.unit).max(off);
            let end = ((u + n) * self.unit).min(off + len);
            let piece = IoBuf::new(usize::try_from(end - start).unwrap_or(0));
            let (piece, r) = match route {
                Route::Below => self.below.read(start, piece).await,
                Route::Store { slot, .. } => {
                    self.counts.from_store.fetch_add(n, Ordering::Relaxed);
                    let at = slot * self.unit + (start - u * self.unit);
                    self.store.read(at, piece).await
                }
            };
            if let Err(e) = r {
                return (buf, Err(e));
            }
            let o = usize::try_from(start - off).unwrap_or(0);
            buf.as_mut_slice()[o..o + piece.len()].copy_from_slice(piece.as_slice());
        }
        (buf, Ok(()))
    }

    async fn write_diverted(&self, off: u64, buf: IoBuf, fua: bool) -> BufResult {
        let len = buf.len() as u64;
        let units = self.units_of(off, len);
        let _g = self.locks.lock(units.start, units.end).await;
        let routes = self.routes(units, true);
        if let [(u, n, Route::Store { slot, fresh })] = routes[..] {
            let whole = off == u * self.unit && len == n * self.unit;
            if whole || !fresh {
                return self.write_run(off, buf, fua, (u, n, slot, fresh)).await;
            }
        }
        let r = self.write_routes(off, &buf, fua, &routes).await;
        (buf, r)
    }

    /// Writes `buf` (at `off`, within units `u..u+n`) to their slots from
    /// `slot`, which hold those units already or are covered whole: the
    /// caller's buffer as it is, no copy.
    async fn write_run(
        &self,
        off: u64,
        buf: IoBuf,
        fua: bool,
        (u, n, slot, fresh): (u64, u64, u64, bool),
    ) -> BufResult {
        let at = slot * self.unit + (off - u * self.unit);
        let (buf, r) = self.store.write(at, buf, fua).await;
        if let Err(e) = r {
            if fresh {
                for x in u..u + n {
                    self.map.remove(key(self.main, x));
                }
            }
            return (buf, Err(e));
        }
        self.counts.diverted.fetch_add(n, Ordering::Relaxed);
        for s in slot..slot + n {
            self.map.written(s);
        }
        if fua {
            // Durable on the store: this request's entries, and only
            // theirs (others' writes may not be flushed yet).
            let r = self.map.persist((slot..slot + n).collect()).await;
            return (buf, r);
        }
        (buf, Ok(()))
    }

    async fn write_routes(
        &self,
        off: u64,
        buf: &IoBuf,
        fua: bool,
        routes: &[(u64, u64, Route)],
    ) -> Result<()> {
        let len = buf.len() as u64;
        let divert = self.mode() == Mode::Divert;
        let mut slots = Vec::new();
        for &(u, n, route) in routes {
            let (ustart, uend) = (u * self.unit, (u + n) * self.unit);
            let (start, end) = (ustart.max(off), uend.min(off + len));
            let src = &buf.as_slice()[usize::try_from(start - off).unwrap_or(0)..]
                [..usize::try_from(end - start).unwrap_or(0)];
            match route {
                Route::Below => {
                    if divert {
                        self.counts.overflowed.fetch_add(n, Ordering::Relaxed);
                    }
                    let mut piece = IoBuf::new(src.len());
                    piece.as_mut_slice().copy_from_slice(src);
                    let (_, r) = self.below.write(start, piece, fua).await;
                    r?;
                }
                Route::Store { slot, fresh } => {
                    let (at, data) = if fresh && (start > ustart || end < uend) {
                        // A partial new unit: its current data first.
                        let mut whole = IoBuf::new(usize::try_from(uend - ustart).unwrap_or(0));
                        self.fill_current(u, &mut whole).await?;
                        let o = usize::try_from(start - ustart).unwrap_or(0);
                        whole.as_mut_slice()[o..o + src.len()].copy_from_slice(src);
                        (slot * self.unit, whole)
                    } else {
                        // Whole units, or slots that hold their units
                        // already: the bytes written, where they go.
                        let mut piece = IoBuf::new(src.len());
                        piece.as_mut_slice().copy_from_slice(src);
                        (slot * self.unit + (start - ustart), piece)
                    };
                    let (_, r) = self.store.write(at, data, fua).await;
                    if let Err(e) = r {
                        if fresh {
                            // Nothing valid there: the units stay where
                            // they were (their data unchanged, as the
                            // failed write is the host's error).
                            for x in u..u + n {
                                self.map.remove(key(self.main, x));
                            }
                        }
                        return Err(e);
                    }
                    self.counts.diverted.fetch_add(n, Ordering::Relaxed);
                    slots.extend(slot..slot + n);
                }
            }
        }
        for &s in &slots {
            self.map.written(s);
        }
        if fua && !slots.is_empty() {
            // The data is durable on the store: its entries now (not
            // those of other requests, whose data may not be flushed).
            self.map.persist(slots).await?;
        }
        Ok(())
    }

    /// Reads the current data of the units from `u`, just given their
    /// slots (nothing written there yet), from the group into `whole`.
    async fn fill_current(&self, u: u64, whole: &mut IoBuf) -> Result<()> {
        let piece = IoBuf::new(whole.len());
        let (piece, r) = self.below.read(u * self.unit, piece).await;
        r?;
        whole.as_mut_slice().copy_from_slice(piece.as_slice());
        Ok(())
    }

    /// Zeroes (or discards) `off..off+len` through the write path, a
    /// chunk at a time (with `fua`, each chunk durable with its entries).
    async fn zero_diverted(&self, off: u64, len: u64, fua: bool) -> Result<()> {
        const CHUNK: u64 = 1 << 20;
        let mut at = off;
        while at < off + len {
            let n = CHUNK.min(off + len - at);
            let buf = IoBuf::new(usize::try_from(n).unwrap_or(0));
            let (_, r) = self.write_diverted(at, buf, fua).await;
            r?;
            at += n;
        }
        Ok(())
    }
}

impl BlockDev for Divert {
    fn size(&self) -> u64 {
        self.below.size()
    }

    fn block_size(&self) -> u32 {
        self.below.block_size()
    }

    fn read(&self, off: u64, buf: IoBuf) -> DevFuture<'_, BufResult> {
        Box::pin(async move {
            if self.mode() == Mode::Off {
                return self.below.read(off, buf).await;
            }
            self.read_diverted(off, buf).await
        })
    }

    fn write(&self, off: u64, buf: IoBuf, fua: bool) -> DevFuture<'_, BufResult> {
        Box::pin(async move {
            if self.mode() == Mode::Off {
                return self.below.write(off, buf, fua).await;
            }
            self.write_diverted(off, buf, fua).await
        })
    }

    fn flush(&self) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            if self.mode() == Mode::Off {
                return self.below.flush().await;
            }
            let (a, b) = futures::join!(self.save(), self.below.flush());
            a.and(b)
        })
    }

    fn discard(&self, off: u64, len: u64) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            match self.mode() {
                Mode::Off => self.below.discard(off, len).await,
                _ => self.zero_diverted(off, len, false).await,
            }
        })
    }

    fn write_zeroes(&self, off: u64, len: u64, flags: ZeroFlags) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            match self.mode() {
                Mode::Off => self.below.write_zeroes(off, len, flags).await,
                _ if flags.fast_only => Err(Error::new(
                    ErrorKind::Unsupported,
                    "zeroing while writes are diverted is no faster than writing zeroes",
                )),
                _ => self.zero_diverted(off, len, flags.fua).await,
            }
        })
    }

    fn block_status(&self, off: u64, len: u64) -> DevFuture<'_, Result<Vec<Extent>>> {
        Box::pin(async move {
            if self.mode() == Mode::Off || self.map.is_empty() {
                return self.below.block_status(off, len).await;
            }
            // Diverted units hold data the group does not show: only
            // "data" is safe to say.
            Ok(vec![Extent { len, flags: 0 }])
        })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Below the RAID layer (a work disk): the node over one member slot.
impl crate::stack::raid::SlotDivert for Divert {
    fn dev(&self) -> &dyn BlockDev {
        self
    }

    fn holds_all(&self, off: u64, len: u64) -> bool {
        self.units_of(off, len)
            .all(|u| self.map.lookup(key(self.main, u)).is_some())
    }

    fn holds_any(&self, off: u64, len: u64) -> bool {
        if self.map.is_empty() {
            return false;
        }
        self.units_of(off, len)
            .any(|u| self.map.lookup(key(self.main, u)).is_some())
    }

    fn save(&self) -> DevFuture<'_, Result<()>> {
        Box::pin(Divert::save(self))
    }
}
