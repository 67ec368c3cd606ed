//! Worked cases of the copy family beside the model test: the I/O a
//! first and a second write cost (SEED-SPECS A.e), creation moving no
//! data, each image's own pointer set, running out of space, what a
//! frozen node with one reader gives back, what a commit stores, the
//! format-1 record's move to rows, cascade levels, a split's mode, and
//! what a restore in progress refuses.

use super::*;

/// A1's first write to a shared track costs 1 read + 2 writes, the second
/// write to it 1 write (SEED-SPECS A.e item 4); A2's first write 1 write.
#[test]
fn io_counts_of_first_and_second_writes() {
    for (mode, first, second) in [
        (CopyMode::Cow, (1, 2), (0, 1)),
        (CopyMode::Row, (0, 1), (0, 1)),
    ] {
        let mut rig = Rig::unlabelled(mode, Scheme::ChangedPointer, 16 << 20);
        crate::rt::block_on(rig.copy("o", "c", Scheme::ChangedPointer)).unwrap();
        let count = |r: &Rig| {
            (
                r.group.reads.load(std::sync::atomic::Ordering::SeqCst)
                    + r.base.reads.load(std::sync::atomic::Ordering::SeqCst),
                r.group.writes.load(std::sync::atomic::Ordering::SeqCst)
                    + r.base.writes.load(std::sync::atomic::Ordering::SeqCst),
            )
        };
        let b0 = count(&rig);
        crate::rt::block_on(rig.devs["o"].write(TRACK * 3, IoBuf::from_slice(&[7; 4096]), false))
            .1
            .unwrap();
        let b1 = count(&rig);
        crate::rt::block_on(rig.devs["o"].write(TRACK * 3, IoBuf::from_slice(&[8; 4096]), false))
            .1
            .unwrap();
        let b2 = count(&rig);
        assert_eq!((b1.0 - b0.0, b1.1 - b0.1), first, "{mode:?} first write");
        assert_eq!((b2.0 - b1.0, b2.1 - b1.1), second, "{mode:?} second write");
        // The copy still reads the old data.
        let c = crate::rt::block_on(rig.read("c")).unwrap();
        assert!(
            c[(TRACK * 3) as usize..(TRACK * 3) as usize + 4096]
                .iter()
                .all(|&b| b == 0)
        );
    }
}

/// Taking a copy moves no data (A.e item 1): no disk I/O but the flush.
#[test]
fn creating_a_copy_moves_no_data() {
    for mode in [CopyMode::Cow, CopyMode::Row] {
        let mut rig = Rig::unlabelled(mode, Scheme::PartialBitmap, 16 << 20);
        crate::rt::block_on(rig.devs["o"].write(
            0,
            IoBuf::from_slice(&vec![5; SIZE as usize]),
            false,
        ))
        .1
        .unwrap();
        let io = |r: &Rig| {
            r.group.reads.load(std::sync::atomic::Ordering::SeqCst)
                + r.group.writes.load(std::sync::atomic::Ordering::SeqCst)
                + r.base.reads.load(std::sync::atomic::Ordering::SeqCst)
                + r.base.writes.load(std::sync::atomic::Ordering::SeqCst)
        };
        let before = io(&rig);
        crate::rt::block_on(rig.copy("o", "c1", Scheme::PartialBitmap)).unwrap();
        crate::rt::block_on(rig.copy("o", "c2", Scheme::ChangedPointer)).unwrap();
        assert_eq!(io(&rig), before, "{mode:?}");
        assert_eq!(
            crate::rt::block_on(rig.read("c2")).unwrap(),
            vec![5; SIZE as usize]
        );
    }
}

/// Under A2 each image's new data is enumerable on its own (US 6,779,094
/// claims 4-6): the two leaves hold exactly the tracks each wrote.
#[test]
fn each_image_new_data_is_its_own_pointer_set() {
    let mut rig = Rig::new(CopyMode::Row, Scheme::ChangedPointer, 16 << 20);
    crate::rt::block_on(rig.copy("o", "c", Scheme::ChangedPointer)).unwrap();
    for t in [1, 4, 9] {
        crate::rt::block_on(rig.devs["o"].write(t * TRACK, IoBuf::from_slice(&[1; 512]), false))
            .1
            .unwrap();
    }
    for t in [2, 4] {
        crate::rt::block_on(rig.devs["c"].write(t * TRACK, IoBuf::from_slice(&[2; 512]), false))
            .1
            .unwrap();
    }
    let st = rig.fam.read_state();
    let tracks_of = |name: &str| -> Vec<u64> {
        let own = st.own_nodes(name);
        let mut v: Vec<u64> = own
            .iter()
            .flat_map(|id| {
                st.nodes[id]
                    .map
                    .entries()
                    .map(|(t, _)| t)
                    .collect::<Vec<_>>()
            })
            .collect();
        v.sort_unstable();
        v
    };
    assert_eq!(tracks_of("o"), vec![1, 4, 9]);
    assert_eq!(tracks_of("c"), vec![2, 4]);
}

/// A2 out of space: the writer gets ENOSPC and nothing written is lost;
/// A1 out of space: the copy becomes invalid, the origin keeps working.
#[test]
fn running_out_of_space() {
    // Room for very few slots.
    let mut rig = Rig::new(CopyMode::Row, Scheme::ChangedPointer, 16 * TRACK);
    crate::rt::block_on(rig.copy("o", "c", Scheme::ChangedPointer)).unwrap();
    let mut wrote = Vec::new();
    let mut hit = None;
    for t in 0..TRACKS {
        let (_, r) = crate::rt::block_on(rig.devs["o"].write(
            t * TRACK,
            IoBuf::from_slice(&[t as u8 + 1; 1024]),
            false,
        ));
        match r {
            Ok(()) => wrote.push(t),
            Err(e) => {
                hit = Some(e);
                break;
            }
        }
    }
    let e = hit.expect("space ran out");
    assert_eq!(e.kind(), ErrorKind::NoSpace, "{e}");
    let o = crate::rt::block_on(rig.read("o")).unwrap();
    for t in wrote {
        assert_eq!(o[(t * TRACK) as usize], t as u8 + 1, "track {t} kept");
    }
    let mut rig = Rig::new(CopyMode::Cow, Scheme::ChangedPointer, 8 * TRACK);
    crate::rt::block_on(rig.copy("o", "c", Scheme::ChangedPointer)).unwrap();
    for t in 0..TRACKS {
        let (_, r) = crate::rt::block_on(rig.devs["o"].write(
            t * TRACK,
            IoBuf::from_slice(&[9; 1024]),
            false,
        ));
        assert!(r.is_ok(), "the origin never fails: {r:?}");
    }
    let e = crate::rt::block_on(rig.read("c")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.message().contains("invalid"), "{e}");
    assert!(
        crate::rt::block_on(rig.read("o")).unwrap()[..1024]
            .iter()
            .all(|&b| b == 9)
    );
}

#[test]
fn a_frozen_node_with_one_reader_gives_back_what_it_rewrote() {
    for scheme in Scheme::ALL {
        crate::rt::block_on(async {
            let mut rig = Rig::new(CopyMode::Row, scheme, 64 << 20);
            w(&rig, 0, SIZE as usize, 1).await;
            rig.copy("o", "old", scheme).await.unwrap();
            // Since "old": whole tracks 0..12, one granule of 12..16.
            w(&rig, 0, (12 * TRACK) as usize, 2).await;
            for t in 12..16 {
                w(&rig, t * TRACK, 512, 2).await;
            }
            rig.copy("o", "fresh", scheme).await.unwrap();
            let frozen = {
                let st = rig.fam.read_state();
                let crate::copy::family::Head::Leaf(l) = st.image("o").unwrap().head else {
                    panic!("an A2 original has a leaf")
                };
                st.nodes[&l].parent.unwrap()
            };
            // Since "fresh": the same again, but tracks 14 and 15 get
            // another granule.
            w(&rig, 0, (12 * TRACK) as usize, 3).await;
            for t in 12..14 {
                w(&rig, t * TRACK, 512, 3).await;
            }
            for t in 14..16 {
                w(&rig, t * TRACK + 1024, 512, 3).await;
            }
            let mut want = vec![1u8; SIZE as usize];
            want[..(12 * TRACK) as usize].fill(3);
            for t in 12..14 {
                want[(t * TRACK) as usize..(t * TRACK + 512) as usize].fill(3);
            }
            for t in 14..16 {
                want[(t * TRACK) as usize..(t * TRACK + 512) as usize].fill(2);
                want[(t * TRACK + 1024) as usize..(t * TRACK + 1536) as usize].fill(3);
            }
            let before = rig.fam.read_state().nodes[&frozen].map.len();
            assert_eq!(before, 16, "{scheme}");
            rig.delete("fresh").await;
            {
                let st = rig.fam.read_state();
                let left: Vec<u64> = st.nodes[&frozen].map.entries().map(|(t, _)| t).collect();
                assert_eq!(
                    left,
                    vec![14, 15],
                    "{scheme}: only what o has not covered stays"
                );
                assert_eq!(
                    st.store.used_slots(),
                    held_slots(&st),
                    "{scheme}: freed after the save"
                );
            }
            assert_eq!(rig.read("o").await.unwrap(), want, "{scheme}");
            assert_eq!(
                rig.read("old").await.unwrap(),
                vec![1; SIZE as usize],
                "{scheme}"
            );
            let used_before = rig.fam.read_state().store.used_slots();
            // o covers the rest; the next commit drops it, the node goes.
            for t in 14..16 {
                w(&rig, t * TRACK, 512, 4).await;
                want[(t * TRACK) as usize..(t * TRACK + 512) as usize].fill(4);
            }
            rig.fam.commit().await.unwrap();
            rig.fam.commit().await.unwrap();
            {
                let st = rig.fam.read_state();
                assert!(
                    !st.nodes.contains_key(&frozen),
                    "{scheme}: the emptied node left"
                );
                assert_eq!(st.nodes.len(), 3, "{scheme}: the old point and two leaves");
                assert_eq!(st.store.used_slots(), held_slots(&st), "{scheme}");
                assert!(
                    st.store.used_slots() < used_before,
                    "{scheme}: space given back"
                );
            }
            assert_eq!(rig.read("o").await.unwrap(), want, "{scheme}");
            assert_eq!(
                rig.read("old").await.unwrap(),
                vec![1; SIZE as usize],
                "{scheme}"
            );
            rig.crash(&mut |_| true);
            assert_eq!(
                rig.read("o").await.unwrap(),
                want,
                "{scheme}: after a restart"
            );
            assert_eq!(
                rig.read("old").await.unwrap(),
                vec![1; SIZE as usize],
                "{scheme}"
            );
        });
    }
}

/// A rewrite in place of granules the original's leaf already holds
/// changes no entry, so the flush after it saves no metadata; a write
/// that makes another granule of the track valid is saved. Both read
/// right, and after a crash that keeps no unflushed write.
#[test]
fn a_rewrite_in_place_saves_no_metadata() {
    for scheme in Scheme::ALL {
        crate::rt::block_on(async {
            let mut rig = Rig::new(CopyMode::Row, scheme, 64 << 20);
            w(&rig, 0, SIZE as usize, 1).await;
            rig.copy("o", "c", scheme).await.unwrap();
            let saves = |r: &Rig| r.persist.0.lock().unwrap().saves;
            let t = 3 * TRACK;
            w(&rig, t, 1024, 2).await;
            rig.fam.commit().await.unwrap();
            let first = saves(&rig);
            // The same two granules, then one of them.
            w(&rig, t, 1024, 3).await;
            w(&rig, t + 512, 512, 4).await;
            rig.fam.commit().await.unwrap();
            assert_eq!(
                saves(&rig),
                first,
                "{scheme}: a rewrite in place saved metadata"
            );
            w(&rig, t + 4096, 512, 5).await;
            rig.fam.commit().await.unwrap();
            assert_eq!(saves(&rig), first + 1, "{scheme}: a new granule is saved");
            let mut want = vec![1u8; SIZE as usize];
            want[t as usize..(t + 512) as usize].fill(3);
            want[(t + 512) as usize..(t + 1024) as usize].fill(4);
            want[(t + 4096) as usize..(t + 4608) as usize].fill(5);
            assert_eq!(rig.read("o").await.unwrap(), want, "{scheme}");
            assert_eq!(
                rig.read("c").await.unwrap(),
                vec![1; SIZE as usize],
                "{scheme}"
            );
            rig.crash(&mut |_| false);
            assert_eq!(
                rig.read("o").await.unwrap(),
                want,
                "{scheme}: after a crash"
            );
            assert_eq!(
                rig.read("c").await.unwrap(),
                vec![1; SIZE as usize],
                "{scheme}"
            );
        });
    }
}

/// The family's record (the tree and the images) is stored only when it
/// changes: a commit of new writes to a family of several copies stores
/// their pages and the chunk and area rows they added, not the record,
/// and no record holds chunks or areas inline (pool format 2). Both
/// images read right after a crash.
#[test]
fn a_commit_of_new_writes_stores_rows_not_the_record() {
    for mode in [CopyMode::Row, CopyMode::Cow] {
        for scheme in Scheme::ALL {
            crate::rt::block_on(async {
                let mut rig = Rig::new(mode, scheme, 64 << 20);
                w(&rig, 0, SIZE as usize, 1).await;
                for (i, name) in ["c1", "c2", "c3"].into_iter().enumerate() {
                    rig.copy("o", name, scheme).await.unwrap();
                    w(&rig, i as u64 * TRACK, 512, 2 + i as u8).await;
                }
                rig.fam.commit().await.unwrap();
                let counts = |r: &Rig| {
                    let s = r.persist.0.lock().unwrap();
                    (s.saves, s.rec_saves)
                };
                let (saves, rec_saves) = counts(&rig);
                // First writes to tracks no image has written since c3.
                for t in 10..20 {
                    w(&rig, t * TRACK + 1024, 2048, 9).await;
                }
                rig.fam.commit().await.unwrap();
                let (saves2, rec_saves2) = counts(&rig);
                let what = format!("{mode:?} {scheme}");
                assert!(saves2 > saves, "{what}: the new writes were saved");
                assert_eq!(rec_saves2, rec_saves, "{what}: the record was stored again");
                {
                    let s = rig.persist.0.lock().unwrap();
                    let rec = s.rec.as_ref().unwrap();
                    assert!(rec.chunks.is_empty(), "{what}: chunks inline");
                    assert!(
                        rec.nodes.iter().all(|n| n.areas.is_empty()),
                        "{what}: areas inline"
                    );
                    assert!(!s.chunks.is_empty(), "{what}: no chunk rows");
                    if scheme.load_point() {
                        assert!(!s.areas.is_empty(), "{what}: no area rows");
                    } else {
                        assert!(s.areas.is_empty(), "{what}: area rows of a pointer scheme");
                    }
                }
                let mut want = vec![1u8; SIZE as usize];
                for i in 0..3usize {
                    let t = i * TRACK as usize;
                    want[t..t + 512].fill(2 + i as u8);
                }
                for t in 10..20usize {
                    let at = t * TRACK as usize + 1024;
                    want[at..at + 2048].fill(9);
                }
                let c3 = {
                    let mut v = want.clone();
                    for t in 10..20usize {
                        let at = t * TRACK as usize + 1024;
                        v[at..at + 2048].fill(1);
                    }
                    v[2 * TRACK as usize..2 * TRACK as usize + 512].fill(1);
                    v
                };
                assert_eq!(rig.read("o").await.unwrap(), want, "{what}");
                assert_eq!(rig.read("c3").await.unwrap(), c3, "{what}");
                rig.crash(&mut |_| false);
                assert_eq!(rig.read("o").await.unwrap(), want, "{what}: after a crash");
                assert_eq!(rig.read("c3").await.unwrap(), c3, "{what}: after a crash");
                assert_eq!(
                    rig.read("c1").await.unwrap(),
                    vec![1; SIZE as usize],
                    "{what}: after a crash"
                );
            });
        }
    }
}

/// A record of pool format 1 held the store's chunks and the nodes' areas
/// inline: it loads as it is, and the next save moves both to rows of
/// their own and stores the record without them.
#[test]
fn a_format_1_record_loads_and_moves_its_chunks_and_areas_to_rows() {
    for mode in [CopyMode::Row, CopyMode::Cow] {
        for scheme in Scheme::ALL {
            crate::rt::block_on(async {
                let mut rig = Rig::new(mode, scheme, 64 << 20);
                w(&rig, 0, SIZE as usize, 1).await;
                rig.copy("o", "c", scheme).await.unwrap();
                for t in [1, 5, 17] {
                    w(&rig, t * TRACK, 4096, 2).await;
                }
                rig.fam.commit().await.unwrap();
                let what = format!("{mode:?} {scheme}");
                // What format 1 stored: everything in the record.
                {
                    let mut s = rig.persist.0.lock().unwrap();
                    let mut rec = s.rec.clone().unwrap();
                    rec.chunks = std::mem::take(&mut s.chunks).into_values().collect();
                    let areas = std::mem::take(&mut s.areas);
                    for n in &mut rec.nodes {
                        n.areas = areas
                            .range((n.id, 0)..=(n.id, u64::MAX))
                            .map(|(&(_, f), &c)| (f, c))
                            .collect();
                    }
                    assert!(!rec.chunks.is_empty(), "{what}: no chunks to move");
                    s.rec = Some(rec);
                }
                let mut want = vec![1u8; SIZE as usize];
                for t in [1usize, 5, 17] {
                    want[t * TRACK as usize..t * TRACK as usize + 4096].fill(2);
                }
                rig.crash(&mut |_| false);
                assert_eq!(rig.read("o").await.unwrap(), want, "{what}: format 1");
                assert_eq!(
                    rig.read("c").await.unwrap(),
                    vec![1; SIZE as usize],
                    "{what}"
                );
                // The next save (a write to a track already diverged).
                w(&rig, TRACK, 512, 3).await;
                want[TRACK as usize..TRACK as usize + 512].fill(3);
                rig.fam.commit().await.unwrap();
                {
                    let s = rig.persist.0.lock().unwrap();
                    let rec = s.rec.as_ref().unwrap();
                    assert!(rec.chunks.is_empty(), "{what}: chunks still inline");
                    assert!(
                        rec.nodes.iter().all(|n| n.areas.is_empty()),
                        "{what}: areas inline"
                    );
                    assert!(!s.chunks.is_empty(), "{what}: chunks not moved to rows");
                    assert_eq!(
                        s.areas.is_empty(),
                        !scheme.load_point(),
                        "{what}: areas not moved to rows"
                    );
                }
                rig.crash(&mut |_| false);
                assert_eq!(rig.read("o").await.unwrap(), want, "{what}: format 2");
                assert_eq!(
                    rig.read("c").await.unwrap(),
                    vec![1; SIZE as usize],
                    "{what}"
                );
            });
        }
    }
}

/// DEPTH in `copy list` is the cascade level: a copy of the original is 1,
/// a copy of that copy 2, a copy of that 3 — however many tree nodes the
/// chains hold.
#[test]
fn the_cascade_level_counts_copy_steps_not_tree_nodes() {
    for mode in [CopyMode::Row, CopyMode::Cow] {
        crate::rt::block_on(async {
            let mut rig = Rig::new(mode, Scheme::ChangedPointer, 64 << 20);
            rig.copy("o", "c1", Scheme::ChangedPointer).await.unwrap();
            // Writes and more copies of the original between the steps add
            // views and leaves to every chain.
            w(&rig, 0, 4096, 1).await;
            rig.copy("o", "x1", Scheme::ChangedPointer).await.unwrap();
            rig.copy("c1", "c2", Scheme::ChangedPointer).await.unwrap();
            w(&rig, TRACK, 4096, 2).await;
            rig.copy("o", "x2", Scheme::ChangedPointer).await.unwrap();
            rig.copy("c2", "c3", Scheme::ChangedPointer).await.unwrap();
            let st = rig.fam.read_state();
            let levels: Vec<(String, u64)> = ["o", "c1", "c2", "c3", "x1", "x2"]
                .iter()
                .map(|n| (n.to_string(), st.cascade_level(n)))
                .collect();
            let want: Vec<(String, u64)> = [
                ("o", 0),
                ("c1", 1),
                ("c2", 2),
                ("c3", 3),
                ("x1", 1),
                ("x2", 1),
            ]
            .iter()
            .map(|(n, l)| (n.to_string(), *l))
            .collect();
            assert_eq!(levels, want, "{mode:?}");
            let nodes = st.chain(st.images["c3"].head).len() as u64;
            assert_ne!(
                nodes, 3,
                "{mode:?}: the chain length would pass for the level"
            );
        });
    }
}

/// A split turns an A2 (row) family into A1 inside; the copies still show
/// the mode they were made with, after a restart too.
#[test]
fn a_row_family_stays_row_for_the_user_after_a_split() {
    crate::rt::block_on(async {
        let mut rig = Rig::new(CopyMode::Row, Scheme::PartialBitmap, 64 << 20);
        w(&rig, 0, SIZE as usize, 1).await;
        rig.copy("o", "c", Scheme::PartialBitmap).await.unwrap();
        w(&rig, TRACK, 4096, 2).await;
        rig.split(false).await.unwrap();
        {
            let st = rig.fam.read_state();
            assert_eq!(st.mode, CopyMode::Cow, "the split works as A1 inside");
            assert_eq!(st.asked, CopyMode::Row);
        }
        rig.fam.commit().await.unwrap();
        let rec = rig.persist.0.lock().unwrap().rec.clone().unwrap();
        assert_eq!(rec.asked, Some(CopyMode::Row));
        rig.crash(&mut |_| true);
        assert_eq!(rig.fam.read_state().asked, CopyMode::Row, "after a restart");
    });
}

/// While a restore moves data into the base, another restore, a split
/// and the origin's deletion are refused with the job to wait for; once
/// it ended, a split goes.
#[test]
fn a_restore_in_progress_refuses_changes_of_the_tree_naming_its_job() {
    let mut rig = Rig::new(CopyMode::Cow, Scheme::ChangedPointer, 16 << 20);
    crate::rt::block_on(async {
        rig.copy("o", "c", Scheme::ChangedPointer).await.unwrap();
        w(&rig, TRACK, 4096, 3).await;
        assert_eq!(rig.restore("c").await.unwrap().as_deref(), Some("o"));
    });
    assert!(
        rig.fam.read_state().restore.is_some(),
        "the A1 base restores through a job"
    );
    {
        let (mut ids, mut maps) = rig.ids_and_maps();
        let again = (rig.fam.write_state())
            .restore_from("o", "c", 2, &mut ids, &mut maps)
            .map(|_| ());
        let split = (rig.fam.write_state())
            .start_split("c", "o", 2, &mut ids, &mut maps)
            .map(|_| ());
        let hand_over = rig.fam.write_state().hand_over_base("c").map(|_| ());
        let refusals = [again, split, hand_over];
        for r in refusals {
            let e = r.expect_err("refused while the restore runs");
            assert_eq!(e.kind(), crate::error::ErrorKind::Conflict);
            assert_eq!(
                e.to_string(),
                "o is still being restored from c (job 1): wait for that job first"
            );
        }
    }
    crate::rt::block_on(async {
        rig.finish_restore().await.unwrap();
        assert!(!rig.split(false).await.unwrap().is_empty());
    });
}
