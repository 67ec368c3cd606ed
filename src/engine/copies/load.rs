//! Copy families at start: records and rows read back into running
//! families (a format-1 record's inline chunks moved to rows), and jobs
//! given again to restores and splits left pending.

use super::*;

impl Pool {
    /// Loads the copy families after the volumes (at start).
    pub(in crate::engine) fn load_families(&self, families: Vec<FamilyRecord>) -> Result<()> {
        for rec in families {
            let (thick, group, sizes) = {
                let st = self.lock();
                let Some(v) = st.volumes.get(&rec.origin) else {
                    self.problem(format!(
                        "copy family {}: its origin {} is gone",
                        rec.object, rec.origin
                    ));
                    continue;
                };
                let Some(g) = st.groups.get(&rec.group) else {
                    self.problem(format!(
                        "copy family {}: its group {} is not available",
                        rec.object, rec.group
                    ));
                    continue;
                };
                let sizes: BTreeMap<String, (u64, bool)> = st
                    .volumes
                    .values()
                    .filter(|x| x.rec.family == Some(rec.object))
                    .map(|x| (x.rec.name.clone(), (x.rec.size, x.rec.read_only)))
                    .collect();
                (
                    Arc::clone(&v.thick),
                    Arc::clone(&g.raid) as Arc<dyn BlockDev>,
                    sizes,
                )
            };
            let (m1, m2) = (Arc::clone(&self.meta), Arc::clone(&self.meta));
            let pages_of = move |id: NodeId| m1.pages(id);
            let areas_of = move |id: NodeId| m2.copy_areas(id);
            let rows = self
                .meta
                .copy_chunks(rec.object)
                .and_then(|c| Ok((c, self.meta.copy_unfreed(rec.object)?)))
                .map(|(chunks, unfreed)| crate::copy::Rows {
                    chunks,
                    unfreed,
                    pages_of: &pages_of,
                    areas_of: &areas_of,
                });
            let loaded = rows.and_then(|rows| {
                crate::copy::load_state(&rec, rows, self.make_grow(rec.object, &rec.group))
            });
            let state: FamilyState = match loaded {
                Ok(s) => s,
                Err(e) => {
                    self.problem(format!(
                        "copy family of {} cannot be loaded: {}",
                        rec.origin,
                        e.chain()
                    ));
                    continue;
                }
            };
            {
                let mut held = self.held();
                for c in state.store.chunks() {
                    held.copies.push((
                        rec.object,
                        rec.group.clone(),
                        c.group_off - c.head,
                        c.slots * rec.track_size + c.head,
                    ));
                }
            }
            let images: Vec<(String, Head)> = state
                .images
                .values()
                .map(|i| (i.name.clone(), i.head))
                .collect();
            let fam = Family::new(
                rec.object,
                rec.group.clone(),
                thick as Arc<dyn BlockDev>,
                group,
                state,
                Arc::new(MetaPersist(Arc::clone(&self.meta))),
            );
            self.set_hand_back(&fam);
            let mut st = self.lock();
            for (name, _) in images {
                let Some(&(size, ro)) = sizes.get(&name) else {
                    self.problem(format!(
                        "copy family of {}: image {name} has no volume",
                        rec.origin
                    ));
                    continue;
                };
                if let Some(v) = st.volumes.get_mut(&name) {
                    v.dev
                        .set(Arc::new(ImageDev::new(Arc::clone(&fam), &name, size, ro)));
                }
            }
            st.families.insert(rec.object, fam);
        }
        Ok(())
    }

    /// At start: a family whose restore or split is pending with no job
    /// running gets a job again.
    pub(in crate::engine) fn resume_copy_moves(&self) -> Result<()> {
        let active: Vec<u64> = self.jobs.active().iter().map(|(id, _)| *id).collect();
        let fams: Vec<Arc<Family>> = self.lock().families.values().cloned().collect();
        for fam in fams {
            let pending = {
                let st = fam.read_state();
                st.restore
                    .as_ref()
                    .map(|r| (r.job, r.copy.clone(), st.origin.clone()))
            };
            let Some((job, from, volume)) = pending else {
                continue;
            };
            if active.contains(&job) {
                continue;
            }
            let rec = self.copy_move_job(&fam, &volume, &from, false);
            let new_id = rec.id;
            if let Some(r) = fam.write_state().restore.as_mut() {
                r.job = new_id;
            }
            {
                let mut st = fam.write_state();
                st.record_dirty = true;
            }
            let pool_rec = self.pool_record();
            self.meta.write(true, |tx| {
                tx.put_pool(&pool_rec)?;
                tx.put_job(&rec)
            })?;
            tracing::info!("restarting the data move of {volume} from {from} as job {new_id}");
            self.start_copy_move(rec)?;
        }
        Ok(())
    }
}
