//! The top of every volume's stack: a switch that can swap the device below
//! it while the volume is in use, behind a [`Gate`] that drains requests
//! in flight first. A volume becomes an instant-copy image, or goes back to
//! a thick volume, without its NBD clients noticing more than a pause.

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use super::gate::{Closed, Gate};
use crate::buf::IoBuf;
use crate::error::{Error, ErrorKind, Result};
use crate::stack::{BlockDev, BufResult, DevFuture, Extent, ZeroFlags};

/// A swappable device behind a gate.
pub struct Switch {
    gate: Gate,
    inner: RwLock<Arc<dyn BlockDev>>,
    revoked: AtomicBool,
}

impl Switch {
    pub fn new(inner: Arc<dyn BlockDev>) -> Switch {
        Switch {
            gate: Gate::new(),
            inner: RwLock::new(inner),
            revoked: AtomicBool::new(false),
        }
    }

    /// The device below now.
    pub fn current(&self) -> Arc<dyn BlockDev> {
        Arc::clone(&self.inner.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Replaces the device below. Call with the gate closed (see
    /// [`Switch::close`]) so no request straddles the change.
    pub fn set(&self, dev: Arc<dyn BlockDev>) {
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = dev;
    }

    /// Closes the gate: waits for requests in flight, holds new ones.
    pub async fn close(&self) -> Closed<'_> {
        self.gate.close().await
    }

    /// Enters the gate as a request does, for background work that must
    /// not run across a structural change (a copy point, a deletion).
    pub async fn enter(&self) -> super::gate::Pass<'_> {
        self.gate.pass().await
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
}

impl BlockDev for Switch {
    fn size(&self) -> u64 {
        self.current().size()
    }

    fn block_size(&self) -> u32 {
        self.current().block_size()
    }

    fn read(&self, off: u64, buf: IoBuf) -> DevFuture<'_, BufResult> {
        Box::pin(async move {
            let _pass = self.gate.pass().await;
            if let Err(e) = self.check() {
                return (buf, Err(e));
            }
            let dev = self.current();
            dev.read(off, buf).await
        })
    }

    fn write(&self, off: u64, buf: IoBuf, fua: bool) -> DevFuture<'_, BufResult> {
        Box::pin(async move {
            let _pass = self.gate.pass().await;
            if let Err(e) = self.check() {
                return (buf, Err(e));
            }
            let dev = self.current();
            dev.write(off, buf, fua).await
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
            dev.discard(off, len).await
        })
    }

    fn write_zeroes(&self, off: u64, len: u64, flags: ZeroFlags) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            let _pass = self.gate.pass().await;
            self.check()?;
            let dev = self.current();
            dev.write_zeroes(off, len, flags).await
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
