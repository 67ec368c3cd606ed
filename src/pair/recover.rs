//! An S-VOL group's error process unit 650, the parts that move data
//! (seed 003, FIG. 21 and 24; SEED-SPECS C.c.5, C.c.6, C.c.7):
//!
//! - **Write error process**: the RW member's physical volume fails a
//!   write. With host writes of the member held back (its gate), a
//!   healthy RO member R leaves the read candidates (stored first: from
//!   now on R is not the split image), is brought up to date with the
//!   increments (every block id of table 1300 copied DLV to R), and the
//!   RW LID takes R's PID (stored); R's LID is vacant until a spare fills
//!   it. The failed write is then issued again on the new PID.
//! - **Copies block by block** for the engine's jobs: a spare filled from
//!   a healthy RO member (spare replacement), an RW member rolled back to
//!   the split image (the blocks of table 1300 copied from an RO member).

#![forbid(unsafe_code)]

use std::sync::Arc;

use super::group::{Change, Group};
use crate::blockdev::BlockDev;
use crate::buf::IoBuf;
use crate::error::{Error, ErrorKind, Result};

impl Group {
    /// The write error process for RW member `me`, whose PID `failed`
    /// failed a write with `why`. Does nothing if another writer already
    /// moved the member off `failed`.
    pub(super) async fn take_over(
        &self,
        me: usize,
        failed: &Arc<dyn BlockDev>,
        why: &Error,
    ) -> Result<()> {
        let m = &self.members[me];
        let Some(incr) = &m.incr else {
            return Err(Error::invalid("only an RW member is taken over"));
        };
        let _alone = incr.gate.write().await;
        if !m.dev().is_some_and(|d| Arc::ptr_eq(&d, failed)) {
            return Ok(());
        }
        if !incr.dlv_ok() {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "S-VOL group {}: {}'s increments volume failed before, so no RO member can be brought up to date",
                    self.name, m.lid
                ),
            ));
        }
        let r = self
            .members
            .iter()
            .enumerate()
            .position(|(i, x)| !x.rw() && !x.failed() && x.dev().is_some() && !self.is_held(i))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Io,
                    format!(
                        "S-VOL group {}: no healthy RO member is left to take over (one whose image is being copied onto the P-VOL is not taken)",
                        self.name
                    ),
                )
            })?;
        let ro = &self.members[r];
        let Some(rdev) = ro.dev() else {
            return Err(Error::invalid("the RO member went vacant"));
        };
        tracing::error!(
            group = %self.name, member = %m.lid,
            "the RW member's write failed ({}): {} takes over its role",
            why.chain(), ro.lid
        );
        ro.set_dev(None);
        let vacating = Change::Vacating {
            lid: ro.lid.clone(),
        };
        if let Err(e) = self.hooks.store(&self.name, vacating).await {
            ro.set_dev(Some(rdev));
            return Err(e);
        }
        self.apply_increments(me, &rdev).await?;
        let took = Change::TookOver {
            rw: m.lid.clone(),
            from: ro.lid.clone(),
        };
        self.hooks.store(&self.name, took).await?;
        m.set_dev(Some(rdev));
        m.unfail();
        Ok(())
    }

    /// Copies every block of RW member `me`'s table 1300 from its DLV to
    /// `to`, durably.
    async fn apply_increments(&self, me: usize, to: &Arc<dyn BlockDev>) -> Result<()> {
        let m = &self.members[me];
        let Some(incr) = &m.incr else {
            return Ok(());
        };
        let mut t = 0;
        while let Some(b) = incr.bids.next_set(t) {
            let (off, len) = self.block_range(b, incr.bids.track(), m.size);
            copy(&incr.dlv(), to, off, len).await?;
            t = b + 1;
        }
        to.flush().await
    }

    fn block_range(&self, b: u64, block: u64, size: u64) -> (u64, u64) {
        let off = b.saturating_mul(block);
        (off, block.min(size.saturating_sub(off)))
    }

    /// A healthy RO member's device other than LID `not`: the source of
    /// a spare's fill or a rollback.
    pub fn source(&self, not: &str) -> Result<Arc<dyn BlockDev>> {
        self.members
            .iter()
            .filter(|m| !m.rw() && !m.failed() && m.lid != not)
            .find_map(|m| m.dev())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Io,
                    format!(
                        "S-VOL group {}: no healthy RO member holds the split image",
                        self.name
                    ),
                )
            })
    }

    /// Spare replacement, one step: copies `off..off+len` from a healthy
    /// RO member other than `lid` to `to`.
    pub async fn fill(&self, lid: &str, to: &Arc<dyn BlockDev>, off: u64, len: u64) -> Result<()> {
        let src = self.source(lid)?;
        copy(&src, to, off, len).await
    }

    /// Rollback (restore opcode 1, SEED-SPECS C.c.7 b), one step: the
    /// blocks of RW member `me`'s table 1300 in `blocks` are copied from a
    /// healthy RO member to the member and its DLV, durably, and leave
    /// the table. Host writes of the member wait meanwhile (its gate).
    pub async fn roll_back(&self, me: usize, blocks: std::ops::Range<u64>) -> Result<()> {
        let m = &self.members[me];
        let Some(incr) = &m.incr else {
            return Err(Error::invalid(format!("{} is not an RW member", m.lid)));
        };
        let _alone = incr.gate.write().await;
        let dev = m
            .dev()
            .ok_or_else(|| Error::invalid("the RW member is vacant"))?;
        let src = self.source(&m.lid)?;
        let mut done = Vec::new();
        let mut t = blocks.start;
        while let Some(b) = incr.bids.next_set(t).filter(|b| *b < blocks.end) {
            let (off, len) = self.block_range(b, incr.bids.track(), m.size);
            let buf = IoBuf::new(usize::try_from(len).unwrap_or(0));
            let (buf, r) = src.read(off, buf).await;
            r?;
            if incr.dlv_written() {
                let mut copy2 = IoBuf::new(buf.len());
                copy2.as_mut_slice().copy_from_slice(buf.as_slice());
                let dlv = incr.dlv();
                let ((_, a), (_, b2)) =
                    futures::join!(dev.write(off, buf, false), dlv.write(off, copy2, false));
                a.and(b2)?;
            } else {
                let (_, a) = dev.write(off, buf, false).await;
                a?;
            }
            done.push(b);
            t = b + 1;
        }
        m.flush().await?;
        for b in done {
            incr.bids.clear(b);
        }
        Ok(())
    }
}

impl Group {
    /// Replacing RW member `me`'s failed DLV by `dev` (seed 003: the DLV
    /// replaced from a spare), first part: with no host write of the
    /// member in flight (its gate), `dev` becomes the DLV being filled;
    /// from now on every write of the member goes to it too.
    pub async fn rebuild_dlv_onto(&self, me: usize, dev: Arc<dyn BlockDev>) -> Result<()> {
        let incr = self.incr_of(me)?;
        let _alone = incr.gate.write().await;
        incr.rebuilding_onto(dev);
        Ok(())
    }

    /// One step of the fill: the blocks of table 1300 in `blocks` copied
    /// from the member to the new DLV, each under its lock (no host write
    /// lands between the read and the write).
    pub async fn copy_to_dlv(&self, me: usize, blocks: std::ops::Range<u64>) -> Result<()> {
        let m = &self.members[me];
        let incr = self.incr_of(me)?;
        if incr.dlv_ok() || !incr.dlv_written() {
            return Err(Error::new(
                ErrorKind::Io,
                format!("{}'s new increments volume failed a write too", m.lid),
            ));
        }
        let dev = m.need_dev()?;
        let dlv = incr.dlv();
        let mut t = blocks.start;
        while let Some(b) = incr.bids.next_set(t).filter(|b| *b < blocks.end) {
            let _block = incr.locks.lock(b, b + 1).await;
            let (off, len) = self.block_range(b, incr.bids.track(), m.size);
            copy(&dev, &dlv, off, len).await?;
            t = b + 1;
        }
        Ok(())
    }

    /// Ends the fill of RW member `me`'s new DLV: with no host write of
    /// the member in flight (its gate), and only if the new DLV took every
    /// write (it is still being filled), `commit` stores the change; then
    /// the DLV is whole (reads and takeovers use it).
    pub async fn dlv_rebuilt_with(
        &self,
        me: usize,
        commit: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let incr = self.incr_of(me)?;
        let _alone = incr.gate.write().await;
        if !incr.rebuilding() {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "{}'s new increments volume failed a write during its fill",
                    self.members[me].lid
                ),
            ));
        }
        commit()?;
        incr.dlv_rebuilt();
        Ok(())
    }

    /// Holds RO member `at` as the source of a copy onto the P-VOL, with
    /// no takeover running (every RW member's gate held alone meanwhile):
    /// false if it is failed or vacant by then (a takeover took it).
    pub async fn hold_source(&self, at: usize) -> bool {
        let mut gates = Vec::new();
        for m in &self.members {
            if let Some(incr) = &m.incr {
                gates.push(incr.gate.write().await);
            }
        }
        let m = &self.members[at];
        let ok = !m.rw() && !m.failed() && m.dev().is_some();
        if ok {
            self.hold(Some(at));
        }
        drop(gates);
        ok
    }

    fn incr_of(&self, me: usize) -> Result<&super::group::Increments> {
        self.members[me]
            .incr
            .as_ref()
            .ok_or_else(|| Error::invalid(format!("{} is not an RW member", self.members[me].lid)))
    }
}

/// Copies `off..off+len` from `from` to `to` (not flushed).
async fn copy(from: &Arc<dyn BlockDev>, to: &Arc<dyn BlockDev>, off: u64, len: u64) -> Result<()> {
    let buf = IoBuf::new(usize::try_from(len).unwrap_or(0));
    let (buf, r) = from.read(off, buf).await;
    r?;
    let (_, r) = to.write(off, buf, false).await;
    r
}
