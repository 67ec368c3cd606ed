//! A read in flight keeps the slots it was planned on: a slot the family
//! stops using (a collapse, a collection move, a deletion) is not handed
//! to a new write until every read that could have been planned on it has
//! finished (`Family`'s read fence, `image.rs`).

use super::*;
use crate::copy::map::Entry;
use crate::meta::model::copy::Head;

/// The entry of track `t` in image `name`'s own leaf.
fn leaf_entry(rig: &Rig, name: &str, t: u64) -> Entry {
    let st = rig.fam.read_state();
    let Head::Leaf(id) = st.image(name).unwrap().head else {
        panic!("{name} has a leaf");
    };
    st.nodes[&id].map.get(t).expect("track written")
}

/// The original reads a track from a frozen copy point while its disk read
/// is slow; meanwhile the original rewrites that track (the commit drops
/// the copy point's entry and frees its slot) and writes a new track. The
/// read returns the data of before or after the rewrite, never the new
/// track's, which could have taken the freed slot.
#[test]
fn a_slot_freed_under_a_read_in_flight_is_not_reused_before_it_ends() {
    crate::rt::block_on(async {
        let scheme = Scheme::ChangedPointer;
        let mut rig = Rig::new(CopyMode::Row, scheme, 64 << 20);
        let (t, u) = (3u64, 17u64);
        let track = TRACK as usize;
        rig.copy("o", "c0", scheme).await.unwrap();
        w(&rig, t * TRACK, track, 2).await;
        let old = leaf_entry(&rig, "o", t);
        // o's leaf becomes the copy point of k; k's deletion leaves it one
        // reader line (o), so o's rewrite of t makes its entry dead.
        rig.copy("o", "k", scheme).await.unwrap();
        rig.delete("k").await;
        let at = rig.fam.read_state().store.offset(old.slot).unwrap();
        let (arrived, go) = rig.group.hold_read(at, TRACK);
        let dev = &rig.devs["o"];
        let read = dev.read(t * TRACK, IoBuf::new(track));
        let meanwhile = async {
            arrived.await.unwrap();
            w(&rig, t * TRACK, track, 3).await;
            rig.fam.commit().await.unwrap();
            w(&rig, u * TRACK, track, 4).await;
            rig.fam.commit().await.unwrap();
            let reused = leaf_entry(&rig, "o", u).slot == old.slot;
            go.send(()).unwrap();
            reused
        };
        let ((b, r), reused) = futures::join!(read, meanwhile);
        r.unwrap();
        assert!(
            !reused,
            "the slot of a read in flight was handed to a write"
        );
        let got = b.as_slice()[0];
        assert!(
            b.as_slice().iter().all(|&x| x == got) && (got == 2 || got == 3),
            "the read returned {got}: data of another track"
        );
        // Once the read ended, the slot is free for the next commit.
        rig.fam.commit().await.unwrap();
        let st = rig.fam.read_state();
        assert_eq!(st.store.used_slots(), held_slots(&st), "slot given back");
    });
}
