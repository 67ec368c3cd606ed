//! ESTABLISH (seed 004, FIG. 4A step 104): the replicated copy of a
//! group in its original configuration — the BCV — made while hosts keep
//! reading and writing the group.
//!
//! ```text
//!   host I/O ──> Establish ──> main (the group in its original layout)
//!                    │ writes below the cursor (and every write once in
//!                    │ sync) also go to
//!                    └───────> bcv (the same layout over the BCV disks)
//!   copier: chunk by chunk, main ──> bcv, under the chunk's lock; the
//!   cursor moves over a chunk before its lock goes
//! ```
//!
//! A host write locks the chunks it touches, so it never races the
//! copier: a chunk is copied wholly before or wholly after the write. The
//! BCV is in sync (step 113) once the cursor reaches the end; from then
//! on it mirrors every write until the switch isolates it (the split).
//! A failure of the BCV never fails a host request: it breaks the
//! establish, and the copier reports it.
//!
//! The cursor is not stored: after a crash the establish starts over
//! (the BCV may miss a write that reached the main disks only).

#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use futures::stream::FuturesOrdered;

use crate::blockdev::{BlockDev, BufResult, DevFuture, Extent, ZeroFlags};
use crate::buf::IoBuf;
use crate::error::{Error, Result, check_range};
use crate::stack::lock::{RangeGuard, RangeLock};

/// Bytes the copier moves in one read and one write.
pub const CHUNK: u64 = 1 << 20;
/// Chunks the copier has in flight at once.
const DEPTH: usize = 8;

/// Whether `dev` says all of `off..off+len` reads as zeroes (its
/// allocation status; an error or no answer counts as data).
pub(super) async fn reads_as_zeroes(dev: &dyn BlockDev, off: u64, len: u64) -> bool {
    match dev.block_status(off, len).await {
        Ok(ext) => ext
            .first()
            .is_some_and(|e| e.len >= len && e.flags & crate::blockdev::status::ZERO != 0),
        Err(_) => false,
    }
}

/// The main device mirrored onto the BCV while the copy catches up.
pub struct Establish {
    main: Arc<dyn BlockDev>,
    bcv: Arc<dyn BlockDev>,
    /// Bytes from 0 the BCV holds (and receives writes for).
    cursor: AtomicU64,
    /// Chunk locks (key = offset / CHUNK).
    locks: RangeLock,
    /// The first BCV failure: the establish is broken.
    broken: Mutex<Option<Error>>,
}

impl Establish {
    /// Mirrors `main` onto `bcv` (at least as large), the copy at 0.
    pub fn new(main: Arc<dyn BlockDev>, bcv: Arc<dyn BlockDev>) -> Result<Establish> {
        if bcv.size() < main.size() {
            return Err(Error::invalid(format!(
                "the copy holds {} bytes, the group {}",
                bcv.size(),
                main.size()
            )));
        }
        Ok(Establish {
            main,
            bcv,
            cursor: AtomicU64::new(0),
            locks: RangeLock::new(),
            broken: Mutex::new(None),
        })
    }

    /// The device being copied.
    pub fn main(&self) -> &Arc<dyn BlockDev> {
        &self.main
    }

    /// Bytes copied so far (from 0).
    pub fn cursor(&self) -> u64 {
        self.cursor.load(Ordering::Acquire)
    }

    /// Whether the BCV holds everything and mirrors every write (step 113).
    pub fn in_sync(&self) -> bool {
        self.cursor() >= self.main.size()
    }

    /// Why the BCV stopped following, if it did.
    pub fn broken(&self) -> Option<Error> {
        self.broken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn fail_bcv(&self, e: &Error) {
        let mut b = self.broken.lock().unwrap_or_else(|p| p.into_inner());
        if b.is_none() {
            tracing::warn!(error = %e.chain(), "the restripe's copy failed a write; the copy stops");
            *b = Some(e.clone());
        }
    }

    fn chunks(off: u64, len: u64) -> (u64, u64) {
        (off / CHUNK, (off + len.max(1)).div_ceil(CHUNK))
    }

    /// Copies `from..to` (bytes, `from` not past the cursor) onto the
    /// BCV and flushes it, so the caller may count it done.
    pub async fn copy(&self, from: u64, to: u64) -> Result<()> {
        let to = to.min(self.main.size());
        if from > self.cursor() {
            return Err(Error::invalid(format!(
                "the copy must continue at byte {}, not {from}",
                self.cursor()
            )));
        }
        let mut flight = FuturesOrdered::new();
        let mut keys: VecDeque<u64> = VecDeque::new();
        let mut next = from - from % CHUNK;
        let mut failed = None;
        loop {
            while failed.is_none() && next < to && keys.len() < DEPTH {
                let end = (next + CHUNK).min(self.main.size());
                keys.push_back(next);
                flight.push_back(async move { (end, self.copy_chunk(next, end).await) });
                next = end;
            }
            let Some((end, res)) = flight.next().await else {
                break;
            };
            keys.pop_front();
            match res {
                Ok(_guard) if failed.is_none() => {
                    self.cursor.fetch_max(end, Ordering::AcqRel);
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
        if let Some(e) = self.broken() {
            return Err(e.context("the restripe's copy stopped"));
        }
        self.bcv.flush().await.map_err(|e| {
            self.fail_bcv(&e);
            e.context("flushing the restripe's copy")
        })
    }

    /// Copies bytes `off..end` under their chunk's lock, returned held.
    async fn copy_chunk(&self, off: u64, end: u64) -> Result<RangeGuard<'_>> {
        let (a, b) = Self::chunks(off, end - off);
        let guard = self.locks.lock(a, b).await;
        if reads_as_zeroes(&*self.main, off, end - off).await {
            // A thin group copies in proportion to its data: a chunk that
            // reads as zeroes becomes zeroes (a hole) on the copy.
            let flags = ZeroFlags {
                may_unmap: true,
                ..ZeroFlags::default()
            };
            self.bcv
                .write_zeroes(off, end - off, flags)
                .await
                .map_err(|e| {
                    self.fail_bcv(&e);
                    e.context(format!("zeroing byte {off} of the restripe's copy"))
                })?;
            return Ok(guard);
        }
        let len = usize::try_from(end - off).unwrap_or(0);
        let (buf, r) = self.main.read(off, IoBuf::new(len)).await;
        r.map_err(|e| e.context(format!("reading byte {off} of the group for its copy")))?;
        let (_, r) = self.bcv.write(off, buf, false).await;
        r.map_err(|e| {
            self.fail_bcv(&e);
            e.context(format!("writing byte {off} of the restripe's copy"))
        })?;
        Ok(guard)
    }

    /// Whether a write at `off` must reach the BCV too.
    fn mirrored(&self, off: u64) -> bool {
        off < self.cursor() && self.broken.lock().is_ok_and(|b| b.is_none())
    }

    async fn write_both(&self, off: u64, buf: IoBuf, fua: bool) -> BufResult {
        let (a, b) = Self::chunks(off, buf.len() as u64);
        let _g = self.locks.lock(a, b).await;
        if !self.mirrored(off) {
            return self.main.write(off, buf, fua).await;
        }
        let copy = IoBuf::from_slice(buf.as_slice());
        let ((buf, r), (_, rb)) = futures::join!(
            self.main.write(off, buf, fua),
            self.bcv.write(off, copy, fua)
        );
        if let Err(e) = rb {
            self.fail_bcv(&e);
        }
        (buf, r)
    }

    async fn zero_both(&self, off: u64, len: u64, flags: ZeroFlags) -> Result<()> {
        let (a, b) = Self::chunks(off, len);
        let _g = self.locks.lock(a, b).await;
        if !self.mirrored(off) {
            return self.main.write_zeroes(off, len, flags).await;
        }
        let (r, rb) = futures::join!(
            self.main.write_zeroes(off, len, flags),
            self.bcv.write_zeroes(off, len, flags)
        );
        if let Err(e) = rb {
            self.fail_bcv(&e);
        }
        r
    }
}

impl BlockDev for Establish {
    fn size(&self) -> u64 {
        self.main.size()
    }

    fn block_size(&self) -> u32 {
        self.main.block_size()
    }

    fn read(&self, off: u64, buf: IoBuf) -> DevFuture<'_, BufResult> {
        self.main.read(off, buf)
    }

    fn write(&self, off: u64, buf: IoBuf, fua: bool) -> DevFuture<'_, BufResult> {
        Box::pin(self.write_both(off, buf, fua))
    }

    fn flush(&self) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            let (r, rb) = futures::join!(self.main.flush(), self.bcv.flush());
            if let Err(e) = rb {
                self.fail_bcv(&e);
            }
            r
        })
    }

    fn discard(&self, off: u64, len: u64) -> DevFuture<'_, Result<()>> {
        // Advisory: where both sides hold the range, neither discards it
        // (they must keep agreeing); above the cursor the copier copies
        // whatever the main device reads after.
        let r = check_range(off, len, self.size());
        Box::pin(async move {
            r?;
            let (a, b) = Self::chunks(off, len);
            let _g = self.locks.lock(a, b).await;
            if self.mirrored(off) {
                return Ok(());
            }
            self.main.discard(off, len).await
        })
    }

    fn write_zeroes(&self, off: u64, len: u64, flags: ZeroFlags) -> DevFuture<'_, Result<()>> {
        Box::pin(self.zero_both(off, len, flags))
    }

    fn block_status(&self, off: u64, len: u64) -> DevFuture<'_, Result<Vec<Extent>>> {
        self.main.block_status(off, len)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
