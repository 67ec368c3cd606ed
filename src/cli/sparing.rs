//! `ferrosan sparing ...`: failure-anticipating sparing (seed 002).
//! `status` prints table T1 (RAID groups), the disks' errors against the
//! policy, and every sparing under way.

#![forbid(unsafe_code)]

use clap::Subcommand;

use super::Failure;
use super::commands::Ctx;
use super::render::{fields, table};
use crate::api::views::*;
use crate::units::format_size;

#[derive(Debug, Subcommand)]
pub enum SparingCmd {
    /// The RAID groups (volumes, disks, level), every disk's errors
    /// within the window, the sparings under way, and alarms.
    Status,
    /// Show or set when a member disk counts as failing: THRESHOLD errors
    /// (reads that redundancy answered, and writes) within WINDOW.
    /// Defaults: 10 errors in 10 minutes.
    Policy {
        /// Errors within the window that start a sparing copy.
        #[arg(long, value_name = "N")]
        threshold: Option<u64>,
        /// The window, e.g. 600, 10m, 1h or 2d.
        #[arg(long, value_name = "TIME", value_parser = parse_secs)]
        window: Option<u64>,
    },
    /// Copy a member disk to a spare now, as if it were failing (a drill,
    /// or a disk you distrust). It serves until the spare takes its slot,
    /// then it is marked failed.
    Start {
        /// The member disk.
        disk: String,
        /// The spare to copy it to (default: the smallest that fits).
        #[arg(long, value_name = "DISK")]
        spare: Option<String>,
        /// Where the group's host writes go while the copy runs:
        /// secondary (new volumes in a RAID group that holds none),
        /// work-volume (one set aside with `sparing work-volume add`),
        /// work-disk (one set aside with `sparing work-disk add`: the
        /// group's disk writes, parity included, go there) or none.
        /// Default: a free work volume, else a work disk, else secondary
        /// volumes, else none; `sparing status` says which.
        #[arg(long, value_name = "KIND")]
        backup_storage: Option<BackupStorage>,
        /// Wait for the copy, with a progress bar.
        #[arg(long)]
        wait: bool,
    },
    /// Work volumes: where a spared group's host writes go while its copy
    /// runs, written back when it is done.
    #[command(name = "work-volume", subcommand)]
    WorkVolume(WorkVolumeCmd),
    /// Work disks: where a spared group's disk writes (data and parity)
    /// go while its copy runs, written back when it is done. They work
    /// for any volume, also those in pairs, copies or S-VOL groups.
    #[command(name = "work-disk", subcommand)]
    WorkDisk(WorkDiskCmd),
}

#[derive(Debug, Subcommand)]
pub enum WorkDiskCmd {
    /// Set a free disk aside as a work disk (`ferrosan disk add NAME
    /// --size S` first). Groups being spared append their writes to it.
    Add {
        /// The disk (in no group, not a spare).
        disk: String,
    },
    /// Give a work disk back (not while it holds writes).
    Remove {
        /// The work disk.
        disk: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum WorkVolumeCmd {
    /// Set a volume aside as a work volume. It stops being an export; a
    /// group on other disks that is spared writes there meanwhile.
    Add {
        /// The volume (make it with `ferrosan volume create`; a tenth of
        /// the group's written data is plenty for most copies).
        volume: String,
    },
    /// Give a work volume back to hosts (not while it holds writes).
    Remove {
        /// The work volume.
        volume: String,
    },
}

/// Seconds from `600`, `90s`, `10m`, `1h` or `2d`.
fn parse_secs(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: a time is a whole number with s, m, h or d, e.g. 10m"))?;
    let mul = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        other => return Err(format!("{other:?}: a time's unit is s, m, h or d")),
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("{s:?} is too long a time"))
}

pub fn run(ctx: &Ctx, cmd: SparingCmd) -> Result<(), Failure> {
    match cmd {
        SparingCmd::Status => ctx.show(&ctx.get::<SparingStatus>("/v1/sparing")?, status),
        SparingCmd::Policy { threshold, window } => {
            let s: SparingStatus = if threshold.is_none() && window.is_none() {
                ctx.get("/v1/sparing")?
            } else {
                let req = SparingPolicyRequest {
                    threshold,
                    window_secs: window,
                };
                ctx.put("/v1/sparing/policy", &req)?
            };
            ctx.show(&s.policy, policy)
        }
        SparingCmd::WorkVolume(WorkVolumeCmd::Add { volume }) => {
            let req = WorkVolumeRequest { volume };
            let rows: Vec<WorkVolumeRow> = ctx.post("/v1/sparing/work-volumes", &req)?;
            ctx.show(&rows, |r| t4(r))
        }
        SparingCmd::WorkVolume(WorkVolumeCmd::Remove { volume }) => {
            ctx.delete(&format!("/v1/sparing/work-volumes/{volume}"))?;
            let s: SparingStatus = ctx.get("/v1/sparing")?;
            ctx.show(&s.work_volumes, |r| t4(r))
        }
        SparingCmd::WorkDisk(WorkDiskCmd::Add { disk }) => {
            let req = WorkDiskRequest { disk };
            let rows: Vec<WorkDiskRow> = ctx.post("/v1/sparing/work-disks", &req)?;
            ctx.show(&rows, |r| t6(r))
        }
        SparingCmd::WorkDisk(WorkDiskCmd::Remove { disk }) => {
            ctx.delete(&format!("/v1/sparing/work-disks/{disk}"))?;
            let s: SparingStatus = ctx.get("/v1/sparing")?;
            ctx.show(&s.work_disks, |r| t6(r))
        }
        SparingCmd::Start {
            disk,
            spare,
            backup_storage,
            wait,
        } => {
            let req = SparingStartRequest {
                disk,
                spare,
                backup_storage,
            };
            let s: SparingInfo = ctx.post("/v1/sparing/start", &req)?;
            if wait && let Some(id) = s.job {
                let job: JobInfo = ctx.get(&format!("/v1/jobs/{id}"))?;
                let ended = super::wait::follow(ctx, job, super::wait::default_stall())?;
                super::wait::outcome(&ended)?;
                return ctx.show(&ctx.get::<SparingStatus>("/v1/sparing")?, status);
            }
            ctx.show(&s, started)
        }
    }
}

pub fn policy(p: &SparingPolicyInfo) -> String {
    fields(vec![
        ("threshold", format!("{} errors", p.threshold)),
        ("window", format!("{} s", p.window_secs)),
    ])
}

fn started(s: &SparingInfo) -> String {
    let job = s.job.map_or("-".to_string(), |j| j.to_string());
    format!(
        "sparing disk {} (group {} slot {}) to spare {}: job {job}; `ferrosan sparing status` shows it\n",
        s.disk, s.group, s.slot, s.spare
    )
}

/// Table T1, the disks, the sparings under way, the alarms.
pub fn status(s: &SparingStatus) -> String {
    let mut t1 = table(&["GROUP#", "VOLUME#S", "DISK#S", "RAID LEVEL"]);
    for g in &s.groups {
        let vols = if g.volumes.is_empty() {
            "NULL".to_string()
        } else {
            g.volumes.join(", ")
        };
        t1.add_row(vec![
            g.group.clone(),
            vols,
            g.disks.join(", "),
            g.raid_level.to_string().to_uppercase(),
        ]);
    }
    let mut disks = table(&[
        "DISK#",
        "CAPACITY",
        "GROUP",
        "STATUS",
        "ERRORS",
        "IN WINDOW",
        "SPARING",
        "T5 STATUS",
    ]);
    for d in &s.disks {
        disks.add_row(vec![
            d.disk.clone(),
            format_size(d.capacity),
            d.group.clone().unwrap_or_else(|| "-".into()),
            d.status.to_string(),
            d.errors.to_string(),
            d.recent_errors.to_string(),
            d.sparing.clone().unwrap_or_else(|| "-".into()),
            d.backup.clone().unwrap_or_else(|| "NULL".into()),
        ]);
    }
    let mut out = format!(
        "Policy: a member is failing at {} errors within {} s\n\nT1  RAID groups\n{t1}\n\nDisks\n{disks}\n",
        s.policy.threshold, s.policy.window_secs
    );
    if s.sparings.is_empty() {
        out.push_str("\nNo sparing under way.\n");
    } else {
        let mut t = table(&[
            "DISK",
            "GROUP",
            "SLOT",
            "SPARE",
            "JOB",
            "COPIED",
            "WRITES TO",
            "DIVERTED",
            "WHY",
        ]);
        for r in &s.sparings {
            let pct = if r.total == 0 {
                "-".to_string()
            } else {
                format!("{:.1}%", 100.0 * r.done as f64 / r.total as f64)
            };
            t.add_row(vec![
                r.disk.clone(),
                r.group.clone(),
                r.slot.to_string(),
                r.spare.clone(),
                r.job.map_or("-".into(), |j| j.to_string()),
                pct,
                r.diversion.clone().unwrap_or_else(|| "the group".into()),
                diverted(r),
                r.reason.clone(),
            ]);
        }
        out.push_str(&format!("\nSparings under way\n{t}\n"));
    }
    if !s.t2.is_empty() {
        let mut t = table(&["P-VOL#", "S-VOL#", "STATUS", "TRACKS HELD", "BITMAP"]);
        for r in &s.t2 {
            t.add_row(vec![
                r.pvol.clone(),
                r.svol.clone(),
                r.status.clone(),
                format!("{} of {}", r.tracks_set, r.tracks),
                r.bitmap.clone(),
            ]);
        }
        out.push_str(&format!("\nT2  secondary volumes\n{t}\n"));
    }
    if !s.work_volumes.is_empty() {
        out.push_str(&format!("\nT4  work volumes\n{}", t4(&s.work_volumes)));
    }
    if !s.work_disks.is_empty() {
        out.push_str(&format!("\nT6  work disks\n{}", t6(&s.work_disks)));
    }
    if s.t7_rows > 0 {
        out.push_str(&format!("\nT7  work disk mapping\n{}", t7(s)));
    }
    for a in &s.alarms {
        out.push_str(&format!("ALARM: {a}\n"));
    }
    out
}

/// Units diverted, overflowed to the group and written back.
fn diverted(r: &SparingInfo) -> String {
    if r.diversion.is_none() {
        return "-".into();
    }
    let mut s = format!("{} units, {} written back", r.diverted, r.written_back);
    if r.overflowed > 0 {
        s.push_str(&format!(", {} to the group (full)", r.overflowed));
    }
    s
}

/// Table T4 as FIG. 11A/11B draws it.
fn t4(rows: &[WorkVolumeRow]) -> String {
    let mut t = table(&[
        "WORK VOL#",
        "CAPACITY",
        "PRIMARY VOL#",
        "TERMINAL ADDRESS",
        "BITMAP",
    ]);
    for r in rows {
        let prim = if r.primaries.is_empty() {
            "NULL".to_string()
        } else {
            r.primaries.join(", ")
        };
        t.add_row(vec![
            r.volume.clone(),
            format_size(r.capacity),
            prim,
            r.terminal.map_or("NULL".into(), |t| t.to_string()),
            format!("{}...", r.bitmap),
        ]);
    }
    format!("{t}\n")
}

/// Table T6 as FIG. 15B/15C draws it.
fn t6(rows: &[WorkDiskRow]) -> String {
    let mut t = table(&[
        "DISK#",
        "CAPACITY",
        "STATUS",
        "MAIN DISK#",
        "TERMINAL ADDRESS",
        "UNITS HELD",
    ]);
    for r in rows {
        let mains = if r.main_disks.is_empty() {
            "NULL".to_string()
        } else {
            r.main_disks.join(", ")
        };
        t.add_row(vec![
            r.disk.clone(),
            format_size(r.capacity),
            r.status.clone(),
            mains,
            r.terminal.map_or("NULL".into(), |t| t.to_string()),
            format!(
                "{} of {} ({} each)",
                r.units_used,
                r.units,
                format_size(r.unit)
            ),
        ]);
    }
    format!("{t}\n")
}

/// Table T7 as FIG. 16 draws it; the terminal address is the last row's.
fn t7(s: &SparingStatus) -> String {
    let mut t = table(&[
        "MAIN DISK#",
        "MAIN DISK ADDRESS",
        "WORK DISK#",
        "WORK DISK ADDRESS",
    ]);
    for r in &s.t7 {
        t.add_row(vec![
            r.main_disk.clone(),
            r.main_address.to_string(),
            r.work_disk.clone(),
            r.work_address.to_string(),
        ]);
    }
    let more = s.t7_rows.saturating_sub(s.t7.len() as u64);
    if more > 0 {
        format!("{t}\n... and {more} more rows\n")
    } else {
        format!("{t}\n")
    }
}
