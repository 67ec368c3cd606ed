//! One-way restores: a split pair whose S-VOL is an S-VOL group's RO
//! member copies its marked tracks back onto the P-VOL (`svol-group
//! restore --to-pvol`) while the member stays an unchanged image that
//! hosts read, and goes back to SPLIT when done (`crate::pair::dev`, "one
//! way").
//!
//! ```text
//!   start:  other pairs of the P-VOL split, no job ─> their bitmaps get the
//!           tracks to restore (stored) ─> gates closed ─> after map set,
//!           RESTORE stored ─> gates open ─> copy job
//!   done:   gates closed ─> SPLIT (split time kept) and the group's
//!           "merging" stored in one commit ─> gates open ─> the after map
//!           merged into the bitmap (stored) ─> the group's record cleared
//! ```
//!
//! A crash before the commit of "done" resumes the restore: the after map
//! is reopened and its tracks' bits are cleared in the bitmap (a track in
//! it was restored before a host wrote it, and the bitmap's clears are
//! stored lazily, so the bit may be back), so the copier leaves them; a
//! crash after it merges again at the next start (setting bits twice is
//! harmless).

use std::sync::Arc;

use super::ops::Found;
use crate::api::views::JobInfo;
use crate::engine::Pool;
use crate::error::Result;
use crate::meta::diffmap::DiffMap;
use crate::meta::model::PairStatus;
use crate::pair::Pair;

impl Pool {
    /// The running pair whose S-VOL is `svol`.
    pub(in crate::engine) fn pair_of(&self, svol: &str) -> Result<Arc<Pair>> {
        self.pairs.with(svol, |e| Arc::clone(&e.pair))
    }

    /// Whether pair `pvol -> svol` may restore the P-VOL one way now:
    /// split with no job, and every other pair of the P-VOL too.
    pub(in crate::engine) fn pair_check_one_way(&self, pvol: &str, svol: &str) -> Result<()> {
        let f = self.pair_found(Some(pvol), svol)?;
        if f.pair.status() != PairStatus::Split || f.job.is_some() {
            return Err(Pool::pair_refuse(
                &f,
                "restored from",
                "the group's image is copied from a split pair; wait for its job",
            ));
        }
        self.refuse_beside_restore(&f, true)
    }

    /// Starts the one-way restore of `pvol` from `svol`, hosts' writes
    /// of the P-VOL kept in `after` meanwhile.
    pub(in crate::engine) async fn pair_restore_one_way(
        &self,
        pvol: &str,
        svol: &str,
        after: Arc<DiffMap>,
        rate: u64,
    ) -> Result<JobInfo> {
        self.pair_check_one_way(pvol, svol)?;
        let f = self.pair_found(Some(pvol), svol)?;
        self.mark_for_siblings(&f).await?;
        let pool = self.arc()?;
        self.workers
            .run(move || async move { pool.one_way_status(&f, Some(after)).await })
            .await??;
        self.start_pair_copy(svol, rate)
    }

    /// Starts again a one-way restore whose job was stopped.
    pub(in crate::engine) fn pair_one_way_again(&self, svol: &str, rate: u64) -> Result<JobInfo> {
        let f = self.pair_found(None, svol)?;
        if f.pair.status() != PairStatus::Restore || f.pair.one_way().is_none() {
            return Err(Pool::pair_refuse(
                &f,
                "restored from again",
                "it is not restoring its P-VOL one way",
            ));
        }
        if let Some(j) = f.job {
            return Err(Pool::pair_refuse(
                &f,
                "restored from again",
                &format!("job {j} is restoring: `ferrosan job wait {j}`"),
            ));
        }
        self.start_pair_copy(svol, rate)
    }

    /// RESTORE with `after` set, or SPLIT with it cleared (split time
    /// kept), stored and set with both volumes' gates closed.
    async fn one_way_status(&self, f: &Found, after: Option<Arc<DiffMap>>) -> Result<()> {
        let (psw, ssw) = self.pair_switches(&f.rec.pvol, &f.rec.svol)?;
        let (pc, sc) = (psw.close().await, ssw.close().await);
        let to = if after.is_some() {
            PairStatus::Restore
        } else {
            PairStatus::Split
        };
        let new = super::stored(&f.rec, to);
        let group = match to {
            PairStatus::Split => self.svol_to_pvol_merging(&f.rec.svol),
            _ => None,
        };
        let saved = new.clone();
        self.meta.write(true, |tx| {
            tx.put_pair(&saved)?;
            match &group {
                // The group's record as it is now ("merging" included).
                Some(g) => tx.put_svol_group(&self.svol_record(g)?),
                None => Ok(()),
            }
        })?;
        f.pair.set_one_way(after);
        f.pair.set_status(to);
        self.pairs.with(&f.rec.svol, |e| e.rec = new)?;
        drop((pc, sc));
        Ok(())
    }

    /// The copier of a one-way restore is done: the pair splits again and
    /// the tracks hosts wrote meanwhile are merged into its bitmap.
    pub(super) async fn one_way_done(&self, svol: &str, job: u64) -> Result<()> {
        let f = self.pair_found(None, svol)?;
        let Some(after) = f.pair.one_way() else {
            return Ok(());
        };
        self.one_way_status(&f, None).await?;
        let _ = self.pairs.with(svol, |e| {
            if e.job == Some(job) {
                e.job = None;
            }
        });
        tracing::info!(
            "{} restored from {svol} (one way); the pair is split again",
            f.rec.pvol
        );
        self.svol_merge_after(svol, Arc::clone(f.pair.diff()), after)
            .await
    }
}
