//! Keeping the store's labels (`label.rs`) true at every metadata commit
//! (seed 000 FIG. 13: the stripe header written with the stripe's data).
//!
//! ```text
//!   writes touch (node, track) ──▶ Pending ──snapshot──▶ LabelWrites
//!   a commit frees slots ─────────▶ (described free one commit later)
//!   commit: data flush ─▶ labels written, flushed ─▶ database save ─▶ ack
//! ```
//!
//! A descriptor is written after the data it describes is durable, and is
//! durable before the commit is acknowledged: what the labels say after a
//! crash is a state no older than the last acknowledged flush, and never
//! names a slot whose data did not reach the disk.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;

use super::family::{NodeId, State};
use super::label::{self, ChunkHead, Desc, NONE, PER_BLOCK};
use super::map::ZERO_SLOT;
use super::store::Chunk;
use crate::blockdev::BlockDev;
use crate::buf::IoBuf;
use crate::error::Result;

/// What the next commit must describe.
#[derive(Default)]
pub struct Pending {
    touched: BTreeSet<(NodeId, u64)>,
    /// Slots whose freeing is committed but not yet described.
    unfreed: Vec<u64>,
    last_gen: u64,
}

impl Pending {
    pub fn touch(&mut self, id: NodeId, t: u64) {
        self.touched.insert((id, t));
    }

    /// Whether track `t` of node `id` changed since the last commit.
    pub fn is_touched(&self, id: NodeId, t: u64) -> bool {
        self.touched.contains(&(id, t))
    }

    /// The (node, track) pairs whose descriptors the next commit writes.
    pub fn touched(&self) -> impl Iterator<Item = (NodeId, u64)> + '_ {
        self.touched.iter().copied()
    }

    /// A commit freed `slots`: the next one describes them free.
    pub fn freed(&mut self, slots: &[u64]) {
        self.unfreed.extend_from_slice(slots);
    }

    /// A generation above every earlier one (nanoseconds of the clock,
    /// so a restarted daemon continues above what it wrote before).
    fn next_gen(&mut self) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        self.last_gen = now.max(self.last_gen + 1);
        self.last_gen
    }
}

/// One descriptor block to write: its first slot, whether to start from
/// an all-free block (a new chunk) rather than the one on disk, and the
/// descriptors to set in it.
struct Block {
    first: u64,
    fresh: bool,
    set: Vec<(usize, Desc)>,
}

/// What one commit writes of the labels.
pub struct LabelWrites {
    family: u64,
    heads: Vec<(u64, Vec<u8>)>,
    /// Labels of chunks the commit removes, cleared (and flushed) before
    /// the database save: a crash between the two leaves the row of an
    /// empty chunk, which the next start gives back, never a label in
    /// space the group may give away.
    cleared: Vec<u64>,
    blocks: BTreeMap<u64, Block>,
    /// What was taken from [`Pending`], given back if the commit fails.
    touched: BTreeSet<(NodeId, u64)>,
    unfreed: Vec<u64>,
}

impl LabelWrites {
    pub fn is_empty(&self) -> bool {
        self.heads.is_empty() && self.blocks.is_empty()
    }

    /// The slots these writes describe free.
    pub fn described_free(&self) -> Vec<u64> {
        self.unfreed.clone()
    }
}

impl Pending {
    /// Whether freed slots wait to be described.
    pub fn has_unfreed(&self) -> bool {
        !self.unfreed.is_empty()
    }
}

/// The descriptor of a slot of node `id`'s area at `area` that holds no
/// track.
fn reserved(id: NodeId, area: u64, generation: u64) -> Desc {
    Desc {
        node: id,
        track: NONE,
        valid: 0,
        area,
        generation,
    }
}

/// Takes what `st` must describe at this commit, given the chunks and
/// areas the commit stores.
pub fn plan(
    st: &mut State,
    family: u64,
    chunks: &[(u64, Option<Chunk>)],
    areas: &[(NodeId, u64, Option<u64>)],
) -> LabelWrites {
    let generation = st.labels.next_gen();
    let touched = std::mem::take(&mut st.labels.touched);
    let unfreed = std::mem::take(&mut st.labels.unfreed);
    // Later inserts win: frees, then areas reserved, then entries.
    let mut descs: BTreeMap<u64, Desc> = BTreeMap::new();
    for &s in &unfreed {
        descs.insert(s, Desc::FREE);
    }
    for &(id, first, n) in areas {
        for s in first..first + n.unwrap_or(0) {
            descs.insert(s, reserved(id, first, generation));
        }
    }
    for &(id, t) in &touched {
        let Some(n) = st.nodes.get(&id) else { continue };
        let Some(e) = n.map.get(t).filter(|e| e.slot != ZERO_SLOT) else {
            // No data of the track here any more (moved by a collection,
            // dropped as dead, zeroed): its position in a reserved area
            // is described as reserved, not as the track, or a recover
            // would bring the old data back. A pointer slot is freed.
            if let Some((slot, (area, _))) = n.map.position(t) {
                descs.insert(slot, reserved(id, area, generation));
            }
            continue;
        };
        let area = n.map.area_with(t, e.slot).map_or(NONE, |a| a.0);
        let d = Desc {
            node: id,
            track: t,
            valid: e.valid,
            area,
            generation,
        };
        descs.insert(e.slot, d);
    }
    let mut blocks: BTreeMap<u64, Block> = BTreeMap::new();
    let mut heads = Vec::new();
    let mut cleared = Vec::new();
    for (k, c) in chunks {
        if c.is_none()
            && let Some(at) = st.store.removed_label(*k)
        {
            // An emptied chunk's label goes before its row: a scan of the
            // group (`pool recover`) never finds it again, whatever holds
            // the space next.
            cleared.push(at);
            continue;
        }
        let Some(c) = c.as_ref().filter(|c| c.head > 0) else {
            continue;
        };
        let at = c.group_off.saturating_sub(c.head);
        let h = ChunkHead {
            family,
            first_slot: c.first_slot,
            slots: c.slots,
            track: st.track,
            head_bytes: c.head,
            generation,
        };
        heads.push((at, label::encode_head(&h)));
        // Every block of a new chunk is written: whatever the space held
        // before (another chunk's label) must not be read as this one's.
        for b in 0..c.slots.div_ceil(PER_BLOCK) {
            let (rel, _) = label::desc_place(b * PER_BLOCK);
            blocks.insert(
                at + rel,
                Block {
                    first: c.first_slot + b * PER_BLOCK,
                    fresh: true,
                    set: Vec::new(),
                },
            );
        }
    }
    for (s, d) in descs {
        let Some((at, chunk_first, i)) = st.store.label_of(s) else {
            continue;
        };
        let (rel, idx) = label::desc_place(i);
        let b = blocks.entry(at + rel).or_insert_with(|| Block {
            first: chunk_first + (i / PER_BLOCK) * PER_BLOCK,
            fresh: false,
            set: Vec::new(),
        });
        b.set.push((idx, d));
    }
    LabelWrites {
        family,
        heads,
        cleared,
        blocks,
        touched,
        unfreed,
    }
}

/// The commit failed: what it was to describe waits for the next one.
pub fn keep(st: &mut State, w: LabelWrites) {
    st.labels.touched.extend(w.touched);
    st.labels.unfreed.extend(w.unfreed);
}

/// Descriptor blocks as this family last wrote them, by group offset (with
/// the block's first slot), so a commit rewrites a block without reading
/// it first. Bounded: past 4096 blocks it starts over. Only the
/// family's commits write its labels, one at a time, so a cached block is
/// what the disk holds.
#[derive(Default)]
pub struct BlockCache(std::sync::Mutex<std::collections::HashMap<u64, (u64, Vec<Desc>)>>);

/// Blocks a family's cache holds at most (16 MiB of descriptors).
const CACHED: usize = 4096;

impl BlockCache {
    fn get(&self, at: u64, first: u64) -> Option<Vec<Desc>> {
        let c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        c.get(&at)
            .filter(|(f, _)| *f == first)
            .map(|(_, d)| d.clone())
    }

    fn put(&self, at: u64, first: u64, descs: Option<Vec<Desc>>) {
        let mut c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match descs {
            Some(d) => {
                if c.len() >= CACHED && !c.contains_key(&at) {
                    c.clear();
                }
                c.insert(at, (first, d));
            }
            None => {
                c.remove(&at);
            }
        }
    }
}

/// Clears the labels of the chunks the commit removes, durably: call
/// before the database save that removes their rows.
pub async fn clear(group: &dyn BlockDev, w: &LabelWrites) -> Result<()> {
    if w.cleared.is_empty() {
        return Ok(());
    }
    for &at in &w.cleared {
        group
            .write(at, IoBuf::new(label::BLOCK as usize), false)
            .await
            .1?;
    }
    group.flush().await
}

/// Writes the labels and flushes them. A block damaged on disk is
/// rewritten from what this commit knows (logged: `pool check` would
/// have named it).
pub async fn write(group: &dyn BlockDev, cache: &BlockCache, w: &LabelWrites) -> Result<()> {
    if w.is_empty() {
        return Ok(());
    }
    let heads = w.heads.iter().map(|(at, bytes)| {
        let buf = IoBuf::from_slice(bytes);
        futures::future::Either::Left(async move { group.write(*at, buf, false).await.1 })
    });
    let blocks = (w.blocks.iter())
        .map(|(&at, b)| futures::future::Either::Right(write_block(group, cache, w.family, at, b)));
    let mut ops = futures::stream::iter(heads.chain(blocks)).buffer_unordered(32);
    while let Some(r) = ops.next().await {
        r?;
    }
    group.flush().await
}

async fn write_block(
    group: &dyn BlockDev,
    cache: &BlockCache,
    family: u64,
    at: u64,
    b: &Block,
) -> Result<()> {
    let mut descs = vec![Desc::FREE; PER_BLOCK as usize];
    if let Some(d) = (!b.fresh).then(|| cache.get(at, b.first)).flatten() {
        descs = d;
    } else if !b.fresh {
        let (buf, r) = group.read(at, IoBuf::new(label::BLOCK as usize)).await;
        r?;
        match label::decode_block(family, b.first, buf.as_slice()) {
            Ok(Some(d)) => descs = d,
            Ok(None) => {}
            Err(e) => tracing::warn!("copy family {family}: rewriting a damaged label: {e}"),
        }
    }
    for &(i, d) in &b.set {
        if let Some(x) = descs.get_mut(i) {
            *x = d;
        }
    }
    let bytes = label::encode_block(family, b.first, &descs);
    let (_, r) = group.write(at, IoBuf::from_slice(&bytes), false).await;
    // A failed write leaves the block unknown: read it again next time.
    cache.put(at, b.first, r.is_ok().then_some(descs));
    r
}
