//! Failure-anticipating sparing, the engine's service (seed 002, US
//! 7,028,216; the "first control unit" of claim 1: count access errors per
//! data disk and, when a disk's error frequency exceeds a threshold, copy
//! it to a spare disk before it fails).
//!
//! ```text
//!   monitor (1 s, worker 0): each open disk's error count ──> History
//!        │ a member past the policy (threshold errors within the window)
//!        ▼
//!   commit path: sparing_begin(disk) ── record (job 0) ──> replace job
//!        │          D ──copy──> spare (hot replace: D keeps serving; rows
//!        │          D cannot read are rebuilt from redundancy)
//!        ▼
//!   the job's end: spare holds D's slot; D is marked failed, record gone
//! ```
//!
//! Which errors count: every read error a disk returns (RAID answers it
//! from redundancy and rewrites the block, so the host sees none: these
//! are the early signs the seed watches) and every write error. A write
//! error still fails the member at once (its block now holds stale data,
//! which no count can wait for), so the sparing copy starts from read
//! errors; a failed member is rebuilt from redundancy onto a spare as
//! before. Errors are counted by the disk's counters from the moment it
//! was opened; the window slides over one-second samples.
//!
//! The service's state has its own lock, a leaf: nothing else is taken
//! while it is held, and it is never held across a commit or an await.
//!
//! While the copy runs, host reads avoid the failing disk (claim 2): the
//! group's RAID node is told which slot is spared
//! ([`crate::stack::raid::RaidDev::set_spared`]) when the sparing starts,
//! and again by the monitor after a restart; it rebuilds those rows from
//! the other members. With a free work volume, the group's host writes
//! are diverted to it meanwhile and written back after (the seed's second
//! and third control units: `divert.rs`, `src/divert/`); without one, host
//! writes still reach the group: the plain sparing the seed falls back to
//! when no backup storage is available.

#![forbid(unsafe_code)]

mod divert;
mod ops;
mod secondary;
mod workdisk;
mod writeback;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use std::sync::Arc;

use crate::api::views::SparingPolicyInfo;
use crate::divert::Divert;
use crate::meta::SparingTable;
use crate::meta::model::{SparingPolicy, SparingRecord, WorkDiskRecord, WorkVolumeRecord};
use crate::meta::slotmap::SlotMap;

/// How often the monitor samples the disks' error counts.
pub(super) const TICK: Duration = Duration::from_secs(1);
/// Changes of the error count kept per disk (beyond, the oldest merge).
const MAX_CHANGES: usize = 4096;

/// A disk's errors over time: the counts at which they changed.
#[derive(Debug, Default)]
struct History {
    /// (when, total errors) at every change within the window.
    changes: VecDeque<(Instant, u64)>,
    /// Total errors before the oldest change kept.
    base: u64,
    last: u64,
    /// After a sparing of this disk stopped: no automatic start until
    /// its total passes this (another threshold's worth of errors).
    quiet_until: u64,
}

impl History {
    fn observe(&mut self, now: Instant, total: u64, window: Duration) {
        if total < self.last {
            // The disk was opened again: its counters started over.
            *self = History::default();
        }
        if total > self.last {
            self.changes.push_back((now, total));
            self.last = total;
        }
        while let Some(&(t, v)) = self.changes.front() {
            if now.saturating_duration_since(t) > window {
                self.base = v;
            } else if self.changes.len() > MAX_CHANGES {
                // Merged into the next change: its errors leave the
                // window a little late (counted too long, never too short).
            } else {
                break;
            }
            self.changes.pop_front();
        }
    }

    /// Errors within the window.
    fn recent(&self) -> u64 {
        self.last.saturating_sub(self.base)
    }
}

#[derive(Default)]
struct State {
    policy: SparingPolicy,
    /// Sparings under way, by failing disk.
    ops: BTreeMap<String, SparingRecord>,
    history: HashMap<String, History>,
    /// Alarms by (disk, kind): a disk past the threshold that could not
    /// be spared (kind ""), a sparing's work store full ("full"), a second
    /// failure in a group being spared ("double"); each with its message.
    alarms: BTreeMap<(String, &'static str), String>,
    /// Disks whose start is queued on the commit path.
    pending: BTreeSet<String>,
    /// Monitor passes completed.
    passes: u64,
    /// Work volumes, by volume (T4).
    work: BTreeMap<String, WorkVolumeRecord>,
    /// Work disks, by disk (T6).
    work_disks: BTreeMap<String, WorkDiskRecord>,
    /// The diversion nodes of each sparing, by failing disk: (volume, node).
    nodes: BTreeMap<String, Vec<(String, Arc<Divert>)>>,
    /// The slot maps of work stores in use: by work volume, and by
    /// `disk:NAME` for a work disk.
    maps: BTreeMap<String, Arc<SlotMap>>,
    /// Sparings (by failing disk) whose backup storage could not be
    /// opened at the start: left alone (no settle, no write-back) until
    /// a start finds it again.
    unreachable: BTreeSet<String>,
}

/// The sparing service.
#[derive(Default)]
pub(crate) struct Sparing {
    st: parking_lot::Mutex<State>,
}

impl Sparing {
    /// Takes what the database holds.
    pub(super) fn load(&self, t: SparingTable) {
        let mut st = self.st.lock();
        st.policy = t.policy;
        st.ops = t.ops.into_iter().map(|r| (r.disk.clone(), r)).collect();
        st.work = t.work.into_iter().map(|w| (w.volume.clone(), w)).collect();
        st.work_disks = t
            .work_disks
            .into_iter()
            .map(|w| (w.disk.clone(), w))
            .collect();
    }

    /// Marks the diversion of the sparing of `disk` as not installed.
    pub(super) fn set_unreachable(&self, disk: &str) {
        self.st.lock().unreachable.insert(disk.to_string());
    }

    /// Whether the sparing of `disk` must be left alone: its diverted
    /// writes are on storage not opened (ending it would drop them).
    pub(super) fn unreachable(&self, disk: &str) -> bool {
        self.st.lock().unreachable.contains(disk)
    }

    pub(super) fn work_disk(&self, disk: &str) -> Option<WorkDiskRecord> {
        self.st.lock().work_disks.get(disk).cloned()
    }

    pub(super) fn work_disks(&self) -> Vec<WorkDiskRecord> {
        self.st.lock().work_disks.values().cloned().collect()
    }

    pub(super) fn put_work_disk(&self, w: WorkDiskRecord) {
        self.st.lock().work_disks.insert(w.disk.clone(), w);
    }

    pub(super) fn remove_work_disk(&self, disk: &str) {
        self.st.lock().work_disks.remove(disk);
    }

    /// The sparings diverting to work disk `disk`.
    pub(super) fn work_disk_users(&self, disk: &str) -> Vec<SparingRecord> {
        let st = self.st.lock();
        st.ops
            .values()
            .filter(|r| r.divert.as_ref().is_some_and(|d| d.work_disk == disk))
            .cloned()
            .collect()
    }

    pub(super) fn work(&self, volume: &str) -> Option<WorkVolumeRecord> {
        self.st.lock().work.get(volume).cloned()
    }

    pub(super) fn works(&self) -> Vec<WorkVolumeRecord> {
        self.st.lock().work.values().cloned().collect()
    }

    pub(super) fn put_work(&self, w: WorkVolumeRecord) {
        self.st.lock().work.insert(w.volume.clone(), w);
    }

    pub(super) fn remove_work(&self, volume: &str) {
        self.st.lock().work.remove(volume);
    }

    /// The sparings that divert to work volume `volume`, by failing disk.
    pub(super) fn work_users(&self, volume: &str) -> Vec<SparingRecord> {
        let st = self.st.lock();
        st.ops
            .values()
            .filter(|r| {
                r.divert
                    .as_ref()
                    .is_some_and(|d| d.work == volume && !volume.is_empty())
            })
            .cloned()
            .collect()
    }

    /// The slot map of work volume `volume`, shared by every sparing that
    /// diverts to it: the one open already, else `opened`.
    pub(super) fn share_map(&self, volume: &str, opened: Arc<SlotMap>) -> Arc<SlotMap> {
        let mut st = self.st.lock();
        Arc::clone(st.maps.entry(volume.to_string()).or_insert(opened))
    }

    /// The open slot map of work volume `volume`, if a sparing uses it.
    pub(super) fn open_map(&self, volume: &str) -> Option<Arc<SlotMap>> {
        self.st.lock().maps.get(volume).cloned()
    }

    /// Forgets the open map of `volume` (no sparing uses it any more).
    pub(super) fn drop_map(&self, volume: &str) {
        self.st.lock().maps.remove(volume);
    }

    /// The failing disk whose sparing diverts to secondary volume `volume`.
    pub(super) fn secondary_user(&self, volume: &str) -> Option<String> {
        let st = self.st.lock();
        st.ops
            .values()
            .find(|r| {
                r.divert
                    .as_ref()
                    .is_some_and(|d| d.secondaries.iter().any(|s| s.volume == volume))
            })
            .map(|r| r.disk.clone())
    }

    /// The failing disk of the sparing of `group` under way (its copy or
    /// its write-back), if there is one.
    pub(super) fn of_group(&self, group: &str) -> Option<String> {
        let st = self.st.lock();
        st.ops
            .values()
            .find(|r| r.group == group)
            .map(|r| r.disk.clone())
    }

    /// Whether the volumes of `group` are diverted now.
    pub(super) fn diverting(&self, group: &str) -> bool {
        let st = self.st.lock();
        st.ops
            .values()
            .any(|r| r.group == group && r.divert.is_some())
    }

    pub(super) fn put_nodes(&self, disk: &str, nodes: Vec<(String, Arc<Divert>)>) {
        self.st.lock().nodes.insert(disk.to_string(), nodes);
    }

    pub(super) fn nodes(&self, disk: &str) -> Vec<(String, Arc<Divert>)> {
        self.st.lock().nodes.get(disk).cloned().unwrap_or_default()
    }

    pub(super) fn take_nodes(&self, disk: &str) -> Vec<(String, Arc<Divert>)> {
        self.st.lock().nodes.remove(disk).unwrap_or_default()
    }

    pub(super) fn policy(&self) -> SparingPolicy {
        self.st.lock().policy
    }

    pub(super) fn policy_info(&self) -> SparingPolicyInfo {
        let p = self.policy();
        SparingPolicyInfo {
            threshold: p.threshold,
            window_secs: p.window_secs,
        }
    }

    pub(super) fn set_policy(&self, p: SparingPolicy) {
        self.st.lock().policy = p;
    }

    /// Errors of `disk` within the policy's window.
    pub(super) fn recent_errors(&self, disk: &str) -> u64 {
        self.st.lock().history.get(disk).map_or(0, History::recent)
    }

    /// Takes one sample of every disk's total errors; returns the disks
    /// past the threshold (with their recent errors) that no sparing
    /// covers, none is queued for, and were not stopped lately.
    pub(super) fn observe(&self, now: Instant, totals: &[(String, u64)]) -> Vec<(String, u64)> {
        let mut st = self.st.lock();
        let p = st.policy;
        let window = Duration::from_secs(p.window_secs);
        let mut due = Vec::new();
        for (disk, total) in totals {
            let h = st.history.entry(disk.clone()).or_default();
            h.observe(now, *total, window);
            let recent = h.recent();
            if recent >= p.threshold && h.last >= h.quiet_until {
                due.push((disk.clone(), recent));
            }
        }
        let known: BTreeSet<&String> = totals.iter().map(|(d, _)| d).collect();
        st.history.retain(|d, _| known.contains(d));
        due.retain(|(d, _)| !st.ops.contains_key(d) && !st.pending.contains(d));
        due
    }

    /// Marks `disk` queued (false if it already was).
    pub(super) fn queue(&self, disk: &str) -> bool {
        self.st.lock().pending.insert(disk.to_string())
    }

    pub(super) fn unqueue(&self, disk: &str) {
        self.st.lock().pending.remove(disk);
    }

    /// Records why `disk` could not be spared; true if the reason is new
    /// (worth a log line).
    pub(super) fn alarm(&self, disk: &str, why: String) -> bool {
        self.alarm_of(disk, "", why)
    }

    /// Records alarm `kind` of the sparing of `disk`; true if the message
    /// is new (worth a log line).
    pub(super) fn alarm_of(&self, disk: &str, kind: &'static str, why: String) -> bool {
        let mut st = self.st.lock();
        let k = (disk.to_string(), kind);
        let new = st.alarms.get(&k) != Some(&why);
        st.alarms.insert(k, why);
        new
    }

    /// Clears every alarm about `disk`.
    pub(super) fn clear_alarm(&self, disk: &str) {
        self.st.lock().alarms.retain(|(d, _), _| d != disk);
    }

    /// Clears alarm `kind` of `disk`.
    pub(super) fn clear_alarm_of(&self, disk: &str, kind: &'static str) {
        self.st.lock().alarms.remove(&(disk.to_string(), kind));
    }

    pub(super) fn alarms(&self) -> Vec<String> {
        self.st.lock().alarms.values().cloned().collect()
    }

    /// No automatic start for `disk` until another threshold's worth of
    /// errors (its sparing was stopped: by hand, or it failed).
    pub(super) fn quieten(&self, disk: &str) {
        let mut st = self.st.lock();
        let t = st.policy.threshold;
        let h = st.history.entry(disk.to_string()).or_default();
        h.quiet_until = h.last.saturating_add(t);
    }

    pub(super) fn ops(&self) -> Vec<SparingRecord> {
        self.st.lock().ops.values().cloned().collect()
    }

    pub(super) fn op(&self, disk: &str) -> Option<SparingRecord> {
        self.st.lock().ops.get(disk).cloned()
    }

    pub(super) fn op_of_job(&self, job: u64) -> Option<SparingRecord> {
        self.st
            .lock()
            .ops
            .values()
            .find(|r| r.job == job && job != 0)
            .cloned()
    }

    /// Whether `disk` is the failing disk or the spare of a sparing.
    pub(super) fn role(&self, disk: &str) -> Option<&'static str> {
        let st = self.st.lock();
        st.ops.values().find_map(|r| {
            if r.disk == disk {
                Some("sparing copy source")
            } else if r.spare == disk {
                Some("sparing copy target")
            } else {
                None
            }
        })
    }

    pub(super) fn pass_done(&self) {
        self.st.lock().passes += 1;
    }

    pub(super) fn passes(&self) -> u64 {
        self.st.lock().passes
    }

    pub(super) fn put_op(&self, r: SparingRecord) {
        self.st.lock().ops.insert(r.disk.clone(), r);
    }

    pub(super) fn remove_op(&self, disk: &str) {
        self.st.lock().ops.remove(disk);
    }
}

#[cfg(test)]
mod tests;
