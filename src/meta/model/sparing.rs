//! Records of failure-anticipating sparing (seed 002, US 7,028,216, the
//! "first control unit": count access errors per data disk; past a
//! threshold, copy the disk to a spare before it fails).

#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

/// When a member disk counts as failing: `threshold` errors within the
/// last `window_secs` seconds. The defaults are those of ZFS's fault
/// daemon (zed: 10 I/O errors in 10 minutes degrade a vdev).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SparingPolicy {
    pub threshold: u64,
    pub window_secs: u64,
}

impl Default for SparingPolicy {
    fn default() -> Self {
        SparingPolicy {
            threshold: 10,
            window_secs: 600,
        }
    }
}

/// One sparing under way: `disk` (slot `slot` of `group`) is copied to
/// `spare` by job `job`. Stored before the job starts (job 0 until it
/// has an id), deleted once the spare holds the slot and the failing
/// disk is marked failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SparingRecord {
    pub disk: String,
    pub group: String,
    pub slot: usize,
    pub spare: String,
    pub job: u64,
    /// Why: the errors counted, or a drill by the administrator.
    pub reason: String,
    /// Seconds since the epoch.
    pub started: u64,
    /// The host's writes diverted to a work volume meanwhile, if they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub divert: Option<DivertRecord>,
}

/// A sparing's write diversion: the group's volumes `mains` (main id =
/// index) write to work volume `work` (seed 002, second embodiment), or,
/// when `secondaries` is not empty, each to its secondary volume, the one
/// at the same index (first embodiment); in `write_back` the copy is done
/// and the diverted data goes back to the group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DivertRecord {
    /// The work volume; empty when diverting to secondary volumes.
    pub work: String,
    pub mains: Vec<String>,
    pub write_back: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secondaries: Vec<SecondaryRecord>,
    /// The main id of `mains[0]` in the work volume's map; the others
    /// follow. Not 0 when the work volume is shared with sparings that
    /// came before (FIG. 20A).
    #[serde(default)]
    pub main_base: u16,
    /// The write-back job running now (0: none yet).
    #[serde(default)]
    pub write_back_job: u64,
    /// The work disk, when diverting below the RAID layer (third
    /// embodiment); `mains` are then the group's disks by slot.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub work_disk: String,
}

/// A secondary volume made for a sparing in an unused group (seed 002,
/// first embodiment, FIG. 2B): the same size as its main volume, written
/// at the same addresses; its differential map (which units it holds) is
/// stored as pages of `object`, units of `unit` bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecondaryRecord {
    pub volume: String,
    pub object: u64,
    pub unit: u64,
}

/// A volume set aside as a work volume (table T4 of FIG. 11A): not
/// host-accessible; its slot map is stored as pages of `object`, slots of
/// `unit` bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkVolumeRecord {
    pub volume: String,
    pub object: u64,
    pub unit: u64,
}

/// A disk set aside as a work disk (table T6 of FIG. 15B): the disk-level
/// writes of a group being spared are appended to it; its map (table T7)
/// is stored as pages of `object`, units of `unit` bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkDiskRecord {
    pub disk: String,
    pub object: u64,
    pub unit: u64,
}
