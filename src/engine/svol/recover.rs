//! S-VOL groups' error process on the engine's side (seed 003, unit 650;
//! SEED-SPECS C.c.4-C.c.7): the tables' changes the data path reports
//! (a member failed, an RO member took over the RW role) are stored, and
//! the jobs that move data run:
//!
//! - **spare replacement** (`svol-fill`): a failed or vacant RO LID is
//!   filled from a healthy RO member onto a spare, which then becomes that
//!   LID's PID (its spare row goes); started by itself when a member fails
//!   or a takeover leaves a LID vacant, and a spare is left;
//! - **rebuild** (`svol-group restore --rebuild`): the same copy onto the
//!   member's own PID (repaired), which then serves again;
//! - **rollback** (`svol-group restore --rollback`): the RW member's blocks
//!   in table 1300 are copied back from an RO member, and the table
//!   empties.

use std::sync::{Arc, Weak};

use super::below;
use crate::api::views::{JobInfo, SvolAttr};
use crate::blockdev::{BlockDev, DevFuture};
use crate::engine::Pool;
use crate::error::{Error, ErrorKind, Result};
use crate::jobs::{MakeWork, Work};
use crate::meta::model::{JobKind, JobRecord, SvolGroupRecord};
use crate::pair::group::{Change, Group, Hooks};

/// Blocks a step of a fill or rollback covers at most (8 MiB of 64 KiB).
const STEP_BYTES: u64 = 8 << 20;

struct SvolHooks {
    pool: Weak<Pool>,
}

impl Hooks for SvolHooks {
    fn store(&self, group: &str, change: Change) -> DevFuture<'static, Result<()>> {
        let pool = self.pool.upgrade();
        let group = group.to_string();
        Box::pin(async move {
            let pool =
                pool.ok_or_else(|| Error::new(ErrorKind::Shutdown, "the pool is closing"))?;
            pool.svol_store_change(&group, change)
        })
    }
}

impl Pool {
    pub(super) fn svol_hooks(&self) -> Result<Arc<dyn Hooks>> {
        Ok(Arc::new(SvolHooks {
            pool: Arc::downgrade(&self.arc()?),
        }))
    }

    /// Stores a change the data path made, then starts a spare's fill if
    /// a slot is open and a spare is left.
    fn svol_store_change(&self, group: &str, change: Change) -> Result<()> {
        let fill = self.svol_update(group, |rec| apply(rec, &change), |_| Ok(()))?;
        tracing::warn!("S-VOL group {group}: {change:?} stored");
        let started = match (&change, fill) {
            (Change::DlvFailed { lid }, _) => self.start_svol_dlv(group, lid, 0).map(drop),
            (_, true) => self.start_svol_fill(group, None).map(drop),
            _ => Ok(()),
        };
        if let Err(e) = started {
            tracing::warn!("S-VOL group {group}: no spare replacement: {}", e.chain());
        }
        Ok(())
    }

    /// Starts the fill of `lid` (or of the first failed or vacant RO
    /// LID): onto a spare, or with `rebuild` onto the LID's own PID.
    pub(super) fn start_svol_fill(&self, group: &str, lid: Option<&str>) -> Result<JobInfo> {
        self.start_fill(group, lid, false, 0)
    }

    fn start_fill(
        &self,
        group: &str,
        lid: Option<&str>,
        rebuild: bool,
        rate: u64,
    ) -> Result<JobInfo> {
        let rec = self.svols.record(group)?;
        let open = |m: &&crate::meta::model::SvolMemberRecord| {
            m.attr == SvolAttr::Ro && (m.failed || m.pid.is_empty())
        };
        let target = match lid {
            Some(l) => rec
                .members
                .iter()
                .find(|m| m.lid == l && m.attr == SvolAttr::Ro),
            None => rec.members.iter().find(open),
        }
        .ok_or_else(|| {
            Error::invalid(format!("S-VOL group {group} has no such RO member to fill"))
        })?;
        let spare = if rebuild {
            if target.pid.is_empty() {
                return Err(Error::conflict(format!(
                    "{} has no physical volume (vacant): only a spare can fill it",
                    target.lid
                )));
            }
            None
        } else {
            let s = rec.members.iter().find(|m| m.attr == SvolAttr::Spare);
            Some(
                s.ok_or_else(|| {
                    Error::conflict(format!(
                        "S-VOL group {group} has no spare left: it runs degraded (add one by making the group again)"
                    ))
                })?
                .lid
                .clone(),
            )
        };
        let kind = JobKind::SvolFill {
            group: group.to_string(),
            lid: target.lid.clone(),
            spare,
        };
        self.start_svol_job(group, kind, &target.lid, rec.block, rate)
    }

    /// Starts a job that copies volume `lid` block by block (`block`
    /// bytes each).
    pub(super) fn start_svol_job(
        &self,
        group: &str,
        kind: JobKind,
        lid: &str,
        block: u64,
        rate: u64,
    ) -> Result<JobInfo> {
        let (size, _) = self.volume_size_track(lid)?;
        self.svols.claim_job(group)?;
        let made = self
            .store_new_job(kind, size.div_ceil(block.max(1)), block, rate)
            .and_then(|job| Ok((self.svol_work(&job)?, job)));
        match made {
            Ok((make, job)) => {
                self.svols.set_job(group, Some(job.id));
                Ok(self.jobs.start(job, make))
            }
            Err(e) => {
                self.svols.set_job(group, None);
                Err(e)
            }
        }
    }

    /// `svol-group restore NAME --member LV --rollback | --rebuild`.
    pub fn svol_group_restore(
        &self,
        group: &str,
        lid: &str,
        rollback: bool,
        rate: u64,
    ) -> Result<JobInfo> {
        let rec = self.svols.record(group)?;
        let lost_dlv = rec
            .members
            .iter()
            .any(|m| m.lid == lid && m.attr == SvolAttr::Rw && m.dlv_failed);
        if !rollback && lost_dlv {
            // An RW member that lost its increments volume: a spare is
            // filled as the new one.
            return self.start_svol_dlv(group, lid, rate);
        }
        if !rollback {
            return self.start_fill(group, Some(lid), true, rate);
        }
        let m = rec
            .members
            .iter()
            .find(|m| m.lid == lid && m.attr == SvolAttr::Rw)
            .ok_or_else(|| {
                Error::invalid(format!("{lid} is not an RW member of S-VOL group {group}"))
            })?;
        let kind = JobKind::SvolRollback {
            group: group.to_string(),
            lid: lid.to_string(),
        };
        self.start_svol_job(group, kind, &m.lid, rec.block, rate)
    }

    /// The work of an S-VOL group's job (at its start or a resume).
    pub(in crate::engine) fn svol_work(&self, rec: &JobRecord) -> Result<MakeWork> {
        if let JobKind::SvolDlv { group, lid, spare } = &rec.kind {
            return self.dlv_work(rec.id, group, lid, spare);
        }
        let pool = self.arc()?;
        let (group, lid, spare, rollback) = match &rec.kind {
            JobKind::SvolFill { group, lid, spare } => (group, lid, spare.clone(), false),
            JobKind::SvolRollback { group, lid } => (group, lid, None, true),
            _ => return Err(Error::invalid("not an S-VOL group job")),
        };
        let (g, block) = self.svols.running(group)?;
        let me = g.members.iter().position(|m| &m.lid == lid);
        let to: Option<Arc<dyn BlockDev>> = match (&spare, rollback) {
            (Some(s), _) => Some(below(&self.volume_switch(s)?.current())),
            (None, false) => me.and_then(|i| g.members[i].dev()),
            (None, true) => None,
        };
        let me = me.ok_or_else(|| Error::not_found(format!("member {lid} is gone")))?;
        if !rollback && to.is_none() {
            return Err(Error::invalid(format!(
                "{lid} has no physical volume to rebuild"
            )));
        }
        let w = SvolWork {
            pool,
            group: group.clone(),
            g,
            me,
            block,
            to,
            spare,
            job: rec.id,
        };
        Ok(Box::new(move || Ok(Box::new(w) as Box<dyn Work>)))
    }

    /// A fill is done: the LID's PID is the spare (its spare row goes) or
    /// its own, repaired; it serves reads again.
    async fn svol_fill_done(&self, w: &SvolWork) -> Result<()> {
        let m = &w.g.members[w.me];
        self.svol_update(
            &w.group,
            |rec| {
                if let Some(spare) = &w.spare {
                    rec.members.retain(|x| &x.lid != spare);
                }
                if let Some(r) = rec.members.iter_mut().find(|x| x.lid == m.lid) {
                    if let Some(spare) = &w.spare {
                        r.pid = spare.clone();
                    }
                    r.failed = false;
                }
                Ok(())
            },
            |_| Ok(()),
        )?;
        m.set_dev(w.to.clone());
        m.unfail();
        self.svols.set_job(&w.group, None);
        tracing::info!(
            "S-VOL group {}: {} filled from the group{}",
            w.group,
            m.lid,
            w.spare
                .as_ref()
                .map_or(String::new(), |s| format!(", spare {s} is its PID now"))
        );
        Ok(())
    }
}

/// Applies a data-path change to the record; whether a fill may start.
fn apply(rec: &mut SvolGroupRecord, change: &Change) -> Result<bool> {
    let find = |rec: &mut SvolGroupRecord, lid: &str| -> Result<usize> {
        rec.members
            .iter()
            .position(|m| m.lid == lid)
            .ok_or_else(|| Error::not_found(format!("member {lid} is not in the record")))
    };
    Ok(match change {
        Change::Failed { lid } => {
            let i = find(rec, lid)?;
            rec.members[i].failed = true;
            rec.members[i].attr == SvolAttr::Ro
        }
        Change::Vacating { lid } => {
            let i = find(rec, lid)?;
            rec.members[i].failed = true;
            false
        }
        Change::DlvFailed { lid } => {
            let i = find(rec, lid)?;
            rec.members[i].dlv_failed = true;
            false
        }
        Change::TookOver { rw, from } => {
            let (i, j) = (find(rec, rw)?, find(rec, from)?);
            rec.members[i].pid = std::mem::take(&mut rec.members[j].pid);
            rec.members[i].failed = false;
            rec.members[j].failed = true;
            true
        }
    })
}

struct SvolWork {
    pool: Arc<Pool>,
    group: String,
    g: Arc<Group>,
    me: usize,
    block: u64,
    /// Where a fill copies to (a spare, or the member's own PID).
    to: Option<Arc<dyn BlockDev>>,
    spare: Option<String>,
    job: u64,
}

impl Work for SvolWork {
    fn step(&mut self, from: u64, n: u64) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            let m = &self.g.members[self.me];
            match &self.to {
                Some(to) => {
                    let off = from.saturating_mul(self.block);
                    let len = n
                        .saturating_mul(self.block)
                        .min(m.size().saturating_sub(off));
                    self.g.fill(&m.lid, to, off, len).await
                }
                None => self.g.roll_back(self.me, from..from + n).await,
            }
        })
    }

    fn step_bytes(&self) -> u64 {
        STEP_BYTES
    }

    fn checkpoint(&mut self) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            match (&self.to, &self.g.members[self.me].incr) {
                (Some(to), _) => to.flush().await,
                (None, Some(incr)) => incr.bids.sync().await,
                (None, None) => Ok(()),
            }
        })
    }

    fn finish(&mut self) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            if self.to.is_some() {
                let pool = Arc::clone(&self.pool);
                return pool.svol_fill_done(self).await;
            }
            self.pool.svols.set_job(&self.group, None);
            tracing::info!(
                "S-VOL group {}: {} rolled back to the split image",
                self.group,
                self.g.members[self.me].lid
            );
            Ok(())
        })
    }

    fn abort(&mut self, cancelled: bool) -> DevFuture<'_, Result<()>> {
        let what = if cancelled { "cancelled" } else { "failed" };
        tracing::warn!("S-VOL group {}: job {} {what}", self.group, self.job);
        self.pool.svols.set_job(&self.group, None);
        Box::pin(async { Ok(()) })
    }
}
