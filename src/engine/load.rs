//! Opening a pool: disks, then groups, then volumes, then jobs — and a
//! resync of whatever the write-intent logs had marked at a crash.

use std::collections::HashMap;
use std::sync::Arc;

use super::Pool;
use super::groups::is_redundant;
use crate::blockdev::BlockDev;
use crate::error::Result;
use crate::meta::Snapshot;
use crate::meta::model::{GroupRecord, JobKind, JobRecord, SlotState};

impl Pool {
    /// Records an unfinished job found finished at open: done at its
    /// total (its last checkpoint may predate its last units), and why.
    fn done_at_load(&self, mut j: JobRecord, why: &str) -> Result<()> {
        j.state = crate::api::views::JobState::Done;
        j.done = j.total;
        j.message = Some(why.into());
        self.meta.write(true, |tx| tx.put_job(&j))?;
        self.jobs.add_finished(j);
        Ok(())
    }

    pub(super) fn load(&self, snap: Snapshot) -> Result<()> {
        let pool_id = snap.pool.id;
        let jobs: HashMap<u64, JobRecord> = snap.jobs.iter().map(|j| (j.id, j.clone())).collect();
        let mut resumes: Vec<JobRecord> = Vec::new();
        let mut resyncs: Vec<(String, Vec<(u64, u64)>)> = Vec::new();
        let mut hot_restarts: Vec<(String, usize)> = Vec::new();
        {
            let mut st = self.lock();
            for rec in &snap.disks {
                let e = self.open_recorded(rec, pool_id);
                st.disks.insert(rec.name.clone(), e);
            }
            for rec in &snap.groups {
                let (rec, changed, hot) = self.check_slots(&st, rec, &jobs);
                if changed {
                    Pool::unlocked(&mut st, || self.meta.write(true, |tx| tx.put_group(&rec)))?;
                }
                let cursor = |job: u64| {
                    jobs.get(&job)
                        .filter(|j| !j.state.is_finished())
                        .map(|j| super::rebuild::resume_row(&j.kind, j.done))
                };
                let entry = match self.assemble(&st, &rec, &cursor, &hot) {
                    Ok(e) => e,
                    Err(e) => {
                        self.problem(format!(
                            "group {} cannot be assembled: {}; its volumes are not served",
                            rec.name,
                            e.chain()
                        ));
                        continue;
                    }
                };
                if let Some(log) = &entry.intent {
                    let marked = log.marked();
                    if !marked.is_empty() {
                        let bytes: u64 = marked.iter().map(|r| r.1).sum();
                        tracing::warn!(
                            "group {}: {} regions ({}) were being written at the last stop; resyncing them",
                            rec.name,
                            marked.len(),
                            crate::units::format_size(bytes)
                        );
                        entry.raid.mark_unsynced(&marked);
                        resyncs.push((rec.name.clone(), marked));
                    }
                }
                hot_restarts.extend(hot.into_iter().map(|(slot, _)| (rec.name.clone(), slot)));
                st.groups.insert(rec.name.clone(), entry);
            }
            for rec in &snap.volumes {
                let Some(g) = st.groups.get(&rec.group) else {
                    self.problem(format!(
                        "volume {}: its group {} is not available",
                        rec.name, rec.group
                    ));
                    continue;
                };
                let raid: Arc<dyn BlockDev> = g.raid.clone();
                let entry = self.volume_entry(rec, raid);
                st.volumes.insert(rec.name.clone(), entry);
            }
        }
        if self.opts.recovering {
            return self.sparing_load();
        }
        self.load_families(snap.families)?;
        self.load_pairs()?;
        self.load_svol_groups()?;
        // Diversion nodes go in before any job resumes: a resync or
        // rebuild started first would write the group's disks around
        // them, under diverted data newer than what it writes.
        self.sparing_load()?;
        self.reshape_load()?;
        for j in snap.jobs {
            match &j.kind {
                _ if j.state.is_finished() => self.jobs.add_finished(j),
                JobKind::Resync { .. } => {
                    // Superseded: the marks it was resyncing are still
                    // held, and the resync below covers them.
                    let mut j = j;
                    j.state = crate::api::views::JobState::Cancelled;
                    j.message = Some("superseded by the resync started at restart".into());
                    self.meta.write(true, |tx| tx.put_job(&j))?;
                    self.jobs.add_finished(j);
                }
                JobKind::CopyMove { family, .. } => {
                    let live = self.lock().families.get(family).is_some_and(|f| {
                        f.read_state()
                            .restore
                            .as_ref()
                            .is_some_and(|r| r.job == j.id)
                    });
                    if live {
                        resumes.push(j);
                    } else {
                        self.done_at_load(j, "its data had all moved at the last stop")?;
                    }
                }
                JobKind::SvolFill { group, .. }
                | JobKind::SvolRollback { group, .. }
                | JobKind::SvolDlv { group, .. } => {
                    if self.svols.resumes(group) {
                        resumes.push(j);
                    } else {
                        self.done_at_load(j, "its S-VOL group was gone at the last stop")?;
                    }
                }
                JobKind::ReshapeCopy { group } | JobKind::ReshapeTransfer { group } => {
                    if self.reshapes.get(group).is_some_and(|s| s.rec.job == j.id) {
                        let mut j = j;
                        if matches!(j.kind, JobKind::ReshapeCopy { .. }) {
                            // The copy starts over (its cursor is not stored).
                            j.done = 0;
                        }
                        resumes.push(j);
                    } else {
                        self.done_at_load(j, "its restripe had ended at the last stop")?;
                    }
                }
                JobKind::WriteBack { .. } => {
                    // The sparing monitor starts a new one at its first
                    // pass, from the entries stored.
                    let mut j = j;
                    j.state = crate::api::views::JobState::Cancelled;
                    j.message =
                        Some("superseded by the write-back started again at restart".into());
                    self.meta.write(true, |tx| tx.put_job(&j))?;
                    self.jobs.add_finished(j);
                }
                JobKind::PairCopy { svol, .. } => {
                    if self.pair_job_resumes(svol) {
                        resumes.push(j);
                    } else {
                        self.done_at_load(j, "its pair was no longer copying at the last stop")?;
                    }
                }
                JobKind::CopyCollect { family, .. } => {
                    // Resumed while its family lives (the pair it was on is
                    // merged again from its checkpoint); else nothing is
                    // left to collect.
                    if self.lock().families.contains_key(family) {
                        resumes.push(j);
                    } else {
                        self.done_at_load(j, "its copy family was gone at the last stop")?;
                    }
                }
                JobKind::Rebuild {
                    group, slot, disk, ..
                } => {
                    let slot_now = self.lock().groups.get(group).and_then(|g| {
                        g.rec
                            .slots
                            .get(*slot)
                            .map(|s| (s.state.clone(), s.disk.clone()))
                    });
                    let live = slot_now
                        .as_ref()
                        .is_some_and(|s| s.0 == SlotState::Rebuilding { job: j.id });
                    // Its last step committed the slot, and the stop came
                    // before the job's own record said so.
                    let finished = slot_now
                        .as_ref()
                        .is_some_and(|s| s.0 == SlotState::Ok && s.1.as_ref() == Some(disk));
                    if live {
                        resumes.push(j);
                    } else if finished {
                        self.done_at_load(j, "it had finished at the last stop")?;
                    } else {
                        let mut j = j;
                        j.state = crate::api::views::JobState::Failed;
                        j.message = Some("its slot is no longer being rebuilt".into());
                        self.meta.write(true, |tx| tx.put_job(&j))?;
                        self.jobs.add_finished(j);
                    }
                }
            }
        }
        for mut j in resumes {
            if let JobKind::Rebuild {
                group,
                slot,
                disk,
                old_disk: Some(_),
                ..
            } = &j.kind
            {
                // A hot replace starts its copy again from the beginning:
                // the old disk serves meanwhile, redundancy is never lost.
                if hot_restarts.iter().any(|h| h.0 == *group && h.1 == *slot) {
                    let dev = self
                        .lock()
                        .disks
                        .get(disk)
                        .and_then(|e| e.open.as_ref())
                        .map(|o| Arc::clone(&o.dev));
                    let raid = self.lock().groups.get(group).map(|g| Arc::clone(&g.raid));
                    if let (Some(dev), Some(raid)) = (dev, raid) {
                        raid.replace_member(*slot, dev)?;
                        j.done = 0;
                    }
                }
            }
            tracing::info!("resuming job {} at {}/{}", j.id, j.done, j.total);
            let make = self.make_work(&j)?;
            self.jobs.start(j, make);
        }
        for (group, ranges) in resyncs {
            self.start_resync(&group, ranges)?;
        }
        self.resume_copy_moves()?;
        self.start_idle_pair_copies()?;
        self.use_spares();
        Ok(())
    }

    /// Checks a group's slots against the disks found: a slot whose disk is
    /// missing or unusable is failed (if that disk comes back it holds stale
    /// data and must be replaced, never silently reused); a rebuild whose
    /// job is gone is failed. Returns the fixed record, whether it changed,
    /// and the slots of hot replaces in progress with their old disks: they
    /// are assembled with the old disk serving and their copy restarts.
    fn check_slots(
        &self,
        st: &super::State,
        rec: &GroupRecord,
        jobs: &HashMap<u64, JobRecord>,
    ) -> (GroupRecord, bool, Vec<(usize, String)>) {
        let mut rec = rec.clone();
        let mut changed = false;
        let mut hot = Vec::new();
        let usable = |d: &Option<String>| {
            d.as_ref()
                .and_then(|d| st.disks.get(d))
                .is_some_and(|e| e.open.is_some())
        };
        // The old disk of a hot replace serves again only if it never
        // failed: one that failed missed writes (the new disk took them),
        // and copying from it would bring its stale data back.
        let sound = |d: &String| {
            st.disks
                .get(d)
                .is_some_and(|e| e.open.is_some() && e.rec.failed.is_none())
        };
        for i in 0..rec.slots.len() {
            let slot = rec.slots[i].clone();
            match &slot.state {
                SlotState::Failed => {}
                SlotState::Ok => {
                    if !usable(&slot.disk) {
                        self.problem(format!(
                            "group {}: slot {i} (disk {}) is unavailable; the group runs {}",
                            rec.name,
                            slot.disk.as_deref().unwrap_or("-"),
                            if is_redundant(rec.level) {
                                "degraded"
                            } else {
                                "failed"
                            }
                        ));
                        rec.slots[i].state = SlotState::Failed;
                        rec.fail_seq += 1;
                        rec.slots[i].failed_seq = rec.fail_seq;
                        changed = true;
                    }
                }
                SlotState::Rebuilding { job } => {
                    let j = jobs.get(job).filter(|j| !j.state.is_finished());
                    match j.map(|j| &j.kind) {
                        Some(JobKind::Rebuild {
                            old_disk: Some(old),
                            disk,
                            ..
                        }) if sound(old) && usable(&Some(disk.clone())) => {
                            // Serve from the old disk while the copy restarts.
                            hot.push((i, old.clone()));
                        }
                        Some(JobKind::Rebuild { .. })
                            if usable(&slot.disk) && is_redundant(rec.level) => {}
                        _ => {
                            self.problem(format!(
                                "group {}: the rebuild of slot {i} cannot continue; the slot is failed",
                                rec.name
                            ));
                            rec.slots[i].state = SlotState::Failed;
                            changed = true;
                        }
                    }
                }
            }
        }
        (rec, changed, hot)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::api::views::JobState;
    use crate::engine::{DB_FILE, Pool, PoolOptions};
    use crate::meta::Meta;
    use crate::meta::model::{JobKind, JobRecord};
    use crate::rt::Workers;

    #[test]
    fn a_move_job_whose_family_is_gone_at_open_is_done_at_its_total() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (meta, _) = Meta::open(&dir.path().join(DB_FILE)).unwrap();
            let job = JobRecord {
                id: 7,
                kind: JobKind::CopyMove {
                    group: "g".into(),
                    family: 99,
                    volume: "v".into(),
                    from: "v".into(),
                    split: false,
                },
                state: JobState::Running,
                // The last checkpoint, before the last tracks moved.
                done: 199,
                total: 200,
                unit_bytes: 64 << 10,
                rate_limit: 0,
                rate_floor: 0,
                message: None,
                created: 1,
                updated: 1,
            };
            meta.write(true, |tx| tx.put_job(&job)).unwrap();
        }
        let opts = PoolOptions {
            fault_injection: false,
            direct_io: false,
            intent_clear_interval: Duration::from_secs(5),
            gc_rate: 0,
            recovering: false,
        };
        let p = Pool::open(dir.path(), Workers::start(1).unwrap(), opts).unwrap();
        let j = p.job_get(7).unwrap();
        assert_eq!((j.state, j.done, j.total), (JobState::Done, 200, 200));
        assert_eq!(
            j.message.as_deref(),
            Some("its data had all moved at the last stop")
        );
        assert_eq!(j.kind, "copy-fold");
    }
}
