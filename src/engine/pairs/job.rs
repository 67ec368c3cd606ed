//! A pair's copy job: the initial copy (COPY), a resync (RESYNC, P-VOL to
//! S-VOL) or a restore (RESTORE, S-VOL to P-VOL) — seed 002's copy of the
//! tracks whose differential bit is set, and only those.
//!
//! Units are tracks to copy, counted when the job starts. A step copies
//! the next marked tracks after its cursor ([`Pair::copy_some`]: under
//! their locks, flushed, then cleared); a checkpoint stores the cleared
//! bits. After a restart the job starts its cursor again at track 0: what
//! was copied is clear, what was not is still set. Bits set behind the
//! cursor (an S-VOL write that failed) are found when the last unit is
//! done, and copied in another pass. When none is left the pair goes to
//! PAIR; a job cancelled or failed leaves the pair in its status with its
//! bits, and `pair resync` (or `pair restore`) starts it again.

use std::sync::Arc;

use crate::api::views::JobInfo;
use crate::blockdev::DevFuture;
use crate::engine::Pool;
use crate::error::{Error, Result};
use crate::jobs::{MakeWork, Work};
use crate::meta::model::{JobKind, PairStatus};
use crate::pair::Pair;

/// Bytes a step copies at most (its tracks are copied concurrently).
const STEP_BYTES: u64 = 8 << 20;

struct PairCopyWork {
    pool: Arc<Pool>,
    svol: String,
    pair: Arc<Pair>,
    job: u64,
    /// The track the next step looks from.
    cursor: u64,
}

impl Work for PairCopyWork {
    fn step(&mut self, _from: u64, n: u64) -> DevFuture<'_, Result<()>> {
        Box::pin(async move {
            let max = usize::try_from(n).unwrap_or(usize::MAX);
            let next = self.pair.copy_some(self.cursor, max).await?;
            self.cursor = next.unwrap_or(self.pair.diff().tracks());
            Ok(())
        })
    }

    fn step_bytes(&self) -> u64 {
        STEP_BYTES
    }

    fn checkpoint(&mut self) -> DevFuture<'_, Result<()>> {
        let diff = Arc::clone(self.pair.diff());
        Box::pin(async move { diff.sync().await })
    }

    fn more(&mut self) -> u64 {
        let left = self.pair.diff().count();
        if left > 0 {
            self.cursor = 0;
        }
        left
    }

    fn finish(&mut self) -> DevFuture<'_, Result<()>> {
        let pool = Arc::clone(&self.pool);
        let (svol, job) = (self.svol.clone(), self.job);
        Box::pin(async move { pool.pair_copy_done(&svol, job).await })
    }

    fn abort(&mut self, cancelled: bool) -> DevFuture<'_, Result<()>> {
        let (svol, job) = (self.svol.clone(), self.job);
        let _ = self.pool.pairs.with(&svol, |e| {
            if e.job == Some(job) {
                e.job = None;
            }
        });
        let what = if cancelled { "cancelled" } else { "failed" };
        tracing::warn!(
            "the copy job {job} of pair with S-VOL {svol} {what}: its marked tracks stay marked; `pair resync` or `pair restore` starts it again"
        );
        Box::pin(async { Ok(()) })
    }
}

impl Pool {
    /// Starts the copy job of the pair whose S-VOL is `svol`, in its
    /// status (COPY, RESYNC or RESTORE), limited to `rate` bytes/s (0:
    /// unlimited).
    pub(super) fn start_pair_copy(&self, svol: &str, rate: u64) -> Result<JobInfo> {
        let (pair, rec) = self
            .pairs
            .with(svol, |e| (Arc::clone(&e.pair), e.rec.clone()))?;
        let status = pair.status();
        if !status.copying() {
            return Err(Error::invalid(format!(
                "a pair in status {} has nothing to copy",
                status.name()
            )));
        }
        let kind = JobKind::PairCopy {
            pvol: rec.pvol.clone(),
            svol: rec.svol.clone(),
            status,
        };
        let job = self.store_new_job(kind, pair.diff().count(), rec.track, rate)?;
        let id = job.id;
        self.pairs.with(svol, |e| e.job = Some(id))?;
        let make = self.pair_copy_work(svol, id)?;
        Ok(self.jobs.start(job, make))
    }

    /// The work of pair copy job `job` (at its start or at a resume).
    pub(in crate::engine) fn pair_copy_work(&self, svol: &str, job: u64) -> Result<MakeWork> {
        let pool = self.arc()?;
        let pair = self.pairs.with(svol, |e| {
            e.job = Some(job);
            Arc::clone(&e.pair)
        })?;
        let svol = svol.to_string();
        Ok(Box::new(move || {
            Ok(Box::new(PairCopyWork {
                pool,
                svol,
                pair,
                job,
                cursor: 0,
            }) as Box<dyn Work>)
        }))
    }

    /// The last marked track is copied: the pair goes to PAIR (SPLIT after
    /// a one-way restore), the change
    /// made with both volumes' gates closed and stored durably.
    async fn pair_copy_done(&self, svol: &str, job: u64) -> Result<()> {
        let (pair, rec) = self
            .pairs
            .with(svol, |e| (Arc::clone(&e.pair), e.rec.clone()))?;
        if pair.one_way().is_some() {
            return self.one_way_done(svol, job).await;
        }
        let (psw, ssw) = self.pair_switches(&rec.pvol, &rec.svol)?;
        let (pc, sc) = (psw.close().await, ssw.close().await);
        let was = pair.status();
        let new = super::stored(&rec, PairStatus::Pair);
        let saved = new.clone();
        self.meta.write(true, |tx| tx.put_pair(&saved))?;
        pair.set_status(PairStatus::Pair);
        self.pairs.with(svol, |e| {
            e.rec = new;
            if e.job == Some(job) {
                e.job = None;
            }
        })?;
        drop((pc, sc));
        tracing::info!(
            "pair {} -> {svol}: {} done, status PAIR",
            rec.pvol,
            was.name()
        );
        Ok(())
    }
}
