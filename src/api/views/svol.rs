//! S-VOL groups' requests and views (seed 003): `svol-group query` gives
//! tables 900 (group management), 1200 (S-VOL management, with Freq) and
//! 1300 (increments) as the seed's FIG. 9, 12 and 13 draw them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::limits::Name;
pub use crate::meta::model::SvolAttr;

/// One LID named in `svol-group create` (`--member LV:ro|rw`, `--spare`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SvolMemberSpec {
    /// The volume: an S-VOL of the P-VOL in PAIR (a member) or an unpaired
    /// volume of the same size (a spare).
    #[schema(value_type = Name)]
    pub lid: String,
    pub attr: SvolAttr,
}

/// `svol-group create NAME --pvol P --member LV0:ro ... --spare S0`
/// (operation code 0, S-VOL group initialisation).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SvolGroupCreateRequest {
    #[schema(value_type = Name)]
    pub name: String,
    #[schema(value_type = Name)]
    pub pvol: String,
    /// Members (at least one RO) and spares; the members are split from
    /// the P-VOL at one instant when the group is made.
    pub members: Vec<SvolMemberSpec>,
    /// The group (RAID) that holds the RW members' increments volumes;
    /// default: the RW member's.
    #[schema(value_type = Option<Name>)]
    #[serde(default)]
    pub dlv_group: Option<String>,
}

/// `svol-group restore NAME` (operation code 1).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SvolRestoreRequest {
    /// The member to restore (`rollback`, `rebuild`), or the RO member
    /// whose image goes onto the P-VOL (`to-pvol`; default: the first
    /// healthy one still paired with it).
    #[schema(value_type = Option<Name>)]
    #[serde(default)]
    pub member: Option<String>,
    /// `rollback`: an RW member back to the split image (its table 1300
    /// blocks copied from an RO member, the table emptied); `rebuild`: a
    /// repaired RO member refilled from the group; `to-pvol`: the group's
    /// image copied back onto the P-VOL (only the tracks that differ; the
    /// P-VOL stays in use).
    pub mode: SvolRestoreMode,
    /// Rate limit of the copy in bytes/s (`job rate` changes it); none or
    /// 0: unlimited.
    #[serde(default, deserialize_with = "crate::json::whole_opt")]
    pub rate: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SvolRestoreMode {
    Rollback,
    Rebuild,
    ToPvol,
}

/// A row of table 900 (GrpID, LID, Attr, PID, RLID).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Table900Row {
    pub grp_id: String,
    pub lid: String,
    /// `RO` or `RW` (a spare is listed RO, an increments volume RW).
    pub attr: String,
    /// The volume whose storage holds the LID's data.
    pub pid: String,
    pub rlid: Option<String>,
}

/// A row of table 1200 (LID, Attr, PID, RLID, Freq).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Table1200Row {
    pub lid: String,
    /// `RO`, `RW`, or `—` for a spare (no host access).
    pub attr: String,
    pub pid: String,
    pub rlid: Option<String>,
    /// Reads served since the daemon started.
    pub freq: u64,
}

/// Table 1300: the block ids an increments volume holds.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Table1300 {
    pub dlid: String,
    /// Bytes per block id.
    pub block_size: u64,
    /// The block ids, ascending (at most 1,000; `count` has them all).
    pub bids: Vec<u64>,
    pub count: u64,
}

/// A member's or spare's state (`query`'s "S-VOL attribute / spare S-VOL
/// attribute").
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SvolMemberInfo {
    pub lid: String,
    pub attr: SvolAttr,
    pub pid: String,
    pub rlid: Option<String>,
    pub freq: u64,
    /// `healthy`, `failed`, `spare`, or `dlv-failed` (an RW member whose
    /// increments volume failed: it runs without it and cannot be taken
    /// over).
    pub health: String,
    /// Read errors counted against it since the daemon started.
    pub errors: u64,
    /// Blocks rewritten with good data after a read error.
    pub repaired: u64,
    /// The disks of its physical volume's group.
    pub disks: Vec<String>,
}

/// `svol-group query NAME` (operation code 3).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SvolGroupInfo {
    pub name: String,
    pub pvol: String,
    pub split_at: u64,
    pub members: Vec<SvolMemberInfo>,
    pub spares: Vec<SvolMemberInfo>,
    /// A failed member and no spare to take its place, or an RW member
    /// without its increments volume.
    pub degraded: bool,
    /// The spare fill, rebuild, rollback or copy onto the P-VOL running,
    /// if any.
    pub job: Option<u64>,
    /// The RO member whose image is being copied onto the P-VOL
    /// (`restore --to-pvol`; the job is its pair's), while it is.
    pub to_pvol: Option<String>,
    pub table_900: Vec<Table900Row>,
    pub table_1200: Vec<Table1200Row>,
    pub table_1300: Vec<Table1300>,
}
