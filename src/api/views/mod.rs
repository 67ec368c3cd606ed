//! views: the requests the management interface accepts and the views it
//! returns — the API's JSON bodies (with their OpenAPI schemas) and the
//! CLI's `--json` output.
//!
//! A leaf: it imports only the model's enums (`meta::model`), which it
//! shows but never defines. Persisted records live in `meta::model`,
//! separately: changing a view never changes the on-disk format. The
//! engine builds views, the API serves them, the CLI reads them.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub mod limits;
mod pairs;
pub mod reshape;
mod sparing;
mod svol;

pub use pairs::*;
pub use sparing::*;
pub use svol::*;

use crate::json::{object_opt, whole, whole_opt, whole_opt_u32};
pub use crate::meta::model::copy::{CopyMode, Scheme};
pub use crate::meta::model::{JobState, RaidLevelName};
use limits::{Name, StripeSize, TrackSize};

// ---------------------------------------------------------------- pool

/// The pool and how to reach it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PoolInfo {
    #[schema(value_type = String)]
    pub path: PathBuf,
    pub id: String,
    pub version: String,
    /// `nbd://HOST:PORT` the daemon listens on, if any.
    pub nbd_tcp: Option<String>,
    /// Path of the NBD Unix socket.
    #[schema(value_type = String)]
    pub nbd_unix: PathBuf,
    #[schema(value_type = String)]
    pub api_socket: PathBuf,
    pub fault_injection: bool,
    pub disks: usize,
    pub groups: usize,
    pub volumes: usize,
    /// Problems found at start (missing, foreign or truncated disks...).
    pub problems: Vec<String>,
}

// ---------------------------------------------------------------- disks

/// Health of a disk, as `disk list` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DiskStatus {
    /// In service (a group member, or free).
    Ok,
    /// Failed (by an I/O error or `disk fail`); not used.
    Failed,
    /// A hot spare, waiting.
    Spare,
    /// Being rebuilt or copied onto.
    Rebuilding,
    /// Its file or device is gone.
    Missing,
    /// Present but not usable: another pool's, truncated, unlabelled, damaged.
    Unusable,
}

impl std::fmt::Display for DiskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            DiskStatus::Ok => "ok",
            DiskStatus::Failed => "failed",
            DiskStatus::Spare => "spare",
            DiskStatus::Rebuilding => "rebuilding",
            DiskStatus::Missing => "missing",
            DiskStatus::Unusable => "unusable",
        };
        f.write_str(s)
    }
}

/// `disk add`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskAddRequest {
    #[schema(value_type = Name)]
    pub name: String,
    /// Create a sparse file of this many bytes in the pool (at least 2 MiB:
    /// the label area and 1 MiB of data).
    #[serde(default, deserialize_with = "whole_opt")]
    #[schema(minimum = 2097152)]
    pub size: Option<u64>,
    /// Adopt this existing file or block device instead (an absolute path).
    #[schema(value_type = Option<String>, pattern = "^/")]
    pub path: Option<PathBuf>,
    /// Add as a hot spare.
    #[serde(default)]
    pub spare: bool,
    /// Adopt `path` even though it holds data or another pool's label
    /// (that data is lost). Never overrides a disk this pool uses.
    #[serde(default)]
    pub force: bool,
}

/// `disk fail`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskFailRequest {
    /// Fail it even if its group then stops serving (every volume of the
    /// group fails its I/O until the disk is reinstated).
    #[serde(default)]
    pub force: bool,
}

/// What `disk reinstate` did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DiskReinstateInfo {
    pub disk: String,
    /// The group and slot it serves again (none for a free disk whose
    /// failed flag was cleared).
    pub group: Option<String>,
    pub slot: Option<usize>,
    /// The job resyncing what was written while it was out; none when it
    /// missed nothing.
    pub job: Option<JobInfo>,
}

/// A disk's I/O counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CounterSnapshot {
    pub reads: u64,
    pub writes: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    pub flushes: u64,
}

/// The fault rules in force on one disk (`disk inject`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FaultRules {
    /// Reads overlapping any (offset, length) range fail.
    #[serde(with = "crate::json::spans")]
    #[schema(value_type = Vec<crate::json::Span>)]
    pub read_errors: Vec<(u64, u64)>,
    /// Writes overlapping any (offset, length) range fail.
    #[serde(with = "crate::json::spans")]
    #[schema(value_type = Vec<crate::json::Span>)]
    pub write_errors: Vec<(u64, u64)>,
    /// Probability (0..=1) that any I/O fails.
    pub error_rate: f64,
    /// Every I/O fails.
    pub vanished: bool,
    /// At most this many reads and writes a second (a slow spindle);
    /// absent: no cap.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub iops: u32,
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

/// One disk.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DiskInfo {
    pub name: String,
    #[schema(value_type = String)]
    pub path: PathBuf,
    /// Bytes of the device (label area included).
    pub size: u64,
    /// Bytes of the data area RAID uses.
    pub data_size: u64,
    /// Bytes allocated on the backing file (sparse files).
    pub allocated: u64,
    pub status: DiskStatus,
    /// Why the disk is missing, unusable or failed.
    pub problem: Option<String>,
    pub group: Option<String>,
    pub slot: Option<usize>,
    pub counters: CounterSnapshot,
    /// Read and write errors within the sparing policy's window (`sparing
    /// policy`): past its threshold a member is copied to a spare.
    #[serde(default)]
    pub recent_errors: u64,
    /// Fault rules in force (fault-injection mode only).
    pub faults: Option<FaultRules>,
}

/// `disk replace OLD NEW`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskReplaceRequest {
    /// The disk to rebuild onto (a free disk or a spare).
    #[schema(value_type = Name)]
    pub new: String,
}

/// A byte range on a disk's data area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ByteRange {
    #[serde(deserialize_with = "whole")]
    pub offset: u64,
    /// Defaults to 512 bytes.
    #[serde(default, deserialize_with = "whole_opt")]
    pub length: Option<u64>,
}

/// `disk inject`: changes to a disk's fault rules.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InjectRequest {
    #[serde(default, deserialize_with = "object_opt")]
    pub read_error_at: Option<ByteRange>,
    #[serde(default, deserialize_with = "object_opt")]
    pub write_error_at: Option<ByteRange>,
    /// Probability 0..=1 that any I/O fails.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub error_rate: Option<f64>,
    /// At most this many reads and writes a second (0: no cap): one
    /// spindle of its own, for benchmarks.
    #[serde(default, deserialize_with = "whole_opt_u32")]
    pub iops: Option<u32>,
    #[serde(default)]
    pub vanish: bool,
    /// Remove every rule.
    #[serde(default)]
    pub clear: bool,
}

// ---------------------------------------------------------------- groups

/// `group create`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupCreateRequest {
    #[schema(value_type = Name)]
    pub name: String,
    pub raid: RaidLevelName,
    /// Free disks, in slot order (raid1 needs 2 or more, raid5 3 or more).
    #[schema(value_type = Vec<Name>, min_items = 1)]
    pub disks: Vec<String>,
    /// Bytes per strip; default 64 KiB.
    #[serde(default, deserialize_with = "whole_opt")]
    #[schema(value_type = Option<StripeSize>)]
    pub stripe_size: Option<u64>,
}

/// `group extend` (concat only: appends disks, no data moves).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupExtendRequest {
    #[schema(value_type = Vec<Name>, min_items = 1)]
    pub disks: Vec<String>,
}

/// One member slot of a group.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemberInfo {
    pub slot: usize,
    pub disk: Option<String>,
    /// ok, failed, missing, rebuilding
    pub state: String,
    /// Rebuild progress 0..=1 while rebuilding.
    pub progress: Option<f64>,
    /// A failed member whose disk can come back with `disk reinstate`.
    #[serde(default)]
    pub reinstatable: bool,
}

/// One RAID group: a row of seed 002's table T1.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupInfo {
    pub name: String,
    pub raid: RaidLevelName,
    pub stripe_size: u64,
    pub disks: Vec<String>,
    pub volumes: Vec<String>,
    /// Usable bytes.
    pub capacity: u64,
    /// Bytes not allocated to volumes.
    pub free: u64,
    /// optimal, degraded, rebuilding, failed
    pub health: String,
    pub members: Vec<MemberInfo>,
    /// Bytes of the group's address space marked in its write-intent
    /// bitmap: being written, or written while a member was out (what a
    /// resync or a reinstate copies). 0 for groups without redundancy.
    #[serde(default)]
    pub intent_marked: u64,
}

// ---------------------------------------------------------------- volumes

/// `volume create`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeCreateRequest {
    #[schema(value_type = Name)]
    pub name: String,
    #[schema(value_type = Name)]
    pub group: String,
    /// Bytes: a whole number of tracks (so of 4 KiB at least).
    #[serde(deserialize_with = "whole")]
    #[schema(minimum = 4096, multiple_of = 4096)]
    pub size: u64,
    /// Track size (power of two, 4 KiB..=1 MiB); default 64 KiB.
    #[serde(default, deserialize_with = "whole_opt")]
    #[schema(value_type = Option<TrackSize>)]
    pub track_size: Option<u64>,
    #[serde(default)]
    pub read_only: bool,
}

/// `volume grow`: the new size (not the increment).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeGrowRequest {
    /// Bytes: a whole number of tracks (so of 4 KiB at least), not below
    /// the volume's size.
    #[serde(deserialize_with = "whole")]
    #[schema(minimum = 4096, multiple_of = 4096)]
    pub size: u64,
}

/// One volume: an NBD export.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VolumeInfo {
    pub name: String,
    pub group: String,
    pub size: u64,
    pub track_size: u64,
    pub read_only: bool,
    /// NBD connections open to it now.
    pub connections: usize,
    /// How to reach it, e.g. `nbd://127.0.0.1:10809/vol0`.
    pub export: String,
    /// Pieces of the group's address space it occupies, in volume order.
    #[serde(with = "crate::json::spans")]
    #[schema(value_type = Vec<crate::json::Span>)]
    pub extents: Vec<(u64, u64)>,
}

// ---------------------------------------------------------------- jobs

/// What `pool check` found: each copy family's maps compared with the
/// labels its store carries on the disks.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PoolCheck {
    pub families: Vec<FamilyCheck>,
    /// Differences in all families (0: the maps and the disks agree).
    pub differences: u64,
}

/// One copy family's check.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FamilyCheck {
    /// The family's original volume.
    pub origin: String,
    /// Chunks of its store.
    pub chunks: u64,
    /// Chunks made before stores carried labels: not checked.
    pub unlabelled_chunks: u64,
    /// Map entries and reserved slots compared with their labels.
    pub checked: u64,
    /// Labels naming a track a later commit moved elsewhere (harmless:
    /// a freed slot is described free one commit later).
    pub stale: u64,
    pub differences: u64,
    /// The differences, named (the first 50).
    pub problems: Vec<String>,
}

/// A background job: rebuild, resync, and later copies and reshapes.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobInfo {
    pub id: u64,
    /// rebuild, replace, resync, ...
    pub kind: String,
    /// What it works on, e.g. `group g0 slot 2 -> disk d4`.
    pub target: String,
    pub state: JobState,
    /// Units (tracks or stripe rows) done and in all.
    pub done: u64,
    pub total: u64,
    pub unit_bytes: u64,
    pub bytes_per_sec: u64,
    pub eta_secs: Option<u64>,
    /// Rate limit in bytes/s; 0 = unlimited.
    pub rate_limit: u64,
    /// Bytes/s the job slows down to while hosts do I/O; 0 = it does not
    /// slow down for hosts.
    pub rate_floor: u64,
    pub message: Option<String>,
    /// Seconds since the epoch.
    pub created: u64,
    pub updated: u64,
}

/// `job rate`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRateRequest {
    /// Bytes per second; 0 removes the limit.
    #[serde(deserialize_with = "whole")]
    pub bytes_per_sec: u64,
    /// Bytes per second the job slows down to while hosts do I/O (at most
    /// the limit); 0: it does not slow down. None leaves it as it is.
    #[serde(default, deserialize_with = "whole_opt")]
    pub floor: Option<u64>,
}

/// The body of every 4xx/5xx answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiError {
    /// not_found, invalid, conflict, ...
    pub kind: String,
    /// What went wrong and what to do.
    pub message: String,
}

// ---------------------------------------------------------------- copies

/// `copy create SRC NAME`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CopyCreateRequest {
    /// The volume (or copy) to copy.
    #[schema(value_type = Name)]
    pub source: String,
    /// Name of the new copy (a new volume).
    #[schema(value_type = Name)]
    pub name: String,
    /// Default: row (or the mode the source's family already uses).
    pub mode: Option<CopyMode>,
    /// Metadata scheme; default follows the source's mapping type.
    pub meta: Option<Scheme>,
    #[serde(default)]
    pub read_only: bool,
    /// Group the new space comes from; default the source's group.
    #[schema(value_type = Option<Name>)]
    pub pool_group: Option<String>,
}

/// One instant copy, as `copy list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CopyInfo {
    pub name: String,
    /// The image it was copied from.
    pub source: String,
    /// The family's origin volume (the initial area's owner).
    pub origin: String,
    pub mode: CopyMode,
    pub scheme: Scheme,
    pub read_only: bool,
    pub size: u64,
    pub track_size: u64,
    /// Tracks where the copy and its source may differ: what either wrote
    /// since the copy point.
    pub tracks_diverged: u64,
    /// Bytes of new space only this copy holds (freed when it is deleted).
    pub space_used: u64,
    /// Bytes of new space the copy reads but shares with other images
    /// (its source's data at copy points it shares).
    pub space_shared: u64,
    /// The new space of the copy's family (every copy of its origin):
    /// bytes of tracks an image can read (live), bytes held for images
    /// (their areas and slots, live or not), and bytes taken from the
    /// group (whole chunks: held plus room for the next writes). Held
    /// beyond live is what collection (`copy gc`) and deletions give back.
    pub store_live: u64,
    pub store_held: u64,
    pub store_chunks: u64,
    /// Bytes of memory its metadata occupies.
    pub metadata_memory: u64,
    /// Cascade level: 1 for a copy of the original, 2 for a copy of that
    /// copy, and so on.
    pub depth: u64,
    /// False when an A1 copy ran out of space: its reads fail.
    pub valid: bool,
    /// A warning, e.g. when the new space is over 80% full.
    pub warning: Option<String>,
    pub created: u64,
}

/// Which set of new data `copy split` moves into the initial area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SplitPolicy {
    MoveSmaller,
    MoveLarger,
}

impl std::str::FromStr for SplitPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "move-smaller" => Ok(SplitPolicy::MoveSmaller),
            "move-larger" => Ok(SplitPolicy::MoveLarger),
            other => Err(format!(
                "unknown split policy {other:?}: use move-smaller or move-larger"
            )),
        }
    }
}

/// `copy split NAME`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CopySplitRequest {
    /// Default: move-smaller.
    pub policy: Option<SplitPolicy>,
}

/// What `copy split` measured and started (US 6,779,094 claims 7-9).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CopySplitInfo {
    /// Tracks of new data belonging to the original.
    pub n_orig: u64,
    /// Tracks of new data belonging to the copy.
    pub n_copy: u64,
    pub policy: SplitPolicy,
    /// The image whose new data moves into the initial area.
    pub moving: String,
    /// The job doing it (absent when nothing has to move).
    pub job: Option<JobInfo>,
}

/// What `copy delete` did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CopyDeleteInfo {
    /// The copy deleted.
    pub name: String,
    /// The background job folding the original's data back into its
    /// initial area, when the last copy went (absent when nothing moves).
    pub job: Option<JobInfo>,
}

/// What `copy restore` did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CopyRestoreInfo {
    /// The volume restored.
    pub volume: String,
    /// The copy whose image it now shows.
    pub from: String,
    /// The background job moving data (absent when nothing has to move).
    pub job: Option<JobInfo>,
    /// NBD connections of the volume at the restore (only with `force`):
    /// their clients now read the copy's image, and what they cached of
    /// the volume is stale.
    #[serde(default)]
    pub connections: usize,
}

/// `copy restore`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CopyRestoreRequest {
    /// Restore even while NBD clients use the volume: its contents change
    /// under them, and what they wrote since the copy is gone.
    #[serde(default)]
    pub force: bool,
}
