//! Jobs of the pool: rebuild onto a new disk (from redundancy, or by copying
//! a still-readable disk: a hot replace, md's model), and resync of the
//! regions the write-intent log had marked at a crash.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::Pool;
use super::groups::is_redundant;
use crate::api::views::limits::named_in_body;
use crate::api::views::*;
use crate::blockdev::{BlockDev, DevFuture};
use crate::error::{Error, Result};
use crate::jobs::{MakeWork, Work};
use crate::meta::intent::PersistentIntent;
use crate::meta::model::{JobKind, JobRecord, SlotState, now};
use crate::stack::raid::{AbortOutcome, CopyPace, MemberState, RaidDev};

/// Bytes per unit of a resync job.
const RESYNC_UNIT: u64 = 1 << 20;
/// Bytes a rebuild copies between two looks at its controls while hosts
/// are idle: each step ends with every span landed and the new member
/// flushed, so a short step drains the copier's window often.
const REBUILD_STEP: u64 = 32 << 20;
/// The same while hosts do I/O: the drain and flush every few MiB leave
/// the disks to them (a host's 4k writes kept 0.85-0.96 of their idle
/// rate during a sparing copy this way, 0.4-0.7 at the idle pace).
const REBUILD_STEP_BUSY: u64 = 4 << 20;

/// The group a job works on.
pub(crate) fn job_group(k: &JobKind) -> Option<&str> {
    match k {
        JobKind::Rebuild { group, .. }
        | JobKind::Resync { group, .. }
        | JobKind::CopyMove { group, .. }
        | JobKind::CopyCollect { group, .. }
        | JobKind::ReshapeCopy { group }
        | JobKind::ReshapeTransfer { group } => Some(group),
        JobKind::PairCopy { .. }
        | JobKind::SvolFill { .. }
        | JobKind::SvolRollback { .. }
        | JobKind::SvolDlv { .. }
        | JobKind::WriteBack { .. } => None,
    }
}

struct RebuildWork {
    pool: Arc<Pool>,
    raid: Arc<RaidDev>,
    group: String,
    slot: usize,
    job: u64,
    /// A reinstate: the stale rows `(start, end)`; units are these rows in
    /// order. None: every row is a unit.
    stale: Option<Vec<(u64, u64)>>,
    /// The new member's space is allocated (at the first step).
    allocated: bool,
    /// Host requests counted at the last look (`rt::host_io_seen`), and
    /// whether that look saw hosts busy (the pace of the next step).
    host_io: AtomicU64,
    busy: AtomicBool,
}

impl RebuildWork {
    /// Looks whether hosts did I/O since the last look.
    fn look(&self) -> CopyPace {
        let seen = crate::rt::host_io_seen();
        let busy = self.host_io.swap(seen, Ordering::Relaxed) != seen;
        self.busy.store(busy, Ordering::Relaxed);
        self.pace()
    }

    /// The copy's pace, as the last look found it: gentle while hosts do
    /// I/O.
    fn pace(&self) -> CopyPace {
        if self.busy.load(Ordering::Relaxed) {
            CopyPace::Gentle
        } else {
            CopyPace::Full
        }
    }
}

/// Rows `from..from+n` of the concatenated `ranges`.
fn nth_rows(ranges: &[(u64, u64)], from: u64, n: u64) -> Vec<u64> {
    let mut skip = from;
    let mut out = Vec::new();
    for &(s, e) in ranges {
        let len = e - s;
        if skip >= len {
            skip -= len;
            continue;
        }
        let take = (len - skip).min(n - out.len() as u64);
        out.extend(s + skip..s + skip + take);
        skip = 0;
        if out.len() as u64 == n {
            break;
        }
    }
    out
}

/// The rebuild cursor (a row) where unit `done` of a job resumes.
pub(super) fn resume_row(kind: &JobKind, done: u64) -> u64 {
    match kind {
        JobKind::Rebuild {
            stale: Some(ranges),
            ..
        } => nth_rows(ranges, done, 1)
            .first()
            .copied()
            .unwrap_or(u64::MAX),
        _ => done,
    }
}

impl Work for RebuildWork {
    fn step_bytes(&self) -> u64 {
        if self.stale.is_some() {
            // A reinstate's stale rows go one at a time: no window to keep
            // full, and a step stays short for pausing and pacing.
            return REBUILD_STEP_BUSY;
        }
        match self.look() {
            CopyPace::Full => REBUILD_STEP,
            CopyPace::Gentle => REBUILD_STEP_BUSY,
        }
    }

    fn step(&mut self, from: u64, n: u64) -> DevFuture<'_, Result<()>> {
        match &self.stale {
            None => Box::pin(async move {
                if !self.allocated {
                    self.allocated = true;
                    if let Err(e) = self.raid.preallocate_new_member(self.slot, from).await {
                        tracing::debug!(slot = self.slot, error = %e.chain(), "allocating the new member's space");
                    }
                }
                let pace = self.pace();
                self.raid
                    .rebuild_rows_at(self.slot, from, from + n, pace)
                    .await
            }),
            Some(ranges) => {
                let rows = nth_rows(ranges, from, n);
                Box::pin(async move { self.raid.rebuild_stale(self.slot, &rows, false).await })
            }
        }
    }

    fn checkpoint(&mut self) -> DevFuture<'_, Result<()>> {
        self.raid.flush()
    }

    fn finish(&mut self) -> DevFuture<'_, Result<()>> {
        let pool = Arc::clone(&self.pool);
        let (group, slot, job) = (self.group.clone(), self.slot, self.job);
        let partial = self.stale.is_some();
        Box::pin(async move {
            if partial {
                // Every stale row is done: the rest was current all along.
                self.raid.rebuild_stale(slot, &[], true).await?;
            }
            let done = move |p: Arc<Pool>| async move { p.complete_rebuild(&group, slot, job) };
            pool.configure_async(done).await
        })
    }

    fn abort(&mut self, _cancelled: bool) -> DevFuture<'_, Result<()>> {
        let pool = Arc::clone(&self.pool);
        let (group, slot, job) = (self.group.clone(), self.slot, self.job);
        let abort = move |p: Arc<Pool>| async move { p.abort_rebuild(&group, slot, job) };
        Box::pin(async move { pool.configure_async(abort).await })
    }
}

struct ResyncWork {
    raid: Arc<RaidDev>,
    intent: Arc<PersistentIntent>,
    ranges: Vec<(u64, u64)>,
}

impl ResyncWork {
    fn unit_range(&self, mut unit: u64) -> Option<(u64, u64)> {
        for &(off, len) in &self.ranges {
            let units = len.div_ceil(RESYNC_UNIT);
            if unit < units {
                let o = off + unit * RESYNC_UNIT;
                let end = (off + len).min(self.raid.size());
                return (o < end).then(|| (o, (end - o).min(RESYNC_UNIT)));
            }
            unit -= units;
        }
        None
    }
}

impl Work for ResyncWork {
    fn step(&mut self, from: u64, n: u64) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            for u in from..from + n {
                if let Some((off, len)) = self.unit_range(u) {
                    self.raid.resync(off, len).await?;
                }
            }
            Ok(())
        })
    }

    fn checkpoint(&mut self) -> DevFuture<'_, Result<()>> {
        self.raid.flush()
    }

    fn finish(&mut self) -> DevFuture<'_, Result<()>> {
        for &(off, len) in &self.ranges {
            self.intent.release(off, len);
        }
        Box::pin(async { Ok(()) })
    }

    fn abort(&mut self, _cancelled: bool) -> DevFuture<'_, Result<()>> {
        // The marks stay held: the next start resyncs them again.
        Box::pin(async { Ok(()) })
    }
}

impl Pool {
    /// Makes the work of a job from its record (at start or at resume).
    pub(super) fn make_work(&self, rec: &JobRecord) -> Result<MakeWork> {
        if let JobKind::CopyMove { family, .. } = &rec.kind {
            return self.copy_move_work(*family, rec.id);
        }
        if let JobKind::CopyCollect { family, .. } = &rec.kind {
            return self.copy_collect_work(*family, rec.id);
        }
        if let JobKind::PairCopy { svol, .. } = &rec.kind {
            return self.pair_copy_work(svol, rec.id);
        }
        if matches!(
            rec.kind,
            JobKind::SvolFill { .. } | JobKind::SvolRollback { .. } | JobKind::SvolDlv { .. }
        ) {
            return self.svol_work(rec);
        }
        if matches!(
            rec.kind,
            JobKind::ReshapeCopy { .. } | JobKind::ReshapeTransfer { .. }
        ) {
            return self.reshape_work(rec);
        }
        let pool = self.arc()?;
        let st = self.lock();
        let group = job_group(&rec.kind).unwrap_or_default().to_string();
        let g = st
            .groups
            .get(&group)
            .ok_or_else(|| Error::not_found(format!("group {group} of job {} is gone", rec.id)))?;
        let raid = Arc::clone(&g.raid);
        Ok(match &rec.kind {
            JobKind::Rebuild { slot, stale, .. } => {
                let (slot, job, stale) = (*slot, rec.id, stale.clone());
                Box::new(move || {
                    Ok(Box::new(RebuildWork {
                        pool,
                        raid,
                        group,
                        slot,
                        job,
                        stale,
                        allocated: false,
                        host_io: AtomicU64::new(crate::rt::host_io_seen()),
                        busy: AtomicBool::new(false),
                    }) as Box<dyn Work>)
                })
            }
            JobKind::CopyMove { .. }
            | JobKind::CopyCollect { .. }
            | JobKind::PairCopy { .. }
            | JobKind::SvolFill { .. }
            | JobKind::SvolRollback { .. }
            | JobKind::SvolDlv { .. }
            | JobKind::WriteBack { .. }
            | JobKind::ReshapeCopy { .. }
            | JobKind::ReshapeTransfer { .. } => {
                return Err(Error::invalid("a copy job has no group work"));
            }
            JobKind::Resync { ranges, .. } => {
                let intent = g.intent.clone().ok_or_else(|| {
                    Error::invalid(format!("group {group} keeps no write-intent log"))
                })?;
                let ranges = ranges.clone();
                Box::new(move || {
                    Ok(Box::new(ResyncWork {
                        raid,
                        intent,
                        ranges,
                    }) as Box<dyn Work>)
                })
            }
        })
    }

    /// Starts rebuilding slot `slot` of `group` onto disk `disk`.
    pub(crate) fn start_rebuild(&self, group: &str, slot: usize, disk: &str) -> Result<JobInfo> {
        self.refuse_work_disk(disk)?;
        let mut st = self.group_entry_locked(group)?;
        let g = st
            .groups
            .get(group)
            .ok_or_else(|| Error::not_found(group.to_string()))?;
        let old = g
            .rec
            .slots
            .get(slot)
            .ok_or_else(|| Error::invalid(format!("group {group} has no slot {slot}")))?
            .clone();
        if let SlotState::Rebuilding { job } = old.state {
            return Err(Error::conflict(format!(
                "slot {slot} of group {group} is already being rebuilt by job {job}"
            )));
        }
        let hot = g.raid.member_state(slot) == MemberState::Ok;
        if !hot && !is_redundant(g.rec.level) {
            return Err(Error::invalid(format!(
                "group {group} is {} and slot {slot} has failed: without redundancy its data cannot be rebuilt",
                g.rec.level
            )));
        }
        let need = g.rec.member_sizes.get(slot).copied().unwrap_or(0);
        let e = Self::disk_entry(&st, disk)?;
        if let Some((g2, s2)) = Self::disk_slot(&st, disk) {
            return Err(Error::conflict(format!(
                "disk {disk} is already in group {g2} (slot {s2})"
            )));
        }
        if let Some((_, why)) = &e.problem {
            return Err(Error::invalid(format!("disk {disk} cannot be used: {why}")));
        }
        if let Some(why) = &e.rec.failed {
            return Err(Error::invalid(format!("disk {disk} has failed ({why})")));
        }
        if e.rec.data_size < need {
            return Err(Error::invalid(format!(
                "disk {disk} holds {} of data; slot {slot} of group {group} needs {}",
                crate::units::format_exact(e.rec.data_size),
                crate::units::format_exact(need)
            )));
        }
        let Some(new_dev) = e.open.as_ref().map(|o| Arc::clone(&o.dev)) else {
            return Err(Error::invalid(format!("disk {disk} is not open")));
        };
        let mut new_rec = e.rec.clone();
        new_rec.spare = false;
        let raid = Arc::clone(&g.raid);
        let mut grec = g.rec.clone();
        let id = self.next_job();
        grec.slots[slot] = crate::meta::model::SlotRecord {
            failed_seq: 0,
            disk: Some(disk.to_string()),
            state: SlotState::Rebuilding { job: id },
        };
        let job = JobRecord {
            id,
            kind: JobKind::Rebuild {
                group: group.to_string(),
                slot,
                disk: disk.to_string(),
                old_disk: if hot { old.disk.clone() } else { None },
                stale: None,
            },
            state: JobState::Running,
            done: 0,
            total: raid.rows(),
            unit_bytes: grec.stripe_size,
            rate_limit: 0,
            rate_floor: 0,
            message: None,
            created: now(),
            updated: now(),
        };
        let pool_rec = self.pool_record();
        Pool::unlocked(&mut st, || {
            self.meta.write(true, |tx| {
                tx.put_pool(&pool_rec)?;
                tx.put_disk(&new_rec)?;
                tx.put_group(&grec)?;
                tx.put_job(&job)
            })
        })?;
        raid.replace_member(slot, new_dev)?;
        if let Some(e) = st.disks.get_mut(disk) {
            e.rec = new_rec;
        }
        if let Some(g) = st.groups.get_mut(group) {
            g.rec = grec;
        }
        drop(st);
        let make = self.make_work(&job)?;
        Ok(self.jobs.start(job, make))
    }

    /// `disk replace OLD NEW`.
    pub fn disk_replace(&self, old: &str, req: DiskReplaceRequest) -> Result<JobInfo> {
        let (group, slot) = {
            let st = self.lock();
            Self::disk_entry(&st, old)?;
            Self::disk_entry(&st, &req.new).map_err(named_in_body)?;
            Self::disk_slot(&st, old).ok_or_else(|| {
                Error::invalid(format!("disk {old} is in no group: nothing to replace"))
            })?
        };
        self.start_rebuild(&group, slot, &req.new)
    }

    fn complete_rebuild(&self, group: &str, slot: usize, job: u64) -> Result<()> {
        let mut st = self.group_entry_locked(group)?;
        let Some(g) = st.groups.get_mut(group) else {
            return Ok(());
        };
        if g.rec.slots.get(slot).map(|s| &s.state) != Some(&SlotState::Rebuilding { job }) {
            return Ok(());
        }
        let mut rec = g.rec.clone();
        rec.slots[slot].state = SlotState::Ok;
        rec.slots[slot].failed_seq = 0;
        Pool::unlocked(&mut st, || self.meta.write(true, |tx| tx.put_group(&rec)))?;
        tracing::info!(
            "group {group}: slot {slot} rebuilt onto disk {:?}",
            rec.slots[slot].disk
        );
        Pool::set_group_rec(&mut st, rec);
        drop(st);
        if let Some(r) = self.sparing.op_of_job(job) {
            self.sparing_settle(&r.disk)?;
        }
        Ok(())
    }

    fn abort_rebuild(&self, group: &str, slot: usize, job: u64) -> Result<()> {
        let mut st = self.group_entry_locked(group)?;
        let old_dev = |st: &super::State| match self.jobs.record(job).map(|r| r.kind) {
            Some(JobKind::Rebuild {
                old_disk: Some(old),
                ..
            }) => st
                .disks
                .get(&old)
                .and_then(|e| e.open.as_ref())
                .map(|o| (old, Arc::clone(&o.dev))),
            _ => None,
        };
        let old = old_dev(&st);
        let Some(g) = st.groups.get(group) else {
            return Ok(());
        };
        if g.rec.slots.get(slot).map(|s| &s.state) != Some(&SlotState::Rebuilding { job }) {
            return Ok(());
        }
        let mut rec = g.rec.clone();
        match g.raid.abort_replace(slot)? {
            AbortOutcome::RestoredOld => {
                rec.slots[slot].state = SlotState::Ok;
                if let Some(JobKind::Rebuild {
                    old_disk: Some(old),
                    ..
                }) = self.jobs.record(job).map(|r| r.kind)
                {
                    rec.slots[slot].disk = Some(old);
                }
            }
            AbortOutcome::Failed => rec.slots[slot].state = SlotState::Failed,
            AbortOutcome::NothingToAbort => {
                rec.slots[slot].state = match g.raid.member_state(slot) {
                    MemberState::Ok => SlotState::Ok,
                    _ => SlotState::Failed,
                };
                // A hot replace whose new disk failed was undone by the
                // RAID node at once: the old disk serves the slot again, and
                // the record must say so (else the next start would read
                // the new disk's garbage).
                if let Some((name, dev)) = old
                    && g.raid.member_is(slot, &dev)
                {
                    rec.slots[slot].disk = Some(name);
                }
            }
        }
        Pool::unlocked(&mut st, || self.meta.write(true, |tx| tx.put_group(&rec)))?;
        Pool::set_group_rec(&mut st, rec);
        Ok(())
    }

    pub fn job_list(&self) -> Vec<JobInfo> {
        self.jobs.list()
    }

    pub fn job_get(&self, id: u64) -> Result<JobInfo> {
        self.jobs.info(id)
    }

    pub fn job_pause(&self, id: u64) -> Result<JobInfo> {
        self.jobs.pause(id)
    }

    pub fn job_resume(&self, id: u64) -> Result<JobInfo> {
        self.jobs.resume(id)
    }

    pub fn job_cancel(&self, id: u64) -> Result<JobInfo> {
        self.refuse_reshape_cancel(id)?;
        self.jobs.cancel(id)
    }

    pub fn job_set_rate(&self, id: u64, req: JobRateRequest) -> Result<JobInfo> {
        self.jobs.set_rate(id, req.bytes_per_sec, req.floor)
    }

    /// Waits for a job to finish.
    pub async fn job_wait(&self, id: u64) -> Result<JobInfo> {
        self.jobs.wait(id).await
    }

    /// Starts a resync of the marked `ranges` of `group`.
    pub(super) fn start_resync(&self, group: &str, ranges: Vec<(u64, u64)>) -> Result<JobInfo> {
        let mut st = self.group_entry_locked(group)?;
        let id = self.next_job();
        let total = ranges.iter().map(|r| r.1.div_ceil(RESYNC_UNIT)).sum();
        let job = JobRecord {
            id,
            kind: JobKind::Resync {
                group: group.to_string(),
                ranges,
            },
            state: JobState::Running,
            done: 0,
            total,
            unit_bytes: RESYNC_UNIT,
            rate_limit: 0,
            rate_floor: 0,
            message: None,
            created: now(),
            updated: now(),
        };
        let pool_rec = self.pool_record();
        Pool::unlocked(&mut st, || {
            self.meta.write(true, |tx| {
                tx.put_pool(&pool_rec)?;
                tx.put_job(&job)
            })
        })?;
        drop(st);
        let make = self.make_work(&job)?;
        Ok(self.jobs.start(job, make))
    }
}

#[cfg(test)]
mod tests {
    use super::nth_rows;

    #[test]
    fn units_of_a_reinstate_are_its_stale_rows_in_order() {
        let ranges = [(3, 5), (10, 13), (20, 21)];
        assert_eq!(nth_rows(&ranges, 0, 6), vec![3, 4, 10, 11, 12, 20]);
        assert_eq!(nth_rows(&ranges, 1, 3), vec![4, 10, 11]);
        assert_eq!(nth_rows(&ranges, 5, 4), vec![20]);
        assert_eq!(nth_rows(&ranges, 6, 1), Vec::<u64>::new());
    }
}
