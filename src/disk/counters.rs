//! Per-disk I/O counters: a wrapping node that counts what passes through.

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::blockdev::{BlockDev, BufResult, DevFuture, Extent, ZeroFlags};
use crate::buf::IoBuf;
use crate::error::Result;

/// Counters of one disk, shown by `disk list`.
#[derive(Debug, Default)]
pub struct DiskCounters {
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    pub read_errors: AtomicU64,
    pub write_errors: AtomicU64,
    pub flushes: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    pub reads: u64,
    pub writes: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    pub flushes: u64,
}

impl DiskCounters {
    pub fn snapshot(&self) -> CounterSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CounterSnapshot {
            reads: l(&self.reads),
            writes: l(&self.writes),
            bytes_read: l(&self.bytes_read),
            bytes_written: l(&self.bytes_written),
            read_errors: l(&self.read_errors),
            write_errors: l(&self.write_errors),
            flushes: l(&self.flushes),
        }
    }

    /// Errors of both kinds.
    pub fn errors(&self) -> u64 {
        self.read_errors.load(Ordering::Relaxed) + self.write_errors.load(Ordering::Relaxed)
    }
}

/// Counts the I/O of the device it wraps.
pub struct Counted<D> {
    inner: D,
    counters: Arc<DiskCounters>,
}

impl<D: BlockDev> Counted<D> {
    pub fn new(inner: D, counters: Arc<DiskCounters>) -> Counted<D> {
        Counted { inner, counters }
    }

    pub fn inner(&self) -> &D {
        &self.inner
    }

    pub fn counters(&self) -> &Arc<DiskCounters> {
        &self.counters
    }

    /// [`BlockDev::read`] awaited in place (see [`BlockDev::as_any`]).
    pub async fn read_inline(&self, off: u64, buf: IoBuf) -> BufResult {
        let (buf, r) = super::inline::leaf_read(&self.inner, off, buf).await;
        let c = &self.counters;
        bump(&c.reads, &c.bytes_read, &c.read_errors, buf.len(), &r);
        (buf, r)
    }

    /// [`BlockDev::write`] awaited in place.
    pub async fn write_inline(&self, off: u64, buf: IoBuf, fua: bool) -> BufResult {
        let (buf, r) = super::inline::leaf_write(&self.inner, off, buf, fua).await;
        let c = &self.counters;
        bump(&c.writes, &c.bytes_written, &c.write_errors, buf.len(), &r);
        (buf, r)
    }
}

fn bump(ok: &AtomicU64, bytes: &AtomicU64, err: &AtomicU64, n: usize, r: &Result<()>) {
    match r {
        Ok(()) => {
            ok.fetch_add(1, Ordering::Relaxed);
            bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
        Err(_) => {
            err.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<D: BlockDev> BlockDev for Counted<D> {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn block_size(&self) -> u32 {
        self.inner.block_size()
    }

    fn read(&self, off: u64, buf: IoBuf) -> DevFuture<'_, BufResult> {
        Box::pin(self.read_inline(off, buf))
    }

    fn write(&self, off: u64, buf: IoBuf, fua: bool) -> DevFuture<'_, BufResult> {
        Box::pin(self.write_inline(off, buf, fua))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn flush(&self) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            let r = self.inner.flush().await;
            match &r {
                Ok(()) => self.counters.flushes.fetch_add(1, Ordering::Relaxed),
                Err(_) => self.counters.write_errors.fetch_add(1, Ordering::Relaxed),
            };
            r
        })
    }

    fn discard(&self, off: u64, len: u64) -> DevFuture<'_, Result<()>> {
        self.inner.discard(off, len)
    }

    fn preallocate(&self, off: u64, len: u64) -> DevFuture<'_, Result<()>> {
        self.inner.preallocate(off, len)
    }

    fn write_zeroes(&self, off: u64, len: u64, flags: ZeroFlags) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            let r = self.inner.write_zeroes(off, len, flags).await;
            let c = &self.counters;
            bump(
                &c.writes,
                &c.bytes_written,
                &c.write_errors,
                usize::try_from(len).unwrap_or(0),
                &r,
            );
            r
        })
    }

    fn block_status(&self, off: u64, len: u64) -> DevFuture<'_, Result<Vec<Extent>>> {
        self.inner.block_status(off, len)
    }
}
