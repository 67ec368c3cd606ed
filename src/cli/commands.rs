//! Each command: one API call, then a table, a line, or the JSON.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use hyper::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::args::*;
use super::client::{Client, segment};
use super::size::format_size;
use super::{Failure, out, render, wait};
use crate::api::views::reshape::{ReshapeInfo, ReshapeRequest};
use crate::api::views::*;
use crate::daemon::{self, ServeOptions};

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<(), Failure> {
    let Cli {
        pool,
        json,
        command,
    } = cli;
    let ctx = || Ctx::new(&pool, json);
    match command {
        Command::Serve(args) => serve(pool.clone(), json, args),
        Command::Openapi => out(&crate::api::openapi_json()),
        Command::Pool(PoolCmd::Show) => {
            let ctx = ctx()?;
            ctx.show(&ctx.get::<PoolInfo>("/v1/pool")?, render::pool)
        }
        Command::Pool(PoolCmd::Check) => {
            let ctx = ctx()?;
            let found: PoolCheck = ctx.act("/v1/pool/check")?;
            ctx.show(&found, render::pool_check)?;
            match found.differences {
                0 => Ok(()),
                n => Err(Failure::new(format!(
                    "pool check found {n} difference(s) between the copy maps and the disks"
                ))),
            }
        }
        Command::Pool(PoolCmd::Recover) => {
            let lines =
                daemon::recover(&pool).map_err(|e| Failure::new(format!("pool recover: {e:#}")))?;
            out(&lines.join("\n"))
        }
        Command::Disk(cmd) => disk(&ctx()?, cmd),
        Command::Group(cmd) => group(&ctx()?, cmd),
        Command::Volume(cmd) => volume(&ctx()?, cmd),
        Command::Job(cmd) => job(&ctx()?, cmd),
        Command::Copy(cmd) => copy(&ctx()?, cmd),
        Command::Pair(cmd) => super::pair::run(&ctx()?, cmd),
        Command::SvolGroup(cmd) => super::svol::run(&ctx()?, cmd),
        Command::Sparing(cmd) => super::sparing::run(&ctx()?, cmd),
    }
}

/// `serve --json`: the daemon's banner is text, and a daemon's state as
/// JSON is what the other commands give once it runs.
fn serve_json_refused() -> Failure {
    Failure {
        message: "serve has no --json output: start it without --json, then \
                  `ferrosan --json pool show` gives its addresses as JSON"
            .to_owned(),
        code: 2,
    }
}

fn serve(pool: PathBuf, json: bool, args: ServeArgs) -> Result<(), Failure> {
    if json || args.json {
        return Err(serve_json_refused());
    }
    // The daemon's log on stderr: warnings and up by default, more with
    // RUST_LOG (e.g. RUST_LOG=ferrosan=info shows copy points and jobs).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let workers = match args.workers {
        Some(n) => Some(usize::try_from(n).map_err(|_| Failure::new("too many workers"))?),
        None => None,
    };
    let opts = ServeOptions {
        pool,
        listen: args.listen,
        fault_injection: args.fault_injection,
        workers,
        intent_clear_interval: std::time::Duration::from_secs(args.intent_clear_interval),
        gc_rate: args.gc_rate,
        poll: std::time::Duration::from_micros(args.poll_us),
    };
    daemon::run(opts).map_err(|e| Failure::new(format!("{e:#}")))
}

/// A connection to the daemon and how to print.
pub struct Ctx {
    client: Client,
    pub json: bool,
}

impl Ctx {
    fn new(pool: &std::path::Path, json: bool) -> Result<Ctx, Failure> {
        Ok(Ctx {
            client: Client::new(pool)?,
            json,
        })
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Failure> {
        decode(path, &self.client.call(Method::GET, path, None)?)
    }

    pub(super) fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, Failure> {
        self.send(Method::POST, path, body)
    }

    pub(super) fn put<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, Failure> {
        self.send(Method::PUT, path, body)
    }

    fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, Failure> {
        let body = serde_json::to_vec(body)
            .map_err(|e| Failure::new(format!("cannot encode the request: {e}")))?;
        decode(path, &self.client.call(method, path, Some(body))?)
    }

    /// A POST without a body.
    pub(super) fn act<T: DeserializeOwned>(&self, path: &str) -> Result<T, Failure> {
        decode(path, &self.client.call(Method::POST, path, None)?)
    }

    /// A DELETE whose answer has a body.
    pub(super) fn remove<T: DeserializeOwned>(&self, path: &str) -> Result<T, Failure> {
        decode(path, &self.client.call(Method::DELETE, path, None)?)
    }

    pub(super) fn delete(&self, path: &str) -> Result<(), Failure> {
        self.client.call(Method::DELETE, path, None).map(drop)
    }

    /// Prints `value` as pretty JSON with `--json`, else as `human` has it.
    pub fn show<T: Serialize>(
        &self,
        value: &T,
        human: impl FnOnce(&T) -> String,
    ) -> Result<(), Failure> {
        if self.json {
            let text = serde_json::to_string_pretty(value)
                .map_err(|e| Failure::new(format!("cannot encode the answer: {e}")))?;
            out(&text)
        } else {
            out(&human(value))
        }
    }

    /// A line for humans; nothing with `--json` (the API answered 204).
    pub(super) fn note(&self, line: String) -> Result<(), Failure> {
        if self.json { Ok(()) } else { out(&line) }
    }
}

fn decode<T: DeserializeOwned>(path: &str, body: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|e| {
        Failure::new(format!(
            "the daemon's answer to {path} is not what this ferrosan expects ({e}): \
             are the daemon and the CLI the same version?"
        ))
    })
}

fn disk(ctx: &Ctx, cmd: DiskCmd) -> Result<(), Failure> {
    let one = |name: &str, verb: &str| format!("/v1/disks/{}{verb}", segment(name));
    match cmd {
        DiskCmd::Add(args) => {
            let d: DiskInfo = ctx.post("/v1/disks", &args.request())?;
            ctx.show(&d, render::disk_added)
        }
        DiskCmd::List => ctx.show(&ctx.get::<Vec<DiskInfo>>("/v1/disks")?, |d| {
            render::disk_list(d)
        }),
        DiskCmd::Show { name } => ctx.show(&ctx.get::<DiskInfo>(&one(&name, ""))?, render::disk),
        DiskCmd::Remove { name } => {
            ctx.delete(&one(&name, ""))?;
            ctx.note(format!("removed disk {name}"))
        }
        DiskCmd::Fail { name, force } => {
            let d: DiskInfo = ctx.post(&one(&name, "/fail"), &DiskFailRequest { force })?;
            let group = match &d.group {
                Some(g) if !ctx.json => {
                    Some(ctx.get::<GroupInfo>(&format!("/v1/groups/{}", segment(g)))?)
                }
                _ => None,
            };
            ctx.show(&d, |d| render::disk_failed(d, group.as_ref()))
        }
        DiskCmd::Reinstate { name, wait } => {
            let r: DiskReinstateInfo = ctx.act(&one(&name, "/reinstate"))?;
            with_job(ctx, r, |r| &mut r.job, wait, render::disk_reinstated)
        }
        DiskCmd::Replace { old, new, wait } => {
            let j: JobInfo = ctx.post(&one(&old, "/replace"), &DiskReplaceRequest { new })?;
            started(ctx, j, wait)
        }
        DiskCmd::Inject(args) => {
            let d: DiskInfo = ctx.post(&one(&args.name, "/inject"), &args.request())?;
            ctx.show(&d, render::disk_faults)
        }
    }
}

fn group(ctx: &Ctx, cmd: GroupCmd) -> Result<(), Failure> {
    let one = |name: &str, verb: &str| format!("/v1/groups/{}{verb}", segment(name));
    match cmd {
        GroupCmd::Create(args) => {
            let g: GroupInfo = ctx.post("/v1/groups", &args.request())?;
            ctx.show(&g, render::group_created)
        }
        GroupCmd::List => ctx.show(&ctx.get::<Vec<GroupInfo>>("/v1/groups")?, |g| {
            render::group_list(g)
        }),
        GroupCmd::Show { name } => ctx.show(&ctx.get::<GroupInfo>(&one(&name, ""))?, render::group),
        GroupCmd::Delete { name } => {
            ctx.delete(&one(&name, ""))?;
            ctx.note(format!("deleted group {name}"))
        }
        GroupCmd::Extend { name, disks } => {
            let g: GroupInfo = ctx.post(&one(&name, "/extend"), &GroupExtendRequest { disks })?;
            ctx.show(&g, |g| {
                let capacity = format_size(g.capacity);
                format!(
                    "group {} now has {} disks, {capacity}",
                    g.name,
                    g.disks.len()
                )
            })
        }
        GroupCmd::Reshape {
            name,
            add_disks,
            stripe_size,
            copy_disks,
            wait,
        } => {
            let req = ReshapeRequest {
                add_disks,
                stripe_size,
                bcv_disks: copy_disks,
            };
            let job: JobInfo = ctx.post(&one(&name, "/reshape"), &req)?;
            if !wait {
                return started(ctx, job, false);
            }
            reshape_wait(ctx, &name, job)
        }
        GroupCmd::ReshapeStatus { name } => ctx.show(
            &ctx.get::<ReshapeInfo>(&one(&name, "/reshape"))?,
            render::reshape,
        ),
    }
}

/// `group reshape --wait`: follows the copy's job, then the transfer's,
/// then shows the group in its new layout.
fn reshape_wait(ctx: &Ctx, name: &str, copy: JobInfo) -> Result<(), Failure> {
    let path = format!("/v1/groups/{}/reshape", segment(name));
    let ended = wait::follow(ctx, copy, wait::default_stall())?;
    wait::outcome(&ended)?;
    let status: Result<ReshapeInfo, _> = ctx.get(&path);
    if let Ok(s) = status {
        let transfer: JobInfo = ctx.get(&format!("/v1/jobs/{}", s.job))?;
        let ended = wait::follow(ctx, transfer, wait::default_stall())?;
        wait::outcome(&ended)?;
    }
    let g: GroupInfo = ctx.get(&format!("/v1/groups/{}", segment(name)))?;
    ctx.show(&g, render::group)
}

fn volume(ctx: &Ctx, cmd: VolumeCmd) -> Result<(), Failure> {
    let one = |name: &str, verb: &str| format!("/v1/volumes/{}{verb}", segment(name));
    match cmd {
        VolumeCmd::Create(args) => {
            let v: VolumeInfo = ctx.post("/v1/volumes", &args.request())?;
            ctx.show(&v, render::volume_created)
        }
        VolumeCmd::List => ctx.show(&ctx.get::<Vec<VolumeInfo>>("/v1/volumes")?, |v| {
            render::volume_list(v)
        }),
        VolumeCmd::Show { name } => {
            ctx.show(&ctx.get::<VolumeInfo>(&one(&name, ""))?, render::volume)
        }
        VolumeCmd::Delete { name, force } => {
            let query = if force { "?force=true" } else { "" };
            ctx.delete(&one(&name, query))?;
            ctx.note(format!("deleted volume {name}"))
        }
        VolumeCmd::Grow { name, size } => {
            let v: VolumeInfo = ctx.post(&one(&name, "/grow"), &VolumeGrowRequest { size })?;
            ctx.show(&v, |v| {
                format!("volume {} is now {}", v.name, format_size(v.size))
            })
        }
    }
}

fn job(ctx: &Ctx, cmd: JobCmd) -> Result<(), Failure> {
    let one = |id: u64, verb: &str| format!("/v1/jobs/{id}{verb}");
    let line = |j: &JobInfo| render::job_line(j);
    match cmd {
        JobCmd::List => ctx.show(&ctx.get::<Vec<JobInfo>>("/v1/jobs")?, |j| {
            render::job_list(j)
        }),
        JobCmd::Show { id } => ctx.show(&ctx.get::<JobInfo>(&one(id, ""))?, render::job),
        JobCmd::Pause { id } => ctx.show(&ctx.act::<JobInfo>(&one(id, "/pause"))?, line),
        JobCmd::Resume { id } => ctx.show(&ctx.act::<JobInfo>(&one(id, "/resume"))?, line),
        JobCmd::Cancel { id } => ctx.show(&ctx.act::<JobInfo>(&one(id, "/cancel"))?, line),
        JobCmd::Rate {
            id,
            bytes_per_sec,
            floor,
        } => {
            let req = JobRateRequest {
                bytes_per_sec,
                floor,
            };
            let j: JobInfo = ctx.post(&one(id, "/rate"), &req)?;
            ctx.show(&j, |j| {
                let rate = super::size::format_rate;
                let limit = match j.rate_limit {
                    0 => format!("job {} runs without a rate limit", j.id),
                    n => format!("job {} is limited to {}", j.id, rate(n)),
                };
                match j.rate_floor {
                    0 => limit,
                    f => format!("{limit}; it slows down to {} while hosts do I/O", rate(f)),
                }
            })
        }
        JobCmd::Wait { id, timeout } => wait::wait(ctx, ctx.get(&one(id, ""))?, timeout.0),
    }
}

fn copy(ctx: &Ctx, cmd: CopyCmd) -> Result<(), Failure> {
    let one = |name: &str, verb: &str| format!("/v1/copies/{}{verb}", segment(name));
    match cmd {
        CopyCmd::Create(args) => {
            let c: CopyInfo = ctx.post("/v1/copies", &args.request())?;
            ctx.show(&c, render::copy_created)
        }
        CopyCmd::List => ctx.show(&ctx.get::<Vec<CopyInfo>>("/v1/copies")?, |c| {
            render::copy_list(c)
        }),
        CopyCmd::Show { name } => ctx.show(&ctx.get::<CopyInfo>(&one(&name, ""))?, render::copy),
        CopyCmd::Delete { name, wait } => {
            let r: CopyDeleteInfo = ctx.remove(&one(&name, ""))?;
            with_job(ctx, r, |r| &mut r.job, wait, render::copy_deleted)
        }
        CopyCmd::Restore { name, wait, force } => {
            let req = CopyRestoreRequest { force };
            let r: CopyRestoreInfo = ctx.post(&one(&name, "/restore"), &req)?;
            with_job(ctx, r, |r| &mut r.job, wait, render::copy_restored)
        }
        CopyCmd::Gc { wait } => copy_gc(ctx, wait),
        CopyCmd::Split { name, policy, wait } => {
            let req = CopySplitRequest { policy };
            let info: CopySplitInfo = ctx.post(&one(&name, "/split"), &req)?;
            with_job(
                ctx,
                info,
                |i| &mut i.job,
                wait,
                |i| render::copy_split(&name, i),
            )
        }
    }
}

/// `copy gc`: starts collection; with `--wait`, follows the jobs and asks
/// again until nothing is left to collect (a deletion while a job ran can
/// leave another copy point).
fn copy_gc(ctx: &Ctx, wait: bool) -> Result<(), Failure> {
    let mut all: Vec<JobInfo> = Vec::new();
    for _ in 0..64 {
        let jobs: Vec<JobInfo> = ctx.post("/v1/pool/gc", &serde_json::json!({}))?;
        if jobs.is_empty() || !wait {
            all.extend(jobs);
            break;
        }
        for j in jobs {
            let ended = wait::follow(ctx, j, wait::default_stall())?;
            wait::outcome(&ended)?;
            all.push(ended);
        }
    }
    ctx.show(&all, |jobs| render::copy_gc(jobs, wait))
}

/// Prints an answer that may carry a job. With `--wait` the job is followed
/// first (its progress bar on stderr) and the answer shows it as it ended;
/// a job that failed is an error, after the JSON with `--json`.
fn with_job<T: Serialize>(
    ctx: &Ctx,
    mut answer: T,
    job: fn(&mut T) -> &mut Option<JobInfo>,
    wait: bool,
    human: impl FnOnce(&T) -> String,
) -> Result<(), Failure> {
    let mut outcome = Ok(());
    if let Some(started) = job(&mut answer).take_if(|_| wait) {
        let ended = wait::follow(ctx, started, wait::default_stall())?;
        outcome = wait::outcome(&ended);
        *job(&mut answer) = Some(ended);
    }
    if ctx.json || outcome.is_ok() {
        ctx.show(&answer, human)?;
    }
    outcome
}

/// A job was started: wait for it, or say how to follow it.
fn started(ctx: &Ctx, job: JobInfo, wait: bool) -> Result<(), Failure> {
    if wait {
        return wait::wait(ctx, job, wait::default_stall());
    }
    ctx.show(&job, |j| {
        let id = j.id;
        format!(
            "{}\nfollow it with `ferrosan job wait {id}`",
            render::job_line(j)
        )
    })
}
