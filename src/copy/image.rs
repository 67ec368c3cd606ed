//! The I/O of a copy family's images: reads resolve each granule through
//! the copy tree; writes follow A1 or A2 (seed 000/001 FIG. 17; SEED-SPECS
//! A.c.2-A.c.4).
//!
//! ```text
//!  read(image)   plan under the family lock: granule runs -> base, a store
//!                slot, or zeroes; then read the pieces concurrently
//!  write(leaf)   A2 / a copy's own writes (US 6,779,094 claims 1-6):
//!                new data to the image's own slot for the track (rewrites
//!                land in place); only the written granules become valid,
//!                a partial granule is filled from the tree first
//!  write(origin) A1 (US 6,779,095 claims 1-6): granules of the base not yet
//!                preserved in the newest view are copied there (durably,
//!                map entry committed: DESIGN rule 3), then the base is
//!                overwritten in place
//!  flush         data of the group(s), then the changed map pages (rule 4)
//! ```
//!
//! This file holds the family itself, reads, A1 and restores; the leaf
//! writes are in `write.rs`, the commits in `commit.rs`, and the block
//! device of one image in `dev.rs`.

#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex, RwLock};

use futures::future::join_all;
use tokio::sync::watch;

use super::commit::Commits;
use super::family::{Head, NodeId, NodeKind, Src, State, mask, runs};
use super::map::{Entry, ZERO_SLOT};
use super::record::FamilySave;
use super::write::Ahead;
use crate::blockdev::{BlockDev, BufResult};
use crate::buf::IoBuf;
use crate::error::{ErrorKind, Result};
use crate::lockorder::{Guard, Rank};
use crate::stack::lock::RangeLock;

/// How a family saves itself, durably and in one transaction: the record if
/// it changed, the chunks and areas that changed, pages of node maps (an
/// all-zero page deletes), and the removed nodes' pages and areas dropped.
pub trait Persist: Send + Sync + 'static {
    fn save(&self, save: &FamilySave) -> Result<()>;
}

/// A family at run time.
pub struct Family {
    pub object: u64,
    pub group_name: String,
    /// The initial area: the origin's thick volume.
    pub(super) base: Arc<dyn BlockDev>,
    /// The group the store's slots live in.
    pub(super) group: Arc<dyn BlockDev>,
    pub(super) st: RwLock<State>,
    /// Locks of base tracks: base writers and readers of base data that
    /// the base may change under them (A1, restores, splits).
    pub(super) base_locks: RangeLock,
    pub(super) persist: Arc<dyn Persist>,
    pub(super) commits: Mutex<Commits>,
    pub(super) done: watch::Sender<(u64, Option<Arc<str>>)>,
    /// Chunks emptied and committed away: the owner hands them back.
    pub(super) released: Mutex<Vec<(u64, u64)>>,
    /// Serialises saves, so a later snapshot is never overwritten by an
    /// earlier one.
    pub(super) save_lock: tokio::sync::Mutex<()>,
    /// Fresh slots placed in sequence, for preallocating ahead of them.
    pub(super) ahead: Mutex<Ahead>,
    /// Told when a collection frees store slots: writes waiting for room
    /// (`room.rs`) go again.
    pub(super) room: tokio::sync::Notify,
    /// Writes waiting in `room` now, and when the log last said so.
    pub(super) room_waiters: std::sync::atomic::AtomicUsize,
    /// Slots the store held when a packing plan last came out empty
    /// (`copy/pack.rs`): the periodic check plans again only once the
    /// store has grown past it.
    pub(super) pack_quiet: std::sync::atomic::AtomicU64,
    pub(super) room_said: Mutex<Option<std::time::Instant>>,
    /// The owner's way to give emptied chunks back to the group at once
    /// (a write waiting for room; `room.rs`).
    pub(super) hand_back: std::sync::OnceLock<super::room::HandBack>,
    /// The label blocks the commits wrote last (`describe.rs`).
    pub(super) label_cache: super::describe::BlockCache,
    /// Reads in flight, so their slots are not reused under them
    /// (`fence.rs`).
    pub(super) readers: super::fence::Readers,
}

/// One piece of a read plan.
#[derive(Debug, Clone, Copy)]
struct Piece {
    buf_off: u64,
    len: u64,
    src: PieceSrc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PieceSrc {
    Base(u64),
    Group(u64),
    Zero,
}

impl PieceSrc {
    fn follows(self, prev: PieceSrc, prev_len: u64) -> bool {
        match (prev, self) {
            (PieceSrc::Base(a), PieceSrc::Base(b)) | (PieceSrc::Group(a), PieceSrc::Group(b)) => {
                a + prev_len == b
            }
            (PieceSrc::Zero, PieceSrc::Zero) => true,
            _ => false,
        }
    }
}

pub(super) fn us(x: u64) -> usize {
    usize::try_from(x).unwrap_or(usize::MAX)
}

impl Family {
    pub fn new(
        object: u64,
        group_name: String,
        base: Arc<dyn BlockDev>,
        group: Arc<dyn BlockDev>,
        st: State,
        persist: Arc<dyn Persist>,
    ) -> Arc<Family> {
        let (done, _) = watch::channel((0, None));
        Arc::new(Family {
            object,
            group_name,
            base,
            group,
            st: RwLock::new(st),
            base_locks: RangeLock::new(),
            persist,
            commits: Mutex::new(Commits {
                next: 1,
                ..Commits::default()
            }),
            done,
            released: Mutex::new(Vec::new()),
            save_lock: tokio::sync::Mutex::new(()),
            ahead: Mutex::new(Ahead::default()),
            room: tokio::sync::Notify::new(),
            room_waiters: std::sync::atomic::AtomicUsize::new(0),
            pack_quiet: std::sync::atomic::AtomicU64::new(0),
            room_said: Mutex::new(None),
            hand_back: std::sync::OnceLock::new(),
            label_cache: Default::default(),
            readers: Default::default(),
        })
    }

    /// Holds off every save of the family until the guard goes: for an
    /// owner that writes the family's records itself (a family dissolving
    /// after its last copy went). An async lock, outside the lock order:
    /// it is never taken under a ranked lock.
    pub async fn hold_saves(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.save_lock.lock().await
    }

    /// The family's state, to read (rank `Family` of the lock order).
    pub fn read_state(&self) -> Guard<std::sync::RwLockReadGuard<'_, State>> {
        crate::blockdev::probe::shared_lock(1);
        Guard::take(Rank::Family, || {
            self.st.read().unwrap_or_else(|p| p.into_inner())
        })
    }

    /// The family's state, to change (rank `Family` of the lock order).
    pub fn write_state(&self) -> Guard<std::sync::RwLockWriteGuard<'_, State>> {
        crate::blockdev::probe::shared_lock(1);
        Guard::take(Rank::Family, || {
            self.st.write().unwrap_or_else(|p| p.into_inner())
        })
    }

    pub fn base(&self) -> &Arc<dyn BlockDev> {
        &self.base
    }

    pub fn group(&self) -> &Arc<dyn BlockDev> {
        &self.group
    }

    /// The family's track locks (the base's writers, and the tracks a
    /// collection moves).
    pub(super) fn base_locks(&self) -> &RangeLock {
        &self.base_locks
    }

    /// Whether the base may change under readers (A1, a restore).
    pub(super) fn base_moves(st: &State) -> bool {
        st.mode == crate::meta::model::CopyMode::Cow || st.restore.is_some()
    }

    /// The read plan of `len` bytes at `off` of the image at `head`.
    fn plan(&self, st: &State, head: Head, off: u64, len: u64) -> Result<Vec<Piece>> {
        let (t_sz, g_sz) = (st.track, st.granule);
        let mut out: Vec<Piece> = Vec::new();
        let mut found = Vec::with_capacity(2);
        let end = off + len;
        let mut t = off / t_sz;
        while t * t_sz < end {
            let t0 = t * t_sz;
            let a = off.max(t0);
            let b = end.min(t0 + t_sz);
            let need = mask((a - t0) / g_sz, (b - 1 - t0) / g_sz);
            found.clear();
            st.resolve(head, t, need, &mut found)?;
            let mut pieces: Vec<Piece> = Vec::with_capacity(found.len());
            for &(m, src) in &found {
                for (gs, gn) in runs(m) {
                    let ra = a.max(t0 + gs * g_sz);
                    let rb = b.min(t0 + (gs + gn) * g_sz);
                    let src = match src {
                        Src::Base => PieceSrc::Base(ra),
                        Src::Slot(s) => PieceSrc::Group(st.store.offset(s)? + (ra - t0)),
                        Src::Zero => PieceSrc::Zero,
                    };
                    pieces.push(Piece {
                        buf_off: ra - off,
                        len: rb - ra,
                        src,
                    });
                }
            }
            pieces.sort_by_key(|p| p.buf_off);
            for p in pieces {
                match out.last_mut() {
                    Some(last)
                        if last.buf_off + last.len == p.buf_off
                            && p.src.follows(last.src, last.len) =>
                    {
                        last.len += p.len
                    }
                    _ => out.push(p),
                }
            }
            t += 1;
        }
        Ok(out)
    }

    async fn read_pieces(&self, plan: Vec<Piece>, buf: IoBuf) -> BufResult {
        if let [p] = plan.as_slice() {
            return match p.src {
                PieceSrc::Base(o) => self.base.read(o, buf).await,
                PieceSrc::Group(o) => self.group.read(o, buf).await,
                PieceSrc::Zero => {
                    let mut b = buf;
                    b.zero();
                    (b, Ok(()))
                }
            };
        }
        let lens: Vec<usize> = plan.iter().map(|p| us(p.len)).collect();
        let parts = buf.split_many(&lens);
        let futs = plan.iter().zip(parts).map(|(p, b)| async move {
            match p.src {
                PieceSrc::Base(o) => self.base.read(o, b).await,
                PieceSrc::Group(o) => self.group.read(o, b).await,
                PieceSrc::Zero => {
                    let mut b = b;
                    b.zero();
                    (b, Ok(()))
                }
            }
        });
        let mut first_err = None;
        let mut back = Vec::with_capacity(lens.len());
        for (b, r) in join_all(futs).await {
            if let (Err(e), None) = (r, &first_err) {
                first_err = Some(e);
            }
            back.push(b);
        }
        (IoBuf::join(back), first_err.map_or(Ok(()), Err))
    }

    /// Reads `buf.len()` bytes at `off` of the image starting at `head`.
    pub async fn read(&self, head: Head, off: u64, buf: IoBuf) -> BufResult {
        let len = buf.len() as u64;
        let (t_sz, moves, _reading) = {
            let st = self.read_state();
            (st.track, Self::base_moves(&st), self.reading(&st))
        };
        // Where the base can change, read it under the track locks so a
        // planned base piece is not overwritten before it is read.
        let _locks = if moves && head != Head::Base {
            Some(
                self.base_locks
                    .lock(off / t_sz, (off + len).div_ceil(t_sz))
                    .await,
            )
        } else {
            None
        };
        let plan = {
            let st = self.read_state();
            self.plan(&st, head, off, len)
        };
        match plan {
            Ok(p) => self.read_pieces(p, buf).await,
            Err(e) => (buf, Err(e)),
        }
    }

    /// Reads granules `need` of track `t` as the image at `node` (None: the
    /// base) sees them, into `buf` (one whole track).
    pub(super) async fn read_track_from(
        &self,
        node: Option<NodeId>,
        t: u64,
        need: u64,
        buf: IoBuf,
    ) -> BufResult {
        let (plan, _reading) = {
            let st = self.read_state();
            let reading = self.reading(&st);
            let mut found = Vec::new();
            let plan = st.resolve_from(node, t, need, &mut found).and_then(|()| {
                let mut out = Vec::new();
                let (t_sz, g) = (st.track, st.granule);
                for (m, src) in found {
                    for (gs, gn) in runs(m) {
                        let src = match src {
                            Src::Base => PieceSrc::Base(t * t_sz + gs * g),
                            Src::Slot(s) => PieceSrc::Group(st.store.offset(s)? + gs * g),
                            Src::Zero => PieceSrc::Zero,
                        };
                        out.push((gs * g, gn * g, src));
                    }
                }
                Ok(out)
            });
            (plan, reading)
        };
        let pieces = match plan {
            Ok(p) => p,
            Err(e) => return (buf, Err(e)),
        };
        let mut buf = buf;
        for (at, len, src) in pieces {
            let piece = IoBuf::new(us(len));
            let (piece, r) = match src {
                PieceSrc::Base(o) => self.base.read(o, piece).await,
                PieceSrc::Group(o) => self.group.read(o, piece).await,
                PieceSrc::Zero => (piece, Ok(())),
            };
            if let Err(e) = r {
                return (buf, Err(e));
            }
            buf.as_mut_slice()[us(at)..us(at + len)].copy_from_slice(piece.as_slice());
        }
        (buf, Ok(()))
    }

    /// A1: writes the base as the origin, preserving first.
    pub async fn write_origin(self: &Arc<Self>, off: u64, buf: IoBuf, fua: bool) -> BufResult {
        let len = buf.len() as u64;
        let t_sz = self.read_state().track;
        let (t0, t1) = (off / t_sz, (off + len).div_ceil(t_sz));
        let _base = self.base_locks.lock(t0, t1).await;
        if let Err(e) = self.before_base_write(off, len).await {
            return (buf, Err(e));
        }
        self.base.write(off, buf, fua).await
    }

    /// Preserves, in the newest view, the granules of the base that
    /// `off..off+len` is about to overwrite, and finishes pending restores
    /// of those tracks. Call with the base tracks locked.
    pub(super) async fn before_base_write(self: &Arc<Self>, off: u64, len: u64) -> Result<()> {
        let (t_sz, g) = {
            let st = self.read_state();
            (st.track, st.granule)
        };
        let mut preserved = false;
        let end = off + len;
        let mut t = off / t_sz;
        while t * t_sz < end {
            let t0 = t * t_sz;
            let (a, b) = (off.max(t0), end.min(t0 + t_sz));
            let touched = mask((a - t0) / g, (b - 1 - t0) / g);
            self.finish_restore_track(t).await?;
            preserved |= self.preserve(t, touched).await?;
            t += 1;
        }
        if preserved {
            self.commit().await?;
        }
        Ok(())
    }

    /// Copies the granules `touched` of base track `t` that the newest view
    /// lacks into it. Returns whether anything was preserved. Running out of
    /// space invalidates the view (its copies' reads fail) instead of
    /// failing the origin's write.
    async fn preserve(&self, t: u64, touched: u64) -> Result<bool> {
        let (view, have, t_sz) = {
            let st = self.read_state();
            let Some(v) = st.newest_view else {
                return Ok(false);
            };
            let Some(n) = st.nodes.get(&v) else {
                return Ok(false);
            };
            if n.invalid {
                return Ok(false);
            }
            (v, n.map.get(t), st.track)
        };
        let need = touched & !have.map_or(0, |e| e.valid);
        if need == 0 {
            return Ok(false);
        }
        let slot = match have {
            Some(e) if e.slot != ZERO_SLOT => e.slot,
            _ => {
                let mut st = self.write_state();
                let State { nodes, store, .. } = &mut *st;
                let placed = match nodes.get_mut(&view) {
                    Some(n) => n.map.place(t, store),
                    None => return Ok(false),
                };
                match placed {
                    Ok(s) => s,
                    Err(e) if e.kind() == ErrorKind::NoSpace => {
                        tracing::warn!(
                            "copy family {}: out of new space; the copies reading through view {view} are now invalid",
                            self.object
                        );
                        if let Some(n) = st.nodes.get_mut(&view) {
                            n.invalid = true;
                        }
                        st.record_dirty = true;
                        return Ok(true);
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let slot_off = self.read_state().store.offset(slot)?;
        let g = self.read_state().granule;
        for (gs, gn) in runs(need) {
            let piece = IoBuf::new(us(gn * g));
            let (piece, r) = self.base.read(t * t_sz + gs * g, piece).await;
            r?;
            let (_, r) = self.group.write(slot_off + gs * g, piece, true).await;
            r?;
        }
        self.write_state().add_valid(view, t, slot, need);
        Ok(true)
    }

    /// A restore in progress: if track `t` is still pending, copy it from
    /// the restore's source into the base (preserving first). Call with
    /// the base track locked.
    pub async fn finish_restore_track(self: &Arc<Self>, t: u64) -> Result<()> {
        let (from, full, t_sz) = {
            let st = self.read_state();
            match &st.restore {
                Some(r) if r.pending.contains(&t) => (r.from, st.full(), st.track),
                _ => return Ok(()),
            }
        };
        let buf = IoBuf::new(us(t_sz));
        let (buf, r) = self.read_track_from(Some(from), t, full, buf).await;
        r?;
        if self.preserve(t, full).await? {
            self.commit().await?;
        }
        // FUA: the track leaves `pending` below, and any save after that
        // (a copy point saves without flushing) must find its data durable.
        let (_, r) = self.base.write(t * t_sz, buf, true).await;
        r?;
        let mut st = self.write_state();
        if let Some(r) = st.restore.as_mut() {
            r.pending.remove(&t);
        }
        st.record_dirty = true;
        Ok(())
    }

    /// Restores pending tracks `from..to` (the restore job's step).
    pub async fn restore_tracks(self: &Arc<Self>, from: u64, to: u64) -> Result<()> {
        let todo: Vec<u64> = match &self.read_state().restore {
            Some(r) => r.pending.range(from..to).copied().collect(),
            None => return Ok(()),
        };
        for t in todo {
            let _l = self.base_locks.lock(t, t + 1).await;
            self.finish_restore_track(t).await?;
        }
        Ok(())
    }

    /// Zeroes whole tracks `t0..t1` of a leaf image: entries become zero
    /// entries, their slots go back.
    pub async fn zero_leaf_tracks(
        self: &Arc<Self>,
        locks: &RangeLock,
        name: &str,
        t0: u64,
        t1: u64,
    ) -> Result<()> {
        let _mine = locks.lock(t0, t1).await;
        let (leaf, into) = Self::writer_of(&self.read_state(), name)?;
        match into {
            None => {
                let mut st = self.write_state();
                for t in t0..t1 {
                    Self::zero_entry(&mut st, leaf, t);
                }
            }
            Some(f) => {
                // Merged into `f`: each track moves first, then is zeroed
                // there, under the tracks' locks (see `writer_of`).
                let _base = self.base_locks.lock(t0, t1).await;
                for t in t0..t1 {
                    self.merge_track(f, leaf, t, false).await?;
                    Self::zero_entry(&mut self.write_state(), f, t);
                }
            }
        }
        Ok(())
    }

    /// Makes track `t` of `node` a zero entry; its slot goes back.
    fn zero_entry(st: &mut State, node: NodeId, t: u64) {
        let full = st.full();
        let old = st.nodes.get(&node).and_then(|n| n.map.get(t));
        if !st
            .nodes
            .get(&node)
            .is_some_and(|n| n.map.accepts(t, ZERO_SLOT))
        {
            return;
        }
        if let Some(n) = st.nodes.get_mut(&node) {
            n.map.set(
                t,
                Entry {
                    slot: ZERO_SLOT,
                    valid: full,
                },
            );
        }
        if let Some(e) = old {
            st.free_entry_slot(node, t, e);
        }
        st.touch(node, t);
    }

    /// Carries out the data copies a view merge needs (see
    /// `State::delete_image`): granules from the merged view's slots into
    /// the slots of the view that absorbs it. Call with the family's gates
    /// closed.
    pub async fn run_merges(&self, plan: &[super::restore::MergeCopy]) -> Result<()> {
        let g = self.read_state().granule;
        for m in plan {
            let (src_off, dst_off) = {
                let st = self.read_state();
                let src = match m.src {
                    Src::Slot(s) => Some(st.store.offset(s)?),
                    _ => None,
                };
                (src, st.store.offset(m.dst)?)
            };
            for (gs, gn) in runs(m.granules) {
                let piece = IoBuf::new(us(gn * g));
                let piece = match src_off {
                    Some(o) => {
                        let (p, r) = self.group.read(o + gs * g, piece).await;
                        r?;
                        p
                    }
                    None => piece,
                };
                let (_, r) = self.group.write(dst_off + gs * g, piece, false).await;
                r?;
            }
            let mut st = self.write_state();
            if let Some(n) = st.nodes.get_mut(&m.into) {
                n.map.set(
                    m.track,
                    Entry {
                        slot: m.dst,
                        valid: m.valid_before | m.granules,
                    },
                );
            }
            st.touch(m.into, m.track);
            if let Src::Slot(s) = m.src {
                st.store.free_later(s);
            }
        }
        // The copied data is durable before any save points at it.
        if !plan.is_empty() {
            self.group.flush().await?;
        }
        Ok(())
    }

    /// The kind of node `id` (tests).
    pub fn node_kind(&self, id: NodeId) -> Option<NodeKind> {
        self.read_state().nodes.get(&id).map(|n| n.kind)
    }
}
