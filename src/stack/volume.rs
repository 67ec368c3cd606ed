//! A volume: a list of extents of a RAID group's address space, served as
//! one device (an LVM-style linear mapping). Growing a volume appends an
//! extent; no data moves (seed 004's background on concatenated meta
//! devices).

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use futures::future::join_all;

use super::raid::RaidDev;
use crate::blockdev::{BlockDev, BufResult, DevFuture, Extent, ZeroFlags, coalesce, probe};
use crate::buf::IoBuf;
use crate::error::{Error, ErrorKind, Result, check_range};

/// One extent: `len` bytes of the volume at `vol_off` live at `group_off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VExtent {
    pub vol_off: u64,
    pub group_off: u64,
    pub len: u64,
}

/// Builds the extent list from (group offset, length) pairs in volume
/// order.
pub fn extents_from(pairs: &[(u64, u64)]) -> Vec<VExtent> {
    let mut vol_off = 0;
    pairs
        .iter()
        .map(|&(group_off, len)| {
            let e = VExtent {
                vol_off,
                group_off,
                len,
            };
            vol_off += len;
            e
        })
        .collect()
}

/// The group device and where the volume lives in it.
struct Mapping {
    group: Arc<dyn BlockDev>,
    extents: Vec<VExtent>,
}

impl Mapping {
    /// The group offset of `off..off+len` if one extent holds all of it.
    fn within_one(&self, off: u64, len: u64) -> Option<u64> {
        let e = self
            .extents
            .iter()
            .find(|e| e.vol_off <= off && off < e.vol_off + e.len)?;
        (off + len <= e.vol_off + e.len).then(|| e.group_off + (off - e.vol_off))
    }
}

/// A volume over a group device.
pub struct VolumeDev {
    map: RwLock<Arc<Mapping>>,
    size: AtomicU64,
    read_only: AtomicBool,
    /// Set when the volume is deleted under open connections.
    revoked: AtomicBool,
}

/// A piece of a volume request: where it goes and how long it is.
struct Piece {
    group_off: u64,
    len: u64,
}

impl VolumeDev {
    pub fn new(
        group: Arc<dyn BlockDev>,
        extents: Vec<VExtent>,
        size: u64,
        read_only: bool,
    ) -> VolumeDev {
        VolumeDev {
            map: RwLock::new(Arc::new(Mapping { group, extents })),
            size: AtomicU64::new(size),
            read_only: AtomicBool::new(read_only),
            revoked: AtomicBool::new(false),
        }
    }

    fn mapping(&self) -> Arc<Mapping> {
        probe::shared_lock(1);
        Arc::clone(&self.map.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Replaces the extents (grow); `size` must be covered by `extents`.
    pub fn remap(&self, extents: Vec<VExtent>, size: u64) {
        probe::shared_lock(1);
        let mut m = self.map.write().unwrap_or_else(|p| p.into_inner());
        *m = Arc::new(Mapping {
            group: Arc::clone(&m.group),
            extents,
        });
        self.size.store(size, Ordering::SeqCst);
    }

    /// Replaces the group device (a concat group that grew).
    pub fn set_group(&self, group: Arc<dyn BlockDev>) {
        probe::shared_lock(1);
        let mut m = self.map.write().unwrap_or_else(|p| p.into_inner());
        *m = Arc::new(Mapping {
            group,
            extents: m.extents.clone(),
        });
    }

    /// Makes every later I/O fail: the volume was deleted while clients
    /// still had it open.
    pub fn revoke(&self) {
        self.revoked.store(true, Ordering::SeqCst);
    }

    pub fn set_read_only(&self, ro: bool) {
        self.read_only.store(ro, Ordering::SeqCst);
    }

    pub fn group(&self) -> Arc<dyn BlockDev> {
        Arc::clone(&self.mapping().group)
    }

    /// Checks that the volume serves `off..off+len`.
    fn admit(&self, off: u64, len: u64) -> Result<()> {
        if self.revoked.load(Ordering::Relaxed) {
            return Err(Error::new(ErrorKind::Unavailable, "the volume was deleted"));
        }
        check_range(off, len, self.size())
    }

    /// Splits a request into pieces of the group, with the group to send
    /// them to.
    fn pieces(&self, off: u64, len: u64) -> Result<(Arc<dyn BlockDev>, Vec<Piece>)> {
        self.admit(off, len)?;
        let m = self.mapping();
        let map = &m.extents;
        let mut out = Vec::with_capacity(1);
        let mut pos = off;
        let end = off + len;
        for e in map.iter() {
            if pos >= end {
                break;
            }
            let e_end = e.vol_off + e.len;
            if pos >= e_end || e.vol_off >= end {
                continue;
            }
            let n = e_end.min(end) - pos;
            out.push(Piece {
                group_off: e.group_off + (pos - e.vol_off),
                len: n,
            });
            pos += n;
        }
        if pos < end {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("volume map does not cover offset {pos}"),
            ));
        }
        Ok((Arc::clone(&m.group), out))
    }

    fn check_writable(&self) -> Result<()> {
        if self.read_only.load(Ordering::Relaxed) {
            return Err(Error::new(ErrorKind::ReadOnly, "the volume is read-only"));
        }
        Ok(())
    }

    /// [`BlockDev::read`] awaited in place (see [`BlockDev::as_any`]).
    pub async fn read_inline(&self, off: u64, buf: IoBuf) -> BufResult {
        self.rw(off, buf, None).await
    }

    /// [`BlockDev::write`] awaited in place.
    pub async fn write_inline(&self, off: u64, buf: IoBuf, fua: bool) -> BufResult {
        self.rw(off, buf, Some(fua)).await
    }

    async fn rw(&self, off: u64, buf: IoBuf, write: Option<bool>) -> BufResult {
        if write.is_some()
            && let Err(e) = self.check_writable()
        {
            return (buf, Err(e));
        }
        let len = buf.len() as u64;
        if let Err(e) = self.admit(off, len) {
            return (buf, Err(e));
        }
        // Within one extent (nearly every request): straight to the group,
        // awaited in place when it is a RAID group.
        let m = self.mapping();
        if let Some(at) = m.within_one(off, len) {
            return match (write, m.group.as_any().downcast_ref::<RaidDev>()) {
                (None, Some(raid)) => raid.read_inline(at, buf).await,
                (Some(fua), Some(raid)) => raid.write_inline(at, buf, fua).await,
                (None, None) => m.group.read(at, buf).await,
                (Some(fua), None) => m.group.write(at, buf, fua).await,
            };
        }
        drop(m);
        let (group, pieces) = match self.pieces(off, buf.len() as u64) {
            Ok(p) => p,
            Err(e) => return (buf, Err(e)),
        };
        if let [p] = pieces.as_slice() {
            return match write {
                None => group.read(p.group_off, buf).await,
                Some(fua) => group.write(p.group_off, buf, fua).await,
            };
        }
        let lens: Vec<usize> = pieces
            .iter()
            .map(|p| usize::try_from(p.len).unwrap_or(0))
            .collect();
        let bufs = buf.split_many(&lens);
        let futs = pieces.iter().zip(bufs).map(|(p, b)| match write {
            None => group.read(p.group_off, b),
            Some(fua) => group.write(p.group_off, b, fua),
        });
        let results = join_all(futs).await;
        let mut first_err = None;
        let mut back = Vec::with_capacity(results.len());
        for (b, r) in results {
            if let (Err(e), None) = (r, &first_err) {
                first_err = Some(e);
            }
            back.push(b);
        }
        (IoBuf::join(back), first_err.map_or(Ok(()), Err))
    }
}

impl BlockDev for VolumeDev {
    fn size(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    fn block_size(&self) -> u32 {
        self.mapping().group.block_size()
    }

    fn read(&self, off: u64, buf: IoBuf) -> DevFuture<'_, BufResult> {
        Box::pin(self.rw(off, buf, None))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn write(&self, off: u64, buf: IoBuf, fua: bool) -> DevFuture<'_, BufResult> {
        Box::pin(self.rw(off, buf, Some(fua)))
    }

    fn flush(&self) -> DevFuture<'_, Result<()>> {
        let group = self.group();
        Box::pin(async move { group.flush().await })
    }

    fn discard(&self, off: u64, len: u64) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            self.check_writable()?;
            let (group, pieces) = self.pieces(off, len)?;
            for p in pieces {
                group.discard(p.group_off, p.len).await?;
            }
            Ok(())
        })
    }

    fn preallocate(&self, off: u64, len: u64) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            let (group, pieces) = self.pieces(off, len)?;
            for p in pieces {
                group.preallocate(p.group_off, p.len).await?;
            }
            Ok(())
        })
    }

    fn write_zeroes(&self, off: u64, len: u64, flags: ZeroFlags) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            self.check_writable()?;
            let (group, pieces) = self.pieces(off, len)?;
            for p in pieces {
                group.write_zeroes(p.group_off, p.len, flags).await?;
            }
            Ok(())
        })
    }

    fn block_status(&self, off: u64, len: u64) -> DevFuture<'_, Result<Vec<Extent>>> {
        Box::pin(async move {
            let mut out = Vec::new();
            let (group, pieces) = self.pieces(off, len)?;
            for p in pieces {
                let mut got = 0;
                // A device may answer short: ask again until the piece is covered.
                while got < p.len {
                    let ext = group.block_status(p.group_off + got, p.len - got).await?;
                    let n: u64 = ext.iter().map(|e| e.len).sum();
                    if n == 0 {
                        out.push(Extent {
                            len: p.len - got,
                            flags: 0,
                        });
                        break;
                    }
                    for e in ext {
                        let take = e.len.min(p.len - got);
                        out.push(Extent {
                            len: take,
                            flags: e.flags,
                        });
                        got += take;
                        if got >= p.len {
                            break;
                        }
                    }
                }
            }
            Ok(coalesce(out))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blockdev::{read_vec, write_slice};
    use crate::disk::MemDisk;

    #[test]
    fn extents_map_in_order_and_grow() {
        let group = Arc::new(MemDisk::new(1 << 20));
        // Volume of 192 KiB: 64 KiB at group 512 KiB, then 128 KiB at 0.
        let v = VolumeDev::new(
            group.clone(),
            extents_from(&[(512 << 10, 64 << 10), (0, 128 << 10)]),
            192 << 10,
            false,
        );
        crate::rt::block_on(async {
            let data: Vec<u8> = (0..(128u32 << 10)).map(|i| (i % 253) as u8).collect();
            write_slice(&v, 0, &data, false).await.unwrap();
            assert_eq!(read_vec(&v, 0, data.len()).await.unwrap(), data);
            // The first 64 KiB went to group 512 KiB, the rest to group 0.
            let g = group.snapshot();
            assert_eq!(&g[512 << 10..576 << 10], &data[..64 << 10]);
            assert_eq!(&g[..64 << 10], &data[64 << 10..]);
            let (_, r) = v.read(192 << 10, IoBuf::new(512)).await;
            assert_eq!(r.unwrap_err().kind(), ErrorKind::OutOfRange);
            v.remap(
                extents_from(&[(512 << 10, 64 << 10), (0, 128 << 10), (256 << 10, 64 << 10)]),
                256 << 10,
            );
            write_slice(&v, 192 << 10, &[7; 4096], false).await.unwrap();
            assert_eq!(
                &group.snapshot()[256 << 10..(256 << 10) + 4096],
                &[7; 4096][..]
            );
            v.set_read_only(true);
            let (_, r) = v.write(0, IoBuf::new(512), false).await;
            assert_eq!(r.unwrap_err().kind(), ErrorKind::ReadOnly);
        });
    }
}
