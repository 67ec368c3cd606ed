//! The command line: `ferrosan [--pool DIR] [--json] <noun> <verb>`.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};

use super::size::parse_size;
use crate::api::views::{
    ByteRange, CopyCreateRequest, CopyMode, DiskAddRequest, GroupCreateRequest, InjectRequest,
    RaidLevelName, Scheme, SplitPolicy, VolumeCreateRequest,
};

/// A software storage array: RAID volumes and instant copies, served over NBD.
///
/// `ferrosan serve` runs the daemon on a pool directory. Every other command
/// asks that daemon (through `<pool>/api.sock`) and prints a table, or the
/// API's JSON with --json.
#[derive(Debug, Parser)]
#[command(name = "ferrosan", version, propagate_version = true, after_long_help = MAIN_AFTER)]
pub struct Cli {
    /// Pool directory: its database, disk files and sockets.
    #[arg(
        long,
        global = true,
        env = "FERROSAN_POOL",
        hide_env_values = true,
        default_value = "./ferrosan-data",
        value_name = "DIR"
    )]
    pub pool: PathBuf,
    /// Print the API's JSON instead of tables and lines.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// After the main help: the size rule and a first session.
const MAIN_AFTER: &str = "\
Sizes: a number with an optional unit. K, M, G, T, P and KiB, MiB, GiB, TiB, PiB
count in 1024s (10G = 10GiB = 10 x 2^30 bytes); kB, MB, GB, TB, PB count in 1000s
(10GB = 10 x 10^9 bytes, as on a disk's label); a bare number is bytes. Sizes
are printed in 1024s: 1.0 GiB.

Examples:
  ferrosan serve                            run the daemon on ./ferrosan-data
  ferrosan volume list                      volumes and their NBD addresses
  ferrosan copy create vol0 vol0-snap       an instant copy of vol0, usable at once
  ferrosan --json job list                  jobs, as JSON";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: serve every volume over NBD, and the management API.
    ///
    /// Serves NBD on --listen and on <pool>/nbd.sock, and the REST API (which
    /// every other ferrosan command uses) on <pool>/api.sock, mode 0600. On a
    /// new, empty pool it first creates a demo setup: 4 sparse 1 GiB disk
    /// files, a RAID-5 group g0 and a 2 GiB volume vol0. Prints a banner on
    /// stdout (the pool, the NBD address and the volumes), then runs in the
    /// foreground until SIGTERM or Ctrl-C: it answers the requests in
    /// flight, flushes every disk and exits.
    Serve(ServeArgs),
    /// The pool as a whole: where it is and how to reach its daemon.
    #[command(subcommand)]
    Pool(PoolCmd),
    /// Disks: the files or block devices that RAID groups are made of.
    #[command(subcommand)]
    Disk(DiskCmd),
    /// RAID groups: disks combined into one space that volumes are cut from.
    #[command(subcommand)]
    Group(GroupCmd),
    /// Volumes: block devices that clients use, each an NBD export.
    #[command(subcommand)]
    Volume(VolumeCmd),
    /// Background jobs (rebuilds, disk replacements, resyncs, copy
    /// restores): progress, pause, resume, cancel, rate limit.
    #[command(subcommand)]
    Job(JobCmd),
    /// Instant copies: a new volume showing another one as it was at one
    /// moment, usable at once.
    #[command(subcommand)]
    Copy(CopyCmd),
    /// Mirror pairs: a full copy of a volume (S-VOL) kept in sync with it,
    /// split into a point-in-time image at once, resynced by bitmap.
    #[command(subcommand)]
    Pair(super::pair::PairCmd),
    /// S-VOL groups: split S-VOLs of one P-VOL used as one; RO members
    /// share reads and cover each other's read errors, an RW member keeps
    /// its writes in an increments volume.
    #[command(subcommand, name = "svol-group")]
    SvolGroup(super::svol::SvolCmd),
    /// Failure-anticipating sparing: a member disk whose errors pass the
    /// policy is copied to a spare while it still works, then replaced.
    #[command(subcommand)]
    Sparing(super::sparing::SparingCmd),
    /// Print the API's OpenAPI document.
    #[command(hide = true)]
    Openapi,
}

/// `ferrosan serve`'s options.
#[derive(Debug, Args)]
#[command(after_long_help = SERVE_AFTER)]
pub struct ServeArgs {
    /// Address and port for NBD over TCP (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:10809", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// Allow `disk inject`, which makes a disk's I/O fail on purpose (for
    /// testing how groups cope).
    #[arg(long)]
    pub fault_injection: bool,
    /// I/O threads (default: one per CPU).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub workers: Option<u64>,
    /// Seconds a region of a RAID-1 or RAID-5 group stays marked in the
    /// write-intent bitmap after its last write. Longer: fewer bitmap updates
    /// while writing; shorter: less to resync after a crash.
    #[arg(long, value_name = "SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub intent_clear_interval: u64,
    /// Bytes per second a copy-gc job may move (free-space collection of
    /// instant copies, started by itself after a copy is deleted), e.g.
    /// 200M, so host I/O keeps its priority; 0: no limit. `job rate`
    /// changes a running one.
    #[arg(long, value_name = "BYTES", default_value = "0", value_parser = parse_size)]
    pub gc_rate: u64,
    /// Microseconds an I/O thread under load keeps polling for work after
    /// its last disk operation instead of sleeping: it costs CPU while
    /// requests flow (up to one core per busy thread) and saves the
    /// wake-up between them; an idle or lightly used daemon never polls.
    /// 0: never poll.
    #[arg(long, value_name = "MICROS", default_value_t = crate::daemon::DEFAULT_POLL_US,
          value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub poll_us: u64,
    /// serve has no JSON output: it is refused with a pointer to `pool show`.
    #[arg(long, hide = true)]
    pub json: bool,
}

/// After `serve --help`: logging, and JSON.
const SERVE_AFTER: &str = "\
Logging: the daemon logs to stderr, warnings and errors only by default.
RUST_LOG chooses more: a level, or comma-separated target=level pairs:
  RUST_LOG=info ferrosan serve              also copies taken, jobs finished, clients dropped
  RUST_LOG=debug ferrosan serve             everything, libraries included
  RUST_LOG=ferrosan=debug ferrosan serve    ferrosan's own debug messages (API requests, NBD connections)
  RUST_LOG=warn,ferrosan::nbd=debug ferrosan serve    one layer in detail

The banner is text. For the same as JSON while the daemon runs, use
`ferrosan --json pool show` (addresses) and `ferrosan --json volume list`.";

#[derive(Debug, Subcommand)]
pub enum PoolCmd {
    /// Where the pool is, how to reach its daemon (NBD address, sockets),
    /// what it holds, and problems found at start (missing or foreign disks).
    Show,
    /// Check the copy stores: every copy map entry against the label its
    /// slot carries on the disks. Reads only; exits 1 naming each
    /// difference found.
    Check,
    /// With the daemon stopped: rebuild the copy maps (which slot holds
    /// which track of which copy) from the labels the copy stores carry on
    /// the disks, when the pool database lost or damaged them. The rest of
    /// the database (disks, groups, volumes, copy families) must be there.
    Recover,
}

#[derive(Debug, Subcommand)]
pub enum DiskCmd {
    /// Add a disk: a new sparse file in <pool>/disks (--size), or an existing
    /// file or block device (--path).
    Add(DiskAdd),
    /// List disks: size, space allocated, status, group and I/O counters.
    List,
    /// One disk in detail: its group and slot, I/O counters and errors.
    Show {
        /// The disk's name.
        name: String,
    },
    /// Remove a disk that is in no group; a disk file ferrosan created is deleted.
    Remove {
        /// The disk's name.
        name: String,
    },
    /// Take a disk out of its group, as if it had broken: its group runs
    /// degraded, and a hot spare, if there is one, takes its place.
    /// Refused when the group would stop serving, unless --force.
    Fail {
        /// The disk's name.
        name: String,
        /// Even if its group then stops serving: every volume of the group
        /// fails its I/O until the disk is reinstated.
        #[arg(long)]
        force: bool,
    },
    /// Take back a failed disk whose data is intact: only what was written
    /// while it was out is copied to it (md's --re-add).
    Reinstate {
        /// The disk's name.
        name: String,
        /// Wait for the resync, with a progress bar.
        #[arg(long)]
        wait: bool,
    },
    /// Replace disk OLD in its group by NEW, in a background job.
    ///
    /// A working OLD keeps serving while it is copied to NEW (hot replace: the
    /// group stays redundant throughout); a failed OLD is rebuilt onto NEW from
    /// the other disks. OLD leaves the group when the job is done.
    Replace {
        /// The disk to take out of its group.
        old: String,
        /// A free disk or a hot spare, at least as large as OLD's part in the group.
        new: String,
        /// Wait for the job, with a progress bar.
        #[arg(long)]
        wait: bool,
    },
    /// Make a disk's reads or writes fail on purpose, to test how its group
    /// copes (needs `serve --fault-injection`). Rules add up until --clear.
    Inject(DiskInject),
}

#[derive(Debug, Subcommand)]
pub enum GroupCmd {
    /// Create a RAID group from free disks.
    Create(GroupCreate),
    /// List groups: RAID level, disks, volumes, capacity, free space, health.
    List,
    /// One group in detail, with each slot's disk, state and rebuild progress.
    Show {
        /// The group's name.
        name: String,
    },
    /// Delete a group that holds no volume; its disks become free.
    Delete {
        /// The group's name.
        name: String,
    },
    /// Add disks to the end of a concat group: its capacity grows at once and
    /// no data moves. Groups of other RAID levels cannot grow yet.
    Extend {
        /// The group's name.
        name: String,
        /// Free disks to append, comma-separated.
        #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
        disks: Vec<String>,
    },
    /// Restripe a raid0 or raid5 group while its volumes keep serving: add
    /// disks, change the stripe size, or both. The group is first copied,
    /// in its current layout, onto the copy disks (one per member, each at
    /// least as large); then it switches to the new layout with host I/O
    /// paused for milliseconds, and each track moves to its new place in
    /// the background (or first, when a host touches it). The copy disks
    /// are free again at the end. Follow it with `group reshape-status`;
    /// pause it with `job pause`. Only groups of plain volumes (no copy,
    /// pair or S-VOL group) are restriped.
    Reshape {
        /// The group's name.
        name: String,
        /// Free disks to add as new members, comma-separated.
        #[arg(long, value_delimiter = ',', num_args = 1..)]
        add_disks: Vec<String>,
        /// The new stripe size (a power of two, 4K to 16M); default: unchanged.
        #[arg(long, value_name = "SIZE", value_parser = parse_size, allow_hyphen_values = true)]
        stripe_size: Option<u64>,
        /// Free disks for the copy in the current layout, one per member in
        /// slot order, comma-separated.
        #[arg(long, alias = "bcv-disks", value_delimiter = ',', required = true, num_args = 1..)]
        copy_disks: Vec<String>,
        /// Wait until the restripe is done, with a progress bar.
        #[arg(long)]
        wait: bool,
    },
    /// The restripe of a group under way: phase, layouts, progress, and the
    /// pause measured when it switched layouts.
    ReshapeStatus {
        /// The group's name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum VolumeCmd {
    /// Create a volume in a group; it is served over NBD at once, under its name.
    Create(VolumeCreate),
    /// List volumes: size, group, NBD address and connected clients.
    List,
    /// One volume in detail, with where its data lies in the group.
    Show {
        /// The volume's name.
        name: String,
    },
    /// Delete a volume and discard its data (refused while NBD clients are
    /// connected, unless --force).
    Delete {
        /// The volume's name.
        name: String,
        /// Delete even while NBD clients are connected: their I/O then fails.
        #[arg(long)]
        force: bool,
    },
    /// Grow a volume; no data moves, and clients see the new size when they
    /// next connect.
    Grow {
        /// The volume's name.
        name: String,
        /// The new size (not the increment), e.g. 20G: a multiple of the
        /// volume's track size.
        #[arg(long, value_parser = parse_size, allow_hyphen_values = true)]
        size: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobCmd {
    /// List jobs with progress, rate and time left.
    List,
    /// One job in detail.
    Show {
        /// The job's number, as `job list` shows it.
        id: u64,
    },
    /// Pause a running job; it stays paused, across restarts too, until resumed.
    Pause {
        /// The job's number, as `job list` shows it.
        id: u64,
    },
    /// Resume a paused job.
    Resume {
        /// The job's number, as `job list` shows it.
        id: u64,
    },
    /// Stop a running or paused job for good.
    Cancel {
        /// The job's number, as `job list` shows it.
        id: u64,
    },
    /// Limit a running or paused job's rate, e.g. `job rate 3 100M` for
    /// 100 MiB/s; 0 removes the limit. With --floor the job also slows
    /// down to the floor while hosts do I/O (as md's speed_limit_min).
    Rate {
        /// The job's number, as `job list` shows it.
        id: u64,
        /// Bytes per second, e.g. 100M; 0 for no limit.
        #[arg(value_parser = parse_size, allow_hyphen_values = true)]
        bytes_per_sec: u64,
        /// Bytes per second the job keeps while hosts do I/O, e.g. 10M;
        /// 0: it does not slow down for hosts (the default).
        #[arg(long, value_name = "BYTES", value_parser = parse_size)]
        floor: Option<u64>,
    },
    /// Wait for a job to finish, with a progress bar on a terminal; fails if
    /// the job fails or is cancelled, or makes no progress for --timeout.
    Wait {
        /// The job's number, as `job list` shows it.
        id: u64,
        /// Give up (exit 1, naming the job and how far it got) when the job
        /// has made no progress for this long, e.g. 30s, 10m, 2h; 0 waits
        /// without a limit. A paused job makes no progress. The job itself
        /// goes on.
        #[arg(long, value_name = "DURATION", default_value = super::wait::STALL_DEFAULT,
              value_parser = parse_timeout)]
        timeout: Timeout,
    },
}

#[derive(Debug, Subcommand)]
pub enum CopyCmd {
    /// Make NAME an instant copy of SRC: a new volume showing SRC as it is
    /// now, usable at once; no data is copied now.
    Create(CopyCreate),
    /// List copies: source, mode, tracks changed since the copy, new space
    /// and metadata memory used. Warns when the new space is 80% used.
    List,
    /// One copy in detail.
    Show {
        /// The copy's name.
        name: String,
    },
    /// Delete a copy and give back the space its changes took.
    ///
    /// Deleting the last copy of a volume copied in row mode starts a job that
    /// moves the volume's own new data back into its place (copy-fold);
    /// --wait follows it.
    Delete {
        /// The copy's name.
        name: String,
        /// Wait for that job, if one started, with a progress bar.
        #[arg(long)]
        wait: bool,
    },
    /// Roll the copy's source back to the copy's image.
    ///
    /// The source shows the copy's data at once; where data has to move, a
    /// job moves it in the background while reads already see the copy's
    /// data. The copy itself is unchanged.
    Restore {
        /// The copy's name.
        name: String,
        /// Wait for the job moving data, if one started, with a progress bar.
        #[arg(long)]
        wait: bool,
        /// Even while NBD clients use the source: its contents change under
        /// them, and what they wrote since the copy is gone.
        #[arg(long)]
        force: bool,
    },
    /// Give back the space of copy points no copy reads any more.
    ///
    /// Deleting a copy leaves the data its source had at the copy point
    /// read only by the source; a job (copy-gc) merges it with the source's
    /// newer data and gives back the space one of the two held. It starts
    /// by itself after a deletion; this starts it for every volume now.
    Gc {
        /// Wait until nothing is left to collect, with a progress bar.
        #[arg(long)]
        wait: bool,
    },
    /// Make a copy independent of its original, so that either can be
    /// deleted without touching the other.
    ///
    /// Counts the tracks each of the two has written since the copy, and
    /// moves one side's new data into the space they share, in a job. Only
    /// for a volume with one copy.
    Split {
        /// The copy's name.
        name: String,
        /// Which side's new data moves: move-smaller (the default: less to
        /// copy) or move-larger.
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
    /// Name of the new copy: a new volume, exported under that name.
    name: String,
    /// How writes after the copy are kept apart (default row, or the mode
    /// of SRC's other copies).
    ///
    /// row: redirect-on-write: new writes, to the source or the copy, go to
    /// new space; the data both share stays where it is. Writes cost the
    /// same as before the copy.
    ///
    /// cow: copy-on-write: the source keeps writing in place; before it
    /// overwrites data the copy still needs, that data is copied to new
    /// space (each first overwrite costs a copy).
    #[arg(long, value_name = "MODE")]
    mode: Option<CopyMode>,
    /// How the copy records which tracks changed and where their data lies.
    /// It sets the memory and new space the copy takes, never what it reads.
    ///
    /// partial-bitmap: bitmaps for the parts written, new space reserved 64
    /// tracks at a time (default for a volume's first copy).
    ///
    /// changed-pointer: one pointer per changed track (default when SRC is a
    /// copy with data of its own).
    ///
    /// full-pointer: a pointer for every track (16 bytes per track of memory).
    ///
    /// bitmap: a bit per track; reserves new space for the whole volume at once.
    ///
    /// multilevel-bitmap: two levels of bits; reserves new space for the
    /// whole volume at once.
    #[arg(long, value_name = "SCHEME")]
    meta: Option<Scheme>,
    /// Export the copy read-only.
    #[arg(long)]
    read_only: bool,
    /// The RAID group the copies' new space comes from (default: SRC's
    /// group). All copies of one volume share it.
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
    /// Name of the new disk in the pool.
    name: String,
    /// Size of a new sparse disk file, e.g. 1G (at least 2M; its first MiB
    /// holds ferrosan's label).
    #[arg(long, value_parser = parse_size, allow_hyphen_values = true)]
    size: Option<u64>,
    /// An existing file or block device to use: it gets ferrosan's label and
    /// its contents are overwritten (refused, unless --force, when it holds
    /// data or another pool's label; never for a disk this pool uses).
    #[arg(long)]
    path: Option<PathBuf>,
    /// Add it as a hot spare: it takes the place of a failed disk in a
    /// RAID-1 or RAID-5 group by itself.
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
    .args(["read_error_at", "write_error_at", "error_rate", "vanish", "iops", "clear"])))]
pub struct DiskInject {
    /// The disk's name.
    pub name: String,
    /// Reads overlapping OFFSET[,LEN] fail; sizes, in the disk's data area
    /// (LEN defaults to 512).
    #[arg(long, value_name = "OFFSET[,LEN]", value_parser = parse_range,
          allow_hyphen_values = true)]
    read_error_at: Option<ByteRange>,
    /// Writes overlapping OFFSET[,LEN] fail; sizes, in the disk's data area
    /// (LEN defaults to 512).
    #[arg(long, value_name = "OFFSET[,LEN]", value_parser = parse_range,
          allow_hyphen_values = true)]
    write_error_at: Option<ByteRange>,
    /// Probability (0 to 1) that any I/O fails.
    #[arg(long, value_name = "P", value_parser = parse_probability,
          allow_hyphen_values = true)]
    error_rate: Option<f64>,
    /// Every I/O fails, as if the disk were pulled.
    #[arg(long)]
    vanish: bool,
    /// At most N reads and writes a second (0: no cap), as one slow
    /// spindle: for benchmarks on a machine with one real disk.
    #[arg(long, value_name = "N")]
    iops: Option<u32>,
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
            iops: self.iops,
            clear: self.clear,
        }
    }
}

#[derive(Debug, Args)]
pub struct GroupCreate {
    /// Name of the new group.
    name: String,
    /// The RAID level.
    ///
    /// concat: the disks end to end, no redundancy (1 disk or more; can grow
    /// with `group extend`).
    ///
    /// raid0: striped across the disks, no redundancy (2 or more).
    ///
    /// raid1: every disk a full mirror; survives all but one failing (2 or more).
    ///
    /// raid5: striped with parity; survives one disk failing (3 or more).
    #[arg(long, value_name = "LEVEL")]
    raid: RaidLevelName,
    /// Free disks, comma-separated, in slot order. Except in concat, each
    /// disk is used up to the size of the smallest.
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    disks: Vec<String>,
    /// How much goes on one disk before the next (raid0, raid5), e.g. 64K:
    /// a power of two from 4K to 16M (default 64K).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, allow_hyphen_values = true)]
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
    /// Name of the new volume, and of its NBD export.
    name: String,
    /// The RAID group its space comes from.
    #[arg(long)]
    group: String,
    /// Size, e.g. 10G: a multiple of the track size.
    #[arg(long, value_parser = parse_size, allow_hyphen_values = true)]
    size: u64,
    /// The unit in which instant copies copy and track changed data, e.g.
    /// 64K: a power of two from 4K to 1M (default 64K).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, allow_hyphen_values = true)]
    track_size: Option<u64>,
    /// Export it read-only.
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

/// A bound on a wait; `Timeout(None)` waits without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(pub Option<std::time::Duration>);

/// A duration: a number with a unit, `ms`, `s`, `m` or `h` (a bare number
/// is seconds); 0 is no limit.
pub fn parse_timeout(text: &str) -> Result<Timeout, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || {
        format!(
            "invalid duration {text:?}: use a number and a unit, e.g. 30s, 10m or 2h (0: no limit)"
        )
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let ms = match unit.trim() {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(bad()),
    }
    .ok_or_else(bad)?;
    Ok(Timeout(
        (ms > 0).then(|| std::time::Duration::from_millis(ms)),
    ))
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
mod tests;
