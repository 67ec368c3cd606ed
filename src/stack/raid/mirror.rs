//! raid1: an n-way mirror. Reads go to the least busy leg holding current
//! data; a read error is answered from another leg and repaired on the
//! failing one. Writes and zeroing go to every leg.

use std::sync::atomic::Ordering;

use futures::future::join_all;

use super::RaidDev;
use super::target::Failure;
use crate::blockdev::{BufResult, Extent, ZeroFlags};
use crate::buf::IoBuf;
use crate::error::{ErrorKind, Result};

impl RaidDev {
    /// Legs with current data for all of `off..off+len`, least busy first
    /// (ties rotate).
    fn legs_for(&self, off: u64, len: u64) -> Vec<usize> {
        let n = self.layout.members();
        let start = self.next_leg.fetch_add(1, Ordering::Relaxed) % n.max(1);
        let full = |i: &usize| {
            self.members
                .sources(*i, off, len, false)
                .iter()
                .all(|s| s.0.is_some())
        };
        if self.unsynced.overlaps(off, len) {
            // Legs may disagree until resynced: read the leg resync copies
            // from (the first with current data), then the others in order.
            return (0..n).filter(full).collect();
        }
        let mut legs: Vec<usize> = (0..n).map(|i| (start + i) % n).filter(full).collect();
        // A failing leg being spared comes last: read only when no other
        // leg can serve (the copy reads it on its own).
        let spared = self
            .members
            .spared_in_row(off / self.layout.stripe_size().max(1));
        legs.sort_by_key(|&i| (Some(i) == spared, self.members.reads_in_flight(i)));
        legs
    }

    fn mirror_rows(&self, off: u64, len: u64) -> (u64, u64) {
        let s = self.layout.stripe_size();
        (off / s, (off + len).div_ceil(s))
    }

    pub(super) async fn mirror_read(&self, off: u64, buf: IoBuf) -> BufResult {
        let len = buf.len() as u64;
        let Some(&leg) = self.legs_for(off, len).first() else {
            return (buf, Err(self.unavailable()));
        };
        self.members.note_read(leg, 1);
        let (buf, r) = self.read_slot(leg, off, buf).await;
        self.members.note_read(leg, -1);
        match r {
            Err(e) if e.kind() == ErrorKind::Io => {
                tracing::debug!(member = leg, error = %e, "raid1 read error, trying other legs");
                self.mirror_recover(off, buf, leg, e).await
            }
            r => (buf, r),
        }
    }

    /// Leg `bad` failed a read: under the row locks, read another leg and
    /// write the data back to `bad` (md-style repair).
    async fn mirror_recover(
        &self,
        off: u64,
        mut buf: IoBuf,
        bad: usize,
        err: crate::Error,
    ) -> BufResult {
        let len = buf.len() as u64;
        let (k0, k1) = self.lock_keys(off, len);
        let _rows = self.locks.lock(k0, k1).await;
        let mut last = err;
        for leg in self.legs_for(off, len).into_iter().filter(|&l| l != bad) {
            let (b, r) = self.read_slot(leg, off, buf).await;
            buf = b;
            match r {
                Ok(()) => {
                    self.repair(bad, off, off, &buf).await;
                    return (buf, Ok(()));
                }
                Err(e) => last = e,
            }
        }
        (buf, Err(last))
    }

    /// Writes recovered data (of address `addr`) back to slot `idx` at
    /// member offset `member_off`. A failing repair write fails the member;
    /// the read itself has its data either way.
    pub(super) async fn repair(&self, idx: usize, addr: u64, member_off: u64, data: &IoBuf) {
        let r = async {
            let _intent = self.intent.begin(addr, data.len() as u64).await?;
            let copy = IoBuf::from_slice(data.as_slice());
            let (_, failed) = self.write_slot(idx, member_off, copy, false).await;
            self.absorb(failed).await
        };
        if let Err(e) = r.await {
            tracing::warn!(member = idx, error = %e.chain(), "repair after a read error failed");
        }
    }

    pub(super) async fn mirror_write(&self, off: u64, buf: IoBuf, fua: bool) -> BufResult {
        let len = buf.len() as u64;
        let n = self.layout.members();
        let others = (1..n).filter(|&i| !self.members.targets(i).is_empty());
        let others = others.map(|i| {
            let copy = IoBuf::from_slice(buf.as_slice());
            async move { self.write_slot(i, off, copy, fua).await.1 }
        });
        let others: Vec<_> = others.collect();
        let (rest, (buf, mut failed)) =
            futures::join!(join_all(others), self.write_slot(0, off, buf, fua));
        failed.extend(rest.into_iter().flatten());
        let r = self.mirror_settle(off, len, failed).await;
        (buf, r)
    }

    async fn mirror_settle(&self, off: u64, len: u64, failed: Vec<Failure>) -> Result<()> {
        self.absorb(failed).await?;
        let (r0, r1) = self.mirror_rows(off, len);
        self.still_served(r0, r1)
    }

    /// Zeroing and discard: `write_zeroes` (may unmap) on every leg, so
    /// legs stay identical.
    pub(super) async fn mirror_zeroes(
        &self,
        off: u64,
        len: u64,
        flags: ZeroFlags,
        discard: bool,
    ) -> Result<()> {
        let flags = ZeroFlags {
            may_unmap: true,
            fast_only: flags.fast_only && !discard,
            fua: flags.fua,
        };
        let runs: Vec<(usize, u64, u64)> =
            (0..self.layout.members()).map(|i| (i, off, len)).collect();
        let failed = self.zero_members(&runs, flags).await?;
        self.mirror_settle(off, len, failed).await
    }

    /// Allocation status from an Ok leg (legs being rebuilt may differ).
    pub(super) async fn mirror_status(&self, off: u64, len: u64) -> Vec<Extent> {
        let healthy = self
            .legs_for(off, len)
            .into_iter()
            .find(|&i| self.members.state(i) == super::MemberState::Ok);
        let dev = healthy.and_then(|i| self.members.source(i, off / self.layout.stripe_size()));
        let answer = match dev {
            Some(d) => d.block_status(off, len).await.ok(),
            None => None,
        };
        answer.unwrap_or_else(|| vec![Extent { len, flags: 0 }])
    }
}
