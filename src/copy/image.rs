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

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use futures::future::join_all;
use tokio::sync::watch;

use super::family::{Head, NodeId, NodeKind, Src, State, mask, runs};
use super::map::{Entry, ZERO_SLOT};
use super::record::{FamilyRecord, FamilySave, ImageRecord, NodeRecord};
use crate::blockdev::{BlockDev, BufResult, DevFuture, Extent, ZeroFlags};
use crate::buf::IoBuf;
use crate::error::{Error, ErrorKind, Result, check_range};
use crate::lockorder::{Guard, Rank};
use crate::stack::lock::RangeLock;

/// How a family saves itself, durably and in one transaction: the record if
/// it changed, the chunks and areas that changed, pages of node maps (an
/// all-zero page deletes), and the removed nodes' pages and areas dropped.
pub trait Persist: Send + Sync + 'static {
    fn save(&self, save: &FamilySave) -> Result<()>;
}

#[derive(Default)]
struct Commits {
    /// The sequence number the next pass takes.
    next: u64,
    /// The highest sequence number a waiter needs.
    wanted: u64,
    running: bool,
}

/// A family at run time.
pub struct Family {
    pub object: u64,
    pub group_name: String,
    /// The initial area: the origin's thick volume.
    base: Arc<dyn BlockDev>,
    /// The group the store's slots live in.
    group: Arc<dyn BlockDev>,
    st: RwLock<State>,
    /// Locks of base tracks: base writers and readers of base data that
    /// the base may change under them (A1, restores, splits).
    base_locks: RangeLock,
    persist: Arc<dyn Persist>,
    commits: Mutex<Commits>,
    done: watch::Sender<(u64, Option<Arc<str>>)>,
    /// Chunks emptied and committed away: the owner hands them back.
    released: Mutex<Vec<(u64, u64)>>,
    /// Serialises saves, so a later snapshot is never overwritten by an
    /// earlier one.
    pub(super) save_lock: tokio::sync::Mutex<()>,
    /// Fresh slots placed in sequence, for preallocating ahead of them.
    ahead: Mutex<Ahead>,
    /// Told when a collection frees store slots: writes waiting for room
    /// (`room.rs`) go again.
    pub(super) room: tokio::sync::Notify,
    /// Writes waiting in `room` now, and when the log last said so.
    pub(super) room_waiters: std::sync::atomic::AtomicUsize,
    pub(super) room_said: Mutex<Option<std::time::Instant>>,
    /// The owner's way to give emptied chunks back to the group at once
    /// (a write waiting for room; `room.rs`).
    pub(super) hand_back: std::sync::OnceLock<super::room::HandBack>,
    /// The label blocks the commits wrote last (`describe.rs`).
    label_cache: super::describe::BlockCache,
    /// Reads in flight, so their slots are not reused under them
    /// (`fence.rs`).
    readers: super::fence::Readers,
}

/// The run of fresh slots placed one after the other (sequential first
/// writes): once it is [`AHEAD_AFTER`] long, the store's space ahead of
/// it is preallocated [`AHEAD_SLOTS`] at a time, so those first writes on
/// a sparse disk file cost what overwrites cost instead of a filesystem
/// allocation each. Scattered first writes preallocate nothing, so the
/// disk file holds only what was written.
#[derive(Default)]
struct Ahead {
    last: u64,
    run: u64,
    /// The window of slots preallocated last.
    from: u64,
    until: u64,
}

impl Ahead {
    fn note(&mut self, slot: u64, chunk_end: Option<u64>) -> Option<u64> {
        self.run = if slot == self.last.wrapping_add(1) {
            self.run + 1
        } else {
            0
        };
        self.last = slot;
        if self.run < AHEAD_AFTER || (self.from..self.until).contains(&slot) {
            return None;
        }
        let end = (slot + AHEAD_SLOTS).min(chunk_end.unwrap_or(slot + 1));
        (self.from, self.until) = (slot, end);
        Some(end - slot)
    }
}

/// Fresh slots in sequence before preallocating ahead.
const AHEAD_AFTER: u64 = 8;
/// Slots preallocated at a time (16 MiB of 64 KiB tracks).
const AHEAD_SLOTS: u64 = 256;

/// What one save stores.
pub struct Snapshot {
    pub save: FamilySave,
    labels: super::describe::LabelWrites,
    frees: Vec<u64>,
    dirty: std::collections::BTreeSet<(NodeId, u64)>,
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

/// What a write finds at a track: the entry, where its slot lies (and the
/// end of its chunk), the track and granule sizes.
type TrackAt = (Option<Entry>, Option<(Result<u64>, Option<u64>)>, u64, u64);

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

    /// The record to persist.
    pub fn record(&self, st: &State) -> FamilyRecord {
        let mut nodes: Vec<NodeRecord> = st
            .nodes
            .values()
            .map(|n| NodeRecord {
                id: n.id,
                parent: n.parent,
                kind: n.kind,
                scheme: n.map.scheme(),
                // Rows of their own (FamilySave::areas).
                areas: Vec::new(),
                invalid: n.invalid,
            })
            .collect();
        nodes.sort_by_key(|n| n.id);
        FamilyRecord {
            object: self.object,
            mode: st.mode,
            asked: (st.asked != st.mode).then_some(st.asked),
            origin: st.origin.clone(),
            group: self.group_name.clone(),
            track_size: st.track,
            tracks: st.tracks,
            // Rows of their own (FamilySave::chunks).
            chunks: Vec::new(),
            nodes,
            images: st.images.values().map(ImageRecord::from).collect(),
            newest_view: st.newest_view,
            restore: st.restore.as_ref().map(|r| super::record::RestoreRecord {
                from: r.from,
                copy: r.copy.clone(),
                job: r.job,
                pending: compress(&r.pending),
            }),
        }
    }

    /// Makes every completed write durable, data first, then the changed
    /// metadata (one commit serves every caller waiting; group commit).
    pub async fn commit(self: &Arc<Self>) -> Result<()> {
        let need = {
            let mut c = self.commits.lock().unwrap_or_else(|p| p.into_inner());
            let need = c.next;
            c.wanted = c.wanted.max(need);
            if !c.running {
                c.running = true;
                let me = Arc::clone(self);
                tokio::task::spawn_local(async move { me.commit_loop().await });
            }
            need
        };
        let mut rx = self.done.subscribe();
        let v = rx
            .wait_for(|(seq, _)| *seq >= need)
            .await
            .map_err(|_| Error::new(ErrorKind::Shutdown, "copy metadata commits stopped"))?;
        match &v.1 {
            Some(msg) if v.0 == need => Err(Error::new(
                ErrorKind::Io,
                format!("saving copy metadata failed: {msg}"),
            )),
            _ => Ok(()),
        }
    }

    async fn commit_loop(self: Arc<Self>) {
        // However the loop ends (even dropped with its runtime), the next
        // commit must be able to start a new one.
        struct Stopped<'a>(&'a Mutex<Commits>);
        impl Drop for Stopped<'_> {
            fn drop(&mut self) {
                self.0.lock().unwrap_or_else(|p| p.into_inner()).running = false;
            }
        }
        let _stopped = Stopped(&self.commits);
        loop {
            let seq = {
                let mut c = self.commits.lock().unwrap_or_else(|p| p.into_inner());
                if c.wanted < c.next {
                    return;
                }
                let s = c.next;
                c.next += 1;
                s
            };
            let r = self.commit_pass().await;
            let err = r.err().map(|e| Arc::<str>::from(e.chain()));
            if let Some(e) = &err {
                tracing::error!("copy family {}: commit failed: {e}", self.object);
            }
            self.done.send_replace((seq, err));
        }
    }

    async fn commit_pass(&self) -> Result<()> {
        // The snapshot comes before the flush: every map entry in it points
        // at data whose write had completed, so the flush makes that data
        // durable before the entry is saved (DESIGN rule 4).
        let _one = self.save_lock.lock().await;
        let snap = self.snapshot(false);
        let flushed = async {
            self.group.flush().await?;
            if !Arc::ptr_eq(&self.base, &self.group) {
                self.base.flush().await?;
            }
            Ok::<(), Error>(())
        }
        .await;
        let Some(snap) = snap else {
            return flushed;
        };
        if let Err(e) = flushed {
            return self.saved(snap, Err(e));
        }
        // The labels describe data now durable, and are durable before the
        // commit is acknowledged (`describe.rs`); the database save needs
        // nothing of them, so both go at once. Either failing fails the
        // commit: everything is kept for the next one (both are idempotent).
        let persist = Arc::clone(&self.persist);
        let save = snap.save.clone();
        let saving = async {
            tokio::task::spawn_blocking(move || persist.save(&save))
                .await
                .map_err(|e| Error::new(ErrorKind::Io, format!("saving copy metadata: {e}")))
                .and_then(|r| r)
        };
        let labelling =
            super::describe::write(self.group.as_ref(), &self.label_cache, &snap.labels);
        let (labelled, saved) = futures::join!(labelling, saving);
        self.saved(snap, labelled.and(saved))
    }

    /// Takes what the next save must store (None if nothing changed and
    /// `force` is false). Follow with [`Family::saved`].
    pub fn snapshot(&self, force: bool) -> Option<Snapshot> {
        let mut st = self.write_state();
        // Slots a read in flight kept at an earlier save may be free now.
        if st.store.retired_len() > 0 {
            self.reuse_retired(&mut st);
        }
        if !force
            && st.dirty.is_empty()
            && st.dropped.is_empty()
            && !st.record_dirty
            && st.store.pending_len() == 0
            && !st.store.chunks_changed()
            && !st.nodes.values().any(|n| n.map.areas_changed())
            && !st.labels.has_unfreed()
        {
            return None;
        }
        // Entries of frozen nodes the new writes made dead (and the areas
        // they shed) go in this same save as the entries that cover them.
        st.collapse_written();
        let dirty = std::mem::take(&mut st.dirty);
        let mut pages = Vec::with_capacity(dirty.len());
        for &(id, page) in &dirty {
            if let Some(n) = st.nodes.get(&id) {
                pages.push((
                    id,
                    page,
                    super::page::encode_page(n.map.as_ref(), page).to_vec(),
                ));
            }
        }
        let dropped = std::mem::take(&mut st.dropped);
        let frees = st.store.take_pending();
        st.record_dirty = false;
        let chunks = st.store.take_chunk_changes();
        let mut areas = Vec::new();
        for n in st.nodes.values_mut() {
            let id = n.id;
            areas.extend(
                n.map
                    .take_area_changes()
                    .into_iter()
                    .map(|(f, c)| (id, f, c)),
            );
        }
        let rec = self.record(&st);
        let put_rec = force || st.saved_rec.as_ref() != Some(&rec);
        let labels = super::describe::plan(&mut st, self.object, &chunks, &areas);
        Some(Snapshot {
            save: FamilySave {
                rec,
                put_rec,
                chunks,
                areas,
                pages,
                dropped,
                unfreed: frees.clone(),
                described_free: labels.described_free(),
            },
            labels,
            frees,
            dirty,
        })
    }

    /// Saves the family's changes together with the caller's records in
    /// one durable transaction, serialized with the family's own commits:
    /// `commit` gets what the family must store (None if nothing changed)
    /// and runs the transaction, on a blocking thread.
    pub async fn save_with<F>(&self, commit: F) -> Result<()>
    where
        F: FnOnce(Option<&FamilySave>) -> Result<()> + Send + 'static,
    {
        let _one = self.save_lock.lock().await;
        let snap = match self.snapshot(true) {
            // Whatever the snapshot holds was written before this save
            // was asked for: flushed, then described (`describe.rs`).
            Some(s) => match self.flush_and_describe(&s).await {
                Ok(()) => Some(s),
                Err(e) => return self.saved(s, Err(e.clone())).and(Err(e)),
            },
            None => None,
        };
        let save = snap.as_ref().map(|s| s.save.clone());
        let saved = tokio::task::spawn_blocking(move || commit(save.as_ref()))
            .await
            .map_err(|e| Error::new(ErrorKind::Io, format!("saving the copy family: {e}")))
            .and_then(|r| r);
        match snap {
            Some(snap) => {
                let r = saved.as_ref().map(|_| ()).map_err(Clone::clone);
                self.saved(snap, r).and(saved)
            }
            None => saved,
        }
    }

    async fn flush_and_describe(&self, s: &Snapshot) -> Result<()> {
        self.group.flush().await?;
        super::describe::write(self.group.as_ref(), &self.label_cache, &s.labels).await
    }

    /// Chunks the store emptied since the last call: the pool gives them
    /// back to the group.
    pub fn take_released(&self) -> Vec<(u64, u64)> {
        std::mem::take(&mut *self.released.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Makes the retired slots no read in flight can use free again
    /// (`fence.rs`); chunks that empty go to the owner to give back.
    /// Whether any slot came free.
    pub(super) fn reuse_retired(&self, st: &mut State) -> bool {
        let freed = st.store.reuse_retired(|e| self.readers.ended(e));
        let gone = st.store.take_released();
        if !gone.is_empty() {
            st.record_dirty = true;
            self.released
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(gone);
        }
        freed
    }

    /// A read begins: the slots it plans on (under `st`, or a later look)
    /// stay unused by new writes until the ticket is dropped (`fence.rs`).
    pub(super) fn reading(&self, st: &State) -> super::fence::Ticket<'_> {
        self.readers.enter(st.store.read_epoch())
    }

    /// Finishes a save of `snap`: frees what it freed, or on failure keeps
    /// everything for the next one.
    pub fn saved(&self, snap: Snapshot, r: Result<()>) -> Result<()> {
        let mut st = self.write_state();
        match r {
            Ok(()) => {
                if snap.save.put_rec {
                    st.saved_rec = Some(snap.save.rec);
                }
                st.labels.freed(&snap.frees);
                st.store.retire(snap.frees);
                self.reuse_retired(&mut st);
                Ok(())
            }
            Err(e) => {
                super::describe::keep(&mut st, snap.labels);
                st.dirty.extend(snap.dirty);
                st.dropped.extend(snap.save.dropped);
                st.store.keep_chunk_changes(snap.save.chunks);
                let mut by_node: BTreeMap<NodeId, Vec<(u64, Option<u64>)>> = BTreeMap::new();
                for (id, f, c) in snap.save.areas {
                    by_node.entry(id).or_default().push((f, c));
                }
                for (id, changes) in by_node {
                    if let Some(n) = st.nodes.get_mut(&id) {
                        n.map.keep_area_changes(changes);
                    }
                }
                for s in snap.frees {
                    st.store.free_later(s);
                }
                st.record_dirty = true;
                Err(e)
            }
        }
    }

    /// Whether the base may change under readers (A1, a restore).
    fn base_moves(st: &State) -> bool {
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
    async fn read_track_from(
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

    /// Writes `buf` at `off` as image `name` (its own leaf).
    pub async fn write_leaf(
        self: &Arc<Self>,
        locks: &RangeLock,
        name: &str,
        off: u64,
        buf: IoBuf,
        fua: bool,
    ) -> BufResult {
        let len = buf.len() as u64;
        let (t_sz, moves) = {
            let st = self.read_state();
            (st.track, Self::base_moves(&st) || st.merging.is_some())
        };
        let (t0, t1) = (off / t_sz, (off + len).div_ceil(t_sz));
        let _mine = locks.lock(t0, t1).await;
        let _base = if moves {
            Some(self.base_locks.lock(t0, t1).await)
        } else {
            None
        };
        let (buf, r) = if t1 == t0 + 1 {
            // Within one track (a 4k write): no splitting and joining.
            self.write_track(name, t0, off % t_sz, buf, fua).await
        } else {
            self.write_tracks(name, off, buf, t_sz, fua).await
        };
        if let Err(e) = r {
            return (buf, Err(e));
        }
        if fua && let Err(e) = self.commit().await {
            return (buf, Err(e));
        }
        (buf, Ok(()))
    }

    /// Writes `buf` at `off` of image `name`'s leaf track by track (the
    /// caller holds the tracks' locks); the first error.
    async fn write_tracks(
        &self,
        name: &str,
        off: u64,
        buf: IoBuf,
        t_sz: u64,
        fua: bool,
    ) -> BufResult {
        let len = buf.len() as u64;
        let mut lens = Vec::new();
        let mut pos = off;
        while pos < off + len {
            let n = ((pos / t_sz + 1) * t_sz).min(off + len) - pos;
            lens.push(us(n));
            pos += n;
        }
        let parts = buf.split_many(&lens);
        let mut back = Vec::with_capacity(parts.len());
        let mut first_err = None;
        let mut at = off;
        for p in parts {
            let n = p.len() as u64;
            let (b, r) = self.write_track(name, at / t_sz, at % t_sz, p, fua).await;
            if let (Err(e), None) = (r, &first_err) {
                first_err = Some(e);
            }
            back.push(b);
            at += n;
        }
        let buf = IoBuf::join(back);
        match first_err {
            Some(e) => (buf, Err(e)),
            None => (buf, Ok(())),
        }
    }

    /// Image `name`'s leaf, and the frozen node a collection is merging it
    /// into, if one is: then a write of a track moves the track first (under
    /// the track's locks) and goes to that frozen node.
    fn writer_of(st: &State, name: &str) -> Result<(NodeId, Option<NodeId>)> {
        let Head::Leaf(leaf) = st.image(name)?.head else {
            return Err(Error::invalid("the origin of an A1 family has no leaf"));
        };
        Ok((leaf, st.merging.filter(|&(_, c)| c == leaf).map(|(f, _)| f)))
    }

    /// Track `t` of `node` as a write finds it: its entry and, for a slot
    /// the node holds, where it lies (under the caller's lock).
    fn track_at(st: &State, node: NodeId, t: u64) -> TrackAt {
        let entry = st.nodes.get(&node).and_then(|n| n.map.get(t));
        let at_slot = entry
            .filter(|e| e.slot != ZERO_SLOT)
            .map(|e| (st.store.offset(e.slot), st.store.chunk_end(e.slot)));
        (entry, at_slot, st.track, st.granule)
    }

    /// Writes `data` at `at` within track `t` of image `name`'s leaf.
    async fn write_track(&self, name: &str, t: u64, at: u64, data: IoBuf, fua: bool) -> BufResult {
        // One look at the state, unless a collection must move the track
        // first (see `writer_of`).
        let found = {
            let st = self.read_state();
            Self::writer_of(&st, name).map(|(leaf, into)| match into {
                None => (leaf, Ok(Self::track_at(&st, leaf, t))),
                Some(f) => (leaf, Err(f)),
            })
        };
        let (leaf, (entry, at_slot, t_sz, g)) = match found {
            Err(e) => return (data, Err(e)),
            Ok((leaf, Ok(at))) => (leaf, at),
            Ok((leaf, Err(f))) => {
                if let Err(e) = self.merge_track(f, leaf, t, false).await {
                    return (data, Err(e));
                }
                (f, Self::track_at(&self.read_state(), f, t))
            }
        };
        let len = data.len() as u64;
        let (g0, g1) = (at / g, (at + len - 1) / g);
        let gm = mask(g0, g1);
        let (ga, gb) = (g0 * g, (g1 + 1) * g);
        // Edge granules only partly written and not valid here must be
        // filled from the tree first.
        let have = entry.filter(|e| e.slot != ZERO_SLOT).map_or(0, |e| e.valid);
        let mut fill = 0;
        if at > ga && have & mask(g0, g0) == 0 {
            fill |= mask(g0, g0);
        }
        if at + len < gb && have & mask(g1, g1) == 0 {
            fill |= mask(g1, g1);
        }
        let zeroed = entry.is_some_and(|e| e.slot == ZERO_SLOT);
        // The slot: the leaf's own, or a new one.
        let (slot, fresh) = match entry {
            Some(e) if e.slot != ZERO_SLOT => (e.slot, false),
            _ => {
                let mut st = self.write_state();
                let State { nodes, store, .. } = &mut *st;
                let placed = match nodes.get_mut(&leaf) {
                    Some(n) => n.map.place(t, store),
                    None => Err(Error::corrupt("copy leaf vanished")),
                };
                match placed {
                    Ok(s) => (s, true),
                    Err(e) => {
                        let e = if e.kind() == ErrorKind::NoSpace {
                            Error::new(
                                ErrorKind::NoSpace,
                                format!(
                                    "no new space left for the copies of this volume: {}",
                                    e.message()
                                ),
                            )
                        } else {
                            e
                        };
                        return (data, Err(e));
                    }
                }
            }
        };
        let (slot_off, chunk_end) = match at_slot {
            Some(a) if !fresh => a,
            _ => {
                let st = self.read_state();
                (st.store.offset(slot), st.store.chunk_end(slot))
            }
        };
        let slot_off = match slot_off {
            Ok(o) => o,
            Err(e) => return (data, Err(e)),
        };
        if fresh && let Some(span) = self.ahead_of(slot, chunk_end) {
            // Advisory: a failure only leaves the space sparse.
            if let Err(e) = self.group.preallocate(slot_off, span * t_sz).await {
                tracing::debug!("preallocating copy space: {}", e.chain());
            }
        }
        // What to write: the data alone, or the data widened to whole
        // granules (or the whole track over a zeroed entry).
        let (w_at, img, valid) = if zeroed {
            let mut img = IoBuf::new(us(t_sz));
            img.as_mut_slice()[us(at)..us(at + len)].copy_from_slice(data.as_slice());
            (0, Some(img), mask(0, (t_sz / g).min(64) - 1))
        } else if fill != 0 {
            let mut img = IoBuf::new(us(gb - ga));
            let track_buf = IoBuf::new(us(t_sz));
            let (track_buf, r) = self.read_track_from(Some(leaf), t, fill, track_buf).await;
            if let Err(e) = r {
                self.abandon(leaf, t, slot, fresh);
                return (data, Err(e));
            }
            img.as_mut_slice()
                .copy_from_slice(&track_buf.as_slice()[us(ga)..us(gb)]);
            img.as_mut_slice()[us(at - ga)..us(at - ga + len)].copy_from_slice(data.as_slice());
            (ga, Some(img), gm)
        } else {
            (at, None, gm)
        };
        let (data, r) = match img {
            None => self.group.write(slot_off + w_at, data, fua).await,
            Some(img) => {
                let (_, r) = self.group.write(slot_off + w_at, img, fua).await;
                (data, r)
            }
        };
        if let Err(e) = r {
            self.abandon(leaf, t, slot, fresh);
            return (data, Err(e));
        }
        if !fresh && have & valid == valid {
            // A rewrite in place of granules already valid: the entry is
            // unchanged (the track lock keeps it so), nothing to save.
            return (data, Ok(()));
        }
        let mut st = self.write_state();
        if let Some(n) = st.nodes.get_mut(&leaf) {
            let old = n
                .map
                .get(t)
                .filter(|e| e.slot == slot)
                .map_or(0, |e| e.valid);
            n.map.set(
                t,
                Entry {
                    slot,
                    valid: old | valid,
                },
            );
        }
        st.touch(leaf, t);
        (data, Ok(()))
    }

    /// Notes fresh slot `slot`; in a run of sequential first writes,
    /// returns how many slots from it to preallocate (see [`Ahead`]).
    fn ahead_of(&self, slot: u64, chunk_end: Option<u64>) -> Option<u64> {
        crate::blockdev::probe::shared_lock(1);
        self.ahead
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .note(slot, chunk_end)
    }

    /// A write that placed a slot failed: give the slot back.
    fn abandon(&self, leaf: NodeId, t: u64, slot: u64, fresh: bool) {
        if fresh {
            let mut st = self.write_state();
            st.free_entry_slot(leaf, t, Entry { slot, valid: 1 });
        }
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
    async fn before_base_write(self: &Arc<Self>, off: u64, len: u64) -> Result<()> {
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
        let mut st = self.write_state();
        if let Some(n) = st.nodes.get_mut(&view) {
            let old = n
                .map
                .get(t)
                .filter(|e| e.slot == slot)
                .map_or(0, |e| e.valid);
            n.map.set(
                t,
                Entry {
                    slot,
                    valid: old | need,
                },
            );
        }
        st.touch(view, t);
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
    pub async fn run_merges(&self, plan: &[super::family::MergeCopy]) -> Result<()> {
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

/// Compresses a set of tracks into (first, count) runs.
pub fn compress(set: &std::collections::BTreeSet<u64>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &t in set {
        match out.last_mut() {
            Some(last) if last.0 + last.1 == t => last.1 += 1,
            _ => out.push((t, 1)),
        }
    }
    out
}

/// One image of a family as a block device.
pub struct ImageDev {
    family: Arc<Family>,
    name: String,
    size: u64,
    read_only: bool,
    /// Track locks of this image's writes.
    locks: RangeLock,
}

impl ImageDev {
    pub fn new(family: Arc<Family>, name: &str, size: u64, read_only: bool) -> ImageDev {
        ImageDev {
            family,
            name: name.to_string(),
            size,
            read_only,
            locks: RangeLock::new(),
        }
    }

    pub fn family(&self) -> &Arc<Family> {
        &self.family
    }

    fn head(&self) -> Result<Head> {
        Ok(self.family.read_state().image(&self.name)?.head)
    }

    fn writable(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::new(
                ErrorKind::ReadOnly,
                format!("{} is a read-only copy", self.name),
            ));
        }
        Ok(())
    }

    async fn do_write(&self, off: u64, buf: IoBuf, fua: bool) -> BufResult {
        if let Err(e) = self
            .writable()
            .and_then(|()| check_range(off, buf.len() as u64, self.size))
        {
            return (buf, Err(e));
        }
        match self.head() {
            Ok(Head::Base) => self.family.write_origin(off, buf, fua).await,
            Ok(Head::Leaf(_)) => {
                self.family
                    .write_leaf(&self.locks, &self.name, off, buf, fua)
                    .await
            }
            Err(e) => (buf, Err(e)),
        }
    }

    async fn zeroes(&self, off: u64, len: u64, flags: ZeroFlags) -> Result<()> {
        self.writable()?;
        check_range(off, len, self.size)?;
        // One statement each: the first guard is gone before `head` reads
        // the state again (a second read lock on one thread can deadlock
        // behind a waiting writer).
        let t_sz = self.family.read_state().track;
        let head = self.head()?;
        if head == Head::Base {
            let (t0, t1) = (off / t_sz, (off + len).div_ceil(t_sz));
            let _base = self.family.base_locks.lock(t0, t1).await;
            self.family.before_base_write(off, len).await?;
            return self.family.base.write_zeroes(off, len, flags).await;
        }
        // Whole tracks become zero entries; the edges are written.
        let first = off.div_ceil(t_sz);
        let last = (off + len) / t_sz;
        if first >= last {
            return crate::blockdev::write_zeroes_by_writing(self, off, len, flags).await;
        }
        if off < first * t_sz {
            crate::blockdev::write_zeroes_by_writing(
                self,
                off,
                first * t_sz - off,
                ZeroFlags {
                    fast_only: false,
                    ..flags
                },
            )
            .await?;
        }
        self.family
            .zero_leaf_tracks(&self.locks, &self.name, first, last)
            .await?;
        if last * t_sz < off + len {
            crate::blockdev::write_zeroes_by_writing(
                self,
                last * t_sz,
                off + len - last * t_sz,
                ZeroFlags {
                    fast_only: false,
                    ..flags
                },
            )
            .await?;
        }
        if flags.fua {
            self.family.commit().await?;
        }
        Ok(())
    }
}

impl BlockDev for ImageDev {
    fn size(&self) -> u64 {
        self.size
    }

    fn block_size(&self) -> u32 {
        self.family
            .base
            .block_size()
            .max(self.family.group.block_size())
    }

    fn read(&self, off: u64, buf: IoBuf) -> DevFuture<'_, BufResult> {
        Box::pin(async move {
            if let Err(e) = check_range(off, buf.len() as u64, self.size) {
                return (buf, Err(e));
            }
            match self.head() {
                Ok(h) => self.family.read(h, off, buf).await,
                Err(e) => (buf, Err(e)),
            }
        })
    }

    fn write(&self, off: u64, buf: IoBuf, fua: bool) -> DevFuture<'_, BufResult> {
        Box::pin(self.do_write(off, buf, fua))
    }

    fn flush(&self) -> DevFuture<'_, Result<()>> {
        Box::pin(async move { self.family.commit().await })
    }

    fn wait_for_room(&self) -> Option<DevFuture<'_, Result<()>>> {
        Some(Box::pin(self.family.room()))
    }

    fn discard(&self, off: u64, len: u64) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            self.writable()?;
            check_range(off, len, self.size)?;
            // Advisory: whole tracks of a leaf give their space back.
            let t_sz = self.family.read_state().track;
            let (first, last) = (off.div_ceil(t_sz), (off + len) / t_sz);
            if first < last && matches!(self.head()?, Head::Leaf(_)) {
                self.family
                    .zero_leaf_tracks(&self.locks, &self.name, first, last)
                    .await?;
            }
            Ok(())
        })
    }

    fn write_zeroes(&self, off: u64, len: u64, flags: ZeroFlags) -> DevFuture<'_, Result<()>> {
        Box::pin(self.zeroes(off, len, flags))
    }

    fn block_status(&self, off: u64, len: u64) -> DevFuture<'_, Result<Vec<Extent>>> {
        let r = check_range(off, len, self.size);
        Box::pin(async move {
            r?;
            Ok(vec![Extent { len, flags: 0 }])
        })
    }
}

#[cfg(test)]
mod ahead_tests {
    use super::{AHEAD_AFTER, AHEAD_SLOTS, Ahead};

    #[test]
    fn only_runs_of_sequential_fresh_slots_preallocate_ahead() {
        let mut a = Ahead::default();
        // Scattered first writes: never.
        for s in [500, 3, 77, 1024, 9, 4000, 12, 600, 31, 2] {
            assert_eq!(a.note(s, Some(1 << 20)), None);
        }
        // A run: after AHEAD_AFTER in sequence, one window, then nothing
        // until the run leaves it.
        let mut got = Vec::new();
        for s in 100..100 + AHEAD_AFTER + 2 * AHEAD_SLOTS {
            if let Some(n) = a.note(s, Some(1 << 20)) {
                got.push((s, n));
            }
        }
        let first = 100 + AHEAD_AFTER;
        assert_eq!(
            got,
            vec![(first, AHEAD_SLOTS), (first + AHEAD_SLOTS, AHEAD_SLOTS)]
        );
        // Never past the chunk's end.
        let mut b = Ahead::default();
        let mut last = None;
        for s in 0..=AHEAD_AFTER {
            last = b.note(s, Some(AHEAD_AFTER + 3));
        }
        assert_eq!(last, Some(3));
    }
}
