//! Whole-map passes of the copy engine as a source grows: what `copy
//! show` counts (`held_slots`), and what removing a node (a copy deleted,
//! a pair ended) frees (`State::remove_node`), each over one
//! partial-area-bitmap leaf (the default scheme for thick sources) with
//! half of its 64 KiB tracks diverged at random, so every extent has its
//! area reserved. Both run under the family's state lock, so their time is
//! how long first writes to the family wait. They must grow with the
//! source (linearly), not with the square of its areas.
//!
//! Run: `cargo bench --bench copy_scans` (`-- 64` sizes up to 64 GiB;
//! default 256). Slots come from a real store (chunks from a counter, no
//! I/O).

#![forbid(unsafe_code)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use ferrosan::copy::family::{NodeId, NodeKind, State};
use ferrosan::copy::map::{Entry, Scheme};
use ferrosan::copy::maps::new_map;
use ferrosan::copy::new_state;
use ferrosan::copy::store::Store;
use ferrosan::meta::model::CopyMode;

const TRACK: u64 = 64 << 10;
const GIB: u64 = 1 << 30;

#[path = "common/rng.rs"]
mod rng;
use rng::Rng;

/// A family state of a `bytes` source whose one leaf (node 1) has half
/// its tracks diverged.
fn family(bytes: u64) -> State {
    let tracks = bytes / TRACK;
    let mut next = 0u64;
    let grow = Box::new(move |len: u64| {
        let at = next;
        next += len;
        Ok(at)
    });
    let mut store = Store::new(TRACK, Vec::new(), grow);
    let mut map = new_map(Scheme::PartialBitmap, tracks, &mut store).expect("map");
    let mut rng = Rng(7);
    for t in 0..tracks {
        if rng.next().is_multiple_of(2) {
            let slot = map.place(t, &mut store).expect("slot");
            map.set(
                t,
                Entry {
                    slot,
                    valid: 0xFFFF,
                },
            );
        }
    }
    let mut st = new_state(
        CopyMode::Row,
        "src",
        TRACK,
        bytes,
        store,
        None,
        Scheme::PartialBitmap,
        0,
    );
    st.add_node(1 as NodeId, None, NodeKind::Frozen, map);
    st
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let max_gib: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(256);
    println!(
        "source   tracks     areas   held_slots   remove_node   (partial bitmap, 50% diverged)"
    );
    let mut gib = 16;
    while gib <= max_gib {
        let mut st = family(gib * GIB);
        let (tracks, areas) = {
            let n = &st.nodes[&1];
            (n.map.tracks(), n.map.areas().len())
        };
        let t0 = Instant::now();
        let held = black_box(st.nodes[&1].map.held_slots());
        let held_t = t0.elapsed();
        let t1 = Instant::now();
        st.remove_node(1);
        let remove_t = t1.elapsed();
        assert_eq!(held, areas as u64 * 64, "held: every area, no single slot");
        assert_eq!(
            st.store.pending_len() as u64,
            held,
            "the removal freed every held slot"
        );
        println!(
            "{:>4} GiB {:>9} {:>8} {:>12} {:>13}",
            gib,
            tracks,
            areas,
            ms(held_t),
            ms(remove_t)
        );
        gib *= 4;
    }
}
