//! Byte-granular I/O: the block math, read-modify-write at every offset
//! class against a reference image on a device that refuses anything but
//! whole blocks, and the Switch's locking (an RMW and an aligned write of
//! one block land whole, in one order).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures::FutureExt;

use super::*;
use crate::blockdev::{DevFuture, read_vec, write_slice};
use crate::disk::MemDisk;
use crate::stack::switch::Switch;

const SIZE: u64 = 4 << 20;

/// A memory disk that refuses unaligned I/O (the contract below the top
/// of a stack) and can hold reads or writes at a semaphore.
struct Strict {
    mem: MemDisk,
    block: u32,
    hold_reads: AtomicBool,
    hold_writes: AtomicBool,
    gate: tokio::sync::Semaphore,
    held: AtomicUsize,
}

impl Strict {
    fn new(block: u32) -> Arc<Strict> {
        Arc::new(Strict {
            mem: MemDisk::new(SIZE),
            block,
            hold_reads: AtomicBool::new(false),
            hold_writes: AtomicBool::new(false),
            gate: tokio::sync::Semaphore::new(0),
            held: AtomicUsize::new(0),
        })
    }

    fn check(&self, off: u64, len: u64) -> Result<()> {
        assert!(
            aligned(off, len, self.block.into()),
            "unaligned I/O reached the device: {len} bytes at {off}"
        );
        Ok(())
    }

    async fn hold(&self, on: &AtomicBool) {
        if on.load(Ordering::SeqCst) {
            self.held.fetch_add(1, Ordering::SeqCst);
            if let Ok(p) = self.gate.acquire().await {
                p.forget();
            }
        }
    }
}

impl BlockDev for Strict {
    fn size(&self) -> u64 {
        SIZE
    }
    fn block_size(&self) -> u32 {
        self.block
    }
    fn read(&self, off: u64, buf: IoBuf) -> DevFuture<'_, BufResult> {
        Box::pin(async move {
            self.hold(&self.hold_reads).await;
            if let Err(e) = self.check(off, buf.len() as u64) {
                return (buf, Err(e));
            }
            self.mem.read(off, buf).await
        })
    }
    fn write(&self, off: u64, buf: IoBuf, fua: bool) -> DevFuture<'_, BufResult> {
        Box::pin(async move {
            self.hold(&self.hold_writes).await;
            if let Err(e) = self.check(off, buf.len() as u64) {
                return (buf, Err(e));
            }
            self.mem.write(off, buf, fua).await
        })
    }
    fn flush(&self) -> DevFuture<'_, Result<()>> {
        self.mem.flush()
    }
    fn discard(&self, off: u64, len: u64) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            self.check(off, len)?;
            self.mem.discard(off, len).await
        })
    }
    fn write_zeroes(&self, off: u64, len: u64, flags: ZeroFlags) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            self.check(off, len)?;
            if flags.fast_only {
                return Err(Error::new(ErrorKind::Unsupported, "no fast zero here"));
            }
            self.mem.write_zeroes(off, len, flags).await
        })
    }
    fn block_status(&self, off: u64, len: u64) -> DevFuture<'_, Result<Vec<Extent>>> {
        Box::pin(async move {
            self.check(off, len)?;
            self.mem.block_status(off, len).await
        })
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed) ^ ((i >> 9) as u8))
        .collect()
}

/// Offsets and lengths of every class: aligned, off by one either way,
/// inside one block, across blocks, up to the end of the device.
fn cases(block: u64) -> Vec<(u64, u64)> {
    let mut v = Vec::new();
    for off in [0, 1, 511, 512, 4095, 4097, block * 3 + 7] {
        for len in [1, 14, 511, 513, block, 3 * block + 14, (1 << 20) + 14] {
            v.push((off, len));
        }
    }
    for len in [1, 14, 511, 513] {
        v.push((SIZE - len, len));
        v.push((SIZE - len - 1, len));
    }
    v
}

#[test]
fn block_math() {
    assert_eq!(cover(1, 1, 512).unwrap(), (0, 512));
    assert_eq!(cover(511, 2, 512).unwrap(), (0, 1024));
    assert_eq!(cover(512, 512, 512).unwrap(), (512, 1024));
    assert!(
        cover(u64::MAX - 1, 1, 512).is_err(),
        "rounding up overflows"
    );
    assert!(cover(u64::MAX, 1, 512).is_err());
    assert_eq!(interior(1, 1022, 512).unwrap(), None);
    assert_eq!(interior(1, 1023, 512).unwrap(), Some((512, 1024)));
    assert_eq!(interior(0, 1000, 512).unwrap(), Some((0, 512)));
    assert!(interior(u64::MAX, 1, 512).is_err());
    assert_eq!(edges(1, 1, 512).unwrap(), [0]);
    assert_eq!(edges(500, 100, 512).unwrap(), [0, 512]);
    assert_eq!(edges(0, 1000, 512).unwrap(), [512]);
    assert_eq!(edges(1, 1023, 512).unwrap(), [0]);
    assert!(edges(512, 512, 512).unwrap().is_empty());
    let e = |len, flags| Extent { len, flags };
    let two = || vec![e(512, 1), e(512, 2)];
    assert_eq!(clip(two(), 100, 1000), [e(412, 1), e(512, 2)]);
    assert_eq!(clip(two(), 100, 500), [e(412, 1), e(88, 2)]);
    assert_eq!(clip(two(), 512, 1000), [e(512, 2)]);
    assert_eq!(clip(two(), 1, 10), [e(10, 1)]);
    assert_eq!(clip(vec![e(512, 1)], 512, 10), []);
}

/// Writes, zeroes and reads at every offset class through the helpers,
/// checked against a reference image after each step; the device below
/// sees whole blocks only.
#[test]
fn rmw_at_every_offset_class_matches_a_reference_image() {
    for block in [512u32, 4096] {
        let dev = Strict::new(block);
        let b = u64::from(block);
        let mut reference = vec![0u8; SIZE as usize];
        crate::rt::block_on(async {
            let (_, r) = dev
                .write(0, IoBuf::from_slice(&pattern(SIZE as usize, 1)), false)
                .await;
            r.unwrap();
            reference.copy_from_slice(&pattern(SIZE as usize, 1));
            for (i, (off, len)) in cases(b).into_iter().enumerate() {
                let (o, n) = (off as usize, len as usize);
                if i % 3 == 2 {
                    let f = ZeroFlags {
                        fua: true,
                        ..ZeroFlags::default()
                    };
                    rmw_zero(&*dev, off, len, f, b).await.unwrap();
                    reference[o..o + n].fill(0);
                } else {
                    let data = pattern(n, i as u8);
                    let (back, r) = rmw_write(&*dev, off, IoBuf::from_slice(&data), true, b).await;
                    r.unwrap();
                    assert_eq!(back.as_slice(), &data[..], "the payload comes back");
                    reference[o..o + n].copy_from_slice(&data);
                }
                let (got, r) = read_bytes(&*dev, off, IoBuf::new(n), b).await;
                r.unwrap();
                assert!(
                    got.as_slice() == &reference[o..o + n],
                    "read {len} at {off}"
                );
                // A wider read sees the bytes around the range kept.
                let (lo, hi) = (off.saturating_sub(700), (off + len + 700).min(SIZE));
                let (got, r) = read_bytes(&*dev, lo, IoBuf::new((hi - lo) as usize), b).await;
                r.unwrap();
                assert!(
                    got.as_slice() == &reference[lo as usize..hi as usize],
                    "block {block}: after {len} bytes at {off} the neighbours changed"
                );
            }
        });
        assert!(
            dev.mem.snapshot() == reference,
            "block {block}: the whole image"
        );
        assert_eq!(dev.mem.unflushed_writes(), 0, "every write was FUA");
    }
}

#[test]
fn empty_unaligned_writes_and_zeroes_touch_nothing() {
    let dev = Strict::new(512);
    crate::rt::block_on(async {
        write_slice(&*dev, 0, &[0x77; 1024], false).await.unwrap();
        let (_, r) = rmw_write(&*dev, 3, IoBuf::new(0), false, 512).await;
        r.unwrap();
        rmw_zero(&*dev, 3, 0, ZeroFlags::default(), 512)
            .await
            .unwrap();
        assert!(
            read_vec(&*dev, 0, 1024)
                .await
                .unwrap()
                .iter()
                .all(|&b| b == 0x77)
        );
    });
}

#[test]
fn fast_zero_that_cannot_be_fast_changes_nothing() {
    let dev = Strict::new(512);
    crate::rt::block_on(async {
        write_slice(&*dev, 0, &[0x77; 8192], false).await.unwrap();
        let f = ZeroFlags {
            fast_only: true,
            ..ZeroFlags::default()
        };
        let e = rmw_zero(&*dev, 100, 4000, f, 512).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(
            read_vec(&*dev, 0, 8192)
                .await
                .unwrap()
                .iter()
                .all(|&b| b == 0x77)
        );
    });
}

#[test]
fn trim_and_status_of_unaligned_ranges_use_whole_blocks() {
    let dev = Strict::new(512);
    crate::rt::block_on(async {
        write_slice(&*dev, 0, &[0x55; 4096], false).await.unwrap();
        // Only the blocks wholly inside are discarded (MemDisk zeroes).
        discard_bytes(&*dev, 100, 1500, 512).await.unwrap();
        let got = read_vec(&*dev, 0, 4096).await.unwrap();
        assert!(got[..512].iter().all(|&b| b == 0x55), "head block kept");
        assert!(got[1536..].iter().all(|&b| b == 0x55), "tail block kept");
        discard_bytes(&*dev, 1, 510, 512).await.unwrap();
        let ext = block_status_bytes(&*dev, 100, 1000, 512).await.unwrap();
        assert_eq!(ext.iter().map(|e| e.len).sum::<u64>(), 1000, "{ext:?}");
    });
}

/// The default byte-granular calls of a plain device serve whole blocks
/// and refuse anything else, rather than doing an unlocked RMW.
#[test]
fn a_device_without_a_switch_refuses_unaligned_writes() {
    let dev = Strict::new(512);
    crate::rt::block_on(async {
        let (_, r) = dev.write_bytes(1, IoBuf::from_slice(&[1; 10]), false).await;
        assert_eq!(r.unwrap_err().kind(), ErrorKind::Invalid);
        let e = dev
            .zero_bytes(1, 10, ZeroFlags::default())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid);
        let (_, r) = dev
            .write_bytes(512, IoBuf::from_slice(&[1; 512]), false)
            .await;
        r.unwrap();
    });
}

fn switch(dev: &Arc<Strict>) -> Arc<Switch> {
    Arc::new(Switch::new(Arc::clone(dev) as Arc<dyn BlockDev>))
}

/// Runs the local tasks until `cond` holds (bounded: a bug fails, not
/// hangs).
async fn until(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("never happened: {what}");
}

/// An aligned write of a block arriving while an RMW of that block sits
/// between its read and its write waits for it: the block ends up as the
/// aligned write, whole. Without the lock the RMW would write back the
/// bytes it read before the aligned write, mixing the two.
#[test]
fn an_aligned_write_waits_for_an_rmw_of_the_same_block() {
    let dev = Strict::new(512);
    let sw = switch(&dev);
    crate::rt::block_on(async {
        // Locked mode on, as after any first byte-granular write.
        sw.write_bytes(1, IoBuf::from_slice(&[9]), false)
            .await
            .1
            .unwrap();
        dev.hold_reads.store(true, Ordering::SeqCst);
        let s = Arc::clone(&sw);
        let rmw = tokio::task::spawn_local(async move {
            s.write_bytes(100, IoBuf::from_slice(&[0xAA; 10]), false)
                .await
                .1
        });
        until("the RMW reads its block", || {
            dev.held.load(Ordering::SeqCst) == 1
        })
        .await;
        let s = Arc::clone(&sw);
        let done = Arc::new(AtomicBool::new(false));
        let d = Arc::clone(&done);
        let aligned = tokio::task::spawn_local(async move {
            let r = s.write(0, IoBuf::from_slice(&[0xBB; 512]), false).await.1;
            d.store(true, Ordering::SeqCst);
            r
        });
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        assert!(
            !done.load(Ordering::SeqCst),
            "the aligned write passed the RMW's lock"
        );
        dev.hold_reads.store(false, Ordering::SeqCst);
        dev.gate.add_permits(1);
        rmw.await.unwrap().unwrap();
        aligned.await.unwrap().unwrap();
        let got = read_vec(&*sw, 0, 512).await.unwrap();
        assert!(
            got.iter().all(|&b| b == 0xBB),
            "the block is a mix: {:?}",
            &got[..120]
        );
    });
}

/// Before the first byte-granular write, aligned writes take no lock;
/// the first one waits for an aligned write already in flight (which took
/// none) before its RMW reads, so the RMW lands after it, whole.
#[test]
fn the_first_byte_granular_write_drains_lock_free_writes() {
    let dev = Strict::new(512);
    let sw = switch(&dev);
    crate::rt::block_on(async {
        dev.hold_writes.store(true, Ordering::SeqCst);
        let s = Arc::clone(&sw);
        let aligned = tokio::task::spawn_local(async move {
            s.write(0, IoBuf::from_slice(&[0xBB; 512]), false).await.1
        });
        until("the aligned write is at the disk", || {
            dev.held.load(Ordering::SeqCst) == 1
        })
        .await;
        dev.hold_writes.store(false, Ordering::SeqCst);
        let s = Arc::clone(&sw);
        let rmw = tokio::task::spawn_local(async move {
            s.write_bytes(100, IoBuf::from_slice(&[0xAA; 10]), false)
                .await
                .1
        });
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        assert!(
            !rmw.is_finished(),
            "the RMW did not wait for the write in flight"
        );
        dev.gate.add_permits(1);
        aligned.await.unwrap().unwrap();
        rmw.await.unwrap().unwrap();
        let got = read_vec(&*sw, 0, 512).await.unwrap();
        let mut want = vec![0xBB; 512];
        want[100..110].fill(0xAA);
        assert_eq!(got, want);
        // Locked mode from now on: the lock is free again.
        assert_eq!(sw.grain_held(), 0);
    });
}

/// Byte-granular writes through the Switch at every offset class match
/// the reference image; the device below sees whole blocks only.
#[test]
fn switch_serves_every_offset_class() {
    let dev = Strict::new(512);
    let sw = switch(&dev);
    let mut reference = vec![0u8; SIZE as usize];
    crate::rt::block_on(async {
        for (i, (off, len)) in cases(512).into_iter().enumerate() {
            let (o, n) = (off as usize, len as usize);
            if i % 4 == 3 {
                sw.zero_bytes(off, len, ZeroFlags::default()).await.unwrap();
                reference[o..o + n].fill(0);
            } else {
                let data = pattern(n, i as u8 ^ 0x5a);
                sw.write_bytes(off, IoBuf::from_slice(&data), i % 2 == 0)
                    .await
                    .1
                    .unwrap();
                reference[o..o + n].copy_from_slice(&data);
            }
        }
        assert!(read_vec(&*sw, 0, SIZE as usize).await.unwrap() == reference);
        assert!(FutureExt::now_or_never(sw.flush()).is_some());
    });
}
