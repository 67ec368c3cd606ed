//! The top of every volume's stack: a switch that can swap the device below
//! it while the volume is in use, behind a [`Gate`] that drains requests
//! in flight first. A volume becomes an instant-copy image, or goes back to
//! a thick volume, without its NBD clients noticing more than a pause.
//!
//! The switch is also where byte-granular host writes become block
//! writes ([`super::grain`]): it holds the volume's [`Grain`], so the
//! range lock and the lock-free/locked mode survive a swap of the device
//! below.

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use super::gate::{Closed, Gate, Pass};
use super::grain::{self, Grain};
use super::lock::RangeGuard;
use super::volume::VolumeDev;
use crate::blockdev::{BlockDev, BufResult, DevFuture, Extent, ZeroFlags, probe};
use crate::buf::IoBuf;
use crate::error::{Error, ErrorKind, Result};

/// A swappable device behind a gate.
pub struct Switch {
    gate: Gate,
    inner: RwLock<Arc<dyn BlockDev>>,
    revoked: AtomicBool,
    grain: Grain,
}

impl Switch {
    pub fn new(inner: Arc<dyn BlockDev>) -> Switch {
        Switch {
            gate: Gate::new(),
            inner: RwLock::new(inner),
            revoked: AtomicBool::new(false),
            grain: Grain::new(),
        }
    }

    /// The device below now.
    pub fn current(&self) -> Arc<dyn BlockDev> {
        probe::shared_lock(1);
        Arc::clone(&self.inner.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Replaces the device below. Call with the gate closed (see
    /// [`Switch::close`]) so no request straddles the change.
    pub fn set(&self, dev: Arc<dyn BlockDev>) {
        probe::shared_lock(1);
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = dev;
    }

    /// Closes the gate: waits for requests in flight, holds new ones.
    pub async fn close(&self) -> Closed<'_> {
        self.gate.close().await
    }

    /// Enters the gate as a request does, for background work that must
    /// not run across a structural change (a copy point, a deletion).
    pub async fn enter(&self) -> Pass<'_> {
        self.gate.pass().await
    }

    /// Ranges held in the byte-granular write lock now (tests).
    pub fn grain_held(&self) -> usize {
        self.grain.held()
    }

    /// Every later request fails: the volume is gone. Requests are checked
    /// inside the gate, so once [`Switch::close`] returns after a revoke no
    /// request of the volume is in flight or can start.
    pub fn revoke(&self) {
        self.revoked.store(true, Ordering::SeqCst);
    }

    fn check(&self) -> Result<()> {
        if self.revoked.load(Ordering::Relaxed) {
            return Err(Error::new(ErrorKind::Unavailable, "the volume was deleted"));
        }
        Ok(())
    }

    /// The range a write must lock (checked inside the gate): none until
    /// byte-granular writes are on. A plain check, so that the lock-free
    /// path builds no lock future.
    fn write_range(&self, off: u64, len: u64) -> Option<(u64, u64)> {
        self.grain.locking().then(|| (off, off.saturating_add(len)))
    }

    /// Makes a write's device call under the range lock. The caller awaits
    /// it boxed, so that the lock-free path's future stays as small as it
    /// was (no lock state in it).
    async fn locked<'a, T>(
        &'a self,
        (start, end): (u64, u64),
        call: impl FnOnce() -> DevFuture<'a, T>,
    ) -> T {
        let _held = self.grain.lock(start, end).await;
        call().await
    }

    /// Turns byte-granular writes on, once per volume: from the mode change
    /// on every write entering the gate locks its range, and closing the
    /// gate waits for the writes already inside, which took no lock. Must
    /// be called outside the gate. If the caller is dropped midway the mode
    /// stays "draining" and the next byte-granular write drains again.
    async fn byte_mode(&self) {
        if self.grain.settled() {
            return;
        }
        self.grain.begin();
        let closed = self.gate.close().await;
        if self.grain.settle() {
            tracing::debug!(
                "first byte-granular write to a volume: its writes now lock their blocks"
            );
        }
        drop(closed);
    }

    /// Passes the gate for a byte-granular write and locks the covering
    /// blocks of `off..off+len`.
    async fn enter_bytes(&self, off: u64, len: u64) -> Result<ByteWrite<'_>> {
        self.byte_mode().await;
        let pass = self.gate.pass().await;
        self.check()?;
        let dev = self.current();
        let block = u64::from(dev.block_size());
        let (start, end) = grain::cover(off, len, block)?;
        let held = self.grain.lock(start, end).await;
        Ok(ByteWrite {
            dev,
            block,
            _held: held,
            _pass: pass,
        })
    }
}

impl Switch {
    /// [`BlockDev::read`] awaited in place (see [`BlockDev::as_any`]): the
    /// NBD server's requests take this, and a thick volume below is
    /// awaited in place too, so the request allocates nothing here.
    pub async fn read_inline(&self, off: u64, buf: IoBuf) -> BufResult {
        let _pass = self.gate.pass().await;
        if let Err(e) = self.check() {
            return (buf, Err(e));
        }
        let dev = self.current();
        match dev.as_any().downcast_ref::<VolumeDev>() {
            Some(v) => v.read_inline(off, buf).await,
            None => dev.read(off, buf).await,
        }
    }

    /// [`BlockDev::write`] awaited in place.
    pub async fn write_inline(&self, off: u64, buf: IoBuf, fua: bool) -> BufResult {
        let _pass = self.gate.pass().await;
        if let Err(e) = self.check() {
            return (buf, Err(e));
        }
        let dev = self.current();
        match self.write_range(off, buf.len() as u64) {
            None => match dev.as_any().downcast_ref::<VolumeDev>() {
                Some(v) => v.write_inline(off, buf, fua).await,
                None => dev.write(off, buf, fua).await,
            },
            Some(range) => Box::pin(self.locked(range, || dev.write(off, buf, fua))).await,
        }
    }
}

/// A byte-granular write inside the gate with its covering blocks locked
/// (released in field order: the lock, then the pass).
struct ByteWrite<'a> {
    dev: Arc<dyn BlockDev>,
    block: u64,
    _held: RangeGuard<'a>,
    _pass: Pass<'a>,
}

impl BlockDev for Switch {
    fn size(&self) -> u64 {
        self.current().size()
    }

    fn block_size(&self) -> u32 {
        self.current().block_size()
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

    fn write_bytes(&self, off: u64, buf: IoBuf, fua: bool) -> DevFuture<'_, BufResult> {
        Box::pin(async move {
            match self.enter_bytes(off, buf.len() as u64).await {
                Ok(w) => grain::rmw_write(&*w.dev, off, buf, fua, w.block).await,
                Err(e) => (buf, Err(e)),
            }
        })
    }

    fn zero_bytes(&self, off: u64, len: u64, flags: ZeroFlags) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            let w = self.enter_bytes(off, len).await?;
            grain::rmw_zero(&*w.dev, off, len, flags, w.block).await
        })
    }

    fn flush(&self) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            let _pass = self.gate.pass().await;
            self.check()?;
            let dev = self.current();
            dev.flush().await
        })
    }

    fn discard(&self, off: u64, len: u64) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            let _pass = self.gate.pass().await;
            self.check()?;
            let dev = self.current();
            match self.write_range(off, len) {
                None => dev.discard(off, len).await,
                Some(range) => Box::pin(self.locked(range, || dev.discard(off, len))).await,
            }
        })
    }

    fn write_zeroes(&self, off: u64, len: u64, flags: ZeroFlags) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            let _pass = self.gate.pass().await;
            self.check()?;
            let dev = self.current();
            match self.write_range(off, len) {
                None => dev.write_zeroes(off, len, flags).await,
                Some(range) => {
                    Box::pin(self.locked(range, || dev.write_zeroes(off, len, flags))).await
                }
            }
        })
    }

    fn block_status(&self, off: u64, len: u64) -> DevFuture<'_, Result<Vec<Extent>>> {
        Box::pin(async move {
            let _pass = self.gate.pass().await;
            self.check()?;
            let dev = self.current();
            dev.block_status(off, len).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemDisk;

    #[test]
    fn a_request_waiting_at_the_gate_fails_once_the_volume_is_revoked() {
        crate::rt::block_on(async {
            let disk = Arc::new(MemDisk::new(1 << 20));
            let sw = Arc::new(Switch::new(Arc::clone(&disk) as Arc<dyn BlockDev>));
            let closed = sw.close().await;
            let (tx, rx) = tokio::sync::oneshot::channel();
            let s = Arc::clone(&sw);
            tokio::task::spawn_local(async move {
                let (_, r) = s.write(0, IoBuf::from_slice(&[7u8; 4096]), false).await;
                let _ = tx.send(r);
            });
            tokio::task::yield_now().await;
            sw.revoke();
            drop(closed);
            let r = rx.await.unwrap();
            let e = r.expect_err("a revoked volume's write must fail");
            assert_eq!(e.kind(), ErrorKind::Unavailable);
            assert!(e.message().contains("deleted"), "{}", e.message());
            assert!(
                disk.snapshot()[..4096].iter().all(|&b| b == 0),
                "nothing reached the disk"
            );
            // And once closed again after the revoke, nothing is inside.
            let c = sw.close().await;
            assert_eq!(sw.gate.inside(), 0);
            drop(c);
        });
    }
}
