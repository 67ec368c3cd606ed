//! Rebuild, hot replace and resync: the background copiers' side of the
//! RAID group. Each row is copied under its row lock (DESIGN rule 5), so
//! host I/O to that row waits for the copy and never races it.
//!
//! - Rebuild fills a new member row by row from redundancy (raid1: another
//!   leg; raid5: XOR of the rest of the row).
//! - Hot replace (md's replace) copies from the old member while it keeps
//!   serving, falling back to redundancy where the old member fails reads.
//! - Resync makes redundancy agree after a crash for ranges the write
//!   intent had marked: raid1 copies the first readable leg to the others,
//!   raid5 recomputes parity from data.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::StreamExt;
use futures::future::join_all;
use futures::stream::FuturesOrdered;

use super::members::AbortOutcome;
use super::members::{Dev, MemberState};
use super::{Health, RaidDev};
use crate::blockdev::BlockDev;
use crate::buf::{IoBuf, xor_into};
use crate::error::{Error, ErrorKind, Result};
use crate::layout::{RaidLevel, Role};
use crate::stack::lock::RangeGuard;

/// How hard a rebuild, hot replace or sparing copy drives the disks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyPace {
    /// Hosts are idle: 1 MiB spans of consecutive rows of the member, 8
    /// at once — the disks' sequential bandwidth (a row per I/O ran the
    /// copy at 0.75-0.93 of it).
    Full,
    /// Hosts are doing I/O: a row per I/O, 16 at once, so their requests
    /// queue behind little of the copy's.
    Gentle,
}

impl CopyPace {
    /// (bytes per I/O at most, I/Os in flight).
    fn shape(self) -> (u64, usize) {
        match self {
            CopyPace::Full => (1 << 20, 8),
            CopyPace::Gentle => (0, 16),
        }
    }
}

impl RaidDev {
    /// Puts `new` in slot `idx`. A failed or missing member is rebuilt from
    /// redundancy (raid1, raid5); a healthy one is hot-replaced: it keeps
    /// serving and is the copy source (every level). Either way the slot is
    /// `Rebuilding { cursor: 0 }` until [`RaidDev::rebuild_rows`] is done.
    pub fn replace_member(&self, idx: usize, new: Arc<dyn BlockDev>) -> Result<()> {
        let need = self.layout.member_usable(idx);
        if new.size() < need {
            return Err(Error::invalid(format!(
                "the new member holds {} bytes, member {idx} needs {need}",
                new.size()
            )));
        }
        let state = self.members.state(idx);
        if state == MemberState::Failed && !self.layout.is_redundant() {
            return Err(Error::invalid(format!(
                "member {idx} of a {} group cannot be rebuilt: there is no redundancy to rebuild it from",
                self.layout.level()
            )));
        }
        if state == MemberState::Failed && self.health() == Health::Failed {
            return Err(self
                .unavailable()
                .context(format!("cannot rebuild member {idx}")));
        }
        self.members.install(idx, new)?;
        if self.rows() == 0 {
            self.members.finish(idx);
        }
        Ok(())
    }

    /// Sparing (seed 002, claim 2): the old member of slot `idx`'s hot
    /// replace is failing, so host reads (and the reads a write's parity
    /// needs) of the rows it still serves are rebuilt from the other
    /// members; only the copy reads it. Where the row cannot be rebuilt
    /// without it (another member missing there) it is read after all, so
    /// the group stays redundant. No effect on a group without redundancy.
    /// Cleared by the slot's next replace; `None` clears it.
    pub fn set_spared(&self, idx: Option<usize>) {
        self.members.set_spared(idx);
    }

    /// The slot whose failing old member host reads avoid, if any.
    pub fn spared(&self) -> Option<usize> {
        self.members.spared()
    }

    /// Puts the disk of failed slot `idx` back as current everywhere: it
    /// missed no write (the group had stopped when it failed, or nothing
    /// was written since).
    pub fn reinstate_member(&self, idx: usize, dev: Arc<dyn BlockDev>) -> Result<()> {
        let need = self.layout.member_usable(idx);
        if dev.size() < need {
            return Err(Error::invalid(format!(
                "the disk holds {} bytes, member {idx} needs {need}",
                dev.size()
            )));
        }
        self.members.reinstate(idx, dev)
    }

    /// Rebuilds only rows `stale` (ascending) of slot `idx`, whose new
    /// member already holds current data everywhere else (a reinstated
    /// disk: the rows written while it was out). The cursor jumps to each
    /// stale row, which is rebuilt under its row lock; `last` ends the
    /// rebuild (the slot becomes Ok). Flushes the member once at the end.
    pub async fn rebuild_stale(&self, idx: usize, stale: &[u64], last: bool) -> Result<()> {
        let _copying = self.copiers.start().await;
        let (_, dev) = self
            .members
            .building(idx)
            .ok_or_else(|| Error::invalid(format!("member {idx} is not being rebuilt")))?;
        let rows = self.rows();
        for &row in stale {
            if row >= rows || !self.members.skip_to(idx, &dev, row, rows) {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("the resync of member {idx} was cancelled or is past row {row}"),
                ));
            }
            self.rebuild_row(idx, &dev, row).await?;
        }
        if let Err(e) = dev.flush().await {
            let what = format!("the resync of member {idx} stopped");
            self.members
                .device_error(&*self.hooks, idx, &dev, e.clone())
                .await?;
            return Err(e.context(what));
        }
        if last {
            self.members.skip_to(idx, &dev, rows, rows);
        }
        Ok(())
    }

    /// Allocates the new member's space from row `from` on (advisory): a
    /// copy into the holes of a disk file makes the kernel allocate under
    /// each write, and io_uring then hands the writes to a worker thread,
    /// one at a time per file — the copy would run at a fraction of the
    /// disk's speed.
    pub async fn preallocate_new_member(&self, idx: usize, from: u64) -> Result<()> {
        let Some((_, dev)) = self.members.building(idx) else {
            return Ok(());
        };
        let start = from.saturating_mul(self.layout.stripe_size());
        let end = self.layout.member_usable(idx).min(dev.size());
        if start >= end {
            return Ok(());
        }
        dev.preallocate(start, end - start).await
    }

    /// Stops an unfinished rebuild or hot replace of slot `idx` (a cancelled
    /// or failed job): a hot replace keeps its old member, a rebuild leaves
    /// the slot failed.
    pub fn abort_replace(&self, idx: usize) -> Result<AbortOutcome> {
        self.members.abort(idx)
    }

    /// Rebuilds rows `from..to` of slot `idx`, each under its row lock, and
    /// flushes the new member, so the caller may checkpoint `to`. `from`
    /// must not be past the cursor (rows below it are copied again, which
    /// is harmless). At `rows()` the slot becomes `Ok`.
    pub async fn rebuild_rows(&self, idx: usize, from: u64, to: u64) -> Result<()> {
        self.rebuild_rows_at(idx, from, to, CopyPace::Full).await
    }

    /// [`RaidDev::rebuild_rows`] at `pace`.
    pub async fn rebuild_rows_at(
        &self,
        idx: usize,
        from: u64,
        to: u64,
        pace: CopyPace,
    ) -> Result<()> {
        // Host writes of concat and raid0 lock their rows from here on.
        let _copying = self.copiers.start().await;
        let (cursor, dev) = self
            .members
            .building(idx)
            .ok_or_else(|| Error::invalid(format!("member {idx} is not being rebuilt")))?;
        if from > cursor {
            return Err(Error::invalid(format!(
                "the rebuild of member {idx} must continue at row {cursor}, not {from}"
            )));
        }
        if to > self.rows() || from > to {
            return Err(Error::new(
                ErrorKind::OutOfRange,
                format!(
                    "rows {from}..{to} are outside the group's {} rows",
                    self.rows()
                ),
            ));
        }
        // Up to `depth` spans are copied at once, each under the locks
        // of its rows, a new one started as the oldest ends (none waits
        // for the slowest). Results come back in order: the cursor moves
        // over each span before its locks go (a row copied but still
        // above the cursor counts as missing to a host write, which would
        // not update it). Spans in flight lock disjoint keys: a later span
        // holding a key first would keep its locks, finished, behind an
        // earlier span waiting for that key.
        let (span, depth) = pace.shape();
        let per = (span / self.layout.stripe_size()).max(1);
        let mut flight = FuturesOrdered::new();
        let mut keys: VecDeque<(u64, u64)> = VecDeque::new();
        let mut next = from;
        let mut failed = None;
        loop {
            while failed.is_none() && next < to && keys.len() < depth {
                let span = (next, (next + per).min(to));
                let k = self.span_keys(idx, span);
                if keys.iter().any(|&(a, b)| a < k.1 && k.0 < b) {
                    break;
                }
                keys.push_back(k);
                let dev = &dev;
                flight.push_back(async move { (span, self.copy_span(idx, dev, span, k).await) });
                next = span.1;
            }
            let Some((span, res)) = flight.next().await else {
                break;
            };
            keys.pop_front();
            match res {
                Ok(_guard) if failed.is_none() => {
                    self.members.advance(idx, &dev, span, self.rows());
                }
                Ok(_) => {}
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if let Err(e) = dev.flush().await {
            let what = format!("the rebuild of member {idx} stopped");
            self.members
                .device_error(&*self.hooks, idx, &dev, e.clone())
                .await?;
            return Err(e.context(what));
        }
        Ok(())
    }

    /// The row-lock key covering row `row` of member `idx`.
    fn member_row_key(&self, idx: usize, row: u64) -> u64 {
        match self.layout.locate(idx, row * self.layout.stripe_size()) {
            Some(Role::Data { addr }) => addr / self.layout.lock_grain(),
            Some(Role::Parity { row }) => row,
            None => row,
        }
    }

    /// The row-lock keys `[lo, hi)` covering rows `first..end` of member
    /// `idx` (keys grow with the member's rows at every level; raid0's
    /// range also holds other members' rows between them).
    fn span_keys(&self, idx: usize, (first, end): (u64, u64)) -> (u64, u64) {
        let end = end.min(self.member_rows(idx)).max(first + 1);
        let lo = self.member_row_key(idx, first);
        (lo, self.member_row_key(idx, end - 1).max(lo) + 1)
    }

    /// Rows of member `idx` that hold data (its usable bytes, in stripes).
    fn member_rows(&self, idx: usize) -> u64 {
        self.layout
            .member_usable(idx)
            .div_ceil(self.layout.stripe_size())
    }

    async fn rebuild_row(&self, idx: usize, dev: &Dev, row: u64) -> Result<()> {
        let k = self.span_keys(idx, (row, row + 1));
        let _row = self.copy_span(idx, dev, (row, row + 1), k).await?;
        self.members.advance(idx, dev, (row, row + 1), self.rows());
        Ok(())
    }

    /// Copies rows `first..end` of member `idx` onto `dev` under the locks
    /// `keys`, returned held: the caller moves the cursor, then lets go.
    async fn copy_span(
        &self,
        idx: usize,
        dev: &Dev,
        (first, end): (u64, u64),
        keys: (u64, u64),
    ) -> Result<Option<RangeGuard<'_>>> {
        let end = end.min(self.member_rows(idx));
        if first >= end {
            return Ok(None);
        }
        let rows = self.locks.lock(keys.0, keys.1).await;
        if self
            .members
            .building(idx)
            .is_none_or(|(_, d)| !Arc::ptr_eq(&d, dev))
        {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("the rebuild of member {idx} was cancelled"),
            ));
        }
        let data = self.span_content(idx, first, end).await?;
        let (_, r) = dev
            .write(first * self.layout.stripe_size(), data, false)
            .await;
        if let Err(e) = r {
            let what = format!("the rebuild of member {idx} stopped at row {first}");
            self.members
                .device_error(&*self.hooks, idx, dev, e.clone())
                .await?;
            return Err(e.context(what));
        }
        Ok(Some(rows))
    }

    /// The current content of rows `first..end` of member `idx`: from the
    /// old member of a hot replace in one read, else (or where it fails a
    /// read, row by row) from redundancy.
    async fn span_content(&self, idx: usize, first: u64, end: u64) -> Result<IoBuf> {
        match self.old_content(idx, first, end).await? {
            Ok(data) => Ok(data),
            Err(_) if end - first > 1 => self.rows_content(idx, first, end).await,
            Err(buf) => self.rebuilt_from_redundancy(idx, first, buf).await,
        }
    }

    /// [`RaidDev::span_content`] row by row: only the rows the old member
    /// cannot read are rebuilt from redundancy.
    async fn rows_content(&self, idx: usize, first: u64, end: u64) -> Result<IoBuf> {
        let row = |r: u64| async move {
            match self.old_content(idx, r, r + 1).await? {
                Ok(data) => Ok(data),
                Err(buf) => self.rebuilt_from_redundancy(idx, r, buf).await,
            }
        };
        let rows = join_all((first..end).map(row)).await;
        Ok(IoBuf::join(rows.into_iter().collect::<Result<Vec<_>>>()?))
    }

    /// Rows `first..end` of the old member of slot `idx`'s hot replace:
    /// `Ok(data)`, or `Err(buffer)` to fill from redundancy (no old member,
    /// or it failed the read and the group is redundant).
    async fn old_content(
        &self,
        idx: usize,
        first: u64,
        end: u64,
    ) -> Result<std::result::Result<IoBuf, IoBuf>> {
        let s = self.layout.stripe_size();
        let buf = IoBuf::new(usize::try_from((end - first) * s).unwrap_or(0));
        let Some(old) = self.members.old(idx) else {
            return Ok(Err(buf));
        };
        match old.read(first * s, buf).await {
            (b, Ok(())) => Ok(Ok(b)),
            (b, Err(e)) if e.kind() == ErrorKind::Io && self.layout.is_redundant() => {
                tracing::debug!(member = idx, first, end, error = %e, "hot replace: old member read failed, rebuilding");
                Ok(Err(b))
            }
            (_, Err(e)) => Err(e.context(format!("copying rows {first}..{end} of member {idx}"))),
        }
    }

    async fn rebuilt_from_redundancy(&self, idx: usize, row: u64, mut buf: IoBuf) -> Result<IoBuf> {
        let off = row * self.layout.stripe_size();
        match self.layout.level() {
            RaidLevel::Raid5 => {
                self.reconstruct(idx, row, off, &mut buf).await?;
                Ok(buf)
            }
            RaidLevel::Raid1 => {
                let mut last = self.unavailable();
                for leg in (0..self.layout.members()).filter(|&l| l != idx) {
                    let (b, r) = self.read_slot(leg, off, buf).await;
                    buf = b;
                    match r {
                        Ok(()) => return Ok(buf),
                        Err(e) => last = e,
                    }
                }
                Err(last.context(format!("cannot rebuild row {row} of member {idx}")))
            }
            RaidLevel::Concat | RaidLevel::Raid0 => Err(Error::new(
                ErrorKind::Io,
                format!("row {row} of member {idx} is unreadable and the group has no redundancy"),
            )),
        }
    }

    /// Makes redundancy agree for the rows covering `off..off+len`.
    pub async fn resync(&self, off: u64, len: u64) -> Result<()> {
        self.layout.check(off, len)?;
        if !self.layout.is_redundant() || len == 0 {
            return Ok(());
        }
        if self.health() == Health::Failed {
            return Err(self.unavailable());
        }
        let g = self.layout.lock_grain();
        for row in off / g..(off + len).div_ceil(g) {
            let _row = self.locks.lock(row, row + 1).await;
            let addr = row * g;
            let _intent = self
                .intent
                .begin(addr, g.min(self.layout.capacity() - addr))
                .await?;
            match self.layout.level() {
                RaidLevel::Raid1 => self.resync_mirror_row(row).await?,
                _ => self.resync_parity_row(row).await?,
            }
            self.unsynced.remove(addr, g);
        }
        Ok(())
    }

    async fn resync_mirror_row(&self, row: u64) -> Result<()> {
        let s = self.layout.stripe_size();
        let n = self.layout.members();
        let mut buf = IoBuf::new(usize::try_from(s).unwrap_or(0));
        let mut source = None;
        let mut last = self.unavailable();
        for leg in (0..n).filter(|&l| self.members.source(l, row).is_some()) {
            let (b, r) = self.read_slot(leg, row * s, buf).await;
            buf = b;
            match r {
                Ok(()) => {
                    source = Some(leg);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let Some(source) = source else {
            return Err(last.context(format!("resync of row {row}")));
        };
        let writes = (0..n).filter(|&l| l != source).map(|l| {
            let copy = IoBuf::from_slice(buf.as_slice());
            async move { self.write_slot(l, row * s, copy, false).await.1 }
        });
        let failed = join_all(writes).await.into_iter().flatten().collect();
        self.absorb(failed).await?;
        self.still_served(row, row + 1)
    }

    /// Recomputes the parity of `row` from its data strips. A degraded row
    /// is left alone: its parity is the only copy of the missing strip.
    async fn resync_parity_row(&self, row: u64) -> Result<()> {
        if !self.members.missing_in_row(row).is_empty() {
            return Ok(());
        }
        let s = self.layout.stripe_size();
        let len = usize::try_from(s).unwrap_or(0);
        let data = (0..self.layout.data_strips()).filter_map(|i| self.layout.data_member(row, i));
        let reads = data.map(|m| self.read_slot(m, row * s, IoBuf::new(len)));
        let mut parity = IoBuf::new(len);
        for (b, r) in join_all(reads).await {
            r.map_err(|e| e.context(format!("resync of row {row}")))?;
            xor_into(parity.as_mut_slice(), b.as_slice());
        }
        let p = self.layout.parity_member(row).unwrap_or(usize::MAX);
        let (_, failed) = self.write_slot(p, row * s, parity, false).await;
        self.absorb(failed).await?;
        self.still_served(row, row + 1)
    }
}
