//! Tests of the RAID group node: model tests per level, faults, rebuild,
//! hot replace and crash consistency, all on [`MemDisk`] members.

mod crash;
mod divert;
mod faults;
mod model;
mod rebuild;

use std::future::Future;
use std::sync::{Arc, Mutex};

use super::*;
use crate::blockdev::{MemIntent, read_vec, write_slice};
use crate::buf::xor_into;
use crate::disk::MemDisk;

/// Stripe size of the test groups: small, so rows are many.
const S: u64 = 4096;

/// Hooks that count the members failed through them.
#[derive(Default)]
struct CountHooks {
    failed: Mutex<Vec<usize>>,
}

impl CountHooks {
    fn calls(&self) -> Vec<usize> {
        self.failed.lock().unwrap().clone()
    }
}

impl RaidHooks for CountHooks {
    fn member_failed(&self, idx: usize, _err: &Error) -> DevFuture<'_, Result<()>> {
        self.failed.lock().unwrap().push(idx);
        Box::pin(async { Ok(()) })
    }
}

/// A group over memory disks, with its write intent and hooks.
struct Rig {
    raid: RaidDev,
    disks: Vec<Arc<MemDisk>>,
    intent: Arc<MemIntent>,
    hooks: Arc<CountHooks>,
}

/// A memory disk whose operations yield to the runtime a varying number
/// of times first, so concurrent requests really interleave.
struct Yielding {
    inner: Arc<MemDisk>,
    tick: std::sync::atomic::AtomicU64,
}

impl Yielding {
    fn pause(&self) -> impl Future<Output = ()> + use<> {
        let t = self
            .tick
            .fetch_add(0x9e37_79b9_7f4a_7c15, std::sync::atomic::Ordering::Relaxed);
        let n = (t ^ (t >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) >> 61;
        async move {
            for _ in 0..n {
                tokio::task::yield_now().await;
            }
        }
    }
}

impl BlockDev for Yielding {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read(&self, off: u64, buf: IoBuf) -> DevFuture<'_, BufResult> {
        let p = self.pause();
        Box::pin(async move {
            p.await;
            self.inner.read(off, buf).await
        })
    }

    fn write(&self, off: u64, buf: IoBuf, fua: bool) -> DevFuture<'_, BufResult> {
        let p = self.pause();
        Box::pin(async move {
            p.await;
            self.inner.write(off, buf, fua).await
        })
    }

    fn flush(&self) -> DevFuture<'_, Result<()>> {
        let p = self.pause();
        Box::pin(async move {
            p.await;
            self.inner.flush().await
        })
    }

    fn discard(&self, off: u64, len: u64) -> DevFuture<'_, Result<()>> {
        let p = self.pause();
        Box::pin(async move {
            p.await;
            self.inner.discard(off, len).await
        })
    }

    fn write_zeroes(&self, off: u64, len: u64, flags: ZeroFlags) -> DevFuture<'_, Result<()>> {
        let p = self.pause();
        Box::pin(async move {
            p.await;
            self.inner.write_zeroes(off, len, flags).await
        })
    }

    fn block_status(&self, off: u64, len: u64) -> DevFuture<'_, Result<Vec<Extent>>> {
        self.inner.block_status(off, len)
    }
}

/// A member device over a memory disk that interleaves with its peers.
fn as_dev(d: &Arc<MemDisk>) -> Arc<dyn BlockDev> {
    Arc::new(Yielding {
        inner: Arc::clone(d),
        tick: std::sync::atomic::AtomicU64::new(Arc::as_ptr(d) as u64),
    })
}

impl Rig {
    /// `n` members of `rows` strips each; member `absent` is missing.
    fn new(level: RaidLevel, n: usize, rows: u64, absent: Option<usize>) -> Rig {
        let disks: Vec<Arc<MemDisk>> = (0..n).map(|_| Arc::new(MemDisk::new(rows * S))).collect();
        let layout = Layout::new(level, S, &vec![rows * S; n]).unwrap();
        let intent = Arc::new(MemIntent::new(layout.lock_grain()));
        let hooks = Arc::new(CountHooks::default());
        let members = disks
            .iter()
            .enumerate()
            .map(|(i, d)| (Some(i) != absent).then(|| as_dev(d)))
            .collect();
        let states = (0..n)
            .map(|i| {
                if Some(i) == absent {
                    MemberState::Failed
                } else {
                    MemberState::Ok
                }
            })
            .collect();
        let raid = RaidDev::new(
            layout,
            members,
            states,
            Arc::clone(&intent) as Arc<dyn WriteIntent>,
            Arc::clone(&hooks) as Arc<dyn RaidHooks>,
        )
        .unwrap();
        Rig {
            raid,
            disks,
            intent,
            hooks,
        }
    }

    /// A new node over the same disks (after a simulated crash).
    fn reopen(&self) -> RaidDev {
        let n = self.disks.len();
        RaidDev::new(
            self.raid.layout().clone(),
            self.disks.iter().map(|d| Some(as_dev(d))).collect(),
            vec![MemberState::Ok; n],
            Arc::clone(&self.intent) as Arc<dyn WriteIntent>,
            Arc::clone(&self.hooks) as Arc<dyn RaidHooks>,
        )
        .unwrap()
    }

    fn cap(&self) -> u64 {
        self.raid.size()
    }
}

/// Reads the whole group.
fn read_all(raid: &RaidDev) -> Vec<u8> {
    crate::rt::block_on(read_vec(raid, 0, raid.size() as usize)).unwrap()
}

/// Deterministic test data: a pattern from `seed`.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A small xorshift generator for test choices.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Rows of member space whose members are all in `images` and current
/// (`live[m]`): raid5 parity must equal the XOR of the data strips; raid1
/// legs must be identical. Returns the rows that disagree.
fn inconsistent_rows(layout: &Layout, images: &[Vec<u8>], live: &[bool]) -> Vec<u64> {
    let s = layout.stripe_size() as usize;
    let mut bad = Vec::new();
    for row in 0..layout.rows() {
        let r = row as usize * s;
        let strips: Vec<&[u8]> = images
            .iter()
            .zip(live)
            .filter(|(_, l)| **l)
            .map(|(img, _)| &img[r..r + s])
            .collect();
        let ok = match layout.level() {
            RaidLevel::Raid1 => strips.windows(2).all(|w| w[0] == w[1]),
            RaidLevel::Raid5 if strips.len() == images.len() => {
                let mut x = vec![0u8; s];
                for st in &strips {
                    xor_into(&mut x, st);
                }
                x.iter().all(|&b| b == 0)
            }
            _ => true,
        };
        if !ok {
            bad.push(row);
        }
    }
    bad
}

fn snapshots(disks: &[Arc<MemDisk>]) -> Vec<Vec<u8>> {
    disks.iter().map(|d| d.snapshot()).collect()
}

/// Asserts every row with all members Ok is consistent.
fn assert_consistent(rig: &Rig) {
    let live: Vec<bool> = (0..rig.disks.len())
        .map(|i| rig.raid.member_state(i) == MemberState::Ok)
        .collect();
    let bad = inconsistent_rows(rig.raid.layout(), &snapshots(&rig.disks), &live);
    assert!(bad.is_empty(), "rows with stale redundancy: {bad:?}");
}

fn write(raid: &RaidDev, off: u64, data: &[u8]) {
    crate::rt::block_on(write_slice(raid, off, data, false)).unwrap();
}
