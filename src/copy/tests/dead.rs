//! What no image reads is given back at once (`dead.rs`): a copy point
//! whose readers all rewrote a track frees its old version, whether they
//! rewrote it before a deletion took the last other reader or after.

use super::*;
use crate::meta::model::copy::Head;

/// The frozen node image `name`'s leaf hangs from.
fn copy_point(rig: &Rig, name: &str) -> NodeId {
    let st = rig.fam.read_state();
    let Head::Leaf(id) = st.image(name).unwrap().head else {
        panic!("{name} has a leaf");
    };
    st.nodes[&id].parent.expect("a copy point")
}

/// Whether node `id` still holds an entry for track `t`.
fn holds(rig: &Rig, id: NodeId, t: u64) -> bool {
    let st = rig.fam.read_state();
    st.nodes.get(&id).is_some_and(|n| n.map.get(t).is_some())
}

#[test]
fn a_copy_point_every_reader_rewrote_gives_the_old_track_back() {
    for scheme in [Scheme::ChangedPointer, Scheme::FullPointer] {
        crate::rt::block_on(async {
            let mut rig = Rig::new(CopyMode::Row, scheme, 64 << 20);
            let track = TRACK as usize;
            w(&rig, 0, SIZE as usize, 1).await;
            rig.copy("o", "c0", scheme).await.unwrap();
            rig.copy("o", "c1", scheme).await.unwrap();
            let f = copy_point(&rig, "c0");
            assert_eq!(copy_point(&rig, "c1"), f, "{scheme}: one copy point");
            let (t, u) = (5u64, 9u64);
            // o and c0 rewrite t; c1 still reads the copy point's t.
            w(&rig, t * TRACK, track, 2).await;
            let (_, r) = rig.devs["c0"]
                .write(t * TRACK, IoBuf::from_slice(&vec![3; track]), false)
                .await;
            r.unwrap();
            rig.fam.commit().await.unwrap();
            assert!(holds(&rig, f, t), "{scheme}: c1 reads it");
            // All three rewrite u: dead at the commit that saves them.
            for (img, v) in [("o", 4u8), ("c0", 5), ("c1", 6)] {
                let (_, r) = rig.devs[img]
                    .write(u * TRACK, IoBuf::from_slice(&vec![v; track]), false)
                    .await;
                r.unwrap();
            }
            let before = rig.fam.read_state().store.used_slots();
            rig.fam.commit().await.unwrap();
            assert!(!holds(&rig, f, u), "{scheme}: every reader rewrote {u}");
            let after = rig.fam.read_state().store.used_slots();
            assert_eq!(after + 1, before, "{scheme}: its slot is free");
            // c1 goes: o and c0 both cover t, so t is dead too.
            rig.delete("c1").await;
            assert!(!holds(&rig, f, t), "{scheme}: no reader left for {t}");
            assert!(holds(&rig, f, 0), "{scheme}: track 0 is still read");
            rig.fam.commit().await.unwrap();
            let st = rig.fam.read_state();
            assert_eq!(st.store.used_slots(), held_slots(&st), "{scheme}");
            assert!(st.dead_entries().is_empty(), "{scheme}");
            drop(st);
            let mut want_o = vec![1u8; SIZE as usize];
            want_o[(t * TRACK) as usize..][..track].fill(2);
            want_o[(u * TRACK) as usize..][..track].fill(4);
            let mut want_c0 = vec![1u8; SIZE as usize];
            want_c0[(t * TRACK) as usize..][..track].fill(3);
            want_c0[(u * TRACK) as usize..][..track].fill(5);
            assert_eq!(rig.read("o").await.unwrap(), want_o, "{scheme}");
            assert_eq!(rig.read("c0").await.unwrap(), want_c0, "{scheme}");
        });
    }
}
