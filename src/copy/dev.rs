//! One image of a copy family as a block device: the volume's switch
//! serves it; reads resolve through the copy tree, writes go to the
//! image's leaf (A2) or the base (A1, the origin).

#![forbid(unsafe_code)]

use std::sync::Arc;

use super::image::Family;
use crate::blockdev::{BlockDev, BufResult, DevFuture, Extent, ZeroFlags};
use crate::buf::IoBuf;
use crate::error::{Error, ErrorKind, Result, check_range};
use crate::meta::model::copy::Head;
use crate::stack::lock::RangeLock;

/// One image of a family as a block device.
pub struct ImageDev {
    family: Arc<Family>,
    name: String,
    size: u64,
    read_only: bool,
    /// Track locks of this image's writes.
    locks: RangeLock,
}

impl ImageDev {
    pub fn new(family: Arc<Family>, name: &str, size: u64, read_only: bool) -> ImageDev {
        ImageDev {
            family,
            name: name.to_string(),
            size,
            read_only,
            locks: RangeLock::new(),
        }
    }

    pub fn family(&self) -> &Arc<Family> {
        &self.family
    }

    fn head(&self) -> Result<Head> {
        Ok(self.family.read_state().image(&self.name)?.head)
    }

    fn writable(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::new(
                ErrorKind::ReadOnly,
                format!("{} is a read-only copy", self.name),
            ));
        }
        Ok(())
    }

    async fn do_write(&self, off: u64, buf: IoBuf, fua: bool) -> BufResult {
        if let Err(e) = self
            .writable()
            .and_then(|()| check_range(off, buf.len() as u64, self.size))
        {
            return (buf, Err(e));
        }
        match self.head() {
            Ok(Head::Base) => self.family.write_origin(off, buf, fua).await,
            Ok(Head::Leaf(_)) => {
                self.family
                    .write_leaf(&self.locks, &self.name, off, buf, fua)
                    .await
            }
            Err(e) => (buf, Err(e)),
        }
    }

    async fn zeroes(&self, off: u64, len: u64, flags: ZeroFlags) -> Result<()> {
        self.writable()?;
        check_range(off, len, self.size)?;
        // One statement each: the first guard is gone before `head` reads
        // the state again (a second read lock on one thread can deadlock
        // behind a waiting writer).
        let t_sz = self.family.read_state().track;
        let head = self.head()?;
        if head == Head::Base {
            let (t0, t1) = (off / t_sz, (off + len).div_ceil(t_sz));
            let _base = self.family.base_locks.lock(t0, t1).await;
            self.family.before_base_write(off, len).await?;
            return self.family.base.write_zeroes(off, len, flags).await;
        }
        // Whole tracks become zero entries; the edges are written.
        let first = off.div_ceil(t_sz);
        let last = (off + len) / t_sz;
        if first >= last {
            return crate::blockdev::write_zeroes_by_writing(self, off, len, flags).await;
        }
        if off < first * t_sz {
            crate::blockdev::write_zeroes_by_writing(
                self,
                off,
                first * t_sz - off,
                ZeroFlags {
                    fast_only: false,
                    ..flags
                },
            )
            .await?;
        }
        self.family
            .zero_leaf_tracks(&self.locks, &self.name, first, last)
            .await?;
        if last * t_sz < off + len {
            crate::blockdev::write_zeroes_by_writing(
                self,
                last * t_sz,
                off + len - last * t_sz,
                ZeroFlags {
                    fast_only: false,
                    ..flags
                },
            )
            .await?;
        }
        if flags.fua {
            self.family.commit().await?;
        }
        Ok(())
    }
}

impl BlockDev for ImageDev {
    fn size(&self) -> u64 {
        self.size
    }

    fn block_size(&self) -> u32 {
        self.family
            .base
            .block_size()
            .max(self.family.group.block_size())
    }

    fn read(&self, off: u64, buf: IoBuf) -> DevFuture<'_, BufResult> {
        Box::pin(async move {
            if let Err(e) = check_range(off, buf.len() as u64, self.size) {
                return (buf, Err(e));
            }
            match self.head() {
                Ok(h) => self.family.read(h, off, buf).await,
                Err(e) => (buf, Err(e)),
            }
        })
    }

    fn write(&self, off: u64, buf: IoBuf, fua: bool) -> DevFuture<'_, BufResult> {
        Box::pin(self.do_write(off, buf, fua))
    }

    fn flush(&self) -> DevFuture<'_, Result<()>> {
        Box::pin(async move { self.family.commit().await })
    }

    fn wait_for_room(&self) -> Option<DevFuture<'_, Result<()>>> {
        Some(Box::pin(self.family.room()))
    }

    fn discard(&self, off: u64, len: u64) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            self.writable()?;
            check_range(off, len, self.size)?;
            // Advisory: whole tracks of a leaf give their space back.
            let t_sz = self.family.read_state().track;
            let (first, last) = (off.div_ceil(t_sz), (off + len) / t_sz);
            if first < last && matches!(self.head()?, Head::Leaf(_)) {
                self.family
                    .zero_leaf_tracks(&self.locks, &self.name, first, last)
                    .await?;
            }
            Ok(())
        })
    }

    fn write_zeroes(&self, off: u64, len: u64, flags: ZeroFlags) -> DevFuture<'_, Result<()>> {
        Box::pin(self.zeroes(off, len, flags))
    }

    fn block_status(&self, off: u64, len: u64) -> DevFuture<'_, Result<Vec<Extent>>> {
        let r = check_range(off, len, self.size);
        Box::pin(async move {
            r?;
            Ok(vec![Extent { len, flags: 0 }])
        })
    }
}
