//! Free-space collection (`copy/collect.rs`): the routine that filled a
//! pool (one long-lived copy, short-lived copies made and deleted while
//! the original writes) holds no more space after any number of rounds.

use super::*;

/// Scattered small writes to "o": one 512-byte piece in every track, at
/// an offset that moves with `round` (so each round leaves granules the
/// next does not cover).
async fn scatter(rig: &Rig, want: &mut [u8], round: u64, v: u8) {
    for t in 0..TRACKS {
        let off = t * TRACK + (round * 1536 + t * 512) % TRACK;
        w(rig, off, 512, v).await;
        want[off as usize..(off + 512) as usize].fill(v);
    }
}

/// Reads and writes the group's disk has done.
fn group_io(r: &Rig) -> u64 {
    r.group.reads.load(std::sync::atomic::Ordering::SeqCst)
        + r.group.writes.load(std::sync::atomic::Ordering::SeqCst)
}

/// Collects until no pair is left (what `copy gc --wait` does).
async fn collect_all(rig: &mut Rig) -> u32 {
    let mut pairs = 0;
    while rig.fam.begin_merge().is_some() {
        rig.fam.merge_tracks(0, TRACKS, 4, 2).await.unwrap();
        assert!(rig.fam.end_merge().await.unwrap());
        rig.fam.commit().await.unwrap();
        pairs += 1;
    }
    pairs
}

#[test]
fn short_lived_copies_beside_a_long_lived_one_hold_no_more_space_after_collection() {
    for scheme in Scheme::ALL {
        crate::rt::block_on(async {
            let mut rig = Rig::new(CopyMode::Row, scheme, 64 << 20);
            w(&rig, 0, SIZE as usize, 1).await;
            rig.copy("o", "c0", scheme).await.unwrap();
            let mut want = vec![1u8; SIZE as usize];
            let mut held = Vec::new();
            for round in 0..6u64 {
                let v = 10 + round as u8;
                scatter(&rig, &mut want, round, v).await;
                rig.copy("o", "k", scheme).await.unwrap();
                scatter(&rig, &mut want, round + 7, v + 100).await;
                rig.delete("k").await;
                rig.fam.commit().await.unwrap();
                let before = rig.fam.read_state().store.used_slots();
                let pairs = collect_all(&mut rig).await;
                assert_eq!(
                    pairs, 1,
                    "{scheme} round {round}: one pair (the frozen copy point and o's leaf)"
                );
                let st = rig.fam.read_state();
                assert!(st.merge_pair().is_none(), "{scheme}: nothing left to merge");
                assert_eq!(
                    st.store.used_slots(),
                    held_slots(&st),
                    "{scheme}: freed after the save"
                );
                assert!(
                    st.store.used_slots() < before,
                    "{scheme} round {round}: collection gave space back ({} -> {})",
                    before,
                    st.store.used_slots()
                );
                held.push(st.store.used_slots());
                drop(st);
                assert_eq!(rig.read("o").await.unwrap(), want, "{scheme} round {round}");
                assert_eq!(
                    rig.read("c0").await.unwrap(),
                    vec![1; SIZE as usize],
                    "{scheme} round {round}"
                );
            }
            // What is held does not grow with the rounds: the copy point
            // of c0 and one node of o's data, each at most a track each.
            let first = held[0];
            assert!(
                held.iter().all(|&h| h <= first),
                "{scheme}: held slots grew over the rounds: {held:?}"
            );
            assert!(
                first <= 2 * TRACKS + 2 * 64,
                "{scheme}: {first} slots held for {TRACKS} tracks"
            );
            rig.crash(&mut |_| false);
            assert_eq!(
                rig.read("o").await.unwrap(),
                want,
                "{scheme}: after a restart"
            );
            assert_eq!(
                rig.read("c0").await.unwrap(),
                vec![1; SIZE as usize],
                "{scheme}: after a restart"
            );
        });
    }
}

/// While a pair is being merged, the original's writes go to the frozen
/// node once their track moved; reads stay right at every step, and a
/// crash in the middle (nothing ended) loses nothing that was flushed.
#[test]
fn writes_during_a_merge_and_a_crash_in_the_middle_lose_nothing() {
    for scheme in Scheme::ALL {
        crate::rt::block_on(async {
            let mut rig = Rig::new(CopyMode::Row, scheme, 64 << 20);
            w(&rig, 0, SIZE as usize, 1).await;
            rig.copy("o", "c0", scheme).await.unwrap();
            let mut want = vec![1u8; SIZE as usize];
            scatter(&rig, &mut want, 0, 2).await;
            rig.copy("o", "k", scheme).await.unwrap();
            scatter(&rig, &mut want, 3, 3).await;
            rig.delete("k").await;
            assert!(rig.fam.begin_merge().is_some(), "{scheme}: a pair to merge");
            rig.fam.merge_tracks(0, TRACKS / 2, 4, 1).await.unwrap();
            // Writes to moved and to unmoved tracks.
            scatter(&rig, &mut want, 5, 4).await;
            assert_eq!(rig.read("o").await.unwrap(), want, "{scheme}: mid-merge");
            rig.devs["o"].flush().await.unwrap();
            rig.fam
                .merge_tracks(TRACKS / 2, TRACKS, 4, 3)
                .await
                .unwrap();
            rig.crash(&mut |_| false);
            assert_eq!(
                rig.read("o").await.unwrap(),
                want,
                "{scheme}: after a crash mid-merge"
            );
            assert_eq!(
                rig.read("c0").await.unwrap(),
                vec![1; SIZE as usize],
                "{scheme}"
            );
            // The pair is merged again from the start, and ends.
            assert_eq!(collect_all(&mut rig).await, 1, "{scheme}");
            assert_eq!(rig.read("o").await.unwrap(), want, "{scheme}: merged");
            rig.crash(&mut |_| false);
            assert_eq!(
                rig.read("o").await.unwrap(),
                want,
                "{scheme}: merged, restarted"
            );
            assert_eq!(
                rig.read("c0").await.unwrap(),
                vec![1; SIZE as usize],
                "{scheme}"
            );
        });
    }
}

/// Where the deletion's collapse already emptied the frozen node's tracks
/// (the original rewrote them whole), the child's slots pass to the
/// frozen node as they are: no data is read or written (pointer schemes;
/// partial areas pass the same way per 64-track extent, which this rig's
/// 24 tracks cannot show, and the whole-map bitmaps copy into their fixed
/// places).
#[test]
fn rewritten_areas_pass_to_the_frozen_node_without_copying() {
    for scheme in [Scheme::ChangedPointer, Scheme::FullPointer] {
        crate::rt::block_on(async {
            let mut rig = Rig::unlabelled(CopyMode::Row, scheme, 64 << 20);
            w(&rig, 0, SIZE as usize, 1).await;
            rig.copy("o", "c0", scheme).await.unwrap();
            w(&rig, 0, SIZE as usize, 2).await;
            rig.copy("o", "k", scheme).await.unwrap();
            w(&rig, 0, (12 * TRACK) as usize, 3).await;
            rig.delete("k").await;
            let mut want = vec![2u8; SIZE as usize];
            want[..(12 * TRACK) as usize].fill(3);
            let io = group_io;
            let before = (io(&rig), rig.fam.read_state().store.used_slots());
            assert_eq!(collect_all(&mut rig).await, 1, "{scheme}");
            let after = (io(&rig), rig.fam.read_state().store.used_slots());
            assert_eq!(after.0, before.0, "{scheme}: data was copied");
            assert_eq!(
                after.1, before.1,
                "{scheme}: nothing to give back, nothing taken"
            );
            assert_eq!(rig.read("o").await.unwrap(), want, "{scheme}");
            assert_eq!(
                rig.read("c0").await.unwrap(),
                vec![1; SIZE as usize],
                "{scheme}"
            );
            rig.crash(&mut |_| false);
            assert_eq!(rig.read("o").await.unwrap(), want, "{scheme}: restarted");
            assert_eq!(
                rig.read("c0").await.unwrap(),
                vec![1; SIZE as usize],
                "{scheme}: restarted"
            );
        });
    }
}

/// A partial area of the child where the frozen node has none passes to
/// the frozen node whole, with every entry of the child in its extent:
/// nothing is read or written, nothing allocated, and only one node lists
/// the area at any commit (so a restart cannot hand it to two extents).
#[test]
fn a_partial_area_passes_whole_to_the_frozen_node() {
    crate::rt::block_on(async {
        let scheme = Scheme::PartialBitmap;
        let mut rig = Rig::new(CopyMode::Row, scheme, 64 << 20);
        w(&rig, 0, SIZE as usize, 1).await;
        rig.copy("o", "c0", scheme).await.unwrap();
        // o's leaf: zeroes over tracks 12.. (entries without an area).
        let half = 12 * TRACK;
        rig.devs["o"]
            .write_zeroes(half, SIZE - half, ZeroFlags::default())
            .await
            .unwrap();
        rig.copy("o", "k", scheme).await.unwrap();
        w(&rig, 0, half as usize, 3).await;
        rig.delete("k").await;
        let mut want = vec![0u8; SIZE as usize];
        want[..half as usize].fill(3);
        let io = group_io;
        let before = (io(&rig), rig.fam.read_state().store.used_slots());
        assert!(
            rig.fam.begin_merge().is_some(),
            "a pair: the zeroes' copy point and o's leaf"
        );
        rig.fam.merge_tracks(0, TRACKS, 4, 2).await.unwrap();
        assert_eq!(io(&rig), before.0, "data was copied");
        {
            let st = rig.fam.read_state();
            let (f, c) = st.merging.unwrap();
            assert!(st.nodes[&c].map.is_empty(), "every entry passed");
            assert!(
                st.nodes[&c].map.areas().is_empty(),
                "the child gave the area up"
            );
            assert_eq!(
                st.nodes[&f].map.areas().len(),
                1,
                "the frozen node holds it"
            );
        }
        rig.fam.commit().await.unwrap();
        rig.crash(&mut |_| false);
        assert_eq!(rig.read("o").await.unwrap(), want, "restarted mid-pair");
        assert_eq!(collect_all(&mut rig).await, 1);
        let after = rig.fam.read_state().store.used_slots();
        assert_eq!(after, before.1, "slots were taken or freed");
        assert_eq!(rig.read("o").await.unwrap(), want);
        assert_eq!(rig.read("c0").await.unwrap(), vec![1; SIZE as usize]);
    });
}
