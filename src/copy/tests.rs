//! Model tests of instant copies: every mode (A1, A2) × every metadata
//! scheme, against in-memory reference images, with copies created and
//! deleted at random points, flushes, and crashes simulated by throwing
//! away unflushed writes of the disks (a random subset of them survives)
//! and reloading the family from what was saved.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;

use super::dev::ImageDev;
use super::family::NodeId;
use super::image::{Family, Persist};
use super::map::Scheme;
use super::record::{FamilyRecord, FamilySave};
use super::store::{Chunk, Grow, Store};
use crate::blockdev::{BlockDev, ZeroFlags};
use crate::buf::IoBuf;
use crate::disk::MemDisk;
use crate::error::{Error, ErrorKind, Result};
use crate::meta::model::CopyMode;

const TRACK: u64 = 8192;
const TRACKS: u64 = 24;
const SIZE: u64 = TRACK * TRACKS;

/// What MemPersist holds: the rows of the pool database's tables.
#[derive(Default)]
struct Saved {
    rec: Option<FamilyRecord>,
    pages: HashMap<(NodeId, u64), Vec<u8>>,
    chunks: BTreeMap<u64, Chunk>,
    areas: BTreeMap<(NodeId, u64), u64>,
    unfreed: std::collections::BTreeSet<u64>,
    saves: u64,
    /// Saves that stored the record.
    rec_saves: u64,
}

/// Saves into memory, "durably" at once (like a redb commit).
#[derive(Default, Clone)]
struct MemPersist(Arc<Mutex<Saved>>);

impl Persist for MemPersist {
    fn save(&self, save: &FamilySave) -> Result<()> {
        let mut s = self.0.lock().unwrap();
        for id in &save.dropped {
            s.pages.retain(|(n, _), _| n != id);
            s.areas.retain(|(n, _), _| n != id);
        }
        for (id, page, bytes) in &save.pages {
            if super::page::is_empty_page(bytes) {
                s.pages.remove(&(*id, *page));
            } else {
                s.pages.insert((*id, *page), bytes.clone());
            }
        }
        for &(id, first, n) in &save.areas {
            match n {
                Some(n) => s.areas.insert((id, first), n),
                None => s.areas.remove(&(id, first)),
            };
        }
        for (first, c) in &save.chunks {
            match c {
                Some(c) => s.chunks.insert(*first, c.clone()),
                None => s.chunks.remove(first),
            };
        }
        for x in &save.described_free {
            s.unfreed.remove(x);
        }
        s.unfreed.extend(save.unfreed.iter().copied());
        if save.put_rec {
            s.rec = Some(save.rec.clone());
            s.rec_saves += 1;
        }
        s.saves += 1;
        Ok(())
    }
}

/// A family over memory disks, with the images' devices.
struct Rig {
    group: Arc<MemDisk>,
    base: Arc<MemDisk>,
    persist: MemPersist,
    fam: Arc<Family>,
    devs: BTreeMap<String, ImageDev>,
    next_id: Arc<Mutex<u64>>,
    next_off: Arc<Mutex<u64>>,
    limit: u64,
}

fn grow(next_off: &Arc<Mutex<u64>>, limit: u64) -> Grow {
    let n = Arc::clone(next_off);
    Box::new(move |bytes| {
        let mut off = n.lock().unwrap();
        if *off + bytes > limit {
            return Err(Error::new(ErrorKind::NoSpace, "test group full"));
        }
        let o = *off;
        *off += bytes;
        Ok(o)
    })
}

impl Rig {
    fn new(mode: CopyMode, scheme: Scheme, limit: u64) -> Rig {
        Rig::with_labels(mode, scheme, limit, true)
    }

    /// A rig whose store writes no labels: a test counting data I/O sees
    /// only data (labels are metadata, written at commits, as the database
    /// is; `describe.rs`).
    fn unlabelled(mode: CopyMode, scheme: Scheme, limit: u64) -> Rig {
        Rig::with_labels(mode, scheme, limit, false)
    }

    fn with_labels(mode: CopyMode, scheme: Scheme, limit: u64, labels: bool) -> Rig {
        let group = Arc::new(MemDisk::new(limit.max(1 << 20)));
        let base = Arc::new(MemDisk::new(SIZE));
        let next_off = Arc::new(Mutex::new(0));
        let next_id = Arc::new(Mutex::new(100));
        let mut store = Store::new(TRACK, Vec::new(), grow(&next_off, limit)).with_chunk_slots(8);
        if !labels {
            store = store.without_labels();
        }
        let leaf = match mode {
            CopyMode::Row => Some((1, super::maps::new_map(scheme, TRACKS, &mut store).unwrap())),
            CopyMode::Cow => None,
        };
        let st = super::new_state(mode, "o", TRACK, SIZE, store, leaf, scheme, 0);
        let persist = MemPersist::default();
        let fam = Family::new(
            7,
            "g".into(),
            Arc::clone(&base) as Arc<dyn BlockDev>,
            Arc::clone(&group) as Arc<dyn BlockDev>,
            st,
            Arc::new(persist.clone()),
        );
        let mut rig = Rig {
            group,
            base,
            persist,
            fam,
            devs: BTreeMap::new(),
            next_id,
            next_off,
            limit,
        };
        rig.save_new();
        rig.devs.insert(
            "o".into(),
            ImageDev::new(Arc::clone(&rig.fam), "o", SIZE, false),
        );
        rig
    }

    /// Saves at once, labels included, as the engine's changes do.
    async fn save_now(&self) {
        let p = self.persist.clone();
        self.fam
            .save_with(move |s| s.map_or(Ok(()), |s| p.save(s)))
            .await
            .unwrap();
    }

    /// Saves the new family outside a runtime; its chunks and areas are
    /// labelled at the first commit.
    fn save_new(&self) {
        let _one = self
            .fam
            .save_lock
            .try_lock()
            .expect("no other save in tests");
        if let Some(snap) = self.fam.snapshot(true) {
            let r = self.persist.save(&snap.save);
            self.fam.saved(snap, r).unwrap();
        }
        let mut st = self.fam.write_state();
        st.store.log_all_chunks();
        for n in st.nodes.values_mut() {
            n.map.log_all_areas();
        }
    }

    async fn copy(&mut self, src: &str, name: &str, scheme: Scheme) -> Result<()> {
        self.fam.commit().await?;
        {
            let ids = Arc::clone(&self.next_id);
            let mut next = || {
                let mut i = ids.lock().unwrap();
                *i += 1;
                *i
            };
            let mut maps = |s: Scheme, store: &mut Store| super::maps::new_map(s, TRACKS, store);
            self.fam
                .write_state()
                .create_copy(src, name, scheme, 0, &mut next, &mut maps)?;
        }
        self.save_now().await;
        self.devs.insert(
            name.into(),
            ImageDev::new(Arc::clone(&self.fam), name, SIZE, false),
        );
        Ok(())
    }

    async fn delete(&mut self, name: &str) {
        self.fam.commit().await.unwrap();
        let plan = self.fam.write_state().delete_image(name).unwrap();
        self.fam.run_merges(&plan).await.unwrap();
        // The last copy gone, the original's data folds back into the base.
        let (_, plan) = self.fam.write_state().start_fold(1).unwrap();
        self.fam.run_merges(&plan).await.unwrap();
        self.save_now().await;
        self.devs.remove(name);
    }

    /// A collection step: merges tracks `0..upto` of the next pair (the
    /// pair stays set, so writes that follow go through it), and with
    /// `end` ends it and saves.
    async fn collect(&mut self, upto: u64, end: bool) -> Result<()> {
        if self.fam.begin_merge().is_some() {
            self.fam.merge_tracks(0, upto.min(TRACKS), 4, 2).await?;
        }
        if end {
            self.fam.end_merge().await?;
            self.fam.commit().await?;
        }
        Ok(())
    }

    /// A packing step: the `which`th candidate area (any active count) is
    /// packed, with host writes taking the track locks meanwhile, and the
    /// change saved.
    async fn pack(&mut self, which: usize) -> Result<()> {
        let found = self.fam.read_state().pack_candidates(|_, _| true);
        if self.fam.read_state().mode != CopyMode::Row || found.is_empty() {
            return Ok(());
        }
        let (_, id, e0, area) = found[which % found.len()];
        self.fam.set_packing(true);
        let r = self.fam.pack_area((id, e0, area), 4).await;
        self.fam.set_packing(false);
        r?;
        self.fam.commit().await
    }

    #[allow(clippy::type_complexity)]
    fn ids_and_maps(
        &self,
    ) -> (
        impl FnMut() -> NodeId,
        impl FnMut(Scheme, &mut Store) -> Result<Box<dyn super::map::TrackMap>>,
    ) {
        let ids = Arc::clone(&self.next_id);
        let next = move || {
            let mut i = ids.lock().unwrap();
            *i += 1;
            *i
        };
        let maps = |s: Scheme, store: &mut Store| super::maps::new_map(s, TRACKS, store);
        (next, maps)
    }

    /// `copy restore`: the copy's source takes the copy's image. Returns
    /// the source, if it still exists.
    async fn restore(&mut self, copy: &str) -> Result<Option<String>> {
        self.fam.commit().await?;
        let target = self.fam.read_state().image(copy)?.source.clone();
        let Some(target) = target.filter(|t| self.fam.read_state().images.contains_key(t)) else {
            return Ok(None);
        };
        let (mut ids, mut maps) = self.ids_and_maps();
        let (_, plan) = self
            .fam
            .write_state()
            .restore_from(&target, copy, 1, &mut ids, &mut maps)?;
        self.fam.run_merges(&plan).await?;
        self.save_now().await;
        Ok(Some(target))
    }

    /// Runs a pending restore (or split) to its end.
    async fn finish_restore(&mut self) -> Result<()> {
        if self.fam.read_state().restore.is_none() {
            return self.fam.commit().await;
        }
        self.fam.restore_tracks(0, TRACKS).await?;
        self.fam.commit().await?;
        let plan = self.fam.write_state().finish_restore()?;
        self.fam.run_merges(&plan).await?;
        self.save_now().await;
        Ok(())
    }

    /// `copy split` of a two-image family; returns the image moved.
    async fn split(&mut self, larger: bool) -> Result<String> {
        self.fam.commit().await?;
        let (origin, copy, n_o, n_c) = {
            let st = self.fam.read_state();
            let o = st.origin.clone();
            let c = st.images.keys().find(|k| **k != o).cloned().unwrap();
            let (no, nc) = (st.own_tracks(&o), st.own_tracks(&c));
            (o, c, no, nc)
        };
        let (into, other) = if (n_o <= n_c) != larger {
            (origin, copy)
        } else {
            (copy, origin)
        };
        let (mut ids, mut maps) = self.ids_and_maps();
        let (_, plan) = self
            .fam
            .write_state()
            .start_split(&into, &other, 1, &mut ids, &mut maps)?;
        self.fam.run_merges(&plan).await?;
        self.save_now().await;
        Ok(into)
    }

    /// The origin volume is deleted: the base passes to another image.
    async fn delete_origin(&mut self) -> Result<String> {
        self.fam.commit().await?;
        let (origin, heir) = {
            let st = self.fam.read_state();
            let o = st.origin.clone();
            let h = st.images.keys().find(|k| **k != o).cloned().unwrap();
            (o, h)
        };
        let plan = self.fam.write_state().hand_over_base(&heir)?;
        self.fam.run_merges(&plan).await?;
        self.save_now().await;
        self.devs.remove(&origin);
        Ok(origin)
    }

    /// A power cut: the disks keep a random subset of their unflushed
    /// writes; the family comes back from what was saved.
    fn crash(&mut self, keep: &mut dyn FnMut(usize) -> bool) {
        self.group.crash(&mut *keep);
        self.base.crash(&mut *keep);
        let rec = self.persist.0.lock().unwrap().rec.clone().unwrap();
        let pages = self.persist.0.lock().unwrap().pages.clone();
        let chunks: Vec<Chunk> = self
            .persist
            .0
            .lock()
            .unwrap()
            .chunks
            .values()
            .cloned()
            .collect();
        let areas = self.persist.0.lock().unwrap().areas.clone();
        let areas_of = move |id: NodeId| -> Result<Vec<(u64, u64)>> {
            Ok(areas
                .range((id, 0)..=(id, u64::MAX))
                .map(|(&(_, f), &n)| (f, n))
                .collect())
        };
        let pages_of = move |id: NodeId| -> Result<Vec<(u64, Vec<u8>)>> {
            let mut v: Vec<(u64, Vec<u8>)> = pages
                .iter()
                .filter(|((n, _), _)| *n == id)
                .map(|((_, p), b)| (*p, b.clone()))
                .collect();
            v.sort_by_key(|x| x.0);
            Ok(v)
        };
        // The store's chunks are where the record says; new chunks go after
        // the furthest one.
        let end = chunks
            .iter()
            .map(|c| c.group_off + c.slots * TRACK)
            .max()
            .unwrap_or(0);
        {
            let mut off = self.next_off.lock().unwrap();
            *off = (*off).max(end);
        }
        let unfreed = self
            .persist
            .0
            .lock()
            .unwrap()
            .unfreed
            .iter()
            .copied()
            .collect();
        let rows = super::Rows {
            chunks,
            unfreed,
            pages_of: &pages_of,
            areas_of: &areas_of,
        };
        let st = super::load_state(&rec, rows, grow(&self.next_off, self.limit)).unwrap();
        self.fam = Family::new(
            7,
            "g".into(),
            Arc::clone(&self.base) as Arc<dyn BlockDev>,
            Arc::clone(&self.group) as Arc<dyn BlockDev>,
            st,
            Arc::new(self.persist.clone()),
        );
        let names: Vec<String> = self.devs.keys().cloned().collect();
        self.devs = names
            .into_iter()
            .map(|n| {
                let d = ImageDev::new(Arc::clone(&self.fam), &n, SIZE, false);
                (n, d)
            })
            .collect();
    }

    async fn read(&self, name: &str) -> Result<Vec<u8>> {
        let d = &self.devs[name];
        let (b, r) = d.read(0, IoBuf::new(SIZE as usize)).await;
        r.map(|()| b.as_slice().to_vec())
    }
}

/// The reference: each image's content now, and as of its last flush, with
/// the writes since.
#[derive(Clone, Default)]
struct Model {
    live: BTreeMap<String, Vec<u8>>,
    durable: BTreeMap<String, Vec<u8>>,
    unflushed: BTreeMap<String, Vec<(u64, Vec<u8>)>>,
}

impl Model {
    fn write(&mut self, name: &str, off: u64, data: &[u8]) {
        let o = off as usize;
        self.live.get_mut(name).unwrap()[o..o + data.len()].copy_from_slice(data);
        self.unflushed
            .entry(name.into())
            .or_default()
            .push((off, data.to_vec()));
    }

    fn settle(&mut self) {
        self.durable = self.live.clone();
        self.unflushed.clear();
    }

    /// After a crash: every byte is its durable value, or a value one of
    /// the writes since the last flush put there.
    fn check_crashed(&self, name: &str, got: &[u8]) -> std::result::Result<(), String> {
        let durable = &self.durable[name];
        let writes = self.unflushed.get(name).cloned().unwrap_or_default();
        for (i, (&g, &d)) in got.iter().zip(durable.iter()).enumerate() {
            if g == d {
                continue;
            }
            let ok = writes.iter().any(|(off, data)| {
                let o = *off as usize;
                i >= o && i < o + data.len() && data[i - o] == g
            });
            if !ok {
                return Err(format!(
                    "{name}: byte {i} is {g:#x}, durable {d:#x}, and no unflushed write put it there"
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum Op {
    Write {
        img: usize,
        off: u64,
        len: u64,
        seed: u8,
        fua: bool,
    },
    Zero {
        img: usize,
        off: u64,
        len: u64,
    },
    Flush,
    Copy {
        src: usize,
        scheme: usize,
    },
    Delete {
        img: usize,
    },
    Crash {
        keep: u64,
    },
    Restore {
        img: usize,
    },
    FinishRestore,
    Split {
        larger: bool,
    },
    DeleteOrigin,
    /// Free-space collection: merge tracks `0..upto` of the next pair,
    /// and end the pair if `end`.
    Collect {
        upto: u64,
        end: bool,
    },
    /// Free-space collection by active counts: pack the `which`th area of
    /// every partial area no other node lists (any count), and save.
    Pack {
        which: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let sectors = SIZE / 512;
    prop_oneof![
        8 => (0..8usize, 0..sectors, 1..48u64, any::<u8>(), prop::bool::weighted(0.1)).prop_map(
            move |(img, s, n, seed, fua)| {
                let off = s * 512;
                let len = (n * 512).min(SIZE - off);
                Op::Write { img, off, len, seed, fua }
            }
        ),
        1 => (0..8usize, 0..sectors, 1..64u64).prop_map(move |(img, s, n)| {
            let off = s * 512;
            Op::Zero { img, off, len: (n * 512).min(SIZE - off) }
        }),
        2 => Just(Op::Flush),
        2 => (0..8usize, 0..5usize).prop_map(|(src, scheme)| Op::Copy { src, scheme }),
        1 => (0..8usize).prop_map(|img| Op::Delete { img }),
        1 => any::<u64>().prop_map(|keep| Op::Crash { keep }),
        1 => (0..8usize).prop_map(|img| Op::Restore { img }),
        1 => Just(Op::FinishRestore),
        1 => any::<bool>().prop_map(|larger| Op::Split { larger }),
        1 => Just(Op::DeleteOrigin),
        2 => (0..=TRACKS, any::<bool>()).prop_map(|(upto, end)| Op::Collect { upto, end }),
        2 => any::<usize>().prop_map(|which| Op::Pack { which }),
    ]
}

fn data(seed: u8, off: u64, len: u64) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add(((off + i) / 512) as u8).wrapping_mul(31) | 1)
        .collect()
}

async fn run(mode: CopyMode, scheme: Scheme, ops: &[Op]) -> std::result::Result<(), TestCaseError> {
    let mut rig = Rig::new(mode, scheme, 64 << 20);
    let mut m = Model::default();
    // Some history on the origin before any copy.
    let first = data(9, 0, SIZE);
    rig.devs["o"]
        .write(0, IoBuf::from_slice(&first), false)
        .await
        .1
        .unwrap();
    rig.devs["o"].flush().await.unwrap();
    m.live.insert("o".into(), first);
    m.settle();
    let mut next = 0;
    for op in ops {
        let names: Vec<String> = m.live.keys().cloned().collect();
        let pick = |i: usize| names[i % names.len()].clone();
        match op {
            Op::Write {
                img,
                off,
                len,
                seed,
                fua,
            } => {
                let name = pick(*img);
                let d = data(*seed, *off, *len);
                let (_, r) = rig.devs[&name]
                    .write(*off, IoBuf::from_slice(&d), *fua)
                    .await;
                prop_assert!(r.is_ok(), "write {name} {off}+{len}: {:?}", r);
                m.write(&name, *off, &d);
            }
            Op::Zero { img, off, len } => {
                let name = pick(*img);
                let r = rig.devs[&name]
                    .write_zeroes(*off, *len, ZeroFlags::default())
                    .await;
                prop_assert!(r.is_ok(), "zero {name}: {:?}", r);
                m.write(&name, *off, &vec![0; *len as usize]);
            }
            Op::Flush => {
                let any = rig.devs.values().next().unwrap();
                any.flush().await.unwrap();
                m.settle();
            }
            Op::Copy { src, scheme } => {
                if m.live.len() >= 6 {
                    continue;
                }
                let src = pick(*src);
                if rig.fam.read_state().image(&src).map(|i| i.head).ok()
                    == Some(super::family::Head::Base)
                {
                    rig.finish_restore()
                        .await
                        .map_err(|e| TestCaseError::fail(e.chain()))?;
                }
                next += 1;
                let name = format!("c{next}");
                let scheme = Scheme::ALL[*scheme];
                // Under A1 a copy of a copy is a leaf freeze, fine with any
                // scheme; load-point schemes need a thick source (P-755).
                let pointer_src = rig.fam.read_state().pointer_mapped(&src);
                let scheme = if scheme.load_point() && pointer_src {
                    Scheme::ChangedPointer
                } else {
                    scheme
                };
                rig.copy(&src, &name, scheme)
                    .await
                    .map_err(|e| TestCaseError::fail(e.chain()))?;
                let content = m.live[&src].clone();
                m.live.insert(name, content);
                // Taking a copy makes everything durable first.
                m.settle();
            }
            Op::Delete { img } => {
                let name = pick(*img);
                if name == rig.fam.read_state().origin {
                    continue;
                }
                rig.delete(&name).await;
                m.live.remove(&name);
                m.settle();
            }
            Op::Restore { img } => {
                let name = pick(*img);
                if name == rig.fam.read_state().origin {
                    continue;
                }
                rig.finish_restore()
                    .await
                    .map_err(|e| TestCaseError::fail(e.chain()))?;
                let target = rig
                    .restore(&name)
                    .await
                    .map_err(|e| TestCaseError::fail(e.chain()))?;
                if let Some(t) = target {
                    let content = m.live[&name].clone();
                    m.live.insert(t, content);
                }
                m.settle();
            }
            Op::FinishRestore => {
                rig.finish_restore()
                    .await
                    .map_err(|e| TestCaseError::fail(e.chain()))?;
                m.settle();
            }
            Op::Split { larger } => {
                if m.live.len() != 2 {
                    continue;
                }
                rig.finish_restore()
                    .await
                    .map_err(|e| TestCaseError::fail(e.chain()))?;
                let into = rig
                    .split(*larger)
                    .await
                    .map_err(|e| TestCaseError::fail(e.chain()))?;
                prop_assert_eq!(&rig.fam.read_state().origin, &into);
                m.settle();
            }
            Op::DeleteOrigin => {
                if m.live.len() < 2 {
                    continue;
                }
                rig.finish_restore()
                    .await
                    .map_err(|e| TestCaseError::fail(e.chain()))?;
                let gone = rig
                    .delete_origin()
                    .await
                    .map_err(|e| TestCaseError::fail(e.chain()))?;
                m.live.remove(&gone);
                m.settle();
            }
            Op::Collect { upto, end } => {
                rig.collect(*upto, *end)
                    .await
                    .map_err(|e| TestCaseError::fail(e.chain()))?;
                if *end {
                    m.settle();
                }
            }
            Op::Pack { which } => {
                rig.pack(*which)
                    .await
                    .map_err(|e| TestCaseError::fail(e.chain()))?;
            }
            Op::Crash { keep } => {
                let mut k = *keep | 1;
                let mut keep_fn = |_i: usize| {
                    k ^= k << 13;
                    k ^= k >> 7;
                    k ^= k << 17;
                    k % 2 == 0
                };
                rig.crash(&mut keep_fn);
                for name in m.live.keys().cloned().collect::<Vec<_>>() {
                    let got = rig
                        .read(&name)
                        .await
                        .map_err(|e| TestCaseError::fail(e.chain()))?;
                    m.check_crashed(&name, &got).map_err(TestCaseError::fail)?;
                    m.live.insert(name, got);
                }
                m.settle();
            }
        }
        // No slot is used that no node holds once freed slots are
        // released (a commit): nothing leaks, whatever the ops.
        rig.fam
            .commit()
            .await
            .map_err(|e| TestCaseError::fail(e.chain()))?;
        {
            let st = rig.fam.read_state();
            let (used, held) = (st.store.used_slots(), held_slots(&st));
            prop_assert!(
                used <= held,
                "after {:?}: {} store slots used, {} held by the nodes",
                op,
                used,
                held
            );
        }
        {
            // What no image reads is given back at once (`dead.rs`).
            let st = rig.fam.read_state();
            if st.restore.is_none() && st.merging.is_none() {
                let dead = st.dead_entries();
                prop_assert!(
                    dead.is_empty(),
                    "after {:?}: dead entries kept {:?}",
                    op,
                    dead
                );
            }
        }
        labels::check(&rig, op).await?;
        // Every image reads exactly its reference, always.
        for (name, want) in &m.live {
            let got = rig
                .read(name)
                .await
                .map_err(|e| TestCaseError::fail(e.chain()))?;
            if &got != want {
                let i = got
                    .iter()
                    .zip(want.iter())
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                return Err(TestCaseError::fail(format!(
                    "{name} differs at byte {i} (track {}) after {op:?}: got {:#x}, want {:#x}",
                    i as u64 / TRACK,
                    got[i],
                    want[i]
                )));
            }
        }
    }
    // Whole tracks zeroed have no slot to describe; any other history is
    // rebuilt from the store's labels alone.
    if !ops.iter().any(|o| matches!(o, Op::Zero { .. })) {
        labels::recover(&mut rig, &m).await?;
    }
    Ok(())
}

macro_rules! model {
    ($name:ident, $mode:expr, $scheme:expr) => {
        proptest! {
            #![proptest_config(ProptestConfig {
                cases: std::env::var("FERROSAN_COPY_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24),
                ..ProptestConfig::default()
            })]
            #[test]
            fn $name(ops in prop::collection::vec(op(), 1..40)) {
                crate::rt::block_on(run($mode, $scheme, &ops))?;
            }
        }
    };
}

model!(row_full_pointer, CopyMode::Row, Scheme::FullPointer);
model!(row_changed_pointer, CopyMode::Row, Scheme::ChangedPointer);
model!(row_bitmap, CopyMode::Row, Scheme::Bitmap);
model!(
    row_multilevel_bitmap,
    CopyMode::Row,
    Scheme::MultilevelBitmap
);
model!(row_partial_bitmap, CopyMode::Row, Scheme::PartialBitmap);
model!(cow_full_pointer, CopyMode::Cow, Scheme::FullPointer);
model!(cow_changed_pointer, CopyMode::Cow, Scheme::ChangedPointer);
model!(cow_bitmap, CopyMode::Cow, Scheme::Bitmap);
model!(
    cow_multilevel_bitmap,
    CopyMode::Cow,
    Scheme::MultilevelBitmap
);
model!(cow_partial_bitmap, CopyMode::Cow, Scheme::PartialBitmap);

/// Slots the live nodes' maps hold: their areas, and the pointer slots
/// outside them.
fn held_slots(st: &super::family::State) -> u64 {
    st.nodes.values().map(|n| n.map.held_slots()).sum()
}

/// Writes `len` bytes of `v` at `off` of the original, "o".
async fn w(rig: &Rig, off: u64, len: usize, v: u8) {
    let (_, r) = rig.devs["o"]
        .write(off, IoBuf::from_slice(&vec![v; len]), false)
        .await;
    r.unwrap();
}

/// A frozen node left with one reader line (the copy that shared it with
/// the original deleted) gives back what the original has since rewritten:
/// at the deletion, and then as the original writes the rest; emptied, it
/// leaves the tree. Both images read the same before and after, and after
/// a restart.
mod cases;
mod collect;
mod dead;
mod labels;
mod pack;
mod reads;
