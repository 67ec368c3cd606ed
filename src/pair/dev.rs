//! The pair's node over each of its two volumes, status by status (seed
//! 002, FIG. 3A/3B: DUPLEX is `Pair` here; the statuses of issue 19's
//! `pair list`):
//!
//! | status | P-VOL write | P-VOL read | S-VOL write | S-VOL read | copier |
//! |---|---|---|---|---|---|
//! | COPY, RESYNC | both sides | P | refused | refused | P to S |
//! | PAIR | both sides | P | refused | S (a marked track: P) | none |
//! | SPLIT | bit stored, then P | P | bit stored, then S | S | none |
//! | RESTORE | set tracks pulled, then both sides | set tracks pulled, then P | refused | refused | S to P |
//! | RESTORE, one way | set tracks pulled, bit stored in the after map, then P | set tracks pulled, then P | refused | S | S to P |
//!
//! - **One-way restore** (`svol-group restore --to-pvol`, seed 003's
//!   group image copied back onto the P-VOL): the S-VOL is an S-VOL
//!   group's RO member, an image that must not change and that hosts go
//!   on reading. Host writes of the P-VOL go to the P-VOL only; their
//!   tracks (which now differ from the S-VOL again) are set in a second
//!   map, the *after map*, stored before the write, since the
//!   differential bitmap still means "to copy S to P" until the restore
//!   ends. Then the engine puts the pair back to SPLIT and merges the
//!   after map into the bitmap. No write-intent log: one side is written.
//!
//! - **Differential bitmap** ([`DiffMap`]): in SPLIT every write to either
//!   side sets its tracks' bits, stored before the write is issued (DESIGN
//!   rule 2). In the mirrored statuses a write whose S-VOL side fails
//!   marks its tracks the same way before it is answered, so the next
//!   resync copies them; the host gets the P-VOL's result.
//! - **Track locks** (DESIGN rule 5): in the mirrored statuses a host write
//!   locks its tracks, and the copier locks the tracks it copies from the
//!   read of the source until their bits are cleared, so neither lands
//!   between the other's read and write. "Pulled" (RESTORE): before the
//!   host reads or writes a track the copier has not restored yet, it
//!   copies the track from the S-VOL itself, durably (host requests go
//!   first, as seed 004's FIG. 7 does it), so reads of the P-VOL are right
//!   at every moment.
//! - **Clearing a bit** after a copy: only once the copied data is durable
//!   on the destination (the copier flushes it first), so a crash never
//!   leaves a clear bit over a track that differs.
//! - **Both sides at a crash** (mirrored statuses): the pair's write-intent
//!   log marks a write's region before either side is written; the engine
//!   turns regions found marked at a start into set bits.
//!
//! The status changes only while both volumes' gates are closed (no host
//! request in flight); the copier runs only in COPY, RESYNC and RESTORE.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use futures::future::join_all;

use crate::blockdev::{
    BlockDev, BufResult, DevFuture, Extent, WriteIntent, ZeroFlags, begin_write,
};
use crate::buf::IoBuf;
use crate::error::{Error, ErrorKind, Result};
use crate::meta::diffmap::DiffMap;
use crate::stack::lock::RangeLock;

pub use crate::meta::model::PairStatus as Status;

fn status_code(s: Status) -> u8 {
    match s {
        Status::Copy => 0,
        Status::Pair => 1,
        Status::Split => 2,
        Status::Resync => 3,
        Status::Restore => 4,
    }
}

fn status_of(v: u8) -> Status {
    match v {
        0 => Status::Copy,
        1 => Status::Pair,
        2 => Status::Split,
        3 => Status::Resync,
        _ => Status::Restore,
    }
}

/// Whether host writes of the P-VOL go to both sides in `s`.
fn mirrored(s: Status) -> bool {
    !matches!(s, Status::Split)
}

/// Which volume of the pair a node serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    P,
    S,
}

/// The state both nodes of one pair share.
pub struct Pair {
    /// The P-VOL's device below this pair's node: the volume, or the node
    /// of another pair of the same P-VOL (nodes stack, one per S-VOL).
    p: parking_lot::RwLock<Arc<dyn BlockDev>>,
    s: Arc<dyn BlockDev>,
    diff: Arc<DiffMap>,
    intent: Arc<dyn WriteIntent>,
    status: AtomicU8,
    locks: RangeLock,
    /// Writes whose S-VOL side failed (their tracks were marked).
    s_errors: AtomicU64,
    /// The after map of a one-way restore (see the module doc).
    one_way: parking_lot::RwLock<Option<Arc<DiffMap>>>,
}

impl Pair {
    /// A pair of `p` and `s` (the same size) in `status`, with its stored
    /// differential bitmap and write-intent log.
    pub fn new(
        p: Arc<dyn BlockDev>,
        s: Arc<dyn BlockDev>,
        diff: Arc<DiffMap>,
        intent: Arc<dyn WriteIntent>,
        status: Status,
    ) -> Result<Arc<Pair>> {
        if p.size() != s.size() {
            return Err(Error::new(
                ErrorKind::Invalid,
                format!(
                    "a pair's volumes must be the same size: P-VOL {} bytes, S-VOL {} bytes",
                    p.size(),
                    s.size()
                ),
            ));
        }
        Ok(Arc::new(Pair {
            p: parking_lot::RwLock::new(p),
            s,
            diff,
            intent,
            status: AtomicU8::new(status_code(status)),
            locks: RangeLock::new(),
            s_errors: AtomicU64::new(0),
            one_way: parking_lot::RwLock::new(None),
        }))
    }

    /// The node for `side`'s volume.
    pub fn node(self: &Arc<Self>, side: Side) -> Arc<PairDev> {
        Arc::new(PairDev {
            pair: Arc::clone(self),
            side,
        })
    }

    pub fn status(&self) -> Status {
        status_of(self.status.load(Ordering::Acquire))
    }

    /// Sets the status; call with both volumes' gates closed.
    pub fn set_status(&self, s: Status) {
        self.status.store(status_code(s), Ordering::Release);
    }

    pub fn diff(&self) -> &Arc<DiffMap> {
        &self.diff
    }

    /// Makes a restore one way (`Some(after map)`) or two way (`None`).
    /// Call with both volumes' gates closed.
    pub fn set_one_way(&self, after: Option<Arc<DiffMap>>) {
        *self.one_way.write() = after;
    }

    /// The after map of a one-way restore.
    pub fn one_way(&self) -> Option<Arc<DiffMap>> {
        self.one_way.read().clone()
    }

    /// The after map, when a one-way restore is running.
    fn restoring_one_way(&self) -> Option<Arc<DiffMap>> {
        if self.status() == Status::Restore {
            self.one_way()
        } else {
            None
        }
    }

    /// Writes whose S-VOL side failed so far.
    pub fn s_errors(&self) -> u64 {
        self.s_errors.load(Ordering::SeqCst)
    }

    /// The device of `side`.
    pub fn side(&self, side: Side) -> Arc<dyn BlockDev> {
        match side {
            Side::P => self.p(),
            Side::S => Arc::clone(&self.s),
        }
    }

    /// The P-VOL's device below this pair's node.
    fn p(&self) -> Arc<dyn BlockDev> {
        Arc::clone(&self.p.read())
    }

    /// Puts `dev` below this pair's P-VOL node, where a node of another
    /// pair of the same P-VOL was (that pair is being deleted). Call with
    /// the P-VOL's gate closed.
    pub fn set_below_p(&self, dev: Arc<dyn BlockDev>) {
        *self.p.write() = dev;
    }

    /// Where the copier copies from and to in this status.
    fn direction(&self) -> (Arc<dyn BlockDev>, Arc<dyn BlockDev>) {
        match self.status() {
            Status::Restore => (Arc::clone(&self.s), self.p()),
            _ => (self.p(), Arc::clone(&self.s)),
        }
    }

    /// The byte range of track `t`.
    fn track_range(&self, t: u64) -> (u64, u64) {
        let track = self.diff.track();
        let off = t.saturating_mul(track);
        (off, track.min(self.s.size().saturating_sub(off)))
    }

    /// Copies up to `max` marked tracks at or after track `from` the way
    /// the status says, makes them durable on the destination, and clears
    /// their bits. The track to go on from, or None when no bit is set at
    /// or after `from`.
    pub async fn copy_some(&self, from: u64, max: usize) -> Result<Option<u64>> {
        let mut picked = Vec::with_capacity(max);
        let mut t = from;
        while picked.len() < max.max(1) {
            let Some(n) = self.diff.next_set(t) else {
                break;
            };
            picked.push(n);
            t = n + 1;
        }
        if picked.is_empty() {
            return Ok(None);
        }
        self.copy_tracks(&picked).await?;
        Ok(Some(t))
    }

    /// Copies `picked` (ascending) under their locks, flushes the
    /// destination, clears their bits. The locks are taken one at a time
    /// in ascending order, so two copiers cannot wait on each other (host
    /// requests take one range at once and never hold one while waiting).
    /// The bits stay set when the status changed meanwhile, or an S-VOL
    /// write or flush failed since the copy began (its error may have been
    /// the one that lost a copied track).
    async fn copy_tracks(&self, picked: &[u64]) -> Result<()> {
        let status = self.status();
        let failures = self.s_errors();
        let mut guards = Vec::with_capacity(picked.len());
        for &t in picked {
            guards.push(self.locks.lock(t, t + 1).await);
        }
        let (src, dst) = self.direction();
        let copies = picked
            .iter()
            .map(|&t| self.copy_track(&src, &dst, t, false));
        for r in join_all(copies).await {
            r?;
        }
        dst.flush().await?;
        if self.status() != status {
            return Err(Error::new(
                ErrorKind::Invalid,
                format!(
                    "the pair's status changed from {} to {} during a copy step",
                    status.name(),
                    self.status().name()
                ),
            ));
        }
        if self.s_errors() == failures {
            for &t in picked {
                self.diff.clear(t);
            }
        }
        drop(guards);
        Ok(())
    }

    /// Copies track `t` from `src` to `dst` if its bit is set (the caller
    /// holds its lock).
    async fn copy_track(
        &self,
        src: &Arc<dyn BlockDev>,
        dst: &Arc<dyn BlockDev>,
        t: u64,
        fua: bool,
    ) -> Result<()> {
        if !self.diff.is_set(t) {
            return Ok(());
        }
        let (off, len) = self.track_range(t);
        let buf = IoBuf::new(usize::try_from(len).unwrap_or(0));
        let (buf, r) = src.read(off, buf).await;
        r?;
        let (_, r) = dst.write(off, buf, fua).await;
        r
    }

    /// RESTORE: copies the marked tracks of `tracks` from the S-VOL
    /// durably and clears their bits (the caller holds their locks).
    async fn pull(&self, tracks: std::ops::Range<u64>) -> Result<()> {
        let p = self.p();
        for t in tracks {
            if self.diff.is_set(t) {
                self.copy_track(&self.s, &p, t, true).await?;
                self.diff.clear(t);
            }
        }
        Ok(())
    }

    /// One-way restore, before a host write of `off..off+len` (its tracks
    /// locked): the tracks still to restore are pulled, then the after
    /// map holds the tracks, stored.
    async fn pull_and_mark(&self, after: &Arc<DiffMap>, off: u64, len: u64) -> Result<()> {
        self.pull(self.diff.tracks_of(off, len)).await?;
        match after.mark(off, len) {
            Some(stored) => stored.await,
            None => Ok(()),
        }
    }

    /// A host write of the P-VOL in a mirrored status.
    async fn mirror_write(&self, off: u64, buf: IoBuf, fua: bool) -> BufResult {
        let len = buf.len() as u64;
        let tr = self.diff.tracks_of(off, len);
        let _tracks = self.locks.lock(tr.start, tr.end).await;
        if let Some(after) = self.restoring_one_way() {
            if let Err(e) = self.pull_and_mark(&after, off, len).await {
                return (buf, Err(e));
            }
            return self.p().write(off, buf, fua).await;
        }
        let _intent = match begin_write(&*self.intent, off, len).await {
            Ok(g) => g,
            Err(e) => return (buf, Err(e)),
        };
        if self.status() == Status::Restore
            && let Err(e) = self.pull(tr).await
        {
            return (buf, Err(e));
        }
        let mut copy = crate::buf::pool::take(buf.len());
        copy.as_mut_slice().copy_from_slice(buf.as_slice());
        let p = self.p();
        let both = futures::future::join(p.write(off, buf, fua), self.s.write(off, copy, fua));
        let ((buf, r), (copy, rs)) = Batched(std::pin::pin!(both)).await;
        crate::buf::pool::give(copy);
        match self.s_failed(off, len, rs).await {
            Ok(()) => (buf, r),
            Err(e) => (buf, r.and(Err(e))),
        }
    }

    /// A host zeroing or discard of the P-VOL in a mirrored status.
    async fn mirror_zero(&self, off: u64, len: u64, flags: ZeroFlags, discard: bool) -> Result<()> {
        let tr = self.diff.tracks_of(off, len);
        let _tracks = self.locks.lock(tr.start, tr.end).await;
        let p = self.p();
        if let Some(after) = self.restoring_one_way() {
            self.pull_and_mark(&after, off, len).await?;
            return if discard {
                p.discard(off, len).await
            } else {
                p.write_zeroes(off, len, flags).await
            };
        }
        let _intent = begin_write(&*self.intent, off, len).await?;
        if self.status() == Status::Restore {
            self.pull(tr).await?;
        }
        let (r, rs) = if discard {
            futures::join!(p.discard(off, len), self.s.discard(off, len))
        } else {
            futures::join!(
                p.write_zeroes(off, len, flags),
                self.s.write_zeroes(off, len, flags)
            )
        };
        self.s_failed(off, len, rs).await?;
        r
    }

    /// The S-VOL side of a mirrored write failed: mark its tracks (stored
    /// before the write is answered) so the next resync copies them. In
    /// RESTORE a set bit means the other way (S-VOL to P-VOL, where the
    /// S-VOL is the source): the error is the host's.
    async fn s_failed(&self, off: u64, len: u64, r: Result<()>) -> Result<()> {
        let Err(e) = r else {
            return Ok(());
        };
        self.s_errors.fetch_add(1, Ordering::SeqCst);
        if self.status() == Status::Restore {
            return Err(e.context("the S-VOL, the source of the restore, failed"));
        }
        tracing::warn!(error = %e.chain(), off, len, "a pair's S-VOL write failed; its tracks are marked for resync");
        self.mark(off, len).await
    }

    /// Sets the bits of `off..off+len` and waits until they are stored.
    async fn mark(&self, off: u64, len: u64) -> Result<()> {
        match self.diff.mark(off, len) {
            Some(w) => w.await,
            None => Ok(()),
        }
    }
}

/// One volume's node of a pair.
pub struct PairDev {
    pair: Arc<Pair>,
    side: Side,
}

impl PairDev {
    pub fn pair(&self) -> &Arc<Pair> {
        &self.pair
    }

    fn dev(&self) -> Arc<dyn BlockDev> {
        self.pair.side(self.side)
    }

    /// Why host I/O of the S-VOL is refused in this status, if it is.
    fn s_refusal(&self, write: bool) -> Option<Error> {
        let st = self.pair.status();
        let ok = match st {
            Status::Split => true,
            Status::Pair => !write,
            Status::Restore => !write && self.pair.one_way().is_some(),
            _ => false,
        };
        if ok {
            return None;
        }
        let what = if write { "written" } else { "read" };
        let todo = match st {
            Status::Pair => "split the pair first (`pair split`)",
            _ => "wait for the pair's copy to finish, then split it (`pair split`)",
        };
        Some(Error::new(
            if write {
                ErrorKind::ReadOnly
            } else {
                ErrorKind::Invalid
            },
            format!(
                "the S-VOL of a pair in status {} cannot be {what} by hosts: {todo}",
                st.name()
            ),
        ))
    }

    async fn read_p(&self, off: u64, buf: IoBuf) -> BufResult {
        if self.pair.status() == Status::Restore {
            let tr = self.pair.diff.tracks_of(off, buf.len() as u64);
            if (tr.start..tr.end).any(|t| self.pair.diff.is_set(t)) {
                let _tracks = self.pair.locks.lock(tr.start, tr.end).await;
                if let Err(e) = self.pair.pull(tr).await {
                    return (buf, Err(e));
                }
            }
        }
        self.pair.p().read(off, buf).await
    }

    /// A host read of the S-VOL. In PAIR a marked track is one whose S-VOL
    /// write failed: the S-VOL's copy is stale there, and the P-VOL holds
    /// what the mirror should, so the read is served from the P-VOL.
    async fn read_s(&self, off: u64, buf: IoBuf) -> BufResult {
        if self.pair.status() == Status::Pair {
            let tr = self.pair.diff.tracks_of(off, buf.len() as u64);
            if self
                .pair
                .diff
                .next_set(tr.start)
                .is_some_and(|t| t < tr.end)
            {
                return self.pair.p().read(off, buf).await;
            }
        }
        self.pair.s.read(off, buf).await
    }

    async fn write_side(&self, off: u64, buf: IoBuf, fua: bool) -> BufResult {
        let st = self.pair.status();
        if self.side == Side::S {
            if let Some(e) = self.s_refusal(true) {
                return (buf, Err(e));
            }
        } else if mirrored(st) {
            return self.pair.mirror_write(off, buf, fua).await;
        }
        if let Err(e) = self.pair.mark(off, buf.len() as u64).await {
            return (buf, Err(e));
        }
        self.dev().write(off, buf, fua).await
    }

    async fn zero_side(&self, off: u64, len: u64, flags: ZeroFlags, discard: bool) -> Result<()> {
        if self.side == Side::S {
            if let Some(e) = self.s_refusal(true) {
                return Err(e);
            }
        } else if mirrored(self.pair.status()) {
            return self.pair.mirror_zero(off, len, flags, discard).await;
        }
        self.pair.mark(off, len).await?;
        if discard {
            self.dev().discard(off, len).await
        } else {
            self.dev().write_zeroes(off, len, flags).await
        }
    }
}

impl BlockDev for PairDev {
    fn size(&self) -> u64 {
        self.dev().size()
    }

    fn block_size(&self) -> u32 {
        self.dev().block_size()
    }

    fn read(&self, off: u64, buf: IoBuf) -> DevFuture<'_, BufResult> {
        Box::pin(async move {
            match self.side {
                Side::P => self.read_p(off, buf).await,
                Side::S => match self.s_refusal(false) {
                    Some(e) => (buf, Err(e)),
                    None => self.read_s(off, buf).await,
                },
            }
        })
    }

    fn write(&self, off: u64, buf: IoBuf, fua: bool) -> DevFuture<'_, BufResult> {
        Box::pin(self.write_side(off, buf, fua))
    }

    fn flush(&self) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            let two_sides = mirrored(self.pair.status()) && self.pair.restoring_one_way().is_none();
            if self.side == Side::P && two_sides {
                let p = self.pair.p();
                let (r, rs) = futures::join!(p.flush(), self.pair.s.flush());
                // Which of the S-VOL's writes were lost is unknown: every
                // track is marked, the next resync copies them all.
                let all = 0..self.pair.diff.tracks();
                self.pair
                    .s_failed(0, all.end.saturating_mul(self.pair.diff.track()), rs)
                    .await?;
                r
            } else {
                self.dev().flush().await
            }
        })
    }

    fn discard(&self, off: u64, len: u64) -> DevFuture<'_, Result<()>> {
        Box::pin(self.zero_side(off, len, ZeroFlags::default(), true))
    }

    fn write_zeroes(&self, off: u64, len: u64, flags: ZeroFlags) -> DevFuture<'_, Result<()>> {
        Box::pin(self.zero_side(off, len, flags, false))
    }

    fn block_status(&self, off: u64, len: u64) -> DevFuture<'_, Result<Vec<Extent>>> {
        Box::pin(async move {
            if self.side == Side::S
                && let Some(e) = self.s_refusal(false)
            {
                return Err(e);
            }
            // RESTORE: P's marked tracks read as the S-VOL's, whatever P
            // holds there now: only "data" is safe to say.
            if self.side == Side::P && self.pair.status() == Status::Restore {
                return Ok(vec![Extent { len, flags: 0 }]);
            }
            self.dev().block_status(off, len).await
        })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// A future whose every poll submits the disk operations it starts in
/// one go ([`crate::rt::batch`]): both sides of a mirrored write.
struct Batched<'a, F>(std::pin::Pin<&'a mut F>);

impl<F: std::future::Future> std::future::Future for Batched<'_, F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let inner = self.0.as_mut();
        crate::rt::batch(|| inner.poll(cx))
    }
}
