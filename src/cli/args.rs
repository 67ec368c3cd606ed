//! The command line: `ferrosan [--pool DIR] [--json] <noun> <verb>`.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};

use super::size::parse_size;
use crate::copy::map::Scheme;
use crate::engine::types::{
    ByteRange, CopyCreateRequest, CopyMode, DiskAddRequest, GroupCreateRequest, InjectRequest,
    RaidLevelName, SplitPolicy, VolumeCreateRequest,
};

/// A software storage array: RAID volumes served over NBD.
#[derive(Debug, Parser)]
#[command(name = "ferrosan", version, propagate_version = true)]
pub struct Cli {
    /// Pool directory: its database, disk files and sockets.
    #[arg(
        long,
        global = true,
        env = "FERROSAN_POOL",
        default_value = "./ferrosan-data",
        value_name = "DIR"
    )]
    pub pool: PathBuf,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: NBD exports and the API on <pool>/api.sock.
    Serve(ServeArgs),
    /// The pool as a whole.
    #[command(subcommand)]
    Pool(PoolCmd),
    /// Disks: files or block devices of the pool.
    #[command(subcommand)]
    Disk(DiskCmd),
    /// RAID groups.
    #[command(subcommand)]
    Group(GroupCmd),
    /// Volumes: the NBD exports.
    #[command(subcommand)]
    Volume(VolumeCmd),
    /// Background jobs: progress, pause, resume, cancel, rate.
    #[command(subcommand)]
    Job(JobCmd),
    /// Instant copies: point-in-time images of a volume, usable at once.
    #[command(subcommand)]
    Copy(CopyCmd),
    /// Print the API's OpenAPI document.
    #[command(hide = true)]
    Openapi,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// NBD TCP address.
    #[arg(long, default_value = "127.0.0.1:10809", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// Allow `disk inject` (for tests).
    #[arg(long)]
    pub fault_injection: bool,
    /// Worker threads (default: one per CPU).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub workers: Option<u64>,
    /// Seconds a write-intent region stays marked after its last write
    /// (longer: fewer bitmap commits, more to resync after a crash).
    #[arg(long, value_name = "SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub intent_clear_interval: u64,
}

#[derive(Debug, Subcommand)]
pub enum PoolCmd {
    /// Where the pool is and what it holds.
    Show,
}

#[derive(Debug, Subcommand)]
pub enum DiskCmd {
    /// Add a disk: a new sparse file (--size) or an existing file or device (--path).
    Add(DiskAdd),
    /// List disks with their I/O counters.
    List,
    /// One disk in detail.
    Show { name: String },
    /// Remove a disk that is in no group.
    Remove { name: String },
    /// Take a disk out of its group, as if it had failed (its group runs
    /// degraded; refused if the group would stop, unless --force).
    Fail {
        name: String,
        /// Even if its group then stops serving: every volume of the group
        /// fails its I/O until the disk is reinstated.
        #[arg(long)]
        force: bool,
    },
    /// Take back a failed disk whose data is intact: only what was written
    /// while it was out is copied to it (md's --re-add).
    Reinstate {
        name: String,
        /// Wait for the resync, with a progress bar.
        #[arg(long)]
        wait: bool,
    },
    /// Replace OLD by NEW (a free disk or spare): starts a rebuild job.
    Replace {
        old: String,
        new: String,
        /// Wait for the job, with a progress bar.
        #[arg(long)]
        wait: bool,
    },
    /// Change a disk's fault rules (daemon run with --fault-injection).
    Inject(DiskInject),
}

#[derive(Debug, Subcommand)]
pub enum GroupCmd {
    /// Create a RAID group from free disks.
    Create(GroupCreate),
    /// The RAID group table (seed 002, T1).
    List,
    /// One group with its members.
    Show { name: String },
    /// Delete a group that holds no volume.
    Delete { name: String },
    /// Append disks to a concat group.
    Extend {
        name: String,
        /// Disks to append, comma-separated.
        #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
        disks: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum VolumeCmd {
    /// Create a volume in a group.
    Create(VolumeCreate),
    /// List volumes.
    List,
    /// One volume in detail.
    Show { name: String },
    /// Delete a volume and its data.
    Delete {
        name: String,
        /// Even while NBD clients are connected.
        #[arg(long)]
        force: bool,
    },
    /// Grow a volume to a new size.
    Grow {
        name: String,
        /// The new size (not the increment), e.g. 20G.
        #[arg(long, value_parser = parse_size)]
        size: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobCmd {
    /// List jobs with progress, rate and ETA.
    List,
    /// One job in detail.
    Show { id: u64 },
    /// Pause a running job.
    Pause { id: u64 },
    /// Resume a paused job.
    Resume { id: u64 },
    /// Cancel a job.
    Cancel { id: u64 },
    /// Limit a job's rate, in bytes per second (e.g. 100M; 0 removes the limit).
    Rate {
        id: u64,
        #[arg(value_parser = parse_size)]
        bytes_per_sec: u64,
    },
    /// Wait for a job to finish, with a progress bar.
    Wait { id: u64 },
}

#[derive(Debug, Subcommand)]
pub enum CopyCmd {
    /// Make NAME an instant copy of SRC (a volume or a copy); no data moves.
    Create(CopyCreate),
    /// List copies: tracks diverged, space and metadata memory used.
    List,
    /// One copy in detail.
    Show { name: String },
    /// Delete a copy; its new space goes back. When the last copy goes, a
    /// job folds the original's data back into its initial area.
    Delete {
        name: String,
        /// Wait for that job, if one started, with a progress bar.
        #[arg(long)]
        wait: bool,
    },
    /// Return the copy's source to the copy's image.
    Restore {
        name: String,
        /// Wait for the job moving data, if one started, with a progress bar.
        #[arg(long)]
        wait: bool,
        /// Even while NBD clients use the source: its contents change under
        /// them, and what they wrote since the copy is gone.
        #[arg(long)]
        force: bool,
    },
    /// Separate a copy from its original: measure N_orig and N_copy and move
    /// one set of new data into the initial area.
    Split {
        name: String,
        /// move-smaller (the default) or move-larger: which set of new data moves.
        #[arg(long, value_name = "POLICY")]
        policy: Option<SplitPolicy>,
        /// Wait for the job, with a progress bar.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Debug, Args)]
pub struct CopyCreate {
    /// The volume (or copy) to copy.
    src: String,
    /// Name of the new copy (a new volume).
    name: String,
    /// cow (A1, old data to new space) or row (A2, new data to new space);
    /// default row, or the mode of the source's family.
    #[arg(long, value_name = "MODE")]
    mode: Option<CopyMode>,
    /// Metadata scheme: full-pointer, changed-pointer, bitmap,
    /// multilevel-bitmap or partial-bitmap; default follows the source's mapping.
    #[arg(long, value_name = "SCHEME")]
    meta: Option<Scheme>,
    /// Export the copy read-only.
    #[arg(long)]
    read_only: bool,
    /// The RAID group the new space comes from (default: the source's).
    #[arg(long, value_name = "GROUP")]
    pool_group: Option<String>,
}

impl CopyCreate {
    pub fn request(self) -> CopyCreateRequest {
        CopyCreateRequest {
            source: self.src,
            name: self.name,
            mode: self.mode,
            meta: self.meta,
            read_only: self.read_only,
            pool_group: self.pool_group,
        }
    }
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("source").required(true).args(["size", "path"])))]
pub struct DiskAdd {
    name: String,
    /// Size of a new sparse disk file, e.g. 1G.
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    /// An existing file or block device to adopt.
    #[arg(long)]
    path: Option<PathBuf>,
    /// Add as a hot spare.
    #[arg(long)]
    spare: bool,
    /// With --path: adopt it even if it holds data or another pool's label
    /// (that data is lost).
    #[arg(long, requires = "path")]
    force: bool,
}

impl DiskAdd {
    pub fn request(self) -> DiskAddRequest {
        // A relative path is the user's, relative to where the command runs.
        let path = self.path.map(|p| std::path::absolute(&p).unwrap_or(p));
        DiskAddRequest {
            name: self.name,
            size: self.size,
            path,
            spare: self.spare,
            force: self.force,
        }
    }
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("rule").required(true).multiple(true)
    .args(["read_error_at", "write_error_at", "error_rate", "vanish", "clear"])))]
pub struct DiskInject {
    pub name: String,
    /// Reads of OFFSET[,LEN] fail (LEN defaults to 512).
    #[arg(long, value_name = "OFFSET[,LEN]", value_parser = parse_range)]
    read_error_at: Option<ByteRange>,
    /// Writes to OFFSET[,LEN] fail (LEN defaults to 512).
    #[arg(long, value_name = "OFFSET[,LEN]", value_parser = parse_range)]
    write_error_at: Option<ByteRange>,
    /// Probability (0 to 1) that any I/O fails.
    #[arg(long, value_name = "P", value_parser = parse_probability)]
    error_rate: Option<f64>,
    /// Every I/O fails, as if the disk were pulled.
    #[arg(long)]
    vanish: bool,
    /// Remove every rule.
    #[arg(long)]
    clear: bool,
}

impl DiskInject {
    pub fn request(&self) -> InjectRequest {
        InjectRequest {
            read_error_at: self.read_error_at,
            write_error_at: self.write_error_at,
            error_rate: self.error_rate,
            vanish: self.vanish,
            clear: self.clear,
        }
    }
}

#[derive(Debug, Args)]
pub struct GroupCreate {
    name: String,
    /// concat, raid0, raid1 or raid5.
    #[arg(long)]
    raid: RaidLevelName,
    /// Member disks, comma-separated, in slot order.
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    disks: Vec<String>,
    /// Bytes per strip, e.g. 64K.
    #[arg(long, value_parser = parse_size)]
    stripe_size: Option<u64>,
}

impl GroupCreate {
    pub fn request(self) -> GroupCreateRequest {
        GroupCreateRequest {
            name: self.name,
            raid: self.raid,
            disks: self.disks,
            stripe_size: self.stripe_size,
        }
    }
}

#[derive(Debug, Args)]
pub struct VolumeCreate {
    name: String,
    /// The RAID group to allocate from.
    #[arg(long)]
    group: String,
    /// Size, e.g. 10G.
    #[arg(long, value_parser = parse_size)]
    size: u64,
    /// Track size, a power of two from 4K to 1M (default 64K).
    #[arg(long, value_parser = parse_size)]
    track_size: Option<u64>,
    /// Export read-only.
    #[arg(long)]
    read_only: bool,
}

impl VolumeCreate {
    pub fn request(self) -> VolumeCreateRequest {
        VolumeCreateRequest {
            name: self.name,
            group: self.group,
            size: self.size,
            track_size: self.track_size,
            read_only: self.read_only,
        }
    }
}

/// `OFFSET[,LEN]`, both sizes.
fn parse_range(text: &str) -> Result<ByteRange, String> {
    let (offset, length) = match text.split_once(',') {
        Some((off, len)) => (parse_size(off)?, Some(parse_size(len)?)),
        None => (parse_size(text)?, None),
    };
    Ok(ByteRange { offset, length })
}

/// A probability from 0 to 1.
fn parse_probability(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!(
            "invalid probability {text:?}: use a number from 0 to 1, e.g. 0.01"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn ranges_and_probabilities() {
        let r = parse_range("1M,4K").unwrap();
        assert_eq!((r.offset, r.length), (1 << 20, Some(4096)));
        assert_eq!(parse_range("512").unwrap().length, None);
        assert!(
            parse_range("1M,x")
                .unwrap_err()
                .contains("invalid size \"x\"")
        );
        assert_eq!(parse_probability("0.25"), Ok(0.25));
        assert!(parse_probability("1.5").is_err());
        assert!(parse_probability("NaN").is_err());
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli =
            Cli::try_parse_from(["ferrosan", "disk", "list", "--json", "--pool", "/p"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.pool, PathBuf::from("/p"));
    }

    #[test]
    fn sizes_and_lists_parse() {
        let cli = Cli::try_parse_from([
            "ferrosan",
            "group",
            "create",
            "g0",
            "--raid",
            "raid5",
            "--disks",
            "a,b,c",
            "--stripe-size",
            "64K",
        ])
        .unwrap();
        match cli.command {
            Command::Group(GroupCmd::Create(args)) => {
                let req = args.request();
                assert_eq!(req.raid, RaidLevelName::Raid5);
                assert_eq!(req.disks, ["a", "b", "c"]);
                assert_eq!(req.stripe_size, Some(65536));
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn copy_create_parses_modes_and_schemes() {
        let argv = [
            "ferrosan",
            "copy",
            "create",
            "v0",
            "c0",
            "--mode",
            "a1",
            "--meta",
            "multilevel-bitmap",
            "--read-only",
            "--pool-group",
            "g1",
        ];
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Copy(CopyCmd::Create(args)) => {
                let req = args.request();
                assert_eq!((req.source.as_str(), req.name.as_str()), ("v0", "c0"));
                assert_eq!(req.mode, Some(CopyMode::Cow));
                assert_eq!(req.meta, Some(Scheme::MultilevelBitmap));
                assert!(req.read_only);
                assert_eq!(req.pool_group.as_deref(), Some("g1"));
            }
            other => panic!("parsed as {other:?}"),
        }
        let argv = ["ferrosan", "copy", "create", "v0", "c0"];
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Copy(CopyCmd::Create(args)) => {
                let req = args.request();
                assert_eq!((req.mode, req.meta, req.read_only), (None, None, false));
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn copy_names_that_do_not_parse_are_usage_errors_naming_the_choices() {
        let err = |argv: &[&str]| {
            let e = Cli::try_parse_from(argv).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{argv:?}");
            e.to_string()
        };
        let msg = err(&["ferrosan", "copy", "create", "v", "c", "--meta", "btree"]);
        assert!(
            msg.contains(
                "use full-pointer, changed-pointer, bitmap, multilevel-bitmap or partial-bitmap"
            ),
            "{msg}"
        );
        let msg = err(&["ferrosan", "copy", "create", "v", "c", "--mode", "mirror"]);
        assert!(msg.contains("use cow or row"), "{msg}");
        let msg = err(&["ferrosan", "copy", "split", "c", "--policy", "biggest"]);
        assert!(msg.contains("use move-smaller or move-larger"), "{msg}");
    }

    #[test]
    fn usage_errors_say_what_is_wrong() {
        let err = Cli::try_parse_from(["ferrosan", "disk", "add", "d0", "--size", "12Q"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("invalid size \"12Q\": use a number with an optional K, M, G, T suffix"),
            "{err}"
        );
        let err = Cli::try_parse_from(["ferrosan", "disk", "add", "d0"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let both = [
            "ferrosan", "disk", "add", "d0", "--size", "1G", "--path", "/x",
        ];
        assert!(Cli::try_parse_from(both).is_err());
        let err = Cli::try_parse_from(["ferrosan", "group", "create", "g", "--raid", "raid9"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown RAID level"), "{err}");
    }
}
