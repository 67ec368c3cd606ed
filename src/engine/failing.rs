//! Failing a member by hand, and taking a failed disk back.
//!
//! ```text
//!   disk fail D ──> would the group stop? ──yes, no --force──> refused, naming
//!        │                                                   the group and volumes
//!        └─> slot Failed, failed_seq = ++group.fail_seq
//!
//!   disk reinstate D (slot Failed, failed_seq > 0, disk open and labelled)
//!        ├─ group stopped: only the disk that failed last (highest failed_seq)
//!        │  holds the newest data and missed no write ──> slot Ok, no copy
//!        └─ group serving: the disk rejoins as a rebuilding member; only the
//!           rows the write-intent log marked while it was out are rebuilt
//!           (a `reinstate` job), the cursor skips the rest
//! ```
//!
//! This is md's `--re-add` with a write-intent bitmap: while a group is not
//! optimal its marks are never cleared (see `Pool::start_background`), so
//! every region written since a member failed stays marked, across
//! restarts, until the group is whole again.

use std::sync::Arc;

use super::groups::is_redundant;
use super::{Pool, State, StateGuard};
use crate::api::views::*;
use crate::error::{Error, Result};
use crate::meta::model::{JobKind, JobRecord, SlotState, now};
use crate::stack::raid::{Health, RaidDev};

/// Rows `(start, end)` of a group covering the byte ranges `marked` of its
/// address space, merged; `grain` bytes of address space per row.
pub(super) fn stale_rows(marked: &[(u64, u64)], grain: u64, rows: u64) -> Vec<(u64, u64)> {
    let grain = grain.max(1);
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(off, len) in marked {
        let start = off / grain;
        let end = off.saturating_add(len).div_ceil(grain).min(rows);
        if start >= end {
            continue;
        }
        match out.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

impl Pool {
    /// Volumes whose data lives (in part) in `group`: its own volumes and
    /// the images of copy families whose new space is there.
    pub(super) fn volumes_using_group(&self, st: &State, group: &str) -> Vec<String> {
        let families: Vec<u64> = self
            .held()
            .copies
            .iter()
            .filter(|c| c.1 == group)
            .map(|c| c.0)
            .collect();
        st.volumes
            .values()
            .filter(|v| v.rec.group == group || v.rec.family.is_some_and(|f| families.contains(&f)))
            .map(|v| v.rec.name.clone())
            .collect()
    }

    /// Marks a member failed (a drill, or a disk about to be pulled). A
    /// fail that would stop its group is refused unless `force`.
    pub fn disk_fail(&self, name: &str, force: bool) -> Result<DiskInfo> {
        let (group, slot, raid) = {
            let st = self.lock();
            Self::disk_entry(&st, name)?;
            let (group, slot) = Self::disk_slot(&st, name).ok_or_else(|| {
                Error::invalid(format!(
                    "disk {name} is in no group: only a group member can be failed"
                ))
            })?;
            let g = st
                .groups
                .get(&group)
                .ok_or_else(|| Error::not_found(format!("group {group} is gone")))?;
            if g.rec.slots.get(slot).map(|s| &s.state) == Some(&SlotState::Failed) {
                return Err(Error::conflict(format!(
                    "disk {name} has already failed (slot {slot} of group {group})"
                )));
            }
            let stops =
                g.raid.health() != Health::Failed && g.raid.health_without(slot) == Health::Failed;
            if stops && !force {
                return Err(self.would_stop(&st, name, &group, &g.raid));
            }
            (group, slot, Arc::clone(&g.raid))
        };
        if force {
            raid.force_fail_member(slot)?;
        } else {
            raid.fail_member(slot)?;
        }
        self.record_member_failed(&group, slot, "failed by the administrator (disk fail)")?;
        self.disk_get(name)
    }

    /// Why failing `disk` is refused: what would stop, and how to proceed.
    fn would_stop(&self, st: &State, disk: &str, group: &str, raid: &RaidDev) -> Error {
        let level = raid.layout().level();
        let why = match raid.layout().redundancy() {
            0 => format!("{level} keeps no redundancy: it needs every member"),
            r => format!("{level} survives {r} missing member(s), and this would be one more"),
        };
        let vols = self.volumes_using_group(st, group);
        let what = if vols.is_empty() {
            "it holds no volume".to_string()
        } else {
            format!(
                "volume {} would stop serving (their I/O fails)",
                vols.join(", volume ")
            )
        };
        Error::conflict(format!(
            "failing disk {disk} would stop group {group} ({why}): {what} until `ferrosan disk reinstate {disk}`; \
             add --force to fail it anyway"
        ))
    }

    /// Takes back a disk that failed while current: see the module doc.
    pub fn disk_reinstate(&self, name: &str) -> Result<DiskReinstateInfo> {
        let mut st = self.lock();
        let e = Self::disk_entry(&st, name)?;
        if let Some((_, why)) = &e.problem {
            return Err(Error::invalid(format!(
                "{why}: bring the disk back (and restart the daemon) before reinstating it"
            )));
        }
        let Some((group, slot)) = Self::disk_slot(&st, name) else {
            return self.unflag_free_disk(&mut st, name);
        };
        let g = st
            .groups
            .get(&group)
            .ok_or_else(|| Error::not_found(format!("group {group} is gone")))?;
        let srec = g.rec.slots[slot].clone();
        if srec.state != SlotState::Failed {
            return Err(Error::conflict(format!(
                "disk {name} has not failed: it serves slot {slot} of group {group}"
            )));
        }
        if srec.failed_seq == 0 {
            return Err(Error::conflict(format!(
                "disk {name} failed while it was being rebuilt: its data is incomplete; \
                 rebuild slot {slot} onto another disk with `ferrosan disk replace {name} NEW`"
            )));
        }
        if g.raid.health() == Health::Failed {
            let last = g
                .rec
                .slots
                .iter()
                .filter(|s| s.state == SlotState::Failed)
                .max_by_key(|s| s.failed_seq);
            if let Some(last) = last.filter(|l| l.failed_seq > srec.failed_seq) {
                let other = last.disk.as_deref().unwrap_or("-");
                return Err(Error::conflict(format!(
                    "group {group} has stopped, and disk {other} failed after {name}: it holds the \
                     newest data; reinstate it first (`ferrosan disk reinstate {other}`)"
                )));
            }
            return self.reinstate_whole(&mut st, name, &group, slot);
        }
        if !is_redundant(g.rec.level) {
            return self.reinstate_whole(&mut st, name, &group, slot);
        }
        self.reinstate_stale(st, name, &group, slot)
    }

    /// A disk in no group that still carries a failed flag: usable again.
    fn unflag_free_disk(&self, st: &mut StateGuard<'_>, name: &str) -> Result<DiskReinstateInfo> {
        let Some(e) = st.disks.get_mut(name) else {
            return Err(Error::not_found(format!("unknown disk {name:?}")));
        };
        if e.rec.failed.is_none() {
            return Err(Error::invalid(format!(
                "disk {name} is in no group and has not failed: nothing to reinstate"
            )));
        }
        let mut rec = e.rec.clone();
        rec.failed = None;
        Pool::unlocked(st, || self.meta.write(true, |tx| tx.put_disk(&rec)))?;
        if let Some(e) = st.disks.get_mut(name) {
            e.rec = rec;
        }
        Ok(DiskReinstateInfo {
            disk: name.to_string(),
            group: None,
            slot: None,
            job: None,
        })
    }

    /// Puts the disk back as current everywhere (it missed no write).
    fn reinstate_whole(
        &self,
        st: &mut StateGuard<'_>,
        name: &str,
        group: &str,
        slot: usize,
    ) -> Result<DiskReinstateInfo> {
        let dev = Self::open_dev(st, name)?;
        let (mut grec, raid) = match st.groups.get(group) {
            Some(g) => (g.rec.clone(), Arc::clone(&g.raid)),
            None => return Err(Error::not_found(format!("group {group} is gone"))),
        };
        grec.slots[slot].state = SlotState::Ok;
        grec.slots[slot].failed_seq = 0;
        let drec = Self::unflagged(st, name)?;
        Pool::unlocked(st, || {
            self.meta.write(true, |tx| {
                tx.put_group(&grec)?;
                tx.put_disk(&drec)
            })
        })?;
        raid.reinstate_member(slot, dev)?;
        tracing::info!("group {group}: disk {name} reinstated in slot {slot}; nothing to resync");
        Self::apply_records(st, group, grec, name, drec);
        Ok(DiskReinstateInfo {
            disk: name.to_string(),
            group: Some(group.to_string()),
            slot: Some(slot),
            job: None,
        })
    }

    /// Rejoins the disk as a rebuilding member and starts a job that
    /// rebuilds only the rows written while it was out.
    fn reinstate_stale(
        &self,
        mut st: super::StateGuard<'_>,
        name: &str,
        group: &str,
        slot: usize,
    ) -> Result<DiskReinstateInfo> {
        let dev = Self::open_dev(&st, name)?;
        let (mut grec, raid, intent) = match st.groups.get(group) {
            Some(g) => (g.rec.clone(), Arc::clone(&g.raid), g.intent.clone()),
            None => return Err(Error::not_found(format!("group {group} is gone"))),
        };
        let intent = intent
            .ok_or_else(|| Error::invalid(format!("group {group} keeps no write-intent log")))?;
        // Installed first, marks read after: a write that started before
        // the disk rejoined is marked; one after it reaches the disk.
        raid.replace_member(slot, dev)?;
        let stale = stale_rows(&intent.marked(), raid.layout().lock_grain(), raid.rows());
        let id = self.next_job();
        grec.slots[slot].state = SlotState::Rebuilding { job: id };
        let job = JobRecord {
            id,
            kind: JobKind::Rebuild {
                group: group.to_string(),
                slot,
                disk: name.to_string(),
                old_disk: None,
                stale: Some(stale.clone()),
            },
            state: JobState::Running,
            done: 0,
            total: stale.iter().map(|r| r.1 - r.0).sum(),
            unit_bytes: grec.stripe_size,
            rate_limit: 0,
            rate_floor: 0,
            message: None,
            created: now(),
            updated: now(),
        };
        let drec = Self::unflagged(&st, name)?;
        let pool_rec = self.pool_record();
        let committed = Pool::unlocked(&mut st, || {
            self.meta.write(true, |tx| {
                tx.put_pool(&pool_rec)?;
                tx.put_disk(&drec)?;
                tx.put_group(&grec)?;
                tx.put_job(&job)
            })
        });
        if let Err(e) = committed {
            let _ = raid.abort_replace(slot);
            return Err(e);
        }
        tracing::info!(
            "group {group}: disk {name} rejoins slot {slot}; resyncing {} rows written while it was out",
            job.total
        );
        Self::apply_records(&mut st, group, grec, name, drec);
        drop(st);
        let make = self.make_work(&job)?;
        Ok(DiskReinstateInfo {
            disk: name.to_string(),
            group: Some(group.to_string()),
            slot: Some(slot),
            job: Some(self.jobs.start(job, make)),
        })
    }

    fn open_dev(st: &State, name: &str) -> Result<Arc<dyn crate::blockdev::BlockDev>> {
        st.disks
            .get(name)
            .and_then(|e| e.open.as_ref())
            .map(|o| Arc::clone(&o.dev))
            .ok_or_else(|| Error::invalid(format!("disk {name} is not open")))
    }

    /// The disk's record with its failed flag cleared.
    fn unflagged(st: &State, name: &str) -> Result<crate::meta::model::DiskRecord> {
        let mut rec = Self::disk_entry(st, name)?.rec.clone();
        rec.failed = None;
        Ok(rec)
    }

    fn apply_records(
        st: &mut State,
        group: &str,
        grec: crate::meta::model::GroupRecord,
        disk: &str,
        drec: crate::meta::model::DiskRecord,
    ) {
        if let Some(g) = st.groups.get_mut(group) {
            g.rec = grec;
        }
        if let Some(e) = st.disks.get_mut(disk) {
            e.rec = drec;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::stale_rows;

    #[test]
    fn marked_ranges_become_merged_row_ranges() {
        let m = 4 << 20;
        // raid5 of 4 members, 64 KiB strips: 192 KiB of address per row.
        let grain = 3 * (64 << 10);
        assert_eq!(stale_rows(&[], grain, 100), vec![]);
        // One region: rows 0..22 (4 MiB / 192 KiB = 21.3).
        assert_eq!(stale_rows(&[(0, m)], grain, 1000), vec![(0, 22)]);
        // Two adjacent regions merge; a row shared by both counts once.
        assert_eq!(stale_rows(&[(0, m), (m, m)], grain, 1000), vec![(0, 43)]);
        // The last region is cut at the group's end.
        assert_eq!(stale_rows(&[(8 * m, m)], grain, 180), vec![(170, 180)]);
        assert_eq!(stale_rows(&[(80 * m, m)], grain, 180), vec![]);
    }
}
