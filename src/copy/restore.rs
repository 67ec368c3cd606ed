//! The changes of a copy tree that move data between the base and the
//! tree, or between nodes: `copy restore` (SEED-SPECS A.c, "reads are
//! correct immediately"), the fold of the views when the last copy of an
//! A1 origin goes, a split (a copy becomes a volume of its own), the base
//! handed over to an heir, and the merge of two views (their entries
//! moved, the granule copies it needs returned as [`MergeCopy`]s for the
//! caller to run).

#![forbid(unsafe_code)]

use std::collections::BTreeSet;

use super::family::{CopyMode, Head, MakeMap, NodeId, NodeKind, Restore, Src, State};
use super::map::{Entry, ZERO_SLOT};
use crate::error::{Error, Result};

/// A granule copy a view merge needs: `granules` of `track` from `src`
/// into slot `dst` of node `into`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeCopy {
    pub track: u64,
    pub granules: u64,
    pub src: Src,
    pub dst: u64,
    pub into: NodeId,
    pub valid_before: u64,
}

impl State {
    /// Refuses a change of the tree while a restore moves data into the
    /// base (its job must end first).
    fn no_restore_running(&self) -> Result<()> {
        match &self.restore {
            Some(r) => Err(Error::conflict(format!(
                "{} is still being restored from {} (job {}): wait for that job first",
                self.origin, r.copy, r.job
            ))),
            None => Ok(()),
        }
    }

    /// `copy restore` (SEED-SPECS A.c; "reads are correct immediately"):
    /// image `target` is made to show `copy`'s image as it is now.
    ///
    /// A target with a leaf (A2, or a copy of a copy) moves no data: the
    /// copy's leaf is frozen and the target gets a new leaf over it. The A1
    /// origin (the base) instead records a restore in progress: its reads
    /// of the pending tracks go to the frozen image, a job copies them into
    /// the base (preserving first for the other copies). Returns the number
    /// of tracks the job must move (0: done), and the view merges pruning
    /// the target's old leaf needs.
    pub fn restore_from(
        &mut self,
        target: &str,
        copy: &str,
        job: u64,
        ids: &mut dyn FnMut() -> NodeId,
        maps: &mut MakeMap<'_>,
    ) -> Result<(u64, Vec<MergeCopy>)> {
        self.clear_merging();
        self.no_restore_running()?;
        let copy_img = self.image(copy)?.clone();
        let target_head = self.image(target)?.head;
        // Freeze what the copy shows; the copy goes on in a new leaf.
        let from = self.detach_head(copy)?;
        self.new_leaf(copy, from, copy_img.scheme, ids, maps)?;
        match target_head {
            Head::Leaf(old) => {
                let (scheme, parent) = {
                    let n = self.node(old)?;
                    (n.map.scheme(), n.parent)
                };
                self.new_leaf(target, from, scheme, ids, maps)?;
                self.remove_node(old);
                self.record_dirty = true;
                Ok((0, self.prune(parent)?))
            }
            Head::Base => self.start_move(from, copy, job),
        }
    }

    /// The base takes node `from`'s image: its tracks become pending.
    fn start_move(
        &mut self,
        from: Option<NodeId>,
        copy: &str,
        job: u64,
    ) -> Result<(u64, Vec<MergeCopy>)> {
        let pending = self.chain_tracks(from);
        let n = pending.len() as u64;
        self.record_dirty = true;
        let Some(from) = from else {
            return Ok((0, Vec::new()));
        };
        if pending.is_empty() {
            // Nothing to move: what showed the image is no longer needed.
            return Ok((0, self.prune(Some(from))?));
        }
        self.restore = Some(Restore {
            from,
            pending,
            copy: copy.to_string(),
            job,
        });
        Ok((n, Vec::new()))
    }

    /// The last copy is gone but the original's data still lies in the new
    /// space (A2): it moves back into the initial area (a pending restore
    /// from the original's own frozen leaf), after which the family can
    /// dissolve. Returns the tracks to move and the merges to run.
    pub fn start_fold(&mut self, job: u64) -> Result<(u64, Vec<MergeCopy>)> {
        self.clear_merging();
        if self.restore.is_some() || self.images.len() != 1 {
            return Ok((0, Vec::new()));
        }
        let origin = self.origin.clone();
        if self.image(&origin)?.head == Head::Base {
            return Ok((0, Vec::new()));
        }
        let from = self.detach_head(&origin)?;
        if let Some(img) = self.images.get_mut(&origin) {
            img.head = Head::Base;
        }
        self.mode = CopyMode::Cow;
        self.newest_view = None;
        self.start_move(from, &origin, job)
    }

    /// A restore's data is all in the base: forget it and prune the frozen
    /// image it read from.
    pub fn finish_restore(&mut self) -> Result<Vec<MergeCopy>> {
        self.clear_merging();
        match &self.restore {
            Some(r) if r.pending.is_empty() => {
                let from = r.from;
                self.restore = None;
                self.record_dirty = true;
                let plan = self.prune(Some(from));
                // Writes made during the restore were not looked at.
                self.drop_all_dead();
                plan
            }
            Some(r) => Err(Error::conflict(format!(
                "the restore from {} still has {} tracks to move",
                r.copy,
                r.pending.len()
            ))),
            None => Ok(Vec::new()),
        }
    }

    /// Tracks of new data each image holds alone (US 6,779,094 claim 8).
    pub fn own_tracks(&self, name: &str) -> u64 {
        let mut out = BTreeSet::new();
        for id in self.own_nodes(name) {
            if let Some(n) = self.nodes.get(&id) {
                out.extend(n.map.entries().map(|(t, _)| t));
            }
        }
        out.len() as u64
    }

    /// `copy split` (SEED-SPECS A.c.5, US 6,779,094 claims 7-9) of a
    /// family of two images: `into` (the image whose new data moves into
    /// the initial area) and `other`. `other` is given a view at the bottom
    /// of the tree, so the base's old data is preserved for it as the base
    /// changes; `into` becomes the base's writer (A1 origin), showing its
    /// old image through a pending restore until the job has moved it.
    /// Returns the tracks to move and the merges to run.
    pub fn start_split(
        &mut self,
        into: &str,
        other: &str,
        job: u64,
        ids: &mut dyn FnMut() -> NodeId,
        maps: &mut MakeMap<'_>,
    ) -> Result<(u64, Vec<MergeCopy>)> {
        self.clear_merging();
        self.no_restore_running()?;
        if self.images.len() != 2
            || !self.images.contains_key(into)
            || !self.images.contains_key(other)
        {
            return Err(Error::conflict(format!(
                "a split separates an original from its one copy; this family has {} images: delete the others first",
                self.images.len()
            )));
        }
        let into_head = self.image(into)?.head;
        if into_head == Head::Base {
            // Already the base's writer: its data is in place.
            return Ok((0, Vec::new()));
        }
        let other_img = self.image(other)?.clone();
        let view_map = maps(other_img.scheme, &mut self.store)?;
        let v = ids();
        match other_img.head {
            Head::Base => {
                // The A1 origin steps aside: a leaf over a new newest view.
                self.add_node(v, None, NodeKind::View, view_map);
                if let Some(o) = self.newest_view
                    && let Some(n) = self.nodes.get_mut(&o)
                {
                    n.parent = Some(v);
                }
                self.newest_view = Some(v);
                self.new_leaf(other, Some(v), other_img.scheme, ids, maps)?;
            }
            Head::Leaf(_) => {
                // Everything that read the base now reads it through `v`.
                let roots: Vec<NodeId> = self
                    .nodes
                    .values()
                    .filter(|n| n.parent.is_none())
                    .map(|n| n.id)
                    .collect();
                self.add_node(v, None, NodeKind::View, view_map);
                for r in roots {
                    if let Some(n) = self.nodes.get_mut(&r) {
                        n.parent = Some(v);
                    }
                }
                self.newest_view = Some(v);
            }
        }
        let from = self.detach_head(into)?;
        if let Some(img) = self.images.get_mut(into) {
            img.head = Head::Base;
        }
        self.origin = into.to_string();
        self.mode = CopyMode::Cow;
        self.start_move(from, other, job)
    }

    /// The origin volume goes away while copies remain: the base stops
    /// changing and passes to `heir`, which keeps reading through its
    /// chain. The family becomes A2 (its views are never written again).
    pub fn hand_over_base(&mut self, heir: &str) -> Result<Vec<MergeCopy>> {
        self.clear_merging();
        self.no_restore_running()?;
        let old = self.origin.clone();
        if heir == old || !self.images.contains_key(heir) {
            return Err(Error::invalid(format!(
                "{heir} cannot inherit {old}'s data"
            )));
        }
        let img = self.image(&old)?.clone();
        self.images.remove(&old);
        self.origin = heir.to_string();
        self.mode = CopyMode::Row;
        self.newest_view = None;
        self.record_dirty = true;
        let node = match img.head {
            Head::Leaf(l) => {
                let p = self.nodes.get(&l).and_then(|n| n.parent);
                self.remove_node(l);
                p
            }
            Head::Base => None,
        };
        self.prune(node)
    }

    /// Moves the entries of view `from` that view `into` lacks into `into`,
    /// then removes `from`; `into` takes its place in the chain.
    pub(super) fn merge_view(&mut self, from: NodeId, into: NodeId) -> Result<Vec<MergeCopy>> {
        let entries: Vec<(u64, Entry)> = self.node(from)?.map.entries().collect();
        let parent = self.node(from)?.parent;
        let mut plan = Vec::new();
        let mut kept = BTreeSet::new();
        for (t, e) in entries {
            let have = self.nodes.get(&into).and_then(|n| n.map.get(t));
            let want = e.valid & !have.map_or(0, |h| h.valid);
            if want == 0 {
                continue;
            }
            let accepts_slot = self
                .nodes
                .get(&into)
                .is_some_and(|n| n.map.accepts(t, e.slot));
            match have {
                None if accepts_slot => {
                    if let Some(n) = self.nodes.get_mut(&into) {
                        n.map.set(
                            t,
                            Entry {
                                slot: e.slot,
                                valid: want,
                            },
                        );
                    }
                    kept.insert(e.slot);
                    self.touch(into, t);
                }
                _ => {
                    // Data must move: into the slot `into` has or places.
                    let dst = match have {
                        Some(h) if h.slot != ZERO_SLOT => h.slot,
                        _ => {
                            let n = self
                                .nodes
                                .get_mut(&into)
                                .ok_or_else(|| Error::corrupt("merge target vanished"))?;
                            n.map.place(t, &mut self.store)?
                        }
                    };
                    plan.push(MergeCopy {
                        track: t,
                        granules: want,
                        src: if e.slot == ZERO_SLOT {
                            Src::Zero
                        } else {
                            Src::Slot(e.slot)
                        },
                        dst,
                        into,
                        valid_before: have.map_or(0, |h| h.valid),
                    });
                }
            }
        }
        if let Some(n) = self.nodes.get_mut(&into) {
            n.parent = parent;
        }
        if self.newest_view == Some(from) {
            self.newest_view = Some(into);
        }
        // Remove `from`. Slots adopted by `into` stay allocated (even inside
        // one of `from`'s areas: the area's other slots are freed one by
        // one, so its chunk goes back only when the adopted ones do);
        // slots the plan still reads from are freed after their copy.
        if let Some(n) = self.nodes.remove(&from) {
            let reading: BTreeSet<u64> = plan
                .iter()
                .filter_map(|p| match p.src {
                    Src::Slot(s) => Some(s),
                    _ => None,
                })
                .collect();
            let keep = |s: u64| s == ZERO_SLOT || kept.contains(&s) || reading.contains(&s);
            let mut free: Vec<u64> = (n.map.singles())
                .map(|(_, s)| s)
                .filter(|&s| !keep(s))
                .collect();
            for (a, c) in n.map.areas() {
                free.extend((a..a + c).filter(|&s| !keep(s)));
            }
            for s in free {
                self.store.free_later(s);
            }
            self.dropped.push(from);
            self.dirty.retain(|(d, _)| *d != from);
        }
        self.record_dirty = true;
        Ok(plan)
    }
}
