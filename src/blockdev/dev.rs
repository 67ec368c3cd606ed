//! The one block-device trait every node of a volume stack implements.

use std::future::Future;
use std::pin::Pin;

use crate::buf::IoBuf;
use crate::error::Result;

/// A future returned by a [`BlockDev`] operation. Stack futures run on a
/// worker thread (see [`crate::rt`]) and need not be `Send`.
pub type DevFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// The result of a data operation: the buffer always comes back.
pub type BufResult = (IoBuf, Result<()>);

/// Allocation status flags of `base:allocation` (NBD), per extent.
pub mod status {
    /// The extent is not allocated on the backing storage.
    pub const HOLE: u32 = 1;
    /// The extent reads as zeroes.
    pub const ZERO: u32 = 2;
}

/// One extent of an allocation-status answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub len: u64,
    /// [`status`] flags.
    pub flags: u32,
}

/// How a write-zeroes request may be served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ZeroFlags {
    /// The range may be deallocated (punched) rather than written.
    pub may_unmap: bool,
    /// Fail with `ErrorKind::Unsupported` at once unless zeroing is
    /// faster than writing zeroes (NBD FAST_ZERO).
    pub fast_only: bool,
    /// Durable before completion (NBD FUA).
    pub fua: bool,
}

/// A block device: a disk, a RAID group, a volume, a copy — every node of a
/// volume stack.
///
/// Contract:
/// - `off` and the buffer length are multiples of [`BlockDev::block_size`]
///   (except in [`BlockDev::write_bytes`] and [`BlockDev::zero_bytes`],
///   which only the top of a stack is asked) and lie within
///   [`BlockDev::size`]; a node returns
///   `ErrorKind::OutOfRange` / `Invalid` rather than touching anything
///   outside.
/// - `read` fills the whole buffer or fails; `write` writes all of it or
///   fails. The buffer is returned either way.
/// - A write completed with `fua` is durable when it completes; every
///   write completed before `flush` is called is durable when `flush`
///   completes.
/// - `discard` is advisory: afterwards the range reads as its old content or
///   zeroes, but stably so. `write_zeroes` makes the range read as zeroes.
/// - `block_status` describes consecutive extents starting at `off`,
///   covering at least one byte and at most `len`; flags `0` is always a
///   safe answer.
/// - Concurrent overlapping writes may land in any order, but once they
///   complete every later read returns the same bytes (mirrors agree).
pub trait BlockDev: Send + Sync + 'static {
    /// Size in bytes; may grow while the device is in use.
    fn size(&self) -> u64;

    /// Alignment of offsets and lengths this device accepts.
    fn block_size(&self) -> u32 {
        512
    }

    fn read(&self, off: u64, buf: IoBuf) -> DevFuture<'_, BufResult>;

    fn write(&self, off: u64, buf: IoBuf, fua: bool) -> DevFuture<'_, BufResult>;

    fn flush(&self) -> DevFuture<'_, Result<()>>;

    /// Advisory deallocation; the default does nothing.
    fn discard(&self, off: u64, len: u64) -> DevFuture<'_, Result<()>> {
        let r = crate::error::check_range(off, len, self.size());
        Box::pin(async move { r })
    }

    /// Makes the range read as zeroes; the default writes zero buffers.
    fn write_zeroes(&self, off: u64, len: u64, flags: ZeroFlags) -> DevFuture<'_, Result<()>> {
        Box::pin(write_zeroes_by_writing(self, off, len, flags))
    }

    /// Byte-granular write, for host I/O at the top of a stack: `off` and
    /// the buffer's length may be any bytes within the device. Nodes below
    /// the top never see it. The top of a volume stack (the
    /// [`Switch`](crate::stack::switch::Switch)) serves unaligned ranges by
    /// read-modify-write under its range lock (`stack/grain.rs`); the
    /// default passes aligned ranges to [`BlockDev::write`] and refuses
    /// others with `ErrorKind::Invalid`, since an RMW without that lock
    /// could lose a concurrent write.
    fn write_bytes(&self, off: u64, buf: IoBuf, fua: bool) -> DevFuture<'_, BufResult> {
        let (len, block) = (buf.len() as u64, u64::from(self.block_size()));
        if aligned(off, len, block) {
            return self.write(off, buf, fua);
        }
        Box::pin(async move { (buf, Err(unaligned(off, len, block))) })
    }

    /// Byte-granular write-zeroes, as [`BlockDev::write_bytes`].
    fn zero_bytes(&self, off: u64, len: u64, flags: ZeroFlags) -> DevFuture<'_, Result<()>> {
        let block = u64::from(self.block_size());
        if aligned(off, len, block) {
            return self.write_zeroes(off, len, flags);
        }
        Box::pin(async move { Err(unaligned(off, len, block)) })
    }

    /// Advisory: reserve backing storage for the range without changing
    /// what it reads as (a sparse file gets its blocks, as `fallocate`
    /// does), so later writes there cost what overwrites cost. Safe at
    /// any moment, even under concurrent writes; the default does nothing.
    fn preallocate(&self, off: u64, len: u64) -> DevFuture<'_, Result<()>> {
        let _ = (off, len);
        Box::pin(async { Ok(()) })
    }

    /// Allocation status from `off`; the default says "allocated, data".
    fn block_status(&self, off: u64, len: u64) -> DevFuture<'_, Result<Vec<Extent>>> {
        let r = crate::error::check_range(off, len, self.size());
        Box::pin(async move {
            r?;
            Ok(vec![Extent { len, flags: 0 }])
        })
    }

    /// A write to this device failed for want of space: a future that
    /// resolves `Ok` once trying again may succeed (space was freed, or is
    /// being freed, below), or `Err` when no space will come; `None` (the
    /// default) if the device never frees space by itself. The caller
    /// holds no lock or gate of the device while it waits, and bounds the
    /// wait (a volume's switch: 20 s).
    fn wait_for_room(&self) -> Option<DevFuture<'_, Result<()>>> {
        None
    }

    /// The node itself, for a parent that knows its concrete type: such a
    /// parent awaits the node's read or write in place (its own inherent
    /// `read_inline` / `write_inline`) instead of through a boxed
    /// [`DevFuture`], so a request down a stack of known nodes costs no
    /// heap allocation per node (issue 17: five boxes per 4 KiB request).
    /// The default, `()`, matches no node: callers then take the trait's
    /// boxed path, which is always correct.
    fn as_any(&self) -> &dyn std::any::Any {
        &()
    }
}

/// Largest zero buffer the default `write_zeroes` writes at once.
const ZERO_CHUNK: u64 = 1 << 20;

/// Serves write-zeroes by writing zero buffers (what a device without a
/// faster way does). Refuses `fast_only` requests.
pub async fn write_zeroes_by_writing<D: BlockDev + ?Sized>(
    dev: &D,
    off: u64,
    len: u64,
    flags: ZeroFlags,
) -> Result<()> {
    crate::error::check_range(off, len, dev.size())?;
    if flags.fast_only {
        return Err(crate::error::Error::new(
            crate::error::ErrorKind::Unsupported,
            "zeroing this range is no faster than writing zeroes",
        ));
    }
    let mut pos = off;
    let end = off + len;
    let mut zeros = IoBuf::new(usize::try_from(ZERO_CHUNK.min(len)).unwrap_or(1 << 20));
    while pos < end {
        let n = (end - pos).min(ZERO_CHUNK);
        let n_us = usize::try_from(n).unwrap_or(zeros.len());
        let (piece, rest) = zeros.split_at(n_us);
        let (piece, r) = dev.write(pos, piece, flags.fua).await;
        r?;
        zeros = match piece.unsplit(rest) {
            Ok(b) => b,
            Err((_, _)) => IoBuf::new(zeros_len(len)),
        };
        pos += n;
    }
    Ok(())
}

fn zeros_len(len: u64) -> usize {
    usize::try_from(ZERO_CHUNK.min(len)).unwrap_or(1 << 20)
}

/// Reads `len` bytes at `off` into a fresh buffer.
pub async fn read_vec<D: BlockDev + ?Sized>(dev: &D, off: u64, len: usize) -> Result<Vec<u8>> {
    let (buf, r) = dev.read(off, IoBuf::new(len)).await;
    r?;
    Ok(buf.as_slice().to_vec())
}

/// Writes `data` at `off`.
pub async fn write_slice<D: BlockDev + ?Sized>(
    dev: &D,
    off: u64,
    data: &[u8],
    fua: bool,
) -> Result<()> {
    let (_, r) = dev.write(off, IoBuf::from_slice(data), fua).await;
    r
}

/// Merges neighbouring extents with equal flags.
pub fn coalesce(extents: Vec<Extent>) -> Vec<Extent> {
    let mut out: Vec<Extent> = Vec::with_capacity(extents.len());
    for e in extents {
        if e.len == 0 {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.flags == e.flags => last.len += e.len,
            _ => out.push(e),
        }
    }
    out
}

/// A shared device is a device: stacks hold their children as `Arc`s.
impl<T: BlockDev + ?Sized> BlockDev for std::sync::Arc<T> {
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn block_size(&self) -> u32 {
        (**self).block_size()
    }
    fn read(&self, off: u64, buf: IoBuf) -> DevFuture<'_, BufResult> {
        (**self).read(off, buf)
    }
    fn write(&self, off: u64, buf: IoBuf, fua: bool) -> DevFuture<'_, BufResult> {
        (**self).write(off, buf, fua)
    }
    fn flush(&self) -> DevFuture<'_, Result<()>> {
        (**self).flush()
    }
    fn discard(&self, off: u64, len: u64) -> DevFuture<'_, Result<()>> {
        (**self).discard(off, len)
    }
    fn write_zeroes(&self, off: u64, len: u64, flags: ZeroFlags) -> DevFuture<'_, Result<()>> {
        (**self).write_zeroes(off, len, flags)
    }
    fn write_bytes(&self, off: u64, buf: IoBuf, fua: bool) -> DevFuture<'_, BufResult> {
        (**self).write_bytes(off, buf, fua)
    }
    fn zero_bytes(&self, off: u64, len: u64, flags: ZeroFlags) -> DevFuture<'_, Result<()>> {
        (**self).zero_bytes(off, len, flags)
    }
    fn preallocate(&self, off: u64, len: u64) -> DevFuture<'_, Result<()>> {
        (**self).preallocate(off, len)
    }
    fn block_status(&self, off: u64, len: u64) -> DevFuture<'_, Result<Vec<Extent>>> {
        (**self).block_status(off, len)
    }
    fn wait_for_room(&self) -> Option<DevFuture<'_, Result<()>>> {
        (**self).wait_for_room()
    }
    fn as_any(&self) -> &dyn std::any::Any {
        (**self).as_any()
    }
}

/// Whether `off` and `len` are multiples of `block`.
pub fn aligned(off: u64, len: u64, block: u64) -> bool {
    block <= 1 || (off.is_multiple_of(block) && len.is_multiple_of(block))
}

/// The error for an unaligned range on a device that serves whole blocks
/// only.
pub fn unaligned(off: u64, len: u64, block: u64) -> crate::error::Error {
    crate::error::Error::invalid(format!(
        "{len} bytes at {off} are not whole blocks of {block} bytes, and this device \
         serves byte-granular writes only behind a volume switch"
    ))
}

/// Which tracks of a volume changed since some instant (a split, a copy
/// point), on either side of the image it is kept against: what an NBD
/// export offers as `qemu:dirty-bitmap:NAME`.
pub trait ChangeMap: Send + Sync {
    /// Bytes `off..off+len` as runs of (bytes, changed), in order from
    /// `off`, at most `max` of them; they may end short of `off+len`, and
    /// are empty past the map's end.
    fn runs(&self, off: u64, len: u64, max: usize) -> Vec<(u64, bool)>;
}
