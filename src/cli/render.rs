//! Human output: comfy-table tables with human sizes.

#![forbid(unsafe_code)]

use comfy_table::{ContentArrangement, Table, presets};

use super::size::{format_duration, format_rate, format_size};
use crate::api::views::*;

/// A table with the house style and a header row.
pub(super) fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.to_vec());
    if cfg!(test) {
        // Tests read whole rows: no wrapping to the terminal's width.
        t.force_no_tty();
    }
    t
}

/// A two-column table of field names and values, for `show`.
pub(super) fn fields(rows: Vec<(&str, String)>) -> String {
    let mut t = table(&["FIELD", "VALUE"]);
    for (k, v) in rows {
        t.add_row(vec![k.to_owned(), v]);
    }
    t.to_string()
}

fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn join_or_dash(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(",")
    }
}

pub fn pool(p: &PoolInfo) -> String {
    let mut rows = vec![
        ("path", p.path.display().to_string()),
        ("id", p.id.clone()),
        ("version", p.version.clone()),
        ("nbd tcp", or_dash(p.nbd_tcp.as_ref())),
        ("nbd unix", p.nbd_unix.display().to_string()),
        ("api socket", p.api_socket.display().to_string()),
        ("fault injection", p.fault_injection.to_string()),
        ("disks", p.disks.to_string()),
        ("groups", p.groups.to_string()),
        ("volumes", p.volumes.to_string()),
    ];
    rows.extend(p.problems.iter().map(|x| ("problem", x.clone())));
    fields(rows)
}

pub const DISK_COLUMNS: [&str; 12] = [
    "NAME",
    "PATH",
    "SIZE",
    "ALLOCATED",
    "STATUS",
    "GROUP",
    "READS",
    "WRITES",
    "READ BYTES",
    "WRITTEN BYTES",
    "ERRORS",
    "IN WINDOW",
];

pub fn disk_list(disks: &[DiskInfo]) -> String {
    let mut t = table(&DISK_COLUMNS);
    for d in disks {
        let c = &d.counters;
        t.add_row(vec![
            d.name.clone(),
            d.path.display().to_string(),
            format_size(d.size),
            format_size(d.allocated),
            d.status.to_string(),
            or_dash(d.group.as_ref()),
            c.reads.to_string(),
            c.writes.to_string(),
            format_size(c.bytes_read),
            format_size(c.bytes_written),
            (c.read_errors + c.write_errors).to_string(),
            d.recent_errors.to_string(),
        ]);
    }
    t.to_string()
}

pub fn disk(d: &DiskInfo) -> String {
    let c = &d.counters;
    let slot = d.group.as_ref().map(|g| match d.slot {
        Some(s) => format!("{g} slot {s}"),
        None => g.clone(),
    });
    fields(vec![
        ("name", d.name.clone()),
        ("path", d.path.display().to_string()),
        ("size", format_size(d.size)),
        ("data size", format_size(d.data_size)),
        ("allocated", format_size(d.allocated)),
        ("status", d.status.to_string()),
        ("problem", or_dash(d.problem.as_ref())),
        ("group", or_dash(slot)),
        (
            "reads",
            format!("{} ({})", c.reads, format_size(c.bytes_read)),
        ),
        (
            "writes",
            format!("{} ({})", c.writes, format_size(c.bytes_written)),
        ),
        ("flushes", c.flushes.to_string()),
        ("read errors", c.read_errors.to_string()),
        ("write errors", c.write_errors.to_string()),
        (
            "errors in window",
            format!("{} (`ferrosan sparing policy`)", d.recent_errors),
        ),
        ("faults", or_dash(d.faults.as_ref().map(faults))),
    ])
}

pub fn disk_added(d: &DiskInfo) -> String {
    let kind = if d.status == DiskStatus::Spare {
        "spare disk"
    } else {
        "disk"
    };
    let (name, size, path) = (&d.name, format_size(d.size), d.path.display());
    format!("added {kind} {name}: {size} at {path}")
}

pub fn disk_faults(d: &DiskInfo) -> String {
    let rules = d.faults.as_ref().map(faults);
    format!(
        "faults of disk {}: {}",
        d.name,
        rules.as_deref().unwrap_or("none")
    )
}

/// Fault rules in one line: `read 0+512, write 4096+512, rate 0.01, vanished`.
pub fn faults(f: &FaultRules) -> String {
    let ranges = |what: &str, rs: &[(u64, u64)]| {
        rs.iter()
            .map(|(off, len)| format!("{what} {off}+{len}"))
            .collect::<Vec<_>>()
    };
    let mut parts = ranges("read", &f.read_errors);
    parts.extend(ranges("write", &f.write_errors));
    if f.error_rate > 0.0 {
        parts.push(format!("rate {}", f.error_rate));
    }
    if f.vanished {
        parts.push("vanished".to_owned());
    }
    if f.iops > 0 {
        parts.push(format!("{} IOPS at most", f.iops));
    }
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    }
}

/// Seed 002's table T1 (GROUP, VOLUMES, DISKS, RAID LEVEL) with capacity,
/// free space and health.
pub const GROUP_COLUMNS: [&str; 7] = [
    "GROUP",
    "VOLUMES",
    "DISKS",
    "RAID LEVEL",
    "CAPACITY",
    "FREE",
    "HEALTH",
];

pub fn group_list(groups: &[GroupInfo]) -> String {
    let mut t = table(&GROUP_COLUMNS);
    for g in groups {
        t.add_row(vec![
            g.name.clone(),
            join_or_dash(&g.volumes),
            join_or_dash(&g.disks),
            g.raid.to_string(),
            format_size(g.capacity),
            format_size(g.free),
            g.health.clone(),
        ]);
    }
    t.to_string()
}

pub fn group(g: &GroupInfo) -> String {
    let summary = fields(vec![
        ("name", g.name.clone()),
        ("raid level", g.raid.to_string()),
        ("stripe size", format_size(g.stripe_size)),
        ("capacity", format_size(g.capacity)),
        ("free", format_size(g.free)),
        ("health", g.health.clone()),
        ("volumes", join_or_dash(&g.volumes)),
        ("write-intent marks", format_size(g.intent_marked)),
    ]);
    if g.members.is_empty() {
        return summary;
    }
    let mut members = table(&["SLOT", "DISK", "STATE", "PROGRESS"]);
    for m in &g.members {
        let state = match (&m.disk, m.reinstatable) {
            (Some(d), true) => format!("{} (disk reinstate {d})", m.state),
            _ => m.state.clone(),
        };
        members.add_row(vec![
            m.slot.to_string(),
            or_dash(m.disk.as_ref()),
            state,
            or_dash(m.progress.map(|p| format!("{:.1}%", p * 100.0))),
        ]);
    }
    format!("{summary}\n{members}")
}

/// `group reshape-status`.
pub fn reshape(r: &crate::api::views::reshape::ReshapeInfo) -> String {
    let layout = |l: &crate::api::views::reshape::ReshapeLayout| {
        format!(
            "stripe {} on {} ({})",
            format_size(l.stripe_size),
            l.disks.join(","),
            format_size(l.size)
        )
    };
    let progress = if r.phase == "establish" {
        format!(
            "{} of {} copied onto {}",
            format_size(r.copied),
            format_size(r.old.size),
            r.bcv_disks.join(",")
        )
    } else {
        format!(
            "{} of {} tracks in place ({} by the background, {} first for a host, {} written whole by a host, {} new zeroed)",
            r.tracks - r.tracks_left,
            r.tracks,
            r.moved_background,
            r.moved_on_demand,
            r.overwritten,
            r.zeroed
        )
    };
    let pause = if r.pause_us == 0 {
        "-".to_string()
    } else {
        format!("{:.3} ms", r.pause_us as f64 / 1000.0)
    };
    fields(vec![
        ("group", r.group.clone()),
        ("phase", r.phase.clone()),
        ("from", layout(&r.old)),
        ("to", layout(&r.new)),
        ("progress", progress),
        ("job", r.job.to_string()),
        ("pause at the switch", pause),
        (
            "lists (tracks set)",
            format!("to move {}, not valid {}, not split {}", r.pb, r.ind, r.ps),
        ),
    ])
}

pub fn group_created(g: &GroupInfo) -> String {
    let (name, raid, disks) = (&g.name, g.raid, g.disks.join(","));
    let capacity = format_size(g.capacity);
    format!("created group {name}: {raid} on {disks}, {capacity}")
}

pub const VOLUME_COLUMNS: [&str; 7] = [
    "NAME",
    "GROUP",
    "SIZE",
    "TRACK",
    "MODE",
    "CONNECTIONS",
    "EXPORT",
];

fn mode(read_only: bool) -> String {
    if read_only { "ro" } else { "rw" }.to_owned()
}

pub fn volume_list(volumes: &[VolumeInfo]) -> String {
    let mut t = table(&VOLUME_COLUMNS);
    for v in volumes {
        t.add_row(vec![
            v.name.clone(),
            v.group.clone(),
            format_size(v.size),
            format_size(v.track_size),
            mode(v.read_only),
            v.connections.to_string(),
            v.export.clone(),
        ]);
    }
    t.to_string()
}

pub fn volume(v: &VolumeInfo) -> String {
    let extents = v
        .extents
        .iter()
        .map(|(off, len)| format!("{}+{}", format_size(*off), format_size(*len)))
        .collect::<Vec<_>>();
    fields(vec![
        ("name", v.name.clone()),
        ("group", v.group.clone()),
        ("size", format_size(v.size)),
        ("track size", format_size(v.track_size)),
        ("mode", mode(v.read_only)),
        ("connections", v.connections.to_string()),
        ("export", v.export.clone()),
        ("extents", join_or_dash(&extents)),
    ])
}

pub fn volume_created(v: &VolumeInfo) -> String {
    let size = format_size(v.size);
    let (name, group, export) = (&v.name, &v.group, &v.export);
    format!("created volume {name}: {size} in {group}, export {export}")
}

/// `42.5%`, from done/total units.
pub fn percent(j: &JobInfo) -> String {
    if j.total == 0 {
        return if j.state == JobState::Done {
            "100.0%"
        } else {
            "0.0%"
        }
        .to_owned();
    }
    let tenths = u128::from(j.done.min(j.total)) * 1000 / u128::from(j.total);
    format!("{}.{}%", tenths / 10, tenths % 10)
}

fn eta(j: &JobInfo) -> String {
    match (j.state, j.eta_secs) {
        (JobState::Running, Some(s)) => format_duration(s),
        _ => "-".to_owned(),
    }
}

fn limit(j: &JobInfo) -> String {
    let limit = if j.rate_limit == 0 {
        "none".to_owned()
    } else {
        format_rate(j.rate_limit)
    };
    match j.rate_floor {
        0 => limit,
        f => format!("{limit} (floor {})", format_rate(f)),
    }
}

pub const JOB_COLUMNS: [&str; 8] = [
    "ID", "KIND", "TARGET", "STATE", "PROGRESS", "RATE", "ETA", "LIMIT",
];

pub fn job_list(jobs: &[JobInfo]) -> String {
    let mut t = table(&JOB_COLUMNS);
    for j in jobs {
        t.add_row(vec![
            j.id.to_string(),
            j.kind.clone(),
            j.target.clone(),
            j.state.to_string(),
            percent(j),
            format_rate(j.bytes_per_sec),
            eta(j),
            limit(j),
        ]);
    }
    t.to_string()
}

pub fn job(j: &JobInfo) -> String {
    let bytes = |units: u64| format_size(units.saturating_mul(j.unit_bytes));
    fields(vec![
        ("id", j.id.to_string()),
        ("kind", j.kind.clone()),
        ("target", j.target.clone()),
        ("state", j.state.to_string()),
        (
            "progress",
            format!("{} ({} of {})", percent(j), bytes(j.done), bytes(j.total)),
        ),
        ("rate", format_rate(j.bytes_per_sec)),
        ("eta", eta(j)),
        ("rate limit", limit(j)),
        ("message", or_dash(j.message.as_ref())),
    ])
}

/// One line for a finished (or started) job.
pub fn job_line(j: &JobInfo) -> String {
    let mut line = format!("job {} {}: {} {}", j.id, j.state, j.kind, j.target);
    if let Some(m) = &j.message {
        line.push_str(&format!(" ({m})"));
    }
    line
}

/// A job just started (or as it ended): its line, and how to follow it
/// while it runs.
pub fn job_started(j: &JobInfo) -> String {
    let line = job_line(j);
    if j.state.is_finished() {
        return line;
    }
    format!("{line}\nfollow it with `ferrosan job wait {}`", j.id)
}

// ---------------------------------------------------------------- copies

/// `row (redirect-on-write: new writes go to new space)`.
fn copy_mode(m: CopyMode) -> String {
    let how = match m {
        CopyMode::Cow => "copy-on-write: old data is copied to new space before it is overwritten",
        CopyMode::Row => "redirect-on-write: new writes go to new space",
    };
    format!("{m} ({how})")
}

fn copy_state(c: &CopyInfo) -> &'static str {
    if c.valid { "ok" } else { "INVALID" }
}

fn policy_name(p: SplitPolicy) -> &'static str {
    match p {
        SplitPolicy::MoveSmaller => "move-smaller",
        SplitPolicy::MoveLarger => "move-larger",
    }
}

fn tracks(n: u64) -> String {
    if n == 1 {
        "1 track".to_owned()
    } else {
        format!("{n} tracks")
    }
}

pub const COPY_COLUMNS: [&str; 10] = [
    "NAME",
    "SOURCE",
    "ORIGIN",
    "MODE",
    "META",
    "DIVERGED",
    "SPACE USED",
    "METADATA MEMORY",
    "DEPTH",
    "STATE",
];

/// The copies, then one `warning:` line per copy that has one.
pub fn copy_list(copies: &[CopyInfo]) -> String {
    let mut t = table(&COPY_COLUMNS);
    for c in copies {
        t.add_row(vec![
            c.name.clone(),
            c.source.clone(),
            c.origin.clone(),
            c.mode.to_string(),
            c.scheme.to_string(),
            c.tracks_diverged.to_string(),
            format_size(c.space_used),
            format_size(c.metadata_memory),
            c.depth.to_string(),
            copy_state(c).to_owned(),
        ]);
    }
    let mut text = t.to_string();
    for c in copies {
        if let Some(w) = &c.warning {
            text.push_str(&format!("\nwarning: copy {}: {w}", c.name));
        }
    }
    text
}

pub fn copy(c: &CopyInfo) -> String {
    let diverged = c.tracks_diverged.saturating_mul(c.track_size);
    fields(vec![
        ("name", c.name.clone()),
        ("source", c.source.clone()),
        ("origin", c.origin.clone()),
        ("depth", c.depth.to_string()),
        ("mode", copy_mode(c.mode)),
        ("metadata", c.scheme.to_string()),
        ("access", mode(c.read_only)),
        ("size", format_size(c.size)),
        ("track size", format_size(c.track_size)),
        (
            "diverged",
            format!("{} ({})", tracks(c.tracks_diverged), format_size(diverged)),
        ),
        ("space used", format_size(c.space_used)),
        ("space shared", format_size(c.space_shared)),
        (
            "new space",
            format!(
                "{} held, {} read by an image, {} taken from the group (all copies of {})",
                format_size(c.store_held),
                format_size(c.store_live),
                format_size(c.store_chunks),
                c.origin
            ),
        ),
        ("metadata memory", format_size(c.metadata_memory)),
        ("state", copy_state(c).to_owned()),
        ("warning", or_dash(c.warning.as_ref())),
    ])
}

pub fn copy_created(c: &CopyInfo) -> String {
    let (name, source, scheme) = (&c.name, &c.source, c.scheme);
    let (size, track) = (format_size(c.size), format_size(c.track_size));
    let access = if c.read_only { ", read-only" } else { "" };
    let mode = copy_mode(c.mode);
    format!(
        "created copy {name} of {source}: {mode}, {scheme} metadata, {size} in {track} tracks{access}"
    )
}

/// What `disk fail` did to the disk and its group.
pub fn disk_failed(d: &DiskInfo, group: Option<&GroupInfo>) -> String {
    let head = format!("disk {} is {}", d.name, d.status);
    match group {
        Some(g) if g.health == "failed" => format!(
            "{head}\ngroup {} has stopped: {} until `ferrosan disk reinstate {}`",
            g.name,
            if g.volumes.is_empty() {
                "it holds no volume".to_string()
            } else {
                format!("volume {} fail their I/O", g.volumes.join(", "))
            },
            d.name
        ),
        Some(g) => format!("{head}\ngroup {} is {}", g.name, g.health),
        None => head,
    }
}

/// What `disk reinstate` did, and its resync job.
pub fn disk_reinstated(r: &DiskReinstateInfo) -> String {
    let (Some(group), Some(slot)) = (&r.group, r.slot) else {
        return format!("disk {} can be used again (it is in no group)", r.disk);
    };
    let head = format!("disk {} serves slot {slot} of group {group} again", r.disk);
    match &r.job {
        Some(j) => format!(
            "{head}\nresyncing what was written while it was out:\n{}",
            job_started(j)
        ),
        None => format!("{head}\nit missed no write: nothing to resync"),
    }
}

/// What `copy restore` did, and its job.
pub fn copy_restored(r: &CopyRestoreInfo) -> String {
    let mut head = format!("volume {} now shows the image of copy {}", r.volume, r.from);
    if r.connections > 0 {
        head.push_str(&format!(
            "\nwarning: its {} connected clients now read the copy's image; what they wrote since the copy is gone, and data they cached is stale (remount or restart what uses it)",
            r.connections
        ));
    }
    match &r.job {
        Some(j) => format!("{head}\n{}", job_started(j)),
        None => format!("{head}\nno data has to move"),
    }
}

/// What `copy delete` did, and the job folding data back, if any.
pub fn copy_deleted(r: &CopyDeleteInfo) -> String {
    let head = format!("deleted copy {}", r.name);
    match &r.job {
        Some(j) => format!(
            "{head}\nthe original's new data moves back into its own space:\n{}",
            job_started(j)
        ),
        None => head,
    }
}

/// What `copy split` measured (the tracks each side wrote since the copy),
/// what moves, and its job.
/// The answer of `copy gc`.
pub fn pool_check(c: &PoolCheck) -> String {
    if c.families.is_empty() {
        return "no copy families: nothing to check".into();
    }
    let mut out = Vec::new();
    for f in &c.families {
        let mut line = format!(
            "copies of {}: {} chunks, {} slots checked, {} differences",
            f.origin, f.chunks, f.checked, f.differences
        );
        if f.unlabelled_chunks > 0 {
            line.push_str(&format!(
                " ({} chunks made before stores carried labels, not checked)",
                f.unlabelled_chunks
            ));
        }
        out.push(line);
        out.extend(f.problems.iter().map(|p| format!("  {p}")));
        if f.differences > f.problems.len() as u64 {
            out.push(format!(
                "  ... and {} more",
                f.differences - f.problems.len() as u64
            ));
        }
    }
    out.push(if c.differences == 0 {
        "the copy maps and the disks agree".into()
    } else {
        format!("{} differences in all", c.differences)
    });
    out.join("\n")
}

pub fn copy_gc(jobs: &[JobInfo], waited: bool) -> String {
    if jobs.is_empty() {
        return "nothing to collect: every copy point is still read by a copy".into();
    }
    let mut out: Vec<String> = jobs.iter().map(job_line).collect();
    if !waited {
        let ids: Vec<String> = jobs.iter().map(|j| j.id.to_string()).collect();
        out.push(format!(
            "follow with `ferrosan job wait ID` ({})",
            ids.join(", ")
        ));
    }
    out.join("\n")
}

pub fn copy_split(name: &str, s: &CopySplitInfo) -> String {
    let policy = policy_name(s.policy);
    let mut lines = vec![
        format!("splitting copy {name} from its original (policy {policy})"),
        format!("new data of the original: {}", tracks(s.n_orig)),
        format!("new data of the copy: {}", tracks(s.n_copy)),
    ];
    let moving = &s.moving;
    match &s.job {
        Some(j) => {
            lines.push(format!(
                "moving: the new data of {moving} into the space both share"
            ));
            lines.push(job_started(j));
        }
        None => lines.push(format!("moving: nothing, {moving} has no new data to move")),
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests;
