//! The model: every record and enum the pool database stores, owned here,
//! apart from the runtime structures and from the API's views (`api::
//! views`, which may show these enums but never define them), so that
//! neither can change the on-disk format by accident. Copy families'
//! records are in [`copy`].
//!
//! Records are JSON values in redb tables. The pool's `format` key says
//! which version wrote them; a newer format is refused at open.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use utoipa::ToSchema;

pub mod copy;
pub mod pair;
pub mod reshape;
pub mod sparing;
pub mod svol;

pub use copy::CopyMode;
pub use pair::{PairRecord, PairStatus};
pub use sparing::{
    DivertRecord, SecondaryRecord, SparingPolicy, SparingRecord, WorkDiskRecord, WorkVolumeRecord,
};
pub use svol::{SvolAttr, SvolGroupRecord, SvolMemberRecord, ToPvolRecord};

/// Format version of the pool database. Bump it when a record changes
/// shape, and keep a fixture of every released version.
///
/// - 1: a copy family's store chunks and node areas inside its record.
/// - 2: chunks and areas in rows of their own (`copy_chunks`,
///   `copy_areas`); format 1 records are still read.
/// - 3: mirror pairs (the `pairs` table, their bitmaps as pages): a
///   ferrosan that knows no pairs would serve a paired volume unpaired, so
///   it must not open the pool.
/// - 4: S-VOL groups (the `svol_groups` table; increments as pages): a
///   ferrosan that knows none would let hosts write RO members.
/// - 5: restripes (the `reshapes` table; PB, IND and PS lists as pages):
///   a ferrosan that knows none would serve a group whose data lies in
///   two layouts as if it lay in one.
pub const FORMAT_VERSION: u32 = 5;

/// RAID level of a group (seed 002, table T1 column "RAID LEVEL").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RaidLevelName {
    Concat,
    Raid0,
    Raid1,
    Raid5,
}

impl RaidLevelName {
    pub fn as_str(self) -> &'static str {
        match self {
            RaidLevelName::Concat => "concat",
            RaidLevelName::Raid0 => "raid0",
            RaidLevelName::Raid1 => "raid1",
            RaidLevelName::Raid5 => "raid5",
        }
    }
}

impl std::fmt::Display for RaidLevelName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RaidLevelName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "concat" | "linear" => Ok(RaidLevelName::Concat),
            "raid0" | "stripe" => Ok(RaidLevelName::Raid0),
            "raid1" | "mirror" => Ok(RaidLevelName::Raid1),
            "raid5" => Ok(RaidLevelName::Raid5),
            other => Err(format!(
                "unknown RAID level {other:?}: use concat, raid0, raid1 or raid5"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Running,
    Paused,
    Done,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Done | JobState::Failed | JobState::Cancelled
        )
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            JobState::Running => "running",
            JobState::Paused => "paused",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        };
        f.write_str(s)
    }
}

/// The pool itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRecord {
    pub id: uuid::Uuid,
    /// Seconds since the epoch.
    pub created: u64,
    /// Next object id (groups and volumes own bitmap pages by object id).
    pub next_object: u64,
    /// Next job id.
    pub next_job: u64,
}

/// A disk known to the pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskRecord {
    pub id: uuid::Uuid,
    pub name: String,
    pub path: PathBuf,
    /// Bytes of the whole device.
    pub total_size: u64,
    /// Bytes of its data area.
    pub data_size: u64,
    /// The pool created the file (and deletes it on `disk remove`).
    pub owned_file: bool,
    pub spare: bool,
    /// Why it was failed, if it was.
    pub failed: Option<String>,
    pub created: u64,
}

/// State of one member slot of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SlotState {
    Ok,
    Failed,
    /// Being rebuilt (or hot-replaced) by job `job`.
    Rebuilding {
        job: u64,
    },
}

/// One member slot: which disk, in which state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRecord {
    pub disk: Option<String>,
    pub state: SlotState,
    /// Set when the slot's disk failed while current (an I/O error, `disk
    /// fail`, missing at start): the group's failure count at that moment.
    /// Such a disk can be reinstated, resyncing only what the write-intent
    /// log marked meanwhile; when the whole group has failed, only the
    /// disk that failed last (the highest number) can come back first.
    /// 0: the disk's data is incomplete (it failed while being rebuilt).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed_seq: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// A RAID group (seed 002, table T1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub object: u64,
    pub name: String,
    pub level: RaidLevelName,
    pub stripe_size: u64,
    pub slots: Vec<SlotRecord>,
    /// Data bytes each slot holds (a replacement must be at least this big).
    pub member_sizes: Vec<u64>,
    /// Bytes of group address space per write-intent bit.
    pub intent_region: u64,
    pub created: u64,
    /// Member failures so far: numbers [`SlotRecord::failed_seq`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fail_seq: u64,
}

/// A volume: extents of a group's address space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub object: u64,
    pub name: String,
    pub group: String,
    pub size: u64,
    pub track_size: u64,
    /// (group offset, length), in volume order.
    pub extents: Vec<(u64, u64)>,
    pub read_only: bool,
    pub created: u64,
    /// The copy family this volume is an image of (an instant copy, or the
    /// origin of copies).
    #[serde(default)]
    pub family: Option<u64>,
}

/// What a job does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobKind {
    /// Rebuild slot `slot` of `group` onto `disk` (from redundancy, or by
    /// copying `old_disk` while it still serves: a hot replace).
    Rebuild {
        group: String,
        slot: usize,
        disk: String,
        old_disk: Option<String>,
        /// A reinstate: only these rows `(start, end)` of the slot are
        /// stale (written while its disk was out); the rest is current and
        /// skipped. Units of the job are the stale rows, in order.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stale: Option<Vec<(u64, u64)>>,
    },
    /// Make redundancy consistent over `ranges` (group offset, length):
    /// after a crash, the regions the write-intent log had marked.
    Resync {
        group: String,
        ranges: Vec<(u64, u64)>,
    },
    /// Move the pending tracks of copy family `family` (its new space in
    /// `group`) into the initial area, where `volume` reads them: a
    /// `copy restore` of an A1 origin from `from`, or a `copy split`.
    CopyMove {
        group: String,
        family: u64,
        volume: String,
        from: String,
        split: bool,
    },
    /// Free-space collection of copy family `family` (new space in
    /// `group`; `volume` is its original, for humans): merges each frozen
    /// node with one child into it, one pair per pass of `tracks` units.
    CopyCollect {
        group: String,
        family: u64,
        volume: String,
    },
    /// Copy the marked tracks of the pair `pvol` -> `svol` in `status`:
    /// the initial copy (COPY), a resync (RESYNC) or a restore (RESTORE,
    /// S-VOL to P-VOL). Units are tracks to copy.
    PairCopy {
        pvol: String,
        svol: String,
        status: PairStatus,
    },
    /// Fill RO member `lid` of S-VOL group `group` from a healthy RO
    /// member: onto `spare` (spare replacement), or onto its own PID
    /// (rebuild). Units are blocks.
    SvolFill {
        group: String,
        lid: String,
        spare: Option<String>,
    },
    /// Roll RW member `lid` back to the split image: its table 1300 blocks
    /// copied from an RO member. Units are blocks scanned.
    SvolRollback { group: String, lid: String },
    /// Replace RW member `lid`'s failed increments volume (DLV) by spare
    /// `spare`: its table 1300 blocks copied from the member. Units are
    /// blocks scanned.
    SvolDlv {
        group: String,
        lid: String,
        spare: String,
    },
    /// Write back what a sparing of failing disk `disk` (group `group`)
    /// diverted, to the group. Units are diverted units (slots); the
    /// remaining entries are found again at each step.
    WriteBack { disk: String, group: String },
    /// ESTABLISH of a restripe of `group` (seed 004, FIG. 4A step 104):
    /// the group copied onto the BCV while it serves; the switch to the
    /// new layout at the end. Units are 1 MiB of the group.
    ReshapeCopy { group: String },
    /// The transfer of a restripe of `group` (FIGS. 6A/6B): every track
    /// not moved yet, from the BCV to its place in the new layout. Units
    /// are tracks of the new layout.
    ReshapeTransfer { group: String },
}

/// A background job and its checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: u64,
    pub kind: JobKind,
    pub state: JobState,
    /// Units done (checkpoint: everything below is durable).
    pub done: u64,
    pub total: u64,
    pub unit_bytes: u64,
    /// Bytes/s, 0 = unlimited.
    pub rate_limit: u64,
    /// Bytes/s the job slows down to while hosts do I/O (md's
    /// speed_limit_min); 0 = it does not slow down for hosts.
    #[serde(default)]
    pub rate_floor: u64,
    pub message: Option<String>,
    pub created: u64,
    pub updated: u64,
}

/// Seconds since the epoch, now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
