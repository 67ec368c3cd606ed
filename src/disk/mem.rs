//! An in-memory disk with a "live" and a "durable" image: the reference disk
//! of the model tests and the substrate of crash tests.
//!
//! Writes land in the live image and in a log of unflushed writes; `flush`
//! (or a FUA write) makes them durable. [`MemDisk::crash`] throws the live
//! image away and keeps the durable one plus whichever unflushed writes the
//! caller chooses to let "reach the platter" — the way a power cut leaves
//! a disk. Faults can be scheduled: fail after N more writes, fail reads of
//! a range.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::blockdev::{BlockDev, BufResult, DevFuture, Extent, ZeroFlags, status};
use crate::buf::IoBuf;
use crate::error::{Error, ErrorKind, Result, check_range};

const ALLOC_GRAIN: u64 = 4096;

struct Inner {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Writes since the last flush: (offset, data).
    unflushed: Vec<(u64, Vec<u8>)>,
    /// One flag per 4 KiB: ever written and not punched since.
    allocated: Vec<bool>,
}

/// An in-memory block device for tests.
pub struct MemDisk {
    size: u64,
    inner: Mutex<Inner>,
    /// Fail every write once this many more have succeeded (u64::MAX: never).
    writes_left: AtomicU64,
    /// Fail every I/O (a vanished disk).
    dead: AtomicBool,
    bad_reads: Mutex<Vec<(u64, u64)>>,
    pub reads: AtomicU64,
    pub writes: AtomicU64,
}

impl MemDisk {
    pub fn new(size: u64) -> MemDisk {
        let n = usize::try_from(size).unwrap_or(0);
        let grains = usize::try_from(size.div_ceil(ALLOC_GRAIN)).unwrap_or(0);
        MemDisk {
            size,
            inner: Mutex::new(Inner {
                live: vec![0; n],
                durable: vec![0; n],
                unflushed: Vec::new(),
                allocated: vec![false; grains],
            }),
            writes_left: AtomicU64::new(u64::MAX),
            dead: AtomicBool::new(false),
            bad_reads: Mutex::new(Vec::new()),
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the live image.
    pub fn snapshot(&self) -> Vec<u8> {
        self.lock().live.clone()
    }

    /// Simulates a power cut: the live image becomes the durable image plus
    /// the unflushed writes for which `keep(i)` is true (i counts unflushed
    /// writes in issue order).
    pub fn crash(&self, mut keep: impl FnMut(usize) -> bool) {
        let mut g = self.lock();
        let log = std::mem::take(&mut g.unflushed);
        let mut img = g.durable.clone();
        for (i, (off, data)) in log.iter().enumerate() {
            if keep(i) {
                let o = usize::try_from(*off).unwrap_or(0);
                img[o..o + data.len()].copy_from_slice(data);
            }
        }
        g.durable = img.clone();
        g.live = img;
    }

    /// Number of writes not yet flushed.
    pub fn unflushed_writes(&self) -> usize {
        self.lock().unflushed.len()
    }

    /// After `n` more successful writes, every write fails.
    pub fn fail_writes_after(&self, n: u64) {
        self.writes_left.store(n, Ordering::SeqCst);
    }

    /// Every I/O fails from now on (or works again with `false`).
    pub fn set_dead(&self, dead: bool) {
        self.dead.store(dead, Ordering::SeqCst);
    }

    /// Reads overlapping `off..off+len` fail.
    pub fn add_bad_read(&self, off: u64, len: u64) {
        self.bad_reads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((off, len));
    }

    fn io_err(&self, what: &str, off: u64) -> Error {
        Error::new(
            ErrorKind::Io,
            format!("memory disk: {what} failed at {off}"),
        )
    }

    fn do_read(&self, off: u64, buf: &mut IoBuf) -> Result<()> {
        check_range(off, buf.len() as u64, self.size)?;
        self.reads.fetch_add(1, Ordering::Relaxed);
        if self.dead.load(Ordering::SeqCst) {
            return Err(self.io_err("read", off));
        }
        let end = off + buf.len() as u64;
        let bad = self.bad_reads.lock().unwrap_or_else(|p| p.into_inner());
        if bad.iter().any(|&(b, l)| b < end && off < b + l) {
            return Err(self.io_err("read", off));
        }
        drop(bad);
        let g = self.lock();
        let o = usize::try_from(off).unwrap_or(0);
        let n = buf.len();
        buf.as_mut_slice().copy_from_slice(&g.live[o..o + n]);
        Ok(())
    }

    fn do_write(&self, off: u64, data: &[u8], fua: bool) -> Result<()> {
        check_range(off, data.len() as u64, self.size)?;
        if self.dead.load(Ordering::SeqCst) {
            return Err(self.io_err("write", off));
        }
        let left = self.writes_left.load(Ordering::SeqCst);
        if left == 0 {
            return Err(self.io_err("write", off));
        }
        if left != u64::MAX {
            self.writes_left.store(left - 1, Ordering::SeqCst);
        }
        self.writes.fetch_add(1, Ordering::Relaxed);
        let mut g = self.lock();
        let o = usize::try_from(off).unwrap_or(0);
        g.live[o..o + data.len()].copy_from_slice(data);
        if fua {
            g.durable[o..o + data.len()].copy_from_slice(data);
        } else {
            g.unflushed.push((off, data.to_vec()));
        }
        let first = off / ALLOC_GRAIN;
        let last = (off + data.len() as u64).div_ceil(ALLOC_GRAIN);
        for i in first..last {
            if let Some(a) = g
                .allocated
                .get_mut(usize::try_from(i).unwrap_or(usize::MAX))
            {
                *a = true;
            }
        }
        Ok(())
    }

    fn do_flush(&self) -> Result<()> {
        if self.dead.load(Ordering::SeqCst) {
            return Err(self.io_err("flush", 0));
        }
        let mut g = self.lock();
        g.unflushed.clear();
        g.durable = g.live.clone();
        Ok(())
    }

    fn punch(&self, off: u64, len: u64) -> Result<()> {
        check_range(off, len, self.size)?;
        if self.dead.load(Ordering::SeqCst) {
            return Err(self.io_err("discard", off));
        }
        let mut g = self.lock();
        let o = usize::try_from(off).unwrap_or(0);
        let l = usize::try_from(len).unwrap_or(0);
        g.live[o..o + l].fill(0);
        g.unflushed.push((off, vec![0; l]));
        let first = off.div_ceil(ALLOC_GRAIN);
        let last = (off + len) / ALLOC_GRAIN;
        for i in first..last {
            if let Some(a) = g
                .allocated
                .get_mut(usize::try_from(i).unwrap_or(usize::MAX))
            {
                *a = false;
            }
        }
        Ok(())
    }
}

impl BlockDev for MemDisk {
    fn size(&self) -> u64 {
        self.size
    }

    fn read(&self, off: u64, mut buf: IoBuf) -> DevFuture<'_, BufResult> {
        let r = self.do_read(off, &mut buf);
        Box::pin(async move { (buf, r) })
    }

    fn write(&self, off: u64, buf: IoBuf, fua: bool) -> DevFuture<'_, BufResult> {
        let r = self.do_write(off, buf.as_slice(), fua);
        Box::pin(async move { (buf, r) })
    }

    fn flush(&self) -> DevFuture<'_, Result<()>> {
        let r = self.do_flush();
        Box::pin(async move { r })
    }

    fn discard(&self, off: u64, len: u64) -> DevFuture<'_, Result<()>> {
        let r = self.punch(off, len);
        Box::pin(async move { r })
    }

    fn write_zeroes(&self, off: u64, len: u64, flags: ZeroFlags) -> DevFuture<'_, Result<()>> {
        let r = self
            .punch(off, len)
            .and_then(|()| if flags.fua { self.do_flush() } else { Ok(()) });
        Box::pin(async move { r })
    }

    fn block_status(&self, off: u64, len: u64) -> DevFuture<'_, Result<Vec<Extent>>> {
        let r = check_range(off, len, self.size).map(|()| {
            let g = self.lock();
            let mut out = Vec::new();
            let end = off + len;
            let mut pos = off;
            while pos < end {
                let grain = pos / ALLOC_GRAIN;
                let next = ((grain + 1) * ALLOC_GRAIN).min(end);
                let alloc = g
                    .allocated
                    .get(usize::try_from(grain).unwrap_or(usize::MAX))
                    .copied()
                    .unwrap_or(true);
                let flags = if alloc {
                    0
                } else {
                    status::HOLE | status::ZERO
                };
                out.push(Extent {
                    len: next - pos,
                    flags,
                });
                pos = next;
            }
            crate::blockdev::coalesce(out)
        });
        Box::pin(async move { r })
    }
}
