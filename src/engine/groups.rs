//! RAID groups (seed 002, FIG. 2A, table T1: group, volumes, disks, RAID
//! level): assembly from records, creation, member failure, hot spares.

use std::sync::{Arc, Weak};

use super::{GroupEntry, Pool, State, check_name};
use crate::api::views::limits::{STRIPE_SIZES, is_power_in, named_in_body};
use crate::api::views::*;
use crate::blockdev::{BlockDev, DevFuture, NoIntent, WriteIntent};
use crate::error::{Error, ErrorKind, Result};
use crate::layout::Layout;
use crate::meta::intent::{DEFAULT_REGION, IntentHandle, PersistentIntent};
use crate::meta::model::{GroupRecord, SlotRecord, SlotState, now};
use crate::stack::raid::{MemberState, RaidDev, RaidHooks};

/// Default strip size.
pub const DEFAULT_STRIPE: u64 = 64 << 10;

pub(crate) fn is_redundant(level: RaidLevelName) -> bool {
    matches!(level, RaidLevelName::Raid1 | RaidLevelName::Raid5)
}

pub(crate) fn layout_level(level: RaidLevelName) -> crate::layout::RaidLevel {
    match level {
        RaidLevelName::Concat => crate::layout::RaidLevel::Concat,
        RaidLevelName::Raid0 => crate::layout::RaidLevel::Raid0,
        RaidLevelName::Raid1 => crate::layout::RaidLevel::Raid1,
        RaidLevelName::Raid5 => crate::layout::RaidLevel::Raid5,
    }
}

/// Bytes of group address space in one full stripe row: volumes are
/// allocated in whole rows so that aligned host writes fill rows.
pub(crate) fn row_bytes(rec: &GroupRecord) -> u64 {
    let n = rec.slots.len() as u64;
    match rec.level {
        RaidLevelName::Concat | RaidLevelName::Raid1 => rec.stripe_size,
        RaidLevelName::Raid0 => rec.stripe_size * n,
        RaidLevelName::Raid5 => rec.stripe_size * n.saturating_sub(1).max(1),
    }
}

/// What the RAID node calls back into the pool with.
struct Hooks {
    pool: Weak<Pool>,
    group: String,
}

impl Hooks {
    /// Runs `record(pool, group, slot, why)` on the urgent lane: a change
    /// may be waiting for this very request (see config.rs).
    fn urgent(
        &self,
        idx: usize,
        err: &Error,
        record: fn(&Pool, &str, usize, &str) -> Result<()>,
    ) -> DevFuture<'_, Result<()>> {
        let pool = self.pool.clone();
        let group = self.group.clone();
        let msg = format!("I/O error: {}", err.chain());
        Box::pin(async move {
            let Some(pool) = pool.upgrade() else {
                return Err(Error::new(ErrorKind::Shutdown, "the pool is closing"));
            };
            pool.urgent(move |p: Arc<Pool>| async move { record(&p, &group, idx, &msg) })
                .await
        })
    }
}

impl RaidHooks for Hooks {
    fn member_failed(&self, idx: usize, err: &Error) -> DevFuture<'_, Result<()>> {
        self.urgent(idx, err, Pool::record_member_failed)
    }

    fn replaced_failed(&self, idx: usize, err: &Error) -> DevFuture<'_, Result<()>> {
        self.urgent(idx, err, Pool::record_replaced_failed)
    }
}

impl Pool {
    pub(super) fn group_entry_locked(&self, name: &str) -> Result<super::StateGuard<'_>> {
        let st = self.lock();
        if !st.groups.contains_key(name) {
            return Err(Error::not_found(format!(
                "unknown group {name:?}: see `ferrosan group list`"
            )));
        }
        Ok(st)
    }

    /// Builds the running RAID node of a group from its record.
    /// `hot` lists slots of hot replaces in progress with the old disk that
    /// serves them until the copy is done.
    pub(super) fn assemble(
        &self,
        st: &State,
        rec: &GroupRecord,
        rebuild_cursor: &dyn Fn(u64) -> Option<u64>,
        hot: &[(usize, String)],
    ) -> Result<GroupEntry> {
        self.assemble_with(st, rec, rebuild_cursor, hot, None)
    }

    /// [`Pool::assemble`], keeping the group's write-intent log `intent`
    /// if given (a restripe's switch: one log per group, never two over
    /// the same pages).
    pub(super) fn assemble_with(
        &self,
        st: &State,
        rec: &GroupRecord,
        rebuild_cursor: &dyn Fn(u64) -> Option<u64>,
        hot: &[(usize, String)],
        intent: Option<Arc<PersistentIntent>>,
    ) -> Result<GroupEntry> {
        let layout = Layout::new(layout_level(rec.level), rec.stripe_size, &rec.member_sizes)?;
        let mut members = Vec::with_capacity(rec.slots.len());
        let mut states = Vec::with_capacity(rec.slots.len());
        let open = |d: Option<&String>| -> Option<Arc<dyn BlockDev>> {
            d.and_then(|d| st.disks.get(d))
                .and_then(|e| e.open.as_ref())
                .map(|o| Arc::clone(&o.dev))
        };
        for (i, slot) in rec.slots.iter().enumerate() {
            if let Some((_, old)) = hot.iter().find(|h| h.0 == i) {
                members.push(open(Some(old)));
                states.push(MemberState::Ok);
                continue;
            }
            let dev = open(slot.disk.as_ref());
            match (&slot.state, dev) {
                (SlotState::Ok, Some(d)) => {
                    members.push(Some(d));
                    states.push(MemberState::Ok);
                }
                (SlotState::Rebuilding { job }, Some(d)) => match rebuild_cursor(*job) {
                    Some(cursor) => {
                        members.push(Some(d));
                        let cursor = cursor.min(layout.rows());
                        states.push(MemberState::Rebuilding { cursor });
                    }
                    None => {
                        members.push(None);
                        states.push(MemberState::Failed);
                    }
                },
                _ => {
                    members.push(None);
                    states.push(MemberState::Failed);
                }
            }
        }
        let intent = if intent.is_some() {
            intent
        } else if is_redundant(rec.level) {
            let (log, _) =
                PersistentIntent::load(Arc::clone(&self.meta), rec.object, rec.intent_region)?;
            Some(log)
        } else {
            None
        };
        let wi: Arc<dyn WriteIntent> = match &intent {
            Some(l) => Arc::new(IntentHandle(Arc::clone(l))),
            None => Arc::new(NoIntent),
        };
        let hooks = Arc::new(Hooks {
            pool: self.me.clone(),
            group: rec.name.clone(),
        });
        let raid = RaidDev::new(layout, members, states, wi, hooks)?;
        Ok(GroupEntry {
            rec: rec.clone(),
            raid: Arc::new(raid),
            intent,
        })
    }

    pub(super) fn group_view(&self, st: &State, g: &GroupEntry) -> GroupInfo {
        let volumes: Vec<String> = st
            .volumes
            .values()
            .filter(|v| v.rec.group == g.rec.name)
            .map(|v| v.rec.name.clone())
            .collect();
        let capacity = g.raid.size();
        let used: u64 = self.used_in(st, &g.rec.name).iter().map(|e| e.1).sum();
        let members: Vec<MemberInfo> = g
            .rec
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let (state, progress) = match g.raid.member_state(i) {
                    MemberState::Ok => ("ok".to_string(), None),
                    MemberState::Failed => {
                        let missing = s
                            .disk
                            .as_ref()
                            .and_then(|d| st.disks.get(d))
                            .is_some_and(|e| e.open.is_none());
                        (if missing { "missing" } else { "failed" }.to_string(), None)
                    }
                    MemberState::Rebuilding { cursor } => {
                        let rows = g.raid.rows().max(1);
                        ("rebuilding".to_string(), Some(cursor as f64 / rows as f64))
                    }
                };
                MemberInfo {
                    slot: i,
                    disk: s.disk.clone(),
                    reinstatable: s.state == SlotState::Failed && s.failed_seq > 0,
                    state,
                    progress,
                }
            })
            .collect();
        GroupInfo {
            name: g.rec.name.clone(),
            raid: g.rec.level,
            stripe_size: g.rec.stripe_size,
            disks: g.rec.slots.iter().filter_map(|s| s.disk.clone()).collect(),
            volumes,
            capacity,
            free: capacity.saturating_sub(used),
            health: g.raid.health().to_string(),
            members,
            intent_marked: g.intent.as_ref().map_or(0, |l| {
                l.marked().iter().map(|r| r.1).sum::<u64>().min(capacity)
            }),
        }
    }

    pub fn group_list(&self) -> Vec<GroupInfo> {
        let st = self.lock();
        st.groups
            .values()
            .map(|g| self.group_view(&st, g))
            .collect()
    }

    pub fn group_get(&self, name: &str) -> Result<GroupInfo> {
        let st = self.group_entry_locked(name)?;
        let g = st
            .groups
            .get(name)
            .ok_or_else(|| Error::not_found(name.to_string()))?;
        Ok(self.group_view(&st, g))
    }

    /// Checks that `disks` can join a group: known, open, healthy, no spare,
    /// in no group, named once.
    pub(super) fn check_free_disks(st: &State, disks: &[String]) -> Result<Vec<u64>> {
        let mut sizes = Vec::with_capacity(disks.len());
        for (i, d) in disks.iter().enumerate() {
            if disks[..i].contains(d) {
                return Err(Error::invalid(format!("disk {d} is named twice")));
            }
            let e = Self::disk_entry(st, d)?;
            if let Some((g, _)) = Self::disk_slot(st, d) {
                return Err(Error::conflict(format!("disk {d} is already in group {g}")));
            }
            if let Some((_, why)) = &e.problem {
                return Err(Error::invalid(format!("disk {d} cannot be used: {why}")));
            }
            if let Some(why) = &e.rec.failed {
                return Err(Error::invalid(format!(
                    "disk {d} has failed ({why}): remove it"
                )));
            }
            if e.rec.spare {
                return Err(Error::conflict(format!(
                    "disk {d} is a hot spare: spares join groups by `disk replace` or automatically"
                )));
            }
            sizes.push(e.rec.data_size);
        }
        Ok(sizes)
    }

    pub fn group_create(&self, req: GroupCreateRequest) -> Result<GroupInfo> {
        check_name("group", &req.name)?;
        let stripe = req.stripe_size.unwrap_or(DEFAULT_STRIPE);
        if !is_power_in(stripe, &STRIPE_SIZES) {
            return Err(Error::invalid(format!(
                "stripe size {} must be a power of two between 4 KiB and 16 MiB",
                crate::units::format_exact(stripe)
            )));
        }
        if req.disks.is_empty() {
            return Err(Error::invalid(
                "a group needs at least one disk (--disks a,b,c)",
            ));
        }
        let mut st = self.lock();
        if st.groups.contains_key(&req.name) {
            return Err(Error::conflict(format!(
                "group {} already exists",
                req.name
            )));
        }
        for d in &req.disks {
            self.refuse_work_disk(d)?;
        }
        let sizes = Self::check_free_disks(&st, &req.disks)?;
        let member_sizes = match req.raid {
            RaidLevelName::Concat => sizes.iter().map(|s| s / stripe * stripe).collect(),
            _ => {
                let min = sizes.iter().copied().min().unwrap_or(0) / stripe * stripe;
                vec![min; sizes.len()]
            }
        };
        // Validates counts and sizes with the layout's own messages.
        Layout::new(layout_level(req.raid), stripe, &member_sizes)?;
        let object = self.next_object();
        let rec = GroupRecord {
            object,
            name: req.name.clone(),
            level: req.raid,
            stripe_size: stripe,
            slots: req
                .disks
                .iter()
                .map(|d| SlotRecord {
                    failed_seq: 0,
                    disk: Some(d.clone()),
                    state: SlotState::Ok,
                })
                .collect(),
            member_sizes,
            intent_region: DEFAULT_REGION,
            created: now(),
            fail_seq: 0,
        };
        let entry = self.assemble(&st, &rec, &|_| None, &[])?;
        let pool_rec = self.pool_record();
        Pool::unlocked(&mut st, || {
            self.meta.write(true, |tx| {
                tx.put_pool(&pool_rec)?;
                tx.put_group(&rec)
            })
        })?;
        let view = self.group_view(&st, &entry);
        st.groups.insert(rec.name.clone(), entry);
        Ok(view)
    }

    pub fn group_delete(&self, name: &str) -> Result<()> {
        let mut st = self.group_entry_locked(name)?;
        let vols: Vec<&String> = st
            .volumes
            .values()
            .filter(|v| v.rec.group == name)
            .map(|v| &v.rec.name)
            .collect();
        if !vols.is_empty() {
            let list: Vec<&str> = vols.iter().map(|s| s.as_str()).collect();
            return Err(Error::conflict(format!(
                "group {name} still holds volumes {}: delete them first",
                list.join(", ")
            )));
        }
        let users = self.volumes_using_group(&st, name);
        if !users.is_empty() {
            return Err(Error::conflict(format!(
                "group {name} holds the new space of copies of {}: delete those copies first",
                users.join(", ")
            )));
        }
        if self
            .jobs
            .active()
            .iter()
            .any(|(_, k)| crate::engine::rebuild::job_group(k) == Some(name))
        {
            return Err(Error::conflict(format!(
                "group {name} has a job running: cancel it first"
            )));
        }
        let object = st.groups.get(name).map(|g| g.rec.object).unwrap_or(0);
        Pool::unlocked(&mut st, || {
            self.meta.write(true, |tx| {
                tx.del_pages(object)?;
                tx.del_group(name)
            })
        })?;
        st.groups.remove(name);
        Ok(())
    }

    /// Appends disks to a concat group: the capacity grows at once and no
    /// data moves (seed 004, background: concatenated meta devices).
    pub fn group_extend(&self, name: &str, req: GroupExtendRequest) -> Result<GroupInfo> {
        let mut st = self.group_entry_locked(name)?;
        let g = st
            .groups
            .get(name)
            .ok_or_else(|| Error::not_found(name.to_string()))?;
        if g.rec.level != RaidLevelName::Concat {
            let level = g.rec.level;
            return Err(Error::invalid(format!(
                "group {name} is {level}: only concat groups grow by adding disks; \
                 make a new group of the new disks (`ferrosan group create NAME --raid {level} --disks ...`) \
                 and create volumes there"
            )));
        }
        if req.disks.is_empty() {
            return Err(Error::invalid("name the disks to add (--disks a,b)"));
        }
        if self
            .jobs
            .active()
            .iter()
            .any(|(_, k)| crate::engine::rebuild::job_group(k) == Some(name))
        {
            return Err(Error::conflict(format!(
                "group {name} has a job running: wait for it first"
            )));
        }
        if self.sparing_of_group(name) {
            return Err(Error::conflict(format!(
                "group {name} is being spared (its copy or the write-back of its diverted \
                 writes is not done): extend it after (`ferrosan sparing status`)"
            )));
        }
        for d in &req.disks {
            self.refuse_work_disk(d).map_err(named_in_body)?;
        }
        let sizes = Self::check_free_disks(&st, &req.disks).map_err(named_in_body)?;
        let mut rec = g.rec.clone();
        for (d, s) in req.disks.iter().zip(sizes) {
            rec.slots.push(SlotRecord {
                failed_seq: 0,
                disk: Some(d.clone()),
                state: SlotState::Ok,
            });
            rec.member_sizes.push(s / rec.stripe_size * rec.stripe_size);
        }
        let entry = self.assemble(&st, &rec, &|_| None, &[])?;
        Pool::unlocked(&mut st, || self.meta.write(true, |tx| tx.put_group(&rec)))?;
        let raid: Arc<dyn BlockDev> = entry.raid.clone();
        for v in st.volumes.values().filter(|v| v.rec.group == name) {
            v.thick.set_group(Arc::clone(&raid));
        }
        let view = self.group_view(&st, &entry);
        st.groups.insert(name.to_string(), entry);
        Ok(view)
    }

    /// Records that member `slot` of `group` failed (durably), then puts a
    /// hot spare in its place if there is one. Idempotent.
    pub(crate) fn record_member_failed(&self, group: &str, slot: usize, why: &str) -> Result<()> {
        {
            let mut st = self.group_entry_locked(group)?;
            let Some(g) = st.groups.get(group) else {
                return Ok(());
            };
            let Some(s) = g.rec.slots.get(slot) else {
                return Err(Error::invalid(format!("group {group} has no slot {slot}")));
            };
            if s.state == SlotState::Failed {
                return Ok(());
            }
            let mut rec = g.rec.clone();
            if s.state == SlotState::Ok {
                // It held current data: it may come back (disk reinstate).
                rec.fail_seq += 1;
                rec.slots[slot].failed_seq = rec.fail_seq;
            }
            rec.slots[slot].state = SlotState::Failed;
            let disk = rec.slots[slot].disk.clone();
            let mut drec = disk
                .as_ref()
                .and_then(|d| st.disks.get(d))
                .map(|e| e.rec.clone());
            if let Some(d) = drec.as_mut() {
                d.failed = Some(why.to_string());
            }
            Pool::unlocked(&mut st, || {
                self.meta.write(true, |tx| {
                    tx.put_group(&rec)?;
                    if let Some(d) = &drec {
                        tx.put_disk(d)?;
                    }
                    Ok(())
                })
            })?;
            tracing::warn!(
                "group {group}: slot {slot} (disk {}) failed: {why}",
                disk.as_deref().unwrap_or("-")
            );
            if let Some(g) = st.groups.get_mut(group) {
                g.rec = rec;
            }
            if let (Some(d), Some(name)) = (drec, disk)
                && let Some(e) = st.disks.get_mut(&name)
            {
                e.rec = d;
            }
        }
        // A hot spare takes the slot at once. This runs on the commit path
        // (the urgent lane or `disk fail`), and starting a rebuild is
        // synchronous like every group change (see config.rs).
        self.use_spares();
        Ok(())
    }

    /// The old disk of the hot replace of slot `slot` of `group` failed:
    /// the RAID node goes on filling the new disk from redundancy, and the
    /// slot stays the new disk's. Only the old disk is recorded failed, so
    /// that a restart resumes the job as a rebuild, not a copy from it.
    /// Idempotent.
    pub(crate) fn record_replaced_failed(&self, group: &str, slot: usize, why: &str) -> Result<()> {
        let mut st = self.group_entry_locked(group)?;
        let job = match st.groups.get(group).and_then(|g| g.rec.slots.get(slot)) {
            Some(SlotRecord {
                state: SlotState::Rebuilding { job },
                ..
            }) => *job,
            _ => return Ok(()),
        };
        let old = match self.jobs.record(job).map(|r| r.kind) {
            Some(crate::meta::model::JobKind::Rebuild {
                old_disk: Some(old),
                ..
            }) => old,
            _ => return Ok(()),
        };
        let Some(mut drec) = st.disks.get(&old).map(|e| e.rec.clone()) else {
            return Ok(());
        };
        if drec.failed.is_some() {
            return Ok(());
        }
        drec.failed = Some(why.to_string());
        Pool::unlocked(&mut st, || self.meta.write(true, |tx| tx.put_disk(&drec)))?;
        tracing::warn!(
            "group {group}: disk {old}, being replaced in slot {slot}, failed: {why}; \
             job {job} goes on from the other members"
        );
        if let Some(e) = st.disks.get_mut(&old) {
            e.rec = drec;
        }
        Ok(())
    }

    /// Puts hot spares into failed slots of redundant groups.
    pub(crate) fn use_spares(&self) {
        loop {
            let pick = {
                let st = self.lock();
                let active = self.jobs.active();
                let mut pick = None;
                'outer: for g in st.groups.values() {
                    if !is_redundant(g.rec.level) {
                        continue;
                    }
                    for (i, s) in g.rec.slots.iter().enumerate() {
                        if s.state != SlotState::Failed {
                            continue;
                        }
                        let busy = active.iter().any(|(_, k)| {
                            matches!(k, crate::meta::model::JobKind::Rebuild { group, slot, .. } if *group == g.rec.name && *slot == i)
                        });
                        if busy {
                            continue;
                        }
                        let need = g.rec.member_sizes.get(i).copied().unwrap_or(u64::MAX);
                        let spare = st.disks.values().find(|e| {
                            e.rec.spare
                                && e.open.is_some()
                                && e.rec.failed.is_none()
                                && e.rec.data_size >= need
                        });
                        if let Some(sp) = spare {
                            pick = Some((g.rec.name.clone(), i, sp.rec.name.clone()));
                            break 'outer;
                        }
                    }
                }
                pick
            };
            let Some((group, slot, spare)) = pick else {
                return;
            };
            tracing::info!("group {group}: hot spare {spare} replaces slot {slot}");
            if let Err(e) = self.start_rebuild(&group, slot, &spare) {
                tracing::error!(
                    "starting a rebuild onto spare {spare} failed: {}",
                    e.chain()
                );
                return;
            }
        }
    }
}
