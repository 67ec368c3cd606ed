//! Model tests: every level, healthy and degraded, against a reference
//! byte array under random reads, writes, zeroing, discards and flushes,
//! some issued concurrently.

use futures::future::join_all;
use proptest::prelude::*;

use super::*;
use crate::blockdev::ZeroFlags;

/// How a test group is hurt before the operations start.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Hurt {
    None,
    /// Member 1 is missing (`None`, state Failed).
    Absent,
    /// Member 1 fails every I/O; the group finds out by itself.
    Dead,
    /// Member 1's writes start failing after a few, mid-sequence.
    Later,
}

#[derive(Debug, Clone)]
enum Op {
    Read(u64, u64),
    Write(u64, u64, u64),
    Zero(u64, u64, bool),
    Discard(u64, u64),
    Flush,
    /// Non-overlapping reads and writes, issued together.
    Batch(Vec<(u64, u64, Option<u64>)>),
}

/// The reference: bytes, and sectors discarded since last written (which
/// may read as old data or zeroes, but stably).
struct Model {
    data: Vec<u8>,
    discarded: Vec<bool>,
}

impl Model {
    fn new(len: u64) -> Model {
        Model {
            data: vec![0; len as usize],
            discarded: vec![false; (len / 512) as usize],
        }
    }

    fn write(&mut self, off: u64, bytes: &[u8]) {
        let o = off as usize;
        self.data[o..o + bytes.len()].copy_from_slice(bytes);
        self.discarded[o / 512..(o + bytes.len()) / 512].fill(false);
    }

    fn discard(&mut self, off: u64, len: u64) {
        self.discarded[(off / 512) as usize..((off + len) / 512) as usize].fill(true);
    }

    /// Checks a read; a discarded sector that reads as zeroes becomes zero.
    fn check(&mut self, off: u64, got: &[u8]) -> Result<(), String> {
        for (i, sector) in got.chunks(512).enumerate() {
            let s = off as usize / 512 + i;
            let want = &mut self.data[s * 512..(s + 1) * 512];
            if self.discarded[s] && sector.iter().all(|&b| b == 0) {
                want.fill(0);
            }
            if sector != want {
                return Err(format!(
                    "sector {s} (byte {}) differs from the model",
                    s * 512
                ));
            }
            self.discarded[s] = false;
        }
        Ok(())
    }
}

/// Turns raw numbers into an aligned range of the group: tiny, whole
/// rows, random, or straddling a row boundary.
fn shape(cap: u64, grain: u64, a: u64, b: u64) -> (u64, u64) {
    let sectors = cap / 512;
    let (off, len) = match b % 4 {
        0 => ((a % sectors) * 512, 512 * (1 + (b / 4) % 8)),
        1 => ((a % (cap / grain)) * grain, grain * (1 + (b / 4) % 3)),
        2 => ((a % sectors) * 512, 512 * (1 + (b / 4) % (2 * grain / 512))),
        _ => {
            let edge = (1 + a % (cap / grain)) * grain;
            let back = 512 * (1 + (b / 4) % (grain / 512));
            (
                edge.saturating_sub(back),
                512 * (1 + (b / 64) % (2 * grain / 512)),
            )
        }
    };
    let off = off.min(cap - 512);
    (off, len.min(cap - off))
}

/// Raw numbers an operation is made from: kind, two shape numbers, a data
/// seed, and batch members.
type Raw = (u8, u64, u64, u64, Vec<(u64, u64, bool)>);

fn arb_raw() -> impl Strategy<Value = Raw> {
    (
        0u8..16,
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec((any::<u64>(), any::<u64>(), any::<bool>()), 2..5),
    )
}

fn make_op(cap: u64, grain: u64, raw: Raw) -> Op {
    let (kind, a, b, seed, batch) = raw;
    let (off, len) = shape(cap, grain, a, b);
    match kind {
        0..=3 => Op::Read(off, len),
        4..=9 => Op::Write(off, len, seed),
        10 => Op::Zero(off, len, seed % 2 == 0),
        11 => Op::Discard(off, len),
        12 => Op::Flush,
        _ => {
            let mut taken: Vec<(u64, u64, Option<u64>)> = Vec::new();
            for (i, (a, b, w)) in batch.into_iter().enumerate() {
                let (o, l) = shape(cap, grain, a, b);
                if taken.iter().all(|t| o + l <= t.0 || t.0 + t.1 <= o) {
                    taken.push((o, l, w.then_some(seed.wrapping_add(i as u64))));
                }
            }
            Op::Batch(taken)
        }
    }
}

async fn run_op(raid: &RaidDev, model: &mut Model, op: &Op) -> Result<(), String> {
    let fail = |what: &str, e: Error| format!("{what} failed: {}", e.chain());
    match *op {
        Op::Read(off, len) => {
            let got = read_vec(raid, off, len as usize)
                .await
                .map_err(|e| fail("read", e))?;
            model.check(off, &got)
        }
        Op::Write(off, len, seed) => {
            let data = pattern(seed, len as usize);
            let fua = seed % 5 == 0;
            write_slice(raid, off, &data, fua)
                .await
                .map_err(|e| fail("write", e))?;
            model.write(off, &data);
            Ok(())
        }
        Op::Zero(off, len, may_unmap) => {
            let flags = ZeroFlags {
                may_unmap,
                ..ZeroFlags::default()
            };
            raid.write_zeroes(off, len, flags)
                .await
                .map_err(|e| fail("write_zeroes", e))?;
            model.write(off, &vec![0; len as usize]);
            Ok(())
        }
        Op::Discard(off, len) => {
            raid.discard(off, len)
                .await
                .map_err(|e| fail("discard", e))?;
            model.discard(off, len);
            Ok(())
        }
        Op::Flush => raid.flush().await.map_err(|e| fail("flush", e)),
        Op::Batch(ref ops) => run_batch(raid, model, ops).await,
    }
}

async fn run_batch(
    raid: &RaidDev,
    model: &mut Model,
    ops: &[(u64, u64, Option<u64>)],
) -> Result<(), String> {
    let futs = ops.iter().map(|&(off, len, seed)| async move {
        match seed {
            Some(s) => {
                let data = pattern(s, len as usize);
                write_slice(raid, off, &data, false).await.map(|()| data)
            }
            None => read_vec(raid, off, len as usize).await,
        }
    });
    let done = join_all(futs).await;
    for (&(off, _, seed), r) in ops.iter().zip(done) {
        let bytes = r.map_err(|e| format!("batched I/O at {off} failed: {}", e.chain()))?;
        match seed {
            Some(_) => model.write(off, &bytes),
            None => model.check(off, &bytes)?,
        }
    }
    Ok(())
}

fn run_model(level: RaidLevel, n: usize, hurt: Hurt, raws: Vec<Raw>) -> Result<(), TestCaseError> {
    let rig = Rig::new(level, n, 12, (hurt == Hurt::Absent).then_some(1));
    match hurt {
        Hurt::Dead => rig.disks[1].set_dead(true),
        Hurt::Later => rig.disks[1].fail_writes_after(6),
        _ => {}
    }
    let cap = rig.cap();
    let grain = rig.raid.layout().lock_grain();
    let ops: Vec<Op> = raws.into_iter().map(|r| make_op(cap, grain, r)).collect();
    let mut model = Model::new(cap);
    let r: Result<(), String> = crate::rt::block_on(async {
        for (i, op) in ops.iter().enumerate() {
            run_op(&rig.raid, &mut model, op)
                .await
                .map_err(|e| format!("op {i} {op:?}: {e}"))?;
        }
        let all = read_vec(&rig.raid, 0, cap as usize)
            .await
            .map_err(|e| e.chain())?;
        model.check(0, &all)
    });
    prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    assert_consistent(&rig);
    let calls = rig.hooks.calls();
    prop_assert!(
        calls.iter().all(|&c| c == 1) && calls.len() <= 1,
        "hooks called {:?}",
        calls
    );
    if hurt == Hurt::None {
        prop_assert_eq!(rig.raid.health(), Health::Optimal);
    }
    Ok(())
}

fn hurts() -> impl Strategy<Value = Hurt> {
    prop_oneof![
        Just(Hurt::None),
        Just(Hurt::Absent),
        Just(Hurt::Dead),
        Just(Hurt::Later)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn concat_model(raws in proptest::collection::vec(arb_raw(), 1..40)) {
        run_model(RaidLevel::Concat, 3, Hurt::None, raws)?;
    }

    #[test]
    fn raid0_model(raws in proptest::collection::vec(arb_raw(), 1..40)) {
        run_model(RaidLevel::Raid0, 3, Hurt::None, raws)?;
    }

    #[test]
    fn raid1_two_way_model(hurt in hurts(),
                           raws in proptest::collection::vec(arb_raw(), 1..40)) {
        run_model(RaidLevel::Raid1, 2, hurt, raws)?;
    }

    #[test]
    fn raid1_three_way_model(hurt in hurts(),
                             raws in proptest::collection::vec(arb_raw(), 1..40)) {
        run_model(RaidLevel::Raid1, 3, hurt, raws)?;
    }

    #[test]
    fn raid5_three_model(hurt in hurts(),
                         raws in proptest::collection::vec(arb_raw(), 1..40)) {
        run_model(RaidLevel::Raid5, 3, hurt, raws)?;
    }

    #[test]
    fn raid5_four_model(hurt in hurts(),
                        raws in proptest::collection::vec(arb_raw(), 1..40)) {
        run_model(RaidLevel::Raid5, 4, hurt, raws)?;
    }
}
