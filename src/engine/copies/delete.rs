//! Deleting a copy, or an original whose base passes to a copy (A2), and
//! the family's end when its last copy goes and nothing is left in the new
//! space (it dissolves: a thick volume again).

use super::*;

impl Pool {
    /// Deletes copy `name`; the job folding the original's data back, if
    /// the last copy went and data must move.
    pub async fn copy_delete(&self, name: &str) -> Result<CopyDeleteInfo> {
        let job = self.family_delete(name, false, false).await?;
        Ok(CopyDeleteInfo {
            name: name.to_string(),
            job,
        })
    }

    /// Deletes a volume of a copy family: a copy, or (`origin_too`) the
    /// original, whose initial area then passes to one of its copies.
    /// `force`: even with NBD connections open (their I/O then fails).
    /// Returns the fold job it started (see `copy_delete_on_worker`).
    pub(crate) async fn family_delete(
        &self,
        name: &str,
        origin_too: bool,
        force: bool,
    ) -> Result<Option<JobInfo>> {
        {
            let st = self.lock();
            let v = st.volumes.get(name).ok_or_else(|| {
                Error::not_found(format!("unknown copy {name:?}: see `ferrosan copy list`"))
            })?;
            let conns = v.conns.load(std::sync::atomic::Ordering::SeqCst);
            if conns > 0 && !force {
                let what = if origin_too { "volume" } else { "copy" };
                return Err(Error::conflict(format!(
                    "{what} {name} is in use by {conns} NBD connection(s): disconnect them, or delete with `ferrosan volume delete {name} --force` (their I/O then fails)"
                )));
            }
            let f = self
                .family_of(&st, name)
                .ok_or_else(|| Error::not_found(format!("volume {name} is not an instant copy")))?;
            if f.read_state().origin == name && !origin_too {
                return Err(Error::conflict(format!(
                    "{name} is the original of its copies, not a copy: `ferrosan volume delete {name}` deletes it and its copies keep their data"
                )));
            }
        }
        let pool = self.arc()?;
        let name = name.to_string();
        let job = on_worker(self, move || async move {
            pool.copy_delete_on_worker(&name).await
        })
        .await?;
        self.reclaim_copy_space();
        Ok(job)
    }

    pub(super) async fn copy_delete_on_worker(
        self: Arc<Self>,
        name: &str,
    ) -> Result<Option<JobInfo>> {
        let (fam, switches) = {
            let st = self.lock();
            let f = self
                .family_of(&st, name)
                .ok_or_else(|| Error::not_found(format!("volume {name} is not an instant copy")))?;
            (
                Arc::clone(&f),
                Self::family_switches(&st, Some(f.object), name),
            )
        };
        let mut closed = Vec::with_capacity(switches.len());
        for s in &switches {
            closed.push(s.close().await);
        }
        fam.commit().await?;
        // The original goes: its initial area passes to a copy (the first
        // by name), which keeps reading through its own chain.
        let heir = {
            let st = fam.read_state();
            (st.origin == name)
                .then(|| st.images.keys().find(|k| *k != name).cloned())
                .flatten()
        };
        let passed = match &heir {
            Some(h) => Some(self.pass_extents(name, h)?),
            None => None,
        };
        let plan = match &heir {
            Some(h) => fam.write_state().hand_over_base(h)?,
            None => fam.write_state().delete_image(name)?,
        };
        fam.run_merges(&plan).await?;
        // Down to one image: its data in the new space folds back into the
        // initial area in the background, then the family dissolves.
        let fold = if fam.read_state().images.len() == 1 {
            let origin = fam.read_state().origin.clone();
            let job = self.copy_move_job(&fam, &origin, &origin, false);
            let (moving, plan) = fam.write_state().start_fold(job.id)?;
            fam.run_merges(&plan).await?;
            (moving > 0).then_some(job)
        } else {
            None
        };
        // A family down to its origin with nothing of its own goes away:
        // the origin is a thick volume again.
        let dissolve = {
            let st = fam.read_state();
            st.images.len() == 1 && st.nodes.values().all(|n| n.map.is_empty())
        };
        let origin = fam.read_state().origin.clone();
        let (mut origin_rec, thick) = {
            let st = self.lock();
            let v = st
                .volumes
                .get(&origin)
                .ok_or_else(|| Error::not_found("origin vanished"))?;
            (v.rec.clone(), Arc::clone(&v.thick))
        };
        let thick = match &passed {
            Some(p) => {
                if let Some(r) = p.iter().find(|r| r.name == origin) {
                    origin_rec = r.clone();
                }
                self.lock()
                    .volumes
                    .get(name)
                    .map(|v| Arc::clone(&v.thick))
                    .unwrap_or(thick)
            }
            None => thick,
        };
        if dissolve {
            origin_rec.family = None;
        }
        let meta = Arc::clone(&self.meta);
        let (name_s, origin_rec_s, object) = (name.to_string(), origin_rec.clone(), fam.object);
        let fold_s = fold.clone();
        fam.save_with(move |save| {
            meta.write(true, |tx| {
                tx.del_volume(&name_s)?;
                if let Some(save) = save {
                    if dissolve {
                        for n in &save.rec.nodes {
                            tx.del_copy_node(n.id)?;
                        }
                        for id in &save.dropped {
                            tx.del_copy_node(*id)?;
                        }
                        tx.del_family(object)?;
                    } else {
                        save_family(tx, save)?;
                    }
                }
                if let Some(j) = &fold_s {
                    tx.put_job(j)?;
                }
                tx.put_volume(&origin_rec_s)
            })
        })
        .await?;
        {
            let mut st = self.lock();
            if let Some(v) = st.volumes.remove(name) {
                v.dev.revoke();
            }
            if let Some(v) = st.volumes.get_mut(&origin) {
                v.rec = origin_rec.clone();
                v.thick = Arc::clone(&thick);
                if dissolve {
                    v.dev.set(Arc::clone(&thick) as Arc<dyn BlockDev>);
                }
            }
            if dissolve {
                st.families.remove(&fam.object);
            }
        }
        if dissolve {
            // Every chunk of the family goes back.
            let gone = self.held().release_family(fam.object);
            self.discard_held(&fam.group_name, Arc::clone(fam.group()), gone, None)
                .await;
            drop(fam.take_released());
        }
        drop(closed);
        if fold.is_none() && !dissolve {
            // A copy point only one line reads any more: collect it.
            if let Err(e) = self.start_collect(&fam) {
                tracing::warn!("copies of {origin}: collection not started: {}", e.chain());
            }
        }
        fold.map(|job| self.start_copy_move(job)).transpose()
    }

    /// A family of one image with nothing in the new space goes away: the
    /// image is a thick volume again and every chunk goes back. Call with
    /// the family's gates closed.
    pub(super) async fn dissolve_family(&self, fam: &Arc<Family>) -> Result<()> {
        let origin = fam.read_state().origin.clone();
        let _one = fam.hold_saves().await;
        let (mut rec, thick) = {
            let st = self.lock();
            let v = st
                .volumes
                .get(&origin)
                .ok_or_else(|| Error::not_found(format!("volume {origin} vanished")))?;
            (v.rec.clone(), Arc::clone(&v.thick))
        };
        rec.family = None;
        let nodes: Vec<NodeId> = fam.write_state().take_all_nodes();
        let (meta, object, rec_s) = (Arc::clone(&self.meta), fam.object, rec.clone());
        tokio::task::spawn_blocking(move || {
            meta.write(true, |tx| {
                for id in &nodes {
                    tx.del_copy_node(*id)?;
                }
                tx.del_family(object)?;
                tx.put_volume(&rec_s)
            })
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("dissolving the copy family: {e}")))??;
        {
            let mut st = self.lock();
            st.families.remove(&fam.object);
            if let Some(v) = st.volumes.get_mut(&origin) {
                v.rec = rec;
                v.dev.set(Arc::clone(&thick) as Arc<dyn BlockDev>);
            }
        }
        let gone = self.held().release_family(fam.object);
        self.discard_held(&fam.group_name, Arc::clone(fam.group()), gone, None)
            .await;
        drop(fam.take_released());
        tracing::info!("{origin} has no copies left and is a plain volume again");
        Ok(())
    }
}
