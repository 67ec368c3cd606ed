//! Free-space collection as a job (`copy gc`, by itself after a deletion
//! leaves a frozen node with one child, and from the pool's periodic tick
//! when a store holds far more than its images read): one pass of the
//! family's tracks per pair, each pass merging the child into the frozen
//! node (`copy/collect.rs`) while host I/O goes on, and ending it with the
//! family's gates closed for the moment the tree changes; then a pass
//! packing sparse areas by their active counts (`copy/pack.rs`), an area
//! at a time.

use std::collections::VecDeque;

use super::*;
use crate::copy::map::PARTIAL_AREA_TRACKS;
use crate::copy::pack::PackArea;

impl Pool {
    /// `copy gc`: starts collecting every copy family that has something
    /// to collect (or joins the job already doing it); the jobs.
    pub async fn copy_gc(&self) -> Result<Vec<JobInfo>> {
        let fams: Vec<Arc<Family>> = self.lock().families.values().cloned().collect();
        let mut out = Vec::new();
        for fam in fams {
            if let Some(j) = self.start_collect(&fam)? {
                out.push(j);
            }
        }
        Ok(out)
    }

    /// `pool check`: every family's maps against its store's labels.
    pub async fn pool_check(&self) -> Result<PoolCheck> {
        let fams: Vec<Arc<Family>> = self.lock().families.values().cloned().collect();
        let mut out = PoolCheck {
            families: Vec::new(),
            differences: 0,
        };
        for fam in fams {
            let f = Arc::clone(&fam);
            let r = on_worker(self, move || async move { f.check_labels().await }).await?;
            out.differences += r.problem_count;
            out.families.push(FamilyCheck {
                origin: fam.read_state().origin.clone(),
                chunks: r.chunks,
                unlabelled_chunks: r.unlabelled,
                checked: r.checked,
                stale: r.stale,
                differences: r.problem_count,
                problems: r.problems,
            });
        }
        Ok(out)
    }

    /// Starts collecting `fam` if a pair is there to merge and no job is
    /// at it; the job doing it, if any.
    pub(super) fn start_collect(&self, fam: &Arc<Family>) -> Result<Option<JobInfo>> {
        let running = self.jobs.active().into_iter().find_map(|(id, k)| {
            matches!(k, JobKind::CopyCollect { family, .. } if family == fam.object).then_some(id)
        });
        if let Some(id) = running {
            return self.jobs.info(id).map(Some);
        }
        let (pairs, tracks, track, origin) = {
            let st = fam.read_state();
            let pairs = st.merge_pairs() + u64::from(st.merging.is_some());
            (pairs, st.tracks, st.track, st.origin.clone())
        };
        let total = if pairs > 0 && fam.has_merge_pair() {
            pairs.saturating_mul(tracks)
        } else {
            pack_units(&fam.pack_plan())
        };
        if total == 0 {
            return Ok(None);
        }
        let job = JobRecord {
            id: self.next_job(),
            kind: JobKind::CopyCollect {
                group: fam.group_name.clone(),
                family: fam.object,
                volume: origin,
            },
            state: crate::api::views::JobState::Running,
            done: 0,
            total,
            unit_bytes: track,
            rate_limit: self.opts.gc_rate,
            rate_floor: 0,
            message: None,
            created: now(),
            updated: now(),
        };
        self.meta.write(true, |tx| tx.put_job(&job))?;
        let make = self.make_work(&job)?;
        Ok(Some(self.jobs.start(job, make)))
    }

    /// The work of a collection job.
    pub(in crate::engine) fn copy_collect_work(&self, family: u64, job: u64) -> Result<MakeWork> {
        let pool = self.arc()?;
        let fam = self.lock().families.get(&family).cloned().ok_or_else(|| {
            Error::not_found(format!("copy family {family} of job {job} is gone"))
        })?;
        Ok(Box::new(move || {
            let (tracks, track) = {
                let st = fam.read_state();
                (st.tracks.max(1), st.track)
            };
            let host = pool.group_switches(&fam.group_name);
            Ok(Box::new(CollectWork {
                pool,
                fam,
                tracks,
                track,
                pair: None,
                scanned: 0,
                host,
                seen: 0,
                packs: None,
                packing: false,
                gave_back: false,
                stalled: false,
            }) as Box<dyn Work>)
        }))
    }

    /// The switches of every volume of `group` (a collection watches
    /// their requests).
    fn group_switches(&self, group: &str) -> Vec<Arc<Switch>> {
        let st = self.lock();
        (st.volumes.values())
            .filter(|v| v.rec.group == group)
            .map(|v| Arc::clone(&v.dev))
            .collect()
    }

    /// The switches of `fam`'s volumes (their gates close for a change).
    fn switches_of(&self, fam: &Family) -> Vec<Arc<Switch>> {
        let st = self.lock();
        Self::family_switches(&st, Some(fam.object), "")
    }

    /// Runs `f` with the gates of `fam`'s volumes closed (requests in
    /// flight finish first, new ones wait).
    async fn gates_closed<R>(&self, fam: &Family, f: impl FnOnce() -> R) -> R {
        let switches = self.switches_of(fam);
        let mut closed = Vec::with_capacity(switches.len());
        for s in &switches {
            closed.push(s.close().await);
        }
        f()
    }

    /// Starts merging the family's next pair, with its gates closed for
    /// the moment (host writes then take the track locks). Whether a pair
    /// was begun now.
    async fn begin_collect_pass(&self, fam: &Arc<Family>) -> bool {
        if fam.read_state().merging.is_some() || !fam.has_merge_pair() {
            return false;
        }
        let begun = self.gates_closed(fam, || fam.begin_merge()).await;
        if let Some((f, c)) = begun {
            tracing::debug!("copy family {}: merging node {c} into {f}", fam.object);
        }
        begun.is_some()
    }

    /// Stops merging without ending the pair (a cancelled or failed job):
    /// the tree is right as it is, and host writes go back to the child;
    /// and stops packing.
    async fn stop_collect(&self, fam: &Arc<Family>) {
        let (merging, packing) = {
            let st = fam.read_state();
            (st.merging.is_some(), st.packing)
        };
        if !merging && !packing {
            return;
        }
        self.gates_closed(fam, || {
            let mut st = fam.write_state();
            st.merging = None;
            st.packing = false;
        })
        .await;
    }

    /// Starts every family's collection that has areas to pack (the
    /// periodic check: held space grows with the writes of sparse leaves,
    /// not only with deletions).
    pub(crate) fn start_due_collections(&self) {
        let fams: Vec<Arc<Family>> = self.lock().families.values().cloned().collect();
        for fam in fams.into_iter().filter(|f| f.pack_due()) {
            if let Err(e) = self.start_collect(&fam) {
                let origin = fam.read_state().origin.clone();
                tracing::warn!("copies of {origin}: collection not started: {}", e.chain());
            }
        }
    }

    /// Ends the pair being merged: with the gates closed, the rest of the
    /// child moves, the frozen node takes its place, the change is saved,
    /// and emptied chunks go back to the group.
    async fn end_collect_pass(&self, fam: &Arc<Family>) -> Result<()> {
        if fam.read_state().merging.is_none() {
            return Ok(());
        }
        let switches = self.switches_of(fam);
        let mut closed = Vec::with_capacity(switches.len());
        for s in &switches {
            closed.push(s.close().await);
        }
        let ended = fam.end_merge().await;
        tracing::debug!("copy family {}: pair ended: {ended:?}", fam.object);
        let saved = match ended {
            Ok(true) => {
                self.save_family_with(fam, Vec::new(), Vec::new(), None)
                    .await
            }
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        };
        drop(closed);
        saved?;
        fam.settle_released().await?;
        // The emptied chunks go back to the group: while writes wait for
        // room, they hand them back themselves when woken (discard
        // awaited, `copy/room.rs`), else in the background.
        if !fam.wants_room() {
            self.reclaim_copy_space();
        }
        fam.room_freed();
        Ok(())
    }
}

/// Merges a family's pairs, one pass of its tracks per pair.
struct CollectWork {
    pool: Arc<Pool>,
    fam: Arc<Family>,
    tracks: u64,
    /// The family's track size (bytes): a job unit.
    track: u64,
    /// The pair being merged, and how many tracks were scanned since it
    /// began: once all were, nothing of the child is left but tracks whose
    /// move raced, and the pair ends (wherever in the pass that is).
    pair: Option<(NodeId, NodeId)>,
    scanned: u64,
    /// The switches of the group's volumes when the job began, and the
    /// sum of their requests at the last step.
    host: Vec<Arc<Switch>>,
    seen: u64,
    /// Areas left to pack in this pass (`copy/pack.rs`), lowest active
    /// count first; whether the family's `packing` is set.
    packs: Option<VecDeque<PackArea>>,
    packing: bool,
    /// Whether the packing pass under way gave an area back; a pass that
    /// gave none back (no room for single slots) is not planned again by
    /// this job.
    gave_back: bool,
    stalled: bool,
}

/// Job units of a packing pass: the areas' tracks.
fn pack_units(plan: &[PackArea]) -> u64 {
    plan.iter().map(|&(_, _, (_, k))| k).sum()
}

/// Tracks of an extent moved at once, and extents merged at once, while
/// the host is idle, or while its writes wait for the room the collection
/// frees: enough moves in flight to keep the disk busy (bench/copy_gc.sh
/// part 2).
const DEEP: (usize, usize) = (32, 2);
/// ... and while host requests come to the group and do not wait: host
/// I/O keeps its priority (bench/copy_gc.sh part 3).
const SHALLOW: (usize, usize) = (2, 1);

/// Entries the child may still hold for its pair to end at once, the rest
/// moved with the gates closed (a pause of milliseconds): a young child
/// ends long before a whole pass, which matters when copies come and go
/// faster than a pass (each change of the tree that breaks the pair
/// starts its scan again).
const FEW_LEFT: u64 = 256;

impl CollectWork {
    /// Whether the child being merged holds few entries any more.
    fn few_left(&self) -> bool {
        let st = self.fam.read_state();
        st.merging
            .and_then(|(_, c)| st.nodes.get(&c))
            .is_some_and(|n| n.map.len() <= FEW_LEFT)
    }

    /// How many tracks of an extent, and how many extents, to move at
    /// once now (see [`DEEP`]).
    fn depth(&mut self) -> (usize, usize) {
        let now: u64 = self.host.iter().map(|s| s.requests()).sum();
        let busy = now != self.seen;
        self.seen = now;
        if busy && !self.fam.wants_room() {
            SHALLOW
        } else {
            DEEP
        }
    }

    /// Merges tracks `t0..t1` of the current pair inside the origin's gate,
    /// as host writes are: a copy point or deletion never runs while a
    /// track is half moved.
    async fn merge(&mut self, t0: u64, t1: u64) -> Result<()> {
        let (depth, extents) = self.depth();
        let gate = self.pool.origin_switch(&self.fam);
        let _pass = match &gate {
            Some(g) => Some(g.enter().await),
            None => None,
        };
        self.fam.merge_tracks(t0, t1, depth, extents).await
    }
}

impl CollectWork {
    /// Packs areas worth `n` units of the pass (see [`pack_units`]); at
    /// the pass's end, commits and lets host writes go without the locks.
    async fn pack(&mut self, n: u64) -> Result<()> {
        if !self.packing {
            let fam = Arc::clone(&self.fam);
            self.pool.gates_closed(&fam, || fam.set_packing(true)).await;
            self.packing = true;
        }
        let mut used = 0;
        while used < n {
            let Some(pa) = self.packs.as_mut().and_then(|q| q.pop_front()) else {
                break;
            };
            used += pa.2.1;
            let depth = self.depth().0;
            let gate = self.pool.origin_switch(&self.fam);
            let _pass = match &gate {
                Some(g) => Some(g.enter().await),
                None => None,
            };
            if self.fam.pack_area(pa, depth).await? {
                self.gave_back = true;
                self.fam.room_freed();
            }
        }
        if self.packs.as_ref().is_some_and(|q| q.is_empty()) {
            self.packs = None;
            if !std::mem::take(&mut self.gave_back) {
                self.stalled = true;
                self.fam.pack_stalled();
            }
            self.fam.commit().await?;
            self.fam.settle_released().await?;
            self.end_packing().await;
            if !self.fam.wants_room() {
                self.pool.reclaim_copy_space();
            }
            self.fam.room_freed();
        }
        Ok(())
    }

    /// Lets host writes go without the track locks again.
    async fn end_packing(&mut self) {
        if self.packing {
            let fam = Arc::clone(&self.fam);
            self.pool
                .gates_closed(&fam, || fam.set_packing(false))
                .await;
            self.packing = false;
        }
    }

    /// Whether this step packs: a pass under way, or no pair left to
    /// merge and areas to pack (then the pass is planned here).
    fn packs_now(&mut self) -> bool {
        if self.packs.is_none()
            && !self.stalled
            && self.fam.read_state().merging.is_none()
            && !self.fam.has_merge_pair()
        {
            let plan = self.fam.pack_plan();
            if !plan.is_empty() {
                self.packs = Some(plan.into());
            }
        }
        self.packs.is_some()
    }
}

impl Work for CollectWork {
    fn step(&mut self, from: u64, n: u64) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            if self.packs_now() {
                return self.pack(n).await;
            }
            let mut u = from;
            while u < from + n {
                let t = u % self.tracks;
                let merging = self.fam.read_state().merging;
                if merging.is_none() || merging != self.pair {
                    // Begun here (or again, after a change of the tree
                    // made it no pair, or after a restart): a pair ends
                    // once every track was scanned since it began.
                    if merging.is_none() {
                        self.pool.begin_collect_pass(&self.fam).await;
                    }
                    self.pair = self.fam.read_state().merging;
                    self.scanned = 0;
                }
                let left = self.tracks.saturating_sub(self.scanned).max(1);
                let end = (t + (from + n - u)).min(self.tracks).min(t + left);
                self.merge(t, end).await?;
                self.scanned += end - t;
                if self.pair.is_some() && (self.scanned >= self.tracks || self.few_left()) {
                    self.pool.end_collect_pass(&self.fam).await?;
                    self.pair = None;
                    self.scanned = 0;
                }
                u += end - t;
            }
            Ok(())
        })
    }

    fn step_bytes(&self) -> u64 {
        // As many extents as a merge moves at once.
        (DEEP.1 as u64) * PARTIAL_AREA_TRACKS * self.track
    }

    fn checkpoint(&mut self) -> DevFuture<'_, Result<()>> {
        Box::pin(self.fam.commit())
    }

    fn more(&mut self) -> u64 {
        // A pair begun mid-pass, or one a deletion made while this ran:
        // another pass.
        if self.fam.has_merge_pair() {
            return self.tracks;
        }
        // Packing after the merges (or areas that grew sparse meanwhile).
        if self.stalled {
            return 0;
        }
        let plan = self.fam.pack_plan();
        let units = pack_units(&plan);
        if units > 0 {
            self.packs = Some(plan.into());
        }
        units
    }

    fn finish(&mut self) -> DevFuture<'_, Result<()>> {
        // A pass the job's units ran out on (its plan changed meanwhile):
        // the next job plans again.
        Box::pin(async {
            self.packs = None;
            self.end_packing().await;
            Ok(())
        })
    }

    fn abort(&mut self, _cancelled: bool) -> DevFuture<'_, Result<()>> {
        // A pair half merged stays correct as it is (reads walk the child,
        // then the frozen node); host writes go back to the child.
        let (pool, fam) = (Arc::clone(&self.pool), Arc::clone(&self.fam));
        Box::pin(async move {
            pool.stop_collect(&fam).await;
            Ok(())
        })
    }
}
