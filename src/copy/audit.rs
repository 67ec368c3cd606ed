//! Checking the database's maps against the store's labels, and rebuilding
//! the maps from the labels alone (seed 000 FIG. 13: the stripe headers
//! make the log-structured array's mapping recoverable from its disks).
//!
//! - [`Family::check_labels`] (`ferrosan pool check`): chunk by chunk,
//!   with the family's commits held only while a chunk's label is
//!   compared (and read again to confirm a difference), every committed
//!   map entry's slot must be described as
//!   that node's track with the same granules, every reserved area's
//!   slots as that node's area, every chunk's head as the chunk the
//!   database lists. Differences are named; descriptors that still name a
//!   track a later commit moved elsewhere are only counted (a slot is
//!   described free one commit after its freeing).
//! - [`rebuild`] (`ferrosan pool recover`): from the chunks found on the
//!   group's disks, each node's entries (per track, the descriptor of the
//!   highest generation) and areas, as the rows a load reads.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::StreamExt;

use super::family::{NodeId, State};
use super::image::Family;
use super::label::{self, BLOCK, ChunkHead, Desc, NONE, PER_BLOCK};
use super::map::{Area, Entry, PAGE_ENTRIES, ZERO_SLOT};
use super::record::FamilyRecord;
use super::store::Chunk;
use crate::blockdev::BlockDev;
use crate::buf::IoBuf;
use crate::error::{Error, Result};

/// Differences listed in full; past this only counted.
const LISTED: usize = 50;

/// A chunk's label as read from the disk.
pub struct FoundChunk {
    /// Group offset of the label (the chunk's start).
    pub at: u64,
    pub head: ChunkHead,
    /// One per slot.
    pub descs: Vec<Desc>,
    /// Descriptor blocks that could not be read as this chunk's.
    pub damaged: Vec<String>,
}

/// What `check_labels` found in one family.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LabelReport {
    pub chunks: u64,
    /// Chunks made before stores described themselves: not checked.
    pub unlabelled: u64,
    /// Map entries and area slots compared with their descriptors.
    pub checked: u64,
    /// Descriptors naming a track that a later commit placed elsewhere.
    pub stale: u64,
    /// Differences, named (the first 50).
    pub problems: Vec<String>,
    /// Differences in all.
    pub problem_count: u64,
}

impl LabelReport {
    /// Adds one chunk's comparison.
    fn add(&mut self, sub: LabelReport) {
        self.checked += sub.checked;
        self.stale += sub.stale;
        let room = LISTED.saturating_sub(self.problems.len());
        self.problems.extend(sub.problems.into_iter().take(room));
        self.problem_count += sub.problem_count;
    }

    fn problem(&mut self, p: String) {
        self.problem_count += 1;
        if self.problems.len() < LISTED {
            self.problems.push(p);
        }
    }
}

/// Reads the label of the chunk at group offset `at`: `Ok(None)` when no
/// chunk of family `family` begins there.
pub async fn read_chunk(group: &dyn BlockDev, family: u64, at: u64) -> Result<Option<FoundChunk>> {
    let (buf, r) = group.read(at, IoBuf::new(BLOCK as usize)).await;
    r?;
    let Some(head) = label::decode_head(buf.as_slice())? else {
        return Ok(None);
    };
    if head.family != family {
        return Ok(None);
    }
    let blocks = head.slots.div_ceil(PER_BLOCK);
    let mut reads = futures::stream::iter(0..blocks)
        .map(|b| async move {
            let (rel, _) = label::desc_place(b * PER_BLOCK);
            let (buf, r) = group.read(at + rel, IoBuf::new(BLOCK as usize)).await;
            (b, r.map(|()| buf))
        })
        .buffered(32);
    let mut descs = Vec::new();
    let mut damaged = Vec::new();
    while let Some((b, r)) = reads.next().await {
        let first = head.first_slot + b * PER_BLOCK;
        let got = r.and_then(|buf| label::decode_block(family, first, buf.as_slice()));
        match got {
            Ok(Some(d)) => descs.extend(d),
            Ok(None) => descs.extend(std::iter::repeat_n(Desc::FREE, PER_BLOCK as usize)),
            Err(e) => {
                damaged.push(format!("chunk of slot {}: {e}", head.first_slot));
                descs.extend(std::iter::repeat_n(Desc::FREE, PER_BLOCK as usize));
            }
        }
    }
    descs.truncate(usize::try_from(head.slots).unwrap_or(usize::MAX));
    Ok(Some(FoundChunk {
        at,
        head,
        descs,
        damaged,
    }))
}

fn says(d: &Desc) -> String {
    if d.is_free() {
        "free".into()
    } else if d.track == NONE {
        format!("reserved for node {} (area at slot {})", d.node, d.area)
    } else {
        format!("node {} track {} granules {:#x}", d.node, d.track, d.valid)
    }
}

/// What the committed maps say one slot holds.
enum Expect {
    Entry {
        node: NodeId,
        track: u64,
        valid: u64,
    },
    Area {
        node: NodeId,
        area: u64,
        /// A track of the area's extent (`TrackMap::area_tracks`).
        track: u64,
    },
}

impl Family {
    /// Compares the committed maps with the store's labels on the disks
    /// (see the module doc). What to expect is taken once; each chunk is
    /// then read with the family's commits held for that chunk alone, and
    /// a slot is compared only if what was expected of it is still so,
    /// committed and described (a commit meanwhile may have changed it).
    pub async fn check_labels(&self) -> Result<LabelReport> {
        let (chunks, expect, claimed) = self.expectations();
        let mut report = LabelReport::default();
        for c in chunks {
            report.chunks += 1;
            if c.head == 0 {
                report.unlabelled += 1;
                continue;
            }
            if let Some(sub) = self.check_chunk(&c, &expect, &claimed).await {
                report.add(sub);
            }
        }
        Ok(report)
    }

    /// What every described slot should say: committed map entries and
    /// reserved areas, as the state is now.
    #[allow(clippy::type_complexity)]
    fn expectations(
        &self,
    ) -> (
        Vec<Chunk>,
        HashMap<u64, Expect>,
        HashMap<(NodeId, u64), u64>,
    ) {
        let st = self.read_state();
        let mut expect: HashMap<u64, Expect> = HashMap::new();
        let mut claimed: HashMap<(NodeId, u64), u64> = HashMap::new();
        for n in st.nodes.values() {
            if !n.map.areas_changed() {
                for ((a, k), track) in n.map.area_tracks() {
                    for s in a..a + k {
                        expect.insert(
                            s,
                            Expect::Area {
                                node: n.id,
                                area: a,
                                track,
                            },
                        );
                    }
                }
            }
        }
        for n in st.nodes.values() {
            for (t, e) in n.map.entries() {
                if e.slot == ZERO_SLOT {
                    continue;
                }
                claimed.insert((n.id, t), e.slot);
                if st.labels.is_touched(n.id, t) {
                    expect.remove(&e.slot);
                    continue;
                }
                let x = Expect::Entry {
                    node: n.id,
                    track: t,
                    valid: e.valid,
                };
                expect.insert(e.slot, x);
            }
        }
        for s in Self::touched_positions(&st) {
            expect.remove(&s);
        }
        (st.store.chunks(), expect, claimed)
    }

    /// Area positions of tracks whose descriptors the next commit writes
    /// (their data moved, dropped or zeroed since the last one).
    fn touched_positions(st: &State) -> HashSet<u64> {
        (st.labels.touched())
            .filter_map(|(id, t)| st.nodes.get(&id)?.map.position(t))
            .map(|(slot, _)| slot)
            .collect()
    }

    /// Whether what `x` expects of slot `s` still holds, committed (call
    /// with the family's commits held: a committed entry is described).
    fn still_expected(st: &State, touched: &HashSet<u64>, s: u64, x: &Expect) -> bool {
        match *x {
            Expect::Entry { node, track, valid } => {
                let e = st.nodes.get(&node).and_then(|n| n.map.get(track));
                e == Some(Entry { slot: s, valid }) && !st.labels.is_touched(node, track)
            }
            Expect::Area { node, area, track } => {
                !touched.contains(&s)
                    && st
                        .nodes
                        .get(&node)
                        .is_some_and(|n| !n.map.areas_changed() && n.map.lists_area(track, area))
            }
        }
    }

    /// Checks chunk `c`: its label is read without holding the commits,
    /// compared with them held; a difference is confirmed by reading the
    /// label again with them held (a commit may have been writing it).
    async fn check_chunk(
        &self,
        c: &Chunk,
        expect: &HashMap<u64, Expect>,
        claimed: &HashMap<(NodeId, u64), u64>,
    ) -> Option<LabelReport> {
        let at = c.group_off.saturating_sub(c.head);
        let found = read_chunk(self.group().as_ref(), self.object, at).await;
        let _one = self.save_lock.lock().await;
        if !self.read_state().store.has_chunk(c.first_slot) {
            return None;
        }
        let mut sub = LabelReport::default();
        self.compare(c, found, expect, claimed, &mut sub);
        if sub.problem_count > 0 {
            let found = read_chunk(self.group().as_ref(), self.object, at).await;
            sub = LabelReport::default();
            self.compare(c, found, expect, claimed, &mut sub);
        }
        Some(sub)
    }

    /// Compares chunk `c`'s label as `found` with what is expected of its
    /// slots and still so (call with the commits held).
    fn compare(
        &self,
        c: &Chunk,
        found: Result<Option<FoundChunk>>,
        expect: &HashMap<u64, Expect>,
        claimed: &HashMap<(NodeId, u64), u64>,
        report: &mut LabelReport,
    ) {
        let found = match found {
            Ok(Some(f)) => f,
            Ok(None) => {
                report.problem(format!(
                    "chunk of slots {}..{} (group offset {}): no label of this family",
                    c.first_slot,
                    c.first_slot + c.slots,
                    c.group_off.saturating_sub(c.head)
                ));
                return;
            }
            Err(e) => {
                report.problem(format!("chunk of slot {}: {e}", c.first_slot));
                return;
            }
        };
        let h = found.head;
        if (h.first_slot, h.slots, h.head_bytes) != (c.first_slot, c.slots, c.head) {
            report.problem(format!(
                "chunk of slot {}: its label says slots {}..{} with a {}-byte label",
                c.first_slot,
                h.first_slot,
                h.first_slot + h.slots,
                h.head_bytes
            ));
            return;
        }
        for d in found.damaged {
            report.problem(d);
        }
        let unchanged: Vec<bool> = {
            let st = self.read_state();
            let touched = Self::touched_positions(&st);
            (c.first_slot..c.first_slot + c.slots)
                .map(|s| {
                    expect
                        .get(&s)
                        .is_some_and(|x| Self::still_expected(&st, &touched, s, x))
                })
                .collect()
        };
        for ((s, d), same) in (c.first_slot..).zip(&found.descs).zip(unchanged) {
            let x = expect.get(&s);
            if x.is_some() && !same {
                // Changed by a commit since the expectations were taken.
                continue;
            }
            match x {
                Some(&Expect::Entry { node, track, valid }) => {
                    report.checked += 1;
                    if (d.node, d.track, d.valid) != (node, track, valid) {
                        report.problem(format!(
                            "slot {s} holds node {node} track {track} granules {valid:#x}, but its label says {}",
                            says(d)
                        ));
                    }
                }
                Some(&Expect::Area { node, area, .. }) => {
                    report.checked += 1;
                    if (d.node, d.area, d.track) != (node, area, NONE) {
                        report.problem(format!(
                            "slot {s} is in node {node}'s area at slot {area}, but its label says {}",
                            says(d)
                        ));
                    }
                }
                None if !d.is_free()
                    && d.track != NONE
                    && claimed.get(&(d.node, d.track)) != Some(&s) =>
                {
                    report.stale += 1;
                }
                None => {}
            }
        }
    }
}

/// The rows of a family rebuilt from its labels.
pub struct Rebuilt {
    pub chunks: Vec<Chunk>,
    pub areas: BTreeMap<NodeId, Vec<Area>>,
    /// Per node, its pages (page number, bytes).
    pub pages: BTreeMap<NodeId, Vec<(u64, Vec<u8>)>>,
    /// Chunks left out (overlapping a newer one), descriptors naming no
    /// node of the record, damaged blocks: what the caller reports.
    pub notes: Vec<String>,
}

/// Rebuilds the rows of family `rec` from the chunks `found` on its
/// group. A chunk overlapping a newer one (by its label's generation:
/// space given back and taken again) is left out.
pub fn rebuild(rec: &FamilyRecord, mut found: Vec<FoundChunk>) -> Result<Rebuilt> {
    let mut notes = Vec::new();
    found.sort_by_key(|f| std::cmp::Reverse(f.head.generation));
    let mut kept: Vec<FoundChunk> = Vec::new();
    for f in found {
        let (s0, s1) = (f.head.first_slot, f.head.first_slot + f.head.slots);
        let (g0, g1) = (f.at, f.at + f.head.head_bytes + f.head.slots * f.head.track);
        let clash = kept.iter().any(|k| {
            let (t0, t1) = (k.head.first_slot, k.head.first_slot + k.head.slots);
            let (h0, h1) = (k.at, k.at + k.head.head_bytes + k.head.slots * k.head.track);
            (s0 < t1 && t0 < s1) || (g0 < h1 && h0 < g1)
        });
        if clash {
            notes.push(format!(
                "an older label of slots {s0}..{s1} at group offset {} was left out",
                f.at
            ));
        } else {
            kept.push(f);
        }
    }
    let nodes: HashMap<NodeId, usize> = (rec.nodes.iter().enumerate())
        .map(|(i, n)| (n.id, i))
        .collect();
    let mut entries: HashMap<(NodeId, u64), (u64, Entry)> = HashMap::new();
    // Slots naming each (node, area), and whether the area is current:
    // one of its slots holds the newest entry of its track, or it is only
    // reserved with no slot naming a track that moved on. A packed area
    // (`pack.rs`) has its tracks' old slots, and its free positions still
    // say reserved, until the next commit describes them free: it was
    // given back.
    let mut areas: BTreeMap<(NodeId, u64), (u64, bool)> = BTreeMap::new();
    let mut named: Vec<((NodeId, u64), u64, u64)> = Vec::new();
    let mut strays = 0u64;
    for f in &kept {
        notes.extend(f.damaged.iter().cloned());
        for (s, d) in (f.head.first_slot..).zip(&f.descs) {
            if d.is_free() {
                continue;
            }
            if !nodes.contains_key(&d.node) {
                strays += 1;
                continue;
            }
            let placed = d.track != NONE && d.valid != 0 && d.track < rec.tracks;
            if d.area != NONE {
                let a = areas.entry((d.node, d.area)).or_default();
                a.0 += 1;
                a.1 |= d.track == NONE;
                if placed {
                    named.push(((d.node, d.area), d.track, s));
                }
            }
            if !placed {
                continue;
            }
            let e = Entry {
                slot: s,
                valid: d.valid,
            };
            let newer = entries
                .get(&(d.node, d.track))
                .is_none_or(|&(g, _)| d.generation > g);
            if newer {
                entries.insert((d.node, d.track), (d.generation, e));
            }
        }
    }
    if strays > 0 {
        notes.push(format!(
            "{strays} slots described as held by nodes the family no longer has (left free)"
        ));
    }
    let mut newest_in: HashSet<(NodeId, u64)> = HashSet::new();
    let mut moved_on: HashSet<(NodeId, u64)> = HashSet::new();
    for (key, t, slot) in named {
        if entries
            .get(&(key.0, t))
            .is_some_and(|(_, e)| e.slot == slot)
        {
            newest_in.insert(key);
        } else {
            moved_on.insert(key);
        }
    }
    for (key, a) in areas.iter_mut() {
        a.1 = newest_in.contains(key) || (a.1 && !moved_on.contains(key));
    }
    let areas: BTreeMap<(NodeId, u64), u64> = (areas.into_iter())
        .filter(|(_, (_, current))| *current)
        .map(|(key, (k, _))| (key, k))
        .collect();
    let mut by_node: BTreeMap<NodeId, Vec<(u64, Entry)>> = BTreeMap::new();
    for ((id, t), (_, e)) in entries {
        by_node.entry(id).or_default().push((t, e));
    }
    let mut area_rows: BTreeMap<NodeId, Vec<Area>> = BTreeMap::new();
    for ((id, a), k) in areas {
        area_rows.entry(id).or_default().push((a, k));
    }
    let mut pages = BTreeMap::new();
    for n in &rec.nodes {
        let mut list = by_node.remove(&n.id).unwrap_or_default();
        list.sort_unstable_by_key(|x| x.0);
        let node_areas = area_rows.get(&n.id).cloned().unwrap_or_default();
        let map = super::maps::restore_map(n.scheme, rec.tracks, &node_areas, list)
            .map_err(|e| Error::corrupt(format!("node {}: {}", n.id, e.message())))?;
        let last = map.entries().map(|(t, _)| t / PAGE_ENTRIES).max();
        let mut np = Vec::new();
        for p in 0..last.map_or(0, |l| l + 1) {
            let bytes = super::page::encode_page(map.as_ref(), p);
            if !super::page::is_empty_page(&bytes) {
                np.push((p, bytes.to_vec()));
            }
        }
        pages.insert(n.id, np);
    }
    let chunks = kept
        .iter()
        .map(|f| Chunk {
            first_slot: f.head.first_slot,
            group_off: f.at + f.head.head_bytes,
            slots: f.head.slots,
            head: f.head.head_bytes,
        })
        .collect();
    Ok(Rebuilt {
        chunks,
        areas: area_rows,
        pages,
        notes,
    })
}
