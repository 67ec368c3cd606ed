//! jobs: long operations run in the background, with progress, a rate
//! limit, pause/resume/cancel, and checkpoints that survive restarts.
//!
//! ```text
//!   Jobs::start(record, make_work) ──> runner task on a worker
//!        loop: control? (run / pause / cancel)
//!              work.step(done, n)        units [done, done+n)
//!              pace to the rate limit
//!              every second: work.checkpoint(), then record `done`
//!        end:  work.finish()  -> Done       (or abort() -> Failed/Cancelled)
//! ```
//!
//! A job's record holds its checkpoint: every unit below `done` is durable.
//! Resuming from an older checkpoint only redoes work, so checkpoints
//! commit without waiting for the disk; state changes commit durably. After
//! a restart the pool rebuilds each unfinished job's work from its record
//! and starts it again at its checkpoint (steps are idempotent).

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::api::views::{JobInfo, JobState};
use crate::blockdev::DevFuture;
use crate::error::{Error, ErrorKind, Result};
use crate::meta::Meta;
use crate::meta::model::{JobKind, JobRecord, PairStatus, now};
use crate::rt::Workers;

/// How often a running job records its checkpoint.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// Bytes of work per step.
const STEP_BYTES: u64 = 4 << 20;

/// The work of one job, in units of `unit_bytes`. Created on the worker
/// that runs it, so it need not be `Send`.
pub trait Work {
    /// Does units `from..from + n`. Must be idempotent: after a restart
    /// the units since the last checkpoint are done again.
    fn step(&mut self, from: u64, n: u64) -> DevFuture<'_, Result<()>>;
    /// Bytes of work per step (a step is what pausing, the rate limit
    /// and progress wait for): work that keeps several I/Os of a step in
    /// flight at once asks for more.
    fn step_bytes(&self) -> u64 {
        STEP_BYTES
    }
    /// Makes every unit done so far durable (before it is recorded).
    fn checkpoint(&mut self) -> DevFuture<'_, Result<()>>;
    /// Units to add when the last one is done (work found meanwhile);
    /// 0 ends the job.
    fn more(&mut self) -> u64 {
        0
    }
    /// After the last unit, before the job is recorded done.
    fn finish(&mut self) -> DevFuture<'_, Result<()>>;
    /// The job stops for good without finishing (cancelled or failed).
    fn abort(&mut self, cancelled: bool) -> DevFuture<'_, Result<()>>;
}

/// Makes a job's work, on the worker that will run it.
pub type MakeWork = Box<dyn FnOnce() -> Result<Box<dyn Work>> + Send>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Run,
    Pause,
    Cancel,
}

struct JobCtl {
    rec: Mutex<JobRecord>,
    control: watch::Sender<Control>,
    /// Measured bytes per second (smoothed).
    rate: AtomicU64,
    finished: watch::Sender<bool>,
}

impl JobCtl {
    fn rec(&self) -> JobRecord {
        self.rec.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut JobRecord)) -> JobRecord {
        let mut r = self.rec.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut r);
        r.updated = now();
        r.clone()
    }
}

/// The pool's jobs.
pub struct Jobs {
    meta: Arc<Meta>,
    workers: Arc<Workers>,
    jobs: Mutex<BTreeMap<u64, Arc<JobCtl>>>,
}

/// Describes what a job works on, for humans.
pub fn describe(kind: &JobKind) -> (String, String) {
    match kind {
        JobKind::Rebuild {
            group,
            slot,
            disk,
            stale: Some(_),
            ..
        } => (
            "reinstate".into(),
            format!("group {group} slot {slot}: resync disk {disk} where it was written while out"),
        ),
        JobKind::Rebuild {
            group,
            slot,
            disk,
            old_disk: Some(old),
            ..
        } => (
            "replace".into(),
            format!("group {group} slot {slot}: copy disk {old} to disk {disk}"),
        ),
        JobKind::Rebuild {
            group, slot, disk, ..
        } => (
            "rebuild".into(),
            format!("group {group} slot {slot}: rebuild onto disk {disk}"),
        ),
        JobKind::CopyMove {
            volume,
            from,
            split: false,
            ..
        } if volume == from => (
            "copy-fold".into(),
            format!("volume {volume}: move its new data back into its own space"),
        ),
        JobKind::CopyMove {
            volume,
            from,
            split: false,
            ..
        } => (
            "copy-restore".into(),
            format!("volume {volume}: move {from}'s image into its own space"),
        ),
        JobKind::CopyMove { volume, from, .. } => (
            "copy-split".into(),
            format!(
                "split {volume} from {from}: move {volume}'s new data into the space both share"
            ),
        ),
        JobKind::CopyCollect { volume, .. } => (
            "copy-gc".into(),
            format!(
                "copies of {volume}: merge copy points no copy reads any more, give back their space"
            ),
        ),
        JobKind::PairCopy { pvol, svol, status } => match status {
            PairStatus::Restore => (
                "pair-restore".into(),
                format!("pair {pvol} -> {svol}: copy the S-VOL's changed tracks back to the P-VOL"),
            ),
            PairStatus::Resync => (
                "pair-resync".into(),
                format!("pair {pvol} -> {svol}: copy the tracks changed since the split"),
            ),
            _ => (
                "pair-copy".into(),
                format!("pair {pvol} -> {svol}: initial copy of the written tracks"),
            ),
        },
        JobKind::SvolFill { group, lid, spare } => (
            "svol-fill".into(),
            match spare {
                Some(s) => format!(
                    "S-VOL group {group}: fill {lid}'s place onto spare {s} from an RO member"
                ),
                None => format!("S-VOL group {group}: rebuild {lid} from an RO member"),
            },
        ),
        JobKind::WriteBack { disk, group } => (
            "write-back".into(),
            format!(
                "group {group}: the writes diverted while disk {disk} was spared, written back"
            ),
        ),
        JobKind::ReshapeCopy { group } => (
            "reshape-copy".into(),
            format!("group {group}: copy it, in its current layout, onto the restripe's BCV disks"),
        ),
        JobKind::ReshapeTransfer { group } => (
            "reshape-transfer".into(),
            format!(
                "group {group}: move each track from the BCV disks to its place in the new layout"
            ),
        ),
        JobKind::SvolRollback { group, lid } => (
            "svol-rollback".into(),
            format!("S-VOL group {group}: roll {lid} back to the split image"),
        ),
        JobKind::SvolDlv { group, lid, spare } => (
            "svol-dlv".into(),
            format!(
                "S-VOL group {group}: {lid}'s increments copied onto spare {spare}, its new DLV"
            ),
        ),
        JobKind::Resync { group, ranges } => {
            let bytes: u64 = ranges.iter().map(|r| r.1).sum();
            (
                "resync".into(),
                format!(
                    "group {group}: resync {} regions ({})",
                    ranges.len(),
                    crate::units::format_size(bytes)
                ),
            )
        }
    }
}

fn info(ctl: &JobCtl) -> JobInfo {
    let r = ctl.rec();
    let (kind, target) = describe(&r.kind);
    let bps = if r.state == JobState::Running {
        ctl.rate.load(Ordering::Relaxed)
    } else {
        0
    };
    let left = r.total.saturating_sub(r.done).saturating_mul(r.unit_bytes);
    let eta = (bps > 0 && r.state == JobState::Running).then(|| left / bps);
    JobInfo {
        id: r.id,
        kind,
        target,
        state: r.state,
        done: r.done,
        total: r.total,
        unit_bytes: r.unit_bytes,
        bytes_per_sec: bps,
        eta_secs: eta,
        rate_limit: r.rate_limit,
        rate_floor: r.rate_floor,
        message: r.message,
        created: r.created,
        updated: r.updated,
    }
}

impl Jobs {
    pub fn new(meta: Arc<Meta>, workers: Arc<Workers>) -> Jobs {
        Jobs {
            meta,
            workers,
            jobs: Mutex::new(BTreeMap::new()),
        }
    }

    fn get(&self, id: u64) -> Result<Arc<JobCtl>> {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("no job {id}: see `ferrosan job list`")))
    }

    /// Registers a finished job (loaded from the database) for listing.
    pub fn add_finished(&self, rec: JobRecord) {
        let (control, _) = watch::channel(Control::Cancel);
        let (finished, _) = watch::channel(true);
        let ctl = Arc::new(JobCtl {
            rec: Mutex::new(rec.clone()),
            control,
            rate: AtomicU64::new(0),
            finished,
        });
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(rec.id, ctl);
    }

    /// Starts (or resumes, from `rec.done`) a job. `rec` must already be
    /// stored. A job recorded as paused stays paused until resumed.
    pub fn start(&self, rec: JobRecord, make: MakeWork) -> JobInfo {
        let initial = if rec.state == JobState::Paused {
            Control::Pause
        } else {
            Control::Run
        };
        let (control, _) = watch::channel(initial);
        let (finished, _) = watch::channel(false);
        let ctl = Arc::new(JobCtl {
            rec: Mutex::new(rec.clone()),
            control,
            rate: AtomicU64::new(0),
            finished,
        });
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(rec.id, Arc::clone(&ctl));
        let meta = Arc::clone(&self.meta);
        let out = info(&ctl);
        self.workers.spawn(move || async move {
            run(ctl, meta, make).await;
        });
        out
    }

    pub fn list(&self) -> Vec<JobInfo> {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.values().map(|c| info(c)).collect()
    }

    pub fn info(&self, id: u64) -> Result<JobInfo> {
        let c = self.get(id)?;
        Ok(info(&c))
    }

    /// The record of job `id` as it stands.
    pub fn record(&self, id: u64) -> Option<JobRecord> {
        self.get(id).ok().map(|c| c.rec())
    }

    /// Kinds of the jobs not finished, by id.
    pub fn active(&self) -> Vec<(u64, JobKind)> {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.values()
            .map(|c| c.rec())
            .filter(|r| !r.state.is_finished())
            .map(|r| (r.id, r.kind))
            .collect()
    }

    /// Job `id` if it has not finished; else a conflict saying `refused`
    /// ("it cannot be paused": `job 3 is done; it cannot be paused`).
    fn unfinished(&self, id: u64, refused: &str) -> Result<Arc<JobCtl>> {
        let ctl = self.get(id)?;
        let state = ctl.rec().state;
        if state.is_finished() {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("job {id} is {state}; {refused}"),
            ));
        }
        Ok(ctl)
    }

    fn set_control(&self, id: u64, c: Control, refused: &str) -> Result<JobInfo> {
        let ctl = self.unfinished(id, refused)?;
        ctl.control.send_replace(c);
        Ok(info(&ctl))
    }

    pub fn pause(&self, id: u64) -> Result<JobInfo> {
        self.set_control(id, Control::Pause, "it cannot be paused")
    }

    pub fn resume(&self, id: u64) -> Result<JobInfo> {
        self.set_control(id, Control::Run, "it cannot be resumed")
    }

    pub fn cancel(&self, id: u64) -> Result<JobInfo> {
        self.set_control(id, Control::Cancel, "it cannot be cancelled")
    }

    /// Sets a running or paused job's rate limit (0: none), and its floor
    /// if given (0: none).
    pub fn set_rate(&self, id: u64, bytes_per_sec: u64, floor: Option<u64>) -> Result<JobInfo> {
        let ctl = self.unfinished(id, "its rate limit cannot change")?;
        let rec = ctl.update(|r| {
            r.rate_limit = bytes_per_sec;
            if let Some(f) = floor {
                r.rate_floor = f;
            }
        });
        self.meta.write(true, |tx| tx.put_job(&rec))?;
        // Wake a runner sleeping on the old limit.
        ctl.control.send_modify(|_| {});
        Ok(info(&ctl))
    }

    /// Resolves when job `id` has finished (for tests and shutdown).
    pub async fn wait(&self, id: u64) -> Result<JobInfo> {
        let ctl = self.get(id)?;
        let mut rx = ctl.finished.subscribe();
        let _ = rx.wait_for(|f| *f).await;
        Ok(info(&ctl))
    }
}

async fn persist(meta: &Arc<Meta>, rec: JobRecord, durable: bool) {
    let meta = Arc::clone(meta);
    let r = tokio::task::spawn_blocking(move || meta.write(durable, |tx| tx.put_job(&rec))).await;
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!("recording a job failed: {}", e.chain()),
        Err(e) => tracing::error!("recording a job failed: {e}"),
    }
}

async fn run(ctl: Arc<JobCtl>, meta: Arc<Meta>, make: MakeWork) {
    {
        let r = ctl.rec.lock().unwrap_or_else(|p| p.into_inner());
        tracing::info!("job {} runs from {} of {} units", r.id, r.done, r.total);
    }
    let mut work = match make() {
        Ok(w) => w,
        Err(e) => {
            let rec = ctl.update(|r| {
                r.state = JobState::Failed;
                r.message = Some(e.chain());
            });
            persist(&meta, rec, true).await;
            ctl.finished.send_replace(true);
            return;
        }
    };
    let outcome = drive(&ctl, &meta, work.as_mut()).await;
    let rec = match outcome {
        Ok(()) => match work.finish().await {
            Ok(()) => ctl.update(|r| {
                r.state = JobState::Done;
                r.done = r.total;
                r.message = None;
            }),
            Err(e) => {
                let _ = work.abort(false).await;
                ctl.update(|r| {
                    r.state = JobState::Failed;
                    r.message = Some(e.chain());
                })
            }
        },
        Err(Stop::Cancelled) => {
            let msg = work.abort(true).await.err().map(|e| e.chain());
            ctl.update(|r| {
                r.state = JobState::Cancelled;
                r.message = msg;
            })
        }
        Err(Stop::Failed(e)) => {
            let _ = work.abort(false).await;
            ctl.update(|r| {
                r.state = JobState::Failed;
                r.message = Some(e.chain());
            })
        }
    };
    tracing::info!("job {} {}", rec.id, rec.state);
    persist(&meta, rec, true).await;
    ctl.finished.send_replace(true);
}

enum Stop {
    Cancelled,
    Failed(Error),
}

async fn drive(ctl: &Arc<JobCtl>, meta: &Arc<Meta>, work: &mut dyn Work) -> Result<(), Stop> {
    let mut rx = ctl.control.subscribe();
    let mut last_ckpt = Instant::now();
    let mut recorded = ctl.rec().done;
    let mut host_io = crate::rt::host_io_seen();
    loop {
        let c = *rx.borrow_and_update();
        match c {
            Control::Cancel => return Err(Stop::Cancelled),
            Control::Pause => {
                if ctl.rec().state != JobState::Paused {
                    work.checkpoint().await.map_err(Stop::Failed)?;
                    let rec = ctl.update(|r| r.state = JobState::Paused);
                    recorded = rec.done;
                    persist(meta, rec, true).await;
                }
                if rx.changed().await.is_err() {
                    return Err(Stop::Cancelled);
                }
                continue;
            }
            Control::Run => {
                if ctl.rec().state == JobState::Paused {
                    let rec = ctl.update(|r| r.state = JobState::Running);
                    persist(meta, rec, true).await;
                }
            }
        }
        let mut r = ctl.rec();
        if r.done >= r.total {
            let more = work.more();
            if more == 0 {
                break;
            }
            r = ctl.update(|rr| rr.total = rr.total.saturating_add(more));
        }
        let unit = r.unit_bytes.max(1);
        let n = (work.step_bytes() / unit).max(1).min(r.total - r.done);
        let t0 = Instant::now();
        work.step(r.done, n).await.map_err(Stop::Failed)?;
        let rec = ctl.update(|rr| rr.done = r.done + n);
        let bytes = n.saturating_mul(unit);
        let spent = t0.elapsed();
        let seen = crate::rt::host_io_seen();
        let busy = seen != host_io;
        host_io = seen;
        let limit = rate_now(rec.rate_limit, rec.rate_floor, busy);
        pace(ctl, &mut rx, limit, bytes, spent).await;
        let elapsed = t0.elapsed().as_secs_f64().max(1e-6);
        let inst = (bytes as f64 / elapsed) as u64;
        let old = ctl.rate.load(Ordering::Relaxed);
        let smoothed = if old == 0 { inst } else { (old * 3 + inst) / 4 };
        ctl.rate.store(smoothed, Ordering::Relaxed);
        if last_ckpt.elapsed() >= CHECKPOINT_EVERY && rec.done > recorded {
            work.checkpoint().await.map_err(Stop::Failed)?;
            recorded = rec.done;
            persist(meta, rec, false).await;
            last_ckpt = Instant::now();
        }
    }
    work.checkpoint().await.map_err(Stop::Failed)?;
    Ok(())
}

/// The rate a job runs at now: its floor while hosts do I/O (`busy`: host
/// requests were counted since its last step), else its limit (0: none).
fn rate_now(limit: u64, floor: u64, busy: bool) -> u64 {
    match (busy, floor, limit) {
        (false, _, _) | (true, 0, _) => limit,
        (true, f, 0) => f,
        (true, f, l) => f.min(l),
    }
}

/// Sleeps long enough that `bytes` took at least `bytes / limit` seconds;
/// wakes early on a control change.
async fn pace(
    _ctl: &Arc<JobCtl>,
    rx: &mut watch::Receiver<Control>,
    limit: u64,
    bytes: u64,
    spent: Duration,
) {
    if limit == 0 {
        return;
    }
    let want = Duration::from_secs_f64(bytes as f64 / limit as f64);
    if want > spent {
        tokio::select! {
            _ = tokio::time::sleep(want - spent) => {}
            _ = rx.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests;
