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

/// The longest a host write waits for space a device frees by itself.
pub const ROOM_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// A swappable device behind a gate.
pub struct Switch {
    gate: Gate,
    /// Reads and writes passed down (background work paces itself by it).
    requests: std::sync::atomic::AtomicU64,
    inner: RwLock<Arc<dyn BlockDev>>,
    revoked: AtomicBool,
    grain: Grain,
}

impl Switch {
    pub fn new(inner: Arc<dyn BlockDev>) -> Switch {
        Switch {
            gate: Gate::new(),
            requests: std::sync::atomic::AtomicU64::new(0),
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

    /// Reads and writes the volume served so far: a background job that
    /// sees it move knows the host is busy and yields (a collection moves
    /// fewer tracks at once).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
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
        self.requests.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.check() {
            return (buf, Err(e));
        }
        let dev = self.current();
        match dev.as_any().downcast_ref::<VolumeDev>() {
            Some(v) => v.read_inline(off, buf).await,
            None => dev.read(off, buf).await,
        }
    }

    /// [`BlockDev::write`] awaited in place. A write that finds no space
    /// below, where the device frees space by itself (a copy family's
    /// free-space collection), waits for it outside the gate and goes
    /// again, up to [`ROOM_WAIT`]: host writes are paced, not failed.
    pub async fn write_inline(&self, off: u64, buf: IoBuf, fua: bool) -> BufResult {
        match self.write_once(off, buf, fua).await {
            (buf, Err(e)) if e.kind() == ErrorKind::NoSpace => {
                Box::pin(self.write_after_room(off, buf, fua, e)).await
            }
            done => done,
        }
    }

    /// Tries `write` again each time the device below says room may have
    /// come, until it succeeds, fails otherwise, or [`ROOM_WAIT`] passes.
    async fn write_after_room(&self, off: u64, buf: IoBuf, fua: bool, full: Error) -> BufResult {
        let until = tokio::time::Instant::now() + ROOM_WAIT;
        let (mut buf, mut full) = (buf, full);
        loop {
            let dev = self.current();
            let Some(room) = dev.wait_for_room() else {
                return (buf, Err(full));
            };
            match tokio::time::timeout_at(until, room).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!("write at {off} found no space: {}", e.chain());
                    return (buf, Err(full));
                }
                Err(_) => {
                    let msg = format!(
                        "{} (no space was freed within {} s)",
                        full.message(),
                        ROOM_WAIT.as_secs()
                    );
                    return (buf, Err(Error::new(ErrorKind::NoSpace, msg)));
                }
            }
            match self.write_once(off, buf, fua).await {
                (b, Err(e)) if e.kind() == ErrorKind::NoSpace => (buf, full) = (b, e),
                done => return done,
            }
        }
    }

    async fn write_once(&self, off: u64, buf: IoBuf, fua: bool) -> BufResult {
        let _pass = self.gate.pass().await;
        self.requests.fetch_add(1, Ordering::Relaxed);
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

    /// A memory disk whose writes fail for want of space until room is
    /// made (a copy store full while its collection runs); its
    /// `wait_for_room` waits for `made`, or says no room comes.
    struct Full {
        disk: MemDisk,
        roomy: std::sync::atomic::AtomicBool,
        frees: bool,
        waiting: std::sync::atomic::AtomicUsize,
        made: tokio::sync::Notify,
    }

    impl Full {
        fn new(frees: bool) -> Full {
            Full {
                disk: MemDisk::new(1 << 20),
                roomy: AtomicBool::new(false),
                frees,
                waiting: std::sync::atomic::AtomicUsize::new(0),
                made: tokio::sync::Notify::new(),
            }
        }
    }

    impl BlockDev for Full {
        fn size(&self) -> u64 {
            self.disk.size()
        }
        fn read(&self, off: u64, buf: IoBuf) -> DevFuture<'_, BufResult> {
            self.disk.read(off, buf)
        }
        fn write(&self, off: u64, buf: IoBuf, fua: bool) -> DevFuture<'_, BufResult> {
            if !self.roomy.load(Ordering::SeqCst) {
                let e = Error::new(ErrorKind::NoSpace, "store full");
                return Box::pin(async move { (buf, Err(e)) });
            }
            self.disk.write(off, buf, fua)
        }
        fn flush(&self) -> DevFuture<'_, Result<()>> {
            self.disk.flush()
        }
        fn wait_for_room(&self) -> Option<DevFuture<'_, Result<()>>> {
            Some(Box::pin(async move {
                if !self.frees {
                    return Err(Error::new(ErrorKind::NoSpace, "nothing frees room"));
                }
                self.waiting.fetch_add(1, Ordering::SeqCst);
                self.made.notified().await;
                Ok(())
            }))
        }
    }

    #[test]
    fn a_write_waits_for_room_outside_the_gate_and_then_lands() {
        crate::rt::block_on(async {
            let dev = Arc::new(Full::new(true));
            let sw = Arc::new(Switch::new(Arc::clone(&dev) as Arc<dyn BlockDev>));
            let (tx, rx) = tokio::sync::oneshot::channel();
            let s = Arc::clone(&sw);
            tokio::task::spawn_local(async move {
                let (_, r) = s.write(4096, IoBuf::from_slice(&[9u8; 4096]), false).await;
                let _ = tx.send(r);
            });
            while dev.waiting.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
            // The waiting write is not inside the gate: a structural change
            // (a collection ending its pair closes the gates) goes ahead.
            let closed = sw.close().await;
            assert_eq!(sw.gate.inside(), 0);
            drop(closed);
            dev.roomy.store(true, Ordering::SeqCst);
            dev.made.notify_waiters();
            rx.await
                .unwrap()
                .expect("the write lands once room is made");
            let (b, r) = dev.disk.read(4096, IoBuf::new(4096)).await;
            r.unwrap();
            assert!(
                b.as_slice().iter().all(|&x| x == 9),
                "the data is on the disk"
            );
        });
    }

    #[test]
    fn a_write_fails_at_once_when_nothing_frees_room() {
        crate::rt::block_on(async {
            let dev = Arc::new(Full::new(false));
            let sw = Switch::new(Arc::clone(&dev) as Arc<dyn BlockDev>);
            let (_, r) = sw.write(0, IoBuf::from_slice(&[9u8; 4096]), false).await;
            let e = r.expect_err("no room comes");
            assert_eq!(e.kind(), ErrorKind::NoSpace);
            assert_eq!(e.message(), "store full", "the device's own error");
            // And a plain disk frees nothing: its error is returned as is.
            let plain = Switch::new(Arc::new(MemDisk::new(4096)) as Arc<dyn BlockDev>);
            let (_, r) = plain
                .write(4096, IoBuf::from_slice(&[1u8; 4096]), false)
                .await;
            assert_ne!(r.expect_err("beyond the end").kind(), ErrorKind::NoSpace);
        });
    }
}
