//! The group after the switch (seed 004, FIGS. 5-7): served in its new
//! configuration from the first request on, while the data still sits in
//! the old places. A track not yet transferred is copied from the BCV —
//! the group's copy in its original configuration, isolated at the switch
//! — to its new place before any host request touches it.
//!
//! ```text
//!   host I/O ──> Reshape ── every track touched valid? ── yes ──> new
//!                  │ no (IND set)                                 (new layout,
//!                  └─ transfer: read b(ℓ) from the BCV ─ write n(ℓ) ─┘  old + new disks)
//!   background (FIG. 6A/6B): the same transfer, track after track, for
//!   every PB bit still set; then the new host tracks
//!   instant split (FIG. 5): the BCV's writes made durable, PS cleared
//! ```
//!
//! A track here is the new layout's lock grain (a RAID-5 row, else a
//! stripe): a RAID-5 row is only ever written whole while not yet valid,
//! so its parity is computed from what the row holds in the new layout,
//! never from old-layout bytes. Logical track numbers are kept across
//! layouts (the seed's ℓ): track ℓ's bytes are logical bytes
//! `ℓ·T..(ℓ+1)·T` of the group in either configuration.
//!
//! The three lists (steps 106, 111, 112), each a stored bitmap:
//! - **PB** (one bit per track of the BCV, this session's column): still
//!   to be transferred;
//! - **IND** (one bit per track of the new configuration): not valid yet,
//!   the data comes from the BCV (or, past the old size, is zeroes);
//! - **PS** (one bit per track of the original configuration): not split
//!   yet. ferrosan has no write-pending cache: the switch drains every
//!   request, so all the split has to do is make the BCV's writes durable
//!   before the first transfer overwrites an original place (step 171).
//!
//! New host tracks (past the old size) are never read from the BCV and
//! never in PB. ferrosan zeroes one before its first use (a host request,
//! or the background's last pass): the disks there still hold old-layout
//! bytes, and a RAID-5 row's parity must agree with its data.
//!
//! Crash consistency (DESIGN rules 1-2): IND and PB are cleared in the
//! database only after the transferred data is flushed ([`Reshape::save`],
//! run by every host flush, every FUA write to a track just transferred,
//! and the background's checkpoints). Until then the track is valid in
//! memory only; a crash makes it transfer again from the BCV, which is
//! never written after the switch — what the host wrote there since was
//! not flushed yet, so may be lost.

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::watch;

use super::establish::reads_as_zeroes;
use crate::blockdev::{BlockDev, BufResult, DevFuture, Extent, ZeroFlags};
use crate::buf::IoBuf;
use crate::error::{Error, ErrorKind, Result, check_range};
use crate::meta::diffmap::DiffMap;
use crate::stack::lock::RangeLock;

/// Tracks the background transfer has in flight at once.
const DEPTH: usize = 8;

/// The session's three stored lists.
#[derive(Clone)]
pub struct Lists {
    /// PB: one bit per BCV track (the old size in tracks).
    pub pb: Arc<DiffMap>,
    /// IND: one bit per track of the new configuration.
    pub ind: Arc<DiffMap>,
    /// PS: one bit per track of the original configuration.
    pub ps: Arc<DiffMap>,
}

/// What the transfers did, for status and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// Tracks copied from the BCV by the background (FIG. 6).
    pub background: u64,
    /// Tracks copied from the BCV for a host request first (FIG. 7, 170-175).
    pub on_demand: u64,
    /// Tracks a host write covered whole: no copy needed.
    pub overwritten: u64,
    /// New host tracks zeroed (never read from the BCV).
    pub zeroed: u64,
}

#[derive(Default)]
struct Counters {
    background: AtomicU64,
    on_demand: AtomicU64,
    overwritten: AtomicU64,
    zeroed: AtomicU64,
}

/// Who asks for a track.
#[derive(Clone, Copy, PartialEq, Eq)]
enum By {
    Host,
    Background,
}

/// The group in its new configuration, with the BCV behind it.
pub struct Reshape {
    new: Arc<dyn BlockDev>,
    bcv: Arc<dyn BlockDev>,
    track: u64,
    /// The group's size in its original configuration.
    old_size: u64,
    lists: Lists,
    /// Valid in memory (IND clear, or transferred since the last save).
    valid: Vec<AtomicU64>,
    /// Tracks not valid yet: 0 is the fast path.
    left: AtomicU64,
    /// Valid tracks whose IND (and PB) clear is not stored yet.
    unsaved: Mutex<Vec<u64>>,
    /// Set once the instant split is done (PS all clear).
    split: watch::Sender<bool>,
    splitting: AtomicBool,
    locks: RangeLock,
    moved: Counters,
}

impl Reshape {
    /// The node over `new` (the group in its new layout) and `bcv` (the
    /// copy in its original layout, `old_size` bytes), with the stored
    /// `lists` (all set for a session just switched; as they were for one
    /// resumed after a restart).
    pub fn new(
        new: Arc<dyn BlockDev>,
        bcv: Arc<dyn BlockDev>,
        old_size: u64,
        lists: Lists,
    ) -> Result<Reshape> {
        let track = lists.ind.track();
        let tracks = new.size().div_ceil(track);
        if lists.ind.tracks() != tracks || lists.pb.tracks() != old_size.div_ceil(track) {
            return Err(Error::corrupt(format!(
                "restripe lists of {} and {} tracks for a group of {tracks} ({} before)",
                lists.ind.tracks(),
                lists.pb.tracks(),
                old_size.div_ceil(track)
            )));
        }
        if bcv.size() < old_size || new.size() < old_size {
            return Err(Error::invalid(format!(
                "a restripe of {old_size} bytes onto {} from a copy of {}",
                new.size(),
                bcv.size()
            )));
        }
        let words = usize::try_from(tracks.div_ceil(64)).unwrap_or(0);
        let valid: Vec<AtomicU64> = (0..words).map(|_| AtomicU64::new(0)).collect();
        let mut left = 0;
        for t in 0..tracks {
            if lists.ind.is_set(t) {
                left += 1;
            } else {
                valid[(t / 64) as usize].fetch_or(1 << (t % 64), Ordering::Relaxed);
            }
        }
        let split_done = lists.ps.count() == 0;
        Ok(Reshape {
            new,
            bcv,
            track,
            old_size,
            lists,
            valid,
            left: AtomicU64::new(left),
            unsaved: Mutex::new(Vec::new()),
            split: watch::Sender::new(split_done),
            splitting: AtomicBool::new(false),
            locks: RangeLock::new(),
            moved: Counters::default(),
        })
    }

    /// Bytes per track.
    pub fn track(&self) -> u64 {
        self.track
    }

    /// Tracks of the new configuration.
    pub fn tracks(&self) -> u64 {
        self.new.size().div_ceil(self.track)
    }

    /// Tracks not valid yet (IND set in memory).
    pub fn left(&self) -> u64 {
        self.left.load(Ordering::Acquire)
    }

    /// The stored lists.
    pub fn lists(&self) -> &Lists {
        &self.lists
    }

    /// The new layout's device (after the session ends, the group's).
    pub fn new_dev(&self) -> &Arc<dyn BlockDev> {
        &self.new
    }

    /// What the transfers did so far.
    pub fn moved(&self) -> Moved {
        let m = &self.moved;
        Moved {
            background: m.background.load(Ordering::Relaxed),
            on_demand: m.on_demand.load(Ordering::Relaxed),
            overwritten: m.overwritten.load(Ordering::Relaxed),
            zeroed: m.zeroed.load(Ordering::Relaxed),
        }
    }

    /// Whether track `t` holds its data in the new configuration.
    pub fn is_valid(&self, t: u64) -> bool {
        let w = usize::try_from(t / 64).unwrap_or(usize::MAX);
        self.valid
            .get(w)
            .is_none_or(|x| x.load(Ordering::Acquire) & (1 << (t % 64)) != 0)
    }

    fn set_valid(&self, t: u64) {
        let w = usize::try_from(t / 64).unwrap_or(usize::MAX);
        if let Some(x) = self.valid.get(w) {
            let was = x.fetch_or(1 << (t % 64), Ordering::AcqRel);
            if was & (1 << (t % 64)) == 0 {
                self.left.fetch_sub(1, Ordering::AcqRel);
                self.unsaved
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(t);
            }
        }
    }

    /// The tracks `off..off+len` touches.
    fn tracks_of(&self, off: u64, len: u64) -> (u64, u64) {
        (off / self.track, (off + len.max(1)).div_ceil(self.track))
    }

    /// The instant split (FIG. 5): the BCV's writes become durable, then
    /// every PS bit is cleared. Reports at once to whoever waits on it;
    /// transfers wait for it (step 171) before they overwrite an
    /// original place.
    pub async fn instant_split(&self) -> Result<()> {
        if *self.split.borrow() || self.splitting.swap(true, Ordering::AcqRel) {
            return self.split_done().await;
        }
        let r = async {
            self.bcv.flush().await?;
            self.lists.ps.clear_tracks(0..self.lists.ps.tracks());
            self.lists.ps.sync().await
        }
        .await;
        self.splitting.store(false, Ordering::Release);
        match r {
            Ok(()) => {
                self.split.send_replace(true);
                Ok(())
            }
            Err(e) => {
                // Wakes the waiters: one of them tries again.
                self.split.send_modify(|_| {});
                Err(e.context("the restripe's instant split"))
            }
        }
    }

    /// Waits for the instant split (running it if nobody is; again if
    /// the one that ran failed).
    async fn split_done(&self) -> Result<()> {
        let mut rx = self.split.subscribe();
        loop {
            if *rx.borrow_and_update() {
                return Ok(());
            }
            if !self.splitting.load(Ordering::Acquire) {
                return Box::pin(self.instant_split()).await;
            }
            if rx.changed().await.is_err() {
                return Err(Error::new(
                    ErrorKind::Shutdown,
                    "the restripe's instant split was dropped",
                ));
            }
        }
    }

    /// Makes track `t` valid: copied from the BCV (zeroes past the old
    /// size). The caller holds its lock.
    async fn transfer_locked(&self, t: u64, by: By) -> Result<()> {
        if self.is_valid(t) {
            return Ok(());
        }
        self.split_done().await?;
        let off = t * self.track;
        let len = self.track.min(self.new.size() - off);
        let from_bcv = self.old_size.saturating_sub(off).min(len);
        if from_bcv == 0 || reads_as_zeroes(&*self.bcv, off, from_bcv).await {
            // Zeroes (a new host track, or a hole on the copy): a hole in
            // the new layout too, nothing read.
            let flags = ZeroFlags {
                may_unmap: true,
                ..ZeroFlags::default()
            };
            self.new
                .write_zeroes(off, len, flags)
                .await
                .map_err(|e| e.context(format!("zeroing track {t} in its new place")))?;
        } else {
            self.copy_track(t, off, len, from_bcv).await?;
        }
        let counter = match (from_bcv, by) {
            (0, _) => &self.moved.zeroed,
            (_, By::Host) => &self.moved.on_demand,
            (_, By::Background) => &self.moved.background,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.set_valid(t);
        Ok(())
    }

    /// Copies track `t` (`len` bytes at `off`, the first `from_bcv` of
    /// them on the BCV, the rest zeroes) to its new place.
    async fn copy_track(&self, t: u64, off: u64, len: u64, from_bcv: u64) -> Result<()> {
        let buf = IoBuf::new(usize::try_from(len).unwrap_or(0));
        let (head, tail) = buf.split_at(usize::try_from(from_bcv).unwrap_or(0));
        let (head, r) = self.bcv.read(off, head).await;
        r.map_err(|e| e.context(format!("reading track {t} from the restripe's copy")))?;
        let buf = IoBuf::join(vec![head, tail]);
        let (_, r) = self.new.write(off, buf, false).await;
        r.map_err(|e| e.context(format!("writing track {t} to its new place")))
    }

    /// Transfers track `t` under its lock, unless valid already.
    async fn transfer(&self, t: u64, by: By) -> Result<()> {
        if self.is_valid(t) {
            return Ok(());
        }
        let _g = self.locks.lock(t, t + 1).await;
        self.transfer_locked(t, by).await
    }

    /// The background transfer (FIG. 6A/6B) of tracks `from..to`, up to
    /// `DEPTH` at once; valid ones are skipped (PB clear: step 142).
    pub async fn transfer_tracks(&self, from: u64, to: u64) -> Result<()> {
        let to = to.min(self.tracks());
        let mut flight = FuturesUnordered::new();
        let mut next = from;
        loop {
            while next < to && flight.len() < DEPTH {
                if !self.is_valid(next) {
                    flight.push(self.transfer(next, By::Background));
                }
                next += 1;
            }
            match flight.next().await {
                Some(r) => r?,
                None if next >= to => return Ok(()),
                None => {}
            }
        }
    }

    /// Stores the clears of IND and PB of every track transferred so far,
    /// after flushing their data (DESIGN rule 1 before rule 2's clear).
    pub async fn save(&self) -> Result<()> {
        let done = std::mem::take(&mut *self.unsaved.lock().unwrap_or_else(|p| p.into_inner()));
        if done.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.new.flush().await {
            self.unsaved
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(done);
            return Err(e);
        }
        let old_tracks = self.lists.pb.tracks();
        for &t in &done {
            self.lists.ind.clear(t);
            if t < old_tracks {
                self.lists.pb.clear(t);
            }
        }
        self.lists.ind.sync().await?;
        self.lists.pb.sync().await
    }

    fn unsaved_any(&self) -> bool {
        !self
            .unsaved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// FIG. 7 for a write or zeroing of `off..off+len`: the tracks it
    /// touches are made valid first — a track it covers whole needs no
    /// copy (its old data is overwritten), the others are transferred —
    /// all under the locks of those tracks, held until `apply` is done.
    async fn write_path<F>(&self, off: u64, len: u64, fua: bool, apply: F) -> Result<()>
    where
        F: AsyncFnOnce() -> Result<()>,
    {
        let (a, b) = self.tracks_of(off, len);
        if (a..b).all(|t| self.is_valid(t)) {
            apply().await?;
            return if fua && self.unsaved_any() {
                self.save().await
            } else {
                Ok(())
            };
        }
        let _g = self.locks.lock(a, b).await;
        let mut covered = Vec::new();
        for t in a..b {
            if self.is_valid(t) {
                continue;
            }
            let (ts, te) = (t * self.track, ((t + 1) * self.track).min(self.new.size()));
            if off <= ts && te <= off + len {
                self.split_done().await?;
                covered.push(t);
            } else {
                self.transfer_locked(t, By::Host).await?;
            }
        }
        apply().await?;
        for t in covered {
            self.moved.overwritten.fetch_add(1, Ordering::Relaxed);
            self.set_valid(t);
        }
        if fua { self.save().await } else { Ok(()) }
    }

    async fn read_path(&self, off: u64, buf: IoBuf) -> BufResult {
        let (a, b) = self.tracks_of(off, buf.len() as u64);
        for t in a..b {
            if let Err(e) = self.transfer(t, By::Host).await {
                return (buf, Err(e));
            }
        }
        self.new.read(off, buf).await
    }

    async fn write_inner(&self, off: u64, buf: IoBuf, fua: bool) -> BufResult {
        let len = buf.len() as u64;
        if let Err(e) = check_range(off, len, self.size()) {
            return (buf, Err(e));
        }
        let mut slot = Some(buf);
        let mut back = None;
        let r = self
            .write_path(off, len, fua, async || {
                let Some(buf) = slot.take() else {
                    return Err(Error::new(ErrorKind::Invalid, "a restripe write ran twice"));
                };
                let (buf, r) = self.new.write(off, buf, fua).await;
                back = Some(buf);
                r
            })
            .await;
        let buf = back.or(slot).unwrap_or_else(|| IoBuf::new(0));
        (buf, r)
    }
}

impl BlockDev for Reshape {
    fn size(&self) -> u64 {
        self.new.size()
    }

    fn block_size(&self) -> u32 {
        self.new.block_size()
    }

    fn read(&self, off: u64, buf: IoBuf) -> DevFuture<'_, BufResult> {
        if self.left() == 0 {
            return self.new.read(off, buf);
        }
        Box::pin(self.read_path(off, buf))
    }

    fn write(&self, off: u64, buf: IoBuf, fua: bool) -> DevFuture<'_, BufResult> {
        if self.left() == 0 && !fua {
            return self.new.write(off, buf, fua);
        }
        Box::pin(self.write_inner(off, buf, fua))
    }

    fn flush(&self) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            self.new.flush().await?;
            self.save().await
        })
    }

    fn discard(&self, off: u64, len: u64) -> DevFuture<'_, Result<()>> {
        // Advisory: a track not valid yet is left as it is (it will hold
        // the BCV's data, a valid content for a discarded range).
        let r = check_range(off, len, self.size());
        Box::pin(async move {
            r?;
            let (a, b) = self.tracks_of(off, len);
            let _g = self.locks.lock(a, b).await;
            if (a..b).all(|t| self.is_valid(t)) {
                return self.new.discard(off, len).await;
            }
            Ok(())
        })
    }

    fn write_zeroes(&self, off: u64, len: u64, flags: ZeroFlags) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            check_range(off, len, self.size())?;
            self.write_path(off, len, flags.fua, async || {
                self.new.write_zeroes(off, len, flags).await
            })
            .await
        })
    }

    fn block_status(&self, off: u64, len: u64) -> DevFuture<'_, Result<Vec<Extent>>> {
        // Allocated data throughout: holes of the new layout's disks say
        // nothing about tracks still on the BCV.
        let r = check_range(off, len, self.size());
        Box::pin(async move {
            r?;
            Ok(vec![Extent { len, flags: 0 }])
        })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
