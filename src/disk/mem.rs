//! An in-memory disk with a "live" and a "durable" image: the reference disk
//! of the model tests and the substrate of crash tests.
//!
//! Writes land in the live image and in a log of the writes since the last
//! flush; `flush` makes the whole live image durable. A FUA write is
//! durable on completion, and only it: it stays in the log at its place,
//! marked durable, and the writes before it stay unflushed. (FUA
//! write-zeroes flush, as the block layer does FUA for a device without.)
//! [`MemDisk::crash`] throws the live image away and rebuilds it from the
//! image of the last flush, replaying the log in issue order: every FUA
//! write, and whichever unflushed writes the caller lets "reach the
//! platter" — the way a power cut leaves a disk. So an older unflushed
//! write never lands over a newer FUA write of the same sectors, and a
//! newer unflushed one may or may not. [`MemDisk::crash_torn`] lets each
//! 512-byte sector of an unflushed write land or not on its own (a torn
//! write; a sector itself is atomic). Faults can be scheduled: fail after
//! N more writes, fail reads of a range; and one read of a range can be
//! held in flight until the test lets it go (a slow disk:
//! [`MemDisk::hold_read`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::blockdev::{BlockDev, BufResult, DevFuture, Extent, ZeroFlags, status};
use crate::buf::IoBuf;
use crate::error::{Error, ErrorKind, Result, check_range};

const ALLOC_GRAIN: u64 = 4096;
/// The unit a power cut cannot tear.
const SECTOR: u64 = 512;

/// A write since the last flush.
struct Logged {
    off: u64,
    data: Vec<u8>,
    /// A FUA write: durable when it completed.
    fua: bool,
}

struct Inner {
    live: Vec<u8>,
    /// The image as of the last flush.
    durable: Vec<u8>,
    /// Writes since the last flush, in issue order.
    log: Vec<Logged>,
    /// One flag per 4 KiB: ever written and not punched since.
    allocated: Vec<bool>,
}

/// A read held in flight ([`MemDisk::hold_read`]).
struct Held {
    off: u64,
    len: u64,
    arrived: tokio::sync::oneshot::Sender<()>,
    go: tokio::sync::oneshot::Receiver<()>,
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
    held: Mutex<Option<Held>>,
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
                log: Vec::new(),
                allocated: vec![false; grains],
            }),
            writes_left: AtomicU64::new(u64::MAX),
            dead: AtomicBool::new(false),
            bad_reads: Mutex::new(Vec::new()),
            held: Mutex::new(None),
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

    /// Simulates a power cut: the live image becomes the image of the last
    /// flush, then every FUA write since and each unflushed write for
    /// which `keep(i)` is true, in issue order (`i` counts the unflushed
    /// writes, FUA writes not included, in issue order; `keep` is called
    /// once for each).
    pub fn crash(&self, mut keep: impl FnMut(usize) -> bool) {
        self.power_cut(|i, _| Lands::Whole(keep(i)));
    }

    /// A power cut that tears writes: as [`MemDisk::crash`], but sector
    /// `s` (the 512-byte sectors a write touches, counted from its first)
    /// of unflushed write `i` lands when `keep(i, s)` is true. A FUA write
    /// lands whole.
    pub fn crash_torn(&self, mut keep: impl FnMut(usize, usize) -> bool) {
        self.power_cut(|i, e| {
            let n = sectors(e.off, e.data.len()).len();
            Lands::Sectors((0..n).map(|s| keep(i, s)).collect())
        });
    }

    /// A power cut: FUA writes land whole, unflushed write `i` (counted
    /// without them, in issue order) as `lands(i, write)` says.
    fn power_cut(&self, mut lands: impl FnMut(usize, &Logged) -> Lands) {
        let mut g = self.lock();
        let mut i = 0;
        let plan: Vec<Lands> = g
            .log
            .iter()
            .map(|e| {
                if e.fua {
                    return Lands::Whole(true);
                }
                i += 1;
                lands(i - 1, e)
            })
            .collect();
        replay(&mut g, &plan);
    }

    /// Number of writes since the last flush that are not durable (FUA
    /// writes are).
    pub fn unflushed_writes(&self) -> usize {
        self.lock().log.iter().filter(|e| !e.fua).count()
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

    /// The next read overlapping `off..off+len` is held in flight: it
    /// says so on the first channel returned, and takes its data from the
    /// disk only once the second is sent on (or dropped).
    pub fn hold_read(
        &self,
        off: u64,
        len: u64,
    ) -> (
        tokio::sync::oneshot::Receiver<()>,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let (arrived, on_arrival) = tokio::sync::oneshot::channel();
        let (go, on_go) = tokio::sync::oneshot::channel();
        let h = Held {
            off,
            len,
            arrived,
            go: on_go,
        };
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = Some(h);
        (on_arrival, go)
    }

    /// The hold a read of `off..off+len` meets, taken.
    fn held_for(&self, off: u64, len: u64) -> Option<Held> {
        let mut h = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let meets = h
            .as_ref()
            .is_some_and(|h| off < h.off + h.len && h.off < off + len);
        if meets { h.take() } else { None }
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
        g.log.push(Logged {
            off,
            data: data.to_vec(),
            fua,
        });
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
        g.log.clear();
        g.durable = g.live.clone();
        Ok(())
    }

    /// Zeroes `off..off+len` (durable at once with `fua`, like a FUA write)
    /// and marks it unallocated.
    fn punch(&self, off: u64, len: u64, fua: bool) -> Result<()> {
        check_range(off, len, self.size)?;
        if self.dead.load(Ordering::SeqCst) {
            return Err(self.io_err("discard", off));
        }
        let mut g = self.lock();
        let o = usize::try_from(off).unwrap_or(0);
        let l = usize::try_from(len).unwrap_or(0);
        g.live[o..o + l].fill(0);
        g.log.push(Logged {
            off,
            data: vec![0; l],
            fua,
        });
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
        if let Some(h) = self.held_for(off, buf.len() as u64) {
            return Box::pin(async move {
                let _ = h.arrived.send(());
                let _ = h.go.await;
                let r = self.do_read(off, &mut buf);
                (buf, r)
            });
        }
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
        let r = self.punch(off, len, false);
        Box::pin(async move { r })
    }

    fn write_zeroes(&self, off: u64, len: u64, flags: ZeroFlags) -> DevFuture<'_, Result<()>> {
        // FUA zeroes are modelled as the block layer does FUA on a device
        // without it: the zeroes, then a flush, which makes every earlier
        // write durable too. (Zeroes alone durable would be stricter; the
        // stack's tests still count on the flush.)
        let r = self
            .punch(off, len, flags.fua)
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

/// What of a logged write reaches the platter in a crash.
enum Lands {
    Whole(bool),
    Sectors(Vec<bool>),
}

/// Rebuilds the image from the last flush and the log, each write as
/// `lands` says, in issue order; the log is then empty.
fn replay(g: &mut Inner, lands: &[Lands]) {
    let log = std::mem::take(&mut g.log);
    let mut img = g.durable.clone();
    for (e, l) in log.iter().zip(lands) {
        let o = usize::try_from(e.off).unwrap_or(0);
        match l {
            Lands::Whole(true) => img[o..o + e.data.len()].copy_from_slice(&e.data),
            Lands::Whole(false) => {}
            Lands::Sectors(each) => {
                for ((from, len), &yes) in sectors(e.off, e.data.len()).into_iter().zip(each) {
                    if yes {
                        img[o + from..o + from + len].copy_from_slice(&e.data[from..from + len]);
                    }
                }
            }
        }
    }
    g.durable = img.clone();
    g.live = img;
}

/// The pieces of a write of `len` bytes at `off` that fall in one sector
/// each, as (offset in the write, length).
fn sectors(off: u64, len: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < len {
        let abs = off + pos as u64;
        let room = usize::try_from(SECTOR - abs % SECTOR).unwrap_or(1);
        let n = room.min(len - pos);
        out.push((pos, n));
        pos += n;
    }
    out
}

#[cfg(test)]
mod tests;
