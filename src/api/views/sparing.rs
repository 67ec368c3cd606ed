//! Failure-anticipating sparing's requests and views (seed 002, section
//! B): `sparing status` prints table T1 (RAID groups), the disks with
//! their error counts against the policy (the seed's first control unit)
//! and every sparing under way.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::limits::Name;
use super::{DiskStatus, RaidLevelName};
use crate::json::whole_opt;

/// Largest sparing window: 30 days.
pub const MAX_WINDOW_SECS: u64 = 30 * 24 * 3600;
/// Largest threshold.
pub const MAX_THRESHOLD: u64 = 1_000_000_000;

/// `sparing policy [--threshold N] [--window T]`: what is not given stays.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SparingPolicyRequest {
    /// Errors within the window that make a member disk failing.
    #[serde(default, deserialize_with = "whole_opt")]
    #[schema(minimum = 1, maximum = 1000000000)]
    pub threshold: Option<u64>,
    /// The window, in seconds.
    #[serde(default, deserialize_with = "whole_opt")]
    #[schema(minimum = 1, maximum = 2592000)]
    pub window_secs: Option<u64>,
}

/// The policy in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SparingPolicyInfo {
    pub threshold: u64,
    pub window_secs: u64,
}

/// `sparing start DISK [--spare S]`: a drill, or sparing by hand.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SparingStartRequest {
    /// The member disk to copy to a spare.
    #[schema(value_type = Name)]
    pub disk: String,
    /// The spare to copy it to; default: the smallest spare that fits.
    #[serde(default)]
    #[schema(value_type = Option<Name>)]
    pub spare: Option<String>,
    /// Where the group's host writes go while the copy runs; default:
    /// the best available (a free work volume, else a work disk, else
    /// secondary volumes in an unused group, else none).
    #[serde(default)]
    pub backup_storage: Option<BackupStorage>,
}

/// Backup storage for a sparing's diverted writes (seed 002).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BackupStorage {
    /// One secondary volume per volume of the group, made in a RAID group
    /// that holds no volume, deleted after the write-back.
    Secondary,
    /// A work volume set aside with `sparing work-volume add`.
    WorkVolume,
    /// A work disk set aside with `sparing work-disk add`: the group's
    /// disk-level writes (data and parity) are appended to it.
    WorkDisk,
    /// No diversion: host writes keep reaching the group.
    None,
}

impl std::str::FromStr for BackupStorage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "secondary" => Ok(BackupStorage::Secondary),
            "work-volume" => Ok(BackupStorage::WorkVolume),
            "work-disk" => Ok(BackupStorage::WorkDisk),
            "none" => Ok(BackupStorage::None),
            other => Err(format!(
                "unknown backup storage {other:?}: use secondary, work-volume, work-disk or none"
            )),
        }
    }
}

/// Table T1: one RAID group.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SparingGroupRow {
    pub group: String,
    pub volumes: Vec<String>,
    pub disks: Vec<String>,
    pub raid_level: RaidLevelName,
}

/// One disk as the first control unit sees it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SparingDiskRow {
    pub disk: String,
    pub capacity: u64,
    pub group: Option<String>,
    /// Read and write errors since the disk was opened.
    pub errors: u64,
    /// Errors within the policy's window.
    pub recent_errors: u64,
    pub status: DiskStatus,
    /// `failure anticipated`, `sparing copy source`, `sparing copy
    /// target`, `spare`, `work disk`, or nothing.
    pub sparing: Option<String>,
    /// Table T5's status: `RENEWED DATA BEING BACKED UP` for every disk
    /// of a group whose disk-level writes go to a work disk.
    #[serde(default)]
    pub backup: Option<String>,
}

/// One sparing under way.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SparingInfo {
    pub disk: String,
    pub group: String,
    pub slot: usize,
    pub spare: String,
    /// The sparing copy (a `replace` job): none for a moment while it starts.
    pub job: Option<u64>,
    /// Rows copied of `total`.
    pub done: u64,
    pub total: u64,
    pub reason: String,
    /// Seconds since the epoch.
    pub started: u64,
    /// Where the host's writes go meanwhile: `work volume W (diverting)`,
    /// `work volume W (writing back)`, or none (they reach the group).
    pub diversion: Option<String>,
    /// Host writes (in units of the work volume's slots) that went to the
    /// work volume.
    pub diverted: u64,
    /// Host writes (units) that reached the group while diverting,
    /// because the work volume was full (an alarm says so).
    pub overflowed: u64,
    /// Units written back to the group so far.
    pub written_back: u64,
}

/// `sparing status`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SparingStatus {
    pub policy: SparingPolicyInfo,
    pub groups: Vec<SparingGroupRow>,
    pub disks: Vec<SparingDiskRow>,
    pub sparings: Vec<SparingInfo>,
    /// What needs the administrator: disks past the threshold that could
    /// not be spared, and why; a sparing copy that stopped; a work volume
    /// that filled up; a second failure in a group being spared.
    pub alarms: Vec<String>,
    /// Passes of the monitor since the daemon started (one a second): a
    /// pass samples every disk and starts what is due.
    pub passes: u64,
    /// Table T4: the work volumes and what they hold.
    pub work_volumes: Vec<WorkVolumeRow>,
    /// Table T2's rows of sparings that divert to secondary volumes.
    #[serde(default)]
    pub t2: Vec<SparingT2Row>,
    /// Table T6: the work disks and what they serve.
    #[serde(default)]
    pub work_disks: Vec<WorkDiskRow>,
    /// Table T7: the work disks' mapping rows in append order, the first
    /// 256 of `t7_rows`.
    #[serde(default)]
    pub t7: Vec<T7Row>,
    #[serde(default)]
    pub t7_rows: u64,
}

/// A row of table T6 (FIG. 15B/15C): a work disk, `UNUSED` or `IN USE`,
/// the main disks whose disk-level writes it holds and its terminal
/// address (the last unit written, 1-based; none when empty).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkDiskRow {
    pub disk: String,
    pub capacity: u64,
    pub status: String,
    pub main_disks: Vec<String>,
    pub terminal: Option<u64>,
    /// Units held now, of `units`.
    pub units_used: u64,
    pub units: u64,
    /// Bytes per unit (the mapping granularity of T7's addresses).
    pub unit: u64,
    /// The failing disks whose sparings use it (several groups may share
    /// one work disk, FIG. 20B).
    pub sparings: Vec<String>,
}

/// A row of table T7 (FIG. 16): a unit of a main disk (its address in
/// units from the start of the disk's data) and where on the work disk
/// it is (1-based, in append order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct T7Row {
    pub main_disk: String,
    pub main_address: u64,
    pub work_disk: String,
    pub work_address: u64,
}

/// `sparing work-disk add DISK`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkDiskRequest {
    #[schema(value_type = Name)]
    pub disk: String,
}

/// A row of table T2 (FIG. 2B): a volume of the spared group and the
/// secondary volume its writes go to.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SparingT2Row {
    pub pvol: String,
    pub svol: String,
    /// UPDATE DATA BEING BACKED UP while the copy runs; WRITING BACK after.
    pub status: String,
    /// Tracks the secondary holds, of `tracks`.
    pub tracks_set: u64,
    pub tracks: u64,
    /// The differential bitmap, at most 64 characters (`1`: held).
    pub bitmap: String,
}

/// A row of table T4 (FIG. 11A/11B): a work volume, the primary volumes
/// whose writes it holds now, its terminal address (the last slot used,
/// 1-based; none when empty) and its usage bitmap (one character per
/// slot, the first 64).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkVolumeRow {
    pub volume: String,
    pub capacity: u64,
    pub primaries: Vec<String>,
    pub terminal: Option<u64>,
    pub slots_used: u64,
    pub bitmap: String,
    /// The failing disks whose sparings use it: several groups sparing at
    /// once share one work volume, their entries keyed by main volume.
    pub sparings: Vec<String>,
}

/// `sparing work-volume add VOLUME`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkVolumeRequest {
    pub volume: String,
}
