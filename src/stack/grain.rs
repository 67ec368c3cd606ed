//! Byte-granular host I/O over devices whose contract is whole blocks.
//!
//! An NBD client that negotiated no block size (`NBD_OPT_EXPORT_NAME`)
//! may read and write any offset and length. Every node below the top of
//! a stack keeps the [`BlockDev`] contract (offsets and lengths are
//! multiples of its block size); the byte-granular requests are turned
//! into block requests here:
//!
//! ```text
//!   read   off..end   -> read the covering blocks, keep the slice asked for
//!   write  off..end   -> read the partly covered edge blocks, merge, write
//!                        the covering blocks in one write (FUA covers it)
//!   zeroes off..end   -> write-zeroes the blocks wholly inside, then
//!                        read-modify-write the edge blocks
//!   trim   off..end   -> discard the blocks wholly inside (trim is advisory)
//!   status off..end   -> status of the covering blocks, head cut off
//! ```
//!
//! Atomicity ([`Grain`]): a read-modify-write must not interleave with
//! another write to one of its blocks, or that write's bytes outside the
//! RMW's range are lost. The top of every volume stack
//! ([`Switch`](super::switch::Switch)) therefore holds the RMW's covering
//! blocks in a [`RangeLock`]. Aligned writes pay nothing for this until a
//! volume sees its first byte-granular write: from then on every write,
//! write-zeroes and discard locks its range too, so an aligned write and
//! an RMW of the same block land in one order or the other, never mixed.
//! The switch from lock-free to locked writes drains the writes already in
//! flight (they took no lock) by closing the Switch's gate once.

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU8, Ordering};

use super::lock::{RangeGuard, RangeLock};
use crate::blockdev::{BlockDev, BufResult, Extent, ZeroFlags};
pub use crate::blockdev::{aligned, unaligned};
use crate::buf::IoBuf;
use crate::error::{Error, ErrorKind, Result};

/// No byte-granular write was seen: writes take no lock.
const FREE: u8 = 0;
/// The first byte-granular write is draining the lock-free writes in
/// flight; writes that start now lock their range.
const DRAINING: u8 = 1;
/// Every write in flight locks its range.
const LOCKED: u8 = 2;

/// Per-volume state of byte-granular writes: the mode and the lock over
/// byte ranges of whole blocks (a write locks the blocks it touches).
#[derive(Default)]
pub struct Grain {
    mode: AtomicU8,
    lock: RangeLock,
}

impl Grain {
    pub fn new() -> Grain {
        Grain::default()
    }

    /// Whether a write must lock its range. Checked by a write after it
    /// entered the gate: a write that sees `false` is inside the gate
    /// before the first byte-granular write closes it, so that close waits
    /// for it (see [`Grain::begin`]).
    pub fn locking(&self) -> bool {
        self.mode.load(Ordering::SeqCst) != FREE
    }

    /// Whether every lock-free write has left: byte-granular writes may
    /// go ahead once they entered the gate.
    pub fn settled(&self) -> bool {
        self.mode.load(Ordering::SeqCst) == LOCKED
    }

    /// Marks the start of byte-granular writes. The caller then closes the
    /// gate (which waits for every request inside) and calls
    /// [`Grain::settle`]; it must do both outside the gate. A write that
    /// enters the gate after the close sees [`Grain::locking`].
    pub fn begin(&self) {
        let _ = self
            .mode
            .compare_exchange(FREE, DRAINING, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Every lock-free write has finished (the gate was closed and
    /// drained after [`Grain::begin`]). True if this call changed the mode.
    pub fn settle(&self) -> bool {
        self.mode.swap(LOCKED, Ordering::SeqCst) != LOCKED
    }

    /// Locks bytes `start..end` (whole blocks: a write's range, or an
    /// RMW's covering blocks).
    pub async fn lock(&self, start: u64, end: u64) -> RangeGuard<'_> {
        self.lock.lock(start, end).await
    }

    /// Ranges held now (tests and diagnostics).
    pub fn held(&self) -> usize {
        self.lock.held()
    }
}

fn overflow(off: u64, len: u64) -> Error {
    Error::new(
        ErrorKind::OutOfRange,
        format!("range {off}+{len} overflows"),
    )
}

/// The blocks covering `off..off+len`, as bytes `start..end`.
pub fn cover(off: u64, len: u64, block: u64) -> Result<(u64, u64)> {
    let block = block.max(1);
    let end = off
        .checked_add(len)
        .and_then(|e| e.checked_next_multiple_of(block))
        .ok_or_else(|| overflow(off, len))?;
    Ok((off - off % block, end))
}

/// The blocks wholly inside `off..off+len`, if any.
pub fn interior(off: u64, len: u64, block: u64) -> Result<Option<(u64, u64)>> {
    let block = block.max(1);
    let end = off.checked_add(len).ok_or_else(|| overflow(off, len))?;
    let start = off
        .checked_next_multiple_of(block)
        .ok_or_else(|| overflow(off, len))?;
    let end = end - end % block;
    Ok((start < end).then_some((start, end)))
}

/// The blocks that `off..off+len` covers only partly (at most two).
fn edges(off: u64, len: u64, block: u64) -> Result<Vec<u64>> {
    let (start, end) = cover(off, len, block)?;
    let mut v = Vec::with_capacity(2);
    if len == 0 {
        return Ok(v);
    }
    if !off.is_multiple_of(block) {
        v.push(start);
    }
    let tail = end - block;
    if !(off + len).is_multiple_of(block) && v.last() != Some(&tail) {
        v.push(tail);
    }
    Ok(v)
}

fn to_usize(n: u64) -> Result<usize> {
    usize::try_from(n).map_err(|_| Error::invalid(format!("{n} bytes do not fit in memory")))
}

/// Copies `src` into `dst` at `at`; an error if it does not fit.
fn put(dst: &mut [u8], at: usize, src: &[u8]) -> Result<()> {
    at.checked_add(src.len())
        .and_then(|end| dst.get_mut(at..end))
        .map(|d| d.copy_from_slice(src))
        .ok_or_else(|| Error::new(ErrorKind::Io, "a block buffer has the wrong length"))
}

/// Reads `buf.len()` bytes at byte `off` (any alignment) by reading the
/// covering blocks of `dev` (whose block size is `block`).
pub async fn read_bytes(dev: &dyn BlockDev, off: u64, mut buf: IoBuf, block: u64) -> BufResult {
    let len = buf.len() as u64;
    let covering = cover(off, len, block).and_then(|(s, e)| Ok((s, to_usize(e - s)?)));
    let (start, n) = match covering {
        Ok(c) => c,
        Err(e) => return (buf, Err(e)),
    };
    let (cov, r) = dev.read(start, IoBuf::new(n)).await;
    if let Err(e) = r {
        return (buf, Err(e));
    }
    let at = to_usize(off - start).unwrap_or(usize::MAX);
    let r = match at
        .checked_add(buf.len())
        .and_then(|e| cov.as_slice().get(at..e))
    {
        Some(s) => {
            buf.as_mut_slice().copy_from_slice(s);
            Ok(())
        }
        None => Err(Error::new(ErrorKind::Io, "a covering read came back short")),
    };
    (buf, r)
}

/// Reads one block at `at`.
async fn read_block(dev: &dyn BlockDev, at: u64, block: u64) -> Result<IoBuf> {
    let (b, r) = dev.read(at, IoBuf::new(to_usize(block)?)).await;
    r.map(|()| b)
}

/// The covering blocks of `off..off+len` with `data` merged into their
/// current content (only the edge blocks are read).
async fn merged(dev: &dyn BlockDev, off: u64, data: &[u8], block: u64) -> Result<(u64, IoBuf)> {
    let (start, end) = cover(off, data.len() as u64, block)?;
    let mut cov = IoBuf::new(to_usize(end - start)?);
    for at in edges(off, data.len() as u64, block)? {
        let b = read_block(dev, at, block).await?;
        put(cov.as_mut_slice(), to_usize(at - start)?, b.as_slice())?;
    }
    put(cov.as_mut_slice(), to_usize(off - start)?, data)?;
    Ok((start, cov))
}

/// Writes `data` at byte `off` (any alignment): an aligned range as it
/// is; otherwise the edge blocks are read, merged with `data`, and the
/// covering blocks written in one write, so FUA covers all of it. The
/// caller holds the covering blocks against every other write.
pub async fn rmw_write(
    dev: &dyn BlockDev,
    off: u64,
    data: IoBuf,
    fua: bool,
    block: u64,
) -> BufResult {
    if data.is_empty() {
        // Its covering "blocks" would be the one block around `off`.
        return (data, Ok(()));
    }
    if aligned(off, data.len() as u64, block) {
        return dev.write(off, data, fua).await;
    }
    let (start, cov) = match merged(dev, off, data.as_slice(), block).await {
        Ok(m) => m,
        Err(e) => return (data, Err(e)),
    };
    let (_, r) = dev.write(start, cov, fua).await;
    (data, r)
}

/// Makes `off..off+len` (any alignment) read as zeroes: the blocks
/// wholly inside by `write_zeroes` first (so a FAST_ZERO that cannot be
/// fast fails before anything changed), then each edge block by
/// read-modify-write. The caller holds the covering blocks.
pub async fn rmw_zero(
    dev: &dyn BlockDev,
    off: u64,
    len: u64,
    flags: ZeroFlags,
    block: u64,
) -> Result<()> {
    if aligned(off, len, block) {
        return dev.write_zeroes(off, len, flags).await;
    }
    if let Some((start, end)) = interior(off, len, block)? {
        dev.write_zeroes(start, end - start, flags).await?;
    }
    let end = off.checked_add(len).ok_or_else(|| overflow(off, len))?;
    for at in edges(off, len, block)? {
        let mut b = read_block(dev, at, block).await?;
        let from = to_usize(off.max(at) - at)?;
        let to = to_usize(end.min(at + block) - at)?;
        if let Some(s) = b.as_mut_slice().get_mut(from..to) {
            s.fill(0);
        }
        let (_, r) = dev.write(at, b, flags.fua).await;
        r?;
    }
    Ok(())
}

/// Discards the blocks wholly inside `off..off+len`. A trim is advisory
/// (the range reads as its old content or zeroes), so the bytes of edge
/// blocks it covers only partly simply keep their content.
pub async fn discard_bytes(dev: &dyn BlockDev, off: u64, len: u64, block: u64) -> Result<()> {
    match interior(off, len, block)? {
        Some((start, end)) => dev.discard(start, end - start).await,
        None => Ok(()),
    }
}

/// Allocation status from byte `off` (any alignment): the status of the
/// covering blocks with the bytes before `off` cut off, at most `len`
/// bytes (empty if the device described only bytes before `off`; the
/// caller then answers "data", which is always safe).
pub async fn block_status_bytes(
    dev: &dyn BlockDev,
    off: u64,
    len: u64,
    block: u64,
) -> Result<Vec<Extent>> {
    let (start, end) = cover(off, len, block)?;
    let ext = dev.block_status(start, end - start).await?;
    Ok(clip(ext, off - start, len))
}

/// The extents of bytes `n..n+len` of a list of extents.
fn clip(ext: Vec<Extent>, mut n: u64, mut len: u64) -> Vec<Extent> {
    let mut out = Vec::with_capacity(ext.len());
    for mut e in ext {
        if len == 0 {
            break;
        }
        if n >= e.len {
            n -= e.len;
            continue;
        }
        e.len = (e.len - n).min(len);
        len -= e.len;
        n = 0;
        out.push(e);
    }
    out
}

#[cfg(test)]
mod tests;
