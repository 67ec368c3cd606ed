//! The store's labels (`copy/label.rs`, `copy/describe.rs`,
//! `copy/audit.rs`): after every commit of the model's operations the
//! labels agree with the maps, and the maps rebuilt from the labels alone
//! read back every image byte for byte.

use super::*;
use crate::copy::audit;

/// The labels agree with the committed maps (`pool check` finds nothing).
pub(super) async fn check(rig: &Rig, after: &Op) -> std::result::Result<(), TestCaseError> {
    let rep = rig
        .fam
        .check_labels()
        .await
        .map_err(|e| TestCaseError::fail(e.chain()))?;
    prop_assert!(
        rep.problems.is_empty(),
        "after {:?}: {} differences: {:?}",
        after,
        rep.problem_count,
        rep.problems
    );
    Ok(())
}

/// Every chunk label on the rig's group: the test group hands out space
/// in whole tracks, so chunks begin on track boundaries.
pub(super) async fn scan(rig: &Rig) -> Result<Vec<audit::FoundChunk>> {
    let end = *rig.next_off.lock().unwrap();
    let mut found = Vec::new();
    let mut at = 0;
    while at < end {
        match audit::read_chunk(rig.group.as_ref(), 7, at).await? {
            Some(f) => {
                at += f.head.head_bytes + f.head.slots * TRACK;
                found.push(f);
            }
            None => at += TRACK,
        }
    }
    Ok(found)
}

/// Throws the saved maps, chunks and areas away, rebuilds them from the
/// labels (what `pool recover` does) and reloads the family from them:
/// every image must read what the model says.
pub(super) async fn recover(rig: &mut Rig, m: &Model) -> std::result::Result<(), TestCaseError> {
    let fail = |e: Error| TestCaseError::fail(e.chain());
    rig.fam.commit().await.map_err(fail)?;
    // The pool zeroes the label of every chunk it is given back.
    for (off, _) in rig.fam.take_released() {
        rig.group
            .write(off, IoBuf::new(4096), false)
            .await
            .1
            .map_err(fail)?;
    }
    let rec = rig.persist.0.lock().unwrap().rec.clone().unwrap();
    let found = scan(rig).await.map_err(fail)?;
    let rebuilt = audit::rebuild(&rec, found).map_err(fail)?;
    {
        let mut s = rig.persist.0.lock().unwrap();
        s.pages.clear();
        s.areas.clear();
        s.chunks.clear();
        for (id, pages) in rebuilt.pages {
            for (p, b) in pages {
                s.pages.insert((id, p), b);
            }
        }
        for (id, areas) in rebuilt.areas {
            for (a, k) in areas {
                s.areas.insert((id, a), k);
            }
        }
        for c in rebuilt.chunks {
            s.chunks.insert(c.first_slot, c);
        }
    }
    rig.crash(&mut |_| true);
    for (name, want) in &m.live {
        let got = rig.read(name).await.map_err(fail)?;
        if &got != want {
            let i = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
            return Err(TestCaseError::fail(format!(
                "{name} read from recovered maps differs at byte {i} (track {}): got {:#x}, want {:#x}",
                i as u64 / TRACK,
                got[i],
                want[i]
            )));
        }
    }
    // The recovered family runs on: its labels still agree with its maps.
    check(rig, &Op::Flush).await
}

macro_rules! recovered {
    ($name:ident, $mode:expr, $scheme:expr) => {
        proptest! {
            #![proptest_config(ProptestConfig {
                cases: std::env::var("FERROSAN_COPY_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(16),
                ..ProptestConfig::default()
            })]
            #[test]
            fn $name(ops in prop::collection::vec(op(), 1..40)) {
                // Whole tracks zeroed have no slot to describe: `run`
                // recovers only histories without them.
                let ops: Vec<Op> = ops.into_iter().filter(|o| !matches!(o, Op::Zero { .. })).collect();
                crate::rt::block_on(run($mode, $scheme, &ops))?;
            }
        }
    };
}

recovered!(
    recover_row_changed_pointer,
    CopyMode::Row,
    Scheme::ChangedPointer
);
recovered!(
    recover_row_partial_bitmap,
    CopyMode::Row,
    Scheme::PartialBitmap
);
recovered!(recover_cow_bitmap, CopyMode::Cow, Scheme::Bitmap);
recovered!(recover_cow_full_pointer, CopyMode::Cow, Scheme::FullPointer);

#[test]
fn a_damaged_label_is_named_by_the_check() {
    crate::rt::block_on(async {
        let mut rig = Rig::new(CopyMode::Row, Scheme::ChangedPointer, 16 << 20);
        rig.copy("o", "c", Scheme::ChangedPointer).await.unwrap();
        w(&rig, 0, (4 * TRACK) as usize, 5).await;
        rig.fam.commit().await.unwrap();
        let healthy = rig.fam.check_labels().await.unwrap();
        assert!(healthy.problems.is_empty(), "{:?}", healthy.problems);
        assert!(healthy.checked >= 4, "{healthy:?}");
        // One byte of the first descriptor block flips.
        let found = scan(&rig).await.unwrap();
        let at = found[0].at + crate::copy::label::BLOCK + 100;
        let (mut b, r) = rig.group.read(at & !4095, IoBuf::new(4096)).await;
        r.unwrap();
        b.as_mut_slice()[(at & 4095) as usize] ^= 0x40;
        rig.group.write(at & !4095, b, false).await.1.unwrap();
        let rep = rig.fam.check_labels().await.unwrap();
        assert!(
            rep.problems.iter().any(|p| p
                .contains(&format!("chunk of slot {}", found[0].head.first_slot))
                && p.contains("checksum mismatch")),
            "{:?}",
            rep.problems
        );
    });
}

/// `pool check` holds the family's commits only while it reads one
/// chunk's label: a commit goes through while the check waits on a slow
/// disk for a later chunk, and what the commit changed is not reported as
/// a difference.
#[test]
fn commits_go_on_while_the_check_reads_a_chunk() {
    crate::rt::block_on(async {
        let scheme = Scheme::ChangedPointer;
        let mut rig = Rig::new(CopyMode::Row, scheme, 16 << 20);
        w(&rig, 0, SIZE as usize, 1).await;
        rig.copy("o", "c", scheme).await.unwrap();
        w(&rig, 0, (TRACKS / 2 * TRACK) as usize, 2).await;
        rig.fam.commit().await.unwrap();
        let found = scan(&rig).await.unwrap();
        assert!(found.len() >= 2, "several chunks: {}", found.len());
        let (arrived, go) = rig.group.hold_read(found[1].at, crate::copy::label::BLOCK);
        let check = rig.fam.check_labels();
        let meanwhile = async {
            arrived.await.unwrap();
            // o rewrites what the check expects of the first chunks; c
            // writes tracks of its own.
            w(&rig, 0, SIZE as usize, 3).await;
            let (_, r) = rig.devs["c"]
                .write(0, IoBuf::from_slice(&vec![4; (2 * TRACK) as usize]), false)
                .await;
            r.unwrap();
            let commit = rig.fam.commit();
            let done = tokio::time::timeout(std::time::Duration::from_secs(20), commit).await;
            go.send(()).unwrap();
            done
        };
        let (rep, committed) = futures::join!(check, meanwhile);
        committed
            .expect("the commit waited for the whole check")
            .unwrap();
        let rep = rep.unwrap();
        assert!(rep.problems.is_empty(), "{:?}", rep.problems);
        assert!(rep.checked > 0, "{rep:?}");
        let after = rig.fam.check_labels().await.unwrap();
        assert!(after.problems.is_empty(), "{:?}", after.problems);
        let mut want = vec![3u8; SIZE as usize];
        assert_eq!(rig.read("o").await.unwrap(), want);
        want.fill(1);
        want[..(2 * TRACK) as usize].fill(4);
        assert_eq!(rig.read("c").await.unwrap(), want);
    });
}
