//! `--wait` and `job wait`: poll a job until it finishes, with a progress
//! bar (percent, bytes/s and ETA as the daemon measures them) on a terminal.

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::commands::Ctx;
use super::size::{format_duration, format_rate};
use super::{Failure, render};
use crate::api::views::{JobInfo, JobState};

const POLL: Duration = Duration::from_millis(500);

/// Waits for `job` to finish; fails if it failed or was cancelled.
pub fn wait(ctx: &Ctx, job: JobInfo) -> Result<(), Failure> {
    let job = follow(ctx, job)?;
    finish(ctx, &job)
}

/// Polls `job` until it finishes, with a progress bar on a terminal;
/// returns it as it ended. Prints nothing on stdout.
pub fn follow(ctx: &Ctx, mut job: JobInfo) -> Result<JobInfo, Failure> {
    let bar = (!ctx.json && std::io::stderr().is_terminal()).then(|| new_bar(&job));
    loop {
        if let Some(bar) = &bar {
            update(bar, &job);
        }
        if job.state.is_finished() {
            break;
        }
        std::thread::sleep(POLL);
        job = ctx.get(&format!("/v1/jobs/{}", job.id))?;
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(job)
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
