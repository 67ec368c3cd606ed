//! `svol-group restore NAME --to-pvol [--member LV]` (seed 003, operation
//! code 1, restore toward the P-VOL): the group's image — what its RO
//! members hold — copied back onto the P-VOL, only the tracks that differ,
//! while the P-VOL stays in use and hosts keep reading the group.
//!
//! The member's pair knows which tracks differ: its differential bitmap
//! has every track written on the P-VOL since the group's split (the RO
//! member itself is not written). That pair restores the P-VOL *one way*
//! (`crate::engine::pairs::oneway`): the member is only read, the tracks
//! hosts write on the P-VOL meanwhile go to an after map, and the pair is
//! split again at the end with those tracks as its bitmap. The member is
//! held: it does not take over the RW role while the copy runs.
//!
//! The group's record carries the restore ([`ToPvolRecord`]) so that a
//! restart puts the after map back (or finishes merging it), and the
//! group is not deleted while it runs.

use std::sync::Arc;

use crate::api::views::{JobInfo, SvolAttr};
use crate::engine::Pool;
use crate::error::{Error, Result};
use crate::meta::diffmap::DiffMap;
use crate::meta::model::{PairStatus, SvolGroupRecord, ToPvolRecord};
use crate::pair::group::Group;

impl Pool {
    /// Starts copying the image of RO member `member` (default: the first
    /// that can) onto group `name`'s P-VOL; again after a stopped one.
    pub async fn svol_group_to_pvol(
        &self,
        name: &str,
        member: Option<&str>,
        rate: u64,
    ) -> Result<JobInfo> {
        let rec = self.svols.record(name)?;
        if let Some(j) = self.svols.job(name) {
            return Err(Error::conflict(format!(
                "S-VOL group {name} runs job {j}: `ferrosan job wait {j}`, then restore the P-VOL"
            )));
        }
        if let Some(tp) = &rec.to_pvol {
            return self.to_pvol_again(name, tp, member, rate);
        }
        let (group, _) = self.svols.running(name)?;
        let (at, m) = self.to_pvol_source(&rec, &group, member)?;
        self.pair_check_one_way(&rec.pvol, &m.pid)?;
        let pair = self.pair_of(&m.pid)?;
        let object = self.next_object();
        let after = DiffMap::open(
            Arc::clone(&self.meta),
            object,
            pair.diff().track(),
            pair.diff().tracks(),
        )?;
        let tp = ToPvolRecord {
            lid: m.lid.clone(),
            svol: m.pid.clone(),
            after: object,
            merging: false,
        };
        let pool_rec = self.pool_record();
        self.svol_update(
            name,
            |r| {
                r.to_pvol = Some(tp);
                Ok(())
            },
            |tx| tx.put_pool(&pool_rec),
        )?;
        if !group.hold_source(at).await {
            let _ = self.to_pvol_clear(name, object);
            return Err(Error::conflict(format!(
                "RO member {} failed or took over the RW role meanwhile: run the command again",
                m.lid
            )));
        }
        match self
            .pair_restore_one_way(&rec.pvol, &m.pid, after, rate)
            .await
        {
            Ok(job) => {
                tracing::info!(
                    "S-VOL group {name}: {}'s image is copied onto {} (job {})",
                    m.lid,
                    rec.pvol,
                    job.id
                );
                Ok(job)
            }
            // Restoring one way already (only its job did not start): the
            // record and the after map stay; running the command again
            // starts the job.
            Err(e) if pair.status() == PairStatus::Restore => Err(e.context(format!(
                "the restore of {} began; `ferrosan svol-group restore {name} --to-pvol` starts its copy again",
                rec.pvol
            ))),
            Err(e) => {
                group.hold(None);
                if let Err(u) = self.to_pvol_clear(name, object) {
                    tracing::warn!("S-VOL group {name}: {}", u.chain());
                }
                Err(e)
            }
        }
    }

    fn to_pvol_again(
        &self,
        name: &str,
        tp: &ToPvolRecord,
        member: Option<&str>,
        rate: u64,
    ) -> Result<JobInfo> {
        if tp.merging {
            return Err(Error::conflict(format!(
                "S-VOL group {name}: the P-VOL was restored from {}; its pair is being split again, try in a moment",
                tp.lid
            )));
        }
        if member.is_some_and(|m| m != tp.lid) {
            return Err(Error::conflict(format!(
                "S-VOL group {name}: a restore of the P-VOL from {} was started and stopped; run it again from {} (or without --member)",
                tp.lid, tp.lid
            )));
        }
        self.pair_one_way_again(&tp.svol, rate)
    }

    /// The RO member to copy from, with its index in the data path: the
    /// one named, or the first healthy RO member still paired with the
    /// P-VOL (a spare that filled a slot is not paired).
    fn to_pvol_source<'a>(
        &self,
        rec: &'a SvolGroupRecord,
        group: &Group,
        member: Option<&str>,
    ) -> Result<(usize, &'a crate::meta::model::SvolMemberRecord)> {
        let usable =
            |m: &crate::meta::model::SvolMemberRecord| -> std::result::Result<usize, String> {
                if m.attr != SvolAttr::Ro {
                    return Err(format!("{} is not an RO member", m.lid));
                }
                let at = group
                    .members
                    .iter()
                    .position(|x| x.lid == m.lid)
                    .ok_or_else(|| format!("{} is not a member", m.lid))?;
                let live = &group.members[at];
                if m.failed || live.failed() || live.dev().is_none() {
                    return Err(format!("RO member {} is failed or vacant", m.lid));
                }
                match self.pairs.of_volume(&m.pid) {
                    Some((p, s)) if p == rec.pvol && s == m.pid => Ok(at),
                    _ => Err(format!(
                        "RO member {}'s storage {} is not an S-VOL of {} (a spare that filled the slot is unpaired)",
                        m.lid, m.pid, rec.pvol
                    )),
                }
            };
        if let Some(lid) = member {
            let m = rec.members.iter().find(|m| m.lid == lid).ok_or_else(|| {
                Error::not_found(format!("{lid} is not a member of S-VOL group {}", rec.name))
            })?;
            return usable(m).map(|at| (at, m)).map_err(|why| {
                Error::invalid(format!("cannot restore {} from it: {why}", rec.pvol))
            });
        }
        let mut why = Vec::new();
        for m in rec.members.iter().filter(|m| m.attr == SvolAttr::Ro) {
            match usable(m) {
                Ok(at) => return Ok((at, m)),
                Err(w) => why.push(w),
            }
        }
        Err(Error::conflict(format!(
            "S-VOL group {} has no RO member to restore {} from: {}",
            rec.name,
            rec.pvol,
            why.join("; ")
        )))
    }

    /// The group's record without a restore, stored; the after map gone.
    fn to_pvol_clear(&self, name: &str, after: u64) -> Result<()> {
        self.svol_update(
            name,
            |r| {
                r.to_pvol = None;
                Ok(())
            },
            |tx| tx.del_pages(after),
        )
    }

    /// Marks "merging" (in memory) the restore of the group whose P-VOL
    /// pair `svol` restored one way; the group's name, for the caller to
    /// store its record with the pair's SPLIT.
    pub(in crate::engine) fn svol_to_pvol_merging(&self, svol: &str) -> Option<String> {
        let name = self
            .svols
            .st
            .lock()
            .values()
            .find(|e| {
                e.rec
                    .to_pvol
                    .as_ref()
                    .is_some_and(|t| t.svol == svol && !t.merging)
            })
            .map(|e| e.rec.name.clone())?;
        let marked = self.svols.change(&name, |r| {
            if let Some(t) = r.to_pvol.as_mut() {
                t.merging = true;
            }
            Ok(())
        });
        marked.ok().map(|()| name)
    }

    /// Group `name`'s record as it is now (to store it).
    pub(in crate::engine) fn svol_record(&self, name: &str) -> Result<SvolGroupRecord> {
        self.svols.record(name)
    }

    /// After a one-way restore from `svol`: the after map's tracks set in
    /// the pair's bitmap `diff` (stored), then the group's record cleared
    /// and the member released.
    pub(in crate::engine) async fn svol_merge_after(
        &self,
        svol: &str,
        diff: Arc<DiffMap>,
        after: Arc<DiffMap>,
    ) -> Result<()> {
        let name = self
            .svols
            .st
            .lock()
            .values()
            .find(|e| e.rec.to_pvol.as_ref().is_some_and(|t| t.svol == svol))
            .map(|e| e.rec.name.clone());
        let Some(name) = name else {
            return Ok(());
        };
        let stored: Vec<_> = after
            .set_runs()
            .into_iter()
            .filter_map(|run| diff.mark_tracks(run))
            .collect();
        futures::future::try_join_all(stored).await?;
        after.sync().await?;
        let object = self
            .svols
            .record(&name)?
            .to_pvol
            .map(|t| t.after)
            .unwrap_or_default();
        self.to_pvol_clear(&name, object)?;
        if let Ok((group, _)) = self.svols.running(&name) {
            group.hold(None);
        }
        Ok(())
    }

    /// At a start, a group whose record carries a restore of its P-VOL:
    /// the after map goes back on the pair (restoring), is merged (the
    /// pair split again), or is dropped (the restore never began).
    pub(super) fn load_to_pvol(&self, rec: &SvolGroupRecord, group: &Arc<Group>) -> Result<()> {
        let Some(tp) = rec.to_pvol.clone() else {
            return Ok(());
        };
        let pair = self.pair_of(&tp.svol)?;
        let after = DiffMap::open(
            Arc::clone(&self.meta),
            tp.after,
            pair.diff().track(),
            pair.diff().tracks(),
        )?;
        let at = group.members.iter().position(|m| m.lid == tp.lid);
        match (tp.merging, pair.status()) {
            (true, _) => {
                let pool = self.arc()?;
                let diff = Arc::clone(pair.diff());
                group.hold(at);
                self.workers.spawn(move || async move {
                    if let Err(e) = pool.svol_merge_after(&tp.svol, diff, after).await {
                        tracing::error!(
                            "merging the tracks written during the P-VOL's restore from {} failed: {}; it is retried at the next start",
                            tp.lid,
                            e.chain()
                        );
                    }
                });
            }
            (false, PairStatus::Restore) => {
                // A track in the after map was restored before a host
                // wrote it; the bitmap's clear of it is stored lazily and
                // may have been lost: clear it again, or the copier would
                // copy the S-VOL over the host's write.
                for run in after.set_runs() {
                    for t in run {
                        pair.diff().clear(t);
                    }
                }
                pair.set_one_way(Some(after));
                group.hold(at);
            }
            (false, _) => {
                tracing::warn!(
                    "S-VOL group {}: the restore of {} from {} had not begun at the last stop; run it again",
                    rec.name,
                    rec.pvol,
                    tp.lid
                );
                drop(after);
                self.to_pvol_clear(&rec.name, tp.after)?;
            }
        }
        Ok(())
    }
}
