//! Member I/O shared by every level: reading a slot's current data,
//! writing all of a slot's devices, and turning device errors into member
//! failures.

use futures::future::join_all;

use super::RaidDev;
use super::members::Dev;
use crate::blockdev::{BlockDev, BufResult, Extent, ZeroFlags};
use crate::buf::IoBuf;
use crate::disk::{read_at, write_at};
use crate::error::{Error, ErrorKind, Result};
use crate::layout::RaidLevel;

/// A device that failed an operation, with its slot.
pub(super) type Failure = (usize, Dev, Error);

/// The error for a slot without current data in a range.
pub(super) fn no_source(idx: usize, off: u64) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!("member {idx} holds no current data at {off}"),
    )
}

impl RaidDev {
    /// Reads member range `off..off+len` of slot `idx` from the devices
    /// holding its current data. Fails with `Unavailable` where the slot
    /// has none, or with the device's error.
    pub(super) async fn read_slot(&self, idx: usize, off: u64, buf: IoBuf) -> BufResult {
        self.read_slot_as(idx, off, buf, false).await
    }

    /// [`RaidDev::read_slot`] for a host read of the slot's own data: a
    /// failing member being spared is not read where the row can be
    /// rebuilt without it (`Unavailable`: the caller rebuilds it). The
    /// rebuild itself reads with [`RaidDev::read_slot`], which may read it.
    pub(super) async fn read_slot_host(&self, idx: usize, off: u64, buf: IoBuf) -> BufResult {
        self.read_slot_as(idx, off, buf, true).await
    }

    async fn read_slot_as(&self, idx: usize, off: u64, buf: IoBuf, host: bool) -> BufResult {
        if let Some(node) = self.divert.node(idx) {
            return self.read_diverted(&*node, idx, off, buf, host).await;
        }
        self.read_slot_direct(idx, off, buf, host).await
    }

    /// [`RaidDev::read_slot_as`] from the slot's devices, diverted or not.
    pub(super) async fn read_slot_direct(
        &self,
        idx: usize,
        off: u64,
        buf: IoBuf,
        host: bool,
    ) -> BufResult {
        let runs = self.members.sources(idx, off, buf.len() as u64, host);
        if runs.len() == 1 {
            return match runs.into_iter().next() {
                Some((Some(dev), o, _)) => read_at(&*dev, o, buf).await,
                _ => (buf, Err(no_source(idx, off))),
            };
        }
        let parts = buf.split_many(&lens_of(runs.iter().map(|r| r.2)));
        let reads = runs
            .into_iter()
            .zip(parts)
            .map(|((dev, o, _), part)| async move {
                match dev {
                    Some(d) => read_at(&*d, o, part).await,
                    None => (part, Err(no_source(idx, o))),
                }
            });
        gather(join_all(reads).await)
    }

    /// Writes `buf` at member offset `off` to every device of slot `idx`;
    /// the buffer comes back with the devices that failed.
    pub(super) async fn write_slot(
        &self,
        idx: usize,
        off: u64,
        buf: IoBuf,
        fua: bool,
    ) -> (IoBuf, Vec<Failure>) {
        if let Some(node) = self.divert.node(idx) {
            let (buf, r) = node.dev().write(off, buf, fua).await;
            return (buf, diverted_failure(idx, r));
        }
        self.write_slot_direct(idx, off, buf, fua).await
    }

    /// [`RaidDev::write_slot`] to the slot's devices, diverted or not.
    pub(super) async fn write_slot_direct(
        &self,
        idx: usize,
        off: u64,
        buf: IoBuf,
        fua: bool,
    ) -> (IoBuf, Vec<Failure>) {
        let mut devs = self.members.targets(idx).into_iter();
        let Some(first) = devs.next() else {
            return (buf, Vec::new());
        };
        let extra = devs.map(|d| {
            let copy = IoBuf::from_slice(buf.as_slice());
            async move {
                let (_, r) = d.write(off, copy, fua).await;
                r.err().map(|e| (idx, d, e))
            }
        });
        let extra: Vec<_> = extra.collect();
        if extra.is_empty() {
            // One device (no hot replace): no join, nothing to collect.
            let (buf, r) = write_at(&*first, off, buf, fua).await;
            return match r {
                Ok(()) => (buf, Vec::new()),
                Err(e) => (buf, vec![(idx, first, e)]),
            };
        }
        let (extra, (buf, r)) = futures::join!(join_all(extra), write_at(&*first, off, buf, fua));
        let mut failed: Vec<Failure> = extra.into_iter().flatten().collect();
        if let Err(e) = r {
            failed.push((idx, first, e));
        }
        (buf, failed)
    }

    /// Zeroes (or discards) member range `off..off+len` on every device of
    /// slot `idx`.
    pub(super) async fn zero_slot(
        &self,
        idx: usize,
        off: u64,
        len: u64,
        flags: ZeroFlags,
        discard: bool,
    ) -> Vec<Failure> {
        if let Some(node) = self.divert.node(idx) {
            let r = if discard {
                node.dev().discard(off, len).await
            } else {
                node.dev().write_zeroes(off, len, flags).await
            };
            return diverted_failure(idx, r);
        }
        self.zero_slot_direct(idx, off, len, flags, discard).await
    }

    /// [`RaidDev::zero_slot`] on the slot's devices, diverted or not.
    pub(super) async fn zero_slot_direct(
        &self,
        idx: usize,
        off: u64,
        len: u64,
        flags: ZeroFlags,
        discard: bool,
    ) -> Vec<Failure> {
        let ops = self.members.targets(idx).into_iter().map(|d| async move {
            let r = if discard {
                d.discard(off, len).await
            } else {
                d.write_zeroes(off, len, flags).await
            };
            r.err().map(|e| (idx, d, e))
        });
        join_all(ops).await.into_iter().flatten().collect()
    }

    /// Zeroes member runs `(slot, offset, length)` that must change
    /// together (mirror legs, a raid5 row range). A fast zero refused by
    /// some devices only is redone on them the slow way, so members stay
    /// consistent; refused by all, nothing changed and the refusal is
    /// returned. Other failures come back for [`RaidDev::absorb`].
    pub(super) async fn zero_members(
        &self,
        runs: &[(usize, u64, u64)],
        flags: ZeroFlags,
    ) -> Result<Vec<Failure>> {
        let runs: Vec<(usize, u64, u64)> = runs
            .iter()
            .copied()
            .filter(|r| !self.members.targets(r.0).is_empty())
            .collect();
        let ops = runs
            .iter()
            .map(|&(i, o, l)| self.zero_slot(i, o, l, flags, false));
        let failed: Vec<Failure> = join_all(ops).await.into_iter().flatten().collect();
        let (refused, mut failed): (Vec<Failure>, Vec<Failure>) = failed
            .into_iter()
            .partition(|f| f.2.kind() == ErrorKind::Unsupported);
        let Some(first) = refused.first() else {
            return Ok(failed);
        };
        if !flags.fast_only {
            return Err(first.2.clone());
        }
        let devices: usize = runs.iter().map(|r| self.members.targets(r.0).len()).sum();
        if refused.len() >= devices {
            return Err(first.2.clone());
        }
        let slow = ZeroFlags {
            fast_only: false,
            ..flags
        };
        let redo = runs
            .iter()
            .filter(|r| refused.iter().any(|f| f.0 == r.0))
            .map(|&(i, o, l)| self.zero_slot(i, o, l, slow, false));
        failed.extend(join_all(redo).await.into_iter().flatten());
        Ok(failed)
    }

    /// Handles device failures: members of a redundant group are failed
    /// (and recorded) one by one; the first error that cannot be absorbed
    /// is returned.
    pub(super) async fn absorb(&self, failures: Vec<Failure>) -> Result<()> {
        let mut first = Ok(());
        for (idx, dev, err) in failures {
            let r = self
                .members
                .device_error(&*self.hooks, idx, &dev, err)
                .await;
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    /// After member writes to rows `r0..r1`: the data is safe if no row
    /// lost more members than the level survives.
    pub(super) fn still_served(&self, r0: u64, r1: u64) -> Result<()> {
        // A group that is not failed serves every row: no row misses more
        // members than the worst one, which the health already weighed.
        if self.health() != super::Health::Failed {
            return Ok(());
        }
        if self.members.worst_missing(r0, r1.max(r0 + 1)) > self.layout.redundancy() {
            return Err(self.unavailable());
        }
        Ok(())
    }

    /// Flushes every member device; a failing member of a redundant group
    /// is failed and the flush succeeds while the group serves data.
    pub(super) async fn flush_members(&self) -> Result<()> {
        if self.health() == super::Health::Failed {
            return Err(self.unavailable());
        }
        let devs = self.members.all_devices();
        let flushes = devs.into_iter().map(|(i, d)| async move {
            let r = d.flush().await;
            r.err().map(|e| (i, d, e))
        });
        let saves = async {
            let Some(nodes) = self.divert.all() else {
                return Ok(());
            };
            for r in join_all(nodes.iter().map(|n| n.save())).await {
                r?;
            }
            Ok::<(), Error>(())
        };
        let (failed, saved) = futures::join!(join_all(flushes), saves);
        let failed: Vec<Failure> = failed.into_iter().flatten().collect();
        self.absorb(failed).await?;
        saved?;
        self.still_served(0, self.rows())
    }

    /// Reserves the members' storage behind `off..off+len` (advisory):
    /// on concat the pieces, otherwise the member range of the rows the
    /// range touches, on every device of every slot.
    pub(super) async fn preallocate_members(&self, off: u64, len: u64) -> Result<()> {
        self.admit(off, len)?;
        let devs = self.members.all_devices();
        let mut ranges: Vec<(usize, u64, u64)> = Vec::new();
        if self.layout.level() == RaidLevel::Concat {
            for p in self.layout.map(off, len)? {
                ranges.push((p.member, p.member_off, p.len));
            }
        } else {
            let s = self.layout.stripe_size();
            let row = self.layout.lock_grain()
                * match self.layout.level() {
                    RaidLevel::Raid0 => self.layout.members() as u64,
                    _ => 1,
                };
            let (r0, r1) = (off / row, (off + len).div_ceil(row));
            for i in 0..self.layout.members() {
                let end = (r1 * s).min(self.layout.member_usable(i));
                if end > r0 * s {
                    ranges.push((i, r0 * s, end - r0 * s));
                }
            }
        }
        let calls = ranges.iter().flat_map(|&(i, o, l)| {
            devs.iter()
                .filter(move |(j, _)| *j == i)
                .map(move |(_, d)| d.preallocate(o, l))
        });
        for r in join_all(calls).await {
            r?;
        }
        Ok(())
    }

    /// Allocation status through the data pieces (concat, raid0, raid5):
    /// each piece asks its member if the member is Ok, else says flags 0.
    /// Stops at the first partial answer, so extents stay consecutive.
    pub(super) async fn pieces_status(&self, off: u64, len: u64) -> Vec<Extent> {
        const MAX_PIECES: usize = 256;
        if self.member_diverted() {
            // Units held by the work disk: only "data" is safe to say.
            return vec![Extent { len, flags: 0 }];
        }
        let mut out = Vec::new();
        let Ok(pieces) = self.layout.map(off, len) else {
            return vec![Extent { len, flags: 0 }];
        };
        for p in pieces.take(MAX_PIECES) {
            let healthy = self.members.state(p.member) == super::MemberState::Ok;
            let dev = if healthy {
                self.members.source(p.member, p.row(&self.layout))
            } else {
                None
            };
            let answer = match dev {
                Some(d) => d.block_status(p.member_off, p.len).await.ok(),
                None => None,
            };
            let ext = answer.unwrap_or_else(|| {
                vec![Extent {
                    len: p.len,
                    flags: 0,
                }]
            });
            let covered: u64 = ext.iter().map(|e| e.len).sum();
            out.extend(ext);
            if covered < p.len {
                break;
            }
        }
        out
    }
}

/// A diverted member write's outcome as the failures a slot write
/// returns: none, or one that fails the write without failing a member.
fn diverted_failure(idx: usize, r: Result<()>) -> Vec<Failure> {
    match r {
        Ok(()) => Vec::new(),
        Err(e) => vec![(
            idx,
            super::divert::no_device(),
            super::divert::store_failed(idx, e),
        )],
    }
}

/// Joins read pieces (in order) back into one buffer, with the first error.
pub(super) fn gather(done: Vec<BufResult>) -> BufResult {
    let mut err = None;
    let mut parts = Vec::with_capacity(done.len());
    for (p, r) in done {
        parts.push(p);
        if let (None, Err(e)) = (&err, r) {
            err = Some(e);
        }
    }
    (IoBuf::join(parts), err.map_or(Ok(()), Err))
}

/// Lengths as `usize`, for splitting a buffer (request lengths fit).
pub(super) fn lens_of(lens: impl Iterator<Item = u64>) -> Vec<usize> {
    lens.map(|l| usize::try_from(l).unwrap_or(usize::MAX))
        .collect()
}
