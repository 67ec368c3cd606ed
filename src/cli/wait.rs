//! `--wait` and `job wait`: poll a job until it finishes, with a progress
//! bar (percent, bytes/s and ETA as the daemon measures them) on a terminal.

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::commands::Ctx;
use super::size::{format_duration, format_rate, format_size};
use super::{Failure, render};
use crate::api::views::{JobInfo, JobState};

/// How often a job is asked about: first after [`FIRST_POLL`], then twice
/// as long each time, up to this.
const POLL: Duration = Duration::from_millis(500);
const FIRST_POLL: Duration = Duration::from_millis(10);

/// How long `--wait` and `job wait` follow a job that makes no progress
/// (its state and its count of work done both unchanged) before they give
/// up: a stuck or forgotten paused job is a failure, not a wait forever.
pub const STALL_DEFAULT: &str = "10m";

/// Waits for `job` to finish; fails if it failed or was cancelled, or made
/// no progress for `stall` (None: no limit).
pub fn wait(ctx: &Ctx, job: JobInfo, stall: Option<Duration>) -> Result<(), Failure> {
    let job = follow(ctx, job, stall)?;
    finish(ctx, &job)
}

/// The bound `--wait` uses: [`STALL_DEFAULT`].
pub fn default_stall() -> Option<Duration> {
    super::args::parse_timeout(STALL_DEFAULT)
        .ok()
        .and_then(|t| t.0)
}

/// Polls `job` until it finishes, with a progress bar on a terminal;
/// returns it as it ended. Prints nothing on stdout. Fails when the job
/// made no progress for `stall`.
pub fn follow(ctx: &Ctx, mut job: JobInfo, stall: Option<Duration>) -> Result<JobInfo, Failure> {
    let bar = (!ctx.json && std::io::stderr().is_terminal()).then(|| new_bar(&job));
    let mut seen = (job.state, job.done);
    let mut since = Instant::now();
    let mut pause = FIRST_POLL;
    loop {
        if let Some(bar) = &bar {
            update(bar, &job);
        }
        if job.state.is_finished() {
            break;
        }
        if (job.state, job.done) != seen {
            seen = (job.state, job.done);
            since = Instant::now();
        } else if let Some(limit) = stall.filter(|l| since.elapsed() >= *l) {
            if let Some(bar) = bar {
                bar.abandon();
            }
            return Err(stalled(&job, limit));
        }
        let left = stall.map_or(POLL, |l| l.saturating_sub(since.elapsed()));
        std::thread::sleep(pause.min(left).max(FIRST_POLL));
        // Short jobs end soon after they are asked about; long ones are
        // asked twice a second.
        pause = (pause * 2).min(POLL);
        job = ctx.get(&format!("/v1/jobs/{}", job.id))?;
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(job)
}

/// `job 7 (replace: group g0 slot 2 -> disk d4) made no progress for
/// 10m00s: paused at 40.0% (400.0 MiB of 1.0 GiB) ...`
fn stalled(job: &JobInfo, limit: Duration) -> Failure {
    let id = job.id;
    let unit = job.unit_bytes.max(1);
    let hint = match job.state {
        JobState::Paused => format!("resume it with `ferrosan job resume {id}`"),
        _ => format!("`ferrosan job show {id}` shows it"),
    };
    Failure::new(format!(
        "job {id} ({}: {}) made no progress for {}: {} at {} ({} of {}); it goes on in \
         the daemon: {hint}, or wait longer with `ferrosan job wait {id} --timeout 1h` \
         (0: no limit)",
        job.kind,
        job.target,
        format_wait(limit),
        job.state,
        render::percent(job),
        format_size(job.done.min(job.total).saturating_mul(unit)),
        format_size(job.total.saturating_mul(unit)),
    ))
}

/// `10m00s`, or `500ms` under a second.
fn format_wait(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format_duration(d.as_secs())
    }
}

fn finish(ctx: &Ctx, job: &JobInfo) -> Result<(), Failure> {
    let outcome = outcome(job);
    if ctx.json || outcome.is_ok() {
        ctx.show(job, render::job_line)?;
    }
    outcome
}

/// A finished job's result: an error unless it is done.
pub fn outcome(job: &JobInfo) -> Result<(), Failure> {
    if job.state == JobState::Done {
        return Ok(());
    }
    let why = job.message.as_deref().unwrap_or("no reason given");
    Err(Failure::new(format!(
        "job {} {} ({} {}): {why}",
        job.id, job.state, job.kind, job.target
    )))
}

fn new_bar(job: &JobInfo) -> ProgressBar {
    let bar = ProgressBar::new(job.total.saturating_mul(job.unit_bytes));
    if let Ok(style) = ProgressStyle::with_template("{prefix} [{wide_bar}] {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(format!("job {} {}", job.id, job.kind));
    bar
}

fn update(bar: &ProgressBar, job: &JobInfo) {
    bar.set_length(job.total.saturating_mul(job.unit_bytes));
    bar.set_position(job.done.min(job.total).saturating_mul(job.unit_bytes));
    bar.set_message(progress_text(job));
}

/// `42.5%  100.0 MiB/s  ETA 3m05s`, or the state when not running.
fn progress_text(job: &JobInfo) -> String {
    let pct = render::percent(job);
    match job.state {
        JobState::Running => {
            let eta = job.eta_secs.map_or_else(|| "-".to_owned(), format_duration);
            format!("{pct}  {}  ETA {eta}", format_rate(job.bytes_per_sec))
        }
        state => format!("{pct}  {state}"),
    }
}
