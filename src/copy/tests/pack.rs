//! Free-space collection by active counts (`copy/pack.rs`): a sparse
//! area's live tracks move into single slots, the area goes back, and
//! every image reads the same before and after, after a restart too.

use super::*;
use crate::copy::audit;

/// Writes one 8 KiB track of `v` at track `t` of image `img`.
async fn wt(rig: &Rig, img: &str, t: u64, v: u8) {
    let (_, r) = rig.devs[img]
        .write(
            t * TRACK,
            IoBuf::from_slice(&vec![v; TRACK as usize]),
            false,
        )
        .await;
    r.unwrap();
}

/// Packs every area of the family at most half live, as the job does
/// with `packing` set; how many were given back.
async fn pack_all(rig: &Rig) -> usize {
    let found = rig.fam.read_state().pack_candidates(|c, k| c * 2 <= k);
    rig.fam.set_packing(true);
    let mut given = 0;
    for (_, id, e0, area) in found {
        if rig.fam.pack_area((id, e0, area), 4).await.unwrap() {
            given += 1;
        }
    }
    rig.fam.set_packing(false);
    rig.fam.commit().await.unwrap();
    given
}

#[test]
fn a_sparse_area_packs_into_single_slots_and_reads_the_same() {
    crate::rt::block_on(async {
        let mut rig = Rig::new(CopyMode::Row, Scheme::PartialBitmap, 64 << 20);
        w(&rig, 0, SIZE as usize, 1).await;
        rig.copy("o", "c0", Scheme::PartialBitmap).await.unwrap();
        // Three tracks of the original's new leaf: its one area holds 24
        // slots for 3 live tracks.
        let mut want = vec![1u8; SIZE as usize];
        for (t, v) in [(2, 7), (11, 8), (20, 9)] {
            wt(&rig, "o", t, v).await;
            want[(t * TRACK) as usize..((t + 1) * TRACK) as usize].fill(v);
        }
        rig.fam.commit().await.unwrap();
        let before = rig.fam.read_state().store.used_slots();
        let leaf_area = {
            let st = rig.fam.read_state();
            let found = st.pack_candidates(|c, k| c * 2 <= k);
            assert_eq!(found.len(), 1, "{found:?}");
            (found[0].1, found[0].3.0)
        };
        assert_eq!(pack_all(&rig).await, 1, "the leaf's one area goes back");
        // Rebuilt from the labels before the next commit describes the
        // area's slots free (found by review: its unused positions still
        // said reserved, and the area came back as a spare).
        let rec = rig.persist.0.lock().unwrap().rec.clone().unwrap();
        let rebuilt = audit::rebuild(&rec, labels::scan(&rig).await.unwrap()).unwrap();
        let listed = rebuilt.areas.get(&leaf_area.0).cloned().unwrap_or_default();
        assert!(
            !listed.iter().any(|a| a.0 == leaf_area.1),
            "the packed area came back: {listed:?}"
        );
        let st = rig.fam.read_state();
        let after = st.store.used_slots();
        assert_eq!(after, held_slots(&st), "freed after the save");
        assert_eq!(
            before - after,
            TRACKS - 3,
            "24 slots of area held for 3 tracks become 3 single slots"
        );
        drop(st);
        assert_eq!(rig.read("o").await.unwrap(), want);
        assert_eq!(rig.read("c0").await.unwrap(), vec![1; SIZE as usize]);
        // The extent is packed: a new track takes a single slot, a
        // rewrite goes in place, and no area is reserved again.
        wt(&rig, "o", 5, 42).await;
        wt(&rig, "o", 11, 43).await;
        want[(5 * TRACK) as usize..(6 * TRACK) as usize].fill(42);
        want[(11 * TRACK) as usize..(12 * TRACK) as usize].fill(43);
        rig.fam.commit().await.unwrap();
        let st = rig.fam.read_state();
        assert_eq!(st.store.used_slots(), after + 1, "one single slot more");
        drop(st);
        assert_eq!(rig.read("o").await.unwrap(), want);
        // A crash keeps what was committed: the singles are restored.
        rig.crash(&mut |_| true);
        assert_eq!(rig.read("o").await.unwrap(), want);
        assert_eq!(rig.read("c0").await.unwrap(), vec![1; SIZE as usize]);
        labels::check(&rig, &Op::Flush).await.unwrap();
    });
}

#[test]
fn packing_a_dead_entry_frozen_area_frees_it_once_readers_rewrote() {
    crate::rt::block_on(async {
        let mut rig = Rig::new(CopyMode::Row, Scheme::PartialBitmap, 64 << 20);
        w(&rig, 0, SIZE as usize, 1).await;
        rig.copy("o", "c0", Scheme::PartialBitmap).await.unwrap();
        w(&rig, 0, SIZE as usize, 2).await;
        // A copy point: o's leaf freezes with 24 tracks; o and k then
        // rewrite all but two of them, so only two entries of the frozen
        // node are read any more, and its area is sparse.
        rig.copy("o", "k", Scheme::PartialBitmap).await.unwrap();
        w(&rig, 0, 22 * TRACK as usize, 3).await;
        for t in 0..22 {
            wt(&rig, "k", t, 4).await;
        }
        rig.fam.commit().await.unwrap();
        let given = pack_all(&rig).await;
        assert!(given >= 1, "the frozen node's area goes back");
        let mut want_o = vec![2u8; SIZE as usize];
        want_o[..(22 * TRACK) as usize].fill(3);
        assert_eq!(rig.read("o").await.unwrap(), want_o);
        let mut want_k = vec![2u8; SIZE as usize];
        want_k[..(22 * TRACK) as usize].fill(4);
        assert_eq!(rig.read("k").await.unwrap(), want_k);
        assert_eq!(rig.read("c0").await.unwrap(), vec![1; SIZE as usize]);
        rig.crash(&mut |_| true);
        assert_eq!(rig.read("k").await.unwrap(), want_k);
        assert_eq!(rig.read("o").await.unwrap(), want_o);
    });
}

/// Found by review: after a restart, a packed extent whose first entry is
/// a single slot forgot it was packed, and the next write there reserved
/// a whole area again.
#[test]
fn a_packed_extent_stays_packed_after_a_restart() {
    crate::rt::block_on(async {
        let mut rig = Rig::new(CopyMode::Row, Scheme::PartialBitmap, 64 << 20);
        w(&rig, 0, SIZE as usize, 1).await;
        rig.copy("o", "c0", Scheme::PartialBitmap).await.unwrap();
        wt(&rig, "o", 2, 7).await;
        rig.fam.commit().await.unwrap();
        assert_eq!(pack_all(&rig).await, 1);
        rig.crash(&mut |_| true);
        let before = rig.fam.read_state().store.used_slots();
        wt(&rig, "o", 3, 8).await;
        rig.fam.commit().await.unwrap();
        assert_eq!(
            rig.fam.read_state().store.used_slots(),
            before + 1,
            "a single slot, not an area"
        );
        let mut want = vec![1u8; SIZE as usize];
        want[(2 * TRACK) as usize..(3 * TRACK) as usize].fill(7);
        want[(3 * TRACK) as usize..(4 * TRACK) as usize].fill(8);
        assert_eq!(rig.read("o").await.unwrap(), want);
    });
}

/// Found by the model test (a packed area emptied its chunk, and a
/// recover after a crash found the chunk's label again): an emptied chunk
/// went back to the group as soon as it emptied, while the database still
/// listed it until the family's next commit — a crash in between, after
/// the group gave the space to a new volume, would have left two owners
/// of it. It goes back only once its removal is saved, its label cleared
/// with the row.
#[test]
fn an_emptied_chunk_goes_back_only_once_its_removal_is_saved() {
    crate::rt::block_on(async {
        let rig = Rig::new(CopyMode::Row, Scheme::PartialBitmap, 64 << 20);
        w(&rig, 0, SIZE as usize, 1).await;
        rig.fam.commit().await.unwrap();
        let listed = |rig: &Rig| -> Vec<u64> {
            let s = rig.persist.0.lock().unwrap();
            s.chunks.values().map(|c| c.group_off - c.head).collect()
        };
        let first = listed(&rig);
        assert_eq!(first.len(), 1, "one chunk holds the area");
        // Packed whole: every track moves to single slots of a new chunk,
        // and the area's chunk empties.
        let found = rig.fam.read_state().pack_candidates(|_, _| true);
        rig.fam.set_packing(true);
        for (_, id, e0, area) in found {
            assert!(rig.fam.pack_area((id, e0, area), 4).await.unwrap());
        }
        rig.fam.set_packing(false);
        let mut gone = Vec::new();
        for _ in 0..3 {
            rig.fam.commit().await.unwrap();
            for (off, _) in rig.fam.take_released() {
                assert!(
                    !listed(&rig).contains(&off),
                    "chunk at {off} handed back while the database lists it"
                );
                gone.push(off);
            }
        }
        assert_eq!(gone, first, "the emptied chunk went back");
        let head = audit::read_chunk(rig.group.as_ref(), 7, first[0])
            .await
            .unwrap();
        assert!(head.is_none(), "its label was cleared with its row");
        assert_eq!(rig.read("o").await.unwrap(), vec![1; SIZE as usize]);
    });
}

/// Found by the model test: a packed area emptied its chunk, and a crash
/// came before the next commit described the area's slots free. The
/// labels then still named the moved tracks at their old positions; a
/// rebuild from them brought the area back (`audit::rebuild` now counts
/// an area only if one of its slots is current).
#[test]
fn a_recover_right_after_packing_does_not_bring_the_area_back() {
    crate::rt::block_on(async {
        run(
            CopyMode::Row,
            Scheme::PartialBitmap,
            &[
                Op::Pack { which: 0 },
                Op::Crash {
                    keep: 6909151014820070070,
                },
            ],
        )
        .await
        .unwrap();
    });
}
