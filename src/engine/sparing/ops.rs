//! The sparing service's operations on the pool: the monitor, starting a
//! sparing (by threshold or by hand), its end, the policy and the status.

use std::sync::Arc;
use std::time::Instant;

use super::TICK;
use crate::api::views::*;
use crate::engine::{Pool, State};
use crate::error::{Error, Result};
use crate::meta::model::{JobState, SlotState, SparingPolicy, SparingRecord, now};

/// What a sparing may copy the failing disk to.
fn usable_target(st: &State, name: &str, need: u64) -> std::result::Result<(), String> {
    let Some(e) = st.disks.get(name) else {
        return Err(format!("unknown disk {name:?}: see `ferrosan disk list`"));
    };
    if let Some((g, s)) = Pool::disk_slot(st, name) {
        return Err(format!("disk {name} is already in group {g} (slot {s})"));
    }
    if let Some((_, why)) = &e.problem {
        return Err(format!("disk {name} cannot be used: {why}"));
    }
    if let Some(why) = &e.rec.failed {
        return Err(format!("disk {name} has failed ({why})"));
    }
    if e.open.is_none() {
        return Err(format!("disk {name} is not open"));
    }
    if e.rec.data_size < need {
        return Err(format!(
            "disk {name} holds {} of data; the slot needs {}",
            crate::units::format_exact(e.rec.data_size),
            crate::units::format_exact(need)
        ));
    }
    Ok(())
}

impl Pool {
    /// Starts the monitor (seed 002's first control unit) on worker 0.
    pub(in crate::engine) fn start_sparing_monitor(&self) {
        let me = self.me.clone();
        self.workers.spawn_on(0, move || async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(pool) = me.upgrade() else { return };
                pool.sparing_pass().await;
            }
        });
    }

    /// One pass: sample, start what is due, settle what ended.
    async fn sparing_pass(self: &Arc<Self>) {
        let totals: Vec<(String, u64)> = {
            let st = self.lock();
            st.disks
                .values()
                .filter_map(|e| {
                    let o = e.open.as_ref()?;
                    Some((e.rec.name.clone(), o.counters.errors()))
                })
                .collect()
        };
        let window = self.sparing.policy().window_secs;
        for (disk, recent) in self.sparing.observe(Instant::now(), &totals) {
            if !self.is_healthy_member(&disk) || !self.sparing.queue(&disk) {
                continue;
            }
            let reason = format!("{recent} errors in the last {window} s");
            let d = disk.clone();
            let r = self
                .configure_async(move |p| async move { p.sparing_begin(&d, None, None, reason) })
                .await;
            self.sparing.unqueue(&disk);
            if let Err(e) = r {
                let why = format!(
                    "disk {disk} is failing ({recent} errors in the last {window} s) but cannot be spared: {}",
                    e.chain()
                );
                if self.sparing.alarm(&disk, why.clone()) {
                    tracing::error!("{why}");
                }
            }
        }
        for r in self.sparing.ops() {
            self.watch_double_failure(&r);
            if self.sparing.unreachable(&r.disk) {
                continue;
            }
            self.divert_watch(&r);
            let ended = self
                .jobs
                .record(r.job)
                .is_none_or(|j| j.state.is_finished());
            if !ended && r.job != 0 {
                // After a restart the resumed copy's group hears it here.
                self.spare_reads(&r, true);
            }
            if ended && r.job != 0 {
                let d = r.disk.clone();
                let res = self
                    .configure_async(move |p| async move { p.sparing_settle(&d) })
                    .await;
                if let Err(e) = res {
                    tracing::warn!("settling the sparing of disk {}: {}", r.disk, e.chain());
                }
            }
        }
        for r in self.sparing.ops() {
            if r.divert.as_ref().is_some_and(|d| d.write_back) && !self.sparing.unreachable(&r.disk)
            {
                self.write_back_pass(&r).await;
            }
        }
        self.sparing.pass_done();
    }

    /// Raises the double-failure alarm of `r` while another member of its
    /// group has failed (seed 002's sparing is meant to avoid exactly
    /// this; the copy goes on from the failing disk, which still serves).
    fn watch_double_failure(&self, r: &SparingRecord) {
        let failed: Vec<String> = {
            let st = self.lock();
            let Some(g) = st.groups.get(&r.group) else {
                return;
            };
            g.rec
                .slots
                .iter()
                .enumerate()
                .filter(|&(i, s)| i != r.slot && s.state == SlotState::Failed)
                .map(|(i, s)| format!("{} (slot {i})", s.disk.as_deref().unwrap_or("-")))
                .collect()
        };
        if failed.is_empty() {
            self.sparing.clear_alarm_of(&r.disk, "double");
            return;
        }
        let kept = match &r.divert {
            Some(d) => format!(
                "; the writes diverted to {} stay there, and are read from there, until they are written back",
                super::divert::backup_name(d)
            ),
            None => String::new(),
        };
        let why = format!(
            "double failure in group {}: disk {} failed while disk {} is being spared; \
             the copy goes on from {} (rows it cannot read are lost){kept}",
            r.group,
            failed.join(", "),
            r.disk,
            r.disk
        );
        if self.sparing.alarm_of(&r.disk, "double", why.clone()) {
            tracing::error!("{why}");
        }
    }

    /// Whether `disk` serves a slot of a group that is Ok (a failed or
    /// rebuilding member is not spared: it is rebuilt).
    fn is_healthy_member(&self, disk: &str) -> bool {
        let st = self.lock();
        Self::disk_slot(&st, disk).is_some_and(|(g, s)| {
            st.groups
                .get(&g)
                .and_then(|g| g.rec.slots.get(s))
                .is_some_and(|s| s.state == SlotState::Ok)
        })
    }

    /// Checks that `disk` can be spared now and picks its target: the
    /// named one, or the smallest spare that fits. (group, slot, target).
    fn sparing_plan(&self, disk: &str, spare: Option<&str>) -> Result<(String, usize, String)> {
        let st = self.lock();
        Self::disk_entry(&st, disk)?;
        let Some((group, slot)) = Self::disk_slot(&st, disk) else {
            return Err(Error::invalid(format!(
                "disk {disk} is in no group: there is nothing to spare"
            )));
        };
        if let Some(r) = self.sparing.op(disk) {
            return Err(Error::conflict(format!(
                "disk {disk} is already being spared to {} (job {}): see `ferrosan sparing status`",
                r.spare, r.job
            )));
        }
        if let Some(other) = self.sparing.of_group(&group) {
            return Err(Error::conflict(format!(
                "group {group} is still being spared (disk {other}; its copy or the write-back of \
                 its diverted writes is not done): one sparing a group at a time; \
                 see `ferrosan sparing status`"
            )));
        }
        let g = st
            .groups
            .get(&group)
            .ok_or_else(|| Error::not_found(group.clone()))?;
        for (i, s) in g.rec.slots.iter().enumerate() {
            match (&s.state, i == slot) {
                (SlotState::Failed, true) => {
                    return Err(Error::conflict(format!(
                        "disk {disk} has failed in group {group}: a failed member is rebuilt from redundancy (onto a spare when there is one), not spared"
                    )));
                }
                (SlotState::Rebuilding { job }, _) => {
                    return Err(Error::conflict(format!(
                        "group {group} is rebuilding slot {i} (job {job}): one copy a group at a time; wait for it (`ferrosan job wait {job}`)"
                    )));
                }
                _ => {}
            }
        }
        let need = g.rec.member_sizes.get(slot).copied().unwrap_or(u64::MAX);
        let target = match spare {
            Some(name) => {
                usable_target(&st, name, need).map_err(Error::invalid)?;
                name.to_string()
            }
            None => st
                .disks
                .values()
                .filter(|e| e.rec.spare && usable_target(&st, &e.rec.name, need).is_ok())
                .min_by_key(|e| e.rec.data_size)
                .map(|e| e.rec.name.clone())
                .ok_or_else(|| {
                    Error::conflict(format!(
                        "no spare disk of at least {} is free: add one (`ferrosan disk add NAME --size S --spare`)",
                        crate::units::format_exact(need)
                    ))
                })?,
        };
        Ok((group, slot, target))
    }

    /// Starts sparing `disk`: on the commit path. The record is stored
    /// before the copy job starts, so a crash between leaves a record
    /// that the monitor settles.
    pub(in crate::engine) fn sparing_begin(
        &self,
        disk: &str,
        spare: Option<&str>,
        backup: Option<BackupStorage>,
        reason: String,
    ) -> Result<SparingInfo> {
        let (group, slot, target) = self.sparing_plan(disk, spare)?;
        self.backup_check(&group, backup)?;
        let mut rec = SparingRecord {
            disk: disk.to_string(),
            group: group.clone(),
            slot,
            spare: target.clone(),
            job: 0,
            reason,
            started: now(),
            divert: None,
        };
        self.meta.write(true, |tx| tx.put_sparing(&rec))?;
        self.sparing.put_op(rec.clone());
        let job = match self.start_rebuild(&group, slot, &target) {
            Ok(j) => j,
            Err(e) => {
                self.sparing.remove_op(disk);
                self.meta.write(true, |tx| tx.del_sparing(disk))?;
                return Err(e);
            }
        };
        rec.job = job.id;
        self.divert_start(&mut rec, backup)?;
        self.sparing.clear_alarm(disk);
        self.spare_reads(&rec, true);
        tracing::warn!(
            "disk {disk} (group {group} slot {slot}) is failing ({}): sparing copy to spare {target}, job {}",
            rec.reason,
            job.id
        );
        Ok(self.sparing_info(&rec))
    }

    /// Host reads of the failing disk of `rec` rebuilt from the other
    /// members while its copy runs (`on`), or read from it again.
    fn spare_reads(&self, rec: &SparingRecord, on: bool) {
        let st = self.lock();
        if let Some(g) = st.groups.get(&rec.group) {
            let now = g.raid.spared();
            if on && now != Some(rec.slot) {
                g.raid.set_spared(Some(rec.slot));
            } else if !on && now == Some(rec.slot) {
                g.raid.set_spared(None);
            }
        }
    }

    /// A sparing whose job ended: if the spare holds the slot, the failing
    /// disk is marked failed; either way the record goes. On the commit path.
    pub(in crate::engine) fn sparing_settle(&self, disk: &str) -> Result<()> {
        let Some(rec) = self.sparing.op(disk) else {
            return Ok(());
        };
        if rec.divert.as_ref().is_some_and(|d| d.write_back) {
            // Settled; the monitor writes back, then ends it.
            return Ok(());
        }
        self.spare_reads(&rec, false);
        let took = {
            let st = self.lock();
            st.groups
                .get(&rec.group)
                .and_then(|g| g.rec.slots.get(rec.slot))
                .is_some_and(|s| {
                    s.state == SlotState::Ok && s.disk.as_deref() == Some(rec.spare.as_str())
                })
        };
        if !took {
            if rec.divert.is_some() {
                self.divert_to_write_back(&rec)?;
            } else {
                self.meta.write(true, |tx| tx.del_sparing(disk))?;
                self.sparing.remove_op(disk);
            }
            self.sparing.quieten(disk);
            let why = format!(
                "the sparing copy of disk {disk} to {} stopped (job {}); {disk} still serves its slot",
                rec.spare, rec.job
            );
            tracing::warn!("{why}");
            self.sparing.alarm(disk, why);
            return Ok(());
        }
        let mut st = self.lock();
        let Some(e) = st.disks.get(disk) else {
            drop(st);
            self.meta.write(true, |tx| tx.del_sparing(disk))?;
            self.sparing.remove_op(disk);
            return Ok(());
        };
        let mut drec = e.rec.clone();
        drec.failed = Some(format!(
            "failure anticipated ({}): its data was copied to spare {}, which took its place in group {}",
            rec.reason, rec.spare, rec.group
        ));
        let diverted = rec.divert.is_some();
        Pool::unlocked(&mut st, || {
            self.meta.write(true, |tx| {
                tx.put_disk(&drec)?;
                if !diverted {
                    tx.del_sparing(disk)?;
                }
                Ok(())
            })
        })?;
        if let Some(e) = st.disks.get_mut(disk) {
            e.rec = drec;
        }
        drop(st);
        if diverted {
            self.divert_to_write_back(&rec)?;
        } else {
            self.sparing.remove_op(disk);
        }
        tracing::warn!(
            "disk {disk} spared: spare {} took its place in group {} slot {}; remove {disk} or replace it",
            rec.spare,
            rec.group,
            rec.slot
        );
        Ok(())
    }

    /// `sparing start DISK [--spare S]`.
    pub fn sparing_start(&self, req: SparingStartRequest) -> Result<SparingInfo> {
        let reason = "started by the administrator (sparing start)".to_string();
        self.sparing_begin(&req.disk, req.spare.as_deref(), req.backup_storage, reason)
    }

    /// `sparing policy`.
    pub fn sparing_policy_set(&self, req: SparingPolicyRequest) -> Result<SparingStatus> {
        let old = self.sparing.policy();
        let p = SparingPolicy {
            threshold: req.threshold.unwrap_or(old.threshold),
            window_secs: req.window_secs.unwrap_or(old.window_secs),
        };
        if p.threshold == 0 || p.threshold > MAX_THRESHOLD {
            return Err(Error::invalid(format!(
                "the threshold must be at least 1 error and at most {MAX_THRESHOLD}, not {}",
                p.threshold
            )));
        }
        if p.window_secs == 0 || p.window_secs > MAX_WINDOW_SECS {
            return Err(Error::invalid(format!(
                "the window must be 1 to {MAX_WINDOW_SECS} seconds (30 days), not {}",
                p.window_secs
            )));
        }
        self.meta.write(true, |tx| tx.put_sparing_policy(&p))?;
        self.sparing.set_policy(p);
        Ok(self.sparing_status())
    }

    fn sparing_info(&self, r: &SparingRecord) -> SparingInfo {
        let job = self.jobs.record(r.job);
        let c = self.divert_counts(&r.disk);
        SparingInfo {
            diverted: c.diverted,
            overflowed: c.overflowed,
            written_back: c.written_back,
            disk: r.disk.clone(),
            group: r.group.clone(),
            slot: r.slot,
            spare: r.spare.clone(),
            job: (r.job != 0).then_some(r.job),
            done: job.as_ref().map_or(0, |j| j.done),
            total: job.as_ref().map_or(0, |j| j.total),
            reason: r.reason.clone(),
            started: r.started,
            diversion: r.divert.as_ref().map(|d| {
                let phase = match (d.write_back, d.write_back_job) {
                    (false, _) => "diverting".to_string(),
                    (true, 0) => "writing back".to_string(),
                    (true, j) => format!("writing back, job {j}"),
                };
                format!("{} ({phase})", super::divert::backup_name(d))
            }),
        }
    }

    /// `sparing status`: table T1, the disks against the policy, the
    /// sparings under way and the alarms.
    pub fn sparing_status(&self) -> SparingStatus {
        let (groups, disks) = {
            let st = self.lock();
            (self.sparing_t1(&st), self.sparing_disks(&st))
        };
        let sparings = self
            .sparing
            .ops()
            .iter()
            .filter(|r| {
                self.jobs
                    .record(r.job)
                    .is_none_or(|j| j.state != JobState::Cancelled)
            })
            .map(|r| self.sparing_info(r))
            .collect();
        let (t7, t7_rows) = self.t7();
        SparingStatus {
            work_disks: self.t6(),
            t7,
            t7_rows,
            work_volumes: self.t4(),
            t2: self.sparing_t2(),
            policy: self.sparing.policy_info(),
            groups,
            disks,
            sparings,
            alarms: self.sparing.alarms(),
            passes: self.sparing.passes(),
        }
    }

    fn sparing_t1(&self, st: &State) -> Vec<SparingGroupRow> {
        st.groups
            .values()
            .map(|g| SparingGroupRow {
                group: g.rec.name.clone(),
                volumes: st
                    .volumes
                    .values()
                    .filter(|v| v.rec.group == g.rec.name)
                    .map(|v| v.rec.name.clone())
                    .collect(),
                disks: g
                    .rec
                    .slots
                    .iter()
                    .map(|s| s.disk.clone().unwrap_or_else(|| "-".into()))
                    .collect(),
                raid_level: g.rec.level,
            })
            .collect()
    }

    fn sparing_disks(&self, st: &State) -> Vec<SparingDiskRow> {
        let threshold = self.sparing.policy().threshold;
        st.disks
            .values()
            .map(|e| {
                let info = self.disk_view(st, e);
                let recent = self.sparing.recent_errors(&e.rec.name);
                let role = self.sparing.role(&e.rec.name).or(
                    if recent >= threshold && info.group.is_some() {
                        Some("failure anticipated")
                    } else if e.rec.spare && info.group.is_none() {
                        Some("spare")
                    } else if self.sparing.work_disk(&e.rec.name).is_some() {
                        Some("work disk")
                    } else {
                        None
                    },
                );
                SparingDiskRow {
                    backup: self.t5_status(&e.rec.name),
                    disk: e.rec.name.clone(),
                    capacity: e.rec.data_size,
                    group: info.group,
                    errors: info.counters.read_errors + info.counters.write_errors,
                    recent_errors: recent,
                    status: info.status,
                    sparing: role.map(str::to_string),
                }
            })
            .collect()
    }
}
