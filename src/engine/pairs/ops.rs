//! `pair split`, `resync`, `restore` and `delete` (seed 002, FIG. 3B: a
//! pair in DUPLEX split into two independent images, their differences
//! kept in the differential bitmap, then copied one way or the other).
//!
//! A split stops host I/O of both volumes (their gates), flushes them
//! (every completed write is on both sides, durably), records SPLIT and
//! lets I/O go on: the S-VOL holds exactly the writes completed before
//! the split. A consistency group's split closes the gates of every pair
//! in it first and opens them only after all are recorded SPLIT in one
//! transaction, so no S-VOL holds a write issued after a write that is
//! missing from another: a host issues a dependent write only after the
//! write it depends on completed, and a write completes in PAIR only once
//! it is on both sides.

use std::sync::Arc;

use crate::api::views::PairInfo;
use crate::engine::Pool;
use crate::error::{Error, Result};
use crate::meta::model::{PairRecord, PairStatus, now};
use crate::pair::{Pair, PairDev, Side};
use crate::stack::gate::Closed;
use crate::stack::switch::Switch;

/// What a command found of one pair.
pub(super) struct Found {
    pub(super) rec: PairRecord,
    pub(super) pair: Arc<Pair>,
    pub(super) job: Option<u64>,
}

impl Pool {
    pub(super) fn pair_found(&self, pvol: Option<&str>, svol: &str) -> Result<Found> {
        self.pairs.with_checked(pvol, svol, |e| Found {
            rec: e.rec.clone(),
            pair: Arc::clone(&e.pair),
            job: e.job,
        })
    }

    /// Refuses a command from the wrong status: names the status, the
    /// job running and what to do.
    pub(super) fn pair_refuse(f: &Found, cmd: &str, todo: &str) -> Error {
        let job = match f.job {
            Some(j) => format!(" (job {j} is copying: `ferrosan job wait {j}`)"),
            None => String::new(),
        };
        Error::conflict(format!(
            "pair {} -> {} is in status {}{job}: it cannot be {cmd}; {todo}",
            f.rec.pvol,
            f.rec.svol,
            f.pair.status().name()
        ))
    }

    /// Splits one pair (`svol`), or every pair of consistency group
    /// `group`, at one instant.
    pub async fn pair_split(
        &self,
        pvol: Option<&str>,
        svol: Option<&str>,
        group: Option<&str>,
    ) -> Result<Vec<PairInfo>> {
        let svols = match (svol, group) {
            (Some(s), None) => vec![s.to_string()],
            (None, Some(g)) => {
                let v = self.pairs.in_group(g);
                if v.is_empty() {
                    return Err(Error::not_found(format!(
                        "no pair is in consistency group {g}: see `ferrosan pair list`"
                    )));
                }
                v
            }
            _ => {
                return Err(Error::invalid(
                    "split one pair (P-VOL and S-VOL) or a consistency group (--group), not both",
                ));
            }
        };
        let mut found = Vec::with_capacity(svols.len());
        for s in &svols {
            let f = self.pair_found(pvol, s)?;
            if f.pair.status() != PairStatus::Pair || f.job.is_some() {
                let todo = match f.pair.status() {
                    PairStatus::Split => "it is split already".to_string(),
                    _ => "wait for its copy to finish (status PAIR), then split it".to_string(),
                };
                return Err(Pool::pair_refuse(&f, "split", &todo));
            }
            found.push(f);
        }
        let pool = self.arc()?;
        self.workers
            .run(move || async move { pool.split_on_worker(found).await })
            .await??;
        svols.iter().map(|s| self.pair_get(None, s)).collect()
    }

    /// Splits the pairs of `svols` (S-VOLs of `pvol`, in PAIR) at one
    /// instant, as an S-VOL group's creation does. On a worker.
    pub(in crate::engine) async fn split_for_group(
        self: Arc<Self>,
        pvol: &str,
        svols: &[String],
    ) -> Result<u64> {
        let mut found = Vec::with_capacity(svols.len());
        for s in svols {
            let f = self.pair_found(Some(pvol), s)?;
            if f.pair.status() != PairStatus::Pair || f.job.is_some() {
                return Err(Pool::pair_refuse(
                    &f,
                    "made an S-VOL group member",
                    "a group is made of S-VOLs in PAIR, which it splits at one instant; resync it first (`pair resync`)",
                ));
            }
            found.push(f);
        }
        let first = svols.first().cloned().unwrap_or_default();
        Arc::clone(&self).split_on_worker(found).await?;
        Ok(self.pair_get(None, &first)?.split_at.unwrap_or(0))
    }

    async fn split_on_worker(self: Arc<Self>, found: Vec<Found>) -> Result<()> {
        let (mut ps, mut ss): (Vec<Arc<Switch>>, Vec<Arc<Switch>>) = (vec![], vec![]);
        for f in &found {
            let (p, s) = self.pair_switches(&f.rec.pvol, &f.rec.svol)?;
            // Several S-VOLs of one P-VOL: its gate is closed once.
            if !ps.iter().any(|x| Arc::ptr_eq(x, &p)) {
                ps.push(p);
            }
            ss.push(s);
        }
        // P-VOLs first: the cut is where their I/O stops.
        let mut closed: Vec<Closed<'_>> = Vec::with_capacity(ps.len() + ss.len());
        for sw in ps.iter().chain(ss.iter()) {
            closed.push(sw.close().await);
        }
        for f in &found {
            super::flush_both(Arc::clone(&f.pair)).await?;
        }
        let at = now();
        let recs: Vec<PairRecord> = found
            .iter()
            .map(|f| {
                let mut r = super::stored(&f.rec, PairStatus::Split);
                r.split_at = Some(at);
                r
            })
            .collect();
        let saved = recs.clone();
        self.meta.write(true, |tx| {
            for r in &saved {
                tx.put_pair(r)?;
            }
            Ok(())
        })?;
        for (f, r) in found.iter().zip(recs) {
            f.pair.set_status(PairStatus::Split);
            self.pairs.with(&f.rec.svol, |e| e.rec = r)?;
        }
        drop(closed);
        let names: Vec<String> = found
            .iter()
            .map(|f| format!("{} -> {}", f.rec.pvol, f.rec.svol))
            .collect();
        tracing::info!("split at one instant: {}", names.join(", "));
        Ok(())
    }

    /// `pair resync` (SPLIT to RESYNC) or `pair restore` (SPLIT to
    /// RESTORE): starts the copy of the marked tracks. From COPY, RESYNC or
    /// RESTORE with no job running (it was cancelled or failed), starts it
    /// again.
    pub async fn pair_copy_back(
        &self,
        pvol: Option<&str>,
        svol: &str,
        restore: bool,
        rate: Option<u64>,
    ) -> Result<PairInfo> {
        let f = self.pair_found(pvol, svol)?;
        self.svols
            .refuse_member(svol, if restore { "restored from" } else { "resynced" })?;
        let (cmd, to) = if restore {
            ("restored", PairStatus::Restore)
        } else {
            ("resynced", PairStatus::Resync)
        };
        let status = f.pair.status();
        let again = f.job.is_none() && (status == to || (!restore && status == PairStatus::Copy));
        // In PAIR, set bits are tracks whose S-VOL write failed: a resync
        // copies them.
        let stale = !restore && status == PairStatus::Pair && f.pair.diff().count() > 0;
        if !again && !stale && (status != PairStatus::Split || f.job.is_some()) {
            let todo = match (status, f.job) {
                (PairStatus::Pair, _) => "split it first (`pair split`)",
                (_, Some(_)) => "wait for its copy to finish",
                (PairStatus::Restore, None) => {
                    "its restore was stopped: `pair restore` starts it again"
                }
                (_, None) => "its copy was stopped: `pair resync` starts it again",
            };
            return Err(Pool::pair_refuse(&f, cmd, todo));
        }
        self.refuse_beside_restore(&f, restore)?;
        if restore && !again {
            self.mark_for_siblings(&f).await?;
        }
        if !again {
            let pool = self.arc()?;
            let rec = f.rec.clone();
            let pair = Arc::clone(&f.pair);
            self.workers
                .run(move || async move { pool.set_pair_status(&rec, &pair, to).await })
                .await??;
        }
        self.start_pair_copy(svol, rate.unwrap_or(0))?;
        self.pair_get(None, svol)
    }

    /// A pair's copy cannot start while another pair of its P-VOL
    /// restores (the restore rewrites the P-VOL below it), and a restore
    /// only while every other pair of its P-VOL is split with no job.
    pub(super) fn refuse_beside_restore(&self, f: &Found, restoring: bool) -> Result<()> {
        for (svol, status, job) in self.pairs.siblings(&f.rec.pvol, &f.rec.svol) {
            if status == PairStatus::Restore {
                return Err(Error::conflict(format!(
                    "pair {} -> {svol} is restoring {}: no other pair of that P-VOL copies until it is done (`ferrosan pair show {svol}`)",
                    f.rec.pvol, f.rec.pvol
                )));
            }
            if restoring && (status != PairStatus::Split || job.is_some()) {
                return Err(Error::conflict(format!(
                    "pair {} -> {svol} is in status {}: a restore rewrites the P-VOL under every other S-VOL of it, so they must be split first (`ferrosan pair split {} {svol}`)",
                    f.rec.pvol,
                    status.name(),
                    f.rec.pvol
                )));
            }
        }
        Ok(())
    }

    /// Before a restore: the tracks it will rewrite on the P-VOL are set
    /// in the bitmaps of the P-VOL's other (split) pairs, stored, so their
    /// next resync copies them.
    pub(super) async fn mark_for_siblings(&self, f: &Found) -> Result<()> {
        let others = self.pairs.sibling_maps(&f.rec.pvol, &f.rec.svol);
        if others.is_empty() {
            return Ok(());
        }
        let mut stored = Vec::new();
        for run in f.pair.diff().set_runs() {
            for o in &others {
                stored.extend(o.mark_tracks(run.clone()));
            }
        }
        futures::future::try_join_all(stored).await?;
        Ok(())
    }

    /// Records `to` and sets it with both volumes' gates closed.
    async fn set_pair_status(&self, rec: &PairRecord, pair: &Pair, to: PairStatus) -> Result<()> {
        let (psw, ssw) = self.pair_switches(&rec.pvol, &rec.svol)?;
        let (pc, sc) = (psw.close().await, ssw.close().await);
        let mut new = super::stored(rec, to);
        new.split_at = None;
        let saved = new.clone();
        self.meta.write(true, |tx| tx.put_pair(&saved))?;
        pair.set_status(to);
        self.pairs.with(&rec.svol, |e| e.rec = new)?;
        drop((pc, sc));
        Ok(())
    }

    /// Deletes a pair in any status: its job is cancelled first; the two
    /// volumes keep their data and go on as independent volumes (an S-VOL
    /// whose copy had not finished holds a partial copy).
    pub async fn pair_delete(&self, pvol: Option<&str>, svol: &str) -> Result<()> {
        let f = self.pair_found(pvol, svol)?;
        self.svols.refuse_member(svol, "unpaired")?;
        if let Some(job) = f.job {
            // The job ends (it may be finishing: then the pair is in PAIR).
            let _ = self.jobs.cancel(job);
            let _ = self.jobs.wait(job).await;
        }
        let pool = self.arc()?;
        let svol = svol.to_string();
        self.workers
            .run(move || async move { pool.pair_delete_on_worker(&svol).await })
            .await?
    }

    async fn pair_delete_on_worker(&self, svol: &str) -> Result<()> {
        let f = self.pair_found(None, svol)?;
        let (psw, ssw) = self.pair_switches(&f.rec.pvol, &f.rec.svol)?;
        let (pc, sc) = (psw.close().await, ssw.close().await);
        // What both sides completed is durable before they part.
        super::flush_both(Arc::clone(&f.pair)).await?;
        let rec = f.rec.clone();
        self.meta.write(true, |tx| tx.del_pair(&rec))?;
        unlink_p(&psw, &f.pair);
        ssw.set(f.pair.side(Side::S));
        self.pairs.st.lock().remove(svol);
        drop((pc, sc));
        tracing::info!(
            "pair {} -> {} deleted in status {}",
            f.rec.pvol,
            f.rec.svol,
            f.pair.status().name()
        );
        Ok(())
    }
}

/// Takes `pair`'s node out of its P-VOL's stack of pair nodes (one per
/// S-VOL): the switch, or the pair whose node sits above it, gets what
/// was below it. Call with the P-VOL's gate closed.
fn unlink_p(psw: &Switch, pair: &Arc<Pair>) {
    let below = pair.side(Side::P);
    let mut above: Option<Arc<Pair>> = None;
    let mut node = psw.current();
    while let Some(dev) = node.as_any().downcast_ref::<PairDev>() {
        if Arc::ptr_eq(dev.pair(), pair) {
            match above {
                None => psw.set(below),
                Some(upper) => upper.set_below_p(below),
            }
            return;
        }
        let next = dev.pair().side(Side::P);
        above = Some(Arc::clone(dev.pair()));
        node = next;
    }
    tracing::warn!("a deleted pair's node was not found over its P-VOL");
}
