//! Serving one checked request on the [`BlockDev`]: the mapping of NBD
//! commands to device calls, and of their results to replies.
//!
//! | command       | device call                                              |
//! |---------------|----------------------------------------------------------|
//! | READ          | `read(off, buf)` into a pooled buffer                     |
//! | WRITE (+FUA)  | `write(off, payload, fua)`                                |
//! | FLUSH         | `flush()` (whole device: covers every connection)         |
//! | TRIM (+FUA)   | `discard(off, len)`, then `flush()` if FUA                |
//! | WRITE_ZEROES  | `write_zeroes(off, len, {may_unmap: !NO_HOLE, fast_only: FAST_ZERO, fua})` |
//! | BLOCK_STATUS  | `block_status(off, len)` -> `base:allocation` descriptors |
//! | CACHE         | nothing (answered by the connection at once)              |
//!
//! Offsets and lengths may be any bytes (the advertised minimum block is
//! 1). A request aligned to the device's block size takes the calls above;
//! any other goes through [`crate::stack::grain`]: a READ reads the
//! covering blocks, WRITE and WRITE_ZEROES call the device's byte-granular
//! `write_bytes` / `zero_bytes` (read-modify-write of the edge blocks
//! under the volume's range lock), TRIM discards the blocks wholly inside
//! (trim is advisory), BLOCK_STATUS asks about the covering blocks.

use super::MetaContext;
use super::codec::{Valid, fua};
use super::proto::{self, Cmd, cflag, errno, wire_errno};
use super::reply::Reply;
use crate::blockdev::{BlockDev, ChangeMap, Extent, ZeroFlags, status};
use crate::buf::IoBuf;
use crate::buf::pool;
use crate::error::{Error, ErrorKind};
use crate::stack::grain::{self, aligned};
use crate::stack::switch::Switch;

/// Descriptors per block-status reply (the spec's ceiling is 2^20).
pub const MAX_DESCRIPTORS: usize = 1 << 16;
/// Longest descriptor: `u32` rounded down to the largest minimum block.
const MAX_DESC_LEN: u64 = 0xFFFF_0000;

/// What a request's reply depends on besides the request.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub structured: bool,
    /// The metadata contexts the client selected.
    pub contexts: &'a [MetaContext],
    /// The device's block size when the connection opened: requests
    /// aligned to it go straight to the device.
    pub block: u32,
}

/// Serves `v` (with its WRITE payload) and builds the reply, which
/// carries the buffer bytes the request held (its READ/WRITE length).
pub async fn execute(dev: &dyn BlockDev, v: Valid, payload: Option<IoBuf>, ctx: Ctx<'_>) -> Reply {
    // Jobs with a rate floor slow down while hosts do I/O.
    crate::rt::host_io();
    let cost = match v.cmd {
        Cmd::Read | Cmd::Write => usize::try_from(v.length).unwrap_or(usize::MAX),
        _ => 0,
    };
    run(dev, v, payload, ctx).await.with_cost(cost)
}

async fn run(dev: &dyn BlockDev, v: Valid, payload: Option<IoBuf>, ctx: Ctx<'_>) -> Reply {
    let r = match v.cmd {
        Cmd::Read => return read(dev, v, ctx).await,
        Cmd::Write => write(dev, v, payload, ctx).await,
        Cmd::Flush => dev.flush().await,
        Cmd::Trim => trim(dev, v, ctx).await,
        Cmd::WriteZeroes => write_zeroes(dev, v, ctx).await,
        Cmd::BlockStatus => return block_status(dev, v, ctx).await,
        Cmd::Cache => Ok(()),
        Cmd::Disc | Cmd::Unknown(_) => Err(Error::invalid("not a data command")),
    };
    match r {
        Ok(()) => Reply::ok(v.cookie),
        Err(e) => fail(&v, &e, ctx),
    }
}

/// The reply for a failed request: errno from the one mapping, the
/// error's message for a human.
pub fn fail(v: &Valid, e: &Error, ctx: Ctx<'_>) -> Reply {
    let fast_zero = v.cmd == Cmd::WriteZeroes && v.flags & cflag::FAST_ZERO != 0;
    let errno = wire_errno(e.kind(), fast_zero);
    let what = if errno == errno::ENOTSUP {
        "refused"
    } else {
        "failed"
    };
    tracing::debug!(
        "nbd {} of {} bytes at {} (flags {:#x}) {what} with errno {errno}: {}",
        v.cmd.name(),
        v.length,
        v.offset,
        v.flags,
        e.chain()
    );
    Reply::error(v.cookie, errno, e.message(), ctx.structured)
}

async fn read(dev: &dyn BlockDev, v: Valid, ctx: Ctx<'_>) -> Reply {
    // The length was checked against the maximum payload.
    let len = usize::try_from(v.length).unwrap_or(0);
    let (buf, r) = if aligned(v.offset, v.length.into(), ctx.block.into()) {
        match dev.as_any().downcast_ref::<Switch>() {
            // A volume: awaited in place, no boxed future per request.
            Some(s) => s.read_inline(v.offset, pool::take(len)).await,
            None => dev.read(v.offset, pool::take(len)).await,
        }
    } else {
        let block = u64::from(dev.block_size());
        // The unaligned paths are boxed: every request's future is as
        // large as its largest path, and the aligned ones stay small.
        Box::pin(grain::read_bytes(dev, v.offset, pool::take(len), block)).await
    };
    match r {
        Ok(()) if buf.len() == len => Reply::read_data(v.cookie, v.offset, buf, ctx.structured),
        Ok(()) => {
            let msg = "the device returned a buffer of the wrong length";
            fail(&v, &Error::new(ErrorKind::Io, msg), ctx)
        }
        Err(e) => {
            pool::give(buf);
            fail(&v, &e, ctx)
        }
    }
}

async fn write(
    dev: &dyn BlockDev,
    v: Valid,
    payload: Option<IoBuf>,
    ctx: Ctx<'_>,
) -> crate::Result<()> {
    let Some(buf) = payload else {
        return Err(Error::new(ErrorKind::Io, "write payload missing"));
    };
    let (buf, r) = if aligned(v.offset, v.length.into(), ctx.block.into()) {
        match dev.as_any().downcast_ref::<Switch>() {
            Some(s) => s.write_inline(v.offset, buf, fua(&v)).await,
            None => dev.write(v.offset, buf, fua(&v)).await,
        }
    } else {
        dev.write_bytes(v.offset, buf, fua(&v)).await
    };
    pool::give(buf);
    r
}

async fn write_zeroes(dev: &dyn BlockDev, v: Valid, ctx: Ctx<'_>) -> crate::Result<()> {
    let (off, len, flags) = (v.offset, u64::from(v.length), zero_flags(&v));
    if aligned(off, len, ctx.block.into()) {
        dev.write_zeroes(off, len, flags).await
    } else {
        dev.zero_bytes(off, len, flags).await
    }
}

async fn trim(dev: &dyn BlockDev, v: Valid, ctx: Ctx<'_>) -> crate::Result<()> {
    let (off, len) = (v.offset, u64::from(v.length));
    let r = if aligned(off, len, ctx.block.into()) {
        dev.discard(off, len).await
    } else {
        // Trim is advisory: only the blocks wholly inside are discarded.
        Box::pin(grain::discard_bytes(dev, off, len, dev.block_size().into())).await
    };
    match r {
        // Trim is advisory: a device that cannot is not an error.
        Err(e) if e.kind() == ErrorKind::Unsupported => return Ok(()),
        r => r?,
    }
    if fua(&v) {
        dev.flush().await?;
    }
    Ok(())
}

fn zero_flags(v: &Valid) -> ZeroFlags {
    ZeroFlags {
        may_unmap: v.flags & cflag::NO_HOLE == 0,
        fast_only: v.flags & cflag::FAST_ZERO != 0,
        fua: fua(v),
    }
}

async fn block_status(dev: &dyn BlockDev, v: Valid, ctx: Ctx<'_>) -> Reply {
    if ctx.contexts.is_empty() {
        let e = Error::invalid("no metadata context was selected");
        return fail(&v, &e, ctx);
    }
    let req_one = v.flags & cflag::REQ_ONE != 0;
    let mut chunks = Vec::with_capacity(ctx.contexts.len());
    for c in ctx.contexts {
        let desc = match &c.map {
            None => match allocation(dev, &v, ctx).await {
                Ok(ext) => descriptors(&ext, v.length, req_one),
                Err(e) => return fail(&v, &e, ctx),
            },
            Some(map) => dirty_descriptors(&**map, &v, req_one),
        };
        chunks.push((c.id, desc));
    }
    Reply::block_status(v.cookie, chunks)
}

/// The device's allocation status of the request's range.
async fn allocation(dev: &dyn BlockDev, v: &Valid, ctx: Ctx<'_>) -> crate::Result<Vec<Extent>> {
    let (off, len) = (v.offset, u64::from(v.length));
    if aligned(off, len, ctx.block.into()) {
        dev.block_status(off, len).await
    } else {
        Box::pin(grain::block_status_bytes(
            dev,
            off,
            len,
            dev.block_size().into(),
        ))
        .await
    }
}

/// A `qemu:dirty-bitmap:` context's descriptors: dirty runs flagged
/// [`proto::STATE_DIRTY`], at least one descriptor (a range past the map
/// reads as clean).
fn dirty_descriptors(map: &dyn ChangeMap, v: &Valid, req_one: bool) -> Vec<u8> {
    let max = if req_one { 1 } else { MAX_DESCRIPTORS };
    let ext: Vec<Extent> = map
        .runs(v.offset, u64::from(v.length), max)
        .into_iter()
        .map(|(len, dirty)| Extent {
            len,
            flags: if dirty { proto::STATE_DIRTY } else { 0 },
        })
        .collect();
    if ext.is_empty() {
        return encode_descriptors(&[(u64::from(v.length).min(MAX_DESC_LEN), 0)]);
    }
    descriptors_with(&ext, v.length, req_one, proto::STATE_DIRTY)
}

/// Translates device extents into `base:allocation` descriptors for a
/// request of `len` (> 0) bytes: at least one descriptor, each non-empty
/// and at most [`MAX_DESC_LEN`], equal neighbours merged, their sum at
/// most `len`, no more than [`MAX_DESCRIPTORS`] (one with `req_one`),
/// flags limited to HOLE and ZERO.
pub fn descriptors(extents: &[Extent], len: u32, req_one: bool) -> Vec<u8> {
    descriptors_with(extents, len, req_one, status::HOLE | status::ZERO)
}

/// [`descriptors`] keeping the flags in `keep`.
fn descriptors_with(extents: &[Extent], len: u32, req_one: bool, keep: u32) -> Vec<u8> {
    let max = if req_one { 1 } else { MAX_DESCRIPTORS };
    let mut out: Vec<(u64, u32)> = Vec::new();
    let mut left = u64::from(len);
    for e in extents {
        let flags = e.flags & keep;
        let mut n = e.len.min(left);
        left -= n;
        // Merge with an equal neighbour, then cut into u32-sized pieces.
        if let Some(last) = out.last_mut()
            && last.1 == flags
            && last.0 < MAX_DESC_LEN
        {
            let add = n.min(MAX_DESC_LEN - last.0);
            last.0 += add;
            n -= add;
        }
        while n > 0 && out.len() < max {
            let piece = n.min(MAX_DESC_LEN);
            out.push((piece, flags));
            n -= piece;
        }
        if left == 0 || (out.len() >= max && n > 0) {
            break;
        }
    }
    if out.is_empty() {
        // "Allocated, data" is always a safe answer.
        out.push((u64::from(len).min(MAX_DESC_LEN), 0));
    }
    out.truncate(max);
    encode_descriptors(&out)
}

/// (length, flags) pairs on the wire.
fn encode_descriptors(d: &[(u64, u32)]) -> Vec<u8> {
    let mut v = Vec::with_capacity(d.len() * 8);
    for &(l, f) in d {
        v.extend_from_slice(&u32::try_from(l).unwrap_or(u32::MAX).to_be_bytes());
        v.extend_from_slice(&f.to_be_bytes());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(v: &[u8]) -> Vec<(u32, u32)> {
        v.chunks(8)
            .map(|c| {
                (
                    u32::from_be_bytes(c[0..4].try_into().unwrap()),
                    u32::from_be_bytes(c[4..8].try_into().unwrap()),
                )
            })
            .collect()
    }

    fn ext(len: u64, flags: u32) -> Extent {
        Extent { len, flags }
    }

    #[test]
    fn descriptors_merge_clip_and_limit() {
        let e = [ext(4096, 3), ext(4096, 3), ext(8192, 0), ext(1 << 40, 3)];
        assert_eq!(
            decode(&descriptors(&e, 65536, false)),
            [(8192, 3), (8192, 0), (49152, 3)]
        );
        assert_eq!(decode(&descriptors(&e, 65536, true)), [(8192, 3)]);
        assert_eq!(decode(&descriptors(&e, 4096, true)), [(4096, 3)]);
        // Unknown flag bits are dropped; empty answers become "data".
        assert_eq!(
            decode(&descriptors(&[ext(512, 0xff)], 512, false)),
            [(512, 3)]
        );
        assert_eq!(decode(&descriptors(&[], 1024, false)), [(1024, 0)]);
        assert_eq!(decode(&descriptors(&[ext(0, 1)], 1024, false)), [(1024, 0)]);
        // Huge extents split into u32 pieces.
        let d = decode(&descriptors(&[ext(u64::MAX, 0)], u32::MAX, false));
        assert_eq!(
            d.iter().map(|x| u64::from(x.0)).sum::<u64>(),
            u64::from(u32::MAX)
        );
    }

    #[test]
    fn descriptors_never_exceed_the_cap() {
        let e: Vec<Extent> = (0..200_000).map(|i| ext(512, i % 2)).collect();
        let d = descriptors(&e, u32::MAX, false);
        assert_eq!(d.len(), MAX_DESCRIPTORS * 8);
    }
}
