//! Fault injection, like dm-flakey and dm-dust: a wrapping node that makes a
//! real disk misbehave on command. Only built into a volume stack when the
//! daemon runs with `--fault-injection`.
//!
//! Rules: reads or writes overlapping given ranges fail; every I/O fails
//! with probability P; or the disk "vanishes" (every I/O fails, as when a
//! disk is pulled). Errors are `ErrorKind::Io`, as a real disk's would be.
//! A disk may also be slowed to at most N I/Os a second (`--iops`): one
//! spindle of its own, so benchmarks of reads spread over members on
//! several disks mean something on a machine with one real disk.

#![forbid(unsafe_code)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::blockdev::{BlockDev, BufResult, DevFuture, Extent, ZeroFlags};
use crate::buf::IoBuf;
use crate::error::{Error, ErrorKind, Result};

/// The rules in force on one disk.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultRules {
    /// Reads overlapping any (offset, length) range fail.
    pub read_errors: Vec<(u64, u64)>,
    /// Writes overlapping any (offset, length) range fail.
    pub write_errors: Vec<(u64, u64)>,
    /// Probability (0..=1) that any I/O fails.
    pub error_rate: f64,
    /// Every I/O fails.
    pub vanished: bool,
    /// At most this many I/Os a second (0: no cap).
    pub iops: u32,
}

impl FaultRules {
    pub fn is_clear(&self) -> bool {
        *self == FaultRules::default()
    }
}

/// A disk wrapped with fault rules.
pub struct FaultDisk<D> {
    inner: D,
    name: String,
    rules: Mutex<FaultRules>,
    active: AtomicBool,
    /// xorshift state for `error_rate`.
    rng: AtomicU64,
    /// The IOPS cap now (0: none) and the next free slot, in nanoseconds
    /// since `epoch`.
    iops: AtomicU64,
    next_slot: AtomicU64,
    epoch: std::time::Instant,
}

fn overlaps(ranges: &[(u64, u64)], off: u64, len: u64) -> bool {
    let end = off.saturating_add(len.max(1));
    ranges
        .iter()
        .any(|&(o, l)| o < end && off < o.saturating_add(l.max(1)))
}

impl<D: BlockDev> FaultDisk<D> {
    pub fn new(inner: D, name: impl Into<String>) -> FaultDisk<D> {
        FaultDisk {
            inner,
            name: name.into(),
            rules: Mutex::new(FaultRules::default()),
            active: AtomicBool::new(false),
            rng: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
            iops: AtomicU64::new(0),
            next_slot: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
        }
    }

    /// The moment an I/O started now may go, under the IOPS cap: each
    /// takes the next slot of 1/N s (none when the disk was idle).
    fn slot(&self) -> Option<std::time::Instant> {
        let iops = self.iops.load(Ordering::Relaxed);
        if iops == 0 {
            return None;
        }
        let gap = 1_000_000_000 / iops;
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let mut cur = self.next_slot.load(Ordering::Relaxed);
        loop {
            let at = cur.max(now);
            match self.next_slot.compare_exchange_weak(
                cur,
                at + gap,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return (at > now).then(|| self.epoch + std::time::Duration::from_nanos(at));
                }
                Err(seen) => cur = seen,
            }
        }
    }

    /// `fut` once the IOPS cap lets it go.
    fn paced<'a, T: 'a>(&'a self, fut: DevFuture<'a, T>) -> DevFuture<'a, T> {
        match self.slot() {
            None => fut,
            Some(at) => Box::pin(async move {
                tokio::time::sleep_until(at.into()).await;
                fut.await
            }),
        }
    }

    pub fn inner(&self) -> &D {
        &self.inner
    }

    pub fn set_rules(&self, rules: FaultRules) {
        self.iops.store(u64::from(rules.iops), Ordering::Relaxed);
        let errors = FaultRules {
            iops: 0,
            ..rules.clone()
        };
        self.active.store(!errors.is_clear(), Ordering::SeqCst);
        *self.rules.lock().unwrap_or_else(|p| p.into_inner()) = rules;
    }

    pub fn rules(&self) -> FaultRules {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn roll(&self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        (x >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// Whether an I/O of this kind on this range is to fail.
    fn check(&self, write: bool, off: u64, len: u64) -> Result<()> {
        if !self.active.load(Ordering::Relaxed) {
            return Ok(());
        }
        let r = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        let hit = r.vanished
            || overlaps(
                if write {
                    &r.write_errors
                } else {
                    &r.read_errors
                },
                off,
                len,
            )
            || self.roll(r.error_rate);
        if hit {
            let what = if write { "write" } else { "read" };
            return Err(Error::new(
                ErrorKind::Io,
                format!("injected {what} error at {off}+{len} on disk {}", self.name),
            ));
        }
        Ok(())
    }
}

impl<D: BlockDev> BlockDev for FaultDisk<D> {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn block_size(&self) -> u32 {
        self.inner.block_size()
    }

    fn read(&self, off: u64, buf: IoBuf) -> DevFuture<'_, BufResult> {
        if let Err(e) = self.check(false, off, buf.len() as u64) {
            return Box::pin(async move { (buf, Err(e)) });
        }
        self.paced(self.inner.read(off, buf))
    }

    fn write(&self, off: u64, buf: IoBuf, fua: bool) -> DevFuture<'_, BufResult> {
        if let Err(e) = self.check(true, off, buf.len() as u64) {
            return Box::pin(async move { (buf, Err(e)) });
        }
        self.paced(self.inner.write(off, buf, fua))
    }

    fn flush(&self) -> DevFuture<'_, Result<()>> {
        if self.active.load(Ordering::Relaxed) && self.rules().vanished {
            let e = Error::new(ErrorKind::Io, format!("disk {} has vanished", self.name));
            return Box::pin(async move { Err(e) });
        }
        self.inner.flush()
    }

    fn discard(&self, off: u64, len: u64) -> DevFuture<'_, Result<()>> {
        if let Err(e) = self.check(true, off, len) {
            return Box::pin(async move { Err(e) });
        }
        self.inner.discard(off, len)
    }

    fn preallocate(&self, off: u64, len: u64) -> DevFuture<'_, Result<()>> {
        if let Err(e) = self.check(true, off, len) {
            return Box::pin(async move { Err(e) });
        }
        self.inner.preallocate(off, len)
    }

    fn write_zeroes(&self, off: u64, len: u64, flags: ZeroFlags) -> DevFuture<'_, Result<()>> {
        if let Err(e) = self.check(true, off, len) {
            return Box::pin(async move { Err(e) });
        }
        self.inner.write_zeroes(off, len, flags)
    }

    fn block_status(&self, off: u64, len: u64) -> DevFuture<'_, Result<Vec<Extent>>> {
        self.inner.block_status(off, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::mem::MemDisk;
    use crate::rt::block_on;

    fn disk() -> FaultDisk<MemDisk> {
        FaultDisk::new(MemDisk::new(1 << 20), "t")
    }

    #[test]
    fn an_iops_cap_spaces_ios_and_clearing_it_lifts_it() {
        let d = disk();
        d.set_rules(FaultRules {
            iops: 200,
            ..FaultRules::default()
        });
        assert!(
            !d.active.load(Ordering::SeqCst),
            "a cap alone fails nothing"
        );
        let t0 = std::time::Instant::now();
        block_on(async {
            for i in 0..21u64 {
                let (_, r) = d.read(i * 4096, IoBuf::new(4096)).await;
                r.unwrap();
            }
        });
        // 21 I/Os at 200 a second: 20 gaps of 5 ms at least.
        assert!(
            t0.elapsed() >= std::time::Duration::from_millis(100),
            "{:?}",
            t0.elapsed()
        );
        d.set_rules(FaultRules::default());
        assert_eq!(d.slot(), None, "no cap, no wait");
        assert_eq!(d.rules().iops, 0);
    }

    #[test]
    fn a_read_error_range_fails_only_what_overlaps_it() {
        let d = disk();
        d.set_rules(FaultRules {
            read_errors: vec![(8192, 4096)],
            ..FaultRules::default()
        });
        block_on(async {
            let (_, r) = d.read(8192, IoBuf::new(512)).await;
            let e = r.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Io);
            assert!(e.to_string().contains("injected read error"), "{e}");
            let (_, r) = d.read(0, IoBuf::new(4096)).await;
            r.unwrap();
            let (_, r) = d.write(8192, IoBuf::new(4096), false).await;
            r.unwrap();
        });
    }
}
