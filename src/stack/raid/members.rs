//! The member slots of a RAID group and their state machine.
//!
//! ```text
//!            fail (I/O error or admin)              replace_member
//!   Ok --------------------------------> Failed -----------------+
//!    |                                                           v
//!    | replace_member (hot replace:            Rebuilding { cursor } -- rebuild_rows
//!    +-- old member kept as the source) ---->    rows < cursor: on the new member
//!                                                rows >= cursor: old member, or
//!                                                rebuilt from redundancy
//!                      cursor == rows() --> Ok (old member released)
//!   the new member fails --> Failed, or back to Ok on the old member (hot replace)
//!   the old member fails --> dropped; the rebuild goes on from redundancy
//! ```
//!
//! Writes go to every device of a slot (the new member and, during a hot
//! replace, the old one), so copied rows stay current and a cancelled hot
//! replace leaves the old member complete. Reads use a slot only where it
//! holds current data: below the cursor on the new member, at or above it
//! on the old member.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::blockdev::{BlockDev, DevFuture};
use crate::error::{Error, ErrorKind, Result};
use crate::layout::Layout;

/// A member device.
pub(super) type Dev = Arc<dyn BlockDev>;

/// The state of one member slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    /// In use and current.
    Ok,
    /// Not in use (failed, removed or missing).
    Failed,
    /// A new member being filled: rows below `cursor` are done.
    Rebuilding { cursor: u64 },
}

/// The state of a whole group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Every member in use and current.
    Optimal,
    /// Members missing, data still served from redundancy.
    Degraded,
    /// A member is being rebuilt or hot-replaced; all data is served.
    Rebuilding,
    /// Too many members missing: I/O fails with `ErrorKind::Unavailable`.
    Failed,
}

/// What the group's owner does when the RAID layer fails a member.
pub trait RaidHooks: Send + Sync + 'static {
    /// The RAID decided to fail member `idx` after `err`. Must durably
    /// record it before resolving (the engine commits it to the pool
    /// database); the write that saw the error completes only after.
    fn member_failed(&self, idx: usize, err: &Error) -> DevFuture<'_, Result<()>>;

    /// The old device of a hot replace of slot `idx` failed after `err`:
    /// the slot goes on being filled, from redundancy now. Like
    /// [`RaidHooks::member_failed`], recorded durably before resolving.
    fn replaced_failed(&self, idx: usize, err: &Error) -> DevFuture<'_, Result<()>> {
        let _ = (idx, err);
        Box::pin(async { Ok(()) })
    }
}

/// Hooks that record nothing (tests, or groups without a pool database).
pub struct NoHooks;

impl RaidHooks for NoHooks {
    fn member_failed(&self, _idx: usize, _err: &Error) -> DevFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

pub(super) struct Slot {
    pub(super) state: MemberState,
    /// The member; while rebuilding, the one being filled.
    pub(super) dev: Option<Dev>,
    /// Hot replace: the old member, current everywhere, the copy source.
    pub(super) old: Option<Dev>,
}

impl Slot {
    /// The device holding current data of `row`, if any.
    fn source(&self, row: u64) -> Option<&Dev> {
        match self.state {
            MemberState::Ok => self.dev.as_ref(),
            MemberState::Failed => None,
            MemberState::Rebuilding { cursor } if row < cursor => self.dev.as_ref(),
            MemberState::Rebuilding { .. } => self.old.as_ref(),
        }
    }

    /// Whether some rows of this member hold no current data: failed, or
    /// rebuilt onto a new device (a hot replace still has its old one).
    fn is_missing(&self) -> bool {
        match self.state {
            MemberState::Ok => false,
            MemberState::Failed => true,
            MemberState::Rebuilding { .. } => self.old.is_none(),
        }
    }

    /// Every device a write must reach.
    fn targets(&self) -> Two<Dev> {
        Two([self.dev.clone(), self.old.clone()])
    }
}

/// At most two of a thing, held inline: a slot's devices (the member and,
/// during a hot replace, the old one) or a member range's runs split at a
/// rebuild cursor. Every read and write asks for one of these, so they
/// cost no heap allocation (a `Vec` did, per request).
pub(super) struct Two<T>([Option<T>; 2]);

impl<T> Two<T> {
    fn one(t: T) -> Two<T> {
        Two([Some(t), None])
    }

    pub(super) fn len(&self) -> usize {
        self.0.iter().flatten().count()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter().flatten()
    }
}

impl<T> IntoIterator for Two<T> {
    type Item = T;
    type IntoIter = std::iter::Flatten<std::array::IntoIter<Option<T>, 2>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter().flatten()
    }
}

/// A run of a member range: the device holding its current data (if any),
/// member offset, length.
pub(super) type Run = (Option<Dev>, u64, u64);

/// What stopping an unfinished rebuild or hot replace left in its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortOutcome {
    /// A hot replace: the old member serves again, as before.
    RestoredOld,
    /// A rebuild from redundancy: the slot is failed again.
    Failed,
    /// Nothing was in progress (the rebuild had finished, or the slot had
    /// failed meanwhile).
    NothingToAbort,
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Health::Optimal => "optimal",
            Health::Degraded => "degraded",
            Health::Rebuilding => "rebuilding",
            Health::Failed => "failed",
        })
    }
}

/// What a slot's failure handling decided.
enum Verdict {
    /// The device is no longer used; nothing to record.
    Dropped,
    /// The member is failed: record it through the hooks.
    Record,
    /// The old device of a hot replace is gone; the slot goes on being
    /// filled: record that through the hooks.
    RecordReplaced,
    /// A non-redundant group cannot lose the device: the I/O fails.
    Fatal,
}

/// The slots of a group, behind one short-held lock, with the group's
/// health kept beside them in an atomic: every request checks the health
/// (twice per write), and computing it took the slots' lock three times.
/// Every change of a slot goes through [`Members::edit`], whose guard
/// stores the new health before it unlocks, so a request never sees a
/// slot change without the health that goes with it.
pub(super) struct Members {
    slots: Mutex<Vec<Slot>>,
    /// [`Health`] as a `u8` ([`health_code`]).
    health: AtomicU8,
    stripe: u64,
    rows: u64,
    redundancy: usize,
    redundant: bool,
    /// Reads in flight per slot (raid1 leg choice).
    pub(super) inflight: Vec<AtomicU64>,
    /// Serialises failure handling so the hooks hear of a member once.
    failing: tokio::sync::Mutex<()>,
    /// Slot + 1 whose old member of a hot replace is failing (sparing):
    /// host reads of the rows it still serves are rebuilt from the others
    /// while they can be; 0: none.
    spared: AtomicU64,
}

impl Members {
    pub(super) fn new(layout: &Layout, slots: Vec<Slot>) -> Members {
        let m = Members {
            inflight: slots.iter().map(|_| AtomicU64::new(0)).collect(),
            slots: Mutex::new(slots),
            health: AtomicU8::new(health_code(Health::Optimal)),
            stripe: layout.stripe_size(),
            rows: layout.rows(),
            redundancy: layout.redundancy(),
            redundant: layout.is_redundant(),
            failing: tokio::sync::Mutex::new(()),
            spared: AtomicU64::new(0),
        };
        drop(m.edit());
        m
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Vec<Slot>> {
        crate::blockdev::probe::shared_lock(1);
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The slots, to change: the health is recomputed when the guard goes.
    fn edit(&self) -> Edit<'_> {
        Edit {
            members: self,
            slots: self.lock(),
        }
    }

    /// The group's health now (one atomic load).
    pub(super) fn health(&self) -> Health {
        health_of_code(self.health.load(Ordering::Acquire))
    }

    /// The health of `slots`: too many missing in some row is Failed;
    /// else a rebuild or hot replace is Rebuilding; else missing members
    /// are Degraded.
    fn health_of(&self, slots: &[Slot]) -> Health {
        let worst = worst_missing_in(slots, 0, self.rows, None);
        if worst > self.redundancy {
            Health::Failed
        } else if slots
            .iter()
            .any(|s| matches!(s.state, MemberState::Rebuilding { .. }))
        {
            Health::Rebuilding
        } else if worst > 0 {
            Health::Degraded
        } else {
            Health::Optimal
        }
    }

    /// Whether slot `idx` is served by `dev` (the very device).
    pub(super) fn serves(&self, idx: usize, dev: &Dev) -> bool {
        self.lock()
            .get(idx)
            .and_then(|s| s.dev.as_ref())
            .is_some_and(|d| Arc::ptr_eq(d, dev))
    }

    pub(super) fn state(&self, idx: usize) -> MemberState {
        self.lock()
            .get(idx)
            .map_or(MemberState::Failed, |s| s.state)
    }

    /// The device holding current data of `row` on slot `idx`.
    pub(super) fn source(&self, idx: usize, row: u64) -> Option<Dev> {
        self.lock().get(idx)?.source(row).cloned()
    }

    /// Every device a write to slot `idx` must reach.
    pub(super) fn targets(&self, idx: usize) -> Two<Dev> {
        self.lock()
            .get(idx)
            .map_or(Two([None, None]), Slot::targets)
    }

    /// Every present device of every slot, with its slot.
    pub(super) fn all_devices(&self) -> Vec<(usize, Dev)> {
        let g = self.lock();
        let per_slot = g.iter().enumerate();
        per_slot
            .flat_map(|(i, s)| s.targets().into_iter().map(move |d| (i, d)))
            .collect()
    }

    /// Splits member range `off..off+len` of slot `idx` where its source
    /// changes (at the rebuild cursor): `(device, offset, length)` runs.
    /// With `host` set, the rows where the failing old member of a spared
    /// slot is avoided (see [`Members::spared_in_row`]) have no source:
    /// the caller rebuilds them from the other members.
    pub(super) fn sources(&self, idx: usize, off: u64, len: u64, host: bool) -> Two<Run> {
        let g = self.lock();
        let Some(slot) = g.get(idx) else {
            return Two::one((None, off, len));
        };
        let end = off + len;
        let split = match slot.state {
            MemberState::Rebuilding { cursor } => cursor.saturating_mul(self.stripe),
            _ => end,
        };
        let spared = host && self.spared.load(Ordering::Relaxed) == idx as u64 + 1;
        let source = |row: u64| {
            // The failing old member is left to the sparing copy while
            // the row can be rebuilt without it (no other slot missing).
            if spared && avoids(self.redundant, slot, &g, row) {
                None
            } else {
                slot.source(row).cloned()
            }
        };
        if split <= off || split >= end {
            return Two::one((source(off / self.stripe), off, len));
        }
        let low = source(off / self.stripe);
        let high = source(split / self.stripe);
        Two([
            Some((low, off, split - off)),
            Some((high, split, end - split)),
        ])
    }

    /// Slots without current data in `row`. None while the group is
    /// optimal, without a look at the slots.
    pub(super) fn missing_in_row(&self, row: u64) -> Vec<usize> {
        if self.health() == Health::Optimal {
            return Vec::new();
        }
        missing_in(&self.lock(), row, None).collect()
    }

    /// The most slots missing in any row of `r0..r1`.
    pub(super) fn worst_missing(&self, r0: u64, r1: u64) -> usize {
        self.worst_missing_without(r0, r1, None)
    }

    /// [`Members::worst_missing`] as it would be with slot `gone` failed.
    pub(super) fn worst_missing_without(&self, r0: u64, r1: u64, gone: Option<usize>) -> usize {
        worst_missing_in(&self.lock(), r0, r1, gone)
    }

    /// Takes `dev` out of use after an error; what to do next.
    fn drop_device(&self, idx: usize, dev: &Dev) -> Verdict {
        let mut g = self.edit();
        let Some(slot) = g.get_mut(idx) else {
            return Verdict::Dropped;
        };
        let is = |d: &Option<Dev>| d.as_ref().is_some_and(|d| Arc::ptr_eq(d, dev));
        if is(&slot.dev) && slot.old.is_some() {
            // A failing hot-replacement: cancel it; the old member is current.
            slot.dev = slot.old.take();
            slot.state = MemberState::Ok;
            return Verdict::Dropped;
        }
        if !(is(&slot.dev) || is(&slot.old)) {
            return Verdict::Dropped;
        }
        if !self.redundant {
            return Verdict::Fatal;
        }
        if is(&slot.old) {
            slot.old = None;
            return Verdict::RecordReplaced;
        }
        slot.dev = None;
        slot.state = MemberState::Failed;
        Verdict::Record
    }

    /// Handles an I/O error of `dev` in slot `idx`: on a redundant group the
    /// member is failed and recorded through `hooks` (once) before this
    /// resolves; on a non-redundant group the error is returned.
    pub(super) async fn device_error(
        &self,
        hooks: &dyn RaidHooks,
        idx: usize,
        dev: &Dev,
        err: Error,
    ) -> Result<()> {
        if err.kind() != ErrorKind::Io {
            return Err(err);
        }
        crate::blockdev::probe::shared_lock(1);
        let _one_at_a_time = self.failing.lock().await;
        match self.drop_device(idx, dev) {
            Verdict::Dropped => Ok(()),
            Verdict::Fatal => Err(err),
            Verdict::Record => {
                tracing::warn!(member = idx, error = %err.chain(), "failing RAID member");
                let recorded = hooks.member_failed(idx, &err).await;
                recorded.map_err(|e| e.context(format!("recording the failure of member {idx}")))
            }
            Verdict::RecordReplaced => {
                tracing::warn!(member = idx, error = %err.chain(), "dropping the replaced device of RAID member");
                let recorded = hooks.replaced_failed(idx, &err).await;
                recorded.map_err(|e| {
                    e.context(format!(
                        "recording the failure of member {idx}'s old device"
                    ))
                })
            }
        }
    }

    /// Stops an unfinished rebuild or hot replace of slot `idx`.
    pub(super) fn abort(&self, idx: usize) -> Result<AbortOutcome> {
        let mut g = self.edit();
        let slot = g
            .get_mut(idx)
            .ok_or_else(|| Error::not_found(format!("the group has no member {idx}")))?;
        if !matches!(slot.state, MemberState::Rebuilding { .. }) {
            return Ok(AbortOutcome::NothingToAbort);
        }
        Ok(match slot.old.take() {
            Some(old) => {
                *slot = Slot {
                    state: MemberState::Ok,
                    dev: Some(old),
                    old: None,
                };
                AbortOutcome::RestoredOld
            }
            None => {
                *slot = Slot {
                    state: MemberState::Failed,
                    dev: None,
                    old: None,
                };
                AbortOutcome::Failed
            }
        })
    }

    /// Admin fail: stops using slot `idx` at once, unless that would
    /// leave more members missing than the group `survives` (a drill must
    /// not lose data).
    pub(super) fn fail(&self, idx: usize, survives: Option<usize>) -> Result<()> {
        let mut g = self.edit();
        let others = g
            .iter()
            .enumerate()
            .filter(|(i, s)| *i != idx && s.is_missing())
            .count();
        let slot = g
            .get_mut(idx)
            .ok_or_else(|| Error::not_found(format!("the group has no member {idx}")))?;
        if let Some(survives) = survives
            && slot.state != MemberState::Failed
            && others + 1 > survives
        {
            return Err(Error::conflict(format!(
                "failing member {idx} would leave {} members missing, and the group survives {survives}: \
                 its data would be lost; replace the failed or rebuilding member first",
                others + 1
            )));
        }
        *slot = Slot {
            state: MemberState::Failed,
            dev: None,
            old: None,
        };
        Ok(())
    }

    /// Advances slot `idx`'s rebuild over rows `first..end` (the cursor at
    /// `first`) if `dev` is still the one being built; at `rows` the slot
    /// becomes Ok. Returns false if the rebuild was cancelled meanwhile.
    pub(super) fn advance(
        &self,
        idx: usize,
        dev: &Dev,
        (first, end): (u64, u64),
        rows: u64,
    ) -> bool {
        self.move_cursor(idx, dev, rows, |c| if c == first { end } else { c })
    }

    /// Sets slot `idx`'s rebuild cursor to `to(cursor)` if `dev` is still
    /// the one being built; at `rows` the slot becomes Ok.
    fn move_cursor(&self, idx: usize, dev: &Dev, rows: u64, to: impl Fn(u64) -> u64) -> bool {
        let mut g = self.edit();
        let Some(slot) = g.get_mut(idx) else {
            return false;
        };
        let same = slot.dev.as_ref().is_some_and(|d| Arc::ptr_eq(d, dev));
        let MemberState::Rebuilding { cursor } = slot.state else {
            return false;
        };
        if !same {
            return false;
        }
        let cursor = to(cursor);
        slot.state = if cursor >= rows {
            slot.old = None;
            MemberState::Ok
        } else {
            MemberState::Rebuilding { cursor }
        };
        true
    }

    pub(super) fn note_read(&self, idx: usize, delta: i64) {
        if let Some(c) = self.inflight.get(idx) {
            if delta >= 0 {
                c.fetch_add(1, Ordering::Relaxed);
            } else {
                c.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    pub(super) fn reads_in_flight(&self, idx: usize) -> u64 {
        self.inflight
            .get(idx)
            .map_or(u64::MAX, |c| c.load(Ordering::Relaxed))
    }
}

impl Members {
    /// Puts `new` in slot `idx` as a rebuilding member; a healthy member
    /// stays as the hot-replace source.
    /// Marks the old member of slot `idx`'s hot replace as failing (or
    /// none, `None`): see `spared`.
    pub(super) fn set_spared(&self, idx: Option<usize>) {
        let v = idx.map_or(0, |i| i as u64 + 1);
        self.spared.store(v, Ordering::Relaxed);
    }

    pub(super) fn spared(&self) -> Option<usize> {
        match self.spared.load(Ordering::Relaxed) {
            0 => None,
            v => usize::try_from(v - 1).ok(),
        }
    }

    /// The spared slot if host I/O avoids reading it in `row` (see
    /// [`Members::sources`]).
    pub(super) fn spared_in_row(&self, row: u64) -> Option<usize> {
        let idx = self.spared()?;
        let g = self.lock();
        let slot = g.get(idx)?;
        avoids(self.redundant, slot, &g, row).then_some(idx)
    }

    pub(super) fn install(&self, idx: usize, new: Dev) -> Result<()> {
        if self.spared() == Some(idx) {
            self.set_spared(None);
        }
        let mut g = self.edit();
        let slot = g
            .get_mut(idx)
            .ok_or_else(|| Error::not_found(format!("the group has no member {idx}")))?;
        match slot.state {
            MemberState::Rebuilding { .. } => Err(Error::conflict(format!(
                "member {idx} is already being rebuilt or replaced; wait for it to finish"
            ))),
            MemberState::Ok => {
                slot.old = slot.dev.replace(new);
                slot.state = MemberState::Rebuilding { cursor: 0 };
                Ok(())
            }
            MemberState::Failed => {
                slot.dev = Some(new);
                slot.old = None;
                slot.state = MemberState::Rebuilding { cursor: 0 };
                Ok(())
            }
        }
    }

    /// Puts `dev` back in failed slot `idx` as current everywhere (a
    /// reinstated disk that missed no write).
    pub(super) fn reinstate(&self, idx: usize, dev: Dev) -> Result<()> {
        let mut g = self.edit();
        let slot = g
            .get_mut(idx)
            .ok_or_else(|| Error::not_found(format!("the group has no member {idx}")))?;
        if slot.state != MemberState::Failed {
            return Err(Error::conflict(format!("member {idx} has not failed")));
        }
        *slot = Slot {
            state: MemberState::Ok,
            dev: Some(dev),
            old: None,
        };
        Ok(())
    }

    /// Moves the rebuild cursor of slot `idx` forward to `row` (rows below
    /// are current on `dev`: a reinstate skips what was not written while
    /// the disk was out); at `rows` the slot becomes Ok.
    pub(super) fn skip_to(&self, idx: usize, dev: &Dev, row: u64, rows: u64) -> bool {
        self.move_cursor(idx, dev, rows, |c| c.max(row))
    }

    /// Ends a rebuild at once (a group without rows).
    pub(super) fn finish(&self, idx: usize) {
        if let Some(slot) = self.edit().get_mut(idx) {
            slot.old = None;
            slot.state = MemberState::Ok;
        }
    }

    /// The cursor and new device of a rebuilding slot.
    pub(super) fn building(&self, idx: usize) -> Option<(u64, Dev)> {
        let g = self.lock();
        let slot = g.get(idx)?;
        match slot.state {
            MemberState::Rebuilding { cursor } => Some((cursor, slot.dev.clone()?)),
            _ => None,
        }
    }

    /// The old member of a hot replace.
    pub(super) fn old(&self, idx: usize) -> Option<Dev> {
        self.lock().get(idx)?.old.clone()
    }
}

/// The slots held for a change; the group's health is stored from them
/// before they unlock.
struct Edit<'a> {
    members: &'a Members,
    slots: MutexGuard<'a, Vec<Slot>>,
}

impl Drop for Edit<'_> {
    fn drop(&mut self) {
        let h = self.members.health_of(&self.slots);
        self.members.health.store(health_code(h), Ordering::Release);
    }
}

impl std::ops::Deref for Edit<'_> {
    type Target = Vec<Slot>;
    fn deref(&self) -> &Vec<Slot> {
        &self.slots
    }
}

impl std::ops::DerefMut for Edit<'_> {
    fn deref_mut(&mut self) -> &mut Vec<Slot> {
        &mut self.slots
    }
}

fn health_code(h: Health) -> u8 {
    match h {
        Health::Optimal => 0,
        Health::Degraded => 1,
        Health::Rebuilding => 2,
        Health::Failed => 3,
    }
}

fn health_of_code(c: u8) -> Health {
    match c {
        0 => Health::Optimal,
        1 => Health::Degraded,
        2 => Health::Rebuilding,
        _ => Health::Failed,
    }
}

/// Whether host I/O of `row` avoids reading the failing old member of
/// `slot` (spared): its hot replace still needs it there, and the row can
/// be rebuilt without it.
fn avoids(redundant: bool, slot: &Slot, slots: &[Slot], row: u64) -> bool {
    redundant
        && slot.old.is_some()
        && matches!(slot.state, MemberState::Rebuilding { cursor } if row >= cursor)
        && missing_in(slots, row, None).next().is_none()
}

/// Slots of `slots` without current data in `row` (and `gone`).
fn missing_in(slots: &[Slot], row: u64, gone: Option<usize>) -> impl Iterator<Item = usize> {
    let absent = slots
        .iter()
        .enumerate()
        .filter(move |(i, s)| s.source(row).is_none() || Some(*i) == gone);
    absent.map(|(i, _)| i)
}

/// The most slots missing in any row of `r0..r1`: sources change only at
/// rebuild cursors, so those rows and `r0` are the ones to look at.
fn worst_missing_in(slots: &[Slot], r0: u64, r1: u64, gone: Option<usize>) -> usize {
    let cursors = slots.iter().filter_map(|s| match s.state {
        MemberState::Rebuilding { cursor } if cursor > r0 && cursor < r1 => Some(cursor),
        _ => None,
    });
    std::iter::once(r0)
        .chain(cursors)
        .map(|r| missing_in(slots, r, gone).count())
        .max()
        .unwrap_or(0)
}
