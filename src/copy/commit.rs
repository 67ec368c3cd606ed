//! Durable commits of a copy family: data first, then the changed
//! metadata (DESIGN rule 4), one commit serving every caller waiting
//! (group commit); the snapshot a save stores, and what a finished save
//! frees (through the read fence, `fence.rs`).
//!
//! ```text
//!   commit()     wait for a pass that began after the call
//!   commit_pass  save lock; snapshot (dead entries swept, dirty pages,
//!                frees, chunks, areas, labels planned); flush the group
//!                and base; labels written beside the database save
//!   saved        ok: retire the frees (reused once no read holds them);
//!                failed: everything kept for the next pass
//! ```

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::family::{NodeId, State};
use super::image::Family;
use super::record::{FamilyRecord, FamilySave, ImageRecord, NodeRecord};
use crate::error::{Error, ErrorKind, Result};

#[derive(Default)]
pub(super) struct Commits {
    /// The sequence number the next pass takes.
    pub(super) next: u64,
    /// The highest sequence number a waiter needs.
    pub(super) wanted: u64,
    pub(super) running: bool,
}

/// What one save stores.
pub struct Snapshot {
    pub save: FamilySave,
    labels: super::describe::LabelWrites,
    frees: Vec<u64>,
    dirty: std::collections::BTreeSet<(NodeId, u64)>,
}

impl Family {
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
        if let Err(e) = super::describe::clear(self.group.as_ref(), &snap.labels).await {
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
                st.store.chunks_saved(&snap.save.chunks);
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
