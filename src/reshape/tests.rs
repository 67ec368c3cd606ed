//! Tests of the restripe's data path on memory disks: ESTABLISH under host
//! writes, the seed's FIGS. 2, 8 and 9 with host I/O interleaved with the
//! instant split and the background transfer (many schedules), the
//! transfer table of FIG. 2, the lists' bookkeeping, and crashes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::*;
use crate::blockdev::{
    BlockDev, BufResult, DevFuture, MemIntent, NoIntent, WriteIntent, read_vec, write_slice,
};
use crate::buf::IoBuf;
use crate::disk::MemDisk;
use crate::error::Result;
use crate::layout::{Layout, RaidLevel};
use crate::meta::Meta;
use crate::meta::diffmap::DiffMap;
use crate::stack::raid::{MemberState, NoHooks, RaidDev};

/// One cylinder of the seed's figures.
const C: u64 = 4096;

/// A memory disk whose every I/O first yields a number of times the
/// seed picks: tasks on one thread interleave differently for each seed.
struct Shaky {
    inner: Arc<MemDisk>,
    rng: AtomicU64,
}

impl Shaky {
    fn yields(&self) -> u64 {
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        x % 4
    }

    async fn pause(&self) {
        for _ in 0..self.yields() {
            tokio::task::yield_now().await;
        }
    }
}

impl BlockDev for Shaky {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read(&self, off: u64, buf: IoBuf) -> DevFuture<'_, BufResult> {
        Box::pin(async move {
            self.pause().await;
            self.inner.read(off, buf).await
        })
    }

    fn write(&self, off: u64, buf: IoBuf, fua: bool) -> DevFuture<'_, BufResult> {
        Box::pin(async move {
            self.pause().await;
            self.inner.write(off, buf, fua).await
        })
    }

    fn flush(&self) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            self.pause().await;
            self.inner.flush().await
        })
    }
}

fn disks(n: usize, size: u64) -> Vec<Arc<MemDisk>> {
    (0..n).map(|_| Arc::new(MemDisk::new(size))).collect()
}

/// A group of `level` over `disks` (each used whole), stripe `stripe`.
fn group(level: RaidLevel, stripe: u64, disks: &[Arc<MemDisk>], seed: u64) -> Arc<RaidDev> {
    let sizes: Vec<u64> = disks.iter().map(|d| d.size()).collect();
    let layout = Layout::new(level, stripe, &sizes).unwrap();
    let intent: Arc<dyn WriteIntent> = if layout.is_redundant() {
        Arc::new(MemIntent::new(layout.lock_grain()))
    } else {
        Arc::new(NoIntent)
    };
    let members = disks
        .iter()
        .enumerate()
        .map(|(i, d)| {
            Some(Arc::new(Shaky {
                inner: Arc::clone(d),
                rng: AtomicU64::new((seed + 1) * 0x9e37_79b9 + i as u64 * 7919 + 1),
            }) as Arc<dyn BlockDev>)
        })
        .collect();
    let states = vec![MemberState::Ok; disks.len()];
    Arc::new(RaidDev::new(layout, members, states, intent, Arc::new(NoHooks)).unwrap())
}

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

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// A layout: level, stripe, disks.
#[derive(Clone, Copy)]
struct Shape {
    level: RaidLevel,
    stripe: u64,
    disks: usize,
}

/// One restripe on memory disks: the original disks (the first of the
/// new layout's), the added ones, the BCV's.
struct Bench {
    old: Shape,
    new: Shape,
    main: Vec<Arc<MemDisk>>,
    bcv: Vec<Arc<MemDisk>>,
    dir: tempfile::TempDir,
    meta: Arc<Meta>,
    seed: u64,
}

impl Bench {
    fn new(old: Shape, new: Shape, disk_size: u64, seed: u64) -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(Meta::open(&dir.path().join("p.redb")).unwrap().0);
        Bench {
            old,
            new,
            main: disks(new.disks.max(old.disks), disk_size),
            bcv: disks(old.disks, disk_size),
            dir,
            meta,
            seed,
        }
    }

    fn old_group(&self) -> Arc<RaidDev> {
        group(
            self.old.level,
            self.old.stripe,
            &self.main[..self.old.disks],
            self.seed,
        )
    }

    fn bcv_group(&self) -> Arc<RaidDev> {
        group(self.old.level, self.old.stripe, &self.bcv, self.seed + 100)
    }

    fn new_group(&self) -> Arc<RaidDev> {
        group(
            self.new.level,
            self.new.stripe,
            &self.main[..self.new.disks],
            self.seed + 200,
        )
    }

    /// The three lists, opened from the database (`fresh`: all set, as at
    /// the switch).
    fn lists(&self, old_size: u64, new_size: u64, track: u64, fresh: bool) -> Lists {
        let open = |object: u64, bytes: u64| {
            let m = DiffMap::open(Arc::clone(&self.meta), object, track, bytes.div_ceil(track))
                .unwrap();
            if fresh && let Some(f) = m.mark_tracks(0..m.tracks()) {
                crate::rt::block_on(f).unwrap();
            }
            m
        };
        Lists {
            pb: open(1, old_size),
            ind: open(2, new_size),
            ps: open(3, old_size),
        }
    }

    /// ESTABLISH with `model` written first and host writes while it
    /// copies; returns the old group's content (the model) at the switch.
    fn establish(&self, model: &mut [u8]) -> Arc<RaidDev> {
        let old = self.old_group();
        crate::rt::block_on(write_slice(&*old, 0, model, false)).unwrap();
        let est = Establish::new(Arc::clone(&old) as Arc<dyn BlockDev>, self.bcv_group()).unwrap();
        let mut rng = Rng(self.seed * 31 + 7);
        crate::rt::block_on(async {
            let size = est.size();
            let copier = async {
                let mut at = 0;
                while at < size {
                    est.copy(at, at + 3 * C).await.unwrap();
                    at = est.cursor();
                }
            };
            let host = async {
                for i in 0..24 {
                    let len = (1 + rng.below(3)) * 512;
                    let off = rng.below((size - len) / 512) * 512;
                    let data = pattern(self.seed * 1000 + i, len as usize);
                    write_slice(&est, off, &data, false).await.unwrap();
                    model[off as usize..(off + len) as usize].copy_from_slice(&data);
                }
            };
            futures::join!(copier, host);
        });
        assert!(est.in_sync());
        assert!(est.broken().is_none());
        old
    }
}

fn read_all(dev: &dyn BlockDev) -> Vec<u8> {
    crate::rt::block_on(read_vec(dev, 0, dev.size() as usize)).unwrap()
}

/// The whole restripe with host I/O against a model, for one schedule:
/// ESTABLISH, the switch, host reads and writes racing the instant split
/// and the background transfer; then every track is where the new layout
/// puts it (the disks equal a new-layout group written with the model).
fn restripe(old: Shape, new: Shape, disk_size: u64, seed: u64) -> Moved {
    let b = Bench::new(old, new, disk_size, seed);
    let old_size = b.old_group().size();
    let mut model = pattern(seed, old_size as usize);
    let _old = b.establish(&mut model);
    let bcv_image: Vec<Vec<u8>> = b.bcv.iter().map(|d| d.snapshot()).collect();
    // The switch: the new layout over the original disks and the added.
    let newg = b.new_group();
    let new_size = newg.size();
    let track = newg.layout().lock_grain();
    let lists = b.lists(old_size, new_size, track, true);
    let r = Reshape::new(newg, b.bcv_group(), old_size, lists.clone()).unwrap();
    model.resize(new_size as usize, 0);
    let mut rng = Rng(seed * 17 + 3);
    crate::rt::block_on(async {
        let background = async {
            r.instant_split().await.unwrap();
            let tracks = r.tracks();
            let mut t = 0;
            while t < tracks {
                r.transfer_tracks(t, t + 2).await.unwrap();
                if rng.below(3) == 0 {
                    r.save().await.unwrap();
                }
                t += 2;
            }
        };
        let mut hrng = Rng(seed * 13 + 5);
        let host = async {
            for i in 0..40 {
                let len = (1 + hrng.below(2 * track / 512)) * 512;
                let off = hrng.below((new_size - len) / 512 + 1) * 512;
                if hrng.below(2) == 0 {
                    let data = pattern(seed * 7000 + i, len as usize);
                    write_slice(&r, off, &data, false).await.unwrap();
                    model[off as usize..(off + len) as usize].copy_from_slice(&data);
                } else {
                    let got = read_vec(&r, off, len as usize).await.unwrap();
                    let want = &model[off as usize..(off + len) as usize];
                    assert!(got == want, "seed {seed}: read {off}+{len} differs");
                }
            }
        };
        futures::join!(background, host);
        r.flush().await.unwrap();
    });
    assert_eq!(r.left(), 0);
    assert_eq!(lists.pb.count(), 0, "PB all clear");
    assert_eq!(lists.ind.count(), 0, "IND all clear");
    assert_eq!(lists.ps.count(), 0, "PS all clear");
    assert!(
        read_all(&r) == model,
        "seed {seed}: content after the restripe"
    );
    // The BCV was never written after the switch.
    for (d, img) in b.bcv.iter().zip(&bcv_image) {
        assert!(d.snapshot() == *img, "seed {seed}: the BCV changed");
    }
    // Laid out exactly as the new configuration (parity included).
    let reference = disks(new.disks, disk_size);
    let refg = group(new.level, new.stripe, &reference, 0);
    crate::rt::block_on(write_slice(&*refg, 0, &model, false)).unwrap();
    for (i, (d, want)) in b.main.iter().zip(&reference).enumerate() {
        let usable = refg.layout().member_usable(i) as usize;
        assert!(
            d.snapshot()[..usable] == want.snapshot()[..usable],
            "seed {seed}: disk {i} is not laid out as the new configuration"
        );
    }
    drop(b.dir);
    r.moved()
}

/// The seed's FIG. 2: three drives, stripe of two cylinders, onto four.
const FIG2: (Shape, Shape) = (
    Shape {
        level: RaidLevel::Raid0,
        stripe: 2 * C,
        disks: 3,
    },
    Shape {
        level: RaidLevel::Raid0,
        stripe: 2 * C,
        disks: 4,
    },
);

#[test]
fn fig2_expansion_with_host_io_in_every_schedule() {
    for seed in 1..40 {
        let m = restripe(FIG2.0, FIG2.1, 4 * C, seed);
        // Cylinders M-P (two tracks) are new host tracks: zeroed or
        // overwritten, never read from the BCV.
        assert_eq!(
            m.background + m.on_demand + m.overwritten + m.zeroed,
            8,
            "{m:?}"
        );
        assert!(m.zeroed <= 2, "{m:?}");
    }
}

#[test]
fn fig8_stripe_change_alone() {
    let old = FIG2.0;
    let new = Shape { stripe: C, ..old };
    for seed in 1..30 {
        let m = restripe(old, new, 4 * C, seed);
        assert_eq!(m.zeroed, 0, "no new host tracks: {m:?}");
    }
}

#[test]
fn fig9_expansion_and_stripe_change() {
    let new = Shape {
        stripe: C,
        ..FIG2.1
    };
    for seed in 1..30 {
        restripe(FIG2.0, new, 4 * C, seed);
    }
}

#[test]
fn raid5_rows_are_written_whole_with_their_parity() {
    let old = Shape {
        level: RaidLevel::Raid5,
        stripe: 2 * C,
        disks: 3,
    };
    for (new, seeds) in [
        (Shape { disks: 5, ..old }, 1..25),
        (
            Shape {
                stripe: C,
                disks: 4,
                ..old
            },
            1..25,
        ),
        (
            Shape {
                stripe: 4 * C,
                ..old
            },
            1..10,
        ),
    ] {
        for seed in seeds {
            restripe(old, new, 8 * C, seed);
        }
    }
}

/// D.b's corrected transfer table for FIG. 2: each BCV cylinder subset
/// goes to its new place; 35B and 37B (M-P) receive nothing.
#[test]
fn fig2_transfer_table() {
    let (o, n) = FIG2;
    let old = Layout::new(o.level, o.stripe, &[4 * C; 3]).unwrap();
    let new = Layout::new(n.level, n.stripe, &[4 * C; 4]).unwrap();
    let drive = |m: usize| [31, 33, 35, 37][m];
    let subset = |off: u64| if off < 2 * C { 'A' } else { 'B' };
    let at = |l: &Layout, t: u64| {
        let p = l.map(t * 2 * C, 2 * C).unwrap().next().unwrap();
        (p.member, p.member_off)
    };
    let mut table = Vec::new();
    for t in 0..old.capacity() / (2 * C) {
        let (bm, boff) = at(&old, t);
        let (nm, noff) = at(&new, t);
        let cyl = |k: u64| char::from(b'A' + (2 * t + k) as u8);
        table.push(format!(
            "{}{}/{}{} -> {}{}",
            [46, 47, 48][bm],
            subset(boff),
            cyl(0),
            cyl(1),
            drive(nm),
            subset(noff)
        ));
    }
    table.sort();
    assert_eq!(
        table,
        [
            "46A/AB -> 31A",
            "46B/GH -> 37A",
            "47A/CD -> 33A",
            "47B/IJ -> 31B",
            "48A/EF -> 35A",
            "48B/KL -> 33B"
        ]
    );
    // New host tracks: 35B and 37B.
    let new_tracks: Vec<String> = (old.capacity() / (2 * C)..new.capacity() / (2 * C))
        .map(|t| {
            let (m, off) = at(&new, t);
            format!("{}{}", drive(m), subset(off))
        })
        .collect();
    assert_eq!(new_tracks, ["35B", "37B"]);
}

/// A switched restripe, part transferred, for the crash tests.
struct Switched {
    b: Bench,
    old_size: u64,
    new_size: u64,
    track: u64,
    model: Vec<u8>,
}

impl Switched {
    fn new(seed: u64) -> (Switched, Reshape) {
        let new = Shape {
            stripe: C,
            ..FIG2.1
        };
        let b = Bench::new(FIG2.0, new, 8 * C, seed);
        let old_size = b.old_group().size();
        let mut model = pattern(seed, old_size as usize);
        b.establish(&mut model);
        let newg = b.new_group();
        let (new_size, track) = (newg.size(), newg.layout().lock_grain());
        model.resize(new_size as usize, 0);
        let lists = b.lists(old_size, new_size, track, true);
        let r = Reshape::new(newg, b.bcv_group(), old_size, lists).unwrap();
        let s = Switched {
            b,
            old_size,
            new_size,
            track,
            model,
        };
        (s, r)
    }

    /// Power lost: every disk keeps its flushed image (and the unflushed
    /// writes `keep` picks); the node is rebuilt from the stored lists.
    fn crash(&self, r: Reshape, keep: bool) -> Reshape {
        drop(r);
        for d in self.b.main.iter().chain(&self.b.bcv) {
            d.crash(|_| keep);
        }
        let lists = self
            .b
            .lists(self.old_size, self.new_size, self.track, false);
        Reshape::new(self.b.new_group(), self.b.bcv_group(), self.old_size, lists).unwrap()
    }

    fn host_write(&mut self, r: &Reshape, off: u64, len: u64, tag: u64, fua: bool) {
        let data = pattern(tag, len as usize);
        crate::rt::block_on(write_slice(r, off, &data, fua)).unwrap();
        self.model[off as usize..(off + len) as usize].copy_from_slice(&data);
    }
}

/// kill -9 after a flush: the background's transfers since are lost with
/// their IND clears, done again from the BCV; nothing the host flushed
/// is lost, and the lists resume where they were stored.
#[test]
fn a_crash_after_a_flush_loses_nothing_flushed() {
    for seed in 1..12 {
        let (mut s, r) = Switched::new(seed);
        crate::rt::block_on(r.transfer_tracks(0, 5)).unwrap();
        s.host_write(&r, 3 * C + 512, 2 * C, seed + 50, false);
        s.host_write(&r, s.new_size - C, C, seed + 60, false);
        crate::rt::block_on(r.flush()).unwrap();
        let stored =
            s.b.lists(s.old_size, s.new_size, s.track, false)
                .ind
                .count();
        assert_eq!(stored, r.left(), "the flush stored every IND clear");
        // A background checkpoint, then transfers it does not store.
        crate::rt::block_on(r.transfer_tracks(5, 8)).unwrap();
        crate::rt::block_on(r.save()).unwrap();
        let stored = r.left();
        crate::rt::block_on(r.transfer_tracks(8, 12)).unwrap();
        assert!(r.left() < stored);
        let r = s.crash(r, false);
        assert_eq!(r.left(), stored, "seed {seed}: resumed at the stored lists");
        crate::rt::block_on(async {
            r.instant_split().await.unwrap();
            r.transfer_tracks(0, r.tracks()).await.unwrap();
            r.flush().await.unwrap();
        });
        assert!(read_all(&r) == s.model, "seed {seed}: flushed data lost");
    }
}

/// Unflushed host writes may be lost at a crash, but a track never comes
/// back older than its last flush: each one reads as the model at the
/// flush or as the model at the crash.
#[test]
fn a_crash_never_leaves_a_track_older_than_its_last_flush() {
    for seed in 1..12 {
        let (mut s, r) = Switched::new(seed);
        let mut rng = Rng(seed + 99);
        for i in 0..6 {
            let off = rng.below(s.new_size / C - 1) * C + 512;
            s.host_write(&r, off, C, seed * 100 + i, false);
        }
        crate::rt::block_on(r.flush()).unwrap();
        let flushed = s.model.clone();
        for i in 6..12 {
            let off = rng.below(s.new_size / C - 1) * C + 1024;
            s.host_write(&r, off, C, seed * 100 + i, false);
        }
        crate::rt::block_on(r.transfer_tracks(0, 4)).unwrap();
        let r = s.crash(r, rng.below(2) == 0);
        crate::rt::block_on(r.transfer_tracks(0, r.tracks())).unwrap();
        let got = read_all(&r);
        for t in 0..s.new_size / s.track {
            let span = (t * s.track) as usize..((t + 1) * s.track) as usize;
            assert!(
                got[span.clone()] == flushed[span.clone()] || got[span.clone()] == s.model[span],
                "seed {seed}: track {t} is older than its last flush"
            );
        }
    }
}

/// A FUA write to a track not transferred yet is durable at completion,
/// with the track's IND clear: a crash right after does not transfer
/// the track again over it.
#[test]
fn a_fua_write_to_a_track_not_yet_valid_is_durable() {
    for seed in 1..8 {
        let (mut s, r) = Switched::new(seed);
        let off = s.track * 2 + 512;
        s.host_write(&r, off, 1024, seed + 7, true);
        let r = s.crash(r, false);
        let got = crate::rt::block_on(read_vec(&r, off, 1024)).unwrap();
        assert!(
            got == s.model[off as usize..off as usize + 1024],
            "seed {seed}: the FUA write was lost"
        );
    }
}

/// The lists at the switch: PB on every BCV track, IND on every new
/// track, PS on every original track; the instant split clears PS only;
/// a host write covering a track whole needs no copy and clears its
/// IND and PB with the next flush.
#[test]
fn the_lists_follow_the_seeds_steps() {
    let (mut s, r) = Switched::new(3);
    let lists = r.lists().clone();
    let old_tracks = s.old_size / s.track;
    assert_eq!(lists.pb.count(), old_tracks);
    assert_eq!(lists.ps.count(), old_tracks);
    assert_eq!(lists.ind.count(), s.new_size / s.track);
    crate::rt::block_on(r.instant_split()).unwrap();
    assert_eq!(lists.ps.count(), 0);
    assert_eq!(lists.pb.count(), old_tracks);
    let bcv = s.b.bcv.clone();
    let bcv_reads = || {
        bcv.iter()
            .map(|d| d.reads.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let before = bcv_reads();
    s.host_write(&r, s.track, s.track, 5, false);
    assert_eq!(bcv_reads(), before, "a whole-track write copies nothing");
    assert_eq!(r.moved().overwritten, 1);
    assert!(lists.ind.is_set(1), "stored only at the next flush");
    crate::rt::block_on(r.flush()).unwrap();
    assert!(!lists.ind.is_set(1) && !lists.pb.is_set(1));
    assert!(lists.ind.is_set(0) && lists.pb.is_set(0));
    // A new host track is zeroed at first use, never read from the BCV.
    let last = s.new_size / s.track - 1;
    let got = crate::rt::block_on(read_vec(&r, last * s.track, 512)).unwrap();
    assert_eq!(got, vec![0; 512]);
    assert_eq!(bcv_reads(), before);
    assert_eq!(r.moved().zeroed, 1);
    let _ = s.model;
}

/// A BCV disk failing a write breaks the establish, never a host write.
#[test]
fn a_failing_bcv_breaks_the_establish_not_the_host() {
    let b = Bench::new(FIG2.0, FIG2.1, 4 * C, 1);
    let old = b.old_group();
    let est = Establish::new(Arc::clone(&old) as Arc<dyn BlockDev>, b.bcv_group()).unwrap();
    b.bcv[1].fail_writes_after(0);
    let e = crate::rt::block_on(est.copy(0, est.size())).unwrap_err();
    assert!(e.chain().contains("restripe's copy"), "{}", e.chain());
    assert!(est.broken().is_some());
    let data = pattern(4, 2048);
    crate::rt::block_on(write_slice(&est, 512, &data, false)).unwrap();
    let got = crate::rt::block_on(read_vec(&*old, 512, 2048)).unwrap();
    assert_eq!(got, data);
}
