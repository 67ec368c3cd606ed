//! `ferrosan pair ...`: mirror pairs (table T2 of seed 002). The API names
//! a pair by its S-VOL; the CLI takes both volumes, as arrays' tools do,
//! and checks that they are one pair before it acts.

#![forbid(unsafe_code)]

use clap::{Args, Subcommand};

use super::client::segment;
use super::commands::Ctx;
use super::render::{fields, table};
use super::size::{format_size, parse_size};
use super::{Failure, wait};
use crate::api::views::*;

#[derive(Debug, Subcommand)]
pub enum PairCmd {
    /// Pair PVOL with SVOL, a volume of the same size: SVOL's data is
    /// replaced by PVOL's in a copy job (status COPY, then PAIR) while
    /// PVOL stays in use. Only tracks either volume has written are
    /// copied. In PAIR every write to PVOL reaches both before it is
    /// answered, and hosts cannot write SVOL.
    Create {
        /// The primary volume (P-VOL).
        pvol: String,
        /// The secondary volume (S-VOL): its data is replaced.
        svol: String,
        /// A consistency group: `pair split --group` splits all its pairs
        /// at one instant.
        #[arg(long, value_name = "NAME")]
        group: Option<String>,
        /// Replace SVOL's data even though it has written tracks.
        #[arg(long)]
        overwrite: bool,
        /// Limit the copy to this many bytes per second, e.g. 200M
        /// (`job rate` changes it later).
        #[arg(long, value_name = "BYTES", value_parser = parse_size)]
        rate: Option<u64>,
        /// Wait for the initial copy, with a progress bar.
        #[arg(long)]
        wait: bool,
    },
    /// Every pair: P-VOL, S-VOL, status and differential bitmap (share of
    /// tracks set and a picture, one character per track or bucket).
    List,
    /// One pair in detail.
    Show(PairName),
    /// Make SVOL an independent point-in-time image at once (status
    /// SPLIT; SVOL becomes writable). Writes to either side then mark
    /// their tracks, durably, for the next resync or restore. With
    /// --group, every pair of the consistency group splits at one
    /// instant.
    Split {
        /// The pair's P-VOL.
        pvol: Option<String>,
        /// The pair's S-VOL.
        svol: Option<String>,
        /// The consistency group to split.
        #[arg(long, value_name = "NAME", conflicts_with_all = ["pvol", "svol"])]
        group: Option<String>,
    },
    /// Copy the tracks marked since the split from PVOL to SVOL (status
    /// RESYNC, then PAIR). What SVOL wrote since the split is replaced.
    Resync(PairAct),
    /// Copy the tracks marked since the split from SVOL back to PVOL
    /// while PVOL stays in use (status RESTORE, then PAIR): PVOL reads
    /// SVOL's image at once. What PVOL wrote since the split is replaced.
    Restore(PairAct),
    /// Stop pairing (any status; a copy job is cancelled). Both volumes
    /// keep their data; an SVOL whose copy had not finished holds a
    /// partial copy.
    Delete(PairName),
}

#[derive(Debug, Args)]
pub struct PairName {
    /// The pair's P-VOL.
    pub pvol: String,
    /// The pair's S-VOL.
    pub svol: String,
}

#[derive(Debug, Args)]
pub struct PairAct {
    /// The pair's P-VOL.
    pub pvol: String,
    /// The pair's S-VOL.
    pub svol: String,
    /// Limit the copy to this many bytes per second, e.g. 200M
    /// (`job rate` changes it later).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub rate: Option<u64>,
    /// Wait for the copy, with a progress bar.
    #[arg(long)]
    pub wait: bool,
}

fn path(svol: &str, verb: &str) -> String {
    format!("/v1/pairs/{}{verb}", segment(svol))
}

/// The pair of `svol`, checked to have `pvol` as its P-VOL.
fn checked(ctx: &Ctx, pvol: &str, svol: &str) -> Result<PairInfo, Failure> {
    let p: PairInfo = ctx.get(&path(svol, ""))?;
    if p.pvol != pvol {
        return Err(Failure::new(format!(
            "{svol} is the S-VOL of pair {} -> {svol}, not of {pvol}: see `ferrosan pair list`",
            p.pvol
        )));
    }
    Ok(p)
}

/// With --wait, follows the pair's job; then shows the pair.
fn after(ctx: &Ctx, p: PairInfo, wait: bool) -> Result<(), Failure> {
    let mut p = p;
    if let (true, Some(id)) = (wait, p.job) {
        let job: JobInfo = ctx.get(&format!("/v1/jobs/{id}"))?;
        let ended = wait::follow(ctx, job, wait::default_stall())?;
        wait::outcome(&ended)?;
        p = ctx.get(&path(&p.svol, ""))?;
    }
    ctx.show(&p, pair)
}

pub fn run(ctx: &Ctx, cmd: PairCmd) -> Result<(), Failure> {
    match cmd {
        PairCmd::Create {
            pvol,
            svol,
            group,
            overwrite,
            rate,
            wait,
        } => {
            let req = PairCreateRequest {
                pvol,
                svol,
                group,
                overwrite,
                rate,
            };
            let p: PairInfo = ctx.post("/v1/pairs", &req)?;
            after(ctx, p, wait)
        }
        PairCmd::List => ctx.show(&ctx.get::<Vec<PairInfo>>("/v1/pairs")?, |v| list(v)),
        PairCmd::Show(n) => ctx.show(&checked(ctx, &n.pvol, &n.svol)?, pair),
        PairCmd::Split { pvol, svol, group } => {
            let split: Vec<PairInfo> = match (pvol, svol, group) {
                (_, _, Some(g)) => ctx.act(&format!("/v1/pair-groups/{}/split", segment(&g)))?,
                (Some(p), Some(s), None) => {
                    checked(ctx, &p, &s)?;
                    ctx.act(&path(&s, "/split"))?
                }
                _ => {
                    return Err(Failure {
                        message: "pair split takes PVOL SVOL, or --group NAME".into(),
                        code: 2,
                    });
                }
            };
            ctx.show(&split, |v| list(v))
        }
        PairCmd::Resync(a) => {
            checked(ctx, &a.pvol, &a.svol)?;
            let req = PairCopyRequest { rate: a.rate };
            let p: PairInfo = ctx.post(&path(&a.svol, "/resync"), &req)?;
            after(ctx, p, a.wait)
        }
        PairCmd::Restore(a) => {
            checked(ctx, &a.pvol, &a.svol)?;
            let req = PairCopyRequest { rate: a.rate };
            let p: PairInfo = ctx.post(&path(&a.svol, "/restore"), &req)?;
            after(ctx, p, a.wait)
        }
        PairCmd::Delete(n) => {
            checked(ctx, &n.pvol, &n.svol)?;
            ctx.delete(&path(&n.svol, ""))?;
            ctx.note(format!("pair {} -> {} deleted", n.pvol, n.svol))
        }
    }
}

/// Columns of `pair list` (table T2).
pub const PAIR_COLUMNS: [&str; 6] = ["P-VOL", "S-VOL", "STATUS", "GROUP", "DIFF", "BITMAP"];

fn share(p: &PairInfo) -> String {
    format!(
        "{:.1}% ({} of {})",
        p.share_set * 100.0,
        p.tracks_set,
        p.tracks
    )
}

pub fn list(pairs: &[PairInfo]) -> String {
    let mut t = table(&PAIR_COLUMNS);
    for p in pairs {
        t.add_row(vec![
            p.pvol.clone(),
            p.svol.clone(),
            p.status.name().to_string(),
            p.group.clone().unwrap_or_else(|| "-".into()),
            share(p),
            p.bitmap.clone(),
        ]);
    }
    t.to_string()
}

pub fn pair(p: &PairInfo) -> String {
    fields(vec![
        ("P-VOL", p.pvol.clone()),
        ("S-VOL", p.svol.clone()),
        ("status", p.status.name().to_string()),
        ("group", p.group.clone().unwrap_or_else(|| "-".into())),
        ("track size", format_size(p.track_size)),
        (
            "tracks set",
            format!(
                "{} ({})",
                share(p),
                format_size(p.tracks_set.saturating_mul(p.track_size))
            ),
        ),
        ("bitmap", p.bitmap.clone()),
        (
            "job",
            p.job
                .map_or("-".into(), |j| format!("{j} (`ferrosan job wait {j}`)")),
        ),
        ("S-VOL write errors", p.svol_errors.to_string()),
    ])
}
