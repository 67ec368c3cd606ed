//! Taking an instant copy (SEED-SPECS A.c.1; US 6,779,094 FIG. 17): the
//! source's family gates close, what completed is made durable, the tree
//! gains the copy's image (O(1), no data moves), the copy's records and the
//! tree commit in one transaction, the gates open.

use super::*;

/// What a copy is taken of.
struct CopySource {
    rec: VolumeRecord,
    thick: Arc<crate::stack::volume::VolumeDev>,
    fam: Option<Arc<Family>>,
    switches: Vec<Arc<Switch>>,
    group: String,
}

impl Pool {
    pub async fn copy_create(&self, req: CopyCreateRequest) -> Result<CopyInfo> {
        check_name("copy", &req.name)?;
        let pool = self.arc()?;
        let name = req.name.clone();
        let plan = self.room_plan(&req);
        on_worker(self, move || async move {
            pool.copy_create_on_worker(req).await
        })
        .await
        .map_err(|e| crate::engine::copy_room::explain_no_room(e, plan.as_ref()))?;
        self.copy_get(&name)
    }

    /// Takes the copy (SEED-SPECS A.c.1): the steps in the module comment.
    pub(super) async fn copy_create_on_worker(
        self: Arc<Self>,
        req: CopyCreateRequest,
    ) -> Result<()> {
        self.wait_for_fold(&req.source).await?;
        let src = self.copy_source(&req)?;
        // Make what is already written durable while I/O still flows, so
        // the pause below only flushes what arrives meanwhile.
        match &src.fam {
            Some(f) => f.commit().await?,
            None => src.thick.flush().await?,
        }
        let t0 = std::time::Instant::now();
        let mut closed: Vec<Closed<'_>> = Vec::with_capacity(src.switches.len());
        for s in &src.switches {
            closed.push(s.close().await);
        }
        let created = now();
        // Everything completed so far is durable before the copy point. A
        // new family is saved only with the copy's records below, so a copy
        // that fails leaves no family behind.
        let (fam, new_family) = match &src.fam {
            Some(f) => {
                f.commit().await?;
                (Arc::clone(f), false)
            }
            None => {
                src.thick.flush().await?;
                let thick = Arc::clone(&src.thick);
                (self.new_family(&req, &src.rec, thick, &src.group)?, true)
            }
        };
        let scheme = self.add_image(&req, &src.rec.name, &fam, new_family, created)?;
        let (copy_rec, src_new) = self.save_copy(&req, &src.rec, &fam, created).await;
        let Ok(copy_rec) = copy_rec else {
            let _ = fam.write_state().delete_image(&req.name);
            self.give_back(&fam, new_family);
            return copy_rec.map(drop);
        };
        self.install_copy(&req, &src.rec, &fam, new_family, copy_rec, src_new)?;
        drop(closed);
        tracing::info!(
            "copy {} of {} taken in {:.2} ms of paused I/O ({scheme})",
            req.name,
            req.source,
            t0.elapsed().as_secs_f64() * 1e3
        );
        Ok(())
    }

    /// A source whose last copy just went is folding its data back into
    /// its extents: lets that finish (the family then dissolves), so the
    /// new copy starts a family of the mode asked for.
    async fn wait_for_fold(&self, source: &str) -> Result<()> {
        let folding = {
            let st = self.lock();
            self.family_of(&st, source).and_then(|f| {
                let s = f.read_state();
                if s.images.len() == 1 {
                    s.restore.as_ref().map(|r| r.job)
                } else {
                    None
                }
            })
        };
        if let Some(job) = folding {
            tracing::info!("copy of {source}: waiting for job {job} to fold its data back first");
            self.jobs.wait(job).await?;
        }
        Ok(())
    }

    /// Checks the request against the pool and gathers the source's parts.
    fn copy_source(&self, req: &CopyCreateRequest) -> Result<CopySource> {
        self.pairs
            .refuse_paired(&req.source, "the source of an instant copy")?;
        self.svols
            .refuse_member(&req.source, "the source of an instant copy")?;
        self.refuse_diverted(&req.source, "the source of an instant copy")?;
        let st = self.lock();
        if st.volumes.contains_key(&req.name) {
            return Err(Error::conflict(format!(
                "a volume named {} already exists",
                req.name
            )));
        }
        let v = st.volumes.get(&req.source).ok_or_else(|| {
            Error::not_found(format!(
                "unknown volume {:?}: see `ferrosan volume list`",
                req.source
            ))
        })?;
        let fam = self.family_of(&st, &req.source);
        let group = match (&fam, &req.pool_group) {
            (Some(f), Some(g)) if *g != f.group_name => {
                return Err(Error::invalid(format!(
                    "{} already takes its copies' space from group {}; --pool-group {g} cannot change that",
                    req.source, f.group_name
                )));
            }
            (Some(f), _) => f.group_name.clone(),
            (None, Some(g)) => g.clone(),
            (None, None) => v.rec.group.clone(),
        };
        if !st.groups.contains_key(&group) {
            return Err(Error::not_found(format!("unknown group {group:?}")));
        }
        if let (Some(f), Some(m)) = (&fam, req.mode) {
            let mode = f.read_state().asked;
            if m != mode {
                return Err(Error::invalid(format!(
                    "the copies of {} are {mode} copies; a {m} copy cannot join them",
                    req.source
                )));
            }
        }
        Ok(CopySource {
            rec: v.rec.clone(),
            thick: Arc::clone(&v.thick),
            switches: Self::family_switches(&st, v.rec.family, &req.source),
            fam,
            group,
        })
    }

    /// A new family that failed to take its first copy gives back whatever
    /// its store took.
    fn give_back(&self, fam: &Arc<Family>, new_family: bool) {
        if new_family {
            let gone = self.held().release_family(fam.object);
            self.discard_held_later(&fam.group_name, Arc::clone(fam.group()), gone, None);
        }
    }

    /// Adds the copy's image to the family's tree (O(1), no data moves);
    /// returns the scheme of its map.
    fn add_image(
        self: &Arc<Self>,
        req: &CopyCreateRequest,
        source: &str,
        fam: &Arc<Family>,
        new_family: bool,
        created: u64,
    ) -> Result<Scheme> {
        let scheme = req.meta.unwrap_or_else(|| {
            default_scheme(!new_family && fam.read_state().pointer_mapped(source))
        });
        let me = Arc::clone(self);
        let mut st = fam.write_state();
        let tracks = st.tracks;
        let mut ids = || me.next_object();
        let mut maps = |s: Scheme, store: &mut Store| crate::copy::maps::new_map(s, tracks, store);
        let made = st.create_copy(source, &req.name, scheme, created, &mut ids, &mut maps);
        if let Err(e) = made {
            drop(st);
            self.give_back(fam, new_family);
            return Err(e);
        }
        Ok(scheme)
    }

    /// Saves the copy's volume record, the source's (now in the family)
    /// and the family's changed tree in one durable transaction; returns
    /// the copy's record (or why it failed) and the source's new record.
    async fn save_copy(
        &self,
        req: &CopyCreateRequest,
        src_rec: &VolumeRecord,
        fam: &Arc<Family>,
        created: u64,
    ) -> (Result<VolumeRecord>, VolumeRecord) {
        let copy_rec = VolumeRecord {
            object: self.next_object(),
            name: req.name.clone(),
            group: src_rec.group.clone(),
            size: src_rec.size,
            track_size: src_rec.track_size,
            extents: Vec::new(),
            read_only: req.read_only,
            created,
            family: Some(fam.object),
        };
        let mut src_new = src_rec.clone();
        src_new.family = Some(fam.object);
        let pool_rec = self.pool_record();
        let meta = Arc::clone(&self.meta);
        let (rec, src) = (copy_rec.clone(), src_new.clone());
        let saved = fam
            .save_with(move |save| {
                meta.write(true, |tx| {
                    tx.put_pool(&pool_rec)?;
                    tx.put_volume(&rec)?;
                    tx.put_volume(&src)?;
                    if let Some(save) = save {
                        save_family(tx, save)?;
                    }
                    Ok(())
                })
            })
            .await;
        (saved.map(|()| copy_rec), src_new)
    }

    /// Running stacks: the copy's volume, and the source's switch onto its
    /// image if the family is new.
    fn install_copy(
        &self,
        req: &CopyCreateRequest,
        src_rec: &VolumeRecord,
        fam: &Arc<Family>,
        new_family: bool,
        copy_rec: VolumeRecord,
        src_new: VolumeRecord,
    ) -> Result<()> {
        let mut st = self.lock();
        if new_family {
            st.families.insert(fam.object, Arc::clone(fam));
            if let Some(v) = st.volumes.get_mut(&src_rec.name) {
                v.rec = src_new;
                v.dev.set(Arc::new(ImageDev::new(
                    Arc::clone(fam),
                    &src_rec.name,
                    src_rec.size,
                    src_rec.read_only,
                )));
            }
        }
        let image = Arc::new(ImageDev::new(
            Arc::clone(fam),
            &req.name,
            src_rec.size,
            req.read_only,
        ));
        let thick = st
            .volumes
            .get(&src_rec.name)
            .map(|v| Arc::clone(&v.thick))
            .ok_or_else(|| Error::not_found("source vanished"))?;
        let entry = VolumeEntry {
            thick,
            dev: Arc::new(Switch::new(image)),
            conns: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            rec: copy_rec,
        };
        st.volumes.insert(req.name.clone(), entry);
        Ok(())
    }

    pub(super) fn new_family(
        &self,
        req: &CopyCreateRequest,
        src: &VolumeRecord,
        thick: Arc<crate::stack::volume::VolumeDev>,
        group_name: &str,
    ) -> Result<Arc<Family>> {
        let object = self.next_object();
        let group: Arc<dyn BlockDev> = {
            let st = self.lock();
            let g = st
                .groups
                .get(group_name)
                .ok_or_else(|| Error::not_found(format!("unknown group {group_name:?}")))?;
            Arc::clone(&g.raid) as Arc<dyn BlockDev>
        };
        let mode = req.mode.unwrap_or(CopyMode::Row);
        let mut store = Store::new(
            src.track_size,
            Vec::new(),
            self.make_grow(object, group_name),
        );
        let tracks = src.size.div_ceil(src.track_size);
        let scheme = req.meta.unwrap_or_else(|| default_scheme(false));
        let origin_leaf = match mode {
            CopyMode::Row => {
                let m = crate::copy::maps::new_map(scheme, tracks, &mut store)?;
                Some((self.next_object(), m))
            }
            CopyMode::Cow => None,
        };
        let st = crate::copy::new_state(
            mode,
            &src.name,
            src.track_size,
            src.size,
            store,
            origin_leaf,
            scheme,
            now(),
        );
        let fam = Family::new(
            object,
            group_name.to_string(),
            thick as Arc<dyn BlockDev>,
            group,
            st,
            Arc::new(MetaPersist(Arc::clone(&self.meta))),
        );
        self.set_hand_back(&fam);
        Ok(fam)
    }
}
