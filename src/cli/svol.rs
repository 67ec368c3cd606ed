//! `ferrosan svol-group ...`: S-VOL groups (seed 003). `query` prints the
//! seed's tables 900, 1200 and 1300 (FIG. 9, 12, 13) and each member's
//! health.

#![forbid(unsafe_code)]

use clap::Subcommand;

use super::Failure;
use super::client::segment;
use super::commands::Ctx;
use super::render::table;
use crate::api::views::*;

#[derive(Debug, Subcommand)]
pub enum SvolCmd {
    /// Make an S-VOL group (operation code 0) of S-VOLs of PVOL, each in
    /// PAIR: they are split at one instant, so every RO member holds the
    /// same image. RO members become read-only exports that share reads;
    /// an RW member stays writable and gets an increments volume
    /// (LV-dlv) holding its writes since the split; spares are unpaired
    /// volumes of the same size, not host-accessible.
    Create {
        /// The group's name (GrpID).
        name: String,
        /// The P-VOL whose S-VOLs the members are.
        #[arg(long, value_name = "VOL")]
        pvol: String,
        /// A member as VOL:ro or VOL:rw (repeat; at least one RO).
        #[arg(long = "member", value_name = "VOL:ro|rw", value_parser = parse_member, required = true)]
        members: Vec<SvolMemberSpec>,
        /// A spare (repeat).
        #[arg(long = "spare", value_name = "VOL")]
        spares: Vec<String>,
        /// The RAID group for the increments volumes (default: the RW
        /// member's).
        #[arg(long, value_name = "GROUP")]
        dlv_group: Option<String>,
    },
    /// Every group: members, spares and health.
    List,
    /// A group's tables 900, 1200 and 1300 (operation code 3), members'
    /// access frequency and health, spares.
    Query {
        /// The group.
        name: String,
    },
    /// Restore (operation code 1): --rollback returns an RW member to the
    /// split image (its increments' blocks copied back from an RO member,
    /// table 1300 emptied); --rebuild refills a repaired RO member from
    /// the group; --to-pvol copies the group's image back onto the P-VOL
    /// (only the tracks that differ; the P-VOL stays in use, the members
    /// keep serving). Runs as a job.
    #[command(group(clap::ArgGroup::new("mode").required(true).args(["rollback", "rebuild", "to_pvol"])))]
    Restore {
        /// The group.
        name: String,
        /// The member to restore; with --to-pvol, the RO member whose
        /// image is copied (default: the first healthy one).
        #[arg(long, value_name = "VOL", required_unless_present = "to_pvol")]
        member: Option<String>,
        /// Return the RW member to the split image.
        #[arg(long)]
        rollback: bool,
        /// Refill a repaired RO member from the group; for an RW member
        /// whose increments volume failed, fill a spare as its new one.
        #[arg(long)]
        rebuild: bool,
        /// Copy the group's image back onto its P-VOL.
        #[arg(long)]
        to_pvol: bool,
        /// Limit the copy to this many bytes per second, e.g. 200M (`job
        /// rate` changes it later).
        #[arg(long, value_name = "BYTES", value_parser = super::size::parse_size)]
        rate: Option<u64>,
        /// Wait for the job, with a progress bar.
        #[arg(long)]
        wait: bool,
    },
    /// Delete a group: its members go on as the split S-VOLs of their
    /// pairs, writable; the increments volumes are deleted.
    Delete {
        /// The group.
        name: String,
    },
}

fn parse_member(s: &str) -> Result<SvolMemberSpec, String> {
    let (lid, attr) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?}: a member is VOL:ro or VOL:rw"))?;
    let attr = match attr.to_ascii_lowercase().as_str() {
        "ro" => SvolAttr::Ro,
        "rw" => SvolAttr::Rw,
        other => return Err(format!("{other:?}: a member's attribute is ro or rw")),
    };
    Ok(SvolMemberSpec {
        lid: lid.to_string(),
        attr,
    })
}

fn path(name: &str) -> String {
    format!("/v1/svol-groups/{}", segment(name))
}

pub fn run(ctx: &Ctx, cmd: SvolCmd) -> Result<(), Failure> {
    match cmd {
        SvolCmd::Create {
            name,
            pvol,
            mut members,
            spares,
            dlv_group,
        } => {
            members.extend(spares.into_iter().map(|lid| SvolMemberSpec {
                lid,
                attr: SvolAttr::Spare,
            }));
            let req = SvolGroupCreateRequest {
                name,
                pvol,
                members,
                dlv_group,
            };
            let g: SvolGroupInfo = ctx.post("/v1/svol-groups", &req)?;
            ctx.show(&g, query)
        }
        SvolCmd::List => ctx.show(&ctx.get::<Vec<SvolGroupInfo>>("/v1/svol-groups")?, |v| {
            list(v)
        }),
        SvolCmd::Query { name } => ctx.show(&ctx.get::<SvolGroupInfo>(&path(&name))?, query),
        SvolCmd::Restore {
            name,
            member,
            rollback,
            rebuild: _,
            to_pvol,
            rate,
            wait,
        } => {
            let mode = match (rollback, to_pvol) {
                (true, _) => SvolRestoreMode::Rollback,
                (_, true) => SvolRestoreMode::ToPvol,
                _ => SvolRestoreMode::Rebuild,
            };
            let req = SvolRestoreRequest { member, mode, rate };
            let job: JobInfo = ctx.post(&format!("{}/restore", path(&name)), &req)?;
            if wait {
                let ended = super::wait::follow(ctx, job, super::wait::default_stall())?;
                super::wait::outcome(&ended)?;
            }
            ctx.show(&ctx.get::<SvolGroupInfo>(&path(&name))?, query)
        }
        SvolCmd::Delete { name } => {
            ctx.delete(&path(&name))?;
            ctx.note(format!("S-VOL group {name} deleted"))
        }
    }
}

fn opt(s: &Option<String>) -> String {
    s.clone().unwrap_or_default()
}

pub fn list(groups: &[SvolGroupInfo]) -> String {
    let mut t = table(&["GROUP", "P-VOL", "MEMBERS", "SPARES", "STATE"]);
    for g in groups {
        let members: Vec<String> = g
            .members
            .iter()
            .map(|m| format!("{}:{}{}", m.lid, m.attr.name(), bad(m)))
            .collect();
        let spares: Vec<String> = g.spares.iter().map(|m| m.lid.clone()).collect();
        t.add_row(vec![
            g.name.clone(),
            g.pvol.clone(),
            members.join(" "),
            spares.join(" "),
            state(g).to_string(),
        ]);
    }
    t.to_string()
}

fn bad(m: &SvolMemberInfo) -> &'static str {
    if m.health == "failed" { "(failed)" } else { "" }
}

fn state(g: &SvolGroupInfo) -> &'static str {
    if g.degraded {
        "DEGRADED: a member failed and no spare is left"
    } else if g.members.iter().any(|m| m.health == "failed") {
        "a member failed"
    } else {
        "healthy"
    }
}

/// Tables 900, 1200, 1300 and the members' health.
pub fn query(g: &SvolGroupInfo) -> String {
    let mut t900 = table(&["GrpID", "LID", "Attr", "PID", "RLID"]);
    for (i, r) in g.table_900.iter().enumerate() {
        let grp = if i == 0 {
            r.grp_id.clone()
        } else {
            String::new()
        };
        t900.add_row(vec![
            grp,
            r.lid.clone(),
            r.attr.clone(),
            r.pid.clone(),
            opt(&r.rlid),
        ]);
    }
    let mut t1200 = table(&["LID", "Attr", "PID", "RLID", "Freq"]);
    for r in &g.table_1200 {
        t1200.add_row(vec![
            r.lid.clone(),
            r.attr.clone(),
            r.pid.clone(),
            opt(&r.rlid),
            r.freq.to_string(),
        ]);
    }
    let mut t1300 = table(&["DLID", "BID"]);
    for r in &g.table_1300 {
        let mut bids: Vec<String> = r.bids.iter().map(u64::to_string).collect();
        if r.count > r.bids.len() as u64 {
            bids.push(format!("... ({} in all)", r.count));
        }
        t1300.add_row(vec![r.dlid.clone(), bids.join(", ")]);
    }
    let mut health = table(&["LID", "Attr", "health", "read errors", "repaired", "disks"]);
    for m in g.members.iter().chain(&g.spares) {
        health.add_row(vec![
            m.lid.clone(),
            m.attr.name().to_string(),
            m.health.clone(),
            m.errors.to_string(),
            m.repaired.to_string(),
            m.disks.join(","),
        ]);
    }
    format!(
        "S-VOL group {} of P-VOL {}: {}\n\nS-VOL group management table (900)\n{t900}\n\nS-VOL management table (1200)\n{t1200}\n\nIncrements management table (1300)\n{t1300}\n\nMembers and spares\n{health}",
        g.name,
        g.pvol,
        state(g)
    )
}
