//! Restore (A.c.4) and split (A.c.5; US 6,779,094 claims 7-9): the
//! changes that make one image's data move into the initial area, and the
//! copy move job that moves it track by track inside the origin's gate.

use super::*;

impl Pool {
    /// The record of a job moving a family's pending tracks.
    pub(super) fn copy_move_job(
        &self,
        fam: &Family,
        volume: &str,
        from: &str,
        split: bool,
    ) -> JobRecord {
        let (tracks, track) = {
            let st = fam.read_state();
            (st.tracks, st.track)
        };
        let id = self.next_job();
        JobRecord {
            id,
            kind: JobKind::CopyMove {
                group: fam.group_name.clone(),
                family: fam.object,
                volume: volume.to_string(),
                from: from.to_string(),
                split,
            },
            state: JobState::Running,
            done: 0,
            total: tracks,
            unit_bytes: track,
            rate_limit: 0,
            rate_floor: 0,
            message: None,
            created: now(),
            updated: now(),
        }
    }

    /// `copy restore NAME`: NAME's source shows NAME's image at once. A
    /// source with a leaf moves no data; the A1 origin reads its pending
    /// tracks from the copy while a job moves them into place. Refused
    /// while NBD clients use the source, unless `force`: their volume's
    /// contents would change under them.
    pub async fn copy_restore(&self, name: &str, force: bool) -> Result<CopyRestoreInfo> {
        let pool = self.arc()?;
        let n = name.to_string();
        let (target, job, connections) = on_worker(self, move || async move {
            pool.copy_restore_on_worker(&n, force).await
        })
        .await?;
        let job = job.map(|j| self.start_copy_move(j)).transpose()?;
        Ok(CopyRestoreInfo {
            volume: target,
            from: name.to_string(),
            job,
            connections,
        })
    }

    /// Refuses to change what `target` reads while clients use it, unless
    /// `force`; returns its connections.
    pub(super) fn check_unused(&self, target: &str, force: bool, what: &str) -> Result<usize> {
        let conns = self
            .lock()
            .volumes
            .get(target)
            .map_or(0, |v| v.conns.load(std::sync::atomic::Ordering::SeqCst));
        if conns > 0 && !force {
            return Err(Error::conflict(format!(
                "volume {target} is in use by {conns} NBD connection(s): {what} would change its contents under them; disconnect them first, or add --force (they then read the new contents, and what they wrote since is gone)"
            )));
        }
        Ok(conns)
    }

    pub(super) async fn copy_restore_on_worker(
        self: Arc<Self>,
        name: &str,
        force: bool,
    ) -> Result<(String, Option<JobRecord>, usize)> {
        let (fam, switches) = self.family_and_switches(name)?;
        let target = {
            let st = fam.read_state();
            if st.origin == name {
                return Err(Error::invalid(format!(
                    "{name} is the original of its copies: restore it from one of them (`ferrosan copy restore COPY`)"
                )));
            }
            let src = st.image(name)?.source.clone().unwrap_or_default();
            if !st.images.contains_key(&src) {
                return Err(Error::conflict(format!(
                    "{name} was copied from {src}, which no longer exists: nothing to restore"
                )));
            }
            src
        };
        if self
            .lock()
            .volumes
            .get(&target)
            .is_some_and(|v| v.rec.read_only)
        {
            return Err(Error::conflict(format!(
                "{target} is read-only: it cannot be restored"
            )));
        }
        let connections =
            self.check_unused(&target, force, &format!("restoring it from copy {name}"))?;
        let mut closed = Vec::with_capacity(switches.len());
        for s in &switches {
            closed.push(s.close().await);
        }
        fam.commit().await?;
        let job = self.copy_move_job(&fam, &target, name, false);
        let (moving, plan) = {
            let me = Arc::clone(&self);
            let mut st = fam.write_state();
            let tracks = st.tracks;
            let mut ids = || me.next_object();
            let mut maps =
                |s: Scheme, store: &mut Store| crate::copy::maps::new_map(s, tracks, store);
            st.restore_from(&target, name, job.id, &mut ids, &mut maps)?
        };
        fam.run_merges(&plan).await?;
        let job = (moving > 0).then_some(job);
        self.save_family_with(&fam, Vec::new(), Vec::new(), job.clone())
            .await?;
        drop(closed);
        tracing::info!(
            "{target} restored from copy {name} ({moving} tracks to move in the background)"
        );
        Ok((target, job, connections))
    }

    /// `copy split NAME` (US 6,779,094 claims 7-9): measures the new data
    /// of the original and of the copy, moves one set into the initial
    /// area by policy, and leaves the two images independent: either can
    /// then be deleted without the other losing anything.
    pub async fn copy_split(&self, name: &str, req: CopySplitRequest) -> Result<CopySplitInfo> {
        let pool = self.arc()?;
        let n = name.to_string();
        let policy = req.policy.unwrap_or(SplitPolicy::MoveSmaller);
        let (n_orig, n_copy, moving, job) = on_worker(self, move || async move {
            pool.copy_split_on_worker(&n, policy).await
        })
        .await?;
        let job = job.map(|j| self.start_copy_move(j)).transpose()?;
        Ok(CopySplitInfo {
            n_orig,
            n_copy,
            policy,
            moving,
            job,
        })
    }

    pub(super) async fn copy_split_on_worker(
        self: Arc<Self>,
        name: &str,
        policy: SplitPolicy,
    ) -> Result<(u64, u64, String, Option<JobRecord>)> {
        let (fam, switches) = self.family_and_switches(name)?;
        let mut closed = Vec::with_capacity(switches.len());
        for s in &switches {
            closed.push(s.close().await);
        }
        fam.commit().await?;
        let (origin, n_orig, n_copy) = {
            let st = fam.read_state();
            if st.origin == name {
                return Err(Error::invalid(format!(
                    "{name} is the original: split its copy (`ferrosan copy split COPY`)"
                )));
            }
            if st.images.len() != 2 {
                let others: Vec<&str> = st
                    .images
                    .keys()
                    .filter(|k| **k != name && **k != st.origin)
                    .map(String::as_str)
                    .collect();
                let hint = others
                    .iter()
                    .map(|o| format!("`ferrosan copy delete {o}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(Error::conflict(format!(
                    "a split separates an original from its only copy, and {} also has {}: \
                     delete the other copies first ({hint}), or keep {name} as a copy",
                    st.origin,
                    others.join(", ")
                )));
            }
            (
                st.origin.clone(),
                st.own_tracks(&st.origin),
                st.own_tracks(name),
            )
        };
        let orig_moves = match policy {
            SplitPolicy::MoveSmaller => n_orig <= n_copy,
            SplitPolicy::MoveLarger => n_orig > n_copy,
        };
        let (into, other) = if orig_moves {
            (origin.clone(), name.to_string())
        } else {
            (name.to_string(), origin.clone())
        };
        let job = self.copy_move_job(&fam, &into, &other, true);
        let (moving, plan) = {
            let me = Arc::clone(&self);
            let mut st = fam.write_state();
            let tracks = st.tracks;
            let mut ids = || me.next_object();
            let mut maps =
                |s: Scheme, store: &mut Store| crate::copy::maps::new_map(s, tracks, store);
            st.start_split(&into, &other, job.id, &mut ids, &mut maps)?
        };
        fam.run_merges(&plan).await?;
        // The image now holding the initial area carries its extents.
        let mut puts = Vec::new();
        if into != origin {
            puts = self.pass_extents(&origin, &into)?;
        }
        let job = (moving > 0).then_some(job);
        self.save_family_with(&fam, puts.clone(), Vec::new(), job.clone())
            .await?;
        self.apply_extents(&puts);
        drop(closed);
        tracing::info!(
            "split {name} from {origin}: new data in {n_orig} tracks of the original, {n_copy} of the copy; {into}'s moves into the space both share ({moving} tracks)"
        );
        Ok((n_orig, n_copy, into, job))
    }

    /// Records moving the initial area's extents from volume `from` to
    /// volume `to` (returned for saving; see [`Pool::apply_extents`]).
    pub(super) fn pass_extents(&self, from: &str, to: &str) -> Result<Vec<VolumeRecord>> {
        let st = self.lock();
        let a = st
            .volumes
            .get(from)
            .ok_or_else(|| Error::not_found(format!("volume {from} vanished")))?;
        let b = st
            .volumes
            .get(to)
            .ok_or_else(|| Error::not_found(format!("volume {to} vanished")))?;
        let mut ra = a.rec.clone();
        let mut rb = b.rec.clone();
        rb.extents = std::mem::take(&mut ra.extents);
        Ok(vec![ra, rb])
    }

    /// Applies saved volume records to the running entries; the one given
    /// extents takes the thick volume over them.
    pub(super) fn apply_extents(&self, recs: &[VolumeRecord]) {
        let mut st = self.lock();
        let thick = recs
            .iter()
            .find(|r| r.extents.is_empty())
            .and_then(|r| st.volumes.get(&r.name))
            .map(|v| Arc::clone(&v.thick));
        for r in recs {
            if let Some(v) = st.volumes.get_mut(&r.name) {
                v.rec = r.clone();
                if !r.extents.is_empty()
                    && let Some(t) = &thick
                {
                    v.thick = Arc::clone(t);
                }
            }
        }
    }

    /// Starts (or resumes) a copy move job.
    pub(super) fn start_copy_move(&self, job: JobRecord) -> Result<JobInfo> {
        let make = self.make_work(&job)?;
        Ok(self.jobs.start(job, make))
    }

    /// The work of a copy move job.
    pub(in crate::engine) fn copy_move_work(&self, family: u64, job: u64) -> Result<MakeWork> {
        let pool = self.arc()?;
        let fam = self.lock().families.get(&family).cloned().ok_or_else(|| {
            Error::not_found(format!("copy family {family} of job {job} is gone"))
        })?;
        Ok(Box::new(move || {
            Ok(Box::new(CopyMoveWork { pool, fam }) as Box<dyn Work>)
        }))
    }

    /// A copy move job's last step: with the family paused, forget the
    /// finished restore and prune what it read from.
    pub(super) async fn finish_copy_move(self: Arc<Self>, fam: Arc<Family>) -> Result<()> {
        let switches = {
            let st = self.lock();
            Self::family_switches(&st, Some(fam.object), "")
        };
        let mut closed = Vec::with_capacity(switches.len());
        for s in &switches {
            closed.push(s.close().await);
        }
        fam.commit().await?;
        let plan = fam.write_state().finish_restore()?;
        fam.run_merges(&plan).await?;
        let dissolve = {
            let st = fam.read_state();
            st.images.len() == 1
                && st.restore.is_none()
                && st.nodes.values().all(|n| n.map.is_empty())
        };
        if dissolve {
            self.dissolve_family(&fam).await?;
        } else {
            self.save_family_with(&fam, Vec::new(), Vec::new(), None)
                .await?;
        }
        drop(closed);
        self.reclaim_copy_space();
        Ok(())
    }
}

/// Moves a family's pending tracks into the initial area.
struct CopyMoveWork {
    pool: Arc<Pool>,
    fam: Arc<Family>,
}

impl Work for CopyMoveWork {
    fn step(&mut self, from: u64, n: u64) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            // Track by track inside the origin's gate, as host writes are:
            // a copy point, deletion or merge never runs while a track is
            // half moved (its view preserved into, its pending bit cleared).
            for t in from..from + n {
                let gate = self.pool.origin_switch(&self.fam);
                let _pass = match &gate {
                    Some(g) => Some(g.enter().await),
                    None => None,
                };
                self.fam.restore_tracks(t, t + 1).await?;
            }
            Ok(())
        })
    }

    fn checkpoint(&mut self) -> DevFuture<'_, Result<()>> {
        Box::pin(self.fam.commit())
    }

    fn finish(&mut self) -> DevFuture<'_, Result<()>> {
        let (pool, fam) = (Arc::clone(&self.pool), Arc::clone(&self.fam));
        Box::pin(pool.finish_copy_move(fam))
    }

    fn abort(&mut self, _cancelled: bool) -> DevFuture<'_, Result<()>> {
        // The restore stays pending (its reads stay correct); the next
        // start gives it a job again.
        Box::pin(async { Ok(()) })
    }
}
