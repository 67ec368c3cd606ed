//! The write-back of a sparing's diverted writes as a job (seed 002, the
//! "third control unit": after the copy, the backed-up data goes back to
//! the group, now with the spare in the failing disk's slot).
//!
//! ```text
//!  monitor pass, record in WRITE-BACK ── its write-back job running?
//!        yes: nothing to do ── no: units still held? ── yes: a new job
//!        (total = units held; the job's id stored in the record) ── no:
//!        divert_end (switches back, record gone, T2/T4 idle)
//!  job step ── each node: its written entries stored, then up to n of
//!        its units copied back (host writes win: `Divert::write_back_some`)
//! ```
//!
//! A job stopped by a restart or a cancel is started again by the next
//! pass (the entries left are the work; `job pause` holds it instead).

#![forbid(unsafe_code)]

use std::sync::Arc;

use crate::blockdev::DevFuture;
use crate::engine::Pool;
use crate::error::Result;
use crate::jobs::Work;
use crate::meta::model::{JobKind, SparingRecord};

/// Units a node writes back at once.
const BATCH: usize = 256;

/// The write-back of the sparing of `disk`.
struct WriteBackWork {
    pool: Arc<Pool>,
    disk: String,
    unit: u64,
}

impl WriteBackWork {
    async fn write_back(&self, n: u64) -> Result<()> {
        let mut left = usize::try_from(n).unwrap_or(usize::MAX);
        for (_, node) in self.pool.sparing.nodes(&self.disk) {
            node.save().await?;
            while left > 0 {
                let k = node.write_back_some(left.min(BATCH)).await?;
                if k == 0 {
                    break;
                }
                left -= k;
            }
            if left == 0 {
                break;
            }
        }
        Ok(())
    }
}

impl Work for WriteBackWork {
    fn step(&mut self, _from: u64, n: u64) -> DevFuture<'_, Result<()>> {
        Box::pin(self.write_back(n))
    }

    fn step_bytes(&self) -> u64 {
        // A batch a step: progress moves as the removals are stored.
        BATCH as u64 * self.unit
    }

    fn checkpoint(&mut self) -> DevFuture<'_, Result<()>> {
        // Each step stores its removals before it returns.
        Box::pin(async { Ok(()) })
    }

    fn more(&mut self) -> u64 {
        self.pool.divert_held(&self.disk)
    }

    fn finish(&mut self) -> DevFuture<'_, Result<()>> {
        // The next monitor pass ends the diversion.
        Box::pin(async { Ok(()) })
    }

    fn abort(&mut self, _cancelled: bool) -> DevFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

impl Pool {
    /// Units the nodes of the sparing of `disk` still hold.
    pub(super) fn divert_held(&self, disk: &str) -> u64 {
        let nodes = self.sparing.nodes(disk);
        nodes.iter().map(|(_, n)| n.held() as u64).sum()
    }

    /// The monitor's part of a write-back: start its job, or end it.
    pub(super) async fn write_back_pass(&self, r: &SparingRecord) {
        let Some(d) = &r.divert else { return };
        let running = d.write_back_job != 0
            && self
                .jobs
                .record(d.write_back_job)
                .is_some_and(|j| !j.state.is_finished());
        if running {
            return;
        }
        let disk = r.disk.clone();
        let res = if self.divert_held(&disk) == 0 {
            self.configure_async(move |p| async move { p.divert_end(&disk) })
                .await
        } else {
            self.configure_async(move |p| async move { p.write_back_start(&disk) })
                .await
        };
        if let Err(e) = res {
            tracing::warn!(
                "the write-back of the sparing of disk {}: {} (tried again next pass)",
                r.disk,
                e.chain()
            );
        }
    }

    /// Starts the write-back job of the sparing of `disk`, its id stored
    /// in the record. On the commit path.
    fn write_back_start(&self, disk: &str) -> Result<()> {
        let Some(mut rec) = self.sparing.op(disk) else {
            return Ok(());
        };
        let nodes = self.sparing.nodes(disk);
        let unit = nodes.first().map_or(4096, |(_, n)| n.unit());
        let kind = JobKind::WriteBack {
            disk: disk.to_string(),
            group: rec.group.clone(),
        };
        let job = self.store_new_job(kind, self.divert_held(disk).max(1), unit, 0)?;
        if let Some(d) = rec.divert.as_mut() {
            d.write_back_job = job.id;
        }
        self.meta.write(true, |tx| tx.put_sparing(&rec))?;
        self.sparing.put_op(rec);
        let pool = self.arc()?;
        let disk = disk.to_string();
        self.jobs.start(
            job,
            Box::new(move || Ok(Box::new(WriteBackWork { pool, disk, unit }) as Box<dyn Work>)),
        );
        Ok(())
    }
}
