//! raid: the RAID group node: concat, raid0, n-way raid1 and raid5 over
//! member disks, with degraded operation, member failure, rebuild, hot
//! replace and resync. The address math lives in [`crate::layout`].
//!
//! ```text
//!                        RaidDev (BlockDev)
//!   row locks (stack::lock)  |  write intent (DESIGN rule 2)  |  hooks
//!          |              |              |              |
//!       member 0       member 1       member 2       member 3   (BlockDev)
//! ```
//!
//! - Reads map to member pieces read concurrently; raid1 picks the leg
//!   with the fewest reads in flight; raid5 reads data strips and rebuilds
//!   a strip from the rest of its row when its member is missing or fails
//!   a read. Data recovered after a read error is written back (md-style
//!   repair); a member is failed only if that repair write fails.
//! - Writes lock the rows they touch (one key per strip, or per stripe row
//!   for raid5), mark the write intent (raid1, raid5), then write every
//!   target. raid5 computes parity from a full row, by read-modify-write,
//!   or by reconstruct-write, whichever reads less; a degraded row takes
//!   the reconstruct path. An I/O error fails the member through the
//!   [`RaidHooks`] before the host write completes; the write succeeds
//!   while the data is still readable.
//! - Rebuild and resync work row by row under the same row locks. On
//!   concat and raid0, where nothing else needs them, host writes take
//!   row locks only while a copier runs (`raid/copiers.rs`).
//! - The group's health is kept in an atomic beside the member slots and
//!   stored whenever a slot changes: a request reads it without a lock.

mod copiers;
mod divert;
mod members;
mod mirror;
mod parity;
mod rebuild;
mod striped;
mod target;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use divert::SlotDivert;
pub use members::{AbortOutcome, Health, MemberState, NoHooks, RaidHooks};
use members::{Members, Slot};
pub use rebuild::CopyPace;

use crate::blockdev::{
    BlockDev, BufResult, DevFuture, Extent, IntentGuard, WriteIntent, ZeroFlags, begin_write,
};
use crate::buf::IoBuf;
use crate::error::{Error, ErrorKind, Result};
pub use crate::layout::{Layout, RaidLevel};
use crate::stack::lock::{RangeGuard, RangeLock};
use copiers::{Copiers, Unlocked};

/// A RAID group: a [`BlockDev`] over member devices.
pub struct RaidDev {
    layout: Layout,
    members: Members,
    intent: Arc<dyn WriteIntent>,
    hooks: Arc<dyn RaidHooks>,
    locks: RangeLock,
    /// Background copiers at work (concat and raid0 writes lock rows
    /// only then).
    copiers: Copiers,
    block_size: u32,
    /// Rotates raid1 leg choice among equally busy legs.
    next_leg: AtomicUsize,
    /// Ranges written when the daemon last stopped uncleanly, not yet
    /// resynced: raid1 legs may disagree there, so reads use one leg only.
    unsynced: Unsynced,
    /// Member I/O diverted to a work disk while the group is spared.
    divert: divert::Diversion,
}

/// Byte ranges awaiting resync, with a lock-free "none" fast path.
#[derive(Default)]
struct Unsynced {
    any: std::sync::atomic::AtomicBool,
    ranges: std::sync::Mutex<Vec<(u64, u64)>>,
}

impl Unsynced {
    fn overlaps(&self, off: u64, len: u64) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let end = off + len.max(1);
        crate::blockdev::probe::shared_lock(1);
        let r = self.ranges.lock().unwrap_or_else(|p| p.into_inner());
        r.iter().any(|&(o, l)| o < end && off < o + l)
    }

    fn add(&self, ranges: &[(u64, u64)]) {
        crate::blockdev::probe::shared_lock(1);
        let mut r = self.ranges.lock().unwrap_or_else(|p| p.into_inner());
        for &(o, l) in ranges {
            // A range inside one already listed adds nothing (a client
            // retrying a refused write does not grow the list).
            if !r.iter().any(|&(ro, rl)| ro <= o && o + l <= ro + rl) {
                r.push((o, l));
            }
        }
        self.any.store(!r.is_empty(), Ordering::Release);
    }

    /// Removes `off..off+len` from every range.
    fn remove(&self, off: u64, len: u64) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let end = off + len;
        crate::blockdev::probe::shared_lock(1);
        let mut r = self.ranges.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::with_capacity(r.len());
        for &(o, l) in r.iter() {
            let e = o + l;
            if e <= off || o >= end {
                out.push((o, l));
                continue;
            }
            if o < off {
                out.push((o, off - o));
            }
            if e > end {
                out.push((end, e - end));
            }
        }
        *r = out;
        self.any.store(!r.is_empty(), Ordering::Release);
    }
}

/// A host write's hold on its rows (released when dropped): the row
/// lock, or a count among the writes a starting copier waits for.
struct HostRows<'a> {
    _unlocked: Option<Unlocked<'a>>,
    _locked: Option<RangeGuard<'a>>,
}

fn check_slot(
    layout: &Layout,
    idx: usize,
    dev: Option<&Arc<dyn BlockDev>>,
    state: MemberState,
) -> Result<()> {
    let need = layout.member_usable(idx);
    match (dev, state) {
        (None, MemberState::Failed) => Ok(()),
        (None, _) => Err(Error::invalid(format!(
            "member {idx} is missing but not marked failed"
        ))),
        (Some(d), _) if d.size() < need => Err(Error::invalid(format!(
            "member {idx} holds {} bytes, the layout needs {need}",
            d.size()
        ))),
        (Some(_), MemberState::Rebuilding { .. }) if !layout.is_redundant() => {
            Err(Error::invalid(format!(
                "member {idx} cannot be rebuilt: {} has no redundancy",
                layout.level()
            )))
        }
        (Some(_), MemberState::Rebuilding { cursor }) if cursor > layout.rows() => {
            Err(Error::invalid(format!(
                "member {idx} rebuild cursor {cursor} is past the last row {}",
                layout.rows()
            )))
        }
        _ => Ok(()),
    }
}

impl RaidDev {
    /// Builds a group node. `members[i]` is `None` for a missing member,
    /// whose state must be `Failed`; a `Rebuilding` member continues its
    /// rebuild from redundancy at its cursor.
    pub fn new(
        layout: Layout,
        members: Vec<Option<Arc<dyn BlockDev>>>,
        states: Vec<MemberState>,
        intent: Arc<dyn WriteIntent>,
        hooks: Arc<dyn RaidHooks>,
    ) -> Result<RaidDev> {
        let n = layout.members();
        if members.len() != n || states.len() != n {
            return Err(Error::invalid(format!(
                "the {} layout has {n} members, got {} devices and {} states",
                layout.level(),
                members.len(),
                states.len()
            )));
        }
        let mut slots = Vec::with_capacity(n);
        let mut block_size = 512u32;
        for (idx, (dev, state)) in members.into_iter().zip(states).enumerate() {
            check_slot(&layout, idx, dev.as_ref(), state)?;
            if let Some(d) = &dev {
                block_size = block_size.max(d.block_size());
            }
            slots.push(Slot {
                state,
                dev,
                old: None,
            });
        }
        Ok(RaidDev {
            members: Members::new(&layout, slots),
            layout,
            intent,
            hooks,
            locks: RangeLock::new(),
            copiers: Copiers::default(),
            block_size,
            next_leg: AtomicUsize::new(0),
            unsynced: Unsynced::default(),
            divert: divert::Diversion::default(),
        })
    }

    /// Declares ranges that may be inconsistent (marked in the write-intent
    /// log at an unclean stop) until [`RaidDev::resync`] covers them. Until
    /// then raid1 reads there all come from the leg resync copies from, so
    /// two reads never disagree.
    pub fn mark_unsynced(&self, ranges: &[(u64, u64)]) {
        self.unsynced.add(ranges);
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn member_state(&self, idx: usize) -> MemberState {
        self.members.state(idx)
    }

    /// Whether member `idx` is `dev` now (after a hot replace whose new
    /// disk failed, the old disk serves again).
    pub fn member_is(&self, idx: usize, dev: &Arc<dyn BlockDev>) -> bool {
        self.members.serves(idx, dev)
    }

    /// Units of rebuild and resync progress: rows of `stripe size` bytes of
    /// member space (for raid5, stripe rows).
    pub fn rows(&self) -> u64 {
        self.layout.rows()
    }

    /// The group's health (kept up to date as members change; no lock).
    pub fn health(&self) -> Health {
        self.members.health()
    }

    /// The health the group would have with member `idx` failed too: what
    /// an administrative fail must check before it stops a group.
    pub fn health_without(&self, idx: usize) -> Health {
        let worst = self
            .members
            .worst_missing_without(0, self.rows(), Some(idx));
        if worst > self.layout.redundancy() {
            Health::Failed
        } else if worst > 0 {
            Health::Degraded
        } else {
            Health::Optimal
        }
    }

    /// Admin fail (drills): stops using member `idx` at once; refused
    /// (`conflict`) when more members would be missing than the level
    /// survives. The caller records the new state itself.
    pub fn fail_member(&self, idx: usize) -> Result<()> {
        self.members
            .fail(idx, Some(self.layout.redundancy()))
            .map_err(|e| e.context(format!("{} group", self.layout.level())))
    }

    /// Admin fail with `--force`: stops using member `idx` even if the
    /// group then stops serving (it comes back with `disk reinstate`).
    pub fn force_fail_member(&self, idx: usize) -> Result<()> {
        self.members.fail(idx, None)
    }

    /// The error every I/O gets once the group cannot serve data.
    fn unavailable(&self) -> Error {
        let missing = self.members.worst_missing(0, self.rows());
        Error::new(
            ErrorKind::Unavailable,
            format!(
                "the {} group has failed: {missing} of {} members are missing and it survives {}; \
                 replace the failed disks and restore the data",
                self.layout.level(),
                self.layout.members(),
                self.layout.redundancy()
            ),
        )
    }

    /// Checks a request's range and alignment and that the group serves I/O.
    fn admit(&self, off: u64, len: u64) -> Result<()> {
        self.layout.check(off, len)?;
        let bs = u64::from(self.block_size);
        if !off.is_multiple_of(bs) || !len.is_multiple_of(bs) {
            return Err(Error::invalid(format!(
                "request {off}+{len} is not aligned to {bs} bytes"
            )));
        }
        if self.health() == Health::Failed {
            return Err(self.unavailable());
        }
        Ok(())
    }

    /// Row-lock keys covering `off..off+len` of the address space.
    fn lock_keys(&self, off: u64, len: u64) -> (u64, u64) {
        let g = self.layout.lock_grain();
        (off / g, (off + len).div_ceil(g))
    }

    /// What keeps a host write's rows to itself: the row lock of keys
    /// `k0..k1`, or on concat and raid0 with no copier active nothing
    /// (see [`copiers`]).
    async fn host_rows(&self, k0: u64, k1: u64) -> HostRows<'_> {
        if !self.layout.is_redundant()
            && let Some(u) = self.copiers.unlocked()
        {
            return HostRows {
                _unlocked: Some(u),
                _locked: None,
            };
        }
        HostRows {
            _unlocked: None,
            _locked: Some(self.locks.lock(k0, k1).await),
        }
    }

    /// [`BlockDev::read`] awaited in place (see [`BlockDev::as_any`]).
    pub async fn read_inline(&self, off: u64, buf: IoBuf) -> BufResult {
        self.do_read(off, buf).await
    }

    /// [`BlockDev::write`] awaited in place.
    pub async fn write_inline(&self, off: u64, buf: IoBuf, fua: bool) -> BufResult {
        self.do_write(off, buf, fua).await
    }

    async fn do_read(&self, off: u64, buf: IoBuf) -> BufResult {
        if let Err(e) = self.admit(off, buf.len() as u64) {
            return (buf, Err(e));
        }
        match self.layout.level() {
            RaidLevel::Concat | RaidLevel::Raid0 => self.striped_read(off, buf).await,
            RaidLevel::Raid1 => self.mirror_read(off, buf).await,
            RaidLevel::Raid5 => self.parity_read(off, buf).await,
        }
    }

    async fn do_write(&self, off: u64, buf: IoBuf, fua: bool) -> BufResult {
        let len = buf.len() as u64;
        if let Err(e) = self.admit(off, len) {
            return (buf, Err(e));
        }
        let (k0, k1) = self.lock_keys(off, len);
        let _rows = self.host_rows(k0, k1).await;
        match self.layout.level() {
            RaidLevel::Concat | RaidLevel::Raid0 => self.striped_write(off, buf, fua).await,
            RaidLevel::Raid1 | RaidLevel::Raid5 => {
                let guard = match begin_write(&*self.intent, off, len).await {
                    Ok(g) => g,
                    Err(e) => return (buf, Err(e)),
                };
                let out = if self.layout.level() == RaidLevel::Raid1 {
                    self.mirror_write(off, buf, fua).await
                } else {
                    self.parity_write(off, buf, fua).await
                };
                self.end_write(off, len, guard, &out.1);
                out
            }
        }
    }

    /// Ends a redundant write of `off..off+len` that ran under `guard`.
    /// When some member refused it for a reason other than an I/O error
    /// (want of room, a diverted write whose work store failed) others
    /// may have taken it: the members may disagree there until a resync,
    /// so the mark stays and mirror reads come from one leg.
    fn end_write<T>(&self, off: u64, len: u64, guard: IntentGuard, out: &Result<T>) {
        if out.as_ref().is_err_and(|e| e.kind() != ErrorKind::Io) {
            self.unsynced.add(&[(off, len)]);
            guard.keep();
        } else {
            drop(guard);
        }
    }

    async fn do_zeroes(&self, off: u64, len: u64, flags: ZeroFlags, discard: bool) -> Result<()> {
        self.admit(off, len)?;
        if len == 0 {
            return Ok(());
        }
        let (k0, k1) = self.lock_keys(off, len);
        let _rows = self.host_rows(k0, k1).await;
        match self.layout.level() {
            RaidLevel::Concat | RaidLevel::Raid0 => {
                self.striped_zeroes(off, len, flags, discard).await
            }
            RaidLevel::Raid1 => {
                let guard = self.intent.begin(off, len).await?;
                let out = self.mirror_zeroes(off, len, flags, discard).await;
                self.end_write(off, len, guard, &out);
                out
            }
            RaidLevel::Raid5 => self.parity_zeroes(off, len, flags, discard).await,
        }
    }

    async fn do_status(&self, off: u64, len: u64) -> Result<Vec<Extent>> {
        self.admit(off, len)?;
        let ext = match self.layout.level() {
            RaidLevel::Raid1 => self.mirror_status(off, len).await,
            _ => self.pieces_status(off, len).await,
        };
        Ok(crate::blockdev::coalesce(ext))
    }
}

impl BlockDev for RaidDev {
    fn size(&self) -> u64 {
        self.layout.capacity()
    }

    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn read(&self, off: u64, buf: IoBuf) -> DevFuture<'_, BufResult> {
        Box::pin(self.do_read(off, buf))
    }

    fn write(&self, off: u64, buf: IoBuf, fua: bool) -> DevFuture<'_, BufResult> {
        Box::pin(self.do_write(off, buf, fua))
    }

    fn flush(&self) -> DevFuture<'_, Result<()>> {
        Box::pin(self.flush_members())
    }

    fn discard(&self, off: u64, len: u64) -> DevFuture<'_, Result<()>> {
        let flags = ZeroFlags {
            may_unmap: true,
            ..ZeroFlags::default()
        };
        Box::pin(self.do_zeroes(off, len, flags, true))
    }

    fn write_zeroes(&self, off: u64, len: u64, flags: ZeroFlags) -> DevFuture<'_, Result<()>> {
        Box::pin(self.do_zeroes(off, len, flags, false))
    }

    fn preallocate(&self, off: u64, len: u64) -> DevFuture<'_, Result<()>> {
        Box::pin(self.preallocate_members(off, len))
    }

    fn block_status(&self, off: u64, len: u64) -> DevFuture<'_, Result<Vec<Extent>>> {
        Box::pin(self.do_status(off, len))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
