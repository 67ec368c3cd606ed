//! copy: instant copies (seeds 000/001, StorageTek "Apparatus and method for
//! instant copy of data"; US 6,779,094, 6,779,095, 6,804,755; SEED-SPECS
//! section A).
//!
//! ```text
//!   volume (switch) ──> ImageDev ──> Family: copy tree + store ──> group
//!                                        │                  └──> base (the
//!                                        │                       origin's thick
//!                                        └── node maps: the five    extents)
//!                                            FIG. 17 schemes (map, maps)
//! ```
//!
//! - [`map`]: the `TrackMap` interface; [`maps`]: the five schemes; [`page`]:
//!   their persisted pages.
//! - [`store`]: the additional physical storage area (new space) in slots.
//! - [`family`]: the tree of nodes every image reads through; taking,
//!   deleting copies; A.c.1 (create), A.c.2 (read resolution).
//! - [`image`]: the I/O: reads, A.c.3 (A1, old data to new space); [`write`](mod@write):
//!   A.c.4 (A2, new data to new space); [`commit`]: flush and the group
//!   commit of map pages; [`dev`]: one image as a block device.
//! - [`record`]: the family as persisted.
//! - [`restore`]: restores, folds, splits, the base handed to an heir and
//!   view merges: the tree changes that move data.
//! - [`collect`]: free-space collection (seed 000 FIG. 13): a copy point
//!   no copy reads merged with its one child; [`pack`]: by active counts,
//!   the live tracks of sparse partial areas moved into single slots.
//! - [`room`]: a host write that finds the store full waits for the room
//!   the collection frees instead of failing.
//! - [`label`]: the store's self-description on disk (seed 000 FIG. 13):
//!   each chunk's head and one descriptor per slot; [`describe`]: written
//!   at each commit; [`audit`]: checked against the maps (`pool check`),
//!   and the maps rebuilt from them (`pool recover`).

#![forbid(unsafe_code)]

pub mod audit;
pub mod collect;
pub mod commit;
pub mod dead;
pub mod describe;
pub mod dev;
pub mod family;
pub mod fence;
pub mod image;
pub mod label;
pub mod map;
pub mod maps;
pub mod pack;
pub mod page;
pub mod record;
pub mod restore;
pub mod room;
pub mod store;
pub mod write;

use family::{Head, Image, Node, NodeId, NodeKind, Restore, State};
use map::{Scheme, ZERO_SLOT};
use record::FamilyRecord;
use store::{Grow, Store};

use crate::error::{Error, Result};
use crate::meta::model::CopyMode;

/// The state of a new family around `origin` (`size` bytes, `track`-byte
/// tracks). Under A2 the origin gets a leaf of its own (`leaf` node id,
/// map from `map`); under A1 it reads and writes the base.
#[allow(clippy::too_many_arguments)]
pub fn new_state(
    mode: CopyMode,
    origin: &str,
    track: u64,
    size: u64,
    store: Store,
    origin_leaf: Option<(NodeId, Box<dyn map::TrackMap>)>,
    scheme: Scheme,
    created: u64,
) -> State {
    let tracks = size.div_ceil(track);
    let mut st = State::new(mode, origin, track, tracks, store);
    let head = match origin_leaf {
        Some((id, m)) => {
            st.add_node(id, None, NodeKind::Leaf, m);
            Head::Leaf(id)
        }
        None => Head::Base,
    };
    st.images.insert(
        origin.to_string(),
        Image {
            name: origin.to_string(),
            head,
            source: None,
            scheme,
            created,
        },
    );
    st
}

/// What a family's rows hold besides its record: the store's chunks
/// (`chunks`, read already) and, per node, its map pages and areas.
pub struct Rows<'a> {
    pub chunks: Vec<store::Chunk>,
    /// Slots freed whose labels do not say so yet.
    pub unfreed: Vec<u64>,
    pub pages_of: &'a dyn Fn(NodeId) -> Result<Vec<(u64, Vec<u8>)>>,
    pub areas_of: &'a dyn Fn(NodeId) -> Result<Vec<map::Area>>,
}

/// Rebuilds a family's state from its record and its rows. A record of
/// pool format 1 holds its chunks and areas inline: they are used, and
/// logged so the next save moves them to rows of their own.
pub fn load_state(rec: &FamilyRecord, rows: Rows<'_>, grow: Grow) -> Result<State> {
    let inline_chunks = !rec.chunks.is_empty();
    let chunks = if inline_chunks {
        rec.chunks.clone()
    } else {
        rows.chunks
    };
    let mut store = Store::new(rec.track_size, chunks, grow);
    if inline_chunks {
        store.log_all_chunks();
    }
    let mut st = State::new(rec.mode, &rec.origin, rec.track_size, rec.tracks, store);
    st.asked = rec.asked.unwrap_or(rec.mode);
    st.labels.freed(&rows.unfreed);
    for n in &rec.nodes {
        let mut entries = Vec::new();
        for (page, bytes) in (rows.pages_of)(n.id)? {
            entries.extend(page::decode_page(page, &bytes)?);
        }
        let inline_areas = !n.areas.is_empty();
        let areas = if inline_areas {
            n.areas.clone()
        } else {
            (rows.areas_of)(n.id)?
        };
        let mut map = maps::restore_map(n.scheme, rec.tracks, &areas, entries)?;
        if inline_areas {
            map.log_all_areas();
        }
        for &(a, c) in &areas {
            st.store.mark_area(a, c)?;
        }
        let mut sorted = areas.clone();
        sorted.sort_unstable();
        let in_area = |s: u64| {
            let i = sorted.partition_point(|&(a, _)| a <= s);
            i > 0 && sorted.get(i - 1).is_some_and(|&(a, c)| s < a + c)
        };
        let singles: Vec<u64> = map
            .entries()
            .map(|(_, e)| e.slot)
            .filter(|&s| s != ZERO_SLOT && !in_area(s))
            .collect();
        for s in singles {
            st.store.mark_used(s)?;
        }
        st.nodes.insert(
            n.id,
            Node {
                id: n.id,
                parent: n.parent,
                kind: n.kind,
                map,
                invalid: n.invalid,
            },
        );
    }
    for n in &rec.nodes {
        if let Some(p) = n.parent
            && !st.nodes.contains_key(&p)
        {
            return Err(Error::corrupt(format!(
                "copy family {}: node {} has a missing parent {p}",
                rec.object, n.id
            )));
        }
    }
    for i in &rec.images {
        if let Head::Leaf(l) = i.head
            && !st.nodes.contains_key(&l)
        {
            return Err(Error::corrupt(format!(
                "copy family {}: image {} starts at a missing node {l}",
                rec.object, i.name
            )));
        }
        st.images.insert(i.name.clone(), Image::from(i));
    }
    st.newest_view = rec.newest_view;
    st.restore = rec.restore.as_ref().map(|r| Restore {
        from: r.from,
        pending: r
            .pending
            .iter()
            .flat_map(|&(first, n)| first..first + n)
            .collect(),
        copy: r.copy.clone(),
        job: r.job,
    });
    st.record_dirty = false;
    // Chunks with no slot in use are empty: they go back to the group at
    // the next commit.
    let empties = st.store.take_pending();
    st.store.release(empties);
    // What a collection's pair in progress held back is dead now; freed
    // at the next commit.
    st.drop_dead_of_pairs();
    Ok(st)
}

#[cfg(test)]
mod tests;
