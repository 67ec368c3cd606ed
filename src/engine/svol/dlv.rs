//! Replacing a failed increments volume (seed 003, error process unit
//! 650: the DLV replaced from a spare). When an RW member's DLV fails a
//! write, the data path records it (`Change::DlvFailed`) and the member
//! holds the increments alone; if a spare is left, an `svol-dlv` job makes
//! it the new DLV:
//!
//! ```text
//!   first step: the member's gate held alone ─> the spare is the DLV
//!               being filled: every write of the member goes to it too
//!   steps:      each block of table 1300 copied member ─> spare, under
//!               the block's lock (a host write never lands in between)
//!   finish:     spare flushed ─> record: RLID = the spare, its spare row
//!               gone, the member healthy ─> the DLV is whole: reads and
//!               takeovers use it ─> the old DLV leaves the group (a plain
//!               volume again, for the administrator to inspect or delete)
//! ```
//!
//! After a restart the job copies from block 0 again (blocks the copier
//! had passed may have taken host writes that were not flushed; the
//! member's write-intent log is not replayed onto a DLV being filled).

use std::sync::Arc;

use super::{below, internal};
use crate::api::views::{JobInfo, SvolAttr};
use crate::blockdev::{BlockDev, DevFuture};
use crate::engine::Pool;
use crate::error::{Error, Result};
use crate::jobs::{MakeWork, Work};
use crate::meta::model::JobKind;
use crate::pair::group::Group;

/// Bytes of blocks a step scans at most.
const STEP_BYTES: u64 = 8 << 20;

struct DlvWork {
    pool: Arc<Pool>,
    group: String,
    g: Arc<Group>,
    me: usize,
    spare: String,
    to: Arc<dyn BlockDev>,
    /// The next step is the first of this run.
    first: bool,
    job: u64,
}

impl Work for DlvWork {
    fn step(&mut self, from: u64, n: u64) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            let start = if self.first {
                self.first = false;
                self.g
                    .rebuild_dlv_onto(self.me, Arc::clone(&self.to))
                    .await?;
                0
            } else {
                from
            };
            self.g.copy_to_dlv(self.me, start..from + n).await
        })
    }

    fn step_bytes(&self) -> u64 {
        STEP_BYTES
    }

    fn checkpoint(&mut self) -> DevFuture<'_, Result<()>> {
        Box::pin(self.to.flush())
    }

    fn finish(&mut self) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            let pool = Arc::clone(&self.pool);
            pool.svol_dlv_done(self).await
        })
    }

    fn abort(&mut self, cancelled: bool) -> DevFuture<'_, Result<()>> {
        let what = if cancelled { "cancelled" } else { "failed" };
        tracing::warn!(
            "S-VOL group {}: job {} (a new increments volume for {}) {what}; the member goes on without one",
            self.group,
            self.job,
            self.g.members[self.me].lid
        );
        if let Some(incr) = &self.g.members[self.me].incr {
            incr.fail_dlv();
        }
        self.pool.svols.set_job(&self.group, None);
        Box::pin(async { Ok(()) })
    }
}

impl Pool {
    /// Starts replacing RW member `lid`'s failed DLV by the first spare.
    pub(super) fn start_svol_dlv(&self, group: &str, lid: &str, rate: u64) -> Result<JobInfo> {
        let rec = self.svols.record(group)?;
        if !rec
            .members
            .iter()
            .any(|m| m.lid == lid && m.attr == SvolAttr::Rw && m.dlv_failed)
        {
            return Err(Error::invalid(format!(
                "{lid} is not an RW member of S-VOL group {group} whose increments volume failed"
            )));
        }
        let spare = rec
            .members
            .iter()
            .find(|m| m.attr == SvolAttr::Spare)
            .ok_or_else(|| {
                Error::conflict(format!(
                    "S-VOL group {group} has no spare left: {lid} runs without its increments volume"
                ))
            })?
            .lid
            .clone();
        let kind = JobKind::SvolDlv {
            group: group.to_string(),
            lid: lid.to_string(),
            spare,
        };
        self.start_svol_job(group, kind, lid, rec.block, rate)
    }

    /// The work of an `svol-dlv` job (at its start or a resume).
    pub(super) fn dlv_work(
        &self,
        job: u64,
        group: &str,
        lid: &str,
        spare: &str,
    ) -> Result<MakeWork> {
        let (g, _) = self.svols.running(group)?;
        let me = g
            .members
            .iter()
            .position(|m| m.lid == lid)
            .ok_or_else(|| Error::not_found(format!("member {lid} is gone")))?;
        let w = DlvWork {
            pool: self.arc()?,
            group: group.to_string(),
            g,
            me,
            spare: spare.to_string(),
            to: below(&self.volume_switch(spare)?.current()),
            first: true,
            job,
        };
        Ok(Box::new(move || Ok(Box::new(w) as Box<dyn Work>)))
    }

    /// The new DLV is whole: recorded, put in use, the old one released.
    async fn svol_dlv_done(&self, w: &DlvWork) -> Result<()> {
        w.to.flush().await?;
        let m = &w.g.members[w.me];
        let mut old = None;
        let record = || {
            old = self.svol_update(
                &w.group,
                |rec| {
                    rec.members.retain(|x| x.lid != w.spare);
                    let r = rec.members.iter_mut().find(|x| x.lid == m.lid);
                    Ok(r.and_then(|r| {
                        r.dlv_failed = false;
                        r.rlid.replace(w.spare.clone())
                    }))
                },
                |_| Ok(()),
            )?;
            Ok(())
        };
        w.g.dlv_rebuilt_with(w.me, record).await?;
        // A second job for the same spare (it cannot be: one job a
        // group) would find the spare as the old DLV: never release it.
        let old = old.filter(|o| *o != w.spare);
        let sw = self.volume_switch(&w.spare)?;
        sw.set(internal(
            below(&sw.current()),
            &w.spare,
            &w.group,
            "the increments volume (DLV)",
        ));
        if let Some(old) = &old {
            let sw = self.volume_switch(old)?;
            let closed = sw.close().await;
            sw.set(below(&sw.current()));
            drop(closed);
        }
        self.svols.set_job(&w.group, None);
        tracing::info!(
            "S-VOL group {}: spare {} is {}'s increments volume now; {} left the group",
            w.group,
            w.spare,
            m.lid,
            old.as_deref().unwrap_or("the old one")
        );
        Ok(())
    }
}
